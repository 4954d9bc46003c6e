//! The reconciler: observe → [`diff`](super::diff::diff_with) → apply.
//!
//! # Ownership
//! kube-dvr owns, and therefore observes and may delete:
//! - named namespaces in the configured directory whose names start with one
//!   of [`OWNED_NETNS_PREFIXES`], and everything in them (all links but
//!   `lo`, their addresses, routes with [`ROUTE_PROTOCOL`], rules in
//!   [`RULE_PRIORITIES`], permanent neighbours, the `kube_dvr` nft table);
//! - in the node's root namespace: links named with one of
//!   [`OWNED_LINK_PREFIXES`] and what hangs on them (addresses, permanent
//!   neighbours, `self dst` FDB entries on VXLAN devices), routes with
//!   [`ROUTE_PROTOCOL`], rules in [`RULE_PRIORITIES`], the `kube_dvr` table;
//! - sysctls: only the keys the desired state lists are read or written
//!   (there is no "stale" sysctl).
//!
//! # Sweep rule
//! Stale objects are removed only after a complete observation. If any
//! namespace cannot be observed, that pass makes no removals at all and
//! touches nothing in that namespace; the failure is in the report.
//!
//! # Kernel quirks
//! - The kernel does not dump a veth's peer name, only its index
//!   (`IFLA_LINK`) and, across namespaces, an id of the peer's namespace as
//!   seen from the link's own (`IFLA_LINK_NETNSID`). The engine matches
//!   candidate peers by index and confirms the namespace with `RTM_GETNSID`
//!   (cached per namespace pair: ids are stable while both live).
//! - A veth pair is created from one end with the peer's attributes in
//!   `VETH_INFO_PEER`; the kernel honours the peer's name, MAC, MTU and
//!   namespace there but not `IFLA_MASTER`, and asking for the peer up fails
//!   with `ENOTCONN` (the peer is opened before the pair is linked), so the
//!   peer is brought up, and given its master, by a second request.
//! - A bridge's MTU given at creation is not "set by the user": it follows
//!   the ports' minimum (and 1500 with no port). Only a change through
//!   `RTM_SETLINK` pins it, and setting the current value is a no-op, so a
//!   bridge is created without MTU and gets it by a second request. (A
//!   desired MTU of 1500 therefore still floats.)
//! - Removing an interface's last address flushes its neighbours (even
//!   permanent ones) and the routes through it; they are re-added.
//! - A namespace deleted from outside (`ip netns del`) dies asynchronously
//!   once the engine drops its socket there; until then its macvlan holds
//!   its MAC on the parent and recreating it fails with `EADDRINUSE`, so
//!   that create is retried for up to half a second.
//! - Every link deletion waits for an RCU grace period (~25 ms here), so
//!   a run of deletions in one namespace moves the links into one device
//!   group ([`BULK_DELETE_GROUP`], after checking no other link is in it)
//!   and deletes the group: one grace period for all. (Each bridge port
//!   still costs one `synchronize_net` when it leaves its bridge: ~6 ms.)
//! - Deleting one veth end deletes the other; deleting a namespace deletes
//!   its links, and veth peers outside it.
//! - A route added without `NLM_F_EXCL` sits next to an existing route to the
//!   same destination with another next hop; the stale one is removed in the
//!   removal phase, so a changed next hop never leaves a gap.
//! - `/proc/sys/net` shows the sysctls of the reader's network namespace, so
//!   sysctls are read and written from a thread inside the namespace.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use super::diff::{diff, Op};
use super::diff::{diff_with, ns_name, ObservedExtra};
pub use super::error::Error;
use super::netlink::{KRoute, KRule, LinkChange, Netlink, NewKind, NewLink};
use super::{netns, nft};

const EADDRINUSE: i32 = nix::errno::Errno::EADDRINUSE as i32;
use crate::plan::model::{
    LinkKind, NodeState, NsRef, NsState, Route, Rule, ROUTE_PROTOCOL, RULE_PRIORITIES,
};

pub use super::observe::{OWNED_LINK_PREFIXES, OWNED_NETNS_PREFIXES};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The node's own namespace: `/proc/self/ns/net` on a real node, a
    /// bind-mounted namespace file in the lab.
    pub root_netns: PathBuf,
    /// Where named namespaces live (`/run/netns` on a real node).
    pub netns_dir: PathBuf,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            root_netns: PathBuf::from("/proc/self/ns/net"),
            netns_dir: PathBuf::from(netns::DEFAULT_DIR),
        }
    }
}

/// Kernel writes by kind: `netns`, `link`, `address`, `route`, `rule`,
/// `neighbour`, `fdb`, `sysctl`, `nft`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    by_kind: BTreeMap<&'static str, u64>,
}

impl WriteStats {
    pub fn add(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            *self.by_kind.entry(kind).or_default() += n;
        }
    }
    pub fn get(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
    pub fn by_kind(&self) -> &BTreeMap<&'static str, u64> {
        &self.by_kind
    }
    fn merge(&mut self, other: &WriteStats) {
        for (k, v) in &other.by_kind {
            self.add(k, *v);
        }
    }
}

/// One op that failed, with its description.
#[derive(Debug)]
pub struct OpError {
    /// What was attempted, e.g. `add route ... in qrouter-a`.
    pub op: String,
    pub error: Error,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Report {
    pub writes: WriteStats,
    /// Failed observations and ops; the pass continues past each.
    pub errors: Vec<OpError>,
}

/// An open namespace: its socket and the name ↔ index maps of its links.
pub(super) struct NsHandle {
    pub inode: u64,
    pub nl: Netlink,
    pub by_name: HashMap<String, u32>,
    pub by_index: HashMap<u32, String>,
    /// Links changed since the maps were filled.
    pub dirty: bool,
}

pub struct Engine {
    pub(super) cfg: EngineConfig,
    pub(super) handles: HashMap<NsRef, NsHandle>,
    /// `(inode of A, inode of B)` → B's id as seen from A.
    pub(super) nsids: HashMap<(u64, u64), Option<i32>>,
    writes: WriteStats,
    /// The desired state of the last pass that completed without errors:
    /// what the kernel holds as far as this engine knows (the base of
    /// [`Engine::reconcile_changes`]).
    last: Option<NodeState>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Result<Engine, Error> {
        let mut e = Engine {
            cfg,
            handles: HashMap::new(),
            nsids: HashMap::new(),
            writes: WriteStats::default(),
            last: None,
        };
        e.handle(&NsRef::Root)?;
        Ok(e)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Complete observation of everything kube-dvr owns on this node.
    pub fn observe(&mut self) -> Result<NodeState, Error> {
        let mut obs = self.observe_with(None);
        match obs.failures.pop() {
            Some((_, e)) => Err(e),
            None => Ok(obs.state),
        }
    }

    /// observe → diff → apply; returns what it did. A pass over an unchanged
    /// plan writes nothing.
    pub fn reconcile(&mut self, desired: &NodeState) -> Result<Report, Error> {
        let obs = self.observe_with(Some(desired));
        let mut report = Report::default();
        let failed: Vec<NsRef> = obs.failures.iter().map(|(ns, _)| ns.clone()).collect();
        if failed.contains(&NsRef::Root) {
            let (_, e) = obs
                .failures
                .into_iter()
                .find(|(n, _)| n == &NsRef::Root)
                .unwrap();
            return Err(e);
        }
        for (ns, e) in obs.failures {
            report.errors.push(OpError {
                op: format!("observe {}", ns_name(&ns)),
                error: e,
            });
        }
        let mut ops = diff_with(&obs.state, &obs.extra, desired);
        let complete = failed.is_empty();
        if !failed.is_empty() {
            // Incomplete observation: no removals, nothing in failed namespaces.
            ops.retain(|op| {
                !op.is_removal()
                    && !op.ns().is_some_and(|n| failed.contains(n))
                    && !matches!(op, Op::CreateNetns { name } if failed.contains(&NsRef::Named(name.clone())))
                    && !touches_peer_ns(op, &failed)
            });
        }
        self.apply_all(&ops, &mut report);
        self.last = (complete && report.errors.is_empty()).then(|| desired.clone());
        Ok(report)
    }

    /// Apply `ops` in order; failures go to `report` and the pass goes on.
    fn apply_all(&mut self, ops: &[Op], report: &mut Report) {
        let mut i = 0;
        while i < ops.len() {
            // A run of link deletions in one namespace goes in one batch.
            let run = delete_run(&ops[i..]);
            if run >= BULK_DELETE_MIN {
                let names: Vec<&str> = ops[i..i + run]
                    .iter()
                    .filter_map(|op| match op {
                        Op::DeleteLink { name, .. } => Some(name.as_str()),
                        _ => None,
                    })
                    .collect();
                let ns = ops[i].ns().expect("link op").clone();
                if let Err(error) = self.delete_links(&ns, &names, &mut report.writes) {
                    report.errors.push(OpError {
                        op: format!("delete {} links in {}", names.len(), ns_name(&ns)),
                        error,
                    });
                }
                i += run;
                continue;
            }
            let op = &ops[i];
            tracing::debug!(%op, "apply");
            if let Err(error) = self.apply(op, &mut report.writes) {
                report.errors.push(OpError {
                    op: op.to_string(),
                    error,
                });
            }
            i += 1;
        }
        self.north_south_effects(ops, report);
        self.writes.merge(&report.writes);
    }

    /// The change path: apply what differs between the state of the last
    /// clean pass and `desired`, without observing the kernel, touching only
    /// namespaces whose desired state changed. Drift made behind the engine's
    /// back is left to the next [`Engine::reconcile`]. Without a clean
    /// previous pass (first call, or the last pass had errors) this is a
    /// full `reconcile`.
    pub fn reconcile_changes(&mut self, desired: &NodeState) -> Result<Report, Error> {
        let Some(mut last) = self.last.take() else {
            return self.reconcile(desired);
        };
        let mut report = Report::default();
        if last == *desired {
            self.last = Some(last);
            return Ok(report);
        }
        let (before, after) = changed_parts(&last, desired);
        let ops = diff_with(&before, &ObservedExtra::default(), &after);
        self.apply_all(&ops, &mut report);
        if report.errors.is_empty() {
            // Carry over only what changed (a full clone of a big node's
            // state would cost more than the diff).
            if last.root != desired.root {
                last.root = desired.root.clone();
            }
            last.namespaces
                .retain(|n, _| desired.namespaces.contains_key(n));
            for (n, d) in &desired.namespaces {
                if last.namespaces.get(n) != Some(d) {
                    last.namespaces.insert(n.clone(), d.clone());
                }
            }
            debug_assert!(last == *desired);
            self.last = Some(last);
        }
        Ok(report)
    }

    /// Remove everything kube-dvr owns on this node (reconcile to empty).
    pub fn cleanup(&mut self) -> Result<Report, Error> {
        self.reconcile(&NodeState::default())
    }

    /// Cumulative kernel writes by kind since the engine was made.
    pub fn writes(&self) -> &WriteStats {
        &self.writes
    }

    pub(super) fn ns_path(&self, ns: &NsRef) -> PathBuf {
        match ns {
            NsRef::Root => self.cfg.root_netns.clone(),
            NsRef::Named(n) => netns::path(&self.cfg.netns_dir, n),
        }
    }

    /// The open handle of `ns`, (re)opened when the namespace file now is
    /// another namespace than when the socket was made.
    pub(super) fn handle(&mut self, ns: &NsRef) -> Result<&mut NsHandle, Error> {
        let path = self.ns_path(ns);
        let nserr = |op, source| Error::Netns {
            ns: ns_name(ns).to_string(),
            op,
            source,
        };
        let inode = netns::inode(&path).map_err(|e| nserr("stat", e))?;
        let fresh = self.handles.get(ns).is_none_or(|h| h.inode != inode);
        if fresh {
            let nl = Netlink::open_in(&path).map_err(|e| nserr("open netlink socket in", e))?;
            self.handles.insert(
                ns.clone(),
                NsHandle {
                    inode,
                    nl,
                    by_name: HashMap::new(),
                    by_index: HashMap::new(),
                    dirty: true,
                },
            );
        }
        Ok(self.handles.get_mut(ns).expect("just inserted"))
    }

    /// Refresh the link maps of `ns` from a dump.
    pub(super) fn refresh_links(
        &mut self,
        ns: &NsRef,
    ) -> Result<Vec<super::netlink::KLink>, Error> {
        let h = self.handle(ns)?;
        let links = h.nl.links().map_err(|e| Error::Netlink {
            ns: ns_name(ns).to_string(),
            op: "dump",
            object: "links".into(),
            source: e,
        })?;
        h.by_name = links.iter().map(|l| (l.name.clone(), l.index)).collect();
        h.by_index = links.iter().map(|l| (l.index, l.name.clone())).collect();
        h.dirty = false;
        Ok(links)
    }

    /// The index of link `name` in `ns`.
    fn index(&mut self, ns: &NsRef, name: &str) -> Result<u32, Error> {
        let h = self.handle(ns)?;
        if !h.dirty {
            if let Some(i) = h.by_name.get(name) {
                return Ok(*i);
            }
        }
        self.refresh_links(ns)?;
        let h = self.handle(ns)?;
        h.by_name.get(name).copied().ok_or_else(|| Error::NotFound {
            ns: ns_name(ns).to_string(),
            what: "link",
            name: name.to_string(),
        })
    }

    /// Record the index of link `name` in `ns`, just created.
    fn learn(&mut self, ns: &NsRef, name: &str) -> Result<(), Error> {
        let h = self.handle(ns)?;
        let l = h.nl.link_by_name(name).map_err(|source| Error::Netlink {
            ns: ns_name(ns).to_string(),
            op: "get",
            object: format!("link {name}"),
            source,
        })?;
        if let Some(old) = h.by_name.remove(name) {
            h.by_index.remove(&old);
        }
        if let Some(l) = l {
            h.by_name.insert(l.name.clone(), l.index);
            h.by_index.insert(l.index, l.name);
        }
        Ok(())
    }

    fn forget(&mut self, ns: &NsRef, name: &str) {
        if let Some(h) = self.handles.get_mut(ns) {
            if let Some(i) = h.by_name.remove(name) {
                h.by_index.remove(&i);
            }
        }
    }

    fn nl(&mut self, ns: &NsRef) -> Result<&mut Netlink, Error> {
        Ok(&mut self.handle(ns)?.nl)
    }

    fn apply(&mut self, op: &Op, w: &mut WriteStats) -> Result<(), Error> {
        let kind = op.kind();
        let nlerr = |ns: &NsRef, what: &'static str, object: String| {
            let ns = ns_name(ns).to_string();
            move |source| Error::Netlink {
                ns,
                op: what,
                object,
                source,
            }
        };
        match op {
            Op::CreateNetns { name } => {
                w.add(kind, 1);
                netns::create(&self.cfg.netns_dir, name).map_err(|source| Error::Netns {
                    ns: name.clone(),
                    op: "create",
                    source,
                })
            }
            Op::DeleteNetns { name } => {
                w.add(kind, 1);
                self.handles.remove(&NsRef::Named(name.clone()));
                netns::delete(&self.cfg.netns_dir, name).map_err(|source| Error::Netns {
                    ns: name.clone(),
                    op: "delete",
                    source,
                })
            }
            Op::CreateLink { ns, link, peer } => {
                let mut new = NewLink {
                    name: link.name.clone(),
                    mac: link.mac,
                    mtu: link.mtu,
                    master: None,
                    netns_fd: None,
                };
                // Files whose fds the request carries; closed after it.
                let mut files: Vec<File> = Vec::new();
                let mut open_ns = |e: &Engine, target: &NsRef| -> Result<i32, Error> {
                    let f = File::open(e.ns_path(target)).map_err(|source| Error::Netns {
                        ns: ns_name(target).to_string(),
                        op: "open",
                        source,
                    })?;
                    let fd = f.as_raw_fd();
                    files.push(f);
                    Ok(fd)
                };
                let (sock_ns, kind_new) = match &link.kind {
                    LinkKind::Bridge => {
                        // The MTU is set by the follow-up request the diff
                        // emits: only a change through `ndo_change_mtu`
                        // pins a bridge's MTU (see the module docs).
                        new.mtu = None;
                        (ns.clone(), NewKind::Bridge)
                    }
                    LinkKind::Vxlan { vni, local, port } => (
                        ns.clone(),
                        NewKind::Vxlan {
                            vni: *vni,
                            local: *local,
                            port: *port,
                        },
                    ),
                    LinkKind::Veth {
                        peer: pname,
                        peer_ns,
                    } => {
                        let p = peer.clone();
                        let mut pl = NewLink {
                            name: pname.clone(),
                            mac: p.as_ref().and_then(|p| p.mac),
                            mtu: p.as_ref().and_then(|p| p.mtu),
                            master: None,
                            netns_fd: None,
                        };
                        if peer_ns != ns {
                            pl.netns_fd = Some(open_ns(self, peer_ns)?);
                        } else if let Some(m) = p.as_ref().and_then(|p| p.master.as_ref()) {
                            pl.master = Some(self.index(ns, m)?);
                        }
                        (ns.clone(), NewKind::Veth { peer: pl })
                    }
                    LinkKind::Macvlan { parent } => {
                        let parent = self.index(&NsRef::Root, parent)?;
                        if ns != &NsRef::Root {
                            new.netns_fd = Some(open_ns(self, ns)?);
                        }
                        (NsRef::Root, NewKind::Macvlan { parent })
                    }
                };
                if let Some(m) = &link.master {
                    if &sock_ns == ns {
                        new.master = Some(self.index(ns, m)?);
                    }
                }
                w.add(kind, 1);
                let mut r = self.nl(&sock_ns)?.create_link(&new, &kind_new);
                // A namespace deleted from outside dies asynchronously; until
                // it has, its macvlan still holds the MAC on the parent.
                let mut tries = 0;
                while matches!(kind_new, NewKind::Macvlan { .. })
                    && r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(EADDRINUSE)
                    && tries < 50
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    tries += 1;
                    w.add(kind, 1);
                    r = self.nl(&sock_ns)?.create_link(&new, &kind_new);
                }
                drop(files);
                r.map_err(nlerr(ns, "create", format!("link {}", link.name)))?;
                // Learn the new indexes with a get each (no dump).
                self.learn(ns, &link.name)?;
                if let LinkKind::Veth { peer, peer_ns } = &link.kind {
                    self.learn(peer_ns, peer)?;
                }
                Ok(())
            }
            Op::DeleteLink { ns, name } => {
                let idx = match self.index(ns, name) {
                    Ok(i) => i,
                    Err(Error::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                // The peer of a deleted veth stays in its namespace's map:
                // the diff never refers to it again except to recreate it,
                // which learns its new index.
                self.forget(ns, name);
                w.add(kind, 1);
                let r = self.nl(ns)?.delete_link(idx);
                r.map_err(nlerr(ns, "delete", format!("link {name}")))
            }
            Op::SetLink {
                ns,
                name,
                mac,
                mtu,
                master,
                up,
            } => {
                let idx = self.index(ns, name)?;
                let master = match master {
                    None => None,
                    Some(None) => Some(0),
                    Some(Some(m)) => Some(self.index(ns, m)?),
                };
                let change = LinkChange {
                    mac: *mac,
                    mtu: *mtu,
                    master,
                    up: *up,
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.set_link(idx, &change);
                r.map_err(nlerr(ns, "set", format!("link {name}")))
            }
            Op::SetSysctl { ns, key, value } => {
                w.add(kind, 1);
                let path = self.ns_path(ns);
                let file = Path::new("/proc/sys").join(key);
                let serr = |source| Error::Sysctl {
                    ns: ns_name(ns).to_string(),
                    op: "write",
                    key: key.clone(),
                    source,
                };
                netns::run_in(&path, || std::fs::write(&file, value.as_bytes()))
                    .map_err(serr)?
                    .map_err(serr)
            }
            Op::AddAddress { ns, address } => {
                let idx = self.index(ns, &address.link)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.add_address(idx, address.addr);
                r.map_err(nlerr(ns, "add", format!("address {}", address.addr)))
            }
            Op::DelAddress { ns, address } => {
                let Ok(idx) = self.index(ns, &address.link) else {
                    return Ok(());
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_address(idx, address.addr);
                r.map_err(nlerr(ns, "delete", format!("address {}", address.addr)))
            }
            Op::AddRoute { ns, route } => {
                let k = self.kroute(ns, route)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.add_route(&k);
                r.map_err(nlerr(ns, "add", format!("route {route:?}")))
            }
            Op::DelRoute { ns, route } => {
                let k = match self.kroute(ns, route) {
                    Ok(k) => k,
                    Err(Error::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_route(&k);
                r.map_err(nlerr(ns, "delete", format!("route {route:?}")))
            }
            Op::AddRule { ns, rule } => {
                w.add(kind, 1);
                let r = self.nl(ns)?.add_rule(&krule(rule));
                r.map_err(nlerr(ns, "add", format!("rule {rule:?}")))
            }
            Op::DelRule { ns, rule } => {
                w.add(kind, 1);
                let r = self.nl(ns)?.del_rule(&krule(rule));
                r.map_err(nlerr(ns, "delete", format!("rule {rule:?}")))
            }
            Op::SetNeighbour { ns, neighbour: n } => {
                let idx = self.index(ns, &n.link)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.set_neighbour(idx, n.ip, n.mac);
                r.map_err(nlerr(
                    ns,
                    "set",
                    format!("neighbour {} dev {}", n.ip, n.link),
                ))
            }
            Op::DelNeighbour { ns, neighbour: n } => {
                let Ok(idx) = self.index(ns, &n.link) else {
                    return Ok(());
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_neighbour(idx, n.ip);
                r.map_err(nlerr(
                    ns,
                    "delete",
                    format!("neighbour {} dev {}", n.ip, n.link),
                ))
            }
            Op::AddFdb { ns, entry: e } => {
                let idx = self.index(ns, &e.link)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.add_fdb(idx, e.mac, e.dst);
                r.map_err(nlerr(ns, "add", format!("fdb {} dev {}", e.mac, e.link)))
            }
            Op::DelFdb { ns, entry: e } => {
                let Ok(idx) = self.index(ns, &e.link) else {
                    return Ok(());
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_fdb(idx, e.mac, e.dst);
                r.map_err(nlerr(ns, "delete", format!("fdb {} dev {}", e.mac, e.link)))
            }
            Op::Nft {
                ns,
                observed,
                desired,
            } => {
                let batch = nft::plan_batch(observed.as_ref(), desired.as_ref());
                if batch.is_empty() {
                    return Ok(());
                }
                w.add(kind, batch.writes().max(1));
                let path = self.ns_path(ns);
                let nerr = |source| Error::Nft {
                    ns: ns_name(ns).to_string(),
                    op: "apply",
                    source: Box::new(source),
                };
                netns::run_in(&path, || nft::apply(&batch))
                    .map_err(|source| Error::Netns {
                        ns: ns_name(ns).to_string(),
                        op: "enter",
                        source,
                    })?
                    .map_err(nerr)
            }
        }
    }

    /// Delete links in bulk: put them in [`BULK_DELETE_GROUP`], check that
    /// no other link of the namespace is in it, delete the group. Falls back
    /// to one request per link if another link uses the group.
    fn delete_links(
        &mut self,
        ns: &NsRef,
        names: &[&str],
        w: &mut WriteStats,
    ) -> Result<(), Error> {
        let nlerr = |op: &'static str, object: String| {
            let ns = ns_name(ns).to_string();
            move |source| Error::Netlink {
                ns,
                op,
                object,
                source,
            }
        };
        let mut indexes = Vec::new();
        for name in names {
            match self.index(ns, name) {
                Ok(i) => indexes.push(i),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut mine = std::collections::HashSet::new();
        for &idx in &indexes {
            w.add("link", 1);
            match self.nl(ns)?.set_link_group(idx, BULK_DELETE_GROUP) {
                Ok(()) => {
                    mine.insert(idx);
                }
                // Gone meanwhile (a veth whose peer was deleted before).
                Err(e) if super::netlink::is_gone(&e) => {}
                Err(e) => return Err(nlerr("set group of", format!("link #{idx}"))(e)),
            }
        }
        let links = self.refresh_links(ns)?;
        let foreign = links
            .iter()
            .any(|l| l.group == BULK_DELETE_GROUP && !mine.contains(&l.index));
        if foreign {
            for &idx in &mine {
                w.add("link", 1);
                self.nl(ns)?
                    .delete_link(idx)
                    .map_err(nlerr("delete", format!("link #{idx}")))?;
            }
        } else if !mine.is_empty() {
            w.add("link", 1);
            self.nl(ns)?
                .delete_link_group(BULK_DELETE_GROUP)
                .map_err(nlerr("delete", format!("link group {BULK_DELETE_GROUP}")))?;
        }
        for name in names {
            self.forget(ns, name);
        }
        Ok(())
    }

    fn kroute(&mut self, ns: &NsRef, r: &Route) -> Result<KRoute, Error> {
        let oif = match &r.dev {
            Some(d) => Some(self.index(ns, d)?),
            None => None,
        };
        Ok(KRoute {
            table: r.table,
            dst: r.dst,
            via: r.via,
            oif,
            protocol: ROUTE_PROTOCOL,
        })
    }
}

/// The parts of `last` and `desired` a change diff needs: namespaces (and
/// the root) whose state differs, in full; of the others only the links, on
/// both sides, so veth pairs that cross into them look intact.
fn changed_parts(last: &NodeState, desired: &NodeState) -> (NodeState, NodeState) {
    let links_only = |s: &NsState| NsState {
        links: s.links.clone(),
        ..NsState::default()
    };
    let mut before = NodeState::default();
    let mut after = NodeState::default();
    if last.root == desired.root {
        before.root = links_only(&last.root);
        after.root = before.root.clone();
    } else {
        before.root = last.root.clone();
        after.root = desired.root.clone();
    }
    for (name, d) in &desired.namespaces {
        match last.namespaces.get(name) {
            Some(l) if l == d => {
                before.namespaces.insert(name.clone(), links_only(l));
                after.namespaces.insert(name.clone(), links_only(d));
            }
            Some(l) => {
                before.namespaces.insert(name.clone(), l.clone());
                after.namespaces.insert(name.clone(), d.clone());
            }
            None => {
                after.namespaces.insert(name.clone(), d.clone());
            }
        }
    }
    for (name, l) in &last.namespaces {
        if !desired.namespaces.contains_key(name) {
            before.namespaces.insert(name.clone(), l.clone());
        }
    }
    (before, after)
}

/// Device group links are moved to just before a bulk delete ("KDVR").
pub const BULK_DELETE_GROUP: u32 = 0x4b44_5652;
/// Fewer deletions than this go one request each.
const BULK_DELETE_MIN: usize = 4;

/// How many ops at the head of `ops` delete links in the same namespace.
fn delete_run(ops: &[Op]) -> usize {
    let Some(Op::DeleteLink { ns: first, .. }) = ops.first() else {
        return 0;
    };
    ops.iter()
        .take_while(|op| matches!(op, Op::DeleteLink { ns, .. } if ns == first))
        .count()
}

fn krule(r: &Rule) -> KRule {
    debug_assert!(RULE_PRIORITIES.contains(&r.priority));
    KRule {
        priority: r.priority,
        from: r.from,
        fwmark: r.fwmark,
        table: r.table,
    }
}

/// Whether `op` creates a veth end in one of the `failed` namespaces.
fn touches_peer_ns(op: &Op, failed: &[NsRef]) -> bool {
    match op {
        Op::CreateLink { link, .. } => match &link.kind {
            LinkKind::Veth { peer_ns, .. } => failed.contains(peer_ns),
            _ => false,
        },
        _ => false,
    }
}

/// What [`Engine::observe_with`] found.
pub(super) struct Observation {
    pub state: NodeState,
    pub extra: ObservedExtra,
    pub failures: Vec<(NsRef, Error)>,
}

// The agent and the lab move an engine into blocking tasks.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Engine>();
};

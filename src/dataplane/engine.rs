//! The reconciler: observe → [`diff`](super::diff::diff_with) → apply.
//!
//! # Ownership
//! kube-dvr owns, and therefore observes and may delete:
//! - named namespaces in the configured directory whose names start with one
//!   of [`OWNED_NETNS_PREFIXES`] *and* whose `lo` carries the ownership tag
//!   [`OWNER_TAG`] (set when kube-dvr creates one; OpenStack's agents use
//!   the same names), and everything in them (all links but
//!   `lo`, their addresses, routes with [`ROUTE_PROTOCOL`], rules in
//!   [`RULE_PRIORITIES`], permanent neighbours, the `kube_dvr` nft table).
//!   An untagged namespace is someone else's: never observed, changed or
//!   deleted; if the plan needs its name, the pass reports
//!   [`Error::NotOwned`] and programs nothing in it;
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
//!   (cached per pair of namespace inodes: ids are stable while both live,
//!   but a freed namespace's inode number is soon reused, so the cache
//!   forgets a namespace when the engine lets go of it).
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
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

pub use super::apply::BULK_DELETE_GROUP;
use super::apply::{delete_run, BULK_DELETE_MIN};
pub use super::diff::{diff, Op};
use super::diff::{diff_with, ns_name, ObservedExtra};
pub use super::error::Error;
pub use super::keep::Keep;
use super::netlink::Netlink;
use super::netns;
use crate::plan::model::{LinkKind, NftSet, NftTable, NodeState, NsRef, NsState};

pub use super::observe::{OWNED_LINK_PREFIXES, OWNED_NETNS_PREFIXES, OWNER_TAG};

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
    /// `(inode of A, inode of B)` → B's id as seen from A. Only namespaces
    /// with an open handle appear here (see [`Engine::drop_handle`]).
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
        self.reconcile_keeping(desired, &Keep::default())
    }

    /// [`Engine::reconcile`] that removes nothing `keep` holds: state of
    /// objects that exist but are not resolved yet ([`Keep`]).
    pub fn reconcile_keeping(&mut self, desired: &NodeState, keep: &Keep) -> Result<Report, Error> {
        let obs = self.observe_with(Some(desired));
        let desired = &*keep.merge(&obs.state, desired);
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
            ops.retain(|op| !op.is_removal() && !touches(op, &failed));
        }
        // Someone else's namespaces were not observed: the diff sees the
        // ones the plan names as missing. Nothing is made in them; each
        // such conflict is an error of this pass.
        for ns in &obs.foreign {
            if let NsRef::Named(n) = ns {
                if desired.namespaces.contains_key(n) {
                    report.errors.push(OpError {
                        op: format!("create netns {n}"),
                        error: Error::NotOwned { ns: n.clone() },
                    });
                }
            }
        }
        ops.retain(|op| !touches(op, &obs.foreign));
        self.apply_all(&ops, desired, &mut report);
        self.last = (complete && report.errors.is_empty()).then(|| desired.clone());
        Ok(report)
    }

    /// Apply `ops` in order; failures go to `report` and the pass goes on.
    fn apply_all(&mut self, ops: &[Op], desired: &NodeState, report: &mut Report) {
        // Namespaces that could not be made: nothing goes into them (the
        // name may be someone else's namespace; see `netns::create`).
        let mut unmade: Vec<NsRef> = Vec::new();
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
            if touches(op, &unmade) {
                i += 1;
                continue;
            }
            tracing::debug!(%op, "apply");
            if let Err(error) = self.apply(op, &mut report.writes) {
                if let Op::CreateNetns { name } = op {
                    unmade.push(NsRef::Named(name.clone()));
                }
                report.errors.push(OpError {
                    op: op.to_string(),
                    error,
                });
            }
            i += 1;
        }
        self.north_south_effects(ops, desired, report);
        self.writes.merge(&report.writes);
    }

    /// The change path: apply what differs between the state of the last
    /// clean pass and `desired`, without observing the kernel, touching only
    /// namespaces whose desired state changed. Drift made behind the engine's
    /// back is left to the next [`Engine::reconcile`]. Without a clean
    /// previous pass (first call, or the last pass had errors) this is a
    /// full `reconcile`.
    pub fn reconcile_changes(&mut self, desired: &NodeState) -> Result<Report, Error> {
        self.reconcile_changes_keeping(desired, &Keep::default())
    }

    /// [`Engine::reconcile_changes`] that removes nothing `keep` holds of
    /// what the last clean pass left.
    pub fn reconcile_changes_keeping(
        &mut self,
        desired: &NodeState,
        keep: &Keep,
    ) -> Result<Report, Error> {
        let Some(mut last) = self.last.take() else {
            return self.reconcile_keeping(desired, keep);
        };
        let merged = keep.merge(&last, desired);
        let desired = &*merged;
        let mut report = Report::default();
        // Nothing changed → both sides empty → no ops (no separate check:
        // a full comparison would only be done twice).
        let (before, after) = changed_parts(&last, desired);
        let ops = diff_with(&before, &ObservedExtra::default(), &after);
        self.apply_all(&ops, desired, &mut report);
        if report.errors.is_empty() {
            // Carry over only what changed (a full clone of a big node's
            // state would cost more than the diff).
            patch(&mut last.root, &before.root, &after.root, &desired.root);
            last.namespaces
                .retain(|n, _| desired.namespaces.contains_key(n));
            for (n, d) in &desired.namespaces {
                match (
                    last.namespaces.get_mut(n),
                    before.namespaces.get(n),
                    after.namespaces.get(n),
                ) {
                    (Some(l), Some(b), Some(a)) if l != d => patch(l, b, a, d),
                    (Some(_), _, _) => {}
                    (None, _, _) => {
                        last.namespaces.insert(n.clone(), d.clone());
                    }
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
            // The namespace behind the name was replaced: what was cached
            // about the old one is void, and nothing may be cached yet about
            // the new one's inode (it may be a dead namespace's, recycled).
            self.drop_handle(ns);
            self.forget_nsids(inode);
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

    /// Close the handle of `ns` and forget every namespace id cached for it.
    ///
    /// The handle's socket is what keeps a deleted namespace's inode taken:
    /// once it is closed the kernel frees the namespace (asynchronously) and
    /// hands the inode number to the next namespace created, so an id cached
    /// under that inode would be taken for the new namespace's. Whether the
    /// stale id happens to equal the new one depends on when the old
    /// namespace's cleanup ran; when it did not, every later pass saw a
    /// veth's peer in "another" namespace and recreated the pair (the full
    /// pass that never converged).
    pub(super) fn drop_handle(&mut self, ns: &NsRef) {
        if let Some(h) = self.handles.remove(ns) {
            self.forget_nsids(h.inode);
        }
    }

    /// Forget cached namespace ids from or to the namespace with `inode`.
    fn forget_nsids(&mut self, inode: u64) {
        self.nsids.retain(|(a, b), _| *a != inode && *b != inode);
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
}

/// The parts of `last` and `desired` a change diff needs: namespaces (and
/// the root) whose state differs, in full; of the others only the links, on
/// both sides, so veth pairs that cross into them look intact.
fn changed_parts(last: &NodeState, desired: &NodeState) -> (NodeState, NodeState) {
    // The common case (endpoints, floating IPs, routes come and go): no link
    // and no namespace changed. Then no veth or namespace bookkeeping is
    // needed and namespaces that did not change are left out entirely.
    let same_links = last.root.links == desired.root.links
        && last.namespaces.len() == desired.namespaces.len()
        && desired
            .namespaces
            .iter()
            .all(|(n, d)| last.namespaces.get(n).is_some_and(|l| l.links == d.links));
    if same_links {
        let mut before = NodeState::default();
        let mut after = NodeState::default();
        if last.root != desired.root {
            (before.root, after.root) = shrink_sets(&last.root, &desired.root);
        }
        for (name, d) in &desired.namespaces {
            let l = &last.namespaces[name];
            if l != d {
                let (b, a) = shrink_sets(l, d);
                before.namespaces.insert(name.clone(), b);
                after.namespaces.insert(name.clone(), a);
            }
        }
        return (before, after);
    }
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
        (before.root, after.root) = shrink(&last.root, &desired.root);
    }
    for (name, d) in &desired.namespaces {
        match last.namespaces.get(name) {
            Some(l) if l == d => {
                before.namespaces.insert(name.clone(), links_only(l));
                after.namespaces.insert(name.clone(), links_only(d));
            }
            Some(l) => {
                let (b, a) = shrink(l, d);
                before.namespaces.insert(name.clone(), b);
                after.namespaces.insert(name.clone(), a);
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

/// The part of a namespace's state that changed, as a before/after pair the
/// diff turns into exactly the needed ops: with the links unchanged, only
/// the elements on either side of the symmetric difference (so the change
/// path costs O(change) in copies and ops, not O(namespace)). With a link
/// changed (maybe recreated, taking its addresses and routes with it), the
/// whole namespace.
fn shrink(l: &NsState, d: &NsState) -> (NsState, NsState) {
    if l.links != d.links {
        return (l.clone(), d.clone());
    }
    let (mut before, mut after) = shrink_sets(l, d);
    before.links = l.links.clone();
    after.links = d.links.clone();
    (before, after)
}

/// [`shrink`] without the links (both sides have the same links).
fn shrink_sets(l: &NsState, d: &NsState) -> (NsState, NsState) {
    fn split<T: Ord + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> (BTreeSet<T>, BTreeSet<T>) {
        (
            a.difference(b).cloned().collect(),
            b.difference(a).cloned().collect(),
        )
    }
    let mut before = NsState::default();
    let mut after = NsState::default();
    (before.addresses, after.addresses) = split(&l.addresses, &d.addresses);
    (before.routes, after.routes) = split(&l.routes, &d.routes);
    (before.rules, after.rules) = split(&l.rules, &d.rules);
    (before.neighbours, after.neighbours) = split(&l.neighbours, &d.neighbours);
    (before.fdb, after.fdb) = split(&l.fdb, &d.fdb);
    for (k, v) in &d.sysctls {
        if l.sysctls.get(k) != Some(v) {
            after.sysctls.insert(k.clone(), v.clone());
            if let Some(old) = l.sysctls.get(k) {
                before.sysctls.insert(k.clone(), old.clone());
            }
        }
    }
    if l.nft != d.nft {
        (before.nft, after.nft) = shrink_nft(l.nft.as_ref(), d.nft.as_ref());
    }
    (before, after)
}

/// Whether two tables differ at most in their sets' elements: same family,
/// name, chains (rules included), set names and types.
fn same_shape(l: &NftTable, d: &NftTable) -> bool {
    l.family == d.family
        && l.name == d.name
        && l.chains == d.chains
        && l.sets.len() == d.sets.len()
        && l.sets.iter().all(|(n, ls)| {
            d.sets
                .get(n)
                .is_some_and(|ds| ls.key_type == ds.key_type && ls.data_type == ds.data_type)
        })
}

/// [`shrink_sets`] for the nft table: when only elements differ, both sides
/// keep the table's shape (sets, chains) but only the elements on their side
/// of the difference (a map element whose value changed is on both), so the
/// batch planner and the ops copy O(change) elements, not the whole table
/// (30,000 elements at 10,000 floating IPs, twice). Otherwise both tables.
fn shrink_nft(l: Option<&NftTable>, d: Option<&NftTable>) -> (Option<NftTable>, Option<NftTable>) {
    let (Some(l), Some(d)) = (l, d) else {
        return (l.cloned(), d.cloned());
    };
    if !same_shape(l, d) {
        return (Some(l.clone()), Some(d.clone()));
    }
    let only = |a: &NftTable, b: &NftTable| NftTable {
        family: a.family,
        name: a.name.clone(),
        chains: a.chains.clone(),
        sets: a
            .sets
            .iter()
            .map(|(n, s)| {
                let other = &b.sets[n].elements;
                let elements = s
                    .elements
                    .iter()
                    .filter(|(k, v)| other.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let set = NftSet {
                    key_type: s.key_type.clone(),
                    data_type: s.data_type.clone(),
                    elements,
                };
                (n.clone(), set)
            })
            .collect(),
    };
    (Some(only(l, d)), Some(only(d, l)))
}

/// Bring `last` to `desired` for one namespace given the pair [`shrink`]
/// made, without copying what did not change.
fn patch(last: &mut NsState, before: &NsState, after: &NsState, desired: &NsState) {
    if before.links != after.links || last.links != desired.links {
        *last = desired.clone();
        return;
    }
    fn apply<T: Ord + Clone>(set: &mut BTreeSet<T>, gone: &BTreeSet<T>, new: &BTreeSet<T>) {
        for g in gone {
            set.remove(g);
        }
        set.extend(new.iter().cloned());
    }
    apply(&mut last.addresses, &before.addresses, &after.addresses);
    apply(&mut last.routes, &before.routes, &after.routes);
    apply(&mut last.rules, &before.rules, &after.rules);
    apply(&mut last.neighbours, &before.neighbours, &after.neighbours);
    apply(&mut last.fdb, &before.fdb, &after.fdb);
    if last.sysctls != desired.sysctls {
        last.sysctls = desired.sysctls.clone();
    }
    match (&mut last.nft, &before.nft, &after.nft, &desired.nft) {
        // Only elements changed (see `shrink_nft`): patch them in place.
        (Some(l), Some(b), Some(a), Some(d)) if same_shape(l, d) => {
            for (name, set) in &mut l.sets {
                if let Some(gone) = b.sets.get(name) {
                    for k in gone.elements.keys() {
                        set.elements.remove(k);
                    }
                }
                if let Some(new) = a.sets.get(name) {
                    set.elements
                        .extend(new.elements.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        _ => {
            if last.nft != desired.nft {
                last.nft = desired.nft.clone();
            }
        }
    }
}

/// Whether `op` works in one of the namespaces `set`: inside it, creates
/// it, or creates a veth whose peer goes there.
fn touches(op: &Op, set: &[NsRef]) -> bool {
    if set.is_empty() {
        return false;
    }
    match op {
        Op::CreateNetns { name } | Op::DeleteNetns { name } => set
            .iter()
            .any(|n| matches!(n, NsRef::Named(m) if m == name)),
        Op::CreateLink { ns, link, .. } => {
            set.contains(ns)
                || matches!(&link.kind, LinkKind::Veth { peer_ns, .. } if set.contains(peer_ns))
        }
        _ => op.ns().is_some_and(|n| set.contains(n)),
    }
}

/// What [`Engine::observe_with`] found.
pub(super) struct Observation {
    pub state: NodeState,
    pub extra: ObservedExtra,
    pub failures: Vec<(NsRef, Error)>,
    /// Namespaces with an owned name but without the ownership tag:
    /// someone else's, left out of `state`.
    pub foreign: Vec<NsRef>,
}

// The agent and the lab move an engine into blocking tasks.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Engine>();
};

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

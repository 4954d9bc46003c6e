//! Observation: the kernel's owned objects as a [`NodeState`].
//!
//! Per namespace: one dump each of links, addresses, routes, rules and
//! neighbours (plus the bridge FDB where owned VXLAN devices exist), and one
//! thread inside the namespace that reads the listed sysctls and runs one
//! `nft -j list table` per family.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::diff::{ns_name, ObservedExtra};
use super::engine::{Engine, Observation};
use super::error::Error;
use super::netlink::{KLink, KLinkKind};
use super::{netns, nft};
use crate::plan::model::{
    Address, FdbEntry, Link, LinkKind, Neighbour, NftFamily, NftTable, NodeState, NsRef, NsState,
    Route, Rule, NFT_TABLE, ROUTE_PROTOCOL, RULE_PRIORITIES,
};

pub use crate::plan::names::{OWNED_LINK_PREFIXES, OWNED_NETNS_PREFIXES, OWNER_TAG};

/// Whether the named namespace `name` has a name kube-dvr gives its
/// namespaces (ownership also needs the tag: [`OWNER_TAG`]).
pub fn owns_netns(name: &str) -> bool {
    OWNED_NETNS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether kube-dvr owns link `name` in namespace `ns`.
pub fn owns_link(ns: &NsRef, name: &str) -> bool {
    match ns {
        NsRef::Root => OWNED_LINK_PREFIXES.iter().any(|p| name.starts_with(p)),
        NsRef::Named(_) => name != "lo",
    }
}

fn default_family(ns: &NsRef) -> NftFamily {
    match ns {
        NsRef::Root => NftFamily::Bridge,
        NsRef::Named(_) => NftFamily::Ip,
    }
}

impl Engine {
    /// Observe everything owned. With `desired`, also read the sysctls it
    /// lists and the nft family it uses. Failures are per namespace.
    pub(super) fn observe_with(&mut self, desired: Option<&NodeState>) -> Observation {
        let mut failures = Vec::new();
        let mut extra = ObservedExtra::default();
        let mut nsrefs = vec![NsRef::Root];
        match netns::list(&self.cfg.netns_dir) {
            Ok(names) => nsrefs.extend(
                names
                    .into_iter()
                    .filter(|n| owns_netns(n))
                    .map(NsRef::Named),
            ),
            Err(source) => failures.push((
                NsRef::Root,
                Error::Netns {
                    ns: self.cfg.netns_dir.display().to_string(),
                    op: "list",
                    source,
                },
            )),
        }
        // Forget sockets of namespaces that are gone.
        let live: HashSet<&NsRef> = nsrefs.iter().collect();
        let gone: Vec<NsRef> = (self.handles.keys())
            .filter(|ns| !live.contains(ns))
            .cloned()
            .collect();
        for ns in &gone {
            self.drop_handle(ns);
        }

        // Links first, everywhere: veth peers are resolved across namespaces.
        let mut klinks: BTreeMap<NsRef, Vec<KLink>> = BTreeMap::new();
        for ns in &nsrefs {
            match self.refresh_links(ns) {
                Ok(l) => {
                    klinks.insert(ns.clone(), l);
                }
                Err(e) => failures.push((ns.clone(), e)),
            }
        }
        // A namespace with an owned name is kube-dvr's only if its `lo`
        // carries the tag (see `netns`): the others are left out entirely.
        let mut foreign = Vec::new();
        klinks.retain(|ns, links| {
            let owned = match ns {
                NsRef::Root => true,
                NsRef::Named(_) => netns::is_owner_tag(
                    (links.iter().find(|l| l.index == netns::LOOPBACK_INDEX))
                        .and_then(|l| l.alias.as_deref()),
                ),
            };
            if !owned {
                foreign.push(ns.clone());
            }
            owned
        });
        for ns in &foreign {
            self.drop_handle(ns);
            nsrefs.retain(|n| n != ns);
        }
        let links = Links::new(&klinks);
        let mut state = NodeState::default();
        for ns in nsrefs.iter().filter(|n| klinks.contains_key(*n)) {
            match self.observe_ns(ns, &links, &mut extra) {
                Ok(st) => match ns {
                    NsRef::Root => state.root = st,
                    NsRef::Named(n) => {
                        state.namespaces.insert(n.clone(), st);
                    }
                },
                Err(e) => failures.push((ns.clone(), e)),
            }
        }
        // Sysctls and nftables: read from threads inside each namespace,
        // several namespaces at a time (most of the time goes to `nft`
        // processes starting up).
        let jobs: Vec<InNsJob> = nsrefs
            .iter()
            .filter(|ns| !failures.iter().any(|(f, _)| f == *ns))
            .map(|ns| InNsJob::new(ns.clone(), self.ns_path(ns), desired))
            .collect();
        for (job, result) in jobs.iter().zip(read_in_namespaces(&jobs)) {
            let ns = &job.ns;
            let st = match ns {
                NsRef::Root => &mut state.root,
                NsRef::Named(n) => state.namespaces.entry(n.clone()).or_default(),
            };
            match result {
                Ok((sysctls, tables)) => {
                    st.sysctls = sysctls;
                    let mut found = tables.into_iter();
                    st.nft = found.next();
                    let rest: Vec<NftTable> = found.collect();
                    if !rest.is_empty() {
                        extra.extra_nft.insert(ns.clone(), rest);
                    }
                }
                Err(e) => failures.push((ns.clone(), e)),
            }
        }
        // A failed named namespace still exists: keep it (empty) in the
        // observed state so the diff does not try to create it.
        for (ns, _) in &failures {
            if let NsRef::Named(n) = ns {
                state.namespaces.entry(n.clone()).or_default();
            }
        }
        Observation {
            state,
            extra,
            failures,
            foreign,
        }
    }

    fn observe_ns(
        &mut self,
        ns: &NsRef,
        klinks: &Links,
        extra: &mut ObservedExtra,
    ) -> Result<NsState, Error> {
        let mut st = NsState::default();
        let mine = klinks.all[ns];
        let names: HashMap<u32, &str> = mine.iter().map(|l| (l.index, l.name.as_str())).collect();
        let owned: HashMap<u32, &KLink> = mine
            .iter()
            .filter(|l| owns_link(ns, &l.name))
            .map(|l| (l.index, l))
            .collect();
        for k in owned.values() {
            let id = (ns.clone(), k.name.clone());
            let kind = match self.model_kind(ns, k, klinks) {
                Some(kind) => kind,
                None => {
                    extra.broken.insert(id.clone());
                    LinkKind::Macvlan {
                        parent: format!("?{:?}", k.kind),
                    }
                }
            };
            if !k.up {
                extra.down.insert(id);
            }
            st.links.insert(
                k.name.clone(),
                Link {
                    name: k.name.clone(),
                    kind,
                    mac: k.mac,
                    master: k.master.and_then(|m| names.get(&m)).map(|s| s.to_string()),
                    mtu: Some(k.mtu),
                },
            );
        }
        let ctx = |what: &str| {
            let ns = ns_name(ns).to_string();
            let object = what.to_string();
            move |source| Error::Netlink {
                ns,
                op: "dump",
                object,
                source,
            }
        };
        let dev_name = |i: u32| {
            names
                .get(&i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("#{i}"))
        };
        let h = self.handle(ns)?;
        for a in h.nl.addresses().map_err(ctx("addresses"))? {
            if let Some(l) = owned.get(&a.index) {
                st.addresses.insert(Address {
                    link: l.name.clone(),
                    addr: a.addr,
                });
            }
        }
        for r in h.nl.routes().map_err(ctx("routes"))? {
            if r.protocol == ROUTE_PROTOCOL {
                st.routes.insert(Route {
                    table: r.table,
                    dst: r.dst,
                    via: r.via,
                    dev: r.oif.map(dev_name),
                });
            }
        }
        for r in h.nl.rules().map_err(ctx("rules"))? {
            if RULE_PRIORITIES.contains(&r.priority) {
                st.rules.insert(Rule {
                    priority: r.priority,
                    from: r.from,
                    fwmark: r.fwmark,
                    table: r.table,
                });
            }
        }
        for n in h.nl.neighbours().map_err(ctx("neighbours"))? {
            if let (true, Some(l), Some(mac)) = (n.permanent, owned.get(&n.index), n.mac) {
                st.neighbours.insert(Neighbour {
                    link: l.name.clone(),
                    ip: n.ip,
                    mac,
                });
            }
        }
        let has_vxlan = owned
            .values()
            .any(|l| matches!(l.kind, KLinkKind::Vxlan { .. }));
        if has_vxlan {
            for e in h.nl.fdb().map_err(ctx("fdb"))? {
                let Some(l) = owned.get(&e.index) else {
                    continue;
                };
                if let (true, true, Some(dst)) =
                    (e.on_self, matches!(l.kind, KLinkKind::Vxlan { .. }), e.dst)
                {
                    st.fdb.insert(FdbEntry {
                        link: l.name.clone(),
                        mac: e.mac,
                        dst,
                    });
                }
            }
        }

        Ok(st)
    }

    /// The model kind of an owned link; `None` if it cannot be expressed
    /// (unknown kind, unresolvable veth peer or macvlan parent).
    fn model_kind(&mut self, ns: &NsRef, k: &KLink, klinks: &Links) -> Option<LinkKind> {
        match &k.kind {
            KLinkKind::Bridge => Some(LinkKind::Bridge),
            KLinkKind::Vxlan { vni, local, port } => Some(LinkKind::Vxlan {
                vni: *vni,
                local: (*local)?,
                port: *port,
            }),
            KLinkKind::Veth => {
                let peer_idx = k.link?;
                let Some(nsid) = k.link_netnsid else {
                    let p = klinks.by_index[ns].get(&peer_idx)?;
                    return Some(LinkKind::Veth {
                        peer: p.name.clone(),
                        peer_ns: ns.clone(),
                    });
                };
                // Candidates: veths elsewhere with the peer's index pointing back.
                let candidates = klinks.veths.get(&peer_idx).into_iter().flatten();
                for &(other, p) in candidates {
                    if other == ns || p.link != Some(k.index) || p.link_netnsid.is_none() {
                        continue;
                    }
                    if self.nsid(ns, other) == Some(nsid) {
                        return Some(LinkKind::Veth {
                            peer: p.name.clone(),
                            peer_ns: other.clone(),
                        });
                    }
                }
                None
            }
            KLinkKind::Macvlan => {
                let parent_idx = k.link?;
                let root = NsRef::Root;
                let parent_ns = match k.link_netnsid {
                    None if ns == &root => &root,
                    None => return None,
                    Some(id) => {
                        if self.nsid(ns, &root) != Some(id) {
                            return None;
                        }
                        &root
                    }
                };
                let p = klinks.by_index.get(parent_ns)?.get(&parent_idx)?;
                Some(LinkKind::Macvlan {
                    parent: p.name.clone(),
                })
            }
            KLinkKind::Other(_) => None,
        }
    }

    /// The id `from` gives namespace `to` (cached per pair of inodes).
    fn nsid(&mut self, from: &NsRef, to: &NsRef) -> Option<i32> {
        let to_path = self.ns_path(to);
        let to_inode = netns::inode(&to_path).ok()?;
        let h = self.handle(from).ok()?;
        let key = (h.inode, to_inode);
        if let Some(id) = self.nsids.get(&key) {
            return *id;
        }
        let f = File::open(&to_path).ok()?;
        let h = self.handle(from).ok()?;
        let id = h.nl.nsid_of(f.as_raw_fd()).ok()?;
        drop(f);
        // Cache only while `to` is held open by a handle of its own: that is
        // what keeps its inode from being reused (see `drop_handle`).
        let held = self.handles.get(to).is_some_and(|h| h.inode == to_inode);
        if id.is_some() && held {
            self.nsids.insert(key, id);
        }
        id
    }
}

/// What to read inside one namespace.
struct InNsJob {
    ns: NsRef,
    path: std::path::PathBuf,
    keys: Vec<String>,
    /// The desired family first, then the namespace's default.
    families: Vec<NftFamily>,
}

impl InNsJob {
    fn new(ns: NsRef, path: std::path::PathBuf, desired: Option<&NodeState>) -> InNsJob {
        let want = desired.and_then(|d| match &ns {
            NsRef::Root => Some(&d.root),
            NsRef::Named(n) => d.namespaces.get(n),
        });
        let keys = want
            .map(|w| w.sysctls.keys().cloned().collect())
            .unwrap_or_default();
        let mut families = vec![default_family(&ns)];
        if let Some(f) = want.and_then(|w| w.nft.as_ref()).map(|t| t.family) {
            if !families.contains(&f) {
                families.insert(0, f);
            }
        }
        InNsJob {
            ns,
            path,
            keys,
            families,
        }
    }

    /// Observed sysctls (absent keys left out) and the tables found, in
    /// `families` order.
    fn run(&self) -> Result<(BTreeMap<String, String>, Vec<NftTable>), Error> {
        let ns = ns_name(&self.ns);
        let (sysctls, tables) = netns::run_in(&self.path, || {
            let sysctls: BTreeMap<String, String> = self
                .keys
                .iter()
                .filter_map(|k| {
                    let v = std::fs::read_to_string(Path::new("/proc/sys").join(k)).ok()?;
                    Some((k.clone(), normalize_sysctl(&v)))
                })
                .collect();
            let tables: Vec<Result<Option<NftTable>, nft::NftError>> = self
                .families
                .iter()
                .map(|f| nft::observe(*f, NFT_TABLE))
                .collect();
            (sysctls, tables)
        })
        .map_err(|source| Error::Netns {
            ns: ns.to_string(),
            op: "enter",
            source,
        })?;
        let mut found = Vec::new();
        for t in tables {
            found.extend(t.map_err(|source| Error::Nft {
                ns: ns.to_string(),
                op: "observe",
                source: Box::new(source),
            })?);
        }
        Ok((sysctls, found))
    }
}

/// Namespaces read at the same time.
const READ_PARALLELISM: usize = 8;

/// Run `jobs` on up to [`READ_PARALLELISM`] threads; results in job order.
#[allow(clippy::type_complexity)]
fn read_in_namespaces(
    jobs: &[InNsJob],
) -> Vec<Result<(BTreeMap<String, String>, Vec<NftTable>), Error>> {
    if jobs.len() <= 1 {
        return jobs.iter().map(InNsJob::run).collect();
    }
    let chunk = jobs.len().div_ceil(READ_PARALLELISM);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(InNsJob::run).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The links of all observed namespaces, indexed.
struct Links<'a> {
    all: HashMap<&'a NsRef, &'a Vec<KLink>>,
    by_index: HashMap<&'a NsRef, HashMap<u32, &'a KLink>>,
    /// Veths by their own index, across namespaces (peer candidates).
    veths: HashMap<u32, Vec<(&'a NsRef, &'a KLink)>>,
}

impl<'a> Links<'a> {
    fn new(klinks: &'a BTreeMap<NsRef, Vec<KLink>>) -> Links<'a> {
        let mut l = Links {
            all: HashMap::new(),
            by_index: HashMap::new(),
            veths: HashMap::new(),
        };
        for (ns, links) in klinks {
            l.all.insert(ns, links);
            l.by_index
                .insert(ns, links.iter().map(|k| (k.index, k)).collect());
            for k in links.iter().filter(|k| k.kind == KLinkKind::Veth) {
                l.veths.entry(k.index).or_default().push((ns, k));
            }
        }
        l
    }
}

/// `/proc/sys` values end in a newline; multi-value keys are tab separated.
fn normalize_sysctl(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_the_planner_gives_is_owned() {
        use crate::plan::names;
        for l in [
            names::bridge(7),
            names::vxlan(7),
            names::qr_bridge(7),
            names::sg_bridge(7),
            names::qg_bridge(7),
            names::fg_bridge("public"),
        ] {
            assert!(owns_link(&NsRef::Root, &l), "root link {l}");
        }
        for n in [
            names::qrouter_ns(7),
            names::snat_ns(7),
            names::fip_ns("public"),
        ] {
            assert!(owns_netns(&n), "netns {n}");
        }
    }

    #[test]
    fn ownership_by_namespace() {
        assert!(owns_link(&NsRef::Root, "dvrvx-7"));
        assert!(!owns_link(&NsRef::Root, "eth0"));
        assert!(owns_link(&NsRef::Named("qrouter-a".into()), "eth0"));
        assert!(!owns_link(&NsRef::Named("qrouter-a".into()), "lo"));
        assert!(owns_netns("snat-x") && !owns_netns("other"));
    }
}

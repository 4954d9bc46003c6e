//! What a pass must not remove although the plan lacks it.
//!
//! The sweep removes every owned object the plan does not list. That is
//! right for objects the agent knows to be gone, and wrong for objects that
//! exist in the API but that the agent cannot resolve yet (the controller is
//! behind an edit the agent never saw the previous version of, or an object
//! they depend on is in that state): their kernel state is live and may carry
//! traffic. The agent describes such state as a [`Keep`]; the engine merges
//! the kept part of what the kernel holds into the desired state before it
//! diffs, so nothing kept is removed, while everything else converges as
//! usual. One mechanism for every kind of object: no special case in the
//! diff or the executor.
//!
//! Granularity follows how state is owned: a named namespace belongs to one
//! router (or one external network) and is kept whole; in the root namespace
//! links are kept by name with what hangs on them (addresses, neighbours,
//! FDB entries, routes through them), and nftables elements by the addresses
//! and MACs they mention. Keeping closes over the kernel's own coupling:
//! a veth's peer (deleting one end deletes both), a port's bridge and a
//! bridge's ports (deleting either cuts the segment).
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::plan::model::{LinkKind, MacAddr, NftTable, NodeState, NsRef, NsState};

/// Kernel state to keep (see the module docs). Empty = keep nothing beyond
/// the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Keep {
    /// Named namespaces kept whole, with everything in them.
    pub namespaces: BTreeSet<String>,
    /// Links kept with what hangs on them, by namespace and name.
    pub links: BTreeSet<(NsRef, String)>,
    /// Addresses: addresses, routes, neighbours and nftables elements that
    /// mention one are kept.
    pub ips: BTreeSet<Ipv4Addr>,
    /// MACs: nftables elements that mention one are kept.
    pub macs: BTreeSet<MacAddr>,
    /// Named namespaces whose names start with one of these are kept whole:
    /// for state whose names cannot be told (an object whose allocation in
    /// its stored status does not even decode), keep every such namespace.
    pub namespace_prefixes: BTreeSet<String>,
}

impl Keep {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.ips.is_empty()
            && self.macs.is_empty()
            && self.namespace_prefixes.is_empty()
    }

    /// Whether the named namespace `n` is kept whole.
    fn keeps_whole(&self, n: &str) -> bool {
        self.namespaces.contains(n) || self.namespace_prefixes.iter().any(|p| n.starts_with(p))
    }

    /// `desired` plus what of `held` (the observed kernel, or the state the
    /// last clean pass left) this keeps and `desired` lacks. Where both name
    /// the same link, `desired` wins: keeping never blocks a change the plan
    /// wants, only a removal.
    pub fn merge<'a>(&self, held: &NodeState, desired: &'a NodeState) -> Cow<'a, NodeState> {
        if self.is_empty() {
            return Cow::Borrowed(desired);
        }
        let links = self.closure(held);
        let mut out = desired.clone();
        let mut merge_into = |ns: &NsRef, h: &NsState| {
            let whole = matches!(ns, NsRef::Named(n) if self.keeps_whole(n));
            let sel = Selector {
                keep: self,
                ns,
                links: &links,
                whole,
            };
            if !whole && !sel.touches(h) {
                return;
            }
            let target = match ns {
                NsRef::Root => &mut out.root,
                NsRef::Named(n) => out.namespaces.entry(n.clone()).or_default(),
            };
            sel.merge(h, target);
        };
        merge_into(&NsRef::Root, &held.root);
        for (n, h) in &held.namespaces {
            merge_into(&NsRef::Named(n.clone()), h);
        }
        Cow::Owned(out)
    }

    /// The links of `held` kept: named ones, every link of a kept namespace,
    /// and closed over veth peers, masters and bridge ports.
    fn closure(&self, held: &NodeState) -> BTreeSet<(NsRef, String)> {
        let all: Vec<(NsRef, &NsState)> = std::iter::once((NsRef::Root, &held.root))
            .chain(
                held.namespaces
                    .iter()
                    .map(|(n, s)| (NsRef::Named(n.clone()), s)),
            )
            .collect();
        let mut kept: BTreeSet<(NsRef, String)> = BTreeSet::new();
        for (ns, st) in &all {
            let whole = matches!(ns, NsRef::Named(n) if self.keeps_whole(n));
            for name in st.links.keys() {
                if whole || self.links.contains(&(ns.clone(), name.clone())) {
                    kept.insert((ns.clone(), name.clone()));
                }
            }
        }
        loop {
            let mut more = Vec::new();
            for (ns, st) in &all {
                for (name, link) in &st.links {
                    let id = (ns.clone(), name.clone());
                    let master = link.master.as_ref().map(|m| (ns.clone(), m.clone()));
                    let peer = match &link.kind {
                        LinkKind::Veth { peer, peer_ns } => Some((peer_ns.clone(), peer.clone())),
                        _ => None,
                    };
                    if kept.contains(&id) {
                        more.extend(master.into_iter().chain(peer));
                    } else if master.is_some_and(|m| kept.contains(&m)) {
                        more.push(id);
                    }
                }
            }
            let before = kept.len();
            kept.extend(more);
            if kept.len() == before {
                return kept;
            }
        }
    }
}

/// What of one held namespace is kept.
struct Selector<'a> {
    keep: &'a Keep,
    ns: &'a NsRef,
    links: &'a BTreeSet<(NsRef, String)>,
    whole: bool,
}

impl Selector<'_> {
    fn link(&self, name: &str) -> bool {
        self.whole || self.links.contains(&(self.ns.clone(), name.to_string()))
    }

    fn ip(&self, ip: Ipv4Addr) -> bool {
        self.whole || self.keep.ips.contains(&ip)
    }

    /// An nftables element (key or value) mentions a kept address or MAC.
    /// Keys may be concatenations (`a . b`).
    fn element(&self, key: &str, value: Option<&str>) -> bool {
        self.whole
            || key
                .split_whitespace()
                .chain(value.into_iter().flat_map(str::split_whitespace))
                .any(|t| {
                    t.parse::<Ipv4Addr>()
                        .is_ok_and(|a| self.keep.ips.contains(&a))
                        || t.parse::<MacAddr>()
                            .is_ok_and(|m| self.keep.macs.contains(&m))
                })
    }

    /// Whether anything in `h` is kept.
    fn touches(&self, h: &NsState) -> bool {
        h.links.keys().any(|l| self.link(l))
            || h.addresses.iter().any(|a| self.ip(a.addr.addr()))
            || h.routes
                .iter()
                .any(|r| self.ip(r.dst.addr()) || r.via.is_some_and(|v| self.ip(v)))
            || h.neighbours.iter().any(|n| self.ip(n.ip))
            || h.nft.as_ref().is_some_and(|t| {
                t.sets.values().any(|s| {
                    s.elements
                        .iter()
                        .any(|(k, v)| self.element(k, v.as_deref()))
                })
            })
    }

    /// Add to `target` what of `h` is kept and `target` lacks.
    fn merge(&self, h: &NsState, target: &mut NsState) {
        for (name, link) in &h.links {
            if self.link(name) && !target.links.contains_key(name) {
                target.links.insert(name.clone(), link.clone());
            }
        }
        let on_link = |l: &str| self.link(l);
        target.addresses.extend(
            h.addresses
                .iter()
                .filter(|a| on_link(&a.link) || self.ip(a.addr.addr()))
                .cloned(),
        );
        target.routes.extend(
            h.routes
                .iter()
                .filter(|r| {
                    r.dev.as_deref().is_some_and(on_link)
                        || self.ip(r.dst.addr())
                        || r.via.is_some_and(|v| self.ip(v))
                })
                .cloned(),
        );
        if self.whole {
            target.rules.extend(h.rules.iter().cloned());
        }
        target.neighbours.extend(
            h.neighbours
                .iter()
                .filter(|n| on_link(&n.link) || self.ip(n.ip))
                .cloned(),
        );
        target
            .fdb
            .extend(h.fdb.iter().filter(|f| on_link(&f.link)).cloned());
        if let Some(ht) = &h.nft {
            self.merge_nft(ht, &mut target.nft);
        }
    }

    /// Kept elements go into the desired table's sets; a set or chain the
    /// desired table lacks is kept whole only with its namespace; a table
    /// the plan has none of (of that family) is kept whole when anything in
    /// it is kept.
    fn merge_nft(&self, held: &NftTable, target: &mut Option<NftTable>) {
        let any = |t: &NftTable| {
            t.sets.values().any(|s| {
                s.elements
                    .iter()
                    .any(|(k, v)| self.element(k, v.as_deref()))
            })
        };
        match target {
            None => {
                if self.whole || any(held) {
                    *target = Some(held.clone());
                }
            }
            Some(t) if t.family == held.family => {
                for (name, set) in &held.sets {
                    match t.sets.get_mut(name) {
                        Some(ts) => {
                            for (k, v) in &set.elements {
                                if self.element(k, v.as_deref()) && !ts.elements.contains_key(k) {
                                    ts.elements.insert(k.clone(), v.clone());
                                }
                            }
                        }
                        None if self.whole => {
                            t.sets.insert(name.clone(), set.clone());
                        }
                        None => {}
                    }
                }
                if self.whole {
                    for (name, chain) in &held.chains {
                        t.chains
                            .entry(name.clone())
                            .or_insert_with(|| chain.clone());
                    }
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
#[path = "keep_tests.rs"]
mod tests;

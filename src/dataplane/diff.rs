//! The pure part of reconciliation: `diff(observed, desired)` → ordered ops.
//!
//! Order (each step may depend on the ones before it):
//! 1. create namespaces (links are created into them);
//! 2. links: delete the ones that must be recreated (kind, VNI, local, port,
//!    peer or parent differ; a veth pair with an end missing), create
//!    bridges, then VXLAN / veth / macvlan (a port names its bridge), then
//!    fix MAC / MTU / master / up in place;
//! 3. sysctls (per-interface keys such as `net/ipv4/conf/qr-1/...` need the
//!    link);
//! 4. addresses (routes via a connected next hop need them), routes, rules,
//!    neighbours, FDB, nftables;
//! 5. removals: stale routes / rules / neighbours / FDB / addresses, then
//!    stale links, then stale namespaces.
//!
//! Redundant ops are not emitted: nothing inside a namespace that is deleted
//! anyway, nothing on a link that is deleted anyway, one delete per veth pair.
//! A link that is recreated loses its addresses, neighbours, FDB entries,
//! routes and per-interface sysctls, so those count as absent.
use std::collections::{BTreeMap, BTreeSet};

pub use super::op::{ns_name, ObservedExtra, Op};
use crate::plan::model::{Link, LinkKind, NftTable, NodeState, NsRef, NsState, Route};

/// `diff_with` without extra observations (every link up, nothing broken).
pub fn diff(observed: &NodeState, desired: &NodeState) -> Vec<Op> {
    diff_with(observed, &ObservedExtra::default(), desired)
}

fn ns_state<'a>(s: &'a NodeState, ns: &NsRef) -> Option<&'a NsState> {
    match ns {
        NsRef::Root => Some(&s.root),
        NsRef::Named(n) => s.namespaces.get(n),
    }
}

fn all_ns(s: &NodeState) -> impl Iterator<Item = (NsRef, &NsState)> {
    std::iter::once((NsRef::Root, &s.root)).chain(
        s.namespaces
            .iter()
            .map(|(n, st)| (NsRef::Named(n.clone()), st)),
    )
}

type LinkId = (NsRef, String);

/// The other end of a veth, if `link` is one.
fn veth_peer(ns: &NsRef, link: &Link) -> Option<LinkId> {
    let _ = ns;
    match &link.kind {
        LinkKind::Veth { peer, peer_ns } => Some((peer_ns.clone(), peer.clone())),
        _ => None,
    }
}

/// The link a sysctl key is bound to (`.../conf/<name>/...`,
/// `.../neigh/<name>/...`), if any.
fn sysctl_link(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    while let Some(p) = parts.next() {
        if p == "conf" || p == "neigh" {
            return parts.next();
        }
    }
    None
}

/// The full diff. See the module docs for the order.
pub fn diff_with(observed: &NodeState, extra: &ObservedExtra, desired: &NodeState) -> Vec<Op> {
    let empty = NsState::default();
    let mut ops = Vec::new();

    // Namespaces.
    let deleted_ns: BTreeSet<&String> = observed
        .namespaces
        .keys()
        .filter(|n| !desired.namespaces.contains_key(*n))
        .collect();
    for name in desired.namespaces.keys() {
        if !observed.namespaces.contains_key(name) {
            ops.push(Op::CreateNetns { name: name.clone() });
        }
    }
    let ns_deleted = |ns: &NsRef| matches!(ns, NsRef::Named(n) if deleted_ns.contains(n));

    // Links that will be deleted this pass (recreated or stale): whatever
    // hangs on them vanishes with them.
    let mut gone: BTreeSet<LinkId> = BTreeSet::new();
    let obs_link = |id: &LinkId| ns_state(observed, &id.0).and_then(|s| s.links.get(&id.1));
    let des_link = |id: &LinkId| ns_state(desired, &id.0).and_then(|s| s.links.get(&id.1));

    let mut deletes = Vec::new();
    let mut creates_bridge = Vec::new();
    let mut creates_other = Vec::new();
    let mut fixes = Vec::new();
    let mut created: BTreeSet<LinkId> = BTreeSet::new();
    // Deleting a veth end deletes the pair: remember what is gone already.
    let delete_link = |id: &LinkId, gone: &mut BTreeSet<LinkId>, deletes: &mut Vec<Op>| {
        if gone.contains(id) || ns_deleted(&id.0) {
            return;
        }
        let Some(l) = obs_link(id) else { return };
        gone.insert(id.clone());
        if let Some(p) = veth_peer(&id.0, l) {
            if obs_link(&p).is_some_and(|pl| veth_peer(&p.0, pl).as_ref() == Some(id)) {
                gone.insert(p);
            }
        }
        deletes.push(Op::DeleteLink {
            ns: id.0.clone(),
            name: id.1.clone(),
        });
    };

    // Desired links: which must be (re)created.
    for (ns, st) in all_ns(desired) {
        for (name, link) in &st.links {
            let id = (ns.clone(), name.clone());
            if created.contains(&id) {
                continue;
            }
            let obs = obs_link(&id);
            let broken = extra.broken.contains(&id);
            let intact = |o: Option<&Link>, want: &LinkKind, id: &LinkId| {
                o.is_some_and(|o| &o.kind == want) && !extra.broken.contains(id)
            };
            let mut ok = intact(obs, &link.kind, &id);
            let mut peer_spec = None;
            if let Some(pid) = veth_peer(&ns, link) {
                let back = LinkKind::Veth {
                    peer: name.clone(),
                    peer_ns: ns.clone(),
                };
                ok = ok && intact(obs_link(&pid), &back, &pid);
                let spec = des_link(&pid).cloned().unwrap_or(Link {
                    name: pid.1.clone(),
                    kind: back,
                    mac: None,
                    master: None,
                    mtu: None,
                });
                peer_spec = Some((pid, spec));
            }
            if ok {
                continue;
            }
            // (Re)create: remove whatever is in the way first.
            if obs.is_some() || broken {
                delete_link(&id, &mut gone, &mut deletes);
            }
            if let Some((pid, _)) = &peer_spec {
                delete_link(pid, &mut gone, &mut deletes);
            }
            // A stale VXLAN with the same VNI would make the create fail.
            if let LinkKind::Vxlan { vni, .. } = &link.kind {
                if let Some(ost) = ns_state(observed, &ns) {
                    for (oname, ol) in &ost.links {
                        let same = matches!(&ol.kind, LinkKind::Vxlan { vni: v, .. } if v == vni);
                        if same && oname != name && !st.links.contains_key(oname) {
                            delete_link(&(ns.clone(), oname.clone()), &mut gone, &mut deletes);
                        }
                    }
                }
            }
            // Create the pair from the end that sorts first (the root end,
            // when there is one); the other end's master is set afterwards.
            let (cid, clink, cpeer) = match peer_spec {
                Some((pid, plink)) if pid < id => (pid, plink, Some(link.clone())),
                Some((_, plink)) => (id.clone(), link.clone(), Some(plink)),
                None => (id.clone(), link.clone(), None),
            };
            created.insert(cid.clone());
            let master_fix = |ns: &NsRef, l: &Link, up: bool| {
                (up || l.master.is_some()).then(|| Op::SetLink {
                    ns: ns.clone(),
                    name: l.name.clone(),
                    mac: None,
                    mtu: None,
                    master: l.master.clone().map(Some),
                    up,
                })
            };
            if let Some(p) = &cpeer {
                if let LinkKind::Veth { peer_ns, .. } = &clink.kind {
                    // The kernel creates the peer down and without master.
                    created.insert((peer_ns.clone(), p.name.clone()));
                    fixes.extend(master_fix(peer_ns, p, true));
                }
            }
            if matches!(clink.kind, LinkKind::Macvlan { .. }) && cid.0 != NsRef::Root {
                // Created in root and moved: its master is set in place.
                fixes.extend(master_fix(&cid.0, &clink, false));
            }
            let op = Op::CreateLink {
                ns: cid.0.clone(),
                link: clink,
                peer: cpeer,
            };
            if matches!(link.kind, LinkKind::Bridge) {
                creates_bridge.push(op);
                // An MTU given at creation floats with the bridge's ports
                // (1500 once the last one leaves); set before any port
                // joins, it sticks.
                if let Some(mtu) = link.mtu {
                    creates_bridge.push(Op::SetLink {
                        ns: cid.0.clone(),
                        name: name.clone(),
                        mac: None,
                        mtu: Some(mtu),
                        master: None,
                        up: false,
                    });
                }
            } else {
                creates_other.push(op);
            }
        }
    }
    // In-place fixes of links that stay.
    for (ns, st) in all_ns(desired) {
        for (name, link) in &st.links {
            let id = (ns.clone(), name.clone());
            if created.contains(&id) {
                continue;
            }
            let Some(o) = obs_link(&id) else { continue };
            let mac = link.mac.filter(|m| o.mac != Some(*m));
            let mtu = link.mtu.filter(|m| o.mtu != Some(*m));
            let obs_master = o
                .master
                .clone()
                .filter(|m| !gone.contains(&(ns.clone(), m.clone())));
            let master = (obs_master != link.master).then(|| link.master.clone());
            let up = extra.down.contains(&id);
            if mac.is_some() || mtu.is_some() || master.is_some() || up {
                fixes.push(Op::SetLink {
                    ns: ns.clone(),
                    name: name.clone(),
                    mac,
                    mtu,
                    master,
                    up,
                });
            }
        }
    }
    // Stale links (decided now, deleted at the end): their objects are not
    // removed one by one.
    let mut stale_deletes = Vec::new();
    let implicitly_desired: BTreeSet<LinkId> = all_ns(desired)
        .flat_map(|(ns, st)| st.links.values().filter_map(move |l| veth_peer(&ns, l)))
        .collect();
    for (ns, st) in all_ns(observed) {
        let dst = ns_state(desired, &ns).unwrap_or(&empty);
        for name in st.links.keys() {
            let id = (ns.clone(), name.clone());
            if !dst.links.contains_key(name) && !implicitly_desired.contains(&id) {
                delete_link(&id, &mut gone, &mut stale_deletes);
            }
        }
    }
    ops.extend(deletes);
    ops.extend(creates_bridge);
    ops.extend(creates_other);
    ops.extend(fixes);

    // Link-bound objects observed on a gone (or recreated) link are absent.
    let on_gone = |ns: &NsRef, link: &str| gone.contains(&(ns.clone(), link.to_string()));

    // Phases across namespaces: sysctls, addresses, routes, rules,
    // neighbours, FDB, nftables; then removals: routes, rules, neighbours,
    // FDB, addresses.
    let [mut sysctls, mut addrs, mut routes, mut rules, mut neighs, mut fdbs, mut nfts] =
        std::array::from_fn::<Vec<Op>, 7, _>(|_| Vec::new());
    let [mut del_routes, mut del_rules, mut del_neighs, mut del_fdbs, mut del_addrs] =
        std::array::from_fn::<Vec<Op>, 5, _>(|_| Vec::new());
    for (ns, dst) in all_ns(desired) {
        let ost = ns_state(observed, &ns).unwrap_or(&empty);
        let live = |link: &str| !on_gone(&ns, link);

        for (key, value) in &dst.sysctls {
            let recreated = sysctl_link(key).is_some_and(|l| {
                let id = (ns.clone(), l.to_string());
                gone.contains(&id) || created.contains(&id)
            });
            if recreated || ost.sysctls.get(key) != Some(value) {
                sysctls.push(Op::SetSysctl {
                    ns: ns.clone(),
                    key: key.clone(),
                    value: value.clone(),
                });
            }
        }
        for a in &dst.addresses {
            if !(ost.addresses.contains(a) && live(&a.link)) {
                addrs.push(Op::AddAddress {
                    ns: ns.clone(),
                    address: a.clone(),
                });
            }
        }
        // A desired route without `dev` matches an observed one with any
        // (the kernel fills it in).
        let route_live = |r: &Route| r.dev.as_deref().is_none_or(live);
        let mut by_key: BTreeMap<(u32, ipnet::Ipv4Net, Option<std::net::Ipv4Addr>), Vec<&Route>> =
            BTreeMap::new();
        for r in ost.routes.iter().filter(|r| route_live(r)) {
            by_key.entry((r.table, r.dst, r.via)).or_default().push(r);
        }
        let mut kept_routes: BTreeSet<&Route> = BTreeSet::new();
        for r in &dst.routes {
            let cands = by_key.get(&(r.table, r.dst, r.via));
            let hit = cands.and_then(|c| {
                c.iter()
                    .find(|o| r.dev.is_none() || o.dev == r.dev)
                    .copied()
            });
            match hit {
                Some(o) => {
                    kept_routes.insert(o);
                }
                None => routes.push(Op::AddRoute {
                    ns: ns.clone(),
                    route: r.clone(),
                }),
            }
        }
        for r in dst.rules.difference(&ost.rules) {
            rules.push(Op::AddRule {
                ns: ns.clone(),
                rule: r.clone(),
            });
        }
        for n in &dst.neighbours {
            if !(ost.neighbours.contains(n) && live(&n.link)) {
                neighs.push(Op::SetNeighbour {
                    ns: ns.clone(),
                    neighbour: n.clone(),
                });
            }
        }
        for e in &dst.fdb {
            if !(ost.fdb.contains(e) && live(&e.link)) {
                fdbs.push(Op::AddFdb {
                    ns: ns.clone(),
                    entry: e.clone(),
                });
            }
        }
        // Observed rules are tags (see `nft`): compare through the planner.
        if !super::nft::plan_batch(ost.nft.as_ref(), dst.nft.as_ref()).is_empty() {
            match (&ost.nft, &dst.nft) {
                (Some(o), Some(d)) if o.family != d.family => {
                    removals_nft(&mut nfts, &ns, o);
                    nfts.push(Op::Nft {
                        ns: ns.clone(),
                        observed: None,
                        desired: Some(d.clone()),
                    });
                }
                (o, d) => nfts.push(Op::Nft {
                    ns: ns.clone(),
                    observed: o.clone(),
                    desired: d.clone(),
                }),
            }
        }
        for t in extra.extra_nft.get(&ns).into_iter().flatten() {
            if dst.nft.as_ref().map(|d| d.family) != Some(t.family) {
                removals_nft(&mut nfts, &ns, t);
            }
        }

        // Removals in a namespace that stays.
        for r in &ost.routes {
            if route_live(r) && !kept_routes.contains(r) {
                del_routes.push(Op::DelRoute {
                    ns: ns.clone(),
                    route: r.clone(),
                });
            }
        }
        for r in ost.rules.difference(&dst.rules) {
            del_rules.push(Op::DelRule {
                ns: ns.clone(),
                rule: r.clone(),
            });
        }
        let wanted_neigh: BTreeSet<(&str, std::net::Ipv4Addr)> = dst
            .neighbours
            .iter()
            .map(|n| (n.link.as_str(), n.ip))
            .collect();
        for n in &ost.neighbours {
            if live(&n.link) && !wanted_neigh.contains(&(n.link.as_str(), n.ip)) {
                del_neighs.push(Op::DelNeighbour {
                    ns: ns.clone(),
                    neighbour: n.clone(),
                });
            }
        }
        for e in ost.fdb.difference(&dst.fdb) {
            if live(&e.link) {
                del_fdbs.push(Op::DelFdb {
                    ns: ns.clone(),
                    entry: e.clone(),
                });
            }
        }
        for a in ost.addresses.difference(&dst.addresses) {
            if live(&a.link) {
                del_addrs.push(Op::DelAddress {
                    ns: ns.clone(),
                    address: a.clone(),
                });
            }
        }
    }
    // The root namespace is always desired; named ones that are not are
    // deleted whole below. Root-namespace tables of other families: handled
    // above through `extra_nft`.
    for phase in [
        sysctls, addrs, routes, rules, neighs, fdbs, nfts, del_routes, del_rules, del_neighs,
        del_fdbs, del_addrs,
    ] {
        ops.extend(phase);
    }
    ops.extend(stale_deletes);
    for name in deleted_ns {
        ops.push(Op::DeleteNetns { name: name.clone() });
    }
    ops
}

fn removals_nft(ops: &mut Vec<Op>, ns: &NsRef, t: &NftTable) {
    ops.push(Op::Nft {
        ns: ns.clone(),
        observed: Some(t.clone()),
        desired: None,
    });
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;

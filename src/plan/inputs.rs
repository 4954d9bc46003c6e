//! What each node's plan depends on, as one number per node: [`node_keys`].
//! Two views that give a node the same key give it the same
//! [`plan_node`](super::plan_node) (up to a 64-bit hash collision), so a
//! caller that plans every node on every change (the controller, to know
//! the digest each agent should report) re-plans only the nodes whose key
//! moved: a change costs planning in proportion to the nodes it concerns,
//! not to the cluster.
//!
//! A node's plan reads (see `node.rs`): its own facts; every router it
//! hosts (an endpoint or standby there) or is a SNAT candidate of, whole,
//! with that router's SNAT gateways, its services (firewall, forwardings,
//! load balancers: all router-scoped) and the VTEP of every node they name
//! (endpoints', standbys', candidates'); the floating IPs it serves, their
//! routers; and of each external network those name, everything but the
//! other nodes' `fg-` addresses. The key hashes exactly that, each router
//! once per view (its hash is shared by the nodes that include it).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;

use super::view::*;

fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// Node → the key of everything its plan reads, for every node of
/// `view.nodes` (the others plan empty).
pub fn node_keys(view: &ClusterView) -> BTreeMap<String, u64> {
    let vtep = |n: &str| view.nodes.get(n).map(|f| f.vtep);
    let mut snats: HashMap<&ObjectKey, Vec<&SnatView>> = HashMap::new();
    for s in &view.snat_gateways {
        snats.entry(&s.router).or_default().push(s);
    }
    // Per router, its services.
    type Services<'v> = (
        Vec<&'v FirewallView>,
        Vec<&'v ForwardingView>,
        Vec<&'v LoadBalancerView>,
    );
    let mut services: HashMap<&ObjectKey, Services> = HashMap::new();
    for f in &view.firewalls {
        services.entry(&f.router).or_default().0.push(f);
    }
    for f in &view.port_forwardings {
        services.entry(&f.router).or_default().1.push(f);
    }
    for l in &view.load_balancers {
        services.entry(&l.router).or_default().2.push(l);
    }
    // Per router: its hash, and the nodes whose plan includes it.
    let mut router_hash: HashMap<&ObjectKey, u64> = HashMap::new();
    // Node → the hashes of the routers it includes, and the external
    // networks their SNAT gateways name.
    let mut included: HashMap<&str, (Vec<u64>, BTreeSet<&str>)> = HashMap::new();
    for r in &view.routers {
        let ss: &[&SnatView] = snats.get(&r.key).map_or(&[], Vec::as_slice);
        let mut named: BTreeSet<&str> = (r.endpoints.iter().chain(&r.standby))
            .map(|e| e.node.as_str())
            .collect();
        for s in ss {
            named.extend(s.candidates.iter().map(String::as_str));
            named.extend(s.node.as_deref());
        }
        let vteps: Vec<(&str, Option<Ipv4Addr>)> = named.iter().map(|n| (*n, vtep(n))).collect();
        let h = hash_of(&(r, ss, &vteps, services.get(&r.key)));
        // The first router of a key is the one lookups by key find.
        router_hash.entry(&r.key).or_insert(h);
        for n in named {
            let (hashes, exts) = included.entry(n).or_default();
            hashes.push(h);
            exts.extend(ss.iter().map(|s| s.external.as_str()));
        }
    }
    let ext_hash: HashMap<&str, u64> = (view.external_networks.iter())
        .map(|(k, e)| {
            (
                k.as_str(),
                hash_of(&(&e.name, &e.cidr, &e.gateway, &e.attachment)),
            )
        })
        .collect();
    let mut fips: HashMap<&str, Vec<&FloatingView>> = HashMap::new();
    for f in &view.floating_ips {
        fips.entry(f.node.as_str()).or_default().push(f);
    }
    let none = (Vec::new(), BTreeSet::new());
    view.nodes
        .iter()
        .map(|(n, facts)| {
            let (routers, router_exts) = included.get(n.as_str()).unwrap_or(&none);
            let served = fips.get(n.as_str()).map_or(&[][..], Vec::as_slice);
            let fip_routers: Vec<Option<u64>> = served
                .iter()
                .map(|f| router_hash.get(&f.router).copied())
                .collect();
            // The external networks its floating IPs and the SNAT gateways
            // of its routers name: all but the other nodes' `fg-` ports.
            let mut exts: BTreeSet<&str> = served.iter().map(|f| f.external.as_str()).collect();
            exts.extend(router_exts);
            let ext_parts: Vec<(&str, Option<u64>, Option<&Ipv4Addr>)> = exts
                .into_iter()
                .map(|e| {
                    let port = view
                        .external_networks
                        .get(e)
                        .and_then(|x| x.node_ports.get(n));
                    (e, ext_hash.get(e).copied(), port)
                })
                .collect();
            let key = hash_of(&(facts, routers, served, &fip_routers, &ext_parts));
            (n.clone(), key)
        })
        .collect()
}

#[cfg(test)]
#[path = "inputs_tests.rs"]
pub(crate) mod tests;

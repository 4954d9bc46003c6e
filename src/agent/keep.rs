//! Which kernel state the agent keeps although its plan lacks it: the state
//! of objects that exist in the API but that it cannot resolve yet. Pure,
//! unit-tested.
//!
//! After a restart the agent has not seen the version the controller last
//! processed of an object edited meanwhile ([`input`](super::input) holds it
//! back); planning without it would tear down live state that may carry
//! traffic. The same holds for everything that depends on such an object (a
//! floating IP of a held router, a router of a held external network): the
//! agent's resolver cannot place them, while the controller — once it catches
//! up — will. So the agent keeps, by the allocations in their stored status:
//! - a router: its `qrouter-` and `snat-` namespaces, its segments' root
//!   links (`dvrbr-`, `dvrvx-`, `qrb-`, `sgb-` per VNI, `qgb-` per index),
//!   its gateways' addresses and MACs (bridge-filter elements), and the
//!   `fip-` namespace of its external network;
//! - a floating IP served on this node: its router's `qrouter-` and its
//!   network's `fip-` namespace, its addresses;
//! - a SNAT gateway active on this node: its router's `snat-` and `qrouter-`;
//! - an external network: its `fip-` namespace.
//!
//! Objects being deleted are resolved (as gone) and never kept; neither are
//! objects the controller never processed (nothing was programmed for them).
//! When unsure, keep: the namespaces are kept whole, so a removal inside them
//! waits until the controller has caught up, never the other way round.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::{Resource, ResourceExt};

use super::input::{Held, Snapshot};
use crate::api::DistributedRouter;
use crate::dataplane::keep::Keep;
use crate::plan::model::NsRef;
use crate::plan::names;
use crate::plan::view::ObjectKey;

fn key<K: Resource>(o: &K) -> ObjectKey {
    ObjectKey::new(
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

fn live<K: Resource>(o: &Arc<K>) -> bool {
    o.meta().deletion_timestamp.is_none()
}

fn uids<K: Resource>(held: &[Arc<K>]) -> BTreeSet<String> {
    held.iter().filter_map(|o| o.meta().uid.clone()).collect()
}

fn is_held<K: Resource>(o: &K, held: &BTreeSet<String>) -> bool {
    o.meta().uid.as_ref().is_some_and(|u| held.contains(u))
}

/// What `node`'s agent keeps, given its caches and what its input held back.
pub fn keep(snap: &Snapshot, held: Held<'_>, node: &str) -> Keep {
    let mut k = Keep::default();
    if held.external_networks.is_empty()
        && held.routers.is_empty()
        && held.floating_ips.is_empty()
        && held.snat_gateways.is_empty()
    {
        return k;
    }
    let held_ext: BTreeSet<String> = held
        .external_networks
        .iter()
        .map(|e| e.name_any())
        .collect();
    for ext in &held_ext {
        k.namespaces.insert(names::fip_ns(ext));
    }

    let held_routers = uids(held.routers);
    let routers: BTreeMap<ObjectKey, &Arc<DistributedRouter>> = snap
        .routers
        .iter()
        .filter(|r| live(r))
        .map(|r| (key(r.as_ref()), r))
        .collect();
    let mut unresolved = BTreeSet::new();
    for (rkey, r) in &routers {
        let ext_held = r
            .spec
            .external_network
            .as_ref()
            .is_some_and(|e| held_ext.contains(e));
        if is_held(r.as_ref(), &held_routers) || ext_held {
            unresolved.insert(rkey.clone());
            keep_router(&mut k, r);
        }
    }
    let router_ext = |rkey: &ObjectKey| {
        routers
            .get(rkey)
            .and_then(|r| r.spec.external_network.clone())
    };
    // Namespaces are named by the router's index (from its stored status).
    let router_index = |rkey: &ObjectKey| {
        routers
            .get(rkey)
            .and_then(|r| r.status.as_ref())
            .and_then(|st| st.index)
    };

    // A floating IP or SNAT gateway is kept when it is held itself or its
    // router or external network is: its router's key and its external
    // network (its own, else its router's), or None when it is not kept.
    let kept =
        |namespace: Option<String>, router: &str, own_ext: &Option<String>, self_held: bool| {
            let rkey = ObjectKey::new(namespace.unwrap_or_default(), router);
            let ext = own_ext.clone().or_else(|| router_ext(&rkey));
            let depends =
                unresolved.contains(&rkey) || ext.as_ref().is_some_and(|e| held_ext.contains(e));
            (self_held || depends).then_some((rkey, ext))
        };

    let held_fips = uids(held.floating_ips);
    for f in snap.floating_ips.iter().filter(|f| live(f)) {
        let self_held = is_held(f.as_ref(), &held_fips);
        let Some((rkey, ext)) = kept(
            f.namespace(),
            &f.spec.router,
            &f.spec.external_network,
            self_held,
        ) else {
            continue;
        };
        let Some(st) = f.status.as_ref() else {
            continue;
        };
        if st.node.as_deref() != Some(node) {
            continue;
        }
        if let Some(i) = router_index(&rkey) {
            k.namespaces.insert(names::qrouter_ns(i));
        }
        if let Some(e) = &ext {
            k.namespaces.insert(names::fip_ns(e));
        }
        for a in [&st.address, &st.fixed_ip].into_iter().flatten() {
            if let Ok(ip) = a.parse() {
                k.ips.insert(ip);
            }
        }
    }

    let held_snats = uids(held.snat_gateways);
    for s in snap.snat_gateways.iter().filter(|s| live(s)) {
        let self_held = is_held(s.as_ref(), &held_snats);
        let Some((rkey, _)) = kept(
            s.namespace(),
            &s.spec.router,
            &s.spec.external_network,
            self_held,
        ) else {
            continue;
        };
        let Some(st) = s.status.as_ref() else {
            continue;
        };
        let candidate = st.candidates.iter().any(|c| c.node == node);
        if st.active_node.as_deref() != Some(node) && !candidate {
            continue;
        }
        if let Some(i) = router_index(&rkey) {
            k.namespaces.insert(names::snat_ns(i));
            k.namespaces.insert(names::qrouter_ns(i));
        }
        if let Some(ip) = st.address.as_ref().and_then(|a| a.parse().ok()) {
            k.ips.insert(ip);
        }
    }
    k
}

/// A router's state, by the allocations in its stored status.
fn keep_router(k: &mut Keep, r: &DistributedRouter) {
    if let Some(ext) = &r.spec.external_network {
        k.namespaces.insert(names::fip_ns(ext));
    }
    let mut root = |name: String| k.links.insert((NsRef::Root, name));
    let Some(st) = r.status.as_ref() else {
        return;
    };
    if let Some(i) = st.index {
        root(names::qg_bridge(i));
        k.namespaces.insert(names::qrouter_ns(i));
        k.namespaces.insert(names::snat_ns(i));
    }
    for s in &st.subnets {
        root(names::bridge(s.vni));
        root(names::vxlan(s.vni));
        root(names::qr_bridge(s.vni));
        root(names::sg_bridge(s.vni));
        k.macs.insert(names::gateway_mac(s.vni));
        k.macs.insert(names::sg_mac(s.vni));
    }
    for s in &r.spec.subnets {
        if let Ok(ip) = s.gateway.parse() {
            k.ips.insert(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FloatingIP, SnatGateway};
    use serde_json::json;

    fn router(gen: i64, observed: i64, ext: Option<&str>) -> Arc<DistributedRouter> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
                "metadata": {"name": "r1", "namespace": "t", "uid": "ur1", "generation": gen},
                "spec": {"externalNetwork": ext, "subnets": [{"name": "s", "cidr": "10.1.0.0/24",
                    "gateway": "10.1.0.1", "networkAttachment": "n"}]},
                "status": {"observedGeneration": observed, "index": 3,
                    "subnets": [{"name": "s", "vni": 7, "gatewayMac": "0a:00:00:00:00:07", "cidr": "10.1.0.0/24"}]}
            }))
            .unwrap(),
        )
    }

    fn fip(node: &str) -> Arc<FloatingIP> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
                "metadata": {"name": "f1", "namespace": "t", "uid": "uf1", "generation": 1},
                "spec": {"router": "r1", "target": {"fixedIP": "10.1.0.5"}},
                "status": {"observedGeneration": 1, "address": "203.0.113.10",
                    "fixedIP": "10.1.0.5", "node": node}
            }))
            .unwrap(),
        )
    }

    fn snat(node: &str) -> Arc<SnatGateway> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kubedvr.io/v1alpha1", "kind": "SnatGateway",
                "metadata": {"name": "g1", "namespace": "t", "uid": "ug1", "generation": 1},
                "spec": {"router": "r1"},
                "status": {"observedGeneration": 1, "address": "203.0.113.20", "activeNode": node}
            }))
            .unwrap(),
        )
    }

    fn none() -> Held<'static> {
        Held {
            external_networks: &[],
            routers: &[],
            floating_ips: &[],
            snat_gateways: &[],
        }
    }

    #[test]
    fn nothing_held_keeps_nothing() {
        let snap = Snapshot {
            routers: vec![router(1, 1, None)],
            floating_ips: vec![fip("n1")],
            ..Default::default()
        };
        assert!(keep(&snap, none(), "n1").is_empty());
    }

    #[test]
    fn a_held_router_keeps_its_state_and_what_depends_on_it() {
        let r = router(2, 1, Some("ext"));
        let held = [r.clone()];
        let snap = Snapshot {
            routers: vec![r],
            floating_ips: vec![fip("n1")],
            snat_gateways: vec![snat("n1")],
            ..Default::default()
        };
        let k = keep(
            &snap,
            Held {
                routers: &held,
                ..none()
            },
            "n1",
        );
        // r1's index in its status is 3.
        for ns in [
            names::qrouter_ns(3),
            names::snat_ns(3),
            names::fip_ns("ext"),
        ] {
            assert!(k.namespaces.contains(&ns), "{ns} kept: {k:?}");
        }
        for l in [
            names::bridge(7),
            names::vxlan(7),
            names::qr_bridge(7),
            names::qg_bridge(3),
        ] {
            assert!(k.links.contains(&(NsRef::Root, l.clone())), "{l} kept");
        }
        assert!(k.macs.contains(&names::gateway_mac(7)));
        for ip in ["10.1.0.1", "203.0.113.10", "10.1.0.5", "203.0.113.20"] {
            assert!(k.ips.contains(&ip.parse().unwrap()), "{ip} kept");
        }
    }

    #[test]
    fn dependents_served_elsewhere_keep_nothing_here() {
        let held = [fip("n2")];
        let snap = Snapshot {
            routers: vec![router(1, 1, None)],
            floating_ips: held.to_vec(),
            snat_gateways: vec![snat("n2")],
            ..Default::default()
        };
        let k = keep(
            &snap,
            Held {
                floating_ips: &held,
                ..none()
            },
            "n1",
        );
        assert!(k.is_empty(), "{k:?}");
        // On its own node, a held floating IP keeps its namespaces only.
        let held = [fip("n1")];
        let snap = Snapshot {
            floating_ips: held.to_vec(),
            ..snap
        };
        let k = keep(
            &snap,
            Held {
                floating_ips: &held,
                ..none()
            },
            "n1",
        );
        assert!(k.namespaces.contains(&names::qrouter_ns(3)));
        assert!(k.links.is_empty(), "{k:?}");
    }

    #[test]
    fn objects_being_deleted_are_not_kept() {
        let mut r = (*router(2, 1, None)).clone();
        r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let r = Arc::new(r);
        // (The input never holds back a deleted object; even if asked to.)
        let held = [r.clone()];
        let snap = Snapshot {
            routers: vec![r],
            ..Default::default()
        };
        let k = keep(
            &snap,
            Held {
                routers: &held,
                ..none()
            },
            "n1",
        );
        assert!(k.is_empty(), "{k:?}");
    }
}

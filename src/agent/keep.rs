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
//! - a SNAT gateway active on this node or a candidate (standby) here: its
//!   router's `snat-` and `qrouter-`;
//! - an external network: its `fip-` namespace.
//!
//! The same holds for objects that do not decode and that this agent never
//! saw a good version of (it restarted while they were bad; see
//! `cluster::watch`): they exist, nothing resolves them, and their state is
//! kept by the same rules, read leniently from their raw JSON
//! ([`Snapshot::undecodable`]): a value that cannot be read (missing, of the
//! wrong type, out of range) keeps nothing for it, the rest still counts.
//!
//! Objects being deleted are resolved (as gone) and never kept; neither are
//! objects the controller never processed (nothing was programmed for them).
//! When unsure, keep: the namespaces are kept whole, so a removal inside them
//! waits until the controller has caught up, never the other way round.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::input::{Held, Snapshot};
use crate::api::kinds::for_each_kind;
use crate::api::{DistributedRouter, DvrKind, FloatingIP, Kind, SnatGateway};
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

// Lenient readers of raw JSON: None (or nothing) when unreadable.
fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}
fn u32_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}
fn ip_of(v: &Value) -> Option<Ipv4Addr> {
    v.as_str().and_then(|a| a.parse().ok())
}
fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// The raw objects of `kind` whose state is kept: live, processed by the
/// controller once (they have a status, as a held-back object does), and
/// without a decodable version in the caches (uid in `cached`), which is
/// resolved instead.
fn raws<'a>(
    snap: &'a Snapshot,
    kind: &'a str,
    cached: &'a BTreeSet<&'a str>,
) -> impl Iterator<Item = &'a Value> + 'a {
    snap.undecodable
        .iter()
        .filter(move |(k, _)| k == kind)
        .map(|(_, o)| o)
        .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
        .filter(|o| o["status"].is_object())
        .filter(|o| {
            !o["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| cached.contains(u))
        })
}

/// What keeping reads of a router, typed or raw.
#[derive(Debug, Default)]
struct RouterFacts {
    /// Not resolved by this agent (held back, or undecodable).
    held: bool,
    external_network: Option<String>,
    /// `status.index`.
    index: Option<u32>,
    /// A stored `status.index` that does not read as one (raw objects):
    /// its namespaces cannot be named, so every router namespace is kept.
    index_unreadable: bool,
    /// `status.subnets[].vni`.
    vnis: Vec<u32>,
    /// `spec.subnets[].gateway`.
    gateways: Vec<Ipv4Addr>,
}

impl RouterFacts {
    fn typed(r: &DistributedRouter, held: bool) -> Self {
        let st = r.status.as_ref();
        RouterFacts {
            held,
            external_network: r.spec.external_network.clone(),
            index: st.and_then(|s| s.index),
            index_unreadable: false,
            vnis: st
                .map(|s| s.subnets.iter().map(|s| s.vni).collect())
                .unwrap_or_default(),
            gateways: (r.spec.subnets.iter())
                .filter_map(|s| s.gateway.parse().ok())
                .collect(),
        }
    }

    fn raw(o: &Value) -> Self {
        let (spec, st) = (&o["spec"], &o["status"]);
        RouterFacts {
            held: true,
            external_network: str_of(&spec["externalNetwork"]),
            index: u32_of(&st["index"]),
            index_unreadable: !st["index"].is_null() && u32_of(&st["index"]).is_none(),
            vnis: items(&st["subnets"])
                .filter_map(|s| u32_of(&s["vni"]))
                .collect(),
            gateways: items(&spec["subnets"])
                .filter_map(|s| ip_of(&s["gateway"]))
                .collect(),
        }
    }
}

/// What keeping reads of a floating IP or SNAT gateway, typed or raw.
struct Served {
    /// Not resolved by this agent (held back, or undecodable).
    held: bool,
    /// Its router's key.
    router: ObjectKey,
    /// `spec.externalNetwork`.
    external_network: Option<String>,
    /// The nodes serving it: `status.node`; `status.activeNode` and
    /// `status.candidates[].node` (standbys keep `snat-` warm).
    nodes: Vec<String>,
    /// Its addresses in `status`.
    ips: Vec<Ipv4Addr>,
}

impl Served {
    fn fip(f: &FloatingIP, held: bool) -> Self {
        let st = f.status.as_ref();
        Served {
            held,
            router: ObjectKey::new(f.namespace().unwrap_or_default(), &f.spec.router),
            external_network: f.spec.external_network.clone(),
            nodes: st.and_then(|s| s.node.clone()).into_iter().collect(),
            ips: st
                .into_iter()
                .flat_map(|s| [&s.address, &s.fixed_ip])
                .filter_map(|a| a.as_ref()?.parse().ok())
                .collect(),
        }
    }

    fn snat(g: &SnatGateway, held: bool) -> Self {
        let st = g.status.as_ref();
        Served {
            held,
            router: ObjectKey::new(g.namespace().unwrap_or_default(), &g.spec.router),
            external_network: g.spec.external_network.clone(),
            nodes: st
                .into_iter()
                .flat_map(|s| {
                    s.active_node
                        .iter()
                        .chain(s.candidates.iter().map(|c| &c.node))
                })
                .cloned()
                .collect(),
            ips: (st.and_then(|s| s.address.as_ref()?.parse().ok()))
                .into_iter()
                .collect(),
        }
    }

    /// A raw floating IP (`node` = "node", addresses "address", "fixedIP")
    /// or SNAT gateway ("activeNode" and its candidates, "address"); None
    /// without a router.
    fn raw(o: &Value, node: &str, addresses: &[&str]) -> Option<Self> {
        let (spec, st) = (&o["spec"], &o["status"]);
        let namespace = o["metadata"]["namespace"].as_str().unwrap_or_default();
        Some(Served {
            held: true,
            router: ObjectKey::new(namespace, spec["router"].as_str()?),
            external_network: str_of(&spec["externalNetwork"]),
            nodes: (str_of(&st[node]).into_iter())
                .chain(items(&st["candidates"]).filter_map(|c| str_of(&c["node"])))
                .collect(),
            ips: addresses.iter().filter_map(|a| ip_of(&st[*a])).collect(),
        })
    }
}

/// What `node`'s agent keeps, given its caches and what its input held back.
pub fn keep(snap: &Snapshot, held: Held<'_>, node: &str) -> Keep {
    let mut k = Keep::default();
    let mut cached: BTreeSet<&str> = BTreeSet::new();
    let mut anything_held = false;
    for_each_kind!(|K| {
        cached.extend(
            K::of(&snap.objects)
                .iter()
                .filter_map(|o| o.meta().uid.as_deref()),
        );
        anything_held |= !K::of(&held).is_empty();
    });
    let raw = |kind| raws(snap, kind, &cached);
    if !anything_held
        && Kind::ALL
            .iter()
            .all(|kind| raw(kind.as_str()).next().is_none())
    {
        return k;
    }
    let held_ext: BTreeSet<String> = (held.external_networks.iter())
        .map(|e| e.name_any())
        .chain(raw("ExternalNetwork").filter_map(|o| str_of(&o["metadata"]["name"])))
        .collect();
    for ext in &held_ext {
        k.namespaces.insert(names::fip_ns(ext));
    }

    let held_routers = uids(held.routers);
    let mut routers: BTreeMap<ObjectKey, RouterFacts> = (snap.routers.iter())
        .filter(|r| live(r))
        .map(|r| {
            let facts = RouterFacts::typed(r, is_held(r.as_ref(), &held_routers));
            (key(r.as_ref()), facts)
        })
        .collect();
    for o in raw("DistributedRouter") {
        let m = &o["metadata"];
        let Some(name) = m["name"].as_str() else {
            continue;
        };
        let rkey = ObjectKey::new(m["namespace"].as_str().unwrap_or_default(), name);
        routers.entry(rkey).or_insert_with(|| RouterFacts::raw(o));
    }
    let mut unresolved = BTreeSet::new();
    for (rkey, r) in &routers {
        let ext_held = (r.external_network.as_ref()).is_some_and(|e| held_ext.contains(e));
        if r.held || ext_held {
            unresolved.insert(rkey.clone());
            keep_router(&mut k, r);
        }
    }
    // Namespaces are named by the router's index (from its stored status).
    let router_index = |rkey: &ObjectKey| routers.get(rkey).and_then(|r| r.index);

    // A floating IP or SNAT gateway is kept when it is held itself or its
    // router or external network is: its external network (its own, else
    // its router's), or None when it is not kept or served elsewhere.
    let kept = |s: &Served| {
        let ext = (s.external_network.clone())
            .or_else(|| routers.get(&s.router)?.external_network.clone());
        let depends =
            unresolved.contains(&s.router) || ext.as_ref().is_some_and(|e| held_ext.contains(e));
        ((s.held || depends) && s.nodes.iter().any(|n| n == node)).then_some(ext)
    };

    let held_fips = uids(held.floating_ips);
    let fips = (snap.floating_ips.iter())
        .filter(|f| live(f))
        .map(|f| Served::fip(f, is_held(f.as_ref(), &held_fips)))
        .chain(raw("FloatingIP").filter_map(|o| Served::raw(o, "node", &["address", "fixedIP"])));
    for f in fips {
        let Some(ext) = kept(&f) else {
            continue;
        };
        if let Some(i) = router_index(&f.router) {
            k.namespaces.insert(names::qrouter_ns(i));
        }
        if let Some(e) = &ext {
            k.namespaces.insert(names::fip_ns(e));
        }
        k.ips.extend(f.ips);
    }

    let held_snats = uids(held.snat_gateways);
    let snats = (snap.snat_gateways.iter())
        .filter(|s| live(s))
        .map(|s| Served::snat(s, is_held(s.as_ref(), &held_snats)))
        .chain(raw("SnatGateway").filter_map(|o| Served::raw(o, "activeNode", &["address"])));
    for s in snats {
        if kept(&s).is_none() {
            continue;
        }
        if let Some(i) = router_index(&s.router) {
            k.namespaces.insert(names::snat_ns(i));
            k.namespaces.insert(names::qrouter_ns(i));
        }
        k.ips.extend(s.ips);
    }
    k
}

/// A router's state, by the allocations in its stored status.
fn keep_router(k: &mut Keep, r: &RouterFacts) {
    if let Some(ext) = &r.external_network {
        k.namespaces.insert(names::fip_ns(ext));
    }
    let mut root = |name: String| k.links.insert((NsRef::Root, name));
    if let Some(i) = r.index {
        root(names::qg_bridge(i));
        k.namespaces.insert(names::qrouter_ns(i));
        k.namespaces.insert(names::snat_ns(i));
    } else if r.index_unreadable {
        // When unsure, keep: this router's namespaces are among these, and
        // which ones cannot be told. Removals of router namespaces on this
        // node wait until the object decodes again or is deleted.
        k.namespace_prefixes
            .insert(names::QROUTER_PREFIX.to_string());
        k.namespace_prefixes.insert(names::SNAT_PREFIX.to_string());
    }
    for &vni in &r.vnis {
        root(names::bridge(vni));
        root(names::vxlan(vni));
        root(names::qr_bridge(vni));
        root(names::sg_bridge(vni));
        k.macs.insert(names::gateway_mac(vni));
        k.macs.insert(names::sg_mac(vni));
    }
    k.ips.extend(r.gateways.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PerKind;
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
        Held::default()
    }

    #[test]
    fn nothing_held_keeps_nothing() {
        let snap = Snapshot {
            objects: PerKind {
                routers: vec![router(1, 1, None)],
                floating_ips: vec![fip("n1")],
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(keep(&snap, none(), "n1").is_empty());
    }

    #[test]
    fn a_held_router_keeps_its_state_and_what_depends_on_it() {
        let r = router(2, 1, Some("ext"));
        let held = [r.clone()];
        let snap = Snapshot {
            objects: PerKind {
                routers: vec![r],
                floating_ips: vec![fip("n1")],
                snat_gateways: vec![snat("n1")],
                ..Default::default()
            },
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
            objects: PerKind {
                routers: vec![router(1, 1, None)],
                floating_ips: held.to_vec(),
                snat_gateways: vec![snat("n2")],
                ..Default::default()
            },
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
        let mut snap = snap;
        snap.floating_ips = held.to_vec();
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
            objects: PerKind {
                routers: vec![r],
                ..Default::default()
            },
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

    /// `o`'s JSON with `edit` applied, as an undecodable `kind`.
    fn raw<T: serde::Serialize>(
        kind: &str,
        o: &Arc<T>,
        edit: impl FnOnce(&mut Value),
    ) -> (String, Value) {
        let mut v = serde_json::to_value(o.as_ref()).unwrap();
        edit(&mut v);
        (kind.to_string(), v)
    }

    fn ext_net(name: &str) -> (String, Value) {
        let v = json!({"metadata": {"name": name, "uid": "ue1", "generation": 1},
            "spec": {"cidr": 5}, "status": {"observedGeneration": 1}});
        ("ExternalNetwork".to_string(), v)
    }

    fn has(k: &Keep, ns: &str) -> bool {
        k.namespaces.contains(ns)
    }

    #[test]
    fn an_undecodable_router_keeps_its_state_and_what_depends_on_it() {
        let r = router(1, 1, Some("ext"));
        // Its index stays readable; something else does not decode.
        let bad = raw("DistributedRouter", &r, |v| v["status"]["nodes"] = json!(5));
        let snap = Snapshot {
            objects: PerKind {
                floating_ips: vec![fip("n1")],
                snat_gateways: vec![snat("n1")],
                ..Default::default()
            },
            undecodable: vec![bad.clone()],
            ..Default::default()
        };
        let k = keep(&snap, none(), "n1");
        for ns in [
            names::qrouter_ns(3),
            names::snat_ns(3),
            names::fip_ns("ext"),
        ] {
            assert!(has(&k, &ns), "{ns} kept: {k:?}");
        }
        for l in [
            names::bridge(7),
            names::vxlan(7),
            names::qr_bridge(7),
            names::sg_bridge(7),
            names::qg_bridge(3),
        ] {
            assert!(k.links.contains(&(NsRef::Root, l.clone())), "{l} kept");
        }
        assert!(k.macs.contains(&names::gateway_mac(7)));
        assert!(k.macs.contains(&names::sg_mac(7)));
        // Its gateway, and the addresses of its floating IP and SNAT
        // gateway served here.
        for ip in ["10.1.0.1", "203.0.113.10", "10.1.0.5", "203.0.113.20"] {
            assert!(k.ips.contains(&ip.parse().unwrap()), "{ip} kept");
        }

        // An unreadable value keeps nothing for itself; the rest counts.
        let worse = raw("DistributedRouter", &r, |v| {
            v["status"]["index"] = json!(-1);
            v["status"]["subnets"][0]["vni"] = json!(1u64 << 40);
        });
        let k = keep(
            &Snapshot {
                undecodable: vec![worse],
                ..Default::default()
            },
            none(),
            "n1",
        );
        assert!(!has(&k, &names::qrouter_ns(3)), "{k:?}");
        assert!(k.links.is_empty(), "{k:?}");
        assert!(has(&k, &names::fip_ns("ext")), "{k:?}");
        assert!(k.ips.contains(&"10.1.0.1".parse().unwrap()));
        // Its own namespaces cannot be named: every router namespace is
        // kept whole instead.
        let prefixes: Vec<&str> = k.namespace_prefixes.iter().map(String::as_str).collect();
        assert_eq!(prefixes, [names::QROUTER_PREFIX, names::SNAT_PREFIX]);
        // An index that is absent (never allocated) keeps no prefix.
        let unallocated = raw("DistributedRouter", &r, |v| {
            v["status"]["index"] = serde_json::Value::Null;
        });
        let k = keep(
            &Snapshot {
                undecodable: vec![unallocated],
                ..Default::default()
            },
            none(),
            "n1",
        );
        assert!(k.namespace_prefixes.is_empty(), "{k:?}");

        // A decodable version in the caches is resolved instead; an object
        // being deleted or never processed is not kept.
        for snap in [
            Snapshot {
                objects: PerKind {
                    routers: vec![r.clone()],
                    ..Default::default()
                },
                undecodable: vec![bad.clone()],
                ..Default::default()
            },
            Snapshot {
                undecodable: vec![raw("DistributedRouter", &r, |v| {
                    v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z")
                })],
                ..Default::default()
            },
            Snapshot {
                undecodable: vec![raw("DistributedRouter", &r, |v| {
                    v["status"] = Value::Null;
                })],
                ..Default::default()
            },
        ] {
            assert!(keep(&snap, none(), "n1").is_empty());
        }
    }

    #[test]
    fn garbage_keeps_nothing_and_does_not_panic() {
        let undecodable = Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .flat_map(|kind| {
                [
                    json!(null),
                    json!(5),
                    json!({"metadata": [], "spec": "x", "status": {}}),
                    // Named (but an external network's name is its
                    // namespace's: unreadable there).
                    json!({"metadata": {"name": if kind == "ExternalNetwork" { json!(5) } else { json!("g") }},
                        "spec": {"router": 1, "subnets": {"vni": 1}, "externalNetwork": 2},
                        "status": {"index": "3", "subnets": [null, 1, {"vni": -7}], "node": 7}}),
                ]
                .map(|v| (kind.to_string(), v))
            })
            .collect();
        let snap = Snapshot {
            undecodable,
            ..Default::default()
        };
        // Nothing named; only the router whose stored index is there but
        // unreadable makes every router namespace kept.
        let mut k = keep(&snap, none(), "n1");
        let prefixes = std::mem::take(&mut k.namespace_prefixes);
        assert!(k.is_empty(), "{k:?}");
        assert_eq!(
            prefixes,
            [names::QROUTER_PREFIX, names::SNAT_PREFIX]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn an_undecodable_floating_ip_served_here_keeps_its_namespaces_and_addresses() {
        let f = raw("FloatingIP", &fip("n1"), |v| {
            v["spec"]["target"] = json!("10.1.0.5")
        });
        let snap = Snapshot {
            objects: PerKind {
                routers: vec![router(1, 1, Some("ext"))],
                ..Default::default()
            },
            undecodable: vec![f],
            ..Default::default()
        };
        let k = keep(&snap, none(), "n1");
        // Its router's (by the router's index) and its network's (by the
        // router's external network).
        assert!(has(&k, &names::qrouter_ns(3)), "{k:?}");
        assert!(has(&k, &names::fip_ns("ext")), "{k:?}");
        assert!(!has(&k, &names::snat_ns(3)), "{k:?}");
        assert!(k.links.is_empty(), "{k:?}");
        for ip in ["203.0.113.10", "10.1.0.5"] {
            assert!(k.ips.contains(&ip.parse().unwrap()), "{ip} kept");
        }
        // Served elsewhere: nothing here.
        assert!(keep(&snap, none(), "n2").is_empty());
    }

    #[test]
    fn an_undecodable_snat_gateway_active_here_keeps_its_namespaces() {
        let g = raw("SnatGateway", &snat("n1"), |v| {
            v["status"]["ports"] = json!("x");
            v["status"]["candidates"] = json!([{"node": "n1"}, {"node": "n2"}, {"node": 3}]);
        });
        let snap = Snapshot {
            objects: PerKind {
                routers: vec![router(1, 1, None)],
                ..Default::default()
            },
            undecodable: vec![g],
            ..Default::default()
        };
        let k = keep(&snap, none(), "n1");
        assert_eq!(
            k.namespaces,
            BTreeSet::from([names::snat_ns(3), names::qrouter_ns(3)])
        );
        assert_eq!(k.ips, BTreeSet::from(["203.0.113.20".parse().unwrap()]));
        // A standby candidate keeps the same; another node nothing.
        assert_eq!(keep(&snap, none(), "n2"), k);
        assert!(keep(&snap, none(), "n3").is_empty());
        // The same from a held-back typed one.
        let mut typed = (*snat("n1")).clone();
        typed.status.as_mut().unwrap().candidates =
            serde_json::from_value(json!([{"node": "n1"}, {"node": "n2"}])).unwrap();
        let held = [Arc::new(typed)];
        let snap = Snapshot {
            objects: PerKind {
                routers: vec![router(1, 1, None)],
                snat_gateways: held.to_vec(),
                ..Default::default()
            },
            ..Default::default()
        };
        let typed = |node| {
            let h = Held {
                snat_gateways: &held,
                ..none()
            };
            keep(&snap, h, node)
        };
        assert_eq!(typed("n2"), k);
        assert!(typed("n3").is_empty());
    }

    #[test]
    fn an_undecodable_external_network_keeps_its_namespace_and_its_routers() {
        let snap = Snapshot {
            objects: PerKind {
                routers: vec![router(1, 1, Some("ext"))],
                ..Default::default()
            },
            undecodable: vec![ext_net("ext")],
            ..Default::default()
        };
        let k = keep(&snap, none(), "n1");
        assert!(has(&k, &names::fip_ns("ext")), "{k:?}");
        // r1 uses it: the resolver cannot place r1 either.
        assert!(has(&k, &names::qrouter_ns(3)), "{k:?}");
        // Another network's: only its own namespace.
        let snap = Snapshot {
            objects: PerKind {
                routers: vec![router(1, 1, Some("ext"))],
                ..Default::default()
            },
            undecodable: vec![ext_net("other")],
            ..Default::default()
        };
        let k = keep(&snap, none(), "n1");
        assert_eq!(k.namespaces, BTreeSet::from([names::fip_ns("other")]));
    }
}

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::*;
use crate::dataplane::diff::diff;
use crate::plan::model::{Address, FdbEntry, Link, NftChain, NftFamily, NftSet, Route};

fn link(name: &str, kind: LinkKind, master: Option<&str>) -> Link {
    Link {
        name: name.into(),
        kind,
        mac: None,
        master: master.map(str::to_string),
        mtu: None,
    }
}

fn veth(peer: &str, peer_ns: NsRef) -> LinkKind {
    LinkKind::Veth {
        peer: peer.into(),
        peer_ns,
    }
}

fn named(n: &str) -> NsRef {
    NsRef::Named(n.into())
}

/// A node with two routers' segments (VNI 5 and 6) and their namespaces,
/// a bridge-family table with both gateways' MACs.
fn node() -> NodeState {
    let mut s = NodeState::default();
    for (vni, ns) in [(5, "qrouter-a"), (6, "qrouter-b")] {
        let br = format!("dvrbr-{vni}");
        let vx = format!("dvrvx-{vni}");
        let qrb = format!("qrb-{vni}");
        let qr = format!("qr-{vni}");
        s.root
            .links
            .insert(br.clone(), link(&br, LinkKind::Bridge, None));
        s.root.links.insert(
            vx.clone(),
            link(
                &vx,
                LinkKind::Vxlan {
                    vni,
                    local: "198.18.0.1".parse().unwrap(),
                    port: 4789,
                },
                Some(&br),
            ),
        );
        s.root
            .links
            .insert(qrb.clone(), link(&qrb, veth(&qr, named(ns)), Some(&br)));
        s.root.fdb.insert(FdbEntry {
            link: vx.clone(),
            mac: MacAddr::ZERO,
            dst: "198.18.0.2".parse().unwrap(),
        });
        let mut q = NsState::default();
        q.links
            .insert(qr.clone(), link(&qr, veth(&qrb, NsRef::Root), None));
        q.addresses.insert(Address {
            link: qr.clone(),
            addr: format!("10.{vni}.0.1/24").parse().unwrap(),
        });
        q.routes.insert(Route {
            table: 254,
            dst: "10.99.0.0/16".parse().unwrap(),
            via: Some(format!("10.{vni}.0.9").parse().unwrap()),
            dev: None,
        });
        s.namespaces.insert(ns.into(), q);
    }
    let macs: BTreeMap<String, Option<String>> = ["0a:00:00:00:00:05", "0a:00:00:00:00:06"]
        .iter()
        .map(|m| (m.to_string(), None))
        .collect();
    s.root.nft = Some(NftTable {
        family: NftFamily::Bridge,
        name: "kube_dvr".into(),
        sets: BTreeMap::from([(
            "gw_macs".to_string(),
            NftSet {
                key_type: "ether_addr".into(),
                data_type: None,
                elements: macs,
            },
        )]),
        chains: BTreeMap::from([(
            "forward".to_string(),
            NftChain {
                base: None,
                rules: vec!["ether daddr @gw_macs drop".into()],
            },
        )]),
    });
    s
}

/// `node()` without router b (VNI 6): what a plan without it looks like.
fn without_b() -> NodeState {
    let mut s = node();
    s.namespaces.remove("qrouter-b");
    for l in ["dvrbr-6", "dvrvx-6", "qrb-6"] {
        s.root.links.remove(l);
    }
    s.root.fdb.retain(|f| f.link != "dvrvx-6");
    let t = s.root.nft.as_mut().unwrap();
    t.sets
        .get_mut("gw_macs")
        .unwrap()
        .elements
        .remove("0a:00:00:00:00:06");
    s
}

fn keep_b() -> Keep {
    Keep {
        namespaces: ["qrouter-b".to_string()].into(),
        links: [(NsRef::Root, "dvrbr-6".to_string())].into(),
        ips: Default::default(),
        macs: ["0a:00:00:00:00:06".parse().unwrap()].into(),
        namespace_prefixes: Default::default(),
    }
}

#[test]
fn without_keep_the_sweep_removes_the_unplanned_router() {
    let ops = diff(&node(), &without_b());
    assert!(ops.iter().any(|o| o.is_removal()), "{ops:?}");
    assert!(matches!(
        Keep::default().merge(&node(), &without_b()),
        Cow::Borrowed(_)
    ));
}

#[test]
fn kept_state_is_not_removed_and_nothing_else_changes() {
    let plan = without_b();
    let merged = keep_b().merge(&node(), &plan);
    assert_eq!(*merged, node(), "everything of b is kept");
    assert!(diff(&node(), &merged).is_empty());
}

#[test]
fn keeping_closes_over_ports_bridges_and_veth_peers() {
    // Only the namespace is named: its veth's root end, that end's bridge
    // and the bridge's other ports follow.
    let keep = Keep {
        namespaces: ["qrouter-b".to_string()].into(),
        ..Default::default()
    };
    let plan = without_b();
    let merged = keep.merge(&node(), &plan);
    for l in ["dvrbr-6", "dvrvx-6", "qrb-6"] {
        assert!(merged.root.links.contains_key(l), "{l} kept");
    }
    assert!(merged.root.fdb.iter().any(|f| f.link == "dvrvx-6"));
    // Not named by MAC: the element goes.
    let ops = diff(&node(), &merged);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(matches!(ops[0], crate::dataplane::diff::Op::Nft { .. }));
}

#[test]
fn state_of_other_objects_still_goes() {
    // Keep b; a is gone from the plan as well and is removed.
    let mut plan = without_b();
    plan.namespaces.remove("qrouter-a");
    for l in ["dvrbr-5", "dvrvx-5", "qrb-5"] {
        plan.root.links.remove(l);
    }
    plan.root.fdb.clear();
    let merged = keep_b().merge(&node(), &plan);
    let ops = diff(&node(), &merged);
    let removed: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert!(
        removed.iter().any(|o| o.contains("qrouter-a")),
        "{removed:?}"
    );
    assert!(
        !removed.iter().any(|o| o.contains("qrouter-b")),
        "{removed:?}"
    );
    assert!(!removed.iter().any(|o| o.contains("-6")), "{removed:?}");
}

#[test]
fn the_plan_wins_over_a_kept_link_of_the_same_name() {
    let mut plan = without_b();
    let mut q = NsState::default();
    q.links.insert(
        "qr-6".into(),
        link("qr-6", veth("qrb-6", NsRef::Root), None),
    );
    q.links.insert(
        "qr-7".into(),
        link("qr-7", veth("qrb-7", NsRef::Root), None),
    );
    plan.namespaces.insert("qrouter-b".into(), q.clone());
    let merged = keep_b().merge(&node(), &plan);
    assert_eq!(
        merged.namespaces["qrouter-b"].links["qr-7"],
        q.links["qr-7"]
    );
    // The kept address on the kept link is merged in.
    assert_eq!(merged.namespaces["qrouter-b"].addresses.len(), 1);
}

#[test]
fn a_namespace_prefix_keeps_every_such_namespace_whole() {
    // Neither router is in the plan; keeping by prefix keeps both, with
    // their veths' root ends and segments.
    let mut plan = without_b();
    plan.namespaces.remove("qrouter-a");
    let keep = Keep {
        namespace_prefixes: ["qrouter-".to_string()].into(),
        ..Default::default()
    };
    assert!(!keep.is_empty());
    let merged = keep.merge(&node(), &plan);
    for n in ["qrouter-a", "qrouter-b"] {
        assert_eq!(merged.namespaces.get(n), node().namespaces.get(n), "{n}");
    }
    for l in ["qrb-5", "qrb-6", "dvrbr-6"] {
        assert!(merged.root.links.contains_key(l), "{l} kept");
    }
    // Another prefix keeps neither.
    let other = Keep {
        namespace_prefixes: ["snat-".to_string()].into(),
        ..Default::default()
    };
    let merged = other.merge(&node(), &plan);
    assert!(merged.namespaces.is_empty());
}

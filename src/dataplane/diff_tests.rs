//! `diff` without a kernel.
use super::*;
use crate::plan::model::{
    Address, FdbEntry, MacAddr, Neighbour, NftBaseChain, NftChain, NftFamily, Rule, MAIN_TABLE,
};

fn l(name: &str, kind: LinkKind, master: Option<&str>) -> Link {
    Link {
        name: name.into(),
        kind,
        mac: None,
        master: master.map(Into::into),
        mtu: None,
    }
}

fn veth(peer: &str, ns: NsRef) -> LinkKind {
    LinkKind::Veth {
        peer: peer.into(),
        peer_ns: ns,
    }
}

fn named(n: &str) -> NsRef {
    NsRef::Named(n.into())
}

/// Root: bridge + vxlan + qrb-1; qrouter-a: qr-1 with an address, a route,
/// a rule, a neighbour; FDB on the vxlan.
fn state() -> NodeState {
    let mut s = NodeState::default();
    let r = &mut s.root;
    r.links
        .insert("dvrbr-1".into(), l("dvrbr-1", LinkKind::Bridge, None));
    r.links.insert(
        "dvrvx-1".into(),
        l(
            "dvrvx-1",
            LinkKind::Vxlan {
                vni: 1,
                local: "198.18.0.1".parse().unwrap(),
                port: 4789,
            },
            Some("dvrbr-1"),
        ),
    );
    r.links.insert(
        "qrb-1".into(),
        l("qrb-1", veth("qr-1", named("qrouter-a")), Some("dvrbr-1")),
    );
    r.fdb.insert(FdbEntry {
        link: "dvrvx-1".into(),
        mac: MacAddr::ZERO,
        dst: "198.18.0.2".parse().unwrap(),
    });
    let mut q = NsState::default();
    q.links
        .insert("qr-1".into(), l("qr-1", veth("qrb-1", NsRef::Root), None));
    q.addresses.insert(Address {
        link: "qr-1".into(),
        addr: "10.0.0.1/24".parse().unwrap(),
    });
    q.routes.insert(Route {
        table: MAIN_TABLE,
        dst: "10.9.0.0/24".parse().unwrap(),
        via: Some("10.0.0.254".parse().unwrap()),
        dev: Some("qr-1".into()),
    });
    q.rules.insert(Rule {
        priority: 40000,
        from: None,
        fwmark: Some(1),
        table: 16,
    });
    q.neighbours.insert(Neighbour {
        link: "qr-1".into(),
        ip: "10.0.0.5".parse().unwrap(),
        mac: MacAddr::local(2, 5),
    });
    q.sysctls.insert("net/ipv4/ip_forward".into(), "1".into());
    s.namespaces.insert("qrouter-a".into(), q);
    s
}

fn kinds(ops: &[Op]) -> Vec<String> {
    ops.iter()
        .map(|o| o.to_string().split(" in ").next().unwrap().to_string())
        .collect()
}

#[test]
fn identical_states_need_nothing() {
    let s = state();
    assert_eq!(diff(&s, &s), vec![]);
}

#[test]
fn from_empty_creates_in_dependency_order() {
    let ops = diff(&NodeState::default(), &state());
    let k = kinds(&ops);
    assert_eq!(
        k,
        vec![
            "create netns qrouter-a",
            "create link dvrbr-1",
            "create link dvrvx-1",
            // The pair is created once, from the root end.
            "create link qrb-1",
            // ... and its namespaced end brought up.
            "set link qr-1",
            "sysctl net/ipv4/ip_forward=1",
            "add address 10.0.0.1/24 dev qr-1",
            "add route Route { table: 254, dst: 10.9.0.0/24, via: Some(10.0.0.254), dev: Some(\"qr-1\") }",
            "add rule Rule { priority: 40000, from: None, fwmark: Some(1), table: 16 }",
            "set neighbour 10.0.0.5 lladdr 02:00:00:00:00:05 dev qr-1",
            "add fdb 00:00:00:00:00:00 dev dvrvx-1 dst 198.18.0.2",
        ]
    );
    let Op::CreateLink { peer, .. } = &ops[3] else {
        panic!()
    };
    assert_eq!(peer.as_ref().unwrap().name, "qr-1");
}

#[test]
fn to_empty_deletes_without_redundancy() {
    let ops = diff(&state(), &NodeState::default());
    // Nothing inside qrouter-a one by one, nothing on deleted links; the
    // veth pair once (from the root end), the namespace last.
    assert_eq!(
        kinds(&ops),
        vec![
            "delete link dvrbr-1",
            "delete link dvrvx-1",
            "delete link qrb-1",
            "delete netns qrouter-a",
        ]
    );
}

#[test]
fn changed_vni_recreates_and_readds_fdb() {
    let obs = state();
    let mut want = state();
    if let LinkKind::Vxlan { vni, .. } = &mut want.root.links.get_mut("dvrvx-1").unwrap().kind {
        *vni = 2;
    }
    let k = kinds(&diff(&obs, &want));
    assert_eq!(
        k,
        vec![
            "delete link dvrvx-1",
            "create link dvrvx-1",
            "add fdb 00:00:00:00:00:00 dev dvrvx-1 dst 198.18.0.2",
        ]
    );
}

#[test]
fn wrong_master_and_down_are_fixed_in_place() {
    let mut obs = state();
    obs.root.links.get_mut("qrb-1").unwrap().master = None;
    let mut extra = ObservedExtra::default();
    extra.down.insert((NsRef::Root, "dvrbr-1".into()));
    let ops = diff_with(&obs, &extra, &state());
    assert_eq!(
        ops,
        vec![
            Op::SetLink {
                ns: NsRef::Root,
                name: "dvrbr-1".into(),
                mac: None,
                mtu: None,
                master: None,
                up: true
            },
            Op::SetLink {
                ns: NsRef::Root,
                name: "qrb-1".into(),
                mac: None,
                mtu: None,
                master: Some(Some("dvrbr-1".into())),
                up: false
            },
        ]
    );
}

#[test]
fn half_a_veth_pair_is_recreated_with_what_hung_on_it() {
    let mut obs = state();
    // The qr- end vanished (its peer points nowhere any more).
    obs.namespaces.get_mut("qrouter-a").unwrap().links.clear();
    let q = obs.namespaces.get_mut("qrouter-a").unwrap();
    q.addresses.clear();
    q.neighbours.clear();
    q.routes.clear();
    let k = kinds(&diff(&obs, &state()));
    assert_eq!(
        k,
        vec![
            "delete link qrb-1",
            "create link qrb-1",
            "set link qr-1",
            "add address 10.0.0.1/24 dev qr-1",
            "add route Route { table: 254, dst: 10.9.0.0/24, via: Some(10.0.0.254), dev: Some(\"qr-1\") }",
            "set neighbour 10.0.0.5 lladdr 02:00:00:00:00:05 dev qr-1",
        ]
    );
}

#[test]
fn broken_link_objects_count_as_absent() {
    // The kernel still shows the address on a link that must be recreated:
    // it goes with the link, so it is re-added, not kept.
    let obs = state();
    let mut extra = ObservedExtra::default();
    extra.broken.insert((named("qrouter-a"), "qr-1".into()));
    let ops = diff_with(&obs, &extra, &state());
    let k = kinds(&ops);
    // One delete for the pair, from the end that sorts first.
    assert_eq!(k[0], "delete link qrb-1");
    assert_eq!(k[1], "create link qrb-1");
    assert!(k.contains(&"add address 10.0.0.1/24 dev qr-1".to_string()));
    assert!(k.contains(&"set neighbour 10.0.0.5 lladdr 02:00:00:00:00:05 dev qr-1".to_string()));
    assert!(!ops
        .iter()
        .any(|o| matches!(o, Op::DelAddress { .. } | Op::DelNeighbour { .. })));
}

#[test]
fn stale_objects_in_a_kept_namespace_are_removed_after_adds() {
    let mut obs = state();
    let q = obs.namespaces.get_mut("qrouter-a").unwrap();
    q.routes.insert(Route {
        table: 16,
        dst: "0.0.0.0/0".parse().unwrap(),
        via: Some("10.0.0.9".parse().unwrap()),
        dev: Some("qr-1".into()),
    });
    q.neighbours.insert(Neighbour {
        link: "qr-1".into(),
        ip: "10.0.0.6".parse().unwrap(),
        mac: MacAddr::local(2, 6),
    });
    obs.root.fdb.insert(FdbEntry {
        link: "dvrvx-1".into(),
        mac: MacAddr::ZERO,
        dst: "198.18.0.3".parse().unwrap(),
    });
    let mut want = state();
    want.namespaces
        .get_mut("qrouter-a")
        .unwrap()
        .rules
        .insert(Rule {
            priority: 40001,
            from: Some("10.0.0.0/24".parse().unwrap()),
            fwmark: None,
            table: 17,
        });
    let ops = diff(&obs, &want);
    let first_removal = ops.iter().position(|o| o.is_removal()).unwrap();
    assert!(ops[..first_removal].iter().all(|o| !o.is_removal()));
    assert!(ops[first_removal..].iter().all(|o| o.is_removal()));
    assert_eq!(ops.len(), 4, "{ops:#?}");
    assert_eq!(ops[0].kind(), "rule");
    assert_eq!(
        ops[1..].iter().map(|o| o.kind()).collect::<Vec<_>>(),
        vec!["route", "neighbour", "fdb"]
    );
}

#[test]
fn neighbour_with_new_mac_is_replaced_not_deleted() {
    let mut obs = state();
    let q = obs.namespaces.get_mut("qrouter-a").unwrap();
    q.neighbours.clear();
    q.neighbours.insert(Neighbour {
        link: "qr-1".into(),
        ip: "10.0.0.5".parse().unwrap(),
        mac: MacAddr::local(2, 99),
    });
    let ops = diff(&obs, &state());
    assert_eq!(ops.len(), 1);
    assert!(matches!(ops[0], Op::SetNeighbour { .. }));
}

#[test]
fn route_without_dev_matches_any_dev() {
    let obs = state();
    let mut want = state();
    let q = want.namespaces.get_mut("qrouter-a").unwrap();
    let r = q.routes.pop_first().unwrap();
    q.routes.insert(Route { dev: None, ..r });
    assert_eq!(diff(&obs, &want), vec![]);
}

#[test]
fn sysctl_of_a_recreated_link_is_rewritten() {
    let mut obs = state();
    let key = "net/ipv4/conf/qr-1/send_redirects";
    obs.namespaces
        .get_mut("qrouter-a")
        .unwrap()
        .sysctls
        .insert(key.into(), "0".into());
    let mut want = obs.clone();
    assert_eq!(diff(&obs, &want), vec![]);
    // The pair is recreated (wrong peer): the per-interface key is written.
    want.root.links.get_mut("qrb-1").unwrap().mtu = Some(1400);
    obs.root.links.get_mut("qrb-1").unwrap().kind = veth("qr-x", named("qrouter-a"));
    let k = kinds(&diff(&obs, &want));
    assert!(k.contains(&format!("sysctl {key}=0")), "{k:?}");
}

#[test]
fn nft_table_in_another_family_is_replaced() {
    let t = |family| NftTable {
        family,
        name: crate::plan::model::NFT_TABLE.into(),
        sets: Default::default(),
        chains: [(
            "c".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "filter".into(),
                    hook: "forward".into(),
                    priority: 0,
                }),
                rules: vec![],
            },
        )]
        .into(),
    };
    let mut obs = state();
    obs.root.nft = Some(t(NftFamily::Inet));
    let mut want = state();
    want.root.nft = Some(t(NftFamily::Bridge));
    let ops = diff(&obs, &want);
    assert_eq!(ops.len(), 2);
    assert!(
        matches!(&ops[0], Op::Nft { observed: Some(o), desired: None, .. } if o.family == NftFamily::Inet)
    );
    assert!(
        matches!(&ops[1], Op::Nft { observed: None, desired: Some(d), .. } if d.family == NftFamily::Bridge)
    );
}

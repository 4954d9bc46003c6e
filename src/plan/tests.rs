//! Planner unit tests: views built with tiny `mk_*` helpers.
use std::net::Ipv4Addr;

use super::model::*;
use super::names;
use super::node::{plan_node, plan_node_serving, Serving};
use super::view::*;

pub(crate) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(crate) fn mk_node(i: u8) -> NodeFacts {
    let vtep = Ipv4Addr::new(198, 18, 0, i);
    NodeFacts {
        vtep,
        dvr_mac: names::dvr_mac(vtep),
    }
}

pub(crate) fn mk_ep(subnet: &str, addr: &str, node: &str, m: u8) -> EndpointView {
    EndpointView {
        subnet: subnet.into(),
        ip: ip(addr),
        mac: MacAddr([0x02, 0, 0, 0, 0, m]),
        node: node.into(),
    }
}

pub(crate) fn mk_router(
    ns: &str,
    index: u32,
    vni0: u32,
    endpoints: Vec<EndpointView>,
) -> RouterView {
    RouterView {
        key: ObjectKey::new(ns, "r"),
        index,
        subnets: vec![
            SubnetView {
                name: "a".into(),
                cidr: "10.0.1.0/24".parse().unwrap(),
                gateway: ip("10.0.1.1"),
                vni: vni0,
            },
            SubnetView {
                name: "b".into(),
                cidr: "10.0.2.0/24".parse().unwrap(),
                gateway: ip("10.0.2.1"),
                vni: vni0 + 1,
            },
        ],
        routes: vec![("192.0.2.0/24".parse().unwrap(), ip("10.0.1.254"))],
        endpoints,
        standby: vec![],
    }
}

/// Two tenants with the same CIDRs; tenant-a spans n1 and n2, tenant-b only n1.
pub(crate) fn mk_view() -> ClusterView {
    ClusterView {
        nodes: (1..=3).map(|i| (format!("n{i}"), mk_node(i))).collect(),
        routers: vec![
            mk_router(
                "tenant-a",
                0,
                4096,
                vec![
                    mk_ep("a", "10.0.1.10", "n1", 1),
                    mk_ep("b", "10.0.2.10", "n2", 2),
                    mk_ep("a", "10.0.1.11", "n2", 3),
                ],
            ),
            mk_router("tenant-b", 1, 5000, vec![mk_ep("a", "10.0.1.10", "n1", 9)]),
        ],
        ..Default::default()
    }
}

fn qr_a() -> String {
    names::qrouter_ns(0)
}

#[test]
fn routers_exist_only_where_their_endpoints_are() {
    let v = mk_view();
    let n1 = plan_node(&v, "n1");
    let n2 = plan_node(&v, "n2");
    let n3 = plan_node(&v, "n3");
    assert!(n1.namespaces.contains_key(&qr_a()));
    assert!(n1.namespaces.contains_key("qrouter-1"));
    assert!(n2.namespaces.contains_key(&qr_a()));
    assert!(!n2.namespaces.contains_key("qrouter-1"));
    assert_eq!(
        n3,
        NodeState::default(),
        "a node without endpoints gets nothing"
    );
    assert_eq!(plan_node(&v, "unknown"), NodeState::default());
}

#[test]
fn every_subnet_of_a_hosted_router_gets_a_port_with_the_same_gateway_mac_everywhere() {
    let v = mk_view();
    for node in ["n1", "n2"] {
        let st = plan_node(&v, node);
        let q = &st.namespaces[&qr_a()];
        for vni in [4096, 4097] {
            let qr = &q.links[&names::qr(vni)];
            assert_eq!(qr.mac, Some(names::gateway_mac(vni)));
            assert_eq!(
                qr.kind,
                LinkKind::Veth {
                    peer: names::qr_bridge(vni),
                    peer_ns: NsRef::Root
                }
            );
            let qrb = &st.root.links[&names::qr_bridge(vni)];
            assert_eq!(qrb.master.as_deref(), Some(names::bridge(vni).as_str()));
            assert_eq!(
                qrb.kind,
                LinkKind::Veth {
                    peer: names::qr(vni),
                    peer_ns: NsRef::Named(qr_a())
                }
            );
            assert!(st.root.links.contains_key(&names::vxlan(vni)));
        }
        assert_eq!(q.sysctls["net/ipv4/ip_forward"], "1");
        assert_eq!(q.sysctls["net/ipv4/conf/all/send_redirects"], "0");
        assert_eq!(q.sysctls["net/ipv4/conf/qr-4096/send_redirects"], "0");
        assert!(
            q.routes.iter().all(|r| r.dst.prefix_len() != 0),
            "no default route in a qrouter's main table"
        );
    }
}

#[test]
fn neighbours_cover_all_endpoints_and_fdb_only_remote_ones() {
    let v = mk_view();
    let n1 = plan_node(&v, "n1");
    let q = &n1.namespaces[&qr_a()];
    let neigh: Vec<_> = q
        .neighbours
        .iter()
        .map(|n| (n.link.as_str(), n.ip.to_string()))
        .collect();
    assert_eq!(
        neigh,
        [
            ("qr-4096", "10.0.1.10".to_string()),
            ("qr-4096", "10.0.1.11".into()),
            ("qr-4097", "10.0.2.10".into())
        ]
    );
    let n2_vtep = ip("198.18.0.2");
    let fdb: Vec<_> = n1
        .root
        .fdb
        .iter()
        .filter(|f| f.link == names::vxlan(4096))
        .cloned()
        .collect();
    assert_eq!(
        fdb,
        vec![
            FdbEntry {
                link: names::vxlan(4096),
                mac: MacAddr::ZERO,
                dst: n2_vtep
            },
            FdbEntry {
                link: names::vxlan(4096),
                mac: MacAddr([2, 0, 0, 0, 0, 3]),
                dst: n2_vtep
            },
        ],
        "flood to n2 and n2's endpoint; nothing for n1's own endpoint or n3"
    );
    // tenant-b lives on n1 only: no flood entries at all.
    assert!(n1.root.fdb.iter().all(|f| f.link != names::vxlan(5000)));
}

#[test]
fn overlapping_tenants_stay_apart() {
    let v = mk_view();
    let n1 = plan_node(&v, "n1");
    let a = &n1.namespaces[&qr_a()];
    let b = &n1.namespaces["qrouter-1"];
    assert!(
        b.links.keys().all(|l| !a.links.contains_key(l)),
        "no shared link names"
    );
    assert!(b
        .neighbours
        .iter()
        .all(|n| n.mac == MacAddr([2, 0, 0, 0, 0, 9])));
    assert!(a
        .neighbours
        .iter()
        .all(|n| n.mac != MacAddr([2, 0, 0, 0, 0, 9])));
    // Same CIDR, different bridges and VNIs.
    assert!(n1.root.links.contains_key("dvrbr-4096") && n1.root.links.contains_key("dvrbr-5000"));
}

#[test]
fn bridge_table_keeps_gateway_macs_off_the_overlay() {
    let v = mk_view();
    let n1 = plan_node(&v, "n1");
    let t = n1.root.nft.as_ref().expect("bridge table");
    assert_eq!(t.family, NftFamily::Bridge);
    assert_eq!(t.sets["gw_macs"].elements.len(), 4);
    // Keyed by VXLAN port: each segment's rules see only its own gateway.
    let ips: Vec<&String> = t.sets["gw_ips"].elements.keys().collect();
    assert!(
        ips.iter()
            .any(|e| e.starts_with("dvrvx-") && e.ends_with(" . 10.0.1.1")),
        "{ips:?}"
    );
    assert!(t.sets["gw_macs"]
        .elements
        .keys()
        .all(|e| e.starts_with("dvrvx-") && e.contains(" . ")));
    let rules = &t.chains["forward"].rules;
    assert!(rules.iter().any(|r| r.contains(&format!(
        "ether saddr set {}",
        names::dvr_mac(ip("198.18.0.1"))
    ))));
    let n2 = plan_node(&v, "n2");
    assert!(n2.root.nft.as_ref().unwrap().chains["forward"]
        .rules
        .iter()
        .any(|r| r.contains(&names::dvr_mac(ip("198.18.0.2")).to_string())));
}

#[test]
fn extra_routes_go_to_main() {
    let n1 = plan_node(&mk_view(), "n1");
    let r = n1.namespaces[&qr_a()]
        .routes
        .iter()
        .find(|r| r.dst.to_string() == "192.0.2.0/24")
        .unwrap();
    assert_eq!((r.table, r.via), (MAIN_TABLE, Some(ip("10.0.1.254"))));
}

#[test]
fn adding_an_endpoint_changes_only_what_concerns_it() {
    let mut v = mk_view();
    let before = plan_node(&v, "n1");
    v.routers[0]
        .endpoints
        .push(mk_ep("b", "10.0.2.20", "n2", 7));
    let after = plan_node(&v, "n1");
    assert_eq!(
        before.namespaces["qrouter-1"],
        after.namespaces["qrouter-1"]
    );
    let q0 = &before.namespaces[&qr_a()];
    let q1 = &after.namespaces[&qr_a()];
    assert_eq!(q1.neighbours.len(), q0.neighbours.len() + 1);
    assert_eq!(after.root.fdb.len(), before.root.fdb.len() + 1);
    assert_eq!((&q0.links, &q0.routes), (&q1.links, &q1.routes));
}

pub(crate) fn mk_north_south(v: &mut ClusterView) {
    v.external_networks.insert(
        "ext".into(),
        ExternalView {
            name: "ext".into(),
            cidr: "203.0.113.0/24".parse().unwrap(),
            gateway: ip("203.0.113.1"),
            attachment: Attachment::Bridge("br-ext".into()),
            node_ports: (1..=3)
                .map(|i| (format!("n{i}"), Ipv4Addr::new(203, 0, 113, 10 + i)))
                .collect(),
        },
    );
    let router = ObjectKey::new("tenant-a", "r");
    v.floating_ips.push(FloatingView {
        key: ObjectKey::new("tenant-a", "f1"),
        router: router.clone(),
        external: "ext".into(),
        address: ip("203.0.113.100"),
        fixed_ip: ip("10.0.1.10"),
        node: "n1".into(),
    });
    v.snat_gateways.push(SnatView {
        key: ObjectKey::new("tenant-a", "gw"),
        router,
        external: "ext".into(),
        address: ip("203.0.113.50"),
        node: Some("n3".into()),
        candidates: vec!["n3".into()],
        ports: vec![
            SnatPort {
                subnet: "a".into(),
                ip: ip("10.0.1.254"),
                mac: names::sg_mac(4096),
            },
            SnatPort {
                subnet: "b".into(),
                ip: ip("10.0.2.254"),
                mac: names::sg_mac(4097),
            },
        ],
    });
}

#[test]
fn floating_ip_is_served_on_its_endpoints_node() {
    let mut v = mk_view();
    mk_north_south(&mut v);
    let n1 = plan_node(&v, "n1");
    let fip = &n1.namespaces[&names::fip_ns("ext")];
    let fg = names::fg("ext");
    assert_eq!(fip.sysctls[&format!("net/ipv4/conf/{fg}/proxy_arp")], "1");
    assert_eq!(
        fip.sysctls[&format!("net/ipv4/neigh/{fg}/proxy_delay")],
        "0"
    );
    assert!(fip
        .routes
        .iter()
        .any(|r| r.dst.to_string() == "203.0.113.100/32" && r.via == Some(ip("169.254.64.0"))));
    let q = &n1.namespaces[&qr_a()];
    assert!(q.rules.contains(&Rule {
        priority: names::FIP_RULE_PRIORITY,
        from: None,
        fwmark: Some(names::FIP_MARK),
        table: names::FIP_TABLE
    }));
    let nat = q.nft.as_ref().unwrap();
    assert_eq!(
        nat.sets["fip_dnat"].elements["203.0.113.100"].as_deref(),
        Some("10.0.1.10")
    );
    assert_eq!(
        nat.sets["fip_snat"].elements["10.0.1.10"].as_deref(),
        Some("203.0.113.100")
    );
    // n2 hosts the router but not the floating IP's endpoint.
    let n2 = plan_node(&v, "n2");
    assert!(!n2.namespaces.contains_key(&names::fip_ns("ext")));
    assert!(n2.namespaces[&qr_a()].nft.is_none());
}

#[test]
fn snat_gateway_lives_on_its_node_and_routers_reach_it_after_the_fip_rule() {
    let mut v = mk_view();
    mk_north_south(&mut v);
    let n3 = plan_node(&v, "n3");
    let snat = &n3.namespaces[&names::snat_ns(0)];
    assert!(snat.links.contains_key("sg-4096") && snat.links.contains_key(&names::qg(0)));
    // Default SNAT is the last rule (after the services' NAT into the
    // subnets).
    let post = &snat.nft.as_ref().unwrap().chains["postrouting"].rules;
    assert_eq!(
        post.last().unwrap(),
        &format!("oifname \"{}\" snat to 203.0.113.50", names::qg(0))
    );
    assert!(
        !n3.namespaces.contains_key(&qr_a()),
        "no endpoints on the gateway node"
    );
    assert!(n3
        .root
        .fdb
        .iter()
        .any(|f| f.dst == ip("198.18.0.1") && f.mac == MacAddr::ZERO));
    let n1 = plan_node(&v, "n1");
    let q = &n1.namespaces[&qr_a()];
    let snat_rules: Vec<_> = q.rules.iter().filter(|r| r.from.is_some()).collect();
    assert_eq!(snat_rules.len(), 2);
    assert!(snat_rules
        .iter()
        .all(|r| r.priority > names::FIP_RULE_PRIORITY));
    assert!(n1.root.fdb.contains(&FdbEntry {
        link: names::vxlan(4096),
        mac: names::sg_mac(4096),
        dst: ip("198.18.0.3")
    }));
    // Without an active node the routers get no SNAT routes.
    v.snat_gateways[0].node = None;
    let n1 = plan_node(&v, "n1");
    assert!(n1.namespaces[&qr_a()]
        .rules
        .iter()
        .all(|r| r.from.is_none()));
}

#[test]
fn snat_candidates_keep_it_warm_and_detached_and_the_serving_node_moves_fdb_only() {
    let mut v = mk_view();
    mk_north_south(&mut v);
    v.snat_gateways[0].candidates = vec!["n3".into(), "n2".into()];
    let sg_fdb = |st: &NodeState| -> Vec<Ipv4Addr> {
        st.root
            .fdb
            .iter()
            .filter(|f| f.mac == names::sg_mac(4096))
            .map(|f| f.dst)
            .collect()
    };
    let attached = |st: &NodeState| {
        let root = &st.root.links;
        (
            root["sgb-4096"].master.is_some(),
            root[&names::qg_bridge(0)].master.is_some(),
        )
    };
    // The plan: n3 serves, n2 is warm (programmed in full, detached).
    let n3 = plan_node(&v, "n3");
    let n2 = plan_node(&v, "n2");
    assert_eq!(attached(&n3), (true, true));
    assert_eq!(attached(&n2), (false, false));
    let (s3, s2) = (
        &n3.namespaces[&names::snat_ns(0)],
        &n2.namespaces[&names::snat_ns(0)],
    );
    assert_eq!(s3.addresses, s2.addresses);
    assert_eq!(s3.routes, s2.routes);
    assert_eq!(s3.nft, s2.nft);
    assert_eq!(sg_fdb(&n2), [ip("198.18.0.3")]);
    assert_eq!(sg_fdb(&n3), [] as [Ipv4Addr; 0]);
    // n2 decided at run time that it serves: only the attachment and the
    // `sg-` FDB entries differ, on every node.
    let serving = Serving::from([(v.snat_gateways[0].key.clone(), "n2".to_string())]);
    let n2s = plan_node_serving(&v, "n2", &serving);
    assert_eq!(attached(&n2s), (true, true));
    assert_eq!(sg_fdb(&n2s), [] as [Ipv4Addr; 0]);
    let n3s = plan_node_serving(&v, "n3", &serving);
    assert_eq!(attached(&n3s), (false, false));
    assert_eq!(sg_fdb(&n3s), [ip("198.18.0.2")]);
    let n1s = plan_node_serving(&v, "n1", &serving);
    assert_eq!(sg_fdb(&n1s), [ip("198.18.0.2")]);
    let not_sg = |f: &FdbEntry| f.mac != names::sg_mac(4096) && f.mac != names::sg_mac(4097);
    let mut n1 = plan_node(&v, "n1");
    n1.root.fdb.retain(not_sg);
    let mut n1s = n1s.clone();
    n1s.root.fdb.retain(not_sg);
    assert!(n1 == n1s, "nothing else differs");
    // A macvlan cannot be detached: a standby has no `qg-` at all.
    if let Some(e) = v.external_networks.get_mut("ext") {
        e.attachment = Attachment::Interface("eth1".into());
    }
    let n2 = plan_node(&v, "n2");
    let s2 = &n2.namespaces[&names::snat_ns(0)];
    assert!(!s2.links.contains_key(&names::qg(0)));
    assert!(s2.addresses.iter().all(|a| a.link != names::qg(0)));
    let n2s = plan_node_serving(&v, "n2", &serving);
    assert!(n2s.namespaces[&names::snat_ns(0)]
        .links
        .contains_key(&names::qg(0)));
}

#[test]
fn all_link_names_fit_the_kernel() {
    let mut v = mk_view();
    mk_north_south(&mut v);
    for node in ["n1", "n2", "n3"] {
        let st = plan_node(&v, node);
        for ns in std::iter::once(&st.root).chain(st.namespaces.values()) {
            for l in ns.links.keys() {
                assert!(l.len() <= 15, "{l}");
            }
        }
    }
}

#[test]
fn a_standby_binding_hosts_the_router_but_traffic_goes_to_the_endpoint() {
    // A VM migrating from n1 to n3: its address is an endpoint on n1 and
    // standby on n3 (which has nothing else of the router).
    let mut v = mk_view();
    let vm = mk_ep("a", "10.0.1.50", "n1", 0x50);
    v.routers[0].endpoints.push(vm.clone());
    v.routers[0].standby.push(EndpointView {
        node: "n3".into(),
        ..vm.clone()
    });
    let n3 = plan_node(&v, "n3");
    assert!(n3.namespaces.contains_key(&qr_a()), "n3 hosts the router");
    let br = names::bridge(4096);
    assert!(n3.root.links.contains_key(&br), "and the subnet's bridge");
    let vx = names::vxlan(4096);
    let to = |st: &NodeState, mac: MacAddr| -> Vec<Ipv4Addr> {
        (st.root.fdb.iter())
            .filter(|f| f.link == vx && f.mac == mac)
            .map(|f| f.dst)
            .collect()
    };
    let vtep = |i: u8| mk_node(i).vtep;
    assert_eq!(to(&n3, vm.mac), [vtep(1)], "n3 sends the VM's MAC to n1");
    assert_eq!(to(&plan_node(&v, "n2"), vm.mac), [vtep(1)]);
    assert!(
        to(&n3, MacAddr::ZERO).contains(&vtep(1)),
        "n3 floods to the router's nodes"
    );
    assert!(
        to(&plan_node(&v, "n1"), MacAddr::ZERO).contains(&vtep(3)),
        "and they to n3"
    );
}

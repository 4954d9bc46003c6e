//! [`node_keys`]: a change that moves a node's plan moves its key, and
//! leaves the keys of the nodes it does not concern alone.
use std::net::Ipv4Addr;

use super::*;
use crate::plan::model::MacAddr;
use crate::plan::plan_node;

use crate::plan::tests::{ip, mk_ep as ep, mk_node as facts};

/// The planner tests' router without their static route.
fn router(ns: &str, index: u32, vni0: u32, endpoints: Vec<EndpointView>) -> RouterView {
    RouterView {
        routes: vec![],
        ..crate::plan::tests::mk_router(ns, index, vni0, endpoints)
    }
}

pub(crate) fn world() -> ClusterView {
    let mut v = ClusterView {
        nodes: (1..=5).map(|i| (format!("n{i}"), facts(i))).collect(),
        routers: vec![
            router(
                "tenant-a",
                0,
                4096,
                vec![ep("a", "10.0.1.10", "n1", 1), ep("b", "10.0.2.10", "n2", 2)],
            ),
            router("tenant-b", 1, 5000, vec![ep("a", "10.0.1.10", "n4", 9)]),
        ],
        ..Default::default()
    };
    // The planner tests' external network, floating IP and SNAT gateway,
    // with node ports on every node, a standby (n1) and one port.
    crate::plan::tests::mk_north_south(&mut v);
    let ext = v.external_networks.get_mut("ext").unwrap();
    ext.node_ports
        .extend((4..=5).map(|i| (format!("n{i}"), Ipv4Addr::new(203, 0, 113, 10 + i))));
    let gw = &mut v.snat_gateways[0];
    gw.candidates.push("n1".into());
    gw.ports.truncate(1);
    v
}

/// A named change to a view.
pub(crate) type Mutation = (&'static str, fn(&mut ClusterView));

/// Named changes to [`world`].
pub(crate) fn mutations() -> Vec<Mutation> {
    vec![
        ("a floating IP on n2", |v| {
            let mut f = v.floating_ips[0].clone();
            f.key.name = "f2".into();
            f.address = ip("203.0.113.101");
            f.fixed_ip = ip("10.0.2.10");
            f.node = "n2".into();
            v.floating_ips.push(f);
        }),
        ("an endpoint of tenant-a on n5", |v| {
            v.routers[0].endpoints.push(ep("a", "10.0.1.11", "n5", 3))
        }),
        ("n4's VTEP", |v| {
            v.nodes.get_mut("n4").unwrap().vtep = ip("198.18.1.4")
        }),
        ("n2's VTEP", |v| {
            v.nodes.get_mut("n2").unwrap().vtep = ip("198.18.1.2")
        }),
        ("n1's DVR MAC", |v| {
            v.nodes.get_mut("n1").unwrap().dvr_mac = MacAddr([0x2a, 0, 0, 0, 0, 1])
        }),
        ("the external gateway", |v| {
            v.external_networks.get_mut("ext").unwrap().gateway = ip("203.0.113.2")
        }),
        ("n1's fg- address", |v| {
            let e = v.external_networks.get_mut("ext").unwrap();
            e.node_ports.insert("n1".into(), ip("203.0.113.30"));
        }),
        ("n4's fg- address", |v| {
            let e = v.external_networks.get_mut("ext").unwrap();
            e.node_ports.insert("n4".into(), ip("203.0.113.34"));
        }),
        ("the SNAT gateway's candidates", |v| {
            v.snat_gateways[0].candidates = vec!["n3".into(), "n5".into()]
        }),
        ("the SNAT gateway's address", |v| {
            v.snat_gateways[0].address = ip("203.0.113.51")
        }),
        ("tenant-b's routes", |v| {
            v.routers[1].routes = vec![("192.0.2.0/24".parse().unwrap(), ip("10.0.1.254"))]
        }),
        ("a standby of tenant-b on n5", |v| {
            v.routers[1].standby.push(ep("a", "10.0.1.12", "n5", 4))
        }),
        ("the floating IP's address", |v| {
            v.floating_ips[0].address = ip("203.0.113.102")
        }),
        ("tenant-a's index", |v| v.routers[0].index = 7),
        ("a subnet's gateway", |v| {
            v.routers[1].subnets[0].gateway = ip("10.0.1.2")
        }),
        ("the external attachment", |v| {
            v.external_networks.get_mut("ext").unwrap().attachment =
                Attachment::Interface("eth1".into())
        }),
        ("a firewall of tenant-a", |v| {
            v.firewalls.push(FirewallView {
                key: ObjectKey::new("tenant-a", "fw"),
                router: ObjectKey::new("tenant-a", "r"),
                default_allow: false,
                ingress: vec![],
                egress: vec![],
            })
        }),
        ("a port forwarding of tenant-a", |v| {
            v.port_forwardings.push(ForwardingView {
                key: ObjectKey::new("tenant-a", "pf"),
                router: ObjectKey::new("tenant-a", "r"),
                address: ip("203.0.113.50"),
                dedicated: false,
                forwards: vec![ForwardEntry {
                    protocol: "tcp".into(),
                    external: (80, 80),
                    fixed_ip: ip("10.0.1.10"),
                    internal: 8080,
                }],
            })
        }),
        ("a load balancer's backends", |v| {
            v.load_balancers.push(LoadBalancerView {
                key: ObjectKey::new("tenant-a", "lb"),
                router: ObjectKey::new("tenant-a", "r"),
                address: ip("10.0.1.253"),
                subnet: Some("a".into()),
                ports: vec![("tcp".into(), 80, 80)],
                backends: vec![ip("10.0.1.10")],
                client_affinity: false,
                health: HealthView {
                    interval_ms: 1000,
                    timeout_ms: 1000,
                    rise: 1,
                    fall: 1,
                    ports: vec![80],
                },
            })
        }),
    ]
}

/// For one change: every node whose plan moved has a new key.
fn check(name: &str, before: &ClusterView, after: &ClusterView) -> Vec<String> {
    let (k0, k1) = (node_keys(before), node_keys(after));
    let mut moved = Vec::new();
    for n in after.nodes.keys() {
        let plan_moved = plan_node(before, n) != plan_node(after, n);
        let key_moved = k0.get(n) != k1.get(n);
        assert!(
            !plan_moved || key_moved,
            "{name}: {n}'s plan changed, its key did not"
        );
        if key_moved {
            moved.push(n.clone());
        }
    }
    moved
}

#[test]
fn every_change_of_a_plan_moves_its_nodes_key() {
    for (name, change) in mutations() {
        let before = world();
        let mut after = world();
        change(&mut after);
        check(name, &before, &after);
    }
    // And one after the other.
    let mut v = world();
    for (name, change) in mutations() {
        let before = v.clone();
        change(&mut v);
        check(name, &before, &v);
    }
}

#[test]
fn a_change_moves_only_the_keys_of_the_nodes_it_concerns() {
    let moved = |i: usize| {
        let (name, change) = mutations()[i];
        let mut after = world();
        change(&mut after);
        check(name, &world(), &after)
    };
    // A floating IP concerns its node only.
    assert_eq!(moved(0), ["n2"]);
    // tenant-b lives on n4 only: its VTEP is nobody else's business.
    assert_eq!(moved(2), ["n4"]);
    // n2's VTEP: the nodes of tenant-a (n1, n2) and its gateway (n3).
    assert_eq!(moved(3), ["n1", "n2", "n3"]);
    // Another node's fg- address.
    assert_eq!(moved(6), ["n1"]);
    // n4 serves no floating IP: its own fg- address is not in its plan.
    assert!(moved(7).is_empty());
    // Nothing changes nothing.
    assert!(check("nothing", &world(), &world()).is_empty());
}

//! Tenant isolation in the node root's bridge filters, with the real planner
//! on two simulated nodes and real traffic.
//!
//! Two tenants use the same CIDR with different gateway addresses, and a
//! workload of tenant B holds the address that is tenant A's gateway. Both
//! routers are hosted on both nodes, so each node's bridge table knows both
//! gateways. B's workloads must still reach each other across the nodes in
//! both directions with empty ARP caches: the bridge rules of B's segment
//! may only see B's gateway, never A's.
//!
//! The simulated-node helpers here serve the other multi-node tests too.
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::*;
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::plan::names;
use kube_dvr::plan::plan_node;
use kube_dvr::plan::view::*;

pub(super) const NODES_DIR: &str = "/run/nodes";

pub(super) fn vtep(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i)
}

/// Node `n<i>`: its own root namespace (`/run/nodes/n<i>`) and netns dir.
pub(super) fn node_engine(i: u8) -> Engine {
    let dir = PathBuf::from(NODES_DIR);
    Engine::new(EngineConfig {
        root_netns: netns::path(&dir, &format!("n{i}")),
        netns_dir: dir.join(format!("n{i}-netns")),
    })
    .expect("engine")
}

/// A command in a namespace file under `/run/nodes`.
pub(super) fn in_node(ns: &str, args: &[&str]) -> String {
    let net = format!("--net={NODES_DIR}/{ns}");
    let mut v = vec!["nsenter", net.as_str()];
    v.extend_from_slice(args);
    sh(&v)
}

pub(super) fn ping(from: &str, to: Ipv4Addr) -> bool {
    let net = format!("--net={NODES_DIR}/{from}");
    Command::new("nsenter")
        .args([&net, "ping", "-c1", "-W2", &to.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

pub(super) fn endpoint(subnet: &str, ip: Ipv4Addr, mac: MacAddr, node: &str) -> EndpointView {
    EndpointView {
        subnet: subnet.into(),
        ip,
        mac,
        node: node.into(),
    }
}

fn router(ns: &str, index: u32, vni: u32, gateway: Ipv4Addr, eps: Vec<EndpointView>) -> RouterView {
    RouterView {
        key: ObjectKey::new(ns, "r"),
        index,
        subnets: vec![SubnetView {
            name: "s".into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway,
            vni,
        }],
        routes: vec![],
        endpoints: eps,
        standby: vec![],
    }
}

/// A workload namespace `name` plugged into bridge `dvrbr-<vni>` of node
/// `node`, with `ip`/24 and `mac`.
pub(super) fn workload(name: &str, node: &str, vni: u32, ip: Ipv4Addr, mac: MacAddr) {
    let dir = PathBuf::from(NODES_DIR);
    netns::create(&dir, name).unwrap();
    let port = format!("p-{name}");
    let mac = mac.to_string();
    let wl = format!("{NODES_DIR}/{name}");
    in_node(
        node,
        &[
            "ip", "link", "add", &port, "mtu", "1450", "type", "veth", "peer", "name", "eth0",
            "mtu", "1450", "address", &mac, "netns", &wl,
        ],
    );
    in_node(
        node,
        &[
            "ip",
            "link",
            "set",
            &port,
            "master",
            &names::bridge(vni),
            "up",
        ],
    );
    in_node(
        name,
        &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    );
    in_node(name, &["ip", "link", "set", "eth0", "up"]);
}

#[test]
fn overlapping_tenants_reach_a_peer_on_the_other_tenants_gateway_address() {
    if !sandbox::enter(
        "isolation::overlapping_tenants_reach_a_peer_on_the_other_tenants_gateway_address",
    ) {
        return;
    }
    let dir = PathBuf::from(NODES_DIR);
    for i in [1, 2] {
        netns::create(&dir, &format!("n{i}")).unwrap();
    }
    // The underlay: one link between the two nodes.
    in_node(
        "n1",
        &[
            "ip",
            "link",
            "add",
            "ul",
            "type",
            "veth",
            "peer",
            "name",
            "ul",
            "netns",
            &format!("{NODES_DIR}/n2"),
        ],
    );
    for i in [1u8, 2] {
        let n = format!("n{i}");
        in_node(
            &n,
            &["ip", "addr", "add", &format!("{}/24", vtep(i)), "dev", "ul"],
        );
        in_node(&n, &["ip", "link", "set", "ul", "up"]);
    }

    let a_gw: Ipv4Addr = "10.0.0.1".parse().unwrap();
    let b_gw: Ipv4Addr = "10.0.0.254".parse().unwrap();
    let mac = |t: u8, h: u8| MacAddr([0x02, 0, 0, 0, t, h]);
    // Tenant B's b1 holds the address of tenant A's gateway.
    let (b1, b2): (Ipv4Addr, Ipv4Addr) = (a_gw, "10.0.0.2".parse().unwrap());
    let (a1, a2): (Ipv4Addr, Ipv4Addr) =
        ("10.0.0.10".parse().unwrap(), "10.0.0.11".parse().unwrap());
    let view = ClusterView {
        nodes: [1u8, 2]
            .map(|i| {
                (
                    format!("n{i}"),
                    NodeFacts {
                        vtep: vtep(i),
                        dvr_mac: names::dvr_mac(vtep(i)),
                    },
                )
            })
            .into(),
        routers: vec![
            router(
                "tenant-a",
                0,
                100,
                a_gw,
                vec![
                    endpoint("s", a1, mac(0xa, 1), "n1"),
                    endpoint("s", a2, mac(0xa, 2), "n2"),
                ],
            ),
            router(
                "tenant-b",
                1,
                200,
                b_gw,
                vec![
                    endpoint("s", b1, mac(0xb, 1), "n1"),
                    endpoint("s", b2, mac(0xb, 2), "n2"),
                ],
            ),
        ],
        ..Default::default()
    };
    let mut engines = Vec::new();
    for i in [1u8, 2] {
        let mut e = node_engine(i);
        let r = e.reconcile(&plan_node(&view, &format!("n{i}"))).unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        engines.push(e);
    }
    workload("a1", "n1", 100, a1, mac(0xa, 1));
    workload("a2", "n2", 100, a2, mac(0xa, 2));
    workload("b1", "n1", 200, b1, mac(0xb, 1));
    workload("b2", "n2", 200, b2, mac(0xb, 2));

    let fresh_arp = || {
        for w in ["a1", "a2", "b1", "b2"] {
            in_node(w, &["ip", "neigh", "flush", "all"]);
        }
    };
    for (from, to, what) in [
        ("b2", b1, "B across nodes to the address of A's gateway"),
        ("b1", b2, "B across nodes from the address of A's gateway"),
        ("a1", a2, "A across nodes"),
        ("a2", a1, "A across nodes, back"),
    ] {
        fresh_arp();
        assert!(ping(from, to), "{what}: {from} -> {to} failed");
    }
    // Each tenant's own gateway still never answers across the overlay:
    // every node answers for it locally.
    fresh_arp();
    assert!(ping("b2", b_gw), "b2 -> its gateway");
    assert!(ping("a2", a_gw), "a2 -> its gateway");
    let fdb = in_node("n2", &["bridge", "fdb", "show", "dev", "dvrvx-200"]);
    assert!(
        !fdb.contains(&names::gateway_mac(200).to_string()),
        "B's gateway MAC was learned across the overlay: {fdb}"
    );
    // Converged: a second pass writes nothing.
    for (i, e) in engines.iter_mut().enumerate() {
        let r = e
            .reconcile(&plan_node(&view, &format!("n{}", i + 1)))
            .unwrap();
        assert_eq!(r.writes.total(), 0, "{:?}", r.writes);
    }
}

//! Kernel names never come from user names: a router, floating IP and SNAT
//! gateway whose Kubernetes names have the maximum lengths (namespace 63
//! bytes, object names 253) are programmed on a node and carry traffic.
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::isolation::{endpoint, in_node, node_engine, ping, vtep, workload, NODES_DIR};
use super::*;
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::plan::names;
use kube_dvr::plan::plan_node;
use kube_dvr::plan::view::*;

/// A DNS-1123 name of exactly `len` bytes (labels of 63 joined by dots).
fn long_name(len: usize, c: char) -> String {
    let mut s: String = std::iter::repeat_n(c, len).collect();
    for i in (63..len).step_by(64) {
        s.replace_range(i..=i, ".");
    }
    s
}

#[test]
fn maximum_length_names_are_programmed_and_carry_traffic() {
    if !sandbox::enter("long_names::maximum_length_names_are_programmed_and_carry_traffic") {
        return;
    }
    let ns = long_name(63, 't');
    let router_name = long_name(253, 'r');
    let ext_name = long_name(253, 'e');
    assert_eq!(
        (ns.len(), router_name.len(), ext_name.len()),
        (63, 253, 253)
    );
    let dir = PathBuf::from(NODES_DIR);
    netns::create(&dir, "n1").unwrap();
    // The external segment: a bridge on the node and a host on it.
    in_node("n1", &["ip", "link", "add", "br-ext", "type", "bridge"]);
    in_node("n1", &["ip", "link", "set", "br-ext", "up"]);
    netns::create(&dir, "ext-host").unwrap();
    let host = format!("{NODES_DIR}/ext-host");
    in_node(
        "n1",
        &[
            "ip", "link", "add", "p-ext", "type", "veth", "peer", "name", "eth0", "netns", &host,
        ],
    );
    in_node(
        "n1",
        &["ip", "link", "set", "p-ext", "master", "br-ext", "up"],
    );
    in_node(
        "ext-host",
        &["ip", "addr", "add", "203.0.113.1/24", "dev", "eth0"],
    );
    in_node("ext-host", &["ip", "link", "set", "eth0", "up"]);

    let vni = 16_777_215;
    let key = ObjectKey::new(ns.clone(), router_name.clone());
    let (w1, w2) = (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 11));
    let (m1, m2) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let fip = Ipv4Addr::new(203, 0, 113, 10);
    let snat = Ipv4Addr::new(203, 0, 113, 50);
    let view = ClusterView {
        nodes: [(
            "n1".to_string(),
            NodeFacts {
                vtep: vtep(1),
                dvr_mac: names::dvr_mac(vtep(1)),
            },
        )]
        .into(),
        routers: vec![RouterView {
            key: key.clone(),
            index: 8191,
            subnets: vec![SubnetView {
                name: long_name(63, 's'),
                cidr: "10.0.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 0, 0, 1),
                vni,
            }],
            routes: vec![],
            endpoints: vec![
                endpoint(&long_name(63, 's'), w1, m1, "n1"),
                endpoint(&long_name(63, 's'), w2, m2, "n1"),
            ],
            standby: vec![],
        }],
        external_networks: [(
            ext_name.clone(),
            ExternalView {
                name: ext_name.clone(),
                cidr: "203.0.113.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(203, 0, 113, 1),
                attachment: Attachment::Bridge("br-ext".into()),
                node_ports: [("n1".to_string(), Ipv4Addr::new(203, 0, 113, 100))].into(),
            },
        )]
        .into(),
        floating_ips: vec![FloatingView {
            key: ObjectKey::new(ns.clone(), long_name(253, 'f')),
            router: key.clone(),
            external: ext_name.clone(),
            address: fip,
            fixed_ip: w1,
            node: "n1".into(),
        }],
        snat_gateways: vec![SnatView {
            key: ObjectKey::new(ns.clone(), long_name(253, 'g')),
            router: key.clone(),
            external: ext_name.clone(),
            address: snat,
            node: Some("n1".into()),
            candidates: vec!["n1".into()],
            ports: vec![SnatPort {
                subnet: long_name(63, 's'),
                ip: Ipv4Addr::new(10, 0, 0, 254),
                mac: names::sg_mac(vni),
            }],
        }],
        ..Default::default()
    };
    let plan = plan_node(&view, "n1");
    let mut e = node_engine(1);
    let r = e.reconcile(&plan).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mut made = netns::list(&dir.join("n1-netns")).unwrap();
    made.sort();
    let mut want = vec![
        names::fip_ns(&ext_name),
        names::qrouter_ns(8191),
        names::snat_ns(8191),
    ];
    want.sort();
    assert_eq!(made, want);

    for (name, ip, mac) in [("w1", w1, m1), ("w2", w2, m2)] {
        workload(name, "n1", vni, ip, mac);
        in_node(name, &["ip", "route", "add", "default", "via", "10.0.0.1"]);
    }
    assert!(ping("w1", w2), "east-west");
    assert!(ping("w1", Ipv4Addr::new(10, 0, 0, 1)), "the router");
    assert!(ping("ext-host", fip), "the floating IP from outside");
    assert!(ping("w2", Ipv4Addr::new(203, 0, 113, 1)), "SNAT to outside");
    let r = e.reconcile(&plan).unwrap();
    assert_eq!(r.writes.total(), 0, "{:?}", r.writes);
}

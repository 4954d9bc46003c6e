//! A full pass after churn writes nothing: namespaces deleted and created
//! through the change path must not leave the engine with stale facts about
//! them (the kernel reuses a freed namespace's inode number, and an id
//! cached under it once made every later full pass recreate the same veth
//! pair, pass after pass).
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::plan::names;
use kube_dvr::plan::plan_node;
use kube_dvr::plan::view::*;

const DIR: &str = "/run/nodes";
const NODE: &str = "n0";

/// A simulated node `name` (own root namespace with an external bridge).
fn node(name: &str) -> Engine {
    let dir = PathBuf::from(DIR);
    netns::create(&dir, name).unwrap();
    let net = format!("--net={DIR}/{name}");
    sh(&[
        "nsenter", &net, "ip", "link", "add", "br-ext", "type", "bridge",
    ]);
    Engine::new(EngineConfig {
        root_netns: netns::path(&dir, name),
        netns_dir: dir.join(format!("{name}-netns")),
    })
    .unwrap()
}

/// One router with four subnets and `fips` floating IPs, all on [`NODE`].
fn view(fips: u32) -> ClusterView {
    let vtep = Ipv4Addr::new(198, 18, 0, 10);
    let mut v = ClusterView {
        nodes: [(
            NODE.to_string(),
            NodeFacts {
                vtep,
                dvr_mac: names::dvr_mac(vtep),
            },
        )]
        .into(),
        ..Default::default()
    };
    let mut r = RouterView {
        key: ObjectKey::new("t", "r"),
        index: 3,
        subnets: vec![],
        routes: vec![],
        endpoints: vec![],
        standby: vec![],
    };
    for s in 0..4u8 {
        r.subnets.push(SubnetView {
            name: format!("s{s}"),
            cidr: format!("10.{s}.0.0/16").parse().unwrap(),
            gateway: Ipv4Addr::new(10, s, 0, 1),
            vni: 4096 + s as u32,
        });
    }
    v.external_networks.insert(
        "ext".into(),
        ExternalView {
            name: "ext".into(),
            cidr: "198.19.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(198, 19, 0, 1),
            attachment: Attachment::Bridge("br-ext".into()),
            node_ports: [(NODE.to_string(), Ipv4Addr::new(198, 19, 0, 10))].into(),
        },
    );
    for i in 0..fips {
        let s = (i % 4) as u8;
        let e = i / 4;
        let ip = Ipv4Addr::new(10, s, (e / 250) as u8 + 1, (e % 250) as u8 + 2);
        r.endpoints.push(EndpointView {
            subnet: format!("s{s}"),
            ip,
            mac: MacAddr([0x02, 0, s, (e >> 8) as u8, e as u8, 1]),
            node: NODE.into(),
        });
        v.floating_ips.push(FloatingView {
            key: ObjectKey::new("t", format!("f{i}")),
            router: r.key.clone(),
            external: "ext".into(),
            address: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 1, 0)) + i),
            fixed_ip: ip,
            node: NODE.into(),
        });
    }
    v.routers.push(r);
    v
}

fn change_ok(e: &mut Engine, desired: &NodeState) {
    let r = e.reconcile_changes(desired).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn full_passes_after_namespace_churn_write_nothing() {
    if !sandbox::enter("resync::full_passes_after_namespace_churn_write_nothing") {
        return;
    }
    let many = plan_node(&view(300), NODE);
    let none = plan_node(&view(0), NODE);
    let one = plan_node(&view(1), NODE);
    let mut e = node("e");
    let mut b = node("b");
    reconcile_ok(&mut e, &many);
    reconcile_ok(&mut b, &none);
    let scratch = PathBuf::from(DIR).join("scratch");
    // Repeated with other interleavings: which namespace inherits which
    // freed inode number depends on what is created in between.
    for round in 0..6u32 {
        // Remove every floating IP (the `fip-` namespace goes; on the other
        // node the router's namespace too), ...
        reconcile_ok(&mut e, &none);
        change_ok(&mut b, &none);
        // ... let the kernel free them (asynchronously; not a timing
        // assertion, only a pause so their inode numbers come free), ...
        std::thread::sleep(Duration::from_millis(100));
        // ... create namespaces outside kube-dvr meanwhile, ...
        let k = round % 3 + 1;
        for x in 0..k {
            netns::create(&scratch, &format!("x{x}")).unwrap();
        }
        // ... and put everything back through the change path.
        change_ok(&mut b, &one);
        change_ok(&mut e, &many);
        for x in 0..k {
            netns::delete(&scratch, &format!("x{x}")).unwrap();
        }
        for pass in 0..3 {
            let r = reconcile_ok(&mut e, &many);
            assert_eq!(
                r.writes.total(),
                0,
                "round {round}, full pass {pass}: the node with 300 floating IPs wrote {:?}",
                r.writes
            );
            let r = reconcile_ok(&mut b, &one);
            assert_eq!(
                r.writes.total(),
                0,
                "round {round}, full pass {pass}: the other node wrote {:?}",
                r.writes
            );
        }
    }
}

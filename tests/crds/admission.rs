//! Admission of valid and invalid objects: every pattern, bound and CEL rule
//! the CRDs claim is exercised in both directions.

use kube::CustomResourceExt;
use kube_dvr::api::{
    condition, conditions, DistributedRouterSpec, ExternalAttachment, ExternalNetworkSpec,
    ExternalPools, FloatingIP, FloatingIPStatus, FloatingTarget, PodTarget, Port, PortBinding,
    PortSpec, PortStatus,
};
use serde_json::json;

use super::support::*;

#[test]
fn external_network_admission() {
    let ok = mk_extnet();
    assert_admitted(&ok, None);
    let mut iface = ok.clone();
    iface.spec.attachment = ExternalAttachment {
        bridge: None,
        interface: Some("eth1.100".into()),
    };
    assert_admitted(&iface, None);

    let with = |f: &dyn Fn(&mut ExternalNetworkSpec)| {
        let mut e = mk_extnet();
        f(&mut e.spec);
        e
    };
    assert_rejected(
        &with(&|s| s.gateway = "198.51.100.1".into()),
        None,
        "gateway must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.gateway = "203.0.113.01".into()),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.cidr = "203.0.113.5/24".into()),
        None,
        "must be a network address",
    );
    assert_rejected(
        &with(&|s| s.cidr = "203.0.113.0/33".into()),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.cidr = "203.0.113.0/31".into()),
        None,
        "prefix length",
    );
    assert_rejected(
        &with(&|s| s.cidr = "2001:db8::/64".into()),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.pools.floating = vec!["198.51.100.10-198.51.100.20".into()]),
        None,
        "every floating pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.floating = vec!["203.0.113.10-198.51.100.20".into()]),
        None,
        "every floating pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.snat = vec!["203.0.112.0/23".into()]),
        None,
        "every snat pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.node_ports = vec!["203.0.114.0/28".into()]),
        None,
        "every nodePorts pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.snat = vec!["203.0.113.1-".into()]),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.pools.snat = vec!["203.0.113.1".into(); 33]),
        None,
        "must have at most",
    );
    assert_rejected(
        &with(&|s| {
            s.attachment = ExternalAttachment {
                bridge: Some("br0".into()),
                interface: Some("eth1".into()),
            }
        }),
        None,
        "exactly one of bridge or interface",
    );
    assert_rejected(
        &with(&|s| s.attachment = ExternalAttachment::default()),
        None,
        "exactly one of bridge or interface",
    );
    assert_rejected(
        &with(&|s| s.attachment.bridge = Some("br-external-net0".into())),
        None,
        "Too long",
    );
    assert_rejected(
        &with(&|s| s.attachment.bridge = Some("br/ext".into())),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.allowed_namespaces = vec!["Tenant_A".into()]),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.allowed_namespaces = vec!["a".into(), "a".into()]),
        None,
        "Duplicate value",
    );

    // cidr is immutable; the rest is not.
    let moved = with(&|s| {
        s.cidr = "198.51.100.0/24".into();
        s.gateway = "198.51.100.1".into();
        s.pools = ExternalPools::default();
    });
    assert_admitted(&moved, None);
    assert_rejected(&moved, Some(&ok), "cidr is immutable");
    assert_admitted(&with(&|s| s.gateway = "203.0.113.254".into()), Some(&ok));

    let mut bad_status = mk_extnet();
    bad_status.status.as_mut().unwrap().node_ports[0].mac = Some("fa:16:3e:00:00".into());
    assert_rejected(&bad_status, None, "in body should match");
}

#[test]
fn distributed_router_admission() {
    let ok = mk_router();
    assert_admitted(&ok, None);
    let mut empty = ok.clone();
    empty.spec = DistributedRouterSpec::default();
    assert_admitted(&empty, None);

    let with = |f: &dyn Fn(&mut DistributedRouterSpec)| {
        let mut r = mk_router();
        f(&mut r.spec);
        r
    };
    assert_rejected(
        &with(&|s| s.subnets[1].name = "front".into()),
        None,
        "subnet names must be unique",
    );
    assert_rejected(
        &with(&|s| s.subnets[1].name = "front".into()),
        None,
        "Duplicate value",
    );
    assert_rejected(
        &with(&|s| s.subnets[1] = subnet("back", "10.0.0.0/16", "10.0.0.1", "net-back")),
        None,
        "subnet CIDRs must not overlap",
    );
    assert_rejected(
        &with(&|s| s.subnets[1] = subnet("back", "10.0.1.0/24", "10.0.1.1", "net-back")),
        None,
        "subnet CIDRs must not overlap",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].gateway = "10.0.2.1".into()),
        None,
        "gateway must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].gateway = "10.0.1.0".into()),
        None,
        "network address",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].cidr = "10.0.1.1/24".into()),
        None,
        "must be a network address",
    );
    assert_rejected(
        &with(&|s| s.subnets[0] = subnet("front", "10.0.1.0/31", "10.0.1.1", "n")),
        None,
        "prefix length",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].name = "Front".into()),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].network_attachment = "a/b/c".into()),
        None,
        "in body should match",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].network_attachment = String::new()),
        None,
        "should be at least 1 chars long",
    );
    assert_rejected(
        &with(&|s| s.routes[0].nexthop = "172.16.0.1".into()),
        None,
        "nexthop must be inside",
    );
    assert_rejected(
        &with(&|s| s.routes[0].destination = "192.168.1.0/16".into()),
        None,
        "network address",
    );
    assert_rejected(
        &with(&|s| s.routes.push(s.routes[0].clone())),
        None,
        "Duplicate value",
    );
    assert_rejected(
        &with(&|s| s.external_network = Some("Public Net".into())),
        None,
        "in body should match",
    );

    // 64 subnets are fine; 65 are not.
    let many = |n: usize| {
        with(&|s| {
            s.routes.clear();
            s.subnets = (0..n)
                .map(|i| {
                    subnet(
                        &format!("s{i}"),
                        &format!("10.1.{i}.0/24"),
                        &format!("10.1.{i}.1"),
                        "n",
                    )
                })
                .collect();
        })
    };
    assert_admitted(&many(64), None);
    assert_rejected(&many(65), None, "must have at most");

    let mut bad_vni = mk_router();
    bad_vni.status.as_mut().unwrap().subnets[0].vni = 16_777_216;
    assert_rejected(&bad_vni, None, "should be less than or equal to 16777215");
    bad_vni.status.as_mut().unwrap().subnets[0].vni = 0;
    assert_rejected(&bad_vni, None, "should be greater than or equal to 1");
}

#[test]
fn floating_ip_admission() {
    let ok = mk_fip(fixed("10.0.1.5"));
    assert_admitted(&ok, None);
    let pod = mk_fip(FloatingTarget {
        fixed_ip: None,
        pod: Some(PodTarget {
            name: "web-0".into(),
            network: None,
        }),
    });
    assert_admitted(&pod, None);
    // Changing the target or address is allowed.
    assert_admitted(&pod, Some(&ok));

    let both = mk_fip(FloatingTarget {
        fixed_ip: Some("10.0.1.5".into()),
        pod: Some(PodTarget {
            name: "web-0".into(),
            network: None,
        }),
    });
    assert_rejected(&both, None, "exactly one of fixedIP or pod");
    assert_rejected(
        &mk_fip(FloatingTarget::default()),
        None,
        "exactly one of fixedIP or pod",
    );
    assert_rejected(&mk_fip(fixed("10.0.1.256")), None, "in body should match");

    let mut moved = ok.clone();
    moved.spec.router = "r2".into();
    assert_admitted(&moved, None);
    assert_rejected(&moved, Some(&ok), "router is immutable");

    let mut addr = ok.clone();
    addr.spec.address = Some("203.0.113.20/32".into());
    assert_rejected(&addr, None, "in body should match");

    let mut st = ok.clone();
    st.status = Some(FloatingIPStatus {
        observed_generation: Some(1),
        conditions: vec![
            condition(conditions::READY, true, "Ready", "", Some(1)),
            condition(conditions::PROGRAMMED, true, "Programmed", "", Some(1)),
        ],
        address: Some("203.0.113.20".into()),
        fixed_ip: Some("10.0.1.5".into()),
        node: Some("node-1".into()),
        mac: Some("fa:16:3e:00:00:01".into()),
    });
    assert_admitted(&st, None);
    st.status.as_mut().unwrap().conditions.push(condition(
        conditions::READY,
        false,
        "Gone",
        "",
        Some(1),
    ));
    assert_rejected(&st, None, "Duplicate value");
}

#[test]
fn snat_gateway_admission() {
    let ok = mk_snat();
    assert_admitted(&ok, None);
    let mut moved = ok.clone();
    moved.spec.router = "r2".into();
    assert_rejected(&moved, Some(&ok), "router is immutable");
    let mut readdressed = ok.clone();
    readdressed.spec.address = Some("203.0.113.131".into());
    assert_admitted(&readdressed, Some(&ok));
    let mut bad = ok.clone();
    bad.spec.router = String::new();
    assert_rejected(&bad, None, "should be at least 1 chars long");
}

/// A pod's Port (`spec.node`, `pod`, `containerId`, `interface`) or a
/// VM's (`spec.vm`, its pods in `status.bindings`), never both.
#[test]
fn port_admission() {
    let pod = Port::new(
        "r1.front.10.0.1.5",
        PortSpec {
            router: "r1".into(),
            subnet: "front".into(),
            network: "tenant-a/net-front".into(),
            ip: "10.0.1.5".into(),
            mac: "0a:58:0a:00:01:05".into(),
            node: "node-1".into(),
            pod: "web-0".into(),
            container_id: "c1".into(),
            interface: "net1".into(),
            ..Default::default()
        },
    );
    assert_admitted(&pod, None);
    let mut vm = pod.clone();
    vm.spec = PortSpec {
        vm: "vm1".into(),
        node: String::new(),
        pod: String::new(),
        container_id: String::new(),
        interface: String::new(),
        ..pod.spec.clone()
    };
    vm.status = Some(PortStatus {
        bindings: vec![PortBinding {
            node: "node-1".into(),
            pod: "virt-launcher-vm1-abcde".into(),
            pod_uid: String::new(),
            container_id: "c1".into(),
            interface: "net1".into(),
        }],
        active_node: Some("node-1".into()),
    });
    assert_admitted(&vm, None);

    let either = "a Port names either a vm";
    let mut both = vm.clone();
    both.spec.node = "node-1".into();
    assert_rejected(&both, None, either);
    let mut with_pod = vm.clone();
    with_pod.spec.pod = "web-0".into();
    assert_rejected(&with_pod, None, either);
    let mut neither = pod.clone();
    neither.spec.node = String::new();
    assert_rejected(&neither, None, either);

    let mut moved = pod.clone();
    moved.spec.node = "node-2".into();
    assert_rejected(&moved, Some(&pod), "a Port is immutable");
}

#[test]
fn unknown_fields_are_reported() {
    // A typo in a manifest must not pass unnoticed (kubectl validates
    // strictly; other clients get the field pruned).
    let mut v = serde_json::to_value(mk_fip(fixed("10.0.1.5"))).unwrap();
    v["spec"]["target"]["fixedIp"] = json!("10.0.1.6");
    assert_eq!(
        admit_json(&FloatingIP::crd(), &v, None),
        ["unknown field \"spec.target.fixedIp\""]
    );
}

//! External-network and network-status tests.
use std::collections::BTreeMap;

use serde_json::json;

use super::tests::*;
use super::*;
use crate::api::conditions::{ALLOCATED, READY, TRUE, VALID};

#[test]
fn external_network_attaches_nodes_and_allocates_node_ports() {
    let mut input = mk_input();
    input.external_networks = vec![mk_extnet(
        "ext",
        json!({"nodeSelector": {"matchExpressions": [{"key": "gw", "operator": "In", "values": ["yes"]}]}}),
    ).into()];
    let res = resolve(&input);
    let ports = &res.view.external_networks["ext"].node_ports;
    assert_eq!(
        ports,
        &BTreeMap::from([
            ("n2".into(), ip("203.0.113.100")),
            ("n3".into(), ip("203.0.113.101"))
        ])
    );
    let st = &res.external_networks["ext"];
    assert_eq!(cond(&st.conditions, READY).status, TRUE);
    assert_eq!(
        st.node_ports[0].mac,
        Some(names::external_mac(ip("203.0.113.100")).to_string())
    );
    assert_eq!(st.floating_allocated, Some(0));

    // n2 goes NotReady: keeps its port (no churn); a new node n5 gets .102.
    copy_back(&mut input, &res);
    input.nodes[1].ready = false;
    input.nodes.push(mk_node(5, true, &[("gw", "yes")]));
    let res = resolve(&input);
    let ports = &res.view.external_networks["ext"].node_ports;
    assert_eq!(ports.get("n2"), Some(&ip("203.0.113.100")));
    assert_eq!(ports.get("n5"), Some(&ip("203.0.113.102")));
    // n3 loses the label: its port is released.
    copy_back(&mut input, &res);
    input.nodes[2].labels.clear();
    let res = resolve(&input);
    assert!(!res.view.external_networks["ext"]
        .node_ports
        .contains_key("n3"));
}

#[test]
fn node_port_pool_exhaustion_names_the_nodes_left_out() {
    let mut input = mk_input();
    input.external_networks = vec![mk_extnet(
        "ext",
        json!({"pools": {"nodePorts": ["203.0.113.100-203.0.113.101"]}}),
    )
    .into()];
    let res = resolve(&input);
    let st = &res.external_networks["ext"];
    assert_false(&st.conditions, ALLOCATED, "PoolExhausted");
    assert!(cond(&st.conditions, ALLOCATED).message.contains("n3"));
    assert_eq!(res.view.external_networks["ext"].node_ports.len(), 2);
}

#[test]
fn external_network_validation_reasons() {
    for (extra, reason) in [
        (json!({"cidr": "203.0.113.7/24"}), "InvalidCIDR"),
        (json!({"gateway": "198.51.100.1"}), "GatewayOutsideCIDR"),
        (
            json!({"pools": {"floating": ["198.51.100.0/28"]}}),
            "PoolOutsideCIDR",
        ),
        (
            json!({"pools": {"snat": ["203.0.113.0/28"]}}),
            "PoolContainsGateway",
        ),
        (
            json!({"pools": {"floating": ["203.0.113.10-203.0.113.30"], "snat": ["203.0.113.20-203.0.113.29"]}}),
            "OverlappingPools",
        ),
        (
            json!({"pools": {"floating": ["203.0.113.30-203.0.113.20"]}}),
            "InvalidPool",
        ),
        (
            json!({"attachment": {"bridge": "a", "interface": "b"}}),
            "InvalidAttachment",
        ),
        (
            json!({"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}),
            "InvalidNodeSelector",
        ),
    ] {
        let mut input = mk_input();
        input.external_networks = vec![mk_extnet("ext", extra).into()];
        let res = resolve(&input);
        assert_false(&res.external_networks["ext"].conditions, VALID, reason);
        assert!(res.view.external_networks.is_empty(), "{reason}");
        assert_eq!(
            res.view.routers.len(),
            1,
            "the router does not need a valid network"
        );
    }
}

#[test]
fn external_networks_whose_names_hash_alike_are_refused_but_the_oldest() {
    // FNV-1a 32 of both names is 68b4e79a: they would share `fip-`/`fg-`.
    assert_eq!(names::fnv32("ext-epwu"), names::fnv32("ext-75fa"));
    let mut input = mk_input();
    let mut older = mk_extnet("ext-epwu", json!({}));
    older.metadata.creation_timestamp = input.external_networks[0]
        .metadata
        .creation_timestamp
        .clone()
        .map(|t| {
            let earlier = t.0 - k8s_openapi::jiff::SignedDuration::from_secs(60);
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(earlier)
        });
    input.external_networks = vec![mk_extnet("ext-75fa", json!({})).into(), older.into()];
    let res = resolve(&input);
    assert!(res.view.external_networks.contains_key("ext-epwu"));
    assert!(!res.view.external_networks.contains_key("ext-75fa"));
    let st = &res.external_networks["ext-75fa"];
    assert_false(&st.conditions, VALID, "NameHashCollision");
    assert!(cond(&st.conditions, VALID).message.contains("ext-epwu"));
    assert!(st.node_ports.is_empty());
    assert_eq!(
        cond(&res.external_networks["ext-epwu"].conditions, READY).status,
        TRUE
    );
}

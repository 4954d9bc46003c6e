//! North-south resolution tests: FloatingIPs and SnatGateways.
use serde_json::json;

use super::tests::*;
use super::*;
use crate::api::conditions::{ALLOCATED, READY, SCHEDULED, TRUE, VALID};

fn fixed(ip: &str) -> serde_json::Value {
    json!({"router": "r", "target": {"fixedIP": ip}})
}

fn fip_status<'a>(res: &'a Resolution, name: &str) -> &'a api::FloatingIPStatus {
    &res.floating_ips[&key("tenant-a", name)]
}

fn snat_status<'a>(res: &'a Resolution, name: &str) -> &'a api::SnatGatewayStatus {
    &res.snat_gateways[&key("tenant-a", name)]
}

#[test]
fn floating_ip_on_a_fixed_ip_is_served_by_its_endpoints_node() {
    let mut input = mk_input();
    input.floating_ips = vec![mk_fip("tenant-a", "f", 2, fixed("10.0.1.11")).into()];
    let res = resolve(&input);
    let st = fip_status(&res, "f");
    for t in [VALID, ALLOCATED, SCHEDULED, READY] {
        assert_eq!(
            cond(&st.conditions, t).status,
            TRUE,
            "{t}: {:#?}",
            st.conditions
        );
    }
    assert_eq!(st.address.as_deref(), Some("203.0.113.10"));
    assert_eq!(st.fixed_ip.as_deref(), Some("10.0.1.11"));
    assert_eq!(st.node.as_deref(), Some("n2"));
    let fg = res.view.external_networks["ext"].node_ports["n2"];
    assert_eq!(st.mac, Some(names::external_mac(fg).to_string()));
    let v = &res.view.floating_ips[0];
    assert_eq!(
        (v.address, v.fixed_ip, v.node.as_str(), v.external.as_str()),
        (ip("203.0.113.10"), ip("10.0.1.11"), "n2", "ext")
    );
    assert_eq!(res.external_networks["ext"].floating_allocated, Some(1));
    // The view is what the planner needs: n2 gets the fip namespace.
    let plan = crate::plan::plan_node(&res.view, "n2");
    assert!(plan.namespaces.contains_key(&names::fip_ns("ext")));
    assert!(!crate::plan::plan_node(&res.view, "n1")
        .namespaces
        .contains_key(&names::fip_ns("ext")));
}

#[test]
fn requested_address_outside_the_floating_pool() {
    let mut input = mk_input();
    let mut spec = fixed("10.0.1.10");
    spec["address"] = json!("203.0.113.25"); // in the snat pool
    input.floating_ips = vec![mk_fip("tenant-a", "f", 2, spec).into()];
    let res = resolve(&input);
    let st = fip_status(&res, "f");
    assert_false(&st.conditions, VALID, "AddressOutsidePool");
    assert!(cond(&st.conditions, VALID)
        .message
        .contains("203.0.113.10-203.0.113.19"));
    assert_eq!(st.address, None);
    assert!(res.view.floating_ips.is_empty());
}

#[test]
fn address_in_use_goes_to_the_older_request_even_when_listed_second() {
    let mut input = mk_input();
    let mut spec = fixed("10.0.1.10");
    spec["address"] = json!("203.0.113.15");
    let mut spec2 = fixed("10.0.1.11");
    spec2["address"] = json!("203.0.113.15");
    input.floating_ips = vec![
        mk_fip("tenant-a", "young", 9, spec).into(),
        mk_fip("tenant-a", "old", 2, spec2).into(),
    ];
    let res = resolve(&input);
    assert_eq!(
        fip_status(&res, "old").address.as_deref(),
        Some("203.0.113.15")
    );
    let young = fip_status(&res, "young");
    assert_false(&young.conditions, ALLOCATED, "AddressInUse");
    assert!(cond(&young.conditions, ALLOCATED)
        .message
        .contains("FloatingIP tenant-a/old"));
    assert_eq!(young.address, None);

    // An address held in status beats an older request for it.
    std::sync::Arc::make_mut(&mut input.floating_ips[0]).status = Some(api::FloatingIPStatus {
        address: Some("203.0.113.15".into()),
        ..Default::default()
    });
    let res = resolve(&input);
    assert_eq!(
        fip_status(&res, "young").address.as_deref(),
        Some("203.0.113.15")
    );
    assert_false(
        &fip_status(&res, "old").conditions,
        ALLOCATED,
        "AddressInUse",
    );
}

#[test]
fn floating_and_snat_share_one_address_space() {
    let mut input = mk_input();
    // A SNAT gateway asking for an address a FloatingIP holds.
    input.external_networks = vec![mk_extnet(
        "ext",
        json!({"pools": {"floating": ["203.0.113.10-203.0.113.19"], "snat": [], "nodePorts": ["203.0.113.100/30"]}}),
    ).into()];
    let mut f = mk_fip("tenant-a", "f", 2, fixed("10.0.1.10"));
    f.status = Some(api::FloatingIPStatus {
        address: Some("203.0.113.10".into()),
        ..Default::default()
    });
    input.floating_ips = vec![f.into()];
    input.snat_gateways = vec![mk_snat("tenant-a", "s", 1, json!({"router": "r"})).into()];
    let res = resolve(&input);
    // The snat pool is empty: exhausted, naming the pool.
    let s = snat_status(&res, "s");
    assert_false(&s.conditions, ALLOCATED, "PoolExhausted");
    assert!(cond(&s.conditions, ALLOCATED).message.contains("snat pool"));
    assert!(res.view.snat_gateways.is_empty());
    assert_eq!(
        fip_status(&res, "f").address.as_deref(),
        Some("203.0.113.10")
    );
}

#[test]
fn floating_pool_exhaustion() {
    let mut input = mk_input();
    input.external_networks = vec![mk_extnet(
        "ext",
        json!({"pools": {"floating": ["203.0.113.10/31"], "nodePorts": ["203.0.113.100/30"]}}),
    )
    .into()];
    input.floating_ips = (0..3)
        .map(|i| mk_fip("tenant-a", &format!("f{i}"), i, fixed("10.0.1.10")).into())
        .collect();
    // Distinct targets so only the pool limits them.
    std::sync::Arc::make_mut(&mut input.floating_ips[1])
        .spec
        .target
        .fixed_ip = Some("10.0.1.11".into());
    std::sync::Arc::make_mut(&mut input.floating_ips[2])
        .spec
        .target
        .fixed_ip = Some("10.0.2.10".into());
    let res = resolve(&input);
    assert_eq!(
        fip_status(&res, "f0").address.as_deref(),
        Some("203.0.113.10")
    );
    assert_eq!(
        fip_status(&res, "f1").address.as_deref(),
        Some("203.0.113.11")
    );
    assert_false(
        &fip_status(&res, "f2").conditions,
        ALLOCATED,
        "PoolExhausted",
    );
    assert_eq!(res.external_networks["ext"].floating_allocated, Some(2));
}

#[test]
fn floating_ip_reference_failures() {
    let cases = [
        (
            json!({"router": "nope", "target": {"fixedIP": "10.0.1.10"}}),
            None,
            VALID,
            "RouterNotFound",
        ),
        (
            json!({"router": "r", "externalNetwork": "other", "target": {"fixedIP": "10.0.1.10"}}),
            None,
            VALID,
            "ExternalNetworkMismatch",
        ),
        (fixed("10.0.1.10"), Some(None), VALID, "NoExternalNetwork"),
        (
            fixed("10.0.1.10"),
            Some(Some("nope")),
            VALID,
            "ExternalNetworkNotFound",
        ),
        (fixed("10.0.9.9"), None, VALID, "TargetNotOnRouter"),
    ];
    for (spec, router_ext, type_, reason) in cases {
        let mut input = mk_input();
        if let Some(e) = router_ext {
            std::sync::Arc::make_mut(&mut input.routers[0])
                .spec
                .external_network = e.map(Into::into);
        }
        input.floating_ips = vec![mk_fip("tenant-a", "f", 2, spec).into()];
        let res = resolve(&input);
        assert_false(&fip_status(&res, "f").conditions, type_, reason);
        assert!(res.view.floating_ips.is_empty(), "{reason}");
    }
    // The router exists but is invalid.
    let mut input = mk_input();
    std::sync::Arc::make_mut(&mut input.routers[0]).spec.subnets[1].gateway = "10.0.9.1".into();
    input.floating_ips = vec![mk_fip("tenant-a", "f", 2, fixed("10.0.1.10")).into()];
    let res = resolve(&input);
    let st = fip_status(&res, "f");
    assert_false(&st.conditions, VALID, "RouterNotReady");
    // Its network is known: the address is still allocated.
    assert_eq!(st.address.as_deref(), Some("203.0.113.10"));
}

#[test]
fn namespace_not_allowed_for_floating_ip() {
    let mut input = mk_input();
    std::sync::Arc::make_mut(&mut input.routers[0])
        .spec
        .external_network = None;
    input.external_networks.push(
        mk_extnet(
            "ext2",
            json!({"cidr": "198.51.100.0/24", "gateway": "198.51.100.1",
               "pools": {"floating": ["198.51.100.10/31"]}, "allowedNamespaces": ["other"]}),
        )
        .into(),
    );
    let mut spec = fixed("10.0.1.10");
    spec["externalNetwork"] = json!("ext2");
    input.floating_ips = vec![mk_fip("tenant-a", "f", 2, spec).into()];
    let res = resolve(&input);
    let st = fip_status(&res, "f");
    assert_false(&st.conditions, VALID, "NamespaceNotAllowed");
    assert_false(&st.conditions, ALLOCATED, "NamespaceNotAllowed");
    assert_eq!(st.address, None);
}

#[test]
fn target_without_endpoint_keeps_the_address_but_is_not_served() {
    let mut input = mk_input();
    input.floating_ips = vec![mk_fip("tenant-a", "f", 2, fixed("10.0.1.99")).into()];
    let res = resolve(&input);
    let st = fip_status(&res, "f");
    assert_eq!(cond(&st.conditions, VALID).status, TRUE);
    assert_eq!(cond(&st.conditions, ALLOCATED).status, TRUE);
    assert_false(&st.conditions, SCHEDULED, "TargetNotFound");
    assert_eq!(st.address.as_deref(), Some("203.0.113.10"));
    assert_eq!(st.node, None);
    assert!(res.view.floating_ips.is_empty());
    // The workload appears: same address, now served.
    copy_back(&mut input, &res);
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-a",
        "late",
        Some("n3"),
        &[("tenant-a/net-a", "10.0.1.99", 9)],
    ));
    let res = resolve(&input);
    assert_eq!(
        fip_status(&res, "f").address.as_deref(),
        Some("203.0.113.10")
    );
    assert_eq!(res.view.floating_ips[0].node, "n3");
}

#[test]
fn pod_target_by_name_and_network() {
    let mut input = mk_input();
    // p4 has one address on each subnet: the network picks one.
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-a",
        "p4",
        Some("n3"),
        &[
            ("tenant-a/net-a", "10.0.1.40", 4),
            ("tenant-a/net-b", "10.0.2.40", 5),
        ],
    ));
    input.floating_ips = vec![
        mk_fip(
            "tenant-a",
            "by-net",
            2,
            json!({"router": "r", "target": {"pod": {"name": "p4", "network": "net-b"}}}),
        )
        .into(),
        mk_fip(
            "tenant-a",
            "ambiguous",
            3,
            json!({"router": "r", "target": {"pod": {"name": "p4"}}}),
        )
        .into(),
        mk_fip(
            "tenant-a",
            "single",
            4,
            json!({"router": "r", "target": {"pod": {"name": "p2"}}}),
        )
        .into(),
        mk_fip(
            "tenant-a",
            "gone",
            5,
            json!({"router": "r", "target": {"pod": {"name": "nope"}}}),
        )
        .into(),
    ];
    let res = resolve(&input);
    let st = fip_status(&res, "by-net");
    assert_eq!(
        cond(&st.conditions, READY).status,
        TRUE,
        "{:#?}",
        st.conditions
    );
    assert_eq!(
        (st.fixed_ip.as_deref(), st.node.as_deref()),
        (Some("10.0.2.40"), Some("n3"))
    );
    assert_false(
        &fip_status(&res, "ambiguous").conditions,
        VALID,
        "AmbiguousTarget",
    );
    let single = fip_status(&res, "single");
    assert_eq!(
        (single.fixed_ip.as_deref(), single.node.as_deref()),
        (Some("10.0.2.10"), Some("n2"))
    );
    assert_false(
        &fip_status(&res, "gone").conditions,
        SCHEDULED,
        "TargetNotFound",
    );
    let served: Vec<_> = res
        .view
        .floating_ips
        .iter()
        .map(|f| f.key.name.as_str())
        .collect();
    assert_eq!(served, ["by-net", "single"]);
}

#[test]
fn two_floating_ips_on_one_fixed_ip() {
    let mut input = mk_input();
    input.floating_ips = vec![
        mk_fip("tenant-a", "second", 5, fixed("10.0.1.10")).into(),
        mk_fip(
            "tenant-a",
            "first",
            2,
            json!({"router": "r", "target": {"pod": {"name": "p1"}}}),
        )
        .into(),
    ];
    let res = resolve(&input);
    assert_eq!(
        cond(&fip_status(&res, "first").conditions, READY).status,
        TRUE
    );
    let st = fip_status(&res, "second");
    assert_false(&st.conditions, VALID, "TargetInUse");
    assert!(cond(&st.conditions, VALID)
        .message
        .contains("tenant-a/first"));
    assert_eq!(res.view.floating_ips.len(), 1);
}

#[test]
fn floating_ip_on_a_node_without_gateway_port() {
    let mut input = mk_input();
    input.external_networks = vec![mk_extnet(
        "ext",
        json!({"nodeSelector": {"matchLabels": {"gw": "yes"}}}),
    )
    .into()];
    input.floating_ips = vec![mk_fip("tenant-a", "f", 2, fixed("10.0.1.10")).into()]; // on n1
    let res = resolve(&input);
    let st = fip_status(&res, "f");
    assert_false(&st.conditions, SCHEDULED, "NodeNotAttached");
    assert!(cond(&st.conditions, SCHEDULED).message.contains("n1"));
    assert!(res.view.floating_ips.is_empty());
}

#[test]
fn snat_ports_avoid_gateway_and_endpoints_and_persist() {
    let mut input = mk_input();
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-a",
        "top",
        Some("n1"),
        &[("tenant-a/net-b", "10.0.2.254", 6)],
    ));
    input.snat_gateways = vec![mk_snat(
        "tenant-a",
        "s",
        2,
        json!({"router": "r", "nodeSelector": {"matchLabels": {"gw": "yes"}}}),
    )
    .into()];
    let res = resolve(&input);
    let st = snat_status(&res, "s");
    assert_eq!(
        cond(&st.conditions, READY).status,
        TRUE,
        "{:#?}",
        st.conditions
    );
    assert_eq!(st.address.as_deref(), Some("203.0.113.20"));
    let ports: Vec<_> = st
        .ports
        .iter()
        .map(|p| (p.subnet.as_str(), p.ip.as_str()))
        .collect();
    assert_eq!(ports, [("a", "10.0.1.254"), ("b", "10.0.2.253")]);
    let vni_b = res.view.routers[0].subnets[1].vni;
    assert_eq!(st.ports[1].mac, names::sg_mac(vni_b).to_string());
    // n2 and n3 are eligible, equally loaded: n2 by name.
    assert_eq!(st.active_node.as_deref(), Some("n2"));
    let rs = router_status(&res, "tenant-a");
    // n3 keeps the gateway warm: it carries the router too.
    assert_eq!(rs.nodes, ["n1", "n2", "n3"]);
    assert_eq!(res.external_networks["ext"].snat_allocated, Some(1));
    // The workload at .254 leaves: the port stays at .253 (persisted).
    copy_back(&mut input, &res);
    std::sync::Arc::make_mut(&mut input.pods).retain(|p| p.name != "top");
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").ports[1].ip, "10.0.2.253");
    // A workload takes .253: the port moves to the next free address down.
    copy_back(&mut input, &res);
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-a",
        "squatter",
        Some("n1"),
        &[("tenant-a/net-b", "10.0.2.253", 7)],
    ));
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").ports[1].ip, "10.0.2.254");
}

#[test]
fn snat_fails_over_and_does_not_flap_back() {
    let mut input = mk_input();
    input.snat_gateways = vec![mk_snat(
        "tenant-a",
        "s",
        2,
        json!({"router": "r", "nodeSelector": {"matchLabels": {"gw": "yes"}}}),
    )
    .into()];
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n2"));
    assert_eq!(res.view.snat_gateways[0].node.as_deref(), Some("n2"));

    copy_back(&mut input, &res);
    input.nodes[1].ready = false; // n2
    let res = resolve(&input);
    let st = snat_status(&res, "s");
    assert_eq!(st.active_node.as_deref(), Some("n3"));
    assert_eq!(
        st.address.as_deref(),
        Some("203.0.113.20"),
        "address survives failover"
    );
    assert_eq!(router_status(&res, "tenant-a").nodes, ["n1", "n2", "n3"]);

    copy_back(&mut input, &res);
    input.nodes[1].ready = true;
    let res = resolve(&input);
    assert_eq!(
        snat_status(&res, "s").active_node.as_deref(),
        Some("n3"),
        "no flapping"
    );

    copy_back(&mut input, &res);
    for n in &mut input.nodes {
        n.ready = false;
    }
    let res = resolve(&input);
    let st = snat_status(&res, "s");
    assert_false(&st.conditions, SCHEDULED, "NoEligibleNode");
    assert_eq!(st.active_node, None);
    assert_eq!(cond(&st.conditions, ALLOCATED).status, TRUE);
    assert_eq!(res.view.snat_gateways.len(), 1);
    assert_eq!(res.view.snat_gateways[0].node, None);
}

fn candidates(res: &Resolution, name: &str) -> Vec<(String, bool)> {
    snat_status(res, name)
        .candidates
        .iter()
        .map(|c| (c.node.clone(), c.ineligible_since.is_some()))
        .collect()
}

fn c(v: &[(&str, bool)]) -> Vec<(String, bool)> {
    v.iter().map(|(n, i)| (n.to_string(), *i)).collect()
}

/// Every node eligible (label `gw=yes`) for SnatGateway `tenant-a/s` of
/// router `r`.
fn input_with_snat_on_every_node() -> ClusterInput {
    let mut input = mk_input();
    for n in &mut input.nodes {
        n.labels.insert("gw".into(), "yes".into());
    }
    input.snat_gateways = vec![mk_snat(
        "tenant-a",
        "s",
        2,
        json!({"router": "r", "nodeSelector": {"matchLabels": {"gw": "yes"}}}),
    )
    .into()];
    input
}

#[test]
fn snat_candidates_active_first_kept_through_failover_replaced_after_grace() {
    let mut input = input_with_snat_on_every_node();
    let res = resolve(&input);
    assert_eq!(
        candidates(&res, "s"),
        c(&[("n1", false), ("n2", false), ("n3", false)])
    );
    assert_eq!(res.view.snat_gateways[0].candidates, ["n1", "n2", "n3"]);

    // n1 fails: n2 becomes active and first, n1 stays a candidate (marked).
    copy_back(&mut input, &res);
    input.nodes[0].ready = false;
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n2"));
    assert_eq!(
        candidates(&res, "s"),
        c(&[("n2", false), ("n1", true), ("n3", false)])
    );
    // Back within the grace: no failback, no reshuffle.
    copy_back(&mut input, &res);
    input.nodes[0].ready = true;
    let res = resolve(&input);
    assert_eq!(
        candidates(&res, "s"),
        c(&[("n2", false), ("n1", false), ("n3", false)])
    );
    // Down again, for longer than the grace: replaced (no other node is
    // eligible, so the list shrinks).
    copy_back(&mut input, &res);
    input.nodes[0].ready = false;
    let res = resolve(&input);
    copy_back(&mut input, &res);
    let since = input.now;
    input.now = k8s_openapi::jiff::Timestamp::from_second(
        since.as_second() + super::snat::CANDIDATE_GRACE_SECS - 1,
    )
    .unwrap();
    let res = resolve(&input);
    assert_eq!(candidates(&res, "s").len(), 3, "still within the grace");
    copy_back(&mut input, &res);
    input.now = k8s_openapi::jiff::Timestamp::from_second(
        since.as_second() + super::snat::CANDIDATE_GRACE_SECS,
    )
    .unwrap();
    let res = resolve(&input);
    assert_eq!(candidates(&res, "s"), c(&[("n2", false), ("n3", false)]));
}

#[test]
fn snat_active_node_follows_the_node_that_serves() {
    let mut input = input_with_snat_on_every_node();
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n1"));
    let serve = |input: &mut ClusterInput, node: usize, on: bool| {
        let s = &mut input.nodes[node].serving;
        if on {
            s.insert("tenant-a/s".into());
        } else {
            s.clear();
        }
    };
    // The agents moved it to n3 (n1's upstream failed): the status
    // follows, n3 first, the others in their order (no preemption).
    copy_back(&mut input, &res);
    serve(&mut input, 2, true);
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n3"));
    assert_eq!(
        candidates(&res, "s"),
        c(&[("n3", false), ("n1", false), ("n2", false)])
    );
    assert_eq!(res.view.snat_gateways[0].candidates, ["n3", "n1", "n2"]);
    // Two report (a partition heals, a report lags): the active one stays.
    copy_back(&mut input, &res);
    serve(&mut input, 0, true);
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n3"));
    // Nobody reports (agents restarting): nothing moves.
    copy_back(&mut input, &res);
    serve(&mut input, 0, false);
    serve(&mut input, 2, false);
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n3"));
    // A report from a node that is not eligible counts for nothing.
    copy_back(&mut input, &res);
    input.nodes[1].ready = false;
    serve(&mut input, 1, true);
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n3"));
    // The active node dies and n2 serves in its stead: the controller takes
    // n2 rather than the least loaded eligible node (n1, by name).
    input.nodes[1].ready = true;
    input.nodes[2].ready = false;
    let res = resolve(&input);
    assert_eq!(snat_status(&res, "s").active_node.as_deref(), Some("n2"));
}

#[test]
fn snat_spreads_over_eligible_nodes() {
    let mut input = mk_input();
    input.routers.push(mk_std_router("tenant-b", 2).into());
    input.snat_gateways = vec![
        mk_snat(
            "tenant-a",
            "s",
            3,
            json!({"router": "r", "nodeSelector": {"matchLabels": {"gw": "yes"}}}),
        )
        .into(),
        mk_snat(
            "tenant-b",
            "s",
            4,
            json!({"router": "r", "nodeSelector": {"matchLabels": {"gw": "yes"}}}),
        )
        .into(),
    ];
    let res = resolve(&input);
    let nodes: Vec<_> = res
        .view
        .snat_gateways
        .iter()
        .map(|s| s.node.clone().unwrap())
        .collect();
    assert_eq!(nodes, ["n2", "n3"]);
}

#[test]
fn one_snat_gateway_per_router() {
    let mut input = mk_input();
    input.snat_gateways = vec![
        mk_snat("tenant-a", "late", 5, json!({"router": "r"})).into(),
        mk_snat("tenant-a", "early", 2, json!({"router": "r"})).into(),
    ];
    let res = resolve(&input);
    let late = snat_status(&res, "late");
    assert_false(&late.conditions, VALID, "DuplicateSnatGateway");
    assert!(cond(&late.conditions, VALID)
        .message
        .contains("tenant-a/early"));
    assert_eq!(late.address, None);
    assert_eq!(
        cond(&snat_status(&res, "early").conditions, READY).status,
        TRUE
    );
    let keys: Vec<_> = res
        .view
        .snat_gateways
        .iter()
        .map(|s| s.key.name.as_str())
        .collect();
    assert_eq!(keys, ["early"]);
}

#[test]
fn snat_reference_failures() {
    let mut input = mk_input();
    input.snat_gateways = vec![
        mk_snat("tenant-a", "s1", 2, json!({"router": "nope"})).into(),
        mk_snat(
            "tenant-a",
            "s2",
            3,
            json!({"router": "r", "address": "203.0.113.10"}),
        )
        .into(),
    ];
    let res = resolve(&input);
    assert_false(&snat_status(&res, "s1").conditions, VALID, "RouterNotFound");
    assert_false(
        &snat_status(&res, "s2").conditions,
        VALID,
        "AddressOutsidePool",
    );
    assert!(res.view.snat_gateways.is_empty());
}

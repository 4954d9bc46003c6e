//! Resolution of the service kinds: what they put in the view, and what a
//! hostile or careless tenant's input does (a condition on that object,
//! nothing programmed, nobody else disturbed).
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::tests::*;
use super::*;
use crate::api::conditions::{ALLOCATED, READY, SCHEDULED, TRUE, VALID};
use crate::api::{LoadBalancer, PortForwarding, RouterFirewall};

fn mk_fw(ns: &str, name: &str, created: i64, spec: Value) -> RouterFirewall {
    obj("RouterFirewall", meta(Some(ns), name, created), spec)
}
fn mk_pf(ns: &str, name: &str, created: i64, spec: Value) -> PortForwarding {
    obj("PortForwarding", meta(Some(ns), name, created), spec)
}
fn mk_lb(ns: &str, name: &str, created: i64, spec: Value) -> LoadBalancer {
    obj("LoadBalancer", meta(Some(ns), name, created), spec)
}

fn forward(port: u16, target: Value) -> Value {
    json!({"protocol": "TCP", "externalPorts": {"port": port}, "internalPort": 22, "target": target})
}

/// [`mk_input`] with a SNAT gateway (on n2/n3), a floating IP for p1, a
/// firewall, a forward to p3, and a load balancer over pods labelled
/// app=web (p1, p3).
fn input() -> ClusterInput {
    let mut i = mk_input();
    i.snat_gateways.push(
        mk_snat(
            "tenant-a",
            "gw",
            2,
            json!({"router": "r", "nodeSelector": {"matchLabels": {"gw": "yes"}}}),
        )
        .into(),
    );
    i.floating_ips.push(
        mk_fip(
            "tenant-a",
            "f1",
            3,
            json!({"router": "r", "target": {"pod": {"name": "p1"}}}),
        )
        .into(),
    );
    i.objects.firewalls.push(mk_fw(
        "tenant-a",
        "fw",
        4,
        json!({"router": "r", "defaultAction": "Deny",
               "ingress": [{"action": "Allow", "protocol": "TCP", "ports": [{"port": 22}], "cidrs": ["198.51.100.0/24"]}],
               "egress": [{"action": "Allow"}]}),
    ).into());
    i.objects.port_forwardings.push(
        mk_pf(
            "tenant-a",
            "ssh",
            5,
            json!({"router": "r", "forwards": [forward(2222, json!({"pod": {"name": "p3"}}))]}),
        )
        .into(),
    );
    i.objects.load_balancers.push(
        mk_lb(
            "tenant-a",
            "web",
            6,
            json!({"router": "r", "ports": [{"port": 80, "targetPort": 8080}],
               "backends": {"selector": {"matchLabels": {"app": "web"}}}}),
        )
        .into(),
    );
    let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
    i.pod_labels = Some(BTreeMap::from([
        (key("tenant-a", "p1"), web.clone()),
        (key("tenant-a", "p2"), BTreeMap::new()),
        (key("tenant-a", "p3"), web.clone()),
        // Another namespace's pod with the same labels: never a backend.
        (key("tenant-b", "p9"), web),
    ]));
    i
}

fn ready(conds: &[crate::api::Condition]) -> bool {
    cond(conds, READY).status == TRUE
}

#[test]
fn services_resolve_into_the_view_and_resolving_again_changes_nothing() {
    let mut i = input();
    let res = resolve(&i);
    let v = &res.view;
    let snat = &v.snat_gateways[0];

    assert_eq!(v.firewalls.len(), 1);
    let fw = &v.firewalls[0];
    assert!(!fw.default_allow);
    assert_eq!(fw.ingress[0].ports, [(22, 22)]);
    assert_eq!(fw.ingress[0].cidrs, ["198.51.100.0/24".parse().unwrap()]);
    let st = &res.firewalls[&key("tenant-a", "fw")];
    assert!(ready(&st.conditions), "{st:#?}");
    // Enforced where the floating IP is served (p1 on n1) and on the
    // gateway's candidates.
    let mut want: Vec<String> = snat.candidates.clone();
    want.push("n1".into());
    want.sort();
    assert_eq!(st.nodes, want);

    let pf = &v.port_forwardings[0];
    assert_eq!((pf.address, pf.dedicated), (snat.address, false));
    assert_eq!(pf.forwards[0].fixed_ip, ip("10.0.1.11"));
    let st = &res.port_forwardings[&key("tenant-a", "ssh")];
    assert!(ready(&st.conditions), "{st:#?}");
    assert_eq!(st.node, snat.node);

    let lb = &v.load_balancers[0];
    assert_eq!(lb.backends, [ip("10.0.1.10"), ip("10.0.1.11")]);
    assert_eq!(lb.ports, [("tcp".to_string(), 80, 8080)]);
    assert_eq!(lb.health.ports, [8080]);
    // From the floating pool, not the floating IP's address.
    let fip = v.floating_ips[0].address;
    assert!(lb.address != fip && (ip("203.0.113.10")..=ip("203.0.113.19")).contains(&lb.address));
    let st = &res.load_balancers[&key("tenant-a", "web")];
    assert!(ready(&st.conditions), "{st:#?}");
    assert_eq!(st.healthy.as_deref(), Some("2/2"));
    assert_eq!(
        st.backends
            .iter()
            .map(|b| b.pod.as_deref())
            .collect::<Vec<_>>(),
        [Some("p1"), Some("p3")]
    );

    // The controller writes the statuses; resolving again keeps them.
    copy_back(&mut i, &res);
    let again = resolve(&i);
    assert_eq!(again.view, res.view);
    assert_eq!(again.load_balancers, res.load_balancers);
    assert_eq!(again.port_forwardings, res.port_forwardings);

    // An agent has no pod labels: the selected pods come from the status,
    // and it plans the same view.
    i.pod_labels = None;
    assert_eq!(resolve(&i).view, res.view);
}

#[test]
fn a_backend_the_serving_node_reports_down_shows_in_the_status_only() {
    let mut i = input();
    let res = resolve(&i);
    let node = res.load_balancers[&key("tenant-a", "web")]
        .node
        .clone()
        .unwrap();
    copy_back(&mut i, &res);
    for n in i.nodes.iter_mut().filter(|n| n.name == node) {
        n.lb_down.insert("tenant-a/web=10.0.1.11".into());
    }
    let after = resolve(&i);
    let st = &after.load_balancers[&key("tenant-a", "web")];
    assert_eq!(st.healthy.as_deref(), Some("1/2"));
    assert!(!st.backends[1].healthy && st.backends[0].healthy);
    assert_false_only(&st.conditions, BACKENDS_HEALTHY, "BackendsDown");
    assert!(ready(&st.conditions), "health does not make it unready");
    // The view (what every node plans) does not change with health.
    assert_eq!(after.view, res.view);
}

/// `type_` False with `reason`, whatever `Ready` says.
fn assert_false_only(conds: &[crate::api::Condition], type_: &str, reason: &str) {
    let c = cond(conds, type_);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reason),
        "{c:#?}"
    );
    assert!(!c.message.is_empty());
}

#[test]
fn hostile_service_input_is_refused_on_its_own_object_only() {
    // A settled cluster: statuses written, allocations held.
    let mut i = input();
    let first = resolve(&i);
    copy_back(&mut i, &first);
    let good = resolve(&i);
    // A forward to the floating IP's target: its replies would leave
    // through the floating-IP path.
    i.objects.port_forwardings.push(
        mk_pf(
            "tenant-a",
            "to-fip",
            10,
            json!({"router": "r", "forwards": [forward(3000, json!({"fixedIP": "10.0.1.10"}))]}),
        )
        .into(),
    );
    // A port another PortForwarding already forwards on the SNAT address.
    i.objects.port_forwardings.push(
        mk_pf(
            "tenant-a",
            "late",
            11,
            json!({"router": "r", "forwards": [forward(2222, json!({"fixedIP": "10.0.2.10"}))]}),
        )
        .into(),
    );
    // The floating IP's address as a dedicated address.
    let fip = good.view.floating_ips[0].address.to_string();
    i.objects.port_forwardings.push(
        mk_pf(
            "tenant-a",
            "steal",
            12,
            json!({"router": "r", "dedicatedAddress": true, "address": fip,
               "forwards": [forward(4000, json!({"fixedIP": "10.0.2.10"}))]}),
        )
        .into(),
    );
    // Another tenant naming tenant-a's router: it names its own namespace's.
    i.objects.port_forwardings.push(
        mk_pf(
            "tenant-b",
            "cross",
            13,
            json!({"router": "r", "forwards": [forward(5000, json!({"fixedIP": "10.0.1.11"}))]}),
        )
        .into(),
    );
    // A second firewall, and one with a rule that is not canonical.
    i.objects
        .firewalls
        .push(mk_fw("tenant-a", "fw2", 14, json!({"router": "r"})).into());
    // A VIP on a workload's address, and a backend off the router.
    i.objects.load_balancers.push(
        mk_lb(
            "tenant-a",
            "on-p1",
            15,
            json!({"router": "r", "subnet": "a", "address": "10.0.1.10",
               "ports": [{"port": 80}], "backends": {"fixedIPs": ["10.0.2.10"]}}),
        )
        .into(),
    );
    i.objects.load_balancers.push(mk_lb(
        "tenant-a",
        "off-router",
        16,
        json!({"router": "r", "ports": [{"port": 80}], "backends": {"fixedIPs": ["192.0.2.1"]}}),
    ).into());
    let res = resolve(&i);
    let pf = |n: &str| &res.port_forwardings[&key("tenant-a", n)].conditions;
    assert_false(pf("to-fip"), VALID, "TargetHasFloatingIP");
    assert_false(pf("late"), VALID, "PortInUse");
    assert_false(pf("steal"), ALLOCATED, "AddressInUse");
    assert_false(
        &res.port_forwardings[&key("tenant-b", "cross")].conditions,
        VALID,
        "RouterNotFound",
    );
    assert_false(
        &res.firewalls[&key("tenant-a", "fw2")].conditions,
        VALID,
        "DuplicateFirewall",
    );
    let lb = |n: &str| &res.load_balancers[&key("tenant-a", n)].conditions;
    assert_false(lb("on-p1"), ALLOCATED, "AddressInUse");
    assert_false(lb("off-router"), VALID, "InvalidBackend");
    assert_eq!(cond(pf("late"), SCHEDULED).reason, "NotValid");
    // None of them is in the view; everything that was is, unchanged.
    assert_eq!(res.view, good.view);
    for (k, st) in &good.port_forwardings {
        assert_eq!(&res.port_forwardings[k], st);
    }
    assert_eq!(
        res.load_balancers[&key("tenant-a", "web")],
        good.load_balancers[&key("tenant-a", "web")]
    );
}

#[test]
fn bad_rules_and_missing_gateways_are_named() {
    let mut i = input();
    i.objects.firewalls[0] = mk_fw(
        "tenant-a",
        "fw",
        4,
        json!({"router": "r", "ingress": [{"name": "sloppy", "action": "Allow", "cidrs": ["10.0.0.1/24"]}]}),
    ).into();
    // No SnatGateway: nothing central can run.
    i.snat_gateways.clear();
    let res = resolve(&i);
    let fw = &res.firewalls[&key("tenant-a", "fw")];
    assert_false(&fw.conditions, VALID, "InvalidRule");
    assert!(cond(&fw.conditions, VALID).message.contains("sloppy"));
    assert!(fw.nodes.is_empty());
    assert_false(
        &res.port_forwardings[&key("tenant-a", "ssh")].conditions,
        VALID,
        "NoSnatGateway",
    );
    assert_false(
        &res.load_balancers[&key("tenant-a", "web")].conditions,
        VALID,
        "NoSnatGateway",
    );
    assert!(res.view.firewalls.is_empty() && res.view.port_forwardings.is_empty());
    assert!(res.view.load_balancers.is_empty());
    // The floating IP does not depend on them.
    assert_eq!(res.view.floating_ips.len(), 1);
}

#[test]
fn a_subnet_vip_avoids_the_gateway_port_and_endpoints() {
    let mut i = input();
    i.objects.load_balancers.push(mk_lb(
        "tenant-a",
        "inner",
        7,
        json!({"router": "r", "subnet": "a", "ports": [{"port": 80}], "backends": {"fixedIPs": ["10.0.1.11"]}}),
    ).into());
    let res = resolve(&i);
    let lb = res
        .view
        .load_balancers
        .iter()
        .find(|l| l.key.name == "inner")
        .unwrap();
    let port = res.view.snat_gateways[0].port_on("a").unwrap().ip;
    assert_eq!(port, ip("10.0.1.254"));
    assert_eq!(
        lb.address,
        ip("10.0.1.253"),
        "the highest free address under the port"
    );
    assert_eq!(lb.subnet.as_deref(), Some("a"));
}

#[test]
fn an_agent_plans_a_selecting_load_balancer_only_once_the_controller_accepted_it() {
    // No status yet: the controller will decide; an agent (no pod labels)
    // plans nothing of it, and allocates nothing.
    let mut i = input();
    i.pod_labels = None;
    let res = resolve(&i);
    assert!(res.view.load_balancers.is_empty());
    assert_false(
        &res.load_balancers[&key("tenant-a", "web")].conditions,
        VALID,
        "SelectorNotResolved",
    );
    // Refused by the controller (a selected pod with two addresses on the
    // router and no backends.network): refused by the agent too.
    let mut i = input();
    std::sync::Arc::make_mut(&mut i.pods)[2]
        .networks
        .push(super::PodNetwork {
            network: "tenant-a/net-b".into(),
            interface: Some("net2".into()),
            ip: ip("10.0.2.11"),
            mac: crate::plan::model::MacAddr([2, 0, 0, 0, 1, 3]),
            standby: false,
        });
    let res = resolve(&i);
    assert_false(
        &res.load_balancers[&key("tenant-a", "web")].conditions,
        VALID,
        "InvalidBackend",
    );
    copy_back(&mut i, &res);
    i.pod_labels = None;
    let agent = resolve(&i);
    assert_eq!(agent.view, res.view);
    assert!(agent.view.load_balancers.is_empty());
}

#[test]
fn limits_and_duplicates_are_refused_and_sets_are_canonical() {
    let mut i = input();
    let many: Vec<String> = (2..=200)
        .map(|h| format!("10.0.1.{h}"))
        .chain((2..=100).map(|h| format!("10.0.2.{h}")))
        .collect();
    i.objects.load_balancers.push(
        mk_lb(
            "tenant-a",
            "huge",
            7,
            json!({"router": "r", "ports": [{"port": 80}], "backends": {"fixedIPs": many}}),
        )
        .into(),
    );
    i.objects.load_balancers.push(
        mk_lb(
            "tenant-a",
            "twice",
            8,
            json!({"router": "r", "ports": [{"port": 80}, {"port": 80, "targetPort": 81}],
               "backends": {"fixedIPs": ["10.0.1.11"]}}),
        )
        .into(),
    );
    // An invalid firewall does not keep a valid one of the same router out.
    i.objects.firewalls[0] = mk_fw(
        "tenant-a",
        "fw",
        4,
        json!({"router": "r", "ingress": [{"action": "Allow", "cidrs": ["10.0.0.1/24"]}]}),
    )
    .into();
    i.objects.firewalls.push(
        mk_fw(
            "tenant-a",
            "fw2",
            20,
            json!({"router": "r", "ingress": [{"action": "Allow", "protocol": "TCP",
               "ports": [{"port": 90, "endPort": 100}, {"port": 80, "endPort": 95}, {"port": 101}],
               "cidrs": ["198.51.100.0/25", "198.51.100.0/24", "198.51.100.128/25"]}]}),
        )
        .into(),
    );
    let res = resolve(&i);
    let lb = |n: &str| &res.load_balancers[&key("tenant-a", n)].conditions;
    assert_false(lb("huge"), VALID, "TooManyBackends");
    assert_false(lb("twice"), VALID, "DuplicatePort");
    assert_false(
        &res.firewalls[&key("tenant-a", "fw")].conditions,
        VALID,
        "InvalidRule",
    );
    assert!(ready(&res.firewalls[&key("tenant-a", "fw2")].conditions));
    let rule = &res.view.firewalls[0].ingress[0];
    assert_eq!(
        rule.ports,
        [(80, 101)],
        "merged: nft refuses overlapping intervals"
    );
    assert_eq!(rule.cidrs, ["198.51.100.0/24".parse().unwrap()]);
}

#[test]
fn the_snat_port_never_takes_a_subnet_vip() {
    let mut i = input();
    // The address the gateway's port on subnet a would take.
    i.objects.load_balancers.push(
        mk_lb(
            "tenant-a",
            "inner",
            7,
            json!({"router": "r", "subnet": "a", "address": "10.0.1.254",
               "ports": [{"port": 80}], "backends": {"fixedIPs": ["10.0.1.11"]}}),
        )
        .into(),
    );
    let res = resolve(&i);
    assert_eq!(
        res.view.snat_gateways[0].port_on("a").unwrap().ip,
        ip("10.0.1.253")
    );
    let lb = res
        .view
        .load_balancers
        .iter()
        .find(|l| l.key.name == "inner")
        .unwrap();
    assert_eq!(lb.address, ip("10.0.1.254"));
}

//! Planner tests of the service kinds: where each part goes.
use std::collections::BTreeSet;

use super::model::*;
use super::names;
use super::node::{plan_node, plan_node_run, Down, Serving};
use super::tests::{ip, mk_north_south, mk_view};
use super::view::*;

fn rule(allow: bool, proto: &str, port: u16) -> FirewallRuleView {
    FirewallRuleView {
        allow,
        protocol: Some(proto.into()),
        ports: vec![(port, port)],
        cidrs: vec!["198.51.100.0/24".parse().unwrap()],
    }
}

/// tenant-a with a floating IP on n1, its gateway on n3, a firewall, a
/// forward on the SNAT address, a dedicated one, an external VIP and a
/// subnet VIP.
fn view() -> ClusterView {
    let mut v = mk_view();
    mk_north_south(&mut v);
    let router = ObjectKey::new("tenant-a", "r");
    v.firewalls.push(FirewallView {
        key: ObjectKey::new("tenant-a", "fw"),
        router: router.clone(),
        default_allow: false,
        ingress: vec![rule(true, "tcp", 22)],
        egress: vec![rule(false, "udp", 53)],
    });
    let fwd = |name: &str, address: &str, dedicated: bool, ports: (u16, u16)| ForwardingView {
        key: ObjectKey::new("tenant-a", name),
        router: router.clone(),
        address: ip(address),
        dedicated,
        forwards: vec![ForwardEntry {
            protocol: "tcp".into(),
            external: ports,
            fixed_ip: ip("10.0.2.10"),
            internal: 7000,
        }],
    };
    v.port_forwardings
        .push(fwd("snat", "203.0.113.50", false, (8080, 8080)));
    v.port_forwardings
        .push(fwd("own", "203.0.113.150", true, (9000, 9002)));
    let lb = |name: &str, address: &str, subnet: Option<&str>| LoadBalancerView {
        key: ObjectKey::new("tenant-a", name),
        router: router.clone(),
        address: ip(address),
        subnet: subnet.map(Into::into),
        ports: vec![("tcp".into(), 80, 7777)],
        backends: vec![ip("10.0.1.11"), ip("10.0.2.10")],
        client_affinity: name == "inner",
        health: HealthView {
            interval_ms: 1000,
            timeout_ms: 1000,
            rise: 2,
            fall: 2,
            ports: vec![7777],
        },
    };
    v.load_balancers.push(lb("web", "203.0.113.120", None));
    v.load_balancers.push(lb("inner", "10.0.1.253", Some("a")));
    v
}

fn gateway(st: &NodeState) -> &NsState {
    &st.namespaces[&names::snat_ns(0)]
}

#[test]
fn the_firewall_is_on_the_floating_ip_path_and_the_gateway_only() {
    let mut v = view();
    // Several values: an anonymous set.
    v.firewalls[0].egress.push(FirewallRuleView {
        allow: true,
        protocol: Some("tcp".into()),
        ports: vec![(80, 80), (8000, 8080)],
        cidrs: vec![
            "198.51.100.0/24".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ],
    });
    // n1 serves the floating IP: its router namespace filters on rfp-.
    let n1 = plan_node(&v, "n1");
    let t = n1.namespaces[&names::qrouter_ns(0)].nft.as_ref().unwrap();
    let fwd = &t.chains["forward"];
    assert_eq!(fwd.base.as_ref().unwrap().hook, "forward");
    assert_eq!(
        fwd.rules,
        [
            "ct direction reply accept",
            "ct state related accept",
            "iifname \"rfp-*\" jump fw_in",
            "oifname \"rfp-*\" jump fw_out",
        ]
    );
    assert_eq!(
        t.chains["fw_in"].rules,
        [
            "meta l4proto tcp th dport 22 ip saddr 198.51.100.0/24 accept",
            "drop"
        ]
    );
    assert_eq!(
        t.chains["fw_out"].rules,
        [
            "meta l4proto udp th dport 53 ip daddr 198.51.100.0/24 drop",
            "meta l4proto tcp th dport { 80, 8000-8080 } ip daddr { 198.51.100.0/24, 203.0.113.0/24 } accept",
            "drop"
        ]
    );
    // n2 hosts the router but serves no floating IP: nothing to filter
    // (its traffic north goes through the gateway).
    let n2 = plan_node(&v, "n2");
    assert!(n2.namespaces[&names::qrouter_ns(0)].nft.is_none());
    // The gateway filters on its external port.
    let n3 = plan_node(&v, "n3");
    let g = gateway(&n3).nft.as_ref().unwrap();
    let qg = names::qg(0);
    assert!(g.chains["forward"]
        .rules
        .contains(&format!("iifname \"{qg}\" jump fw_in")));
    assert_eq!(g.chains["fw_in"], t.chains["fw_in"]);
    // tenant-b (same CIDRs, on n1) is untouched.
    assert!(n1.namespaces[&names::qrouter_ns(1)].nft.is_none());
}

#[test]
fn forwards_are_map_elements_and_own_addresses_sit_on_the_gateway_ports() {
    let n3 = plan_node(&view(), "n3");
    let g = gateway(&n3);
    let t = g.nft.as_ref().unwrap();
    let map = &t.sets[names::PF_DNAT_MAP];
    let elements: Vec<(&str, &str)> = (map.elements.iter())
        .map(|(k, v)| (k.as_str(), v.as_deref().unwrap()))
        .collect();
    assert_eq!(
        elements,
        [
            ("203.0.113.150 . tcp . 9000", "10.0.2.10 . 7000"),
            ("203.0.113.150 . tcp . 9001", "10.0.2.10 . 7001"),
            ("203.0.113.150 . tcp . 9002", "10.0.2.10 . 7002"),
            ("203.0.113.50 . tcp . 8080", "10.0.2.10 . 7000"),
        ]
    );
    let pre = &t.chains["prerouting"].rules;
    assert!(pre.contains(&"dnat ip to ip daddr . meta l4proto . th dport map @pf_dnat".to_string()));
    // Hairpin and load-balanced flows leave into a subnet with the
    // gateway's port address; default SNAT stays last.
    let post = &t.chains["postrouting"].rules;
    let sg_a = names::sg(4096);
    assert!(post.contains(&format!(
        "iifname \"sg-*\" oifname \"{sg_a}\" ct status dnat snat to 10.0.1.254"
    )));
    assert!(post.contains(&format!(
        "oifname \"{sg_a}\" ct mark 0x20 snat to 10.0.1.254"
    )));
    assert_eq!(
        post.last().unwrap(),
        &format!("oifname \"{}\" snat to 203.0.113.50", names::qg(0))
    );
    // The dedicated address and the external VIP on qg-, the subnet VIP on
    // its sg-, as /32s; not the SNAT address twice.
    let on = |link: &str| -> BTreeSet<String> {
        (g.addresses.iter())
            .filter(|a| a.link == link)
            .map(|a| a.addr.to_string())
            .collect()
    };
    assert_eq!(
        on(&names::qg(0)),
        BTreeSet::from(
            ["203.0.113.50/24", "203.0.113.150/32", "203.0.113.120/32"].map(String::from)
        )
    );
    assert!(on(&sg_a).contains("10.0.1.253/32"));
    // Every router namespace knows the subnet VIP lives on the sg- port.
    let n2 = plan_node(&view(), "n2");
    let q = &n2.namespaces[&names::qrouter_ns(0)];
    assert!(q.neighbours.contains(&Neighbour {
        link: names::qr(4096),
        ip: ip("10.0.1.253"),
        mac: names::sg_mac(4096),
    }));
}

#[test]
fn balancers_spread_over_the_healthy_backends_only() {
    let v = view();
    let lb_rules = |st: &NodeState| -> Vec<String> {
        (gateway(st).nft.as_ref().unwrap().chains["prerouting"]
            .rules
            .iter())
        .filter(|r| r.contains("ct mark set"))
        .cloned()
        .collect()
    };
    let all = plan_node(&v, "n3");
    assert_eq!(
        lb_rules(&all),
        [
            "ip daddr 203.0.113.120 meta l4proto tcp th dport 80 ct mark set 0x20 dnat ip to numgen random mod 2 map { 0 : 10.0.1.11 . 7777, 1 : 10.0.2.10 . 7777 }",
            "ip daddr 10.0.1.253 meta l4proto tcp th dport 80 ct mark set 0x20 dnat ip to jhash ip saddr mod 2 map { 0 : 10.0.1.11 . 7777, 1 : 10.0.2.10 . 7777 }",
        ]
    );
    // One backend found failing on the serving node: out of web only.
    let mut down = Down::new();
    down.insert(
        ObjectKey::new("tenant-a", "web"),
        BTreeSet::from([ip("10.0.2.10")]),
    );
    let one = plan_node_run(&v, "n3", &Serving::new(), &down);
    assert_eq!(
        lb_rules(&one)[0],
        "ip daddr 203.0.113.120 meta l4proto tcp th dport 80 ct mark set 0x20 dnat ip to numgen random mod 1 map { 0 : 10.0.1.11 . 7777 }"
    );
    assert_eq!(lb_rules(&one)[1], lb_rules(&all)[1]);
    // All down: no rule (the VIP refuses connections); the rest stays.
    down.insert(
        ObjectKey::new("tenant-a", "web"),
        BTreeSet::from([ip("10.0.1.11"), ip("10.0.2.10")]),
    );
    let none = plan_node_run(&v, "n3", &Serving::new(), &down);
    assert_eq!(lb_rules(&none), [lb_rules(&all)[1].clone()]);
    // Health is run-time state: the plan the digest is computed from is
    // the one without it.
    assert_eq!(plan_node(&v, "n3"), all);
}

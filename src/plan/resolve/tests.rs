//! Resolution tests: API objects built with tiny `mk_*` helpers (JSON →
//! typed, as the API server would hand them over). North-south tests are in
//! `tests_ns.rs`.
use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::*;
use crate::api::conditions::{ALLOCATED, FALSE, READY, TRUE, VALID};
use crate::api::{DistributedRouter, ExternalNetwork, FloatingIP, PerKind, SnatGateway};
use crate::plan::model::MacAddr;

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

pub(super) fn meta(ns: Option<&str>, name: &str, created: i64) -> Value {
    let ts = Timestamp::from_second(1_700_000_000 + created).unwrap();
    let mut m = json!({"name": name, "generation": 1, "creationTimestamp": ts.to_string()});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

pub(super) fn obj<T: serde::de::DeserializeOwned>(kind: &str, meta: Value, spec: Value) -> T {
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// `ext`: 203.0.113.0/24, floating .10-.19, snat .20-.29, node ports
/// .100-.109; `extra` is merged into the spec.
pub(super) fn mk_extnet(name: &str, extra: Value) -> ExternalNetwork {
    let mut spec = json!({
        "cidr": "203.0.113.0/24", "gateway": "203.0.113.1",
        "pools": {
            "floating": ["203.0.113.10-203.0.113.19"],
            "snat": ["203.0.113.20-203.0.113.29"],
            "nodePorts": ["203.0.113.100-203.0.113.109"],
        },
        "attachment": {"bridge": "br-ex"},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    obj("ExternalNetwork", meta(None, name, 0), spec)
}

/// Subnets `(name, cidr, gateway, nad)`.
pub(super) fn mk_router(
    ns: &str,
    name: &str,
    created: i64,
    ext: Option<&str>,
    subnets: &[(&str, &str, &str, &str)],
) -> DistributedRouter {
    let subnets: Vec<Value> = subnets
        .iter()
        .map(|(n, c, g, nad)| json!({"name": n, "cidr": c, "gateway": g, "networkAttachment": nad}))
        .collect();
    let mut spec = json!({"subnets": subnets});
    if let Some(e) = ext {
        spec["externalNetwork"] = json!(e);
    }
    obj("DistributedRouter", meta(Some(ns), name, created), spec)
}

/// The usual two-subnet router `r` in `ns`, on external network `ext`.
pub(super) fn mk_std_router(ns: &str, created: i64) -> DistributedRouter {
    mk_router(
        ns,
        "r",
        created,
        Some("ext"),
        &[
            ("a", "10.0.1.0/24", "10.0.1.1", "net-a"),
            ("b", "10.0.2.0/24", "10.0.2.1", "net-b"),
        ],
    )
}

pub(super) fn mk_fip(ns: &str, name: &str, created: i64, spec: Value) -> FloatingIP {
    obj("FloatingIP", meta(Some(ns), name, created), spec)
}

pub(super) fn mk_snat(ns: &str, name: &str, created: i64, spec: Value) -> SnatGateway {
    obj("SnatGateway", meta(Some(ns), name, created), spec)
}

/// Networks `(nad, ip, last MAC byte)`.
pub(super) fn mk_pod(
    ns: &str,
    name: &str,
    node: Option<&str>,
    nets: &[(&str, &str, u8)],
) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        node: node.map(Into::into),
        networks: nets
            .iter()
            .map(|(nad, a, m)| PodNetwork {
                network: nad.to_string(),
                interface: Some("net1".into()),
                ip: ip(a),
                mac: MacAddr([0x02, 0, 0, 0, 0, *m]),
                standby: false,
            })
            .collect(),
    }
}

/// Node `n<i>` with VTEP 198.18.0.<i>.
pub(super) fn mk_node(i: u8, ready: bool, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        name: format!("n{i}"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        vtep: Some(Ipv4Addr::new(198, 18, 0, i)),
        ready,
        serving: Default::default(),
        lb_down: Default::default(),
    }
}

/// Three ready nodes (n2 and n3 labelled `gw=yes`), external network `ext`,
/// router tenant-a/r and three pods: p1 (n1, a), p2 (n2, b), p3 (n2, a).
pub(super) fn mk_input() -> ClusterInput {
    ClusterInput {
        objects: PerKind {
            external_networks: vec![mk_extnet("ext", json!({})).into()],
            routers: vec![mk_std_router("tenant-a", 1).into()],
            ..Default::default()
        },
        nodes: vec![
            mk_node(1, true, &[]),
            mk_node(2, true, &[("gw", "yes")]),
            mk_node(3, true, &[("gw", "yes")]),
        ],
        pods: vec![
            mk_pod(
                "tenant-a",
                "p1",
                Some("n1"),
                &[("tenant-a/net-a", "10.0.1.10", 1)],
            ),
            mk_pod(
                "tenant-a",
                "p2",
                Some("n2"),
                &[("tenant-a/net-b", "10.0.2.10", 2)],
            ),
            mk_pod(
                "tenant-a",
                "p3",
                Some("n2"),
                &[("tenant-a/net-a", "10.0.1.11", 3)],
            ),
        ]
        .into(),
        now: Timestamp::from_second(1_800_000_000).unwrap(),
        ..Default::default()
    }
}

/// Through JSON, as a status takes through the API server.
fn stored<T: serde::Serialize + serde::de::DeserializeOwned>(status: Option<&T>) -> Option<T> {
    status.map(|s| serde_json::from_value(serde_json::to_value(s).unwrap()).unwrap())
}

/// Write every computed status back into its object, as the controller
/// would (through JSON).
pub(super) fn copy_back(input: &mut ClusterInput, res: &Resolution) {
    // The controller persists the cursors too.
    input.cursors = Some(res.cursors);
    let k = |m: &kube::api::ObjectMeta| {
        key(
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap(),
        )
    };
    for r in &mut input.routers {
        std::sync::Arc::make_mut(r).status = stored(res.routers.get(&k(&r.metadata)));
    }
    for f in &mut input.floating_ips {
        std::sync::Arc::make_mut(f).status = stored(res.floating_ips.get(&k(&f.metadata)));
    }
    for s in &mut input.snat_gateways {
        std::sync::Arc::make_mut(s).status = stored(res.snat_gateways.get(&k(&s.metadata)));
    }
    for f in &mut input.objects.firewalls {
        std::sync::Arc::make_mut(f).status = stored(res.firewalls.get(&k(&f.metadata)));
    }
    for p in &mut input.objects.port_forwardings {
        std::sync::Arc::make_mut(p).status = stored(res.port_forwardings.get(&k(&p.metadata)));
    }
    for l in &mut input.objects.load_balancers {
        std::sync::Arc::make_mut(l).status = stored(res.load_balancers.get(&k(&l.metadata)));
    }
    for e in &mut input.external_networks {
        std::sync::Arc::make_mut(e).status = stored(
            res.external_networks
                .get(e.metadata.name.as_deref().unwrap()),
        );
    }
}

pub(super) fn cond<'a>(conds: &'a [Condition], type_: &str) -> &'a Condition {
    conds
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conds:#?}"))
}

/// Assert condition `type_` is False with `reason`, and `Ready` too.
pub(super) fn assert_false(conds: &[Condition], type_: &str, reason: &str) {
    let c = cond(conds, type_);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (FALSE, reason),
        "{c:#?}"
    );
    assert!(!c.message.is_empty(), "a False condition needs a message");
    assert_eq!(cond(conds, READY).status, FALSE);
}

pub(super) fn router_status<'a>(res: &'a Resolution, ns: &str) -> &'a api::DistributedRouterStatus {
    &res.routers[&key(ns, "r")]
}

#[test]
fn two_subnet_router_gets_vnis_and_endpoints_on_their_nodes() {
    let res = resolve(&mk_input());
    let v = &res.view;
    assert_eq!(v.nodes.len(), 3);
    assert_eq!(v.nodes["n2"].dvr_mac, names::dvr_mac(ip("198.18.0.2")));
    assert_eq!(v.routers.len(), 1);
    let r = &v.routers[0];
    assert_eq!((r.key.clone(), r.index), (key("tenant-a", "r"), 0));
    let vnis: Vec<_> = r.subnets.iter().map(|s| (s.name.as_str(), s.vni)).collect();
    assert_eq!(vnis, [("a", 4096), ("b", 4097)]);
    let eps: Vec<_> = r
        .endpoints
        .iter()
        .map(|e| (e.subnet.as_str(), e.ip, e.node.as_str()))
        .collect();
    assert_eq!(
        eps,
        [
            ("a", ip("10.0.1.10"), "n1"),
            ("a", ip("10.0.1.11"), "n2"),
            ("b", ip("10.0.2.10"), "n2")
        ]
    );
    let st = router_status(&res, "tenant-a");
    assert_eq!(st.index, Some(0));
    assert_eq!(st.link_local.as_deref(), Some("169.254.64.0/31"));
    assert_eq!(st.nodes, ["n1", "n2"]);
    assert_eq!(st.subnets[1].vni, 4097);
    assert_eq!(
        st.subnets[1].gateway_mac,
        names::gateway_mac(4097).to_string()
    );
    assert_eq!(st.subnets[1].cidr, "10.0.2.0/24");
    for t in [VALID, ALLOCATED, READY, ENDPOINTS_RESOLVED] {
        assert_eq!(cond(&st.conditions, t).status, TRUE, "{t}");
    }
    assert_eq!(cond(&st.conditions, READY).observed_generation, Some(1));
}

#[test]
fn resolving_its_own_output_changes_nothing() {
    let mut input = mk_input();
    input.routers.push(mk_std_router("tenant-b", 2).into());
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-b",
        "q1",
        Some("n3"),
        &[("tenant-b/net-a", "10.0.1.10", 9)],
    ));
    input.floating_ips = vec![
        mk_fip(
            "tenant-a",
            "f1",
            3,
            json!({"router": "r", "target": {"fixedIP": "10.0.1.10"}}),
        )
        .into(),
        mk_fip(
            "tenant-b",
            "f2",
            4,
            json!({"router": "r", "target": {"pod": {"name": "q1"}}}),
        )
        .into(),
    ];
    input.snat_gateways = vec![
        mk_snat("tenant-a", "s", 5, json!({"router": "r"})).into(),
        mk_snat("tenant-b", "s", 6, json!({"router": "r"})).into(),
    ];
    let first = resolve(&input);
    assert_eq!(first.view.floating_ips.len(), 2);
    assert_eq!(first.view.snat_gateways.len(), 2);
    copy_back(&mut input, &first);
    // Later, and the objects listed in another order: nothing moves, and
    // transition times are kept because no condition flipped.
    input.now = Timestamp::new(1_900_000_000, 123_456_789).unwrap();
    input.routers.reverse();
    input.floating_ips.reverse();
    input.snat_gateways.reverse();
    input.nodes.reverse();
    std::sync::Arc::make_mut(&mut input.pods).reverse();
    let second = resolve(&input);
    assert_eq!(second, first);
}

#[test]
fn a_deleted_routers_index_and_vnis_are_quarantined_and_others_keep_theirs() {
    let mut input = mk_input();
    input.routers.push(mk_std_router("tenant-b", 2).into());
    let res = resolve(&input);
    assert_eq!(router_status(&res, "tenant-b").index, Some(1));
    let b_vnis: Vec<u32> = router_status(&res, "tenant-b")
        .subnets
        .iter()
        .map(|s| s.vni)
        .collect();
    assert_eq!(b_vnis, [4098, 4099]);
    copy_back(&mut input, &res);
    let persisted = input.cursors;

    // tenant-a's router is being deleted: its values are held (even with
    // the cursors rewound) ...
    let a = input.routers.remove(0);
    input.held = Held::default();
    input.held.add_object(&*a);
    input.cursors = Some(Cursors::default());
    input.routers.push(mk_std_router("tenant-c", 3).into());
    let res = resolve(&input);
    let c = router_status(&res, "tenant-c");
    assert_eq!(c.index, Some(2), "held index not reused");
    let cv: Vec<u32> = c.subnets.iter().map(|s| s.vni).collect();
    assert_eq!(cv, [4100, 4101], "held VNIs not reused");

    // ... and once it is gone, the cursor still moves on: a new router does
    // not inherit the deleted router's segment.
    input.held = Held::default();
    input.cursors = persisted;
    let res = resolve(&input);
    assert_eq!(router_status(&res, "tenant-b").index, Some(1));
    let b: Vec<u32> = router_status(&res, "tenant-b")
        .subnets
        .iter()
        .map(|s| s.vni)
        .collect();
    assert_eq!(b, [4098, 4099], "survivor keeps its VNIs");
    let c = router_status(&res, "tenant-c");
    assert_eq!(c.index, Some(2), "the freed index 0 is not next");
    let cv: Vec<u32> = c.subnets.iter().map(|s| s.vni).collect();
    assert_eq!(cv, [4100, 4101], "the freed VNIs are not next");
    assert_eq!(
        res.cursors,
        Cursors {
            router_index: 3,
            vni: 4102
        }
    );
    // Without persisted cursors (first start of this version): from above
    // the highest value in use, not from the lowest free.
    input.cursors = None;
    let res = resolve(&input);
    assert_eq!(router_status(&res, "tenant-c").index, Some(2));
}

#[test]
fn status_allocations_win_over_age_and_conflicts_go_to_the_older() {
    let mut input = mk_input();
    input.routers.push(mk_std_router("tenant-b", 0).into()); // older, but no status
    let mut young = input.routers[0].clone(); // tenant-a, created 1
    std::sync::Arc::make_mut(&mut young).status = Some(api::DistributedRouterStatus {
        index: Some(0),
        subnets: vec![api::SubnetStatus {
            name: "a".into(),
            vni: 4096,
            gateway_mac: String::new(),
            cidr: "10.0.1.0/24".into(),
        }],
        ..Default::default()
    });
    input.routers[0] = young;
    let res = resolve(&input);
    let a = router_status(&res, "tenant-a");
    assert_eq!(a.index, Some(0));
    assert_eq!(a.subnets[0].vni, 4096);
    assert_eq!(
        a.subnets[0].gateway_mac,
        names::gateway_mac(4096).to_string()
    );
    let b = router_status(&res, "tenant-b");
    assert_eq!(b.index, Some(1));
    let bv: Vec<u32> = b.subnets.iter().map(|s| s.vni).collect();
    // tenant-b is older so allocates first: 4097 and 4098; then tenant-a's b.
    assert_eq!(bv, [4097, 4098]);
    assert_eq!(a.subnets[1].vni, 4099);
}

#[test]
fn overlapping_subnets_invalidate_only_that_router() {
    let mut input = mk_input();
    input.routers.push(
        mk_router(
            "tenant-b",
            "r",
            0,
            None,
            &[
                ("a", "10.0.0.0/16", "10.0.0.1", "n"),
                ("b", "10.0.2.0/24", "10.0.2.1", "m"),
            ],
        )
        .into(),
    );
    let res = resolve(&input);
    let st = router_status(&res, "tenant-b");
    assert_false(&st.conditions, VALID, "OverlappingSubnets");
    assert!(cond(&st.conditions, VALID).message.contains("10.0.2.0/24"));
    assert!(st.subnets.is_empty() && st.index.is_none() && st.nodes.is_empty());
    let keys: Vec<_> = res.view.routers.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, [key("tenant-a", "r")]);
    assert_eq!(
        res.view.routers[0].index, 0,
        "the invalid router took no index"
    );
}

#[test]
fn subnet_and_route_validation_reasons() {
    type Subnets<'a> = &'a [(&'a str, &'a str, &'a str, &'a str)];
    let cases: [(Subnets, &str); 5] = [
        (
            &[("a", "10.0.1.0/24", "10.0.2.1", "n")],
            "GatewayOutsideCIDR",
        ),
        (
            &[("a", "10.0.1.0/24", "10.0.1.255", "n")],
            "GatewayOutsideCIDR",
        ),
        (&[("a", "10.0.1.5/24", "10.0.1.1", "n")], "InvalidCIDR"),
        (&[("a", "10.0.1.0/31", "10.0.1.1", "n")], "InvalidCIDR"),
        (
            &[
                ("a", "10.0.1.0/24", "10.0.1.1", "n"),
                ("a", "10.0.2.0/24", "10.0.2.1", "m"),
            ],
            "DuplicateSubnetName",
        ),
    ];
    for (subnets, reason) in cases {
        let mut input = mk_input();
        input.routers = vec![mk_router("t", "r", 0, None, subnets).into()];
        let res = resolve(&input);
        assert_false(&router_status(&res, "t").conditions, VALID, reason);
        assert!(res.view.routers.is_empty(), "{reason}");
    }
    let mut input = mk_input();
    let mut r = mk_router("t", "r", 0, None, &[("a", "10.0.1.0/24", "10.0.1.1", "n")]);
    r.spec.routes = vec![api::ExtraRoute {
        destination: "192.0.2.0/24".into(),
        nexthop: "10.9.9.9".into(),
    }];
    input.routers = vec![r.clone().into()];
    assert_false(
        &router_status(&resolve(&input), "t").conditions,
        VALID,
        "NexthopNotOnSubnet",
    );
    r.spec.routes[0].nexthop = "10.0.1.254".into();
    input.routers = vec![r.into()];
    let res = resolve(&input);
    assert_eq!(
        res.view.routers[0].routes,
        [("192.0.2.0/24".parse().unwrap(), ip("10.0.1.254"))]
    );
}

#[test]
fn router_external_network_must_exist_and_allow_the_namespace() {
    let mut input = mk_input();
    std::sync::Arc::make_mut(&mut input.routers[0])
        .spec
        .external_network = Some("nope".into());
    let res = resolve(&input);
    assert_false(
        &router_status(&res, "tenant-a").conditions,
        VALID,
        "ExternalNetworkNotFound",
    );
    assert!(res.view.routers.is_empty());

    let mut input = mk_input();
    input.external_networks =
        vec![mk_extnet("ext", json!({"allowedNamespaces": ["tenant-z"]})).into()];
    let res = resolve(&input);
    let st = router_status(&res, "tenant-a");
    assert_false(&st.conditions, VALID, "NamespaceNotAllowed");
    assert!(cond(&st.conditions, VALID).message.contains("tenant-z"));
}

#[test]
fn duplicate_endpoint_ip_keeps_the_first_and_says_so() {
    let mut input = mk_input();
    // p0 sorts before p1 and claims p1's address; pz uses the gateway address.
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-a",
        "p0",
        Some("n3"),
        &[("net-a", "10.0.1.10", 7)],
    ));
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-a",
        "pz",
        Some("n3"),
        &[("tenant-a/net-a", "10.0.1.1", 8)],
    ));
    let res = resolve(&input);
    let st = router_status(&res, "tenant-a");
    assert_eq!(cond(&st.conditions, VALID).status, TRUE);
    assert_eq!(cond(&st.conditions, READY).status, TRUE);
    let c = cond(&st.conditions, ENDPOINTS_RESOLVED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (FALSE, "DuplicateEndpointIP")
    );
    assert!(
        c.message.contains("pod tenant-a/p0 and pod tenant-a/p1"),
        "{}",
        c.message
    );
    assert!(c.message.contains("gateway"), "{}", c.message);
    let eps: Vec<_> = res.view.routers[0]
        .endpoints
        .iter()
        .filter(|e| e.subnet == "a")
        .map(|e| (e.ip, e.node.as_str()))
        .collect();
    assert_eq!(eps, [(ip("10.0.1.10"), "n3"), (ip("10.0.1.11"), "n2")]);
}

#[test]
fn endpoints_need_a_node_with_a_vtep_the_right_network_and_cidr() {
    let mut input = mk_input();
    input.nodes.push(NodeInfo {
        vtep: None,
        ..mk_node(4, true, &[])
    });
    input.pods = vec![
        mk_pod(
            "tenant-a",
            "unscheduled",
            None,
            &[("tenant-a/net-a", "10.0.1.20", 1)],
        ),
        mk_pod(
            "tenant-a",
            "no-agent",
            Some("n4"),
            &[("tenant-a/net-a", "10.0.1.21", 2)],
        ),
        mk_pod(
            "tenant-a",
            "other-net",
            Some("n1"),
            &[("tenant-a/other", "10.0.1.22", 3)],
        ),
        mk_pod(
            "tenant-a",
            "other-cidr",
            Some("n1"),
            &[("tenant-a/net-a", "10.0.9.23", 4)],
        ),
        mk_pod(
            "tenant-b",
            "other-ns",
            Some("n1"),
            &[("tenant-b/net-a", "10.0.1.24", 5)],
        ),
        mk_pod(
            "tenant-a",
            "ok",
            Some("n3"),
            &[("tenant-a/net-a", "10.0.1.25", 6)],
        ),
    ]
    .into();
    let res = resolve(&input);
    let eps: Vec<_> = res.view.routers[0].endpoints.iter().map(|e| e.ip).collect();
    assert_eq!(eps, [ip("10.0.1.25")]);
    assert!(!res.view.nodes.contains_key("n4"));
    assert_eq!(router_status(&res, "tenant-a").nodes, ["n3"]);
}

#[test]
fn conditions_keep_transition_time_unless_they_flip() {
    let mut input = mk_input();
    let t0 = input.now;
    let res = resolve(&input);
    copy_back(&mut input, &res);
    // Sub-second precision is dropped, as metav1.Time would.
    input.now = Timestamp::new(1_850_000_000, 999_000_000).unwrap();
    std::sync::Arc::make_mut(&mut input.routers[0])
        .spec
        .external_network = Some("nope".into());
    let res = resolve(&input);
    let st = router_status(&res, "tenant-a");
    assert_eq!(
        cond(&st.conditions, VALID).last_transition_time.0,
        Timestamp::from_second(1_850_000_000).unwrap()
    );
    assert_eq!(cond(&st.conditions, ALLOCATED).last_transition_time.0, t0);
    // The invalid router keeps its allocations reserved, shows no nodes.
    assert_eq!(st.index, Some(0));
    assert_eq!(st.subnets.len(), 2);
    assert!(st.nodes.is_empty());
}

//! Unit tests of the pure pass: objects built with `mk_*`, actions applied
//! back to the snapshot as the API server would (`apply`), agents simulated
//! by writing the expected digests on the Nodes (`agents_program`).
use super::*;
use crate::api::{DistributedRouter, ExternalNetwork, FloatingIP, PerKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

fn meta(ns: Option<&str>, name: &str, created: i64) -> Value {
    let mut m = json!({
        "name": name, "uid": format!("uid-{name}"), "generation": 1, "resourceVersion": "1",
        "creationTimestamp": ts(created).to_string(),
    });
    if let Some(ns) = ns {
        m["namespace"] = ns.into();
    }
    m
}

fn mk_node(name: &str, vtep: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {cluster::VTEP_ANNOTATION: vtep}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

fn mk_extnet(name: &str) -> ExternalNetwork {
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "ExternalNetwork",
        "metadata": meta(None, name, 1),
        "spec": {"cidr": "203.0.113.0/24", "gateway": "203.0.113.1",
            "pools": {"floating": ["203.0.113.100-203.0.113.199"], "snat": ["203.0.113.50-203.0.113.59"],
                      "nodePorts": ["203.0.113.10-203.0.113.49"]},
            "attachment": {"bridge": "br-public"}}
    }))
    .unwrap()
}

fn mk_router(ns: &str, name: &str, ext: &str) -> DistributedRouter {
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
        "metadata": meta(Some(ns), name, 2),
        "spec": {"externalNetwork": ext, "subnets": [
            {"name": "a1", "cidr": "10.10.1.0/24", "gateway": "10.10.1.1", "networkAttachment": "net-a1"}]}
    }))
    .unwrap()
}

fn mk_fip(ns: &str, name: &str, fixed: &str, created: i64) -> FloatingIP {
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
        "metadata": meta(Some(ns), name, created),
        "spec": {"router": "main", "target": {"fixedIP": fixed}}
    }))
    .unwrap()
}

fn mk_pod(ns: &str, name: &str, node: &str, ip: &str, mac: &str) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        node: Some(node.into()),
        networks: vec![crate::plan::resolve::PodNetwork {
            network: format!("{ns}/net-a1"),
            interface: Some("net1".into()),
            ip: ip.parse().unwrap(),
            mac: mac.parse().unwrap(),
            standby: false,
        }],
    }
}

/// Two nodes, one external network, tenant-a's router with a workload on
/// each node, one floating IP for the workload on n1.
fn mk_world() -> Snapshot {
    Snapshot {
        objects: PerKind {
            external_networks: vec![mk_extnet("public").into()],
            routers: vec![mk_router("tenant-a", "main", "public").into()],
            floating_ips: vec![mk_fip("tenant-a", "web", "10.10.1.10", 3).into()],
            snat_gateways: vec![],
            ..Default::default()
        },
        pods: vec![
            mk_pod("tenant-a", "w1", "n1", "10.10.1.10", "02:00:00:00:01:0a"),
            mk_pod("tenant-a", "w2", "n2", "10.10.1.11", "02:00:00:00:01:0b"),
        ]
        .into(),
        nodes: vec![mk_node("n1", "198.18.0.1"), mk_node("n2", "198.18.0.2")],
        agents: BTreeMap::from([("n1".into(), true), ("n2".into(), true)]),
        leases_synced: true,
        now: ts(NOW),
        cursors: None,
        undecodable: Vec::new(),
        pod_labels: Default::default(),
        nad_conflicts: Default::default(),
    }
}

/// Apply a JSON merge patch (top-level of `status`, and metadata.finalizers)
/// to a typed object.
fn merge<K: Serialize + serde::de::DeserializeOwned>(o: &mut K, patch: &Value) {
    let mut v = serde_json::to_value(&*o).unwrap();
    if let Some(st) = patch.get("status").and_then(Value::as_object) {
        if !v["status"].is_object() {
            v["status"] = json!({});
        }
        for (k, x) in st {
            if x.is_null() {
                v["status"].as_object_mut().unwrap().remove(k);
            } else {
                v["status"][k] = x.clone();
            }
        }
    }
    if let Some(f) = patch.pointer("/metadata/finalizers") {
        v["metadata"]["finalizers"] = f.clone();
    }
    *o = serde_json::from_value(v).unwrap();
}

fn apply_to<K>(objs: &mut Vec<std::sync::Arc<K>>, kind: Kind, a: &Actions)
where
    K: Resource<DynamicType = ()> + Serialize + serde::de::DeserializeOwned + Clone,
{
    for o in objs.iter_mut() {
        let t = Target::of(kind, &**o).key();
        let o = std::sync::Arc::make_mut(o);
        for w in a.status.iter().filter(|w| w.target.key() == t) {
            merge(o, &w.patch);
        }
        for f in a
            .add_finalizer
            .iter()
            .chain(&a.remove_finalizer)
            .filter(|f| f.target.key() == t)
        {
            merge(o, &f.patch());
        }
    }
    // The API server drops an object being deleted once its finalizers are gone.
    objs.retain(|o| {
        o.meta().deletion_timestamp.is_none()
            || o.meta().finalizers.as_ref().is_some_and(|f| !f.is_empty())
    });
}

fn apply(s: &mut Snapshot, a: &Actions) {
    // The executor persists the cursors; the next snapshot reads them back.
    if let Some(c) = a.cursors {
        s.cursors = Some(c);
    }
    apply_to(&mut s.external_networks, Kind::ExternalNetwork, a);
    apply_to(&mut s.routers, Kind::DistributedRouter, a);
    apply_to(&mut s.floating_ips, Kind::FloatingIP, a);
    apply_to(&mut s.snat_gateways, Kind::SnatGateway, a);
}

/// What agents do: report the digest of their plan on their Node.
fn agents_program(s: &mut Snapshot, only: Option<&str>) {
    let digests = expected_digests(s);
    for n in &mut s.nodes {
        let name = n.metadata.name.clone().unwrap();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        if let Some(d) = digests.get(&name) {
            n.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(cluster::PROGRAMMED_ANNOTATION.into(), d.clone());
        }
    }
}

fn fip_status(s: &Snapshot, name: &str) -> api::FloatingIPStatus {
    s.floating_ips
        .iter()
        .find(|f| f.metadata.name.as_deref() == Some(name))
        .and_then(|f| f.status.clone())
        .unwrap_or_default()
}

fn cond<'a>(conds: &'a [Condition], t: &str) -> &'a Condition {
    conditions::find_condition(conds, t).unwrap_or_else(|| panic!("no {t} condition in {conds:?}"))
}

fn writes(a: &Actions) -> usize {
    a.add_finalizer.len() + a.remove_finalizer.len() + a.status.len()
}

/// Run passes (agents programming after each, if `agents`) until nothing
/// is written; returns the number of writes.
fn settle(s: &mut Snapshot, agents: bool) -> usize {
    let mut total = 0;
    for _ in 0..10 {
        let a = compute(s);
        if a.is_empty() {
            return total;
        }
        total += writes(&a);
        apply(s, &a);
        if agents {
            agents_program(s, None);
        }
    }
    panic!("did not settle");
}

#[test]
fn first_pass_adds_finalizers_and_allocates_but_is_not_ready_until_programmed() {
    let mut s = mk_world();
    let a = compute(&s);
    assert_eq!(a.add_finalizer.len(), 3, "every object gets the finalizer");
    assert!(a
        .add_finalizer
        .iter()
        .all(|f| f.finalizers == [api::FINALIZER]));
    assert_eq!(a.status.len(), 3);
    apply(&mut s, &a);
    let st = fip_status(&s, "web");
    assert_eq!(st.address.as_deref(), Some("203.0.113.100"));
    assert_eq!(st.node.as_deref(), Some("n1"));
    assert_eq!(cond(&st.conditions, "Programmed").reason, REASON_PENDING);
    assert_eq!(cond(&st.conditions, "Ready").status, FALSE);
    assert_eq!(cond(&st.conditions, "Ready").reason, REASON_PENDING);
    assert_eq!(st.observed_generation, Some(1));
    // Pending is no news: no Warning events.
    assert!(
        a.status
            .iter()
            .filter(|w| w.target.kind != Kind::ExternalNetwork)
            .all(|w| w.events.is_empty()),
        "{:?}",
        a.status
    );

    // Nothing changed: nothing to write.
    assert!(compute(&s).is_empty());

    // The agent on n1 catches up: the floating IP is Ready, the router is
    // programmed on n1 only.
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    apply(&mut s, &a);
    let st = fip_status(&s, "web");
    assert_eq!(cond(&st.conditions, "Ready").status, TRUE);
    let w = a.status.iter().find(|w| w.target.name == "web").unwrap();
    assert_eq!(
        w.events,
        [EventSpec {
            warning: false,
            reason: "Ready".into(),
            note: "FloatingIP web is ready".into()
        }]
    );
    let r = s.routers[0].status.clone().unwrap();
    assert_eq!(r.nodes, ["n1", "n2"]);
    assert_eq!(r.programmed_nodes, ["n1"]);
    assert_eq!(cond(&r.conditions, "Programmed").reason, REASON_PENDING);
    assert!(cond(&r.conditions, "Programmed").message.contains("n2"));

    agents_program(&mut s, None);
    settle(&mut s, true);
    let r = s.routers[0].status.clone().unwrap();
    assert_eq!(r.programmed_nodes, ["n1", "n2"]);
    assert!(conditions::is_ready(&r.conditions));
    // Steady state: zero writes.
    assert_eq!(
        compute(&s),
        Actions {
            objects: compute(&s).objects,
            ..Default::default()
        }
    );
}

#[test]
fn status_patch_is_a_merge_patch_that_nulls_removed_fields() {
    let mut s = mk_world();
    settle(&mut s, true);
    // The target moves to an address no workload has: node and mac go.
    std::sync::Arc::make_mut(&mut s.floating_ips[0])
        .spec
        .target
        .fixed_ip = Some("10.10.1.99".into());
    std::sync::Arc::make_mut(&mut s.floating_ips[0])
        .metadata
        .generation = Some(2);
    let a = compute(&s);
    let w = a.status.iter().find(|w| w.target.name == "web").unwrap();
    assert_eq!(w.patch["status"]["node"], Value::Null);
    assert!(w.patch["status"].as_object().unwrap().contains_key("node"));
    assert_eq!(
        w.patch["status"]["address"], "203.0.113.100",
        "allocation kept"
    );
    assert_eq!(w.patch["status"]["observedGeneration"], 2);
    let ready = w.patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert!(
        w.events.iter().any(|e| e.warning),
        "a Warning for the condition that became False: {:?}",
        w.events
    );
}

#[test]
fn programmed_is_sticky_when_other_objects_change_the_node() {
    let mut s = mk_world();
    settle(&mut s, true);
    assert!(conditions::is_ready(&fip_status(&s, "web").conditions));
    // A second floating IP on n1: n1's digest moves; `web` must not flap.
    std::sync::Arc::make_mut(&mut s.pods).push(mk_pod(
        "tenant-a",
        "w3",
        "n1",
        "10.10.1.12",
        "02:00:00:00:01:0c",
    ));
    s.floating_ips
        .push(mk_fip("tenant-a", "db", "10.10.1.12", 4).into());
    let a = compute(&s);
    assert!(
        a.status.iter().all(|w| w.target.name != "web"),
        "web rewritten: {:?}",
        a.status
    );
    apply(&mut s, &a);
    assert_eq!(
        cond(&fip_status(&s, "db").conditions, "Ready").reason,
        REASON_PENDING
    );
    // ... but an agent reporting errors about it does flip it.
    let n1 = &mut s.nodes[0];
    n1.metadata.annotations.as_mut().unwrap().insert(
        AGENT_ERRORS_ANNOTATION.into(),
        json!([{"object": "FloatingIP/tenant-a/web", "message": "nft: permission denied"}])
            .to_string(),
    );
    let a = compute(&s);
    apply(&mut s, &a);
    let c = cond(&fip_status(&s, "web").conditions, "Programmed").clone();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (FALSE, REASON_AGENT_ERROR)
    );
    assert!(
        c.message.contains("nft: permission denied"),
        "{}",
        c.message
    );
    let w = a.status.iter().find(|w| w.target.name == "web").unwrap();
    assert!(w
        .events
        .iter()
        .any(|e| e.warning && e.reason == REASON_AGENT_ERROR));
}

#[test]
fn agent_down_is_reported() {
    let mut s = mk_world();
    settle(&mut s, false);
    s.agents.insert("n1".into(), false);
    let a = compute(&s);
    apply(&mut s, &a);
    let c = cond(&fip_status(&s, "web").conditions, "Programmed").clone();
    assert_eq!(c.reason, REASON_AGENT_DOWN);
    assert!(c.message.contains("n1"));
}

#[test]
fn invalid_object_gets_reason_and_event_and_others_are_unaffected() {
    let mut s = mk_world();
    settle(&mut s, true);
    let before_router = s.routers[0].status.clone();
    // A router in another namespace whose external network does not exist.
    let mut bad = mk_router("tenant-b", "main", "nope");
    bad.metadata.uid = Some("uid-bad".into());
    s.routers.push(bad.into());
    let a = compute(&s);
    let w = a
        .status
        .iter()
        .find(|w| w.target.namespace.as_deref() == Some("tenant-b"))
        .unwrap();
    let ready = w.patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    let reason = ready["reason"].as_str().unwrap().to_string();
    assert!(
        w.events.iter().any(|e| e.warning && e.reason == reason),
        "{reason}: {:?}",
        w.events
    );
    assert!(!w.events.iter().any(|e| e.reason == REASON_UNRESOLVED));
    assert!(
        a.status
            .iter()
            .all(|w| w.target.namespace.as_deref() != Some("tenant-a")),
        "tenant-a rewritten: {:?}",
        a.status
    );
    apply(&mut s, &a);
    assert_eq!(s.routers[0].status, before_router);
    // The bad router is programmed nowhere: Programmed=False/Unresolved.
    let st = s.routers[1].status.clone().unwrap();
    assert_eq!(cond(&st.conditions, "Programmed").reason, REASON_UNRESOLVED);
    // Its events are not repeated.
    agents_program(&mut s, None);
    assert!(compute(&s).status.iter().all(|w| w.events.is_empty()));
}

#[test]
fn finalizer_holds_a_deleted_object_until_every_agent_is_done() {
    let mut s = mk_world();
    settle(&mut s, true);
    std::sync::Arc::make_mut(&mut s.floating_ips[0])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    let a = compute(&s);
    assert!(
        a.remove_finalizer.is_empty(),
        "n1 still has the floating IP"
    );
    assert!(
        a.status.iter().all(|w| w.target.name != "web"),
        "no status for an object being deleted"
    );
    agents_program(&mut s, Some("n2"));
    assert!(compute(&s).remove_finalizer.is_empty());
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    assert_eq!(a.remove_finalizer.len(), 1);
    assert_eq!(a.remove_finalizer[0].target.name, "web");
    assert!(a.remove_finalizer[0].finalizers.is_empty());
    assert_eq!(
        a.remove_finalizer[0].patch()["metadata"]["resourceVersion"],
        "1"
    );
    apply(&mut s, &a);
    assert!(s.floating_ips.is_empty());

    // A node whose agent stopped heartbeating may still forward: it holds
    // the deletion of what it had (the router spans n1 and n2) ...
    std::sync::Arc::make_mut(&mut s.routers[0])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    s.agents.insert("n2".into(), false);
    agents_program(&mut s, Some("n1"));
    assert!(compute(&s).remove_finalizer.is_empty());
    // ... until it is declared gone (its Lease deleted).
    s.agents.remove("n2");
    assert_eq!(compute(&s).remove_finalizer.len(), 1);
}

#[test]
fn a_node_without_an_agent_lease_holds_no_deletion() {
    // n2 has a VTEP but its agent never existed (or its Lease was deleted).
    let mut s = mk_world();
    s.agents.remove("n2");
    settle(&mut s, false);
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    apply(&mut s, &a);
    // The router spans n1 and n2: not programmed, and n2 is named down.
    let st = s.routers[0].status.clone().unwrap();
    let c = cond(&st.conditions, "Programmed");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (FALSE, REASON_AGENT_DOWN)
    );
    assert!(
        c.message.contains("n2") && c.message.contains("no heartbeat Lease"),
        "{}",
        c.message
    );
    assert_eq!(st.programmed_nodes, ["n1"]);
    // `web` lives on n1 only: programmed.
    assert!(conditions::is_ready(&fip_status(&s, "web").conditions));

    // Deleting the router: n1 reports the plan without it; n2 never will.
    std::sync::Arc::make_mut(&mut s.routers[0])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    assert!(
        compute(&s).remove_finalizer.is_empty(),
        "n1 is not done yet"
    );
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    assert_eq!(a.remove_finalizer.len(), 1, "{a:?}");
    assert_eq!(a.remove_finalizer[0].target.name, "main");
}

#[test]
fn a_missing_lease_counts_only_once_the_lease_cache_synced() {
    let mut s = mk_world();
    settle(&mut s, true);
    assert!(conditions::is_ready(
        &s.routers[0].status.as_ref().unwrap().conditions
    ));
    // A controller whose Lease cache has not synced sees no Leases at all:
    // nothing flips, nothing is written.
    s.agents.clear();
    s.leases_synced = false;
    let a = compute(&s);
    assert!(a.is_empty(), "{a:?}");
    // ... and a deletion waits for the agents' reports as before.
    std::sync::Arc::make_mut(&mut s.floating_ips[0])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    assert!(compute(&s).remove_finalizer.is_empty());
    // Synced, still no Lease: the agents are gone.
    s.leases_synced = true;
    let a = compute(&s);
    assert_eq!(a.remove_finalizer.len(), 1);
    let w = a
        .status
        .iter()
        .find(|w| w.target.kind == Kind::DistributedRouter)
        .expect("the router's status flips");
    assert_eq!(
        w.patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == PROGRAMMED)
            .unwrap()["reason"],
        REASON_AGENT_DOWN
    );
}

#[test]
fn restart_from_stored_statuses_changes_nothing() {
    let mut s = mk_world();
    settle(&mut s, true);
    let before: Vec<_> = s.floating_ips.iter().map(|f| f.status.clone()).collect();
    // Later (a restarted controller): same statuses, no writes.
    s.now = ts(NOW + 3600);
    let a = compute(&s);
    assert!(a.is_empty(), "{:?}", a);
    let after: Vec<_> = s.floating_ips.iter().map(|f| f.status.clone()).collect();
    assert_eq!(before, after);
}

#[test]
fn many_floating_ips_cost_a_constant_number_of_writes() {
    let mut s = mk_world();
    s.floating_ips.clear();
    let n = 60;
    for i in 0..n {
        let ip = format!("10.10.1.{}", 100 + i);
        let mac = format!("02:00:00:00:02:{:02x}", i);
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        std::sync::Arc::make_mut(&mut s.pods).push(mk_pod(
            "tenant-a",
            &format!("p{i}"),
            node,
            &ip,
            &mac,
        ));
        s.floating_ips
            .push(mk_fip("tenant-a", &format!("f{i}"), &ip, 10 + i as i64).into());
    }
    let writes = settle(&mut s, true);
    assert!(s
        .floating_ips
        .iter()
        .all(|f| conditions::is_ready(&f.status.as_ref().unwrap().conditions)));
    // finalizer + status + Ready per floating IP, plus the router and network.
    assert!(writes <= 3 * n + 6, "{writes} writes for {n} floating IPs");
}

#[path = "desired_tests_nodes.rs"]
mod nodes;

#[path = "desired_tests_held.rs"]
mod held;

//! The controller against the in-memory API stand-in (real kube-rs client,
//! real HTTP). Agents are played by the tests: they write the digest of
//! the plan they would program on their Node, as an agent does.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_standin::StandIn;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use kube_dvr::api::{
    self, conditions, DistributedRouter, ExternalNetwork, FloatingIP, Port, SnatGateway,
};
use kube_dvr::cluster;
use kube_dvr::controller::{run, ControllerOptions};
use kube_dvr::telemetry::Telemetry;
use kube_dvr::uninstall::{self, UninstallError, UninstallOptions};

use super::support::*;

pub(super) async fn standin() -> (StandIn, Client) {
    let s = StandIn::start(0).await.unwrap();
    let c = Client::try_from(s.kube_config()).unwrap();
    (s, c)
}

pub(super) struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kube_dvr::controller::Error>>,
    pub(super) telemetry: Arc<Telemetry>,
}

impl Running {
    pub(super) async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
    fn writes(&self, kind: &str) -> u64 {
        self.telemetry
            .value("kube_dvr_api_writes_total", &[("kind", kind)])
            .unwrap_or(0.0) as u64
    }
}

pub(super) fn opts(identity: &str) -> ControllerOptions {
    let mut o = ControllerOptions::new("kube-dvr", identity);
    o.debounce = Duration::from_millis(50);
    o
}

pub(super) fn start(client: &Client, o: ControllerOptions) -> Running {
    let stop = CancellationToken::new();
    let telemetry = Telemetry::new();
    let task = tokio::spawn(run(client.clone(), o, telemetry.clone(), stop.clone()));
    Running {
        stop,
        task,
        telemetry,
    }
}

async fn fip(client: &Client, ns: &str, name: &str) -> Option<FloatingIP> {
    Api::<FloatingIP>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

fn ready_of(conds: &[api::Condition]) -> Option<(String, String)> {
    conditions::find_condition(conds, "Ready").map(|c| (c.status.clone(), c.reason.clone()))
}

pub(super) async fn all_ready(client: &Client) -> bool {
    let lp = ListParams::default();
    let r = Api::<DistributedRouter>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items;
    let f = Api::<FloatingIP>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items;
    let s = Api::<SnatGateway>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items;
    let e = Api::<ExternalNetwork>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items;
    r.iter().all(|o| {
        o.status
            .as_ref()
            .is_some_and(|s| conditions::is_ready(&s.conditions))
    }) && f.iter().all(|o| {
        o.status
            .as_ref()
            .is_some_and(|s| conditions::is_ready(&s.conditions))
    }) && s.iter().all(|o| {
        o.status
            .as_ref()
            .is_some_and(|s| conditions::is_ready(&s.conditions))
    }) && e.iter().all(|o| {
        o.status
            .as_ref()
            .is_some_and(|s| conditions::is_ready(&s.conditions))
    })
}

pub(super) async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_become_ready_invalid_ones_report_and_restart_changes_nothing() {
    let (standin, client) = standin().await;
    setup_cluster(&client).await;
    agents_heartbeat(&client, &NODES).await;
    apply_examples(&client).await;
    let mut o = opts("controller-0");
    // No lease renewal inside the measured windows below.
    o.lease_duration = Duration::from_secs(120);
    o.renew_interval = Duration::from_secs(60);
    let c = start(&client, o.clone());

    // Allocated and scheduled, but not Ready: no agent has programmed it.
    let web = eventually(10, "web's status", || async {
        fip(&client, "tenant-a", "web")
            .await
            .filter(|f| f.status.as_ref().is_some_and(|s| s.address.is_some()))
    })
    .await;
    let st = web.status.clone().unwrap();
    assert_eq!(st.address.as_deref(), Some("203.0.113.100"));
    assert_eq!(st.node.as_deref(), Some("node-1"));
    assert_eq!(
        ready_of(&st.conditions),
        Some(("False".into(), "Pending".into()))
    );
    assert!(web
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&api::FINALIZER.to_string()));
    let api_fip = fip(&client, "tenant-b", "api")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        api_fip
            .address
            .as_deref()
            .is_some_and(|a| a.starts_with("203.0.113.1")),
        "{api_fip:?}"
    );

    // The agents program: everything becomes Ready.
    agents_program(&client, None).await;
    eventually(10, "every object Ready", || async {
        all_ready(&client).await.then_some(())
    })
    .await;
    let router = Api::<DistributedRouter>::namespaced(client.clone(), "tenant-a")
        .get("main")
        .await
        .unwrap();
    let rs = router.status.unwrap();
    assert_eq!(rs.subnets.len(), 2);
    assert_ne!(rs.subnets[0].vni, rs.subnets[1].vni);
    assert_eq!(rs.programmed_nodes, rs.nodes);
    let snat = Api::<SnatGateway>::namespaced(client.clone(), "tenant-a")
        .get("default")
        .await
        .unwrap();
    assert_eq!(snat.status.unwrap().active_node.as_deref(), Some("gw-1"));
    assert!(
        events_for(&client, "tenant-a", "web")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Ready")),
        "a Ready event for web"
    );

    // Steady state: passes (resync, watch noise) write nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w0 = standin.write_count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        standin.write_count(),
        w0,
        "an idle controller writes nothing"
    );

    // Invalid manifests: each gets Ready=False with its reason and an Event;
    // the others are not touched.
    let web_rv = fip(&client, "tenant-a", "web")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let pp = PostParams::default();
    let fips = Api::<FloatingIP>::namespaced(client.clone(), "tenant-a");
    let invalid: Vec<(&str, FloatingIP)> = vec![
        (
            "address in use",
            mk_fip(
                "tenant-a",
                "dup",
                "main",
                "10.10.1.11",
                Some("203.0.113.100"),
            ),
        ),
        (
            "no endpoint",
            mk_fip("tenant-a", "nobody", "main", "10.10.1.99", None),
        ),
        (
            "missing router",
            mk_fip("tenant-a", "orphan", "nope", "10.10.1.11", None),
        ),
        (
            "outside the network",
            mk_fip(
                "tenant-a",
                "outside",
                "main",
                "10.10.1.11",
                Some("198.51.100.7"),
            ),
        ),
    ];
    for (_, f) in &invalid {
        fips.create(&pp, f).await.unwrap();
    }
    let routers = Api::<DistributedRouter>::namespaced(client.clone(), "tenant-b");
    let bad_router: DistributedRouter = serde_json::from_value(json!({
        "apiVersion": api::API_VERSION, "kind": "DistributedRouter",
        "metadata": {"name": "bad", "namespace": "tenant-b"},
        "spec": {"externalNetwork": "missing", "subnets": [
            {"name": "x", "cidr": "10.30.0.0/24", "gateway": "10.30.0.1", "networkAttachment": "net-x"}]}
    }))
    .unwrap();
    routers.create(&pp, &bad_router).await.unwrap();
    for (what, f) in &invalid {
        let name = f.metadata.name.clone().unwrap();
        let (status, reason) = eventually(10, what, || async {
            let st = fip(&client, "tenant-a", &name).await?.status?;
            ready_of(&st.conditions).filter(|(s, _)| s == "False")
        })
        .await;
        assert_eq!(status, "False");
        assert!(
            reason != "Pending" && reason != "Unresolved",
            "{what}: {reason}"
        );
        let evs = eventually(10, "a Warning event", || async {
            let evs = events_for(&client, "tenant-a", &name).await;
            evs.iter()
                .any(|e| e.reason.as_deref() == Some(reason.as_str()))
                .then_some(evs)
        })
        .await;
        assert!(
            evs.iter().any(|e| e.type_.as_deref() == Some("Warning")),
            "{what}: {evs:?}"
        );
        eprintln!("{what}: Ready=False reason {reason}");
    }
    let bad = eventually(10, "the bad router's status", || async {
        routers
            .get("bad")
            .await
            .ok()?
            .status
            .filter(|s| !s.conditions.is_empty())
    })
    .await;
    assert_eq!(ready_of(&bad.conditions).unwrap().0, "False");
    assert!(bad.subnets.iter().all(|s| s.vni > 0) || bad.subnets.is_empty());
    assert_eq!(
        fip(&client, "tenant-a", "web")
            .await
            .unwrap()
            .metadata
            .resource_version,
        web_rv,
        "web untouched"
    );
    assert!(all_ready_except_invalid(&client).await);

    // Restart: same allocations, and zero writes besides the Lease.
    agents_program(&client, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = snapshot_statuses(&client).await;
    c.stop().await;
    let w0 = standin.write_count();
    let c = start(&client, o.clone());
    eventually(10, "the new controller ready", || async {
        c.telemetry.is_ready().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        snapshot_statuses(&client).await,
        before,
        "a restart changes no allocation"
    );
    let lease_writes = 1; // the new one acquires (the old one released on stop)
    assert_eq!(
        standin.write_count() - w0,
        lease_writes,
        "a restarted controller writes nothing but its Lease"
    );
    assert_eq!(
        c.writes("status") + c.writes("finalizer") + c.writes("event"),
        0
    );

    // Deletion: the finalizer holds the object until every agent is done.
    fips.delete("web", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let held = fip(&client, "tenant-a", "web")
        .await
        .expect("held by the finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    agents_program(&client, Some(&["node-2", "gw-1"])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        fip(&client, "tenant-a", "web").await.is_some(),
        "node-1 has not programmed the removal yet"
    );
    agents_program(&client, None).await;
    eventually(10, "web gone", || async {
        fip(&client, "tenant-a", "web")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    c.stop().await;
    standin.shutdown().await;
}

async fn all_ready_except_invalid(client: &Client) -> bool {
    let f = Api::<FloatingIP>::namespaced(client.clone(), "tenant-b")
        .list(&ListParams::default())
        .await
        .unwrap();
    f.items.iter().all(|o| {
        o.status
            .as_ref()
            .is_some_and(|s| conditions::is_ready(&s.conditions))
    })
}

/// Allocations of every object (statuses without conditions).
async fn snapshot_statuses(client: &Client) -> Vec<serde_json::Value> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().map(|o| o.remove("conditions"));
        v
    };
    for o in Api::<DistributedRouter>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
    {
        out.push(strip(serde_json::to_value(o.status).unwrap()));
    }
    for o in Api::<FloatingIP>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
    {
        out.push(strip(serde_json::to_value(o.status).unwrap()));
    }
    for o in Api::<SnatGateway>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
    {
        out.push(strip(serde_json::to_value(o.status).unwrap()));
    }
    for o in Api::<ExternalNetwork>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
    {
        out.push(strip(serde_json::to_value(o.status).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over() {
    let (standin, client) = standin().await;
    setup_cluster(&client).await;
    agents_heartbeat(&client, &NODES).await;
    let fast = |id: &str| {
        let mut o = opts(id);
        o.lease_duration = Duration::from_secs(3);
        o.renew_interval = Duration::from_millis(500);
        o.retry_interval = Duration::from_millis(300);
        o
    };
    let a = start(&client, fast("replica-a"));
    let b = start(&client, fast("replica-b"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-dvr");
    let holder = eventually(10, "a leader", || async {
        leases
            .get_opt(cluster::CONTROLLER_LEASE)
            .await
            .unwrap()?
            .spec?
            .holder_identity
    })
    .await;
    apply_examples(&client).await;
    eventually(10, "statuses", || async {
        fip(&client, "tenant-a", "web")
            .await?
            .status?
            .address
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (leader, standby) = if holder == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };
    assert!(leader.writes("status") > 0, "the leader writes");
    assert_eq!(
        standby.writes("status") + standby.writes("finalizer"),
        0,
        "the standby never writes"
    );
    assert!(
        standby.telemetry.is_ready(),
        "a standby with warm caches is ready"
    );
    let standby_name = if holder == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };

    // The leader stops: the standby takes over and carries on.
    leader.stop().await;
    eventually(10, "the standby to lead", || async {
        let h = leases
            .get_opt(cluster::CONTROLLER_LEASE)
            .await
            .unwrap()?
            .spec?
            .holder_identity?;
        (h == standby_name).then_some(())
    })
    .await;
    agents_program(&client, None).await;
    eventually(10, "Ready after failover", || async {
        all_ready(&client).await.then_some(())
    })
    .await;
    assert!(standby.writes("status") > 0, "the new leader writes");
    standby.stop().await;
    standin.shutdown().await;
}

async fn mark_cleaned(client: &Client, node: &str) {
    let patch = json!({"metadata": {"annotations": {cluster::CLEANED_ANNOTATION: "true"}}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_waits_for_every_live_agent_node() {
    let (standin, client) = standin().await;
    setup_cluster(&client).await;
    // node-1 and node-2 have live agents; gw-1's agent never heartbeats.
    agents_heartbeat(&client, &["node-1", "node-2"]).await;
    let mut o = UninstallOptions::new("kube-dvr", Duration::from_secs(20));
    o.poll = Duration::from_millis(100);
    let c = client.clone();
    let task = tokio::spawn(async move { uninstall::run(c, &o).await });
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-dvr");
    eventually(5, "the uninstall ConfigMap", || async {
        cms.get_opt(cluster::UNINSTALL_CONFIGMAP)
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    mark_cleaned(&client, "node-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "node-2 is not clean yet");
    mark_cleaned(&client, "node-2").await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        cms.get_opt(cluster::UNINSTALL_CONFIGMAP)
            .await
            .unwrap()
            .is_none(),
        "ConfigMap removed"
    );

    // Timeout: names the node, leaves the ConfigMap for agents coming back.
    let patch = json!({"metadata": {"annotations": {cluster::CLEANED_ANNOTATION: null}}});
    Api::<Node>::all(client.clone())
        .patch("node-2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let mut o = UninstallOptions::new("kube-dvr", Duration::from_secs(1));
    o.poll = Duration::from_millis(100);
    match uninstall::run(client.clone(), &o).await {
        Err(UninstallError::Timeout { nodes, .. }) => assert_eq!(nodes, ["node-2"]),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(cms
        .get_opt(cluster::UNINSTALL_CONFIGMAP)
        .await
        .unwrap()
        .is_some());
    standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_ips_at_scale_cost_a_constant_number_of_api_writes() {
    // Two external networks of the documentation ranges: 2 x 230 addresses.
    const PER_NET: usize = 230;
    let n = 2 * PER_NET;
    let (standin, client) = standin().await;
    setup_cluster(&client).await;
    agents_heartbeat(&client, &NODES).await;
    let pp = PostParams::default();
    for (name, cidr, pool) in [
        ("public", "203.0.113.0/24", "203.0.113.10-203.0.113.250"),
        ("other", "198.51.100.0/24", "198.51.100.10-198.51.100.250"),
    ] {
        let gw = cidr.replace(".0/24", ".1");
        let e: ExternalNetwork = serde_json::from_value(json!({
            "apiVersion": api::API_VERSION, "kind": "ExternalNetwork", "metadata": {"name": name},
            "spec": {"cidr": cidr, "gateway": gw, "pools": {"floating": [pool], "nodePorts": [cidr.replace(".0/24", ".2-") + &cidr.replace(".0/24", ".9")]},
                     "attachment": {"bridge": "br-ext"}}
        }))
        .unwrap();
        Api::<ExternalNetwork>::all(client.clone())
            .create(&pp, &e)
            .await
            .unwrap();
    }
    // One router per external network, one /16 subnet each.
    let addr = |i: usize| {
        let (net, j) = if i < PER_NET {
            (20, i)
        } else {
            (21, i - PER_NET)
        };
        format!("10.{net}.{}.{}", 1 + j / 200, 10 + j % 200)
    };
    for (name, ext, net) in [("big", "public", 20), ("big2", "other", 21)] {
        let r: DistributedRouter = serde_json::from_value(json!({
            "apiVersion": api::API_VERSION, "kind": "DistributedRouter",
            "metadata": {"name": name, "namespace": "tenant-a"},
            "spec": {"externalNetwork": ext, "subnets": [
                {"name": "s", "cidr": format!("10.{net}.0.0/16"), "gateway": format!("10.{net}.0.1"),
                 "networkAttachment": format!("net-{net}")}]}
        }))
        .unwrap();
        Api::<DistributedRouter>::namespaced(client.clone(), "tenant-a")
            .create(&pp, &r)
            .await
            .unwrap();
    }
    let ports: Api<Port> = Api::namespaced(client.clone(), "tenant-a");
    let fips: Api<FloatingIP> = Api::namespaced(client.clone(), "tenant-a");
    for i in 0..n {
        let mac = format!("02:20:00:00:{:02x}:{:02x}", i / 256, i % 256);
        let node = ["node-1", "node-2"][i % 2];
        let nad = if i < PER_NET {
            "tenant-a/net-20"
        } else {
            "tenant-a/net-21"
        };
        ports
            .create(
                &pp,
                &mk_port("tenant-a", &format!("p{i}"), node, nad, &addr(i), &mac),
            )
            .await
            .unwrap();
    }
    let w0 = standin.write_count();
    let mut o = opts("controller-0");
    o.lease_duration = Duration::from_secs(600);
    o.renew_interval = Duration::from_secs(300);
    let c = start(&client, o);
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let router = if i < PER_NET { "big" } else { "big2" };
        let f = mk_fip("tenant-a", &format!("f{i}"), router, &addr(i), None);
        fips.create(&pp, &f).await.unwrap();
    }
    let creates = n as u64;
    // Agents: program whatever the controller has processed, repeatedly.
    let mut agent_writes = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        agent_writes += agents_program(&client, None).await as u64;
        let list = fips.list(&ListParams::default()).await.unwrap().items;
        let ready = list
            .iter()
            .filter(|f| {
                f.status
                    .as_ref()
                    .is_some_and(|s| conditions::is_ready(&s.conditions))
            })
            .count();
        if ready == n && all_ready(&client).await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {ready}/{n} Ready"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let elapsed = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let controller_writes = standin.write_count() - w0 - creates - agent_writes;
    let (st, fin, ev) = (c.writes("status"), c.writes("finalizer"), c.writes("event"));
    eprintln!(
        "{n} floating IPs Ready in {elapsed:?}: {controller_writes} controller writes \
         ({:.2}/FloatingIP: status {st}, finalizer {fin}, event {ev}, +1 Lease)",
        controller_writes as f64 / n as f64
    );
    // Per floating IP: finalizer, status (allocated, Pending), status
    // (Ready), the Ready Event = 4; plus the routers' and networks'
    // statuses (their counters move once per pass while floating IPs stream
    // in: bounded by the number of passes, not by n) and the Lease.
    assert!(
        controller_writes <= 4 * n as u64 + 50,
        "{controller_writes} writes for {n} floating IPs"
    );
    assert!(
        st + fin <= 3 * n as u64 + 40,
        "status {st} + finalizer {fin} for {n}"
    );
    c.stop().await;
    standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_agent_lease_is_gone_holds_no_deletion() {
    let (standin, client) = standin().await;
    setup_cluster(&client).await;
    agents_heartbeat(&client, &NODES).await;
    apply_examples(&client).await;
    let c = start(&client, opts("controller-0"));
    // The agents program whatever the controller has processed so far.
    eventually(10, "every object Ready", || async {
        agents_program(&client, None).await;
        all_ready(&client).await.then_some(())
    })
    .await;
    let snats = Api::<SnatGateway>::namespaced(client.clone(), "tenant-a");
    assert_eq!(
        snats
            .get("default")
            .await
            .unwrap()
            .status
            .unwrap()
            .active_node
            .as_deref(),
        Some("gw-1")
    );

    // gw-1's agent is removed: its Lease goes away (the kernel state it
    // left still matches its last report, so nothing flips yet) ...
    Api::<Lease>::namespaced(client.clone(), "kube-dvr")
        .delete(
            &format!("{}gw-1", cluster::AGENT_LEASE_PREFIX),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and deleting the SNAT gateway it serves completes once the live
    // agents are done, although gw-1 never reports the plan without it.
    snats
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    agents_program(&client, Some(&["node-1", "node-2"])).await;
    eventually(10, "the SNAT gateway gone", || async {
        snats
            .get_opt("default")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    c.stop().await;
    standin.shutdown().await;
}

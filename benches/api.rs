//! API-level benchmark: `cargo bench --bench api` (no root needed: every
//! run re-runs this binary inside a fresh private user + mount + network
//! namespace).
//!
//! One simulated node `n1`, the real controller and the real agent
//! in-process against the API stand-in; the agent programs a real kernel
//! (the sandbox's network namespace). The world: an ExternalNetwork on
//! 198.19.0.0/16 (RFC 2544 benchmarking range, inside the underlay range; no
//! traffic is sent), one router with 4 subnets and 1,000 Pods on `n1` with
//! the Ports kube-dvr's CNI plugin records for them. Measured: the time from starting to apply N
//! FloatingIPs until all are `Ready=True` (which includes `Programmed`: the
//! agent reported the digest of a plan with them), the API writes per
//! FloatingIP (stand-in write count, creates excluded; controller and agent
//! split out), and the writes during 2 s of idling after convergence.
//! N = 1,000 against a baseline of N = 10 in the same world, medians over
//! `BENCH_REPS` runs (default 3), each in its own sandbox.
//!
//! Then the agent's cache memory before and after issue 8: agents used to
//! cache every Pod of the cluster (to read network-status); they now cache
//! Ports. In a cluster of 10,000 Pods (a realistic Pod object, ~3 KB of
//! JSON) of which 1,000 have a kube-dvr Port, the resident memory a
//! reflector cache of the agent's kind adds to a process (`VmRSS` after the
//! cache synced minus before it started, each mode in its own process,
//! median of `BENCH_REPS`). The baseline measured in the same run is an
//! empty cache (a kind with no objects): the cost of the watch machinery
//! alone. `BENCH_PART=fips` or `BENCH_PART=memory` runs one part.
use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use kube_dvr::agent::{self, AgentOptions};
use kube_dvr::api::{
    self, conditions, DistributedRouter, ExternalNetwork, FloatingIP, Port, PortSpec,
};
use kube_dvr::controller::{self, ControllerOptions};
use kube_dvr::dataplane::engine::EngineConfig;
use kube_dvr::dataplane::sandbox;
use kube_dvr::telemetry::Telemetry;
use kube_standin::StandIn;

const NS: &str = "kube-dvr";
const TENANT: &str = "t";
const NODE: &str = "n1";
const PODS: usize = 1000;
const SUBNETS: usize = 4;
const BIG: usize = 1000;
const BASELINE: usize = 10;
const IDLE: Duration = Duration::from_secs(2);
/// Concurrent creates while applying (a client applying a directory).
const APPLY_CONCURRENCY: usize = 16;

/// One run's figures.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Run {
    fips: usize,
    /// Start of the apply until every FloatingIP is Ready=True.
    ready_secs: f64,
    /// API writes after the creates, until settled, all writers.
    writes: u64,
    controller_writes: u64,
    agent_writes: u64,
    /// Writes of any kind over [`IDLE`] after convergence.
    idle_writes: u64,
    /// Of which the controller's (statuses, finalizers, Events).
    idle_controller_writes: u64,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn subnet_of(i: usize) -> usize {
    i % SUBNETS
}

/// Pod i's address on its subnet `10.<s>.0.0/16`.
fn pod_ip(i: usize) -> String {
    let j = i / SUBNETS;
    format!("10.{}.{}.{}", subnet_of(i), j / 200, 10 + j % 200)
}

fn mk_pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}"), "namespace": TENANT,
            "annotations": {"k8s.v1.cni.cncf.io/networks": format!("net-{}", subnet_of(i))}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap()
}

/// The Port kube-dvr's CNI plugin records for pod `i`.
fn mk_port(i: usize) -> Port {
    let s = subnet_of(i);
    let ip = pod_ip(i);
    let mut p = Port::new(
        &api::port_name("r1", &format!("s{s}"), ip.parse().unwrap()),
        PortSpec {
            router: "r1".into(),
            subnet: format!("s{s}"),
            network: format!("{TENANT}/net-{s}"),
            ip,
            mac: format!("02:00:00:{s:02x}:{:02x}:{:02x}", i / 256, i % 256),
            node: NODE.into(),
            pod: format!("p{i}"),
            pod_uid: String::new(),
            container_id: format!("c{i}"),
            interface: "net1".into(),
            vm: String::new(),
        },
    );
    p.metadata.namespace = Some(TENANT.into());
    p
}

/// A Pod as a cluster has them (labels, two containers with env, ports and
/// resources, volumes, status with conditions and container statuses):
/// about 3 KB of JSON.
fn realistic_pod(i: usize) -> Pod {
    let container = |name: &str| {
        let env: Vec<_> = (0..8)
            .map(|e| json!({"name": format!("SETTING_{e}"), "value": format!("value-{e}-{i}")}))
            .collect();
        json!({"name": name, "image": format!("registry.example/team/{name}:1.{i}"),
            "env": env,
            "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}, {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]})
    };
    let status = |name: &str| {
        json!({"name": name, "ready": true, "restartCount": 0, "image": format!("registry.example/team/{name}:1.{i}"),
            "imageID": format!("registry.example/team/{name}@sha256:{:064x}", i),
            "containerID": format!("containerd://{:064x}", i * 7 + 1),
            "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}})
    };
    let conditions: Vec<_> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": "2026-12-01T10:00:00Z"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("app-{i}"), "namespace": "apps",
            "labels": {"app": format!("app-{}", i % 50), "pod-template-hash": format!("{:010x}", i), "tier": "backend"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{}-{:010x}", i % 50, i), "uid": format!("{:08x}-0000-4000-8000-{:012x}", i, i), "controller": true}]},
        "spec": {"nodeName": format!("node-{}", i % 100), "containers": [container("app"), container("sidecar")],
            "volumes": [{"name": "config", "configMap": {"name": "app-config"}}, {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "serviceAccountName": "default", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"},
        "status": {"phase": "Running", "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 2), "hostIP": format!("198.18.{}.{}", i / 250, i % 100 + 1),
            "conditions": conditions,
            "containerStatuses": [status("app"), status("sidecar")], "qosClass": "Burstable", "startTime": "2026-12-01T10:00:00Z"}
    }))
    .unwrap()
}

fn mk_fip(i: usize) -> FloatingIP {
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
        "metadata": {"name": format!("f{i}"), "namespace": TENANT},
        "spec": {"router": "r1", "target": {"fixedIP": pod_ip(i)}}
    }))
    .unwrap()
}

/// CRDs, namespaces, the node, the external network, the router, the pods.
async fn setup(client: &Client) {
    let pp = PostParams::default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kube_dvr::api::crds() {
        crds.create(&pp, &crd).await.unwrap();
    }
    for ns in [NS, TENANT] {
        let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&pp, &o)
            .await
            .unwrap();
    }
    // The agent publishes the VTEP (its InternalIP) itself.
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "198.18.0.1"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&pp, &node)
        .await
        .unwrap();
    let ext: ExternalNetwork = serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "ExternalNetwork",
        "metadata": {"name": "bench"},
        "spec": {"cidr": "198.19.0.0/16", "gateway": "198.19.0.1",
            "pools": {"floating": ["198.19.16.0/20"], "snat": ["198.19.0.100-198.19.0.199"],
                      "nodePorts": ["198.19.0.10-198.19.0.99"]},
            "attachment": {"bridge": "br-ext"}}
    }))
    .unwrap();
    Api::<ExternalNetwork>::all(client.clone())
        .create(&pp, &ext)
        .await
        .unwrap();
    let subnets: Vec<_> = (0..SUBNETS)
        .map(|s| {
            json!({"name": format!("s{s}"), "cidr": format!("10.{s}.0.0/16"),
                   "gateway": format!("10.{s}.0.1"), "networkAttachment": format!("net-{s}")})
        })
        .collect();
    let router: DistributedRouter = serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
        "metadata": {"name": "r1", "namespace": TENANT},
        "spec": {"externalNetwork": "bench", "subnets": subnets}
    }))
    .unwrap();
    Api::<DistributedRouter>::namespaced(client.clone(), TENANT)
        .create(&pp, &router)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), TENANT);
    let ports: Api<Port> = Api::namespaced(client.clone(), TENANT);
    futures::stream::iter(0..PODS)
        .map(|i| {
            let (pods, ports) = (pods.clone(), ports.clone());
            async move {
                pods.create(&PostParams::default(), &mk_pod(i)).await?;
                ports.create(&PostParams::default(), &mk_port(i)).await
            }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// Pods in the memory world; of which have a Port.
const MEM_PODS: usize = 10_000;
const MEM_PORTS: usize = 1_000;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The memory world: CRDs, 10,000 Pods, 1,000 Ports (in the stand-in of
/// the bench's own process, so that the caches measured in other
/// processes do not pay for the server).
async fn populate(client: &Client) {
    let pp = PostParams::default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kube_dvr::api::crds() {
        crds.create(&pp, &crd).await.unwrap();
    }
    for ns in ["apps", TENANT] {
        let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&pp, &o)
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let ports: Api<Port> = Api::namespaced(client.clone(), TENANT);
    futures::stream::iter(0..MEM_PODS)
        .map(|i| {
            let (pods, ports) = (pods.clone(), ports.clone());
            async move {
                pods.create(&PostParams::default(), &realistic_pod(i))
                    .await?;
                if i < MEM_PORTS {
                    ports.create(&PostParams::default(), &mk_port(i)).await?;
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// In a process of its own: the memory a synced cache of `mode` (`pods`:
/// every Pod, as agents did; `ports`: every Port, as now; `none`: an
/// empty kind) adds, in KiB, against the API server at `url`.
async fn cache_rss(url: &str, mode: &str) -> u64 {
    let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let undecodable = kube_dvr::cluster::watch::Undecodable::new(Telemetry::new());
    let cfg = watcher::Config::default();
    let before = rss_kib();
    macro_rules! synced {
        ($k:ty, $n:expr) => {{
            let (store, mut changes) =
                kube_dvr::cluster::watch::cache::<$k>(&client, None, cfg, &undecodable);
            tokio::spawn(async move { while changes.next().await.is_some() {} });
            store.wait_until_ready().await.unwrap();
            if let Some(n) = $n {
                assert_eq!(store.state().len(), n);
            }
            // Let the list's transient buffers go.
            tokio::time::sleep(Duration::from_millis(300)).await;
            rss_kib()
        }};
    }
    let after = match mode {
        "pods" => synced!(Pod, Some(MEM_PODS)),
        "ports" => synced!(Port, Some(MEM_PORTS)),
        _ => synced!(Node, None::<usize>),
    };
    after.saturating_sub(before)
}

fn ready(f: &FloatingIP) -> bool {
    f.status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions))
}

/// Poll `f` every 50 ms until it holds; panics after `secs`.
async fn wait_for<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn api_writes(t: &Telemetry, kinds: &[&str]) -> u64 {
    kinds
        .iter()
        .filter_map(|k| t.value("kube_dvr_api_writes_total", &[("kind", k)]))
        .sum::<f64>() as u64
}

const CONTROLLER_KINDS: [&str; 3] = ["status", "finalizer", "event"];
const AGENT_KINDS: [&str; 3] = ["Node", "Lease", "ConfigMap"];

/// One measurement, inside the sandbox.
async fn run_once(n: usize) -> Run {
    sh(&["ip", "link", "set", "lo", "up"]);
    // The external network's bridge the floating-IP namespace plugs into.
    sh(&["ip", "link", "add", "br-ext", "type", "bridge"]);
    sh(&["ip", "link", "set", "br-ext", "up"]);
    let standin = StandIn::start(0).await.expect("start the stand-in");
    let client = Client::try_from(standin.kube_config()).unwrap();
    setup(&client).await;

    let stop = CancellationToken::new();
    let ctl_t = Telemetry::new();
    let mut o = ControllerOptions::new(NS, "bench");
    // No leader-Lease renewal inside the measured windows.
    o.lease_duration = Duration::from_secs(600);
    o.renew_interval = Duration::from_secs(300);
    let ctl = tokio::spawn(controller::run(
        client.clone(),
        o,
        ctl_t.clone(),
        stop.clone(),
    ));
    let mut a = AgentOptions::new(NODE);
    a.namespace = NS.into();
    a.engine = EngineConfig {
        root_netns: "/proc/self/ns/net".into(),
        netns_dir: "/run/netns".into(),
    };
    a.resync = Duration::from_secs(3600);
    // No heartbeat renewal inside the measured windows either.
    a.heartbeat = Duration::from_secs(20);
    let agent_t: Arc<Telemetry> = Telemetry::new();
    let agent = tokio::spawn(agent::run(client.clone(), a, agent_t.clone(), stop.clone()));

    // The router programmed on n1 before the floating IPs come.
    let routers: Api<DistributedRouter> = Api::namespaced(client.clone(), TENANT);
    wait_for(120, "the router Ready", || async {
        routers
            .get("r1")
            .await
            .ok()
            .and_then(|r| r.status)
            .is_some_and(|s| conditions::is_ready(&s.conditions))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Watch the floating IPs; note when the last one turns Ready.
    let fips: Api<FloatingIP> = Api::namespaced(client.clone(), TENANT);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let watch = {
        let fips = fips.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut s = watcher(fips, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(f)) = s.next().await {
                if ready(&f) {
                    seen.insert(f.metadata.name.clone().unwrap_or_default());
                }
                if seen.len() == n {
                    let _ = done_tx.send(Instant::now());
                    return;
                }
            }
        })
    };
    let w0 = standin.write_count();
    let (c0, a0) = (
        api_writes(&ctl_t, &CONTROLLER_KINDS),
        api_writes(&agent_t, &AGENT_KINDS),
    );
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let fips = fips.clone();
            async move { fips.create(&PostParams::default(), &mk_fip(i)).await }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let t_ready = tokio::time::timeout(Duration::from_secs(600), done_rx)
        .await
        .expect("every FloatingIP Ready within 600 s")
        .unwrap();
    watch.abort();
    let ready_secs = (t_ready - t0).as_secs_f64();
    // Let the last writes (the Ready Events) land, then idle.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let w1 = standin.write_count();
    let c1 = api_writes(&ctl_t, &CONTROLLER_KINDS);
    let a1 = api_writes(&agent_t, &AGENT_KINDS);
    tokio::time::sleep(IDLE).await;
    let idle_writes = standin.write_count() - w1;
    let idle_controller_writes = api_writes(&ctl_t, &CONTROLLER_KINDS) - c1;
    let all_ready = fips.list(&Default::default()).await.unwrap().items;
    assert_eq!(all_ready.iter().filter(|f| ready(f)).count(), n);

    stop.cancel();
    ctl.await.unwrap().unwrap();
    agent.await.unwrap().unwrap();
    standin.shutdown().await;
    Run {
        fips: n,
        ready_secs,
        writes: w1 - w0 - n as u64,
        controller_writes: c1 - c0,
        agent_writes: a1 - a0,
        idle_writes,
        idle_controller_writes,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Run one measurement in a fresh sandbox (a child process) and read its
/// figures back.
fn measure(n: usize) -> Run {
    let out = std::env::temp_dir().join(format!(
        "kube-dvr-bench-api-{}-{n}.json",
        std::process::id()
    ));
    let args = vec![
        "--one".to_string(),
        n.to_string(),
        out.display().to_string(),
    ];
    let ok = sandbox::rerun_self(&args).expect("outside the sandbox");
    assert!(ok, "the sandboxed run for {n} FloatingIPs failed");
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    serde_json::from_str(&text).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--mem") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let kib = rt.block_on(cache_rss(&args[1], &args[2]));
        std::fs::write(&args[3], kib.to_string()).unwrap();
        return;
    }
    if args.first().map(String::as_str) == Some("--one") {
        // Inside: one measurement, written to the file named.
        assert!(
            sandbox::rerun_self(&[]).is_none(),
            "--one runs in the sandbox"
        );
        let n: usize = args[1].parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(run_once(n));
        std::fs::write(&args[2], serde_json::to_string(&r).unwrap()).unwrap();
        return;
    }
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    // BENCH_PART=fips or memory runs one part.
    let part = std::env::var("BENCH_PART").unwrap_or_default();
    if part == "memory" {
        memory(reps);
        return;
    }
    let mut big = Vec::new();
    let mut base = Vec::new();
    for rep in 0..reps {
        for (n, into) in [(BASELINE, &mut base), (BIG, &mut big)] {
            let r = measure(n);
            eprintln!("run {}/{reps}: {r:?}", rep + 1);
            into.push(r);
        }
    }
    let med = |rs: &[Run], f: &dyn Fn(&Run) -> f64| median(rs.iter().map(f).collect());
    let big_s = med(&big, &|r| r.ready_secs);
    let base_s = med(&base, &|r| r.ready_secs);
    let per_big = big_s / BIG as f64;
    let per_base = base_s / BASELINE as f64;
    let per_fip = |rs: &[Run], f: &dyn Fn(&Run) -> u64| med(rs, &|r| f(r) as f64 / r.fips as f64);
    println!(
        "{BIG} FloatingIPs Ready: {big_s:.2} s ({:.2} ms/FIP), baseline {BASELINE}: {base_s:.3} s \
         ({:.2} ms/FIP), ratio per FIP {:.2} (median of {reps}; {PODS} pods, 1 router x {SUBNETS} subnets, 1 node)",
        per_big * 1e3,
        per_base * 1e3,
        per_big / per_base,
    );
    println!(
        "API writes/FIP: {:.2} at {BIG} (controller {:.2}, agent {:.2}), {:.2} at {BASELINE} \
         (controller {:.2}, agent {:.2}); creates excluded",
        per_fip(&big, &|r| r.writes),
        per_fip(&big, &|r| r.controller_writes),
        per_fip(&big, &|r| r.agent_writes),
        per_fip(&base, &|r| r.writes),
        per_fip(&base, &|r| r.controller_writes),
        per_fip(&base, &|r| r.agent_writes),
    );
    let idle_ctl = big
        .iter()
        .chain(&base)
        .map(|r| r.idle_controller_writes)
        .max()
        .unwrap_or(0);
    let idle_all = big
        .iter()
        .chain(&base)
        .map(|r| r.idle_writes)
        .max()
        .unwrap_or(0);
    println!(
        "idle after convergence ({} s): controller writes {idle_ctl} (max over runs), \
         all writers {idle_all}",
        IDLE.as_secs()
    );
    assert_eq!(idle_ctl, 0, "an idle controller writes nothing");

    if part != "fips" {
        memory(reps);
    }
}

/// The agent's cache before (every Pod) and after (every Port).
fn memory(reps: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let standin = rt.block_on(async {
        let standin = StandIn::start(0).await.expect("start the stand-in");
        populate(&Client::try_from(standin.kube_config()).unwrap()).await;
        standin
    });
    let url = standin.url();
    let mut mem: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for rep in 0..reps {
        for mode in ["none", "pods", "ports"] {
            let out = std::env::temp_dir()
                .join(format!("kube-dvr-bench-mem-{}-{mode}", std::process::id()));
            let exe = std::env::current_exe().unwrap();
            let ok = Command::new(exe)
                .args(["--mem", &url, mode, &out.display().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "the memory run ({mode}) failed");
            let kib: f64 = std::fs::read_to_string(&out).unwrap().parse().unwrap();
            let _ = std::fs::remove_file(&out);
            eprintln!("memory run {}/{reps}: {mode} cache +{kib} KiB", rep + 1);
            mem.entry(mode).or_default().push(kib);
        }
    }
    let m = |mode: &str| median(mem[mode].clone()) / 1024.0;
    println!(
        "agent cache memory, {MEM_PODS} Pods of which {MEM_PORTS} attached: before (every Pod) \
         +{:.1} MiB, after (every Port) +{:.1} MiB, ratio {:.1}; empty cache +{:.1} MiB \
         (VmRSS delta of a process holding the cache, median of {reps})",
        m("pods"),
        m("ports"),
        m("pods") / m("ports").max(0.1),
        m("none"),
    );
    assert!(
        m("ports") < m("pods"),
        "caching Ports costs less than caching Pods"
    );
    rt.block_on(standin.shutdown());
}

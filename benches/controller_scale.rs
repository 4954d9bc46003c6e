//! The controller at scale (issue 11): `cargo bench --bench controller_scale`
//! (no root, no sandbox: no kernel is programmed).
//!
//! The real controller runs in a child process (this binary re-run with
//! `--controller`, so its resident memory is its own) against the API
//! stand-in in this process. The world ([`World`]): `BENCH_NODES` Nodes
//! (default 1,000) with the annotations agents publish (VTEP, DVR MAC) and
//! their heartbeat Leases (renewed every 10 s, as agents do), one
//! ExternalNetwork, one router per node (2 subnets each, its Ports spread
//! over 10 consecutive nodes), `BENCH_PORTS` Ports (default 100,000, each
//! with its Pod) and `BENCH_FIPS` FloatingIPs (default 10,000) on the first
//! Ports.
//!
//! A load generator plays every agent ([`agents`]): on every change of its
//! caches (the ones an agent has: the four kinds, Ports, Nodes) it builds
//! the resolver's input as an agent does
//! ([`agent::input::InputState::cluster_input`]), resolves once, plans
//! every node ([`plan_node`]) and writes `kubedvr.io/programmed`
//! ([`cluster::plan_digest`]) on each Node whose digest changed. (A
//! cluster's 1,000 agents each resolve and plan their own node; one
//! process doing it for all is slower than any of them, which counts as
//! waiting, not as controller work.)
//!
//! Measured, in a world of the size asked and in a baseline world of
//! 10 nodes / 100 FloatingIPs / 1,000 Ports in the same run:
//! - **initial convergence**: from the controller's start until every
//!   FloatingIP and router is Ready and the controller is quiet;
//! - **one change** (`BENCH_CHANGES`, default 5, medians): one new
//!   FloatingIP created, until its status is Ready and the controller is
//!   quiet again. The controller's work for it: its passes' duration
//!   (`controller_runtime_reconcile_time_seconds`, summed over the passes
//!   the change caused), its CPU time (the child's threads' `schedstat`),
//!   the number of passes, and where a pass's time goes
//!   (`kube_dvr_controller_pass_phase_seconds`: snapshot, compute, write,
//!   attachments); the API writes the controller made
//!   (`kube_dvr_api_writes_total`, cross-checked with the stand-in's count
//!   less the create and the load generator's writes); the wall time to
//!   Ready, which includes the load generator;
//! - the controller's **memory**: the child's VmRSS after convergence;
//! - a **profile of the pass's pure part** (`desired::compute`) on the
//!   converged world, in this process: the resolver's input, `resolve`,
//!   planning and digesting every node, every node's input key
//!   ([`node_keys`]), and the whole of `compute` twice: with no digest
//!   remembered (every node planned: what every pass cost before the
//!   controller remembered them) and with every digest remembered (a pass
//!   after a change that concerns no node), medians of 3.
//!
//! Heartbeats: before each measured change every Lease is renewed and the
//! controller is let go quiet, so renewals do not fall inside the windows;
//! between changes (and during convergence) every Lease is renewed every
//! 10 s. Ends with `scale: controller_change_ms=… controller_writes_per_change=… controller_rss_mb=…`
//! for the big world. `BENCH_ONLY=big|base` runs one world.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use kube_dvr::agent::input::{InputState, Snapshot as AgentSnapshot};
use kube_dvr::api::{
    conditions, Build, DistributedRouter, DvrKind, ExternalNetwork, FloatingIP, PerKind, Port,
};
use kube_dvr::cluster::watch::{cache, Stores, Undecodable};
use kube_dvr::cluster::{self, PROGRAMMED_ANNOTATION};
use kube_dvr::controller::{self, desired, ControllerOptions};
use kube_dvr::lab::procs::{free_addr, Telemetry as Remote};
use kube_dvr::plan::inputs::node_keys;
use kube_dvr::plan::resolve::resolve;
use kube_dvr::plan::{names, plan_node};
use kube_dvr::telemetry::Telemetry;
use kube_standin::StandIn;

const NS: &str = "kube-dvr";
const TENANT: &str = "t";
/// Nodes a router's Ports are spread over.
const SPAN: usize = 10;
const SUBNETS: usize = 2;
/// The controller is quiet when no pass started for this long.
const QUIET: Duration = Duration::from_millis(500);
/// Agents renew their heartbeat Lease this often.
const HEARTBEAT: Duration = Duration::from_secs(10);
const APPLY_CONCURRENCY: usize = 16;

#[derive(Clone, Copy, Debug)]
struct World {
    nodes: usize,
    fips: usize,
    ports: usize,
}

impl World {
    fn routers(&self) -> usize {
        self.nodes.max(1)
    }
    /// Port i: (router, subnet, index in its subnet, node).
    fn port(&self, i: usize) -> (usize, usize, usize, usize) {
        let r = i % self.routers();
        let k = i / self.routers();
        let node = (r + k % SPAN.min(self.nodes)) % self.nodes;
        (r, k % SUBNETS, k / SUBNETS, node)
    }
    fn cidr(r: usize, s: usize) -> (u8, u8) {
        ((r >> 7) as u8, (((r & 127) << 1) | s) as u8)
    }
    fn port_ip(&self, i: usize) -> String {
        let (r, s, j, _) = self.port(i);
        let (a, b) = Self::cidr(r, s);
        assert!(j < 240, "too many Ports per subnet: raise BENCH_NODES");
        format!("10.{a}.{b}.{}", 10 + j)
    }
}

fn vtep(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, (k / 250) as u8, (k % 250 + 1) as u8)
}

fn micro_now() -> String {
    Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// CRDs and namespaces through the API; the world's Nodes, Leases, Pods and
/// Ports stored directly (they are valid; admission one by one would take
/// minutes); the external network, routers and FloatingIPs through the API.
async fn build(standin: &StandIn, client: &Client, w: World) {
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
    let now = micro_now();
    for k in 0..w.nodes {
        let name = format!("n{k}");
        let ip = vtep(k);
        standin
            .insert_without_admission(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                    "annotations": {cluster::VTEP_ANNOTATION: ip.to_string(),
                        cluster::DVR_MAC_ANNOTATION: names::dvr_mac(ip).to_string()}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": ip.to_string()}]}
            }))
            .unwrap();
        standin
            .insert_without_admission(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": format!("{}{name}", cluster::AGENT_LEASE_PREFIX), "namespace": NS},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 30, "renewTime": now}
            }))
            .unwrap();
    }
    for i in 0..w.ports {
        let (r, s, _, node) = w.port(i);
        let ip = w.port_ip(i);
        let net = format!("net-{r}-{s}");
        standin
            .insert_without_admission(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": TENANT,
                    "annotations": {cluster::NETWORKS_ANNOTATION: net}},
                "spec": {"nodeName": format!("n{node}"), "containers": [{"name": "c", "image": "x"}]}
            }))
            .unwrap();
        let name =
            kube_dvr::api::port_name(&format!("r{r}"), &format!("s{s}"), ip.parse().unwrap());
        standin
            .insert_without_admission(json!({
                "apiVersion": "kubedvr.io/v1alpha1", "kind": "Port",
                "metadata": {"name": name, "namespace": TENANT},
                "spec": {"router": format!("r{r}"), "subnet": format!("s{s}"),
                    "network": format!("{TENANT}/{net}"), "ip": ip,
                    "mac": format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", i >> 24, (i >> 16) & 255, (i >> 8) & 255, i & 255),
                    "node": format!("n{node}"), "pod": format!("p{i}"), "podUid": "",
                    "containerID": format!("c{i}"), "interface": "net1", "vm": ""}
            }))
            .unwrap();
    }
    let ext: ExternalNetwork = serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "ExternalNetwork",
        "metadata": {"name": "ext"},
        "spec": {"cidr": "100.64.0.0/16", "gateway": "100.64.0.1",
            "pools": {"floating": ["100.64.64.0/18"], "snat": ["100.64.0.100-100.64.0.199"],
                      "nodePorts": ["100.64.8.0/21"]},
            "attachment": {"bridge": "br-ext"}}
    }))
    .unwrap();
    Api::<ExternalNetwork>::all(client.clone())
        .create(&pp, &ext)
        .await
        .unwrap();
    let routers: Api<DistributedRouter> = Api::namespaced(client.clone(), TENANT);
    futures::stream::iter(0..w.routers())
        .map(|r| {
            let routers = routers.clone();
            async move {
                let subnets: Vec<_> = (0..SUBNETS)
                    .map(|s| {
                        let (a, b) = World::cidr(r, s);
                        json!({"name": format!("s{s}"), "cidr": format!("10.{a}.{b}.0/24"),
                           "gateway": format!("10.{a}.{b}.1"), "networkAttachment": format!("net-{r}-{s}")})
                    })
                    .collect();
                let router: DistributedRouter = serde_json::from_value(json!({
                    "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
                    "metadata": {"name": format!("r{r}"), "namespace": TENANT},
                    "spec": {"externalNetwork": "ext", "subnets": subnets}
                }))
                .unwrap();
                routers.create(&PostParams::default(), &router).await
            }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let fips: Api<FloatingIP> = Api::namespaced(client.clone(), TENANT);
    futures::stream::iter(0..w.fips)
        .map(|i| {
            let fips = fips.clone();
            async move { fips.create(&PostParams::default(), &mk_fip(w, i)).await }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
}

/// FloatingIP `f<i>` on Port i's address.
fn mk_fip(w: World, i: usize) -> FloatingIP {
    let (r, ..) = w.port(i);
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
        "metadata": {"name": format!("f{i}"), "namespace": TENANT},
        "spec": {"router": format!("r{r}"), "target": {"fixedIP": w.port_ip(i)}}
    }))
    .unwrap()
}

/// The caches every agent has.
struct Caches {
    objects: PerKind<Stores>,
    ports: Store<Port>,
    nodes: Store<Node>,
}

impl Caches {
    fn snapshot(&self) -> AgentSnapshot {
        AgentSnapshot {
            objects: PerKind {
                external_networks: self.objects.external_networks.state(),
                routers: self.objects.routers.state(),
                floating_ips: self.objects.floating_ips.state(),
                snat_gateways: self.objects.snat_gateways.state(),
                firewalls: self.objects.firewalls.state(),
                port_forwardings: self.objects.port_forwardings.state(),
                load_balancers: self.objects.load_balancers.state(),
            },
            ports: self.ports.state(),
            nodes: self.nodes.state(),
            undecodable: Vec::new(),
        }
    }
}

/// What the load generator did.
#[derive(Default)]
struct AgentStats {
    /// Node annotation writes.
    writes: AtomicU64,
    /// Resolve-and-plan-every-node rounds, and their total time (µs).
    rounds: AtomicU64,
    busy_us: AtomicU64,
    /// A round is running or due.
    busy: AtomicBool,
}

/// Plays every agent until `stop` (see the module docs).
async fn agents(
    client: Client,
    caches: Arc<Caches>,
    mut changed: tokio::sync::watch::Receiver<u64>,
    stats: Arc<AgentStats>,
    stop: CancellationToken,
) {
    let nodes_api: Api<Node> = Api::all(client);
    let mut input = InputState::default();
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    loop {
        stats.busy.store(false, Ordering::SeqCst);
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
        stats.busy.store(true, Ordering::SeqCst);
        // Agents debounce too.
        tokio::time::sleep(Duration::from_millis(10)).await;
        changed.borrow_and_update();
        let t0 = Instant::now();
        let snap = caches.snapshot();
        // Off the runtime: the stand-in shares it and must keep answering
        // the controller meanwhile.
        let (state, digests) = tokio::task::spawn_blocking(move || {
            let now = Timestamp::from_second(Timestamp::now().as_second())
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let inp = input.cluster_input(&snap, "n0", vtep(0), now);
            let view = resolve(&inp).view;
            let digests: Vec<(String, String)> = view
                .nodes
                .keys()
                .map(|n| (n.clone(), cluster::plan_digest(&plan_node(&view, n))))
                .collect();
            (input, digests)
        })
        .await
        .expect("the agents' round");
        input = state;
        let digests: Vec<(String, String)> = digests
            .into_iter()
            .filter(|(n, d)| reported.get(n) != Some(d))
            .collect();
        stats.rounds.fetch_add(1, Ordering::SeqCst);
        stats
            .busy_us
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::SeqCst);
        let written: Vec<_> = futures::stream::iter(digests)
            .map(|(n, d)| {
                let api = nodes_api.clone();
                async move {
                    let patch = json!({"metadata": {"annotations": {PROGRAMMED_ANNOTATION: d}}});
                    api.patch(&n, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| (n, d))
                }
            })
            .buffer_unordered(APPLY_CONCURRENCY)
            .collect()
            .await;
        for r in written {
            let (n, d) = r.expect("report a digest");
            stats.writes.fetch_add(1, Ordering::SeqCst);
            reported.insert(n, d);
        }
    }
}

/// Renews every agent's heartbeat Lease.
async fn renew_all(client: &Client, nodes: usize) {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NS);
    let now = micro_now();
    futures::stream::iter(0..nodes)
        .map(|k| {
            let (leases, now) = (leases.clone(), now.clone());
            async move {
                let patch = json!({"spec": {"renewTime": now}});
                leases
                    .patch(
                        &format!("{}n{k}", cluster::AGENT_LEASE_PREFIX),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
            }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .for_each(|r| {
            r.expect("renew a Lease");
        });
}

/// The controller child's CPU time so far (ns, every thread).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The controller's counters, read over its metrics endpoint.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    passes: f64,
    pass_secs: f64,
    writes: f64,
    phases: [f64; PHASES.len()],
}

const PHASES: [&str; 4] = ["snapshot", "compute", "write", "attachments"];
const WRITE_KINDS: [&str; 6] = ["status", "finalizer", "event", "cursors", "port", "nad"];

fn counters(m: &Remote) -> Counters {
    let text = m.render();
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let mut c = Counters {
        passes: sum("controller_runtime_reconcile_total{"),
        pass_secs: sum("controller_runtime_reconcile_time_seconds_sum{"),
        writes: WRITE_KINDS
            .iter()
            .map(|k| sum(&format!("kube_dvr_api_writes_total{{kind=\"{k}\"}}")))
            .sum(),
        ..Default::default()
    };
    for (i, p) in PHASES.iter().enumerate() {
        c.phases[i] = sum(&format!(
            "kube_dvr_controller_pass_phase_seconds_sum{{phase=\"{p}\"}}"
        ));
    }
    c
}

/// Wait until the controller started no pass for [`QUIET`] and the load
/// generator is idle.
async fn quiet(m: &Remote, stats: &AgentStats) {
    let mut last = counters(m).passes;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counters(m).passes;
        if now != last || stats.busy.load(Ordering::SeqCst) {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return;
        }
    }
}

fn ready<K: DvrKind>(o: &K) -> bool {
    o.conditions().is_some_and(conditions::is_ready)
}

/// One change's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Change {
    /// Sum of the controller's passes' durations (ms) the change caused.
    pass_ms: f64,
    /// The controller's CPU time (ms) over the change.
    cpu_ms: f64,
    passes: f64,
    /// The controller's writes (its own counters).
    writes: f64,
    /// The stand-in's writes less the create and the load generator's.
    server_writes: f64,
    /// Create → Ready (ms), load generator included.
    ready_ms: f64,
    /// The load generator's rounds' time over the change (ms).
    agents_ms: f64,
    phases_ms: [f64; PHASES.len()],
}

/// Figures of one world.
#[derive(Debug, Default)]
struct Figures {
    world: Option<World>,
    build_s: f64,
    converge_s: f64,
    converge_cpu_s: f64,
    rss_mb: f64,
    hwm_mb: f64,
    changes: Vec<Change>,
    /// Offline profile of `desired::compute` (ms): input, resolve, plan +
    /// digest every node, every node's input key, whole compute (no
    /// digest remembered), whole compute again (every digest remembered).
    profile: [f64; 6],
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

impl Figures {
    fn med(&self, f: impl Fn(&Change) -> f64) -> f64 {
        median(self.changes.iter().map(f).collect())
    }
}

/// The controller's pure pass on the converged world, timed in parts (ms),
/// on this process's copy of the caches.
fn profile(caches: &Caches, nodes: usize) -> [f64; 6] {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let snap = caches.snapshot();
        let s = desired::Snapshot {
            objects: snap.objects.clone(),
            pods: cluster::port_infos(snap.ports.iter().map(|p| &**p)).into(),
            nodes: snap.nodes.iter().map(|n| (**n).clone()).collect(),
            agents: (0..nodes).map(|k| (format!("n{k}"), true)).collect(),
            leases_synced: true,
            now: Timestamp::now(),
            ..Default::default()
        };
        let t0 = Instant::now();
        let input = desired::cluster_input(&s);
        let t1 = Instant::now();
        let res = resolve(&input);
        let t2 = Instant::now();
        let digests: Vec<String> = res
            .view
            .nodes
            .keys()
            .map(|n| cluster::plan_digest(&plan_node(&res.view, n)))
            .collect();
        assert_eq!(digests.len(), nodes);
        let t3 = Instant::now();
        std::hint::black_box(node_keys(&res.view));
        let t4 = Instant::now();
        let mut cache = desired::NodeDigests::default();
        std::hint::black_box(desired::compute_with(&s, &mut cache));
        let t5 = Instant::now();
        // Again with the digests remembered: what a pass costs when no
        // node's inputs changed.
        std::hint::black_box(desired::compute_with(&s, &mut cache));
        let t6 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        runs.push([
            ms(t0, t1),
            ms(t1, t2),
            ms(t2, t3),
            ms(t3, t4),
            ms(t4, t5),
            ms(t5, t6),
        ]);
    }
    let mut out = [0.0; 6];
    for (i, o) in out.iter_mut().enumerate() {
        *o = median(runs.iter().map(|r| r[i]).collect());
    }
    out
}

struct Builder<'a> {
    client: &'a Client,
    undecodable: &'a Arc<Undecodable>,
    changed: &'a tokio::sync::watch::Sender<u64>,
}

fn reflect<K>(b: &Builder<'_>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, mut stream) = cache(b.client, None, Default::default(), b.undecodable);
    let changed = b.changed.clone();
    tokio::spawn(async move {
        while stream.next().await.is_some() {
            changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    store
}

impl Build<Stores> for Builder<'_> {
    fn build<K: DvrKind>(&mut self) -> Store<K> {
        reflect(self)
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run_world(w: World, changes: usize) -> Figures {
    let mut fig = Figures {
        world: Some(w),
        ..Default::default()
    };
    let standin = StandIn::start(0).await.expect("start the stand-in");
    let client = Client::try_from(standin.kube_config()).unwrap();
    let t = Instant::now();
    build(&standin, &client, w).await;
    fig.build_s = t.elapsed().as_secs_f64();
    eprintln!("[{} nodes] world built in {:.1} s", w.nodes, fig.build_s);

    // The agents' caches and the load generator.
    let stop = CancellationToken::new();
    let (changed_tx, changed_rx) = tokio::sync::watch::channel(0u64);
    let undecodable = Undecodable::new(Telemetry::new());
    let mut b = Builder {
        client: &client,
        undecodable: &undecodable,
        changed: &changed_tx,
    };
    let objects = PerKind::build(&mut b);
    let caches = Arc::new(Caches {
        objects,
        ports: reflect(&b),
        nodes: reflect(&b),
    });
    caches
        .objects
        .floating_ips
        .wait_until_ready()
        .await
        .unwrap();
    caches.ports.wait_until_ready().await.unwrap();
    caches.nodes.wait_until_ready().await.unwrap();
    let stats = Arc::new(AgentStats::default());
    let gen = tokio::spawn(agents(
        client.clone(),
        caches.clone(),
        changed_rx,
        stats.clone(),
        stop.clone(),
    ));
    // Heartbeats; a measurement holds `beat` so none lands inside it.
    let beat = Arc::new(tokio::sync::Mutex::new(Instant::now()));
    let heart = {
        let (client, beat, stop) = (client.clone(), beat.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let mut last = beat.lock().await;
                if last.elapsed() >= HEARTBEAT {
                    renew_all(&client, w.nodes).await;
                    *last = Instant::now();
                }
            }
        })
    };

    // The controller, in its own process.
    let metrics = free_addr().unwrap();
    let exe = std::env::current_exe().unwrap();
    let child = Kill(
        Command::new(exe)
            .args(["--controller", &standin.url(), &metrics.to_string()])
            .spawn()
            .expect("start the controller"),
    );
    let pid = child.0.id();
    let m = Remote { addr: metrics };
    let t0 = Instant::now();
    let cpu0 = cpu_ns(pid);
    let total = w.fips + w.routers();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = caches
            .objects
            .floating_ips
            .state()
            .iter()
            .filter(|f| ready(&***f))
            .count()
            + caches
                .objects
                .routers
                .state()
                .iter()
                .filter(|r| ready(&***r))
                .count();
        if n == total {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3600),
            "initial convergence within an hour ({n}/{total} Ready)"
        );
    }
    quiet(&m, &stats).await;
    fig.converge_s = (t0.elapsed() - QUIET).as_secs_f64();
    fig.converge_cpu_s = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    fig.rss_mb = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    fig.hwm_mb = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    eprintln!(
        "[{} nodes] converged in {:.1} s (controller CPU {:.1} s), controller RSS {:.0} MiB (peak {:.0})",
        w.nodes, fig.converge_s, fig.converge_cpu_s, fig.rss_mb, fig.hwm_mb
    );

    let fips: Api<FloatingIP> = Api::namespaced(client.clone(), TENANT);
    for c in 0..changes {
        let mut last = beat.lock().await;
        renew_all(&client, w.nodes).await;
        *last = Instant::now();
        quiet(&m, &stats).await;
        let i = w.fips + c;
        let name = format!("f{i}");
        let (c0, cpu0, w0) = (counters(&m), cpu_ns(pid), standin.write_count());
        let (a0, busy0) = (
            stats.writes.load(Ordering::SeqCst),
            stats.busy_us.load(Ordering::SeqCst),
        );
        let t0 = Instant::now();
        fips.create(&PostParams::default(), &mk_fip(w, i))
            .await
            .unwrap();
        loop {
            let done = caches
                .objects
                .floating_ips
                .state()
                .iter()
                .any(|f| f.metadata.name.as_deref() == Some(&name) && ready(&**f));
            if done {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(600), "{name} Ready");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
        quiet(&m, &stats).await;
        let c1 = counters(&m);
        let agent_writes = stats.writes.load(Ordering::SeqCst) - a0;
        let mut ch = Change {
            pass_ms: (c1.pass_secs - c0.pass_secs) * 1e3,
            cpu_ms: (cpu_ns(pid) - cpu0) as f64 / 1e6,
            passes: c1.passes - c0.passes,
            writes: c1.writes - c0.writes,
            server_writes: (standin.write_count() - w0) as f64 - 1.0 - agent_writes as f64,
            ready_ms,
            agents_ms: (stats.busy_us.load(Ordering::SeqCst) - busy0) as f64 / 1e3,
            ..Default::default()
        };
        for (i, p) in ch.phases_ms.iter_mut().enumerate() {
            *p = (c1.phases[i] - c0.phases[i]) * 1e3;
        }
        drop(last);
        eprintln!("[{} nodes] change {}/{changes}: {ch:?}", w.nodes, c + 1);
        fig.changes.push(ch);
    }
    fig.rss_mb = fig.rss_mb.max(status_kib(pid, "VmRSS:") as f64 / 1024.0);
    fig.hwm_mb = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    drop(child);
    stop.cancel();
    let _ = gen.await;
    let _ = heart.await;
    fig.profile = profile(&caches, w.nodes);
    eprintln!(
        "[{} nodes] compute profile (ms): {:?}",
        w.nodes, fig.profile
    );
    standin.shutdown().await;
    fig
}

/// `--controller URL METRICS`: the controller, until killed.
async fn controller_process(url: &str, metrics: SocketAddr) {
    let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let t = Telemetry::new();
    let served = t.clone();
    tokio::spawn(kube_dvr::telemetry::serve(metrics, served));
    let mut o = ControllerOptions::new(NS, "bench");
    // No leader-Lease renewal or resync inside the measured windows.
    o.lease_duration = Duration::from_secs(3600);
    o.renew_interval = Duration::from_secs(1800);
    o.resync = Duration::from_secs(3600);
    controller::run(client, o, t, CancellationToken::new())
        .await
        .unwrap();
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.first().map(String::as_str) == Some("--controller") {
        rt.block_on(controller_process(&args[1], args[2].parse().unwrap()));
        return;
    }
    let big = World {
        nodes: env("BENCH_NODES", 1000),
        fips: env("BENCH_FIPS", 10_000),
        ports: env("BENCH_PORTS", 100_000),
    };
    let base = World {
        nodes: 10,
        fips: 100,
        ports: 1000,
    };
    let changes = env("BENCH_CHANGES", 5).max(1);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut out = Vec::new();
    for (label, w) in [("base", base), ("big", big)] {
        if only.is_empty() || only == label {
            out.push((label, rt.block_on(run_world(w, changes))));
        }
    }
    let line = |f: &Figures| {
        let w = f.world.unwrap();
        println!(
            "{} nodes / {} FIPs / {} Ports: converged in {:.1} s (controller CPU {:.1} s), \
             RSS {:.0} MiB (peak {:.0}); per change (median of {}): controller passes {:.0}, \
             pass time {:.1} ms, CPU {:.1} ms, writes {:.0} (stand-in count {:.0}), \
             Ready after {:.0} ms (load generator {:.0} ms); pass phases (ms): {}; \
             compute profile (ms): input {:.1}, resolve {:.1}, plan+digest every node {:.1}, \
             node input keys {:.1}, compute {:.1} planning every node, {:.1} with every digest remembered",
            w.nodes,
            w.fips,
            w.ports,
            f.converge_s,
            f.converge_cpu_s,
            f.rss_mb,
            f.hwm_mb,
            f.changes.len(),
            f.med(|c| c.passes),
            f.med(|c| c.pass_ms),
            f.med(|c| c.cpu_ms),
            f.med(|c| c.writes),
            f.med(|c| c.server_writes),
            f.med(|c| c.ready_ms),
            f.med(|c| c.agents_ms),
            PHASES
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{p} {:.1}", f.med(|c| c.phases_ms[i])))
                .collect::<Vec<_>>()
                .join(", "),
            f.profile[0],
            f.profile[1],
            f.profile[2],
            f.profile[3],
            f.profile[4],
            f.profile[5],
        );
    };
    for (_, f) in &out {
        line(f);
    }
    if let [(_, b), (_, g)] = &out[..] {
        println!(
            "ratios big/base: pass time per change {:.1}, CPU per change {:.1}, writes per change {:.2}, RSS {:.1}",
            g.med(|c| c.pass_ms) / b.med(|c| c.pass_ms),
            g.med(|c| c.cpu_ms) / b.med(|c| c.cpu_ms),
            g.med(|c| c.writes) / b.med(|c| c.writes),
            g.rss_mb / b.rss_mb,
        );
    }
    if let Some((_, f)) = out.last() {
        println!(
            "scale: controller_change_ms={:.1} controller_writes_per_change={:.0} controller_rss_mb={:.0}",
            f.med(|c| c.pass_ms),
            f.med(|c| c.writes),
            f.rss_mb
        );
    }
}

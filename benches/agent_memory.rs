//! Agent memory at scale (issue 11): `cargo bench --bench agent_memory` (no
//! root needed: it re-runs itself inside a private user + mount + network
//! namespace; the agent programs that namespace's kernel, never the host's).
//!
//! The real `kube-dvr agent` binary runs as a process of its own (its
//! kubeconfig points at the API stand-in, which runs in the bench's process
//! and so is not counted) for node `n0` of a world of [`NODES`] Nodes (each
//! with a VTEP annotation and the addresses, capacity and image list a
//! kubelet writes). Router `r0` lives on `n0`: the *fixed set*, the same in
//! both worlds ([`FIXED_PORTS`] Ports on `n0`, as many of `r0` on other
//! nodes, [`FIXED_FIPS`] FloatingIPs). Routers `r1`..`r99` live on the other
//! nodes only, with the *other* Ports and FloatingIPs:
//!
//! - the big world: [`BIG_PORTS`] Ports and [`BIG_FIPS`] FloatingIPs;
//! - the baseline world: [`BASE_PORTS`] Ports and [`BASE_FIPS`]
//!   FloatingIPs; nothing else differs.
//!
//! Ports are recorded as kube-dvr's CNI plugin records them (pod uid,
//! container id, interface). The world is inserted into the stand-in
//! directly, then the real controller (in the bench's process) processes it
//! (statuses: addresses, indexes, VNIs) and stops. Per world and run: the
//! agent starts, the bench waits for its `/readyz` (its first pass reached
//! the kernel) and [`SETTLE`] more, and reads `VmRSS` (and `VmHWM`, the
//! peak) from `/proc/<pid>/status`; medians over `BENCH_REPS` runs (default
//! 3); `KUBE_DVR_BIN` runs another build of the agent. Ends with `scale: agent_rss_mb=…` (the big world's median).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use kube_dvr::agent::input::{InputState, Snapshot};
use kube_dvr::agent::port_cache::PortCache;
use kube_dvr::api::{
    self, DistributedRouter, DvrKind, ExternalNetwork, FloatingIP, PerKind, Port, SnatGateway,
};
use kube_dvr::cluster::watch::{cache, cache_slim, Undecodable};
use kube_dvr::controller::{self, ControllerOptions};
use kube_dvr::dataplane::sandbox;
use kube_dvr::telemetry::Telemetry;
use kube_standin::StandIn;

const NS: &str = "kube-dvr";
const TENANT: &str = "t";
const NODES: usize = 100;
const ROUTERS: usize = 100;
const SUBNETS: usize = 4;
/// `r0`'s Ports on `n0` (and as many on other nodes), its FloatingIPs.
const FIXED_PORTS: usize = 20;
const FIXED_FIPS: usize = 10;
const BIG_PORTS: usize = 100_000;
const BIG_FIPS: usize = 10_000;

/// `var` as a number, else `default` (to profile other world sizes).
fn env_or(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const BASE_PORTS: usize = 1_000;
const BASE_FIPS: usize = 100;
/// After `/readyz`: the caches' list buffers freed, a few passes done.
const SETTLE: Duration = Duration::from_secs(5);
/// The target.
const TARGET_MB: f64 = 64.0;

/// Live heap bytes of this process (the analysis of where the memory
/// goes counts what the agent's structures allocate, in this process).
static LIVE: AtomicIsize = AtomicIsize::new(0);
struct Counting;
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        std::alloc::System.realloc(p, l, n)
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn node_name(n: usize) -> String {
    format!("n{n}")
}

/// A Node as a kubelet writes it, with the VTEP kube-dvr's agent publishes.
fn mk_node(n: usize) -> Value {
    let ip = format!("198.18.{}.{}", n / 200, 10 + n % 200);
    let images: Vec<_> = (0..20)
        .map(|k| {
            json!({"names": [format!("registry.example/team/img-{k}@sha256:{:064x}", k * 31 + n),
                             format!("registry.example/team/img-{k}:1.{k}")],
                   "sizeBytes": 10_000_000 + k * 1_000})
        })
        .collect();
    let conditions: Vec<_> = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        .iter()
        .map(|t| {
            json!({"type": t, "status": if *t == "Ready" {"True"} else {"False"},
                   "lastHeartbeatTime": "2026-12-01T10:00:00Z", "lastTransitionTime": "2026-12-01T10:00:00Z",
                   "reason": format!("Kubelet{t}"), "message": format!("kubelet reports {t}")})
        })
        .collect();
    let mut annotations = json!({
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    });
    // The measured agent publishes its own.
    if n != 0 {
        annotations[kube_dvr::cluster::VTEP_ANNOTATION] = json!(ip);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name(n),
            "labels": {"kubernetes.io/hostname": node_name(n), "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": format!("z{}", n % 3)},
            "annotations": annotations},
        "spec": {"podCIDR": format!("10.244.{n}.0/24")},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": node_name(n)}],
            "capacity": {"cpu": "16", "memory": "65843432Ki", "pods": "110", "ephemeral-storage": "102687672Ki"},
            "allocatable": {"cpu": "15900m", "memory": "64692456Ki", "pods": "110", "ephemeral-storage": "94636958149"},
            "conditions": conditions,
            "nodeInfo": {"machineID": format!("{n:032x}"), "systemUUID": format!("{n:08x}-0000-4000-8000-000000000000"),
                "bootID": format!("{n:08x}-1111-4000-8000-000000000000"), "kernelVersion": "6.1.0-28-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.31.4", "kubeProxyVersion": "v1.31.4", "operatingSystem": "linux",
                "architecture": "amd64"},
            "images": images}
    })
}

fn router_name(k: usize) -> String {
    format!("r{k}")
}

/// Subnet `s` of router `k`: `10.<k>.<64 s>.0/18`.
fn subnet_ip(k: usize, s: usize, host: usize) -> String {
    let h = host + 10;
    format!("10.{k}.{}.{}", s * 64 + h / 256, h % 256)
}

fn mk_router(k: usize) -> Value {
    let subnets: Vec<_> = (0..SUBNETS)
        .map(|s| {
            json!({"name": format!("s{s}"), "cidr": format!("10.{k}.{}.0/18", s * 64),
                   "gateway": format!("10.{k}.{}.1", s * 64), "networkAttachment": format!("net-{k}-{s}")})
        })
        .collect();
    json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
        "metadata": {"name": router_name(k), "namespace": TENANT},
        "spec": {"externalNetwork": "bench", "subnets": subnets}
    })
}

/// A Port as kube-dvr's CNI plugin records it: router `k`, its `j`th
/// address, on node `node`.
fn mk_port(k: usize, j: usize, node: usize) -> (Value, String) {
    let s = j % SUBNETS;
    let ip = subnet_ip(k, s, j / SUBNETS);
    let id = k * 1_000_000 + j;
    let name = api::port_name(&router_name(k), &format!("s{s}"), ip.parse().unwrap());
    let v = json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "Port",
        "metadata": {"name": name, "namespace": TENANT},
        "spec": {"router": router_name(k), "subnet": format!("s{s}"),
            "network": format!("{TENANT}/net-{k}-{s}"), "ip": ip,
            "mac": format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", k % 256, s, (j / 256) % 256, j % 256),
            "node": node_name(node), "pod": format!("app-{}-{:010x}-{:05x}", id % 50, id, id % 99_991),
            "podUid": format!("{:08x}-{:04x}-4000-8000-{:012x}", id, k, j),
            "containerId": format!("{:064x}", id * 7 + 1), "interface": "net1"}
    });
    (v, ip)
}

fn mk_fip(i: usize, k: usize, ip: &str) -> Value {
    json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
        "metadata": {"name": format!("f{i}"), "namespace": TENANT},
        "spec": {"router": router_name(k), "target": {"fixedIP": ip}}
    })
}

/// Ports and FloatingIPs of the world with `other_ports`/`other_fips` on
/// routers `r1`.. (never on `n0`), plus the fixed set on `r0`.
fn world(other_ports: usize, other_fips: usize) -> (Vec<Value>, Vec<Value>) {
    let mut ports = Vec::new();
    let mut fips = Vec::new();
    for j in 0..2 * FIXED_PORTS {
        // Even: on n0; odd: on n1..
        let node = if j % 2 == 0 { 0 } else { 1 + j % (NODES - 1) };
        let (p, ip) = mk_port(0, j, node);
        if j % 2 == 0 && fips.len() < FIXED_FIPS {
            fips.push(mk_fip(fips.len(), 0, &ip));
        }
        ports.push(p);
    }
    let others = ROUTERS - 1;
    let fip_every = other_ports / other_fips;
    for i in 0..other_ports {
        let k = 1 + i % others;
        let j = i / others;
        let node = 1 + (i / others + k) % (NODES - 1);
        let (p, ip) = mk_port(k, j, node);
        if i % fip_every == 0 && fips.len() < FIXED_FIPS + other_fips {
            fips.push(mk_fip(fips.len(), k, &ip));
        }
        ports.push(p);
    }
    (ports, fips)
}

fn insert(standin: &StandIn, v: Value) {
    standin
        .insert_without_admission(v)
        .unwrap_or_else(|e| panic!("insert: {e}"));
}

/// The stand-in with the world in it, processed by the controller.
async fn populate(other_ports: usize, other_fips: usize) -> StandIn {
    let t0 = Instant::now();
    let standin = StandIn::start(0).await.expect("start the stand-in");
    let client = Client::try_from(standin.kube_config()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kube_dvr::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    for ns in [NS, TENANT] {
        insert(
            &standin,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
    }
    for n in 0..NODES {
        insert(&standin, mk_node(n));
    }
    insert(
        &standin,
        json!({
            "apiVersion": "kubedvr.io/v1alpha1", "kind": "ExternalNetwork",
            "metadata": {"name": "bench"},
            "spec": {"cidr": "198.19.0.0/16", "gateway": "198.19.0.1",
                "pools": {"floating": ["198.19.64.0/18"], "snat": ["198.19.0.100-198.19.0.199"],
                          "nodePorts": ["198.19.1.0-198.19.1.250"]},
                "attachment": {"bridge": "br-ext"}}
        }),
    );
    for k in 0..ROUTERS {
        insert(&standin, mk_router(k));
    }
    let (ports, fips) = world(other_ports, other_fips);
    let (n_ports, n_fips) = (ports.len(), fips.len());
    for p in ports {
        insert(&standin, p);
    }
    for f in fips {
        insert(&standin, f);
    }
    let inserted = t0.elapsed();

    // The controller's statuses (addresses, indexes, VNIs), then it stops.
    let stop = CancellationToken::new();
    let mut o = ControllerOptions::new(NS, "bench");
    o.lease_duration = Duration::from_secs(600);
    o.renew_interval = Duration::from_secs(300);
    o.resync = Duration::from_secs(3600);
    let ctl = tokio::spawn(controller::run(
        client.clone(),
        o,
        Telemetry::new(),
        stop.clone(),
    ));
    let fip_api: Api<FloatingIP> = Api::namespaced(client.clone(), TENANT);
    let router_api: Api<DistributedRouter> = Api::namespaced(client.clone(), TENANT);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let lp = ListParams::default();
        let f = fip_api.list(&lp).await.unwrap().items;
        let r = router_api.list(&lp).await.unwrap().items;
        let done_f = f
            .iter()
            .filter(|x| x.status.as_ref().and_then(|s| s.address.as_ref()).is_some())
            .count();
        let done_r = r
            .iter()
            .filter(|x| x.status.as_ref().and_then(|s| s.index).is_some())
            .count();
        if done_f == n_fips && done_r == ROUTERS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller processed {done_f}/{n_fips} FloatingIPs, {done_r}/{ROUTERS} routers in 900 s"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.cancel();
    ctl.await.unwrap().unwrap();
    eprintln!(
        "world: {NODES} nodes, {ROUTERS} routers, {n_ports} Ports, {n_fips} FloatingIPs: \
         inserted in {:.1} s, processed by the controller in {:.1} s",
        inserted.as_secs_f64(),
        (t0.elapsed() - inserted).as_secs_f64()
    );
    standin
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS`, `VmHWM`, `RssAnon` of `pid`, in KiB.
fn rss(pid: u32) -> (u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let f = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (f("VmRSS:"), f("VmHWM:"), f("RssAnon:"))
}

/// One run of the real agent for `n0` against `kubeconfig`: its memory
/// once ready and settled.
fn agent_rss(kubeconfig: &Path, log: &Path) -> (u64, u64, u64, f64) {
    let metrics = free_port();
    let dir = std::env::temp_dir();
    let cni = Path::new("/run/kube-dvr-bench-agent-cni.sock");
    let t0 = Instant::now();
    // `KUBE_DVR_BIN`: another build's binary (to compare two builds).
    let exe = std::env::var("KUBE_DVR_BIN").unwrap_or(env!("CARGO_BIN_EXE_kube-dvr").into());
    let mut child = Command::new(exe)
        .args([
            "agent",
            "--node=n0",
            &format!("--namespace={NS}"),
            &format!("--metrics-addr={metrics}"),
            "--root-netns=/proc/self/ns/net",
            "--netns-dir=/run/netns",
            &format!("--cni-socket={}", cni.display()),
            "--probe-port=0",
            "--resync=3600s",
            "--orphan-grace=3600s",
            "--hold-back=1s",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_AGENT_LOG").unwrap_or("warn".into()),
        )
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start kube-dvr agent");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    while http_status(metrics, "/readyz") != Some(200) {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the agent exited ({st}); log: {}", log.display());
        }
        assert!(
            Instant::now() < deadline,
            "the agent not ready in 600 s; log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = t0.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let r = rss(pid);
    assert_eq!(http_status(metrics, "/healthz"), Some(200), "agent healthy");
    // SIGTERM: graceful; its kernel state stays for the next run to adopt.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    (r.0, r.1, r.2, ready)
}

/// A synced cache of `K` as the agent keeps it, and the live bytes it took.
async fn synced<K>(
    client: &Client,
    und: &std::sync::Arc<Undecodable>,
    slim: bool,
) -> (kube::runtime::reflector::Store<K>, isize)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    let l0 = live();
    // As the agent caches them: kube-dvr's kinds without condition
    // messages (`cache_slim`), Nodes whole.
    let (store, mut s) = if slim {
        cache_slim::<K>(client, None, Default::default(), und)
    } else {
        cache::<K>(client, None, Default::default(), und)
    };
    tokio::spawn(async move { while s.next().await.is_some() {} });
    store.wait_until_ready().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (store, live() - l0)
}

/// Where the agent's memory goes, counted in this process with the
/// agent's own code: the caches, the resolver's input (built each pass)
/// and the resolved view (kept between passes, published to the CNI
/// socket).
async fn where_it_goes(standin: &StandIn, n_ports: usize, n_fips: usize) {
    let client = Client::try_from(standin.kube_config()).unwrap();
    let und = Undecodable::new(Telemetry::new());
    // The Ports the agent watches: its node's, the VMs', and its router
    // r0's subnets' (the agent's own cache, as its pass asks for them).
    let l = live();
    let mut tasks = tokio::task::JoinSet::new();
    let (changed, _changes) = tokio::sync::watch::channel(0u64);
    let ports = PortCache::start(&client, "n0", &mut tasks, &changed, und.clone());
    ports.wait_until_ready().await.unwrap();
    let nets = (0..SUBNETS)
        .map(|s| format!("{TENANT}/net-0-{s}"))
        .collect();
    ports.track(&nets);
    assert!(ports
        .wait_synced(&nets, Duration::from_secs(60))
        .await
        .is_empty());
    let b_ports = live() - l;
    let n_cached = ports.state().len();
    let (fips, b_fips) = synced::<FloatingIP>(&client, &und, true).await;
    let (nodes, b_nodes) = synced::<k8s_openapi::api::core::v1::Node>(&client, &und, false).await;
    let (routers, b_routers) = synced::<DistributedRouter>(&client, &und, true).await;
    let (exts, _) = synced::<ExternalNetwork>(&client, &und, true).await;
    let (snats, _) = synced::<SnatGateway>(&client, &und, true).await;
    let mut objects = PerKind::default();
    *FloatingIP::of_mut(&mut objects) = fips.state();
    *DistributedRouter::of_mut(&mut objects) = routers.state();
    *ExternalNetwork::of_mut(&mut objects) = exts.state();
    *SnatGateway::of_mut(&mut objects) = snats.state();
    let snap = Snapshot {
        objects,
        ports: ports.state(),
        nodes: nodes.state(),
        undecodable: Vec::new(),
    };
    let l0 = live();
    let mut st = InputState::default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let input = st.cluster_input(&snap, "n0", "198.18.0.10".parse().unwrap(), now);
    let l1 = live();
    let view = kube_dvr::plan::resolve::resolve(&input).view;
    let l2 = live();
    drop(input);
    let l3 = live();
    let plan = kube_dvr::plan::plan_node(&view, "n0");
    let b_plan = live() - l3;
    let endpoints: usize = view.routers.iter().map(|r| r.endpoints.len()).sum();
    let kib = |b: isize| b as f64 / 1024.0 / 1024.0;
    println!(
        "where it goes (the agent's structures, live heap bytes counted in the bench's process):"
    );
    println!(
        "  Port cache {:.2} MiB: {n_cached} of the {n_ports} Ports (n0's, the VMs', r0's subnets'; {} B per Port; size_of Port {} B: ObjectMeta {} B, PortSpec {} B)",
        kib(b_ports),
        b_ports / n_cached.max(1) as isize,
        std::mem::size_of::<Port>(),
        std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
        std::mem::size_of::<api::PortSpec>(),
    );
    println!(
        "  FloatingIP cache {:.1} MiB ({} B per FloatingIP), Node cache {:.1} MiB ({NODES} Nodes), \
         router cache {:.2} MiB",
        kib(b_fips),
        b_fips / n_fips as isize,
        kib(b_nodes),
        kib(b_routers),
    );
    println!(
        "  per pass: resolver input {:.1} MiB, transient; resolved view (kept, published to the \
         CNI socket) {:.1} MiB ({} endpoints, {} floating IPs); n0's plan {:.2} MiB",
        kib(l1 - l0),
        kib(l2 - l1),
        endpoints,
        view.floating_ips.len(),
        kib(b_plan),
    );
    drop(plan);
    drop(ports);
    tasks.abort_all();
}

fn main() {
    let _ = sandbox::enter_bench();
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    // The external network's bridge the floating-IP namespace plugs into.
    sh(&["ip", "link", "add", "br-ext", "type", "bridge"]);
    sh(&["ip", "link", "set", "br-ext", "up"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let log = std::env::temp_dir().join(format!(
        "kube-dvr-bench-agent-mem-{}.log",
        std::process::id()
    ));
    let mut figures = Vec::new();
    for (what, ports, fips) in [
        ("baseline", BASE_PORTS, BASE_FIPS),
        (
            "big",
            env_or("BENCH_BIG_PORTS", BIG_PORTS),
            env_or("BENCH_BIG_FIPS", BIG_FIPS),
        ),
    ] {
        let standin = rt.block_on(populate(ports, fips));
        let kc = std::env::temp_dir().join(format!(
            "kube-dvr-bench-agent-mem-{}.kubeconfig",
            std::process::id()
        ));
        standin.write_kubeconfig(&kc).unwrap();
        let (mut rss_v, mut hwm_v, mut anon_v) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            let (r, hwm, anon, ready) = agent_rss(&kc, &log);
            eprintln!(
                "{what} run {}/{reps}: VmRSS {r} KiB, VmHWM {hwm} KiB, RssAnon {anon} KiB (ready after {ready:.1} s)",
                rep + 1
            );
            rss_v.push(r as f64 / 1024.0);
            hwm_v.push(hwm as f64 / 1024.0);
            anon_v.push(anon as f64 / 1024.0);
        }
        let _ = std::fs::remove_file(&kc);
        if what == "big" {
            let n = 2 * FIXED_PORTS + ports;
            rt.block_on(where_it_goes(&standin, n, FIXED_FIPS + fips));
        }
        rt.block_on(standin.shutdown());
        figures.push((ports, fips, median(rss_v), median(hwm_v), median(anon_v)));
    }
    if std::env::var_os("BENCH_AGENT_LOG").is_none() {
        let _ = std::fs::remove_file(&log);
    } else {
        eprintln!("the agent's log (BENCH_AGENT_LOG): {}", log.display());
    }
    let (bp, bf, b_rss, b_hwm, b_anon) = figures[0];
    let (gp, gf, g_rss, g_hwm, g_anon) = figures[1];
    let per_1k = (g_rss - b_rss) / ((gp - bp) as f64 / 1000.0);
    println!(
        "agent VmRSS (node n0; {NODES} nodes, {ROUTERS} routers; fixed set on n0's router: \
         {} Ports, {FIXED_FIPS} FloatingIPs; median of {reps}):",
        2 * FIXED_PORTS
    );
    println!(
        "  {gp} Ports + {gf} FloatingIPs on other nodes' routers: {g_rss:.1} MiB (peak {g_hwm:.1}, anon {g_anon:.1})"
    );
    println!(
        "  baseline {bp} Ports + {bf} FloatingIPs: {b_rss:.1} MiB (peak {b_hwm:.1}, anon {b_anon:.1})"
    );
    println!(
        "  ratio {:.2}; growth {per_1k:.2} MiB per 1,000 Ports (with {} FloatingIPs) on routers \
         the node does not host; target <= {TARGET_MB} MB: {}",
        g_rss / b_rss,
        1000 * gf / gp,
        if g_rss * 1.048576 <= TARGET_MB {
            "met"
        } else {
            "missed"
        }
    );
    println!(
        "scale: agent_rss_mb={:.1} agent_rss_baseline_mb={:.1} agent_rss_per_1k_ports_mb={per_1k:.2}",
        g_rss * 1.048576,
        b_rss * 1.048576,
    );
}

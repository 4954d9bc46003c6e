//! Scale and latency (issue 11), measured in the lab: `cargo bench --bench
//! scale` (no root needed: it re-runs itself inside a private user + mount +
//! network namespace). `BENCH_RUNS` runs (default 30), after one warm-up
//! run that is shown but not counted.
//!
//! **Apply → first packet through a new FloatingIP.** The example lab,
//! with a UDP echo in the target pods. Per run, the external host sends a
//! UDP probe to a fresh floating address every millisecond; the bench
//! creates a FloatingIP for that address targeting an existing pod through
//! the kube client (one API write, no kubectl) and takes the time from
//! just before the write until the first echo comes back. Then it deletes
//! the FloatingIP, waits until it is gone and the cluster has converged,
//! and lets the system go idle (past every debounce window) before the
//! next run. Two scenarios ([`SCENARIOS`]): the pod a-cache on node-1,
//! where tenant-a's router already has a floating IP (the summary line's
//! figures), and a-app on node-2, the router's first floating IP there.
//!
//! Baselines from the same run: the API write alone (the create request's
//! round trip), the same probe's round trip through an existing floating
//! IP (203.0.113.100 → a-web), and one `nft` process on the pod's node
//! (what each nftables batch of the change path cost beyond its kernel
//! work while it ran as a process; with libnftables it runs in-process:
//! `benches/nft.rs` compares the two).
//!
//! Profile: the probe loop also samples, every millisecond, the counters
//! the controller and the node's agent keep anyway: the controller's
//! finalizer and status writes (counted when the write returned), the
//! node's kernel writes (counted when its pass's programming returned, so
//! that is the programming's end; its start is that minus the pass's
//! duration from `kube_dvr_reconcile_duration_seconds`) and its Node
//! annotation write (the report after the pass); and the node's kernel
//! writes by kind in the median run.
//!
//! `BENCH_LOG` (a tracing filter, e.g. `kube_dvr::dataplane::engine=debug`)
//! logs the components to stderr: with that one, every kernel op a pass
//! applies, timestamped.
//!
//! Ends with the summary line, with the fields measured here:
//! `scale: apply_p50_ms=… apply_p99_ms=…`.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, PostParams};
use kube_dvr::api::{FloatingIP, FloatingIPSpec, FloatingTarget, PodTarget};
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::lab::procs::Telemetry;
use kube_dvr::lab::{Lab, Manifests, Topology};

#[path = "../tests/support/echo.rs"]
mod echo;
use echo::udp_echo_server;

const STATE: &str = "/run/kube-dvr-lab-scale-bench";
const UDP_PORT: u16 = 7779;
const NAMESPACE: &str = "tenant-a";
const ROUTER: &str = "main";

/// Where the new floating IPs point.
#[derive(Clone, Copy)]
struct Scenario {
    /// The pod (in [`NAMESPACE`]) and its node.
    pod: &'static str,
    node: &'static str,
    what: &'static str,
    /// Its fresh floating addresses start at 203.0.113.`first`.
    first: u8,
}

/// The first one's figures make the summary line.
const SCENARIOS: [Scenario; 2] = [
    Scenario {
        pod: "a-cache",
        node: "node-1",
        what: "the router already has a floating IP on the node",
        first: 110,
    },
    Scenario {
        pod: "a-app",
        node: "node-2",
        what: "the router's first floating IP on the node",
        first: 155,
    },
];
/// Fresh addresses per scenario (then they are reused).
const ADDRESSES: u32 = 45;
/// An existing floating IP (the example's `web`, to a-web on node-1).
const EXISTING: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// How often the probe loop looks for the echo.
const POLL: Duration = Duration::from_micros(100);
/// A run without an answer by then counts as this long (and is reported).
const GIVE_UP: Duration = Duration::from_secs(5);
/// After the answer, how long to keep sampling for the agent's report.
const AFTER_ANSWER: Duration = Duration::from_millis(500);

/// Fresh floating addresses, inside the example's floating pool
/// (203.0.113.100-199) and clear of what the manifests take (.100, .101).
fn address(sc: &Scenario, run: u32) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, sc.first + (run % ADDRESSES) as u8)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[i.clamp(1, s.len()) - 1]
}

/// The sum of every series of a counter, or of a histogram's `_sum` /
/// `_count` (`name` given in full), in a component's metrics.
fn total(t: &Telemetry, name: &str) -> f64 {
    t.render()
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An agent's kernel writes so far, by kind.
fn writes_by_kind(t: &Telemetry) -> BTreeMap<String, f64> {
    let p = "kube_dvr_kernel_writes_total{kind=\"";
    t.render()
        .lines()
        .filter_map(|l| {
            let (kind, v) = l.strip_prefix(p)?.split_once("\"} ")?;
            Some((kind.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The counters the probe loop watches.
#[derive(Clone, Copy, PartialEq)]
struct Counters {
    finalizer: f64,
    status: f64,
    kernel: f64,
    reported: f64,
}

struct Watched {
    controller: Telemetry,
    agent: Telemetry,
}

impl Watched {
    fn read(&self) -> Counters {
        let api = "kube_dvr_api_writes_total";
        let c = |kind| self.controller.value(api, &[("kind", kind)]).unwrap_or(0.0);
        Counters {
            finalizer: c("finalizer"),
            status: c("status"),
            kernel: total(&self.agent, "kube_dvr_kernel_writes_total"),
            reported: self.agent.value(api, &[("kind", "Node")]).unwrap_or(0.0),
        }
    }

    /// Duration (s) and number of the agent's kernel-programming passes.
    fn passes(&self) -> (f64, f64) {
        let h = "kube_dvr_reconcile_duration_seconds";
        (
            total(&self.agent, &format!("{h}_sum")),
            total(&self.agent, &format!("{h}_count")),
        )
    }
}

/// When each watched thing first happened during a run.
#[derive(Default)]
struct Seen {
    answer: Option<Instant>,
    finalizer: Option<Instant>,
    status: Option<Instant>,
    kernel: Option<Instant>,
    reported: Option<Instant>,
}

/// Send a probe to `dst` every millisecond from `sock` until one is
/// echoed (or [`GIVE_UP`]), looking for the echo every [`POLL`] and
/// sampling `w`'s counters every millisecond. (No socket timeouts: the
/// kernel rounds those up to a jiffy, 4 ms at HZ=250.)
fn probe(sock: UdpSocket, dst: SocketAddr, w: Watched, go: std::sync::mpsc::Sender<()>) -> Seen {
    sock.set_nonblocking(true).unwrap();
    let base = w.read();
    let mut seen = Seen::default();
    let start = Instant::now();
    let (mut next, mut sample) = (start, start);
    let mut seq: u32 = 0;
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if seen.answer.is_none() && now >= next {
            let _ = sock.send_to(&seq.to_be_bytes(), dst);
            seq += 1;
            next = (next + PROBE_EVERY).max(now);
            if seq == 20 {
                // 20 probes out unanswered: the external host is asking
                // for the address, as real traffic would be. Go.
                let _ = go.send(());
            }
        }
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n == 4 && seen.answer.is_none() {
                seen.answer = Some(Instant::now());
            }
        }
        let now = Instant::now();
        if now >= sample {
            sample = (sample + PROBE_EVERY).max(now);
            let c = w.read();
            let mark = |t: &mut Option<Instant>, changed: bool| {
                if changed && t.is_none() {
                    *t = Some(now);
                }
            };
            mark(&mut seen.finalizer, c.finalizer != base.finalizer);
            mark(&mut seen.status, c.status != base.status);
            mark(&mut seen.kernel, c.kernel != base.kernel);
            mark(&mut seen.reported, c.reported != base.reported);
        }
        let done = match seen.answer {
            Some(a) => seen.reported.is_some() || now > a + AFTER_ANSWER,
            None => now > start + GIVE_UP,
        };
        if done {
            return seen;
        }
        std::thread::sleep(POLL);
    }
}

/// One run's figures, in ms from just before the API write.
struct Run {
    write: f64,
    answer: Option<f64>,
    finalizer: Option<f64>,
    status: Option<f64>,
    kernel: Option<f64>,
    reported: Option<f64>,
    /// The node's kernel programming during the run (ms), and in how many
    /// passes.
    pass: f64,
    passes: f64,
    /// The node's kernel writes during the run, by kind.
    writes: BTreeMap<String, f64>,
}

impl Run {
    /// When the node's programming started: its end less its duration (a
    /// single pass; `None` when there were several or none).
    fn pass_start(&self) -> Option<f64> {
        (self.passes == 1.0).then(|| self.kernel.map(|k| k - self.pass))?
    }
}

fn fip(name: &str, addr: Ipv4Addr, pod: &str) -> FloatingIP {
    let mut f = FloatingIP::new(
        name,
        FloatingIPSpec {
            router: ROUTER.into(),
            external_network: None,
            address: Some(addr.to_string()),
            target: FloatingTarget {
                fixed_ip: None,
                pod: Some(PodTarget {
                    name: pod.into(),
                    network: None,
                }),
            },
        },
    );
    f.metadata.namespace = Some(NAMESPACE.into());
    f
}

/// The external host's UDP socket.
fn socket(lab: &Lab) -> UdpSocket {
    netns::run_in(&lab.paths.host("ext-host"), || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap()
}

/// Round trips of single probes through the existing floating IP.
fn rtt(lab: &Lab, n: usize) -> Vec<f64> {
    let s = socket(lab);
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let dst = SocketAddr::from((EXISTING, UDP_PORT));
    let mut buf = [0u8; 64];
    (0..n)
        .filter_map(|i| {
            let t0 = Instant::now();
            s.send_to(&(i as u32).to_be_bytes(), dst).ok()?;
            s.recv_from(&mut buf).ok()?;
            Some(ms(t0.elapsed()))
        })
        .collect()
}

/// How long one `nft` process takes on `node` (`nft list tables`): what
/// each nftables batch of the change path costs beyond its kernel work
/// where libnftables is missing (the `nft` process fallback).
fn nft_process(lab: &Lab, node: &str, n: usize) -> Vec<f64> {
    let ns = lab.paths.node(node);
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let out = netns::run_in(&ns, || {
                Command::new("nft").args(["list", "tables"]).output()
            })
            .unwrap()
            .unwrap();
            assert!(out.status.success(), "nft list tables failed");
            ms(t0.elapsed())
        })
        .collect()
}

/// Wait until nothing is pending, then past every debounce window.
fn idle(lab: &Lab) {
    lab.cluster()
        .wait_converged(Duration::from_secs(30))
        .expect("converged between runs");
    std::thread::sleep(Duration::from_millis(300));
}

fn run_once(lab: &Lab, sc: &Scenario, run: u32) -> Run {
    let c = lab.cluster();
    let w = Watched {
        controller: c.controller_telemetry().unwrap(),
        agent: c.agent_telemetry(sc.node).unwrap(),
    };
    let (pass0, count0) = w.passes();
    let writes0 = writes_by_kind(&w.agent);
    let addr = address(sc, run);
    let name = format!("bench-{}-{run}", sc.pod);
    let api: Api<FloatingIP> = Api::namespaced(c.client.clone(), NAMESPACE);
    let sock = socket(lab);
    let dst = SocketAddr::from((addr, UDP_PORT));
    let (go_tx, go) = std::sync::mpsc::channel();
    let prober = std::thread::spawn(move || probe(sock, dst, w, go_tx));
    go.recv().unwrap();
    let t0 = Instant::now();
    c.rt.block_on(api.create(&PostParams::default(), &fip(&name, addr, sc.pod)))
        .expect("create FloatingIP");
    let write = ms(t0.elapsed());
    let seen = prober.join().unwrap();
    let w = Watched {
        controller: c.controller_telemetry().unwrap(),
        agent: c.agent_telemetry(sc.node).unwrap(),
    };
    let (pass1, count1) = w.passes();
    let writes = writes_by_kind(&w.agent)
        .into_iter()
        .map(|(k, v)| {
            let d = v - writes0.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect();
    let since = |t: Option<Instant>| t.map(|t| ms(t.saturating_duration_since(t0)));
    let r = Run {
        write,
        answer: since(seen.answer),
        finalizer: since(seen.finalizer),
        status: since(seen.status),
        kernel: since(seen.kernel),
        reported: since(seen.reported),
        pass: (pass1 - pass0) * 1000.0,
        passes: count1 - count0,
        writes,
    };
    // Delete it and wait until it is gone (its finalizer released).
    c.rt.block_on(async {
        api.delete(&name, &DeleteParams::default())
            .await
            .expect("delete FloatingIP");
        let t = Instant::now();
        while api.get_opt(&name).await.expect("get FloatingIP").is_some() {
            assert!(t.elapsed() < Duration::from_secs(30), "{name} never went");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    r
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Measure `sc`: one warm-up run (shown, not counted), then `runs`.
/// Returns the apply p50 and p99.
fn scenario(lab: &Lab, sc: &Scenario, runs: u32) -> (f64, f64) {
    let node = sc.node;
    println!(
        "apply -> first packet through a new FloatingIP: {NAMESPACE}/{} on {node} ({}), \
         {runs} runs, UDP probe from ext-host every {} ms",
        sc.pod,
        sc.what,
        PROBE_EVERY.as_millis()
    );
    println!(
        "{:>4} {:>7} {:>9} {:>7} {:>10} {:>8} {:>13} {:>7} {:>8}   (ms from just before the API write)",
        "run", "write", "finalizer", "status", "pass start", "kernel", "(pass, count)", "answer", "reported"
    );
    let mut all = Vec::new();
    let mut rtts = Vec::new();
    let mut nfts = Vec::new();
    let agent = lab.cluster().agent_telemetry(node).unwrap();
    let full = || {
        total(
            &agent,
            "kube_dvr_reconcile_duration_seconds_count{pass=\"full\"}",
        )
    };
    let mut near_resync = Vec::new();
    for run in 0..=runs {
        let full0 = full();
        idle(lab);
        if run > 0 {
            rtts.extend(rtt(lab, 5));
            nfts.extend(nft_process(lab, node, 1));
        }
        let r = run_once(lab, sc, run);
        // The node's periodic full pass (resync) ran while the system was
        // idling before the run, or during it.
        let resync = full() != full0;
        let label = if run == 0 {
            "warm".to_string()
        } else {
            run.to_string()
        };
        println!(
            "{label:>4} {:>7.1} {:>9} {:>7} {:>10} {:>8} {:>6.1} {:>6} {:>7} {:>8}{}",
            r.write,
            opt(r.finalizer),
            opt(r.status),
            opt(r.pass_start()),
            opt(r.kernel),
            r.pass,
            r.passes,
            opt(r.answer),
            opt(r.reported),
            if resync { "  (resync)" } else { "" },
        );
        if run > 0 {
            if resync {
                near_resync.push(opt(r.answer));
            }
            all.push(r);
        }
    }
    let unanswered = all.iter().filter(|r| r.answer.is_none()).count();
    let apply: Vec<f64> = all
        .iter()
        .map(|r| r.answer.unwrap_or(ms(GIVE_UP)))
        .collect();
    let write: Vec<f64> = all.iter().map(|r| r.write).collect();
    let (a50, a99) = (pct(&apply, 50.0), pct(&apply, 99.0));
    let (w50, w99) = (pct(&write, 50.0), pct(&write, 99.0));
    let r50 = pct(&rtts, 50.0);
    println!();
    println!(
        "apply -> first answer        p50 {a50:>7.1} ms  p99 {a99:>7.1} ms  ({} runs, {unanswered} unanswered within {} s)",
        all.len(),
        GIVE_UP.as_secs()
    );
    println!(
        "baseline: API write alone    p50 {w50:>7.1} ms  p99 {w99:>7.1} ms  apply/write p50 {:.1}x",
        a50 / w50
    );
    println!(
        "baseline: probe round trip through an existing floating IP  p50 {r50:.2} ms ({} probes)  apply/rtt p50 {:.0}x",
        rtts.len(),
        a50 / r50
    );
    println!(
        "baseline: one nft process on {node} (nft list tables)  p50 {:.1} ms  p99 {:.1} ms",
        pct(&nfts, 50.0),
        pct(&nfts, 99.0)
    );
    // Where the time goes: the median of each step's time since the write,
    // over the runs where it was seen.
    let step = |f: fn(&Run) -> Option<f64>| {
        let v: Vec<f64> = all.iter().filter_map(f).collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", pct(&v, 50.0))
        }
    };
    let pass: Vec<f64> = all.iter().map(|r| r.pass).collect();
    println!(
        "profile (p50, ms since the write): write returned {}  controller finalizer {}  controller status {}  {node} programming started {}  ended {} (took {:.1} ms)  first answer {}  {node} reported {}",
        step(|r| Some(r.write)),
        step(|r| r.finalizer),
        step(|r| r.status),
        step(|r| r.pass_start()),
        step(|r| r.kernel),
        pct(&pass, 50.0),
        step(|r| r.answer),
        step(|r| r.reported),
    );
    // What the node's pass wrote (the median run's writes, by kind).
    let mut by_apply: Vec<&Run> = all.iter().collect();
    by_apply.sort_by(|a, b| {
        let key = |r: &Run| r.answer.unwrap_or(f64::MAX);
        key(a).total_cmp(&key(b))
    });
    if let Some(mid) = by_apply.get(by_apply.len().saturating_sub(1) / 2) {
        let w: Vec<String> = mid.writes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{node}'s kernel writes in the median run: {}", w.join(", "));
    }
    if near_resync.is_empty() {
        println!("runs next to {node}'s periodic full pass (resync): 0");
    } else {
        println!(
            "runs next to {node}'s periodic full pass (resync): {} (first answer at {} ms)",
            near_resync.len(),
            near_resync.join(", ")
        );
    }
    println!();
    (a50, a99)
}

fn main() {
    sandbox::enter_bench();
    // `BENCH_LOG=kube_dvr::dataplane::engine=debug`: every kernel op the
    // engine applies, timestamped, on stderr (where a pass's time goes).
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runs: u32 = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let t = Topology::load(&root.join("topology.yaml")).unwrap();
    let m = Manifests::load(&root.join("manifests")).unwrap();
    let lab = Lab::up_with(Path::new(STATE), t, m).expect("lab up");
    udp_echo_server(&lab.paths.workload("a-web"), UDP_PORT);
    for sc in &SCENARIOS {
        udp_echo_server(&lab.paths.workload(sc.pod), UDP_PORT);
    }
    let figures: Vec<(f64, f64)> = SCENARIOS
        .iter()
        .map(|sc| scenario(&lab, sc, runs))
        .collect();
    lab.down();
    let (a50, a99) = figures[0];
    println!("scale: apply_p50_ms={a50:.1} apply_p99_ms={a99:.1}");
}

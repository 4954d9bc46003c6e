//! Scale and latency (issue 11), measured in the lab: `cargo bench --bench
//! scale` (no root needed: it re-runs itself inside a private user + mount +
//! network namespace). `BENCH_RUNS` runs (default 30), after one warm-up
//! run that is shown but not counted.
//!
//! **Apply → first packet through a new FloatingIP.** The example lab; a
//! UDP echo in the pod a-cache (node-1, tenant-a, whose router already has
//! a floating IP on node-1). Per run, the external host sends a UDP probe
//! to a fresh floating address every millisecond; the bench creates a
//! FloatingIP for that address targeting a-cache through the kube client
//! (one API write, no kubectl) and takes the time from just before the
//! write until the first echo comes back. Then it deletes the FloatingIP,
//! waits until it is gone and the cluster has converged, and lets the
//! system go idle (past every debounce window) before the next run.
//!
//! Baselines from the same run: the API write alone (the create request's
//! round trip), the same probe's round trip through an existing floating
//! IP (203.0.113.100 → a-web), and one `nft` process in node-1 (what each
//! nftables batch of the change path costs beyond its kernel work).
//!
//! Profile: the probe loop also samples, every millisecond, the counters
//! the controller and node-1's agent keep anyway: the controller's
//! finalizer and status writes (counted when the write returned), node-1's
//! kernel writes (counted when its pass's programming returned, so that
//! is the programming's end; its start is that minus the pass's duration
//! from `kube_dvr_reconcile_duration_seconds`) and node-1's Node
//! annotation write (the report after the pass); and node-1's kernel
//! writes by kind in the median run.
//!
//! Ends with the summary line, with the fields measured here:
//! `scale: apply_p50_ms=… apply_p99_ms=…`.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, PostParams};
use kube_dvr::api::{FloatingIP, FloatingIPSpec, FloatingTarget, PodTarget};
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::lab::{Lab, Manifests, Topology};
use kube_dvr::telemetry::Telemetry;

#[path = "../tests/support/echo.rs"]
mod echo;
use echo::udp_echo_server;

const STATE: &str = "/run/kube-dvr-lab-scale-bench";
const UDP_PORT: u16 = 7779;
const NAMESPACE: &str = "tenant-a";
const ROUTER: &str = "main";
/// The pod the new floating IPs target, and its node.
const TARGET: &str = "a-cache";
const TARGET_NODE: &str = "node-1";
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
/// (203.0.113.100-199) and clear of what the manifests take.
fn address(run: u32) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 150 + (run % 40) as u8)
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

/// node-1's kernel writes so far, by kind.
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
    controller: Arc<Telemetry>,
    agent: Arc<Telemetry>,
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

    /// Duration (s) and number of node-1's kernel-programming passes.
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
    /// node-1's kernel programming during the run (ms), and in how many
    /// passes.
    pass: f64,
    passes: f64,
    /// node-1's kernel writes during the run, by kind.
    writes: BTreeMap<String, f64>,
}

impl Run {
    /// When node-1's programming started: its end less its duration (a
    /// single pass; `None` when there were several or none).
    fn pass_start(&self) -> Option<f64> {
        (self.passes == 1.0).then(|| self.kernel.map(|k| k - self.pass))?
    }
}

fn fip(name: &str, addr: Ipv4Addr) -> FloatingIP {
    let mut f = FloatingIP::new(
        name,
        FloatingIPSpec {
            router: ROUTER.into(),
            external_network: None,
            address: Some(addr.to_string()),
            target: FloatingTarget {
                fixed_ip: None,
                pod: Some(PodTarget {
                    name: TARGET.into(),
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

/// How long one `nft` process takes in node-1 (`nft list tables`): what
/// each nftables batch of the change path costs beyond its kernel work.
fn nft_process(lab: &Lab, n: usize) -> Vec<f64> {
    let ns = lab.paths.node(TARGET_NODE);
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

fn run_once(lab: &Lab, run: u32) -> Run {
    let c = lab.cluster();
    let w = Watched {
        controller: c.controller_telemetry().unwrap(),
        agent: c.agent_telemetry(TARGET_NODE).unwrap(),
    };
    let (pass0, count0) = w.passes();
    let writes0 = writes_by_kind(&w.agent);
    let addr = address(run);
    let name = format!("bench-{run}");
    let api: Api<FloatingIP> = Api::namespaced(c.client.clone(), NAMESPACE);
    let sock = socket(lab);
    let dst = SocketAddr::from((addr, UDP_PORT));
    let (go_tx, go) = std::sync::mpsc::channel();
    let prober = std::thread::spawn(move || probe(sock, dst, w, go_tx));
    go.recv().unwrap();
    let t0 = Instant::now();
    c.rt.block_on(api.create(&PostParams::default(), &fip(&name, addr)))
        .expect("create FloatingIP");
    let write = ms(t0.elapsed());
    let seen = prober.join().unwrap();
    let w = Watched {
        controller: c.controller_telemetry().unwrap(),
        agent: c.agent_telemetry(TARGET_NODE).unwrap(),
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

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(ok) = sandbox::rerun_self(&args) {
        std::process::exit(if ok { 0 } else { 1 });
    }
    let runs: u32 = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let t = Topology::load(&root.join("topology.yaml")).unwrap();
    let m = Manifests::load(&root.join("manifests")).unwrap();
    let lab = Lab::up_with(Path::new(STATE), t, m).expect("lab up");
    udp_echo_server(&lab.paths.workload(TARGET), UDP_PORT);
    udp_echo_server(&lab.paths.workload("a-web"), UDP_PORT);

    println!(
        "apply -> first packet through a new FloatingIP ({NAMESPACE}/{TARGET} on {TARGET_NODE}), \
         {runs} runs, UDP probe from ext-host every {} ms",
        PROBE_EVERY.as_millis()
    );
    println!(
        "{:>4} {:>7} {:>9} {:>7} {:>10} {:>8} {:>13} {:>7} {:>8}   (ms from just before the API write)",
        "run", "write", "finalizer", "status", "pass start", "kernel", "(pass, count)", "answer", "reported"
    );
    let mut all = Vec::new();
    let mut rtts = Vec::new();
    let mut nfts = Vec::new();
    // Run 0 warms up (the first floating-IP change after the lab came
    // up): shown, not counted.
    for run in 0..=runs {
        idle(&lab);
        if run > 0 {
            rtts.extend(rtt(&lab, 5));
            nfts.extend(nft_process(&lab, 1));
        }
        let r = run_once(&lab, run);
        let label = if run == 0 {
            "warm".to_string()
        } else {
            run.to_string()
        };
        println!(
            "{label:>4} {:>7.1} {:>9} {:>7} {:>10} {:>8} {:>6.1} {:>6} {:>7} {:>8}",
            r.write,
            opt(r.finalizer),
            opt(r.status),
            opt(r.pass_start()),
            opt(r.kernel),
            r.pass,
            r.passes,
            opt(r.answer),
            opt(r.reported),
        );
        if run > 0 {
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
        "baseline: one nft process in {TARGET_NODE} (nft list tables)  p50 {:.1} ms  p99 {:.1} ms",
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
        "profile (p50, ms since the write): write returned {}  controller finalizer {}  controller status {}  {TARGET_NODE} programming started {}  ended {} (took {:.1} ms)  first answer {}  {TARGET_NODE} reported {}",
        step(|r| Some(r.write)),
        step(|r| r.finalizer),
        step(|r| r.status),
        step(|r| r.pass_start()),
        step(|r| r.kernel),
        pct(&pass, 50.0),
        step(|r| r.answer),
        step(|r| r.reported),
    );
    // What node-1's pass wrote (the median run's writes, by kind).
    let mut by_apply: Vec<&Run> = all.iter().collect();
    by_apply.sort_by(|a, b| {
        a.answer
            .unwrap_or(f64::MAX)
            .total_cmp(&b.answer.unwrap_or(f64::MAX))
    });
    if let Some(mid) = by_apply.get(by_apply.len().saturating_sub(1) / 2) {
        let w: Vec<String> = mid.writes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "{TARGET_NODE}'s kernel writes in the median run: {}",
            w.join(", ")
        );
    }
    lab.down();
    println!("scale: apply_p50_ms={a50:.1} apply_p99_ms={a99:.1}");
}

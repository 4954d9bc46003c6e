//! SNAT gateway failover, measured in the lab: `cargo bench --bench
//! gateway_ha` (no root needed: it re-runs itself inside a private user +
//! mount + network namespace). `BENCH_RUNS` runs per scenario (default 10;
//! 2 for a quick look), `BENCH_LOSS_SECS` seconds of the lossy-underlay
//! phase (default 60), `BENCH_ONLY` a comma-separated list of scenarios to
//! run (e.g. `(a),(c)`; default all), `BENCH_VERBOSE` set: one line per
//! run (cut node, gap, nodes attached after, TCP).
//!
//! The example lab with its SnatGateway open to all three nodes; a-db
//! (node-2) pings the external host through SNAT at 100 Hz and holds a TCP
//! connection to it through SNAT while the serving node suffers:
//!
//! - (a) `underlay`: its underlay link goes down;
//! - (b) `external`: its external link goes down (its upstream stops
//!   answering ARP);
//! - (c) `agent`: its agent process is SIGKILLed (its kernel state keeps
//!   forwarding), restarted after the run;
//! - (d) `underlay, no API`: as (a), with the API server and the controller
//!   stopped first.
//!
//! Per scenario: the gap (the longest run of lost probes × 10 ms) p50 and
//! p99 (nearest rank), the longest time between two answers, in how many
//! runs two nodes had the gateway attached at once (sampled every ~50 ms
//! from the kernel), and in how many the established TCP connection still
//! echoed after the failover. First, with 5 % of every node's underlay
//! packets dropped at random (an nft `numgen random` rule: netem is not in
//! every kernel) for `BENCH_LOSS_SECS`: how often any node changed its
//! choice of serving node (`kube_dvr_snat_gateway_switches_total`), and
//! the ping's losses.
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::lab::Lab;
use kube_dvr::plan::view::ObjectKey;

#[path = "../tests/support/echo.rs"]
mod echo;
#[path = "../tests/support/nsenter.rs"]
mod nsenter;
use echo::echo_server;
use nsenter::sh_in;
#[path = "../tests/support/gwlab.rs"]
mod gwlab;
use gwlab::{attached, attached_in, node_paths, ping, up, NODES};

const STATE: &str = "/run/kube-dvr-lab-gwha-bench";
const ECHO_PORT: u16 = 7778;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Underlay,
    External,
    Agent,
}

struct Run {
    gap_ms: u32,
    wall_ms: u32,
    overlap: bool,
    tcp: bool,
    moved: bool,
}

/// A TCP connection from a-db to the echo service, through SNAT.
fn connect(lab: &Lab) -> Option<(TcpStream, BufReader<TcpStream>)> {
    let ns = lab.paths.workload("a-db");
    let dst = SocketAddr::from((gwlab::EXTERNAL_HOST.parse::<Ipv4Addr>().unwrap(), ECHO_PORT));
    let s = netns::run_in(&ns, || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(2))
    })
    .ok()?
    .ok()?;
    let r = BufReader::new(s.try_clone().ok()?);
    let mut c = (s, r);
    echoes(&mut c, "before", Duration::from_secs(2)).then_some(c)
}

fn echoes(c: &mut (TcpStream, BufReader<TcpStream>), word: &str, wait: Duration) -> bool {
    let _ = c.0.set_read_timeout(Some(wait));
    if writeln!(c.0, "{word}").is_err() {
        return false;
    }
    let mut line = String::new();
    c.1.read_line(&mut line).is_ok() && line.trim() == word
}

/// Samples which nodes have the gateway attached until `stop`; whether two
/// ever had it at once.
fn sample_overlap(
    nodes: Vec<(&'static str, PathBuf)>,
    index: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut overlap = false;
        while !stop.load(Ordering::Relaxed) {
            overlap |= attached_in(&nodes, index).len() > 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        overlap
    })
}

/// Wait until exactly one node has the gateway attached.
fn settle(lab: &Lab, index: u32) -> &'static str {
    let t0 = Instant::now();
    loop {
        let a = attached(lab, index);
        if a.len() == 1 {
            return a[0];
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never settled: attached on {a:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_once(lab: &mut Lab, index: u32, fault: Fault) -> Run {
    let cut = settle(lab, index);
    let mut conn = connect(lab);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_overlap(node_paths(lab), index, stop.clone());
    let pinger = ping(lab, 300);
    std::thread::sleep(Duration::from_millis(1000));
    match fault {
        Fault::Underlay => {
            sh_in(&lab.paths.node(cut), "ip link set eth0 down");
        }
        Fault::External => {
            sh_in(&lab.paths.node(cut), "ip link set ext0 down");
        }
        Fault::Agent => lab.cluster_mut().kill_agent(cut),
    }
    let p = pinger.join().unwrap();
    if p.longest * 10 > 500 {
        diagnose(lab, index, fault, cut);
    }
    let tcp = conn
        .as_mut()
        .is_some_and(|c| echoes(c, "after", Duration::from_secs(3)));
    stop.store(true, Ordering::Relaxed);
    let overlap = sampler.join().unwrap();
    let after = attached(lab, index);
    let moved = after.iter().any(|n| *n != cut);
    match fault {
        Fault::Underlay => {
            sh_in(&lab.paths.node(cut), "ip link set eth0 up");
        }
        Fault::External => {
            sh_in(&lab.paths.node(cut), "ip link set ext0 up");
        }
        Fault::Agent => {
            lab.cluster_mut().start_agent(cut);
            let tel = lab.cluster().agent_telemetry(cut).unwrap();
            let t0 = Instant::now();
            while !tel.is_ready() && t0.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Past the returning node's hold-down.
    std::thread::sleep(Duration::from_millis(2500));
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        println!(
            "  {fault:?}: cut {cut}, gap {} ms, lost {}/{}, after {after:?}, tcp {tcp}, overlap {overlap}",
            p.longest * 10,
            p.lost,
            p.sent
        );
    }
    Run {
        gap_ms: p.longest * 10,
        wall_ms: p.wall,
        overlap,
        tcp,
        moved,
    }
}

/// Packets received and sent per interface in namespace `ns`.
fn counters(ns: &std::path::Path) -> std::collections::BTreeMap<String, (u64, u64)> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "-s", "-j", "link"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let s = &l["stats64"];
            Some((
                l["ifname"].as_str()?.to_string(),
                (s["rx"]["packets"].as_u64()?, s["tx"]["packets"].as_u64()?),
            ))
        })
        .collect()
}

/// After a run with a long gap, while the fault holds: each node's fence
/// set and remote FDB entries, the external switch's FDB, the external
/// host's neighbours, and which interfaces of each node (root, qrouter-,
/// snat-) move packets over 300 ms (stderr): for the analysis the run's
/// logs cannot give.
fn diagnose(lab: &Lab, index: u32, fault: Fault, cut: &str) {
    use kube_dvr::plan::names;
    eprintln!("== long gap: {fault:?} on {cut}");
    let spaces: Vec<(String, PathBuf)> = NODES
        .iter()
        .flat_map(|n| {
            let dir = lab.paths.node_netns_dir(n);
            [
                (n.to_string(), lab.paths.node(n)),
                (format!("{n}/qrouter"), dir.join(names::qrouter_ns(index))),
                (format!("{n}/snat"), dir.join(names::snat_ns(index))),
            ]
        })
        .collect();
    // Traffic while counting: a-db's ping again (50 probes).
    let pinger = ping(lab, 50);
    std::thread::sleep(Duration::from_millis(50));
    let before: Vec<_> = spaces.iter().map(|(_, p)| counters(p)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for ((name, p), b) in spaces.iter().zip(before) {
        let moved: Vec<String> = counters(p)
            .into_iter()
            .filter_map(|(i, (rx, tx))| {
                let (r0, t0) = b.get(&i).copied().unwrap_or((rx, tx));
                (rx > r0 || tx > t0).then(|| format!("{i} rx+{} tx+{}", rx - r0, tx - t0))
            })
            .collect();
        eprintln!("{name}: moving {moved:?}");
    }
    let p = pinger.join().unwrap();
    eprintln!("ping during the diagnosis: {}/{} lost", p.lost, p.sent);
    for n in NODES {
        let snat = lab.paths.node_netns_dir(n).join(names::snat_ns(index));
        let ct: Vec<String> = sh_in(&snat, "conntrack -L")
            .lines()
            .filter(|l| l.contains("10.10.2.10"))
            .map(str::to_string)
            .collect();
        eprintln!("{n}/snat conntrack (a-db): {ct:?}");
    }
    for n in NODES {
        let ns = lab.paths.node(n);
        let fdb: Vec<String> = sh_in(&ns, "bridge fdb show")
            .lines()
            .filter(|l| l.contains(" dst "))
            .map(str::to_string)
            .collect();
        eprintln!(
            "{n}: fence {}\n{n}: remote fdb {fdb:?}",
            sh_in(&ns, "nft list set bridge kube_dvr_fence alive").replace('\n', " "),
        );
    }
    eprintln!(
        "switch fdb: {}",
        sh_in(&lab.paths.switch(), "bridge fdb show br x0").replace('\n', " | ")
    );
    eprintln!(
        "ext-host neigh: {}",
        sh_in(&lab.paths.host("ext-host"), "ip neigh").replace('\n', " | ")
    );
}

/// Nearest-rank percentile.
fn pct(sorted: &[u32], p: f64) -> u32 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, runs: &[Run]) {
    if runs.is_empty() {
        return;
    }
    let mut gaps: Vec<u32> = runs.iter().map(|r| r.gap_ms).collect();
    gaps.sort();
    let wall = runs.iter().map(|r| r.wall_ms).max().unwrap_or(0);
    let count = |f: fn(&Run) -> bool| runs.iter().filter(|r| f(r)).count();
    println!(
        "{name:<18} runs {:>3}  gap p50 {:>4} ms  p99 {:>4} ms  (max between answers {:>4} ms)  moved {:>3}  two attached {:>3}  TCP survived {:>3}",
        runs.len(),
        pct(&gaps, 50.0),
        pct(&gaps, 99.0),
        wall,
        count(|r| r.moved),
        count(|r| r.overlap),
        count(|r| r.tcp),
    );
}

fn switches(lab: &Lab) -> f64 {
    NODES
        .iter()
        .filter_map(|n| lab.cluster().agent_telemetry(n))
        .flat_map(|t| {
            t.render()
                .lines()
                .filter(|l| l.starts_with("kube_dvr_snat_gateway_switches_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `secs` seconds with 5 % of every node's underlay packets dropped.
fn lossy_underlay(lab: &Lab, index: u32, secs: u32) {
    let before = switches(lab);
    let serving = attached(lab, index);
    for n in NODES {
        let ns = lab.paths.node(n);
        sh_in(&ns, "nft add table inet kdvr_bench");
        sh_in(
            &ns,
            "nft add chain inet kdvr_bench out { type filter hook output priority 0 ; }",
        );
        sh_in(
            &ns,
            "nft add rule inet kdvr_bench out oifname eth0 numgen random mod 100 < 5 drop",
        );
    }
    let check = sh_in(&lab.paths.node(NODES[0]), "nft list table inet kdvr_bench");
    assert!(check.contains("numgen"), "loss rule not installed: {check}");
    let p = ping(lab, secs * 100).join().unwrap();
    for n in NODES {
        sh_in(&lab.paths.node(n), "nft delete table inet kdvr_bench");
    }
    let after = switches(lab);
    println!(
        "5 % underlay loss  {secs} s: switches {} (any node's choice changed)  attached before {serving:?} after {:?}  ping lost {}/{} (longest gap {} ms)",
        after - before,
        attached(lab, index),
        p.lost,
        p.sent,
        p.longest * 10
    );
}

fn main() {
    sandbox::enter_bench();
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("BENCH_RUNS", 10);
    let loss_secs = env("BENCH_LOSS_SECS", 60);
    let mut lab = up(STATE);
    let index = lab.resolution.routers[&ObjectKey::new("tenant-a", "main")]
        .index
        .unwrap();
    echo_server(&lab.paths.host("ext-host"), ECHO_PORT);
    println!("gateway failover, {runs} runs per scenario, a-db pinging through SNAT at 100 Hz");
    // First, in the steady state: no run's aftermath in the figures.
    lossy_underlay(&lab, index, loss_secs);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| name.contains(o));
    for (name, fault) in [
        ("(a) underlay", Fault::Underlay),
        ("(b) external", Fault::External),
        ("(c) agent", Fault::Agent),
    ] {
        if !wanted(name) {
            continue;
        }
        let r: Vec<Run> = (0..runs)
            .map(|_| run_once(&mut lab, index, fault))
            .collect();
        report(name, &r);
    }
    if !wanted("(d)") {
        lab.down();
        return;
    }
    lab.cluster_mut().stop_controller();
    lab.cluster_mut().stop_api();
    let r: Vec<Run> = (0..runs)
        .map(|_| run_once(&mut lab, index, Fault::Underlay))
        .collect();
    report("(d) underlay, no API", &r);
    lab.down();
}

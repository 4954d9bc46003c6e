//! SNAT gateway failover without the API server, with real traffic: the
//! example lab with its SnatGateway open to all three nodes (candidates
//! gw-1, node-1, node-2), a-db (node-2) pinging the external host through
//! SNAT at 100 Hz. Every agent (a process of its own) SIGKILLed and
//! restarted under traffic; the active gateway node's agent SIGKILLed
//! (issue 9 (c)); the serving node's external link cut (the controller
//! then records the node that serves), then with the controller stopped
//! the serving node's underlay cut three times: twice while the API
//! server's packets are dropped (requests hang), once with it stopped;
//! then the API server and the controller come back and record the node
//! that serves. Runs
//! in a sandbox (private user, mount and network namespaces).
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_dvr::dataplane::{fence, netns, sandbox};
use kube_dvr::lab::probe::{self, Observed};
use kube_dvr::lab::Lab;
use kube_dvr::plan::names;
use kube_dvr::plan::view::ObjectKey;

#[path = "support/nsenter.rs"]
mod nsenter;
use nsenter::sh_in;
#[path = "support/gwlab.rs"]
mod gwlab;
use gwlab::{attached, attached_in, node_paths, ping, up};

const STATE: &str = "/run/kube-dvr-lab-gwha";

/// 100 Hz ping from a namespace until stopped.
struct Flow {
    what: String,
    child: std::process::Child,
}

impl Flow {
    fn start(ns: &std::path::Path, dst: &str) -> Flow {
        let child = netns::run_in(ns, || {
            Command::new("ping")
                .args(["-n", "-i", "0.01", "-W", "1", dst])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .unwrap();
        let what = format!("{} -> {dst}", ns.file_name().unwrap().to_string_lossy());
        Flow { what, child }
    }

    /// Stop (SIGINT); returns what, sent and lost (the last probe, maybe
    /// in flight at the stop, not counted).
    fn stop(self) -> (String, u32, u32) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let seqs: BTreeSet<u32> = text
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        let sent: u32 = text
            .lines()
            .find_map(|l| l.split(" packets transmitted").next()?.trim().parse().ok())
            .unwrap_or(0);
        let lost = (1..sent).filter(|s| !seqs.contains(s)).count() as u32;
        (self.what, sent, lost)
    }
}

fn kernel_writes(lab: &Lab, node: &str) -> f64 {
    let tel = lab.cluster().agent_telemetry(node).unwrap();
    let metrics =
        (tel.try_render()).unwrap_or_else(|| panic!("the agent of {node} does not answer"));
    metrics
        .lines()
        .filter(|l| l.starts_with("kube_dvr_kernel_writes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn snat_fails_over_in_under_a_second_without_the_api() {
    if !sandbox::enter("snat_fails_over_in_under_a_second_without_the_api") {
        return;
    }
    let mut lab = up(STATE);
    let key = ObjectKey::new("tenant-a", "default");
    let st = lab.resolution.snat_gateways[&key].clone();
    let cands: Vec<&str> = st.candidates.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(cands, ["gw-1", "node-1", "node-2"], "active first, spread");
    let index = lab.resolution.routers[&ObjectKey::new("tenant-a", "main")]
        .index
        .unwrap();
    assert_eq!(attached(&lab, index), ["gw-1"], "only the first serves");
    // The standbys are warm: their snat- namespace is there, programmed.
    for n in ["node-1", "node-2"] {
        let ns = lab.paths.node_netns_dir(n).join(names::snat_ns(index));
        assert!(
            sh_in(&ns, "ip -o addr").contains("203.0.113.50/24"),
            "{n} not warm"
        );
    }

    // Every agent SIGKILLed and started again, one after another, under
    // 100 Hz east-west (a-web on node-1 -> a-db on node-2), floating-IP
    // (ext-host -> a-web's 203.0.113.100) and SNAT (a-db -> ext-host)
    // traffic: nothing lost, the restarted agent writes nothing, the
    // gateway stays where it is.
    let flows = [
        Flow::start(&lab.paths.workload("a-web"), "10.10.2.10"),
        Flow::start(&lab.paths.host("ext-host"), "203.0.113.100"),
        Flow::start(&lab.paths.workload("a-db"), gwlab::EXTERNAL_HOST),
    ];
    std::thread::sleep(Duration::from_millis(500));
    for n in gwlab::NODES {
        let t0 = Instant::now();
        lab.cluster_mut().kill_agent(n);
        lab.cluster_mut().start_agent(n);
        let tel = lab.cluster().agent_telemetry(n).unwrap();
        while !tel.is_ready() {
            assert!(t0.elapsed() < Duration::from_secs(20), "{n} never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready = t0.elapsed();
        // Past the probes' first decisions.
        std::thread::sleep(Duration::from_millis(1500));
        eprintln!("SIGKILL of agent/{n}: ready again after {ready:?}");
        assert_eq!(kernel_writes(&lab, n), 0.0, "restart of {n} wrote");
        assert_eq!(attached(&lab, index), ["gw-1"], "after the restart of {n}");
    }
    for f in flows {
        let (what, sent, lost) = f.stop();
        eprintln!("across the SIGKILLs: {what}: {lost}/{sent} lost");
        assert!(sent > 200, "{what}: only {sent} probes");
        assert_eq!(lost, 0, "{what}: {lost}/{sent} lost across agent SIGKILLs");
    }

    // With the API up: the serving node's external link fails (its
    // upstream stops answering ARP, it answers "not ready"); the controller
    // then records the node that serves, first among the candidates.
    let mut gaps = Vec::new();
    let (cut, now, gap) = cut_link(&lab, index, 0, "ext0");
    gaps.push(gap);
    let t0 = Instant::now();
    loop {
        let snap = lab.cluster().snapshot().unwrap();
        let st = snap.snat_gateways[0].status.clone().unwrap_or_default();
        let cands: Vec<&str> = st.candidates.iter().map(|c| c.node.as_str()).collect();
        if st.active_node.as_deref() == Some(now) {
            assert_eq!(cands[0], now, "the serving node first");
            assert!(cands.contains(&cut), "{cut} stays a candidate: {cands:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "activeNode {:?}, serving {now}",
            st.active_node
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Issue 9 (c): the serving node's agent is SIGKILLed, its dataplane
    // working: the peers take over (its probe responder died with it: they
    // cannot tell it from a dead node), and its fence closes its port
    // before (never two gateways passing frames).
    gaps.push(agent_dies(&mut lab, index));

    // No API from here on: three times the serving node's underlay. The
    // first two with the API server black-holed (its packets dropped:
    // the agents' requests hang, new connections time out), so a pass
    // that awaited its report would still hang in run 1's when run 2
    // needs a failover; the third with it stopped.
    lab.cluster_mut().stop_controller();
    let api_port = lab.cluster().api_port().expect("the API server's port");
    let nft = |args: &str| {
        let ok = Command::new("nft")
            .args(args.split_whitespace())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "nft {args}");
    };
    nft("add table inet kdvr_blackhole");
    nft("add chain inet kdvr_blackhole out { type filter hook output priority 0 ; }");
    nft(&format!(
        "add rule inet kdvr_blackhole out tcp dport {api_port} drop"
    ));
    nft(&format!(
        "add rule inet kdvr_blackhole out tcp sport {api_port} drop"
    ));
    for run in 1..3 {
        gaps.push(cut_link(&lab, index, run, "eth0").2);
    }
    nft("delete table inet kdvr_blackhole");
    lab.cluster_mut().stop_api();
    let (_, serving, gap) = cut_link(&lab, index, 3, "eth0");
    gaps.push(gap);
    services_follow(&lab, serving);

    // The API server and the controller come back: the controller records
    // the node that serves (the agents' reports) as activeNode and first
    // candidate, and nothing moves.
    lab.cluster_mut()
        .start_api()
        .expect("the API server serves again");
    lab.cluster_mut().start_controller();
    let t0 = Instant::now();
    loop {
        let st = lab
            .cluster()
            .snapshot()
            .ok()
            .and_then(|s| s.snat_gateways[0].status.clone())
            .unwrap_or_default();
        let first = st.candidates.first().map(|c| c.node.as_str());
        if st.active_node.as_deref() == Some(serving) && first == Some(serving) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "API back: activeNode {:?}, candidates {:?}, serving {serving}",
            st.active_node,
            st.candidates
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("API back: activeNode {serving} after {:?}", t0.elapsed());
    assert_eq!(
        attached(&lab, index),
        [serving],
        "nothing moved when the API came back"
    );
    gaps.sort();
    eprintln!("gaps (ms): {gaps:?}, median {}", gaps[gaps.len() / 2]);
    lab.down();
}

/// Issue 10: the example lab's port forwarding (203.0.113.50:8080 to
/// a-app) and load balancer (203.0.113.120:80 over a-app and a-db) answer
/// the external host through `serving`, the gateway's node now, with the
/// API server stopped.
fn services_follow(lab: &Lab, serving: &str) {
    let host = lab.paths.host("ext-host");
    let t0 = Instant::now();
    let (mut pf, mut lb);
    loop {
        let timeout = Duration::from_millis(1000);
        pf = probe::tcp_port(&host, "203.0.113.50".parse().unwrap(), 8080, timeout);
        lb = probe::spread(&host, "203.0.113.120".parse().unwrap(), 80, 24, timeout);
        let pf_ok = pf
            == Observed::Answered {
                who: "a-app".into(),
                seen: gwlab::EXTERNAL_HOST.parse().unwrap(),
            };
        let lb_ok = matches!(&lb, Observed::Spread { answers, missed: 0 }
            if answers.keys().map(String::as_str).collect::<Vec<_>>() == ["a-app", "a-db"]);
        if pf_ok && lb_ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "services through {serving}: forward {pf:?}, balancer {lb:?}"
        );
    }
    eprintln!(
        "services through {serving} after {:?}: {lb:?}",
        t0.elapsed()
    );
}

/// Cut `link` of the serving node while a-db pings at 100 Hz: exactly one
/// other node serves within 1 s; the cut node comes back and stays standby.
/// Returns the cut node, the new serving one and the gap in ms.
fn cut_link(lab: &Lab, index: u32, run: u32, link: &str) -> (&'static str, &'static str, u32) {
    let serving = attached(lab, index);
    assert_eq!(serving.len(), 1, "run {run}: serving {serving:?}");
    let cut = serving[0];
    let pinger = ping(lab, 300);
    std::thread::sleep(Duration::from_millis(1000));
    sh_in(&lab.paths.node(cut), &format!("ip link set {link} down"));
    let gwlab::Pinged {
        sent,
        lost,
        longest,
        wall,
    } = pinger.join().unwrap();
    let now = attached(lab, index);
    eprintln!(
        "run {run}: cut {cut} {link}: {lost}/{sent} lost, longest gap {} ms ({wall} ms between answers); serving now {now:?}",
        longest * 10
    );
    assert_eq!(now.len(), 1, "run {run}: exactly one serves: {now:?}");
    assert_ne!(now[0], cut, "run {run}: the cut node resigned");
    assert!(longest * 10 <= 1000, "run {run}: gap {} ms", longest * 10);
    assert!(wall <= 1000, "run {run}: {wall} ms between answers");

    // The cut node comes back: it learns who serves and stays standby.
    sh_in(&lab.paths.node(cut), &format!("ip link set {link} up"));
    std::thread::sleep(Duration::from_millis(2500));
    let gwlab::Pinged { sent, lost, .. } = ping(lab, 100).join().unwrap();
    assert_eq!(attached(lab, index), now, "run {run}: {cut} preempted");
    assert!(
        lost <= 1,
        "run {run}: {lost}/{sent} lost after {cut} came back"
    );
    (cut, now[0], longest * 10)
}

/// SIGKILL the serving node's agent (no more renewals, kernel state as it
/// was) while a-db pings at 100 Hz; watch, every few ms, whether its fence
/// still lets its port pass and whether another node attached. Then start
/// it again: it stays standby. Returns the gap in ms.
fn agent_dies(lab: &mut Lab, index: u32) -> u32 {
    let serving = attached(lab, index);
    assert_eq!(serving.len(), 1, "serving {serving:?}");
    let dead = serving[0];
    let pinger = ping(lab, 300);
    std::thread::sleep(Duration::from_millis(1000));
    let others: Vec<_> = node_paths(lab)
        .into_iter()
        .filter(|(n, _)| *n != dead)
        .collect();
    let dead_ns = lab.paths.node(dead);
    assert!(
        !fence::live_ports(&dead_ns).unwrap().is_empty(),
        "the serving node renews its lease"
    );
    lab.cluster_mut().kill_agent(dead);
    let t0 = Instant::now();
    let (mut last_open, mut first_other) = (None, None);
    while t0.elapsed() < Duration::from_millis(1500) {
        let t = t0.elapsed();
        if !fence::live_ports(&dead_ns).unwrap().is_empty() {
            last_open = Some(t);
        }
        if first_other.is_none() && !attached_in(&others, index).is_empty() {
            first_other = Some(t);
        }
    }
    let gwlab::Pinged { lost, longest, .. } = pinger.join().unwrap();
    eprintln!(
        "(c) SIGKILL of {dead}'s agent: its port open until {last_open:?}, another attached at {first_other:?}, {lost} lost, longest gap {} ms",
        longest * 10
    );
    let first_other = first_other.expect("a peer took over");
    assert!(
        last_open.is_none_or(|t| t < first_other),
        "two gateways passed frames at once"
    );
    assert!(longest * 10 <= 1000, "gap {} ms", longest * 10);
    // Its qgb is still attached (the kernel as the agent left it), fenced.
    assert_eq!(attached(lab, index).len(), 2);

    // Back: its gateway's lease had run out, so it does not keep it; it
    // learns who serves, detaches, and stays standby (the plan still names
    // it first: the controller replaces a dead agent's node only after its
    // heartbeat timeout).
    lab.cluster_mut().start_agent(dead);
    std::thread::sleep(Duration::from_millis(3000));
    let now = attached(lab, index);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], dead, "{dead} preempted");
    let gwlab::Pinged { sent, lost, .. } = ping(lab, 100).join().unwrap();
    assert!(lost <= 1, "{lost}/{sent} lost after {dead} came back");
    longest * 10
}

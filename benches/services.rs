//! Services (issue 10): `cargo bench --bench services`, as root (its
//! namespaces live in a directory of its own, [`DIR`], removed with them
//! at the end, also after a panic).
//! Not in a user namespace: there the kernel caps a netlink socket's send
//! buffer and a 1,000-rule transaction fails with EMSGSIZE ("Message too
//! long"); the agent runs as root on a node, where it does not.
//!
//! The tables are what the planner makes for a gateway node
//! (`plan_node`), applied the way the engine applies them: one
//! `nft::plan_batch` per table, one transaction through libnftables.
//!
//! 1. **firewall**: a RouterFirewall of `BENCH_RULES` rules (default 1,000,
//!    half ingress, half egress, each with ports and a CIDR) added to a
//!    gateway's table, timed, then removed (untimed); the baseline is the
//!    same rules as a hand-written nft batch (`add chain …; add rule …`,
//!    written here, not by kube-dvr's renderer), in the same way, in the
//!    same run. `BENCH_RUNS` runs each (default 20), alternating.
//! 2. **forwards**: `BENCH_FORWARDS` PortForwardings (default 1,000) added
//!    at once (that many elements of the gateway's forwarding map), against
//!    a hand-written `add map` + `add element` of the same elements; then
//!    the writes of adding one more.
//! 3. **change under traffic**: a client, a gateway namespace with the
//!    planned table on its `qg-` port and a server; 100 Hz UDP
//!    request/response and a TCP connection sending a line every 10 ms,
//!    both allowed, for `BENCH_SECS` seconds (default 10), while the
//!    firewall is rewritten (1,000 rules, order changed) every 500 ms.
//!    Prints sent / answered and TCP lines lost.
//!
//! Prints medians (ms), the ratios against the hand-written batches, and
//! one summary line `services: …`.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use kube_dvr::dataplane::netns;
use kube_dvr::dataplane::nft::{self, exec};
use kube_dvr::plan::model::{MacAddr, NftTable};
use kube_dvr::plan::names;
use kube_dvr::plan::plan_node;
use kube_dvr::plan::view::*;

const ROUTER_INDEX: u32 = 1;
/// Where the benchmark's namespaces live (a mount point of their own while
/// it runs, like /run/netns for `ip netns`).
const DIR: &str = "/run/kube-dvr-bench-netns";

/// Removes the benchmark's namespaces and their directory.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = Path::new(DIR);
        for n in netns::list(dir).unwrap_or_default() {
            let _ = netns::delete(dir, &n);
        }
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(dir);
    }
}
const VNI: u32 = 100;
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 10);
const UDP_PORT: u16 = 7000;
const TCP_PORT: u16 = 7001;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rule(i: u32, allow: bool) -> FirewallRuleView {
    let port = 1024 + (i % 60000) as u16;
    FirewallRuleView {
        allow,
        protocol: Some(if i % 2 == 0 { "tcp" } else { "udp" }.into()),
        ports: vec![(port, port)],
        cidrs: vec![Ipv4Net::new(Ipv4Addr::new(198, 51, 100, (i % 256) as u8), 32).unwrap()],
    }
}

/// A firewall of `n` rules (none of which matches the traffic of part 3,
/// except the allow rules at the end), rotated by `shift`.
fn firewall(n: u32, shift: u32) -> FirewallView {
    let mut ingress: Vec<FirewallRuleView> = (0..n / 2)
        .map(|i| rule((i + shift) % (n / 2), false))
        .collect();
    let mut egress: Vec<FirewallRuleView> = (0..n - n / 2).map(|i| rule(i, false)).collect();
    for (p, proto) in [(UDP_PORT, "udp"), (TCP_PORT, "tcp")] {
        ingress.push(FirewallRuleView {
            allow: true,
            protocol: Some(proto.into()),
            ports: vec![(p, p)],
            cidrs: vec![],
        });
    }
    egress.push(FirewallRuleView {
        allow: true,
        protocol: None,
        ports: vec![],
        cidrs: vec![],
    });
    FirewallView {
        key: ObjectKey::new("t", "fw"),
        router: ObjectKey::new("t", "r"),
        default_allow: false,
        ingress,
        egress,
    }
}

fn forwarding(i: u32) -> ForwardingView {
    ForwardingView {
        key: ObjectKey::new("t", format!("pf-{i:05}")),
        router: ObjectKey::new("t", "r"),
        address: Ipv4Addr::new(203, 0, 113, 50),
        dedicated: false,
        forwards: vec![ForwardEntry {
            protocol: "tcp".into(),
            external: (10000 + i as u16, 10000 + i as u16),
            fixed_ip: SERVER,
            internal: 22,
        }],
    }
}

/// The cluster view of one gateway node `n1` serving router `t/r`.
fn view(fw: Option<FirewallView>, forwards: u32) -> ClusterView {
    let router = ObjectKey::new("t", "r");
    ClusterView {
        nodes: BTreeMap::from([(
            "n1".to_string(),
            NodeFacts {
                vtep: Ipv4Addr::new(198, 18, 0, 1),
                dvr_mac: names::dvr_mac(Ipv4Addr::new(198, 18, 0, 1)),
            },
        )]),
        routers: vec![RouterView {
            key: router.clone(),
            index: ROUTER_INDEX,
            subnets: vec![SubnetView {
                name: "s".into(),
                cidr: "10.10.1.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 10, 1, 1),
                vni: VNI,
            }],
            routes: vec![],
            endpoints: vec![EndpointView {
                subnet: "s".into(),
                ip: SERVER,
                mac: MacAddr::local(0x02, 10),
                node: "n2".into(),
            }],
            standby: vec![],
        }],
        external_networks: BTreeMap::from([(
            "ext".to_string(),
            ExternalView {
                name: "ext".into(),
                cidr: "203.0.113.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(203, 0, 113, 1),
                attachment: Attachment::Bridge("br-ext".into()),
                node_ports: BTreeMap::from([("n1".to_string(), Ipv4Addr::new(203, 0, 113, 10))]),
            },
        )]),
        floating_ips: vec![],
        snat_gateways: vec![SnatView {
            key: ObjectKey::new("t", "snat"),
            router: router.clone(),
            external: "ext".into(),
            address: Ipv4Addr::new(203, 0, 113, 50),
            node: Some("n1".into()),
            candidates: vec!["n1".into()],
            ports: vec![SnatPort {
                subnet: "s".into(),
                ip: Ipv4Addr::new(10, 10, 1, 254),
                mac: names::sg_mac(VNI),
            }],
        }],
        firewalls: fw.into_iter().collect(),
        port_forwardings: (0..forwards).map(forwarding).collect(),
        load_balancers: vec![],
    }
}

/// The gateway namespace's planned table.
fn gateway_table(v: &ClusterView) -> NftTable {
    let plan = plan_node(v, "n1");
    plan.namespaces[&names::snat_ns(ROUTER_INDEX)]
        .nft
        .clone()
        .expect("a gateway table")
}

/// The firewall's chains as someone would write them by hand.
fn hand_firewall(fw: &FirewallView, qg: &str) -> String {
    let mut s = String::new();
    s.push_str("add chain ip kube_dvr fw_in\nadd chain ip kube_dvr fw_out\n");
    s.push_str(
        "add chain ip kube_dvr forward { type filter hook forward priority 0 ; policy accept ; }\n",
    );
    s.push_str("add rule ip kube_dvr forward ct direction reply accept\n");
    s.push_str("add rule ip kube_dvr forward ct state related accept\n");
    s.push_str(&format!(
        "add rule ip kube_dvr forward iifname \"{qg}\" jump fw_in\n"
    ));
    s.push_str(&format!(
        "add rule ip kube_dvr forward oifname \"{qg}\" jump fw_out\n"
    ));
    for (chain, rules, dir) in [
        ("fw_in", &fw.ingress, "saddr"),
        ("fw_out", &fw.egress, "daddr"),
    ] {
        for r in rules {
            let mut line = format!("add rule ip kube_dvr {chain}");
            if let Some(p) = &r.protocol {
                line.push_str(&format!(" meta l4proto {p}"));
            }
            for (a, _) in &r.ports {
                line.push_str(&format!(" th dport {a}"));
            }
            for c in &r.cidrs {
                line.push_str(&format!(" ip {dir} {c}"));
            }
            line.push_str(if r.allow { " accept" } else { " drop" });
            s.push_str(&line);
            s.push('\n');
        }
        s.push_str(&format!("add rule ip kube_dvr {chain} drop\n"));
    }
    s
}

fn hand_remove_firewall() -> String {
    "delete chain ip kube_dvr forward\ndelete chain ip kube_dvr fw_in\ndelete chain ip kube_dvr fw_out\n"
        .into()
}

fn run_script(path: &Path, script: &str) {
    let out = netns::run_in(path, || exec::run_batch(script))
        .unwrap()
        .unwrap();
    assert!(
        out.ok,
        "{}\n{}",
        out.stderr,
        &script[..script.len().min(400)]
    );
}

fn apply(path: &Path, from: &NftTable, to: &NftTable) -> (Duration, u64) {
    let batch = nft::plan_batch(Some(from), Some(to));
    let t0 = Instant::now();
    netns::run_in(path, || nft::apply(&batch))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    (t0.elapsed(), batch.writes())
}

/// `ip args…` inside the namespace at `ns`.
fn ip_in(ns: &Path, args: &[&str]) {
    let out = netns::run_in(ns, || Command::new("ip").args(args).output())
        .expect("enter the namespace")
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root (see the module docs)"
    );
    let runs = env("BENCH_RUNS", 20).max(5) as usize;
    let rules = env("BENCH_RULES", 1000).max(2);
    let forwards = env("BENCH_FORWARDS", 1000).max(1);
    let secs = env("BENCH_SECS", 10).max(2);
    let _cleanup = Cleanup;
    let dir = PathBuf::from(DIR);
    let qg = names::qg(ROUTER_INDEX);

    // --- 1. firewall: planned batch vs hand-written batch ---------------
    let gw = "kdvr-bench-gw";
    netns::create(&dir, gw).unwrap();
    let gw_path = netns::path(&dir, gw);
    let base = gateway_table(&view(None, 0));
    let fw = firewall(rules, 0);
    let with_fw = gateway_table(&view(Some(fw.clone()), 0));
    run_script(&gw_path, &nft::plan_batch(None, Some(&base)).script());
    let hand = hand_firewall(&fw, &qg);
    let (mut ours, mut theirs, mut writes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let (d, w) = apply(&gw_path, &base, &with_fw);
        ours.push(ms(d));
        writes = w;
        apply(&gw_path, &with_fw, &base);
        let t0 = Instant::now();
        run_script(&gw_path, &hand);
        theirs.push(ms(t0.elapsed()));
        run_script(&gw_path, &hand_remove_firewall());
    }
    let (fw_ours, fw_hand) = (median(&ours), median(&theirs));
    println!(
        "firewall: {rules} rules in one transaction: kube-dvr {fw_ours:.2} ms ({writes} writes), \
         hand-written batch {fw_hand:.2} ms, ratio {:.2} (medians of {runs})",
        fw_ours / fw_hand
    );

    // --- 2. port forwardings ------------------------------------------------
    let with_pf = gateway_table(&view(None, forwards));
    let one_more = gateway_table(&view(None, forwards + 1));
    let mut hand_pf = String::from(
        "add map ip kube_dvr pf_hand { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service ; }\n",
    );
    let elements: Vec<String> = (0..forwards)
        .map(|i| format!("203.0.113.50 . tcp . {} : {SERVER} . 22", 10000 + i))
        .collect();
    hand_pf.push_str(&format!(
        "add element ip kube_dvr pf_hand {{ {} }}\n",
        elements.join(", ")
    ));
    // The planned table has the map and the rule using it from the start
    // (a forward is an element): the baseline is the elements, into a map
    // of the same type.
    let hand_pf_undo = "delete map ip kube_dvr pf_hand\n".to_string();
    if std::env::var_os("BENCH_SHOW").is_some() {
        println!(
            "--- kube-dvr:\n{}",
            nft::plan_batch(Some(&base), Some(&with_pf)).script()
        );
        println!("--- hand-written:\n{hand_pf}");
    }
    let (mut ours, mut theirs, mut pf_writes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let (d, w) = apply(&gw_path, &base, &with_pf);
        ours.push(ms(d));
        pf_writes = w;
        apply(&gw_path, &with_pf, &base);
        let t0 = Instant::now();
        run_script(&gw_path, &hand_pf);
        theirs.push(ms(t0.elapsed()));
        run_script(&gw_path, &hand_pf_undo);
    }
    apply(&gw_path, &base, &with_pf);
    let (d_one, w_one) = apply(&gw_path, &with_pf, &one_more);
    let (pf_ours, pf_hand) = (median(&ours), median(&theirs));
    println!(
        "forwards: {forwards} port forwardings in one transaction: kube-dvr {pf_ours:.2} ms \
         ({pf_writes} writes), hand-written batch {pf_hand:.2} ms, ratio {:.2}; \
         one more: {w_one} write(s), {:.2} ms",
        pf_ours / pf_hand,
        ms(d_one)
    );
    netns::delete(&dir, gw).unwrap();

    // --- 3. rule changes under traffic ---------------------------------------
    let (client, server) = ("kdvr-bench-client", "kdvr-bench-server");
    for n in [gw, client, server] {
        netns::create(&dir, n).unwrap();
    }
    let path = |n: &str| netns::path(&dir, n);
    let sg = names::sg(VNI);
    let (client_path, server_path) = (path(client), path(server));
    let (client_path, server_path) = (client_path.to_str().unwrap(), server_path.to_str().unwrap());
    // Made in the gateway, one end moved (`netns` takes a path).
    for c in [
        vec!["link", "add", "c0", "type", "veth", "peer", "name", &qg],
        vec!["link", "set", "c0", "netns", client_path],
        vec!["link", "add", "s0", "type", "veth", "peer", "name", &sg],
        vec!["link", "set", "s0", "netns", server_path],
    ] {
        ip_in(&path(gw), &c);
    }
    for (ns, cmds) in [
        (
            client,
            vec![
                vec!["addr", "add", "198.51.100.2/24", "dev", "c0"],
                vec!["link", "set", "c0", "up"],
                vec!["link", "set", "lo", "up"],
                vec!["route", "add", "default", "via", "198.51.100.1"],
            ],
        ),
        (
            server,
            vec![
                vec!["addr", "add", "10.10.1.10/24", "dev", "s0"],
                vec!["link", "set", "s0", "up"],
                vec!["link", "set", "lo", "up"],
                vec!["route", "add", "default", "via", "10.10.1.254"],
            ],
        ),
        (
            gw,
            vec![
                vec!["addr", "add", "198.51.100.1/24", "dev", &qg],
                vec!["addr", "add", "10.10.1.254/24", "dev", &sg],
                vec!["link", "set", &qg, "up"],
                vec!["link", "set", &sg, "up"],
            ],
        ),
    ] {
        for c in cmds {
            ip_in(&path(ns), &c);
        }
    }
    netns::run_in(&path(gw), || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
    })
    .unwrap()
    .unwrap();
    // The gateway's table with the firewall, as planned (its NAT rules do
    // not touch this traffic: no forward matches, and SNAT is on `qg-`
    // towards the client only for the server's new flows).
    let mut current = gateway_table(&view(Some(firewall(rules, 0)), 0));
    run_script(&path(gw), &nft::plan_batch(None, Some(&current)).script());

    // Server: UDP echo and a TCP line echo.
    let stop = Arc::new(AtomicBool::new(false));
    let udp = netns::run_in(&path(server), || UdpSocket::bind(("0.0.0.0", UDP_PORT)))
        .unwrap()
        .unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let st = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !st.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], peer);
            }
        }
    });
    let tcp = netns::run_in(&path(server), || TcpListener::bind(("0.0.0.0", TCP_PORT)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        if let Ok((s, _)) = tcp.accept() {
            s.set_nodelay(true).unwrap();
            let mut w = s.try_clone().unwrap();
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                    break;
                }
            }
        }
    });

    // Client: 100 Hz UDP, one TCP connection with a line every 10 ms.
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let tcp_lost = Arc::new(AtomicU64::new(0));
    let tcp_sent = Arc::new(AtomicU64::new(0));
    let usock = netns::run_in(&path(client), || UdpSocket::bind(("0.0.0.0", 0)))
        .unwrap()
        .unwrap();
    usock.connect(SocketAddr::from((SERVER, UDP_PORT))).unwrap();
    usock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tsock = netns::run_in(&path(client), || {
        TcpStream::connect_timeout(
            &SocketAddr::from((SERVER, TCP_PORT)),
            Duration::from_secs(2),
        )
    })
    .unwrap()
    .expect("TCP through the firewall");
    tsock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(u64::from(secs));
    let (s1, a1) = (sent.clone(), answered.clone());
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut next = Instant::now();
        let mut seq = 0u64;
        while Instant::now() < end {
            seq += 1;
            s1.fetch_add(1, Ordering::Relaxed);
            usock.send(&seq.to_be_bytes()).unwrap();
            // Replies of earlier requests may come late: count any.
            while let Ok(n) = usock.recv(&mut buf) {
                if n == 8 {
                    a1.fetch_add(1, Ordering::Relaxed);
                }
                if u64::from_be_bytes(buf[..8].try_into().unwrap()) == seq {
                    break;
                }
            }
            next += Duration::from_millis(10);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    let (tl, ts) = (tcp_lost.clone(), tcp_sent.clone());
    let tcp_thread = std::thread::spawn(move || {
        let mut w = tsock.try_clone().unwrap();
        let mut r = BufReader::new(tsock);
        let mut next = Instant::now();
        let mut i = 0u64;
        while Instant::now() < end {
            i += 1;
            ts.fetch_add(1, Ordering::Relaxed);
            let mut line = String::new();
            let ok = w.write_all(format!("line {i}\n").as_bytes()).is_ok()
                && r.read_line(&mut line).is_ok()
                && line.trim() == format!("line {i}");
            if !ok {
                tl.fetch_add(1, Ordering::Relaxed);
            }
            next += Duration::from_millis(10);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    // Rewrite the firewall every 500 ms: the same allow rules, the 1,000
    // others in another order (so every chain is flushed and refilled).
    let mut changes = 0;
    let mut change_ms = Vec::new();
    while Instant::now() + Duration::from_millis(500) < end {
        std::thread::sleep(Duration::from_millis(500));
        changes += 1;
        let next = gateway_table(&view(Some(firewall(rules, changes * 7)), 0));
        let (d, _) = apply(&path(gw), &current, &next);
        change_ms.push(ms(d));
        current = next;
    }
    udp_thread.join().unwrap();
    tcp_thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (sent, answered) = (
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    let (tcp_sent, tcp_lost) = (
        tcp_sent.load(Ordering::Relaxed),
        tcp_lost.load(Ordering::Relaxed),
    );
    println!(
        "change under traffic: {changes} rewrites of a {rules}-rule firewall (median {:.2} ms) \
         during {secs} s of 100 Hz UDP: {sent} sent, {answered} answered, {} lost; \
         TCP: {tcp_sent} lines, {tcp_lost} lost",
        median(&change_ms),
        sent.saturating_sub(answered)
    );
    for n in [gw, client, server] {
        let _ = netns::delete(&dir, n);
    }
    println!(
        "services: firewall_{rules}_p50_ms={fw_ours:.2} firewall_hand_p50_ms={fw_hand:.2} \
         firewall_ratio={:.2} firewall_writes={writes} forwards_{forwards}_p50_ms={pf_ours:.2} \
         forwards_hand_p50_ms={pf_hand:.2} forwards_ratio={:.2} forward_add_writes={w_one} \
         change_lost_udp={} change_lost_tcp={tcp_lost}",
        fw_ours / fw_hand,
        pf_ours / pf_hand,
        sent.saturating_sub(answered)
    );
}

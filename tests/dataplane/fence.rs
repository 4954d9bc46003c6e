//! The SNAT gateway's dead-man switch (`dataplane::fence`) against the
//! kernel: a gateway port on a bridge passes frames (ARP included) only
//! while renewed, and falls silent within the lease once renewals stop.
use super::*;
use kube_dvr::dataplane::fence::{self, Fence, LEASE};
use kube_dvr::dataplane::sandbox;
use std::path::Path;
use std::time::{Duration, Instant};

/// One ping from `gw` to the upstream (its neighbour flushed first, so the
/// ARP exchange crosses the bridge too): answered?
fn answers() -> bool {
    in_ns(Some("gw"), &["ip", "neigh", "flush", "all"]);
    Command::new("nsenter")
        .args(["--net=/run/netns/gw", "ping", "-c1", "-W1", "203.0.113.1"])
        .output()
        .unwrap()
        .status
        .success()
}

/// A bridge with the gateway's port `port` (peer in "gw") and the
/// upstream's up0 (peer in "up").
fn bridge_with(port: &str) {
    for ns in ["gw", "up"] {
        sh(&["ip", "netns", "add", ns]);
    }
    sh(&["ip", "link", "add", "br-public", "type", "bridge"]);
    sh(&["ip", "link", "set", "br-public", "up"]);
    for (port, peer, ns, addr) in [
        (port, "qg-7", "gw", "203.0.113.50/24"),
        ("up0", "eth0", "up", "203.0.113.1/24"),
    ] {
        sh(&[
            "ip", "link", "add", port, "type", "veth", "peer", "name", peer, "netns", ns,
        ]);
        sh(&["ip", "link", "set", port, "master", "br-public", "up"]);
        in_ns(Some(ns), &["ip", "addr", "add", addr, "dev", peer]);
        in_ns(Some(ns), &["ip", "link", "set", peer, "up"]);
        in_ns(Some(ns), &["ip", "link", "set", "lo", "up"]);
    }
}

/// A gateway's subnet port (`sgb-`) is fenced like its external one, from
/// the first renewal that names one, also in a table an older agent made
/// with the external rules only.
#[test]
fn a_gateway_subnet_port_is_fenced_too() {
    if !sandbox::enter("fence::a_gateway_subnet_port_is_fenced_too") {
        return;
    }
    bridge_with("sgb-9");
    let root = Path::new("/proc/self/ns/net");
    // An older agent's table: external rules only.
    let out = kube_dvr::dataplane::nft::exec::run_batch(&fence::ruleset()).unwrap();
    assert!(out.ok, "{}", out.stderr);
    let mut f = Fence::open(root).unwrap();
    f.renew(&["qgb-1".into()]).unwrap();
    assert!(answers(), "no subnet port named yet: not fenced");
    f.renew(&["qgb-1".into(), "sgb-9".into()]).unwrap();
    let chain = sh(&["nft", "list", "chain", "bridge", fence::TABLE, "forward"]);
    assert!(chain.contains("\"sgb-*\""), "{chain}");
    // What a restarted agent takes over: the subnet port too.
    let mut live = fence::live_ports(root).unwrap();
    live.sort();
    assert_eq!(live, ["qgb-1", "sgb-9"]);
    assert!(answers(), "renewed: passes");
    f.renew(&["qgb-1".into()]).unwrap();
    assert!(!answers(), "no longer renewed: fenced");
    // Only once.
    f.renew(&["qgb-1".into(), "sgb-9".into()]).unwrap();
    let chain = sh(&["nft", "list", "chain", "bridge", fence::TABLE, "forward"]);
    assert_eq!(chain.matches("sgb-").count(), 2, "{chain}");
    fence::remove_table(root).unwrap();
}

#[test]
fn a_gateway_port_passes_only_while_renewed() {
    if !sandbox::enter("fence::a_gateway_port_passes_only_while_renewed") {
        return;
    }
    // br-public with the gateway's port qgb-7 (peer in "gw") and the
    // upstream's up0 (peer in "up").
    bridge_with("qgb-7");
    assert!(answers(), "no fence yet: the bridge forwards");

    let root = Path::new("/proc/self/ns/net");
    let mut f = Fence::open(root).unwrap();
    f.renew(&[]).unwrap();
    assert!(
        !sh(&["nft", "list", "tables"]).contains(fence::TABLE),
        "nothing served: no table"
    );
    f.renew(&["qgb-7".into()]).unwrap();
    assert!(sh(&["nft", "list", "tables"]).contains(fence::TABLE));
    // Renewed every 50 ms (by another socket, as the agent's probe task
    // does beside its pings) for a second: every ping answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut g = Fence::open(Path::new("/proc/self/ns/net")).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                g.renew(&["qgb-7".into()]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_secs(1) {
        assert!(answers(), "renewed port fenced");
        pings += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renewer.join().unwrap();
    assert!(pings >= 3);
    // Renewals stop: within the lease the port is silent (the upstream
    // gets no ARP answer, no echo).
    std::thread::sleep(LEASE + Duration::from_millis(20));
    assert!(!answers(), "the lease ran out but frames pass");
    // Renewed again: open at once (its lease runs; a ping may take longer
    // than a lease on a loaded machine, so the set says it).
    f.renew(&["qgb-7".into()]).unwrap();
    assert_eq!(fence::live_ports(root).unwrap(), ["qgb-7"]);
    // Renewing another port closes this one at once.
    f.renew(&["qgb-8".into()]).unwrap();
    assert!(!answers());
    // Another port of the bridge is never fenced.
    let up_to_up = sh(&["bridge", "link", "show"]);
    assert!(up_to_up.contains("up0"));

    // Made again when someone deleted it; removed by cleanup.
    fence::remove_table(root).unwrap();
    assert!(f.renew(&["qgb-7".into()]).is_err(), "the table is gone");
    f.renew(&["qgb-7".into()]).unwrap();
    assert_eq!(fence::live_ports(root).unwrap(), ["qgb-7"]);
    fence::remove_table(root).unwrap();
    assert!(!sh(&["nft", "list", "tables"]).contains(fence::TABLE));
    assert!(answers(), "no table: nothing fenced");
}

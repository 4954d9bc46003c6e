//! Agent restart safety: a restarted agent that cannot resolve an object yet
//! (the controller is behind an edit, the API is slow) removes nothing, and
//! traffic through the object keeps flowing.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::Client;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use kube_dvr::dataplane::sandbox;
use kube_dvr::plan::names;

use super::support::*;
use super::{vni_of_first_subnet, wait_programmed};

const SEC: Duration = Duration::from_secs(1);

/// A TCP proxy to the stand-in that holds every connection until `delay`
/// after its start: an API server that is slow to answer at first (the
/// agent's first lists, hence its cache sync, wait until then).
async fn slow_api(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open_at = tokio::time::Instant::now() + delay;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep_until(open_at).await;
                if let Ok(mut out) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    addr
}

/// A workload namespace `ns` plugged into `bridge` like a bridge-CNI pod.
fn plug(ns: &str, bridge: &str, ip: &str, mac: &str, gw: &str) {
    let host = format!("h-{ns}");
    sh(&["ip", "netns", "add", ns]);
    sh(&[
        "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ]);
    sh(&["ip", "link", "set", &host, "master", bridge, "up"]);
    sh(&["ip", "-n", ns, "link", "set", "eth0", "address", mac, "up"]);
    sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"]);
    sh(&["ip", "-n", ns, "route", "add", "default", "via", gw]);
}

/// Restart with programmed state while the controller is stopped behind an
/// edit of the router and the API answers only after a delay: the restarted
/// agent waits `hold_back` after its caches synced, then keeps the router's
/// state (it exists, unresolved), makes no kernel write, and a ping through
/// the router loses nothing; once the controller catches up the edit is
/// programmed.
#[test]
fn restart_while_the_controller_is_behind_and_the_api_slow_keeps_traffic() {
    if !sandbox::enter(
        "restart::restart_while_the_controller_is_behind_and_the_api_slow_keeps_traffic",
    ) {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        c.create(mk_router(
            "r1",
            &[
                ("s1", "10.10.1.0/24", "10.10.1.1", "net-a"),
                ("s2", "10.10.2.0/24", "10.10.2.1", "net-b"),
            ],
        ))
        .await;
        c.create(mk_port(
            "p1",
            "n1",
            "net-a",
            "10.10.1.10",
            "02:00:00:00:01:0a",
        ))
        .await;
        c.create(mk_port(
            "p2",
            "n1",
            "net-b",
            "10.10.2.10",
            "02:00:00:00:02:0a",
        ))
        .await;
        c.controller_pass().await;
        let a1 = start_agent(&c.client, agent_options("n1"));
        assert!(wait_programmed(&c, 5 * SEC).await);
        let plan = c.expected_plan("n1").await;
        let vni1 = vni_of_first_subnet(&plan);
        let vni2 = plan
            .root
            .links
            .keys()
            .filter_map(|l| l.strip_prefix("dvrvx-"))
            .map(|v| v.parse::<u32>().unwrap())
            .find(|v| *v != vni1)
            .unwrap();
        plug(
            "w1",
            &names::bridge(vni1),
            "10.10.1.10/24",
            "02:00:00:00:01:0a",
            "10.10.1.1",
        );
        plug(
            "w2",
            &names::bridge(vni2),
            "10.10.2.10/24",
            "02:00:00:00:02:0a",
            "10.10.2.1",
        );
        sh(&[
            "ip",
            "netns",
            "exec",
            "w1",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "10.10.2.10",
        ]);
        a1.stop().await;

        // Edited while no agent runs; the controller is stopped.
        let mut r1 = c.routers().get("r1").await.unwrap();
        r1.spec.subnets.push(
            serde_json::from_value(json!({"name": "s3", "cidr": "10.10.3.0/24",
                "gateway": "10.10.3.1", "networkAttachment": "net-c"}))
            .unwrap(),
        );
        c.routers()
            .replace("r1", &Default::default(), &r1)
            .await
            .unwrap();
        let qr = "qrouter-0"; // r1, router index 0
        let netns_before = netns_list();
        let root_before = link_indexes();
        let qr_before = sh(&["ip", "-n", qr, "-o", "link"]);

        // 20 pings a second through the router for the whole restart.
        let ping = Command::new("ip")
            .args([
                "netns", "exec", "w1", "ping", "-q", "-i", "0.05", "-c", "280",
            ])
            .args(["-W", "1", "10.10.2.10"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();

        let delay = 5 * SEC;
        let target: SocketAddr = c
            .standin
            .url()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let mut cfg = c.standin.kube_config();
        cfg.cluster_url = format!("http://{}", slow_api(target, delay).await)
            .parse()
            .unwrap();
        let slow = Client::try_from(cfg).unwrap();
        let mut opts = agent_options("n1");
        opts.hold_back = 4 * SEC;
        opts.resync = 1500 * Duration::from_millis(1);
        let a2 = start_agent(&slow, opts);

        // The caches sync at `delay`; the hold-back runs from there, not
        // from the start (it would have expired while the API was slow).
        tokio::time::sleep(delay + 2 * SEC).await;
        assert!(!a2.telemetry.is_ready(), "still waiting for the controller");
        assert_eq!(a2.kernel_writes(), 0.0);

        // After the hold-back: planned without the router, which is kept.
        assert!(
            wait_until(15 * SEC, || async { a2.telemetry.is_ready() }).await,
            "ready after the hold-back"
        );
        tokio::time::sleep(2 * SEC).await; // including a full resync
        assert_eq!(netns_list(), netns_before, "namespaces kept");
        assert_eq!(link_indexes(), root_before, "root links kept");
        assert_eq!(sh(&["ip", "-n", qr, "-o", "link"]), qr_before);
        assert_eq!(a2.kernel_writes(), 0.0, "kernel writes while unresolved");

        let out = ping.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("{text}");
        assert!(
            text.contains(" 0% packet loss"),
            "ping lost packets: {text}"
        );

        // The controller catches up: the edit is programmed, nothing lost.
        c.controller_pass().await;
        assert!(wait_programmed(&c, 5 * SEC).await);
        assert!(sh(&["ip", "-n", qr, "-o", "link"]).lines().count() > qr_before.lines().count());
        sh(&[
            "ip",
            "netns",
            "exec",
            "w1",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "10.10.2.10",
        ]);
        a2.stop().await;
    });
}

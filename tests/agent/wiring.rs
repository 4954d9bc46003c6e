//! The agent wired to its neighbours: the real controller in-process, and
//! the `kube-dvr agent` binary as a process.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;
use kube::Api;
use serde_json::json;

use kube_dvr::dataplane::sandbox;

use super::support::*;
use super::{tenant, wait_programmed};

const SEC: Duration = Duration::from_secs(1);

/// The real controller and the agent together: the controller's expected
/// digest for the node is the agent's (Programmed=True), and deleting a
/// router waits for the agent (finalizer) and clears the kernel.
#[test]
fn agent_with_the_controller_programmed_and_finalized() {
    if !sandbox::enter("wiring::agent_with_the_controller_programmed_and_finalized") {
        return;
    }
    runtime().block_on(async {
        use kube_dvr::api::{find_condition, FINALIZER};
        use kube_dvr::controller::{self, ControllerOptions};
        let c = Cluster::start().await;
        c.create(mk_router("r1", &[("s1", "10.10.1.0/24", "10.10.1.1", "net-a")])).await;
        c.create(mk_port("p1", "n1", "net-a", "10.10.1.10", "02:00:00:00:01:0a")).await;
        // n2's agent died an hour ago (its Lease says 1 s): deletions wait
        // for it only until the controller has seen no renewal for that long.
        let stale = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "kube-dvr-agent-n2", "namespace": NS},
            "spec": {"holderIdentity": "n2", "leaseDurationSeconds": 1, "renewTime": stale.to_string()}
        }))
        .unwrap();
        Api::<Lease>::namespaced(c.client.clone(), NS).create(&Default::default(), &lease).await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let ctl = tokio::spawn(controller::run(
            c.client.clone(),
            ControllerOptions::new(NS, "c1"),
            kube_dvr::telemetry::Telemetry::new(),
            stop.clone(),
        ));
        let a = start_agent(&c.client, agent_options("n1"));
        let programmed = || async {
            let r = c.routers().get("r1").await.unwrap();
            let st = r.status.unwrap_or_default();
            let p = find_condition(&st.conditions, "Programmed").map(|c| c.status.clone());
            let ready = find_condition(&st.conditions, "Ready").map(|c| c.status.clone());
            p.as_deref() == Some("True")
                && ready.as_deref() == Some("True")
                && st.programmed_nodes == vec!["n1".to_string()]
        };
        assert!(wait_until(10 * SEC, programmed).await, "router Programmed and Ready: {:?}", c.routers().get("r1").await.unwrap().status);
        let r = c.routers().get("r1").await.unwrap();
        assert!(r.metadata.finalizers.unwrap_or_default().contains(&FINALIZER.to_string()));
        assert_eq!(netns_list(), vec!["qrouter-0".to_string()]);

        // The controller has seen n2's Lease unchanged for its 1 s by now.
        tokio::time::sleep(3 * SEC / 2).await;
        c.routers().delete("r1", &DeleteParams::default()).await.unwrap();
        let gone = wait_until(2 * SEC, || async { c.routers().get_opt("r1").await.unwrap().is_none() }).await;
        if !gone {
            let r = c.routers().get_opt("r1").await.unwrap();
            eprintln!("router still there: {:?}", r.map(|r| (r.metadata, r.status)));
            let n1 = c.nodes().get("n1").await.unwrap();
            eprintln!("n1: {:?}; netns {:?}", n1.metadata.annotations, netns_list());
        }
        assert!(gone, "finalizer removed once the agent programmed the plan without the router");
        assert!(netns_list().is_empty());
        a.stop().await;
        stop.cancel();
        ctl.await.unwrap().unwrap();
    });
}

/// The `kube-dvr agent` binary: flags and environment, `/readyz` and
/// `/metrics` served, SIGTERM ends it cleanly and leaves the kernel as is.
#[test]
fn agent_binary_serves_telemetry_and_stops_on_sigterm() {
    if !sandbox::enter("wiring::agent_binary_serves_telemetry_and_stops_on_sigterm") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        c.controller_pass().await;
        // /run is the sandbox's private tmpfs.
        let kubeconfig = std::path::PathBuf::from("/run/kubeconfig");
        c.standin.write_kubeconfig(&kubeconfig).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-dvr"))
            .args([
                "agent",
                "--netns-dir",
                "/run/netns",
                "--metrics-addr",
                "127.0.0.1:9481",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("NODE_NAME", "n1")
            .env("POD_NAMESPACE", NS)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        async fn get(path: &str) -> String {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(mut s) = tokio::net::TcpStream::connect("127.0.0.1:9481").await else {
                return String::new();
            };
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            out
        }
        assert!(
            wait_programmed(&c, 10 * SEC).await,
            "the binary programmed n1"
        );
        assert!(
            wait_until(5 * SEC, || async {
                get("/readyz").await.starts_with("HTTP/1.1 200")
            })
            .await,
            "/readyz"
        );
        let metrics = get("/metrics").await;
        assert!(
            metrics.contains("kube_dvr_kernel_writes_total{kind=\"netns\"} 1"),
            "{metrics}"
        );
        assert_eq!(netns_list(), vec!["qrouter-0".to_string()]);

        let pid = child.id().unwrap().to_string();
        sh(&["kill", "-TERM", &pid]);
        let status = tokio::time::timeout(5 * SEC, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(
            netns_list(),
            vec!["qrouter-0".to_string()],
            "a stopped agent leaves the kernel"
        );
    });
}

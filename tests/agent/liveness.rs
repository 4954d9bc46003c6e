//! Real liveness: a stuck kernel call makes `/healthz` unhealthy (so
//! kubelet would restart the agent), is killed at its bound, and the agent
//! recovers by itself once the kernel answers again.
//!
//! A stuck `nft` process stands in for the stuck call, so this agent runs
//! nftables through the process (`KUBE_DVR_NFT=process`): a hung
//! libnftables call cannot be made on demand, nor killed (its bound is
//! `command::bounded`, tested on its own).
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kube_dvr::cluster;
use kube_dvr::dataplane::{command, sandbox};

use super::support::*;
use super::{tenant, wait_programmed};

const SEC: Duration = Duration::from_secs(1);
/// While this file exists, `nft` hangs (the wrapper put first on PATH).
const HANG: &str = "/run/kdvr-nft-hang";

async fn healthz(addr: SocketAddr) -> u16 {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stuck_nft_makes_healthz_fail_and_the_agent_recovers() {
    if !sandbox::enter("liveness::a_stuck_nft_makes_healthz_fail_and_the_agent_recovers") {
        return;
    }
    // An `nft` that hangs on demand, first on PATH (set before any thread
    // of the test runtime exists).
    let real = sh(&["sh", "-c", "command -v nft"]).trim().to_string();
    let bin = "/run/kdvr-test-bin";
    std::fs::create_dir_all(bin).unwrap();
    let wrapper = format!("{bin}/nft");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nwhile [ -e {HANG} ]; do sleep 0.05; done\nexec {real} \"$@\"\n"),
    )
    .unwrap();
    sh(&["chmod", "+x", &wrapper]);
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{bin}:{path}"));
    std::env::set_var(kube_dvr::dataplane::nft::exec::ENV, "process");
    // A hung command is killed after 3 s.
    command::set_timeout(3 * SEC);

    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        c.controller_pass().await;
        let mut opts = agent_options("n1");
        opts.pass_timeout = SEC;
        opts.resync = SEC;
        let a = start_agent(&c.client, opts);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(kube_dvr::telemetry::serve_on(l, a.telemetry.clone()));
        assert!(wait_programmed(&c, 5 * SEC).await);
        assert_eq!(healthz(addr).await, 200);

        // nft hangs: the next full pass (resync) is stuck in it.
        std::fs::write(HANG, "").unwrap();
        assert!(
            wait_until(5 * SEC, || async { healthz(addr).await == 503 }).await,
            "/healthz reports the stuck pass"
        );
        // Bounded: the call is killed and reported, the pass ends.
        assert!(
            wait_until(10 * SEC, || async {
                c.annotation("n1", cluster::AGENT_ERRORS_ANNOTATION)
                    .await
                    .is_some_and(|e| e.contains("killed after"))
            })
            .await,
            "the killed nft is reported"
        );

        // The kernel answers again: healthy, and programmed without errors.
        std::fs::remove_file(HANG).unwrap();
        assert!(
            wait_until(10 * SEC, || async {
                healthz(addr).await == 200
                    && c.annotation("n1", cluster::AGENT_ERRORS_ANNOTATION)
                        .await
                        .is_none()
            })
            .await,
            "recovered"
        );
        assert!(wait_programmed(&c, 5 * SEC).await);
        a.stop().await;
    });
}

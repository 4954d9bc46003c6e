//! The gateway HA lab, shared by `tests/gateway_ha.rs` and
//! `benches/gateway_ha.rs`: the example lab with its SnatGateway open to all
//! three nodes (candidates gw-1, node-1, node-2), which node has the gateway
//! attached, and a-db's 100 Hz ping through SNAT to the external host.
//! Needs `nsenter.rs` beside it as `super::nsenter`.
#![allow(dead_code)]
use std::path::Path;
use std::process::Command;

use kube_dvr::dataplane::netns;
use kube_dvr::lab::{Lab, Manifests, Topology};
use kube_dvr::plan::names;

use super::nsenter::sh_in;

pub const NODES: [&str; 3] = ["gw-1", "node-1", "node-2"];
/// The external host a-db pings through SNAT.
pub const EXTERNAL_HOST: &str = "203.0.113.1";

/// The lab, state in `state`, every node a candidate.
pub fn up(state: &str) -> Lab {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let t = Topology::load(&root.join("topology.yaml")).unwrap();
    let mut m = Manifests::load(&root.join("manifests")).unwrap();
    // Every node may serve: three candidates.
    m.snat_gateways[0].spec.node_selector = None;
    Lab::up_with(Path::new(state), t, m).expect("lab up")
}

/// Nodes where the gateway is attached (its `qgb-` on the external bridge).
pub fn attached(lab: &Lab, index: u32) -> Vec<&'static str> {
    attached_in(&node_paths(lab), index)
}

/// Each node's namespace file (for threads that cannot hold the lab).
pub fn node_paths(lab: &Lab) -> Vec<(&'static str, std::path::PathBuf)> {
    NODES.into_iter().map(|n| (n, lab.paths.node(n))).collect()
}

/// [`attached`], given [`node_paths`].
pub fn attached_in(nodes: &[(&'static str, std::path::PathBuf)], index: u32) -> Vec<&'static str> {
    let qgb = names::qg_bridge(index);
    nodes
        .iter()
        .filter(|(_, ns)| sh_in(ns, &format!("ip -o link show {qgb}")).contains("master br-public"))
        .map(|(n, _)| *n)
        .collect()
}

/// What a ping run saw.
#[derive(Clone, Copy, Debug)]
pub struct Pinged {
    pub sent: u32,
    pub lost: u32,
    /// The longest run of consecutive losses.
    pub longest: u32,
    /// The longest time in ms between two answers.
    pub wall: u32,
}

/// Ping the external host from a-db at 100 Hz, `count` probes.
pub fn ping(lab: &Lab, count: u32) -> std::thread::JoinHandle<Pinged> {
    let wl = lab.paths.workload("a-db");
    std::thread::spawn(move || {
        let out = netns::run_in(&wl, || {
            Command::new("ping")
                .args([
                    "-n",
                    "-D",
                    "-i",
                    "0.01",
                    "-W",
                    "1",
                    "-c",
                    &count.to_string(),
                ])
                .arg(EXTERNAL_HOST)
                .output()
                .unwrap()
        })
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let seqs: std::collections::BTreeSet<u32> = text
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        let stamps: Vec<f64> = text
            .lines()
            .filter(|l| l.contains("icmp_seq="))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect();
        let wall = stamps
            .windows(2)
            .map(|w| ((w[1] - w[0]) * 1000.0) as u32)
            .max()
            .unwrap_or(0);
        let (mut run, mut longest, mut lost) = (0, 0, 0);
        for s in 1..=count {
            if seqs.contains(&s) {
                run = 0;
            } else {
                run += 1;
                lost += 1;
                longest = longest.max(run);
            }
        }
        Pinged {
            sent: count,
            lost,
            longest,
            wall,
        }
    })
}

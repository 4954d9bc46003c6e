//! The lab on a real kube-apiserver (`kube-dvr lab demo --api
//! kube-apiserver`): etcd, kube-apiserver and kube-controller-manager from
//! `.tools/bin`, the chart's RBAC applied, the unmodified controller and one
//! agent per node running with the chart's service-account identities (see
//! `kube_dvr::lab::identities`), the example manifests, real traffic. In the
//! sandbox like the other lab tests.
use std::path::Path;

use kube_dvr::dataplane::sandbox;
use kube_dvr::lab::{self, ApiKind, LabOptions};

#[path = "apiserver/tools.rs"]
mod tools;

#[test]
fn demo_on_kube_apiserver_is_all_green() {
    tools::ensure();
    if !sandbox::enter("demo_on_kube_apiserver_is_all_green") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let opts = LabOptions {
        topology: root.join("topology.yaml"),
        manifests: root.join("manifests"),
        state_dir: "/run/kube-dvr-lab-apiserver".into(),
        api: ApiKind::KubeApiServer,
    };
    let mut out = Vec::new();
    let ok = lab::demo(&opts, &mut out).unwrap_or_else(|e| panic!("lab demo: {e}"));
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    assert!(ok, "a probe disagreed:\n{text}");
    // Every object Ready (the status table precedes the matrix).
    let table: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).skip(1).collect();
    assert!(table.len() >= 4, "{text}");
    for row in table {
        let ready = row.split_whitespace().nth(2);
        assert!(matches!(ready, Some("True" | "False")), "{row}");
    }
}

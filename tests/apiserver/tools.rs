//! `.tools/bin` with etcd, kube-apiserver, kube-controller-manager and helm:
//! when one is missing, `scripts/install-tools.sh` runs first (as
//! `tests/chart.rs` does for its tools), so `cargo test` works on a fresh
//! machine; its cold Go build takes many minutes.
use std::process::Command;
use std::sync::Once;

pub fn ensure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bin = kube_dvr::lab::apiserver::tools_dir();
        let missing = ["etcd", "kube-apiserver", "kube-controller-manager", "helm"]
            .iter()
            .any(|t| !bin.join(t).exists());
        if missing {
            let repo = env!("CARGO_MANIFEST_DIR");
            let out = Command::new("bash")
                .arg(format!("{repo}/scripts/install-tools.sh"))
                .current_dir(repo)
                .output()
                .expect("run scripts/install-tools.sh");
            assert!(
                out.status.success(),
                "scripts/install-tools.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

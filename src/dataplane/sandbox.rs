//! Running tests (and benchmarks) inside a private user + mount + network
//! namespace, so they program real kernel objects without root and without
//! touching the host's network.
//!
//! A test calls [`enter`] first. Outside the sandbox it re-runs the current
//! test binary for exactly that test under `unshare -rnm`, asserts that the
//! child passed and returns `false` (the caller then returns). Inside, it
//! mounts a private tmpfs on `/run` (so `/run/netns` and anything else the
//! test creates there vanish with the sandbox) and returns `true`.
use std::path::Path;
use std::process::Command;

const ENV: &str = "KUBE_DVR_SANDBOX";

/// Whether this process runs inside the sandbox.
pub fn inside() -> bool {
    std::env::var_os(ENV).is_some()
}

/// Enter the sandbox for the test named `test` (its full path as the test
/// harness prints it, e.g. `eastwest::repairs_routes`). See the module docs.
pub fn enter(test: &str) -> bool {
    if inside() {
        prepare();
        return true;
    }
    let exe = std::env::current_exe().expect("current test executable");
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "--net"])
        .args(["--propagation", "private"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(ENV, "1")
        .status()
        .expect("run unshare (util-linux)");
    assert!(status.success(), "sandboxed test {test} failed: {status}");
    false
}

/// A benchmark's `main` starts here: its arguments (cargo's `--bench`
/// dropped) inside the sandbox; outside, it re-runs itself there and exits
/// with the child's status.
pub fn enter_bench() -> Vec<String> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(ok) = rerun_self(&args) {
        std::process::exit(if ok { 0 } else { 1 });
    }
    args
}

/// Re-run a whole program (a benchmark, say) in the sandbox with `args`.
/// Returns `None` when already inside, else the child's success.
pub fn rerun_self(args: &[String]) -> Option<bool> {
    if inside() {
        prepare();
        return None;
    }
    let exe = std::env::current_exe().expect("current executable");
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "--net"])
        .args(["--propagation", "private"])
        .arg(&exe)
        .args(args)
        .env(ENV, "1")
        .status()
        .expect("run unshare (util-linux)");
    Some(status.success())
}

fn prepare() {
    use nix::mount::{mount, MsFlags};
    // A private /run: netns bind mounts made by the test live and die here.
    mount(
        Some("tmpfs"),
        Path::new("/run"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a private tmpfs on /run inside the sandbox");
    // Loopback up, for services on 127.0.0.1 (the lab's API stand-in).
    let mut nl = super::netlink::Netlink::open_here().expect("netlink socket in the sandbox");
    nl.set_link(1, &super::netlink::LinkChange::up())
        .expect("bring lo up");
}

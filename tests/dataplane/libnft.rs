//! nftables in-process through libnftables (`nft::exec`), against the
//! kernel: tables applied and observed through the library read back the
//! same as through the `nft` process; one process programs two namespaces
//! at once; the `nft` process fallback still works; and the change path
//! runs no program at all.
use super::*;
use kube_dvr::dataplane::nft::exec::{self, Backend};
use kube_dvr::dataplane::{fence, netns, sandbox};
use std::path::Path;

/// A small ip-family table: a map `fip_dnat` with `elems`, a chain using it.
fn table(elems: &[(&str, &str)]) -> NftTable {
    NftTable {
        family: NftFamily::Ip,
        name: NFT_TABLE.into(),
        sets: [(
            "fip_dnat".to_string(),
            NftSet {
                key_type: "ipv4_addr".into(),
                data_type: Some("ipv4_addr".into()),
                elements: elems
                    .iter()
                    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                    .collect(),
            },
        )]
        .into(),
        chains: [(
            "prerouting".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "nat".into(),
                    hook: "prerouting".into(),
                    priority: -100,
                }),
                rules: vec!["dnat to ip daddr map @fip_dnat".into()],
            },
        )]
        .into(),
    }
}

/// Observe, plan and apply through `b`.
fn converge_with(b: Backend, desired: Option<&NftTable>) {
    let observed = nft::observe_with(b, NftFamily::Ip, NFT_TABLE).expect("observe");
    let batch = nft::plan_batch(observed.as_ref(), desired);
    nft::apply_with(b, &batch).expect("apply");
}

fn converged_with(b: Backend, desired: &NftTable) -> bool {
    let observed = nft::observe_with(b, NftFamily::Ip, NFT_TABLE).expect("observe");
    nft::plan_batch(observed.as_ref(), Some(desired)).is_empty()
}

/// `nft -j list table ip kube_dvr` through `b`, parsed.
fn listing(b: Backend) -> Value {
    let out = exec::run_command_with(b, "list table ip kube_dvr", true).unwrap();
    assert!(out.ok, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn the_library_applies_and_observes_like_the_process() {
    if !sandbox::enter("libnft::the_library_applies_and_observes_like_the_process") {
        return;
    }
    assert!(exec::library_available(), "libnftables1 is installed here");
    assert_eq!(exec::backend(), Backend::Library);
    assert!(
        nft::observe_with(Backend::Library, NftFamily::Ip, NFT_TABLE)
            .unwrap()
            .is_none()
    );

    let desired = table(&[("203.0.113.10", "198.18.1.2")]);
    converge_with(Backend::Library, Some(&desired));
    // The kernel has it: the `nft` binary reads it back.
    let text = sh(&["nft", "list", "table", "ip", "kube_dvr"]);
    assert!(text.contains("203.0.113.10 : 198.18.1.2"), "{text}");
    // Same JSON, same observation, either way.
    assert_eq!(listing(Backend::Library), listing(Backend::Process));
    assert_eq!(
        nft::observe_with(Backend::Library, NftFamily::Ip, NFT_TABLE).unwrap(),
        nft::observe_with(Backend::Process, NftFamily::Ip, NFT_TABLE).unwrap()
    );
    assert!(converged_with(Backend::Library, &desired));

    // One element more: one small batch.
    let more = table(&[
        ("203.0.113.10", "198.18.1.2"),
        ("203.0.113.11", "198.18.1.3"),
    ]);
    converge_with(Backend::Library, Some(&more));
    assert!(converged_with(Backend::Process, &more));

    // A failing batch: the library's error text, and nothing of it applied.
    let mut broken = more.clone();
    broken
        .sets
        .get_mut("fip_dnat")
        .unwrap()
        .elements
        .insert("203.0.113.12".into(), Some("198.18.1.4".into()));
    broken
        .chains
        .get_mut("prerouting")
        .unwrap()
        .rules
        .push("ip saddr @no_such_set drop".into());
    let observed = nft::observe_with(Backend::Library, NftFamily::Ip, NFT_TABLE).unwrap();
    let err = nft::apply_with(
        Backend::Library,
        &nft::plan_batch(observed.as_ref(), Some(&broken)),
    )
    .expect_err("a rule naming a missing set fails");
    assert_eq!(err.kind(), "nft_failed");
    let msg = err.to_string();
    assert!(
        msg.contains("Error:") && msg.contains("no_such_set"),
        "{msg}"
    );
    assert!(msg.contains("libnftables returned"), "{msg}");
    assert!(converged_with(Backend::Library, &more), "atomic");

    converge_with(Backend::Library, None);
    assert!(!sh(&["nft", "list", "tables"]).contains("kube_dvr"));
}

#[test]
fn the_process_fallback_still_works() {
    if !sandbox::enter("libnft::the_process_fallback_still_works") {
        return;
    }
    let desired = table(&[("203.0.113.10", "198.18.1.2")]);
    converge_with(Backend::Process, Some(&desired));
    assert!(converged_with(Backend::Process, &desired));
    assert!(converged_with(Backend::Library, &desired));
    let err = nft::apply_with(
        Backend::Process,
        &nft::plan_batch(None, Some(&table(&[("203.0.113.10", "no-address")]))),
    )
    .expect_err("a bad element fails");
    let msg = err.to_string();
    assert!(
        msg.contains("Error:") && msg.contains("exit status"),
        "{msg}"
    );
    converge_with(Backend::Process, None);
    assert!(
        nft::observe_with(Backend::Process, NftFamily::Ip, NFT_TABLE)
            .unwrap()
            .is_none()
    );
}

/// Each library call opens its socket in the namespace of the thread that
/// makes it, not where the library was loaded: two threads of one process, in two namespaces, programming
/// them at the same time, each end up with their own table only.
#[test]
fn one_process_programs_two_namespaces() {
    if !sandbox::enter("libnft::one_process_programs_two_namespaces") {
        return;
    }
    // Loaded here, in the process's own namespace, before the others
    // exist: loading opens no socket.
    assert!(exec::library_available());
    for ns in ["na", "nb"] {
        sh(&["ip", "netns", "add", ns]);
    }
    let run = |ns: &'static str, octet: u8| {
        std::thread::spawn(move || {
            let path = Path::new("/run/netns").join(ns);
            let mut elems = Vec::new();
            for i in 1..=20u8 {
                elems.push((format!("203.0.{octet}.{i}"), format!("198.18.{octet}.{i}")));
                let pairs: Vec<(&str, &str)> = elems
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let desired = table(&pairs);
                netns::run_in(&path, || converge_with(Backend::Library, Some(&desired))).unwrap();
            }
        })
    };
    let (a, b) = (run("na", 1), run("nb", 2));
    a.join().unwrap();
    b.join().unwrap();
    for (ns, mine, theirs) in [
        ("na", "203.0.1.20", "203.0.2."),
        ("nb", "203.0.2.20", "203.0.1."),
    ] {
        let t = in_ns(Some(ns), &["nft", "list", "table", "ip", "kube_dvr"]);
        assert!(t.contains(mine), "{ns}: {t}");
        assert!(!t.contains(theirs), "{ns}: {t}");
        assert_eq!(t.matches(" : 198.18.").count(), 20, "{ns}: {t}");
    }
    assert!(
        !sh(&["nft", "list", "tables"]).contains("kube_dvr"),
        "nothing in the process's own namespace"
    );
}

/// The change path forks nothing: with no program reachable on PATH (an
/// `nft` there only leaves a mark), the engine creates two routers'
/// namespaces with their tables, applies a one-element change, and the
/// fence makes, lists and removes its table.
#[test]
fn the_change_path_runs_no_program() {
    if !sandbox::enter("libnft::the_change_path_runs_no_program") {
        return;
    }
    sh(&["ip", "link", "add", "br-fence", "type", "bridge"]);
    let bin = "/run/kdvr-trap-bin";
    let mark = "/run/kdvr-forked";
    std::fs::create_dir_all(bin).unwrap();
    std::fs::write(
        format!("{bin}/nft"),
        format!("#!/bin/sh\necho \"$@\" >> {mark}\nexit 1\n"),
    )
    .unwrap();
    sh(&["chmod", "+x", &format!("{bin}/nft")]);
    let path = std::env::var("PATH").unwrap();
    // Before any thread of the test: nothing else reads the environment.
    std::env::set_var("PATH", bin);

    let mut e = engine();
    let mut desired = desired_ab();
    reconcile_ok(&mut e, &desired);
    let q = desired.namespaces.get_mut("qrouter-a").unwrap();
    q.nft
        .as_mut()
        .unwrap()
        .sets
        .get_mut("fips")
        .unwrap()
        .elements
        .insert("203.0.113.77".into(), None);
    // The change path (what user changes take), not a full pass.
    let r = e.reconcile_changes(&desired).expect("reconcile_changes");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.writes.get("nft"), 1, "{:?}", r.writes);
    let root = Path::new("/proc/self/ns/net");
    fence::Fence::open(root)
        .unwrap()
        .renew(&["qgb-1".into()])
        .unwrap();
    assert_eq!(fence::live_ports(root).unwrap(), ["qgb-1"]);
    fence::remove_table(root).unwrap();
    assert!(fence::live_ports(root).unwrap().is_empty());

    std::env::set_var("PATH", path);
    assert!(
        !Path::new(mark).exists(),
        "nft was run: {}",
        std::fs::read_to_string(mark).unwrap_or_default()
    );
    let t = in_ns(
        Some("qrouter-a"),
        &["nft", "list", "table", "ip", "kube_dvr"],
    );
    assert!(t.contains("203.0.113.77"), "{t}");
}

#[test]
fn a_library_call_that_never_returns_wedges_the_library_for_good() {
    if !sandbox::enter("libnft::a_library_call_that_never_returns_wedges_the_library_for_good") {
        return;
    }
    if !exec::library_available() {
        eprintln!("no libnftables here: skipped");
        return;
    }
    let t = kube_dvr::telemetry::Telemetry::new();
    assert!(t.is_healthy());
    kube_dvr::dataplane::command::set_timeout(std::time::Duration::from_millis(300));
    // A call that hangs inside the library holds its lock: so does this.
    let held = exec::hold_library_lock();
    let r = exec::run_command_with(Backend::Library, "list tables", false);
    assert!(
        r.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
        "{:?}",
        r.map(|o| o.status)
    );
    assert!(exec::wedged());
    assert!(
        !t.is_healthy(),
        "/healthz must fail: only a restart frees the library"
    );
    // Later calls still work, through the nft process, although the lock
    // is still held.
    let out = exec::run_command_with(Backend::Library, "list tables", false).unwrap();
    assert!(
        out.ok && out.status.contains("exit"),
        "{}: {}",
        out.status,
        out.stderr
    );
    drop(held);
    assert!(exec::wedged(), "for good");
}

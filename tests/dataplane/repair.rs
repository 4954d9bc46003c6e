//! Drift made behind the engine's back is repaired, exactly.
use super::*;
use kube_dvr::dataplane::sandbox;

#[test]
fn repairs_exactly_what_broke() {
    if !sandbox::enter("repair::repairs_exactly_what_broke") {
        return;
    }
    let desired = desired_ab();
    let mut e = engine();
    reconcile_ok(&mut e, &desired);
    let a = Some("qrouter-a");

    // One route → exactly one route write.
    in_ns(a, &["ip", "route", "del", "default", "table", "16"]);
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(
        (r.writes.total(), r.writes.get("route")),
        (1, 1),
        "{:?}",
        r.writes
    );

    // One neighbour.
    in_ns(a, &["ip", "neigh", "del", "10.1.0.5", "dev", "qr-a100"]);
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(
        (r.writes.total(), r.writes.get("neighbour")),
        (1, 1),
        "{:?}",
        r.writes
    );

    // One FDB flood entry of two on the same VXLAN.
    sh(&[
        "bridge",
        "fdb",
        "del",
        "00:00:00:00:00:00",
        "dev",
        "dvrvx-100",
        "dst",
        "198.18.0.3",
    ]);
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(
        (r.writes.total(), r.writes.get("fdb")),
        (1, 1),
        "{:?}",
        r.writes
    );

    // An address.
    in_ns(a, &["ip", "addr", "del", "10.1.1.1/24", "dev", "qr-a101"]);
    let r = reconcile_ok(&mut e, &desired);
    // The address, and what the kernel flushed with the interface's last
    // address: routes through it and its neighbours.
    assert_eq!(r.writes.get("address"), 1, "{:?}", r.writes);
    assert_eq!(r.writes.get("route"), 2, "{:?}", r.writes);
    assert_eq!(r.writes.get("neighbour"), 1, "{:?}", r.writes);
    assert_eq!(r.writes.total(), 4, "{:?}", r.writes);

    // A sysctl set back.
    in_ns(a, &["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(
        (r.writes.total(), r.writes.get("sysctl")),
        (1, 1),
        "{:?}",
        r.writes
    );
    assert_eq!(sysctl("qrouter-a", "net/ipv4/ip_forward"), "1");

    // A rule.
    in_ns(a, &["ip", "rule", "del", "priority", "40001"]);
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(
        (r.writes.total(), r.writes.get("rule")),
        (1, 1),
        "{:?}",
        r.writes
    );

    // An nft chain rewritten by hand.
    in_ns(a, &["nft", "flush", "chain", "ip", "kube_dvr", "route_in"]);
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(r.writes.total(), r.writes.get("nft"), "{:?}", r.writes);
    assert!(r.writes.get("nft") >= 1);

    // A qr- link: the pair is recreated, then what hung on it.
    in_ns(a, &["ip", "link", "del", "qr-a100"]);
    let r = reconcile_ok(&mut e, &desired);
    let w = r.writes.by_kind().clone();
    // The pair is created from the root end, then the qr- end brought up.
    let expect: BTreeMap<&str, u64> = [
        ("link", 2),
        ("address", 1),
        ("route", 1),
        ("neighbour", 1),
        ("sysctl", 1),
    ]
    .into();
    assert_eq!(w, expect);
    assert_converged(&mut e, &desired);

    // A whole router namespace.
    sh(&["ip", "netns", "del", "qrouter-a"]);
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(r.writes.get("netns"), 1, "{:?}", r.writes);
    assert!(link_names(a).contains(&"qr-a101".to_string()));
    assert_converged(&mut e, &desired);
}

#[test]
fn drifted_vxlan_is_recreated_and_master_fixed_in_place() {
    if !sandbox::enter("repair::drifted_vxlan_is_recreated_and_master_fixed_in_place") {
        return;
    }
    let desired = desired_ab();
    let mut e = engine();
    reconcile_ok(&mut e, &desired);
    // Wrong VNI: delete and recreate by hand with vni 999.
    sh(&["ip", "link", "del", "dvrvx-100"]);
    sh(&[
        "ip",
        "link",
        "add",
        "dvrvx-100",
        "type",
        "vxlan",
        "id",
        "999",
        "local",
        "198.18.0.1",
        "dstport",
        "4789",
        "nolearning",
    ]);
    // Wrong master.
    sh(&["ip", "link", "set", "qrb-a100", "master", "dvrbr-101"]);
    // Down.
    sh(&["ip", "link", "set", "dvrbr-200", "down"]);
    let r = reconcile_ok(&mut e, &desired);
    // vxlan: delete + create; qrb master: 1; bridge up: 1; FDB of the
    // recreated VXLAN: 3 entries.
    assert_eq!(r.writes.get("link"), 4, "{:?}", r.writes);
    assert_eq!(r.writes.get("fdb"), 3, "{:?}", r.writes);
    assert_eq!(r.writes.total(), 7, "{:?}", r.writes);
    let vx = json(None, &["ip", "-j", "-d", "link", "show", "dvrvx-100"]);
    assert_eq!(vx[0]["linkinfo"]["info_data"]["id"], 100);
    assert_eq!(vx[0]["master"], "dvrbr-100");
    let qrb = json(None, &["ip", "-j", "link", "show", "qrb-a100"]);
    assert_eq!(qrb[0]["master"], "dvrbr-100");
    assert_converged(&mut e, &desired);
}

#[test]
fn no_sweep_after_an_incomplete_observation() {
    if !sandbox::enter("repair::no_sweep_after_an_incomplete_observation") {
        return;
    }
    let desired = desired_ab();
    let mut e = engine();
    reconcile_ok(&mut e, &desired);
    let a = Some("qrouter-a");
    // A stale owned route, a missing desired one, and a namespace file that
    // cannot be entered (a plain file, not a namespace).
    in_ns(
        a,
        &[
            "ip",
            "route",
            "add",
            "10.1.77.0/24",
            "dev",
            "qr-a100",
            "proto",
            "230",
        ],
    );
    in_ns(a, &["ip", "route", "del", "default", "table", "16"]);
    std::fs::write("/run/netns/qrouter-zz", b"").unwrap();

    let r = e.reconcile(&desired).expect("reconcile");
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].op.contains("qrouter-zz"), "{:?}", r.errors);
    assert_eq!(r.errors[0].error.kind(), "netns");
    // Adds go on; removals wait.
    assert_eq!(r.writes.total(), 1, "{:?}", r.writes);
    assert!(in_ns(a, &["ip", "route", "show", "table", "16"]).contains("default via"));
    assert!(in_ns(a, &["ip", "route", "show"]).contains("10.1.77.0/24"));
    assert!(std::path::Path::new("/run/netns/qrouter-zz").exists());
    assert!(e.observe().is_err());

    std::fs::remove_file("/run/netns/qrouter-zz").unwrap();
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(
        (r.writes.total(), r.writes.get("route")),
        (1, 1),
        "{:?}",
        r.writes
    );
    assert!(!in_ns(a, &["ip", "route", "show"]).contains("10.1.77.0/24"));
    assert_converged(&mut e, &desired);
}

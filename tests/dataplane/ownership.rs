//! Only owned objects are ever touched; removal is exact.
use super::*;
use kube_dvr::dataplane::sandbox;

#[test]
fn unowned_objects_survive() {
    if !sandbox::enter("ownership::unowned_objects_survive") {
        return;
    }
    let desired = desired_ab();
    let mut e = engine();
    reconcile_ok(&mut e, &desired);
    let a = Some("qrouter-a");
    // (No dummy module in the sandbox's kernel; any kind will do.)
    sh(&["ip", "link", "add", "eth9", "type", "bridge"]);
    sh(&["ip", "link", "set", "eth9", "up"]);
    sh(&["ip", "addr", "add", "198.18.5.1/24", "dev", "eth9"]);
    sh(&[
        "ip",
        "route",
        "add",
        "198.18.6.0/24",
        "via",
        "198.18.5.2",
        "proto",
        "static",
    ]);
    sh(&[
        "ip",
        "rule",
        "add",
        "priority",
        "100",
        "from",
        "198.18.7.0/24",
        "lookup",
        "100",
    ]);
    sh(&[
        "ip",
        "neigh",
        "add",
        "198.18.5.9",
        "lladdr",
        "02:00:00:00:99:09",
        "dev",
        "eth9",
        "nud",
        "stale",
    ]);
    in_ns(
        a,
        &[
            "ip",
            "route",
            "add",
            "10.1.7.0/24",
            "dev",
            "qr-a100",
            "proto",
            "static",
        ],
    );
    in_ns(
        a,
        &[
            "ip",
            "neigh",
            "add",
            "10.1.0.77",
            "lladdr",
            "02:00:00:00:99:07",
            "dev",
            "qr-a100",
            "nud",
            "reachable",
        ],
    );
    sh(&["ip", "netns", "add", "other"]);

    let check = || {
        assert!(link_names(None).contains(&"eth9".to_string()));
        assert!(sh(&["ip", "route", "show"]).contains("198.18.6.0/24 via 198.18.5.2"));
        assert!(sh(&["ip", "rule", "show"]).contains("100:\tfrom 198.18.7.0/24 lookup 100"));
        assert!(sh(&["ip", "neigh", "show", "dev", "eth9"]).contains("198.18.5.9"));
        assert!(netns_list().contains(&"other".to_string()));
    };
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(r.writes.total(), 0, "{:?}", r.writes);
    check();
    assert!(in_ns(a, &["ip", "route", "show"]).contains("10.1.7.0/24"));
    assert!(in_ns(a, &["ip", "neigh", "show"]).contains("10.1.0.77"));

    let r = e.cleanup().expect("cleanup");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    check();
    assert_eq!(netns_list(), vec!["other".to_string()]);
    let root = link_names(None);
    assert!(
        root.iter()
            .all(|l| !["dvr", "qrb"].iter().any(|p| l.starts_with(p))),
        "{root:?}"
    );
    assert!(!sh(&["ip", "route", "show", "table", "all"]).contains("proto 230"));
    assert!(!sh(&["ip", "rule", "show"]).contains("4000"));
    assert!(sh(&["nft", "list", "tables"]).trim().is_empty());
    assert_eq!(e.observe().unwrap(), NodeState::default());
    // Cleaning up again writes nothing.
    assert_eq!(e.cleanup().unwrap().writes.total(), 0);
}

#[test]
fn removing_a_router_removes_only_its_objects() {
    if !sandbox::enter("ownership::removing_a_router_removes_only_its_objects") {
        return;
    }
    let both = desired_ab();
    let mut only_a = NodeState::default();
    add_router(&mut only_a, "a", 100, 1);
    only_a.root.nft = both.root.nft.clone();
    let mut e = engine();
    reconcile_ok(&mut e, &both);
    let r = reconcile_ok(&mut e, &only_a);
    // Router b: its namespace, its two bridges, two VXLANs, two veth pairs
    // (the root ends are deleted explicitly so nothing lingers), its FDB goes
    // with its VXLANs. The six root links go as one bulk delete: six moves
    // into the delete group, one group delete.
    assert_eq!(r.writes.get("netns"), 1, "{:?}", r.writes);
    assert_eq!(r.writes.get("link"), 7, "{:?}", r.writes);
    assert_eq!(r.writes.total(), 8, "{:?}", r.writes);
    let root = link_names(None);
    assert!(root.contains(&"qrb-a100".to_string()) && root.contains(&"dvrvx-101".to_string()));
    assert!(!root.iter().any(|l| l.contains("20")), "{root:?}");
    assert_eq!(netns_list(), vec!["qrouter-a".to_string()]);
    assert_converged(&mut e, &only_a);
}

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

/// `lo`'s alias in `ns` (`None` = unset).
fn lo_alias(ns: &str) -> Option<String> {
    let lo = json(Some(ns), &["ip", "-j", "link", "show", "lo"]);
    lo[0]["ifalias"].as_str().map(str::to_string)
}

/// A namespace as another system on the host makes it (OpenStack's agents
/// use the same names): untagged, with a link and an address inside.
fn foreign_namespace(name: &str, link: &str) {
    sh(&["ip", "netns", "add", name]);
    in_ns(Some(name), &["ip", "link", "add", link, "type", "bridge"]);
    in_ns(
        Some(name),
        &["ip", "addr", "add", "198.18.9.1/24", "dev", link],
    );
}

fn sorted_links(ns: &str) -> Vec<String> {
    let mut l = link_names(Some(ns));
    l.sort();
    l
}

/// Issue 12 item 10: ownership by tag, not by name prefix alone. Before
/// the tag, the pass deleted `qrouter-z` (an owned prefix the plan does not
/// name) and programmed router b into someone else's `qrouter-b`.
#[test]
fn someone_elses_namespaces_are_never_touched() {
    if !sandbox::enter("ownership::someone_elses_namespaces_are_never_touched") {
        return;
    }
    foreign_namespace("qrouter-z", "qr-z");
    foreign_namespace("qrouter-b", "qr-y");
    let theirs = || {
        assert_eq!(sorted_links("qrouter-z"), ["lo", "qr-z"]);
        assert_eq!(sorted_links("qrouter-b"), ["lo", "qr-y"]);
        assert!(in_ns(Some("qrouter-b"), &["ip", "addr"]).contains("198.18.9.1/24"));
        assert_eq!(lo_alias("qrouter-b"), None);
        assert_eq!(
            in_ns(Some("qrouter-b"), &["nft", "list", "ruleset"]).trim(),
            ""
        );
    };
    let desired = desired_ab();
    let mut e = engine();
    for pass in 0..2 {
        let r = e.reconcile(&desired).expect("reconcile");
        // Router b's namespace name is taken: one clear error, nothing of
        // router b programmed in it or pointing into it.
        let errors: Vec<String> = r
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.op, e.error))
            .collect();
        assert_eq!(errors.len(), 1, "pass {pass}: {errors:?}");
        assert!(
            errors[0].contains("qrouter-b exists and is not kube-dvr's"),
            "{errors:?}"
        );
        theirs();
        assert!(!link_names(None).iter().any(|l| l.starts_with("qrb-b")));
        // Router a is whole, in a namespace that carries the tag.
        assert!(sorted_links("qrouter-a").contains(&"qr-a100".to_string()));
        assert_eq!(lo_alias("qrouter-a").as_deref(), Some("kube-dvr"));
    }
    // Observation leaves someone else's namespaces out.
    let seen = e.observe().unwrap();
    assert_eq!(
        seen.namespaces.keys().collect::<Vec<_>>(),
        ["qrouter-a"],
        "observed"
    );

    // The change path (no observation) must not adopt a namespace that
    // appeared under a name the plan newly needs either.
    let mut only_a = NodeState::default();
    add_router(&mut only_a, "a", 100, 1);
    only_a.root.nft = desired.root.nft.clone();
    sh(&["ip", "netns", "delete", "qrouter-b"]);
    reconcile_ok(&mut e, &only_a);
    foreign_namespace("qrouter-b", "qr-y");
    let r = e.reconcile_changes(&desired).expect("change");
    let errors: Vec<String> = r
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.op, e.error))
        .collect();
    assert!(
        errors.len() == 1 && errors[0].contains("qrouter-b exists and is not kube-dvr's"),
        "{errors:?}"
    );
    theirs();

    // Removing everything removes only what kube-dvr made.
    let r = e.cleanup().expect("cleanup");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(netns_list(), ["qrouter-b", "qrouter-z"]);
    theirs();
}

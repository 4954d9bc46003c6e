//! Programming from empty, idempotence, both reconcile paths, scale.
use super::*;
use kube_dvr::dataplane::diff::diff;
use kube_dvr::dataplane::sandbox;

#[test]
fn apply_then_nothing_to_do() {
    if !sandbox::enter("converge::apply_then_nothing_to_do") {
        return;
    }
    let desired = desired_ab();
    let mut e = engine();
    let r = reconcile_ok(&mut e, &desired);
    assert!(r.writes.get("link") >= 12, "{:?}", r.writes);
    assert_eq!(r.writes.get("netns"), 2);

    // Independent observation.
    let root = link_names(None);
    for l in [
        "dvrbr-100",
        "dvrvx-100",
        "qrb-a100",
        "dvrbr-201",
        "qrb-b201",
    ] {
        assert!(root.contains(&l.to_string()), "{l} missing in {root:?}");
    }
    let vx = json(None, &["ip", "-j", "-d", "link", "show", "dvrvx-100"]);
    let data = &vx[0]["linkinfo"]["info_data"];
    assert_eq!(data["id"], 100);
    assert_eq!(data["local"], "198.18.0.1");
    assert_eq!(data["port"], 4789);
    assert_eq!(data["learning"], false);
    assert_eq!(vx[0]["master"], "dvrbr-100");
    assert_eq!(vx[0]["address"], "02:00:01:00:00:02");
    let q = json(
        Some("qrouter-a"),
        &["ip", "-j", "-d", "link", "show", "qr-a100"],
    );
    assert_eq!(q[0]["address"], "02:00:01:00:00:04");
    assert_eq!(q[0]["mtu"], 1450);
    assert!(q[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let qrb = json(None, &["ip", "-j", "link", "show", "qrb-a100"]);
    assert_eq!(qrb[0]["master"], "dvrbr-100");
    let addrs = in_ns(
        Some("qrouter-a"),
        &["ip", "-4", "-o", "addr", "show", "dev", "qr-a100"],
    );
    assert!(addrs.contains("10.1.0.1/24"), "{addrs}");
    let routes16 = in_ns(Some("qrouter-a"), &["ip", "route", "show", "table", "16"]);
    assert!(
        routes16.contains("default via 10.1.1.254 dev qr-a101 proto 230"),
        "{routes16}"
    );
    let routes1000 = in_ns(Some("qrouter-a"), &["ip", "route", "show", "table", "1000"]);
    assert!(
        routes1000.contains("10.1.8.0/24 dev qr-a101 proto 230"),
        "{routes1000}"
    );
    let rules = in_ns(Some("qrouter-a"), &["ip", "rule", "show"]);
    assert!(
        rules.contains("40000:\tfrom 10.1.0.0/24 lookup 16"),
        "{rules}"
    );
    assert!(
        rules.contains("40001:\tfrom all fwmark 0x10 lookup 1000"),
        "{rules}"
    );
    let neigh = in_ns(
        Some("qrouter-a"),
        &["ip", "neigh", "show", "nud", "permanent"],
    );
    assert!(
        neigh.contains("10.1.0.5 dev qr-a100 lladdr 02:00:01:00:00:05 PERMANENT"),
        "{neigh}"
    );
    let fdb = sh(&["bridge", "fdb", "show", "dev", "dvrvx-100"]);
    for want in [
        "00:00:00:00:00:00 dst 198.18.0.2 self permanent",
        "00:00:00:00:00:00 dst 198.18.0.3 self permanent",
        "02:00:01:00:00:09 dst 198.18.0.2 self permanent",
    ] {
        assert!(fdb.contains(want), "{want} not in {fdb}");
    }
    assert_eq!(sysctl("qrouter-a", "net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl("qrouter-a", "net/ipv4/conf/all/send_redirects"), "0");
    assert_eq!(
        sysctl("qrouter-a", "net/ipv4/conf/qr-a100/send_redirects"),
        "0"
    );
    let t = in_ns(
        Some("qrouter-a"),
        &["nft", "list", "table", "ip", "kube_dvr"],
    );
    assert!(t.contains("203.0.113.1"), "{t}");
    let t = sh(&["nft", "list", "table", "bridge", "kube_dvr"]);
    assert!(t.contains("dvrvx-100"), "{t}");

    assert_converged(&mut e, &desired);
    // And the pure diff agrees.
    assert_eq!(diff(&e.observe().unwrap(), &as_observed(&desired)), vec![]);
}

#[test]
fn sysctls_hit_the_target_namespace() {
    if !sandbox::enter("converge::sysctls_hit_the_target_namespace") {
        return;
    }
    let before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let mut desired = NodeState::default();
    let mut q = NsState::default();
    let flip = if before.trim() == "1" { "0" } else { "1" };
    q.sysctls.insert("net/ipv4/ip_forward".into(), flip.into());
    desired.namespaces.insert("qrouter-s".into(), q);
    let mut e = engine();
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(r.writes.get("sysctl"), 1);
    assert_eq!(sysctl("qrouter-s", "net/ipv4/ip_forward"), flip);
    // The process's own namespace is untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        before
    );
    assert_eq!(e.reconcile(&desired).unwrap().writes.total(), 0);
}

#[test]
fn macvlan_and_namespace_to_namespace_veth() {
    if !sandbox::enter("converge::macvlan_and_namespace_to_namespace_veth") {
        return;
    }
    let mut desired = NodeState::default();
    add_router(&mut desired, "a", 100, 1);
    let fip = NsRef::Named("fip-ext".into());
    let qa = NsRef::Named("qrouter-a".into());
    // The external attachment: a bridge in root, a macvlan fg- in fip-ext.
    desired.root.links.insert(
        "dvrbr-ext".into(),
        link("dvrbr-ext", LinkKind::Bridge, "02:00:0e:00:00:01", None),
    );
    let mut f = NsState::default();
    f.links.insert(
        "fg-ext".into(),
        link(
            "fg-ext",
            LinkKind::Macvlan {
                parent: "dvrbr-ext".into(),
            },
            "02:00:0e:00:00:02",
            None,
        ),
    );
    f.links.insert(
        "fpr-a".into(),
        link(
            "fpr-a",
            veth("rfp-a", qa.clone()),
            "02:00:0e:00:00:03",
            None,
        ),
    );
    f.addresses.insert(Address {
        link: "fg-ext".into(),
        addr: "203.0.113.5/24".parse().unwrap(),
    });
    f.addresses.insert(Address {
        link: "fpr-a".into(),
        addr: "169.254.64.1/31".parse().unwrap(),
    });
    desired.namespaces.insert("fip-ext".into(), f);
    let q = desired.namespaces.get_mut("qrouter-a").unwrap();
    q.links.insert(
        "rfp-a".into(),
        link(
            "rfp-a",
            veth("fpr-a", fip.clone()),
            "02:00:0e:00:00:04",
            None,
        ),
    );
    q.addresses.insert(Address {
        link: "rfp-a".into(),
        addr: "169.254.64.0/31".parse().unwrap(),
    });

    let mut e = engine();
    reconcile_ok(&mut e, &desired);
    let fg = json(
        Some("fip-ext"),
        &["ip", "-j", "-d", "link", "show", "fg-ext"],
    );
    assert_eq!(fg[0]["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(fg[0]["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(fg[0]["address"], "02:00:0e:00:00:02");
    // Traffic across the namespace-to-namespace pair.
    in_ns(Some("qrouter-a"), &["ping", "-c1", "-W2", "169.254.64.1"]);
    assert_converged(&mut e, &desired);

    // Deleting the fip namespace takes fpr-a, and with it rfp-a: both come
    // back, and the macvlan.
    sh(&["ip", "netns", "del", "fip-ext"]);
    reconcile_ok(&mut e, &desired);
    in_ns(Some("qrouter-a"), &["ping", "-c1", "-W2", "169.254.64.1"]);
    assert_converged(&mut e, &desired);
    e.cleanup().unwrap();
    assert!(netns_list().is_empty());
    assert!(!link_names(None).contains(&"dvrbr-ext".to_string()));
}

#[test]
fn many_routers_converge_and_a_quiet_pass_writes_nothing() {
    if !sandbox::enter("converge::many_routers_converge_and_a_quiet_pass_writes_nothing") {
        return;
    }
    let n: u8 = std::env::var("KD_ROUTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut desired = NodeState::default();
    for i in 0..n {
        add_router(
            &mut desired,
            &format!("r{i}-"),
            1000 + 2 * u32::from(i),
            i + 1,
        );
    }
    let mut e = engine();
    let t = std::time::Instant::now();
    let r = reconcile_ok(&mut e, &desired);
    let first = t.elapsed();
    let t = std::time::Instant::now();
    let quiet = reconcile_ok(&mut e, &desired);
    let second = t.elapsed();
    eprintln!(
        "{n} routers: first pass {first:?} ({} writes), quiet pass {second:?}",
        r.writes.total()
    );
    assert_eq!(quiet.writes.total(), 0, "{:?}", quiet.writes);
    assert_eq!(netns_list().len(), usize::from(n));
    let t = std::time::Instant::now();
    let c = e.cleanup().expect("cleanup");
    eprintln!("cleanup {:?} ({} writes)", t.elapsed(), c.writes.total());
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(netns_list().is_empty());
}

#[test]
fn change_path_applies_only_the_change() {
    if !sandbox::enter("converge::change_path_applies_only_the_change") {
        return;
    }
    let mut desired = desired_ab();
    let mut e = engine();
    // Without a previous clean pass the change path is a full pass.
    let r = e.reconcile_changes(&desired).expect("first pass");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.writes.total() > 50);

    // Drift behind the engine's back in router b ...
    in_ns(
        Some("qrouter-b"),
        &["ip", "route", "del", "default", "table", "16"],
    );
    // ... and a change in router a: one more endpoint (neighbour + FDB).
    desired
        .namespaces
        .get_mut("qrouter-a")
        .unwrap()
        .neighbours
        .insert(Neighbour {
            link: "qr-a100".into(),
            ip: "10.1.0.6".parse().unwrap(),
            mac: mac("02:00:01:00:00:66"),
        });
    desired.root.fdb.insert(FdbEntry {
        link: "dvrvx-100".into(),
        mac: mac("02:00:01:00:00:66"),
        dst: "198.18.0.3".parse().unwrap(),
    });
    let r = e.reconcile_changes(&desired).expect("change");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let expect: BTreeMap<&str, u64> = [("neighbour", 1), ("fdb", 1)].into();
    assert_eq!(r.writes.by_kind(), &expect);
    assert!(in_ns(Some("qrouter-a"), &["ip", "neigh", "show"]).contains("10.1.0.6"));
    // The change path did not observe, so the drift is still there ...
    assert!(!in_ns(Some("qrouter-b"), &["ip", "route", "show", "table", "16"]).contains("default"));
    // ... until the next full pass.
    let r = reconcile_ok(&mut e, &desired);
    assert_eq!(
        (r.writes.total(), r.writes.get("route")),
        (1, 1),
        "{:?}",
        r.writes
    );

    // Removing a router through the change path.
    let mut only_a = desired.clone();
    only_a.namespaces.remove("qrouter-b");
    only_a.root.links.retain(|n, _| !n.contains("20"));
    only_a.root.fdb.retain(|f| !f.link.contains("20"));
    let r = e.reconcile_changes(&only_a).expect("remove b");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(netns_list(), vec!["qrouter-a".to_string()]);
    assert!(!link_names(None).iter().any(|l| l.contains("20")));
    assert_converged(&mut e, &only_a);
}

#[test]
fn a_mac_moving_to_another_node_keeps_one_remote() {
    if !sandbox::enter("converge::a_mac_moving_to_another_node_keeps_one_remote") {
        return;
    }
    // An endpoint's MAC moves from VTEP .3 to .4 in one change (a VM's
    // active binding, an address taken again on another node): add the new
    // remote, delete the old, as the diff orders it.
    let mut desired = desired_ab();
    let entry = |dst: &str| FdbEntry {
        link: "dvrvx-100".into(),
        mac: mac("02:00:01:00:00:77"),
        dst: dst.parse().unwrap(),
    };
    desired.root.fdb.insert(entry("198.18.0.3"));
    let mut e = engine();
    reconcile_ok(&mut e, &desired);
    desired.root.fdb.remove(&entry("198.18.0.3"));
    desired.root.fdb.insert(entry("198.18.0.4"));
    for pass in ["change", "full"] {
        let r = match pass {
            "change" => e.reconcile_changes(&desired).expect("change"),
            _ => reconcile_ok(&mut e, &desired),
        };
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let fdb = sh(&["bridge", "fdb", "show", "dev", "dvrvx-100"]);
        let remotes: Vec<&str> = fdb
            .lines()
            .filter(|l| l.starts_with("02:00:01:00:00:77") && l.contains(" dst "))
            .collect();
        assert_eq!(remotes.len(), 1, "after the {pass} pass: {fdb}");
        assert!(remotes[0].contains("dst 198.18.0.4"), "{fdb}");
    }
    // Moving back, and the flood entries still append (several remotes).
    desired.root.fdb.remove(&entry("198.18.0.4"));
    desired.root.fdb.insert(entry("198.18.0.3"));
    e.reconcile_changes(&desired).expect("back");
    let fdb = sh(&["bridge", "fdb", "show", "dev", "dvrvx-100"]);
    assert!(fdb.contains("02:00:01:00:00:77 dst 198.18.0.3"), "{fdb}");
    let flood = fdb
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00"))
        .count();
    let want = desired
        .root
        .fdb
        .iter()
        .filter(|f| f.mac.0 == [0; 6] && f.link == "dvrvx-100")
        .count();
    assert_eq!(flood, want, "{fdb}");
    assert!(want >= 2, "the fixture floods to several nodes");
}

//! Dataplane engine against the real kernel, each test in its own sandbox
//! (`unshare -rnm`, private /run). Assertions use independent observation
//! (`ip -j`, `bridge -j`, `nft -j`, `/proc/sys` through `nsenter`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use kube_dvr::dataplane::diff::diff;
use kube_dvr::dataplane::engine::{Engine, EngineConfig};
use kube_dvr::dataplane::{nft, sandbox};
use kube_dvr::plan::model::*;
use serde_json::Value;

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn engine() -> Engine {
    Engine::new(EngineConfig {
        root_netns: PathBuf::from("/proc/self/ns/net"),
        netns_dir: PathBuf::from("/run/netns"),
    })
    .expect("engine")
}

/// Run a command, assert success, return stdout.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A command inside namespace `ns` (`None` = the sandbox's root).
fn in_ns(ns: Option<&str>, args: &[&str]) -> String {
    match ns {
        None => sh(args),
        Some(n) => {
            let net = format!("--net=/run/netns/{n}");
            let mut v = vec!["nsenter", net.as_str()];
            v.extend_from_slice(args);
            sh(&v)
        }
    }
}

fn json(ns: Option<&str>, args: &[&str]) -> Vec<Value> {
    let s = in_ns(ns, args);
    if s.trim().is_empty() {
        return vec![];
    }
    serde_json::from_str(&s).unwrap()
}

fn link_names(ns: Option<&str>) -> Vec<String> {
    json(ns, &["ip", "-j", "link", "show"])
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn sysctl(ns: &str, key: &str) -> String {
    in_ns(Some(ns), &["cat", &format!("/proc/sys/{key}")])
        .trim()
        .to_string()
}

fn netns_list() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn link(name: &str, kind: LinkKind, mac_s: &str, master: Option<&str>) -> Link {
    Link {
        name: name.into(),
        kind,
        mac: Some(mac(mac_s)),
        master: master.map(Into::into),
        mtu: Some(1450),
    }
}

fn veth(peer: &str, peer_ns: NsRef) -> LinkKind {
    LinkKind::Veth {
        peer: peer.into(),
        peer_ns,
    }
}

/// One router `r` (a single letter) with two subnets, VNIs `base` and
/// `base+1`, each with a bridge and a VXLAN port in root.
fn add_router(s: &mut NodeState, r: &str, base: u32, octet: u8) {
    let ns_name = format!("qrouter-{r}");
    let named = NsRef::Named(ns_name.clone());
    let mut q = NsState::default();
    for (i, vni) in [base, base + 1].into_iter().enumerate() {
        let br = format!("dvrbr-{vni}");
        let vx = format!("dvrvx-{vni}");
        let qrb = format!("qrb-{r}{vni}");
        let qr = format!("qr-{r}{vni}");
        let m = |k: u8| format!("02:00:{octet:02x}:{i:02x}:00:{k:02x}");
        let root = &mut s.root;
        root.links
            .insert(br.clone(), link(&br, LinkKind::Bridge, &m(1), None));
        root.links.insert(
            vx.clone(),
            link(
                &vx,
                LinkKind::Vxlan {
                    vni,
                    local: "198.18.0.1".parse().unwrap(),
                    port: 4789,
                },
                &m(2),
                Some(&br),
            ),
        );
        root.links.insert(
            qrb.clone(),
            link(&qrb, veth(&qr, named.clone()), &m(3), Some(&br)),
        );
        q.links
            .insert(qr.clone(), link(&qr, veth(&qrb, NsRef::Root), &m(4), None));
        // Two flood entries on the same VXLAN, and one endpoint MAC.
        for dst in ["198.18.0.2", "198.18.0.3"] {
            root.fdb.insert(FdbEntry {
                link: vx.clone(),
                mac: MacAddr::ZERO,
                dst: dst.parse().unwrap(),
            });
        }
        root.fdb.insert(FdbEntry {
            link: vx.clone(),
            mac: mac(&m(9)),
            dst: "198.18.0.2".parse().unwrap(),
        });
        let net = |h: u8| format!("10.{octet}.{i}.{h}");
        q.addresses.insert(Address {
            link: qr.clone(),
            addr: format!("{}/24", net(1)).parse().unwrap(),
        });
        q.neighbours.insert(Neighbour {
            link: qr.clone(),
            ip: net(5).parse().unwrap(),
            mac: mac(&m(5)),
        });
        q.sysctls
            .insert(format!("net/ipv4/conf/{qr}/send_redirects"), "0".into());
    }
    let qr0 = format!("qr-{r}{base}");
    let qr1 = format!("qr-{r}{}", base + 1);
    q.routes.insert(Route {
        table: MAIN_TABLE,
        dst: format!("10.{octet}.9.0/24").parse().unwrap(),
        via: Some(format!("10.{octet}.0.254").parse().unwrap()),
        dev: Some(qr0.clone()),
    });
    q.routes.insert(Route {
        table: 16,
        dst: "0.0.0.0/0".parse().unwrap(),
        via: Some(format!("10.{octet}.1.254").parse().unwrap()),
        dev: Some(qr1.clone()),
    });
    q.routes.insert(Route {
        table: 1000,
        dst: format!("10.{octet}.8.0/24").parse().unwrap(),
        via: None,
        dev: Some(qr1.clone()),
    });
    q.rules.insert(Rule {
        priority: 40000,
        from: Some(format!("10.{octet}.0.0/24").parse().unwrap()),
        fwmark: None,
        table: 16,
    });
    q.rules.insert(Rule {
        priority: 40001,
        from: None,
        fwmark: Some(0x10),
        table: 1000,
    });
    q.sysctls.insert("net/ipv4/ip_forward".into(), "1".into());
    q.sysctls
        .insert("net/ipv4/conf/all/send_redirects".into(), "0".into());
    let mut elements = BTreeMap::new();
    elements.insert(format!("203.0.113.{octet}"), None);
    q.nft = Some(NftTable {
        family: NftFamily::Ip,
        name: NFT_TABLE.into(),
        sets: [(
            "fips".to_string(),
            NftSet {
                key_type: "ipv4_addr".into(),
                data_type: None,
                elements,
            },
        )]
        .into(),
        chains: [(
            "route_in".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "filter".into(),
                    hook: "forward".into(),
                    priority: 0,
                }),
                rules: vec![format!("oifname \"{qr0}\" ip daddr @fips counter accept")],
            },
        )]
        .into(),
    });
    s.namespaces.insert(ns_name, q);
}

fn desired_ab() -> NodeState {
    let mut s = NodeState::default();
    add_router(&mut s, "a", 100, 1);
    add_router(&mut s, "b", 200, 2);
    s.root.nft = Some(NftTable {
        family: NftFamily::Bridge,
        name: NFT_TABLE.into(),
        sets: BTreeMap::new(),
        chains: [(
            "out".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "filter".into(),
                    hook: "forward".into(),
                    priority: 0,
                }),
                rules: vec!["oifname \"dvrvx-100\" ether saddr 02:00:01:00:00:04 drop".into()],
            },
        )]
        .into(),
    });
    s
}

/// `desired` as observation reports it: nft rules as their tags, sysctls
/// only where listed (observe() without a plan reads none).
fn as_observed(desired: &NodeState) -> NodeState {
    let mut s = desired.clone();
    for st in std::iter::once(&mut s.root).chain(s.namespaces.values_mut()) {
        st.sysctls.clear();
        if let Some(t) = &mut st.nft {
            for c in t.chains.values_mut() {
                c.rules = c.rules.iter().map(|r| nft::rule_tag(r)).collect();
            }
        }
    }
    s
}

fn assert_converged(e: &mut Engine, desired: &NodeState) {
    let obs = e.observe().expect("observe");
    assert_eq!(obs, as_observed(desired));
    let r = e.reconcile(desired).expect("reconcile");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.writes.total(), 0, "second pass wrote {:?}", r.writes);
}

fn reconcile_ok(e: &mut Engine, desired: &NodeState) -> kube_dvr::dataplane::engine::Report {
    let r = e.reconcile(desired).expect("reconcile");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r
}

#[test]
fn apply_then_nothing_to_do() {
    if !sandbox::enter("apply_then_nothing_to_do") {
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
fn repairs_exactly_what_broke() {
    if !sandbox::enter("repairs_exactly_what_broke") {
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
fn unowned_objects_survive() {
    if !sandbox::enter("unowned_objects_survive") {
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
    if !sandbox::enter("removing_a_router_removes_only_its_objects") {
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

#[test]
fn drifted_vxlan_is_recreated_and_master_fixed_in_place() {
    if !sandbox::enter("drifted_vxlan_is_recreated_and_master_fixed_in_place") {
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
fn sysctls_hit_the_target_namespace() {
    if !sandbox::enter("sysctls_hit_the_target_namespace") {
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
fn many_routers_converge_and_a_quiet_pass_writes_nothing() {
    if !sandbox::enter("many_routers_converge_and_a_quiet_pass_writes_nothing") {
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
fn no_sweep_after_an_incomplete_observation() {
    if !sandbox::enter("no_sweep_after_an_incomplete_observation") {
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

#[test]
fn macvlan_and_namespace_to_namespace_veth() {
    if !sandbox::enter("macvlan_and_namespace_to_namespace_veth") {
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
fn change_path_applies_only_the_change() {
    if !sandbox::enter("change_path_applies_only_the_change") {
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

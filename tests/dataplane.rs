//! Dataplane engine against the real kernel, each test in its own sandbox
//! (`unshare -rnm`, private /run). Assertions use independent observation
//! (`ip -j`, `bridge -j`, `nft -j`, `/proc/sys` through `nsenter`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use kube_dvr::dataplane::engine::{Engine, EngineConfig};
use kube_dvr::dataplane::nft;
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

#[path = "dataplane/conntrack.rs"]
mod conntrack;
#[path = "dataplane/converge.rs"]
mod converge;
#[path = "dataplane/fence.rs"]
mod fence;
#[path = "dataplane/isolation.rs"]
mod isolation;
#[path = "dataplane/libnft.rs"]
mod libnft;
#[path = "dataplane/long_names.rs"]
mod long_names;
#[path = "dataplane/ownership.rs"]
mod ownership;
#[path = "dataplane/repair.rs"]
mod repair;
#[path = "dataplane/resync.rs"]
mod resync;

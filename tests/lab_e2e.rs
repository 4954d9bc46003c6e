//! Lab end-to-end: the example topology and manifests, programmed through
//! resolution → planner → engine on simulated nodes, checked with real
//! traffic. Each test runs in its own sandbox (private user, mount and
//! network namespaces), so nothing touches the host.
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::lab::matrix::{self, Expect};
use kube_dvr::lab::probe::{self, Observed};
use kube_dvr::lab::{Lab, LabOptions, Manifests, Topology};
use kube_dvr::plan::names;
use kube_dvr::plan::view::ObjectKey;

#[path = "support/echo.rs"]
mod echo;
#[path = "support/nsenter.rs"]
mod nsenter;
use echo::echo_server;
use nsenter::sh_in;

const STATE: &str = "/run/kube-dvr-lab-test";

fn examples() -> (Topology, Manifests) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    (
        Topology::load(&root.join("topology.yaml")).unwrap(),
        Manifests::load(&root.join("manifests")).unwrap(),
    )
}

fn up() -> Lab {
    let (t, m) = examples();
    Lab::up_with(Path::new(STATE), t, m).expect("lab up")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn tcp(lab: &Lab, from: &str, dst: &str) -> Observed {
    let ns = lab.paths.infra().join(from);
    probe::tcp(&ns, ip(dst), Duration::from_millis(1500))
}

fn answered(who: &str, seen: &str) -> Observed {
    Observed::Answered {
        who: who.into(),
        seen: ip(seen),
    }
}

/// The `qrouter-` namespace of router `ns/name` (named by its index).
fn qrouter(lab: &Lab, ns: &str, name: &str) -> String {
    let st = &lab.resolution.routers[&ObjectKey::new(ns, name)];
    names::qrouter_ns(st.index.expect("allocated"))
}

/// Names of the namespaces a simulated node's agent owns.
fn node_namespaces(lab: &Lab, node: &str) -> Vec<String> {
    netns::list(&lab.paths.node_netns_dir(node)).unwrap()
}

#[test]
fn demo_matrix_agrees_and_covers_every_path() {
    if !sandbox::enter("demo_matrix_agrees_and_covers_every_path") {
        return;
    }
    let mut lab = up();
    let probes = matrix::expected(&lab);
    let mut results = matrix::run(&lab, &probes);
    // A load-balancer backend fails, is taken out, and comes back.
    let mut steps = Vec::new();
    let failure = matrix::backend_failure(&mut lab, &mut steps).unwrap();
    assert!(!failure.is_empty(), "no load balancer with two backends");
    results.extend(failure);
    let mut text = steps;
    matrix::print(&mut text, &lab, &results).unwrap();
    let text = String::from_utf8(text).unwrap();
    let bad: Vec<_> = results.iter().filter(|r| !r.agrees()).collect();
    assert!(bad.is_empty(), "mismatches:\n{text}");
    // The matrix must contain the paths this issue is about, with real answers.
    let has = |from: &str, to: &str, seen: &str| {
        results.iter().any(|r| {
            r.probe.from == from
                && r.probe.to.starts_with(to)
                && matches!(&r.observed, Observed::Answered { seen: s, .. } if s.to_string() == seen)
        })
    };
    assert!(
        has("a-web", "a-cache", "10.10.1.10"),
        "same-node east-west:\n{text}"
    );
    assert!(
        has("a-web", "a-db", "10.10.1.10"),
        "cross-node east-west, not NAT'd:\n{text}"
    );
    assert!(
        has("a-web", "a-app", "10.10.1.10"),
        "same subnet across nodes:\n{text}"
    );
    assert!(
        has("ext-host", "a-web", "203.0.113.1"),
        "floating IP in:\n{text}"
    );
    assert!(
        has("a-web", "ext-host", "203.0.113.100"),
        "floating IP out:\n{text}"
    );
    assert!(has("a-db", "ext-host", "203.0.113.50"), "SNAT:\n{text}");
    assert!(
        has("a-cache", "a-web", "203.0.113.50"),
        "hairpin, same node:\n{text}"
    );
    assert!(
        has("a-db", "a-web", "203.0.113.50"),
        "hairpin, other node:\n{text}"
    );
    assert!(
        has("b-api", "a-web", "203.0.113.101"),
        "hairpin, other tenant:\n{text}"
    );
    assert!(
        has("b-api", "ext-host", "203.0.113.101"),
        "floating IP without SnatGateway:\n{text}"
    );
    let isolated_both_ways = ["a-web", "b-web"].iter().all(|from| {
        results.iter().any(|r| {
            &r.probe.from == from
                && matches!(r.probe.expect, Expect::Isolated { .. })
                && r.probe
                    .to
                    .starts_with(if *from == "a-web" { "b-" } else { "a-" })
        })
    });
    assert!(isolated_both_ways, "isolation checked both ways:\n{text}");
    // Overlap: a-db asks for 10.10.1.10 (also b-web's address): its own tenant's a-web answers.
    assert_eq!(
        tcp(&lab, "wl-a-db", "10.10.1.10"),
        answered("a-web", "10.10.2.10")
    );
    assert_eq!(
        tcp(&lab, "wl-b-api", "10.10.1.10"),
        answered("b-web", "10.10.1.20")
    );
    // A tenant without SNAT has no way out.
    assert_eq!(tcp(&lab, "wl-b-web", "203.0.113.1"), Observed::NoAnswer);

    // Services (issue 10). The firewall denies what its rules deny, on
    // the floating-IP path and the SNAT path, and only for its tenant.
    let denied = |section: &str, from: &str, to: &str| {
        results.iter().any(|r| {
            r.probe.section == section
                && r.probe.from == from
                && r.probe.to.starts_with(to)
                && matches!(r.probe.expect, Expect::Isolated { .. })
                && r.observed == Observed::NoAnswer
        })
    };
    assert!(
        denied("firewall", "ext-host", "a-web 203.0.113.100:7780"),
        "ingress deny on the floating-IP path:\n{text}"
    );
    assert!(
        denied("firewall", "a-web", "ext-host 203.0.113.1:7780"),
        "egress deny on the floating-IP path:\n{text}"
    );
    assert!(
        denied("firewall", "a-db", "ext-host 203.0.113.1:7780"),
        "egress deny on the SNAT path:\n{text}"
    );
    assert!(
        has("b-api", "ext-host 203.0.113.1:7780", "203.0.113.101"),
        "another tenant's policy:\n{text}"
    );
    // Forwarded ports: from outside the client is seen; hairpin through
    // the gateway is NATed to its port on the target's subnet.
    assert!(
        has("ext-host", "a-app 203.0.113.50:8080", "203.0.113.1"),
        "forward on the SNAT address:\n{text}"
    );
    assert!(
        has("a-cache", "a-app 203.0.113.50:8080", "10.10.1.254"),
        "forward, hairpin:\n{text}"
    );
    assert!(
        has("ext-host", "a-db 203.0.113.150:7777", "203.0.113.1"),
        "forward on a dedicated address:\n{text}"
    );
    assert!(
        denied("port-forward", "ext-host", "a-db 203.0.113.150:7780"),
        "the firewall on a forwarded port:\n{text}"
    );
    // Load balancers: both backends answer, then only the healthy one.
    let spread = |from: &str, to: &str| -> Vec<&Observed> {
        (results.iter())
            .filter(|r| r.probe.section == "load-balancer" && r.probe.from == from)
            .filter(|r| r.probe.to.starts_with(to))
            .map(|r| &r.observed)
            .collect()
    };
    let web = spread("ext-host", "web 203.0.113.120:80");
    assert_eq!(web.len(), 2, "{text}");
    let answered_by = |o: &Observed| match o {
        Observed::Spread { answers, .. } => answers.keys().cloned().collect::<Vec<_>>(),
        _ => vec![],
    };
    assert_eq!(answered_by(web[0]), ["a-app", "a-db"], "{text}");
    assert_eq!(answered_by(web[1]), ["a-app"], "after a-db failed:\n{text}");
    assert_eq!(
        answered_by(spread("a-cache", "internal 10.10.2.253:80")[0]),
        ["a-app", "a-db"],
        "subnet VIP:\n{text}"
    );
    // Hairpin to the router's own external VIP, and another tenant kept off
    // the subnet VIP.
    assert_eq!(
        answered_by(spread("a-db", "web 203.0.113.120:80")[0]),
        ["a-app", "a-db"],
        "{text}"
    );
    assert!(
        answered_by(spread("b-api", "internal 10.10.2.253:80")[0]).is_empty(),
        "{text}"
    );
    lab.down();
}

#[test]
fn a_pass_with_nothing_changed_writes_nothing() {
    if !sandbox::enter("a_pass_with_nothing_changed_writes_nothing") {
        return;
    }
    let mut lab = up();
    assert_eq!(lab.resync().unwrap(), 0);
    assert_eq!(lab.resync().unwrap(), 0);
    lab.down();
}

#[test]
fn retargeted_floating_ip_moves_and_leaves_no_trace() {
    if !sandbox::enter("retargeted_floating_ip_moves_and_leaves_no_trace") {
        return;
    }
    let mut lab = up();
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.100"),
        answered("a-web", "203.0.113.1")
    );
    assert!(node_namespaces(&lab, "node-1").contains(&names::fip_ns("public")));
    // Re-target `web` from a-web (node-1) to a-app (node-2).
    let fip = lab
        .manifests
        .floating_ips
        .iter_mut()
        .find(|f| f.metadata.name.as_deref() == Some("web"))
        .unwrap();
    fip.spec.target.pod.as_mut().unwrap().name = "a-app".into();
    lab.apply().unwrap();
    let status = &lab
        .resolution
        .floating_ips
        .values()
        .find(|s| s.address.as_deref() == Some("203.0.113.100"))
        .unwrap();
    assert_eq!(status.node.as_deref(), Some("node-2"));
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.100"),
        answered("a-app", "203.0.113.1")
    );
    assert_eq!(
        tcp(&lab, "wl-a-app", "203.0.113.1"),
        answered("ext-host", "203.0.113.100")
    );
    // a-web now leaves through SNAT.
    assert_eq!(
        tcp(&lab, "wl-a-web", "203.0.113.1"),
        answered("ext-host", "203.0.113.50")
    );
    // node-1 keeps no trace: no fip namespace (it served nothing else), no
    // NAT table in tenant-a's router, no floating-IP rule.
    assert!(!node_namespaces(&lab, "node-1").contains(&names::fip_ns("public")));
    let q = lab
        .paths
        .node_netns_dir("node-1")
        .join(qrouter(&lab, "tenant-a", "main"));
    assert!(!sh_in(&q, "nft list ruleset").contains("203.0.113.100"));
    assert!(!sh_in(&q, "ip rule show").contains("fwmark"));
    assert!(!sh_in(&q, "ip link show").contains("rfp-"));
    assert_eq!(lab.resync().unwrap(), 0);
    lab.down();
}

fn round_trip(s: &mut TcpStream, r: &mut BufReader<TcpStream>, msg: &str) -> bool {
    if writeln!(s, "{msg}").is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(r.read_line(&mut line), Ok(n) if n > 0) && line.trim() == msg
}

#[test]
fn deleting_a_floating_ip_stops_its_established_flows_and_leaves_nothing() {
    if !sandbox::enter("deleting_a_floating_ip_stops_its_established_flows_and_leaves_nothing") {
        return;
    }
    let mut lab = up();
    echo_server(&lab.paths.workload("a-web"), 7000);
    let host = lab.paths.host("ext-host");
    let mut s = netns::run_in(&host, || {
        TcpStream::connect_timeout(
            &"203.0.113.100:7000".parse().unwrap(),
            Duration::from_secs(2),
        )
    })
    .unwrap()
    .expect("connect through the floating IP");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert!(
        round_trip(&mut s, &mut r, "before"),
        "flow works through the floating IP"
    );
    let q = lab
        .paths
        .node_netns_dir("node-1")
        .join(qrouter(&lab, "tenant-a", "main"));
    assert!(
        sh_in(&q, "conntrack -L").contains("203.0.113.100"),
        "the flow is tracked"
    );

    lab.manifests
        .floating_ips
        .retain(|f| f.metadata.name.as_deref() != Some("web"));
    lab.apply().unwrap();
    assert!(
        !round_trip(&mut s, &mut r, "after"),
        "the established flow must stop"
    );
    assert!(
        !sh_in(&q, "conntrack -L").contains("203.0.113.100"),
        "conntrack entries removed"
    );
    assert!(!sh_in(&q, "nft list ruleset").contains("203.0.113.100"));
    for node in ["node-1", "node-2", "gw-1"] {
        for ns in node_namespaces(&lab, node) {
            let p = lab.paths.node_netns_dir(node).join(&ns);
            let all = sh_in(&p, "ip route show table all") + &sh_in(&p, "nft list ruleset");
            assert!(
                !all.contains("203.0.113.100"),
                "{node}/{ns} still mentions the floating IP:\n{all}"
            );
        }
    }
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.100"),
        Observed::NoAnswer
    );
    lab.down();
}

#[test]
fn deleting_the_snat_gateway_removes_its_state_and_floating_ips_keep_working() {
    if !sandbox::enter("deleting_the_snat_gateway_removes_its_state_and_floating_ips_keep_working")
    {
        return;
    }
    let mut lab = up();
    assert_eq!(
        tcp(&lab, "wl-a-db", "203.0.113.1"),
        answered("ext-host", "203.0.113.50")
    );
    assert!(node_namespaces(&lab, "gw-1").contains(&names::snat_ns(
        lab.resolution.routers[&ObjectKey::new("tenant-a", "main")]
            .index
            .unwrap()
    )));
    lab.manifests.snat_gateways.clear();
    lab.apply().unwrap();
    assert!(
        node_namespaces(&lab, "gw-1").is_empty(),
        "gw-1 hosts nothing else"
    );
    let gw_links = sh_in(&lab.paths.node("gw-1"), "ip -br link");
    assert!(
        !gw_links.contains("sgb-") && !gw_links.contains("qgb-") && !gw_links.contains("dvr"),
        "{gw_links}"
    );
    let q = lab
        .paths
        .node_netns_dir("node-2")
        .join(qrouter(&lab, "tenant-a", "main"));
    assert!(
        !sh_in(&q, "ip rule show").contains("lookup 4"),
        "no SNAT rules left"
    );
    assert_eq!(tcp(&lab, "wl-a-db", "203.0.113.1"), Observed::NoAnswer);
    assert_eq!(
        tcp(&lab, "wl-a-web", "203.0.113.1"),
        answered("ext-host", "203.0.113.100")
    );
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.100"),
        answered("a-web", "203.0.113.1")
    );
    // East-west is untouched.
    assert_eq!(
        tcp(&lab, "wl-a-db", "10.10.1.10"),
        answered("a-web", "10.10.2.10")
    );
    lab.down();
}

#[test]
fn removing_a_router_removes_its_kernel_state_on_every_node_and_nothing_else() {
    if !sandbox::enter("removing_a_router_removes_its_kernel_state_on_every_node_and_nothing_else")
    {
        return;
    }
    let mut lab = up();
    let vni_b: Vec<u32> = lab
        .resolution
        .view
        .routers
        .iter()
        .filter(|r| r.key.namespace == "tenant-b")
        .flat_map(|r| r.subnets.iter().map(|s| s.vni))
        .collect();
    assert_eq!(vni_b.len(), 1);
    lab.manifests
        .routers
        .retain(|r| r.metadata.namespace.as_deref() != Some("tenant-b"));
    lab.manifests
        .floating_ips
        .retain(|f| f.metadata.namespace.as_deref() != Some("tenant-b"));
    lab.apply().unwrap();
    for node in ["node-1", "node-2"] {
        assert!(
            !node_namespaces(&lab, node)
                .iter()
                .any(|n| n.contains("tenant-b")),
            "{node}"
        );
        let links = sh_in(&lab.paths.node(node), "ip -br link");
        assert!(
            !links.contains(&format!("dvrbr-{}", vni_b[0])),
            "{node}: {links}"
        );
        let fdb = sh_in(&lab.paths.node(node), "bridge fdb show");
        assert!(
            !fdb.contains(&format!("dvrvx-{}", vni_b[0])),
            "{node}: {fdb}"
        );
    }
    // tenant-a is undisturbed.
    assert_eq!(
        tcp(&lab, "wl-a-web", "10.10.2.10"),
        answered("a-db", "10.10.1.10")
    );
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.100"),
        answered("a-web", "203.0.113.1")
    );
    lab.down();
}

#[test]
fn lab_down_leaves_nothing() {
    if !sandbox::enter("lab_down_leaves_nothing") {
        return;
    }
    use kube_dvr::lab::procs;
    let mut lab = up();
    let root = lab.paths.root.clone();
    // The controller and one agent per node, each a live process.
    let recorded = procs::all(&lab.paths);
    assert_eq!(recorded.len(), 1 + lab.topology.nodes.len(), "{recorded:?}");
    assert!(recorded.iter().all(|(_, r)| procs::alive(r.pid)));
    // One agent killed and started again from its record, as `lab kill`
    // and `lab start` do from another shell: not the lab's child.
    let c: kube_dvr::lab::Component = "agent/node-1".parse().unwrap();
    lab.cluster_mut().kill_component(&c);
    assert!(!procs::alive(procs::read(&lab.paths, &c).unwrap().pid));
    let pid = procs::start_detached(&lab.paths, &c).unwrap();
    assert!(procs::alive(pid));
    let mut pids: Vec<u32> = recorded.iter().map(|(_, r)| r.pid).collect();
    pids.push(pid);
    let removed = lab.down();
    assert!(removed.len() >= 10, "{removed:?}");
    assert!(!root.exists());
    let left: Vec<&u32> = pids.iter().filter(|p| procs::alive(**p)).collect();
    assert!(left.is_empty(), "component processes left: {left:?}");
    // And `lab down` on nothing is fine.
    let (removed, left) = kube_dvr::lab::down(&root);
    assert!(removed.is_empty() && left.is_empty());
    let _ = LabOptions {
        topology: root.clone(),
        manifests: root.clone(),
        state_dir: root,
        api: Default::default(),
    };
}

//! The lab on the Kubernetes code paths: the real `kubectl` against the API
//! stand-in, the real controller and agents, real traffic. Each test runs in
//! its own sandbox (private user, mount and network namespaces).
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::lab::probe::{self, Observed};
use kube_dvr::lab::{Lab, Manifests, Topology};
use serde_json::Value;

#[path = "support/nsenter.rs"]
mod nsenter;
use nsenter::sh_in;

const STATE: &str = "/run/kube-dvr-lab-api";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab")
}

fn up(with_manifests: bool) -> Lab {
    let t = Topology::load(&root().join("topology.yaml")).unwrap();
    let m = if with_manifests {
        Manifests::load(&root().join("manifests")).unwrap()
    } else {
        Manifests::default()
    };
    Lab::up_with(Path::new(STATE), t, m).expect("lab up")
}

fn kubectl(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(lab.kubeconfig())
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kubectl_stdin(lab: &Lab, args: &[&str], input: &str) -> String {
    let out = kubectl_stdin_output(lab, args, input);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kubectl_stdin_output(lab: &Lab, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut c = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(lab.kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

fn tcp(lab: &Lab, from: &str, dst: &str) -> Observed {
    probe::tcp(
        &lab.paths.infra().join(from),
        dst.parse().unwrap(),
        Duration::from_millis(1500),
    )
}

fn answered(who: &str, seen: &str) -> Observed {
    Observed::Answered {
        who: who.into(),
        seen: seen.parse().unwrap(),
    }
}

fn items(lab: &Lab, what: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&kubectl(lab, &["get", what, "-A", "-o", "json"])).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(o: &'a Value, t: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

fn named<'a>(objs: &'a [Value], ns: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| {
            o["metadata"]["name"] == name && o["metadata"]["namespace"].as_str().unwrap_or("") == ns
        })
        .unwrap_or_else(|| panic!("{ns}/{name} not found"))
}

fn node_ns(lab: &Lab, node: &str) -> Vec<String> {
    netns::list(&lab.paths.node_netns_dir(node)).unwrap()
}

#[test]
fn kubectl_apply_then_traffic_flows_subnets_grow_and_deletes_clean_up() {
    if !sandbox::enter("kubectl_apply_then_traffic_flows_subnets_grow_and_deletes_clean_up") {
        return;
    }
    let mut lab = up(false);
    kubectl(
        &lab,
        &["apply", "-f", root().join("manifests").to_str().unwrap()],
    );
    lab.converge().unwrap();
    // Every object Ready, with its address and node.
    for kind in kube_dvr::api::Kind::ALL.iter().map(|k| k.plural()) {
        let kind = kind.as_str();
        for o in items(&lab, kind) {
            let ready = condition(&o, "Ready").unwrap_or_else(|| panic!("{kind}: no Ready in {o}"));
            assert_eq!(
                ready["status"], "True",
                "{kind} {}: {ready}",
                o["metadata"]["name"]
            );
        }
    }
    let fips = items(&lab, "floatingips");
    let web = named(&fips, "tenant-a", "web");
    assert_eq!(
        (
            web["status"]["address"].as_str(),
            web["status"]["node"].as_str()
        ),
        (Some("203.0.113.100"), Some("node-1"))
    );
    let table = kubectl(&lab, &["get", "dfip", "-n", "tenant-a"]);
    assert!(
        table.contains("203.0.113.100") && table.contains("node-1") && table.contains("True"),
        "{table}"
    );
    assert!(kubectl(&lab, &["get", "dsnat", "-n", "tenant-a"]).contains("gw-1"));
    assert_eq!(
        tcp(&lab, "wl-a-web", "10.10.2.10"),
        answered("a-db", "10.10.1.10")
    );
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.100"),
        answered("a-web", "203.0.113.1")
    );
    assert_eq!(
        tcp(&lab, "wl-a-db", "203.0.113.1"),
        answered("ext-host", "203.0.113.50")
    );

    // Add a subnet to the live router: the workload waiting on it becomes reachable.
    assert_eq!(tcp(&lab, "wl-a-web", "10.10.3.10"), Observed::NoAnswer);
    let router = r#"
apiVersion: kubedvr.io/v1alpha1
kind: DistributedRouter
metadata: {name: main, namespace: tenant-a}
spec:
  externalNetwork: public
  subnets:
    - {name: a1, cidr: 10.10.1.0/24, gateway: 10.10.1.1, networkAttachment: net-a1}
    - {name: a2, cidr: 10.10.2.0/24, gateway: 10.10.2.1, networkAttachment: net-a2}
    - {name: a3, cidr: 10.10.3.0/24, gateway: 10.10.3.1, networkAttachment: net-a3}
"#;
    kubectl_stdin(&lab, &["apply", "-f", "-"], router);
    lab.converge().unwrap();
    assert_eq!(
        tcp(&lab, "wl-a-web", "10.10.3.10"),
        answered("a-new", "10.10.1.10")
    );
    assert_eq!(
        tcp(&lab, "wl-a-new", "203.0.113.1"),
        answered("ext-host", "203.0.113.50")
    );

    // Delete a router (and its floating IP): its kernel state goes from every node.
    kubectl(&lab, &["delete", "dfip", "-n", "tenant-b", "api"]);
    kubectl(&lab, &["delete", "dvr", "-n", "tenant-b", "main"]);
    lab.converge().unwrap();
    assert!(items(&lab, "distributedrouters")
        .iter()
        .all(|r| r["metadata"]["namespace"] != "tenant-b"));
    for node in ["node-1", "node-2", "gw-1"] {
        assert!(
            !node_ns(&lab, node).iter().any(|n| n.contains("tenant-b")),
            "{node}: {:?}",
            node_ns(&lab, node)
        );
    }
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.101"),
        Observed::NoAnswer
    );
    assert_eq!(
        tcp(&lab, "wl-a-web", "10.10.2.10"),
        answered("a-db", "10.10.1.10")
    );
    assert_eq!(
        lab.resync().unwrap(),
        0,
        "every node holds exactly its plan"
    );
    lab.down();
}

/// Each class of input the API admits but the controller must refuse, with
/// the reason its Ready condition must carry.
const INVALID: &[(&str, &str, &str, &str)] = &[
    (
        "distributedrouters",
        "tenant-c",
        "no-ext",
        "ExternalNetworkNotFound",
    ),
    (
        "distributedrouters",
        "tenant-c",
        "not-allowed",
        "NamespaceNotAllowed",
    ),
    (
        "floatingips",
        "tenant-a",
        "outside-pool",
        "AddressOutsidePool",
    ),
    ("floatingips", "tenant-a", "in-use", "AddressInUse"),
    ("floatingips", "tenant-a", "no-router", "RouterNotFound"),
    ("floatingips", "tenant-a", "no-target", "TargetNotFound"),
    // Services (issue 10).
    (
        "portforwardings",
        "tenant-a",
        "to-fip",
        "TargetHasFloatingIP",
    ),
    ("portforwardings", "tenant-a", "clash", "PortInUse"),
    ("portforwardings", "tenant-b", "no-gateway", "NoSnatGateway"),
    ("loadbalancers", "tenant-a", "steal", "AddressInUse"),
    ("routerfirewalls", "tenant-a", "second", "DuplicateFirewall"),
];

const INVALID_YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: tenant-c}
---
apiVersion: kubedvr.io/v1alpha1
kind: ExternalNetwork
metadata: {name: restricted}
spec:
  cidr: 198.51.100.0/24
  gateway: 198.51.100.1
  pools: {floating: ["198.51.100.100-198.51.100.110"]}
  attachment: {bridge: br-public}
  allowedNamespaces: [tenant-b]
---
apiVersion: kubedvr.io/v1alpha1
kind: DistributedRouter
metadata: {name: no-ext, namespace: tenant-c}
spec:
  externalNetwork: nowhere
  subnets:
    - {name: sx, cidr: 10.40.0.0/24, gateway: 10.40.0.1, networkAttachment: net-x}
---
apiVersion: kubedvr.io/v1alpha1
kind: DistributedRouter
metadata: {name: not-allowed, namespace: tenant-c}
spec:
  externalNetwork: restricted
  subnets:
    - {name: sx, cidr: 10.50.0.0/24, gateway: 10.50.0.1, networkAttachment: net-x}
---
apiVersion: kubedvr.io/v1alpha1
kind: FloatingIP
metadata: {name: outside-pool, namespace: tenant-a}
spec: {router: main, address: 203.0.113.250, target: {fixedIP: 10.10.2.10}}
---
apiVersion: kubedvr.io/v1alpha1
kind: FloatingIP
metadata: {name: in-use, namespace: tenant-a}
spec: {router: main, address: 203.0.113.100, target: {fixedIP: 10.10.2.11}}
---
apiVersion: kubedvr.io/v1alpha1
kind: FloatingIP
metadata: {name: no-router, namespace: tenant-a}
spec: {router: missing, target: {fixedIP: 10.10.2.10}}
---
apiVersion: kubedvr.io/v1alpha1
kind: FloatingIP
metadata: {name: no-target, namespace: tenant-a}
spec: {router: main, target: {fixedIP: 10.10.1.99}}
---
apiVersion: kubedvr.io/v1alpha1
kind: PortForwarding
metadata: {name: to-fip, namespace: tenant-a}
spec:
  router: main
  forwards: [{externalPorts: {port: 2222}, internalPort: 22, target: {pod: {name: a-web}}}]
---
apiVersion: kubedvr.io/v1alpha1
kind: PortForwarding
metadata: {name: clash, namespace: tenant-a}
spec:
  router: main
  forwards: [{externalPorts: {port: 8000, endPort: 8080}, internalPort: 7000, target: {fixedIP: 10.10.2.11}}]
---
apiVersion: kubedvr.io/v1alpha1
kind: PortForwarding
metadata: {name: no-gateway, namespace: tenant-b}
spec:
  router: main
  forwards: [{externalPorts: {port: 2222}, internalPort: 22, target: {fixedIP: 10.10.1.20}}]
---
apiVersion: kubedvr.io/v1alpha1
kind: LoadBalancer
metadata: {name: steal, namespace: tenant-a}
spec:
  router: main
  address: 203.0.113.100
  ports: [{port: 80}]
  backends: {fixedIPs: ["10.10.2.11"]}
---
apiVersion: kubedvr.io/v1alpha1
kind: RouterFirewall
metadata: {name: second, namespace: tenant-a}
spec: {router: main, defaultAction: Deny}
"#;

/// Input the CRDs' own rules refuse: the API server (here the stand-in, as
/// a real one would) rejects it with the rule's message; the controller
/// never sees it. (The controller's checks for the same faults, kept for
/// objects admitted under an older schema, are unit-tested in `plan`.)
const REJECTED: &[(&str, &str)] = &[
    (
        "apiVersion: kubedvr.io/v1alpha1\nkind: DistributedRouter\n\
         metadata: {name: overlap, namespace: tenant-a}\nspec:\n  subnets:\n\
         \x20   - {name: sx, cidr: 10.20.0.0/16, gateway: 10.20.0.1, networkAttachment: net-x}\n\
         \x20   - {name: sy, cidr: 10.20.1.0/24, gateway: 10.20.1.1, networkAttachment: net-y}\n",
        "subnet CIDRs must not overlap",
    ),
    (
        "apiVersion: kubedvr.io/v1alpha1\nkind: DistributedRouter\n\
         metadata: {name: gw-outside, namespace: tenant-a}\nspec:\n  subnets:\n\
         \x20   - {name: sx, cidr: 10.30.0.0/24, gateway: 10.31.0.1, networkAttachment: net-x}\n",
        "gateway must be inside cidr",
    ),
    (
        "apiVersion: kubedvr.io/v1alpha1\nkind: PortForwarding\n\
         metadata: {name: shared-address, namespace: tenant-a}\nspec:\n  router: main\n\
         \x20 address: 203.0.113.160\n\
         \x20 forwards: [{externalPorts: {port: 22}, internalPort: 22, target: {fixedIP: 10.10.2.10}}]\n",
        "address needs dedicatedAddress: true",
    ),
    (
        "apiVersion: kubedvr.io/v1alpha1\nkind: RouterFirewall\n\
         metadata: {name: icmp-ports, namespace: tenant-a}\nspec:\n  router: main\n\
         \x20 ingress: [{action: Allow, protocol: ICMP, ports: [{port: 1}]}]\n",
        "ports need protocol TCP or UDP",
    ),
    (
        "apiVersion: kubedvr.io/v1alpha1\nkind: LoadBalancer\n\
         metadata: {name: twice, namespace: tenant-a}\nspec:\n  router: main\n\
         \x20 ports: [{port: 80}, {port: 80, targetPort: 81}]\n\
         \x20 backends: {fixedIPs: [\"10.10.2.10\"]}\n",
        "protocol and port must be unique",
    ),
];

#[test]
fn invalid_manifests_get_a_reason_and_an_event_and_disturb_nothing() {
    if !sandbox::enter("invalid_manifests_get_a_reason_and_an_event_and_disturb_nothing") {
        return;
    }
    let mut lab = up(true);
    let digests_before = lab.cluster().snapshot().unwrap().nodes;
    let programmed = |nodes: &[k8s_openapi::api::core::v1::Node]| -> Vec<Option<String>> {
        nodes
            .iter()
            .map(|n| {
                kube_dvr::cluster::annotation(&n.metadata, kube_dvr::cluster::PROGRAMMED_ANNOTATION)
                    .map(String::from)
            })
            .collect()
    };
    let before = programmed(&digests_before);
    let web_before = named(&items(&lab, "floatingips"), "tenant-a", "web")["status"].clone();

    for (yaml, message) in REJECTED {
        let out = kubectl_stdin_output(&lab, &["apply", "-f", "-"], yaml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("is invalid") && err.contains(message),
            "expected the API to refuse it with {message:?}: {err}"
        );
    }
    kubectl_stdin(&lab, &["apply", "-f", "-"], INVALID_YAML);
    lab.converge().unwrap();
    let routers = items(&lab, "distributedrouters");
    assert!(
        !routers
            .iter()
            .any(|r| ["overlap", "gw-outside"]
                .contains(&r["metadata"]["name"].as_str().unwrap_or(""))),
        "a refused router was stored"
    );
    let events = kubectl(&lab, &["get", "events", "-A", "-o", "json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let events = events["items"].as_array().unwrap();
    for (kind, ns, name, reason) in INVALID {
        let objs = items(&lab, kind);
        let o = named(&objs, ns, name);
        let ready =
            condition(o, "Ready").unwrap_or_else(|| panic!("{name}: no Ready condition: {o}"));
        assert_eq!(ready["status"], "False", "{name}: {ready}");
        let all: Vec<&Value> = o["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        assert!(
            all.iter().any(|c| c["reason"] == *reason
                && c["status"] == "False"
                && !c["message"].as_str().unwrap_or("").is_empty()),
            "{name}: expected reason {reason} with a message, got {all:?}"
        );
        assert!(
            events.iter().any(|e| e["involvedObject"]["name"] == *name
                && e["type"] == "Warning"
                && e["reason"] == *reason),
            "{name}: no Warning event with reason {reason}"
        );
    }
    // The first come keeps its address, nothing was programmed, other tenants undisturbed.
    let web = named(&items(&lab, "floatingips"), "tenant-a", "web").clone();
    assert_eq!(web["status"]["address"], web_before["address"]);
    assert_eq!(condition(&web, "Ready").unwrap()["status"], "True");
    assert_eq!(
        programmed(&lab.cluster().snapshot().unwrap().nodes),
        before,
        "no node plan changed"
    );
    assert!(!node_ns(&lab, "node-1")
        .iter()
        .any(|n| n.contains("tenant-c")));
    assert_eq!(
        tcp(&lab, "host-ext-host", "203.0.113.100"),
        answered("a-web", "203.0.113.1")
    );
    assert_eq!(
        tcp(&lab, "wl-b-web", "10.10.1.20"),
        answered("b-api", "10.10.1.10")
    );
    assert_eq!(lab.resync().unwrap(), 0);
    lab.down();
}

fn allocations(lab: &Lab) -> Vec<(String, Value)> {
    let mut out = vec![];
    for kind in kube_dvr::api::Kind::ALL.iter().map(|k| k.plural()) {
        let kind = kind.as_str();
        for o in items(lab, kind) {
            let s = &o["status"];
            let key = format!(
                "{kind}/{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            );
            let picked = serde_json::json!({
                "index": s["index"], "subnets": s["subnets"], "linkLocal": s["linkLocal"],
                "address": s["address"], "node": s["node"], "activeNode": s["activeNode"], "ports": s["ports"],
                "nodePorts": s["nodePorts"],
            });
            out.push((key, picked));
        }
    }
    out
}

#[test]
fn controller_restart_changes_no_allocation_and_writes_nothing() {
    if !sandbox::enter("controller_restart_changes_no_allocation_and_writes_nothing") {
        return;
    }
    let mut lab = up(true);
    let before = allocations(&lab);
    assert!(before
        .iter()
        .any(|(_, a)| a["subnets"].as_array().is_some_and(|s| !s.is_empty())));
    lab.cluster_mut().stop_controller();
    lab.cluster_mut().start_controller();
    std::thread::sleep(Duration::from_secs(3));
    let tel = lab.cluster().controller_telemetry().unwrap();
    let text = tel
        .try_render()
        .expect("the restarted controller answers on /metrics");
    let status_writes: f64 = text
        .lines()
        .filter(|l| l.starts_with("kube_dvr_api_writes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        status_writes, 0.0,
        "a restarted controller with nothing to do writes nothing:\n{text}"
    );
    lab.converge().unwrap();
    assert_eq!(allocations(&lab), before);
    lab.down();
}

#[test]
fn agent_restart_loses_no_packet_and_writes_nothing() {
    if !sandbox::enter("agent_restart_loses_no_packet_and_writes_nothing") {
        return;
    }
    let mut lab = up(true);
    let wl = lab.paths.workload("a-web");
    // 100 packets per second across nodes (a-web on node-1 -> a-db on node-2) for 4 s.
    let pinger = std::thread::spawn(move || {
        netns::run_in(&wl, || {
            Command::new("ping")
                .args(["-n", "-q", "-i", "0.01", "-c", "400", "10.10.2.10"])
                .output()
                .unwrap()
        })
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    lab.cluster_mut().stop_agent("node-1");
    lab.cluster_mut().start_agent("node-1");
    let tel = lab.cluster().agent_telemetry("node-1").unwrap();
    while !tel.is_ready() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "restarted agent never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "packets lost across the agent restart:\n{text}"
    );
    let metrics = tel
        .try_render()
        .expect("the restarted agent answers on /metrics");
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum("kube_dvr_kernel_writes_total"),
        0.0,
        "restart made kernel writes:\n{metrics}"
    );
    // The heartbeat Lease is renewed every interval whether or not the
    // agent restarted: one renewal may fall due meanwhile.
    assert_eq!(
        sum("kube_dvr_api_writes_total") - sum("kube_dvr_api_writes_total{kind=\"Lease\"}"),
        0.0,
        "restart made API writes:\n{metrics}"
    );
    assert!(
        sum("kube_dvr_api_writes_total{kind=\"Lease\"}") <= 1.0,
        "restart renewed the heartbeat more than once:\n{metrics}"
    );
    lab.down();
}

/// Owned kernel objects in a node's root namespace, as `ip`/`nft` list them.
fn root_listing(lab: &Lab, node: &str) -> String {
    let ns = lab.paths.node(node);
    let links: String = sh_in(&ns, "ip -br link")
        .lines()
        .filter(|l| {
            ["dvrbr-", "dvrvx-", "qrb-", "sgb-", "fgb-", "qgb-"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "links:\n{links}\nroutes:\n{}\nrules:\n{}\nnft:\n{}",
        sh_in(&ns, "ip route show table all proto 230"),
        sh_in(&ns, "ip rule show")
            .lines()
            .filter(|l| l.starts_with("40"))
            .collect::<Vec<_>>()
            .join("\n"),
        sh_in(&ns, "nft list tables")
            .lines()
            .filter(|l| l.contains("kube_dvr"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[test]
fn uninstall_removes_all_kernel_state_on_every_node() {
    if !sandbox::enter("uninstall_removes_all_kernel_state_on_every_node") {
        return;
    }
    let lab = up(true);
    let nodes = ["node-1", "node-2", "gw-1"];
    for n in nodes {
        assert!(!node_ns(&lab, n).is_empty(), "{n} has namespaces before");
        let l = root_listing(&lab, n);
        assert!(
            l.contains("dvrbr-") && l.contains("kube_dvr"),
            "{n} before:\n{l}"
        );
    }
    let client = lab.cluster().client.clone();
    let opts = kube_dvr::uninstall::UninstallOptions::new(
        kube_dvr::lab::cluster::LAB_NAMESPACE,
        Duration::from_secs(60),
    );
    lab.cluster()
        .rt
        .block_on(kube_dvr::uninstall::run(client, &opts))
        .expect("uninstall");
    for n in nodes {
        assert!(
            node_ns(&lab, n).is_empty(),
            "{n} still has {:?}",
            node_ns(&lab, n)
        );
        let l = root_listing(&lab, n);
        assert!(
            !l.contains("dvr") && !l.contains("kube_dvr") && !l.contains("40000"),
            "{n} after:\n{l}"
        );
    }
    // Workloads and the simulated hardware are untouched; the agents stay idle.
    assert!(sh_in(&lab.paths.node("node-1"), "ip -br link").contains("br-public"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        node_ns(&lab, "node-1").is_empty(),
        "an uninstalled agent rebuilt state"
    );
    let _: Vec<Ipv4Addr> = vec![];
    lab.down();
}

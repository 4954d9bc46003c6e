//! The plugin binary run exactly as a runtime or Multus runs it: copied
//! into a CNI bin directory under its type name `kube-dvr`, the `CNI_*`
//! environment set, the network configuration on stdin. Each test runs in
//! its own sandbox (`unshare -rnm`, private /run, see
//! `kube_dvr::dataplane::sandbox`) with a real bridge `dvrbr-100` and the
//! agent's real CNI endpoint (`kube_dvr::agent::cni`) on the default socket
//! path, serving a hand-built view (not a full agent: no API server).
//! Assertions observe the kernel independently (`ip -j`).
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kube_dvr::agent::cni as endpoint;
use kube_dvr::dataplane::sandbox;
use kube_dvr::plan::view::{ClusterView, ObjectKey, RouterView, SubnetView};
use serde_json::{json, Value};

const BIN_DIR: &str = "/run/cni/bin";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ip_json(args: &[&str]) -> Vec<Value> {
    let mut v = vec!["ip", "-j"];
    v.extend_from_slice(args);
    let s = sh(&v);
    if s.trim().is_empty() {
        return vec![];
    }
    serde_json::from_str(&s).unwrap()
}

fn links(ns: Option<&str>) -> Vec<String> {
    let mut args = vec![];
    if let Some(n) = ns {
        args.extend(["-n", n]);
    }
    args.extend(["link", "show"]);
    ip_json(&args)
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// Host links the plugin made (its veth ends are `dvrp<hash>`).
fn plugin_links() -> Vec<String> {
    links(None)
        .into_iter()
        .filter(|l| l.starts_with("dvrp"))
        .collect()
}

fn mk_view() -> ClusterView {
    let subnet = |name: &str, cidr: &str, gw: &str, vni| SubnetView {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        gateway: gw.parse().unwrap(),
        vni,
    };
    ClusterView {
        routers: vec![
            RouterView {
                key: ObjectKey::new("t", "r1"),
                index: 0,
                subnets: vec![
                    subnet("a", "10.1.0.0/24", "10.1.0.1", 100),
                    subnet("b", "10.2.0.0/24", "10.2.0.1", 101),
                ],
                routes: vec![],
                endpoints: vec![],
                standby: vec![],
            },
            RouterView {
                key: ObjectKey::new("other", "r1"),
                index: 1,
                subnets: vec![subnet("a", "10.1.0.0/24", "10.1.0.1", 200)],
                routes: vec![],
                endpoints: vec![],
                standby: vec![],
            },
        ],
        ..Default::default()
    }
}

/// The node: the plugin installed in [`BIN_DIR`], the bridge of subnet
/// `t/r1` `a` (VNI 100; subnet `b`'s bridge is absent), and — when `agent`
/// — the agent's endpoint on the default socket path, serving
/// [`mk_view`]. Dropping it stops the endpoint.
struct Node {
    _rt: Option<tokio::runtime::Runtime>,
}

fn node(agent: bool) -> Node {
    std::fs::create_dir_all(BIN_DIR).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_kube-dvr-cni"),
        Path::new(BIN_DIR).join("kube-dvr"),
    )
    .unwrap();
    sh(&["ip", "link", "add", "dvrbr-100", "type", "bridge"]);
    sh(&["ip", "link", "set", "dvrbr-100", "up"]);
    let rt = agent.then(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(Some(Arc::new(mk_view())));
        rt.spawn(async move {
            let l = endpoint::bind(Path::new(endpoint::DEFAULT_SOCKET)).unwrap();
            let _keep = tx;
            endpoint::serve(l, rx, None).await
        });
        // Bound once the file exists.
        for _ in 0..100 {
            if Path::new(endpoint::DEFAULT_SOCKET).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        rt
    });
    Node { _rt: rt }
}

fn pod(name: &str) -> PathBuf {
    sh(&["ip", "netns", "add", name]);
    PathBuf::from(format!("/run/netns/{name}"))
}

fn conf(extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.1.0", "name": "net-a", "type": "kube-dvr",
                       "router": "r1", "subnet": "a"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

/// One plugin run as Multus does it: `$CNI_PATH/<type>`, config on stdin.
/// Returns the exit code and stdout (parsed, `Null` when empty).
fn cni(command: &str, netns: &Path, container: &str, ns: &str, conf: &Value) -> (i32, Value) {
    let ty = conf["type"].as_str().unwrap();
    let mut child = Command::new(Path::new(BIN_DIR).join(ty))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "net1")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={container};K8S_POD_INFRA_CONTAINER_ID={container}"),
        )
        .env("CNI_PATH", BIN_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), conf).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout {stdout:?}: {e}"))
    };
    (out.status.code().unwrap_or(-1), v)
}

fn static_conf(ip: &str, mac: &str) -> Value {
    conf(json!({"runtimeConfig": {"ips": [ip], "mac": mac}}))
}

/// A failed command: non-zero exit and a spec error object.
fn assert_error(got: (i32, Value), code: u64) -> String {
    let (rc, v) = got;
    assert_ne!(rc, 0, "expected failure, got {v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
    assert!(!v["msg"].as_str().unwrap().is_empty(), "{v}");
    v["msg"].as_str().unwrap().to_string()
}

/// Nothing of the plugin's on the node, nothing but `lo` in the pod.
fn assert_nothing_left(pod: &str) {
    assert_eq!(plugin_links(), Vec::<String>::new());
    assert_eq!(links(Some(pod)), ["lo"]);
}

/// UDP from `a` to `b` and back, each end a socket opened inside its pod's
/// namespace (on a thread that entered it).
fn udp_exchange(a: &Path, b: &Path, b_ip: &str) -> bool {
    fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(ns).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
    let addr = format!("{b_ip}:7777");
    let server = in_ns(b, move || UdpSocket::bind(addr).unwrap());
    let client = in_ns(a, || UdpSocket::bind("0.0.0.0:0").unwrap());
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).ok()?;
        server.send_to(&buf[..n], from).ok()
    });
    client
        .send_to(b"through dvrbr-100", format!("{b_ip}:7777"))
        .unwrap();
    let mut buf = [0u8; 64];
    let ok = matches!(client.recv_from(&mut buf), Ok((17, _)));
    echo.join().unwrap();
    ok && &buf[..17] == b"through dvrbr-100"
}

#[test]
fn version_lists_1_0_0_and_1_1_0() {
    for stdin in ["", r#"{"cniVersion":"1.0.0"}"#] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-dvr-cni"))
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["supportedVersions"], json!(["1.0.0", "1.1.0"]));
        let want = if stdin.is_empty() { "1.1.0" } else { "1.0.0" };
        assert_eq!(v["cniVersion"], want);
    }
}

#[test]
fn add_check_del_with_traffic_between_two_pods() {
    if !sandbox::enter("add_check_del_with_traffic_between_two_pods") {
        return;
    }
    let _node = node(true);
    let (a, b) = (pod("a"), pod("b"));
    let conf_a = static_conf("10.1.0.2/24", "02:00:00:01:00:02");
    let (rc, res) = cni("ADD", &a, "ctr-a", "t", &conf_a);
    assert_eq!(rc, 0, "{res}");
    // Bare address (no prefix) through CNI_ARGS-free args.cni, random MAC.
    let conf_b = conf(json!({"args": {"cni": {"ips": ["10.1.0.3"]}}}));
    let (rc, res_b) = cni("ADD", &b, "ctr-b", "t", &conf_b);
    assert_eq!(rc, 0, "{res_b}");

    // The result.
    assert_eq!(res["cniVersion"], "1.1.0");
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs[0]["name"], "dvrbr-100");
    let host = ifs[1]["name"].as_str().unwrap();
    assert!(host.starts_with("dvrp"));
    assert_eq!(ifs[2]["name"], "net1");
    assert_eq!(ifs[2]["mac"], "02:00:00:01:00:02");
    assert_eq!(ifs[2]["sandbox"], "/run/netns/a");
    assert_eq!(ifs[2]["mtu"], 1450);
    assert_eq!(
        res["ips"],
        json!([{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 2}])
    );
    assert_eq!(
        res["routes"],
        json!([{"dst": "10.2.0.0/24", "gw": "10.1.0.1"}])
    );
    assert_eq!(res_b["ips"][0]["address"], "10.1.0.3/24");
    let mac_b = res_b["interfaces"][2]["mac"].as_str().unwrap();
    assert_eq!(
        u8::from_str_radix(&mac_b[..2], 16).unwrap() & 3,
        2,
        "{mac_b}"
    );

    // The kernel, observed independently.
    let l = &ip_json(&["-n", "a", "addr", "show", "net1"])[0];
    assert_eq!(l["address"], "02:00:00:01:00:02");
    assert_eq!(l["mtu"], 1450);
    assert!(l["flags"].as_array().unwrap().contains(&json!("UP")));
    let addrs: Vec<String> = l["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert_eq!(addrs, ["10.1.0.2/24"]);
    let routes = ip_json(&["-n", "a", "route", "show", "10.2.0.0/24"]);
    assert_eq!(routes[0]["gateway"], "10.1.0.1");
    assert_eq!(routes[0]["dev"], "net1");
    let h = &ip_json(&["link", "show", host])[0];
    assert_eq!(h["master"], "dvrbr-100");
    assert_eq!(h["mtu"], 1450);

    // Real traffic between the pods, through the bridge.
    assert!(udp_exchange(&a, &b, "10.1.0.3"), "a cannot reach b");
    assert!(udp_exchange(&b, &a, "10.1.0.2"), "b cannot reach a");

    // CHECK against prevResult: fine, then not once the address is gone.
    let mut check_conf = conf_a.clone();
    check_conf["prevResult"] = res.clone();
    let (rc, out) = cni("CHECK", &a, "ctr-a", "t", &check_conf);
    assert_eq!((rc, &out), (0, &Value::Null));
    sh(&["ip", "-n", "a", "addr", "del", "10.1.0.2/24", "dev", "net1"]);
    let msg = assert_error(cni("CHECK", &a, "ctr-a", "t", &check_conf), 107);
    assert!(msg.contains("10.1.0.2/24"), "{msg}");
    // CHECK without prevResult is a configuration error.
    assert_error(cni("CHECK", &a, "ctr-a", "t", &conf_a), 7);

    // DEL, twice: both succeed, silently; everything of pod a is gone.
    for _ in 0..2 {
        assert_eq!(cni("DEL", &a, "ctr-a", "t", &conf_a), (0, Value::Null));
    }
    assert_eq!(links(Some("a")), ["lo"]);
    assert!(!links(None).contains(&host.to_string()));
    // Pod b is untouched.
    assert_eq!(plugin_links().len(), 1);
    assert!(links(Some("b")).contains(&"net1".to_string()));
}

#[test]
fn del_succeeds_without_netns_agent_or_add() {
    if !sandbox::enter("del_succeeds_without_netns_agent_or_add") {
        return;
    }
    {
        let _node = node(true);
        let a = pod("a");
        let c = static_conf("10.1.0.2/24", "02:00:00:01:00:02");
        assert_eq!(cni("ADD", &a, "ctr-a", "t", &c).0, 0);
        // The pod's namespace vanishes (its veth with it), then DEL.
        sh(&["ip", "netns", "del", "a"]);
        assert_eq!(cni("DEL", &a, "ctr-a", "t", &c), (0, Value::Null));
        assert_eq!(plugin_links(), Vec::<String>::new());
    }
    // The agent is down now (endpoint dropped, socket file left behind):
    // DEL of something never added, with a netns that never existed.
    let c = static_conf("10.1.0.2/24", "02:00:00:01:00:02");
    let gone = Path::new("/run/netns/never");
    assert_eq!(cni("DEL", gone, "ctr-x", "t", &c), (0, Value::Null));
    // Even a configuration this plugin could not ADD with.
    let c = json!({"cniVersion": "1.0.0", "name": "x", "type": "kube-dvr"});
    assert_eq!(cni("DEL", gone, "ctr-x", "t", &c), (0, Value::Null));
}

#[test]
fn agent_unreachable_is_try_again_and_leaves_nothing() {
    if !sandbox::enter("agent_unreachable_is_try_again_and_leaves_nothing") {
        return;
    }
    let _node = node(false);
    let a = pod("a");
    let c = static_conf("10.1.0.2/24", "02:00:00:01:00:02");
    let msg = assert_error(cni("ADD", &a, "ctr-a", "t", &c), 11);
    assert!(msg.contains("/run/kube-dvr/cni.sock"), "{msg}");
    assert_nothing_left("a");
    // STATUS says not available; with the agent back, available.
    assert_error(cni("STATUS", &a, "", "t", &c), 50);
    let _agent = node_agent_only();
    assert_eq!(cni("STATUS", &a, "", "t", &c), (0, Value::Null));
    assert_eq!(cni("GC", &a, "", "t", &c), (0, Value::Null));
}

/// The agent's endpoint alone (the node already has its bridge).
fn node_agent_only() -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let l = {
        let _in = rt.enter();
        endpoint::bind(Path::new(endpoint::DEFAULT_SOCKET)).unwrap()
    };
    let (tx, rx) = tokio::sync::watch::channel(Some(Arc::new(mk_view())));
    rt.spawn(async move {
        let _keep = tx;
        endpoint::serve(l, rx, None).await
    });
    rt
}

#[test]
fn refusals_are_cni_errors_and_leave_nothing() {
    if !sandbox::enter("refusals_are_cni_errors_and_leave_nothing") {
        return;
    }
    let _node = node(true);
    let a = pod("a");
    let mac = "02:00:00:01:00:02";
    let cases: Vec<(Value, &str, u64, &str)> = vec![
        (
            conf(json!({"subnet": "nope", "runtimeConfig": {"ips": ["10.1.0.2/24"]}})),
            "t",
            102,
            "no subnet",
        ),
        (
            conf(json!({"router": "nope", "runtimeConfig": {"ips": ["10.1.0.2/24"]}})),
            "t",
            101,
            "unknown",
        ),
        (
            static_conf("10.9.0.2/24", mac),
            "t",
            103,
            "not a host address",
        ),
        (static_conf("10.1.0.2/16", mac), "t", 103, "10.1.0.0/24"),
        (static_conf("10.1.0.1/24", mac), "t", 104, "gateway"),
        // A tenant's NAD naming another namespace's router.
        (
            conf(json!({"router": "other/r1", "runtimeConfig": {"ips": ["10.1.0.2/24"]}})),
            "t",
            105,
            "own namespace",
        ),
        // The router is found by the pod's namespace: "r1" from "other"
        // is other/r1, a different router (VNI 200, no bridge here).
        (static_conf("10.1.0.2/24", mac), "other", 11, "dvrbr-200"),
        // Subnet b is valid but not on this node yet: try again later.
        (
            conf(json!({"subnet": "b", "runtimeConfig": {"ips": ["10.2.0.2/24"]}})),
            "t",
            11,
            "dvrbr-101",
        ),
        // This endpoint keeps no Port records (no API server here): no IPAM.
        (conf(json!({})), "t", 7, "keeps no Port records"),
        (
            conf(json!({"runtimeConfig": {"ips": ["10.1.0.2/24"], "mac": "01:00:5e:00:00:01"}})),
            "t",
            7,
            "unicast",
        ),
        (
            json!({"cniVersion": "0.4.0", "name": "x", "type": "kube-dvr"}),
            "t",
            1,
            "not supported",
        ),
        (
            json!({"cniVersion": "1.1.0", "name": "x", "type": "kube-dvr", "subnet": "a"}),
            "t",
            7,
            "router",
        ),
    ];
    for (c, ns, code, needle) in cases {
        let msg = assert_error(cni("ADD", &a, "ctr-a", ns, &c), code);
        assert!(msg.contains(needle), "{c}: {msg:?} lacks {needle:?}");
        assert_nothing_left("a");
    }
    // Undecodable configuration: code 6; no K8S_POD_NAMESPACE: code 4.
    let mut child = Command::new(Path::new(BIN_DIR).join("kube-dvr"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c")
        .env("CNI_NETNS", &a)
        .env("CNI_IFNAME", "net1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"{not json").unwrap();
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_error((out.status.code().unwrap(), v), 6);
    let c = static_conf("10.1.0.2/24", mac);
    assert_error(cni("ADD", &a, "ctr-a", "", &c), 4);
    assert_nothing_left("a");
}

#[test]
fn failed_add_rolls_back_the_veth() {
    if !sandbox::enter("failed_add_rolls_back_the_veth") {
        return;
    }
    let _node = node(true);
    let a = pod("a");
    // The pod already routes 10.2.0.0/24 elsewhere: adding the subnet's
    // route fails after the veth was made and plugged.
    // (veths: the sandbox cannot load the dummy module)
    sh(&[
        "ip", "-n", "a", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    sh(&["ip", "-n", "a", "link", "set", "d0", "up"]);
    sh(&["ip", "-n", "a", "addr", "add", "10.9.0.1/24", "dev", "d0"]);
    sh(&[
        "ip",
        "-n",
        "a",
        "route",
        "add",
        "10.2.0.0/24",
        "via",
        "10.9.0.2",
    ]);
    let c = static_conf("10.1.0.2/24", "02:00:00:01:00:02");
    let msg = assert_error(cni("ADD", &a, "ctr-a", "t", &c), 100);
    assert!(msg.contains("10.2.0.0/24"), "{msg}");
    assert_eq!(plugin_links(), Vec::<String>::new());
    assert_eq!(links(Some("a")), ["lo", "d1", "d0"]);
    // An interface of that name already in the pod: refused, and kept.
    sh(&["ip", "-n", "a", "route", "del", "10.2.0.0/24"]);
    sh(&[
        "ip", "-n", "a", "link", "add", "net1", "type", "veth", "peer", "name", "n1",
    ]);
    let msg = assert_error(cni("ADD", &a, "ctr-a", "t", &c), 100);
    assert!(msg.contains("already has an interface net1"), "{msg}");
    assert_eq!(plugin_links(), Vec::<String>::new());
    assert_eq!(links(Some("a")), ["lo", "d1", "d0", "n1", "net1"]);
}

/// The result has the shape of the reference `bridge` plugin's (with
/// `static` IPAM) for the same request: same keys at every level.
#[test]
fn result_shape_matches_the_reference_bridge_plugin() {
    if !sandbox::enter("result_shape_matches_the_reference_bridge_plugin") {
        return;
    }
    let reference = Path::new("/usr/lib/cni/bridge");
    assert!(
        reference.exists() && Path::new("/usr/lib/cni/static").exists(),
        "the reference plugins are missing: apt-get install containernetworking-plugins"
    );
    let _node = node(true);
    for p in ["bridge", "static"] {
        std::fs::copy(
            Path::new("/usr/lib/cni").join(p),
            Path::new(BIN_DIR).join(p),
        )
        .unwrap();
    }
    let (a, b) = (pod("a"), pod("b"));
    let ref_conf = json!({"cniVersion": "1.0.0", "name": "ref", "type": "bridge",
        "bridge": "refbr", "isGateway": false,
        "ipam": {"type": "static",
                 "addresses": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"}],
                 "routes": [{"dst": "10.2.0.0/24", "gw": "10.1.0.1"}]}});
    let (rc, theirs) = cni("ADD", &a, "ctr-a", "t", &ref_conf);
    assert_eq!(rc, 0, "{theirs}");
    let mut c = static_conf("10.1.0.3/24", "02:00:00:01:00:03");
    c["cniVersion"] = json!("1.0.0");
    let (rc, ours) = cni("ADD", &b, "ctr-b", "t", &c);
    assert_eq!(rc, 0, "{ours}");

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(ours["cniVersion"], theirs["cniVersion"]);
    let (oi, ti) = (
        ours["interfaces"].as_array().unwrap(),
        theirs["interfaces"].as_array().unwrap(),
    );
    assert_eq!(oi.len(), ti.len());
    for (o, t) in oi.iter().zip(ti) {
        // 1.0.0: no `mtu` in either.
        assert_eq!(keys(o), keys(t), "{o} vs {t}");
    }
    assert_eq!(keys(&ours["ips"][0]), keys(&theirs["ips"][0]));
    // `interface` indexes the sandboxed interface in both.
    for r in [&ours, &theirs] {
        let i = r["ips"][0]["interface"].as_u64().unwrap() as usize;
        assert!(r["interfaces"][i]["sandbox"].is_string(), "{r}");
    }
    assert_eq!(keys(&ours["routes"][0]), keys(&theirs["routes"][0]));
    assert_eq!(ours["routes"], theirs["routes"]);
    assert_eq!(ours["dns"], theirs["dns"]);
    // DEL of both, as the runtime would.
    assert_eq!(cni("DEL", &a, "ctr-a", "t", &ref_conf).0, 0);
    assert_eq!(cni("DEL", &b, "ctr-b", "t", &c), (0, Value::Null));
}

//! Helpers of the agent tests: a stand-in API server with kube-dvr's CRDs,
//! `mk_*` objects, a stand-in for the controller's status writes, and
//! kernel probes through `ip`/`nft`.
#![allow(dead_code)]
use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use kube_dvr::agent::{self, AgentOptions};
use kube_dvr::api::{self, DistributedRouter, PerKind, Port, PortSpec};
use kube_dvr::cluster;
use kube_dvr::dataplane::engine::EngineConfig;
use kube_dvr::plan::model::NodeState;
use kube_dvr::plan::plan_node;
use kube_dvr::plan::resolve::{resolve, ClusterInput};
use kube_dvr::telemetry::Telemetry;
use kube_standin::StandIn;

pub const NS: &str = "kube-dvr";
pub const TENANT: &str = "t";

/// Run a command, return its stdout; panics when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn json_of(args: &[&str]) -> serde_json::Value {
    let text = sh(args);
    if text.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// Named namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    let mut v: Vec<String> = sh(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Link names in the root namespace (or `ns`).
pub fn links(ns: Option<&str>) -> Vec<String> {
    let mut args = vec!["ip", "-j"];
    if let Some(n) = ns {
        args.extend(["-n", n]);
    }
    args.extend(["link", "show"]);
    json_of(&args)
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// `(name, ifindex)` of every link in the root namespace.
pub fn link_indexes() -> Vec<(String, u64)> {
    json_of(&["ip", "-j", "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_string(),
                l["ifindex"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Permanent neighbours (ip addresses) in `ns`.
pub fn neighbours(ns: &str) -> Vec<String> {
    json_of(&["ip", "-j", "-n", ns, "neigh", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["dst"].as_str().unwrap().to_string())
        .collect()
}

/// Routes of the main table of `ns` as `dst` strings.
pub fn routes(ns: &str) -> Vec<String> {
    json_of(&["ip", "-j", "-n", ns, "route", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dst"].as_str().unwrap().to_string())
        .collect()
}

/// nftables tables in the root namespace, as `family name`.
pub fn nft_tables() -> Vec<String> {
    let v = json_of(&["nft", "-j", "list", "tables"]);
    v["nftables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("table"))
                .map(|t| {
                    format!(
                        "{} {}",
                        t["family"].as_str().unwrap(),
                        t["name"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Poll `f` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stand-in with kube-dvr's CRDs, namespaces `kube-dvr` and `t`, and
/// nodes `n1` (InternalIP 198.18.0.1, no agent annotations yet) and `n2`
/// (another node whose agent published VTEP 198.18.0.2).
pub struct Cluster {
    pub standin: StandIn,
    pub client: Client,
}

impl Cluster {
    pub async fn start() -> Cluster {
        sh(&["ip", "link", "set", "lo", "up"]);
        let standin = StandIn::start(0).await.expect("start the stand-in");
        let client = Client::try_from(standin.kube_config()).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in kube_dvr::api::crds() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let nss: Api<Namespace> = Api::all(client.clone());
        for ns in [NS, TENANT] {
            let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
            nss.create(&PostParams::default(), &o).await.unwrap();
        }
        let c = Cluster { standin, client };
        c.create_node(mk_node("n1", Some("198.18.0.1"), None)).await;
        c.create_node(mk_node("n2", Some("198.18.0.2"), Some("198.18.0.2")))
            .await;
        c
    }

    /// Create a namespaced object (in its namespace).
    pub async fn create<K>(&self, obj: K) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let ns = obj.meta().namespace.clone().expect("a namespaced object");
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        api.create(&PostParams::default(), &obj).await.unwrap()
    }

    pub async fn create_node(&self, node: Node) -> Node {
        self.nodes()
            .create(&PostParams::default(), &node)
            .await
            .unwrap()
    }

    pub fn routers(&self) -> Api<DistributedRouter> {
        Api::namespaced(self.client.clone(), TENANT)
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    pub async fn annotation(&self, node: &str, key: &str) -> Option<String> {
        let n = self.nodes().get(node).await.unwrap();
        cluster::annotation(&n.metadata, key).map(str::to_string)
    }

    /// Every stored object of `K`, across namespaces.
    async fn list_all<K>(&self) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        api.list(&ListParams::default()).await.unwrap().items
    }

    async fn list_shared<K>(&self) -> Vec<std::sync::Arc<K>>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let all: Vec<K> = self.list_all().await;
        all.into_iter().map(std::sync::Arc::new).collect()
    }

    /// Everything as stored, as the controller would see it (all agents live).
    pub async fn input(&self) -> ClusterInput {
        let ports: Vec<Port> = self.list_all().await;
        let nodes: Vec<Node> = self.list_all().await;
        ClusterInput {
            objects: PerKind {
                external_networks: self.list_shared().await,
                routers: self.list_shared().await,
                floating_ips: self.list_shared().await,
                snat_gateways: self.list_shared().await,
                firewalls: self.list_shared().await,
                port_forwardings: self.list_shared().await,
                load_balancers: self.list_shared().await,
            },
            pods: cluster::port_infos(&ports).into(),
            nodes: nodes
                .iter()
                .map(|n| cluster::node_info(n, Some(true)))
                .collect(),
            now: Timestamp::from_second(Timestamp::now().as_second()).unwrap(),
            ..Default::default()
        }
    }

    /// What the controller does to statuses: resolve everything and write
    /// each router's desired status (with `observedGeneration`).
    pub async fn controller_pass(&self) {
        let res = resolve(&self.input().await);
        for (key, status) in &res.routers {
            let api: Api<DistributedRouter> = Api::namespaced(self.client.clone(), &key.namespace);
            api.patch_status(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
        }
    }

    /// The plan of `node` as the controller computes it.
    pub async fn expected_plan(&self, node: &str) -> NodeState {
        plan_node(&resolve(&self.input().await).view, node)
    }
}

pub fn mk_node(name: &str, internal_ip: Option<&str>, vtep_annotation: Option<&str>) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    });
    if let Some(ip) = internal_ip {
        v["status"]["addresses"] = json!([{"type": "InternalIP", "address": ip}]);
    }
    if let Some(vtep) = vtep_annotation {
        v["metadata"]["annotations"] = json!({cluster::VTEP_ANNOTATION: vtep});
    }
    serde_json::from_value(v).unwrap()
}

/// The Port kube-dvr's CNI plugin records for a pod on `node` with one
/// secondary network `nad` (in `t`): what the agents route.
pub fn mk_port(pod: &str, node: &str, nad: &str, ip: &str, mac: &str) -> Port {
    let mut p = Port::new(
        &api::port_name("r", nad, ip.parse().unwrap()),
        PortSpec {
            router: "r".into(),
            subnet: nad.into(),
            network: format!("{TENANT}/{nad}"),
            ip: ip.into(),
            mac: mac.into(),
            node: node.into(),
            pod: pod.into(),
            pod_uid: String::new(),
            container_id: format!("c-{pod}"),
            interface: "net1".into(),
            vm: String::new(),
        },
    );
    p.metadata.namespace = Some(TENANT.into());
    p
}

/// A router in `t` with subnets `(name, cidr, gateway, nad)`.
pub fn mk_router(name: &str, subnets: &[(&str, &str, &str, &str)]) -> DistributedRouter {
    let subnets: Vec<_> = subnets
        .iter()
        .map(|(n, c, g, a)| json!({"name": n, "cidr": c, "gateway": g, "networkAttachment": a}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
        "metadata": {"name": name, "namespace": TENANT},
        "spec": {"subnets": subnets}
    }))
    .unwrap()
}

/// The sandbox's own namespace plays the node's root namespace.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        root_netns: "/proc/self/ns/net".into(),
        netns_dir: "/run/netns".into(),
    }
}

/// A running in-process agent.
pub struct Running {
    pub telemetry: Arc<Telemetry>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), agent::Error>>,
}

impl Running {
    /// Stop it and wait until it has ended.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Kernel writes so far, all kinds.
    pub fn kernel_writes(&self) -> f64 {
        [
            "netns",
            "link",
            "address",
            "route",
            "rule",
            "neighbour",
            "fdb",
            "sysctl",
            "nft",
        ]
        .iter()
        .filter_map(|k| {
            self.telemetry
                .value("kube_dvr_kernel_writes_total", &[("kind", k)])
        })
        .sum()
    }
}

pub fn agent_options(node: &str) -> AgentOptions {
    let mut o = AgentOptions::new(node);
    o.namespace = NS.into();
    o.engine = engine_config();
    o.resync = Duration::from_secs(3600);
    o.heartbeat = Duration::from_secs(60);
    o
}

pub fn start_agent(client: &Client, opts: AgentOptions) -> Running {
    let telemetry = Telemetry::new();
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent::run(
        client.clone(),
        opts,
        telemetry.clone(),
        stop.clone(),
    ));
    Running {
        telemetry,
        stop,
        task,
    }
}

/// A multi-threaded runtime for a sandboxed test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

//! Builders (`mk_*`) and helpers shared by the controller tests.
#![allow(dead_code)]
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use kube_dvr::api::{
    self, DistributedRouter, DvrKind, ExternalNetwork, FloatingIP, PerKind, Port, PortSpec,
    SnatGateway,
};
use kube_dvr::cluster;
use kube_dvr::controller::desired::{expected_digests, Snapshot};

pub fn mk_node(name: &str, vtep: &str, role: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubedvr.io/role": role},
                     "annotations": {cluster::VTEP_ANNOTATION: vtep}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// The Port kube-dvr's CNI plugin records for pod `name` on `node` with
/// one secondary network `nad` (`namespace/name`): what is routed.
pub fn mk_port(ns: &str, name: &str, node: &str, nad: &str, ip: &str, mac: &str) -> Port {
    let subnet = nad.rsplit('/').next().unwrap();
    let mut p = Port::new(
        &api::port_name("r", subnet, ip.parse().unwrap()),
        PortSpec {
            router: "r".into(),
            subnet: subnet.into(),
            network: nad.into(),
            ip: ip.into(),
            mac: mac.into(),
            node: node.into(),
            pod: name.into(),
            pod_uid: String::new(),
            container_id: format!("c-{name}"),
            interface: "net1".into(),
            vm: String::new(),
        },
    );
    p.metadata.namespace = Some(ns.into());
    p
}

pub fn mk_fip(
    ns: &str,
    name: &str,
    router: &str,
    fixed: &str,
    address: Option<&str>,
) -> FloatingIP {
    let mut spec = json!({"router": router, "target": {"fixedIP": fixed}});
    if let Some(a) = address {
        spec["address"] = a.into();
    }
    serde_json::from_value(json!({
        "apiVersion": api::API_VERSION, "kind": "FloatingIP",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

/// CRDs, namespaces, the lab's three nodes and six workload pods.
pub async fn setup_cluster(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in ["kube-dvr", "tenant-a", "tenant-b"] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        nss.create(&PostParams::default(), &n).await.unwrap();
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for (n, vtep, role) in [
        ("node-1", "198.18.0.11", "compute"),
        ("node-2", "198.18.0.12", "compute"),
        ("gw-1", "198.18.0.21", "gateway"),
    ] {
        nodes
            .create(&PostParams::default(), &mk_node(n, vtep, role))
            .await
            .unwrap();
    }
    for (ns, name, node, nad, ip, mac) in [
        (
            "tenant-a",
            "a-web",
            "node-1",
            "tenant-a/net-a1",
            "10.10.1.10",
            "02:0a:00:01:00:0a",
        ),
        (
            "tenant-a",
            "a-cache",
            "node-1",
            "tenant-a/net-a2",
            "10.10.2.11",
            "02:0a:00:02:00:0b",
        ),
        (
            "tenant-a",
            "a-app",
            "node-2",
            "tenant-a/net-a1",
            "10.10.1.11",
            "02:0a:00:01:00:0b",
        ),
        (
            "tenant-a",
            "a-db",
            "node-2",
            "tenant-a/net-a2",
            "10.10.2.10",
            "02:0a:00:02:00:0a",
        ),
        (
            "tenant-b",
            "b-web",
            "node-1",
            "tenant-b/net-b1",
            "10.10.1.10",
            "02:0b:00:01:00:0a",
        ),
        (
            "tenant-b",
            "b-api",
            "node-2",
            "tenant-b/net-b1",
            "10.10.1.20",
            "02:0b:00:01:00:14",
        ),
    ] {
        let ports: Api<Port> = Api::namespaced(client.clone(), ns);
        ports
            .create(
                &PostParams::default(),
                &mk_port(ns, name, node, nad, ip, mac),
            )
            .await
            .unwrap();
    }
}

/// The nodes [`setup_cluster`] creates.
pub const NODES: [&str; 3] = ["node-1", "node-2", "gw-1"];

/// Agents heartbeat: each node's Lease `kube-dvr-agent-<node>` in
/// `kube-dvr`, renewed now (created if missing). Without one, a node with a
/// VTEP has no agent as far as the controller goes.
pub async fn agents_heartbeat(client: &Client, nodes: &[&str]) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-dvr");
    for node in nodes {
        let name = format!("{}{node}", cluster::AGENT_LEASE_PREFIX);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let spec = json!({"holderIdentity": node, "leaseDurationSeconds": 30, "renewTime": now});
        if leases.get_opt(&name).await.unwrap().is_some() {
            let patch = json!({ "spec": spec });
            leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        } else {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-dvr"}, "spec": spec
            }))
            .unwrap();
            leases.create(&PostParams::default(), &lease).await.unwrap();
        }
    }
}

/// `kubectl apply` of examples/lab/*.yaml.
pub async fn apply_examples(client: &Client) {
    let m = kube_dvr::lab::Manifests::load("examples/lab/manifests".as_ref()).unwrap();
    let pp = PostParams::default();
    for o in &m.external_networks {
        Api::<ExternalNetwork>::all(client.clone())
            .create(&pp, o)
            .await
            .unwrap();
    }
    for o in &m.routers {
        let ns = o.metadata.namespace.as_deref().unwrap();
        Api::<DistributedRouter>::namespaced(client.clone(), ns)
            .create(&pp, o)
            .await
            .unwrap();
    }
    for o in &m.floating_ips {
        let ns = o.metadata.namespace.as_deref().unwrap();
        Api::<FloatingIP>::namespaced(client.clone(), ns)
            .create(&pp, o)
            .await
            .unwrap();
    }
    for o in &m.snat_gateways {
        let ns = o.metadata.namespace.as_deref().unwrap();
        Api::<SnatGateway>::namespaced(client.clone(), ns)
            .create(&pp, o)
            .await
            .unwrap();
    }
}

/// What the agents see of kind `K`: live objects whose status the
/// controller has processed (`observedGeneration == generation`).
async fn agent_view<K: DvrKind>(client: &Client) -> Vec<std::sync::Arc<K>> {
    list_decodable::<K>(client)
        .await
        .into_iter()
        .filter(|o| o.observed_generation().flatten() == o.meta().generation)
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(std::sync::Arc::new)
        .collect()
}

/// Every object of `K` that decodes (as the controller's and the agents'
/// caches hold them: an undecodable object is skipped).
pub async fn list_decodable<K>(client: &Client) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let ar = ApiResource::erase::<K>(&());
    Api::<DynamicObject>::all_with(client.clone(), &ar)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|mut o| kube_dvr::cluster::watch::decode(&mut o).ok())
        .collect()
}

/// Read everything as an agent would and compute each node's plan digest.
pub async fn agent_digests(client: &Client) -> std::collections::BTreeMap<String, String> {
    let ports = list_decodable::<Port>(client).await;
    let nodes = list_decodable::<Node>(client).await;
    let s = Snapshot {
        objects: PerKind {
            external_networks: agent_view(client).await,
            routers: agent_view(client).await,
            floating_ips: agent_view(client).await,
            snat_gateways: agent_view(client).await,
            firewalls: agent_view(client).await,
            port_forwardings: agent_view(client).await,
            load_balancers: agent_view(client).await,
        },
        pods: cluster::port_infos(&ports).into(),
        nad_conflicts: Default::default(),
        nodes,
        // Agents do not read Leases: every node counts as alive.
        agents: Default::default(),
        leases_synced: false,
        now: k8s_openapi::jiff::Timestamp::now(),
        cursors: None,
        undecodable: Vec::new(),
        // As agents resolve: selected backends from the status.
        pod_labels: None,
    };
    expected_digests(&s)
}

/// Play every agent once: annotate each node with the digest it would
/// program (only nodes in `only`, if given). Returns the number of writes.
pub async fn agents_program(client: &Client, only: Option<&[&str]>) -> usize {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut writes = 0;
    for (node, digest) in agent_digests(client).await {
        if only.is_some_and(|o| !o.contains(&node.as_str())) {
            continue;
        }
        let current = nodes.get(&node).await.unwrap();
        if cluster::annotation(&current.metadata, cluster::PROGRAMMED_ANNOTATION)
            == Some(digest.as_str())
        {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {cluster::PROGRAMMED_ANNOTATION: digest}}});
        nodes
            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        writes += 1;
    }
    writes
}

/// Poll `f` until it returns Some, or panic with `what` after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

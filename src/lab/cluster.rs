//! The lab's cluster: an API server (the in-memory stand-in, or a real
//! kube-apiserver with etcd, see [`super::apiserver`]), the real controller
//! and one real agent per simulated node, in this process, on the same code
//! paths as a cluster. The lab plays kubelet and Multus: it registers Nodes
//! (Ready, InternalIP = VTEP) and Pods (with `k8s.v1.cni.cncf.io/network-status`),
//! and applies user manifests through the API like `kubectl apply`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::infra::LabPaths;
use super::manifests::Manifests;
use super::topology::Topology;
use crate::agent::{self, AgentOptions};
use crate::api::kinds::for_each_kind;
use crate::api::kubevirt;
use crate::api::nad::{self, NetworkAttachmentDefinition};
use crate::api::{self, DvrKind, Kind, PerKind, Port};
use crate::cluster;
use crate::controller::{self, desired::Snapshot, ControllerOptions};
use crate::dataplane::engine::EngineConfig;
use crate::telemetry::Telemetry;

/// Where the lab's components keep their Leases.
pub const LAB_NAMESPACE: &str = "kube-dvr";
const FIELD_MANAGER: &str = "kube-dvr-lab";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("starting the API stand-in: {0}")]
    StandIn(String),
    #[error("starting kube-apiserver: {0}")]
    ApiServer(#[from] super::apiserver::ApiServerError),
    #[error("{op}: {source}")]
    Api { op: String, source: kube::Error },
    #[error("the cluster did not converge within {secs} s: {detail}")]
    NotConverged { secs: u64, detail: String },
    #[error("{0}")]
    Other(String),
}

fn api_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let op = op.into();
    move |source| ClusterError::Api { op, source }
}

/// A running component: its stop switch, task and metrics.
struct Component {
    token: CancellationToken,
    task: JoinHandle<()>,
    pub telemetry: Arc<Telemetry>,
}

/// Objects the lab applied, by kind / namespace / name.
type Applied = BTreeSet<(&'static str, String, String)>;

/// Which API server the lab runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiKind {
    /// The in-memory stand-in (`kube-standin`): starts in milliseconds.
    #[default]
    #[value(name = "standin")]
    StandIn,
    /// etcd + kube-apiserver (+ kube-controller-manager) from `.tools/bin`,
    /// built by `scripts/install-tools.sh`.
    #[value(name = "kube-apiserver")]
    KubeApiServer,
}

enum Server {
    StandIn(kube_standin::StandIn),
    Real(super::apiserver::ApiServer),
}

pub struct LabCluster {
    pub rt: tokio::runtime::Runtime,
    server: Option<Server>,
    /// Admin: what the lab itself (kubelet's, Multus' and the user's part)
    /// uses.
    pub client: Client,
    /// The controller's and each agent's client: admin on the stand-in, the
    /// chart's identities on kube-apiserver (see [`super::identities`]).
    controller_client: Client,
    agent_clients: BTreeMap<String, Client>,
    pub kubeconfig: PathBuf,
    controller: Option<Component>,
    agents: BTreeMap<String, Component>,
    agent_opts: BTreeMap<String, AgentOptions>,
    applied: Applied,
}

impl LabCluster {
    /// Start the stand-in, register CRDs, namespaces, Nodes and Pods, start
    /// the controller and every node's agent.
    pub fn start(
        paths: &LabPaths,
        topology: &Topology,
        api: ApiKind,
    ) -> Result<LabCluster, ClusterError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Other(format!("tokio runtime: {e}")))?;
        let kubeconfig = paths.root.join("kubeconfig");
        let (server, client) = match api {
            ApiKind::StandIn => {
                let standin = rt
                    .block_on(kube_standin::StandIn::start(0))
                    .map_err(|e| ClusterError::StandIn(e.to_string()))?;
                standin.write_kubeconfig(&kubeconfig).map_err(|e| {
                    ClusterError::Other(format!("writing {}: {e}", kubeconfig.display()))
                })?;
                let client = {
                    // The client's buffer service spawns onto the current runtime.
                    let _rt = rt.enter();
                    Client::try_from(standin.kube_config()).map_err(api_err("kube client"))?
                };
                (Server::StandIn(standin), client)
            }
            ApiKind::KubeApiServer => {
                let opts = super::apiserver::ApiServerOptions::default();
                let server = rt.block_on(super::apiserver::ApiServer::start(&opts))?;
                std::fs::copy(&server.kubeconfig, &kubeconfig).map_err(|e| {
                    ClusterError::Other(format!("writing {}: {e}", kubeconfig.display()))
                })?;
                let client = rt.block_on(server.client())?;
                (Server::Real(server), client)
            }
        };
        let mut c = LabCluster {
            rt,
            server: Some(server),
            controller_client: client.clone(),
            agent_clients: BTreeMap::new(),
            client,
            kubeconfig,
            controller: None,
            agents: BTreeMap::new(),
            agent_opts: BTreeMap::new(),
            applied: BTreeSet::new(),
        };
        c.rt.block_on(register(&c.client, topology))?;
        if let Some(Server::Real(server)) = &c.server {
            let nodes: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();
            let ids = c.rt.block_on(super::identities::chart_identities(
                server,
                &c.client,
                LAB_NAMESPACE,
                &nodes,
            ))?;
            c.controller_client = ids.controller;
            c.agent_clients = ids.agents;
        }
        for n in &topology.nodes {
            let mut o = AgentOptions::new(&n.name);
            o.namespace = LAB_NAMESPACE.into();
            o.vtep = Some(n.vtep);
            o.engine = EngineConfig {
                root_netns: paths.node(&n.name),
                netns_dir: paths.node_netns_dir(&n.name),
            };
            o.resync = Duration::from_secs(30);
            o.cni_socket = Some(paths.cni_socket(&n.name));
            c.agent_opts.insert(n.name.clone(), o);
        }
        c.start_controller();
        for n in &topology.nodes {
            c.start_agent(&n.name);
        }
        Ok(c)
    }

    /// Successful mutating API requests so far (counted by the stand-in
    /// only; 0 on kube-apiserver).
    pub fn api_writes(&self) -> u64 {
        match &self.server {
            Some(Server::StandIn(s)) => s.write_count(),
            _ => 0,
        }
    }

    pub fn start_controller(&mut self) {
        let token = CancellationToken::new();
        let telemetry = Telemetry::new();
        let opts = ControllerOptions::new(LAB_NAMESPACE, "lab-controller");
        let client = self.controller_client.clone();
        let (t, tel) = (token.clone(), telemetry.clone());
        let task = self.rt.spawn(async move {
            if let Err(e) = controller::run(client, opts, tel, t).await {
                tracing::error!(error = %e, "lab controller stopped");
            }
        });
        self.controller = Some(Component {
            token,
            task,
            telemetry,
        });
    }

    pub fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.token.cancel();
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.task).await });
        }
    }

    /// The options `node`'s agent starts with (the next
    /// [`LabCluster::start_agent`] takes changes).
    pub fn agent_options_mut(&mut self, node: &str) -> Option<&mut AgentOptions> {
        self.agent_opts.get_mut(node)
    }

    pub fn start_agent(&mut self, node: &str) {
        let token = CancellationToken::new();
        let telemetry = Telemetry::new();
        let opts = self.agent_opts[node].clone();
        let client = self.agent_clients.get(node).unwrap_or(&self.client).clone();
        let (t, tel) = (token.clone(), telemetry.clone());
        let name = node.to_string();
        let task = self.rt.spawn(async move {
            if let Err(e) = agent::run(client, opts, tel, t).await {
                tracing::error!(node = %name, error = %e, "lab agent stopped");
            }
        });
        self.agents.insert(
            node.to_string(),
            Component {
                token,
                task,
                telemetry,
            },
        );
    }

    pub fn stop_agent(&mut self, node: &str) {
        if let Some(a) = self.agents.remove(node) {
            a.token.cancel();
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), a.task).await });
        }
    }

    /// Stop the API server (the stand-in; a real one is stopped and its
    /// directory removed). Components keep running on what they cached.
    pub fn stop_api(&mut self) {
        match self.server.take() {
            Some(Server::StandIn(s)) => self.rt.block_on(s.shutdown()),
            Some(Server::Real(s)) => drop(s),
            None => {}
        }
    }

    /// An agent's metrics (kernel writes and the like).
    pub fn agent_telemetry(&self, node: &str) -> Option<Arc<Telemetry>> {
        self.agents.get(node).map(|a| a.telemetry.clone())
    }

    pub fn controller_telemetry(&self) -> Option<Arc<Telemetry>> {
        self.controller.as_ref().map(|c| c.telemetry.clone())
    }

    /// Make the API hold exactly `m` among the objects the lab applied:
    /// apply each (server-side apply, like `kubectl apply --server-side`),
    /// delete those applied before and no longer listed.
    pub fn sync(&mut self, m: &Manifests) -> Result<(), ClusterError> {
        let client = self.client.clone();
        let applied = self.rt.block_on(async move {
            // The manifests' namespaces, as a user creates them first.
            let mut namespaces = BTreeSet::new();
            for_each_kind!(|K| {
                namespaces.extend(
                    K::of(&m.objects)
                        .iter()
                        .filter_map(|o| o.meta().namespace.clone()),
                );
            });
            ensure_namespaces(&client, namespaces).await?;
            let mut now: Applied = BTreeSet::new();
            for_each_kind!(|K| {
                apply_all(&client, K::of(&m.objects), &mut now).await?;
            });
            Ok::<_, ClusterError>(now)
        })?;
        let gone: Vec<_> = self.applied.difference(&applied).cloned().collect();
        let client = self.client.clone();
        self.rt.block_on(async move {
            for (kind, ns, name) in gone {
                let kind = Kind::from_name(kind).expect("applied kinds are registered");
                delete(&client, kind, &ns, &name).await?;
            }
            Ok::<_, ClusterError>(())
        })?;
        self.applied = applied;
        Ok(())
    }

    /// Everything the controller and agents see, read from the API.
    pub fn snapshot(&self) -> Result<Snapshot, ClusterError> {
        self.rt.block_on(snapshot(&self.client))
    }

    /// The `spec.config` of NetworkAttachmentDefinition `ns/name`, as
    /// Multus reads it; `None` while it does not exist.
    pub fn nad_config(&self, reference: &str) -> Result<Option<String>, ClusterError> {
        let (ns, name) = reference.split_once('/').unwrap_or(("default", reference));
        let api: Api<NetworkAttachmentDefinition> = Api::namespaced(self.client.clone(), ns);
        let nad = self
            .rt
            .block_on(api.get_opt(name))
            .map_err(api_err(format!(
                "get NetworkAttachmentDefinition {reference}"
            )))?;
        Ok(nad.and_then(|n| n.spec.config))
    }

    /// The UID of pod `ns/name`, as the runtime knows it (`None` when the
    /// pod does not exist).
    pub fn pod_uid(&self, ns: &str, name: &str) -> Result<Option<String>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = self
            .rt
            .block_on(api.get_opt(name))
            .map_err(api_err(format!("get pod {ns}/{name}")))?;
        Ok(pod.and_then(|p| p.metadata.uid))
    }

    /// Wait until the controller has processed every object and every
    /// node's agent reports the plan the controller expects for it.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Snapshot, ClusterError> {
        let start = Instant::now();
        loop {
            let s = self.snapshot()?;
            let pending = convergence_gaps(&s);
            if pending.is_empty() {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                return Err(ClusterError::NotConverged {
                    secs: timeout.as_secs(),
                    detail: pending.join("; "),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop every component and the stand-in. Kernel state stays (as on an
    /// agent restart); the lab's teardown removes it.
    pub fn shutdown(mut self) {
        self.stop_controller();
        let nodes: Vec<String> = self.agents.keys().cloned().collect();
        for n in nodes {
            self.stop_agent(&n);
        }
        match self.server.take() {
            Some(Server::StandIn(s)) => self.rt.block_on(s.shutdown()),
            // Dropping stops the processes and removes their directory.
            Some(Server::Real(s)) => drop(s),
            None => {}
        }
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }
}

/// What is not converged yet (empty = converged).
pub fn convergence_gaps(s: &Snapshot) -> Vec<String> {
    let mut gaps = Vec::new();
    type Status<'a> = Option<(Option<i64>, &'a [api::Condition])>;
    fn check<K: Resource + ResourceExt>(
        gaps: &mut Vec<String>,
        objs: &[K],
        status: impl Fn(&K) -> Status<'_>,
    ) {
        for o in objs {
            let name = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
            let (observed, conds) = status(o).unwrap_or((None, &[]));
            let pending = api::conditions::find_condition(conds, api::conditions::PROGRAMMED)
                .is_some_and(|c| c.reason == controller::desired::REASON_PENDING);
            if o.meta().deletion_timestamp.is_some() {
                gaps.push(format!("{name} is being deleted"));
            } else if observed != o.meta().generation {
                gaps.push(format!("{name} not yet processed by the controller"));
            } else if pending {
                gaps.push(format!("{name} not yet reported programmed"));
            }
        }
    }
    for_each_kind!(|K| {
        check(&mut gaps, K::of(&s.objects), |o| {
            o.status().map(|_| {
                (
                    o.observed_generation().flatten(),
                    o.conditions().unwrap_or(&[]),
                )
            })
        });
    });
    let expected = controller::desired::expected_digests(s);
    let reported = cluster::programmed_digests(&s.nodes);
    for (node, digest) in &expected {
        if reported.get(node) != Some(digest) {
            gaps.push(format!("node {node} has not programmed the current plan"));
        }
    }
    gaps
}

/// Every object of a kind, across namespaces (`Api::all` lists namespaced
/// and cluster-scoped kinds alike).
async fn list<K>(client: &Client) -> Result<Vec<K>, ClusterError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let l = Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await;
    Ok(
        l.map_err(api_err(format!("list {}", K::plural(&Default::default()))))?
            .items,
    )
}

pub async fn snapshot(client: &Client) -> Result<Snapshot, ClusterError> {
    let ports: Vec<Port> = list(client).await?;
    let mut objects = PerKind::default();
    for_each_kind!(|K| {
        *K::of_mut(&mut objects) = list::<K>(client).await?;
    });
    Ok(Snapshot {
        objects,
        pods: cluster::port_infos(&ports),
        nad_conflicts: Default::default(),
        nodes: list::<Node>(client).await?,
        // The lab's agents all heartbeat; take them as alive.
        agents: BTreeMap::new(),
        leases_synced: false,
        now: Timestamp::now(),
        cursors: None,
        undecodable: Vec::new(),
    })
}

/// Create each namespace of `names` that does not exist.
async fn ensure_namespaces(
    client: &Client,
    names: impl IntoIterator<Item = String>,
) -> Result<(), ClusterError> {
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in names {
        let obj: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        match ns_api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(api_err(format!("create namespace {ns}"))(e)),
        }
    }
    Ok(())
}

/// CRDs (kube-dvr's, Multus', KubeVirt's), namespaces, Nodes (kubelet's
/// part) and Pods (Multus' part).
async fn register(client: &Client, t: &Topology) -> Result<(), ClusterError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Multus' CRD, as a cluster with Multus has it.
    let nad_crd: CustomResourceDefinition =
        serde_json::from_value(nad::nad_crd_json()).expect("valid CRD");
    // KubeVirt's VM and instance kinds (stand-ins: KubeVirt cannot run
    // here; tests play its controller by writing them).
    let kubevirt_crds = kubevirt::crds_json()
        .map(|c| serde_json::from_value::<CustomResourceDefinition>(c).expect("valid CRD"));
    let all_crds: Vec<CustomResourceDefinition> = (api::crds().into_iter())
        .chain([nad_crd])
        .chain(kubevirt_crds)
        .collect();
    for crd in &all_crds {
        crds.create(&PostParams::default(), crd)
            .await
            .map_err(api_err("create CRD"))?;
    }
    // A real API server serves a CRD's resources only once it is Established.
    for crd in &all_crds {
        let name = crd.name_any();
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .map_err(|_| ClusterError::Other(format!("CRD {name} not established within 30 s")))?
            .map_err(|e| ClusterError::Other(format!("waiting for CRD {name}: {e}")))?;
    }
    let mut namespaces: BTreeSet<String> =
        t.workloads.iter().map(|w| w.namespace.clone()).collect();
    namespaces.insert(LAB_NAMESPACE.into());
    namespaces.extend(["tenant-a", "tenant-b"].map(String::from));
    ensure_namespaces(client, namespaces).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    for n in &t.nodes {
        let obj: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": n.name, "labels": n.labels},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "addresses": [{"type": "InternalIP", "address": n.vtep.to_string()}],
            }
        }))
        .unwrap();
        nodes
            .create(&PostParams::default(), &obj)
            .await
            .map_err(api_err(format!("create node {}", n.name)))?;
    }
    for w in &t.workloads {
        // The pod asks Multus for its networks; kube-dvr's CNI plugin
        // attaches them (`super::runtime`) and records their Ports.
        let networks: Vec<&str> = w.networks.iter().map(|n| n.network.as_str()).collect();
        let obj: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": w.name, "namespace": w.namespace,
                "annotations": {cluster::NETWORKS_ANNOTATION: networks.join(",")}},
            "spec": {"nodeName": w.node, "containers": [{"name": "workload", "image": "lab"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
        // kube-apiserver's ServiceAccount admission refuses pods until the
        // namespace's `default` ServiceAccount exists (kube-controller-manager
        // creates it moments after the namespace).
        let start = Instant::now();
        loop {
            match pods.create(&PostParams::default(), &obj).await {
                Ok(_) => break,
                Err(kube::Error::Api(s))
                    if s.code == 403
                        && s.message.contains("service account")
                        && start.elapsed() < Duration::from_secs(30) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(api_err(format!("create pod {}", w.name))(e)),
            }
        }
    }
    Ok(())
}

/// The dynamic API of `kind` in `ns` (ignored for cluster-scoped kinds).
fn api_of(client: &Client, kind: Kind, ns: &str) -> Api<DynamicObject> {
    let ar = kind.api_resource();
    if kind.namespaced() {
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    }
}

/// Server-side apply of each object (status and server fields dropped).
async fn apply_all<K: DvrKind>(
    client: &Client,
    objs: &[K],
    applied: &mut Applied,
) -> Result<(), ClusterError> {
    let kind = K::KIND;
    for o in objs {
        let mut v = serde_json::to_value(o).map_err(|e| ClusterError::Other(e.to_string()))?;
        if let Some(m) = v.as_object_mut() {
            m.remove("status");
            if let Some(meta) = m.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                for f in [
                    "resourceVersion",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "managedFields",
                    "finalizers",
                ] {
                    meta.remove(f);
                }
            }
        }
        let name = o.name_any();
        let ns = o.meta().namespace.clone().unwrap_or_default();
        let api = api_of(client, kind, &ns);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &pp, &Patch::Apply(&v))
            .await
            .map_err(api_err(format!("apply {kind} {ns}/{name}")))?;
        applied.insert((kind.as_str(), ns, name));
    }
    Ok(())
}

async fn delete(client: &Client, kind: Kind, ns: &str, name: &str) -> Result<(), ClusterError> {
    let r = api_of(client, kind, ns)
        .delete(name, &DeleteParams::default())
        .await
        .map(|_| ());
    match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err(format!("delete {kind} {ns}/{name}"))(e)),
    }
}

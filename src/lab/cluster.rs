//! The lab's cluster: an API server (the in-memory stand-in, or a real
//! kube-apiserver with etcd, see [`super::apiserver`]), the real controller
//! and one real agent per simulated node, each a `kube-dvr` process of its
//! own ([`super::procs`]), on the same code paths as a cluster. The lab
//! plays kubelet and Multus: it registers Nodes (Ready, InternalIP = VTEP)
//! and Pods (with `k8s.v1.cni.cncf.io/network-status`), and applies user
//! manifests through the API like `kubectl apply`.
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::infra::LabPaths;
use super::manifests::Manifests;
use super::procs::{self, Component, Record};
use super::topology::Topology;
use crate::agent::AgentOptions;
use crate::api::kinds::for_each_kind;
use crate::api::kubevirt;
use crate::api::nad::{self, NetworkAttachmentDefinition};
use crate::api::{self, DvrKind, Kind, PerKind, Port};
use crate::cluster;
use crate::controller::{self, desired::Snapshot};
use crate::dataplane::engine::EngineConfig;
use crate::plan::view::ObjectKey;

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
    /// The API server stopped serving (the stand-in keeps its objects, as
    /// etcd would, and can serve them again: [`LabCluster::start_api`]).
    api_stopped: bool,
    /// Admin: what the lab itself (kubelet's, Multus' and the user's part)
    /// uses.
    pub client: Client,
    /// The admin kubeconfig (`kubectl`).
    pub kubeconfig: PathBuf,
    paths: LabPaths,
    /// The `kube-dvr` binary the components run.
    exe: PathBuf,
    /// The controller's and each agent's kubeconfig: the admin one on the
    /// stand-in, the chart's identities on kube-apiserver (see
    /// [`super::identities`]).
    controller_kubeconfig: PathBuf,
    agent_kubeconfigs: BTreeMap<String, PathBuf>,
    agent_opts: BTreeMap<String, AgentOptions>,
    /// Where each component serves its metrics (kept across restarts).
    metrics: BTreeMap<Component, SocketAddr>,
    /// The component processes this lab started (others, started by
    /// `kube-dvr lab start`, are known by their records only).
    children: BTreeMap<Component, Child>,
    spawner: procs::Spawner,
    applied: Applied,
}

impl LabCluster {
    /// Start the stand-in, register CRDs, namespaces, Nodes and Pods, start
    /// the controller and every node's agent (each its own process).
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
        let exe = procs::exe().map_err(ClusterError::Other)?;
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
            api_stopped: false,
            client,
            controller_kubeconfig: kubeconfig.clone(),
            agent_kubeconfigs: BTreeMap::new(),
            kubeconfig,
            paths: paths.clone(),
            exe,
            agent_opts: BTreeMap::new(),
            metrics: BTreeMap::new(),
            children: BTreeMap::new(),
            spawner: procs::Spawner::new(),
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
            let dir = paths.root.join("kubeconfigs");
            std::fs::create_dir_all(&dir)
                .map_err(|e| ClusterError::Other(format!("{}: {e}", dir.display())))?;
            c.controller_kubeconfig = dir.join("controller");
            server.write_kubeconfig(&c.controller_kubeconfig, &ids.controller)?;
            for (node, token) in &ids.agents {
                let path = dir.join(format!("agent-{node}"));
                server.write_kubeconfig(&path, token)?;
                c.agent_kubeconfigs.insert(node.clone(), path);
            }
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
        // Agents first: the controller's first plan then sees every node's
        // heartbeat (SNAT gateway candidates are healthy nodes), as when
        // all started together in one process.
        for n in &topology.nodes {
            c.start_agent(&n.name);
        }
        let nodes: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();
        c.rt.block_on(wait_heartbeats(&c.client, &nodes, Duration::from_secs(20)))?;
        c.start_controller();
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

    /// The metrics address of `c`, the same across restarts.
    fn metrics_addr(&mut self, c: &Component) -> SocketAddr {
        if let Some(a) = self.metrics.get(c) {
            return *a;
        }
        let a = procs::free_addr().unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        self.metrics.insert(c.clone(), a);
        a
    }

    /// The command line (and environment) of a component.
    fn record(&mut self, c: &Component) -> Option<Record> {
        let metrics = self.metrics_addr(c);
        let exe = procs::arg(&self.exe);
        let (argv, kubeconfig) = match c {
            Component::Api => return None,
            Component::Controller => (
                vec![
                    exe,
                    "controller".into(),
                    format!("--metrics-addr={metrics}"),
                    format!("--leader-election-namespace={LAB_NAMESPACE}"),
                    "--identity=lab-controller".into(),
                ],
                self.controller_kubeconfig.clone(),
            ),
            Component::Agent(node) => {
                let o = self.agent_opts.get(node)?;
                let ms = |d: Duration| match d.as_millis() {
                    m if m % 1000 == 0 => format!("{}s", m / 1000),
                    m => format!("{m}ms"),
                };
                let mut argv = vec![
                    exe,
                    "agent".into(),
                    format!("--node={}", o.node),
                    format!("--namespace={}", o.namespace),
                    format!("--metrics-addr={metrics}"),
                    format!("--root-netns={}", procs::arg(&o.engine.root_netns)),
                    format!("--netns-dir={}", procs::arg(&o.engine.netns_dir)),
                    format!(
                        "--cni-socket={}",
                        o.cni_socket.as_deref().map(procs::arg).unwrap_or_default()
                    ),
                    format!("--probe-port={}", o.probe_port),
                    format!("--resync={}", ms(o.resync)),
                    format!("--orphan-grace={}", ms(o.orphan_grace)),
                    format!("--debounce={}", ms(o.debounce)),
                    format!("--heartbeat={}", ms(o.heartbeat)),
                    format!("--hold-back={}", ms(o.hold_back)),
                    format!("--pass-timeout={}", ms(o.pass_timeout)),
                ];
                if let Some(v) = o.vtep {
                    argv.push(format!("--vtep={v}"));
                }
                let kc = (self.agent_kubeconfigs.get(node))
                    .unwrap_or(&self.kubeconfig)
                    .clone();
                (argv, kc)
            }
        };
        Some(Record {
            pid: 0,
            argv,
            env: vec![("KUBECONFIG".into(), procs::arg(&kubeconfig))],
            metrics,
        })
    }

    /// Start component `c` as a process of its own (nothing when it runs).
    pub fn start_component(&mut self, c: &Component) -> Result<(), ClusterError> {
        if c == &Component::Api {
            return self.start_api();
        }
        if procs::read(&self.paths, c).is_ok_and(|r| procs::alive(r.pid)) {
            return Ok(());
        }
        let mut r = self
            .record(c)
            .ok_or_else(|| ClusterError::Other(format!("no component {c} in this lab")))?;
        let child = self
            .spawner
            .spawn(&self.paths, c, &mut r)
            .map_err(ClusterError::Other)?;
        self.children.insert(c.clone(), child);
        Ok(())
    }

    /// Stop `c`: SIGTERM (the API: shut down), and wait until it is gone.
    pub fn stop_component(&mut self, c: &Component) {
        self.end(c, true)
    }

    /// Kill `c`: SIGKILL, and wait until it is gone.
    pub fn kill_component(&mut self, c: &Component) {
        self.end(c, false)
    }

    fn end(&mut self, c: &Component, graceful: bool) {
        if c == &Component::Api {
            self.stop_api();
            return;
        }
        let mut child = self.children.remove(c);
        let pid = procs::read(&self.paths, c)
            .map(|r| r.pid)
            .ok()
            .or(child.as_ref().map(|ch| ch.id()));
        if let Some(pid) = pid {
            procs::end(pid, child.as_mut(), graceful);
        }
        // Ours, but replaced since (by `lab start`): reap it.
        if let Some(mut ch) = child.filter(|ch| Some(ch.id()) != pid) {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// Reap component processes of ours that ended (killed by `lab kill`,
    /// say).
    pub fn reap(&mut self) {
        self.children
            .retain(|_, ch| matches!(ch.try_wait(), Ok(None)));
    }

    pub fn start_controller(&mut self) {
        if let Err(e) = self.start_component(&Component::Controller) {
            tracing::error!(error = %e, "starting the lab's controller");
        }
    }

    pub fn stop_controller(&mut self) {
        self.stop_component(&Component::Controller)
    }

    /// The options `node`'s agent starts with (the next
    /// [`LabCluster::start_agent`] takes changes).
    pub fn agent_options_mut(&mut self, node: &str) -> Option<&mut AgentOptions> {
        self.agent_opts.get_mut(node)
    }

    pub fn start_agent(&mut self, node: &str) {
        if let Err(e) = self.start_component(&Component::Agent(node.into())) {
            tracing::error!(node, error = %e, "starting the lab's agent");
        }
    }

    /// Stop `node`'s agent gracefully (SIGTERM).
    pub fn stop_agent(&mut self, node: &str) {
        self.stop_component(&Component::Agent(node.into()))
    }

    /// Kill `node`'s agent (SIGKILL): its kernel state stays as it was.
    pub fn kill_agent(&mut self, node: &str) {
        self.kill_component(&Component::Agent(node.into()))
    }

    /// Stop the API server. The stand-in stops serving but keeps its
    /// objects (as a kube-apiserver whose etcd keeps the data), so
    /// [`LabCluster::start_api`] can bring it back; a real kube-apiserver
    /// is stopped with its etcd and its directory removed. Components keep
    /// running on what they cached.
    pub fn stop_api(&mut self) {
        if self.api_stopped {
            return;
        }
        self.api_stopped = true;
        match &mut self.server {
            Some(Server::StandIn(s)) => self.rt.block_on(s.stop_serving()),
            Some(Server::Real(_)) => drop(self.server.take()),
            None => {}
        }
    }

    /// Serve the stand-in's objects again after [`LabCluster::stop_api`], on
    /// the same address: the components' clients reconnect and resume their
    /// watches. A real kube-apiserver's state went with it: an error.
    pub fn start_api(&mut self) -> Result<(), ClusterError> {
        if !self.api_stopped {
            return Ok(());
        }
        match &mut self.server {
            Some(Server::StandIn(s)) => {
                self.rt
                    .block_on(s.serve_again())
                    .map_err(|e| ClusterError::Other(format!("serving the stand-in again: {e}")))?;
                self.api_stopped = false;
                Ok(())
            }
            _ => Err(ClusterError::Other(
                "kube-apiserver cannot be started again: it was stopped with its etcd".into(),
            )),
        }
    }

    /// The API server's port while it serves.
    pub fn api_port(&self) -> Option<u16> {
        if self.api_stopped {
            return None;
        }
        let url = match self.server.as_ref()? {
            Server::StandIn(s) => s.url(),
            Server::Real(s) => s.url.clone(),
        };
        url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
    }

    fn telemetry(&self, c: &Component) -> Option<procs::Telemetry> {
        let addr = procs::read(&self.paths, c)
            .map(|r| r.metrics)
            .ok()
            .or_else(|| self.metrics.get(c).copied())?;
        Some(procs::Telemetry { addr })
    }

    /// An agent's metrics (kernel writes and the like), read from its
    /// process.
    pub fn agent_telemetry(&self, node: &str) -> Option<procs::Telemetry> {
        self.telemetry(&Component::Agent(node.into()))
    }

    pub fn controller_telemetry(&self) -> Option<procs::Telemetry> {
        self.telemetry(&Component::Controller)
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

    /// Stop every component process (also those `lab start` started) and
    /// the API server. Kernel state stays (as on an agent restart); the
    /// lab's teardown removes it.
    pub fn shutdown(mut self) {
        let mut comps: Vec<Component> = procs::all(&self.paths)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        comps.extend(self.children.keys().cloned());
        comps.sort();
        comps.dedup();
        for c in comps {
            self.stop_component(&c);
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

/// Wait until every node's agent has its heartbeat Lease.
async fn wait_heartbeats(
    client: &Client,
    nodes: &[String],
    timeout: Duration,
) -> Result<(), ClusterError> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LAB_NAMESPACE);
    let start = Instant::now();
    loop {
        let have: BTreeSet<String> = leases
            .list(&ListParams::default())
            .await
            .map_err(api_err("list Leases"))?
            .items
            .into_iter()
            .map(|l| l.name_any())
            .collect();
        let missing: Vec<&String> = nodes
            .iter()
            .filter(|n| !have.contains(&format!("{}{n}", cluster::AGENT_LEASE_PREFIX)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(ClusterError::NotConverged {
                secs: timeout.as_secs(),
                detail: format!("no heartbeat from the agents of {missing:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What is not converged yet (empty = converged).
pub fn convergence_gaps(s: &Snapshot) -> Vec<String> {
    let mut gaps = Vec::new();
    type Status<'a> = Option<(Option<i64>, &'a [api::Condition])>;
    fn check<K: Resource + ResourceExt>(
        gaps: &mut Vec<String>,
        objs: &[std::sync::Arc<K>],
        status: impl Fn(&K) -> Status<'_>,
    ) {
        for o in objs.iter().map(AsRef::as_ref) {
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
    let mut objects: PerKind<api::Shared> = PerKind::default();
    for_each_kind!(|K| {
        *K::of_mut(&mut objects) = (list::<K>(client).await?)
            .into_iter()
            .map(std::sync::Arc::new)
            .collect();
    });
    // Pods' labels only where a LoadBalancer selects pods (as the
    // controller): listing every pod on every poll would load the API.
    let selecting: BTreeSet<String> = (objects.load_balancers.iter())
        .filter(|lb| lb.spec.backends.selector.is_some())
        .filter_map(|lb| lb.metadata.namespace.clone())
        .collect();
    let mut pod_labels = BTreeMap::new();
    for ns in &selecting {
        let pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(api_err(format!("list pods in {ns}")))?;
        for p in pods.items {
            let key = ObjectKey::new(ns.clone(), p.metadata.name.unwrap_or_default());
            pod_labels.insert(key, p.metadata.labels.unwrap_or_default());
        }
    }
    Ok(Snapshot {
        objects,
        pods: cluster::port_infos(&ports).into(),
        nad_conflicts: Default::default(),
        nodes: list::<Node>(client).await?,
        // The lab's agents all heartbeat; take them as alive.
        agents: BTreeMap::new(),
        leases_synced: false,
        now: Timestamp::now(),
        cursors: None,
        undecodable: Vec::new(),
        pod_labels: Some(pod_labels),
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
            "metadata": {"name": w.name, "namespace": w.namespace, "labels": w.labels,
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

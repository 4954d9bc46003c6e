//! The node agent (`kube-dvr agent --node NAME`): one per node, programs the
//! node's kernel to its plan and reports.
//!
//! # Model
//! The agent watches the four kube-dvr kinds, Pods and Nodes (reflector
//! caches) and the uninstall ConfigMap in its namespace. On any change,
//! debounced (bursts coalesce into one pass), and on a periodic resync it
//! runs the same pure pipeline as the controller: the caches as a
//! [`ClusterInput`](crate::plan::resolve::ClusterInput) ([`input`]) →
//! [`resolve`] → [`plan_node`] for its node → [`Engine::reconcile`] (on a
//! blocking thread) → report.
//!
//! The kernel pass runs when the plan's digest differs from the last one
//! programmed without error, when the last pass failed (retried with
//! backoff), and on the periodic resync (level-triggered repair of drift
//! behind the agent's back). A user change is planned as soon as its event
//! arrives: the resync is just another pass, never a queue.
//!
//! # What it writes to the API ([`report`])
//! - Node annotations ([`cluster`]): `kubedvr.io/vtep` and
//!   `kubedvr.io/dvr-mac` at start; after each pass `kubedvr.io/programmed`
//!   (the plan's digest, only when the pass had no errors: the controller
//!   compares it with its own digest of the node's plan) and
//!   `kubedvr.io/agent-errors` (absent when none). Only changes are written.
//! - A heartbeat Lease `kube-dvr-agent-<node>` in its namespace, renewed
//!   every 10 s; a renewal younger than that is kept across restarts.
//!
//! An idle agent, and a restarted one, make no kernel and no API writes.
//!
//! # Uninstall
//! While the ConfigMap [`cluster::UNINSTALL_CONFIGMAP`] exists in the
//! agent's namespace, the agent removes all its kernel state, annotates its
//! Node `kubedvr.io/cleaned=true` (removing `programmed`) and stops
//! reconciling for the life of the process. Nothing else ever removes kernel
//! state wholesale: a plain restart or upgrade adopts what is there.
//!
//! # Limits
//! The agent plans an object only as the controller last processed it
//! ([`input`]); across an agent restart it remembers no older version, so an
//! object edited but not yet processed at that moment is left out until the
//! controller has written its status.
pub mod cli;
pub mod input;
pub mod kernel;
pub mod report;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{DistributedRouter, ExternalNetwork, FloatingIP, SnatGateway};
use crate::cluster;
use crate::dataplane::engine::{Engine, EngineConfig};
use crate::plan::resolve::resolve;
use crate::plan::view::ClusterView;
use crate::plan::{names, plan_node};
use crate::telemetry::Telemetry;

pub use kernel::cleanup;

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// This node's name.
    pub node: String,
    /// Where the heartbeat Lease lives and the uninstall ConfigMap is looked
    /// for.
    pub namespace: String,
    /// The VTEP; default: the Node's InternalIP.
    pub vtep: Option<Ipv4Addr>,
    pub engine: EngineConfig,
    /// Period of the full resync (kernel pass even when nothing changed).
    pub resync: Duration,
    /// How long a change waits for more changes to coalesce with.
    pub debounce: Duration,
    /// Heartbeat Lease renewal period.
    pub heartbeat: Duration,
}

impl AgentOptions {
    /// Defaults for `node`: namespace `kube-dvr`, VTEP from the Node, the
    /// node's real namespaces, resync 60 s, debounce 50 ms, heartbeat 10 s.
    pub fn new(node: impl Into<String>) -> Self {
        AgentOptions {
            node: node.into(),
            namespace: "kube-dvr".into(),
            vtep: None,
            engine: EngineConfig::default(),
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(50),
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {object}: {source}")]
    Api {
        op: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("kernel: {source}")]
    Engine {
        #[source]
        source: crate::dataplane::engine::Error,
    },
    #[error("preparing namespace directory {dir}: {source}")]
    NetnsDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a watch ended before its first list")]
    WatchEnded,
    #[error("own Node is not in the watch cache")]
    NodeNotCached,
    #[error("cleanup: {failed} operations failed, first: {first}")]
    Cleanup { failed: usize, first: String },
    #[error("blocking task failed: {0}")]
    Task(String),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api { .. } => "api",
            Error::Engine { .. } => "engine",
            Error::NetnsDir { .. } => "netns_dir",
            Error::WatchEnded => "watch_ended",
            Error::NodeNotCached => "node_not_cached",
            Error::Cleanup { .. } => "cleanup",
            Error::Task(_) => "task",
        }
    }
}

const M_KERNEL_WRITES: &str = "kube_dvr_kernel_writes_total";
const M_KERNEL_WRITES_HELP: &str = "Kernel writes made by the agent, by kind.";
const M_DURATION: &str = "kube_dvr_reconcile_duration_seconds";
const M_DURATION_HELP: &str = "Duration of the agent's kernel passes (observe, diff, apply).";
const M_PROGRAMMED: &str = "kube_dvr_programmed_objects";
const M_PROGRAMMED_HELP: &str = "kube-dvr objects programmed on this node, by kind.";
const M_ERRORS: &str = "kube_dvr_reconcile_errors_total";
const M_ERRORS_HELP: &str = "Agent passes that ended with errors.";
const M_API_WRITES: &str = "kube_dvr_api_writes_total";
const M_API_WRITES_HELP: &str = "API writes made by the agent, by kind.";

/// The caches the agent plans from.
struct Caches {
    external_networks: Store<ExternalNetwork>,
    routers: Store<DistributedRouter>,
    floating_ips: Store<FloatingIP>,
    snat_gateways: Store<SnatGateway>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    uninstall: Store<ConfigMap>,
}

impl Caches {
    fn snapshot(&self) -> input::Snapshot {
        input::Snapshot {
            external_networks: self.external_networks.state(),
            routers: self.routers.state(),
            floating_ips: self.floating_ips.state(),
            snat_gateways: self.snat_gateways.state(),
            pods: self.pods.state(),
            nodes: self.nodes.state(),
        }
    }

    async fn wait_until_ready(&self) -> Result<(), Error> {
        let r = tokio::try_join!(
            self.external_networks.wait_until_ready(),
            self.routers.wait_until_ready(),
            self.floating_ips.wait_until_ready(),
            self.snat_gateways.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.uninstall.wait_until_ready(),
        );
        r.map(|_| ()).map_err(|_| Error::WatchEnded)
    }
}

/// Watch `api` into a cache; every event bumps `changed`.
fn reflect<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    cfg: watcher::Config,
    changed: &tokio::sync::watch::Sender<u64>,
    modify: fn(&mut K),
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, cfg)
        .default_backoff()
        .modify(modify)
        .reflect(writer);
    let changed = changed.clone();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.send_modify(|n| *n = n.wrapping_add(1)),
                Err(e) => tracing::warn!(kind = K::kind(&Default::default()).as_ref(), error = %e, "watch failed; retrying"),
            }
        }
    });
    reader
}

fn strip_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Run the agent until `shutdown` is cancelled. See the module docs.
pub async fn run(
    client: Client,
    opts: AgentOptions,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let dir = opts.engine.netns_dir.clone();
    tokio::task::spawn_blocking(move || kernel::prepare_netns_dir(&dir))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(|source| Error::NetnsDir {
            dir: opts.engine.netns_dir.display().to_string(),
            source,
        })?;

    let node_api: Api<Node> = Api::all(client.clone());
    let found = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = discover(&node_api, &opts) => Some(r?),
    };
    let Some((node, vtep)) = found else {
        return Ok(());
    };
    let mut agent = Agent {
        facts: report::Annotations::from([
            (cluster::VTEP_ANNOTATION, Some(vtep.to_string())),
            (
                cluster::DVR_MAC_ANNOTATION,
                Some(names::dvr_mac(vtep).to_string()),
            ),
        ]),
        reporter: report::NodeReporter::new(node_api.clone(), &opts.node),
        telemetry: telemetry.clone(),
        opts,
        vtep,
        input: input::InputState::default(),
        last_ok: None,
        failures: 0,
    };
    // Publish the node's facts first: other agents plan tunnels to them.
    if agent.reporter.report(&node, &agent.facts).await? {
        agent.api_write("Node");
    }
    let cfg = agent.opts.engine.clone();
    let mut engine = tokio::task::spawn_blocking(move || Engine::new(cfg))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(|source| Error::Engine { source })?;

    // Background: watches and the heartbeat. Dropping the set ends them.
    let mut tasks = JoinSet::new();
    let (changed, mut changes) = tokio::sync::watch::channel(0u64);
    let ns = agent.opts.namespace.clone();
    let all = watcher::Config::default();
    let caches = Caches {
        external_networks: reflect(
            &mut tasks,
            Api::all(client.clone()),
            all.clone(),
            &changed,
            strip_managed_fields,
        ),
        routers: reflect(
            &mut tasks,
            Api::all(client.clone()),
            all.clone(),
            &changed,
            strip_managed_fields,
        ),
        floating_ips: reflect(
            &mut tasks,
            Api::all(client.clone()),
            all.clone(),
            &changed,
            strip_managed_fields,
        ),
        snat_gateways: reflect(
            &mut tasks,
            Api::all(client.clone()),
            all.clone(),
            &changed,
            strip_managed_fields,
        ),
        pods: reflect(
            &mut tasks,
            Api::all(client.clone()),
            all.clone(),
            &changed,
            strip_managed_fields,
        ),
        nodes: reflect(
            &mut tasks,
            node_api.clone(),
            all,
            &changed,
            strip_managed_fields,
        ),
        uninstall: reflect(
            &mut tasks,
            Api::namespaced(client.clone(), &ns),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", cluster::UNINSTALL_CONFIGMAP)),
            &changed,
            strip_managed_fields,
        ),
    };
    let heartbeat = report::Heartbeat {
        api: Api::<Lease>::namespaced(client.clone(), &ns),
        name: format!("{}{}", cluster::AGENT_LEASE_PREFIX, agent.opts.node),
        holder: agent.opts.node.clone(),
        interval: agent.opts.heartbeat,
    };
    let hb_telemetry = telemetry.clone();
    tasks.spawn(async move {
        loop {
            let wait = match heartbeat.beat().await {
                Ok((wait, wrote)) => {
                    if wrote {
                        hb_telemetry.inc(M_API_WRITES, M_API_WRITES_HELP, &[("kind", "Lease")], 1);
                    }
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed; retrying");
                    Duration::from_secs(2)
                }
            };
            tokio::time::sleep(wait).await;
        }
    });

    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = caches.wait_until_ready() => r?,
    }
    tracing::info!(node = %agent.opts.node, %vtep, "caches synced; agent running");

    let mut next_resync = Instant::now() + agent.opts.resync;
    let mut retry_at: Option<Instant> = None;
    let mut first = true;
    loop {
        if !first {
            let deadline = retry_at.map_or(next_resync, |r| r.min(next_resync));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.changed() => tokio::time::sleep(agent.opts.debounce).await,
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        first = false;
        changes.borrow_and_update();
        let now = Instant::now();
        let mut force = retry_at.is_some_and(|r| now >= r);
        if now >= next_resync {
            force = true;
            next_resync = now + agent.opts.resync;
        }
        retry_at = None;

        if !caches.uninstall.is_empty() {
            let (e, res) = agent.uninstall(engine, &caches).await?;
            engine = e;
            match res {
                Ok(()) => {
                    telemetry.set_ready(true);
                    tracing::info!("uninstalled: kernel state removed; no more reconciling");
                    shutdown.cancelled().await;
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "uninstall cleanup failed; retrying");
                    agent.failures += 1;
                    retry_at = Some(Instant::now() + agent.backoff());
                    continue;
                }
            }
        }
        let (e, ok) = agent.pass(engine, &caches, force).await?;
        engine = e;
        telemetry.set_ready(true);
        if !ok {
            retry_at = Some(Instant::now() + agent.backoff());
        }
    }
    drop(tasks);
    Ok(())
}

/// The Node of this agent and its VTEP, waiting (and retrying) until the
/// Node exists and has an address.
async fn discover(api: &Api<Node>, opts: &AgentOptions) -> Result<(Node, Ipv4Addr), Error> {
    loop {
        match api.get_opt(&opts.node).await {
            Ok(Some(node)) => {
                if let Some(v) = opts.vtep.or_else(|| report::vtep_of(&node)) {
                    return Ok((node, v));
                }
                tracing::warn!(node = %opts.node, "node has no InternalIP and no --vtep given; waiting");
            }
            Ok(None) => tracing::warn!(node = %opts.node, "node not found; waiting"),
            Err(e) => {
                tracing::warn!(node = %opts.node, error = %e, "reading node failed; retrying")
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

struct Agent {
    opts: AgentOptions,
    vtep: Ipv4Addr,
    telemetry: Arc<Telemetry>,
    reporter: report::NodeReporter,
    /// VTEP and DVR MAC annotations.
    facts: report::Annotations,
    input: input::InputState,
    /// Digest of the last plan programmed without error.
    last_ok: Option<String>,
    /// Consecutive failed passes (retry backoff).
    failures: u32,
}

impl Agent {
    fn api_write(&self, kind: &str) {
        self.telemetry
            .inc(M_API_WRITES, M_API_WRITES_HELP, &[("kind", kind)], 1);
    }

    fn backoff(&self) -> Duration {
        Duration::from_millis(500u64 << self.failures.min(6)).min(Duration::from_secs(30))
    }

    fn own_node(&self, caches: &Caches) -> Option<Arc<Node>> {
        caches.nodes.get(&ObjectRef::new(&self.opts.node))
    }

    /// One pass: plan, program (when due), report. Returns whether it
    /// succeeded completely.
    async fn pass(
        &mut self,
        engine: Engine,
        caches: &Caches,
        force: bool,
    ) -> Result<(Engine, bool), Error> {
        let Some(node) = self.own_node(caches) else {
            // Planning without our own Node would plan everything away.
            tracing::warn!(node = %self.opts.node, "own node not in cache; skipping pass");
            return Ok((engine, false));
        };
        let now =
            Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
        let input = self
            .input
            .cluster_input(&caches.snapshot(), &self.opts.node, self.vtep, now);
        let resolution = resolve(&input);
        let plan = plan_node(&resolution.view, &self.opts.node);
        let digest = cluster::plan_digest(&plan);

        let mut engine = engine;
        let mut errors = Vec::new();
        if force || self.last_ok.as_deref() != Some(digest.as_str()) {
            let t0 = std::time::Instant::now();
            let (e, res) = kernel::reconcile(engine, plan).await?;
            engine = e;
            self.telemetry
                .observe(M_DURATION, M_DURATION_HELP, &[], t0.elapsed().as_secs_f64());
            match res {
                Ok(report) => {
                    for (kind, n) in report.writes.by_kind() {
                        self.telemetry.inc(
                            M_KERNEL_WRITES,
                            M_KERNEL_WRITES_HELP,
                            &[("kind", kind)],
                            *n,
                        );
                    }
                    if report.writes.total() > 0 {
                        tracing::info!(writes = report.writes.total(), %digest, "kernel programmed");
                    }
                    errors.extend(
                        report
                            .errors
                            .iter()
                            .map(|e| format!("{}: {}", e.op, e.error)),
                    );
                }
                Err(e) => errors.push(e.to_string()),
            }
            if errors.is_empty() {
                self.last_ok = Some(digest.clone());
                self.failures = 0;
                self.set_programmed(&resolution.view);
            } else {
                self.last_ok = None;
                self.failures += 1;
                self.telemetry.inc(M_ERRORS, M_ERRORS_HELP, &[], 1);
                tracing::warn!(errors = errors.len(), first = %errors[0], "kernel pass had errors");
            }
        }

        let mut want = self.facts.clone();
        want.insert(cluster::CLEANED_ANNOTATION, None);
        want.insert(
            cluster::AGENT_ERRORS_ANNOTATION,
            report::errors_text(&errors),
        );
        if errors.is_empty() {
            want.insert(cluster::PROGRAMMED_ANNOTATION, Some(digest));
        }
        match self.reporter.report(&node, &want).await {
            Ok(wrote) => {
                if wrote {
                    self.api_write("Node");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reporting failed; retrying");
                return Ok((engine, false));
            }
        }
        Ok((engine, errors.is_empty()))
    }

    /// `kube_dvr_programmed_objects`: what this node serves of each kind.
    fn set_programmed(&self, view: &ClusterView) {
        let node = self.opts.node.as_str();
        let routers = view
            .routers
            .iter()
            .filter(|r| r.endpoints.iter().any(|e| e.node == node))
            .count();
        let fips = view.floating_ips.iter().filter(|f| f.node == node).count();
        let snats = view
            .snat_gateways
            .iter()
            .filter(|s| s.node.as_deref() == Some(node))
            .count();
        for (kind, n) in [
            ("DistributedRouter", routers),
            ("FloatingIP", fips),
            ("SnatGateway", snats),
        ] {
            self.telemetry
                .set(M_PROGRAMMED, M_PROGRAMMED_HELP, &[("kind", kind)], n as f64);
        }
    }

    /// Remove all kernel state and say so on the Node. The inner result
    /// says whether that is done (else it is retried); the outer one is
    /// fatal.
    async fn uninstall(
        &mut self,
        engine: Engine,
        caches: &Caches,
    ) -> Result<(Engine, Result<(), Error>), Error> {
        let (engine, res) = kernel::with_engine(engine, |e| e.cleanup()).await?;
        let report = match res {
            Ok(r) => r,
            Err(source) => return Ok((engine, Err(Error::Engine { source }))),
        };
        for (kind, n) in report.writes.by_kind() {
            self.telemetry
                .inc(M_KERNEL_WRITES, M_KERNEL_WRITES_HELP, &[("kind", kind)], *n);
        }
        if let Some(first) = report.errors.first() {
            let err = Error::Cleanup {
                failed: report.errors.len(),
                first: format!("{}: {}", first.op, first.error),
            };
            return Ok((engine, Err(err)));
        }
        self.last_ok = None;
        self.set_programmed(&ClusterView::default());
        let Some(node) = self.own_node(caches) else {
            return Ok((engine, Err(Error::NodeNotCached)));
        };
        let want = report::Annotations::from([
            (cluster::CLEANED_ANNOTATION, Some("true".to_string())),
            (cluster::PROGRAMMED_ANNOTATION, None),
            (cluster::AGENT_ERRORS_ANNOTATION, None),
        ]);
        match self.reporter.report(&node, &want).await {
            Ok(wrote) => {
                if wrote {
                    self.api_write("Node");
                }
                Ok((engine, Ok(())))
            }
            Err(e) => Ok((engine, Err(e))),
        }
    }
}

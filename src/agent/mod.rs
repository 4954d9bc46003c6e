//! The node agent (`kube-dvr agent --node NAME`): one per node, programs the
//! node's kernel to its plan and reports.
//!
//! # Model
//! The agent watches the four kube-dvr kinds, kube-dvr's Port records and Nodes (reflector
//! caches that skip, log and count objects that do not decode,
//! [`cluster::watch`]) and the uninstall ConfigMap in its namespace. On any change
//! (at once when idle; after a pass it waits out a quiet window of a few
//! times that pass's duration, at most [`AgentOptions::debounce`], so
//! bursts coalesce under load, see [`crate::pacing`]), and on a periodic resync it
//! runs the same pure pipeline as the controller: the caches as a
//! [`ClusterInput`](crate::plan::resolve::ClusterInput) ([`input`]) →
//! [`resolve`](crate::plan::resolve::resolve) →
//! [`plan_node`](crate::plan::plan_node) for its node → the engine (on a
//! blocking thread, [`kernel`]) → report.
//!
//! The kernel is touched when the plan's digest differs from the last one
//! programmed without error — through the change path
//! ([`Engine::reconcile_changes`]: only what changed, no observation) — and
//! by a full pass ([`Engine::reconcile`]: observe, diff, apply, sweep) at
//! start, after a failed pass (retried with backoff) and on the periodic
//! resync (level-triggered repair of drift behind the agent's back). A user
//! change is planned as soon as its event arrives: the resync is just
//! another pass, never a queue.
//!
//! # What it writes to the API ([`report`])
//! - Node annotations ([`cluster`]): `kubedvr.io/vtep` and
//!   `kubedvr.io/dvr-mac` at start; after each pass `kubedvr.io/programmed`
//!   (the digest of the plan it applied: the controller compares it with its
//!   own digest of the node's plan) and `kubedvr.io/agent-errors` (what
//!   failed, each error naming its object, see [`cluster::errors`]; absent
//!   when none). Only changes are written.
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
//! # Objects the controller has not processed
//! The agent plans an object only as the controller last processed it
//! ([`input`]): an edit takes effect once the controller has written its
//! status. An agent that starts while an edited object awaits processing
//! never saw its previous version; for [`AgentOptions::hold_back`] (10 s),
//! counted from the moment every watch cache has synced (a slow API server
//! must not eat the wait), it makes no pass at all, waiting for the
//! controller. After that it plans without the object but never removes its
//! state, nor that of objects depending on it ([`keep`]): what exists in
//! the API but is not resolved is kept until it is. When unsure, keep.
pub mod cli;
pub mod cni;
pub mod gateway;
pub mod health;
pub mod heap;
pub mod input;
pub mod keep;
pub mod kernel;
mod pass;
pub mod port_cache;
pub mod ports;
pub mod probe;
pub mod report;
mod watch;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster;
use crate::dataplane::engine::{Engine, EngineConfig};
use crate::plan::names;
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
    /// The longest spacing between the end of a pass and the start of the
    /// next one that a change triggers: an idle agent does not wait; after
    /// a pass a change waits [`crate::pacing::window`] (a few times that
    /// pass's duration, at most this), so changes coalesce under load.
    pub debounce: Duration,
    /// Heartbeat Lease renewal period.
    pub heartbeat: Duration,
    /// How long after the caches synced the agent waits for the controller
    /// to process objects edited while it was away, before programming
    /// anything else (see the module docs).
    pub hold_back: Duration,
    /// `/healthz` turns unhealthy when a pass runs, or a change waits for
    /// one, longer than this (a stuck kernel or API call): kubelet restarts
    /// the agent.
    pub pass_timeout: Duration,
    /// Where the CNI plugin's socket is served ([`cni`]); `None`: not served.
    pub cni_socket: Option<std::path::PathBuf>,
    /// A Port of this node whose interface (the plugin's host veth) has
    /// been gone this long is deleted ([`ports::PortRecords::collect_orphans`];
    /// only while the CNI socket is served).
    pub orphan_grace: Duration,
    /// UDP port of the gateway probes on the VTEP ([`probe`]); 0 turns
    /// probing off (every node then follows the plan).
    pub probe_port: u16,
}

impl AgentOptions {
    /// Defaults for `node`: namespace `kube-dvr`, VTEP from the Node, the
    /// node's real namespaces, resync 60 s, debounce 50 ms, heartbeat 10 s,
    /// hold-back 10 s, pass timeout 120 s.
    pub fn new(node: impl Into<String>) -> Self {
        AgentOptions {
            node: node.into(),
            namespace: "kube-dvr".into(),
            vtep: None,
            engine: EngineConfig::default(),
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(50),
            heartbeat: Duration::from_secs(10),
            hold_back: Duration::from_secs(10),
            pass_timeout: Duration::from_secs(120),
            cni_socket: None,
            orphan_grace: ports::ORPHAN_GRACE,
            probe_port: probe::DEFAULT_PORT,
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
    #[error("a Node report is still in flight (the API server does not answer)")]
    ReportInFlight,
    #[error("cleanup: {failed} operations failed, first: {first}")]
    Cleanup { failed: usize, first: String },
    #[error("binding the CNI socket {path}: {source}")]
    CniSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
            Error::ReportInFlight => "report_in_flight",
            Error::Cleanup { .. } => "cleanup",
            Error::CniSocket { .. } => "cni_socket",
            Error::Task(_) => "task",
        }
    }
}

/// Run the agent until `shutdown` is cancelled. See the module docs.
pub async fn run(
    client: Client,
    opts: AgentOptions,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    telemetry.watch_progress(opts.pass_timeout);
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
    let (published, view) = tokio::sync::watch::channel(None);
    // What the report task writes ([`report::write_reports`]).
    let (wanted, wanted_rx) = tokio::sync::watch::channel(None);
    let mut agent = pass::Agent {
        published,
        facts: report::Annotations::from([
            (cluster::VTEP_ANNOTATION, Some(vtep.to_string())),
            (
                cluster::DVR_MAC_ANNOTATION,
                Some(names::dvr_mac(vtep).to_string()),
            ),
        ]),
        reporter: Arc::new(tokio::sync::Mutex::new(report::NodeReporter::new(
            node_api.clone(),
            &opts.node,
        ))),
        wanted,
        telemetry: telemetry.clone(),
        opts,
        vtep,
        input: input::InputState::default(),
        last_ok: None,
        failures: 0,
        // Set once the caches synced.
        hold_until: Instant::now(),
        listed_once: false,
        kept: Default::default(),
        probes: probe::Probes::new().0,
        serving: Default::default(),
        overrides: Default::default(),
        health: health::Checks::new().0,
        down: Default::default(),
    };
    let (checks, mut health_changes) = health::Checks::new();
    agent.health = checks.clone();
    let (probes, mut probe_changes) = probe::Probes::new();
    agent.probes = probes.clone();
    // Publish the node's facts first: other agents plan tunnels to them.
    // (Every pass re-asserts them, so a failure here is retried there.)
    let reported = agent
        .reporter
        .lock()
        .await
        .report(&node, &agent.facts)
        .await;
    match reported {
        Ok(true) => agent.api_write("Node"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "publishing node facts failed; retrying"),
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
    let undecodable = cluster::watch::Undecodable::new(telemetry.clone());
    let caches = watch::Caches::start(
        &client,
        &ns,
        &agent.opts.node,
        &mut tasks,
        &changed,
        undecodable,
    );
    if let Some(path) = &agent.opts.cni_socket {
        let records = Arc::new(ports::PortRecords::new(
            client.clone(),
            &agent.opts.node,
            caches.ports.clone(),
            caches.objects.routers.clone(),
        ));
        cni::start(path, view, records.clone(), &telemetry, &mut tasks)?;
        let root = agent.opts.engine.root_netns.clone();
        tasks.spawn(ports::collect_orphans_every(
            records,
            root,
            agent.opts.orphan_grace,
        ));
    }
    let heartbeat = report::Heartbeat {
        api: Api::<Lease>::namespaced(client.clone(), &ns),
        name: format!("{}{}", cluster::AGENT_LEASE_PREFIX, agent.opts.node),
        holder: agent.opts.node.clone(),
        interval: agent.opts.heartbeat,
    };
    if agent.opts.probe_port != 0 {
        // Independent of the API client and of the pass loop.
        let (ns, port) = (agent.opts.engine.root_netns.clone(), agent.opts.probe_port);
        tasks.spawn(async move {
            if let Err(e) = probes.run(&ns, vtep, port).await {
                tracing::error!(error = %e, %vtep, port, "gateway probes cannot run; every node's view follows the plan here");
            }
        });
    }
    tasks.spawn(checks.run());
    let t = telemetry.clone();
    tasks.spawn(report::write_reports(
        agent.reporter.clone(),
        wanted_rx,
        move || pass::count_api_write(&t, "Node"),
    ));
    let hb_telemetry = telemetry.clone();
    tasks.spawn(async move {
        loop {
            let wait = match heartbeat.beat().await {
                Ok((wait, wrote)) => {
                    if wrote {
                        pass::count_api_write(&hb_telemetry, "Lease");
                    }
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed; retrying");
                    crate::backoff::jitter(Duration::from_secs(2))
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
    // The initial lists' buffers are free now.
    heap::release_free();
    // The wait for the controller starts now: before the caches synced the
    // agent could not tell what it is waiting for.
    agent.hold_until = Instant::now() + agent.opts.hold_back;

    let mut next_resync = Instant::now() + agent.opts.resync;
    let mut retry_at: Option<Instant> = None;
    let mut first = true;
    let mut last_trim: Option<Instant> = None;
    // A pass's freed memory not returned yet: returned once the loop has
    // been idle for heap::TRIM_IDLE (or by the next pass past TRIM_EVERY).
    let mut untrimmed = false;
    let mut pass_start = Instant::now();
    loop {
        if !first {
            let deadline = retry_at.map_or(next_resync, |r| r.min(next_resync));
            let idle_since = Instant::now();
            // Coalesce only under load (see `pacing`).
            let quiet = crate::pacing::window(idle_since - pass_start, agent.opts.debounce);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.changed() => {
                    telemetry.work_pending();
                    tokio::time::sleep_until(idle_since + quiet).await
                }
                // A probe session changed: decide now, no debounce.
                _ = probe_changes.changed() => {}
                // A load-balancer backend went out or came back.
                _ = health_changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = tokio::time::sleep(heap::TRIM_IDLE), if untrimmed => {
                    untrimmed = false;
                    last_trim = Some(Instant::now());
                    tokio::task::spawn_blocking(heap::release_free);
                    continue;
                }
            }
        }
        first = false;
        changes.borrow_and_update();
        probe_changes.borrow_and_update();
        health_changes.borrow_and_update();
        let now = Instant::now();
        let mut force = retry_at.is_some_and(|r| now >= r);
        if now >= next_resync {
            force = true;
            next_resync = now + agent.opts.resync;
        }
        retry_at = None;

        pass_start = Instant::now();
        telemetry.pass_started();
        if !caches.uninstall.is_empty() {
            let (e, res) = agent.uninstall(engine, &caches).await?;
            telemetry.pass_finished();
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
        telemetry.pass_finished();
        // The pass's input and the previous view are free now: returned
        // to the system off the loop (the next pass, maybe a failover,
        // does not wait), at most every TRIM_EVERY.
        if last_trim.is_none_or(|t| t.elapsed() >= heap::TRIM_EVERY) {
            last_trim = Some(Instant::now());
            untrimmed = false;
            tokio::task::spawn_blocking(heap::release_free);
        } else {
            untrimmed = true;
        }
        engine = e;
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
        tokio::time::sleep(crate::backoff::jitter(Duration::from_secs(2))).await;
    }
}

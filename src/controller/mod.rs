//! The controller (`kube-dvr controller`): validates, allocates, schedules
//! and reports, for the whole cluster, from one leader-elected replica.
//!
//! Model:
//! - Reflector caches of the registry's kinds, Pods, Ports, Nodes and the
//!   Leases of the release namespace (agent heartbeats). A change wakes the
//!   pass loop, except the echoes of the controller's own writes and
//!   heartbeat renewals ([`wake`]). An idle loop runs the pass at once; after a pass a change waits
//!   out a quiet window of a few times that pass's duration, at most
//!   [`ControllerOptions::debounce`] ([`crate::pacing`]), so changes
//!   coalesce only under load. A pass also runs every [`ControllerOptions::resync`]
//!   (heartbeats go stale with time, not with events).
//! - The caches decode one object at a time ([`cluster::watch`]): an object
//!   that does not decode is skipped, never stalls the others, and is
//!   reported by the leader as a Warning Event `Undecodable`, once per
//!   resourceVersion; what its status holds stays allocated.
//! - A pass is a pure function ([`desired::compute`]: snapshot → resolve →
//!   plan every node → compare) followed by the writes it asks for: status
//!   merge patches (only where something changed), finalizers, Events.
//! - Only the leader ([`leader`]) writes, and it checks before every write:
//!   a replica that lost its Lease stops mid-pass. A standby keeps its caches
//!   warm and takes over with one pass.
//! - A write the cache has not reflected yet is not repeated: the executor
//!   remembers what it wrote at which resourceVersion.
//! - `/readyz`: the leader after its caches synced and its first pass was
//!   written; a standby once its caches synced.
pub mod attach;
pub mod cli;
pub mod cursors;
pub mod desired;
pub mod leader;
pub mod liveness;
pub mod wake;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::kinds::for_each_kind;
use crate::api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use crate::api::nad::NetworkAttachmentDefinition;
use crate::api::Port;
use crate::api::{Build, DvrKind, Kind, PerKind};
use crate::cluster;
use crate::cluster::watch::{cache, Stores, Touched, Undecodable, UndecodableObject};
use crate::plan::resolve::Held;
use crate::plan::view::ObjectKey;
use crate::telemetry::Telemetry;
use desired::{Actions, FinalizerWrite, Snapshot, StatusWrite, Target};
use leader::{LeaderElector, LeaseConfig};
use wake::{tagged, Source, Wakes};

/// The Events reporter name.
pub const REPORTER: &str = "kube-dvr-controller";
/// Reason of the Warning Event on an object that does not decode
/// ([`cluster::watch`]).
pub const REASON_UNDECODABLE: &str = "Undecodable";
/// Field manager of the controller's patches.
pub const FIELD_MANAGER: &str = "kube-dvr-controller";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// The release namespace: leader-election Lease, agent heartbeat Leases.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// Leader election timings (`leaseDurationSeconds` 15, renew every 5 s).
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    pub retry_interval: Duration,
    /// The longest spacing between the end of a pass and the start of the
    /// next one that a change triggers: an idle loop does not wait; after a
    /// pass a change waits [`crate::pacing::window`] (a few times that
    /// pass's duration, at most this), so changes coalesce under load.
    pub debounce: Duration,
    /// A pass runs at least this often.
    pub resync: Duration,
    /// Concurrent API writes within a pass.
    pub write_concurrency: usize,
}

impl ControllerOptions {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        ControllerOptions {
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
            debounce: Duration::from_millis(75),
            resync: Duration::from_secs(10),
            write_concurrency: 16,
        }
    }
}

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("waiting for the {kind} cache: the watch ended")]
    CacheSync { kind: &'static str },
    #[error("{op} {target}: {source}")]
    Api {
        op: &'static str,
        target: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::CacheSync { .. } => "cache_sync",
            Error::Api { .. } => "api",
        }
    }
}

/// Where a leader's pass spends its time: `snapshot` (copying the caches,
/// NAD plan), `compute` ([`desired::compute`]: resolve, plan every node,
/// statuses), `write` (the executor's API writes), `attachments` (stale
/// Ports, VM Ports, NADs, undecodable objects' Events).
const M_PASS_PHASE: &str = "kube_dvr_controller_pass_phase_seconds";
const M_PASS_PHASE_HELP: &str = "Duration of the phases of the controller's passes.";

/// Bound on one controller pass before `/healthz` says unhealthy.
const PASS_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes the cache of each kind, collecting their change streams.
struct KindCaches<'a> {
    client: &'a Client,
    undecodable: &'a Arc<Undecodable>,
    streams: Vec<Changes>,
}

/// A cache's change stream, tagged with its source ([`wake`]).
type Changes = futures::stream::BoxStream<'static, (Source, Option<Touched>)>;

impl Build<Stores> for KindCaches<'_> {
    fn build<K: DvrKind>(&mut self) -> Store<K> {
        let (store, changes) = cache(self.client, None, Default::default(), self.undecodable);
        self.streams.push(tagged(Source::Kind(K::KIND), changes));
        store
    }
}

struct Caches {
    objects: PerKind<Stores>,
    /// Pods: only to collect the Ports of pods that are gone.
    pods: Store<Pod>,
    /// Ports: the endpoints ([`cluster::port_infos`]).
    ports: Store<Port>,
    /// NADs; None when the cluster has no NetworkAttachmentDefinition CRD
    /// (no Multus): then the controller writes none.
    nads: Option<Store<NetworkAttachmentDefinition>>,
    /// KubeVirt's VMs and instances (the VM Ports' owners); None when the
    /// cluster has no KubeVirt.
    vms: Option<(Store<VirtualMachine>, Store<VirtualMachineInstance>)>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    /// The allocation cursors' ConfigMap ([`cursors`]).
    allocator: Store<ConfigMap>,
    /// When each agent Lease was last seen renewed, locally.
    lease_clock: std::sync::Mutex<liveness::LeaseClock>,
    /// Objects the caches skipped because they do not decode.
    undecodable: Arc<Undecodable>,
    /// The endpoints from the Ports ([`cluster::port_infos`]), kept while
    /// no Port changes.
    endpoints: std::sync::Mutex<Option<Arc<Vec<crate::plan::resolve::PodInfo>>>>,
}

fn cloned<K>(s: &Store<K>) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    s.state().iter().map(|o| (**o).clone()).collect()
}

impl Caches {
    async fn wait_ready(&self) -> Result<(), Error> {
        let e = |kind| move |_| Error::CacheSync { kind };
        for_each_kind!(|K| {
            (K::of(&self.objects).wait_until_ready().await).map_err(e(K::KIND.as_str()))?;
        });
        self.pods.wait_until_ready().await.map_err(e("Pod"))?;
        self.ports.wait_until_ready().await.map_err(e("Port"))?;
        if let Some(nads) = &self.nads {
            nads.wait_until_ready()
                .await
                .map_err(e("NetworkAttachmentDefinition"))?;
        }
        if let Some((vms, vmis)) = &self.vms {
            vms.wait_until_ready().await.map_err(e("VirtualMachine"))?;
            vmis.wait_until_ready()
                .await
                .map_err(e("VirtualMachineInstance"))?;
        }
        self.nodes.wait_until_ready().await.map_err(e("Node"))?;
        self.leases.wait_until_ready().await.map_err(e("Lease"))?;
        self.allocator
            .wait_until_ready()
            .await
            .map_err(e("ConfigMap"))?;
        Ok(())
    }

    /// The NADs to write (None without the NAD CRD).
    fn nad_plan(&self) -> Option<attach::NadPlan> {
        let nads = self.nads.as_ref()?;
        Some(attach::plan_nads(
            &self.objects.routers.state(),
            &nads.state(),
        ))
    }

    /// KubeVirt's objects for [`attach::plan_vm_ports`] (None without it).
    fn vms(&self) -> Option<attach::Vms> {
        let (vms, vmis) = self.vms.as_ref()?;
        let mut out = attach::Vms::default();
        for vm in vms.state() {
            out.exist.insert(key(&*vm));
        }
        for vmi in vmis.state() {
            out.exist.insert(key(&*vmi));
            if let Some(node) = vmi.status.as_ref().and_then(|s| s.node_name.clone()) {
                out.node.insert(key(&*vmi), node);
            }
        }
        Some(out)
    }

    /// Labels of the pods in namespaces where a LoadBalancer selects pods:
    /// only those, so the snapshot does not copy every pod's labels.
    fn selected_pod_labels(&self) -> BTreeMap<ObjectKey, BTreeMap<String, String>> {
        let namespaces: BTreeSet<String> = (self.objects.load_balancers.state().iter())
            .filter(|lb| lb.spec.backends.selector.is_some())
            .filter_map(|lb| lb.metadata.namespace.clone())
            .collect();
        if namespaces.is_empty() {
            return BTreeMap::new();
        }
        (self.pods.state().iter())
            .filter(|p| (p.metadata.namespace.as_ref()).is_some_and(|n| namespaces.contains(n)))
            .map(|p| {
                (
                    ObjectKey::new(
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default(),
                    ),
                    p.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The endpoints, from the Ports again when `ports_changed` (or never
    /// computed).
    fn endpoints(&self, ports_changed: bool) -> Arc<Vec<crate::plan::resolve::PodInfo>> {
        let mut kept = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        match &*kept {
            Some(e) if !ports_changed => e.clone(),
            _ => {
                let ports = self.ports.state();
                let e = Arc::new(cluster::port_infos(ports.iter().map(|p| &**p)));
                *kept = Some(e.clone());
                e
            }
        }
    }

    fn snapshot(
        &self,
        now: Timestamp,
        nad_conflicts: BTreeSet<String>,
        ports_changed: bool,
    ) -> Snapshot {
        let leases = cloned(&self.leases);
        let mut objects = PerKind::default();
        for_each_kind!(|K| {
            *K::of_mut(&mut objects) = K::of(&self.objects).state();
        });
        Snapshot {
            objects,
            pods: self.endpoints(ports_changed),
            nad_conflicts,
            nodes: cloned(&self.nodes),
            agents: self
                .lease_clock
                .lock()
                .expect("lease clock lock")
                .observe(&leases, std::time::Instant::now()),
            // Passes run only after `wait_ready`: a missing Lease is a
            // missing agent, not a cache that has not caught up.
            leases_synced: true,
            now,
            cursors: cursors::read(self.allocator.state().first().map(|c| c.as_ref())),
            undecodable: self.undecodable.raw_of(&Held::KINDS.map(Kind::as_str)),
            pod_labels: Some(self.selected_pod_labels()),
        }
    }
}

/// (namespace, name) of an object.
fn key(o: &impl Resource) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// Whether the API server serves `K` (its CRD is installed: Multus' NADs,
/// KubeVirt's VMs).
async fn served<K>(client: &Client) -> bool
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 404 => return false,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::warn!(kind = %K::kind(&()), error = %s.message, "not allowed to list a kind: treating it as not installed (the chart's RBAC grants it)");
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = %K::kind(&()), "checking whether the API serves a kind failed; retrying");
                tokio::time::sleep(crate::backoff::jitter(Duration::from_secs(2))).await;
            }
        }
    }
}

/// Run the controller until `shutdown`: leader election, caches, passes.
/// How long the controller trusts remembered node digests
/// ([`desired::NodeDigests`]) before planning every node again.
const DIGESTS_REFRESH: Duration = Duration::from_secs(300);

pub async fn run(
    client: Client,
    opts: ControllerOptions,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // `/healthz`: a leader's pass that runs longer than this (a hung API
    // call) makes the replica unhealthy, and kubelet restarts it.
    telemetry.watch_progress(PASS_TIMEOUT);
    let (leader_tx, mut leader_rx) = watch::channel(false);
    let elector = LeaderElector::new(
        client.clone(),
        LeaseConfig {
            namespace: opts.namespace.clone(),
            name: cluster::CONTROLLER_LEASE.to_string(),
            identity: opts.identity.clone(),
            lease_duration: opts.lease_duration,
            renew_interval: opts.renew_interval,
            retry_interval: opts.retry_interval,
        },
    );
    // The elector releases the Lease when `shutdown` fires.
    let election_stop = shutdown.child_token();
    let election = tokio::spawn(elector.run(leader_tx, election_stop.clone()));

    let undecodable = Undecodable::new(telemetry.clone());
    let all = || watcher::Config::default();
    let (c, u, ns) = (&client, &undecodable, Some(opts.namespace.as_str()));
    let mut kinds = KindCaches {
        client: c,
        undecodable: u,
        streams: Vec::new(),
    };
    let objects = PerKind::build(&mut kinds);
    let mut streams = kinds.streams;
    let (pods, s5) = cache(c, None, all(), u);
    let (ports, s9) = cache(c, None, all(), u);
    let (nads, s10) = if served::<NetworkAttachmentDefinition>(c).await {
        let (store, stream) = cache(c, None, all(), u);
        (Some(store), tagged(Source::Nads, stream))
    } else {
        tracing::warn!(
            "no NetworkAttachmentDefinition CRD (k8s.cni.cncf.io/v1): is Multus installed? \
             kube-dvr writes no NADs until the controller restarts with it"
        );
        (None, futures::stream::empty().boxed())
    };
    let (vms, s11, s12) = if served::<VirtualMachineInstance>(c).await {
        let (vms, s11) = cache(c, None, all(), u);
        let (vmis, s12) = cache(c, None, all(), u);
        (
            Some((vms, vmis)),
            tagged(Source::Vms, s11),
            tagged(Source::Vmis, s12),
        )
    } else {
        tracing::info!(
            "no KubeVirt (kubevirt.io/v1 VirtualMachineInstances): a VM's Port is kept only \
             while a pod carries it, until the controller restarts with KubeVirt"
        );
        let none = || futures::stream::empty().boxed();
        (None, none(), none())
    };
    let (nodes, s6) = cache(c, None, all(), u);
    let (leases, s7) = cache(c, ns, all(), u);
    let allocator_only = all().fields(&format!("metadata.name={}", cluster::ALLOCATOR_CONFIGMAP));
    let (allocator, s8) = cache(c, ns, allocator_only, u);
    streams.extend([
        tagged(Source::Pods, s5),
        tagged(Source::Nodes, s6),
        tagged(Source::Leases, s7),
        tagged(Source::Allocator, s8),
        tagged(Source::Ports, s9),
        s10,
        s11,
        s12,
    ]);
    let caches = Caches {
        objects,
        pods,
        ports,
        nads,
        vms,
        nodes,
        leases,
        allocator,
        lease_clock: Default::default(),
        undecodable,
        endpoints: Default::default(),
    };
    let wakes = Wakes::new(telemetry.clone());
    let driver = tokio::spawn(wakes.clone().drive(streams));

    let result = async {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = caches.wait_ready() => r?,
        }
        tracing::info!(identity = %opts.identity, "caches synced");
        let mut exec = Executor::new(client.clone(), &opts, telemetry.clone(), wakes.clone());
        let mut resync = tokio::time::interval(opts.resync);
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        // Whether the next pass redoes everything (the first, a resync, a
        // retry, a new term), not only what the changed sources concern.
        let mut full = true;
        let mut was_leader = false;
        // When VM Ports' pods and VMs were first seen gone.
        let mut vm_gone_since = Default::default();
        // The expected node digests of the last pass: a pass plans only
        // the nodes whose inputs changed.
        // Forgotten every DIGESTS_REFRESH: a planner input the key missed
        // (a bug) could leave a node's expected digest stale, and its
        // objects Pending, for at most that long.
        let mut digests = desired::NodeDigests::default();
        let mut digests_since = tokio::time::Instant::now();
        loop {
            if digests_since.elapsed() >= DIGESTS_REFRESH {
                digests = desired::NodeDigests::default();
                digests_since = tokio::time::Instant::now();
            }
            let pass_start = tokio::time::Instant::now();
            let leader = *leader_rx.borrow_and_update();
            if leader && !was_leader {
                // A new term: nothing written by an earlier one is trusted,
                // and what changed while a standby is unknown (its wake-ups
                // were not kept).
                exec.forget();
                full = true;
            }
            was_leader = leader;
            let changed = wakes.take();
            if !leader {
                telemetry.set_ready(true);
            } else if !full && changed.is_empty() {
                // Nothing but the echoes of the last pass's own writes.
            } else {
                telemetry.pass_started();
                let t0 = Instant::now();
                let now = Timestamp::now();
                let nad_plan = caches.nad_plan();
                let conflicts = nad_plan
                    .as_ref()
                    .map(|p| p.conflicts.clone())
                    .unwrap_or_default();
                let ports_changed = full || changed.contains(&Source::Ports);
                let snapshot = caches.snapshot(now, conflicts, ports_changed);
                let t1 = Instant::now();
                let actions = desired::compute_with(&snapshot, &mut digests);
                drop(snapshot);
                let t2 = Instant::now();
                record_objects(&telemetry, &actions);
                let mut errors = exec.execute(actions, &leader_rx).await;
                let t3 = Instant::now();
                if full || changed.iter().any(|s| s.attachments()) {
                    let (ports, pods) = (caches.ports.state(), caches.pods.state());
                    let stale = attach::stale_ports(&ports, &pods, now);
                    let vms = caches.vms();
                    let vm_ports =
                        attach::plan_vm_ports(&ports, &pods, vms.as_ref(), &mut vm_gone_since, now);
                    errors += exec
                        .attachments(nad_plan, stale, vm_ports, &leader_rx)
                        .await;
                }
                exec.report_undecodable(&caches.undecodable.list(), &leader_rx)
                    .await;
                let t4 = Instant::now();
                for (phase, a, b) in [
                    ("snapshot", t0, t1),
                    ("compute", t1, t2),
                    ("write", t2, t3),
                    ("attachments", t3, t4),
                ] {
                    telemetry.observe(
                        M_PASS_PHASE,
                        M_PASS_PHASE_HELP,
                        &[("phase", phase)],
                        (b - a).as_secs_f64(),
                    );
                }
                telemetry.pass_finished();
                let result = if errors == 0 { "success" } else { "error" };
                telemetry.inc(
                    "controller_runtime_reconcile_total",
                    "Reconcile passes by result.",
                    &[("controller", "kube-dvr"), ("result", result)],
                    1,
                );
                telemetry.observe(
                    "controller_runtime_reconcile_time_seconds",
                    "Duration of reconcile passes.",
                    &[("controller", "kube-dvr")],
                    t0.elapsed().as_secs_f64(),
                );
                if errors == 0 {
                    telemetry.set_ready(true);
                    retry_at = None;
                    failures = 0;
                } else {
                    failures += 1;
                    let delay = crate::backoff::exponential(
                        failures,
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                    );
                    retry_at = Some(tokio::time::Instant::now() + delay);
                }
            }
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let idle_since = tokio::time::Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = wakes.notified() => full = false,
                r = leader_rx.changed() => if r.is_err() { return Ok(()) } else { full = true },
                _ = resync.tick() => full = true,
                _ = retry => full = true,
            }
            // Coalesce only under load (see `pacing`): a wake-up long after
            // the previous pass runs at once; one right after it waits out
            // a window of a few times that pass's duration.
            let quiet = crate::pacing::window(idle_since - pass_start, opts.debounce);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(idle_since + quiet) => {}
            }
        }
    }
    .await;
    driver.abort();
    election_stop.cancel();
    let _ = election.await;
    telemetry.set_ready(false);
    result
}

fn record_objects(t: &Telemetry, a: &Actions) {
    for &kind in Kind::ALL {
        for ready in [true, false] {
            let n = a.objects.get(&(kind, ready)).copied().unwrap_or(0);
            t.set(
                "kube_dvr_objects",
                "kube-dvr objects by kind and readiness.",
                &[
                    ("kind", kind.as_str()),
                    ("ready", if ready { "true" } else { "false" }),
                ],
                n as f64,
            );
        }
    }
}

/// Applies [`Actions`]; remembers its writes so a pass that runs before the
/// caches reflect them does not repeat them.
struct Executor {
    client: Client,
    namespace: String,
    /// The cursors last written (this term).
    cursors: Option<crate::plan::resolve::Cursors>,
    recorder: Recorder,
    telemetry: Arc<Telemetry>,
    concurrency: usize,
    /// Target key → (resourceVersion it was computed from, patch written).
    statuses: HashMap<String, (Option<String>, Value)>,
    /// (target key, resourceVersion, finalizers written).
    finalizers: HashSet<(String, Option<String>, Vec<String>)>,
    /// (object, uid, resourceVersion) of the undecodable objects reported.
    undecodable: HashSet<(String, Option<String>, Option<String>)>,
    /// Told of every write, so its echo does not wake the loop.
    wakes: Arc<Wakes>,
}

fn api_of(client: &Client, t: &Target) -> Api<DynamicObject> {
    let ar = t.kind.api_resource();
    match &t.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Write a status merge patch (`PATCH …/{name}/status`,
/// `application/merge-patch+json`); the object's new resourceVersion.
pub async fn write_status(client: &Client, w: &StatusWrite) -> Result<Option<String>, kube::Error> {
    api_of(client, &w.target)
        .patch_status(
            &w.target.name,
            &PatchParams::default(),
            &Patch::Merge(&w.patch),
        )
        .await
        .map(|o| o.metadata.resource_version)
}

/// Write an object's finalizer list (merge patch on the object, guarded by
/// the resourceVersion it was computed from); the object's new
/// resourceVersion.
pub async fn write_finalizers(
    client: &Client,
    f: &FinalizerWrite,
) -> Result<Option<String>, kube::Error> {
    api_of(client, &f.target)
        .patch(
            &f.target.name,
            &PatchParams::default(),
            &Patch::Merge(f.patch()),
        )
        .await
        .map(|o| o.metadata.resource_version)
}

/// Errors that need no retry: the object is gone, or changed under us (the
/// watch brings the new version and another pass).
fn benign(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

impl Executor {
    fn new(
        client: Client,
        opts: &ControllerOptions,
        telemetry: Arc<Telemetry>,
        wakes: Arc<Wakes>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance: Some(opts.identity.clone()),
            },
        );
        Executor {
            client,
            namespace: opts.namespace.clone(),
            cursors: None,
            recorder,
            telemetry,
            concurrency: opts.write_concurrency.max(1),
            statuses: HashMap::new(),
            finalizers: HashSet::new(),
            undecodable: HashSet::new(),
            wakes,
        }
    }

    /// Remember a write of `target` that left it at `rv` (see [`wake`]).
    fn wrote(&self, target: &Target, rv: Option<String>) {
        let source = Source::Kind(target.kind);
        (self.wakes).wrote(source, target.namespace.as_deref(), &target.name, rv);
    }

    fn forget(&mut self) {
        self.cursors = None;
        self.statuses.clear();
        self.finalizers.clear();
        self.undecodable.clear();
    }

    /// A Warning Event `Undecodable` on each object that does not decode,
    /// once per resourceVersion (and once more per leadership term).
    async fn report_undecodable(
        &mut self,
        objs: &[UndecodableObject],
        leader: &watch::Receiver<bool>,
    ) {
        let key = |o: &UndecodableObject| (o.label(), o.uid.clone(), o.resource_version.clone());
        let current: HashSet<_> = objs.iter().map(key).collect();
        self.undecodable.retain(|k| current.contains(k));
        for o in objs {
            if !*leader.borrow() {
                return;
            }
            if self.undecodable.contains(&key(o)) {
                continue;
            }
            let event = Event {
                type_: EventType::Warning,
                reason: REASON_UNDECODABLE.into(),
                note: Some(
                    format!(
                        "{} does not decode and is skipped (its last decodable version, if any, stays in effect; what its status holds stays allocated): {}",
                        o.label(),
                        o.error
                    )
                    .chars()
                    .take(1000)
                    .collect(),
                ),
                action: "Decode".into(),
                secondary: None,
            };
            self.count("event");
            match self.recorder.publish(&event, &o.reference).await {
                Ok(()) => {
                    self.undecodable.insert(key(o));
                }
                Err(e) => {
                    tracing::warn!(target = %o.label(), error = %e, "publishing an Event")
                }
            }
        }
    }

    fn count(&self, kind: &'static str) {
        self.telemetry.inc(
            "kube_dvr_api_writes_total",
            "API writes by the controller, by kind of write.",
            &[("kind", kind)],
            1,
        );
    }

    /// Write NADs ([`attach::plan_nads`]) and delete the Ports of pods that
    /// are gone; returns the number of failed writes. A NAD is created
    /// only where none exists and replaced only while it is kube-dvr's
    /// (checked on the server's copy, with its resourceVersion), so one
    /// that someone made meanwhile is never taken over.
    async fn attachments(
        &mut self,
        plan: Option<attach::NadPlan>,
        mut stale_ports: Vec<attach::StalePort>,
        vm_ports: attach::VmPortPlan,
        leader: &watch::Receiver<bool>,
    ) -> usize {
        let mut errors = 0;
        let fail = |op: &'static str, target: String, source: kube::Error| {
            let e = Error::Api { op, target, source };
            tracing::warn!(error = %e, kind = e.kind(), "write failed");
        };
        for port in vm_ports.status {
            if !*leader.borrow() {
                return errors;
            }
            self.count("port");
            let (ns, name) = key(&port);
            let api: Api<Port> = Api::namespaced(self.client.clone(), &ns);
            // As seen: a 409 means an agent changed the bindings meanwhile
            // (the next pass plans again).
            let pp = PostParams::default();
            // Not recorded as an echo: the pass computed the endpoints
            // before this `activeNode`, so its watch event must wake one.
            match api.replace_status(&name, &pp, &port).await {
                Ok(_) => {}
                Err(e) if benign(&e) => {}
                Err(e) => {
                    errors += 1;
                    fail("update status", format!("Port/{ns}/{name}"), e);
                }
            }
        }
        stale_ports.extend(vm_ports.delete);
        for (ns, name, uid) in stale_ports {
            if !*leader.borrow() {
                return errors;
            }
            self.count("port");
            let api: Api<Port> = Api::namespaced(self.client.clone(), &ns);
            // Only the Port seen: a 409 means the address went to someone
            // else meanwhile (benign).
            match api.delete(&name, &crate::api::delete_only(uid)).await {
                Ok(_) => {
                    tracing::info!(port = %format!("{ns}/{name}"), "deleted the Port of a pod that is gone")
                }
                Err(e) if benign(&e) => {}
                Err(e) => {
                    errors += 1;
                    fail("delete", format!("Port/{ns}/{name}"), e);
                }
            }
        }
        let Some(plan) = plan else { return errors };
        for nad in plan.put {
            if !*leader.borrow() {
                return errors;
            }
            let (ns, name) = (nad.namespace().unwrap_or_default(), nad.name_any());
            let api: Api<NetworkAttachmentDefinition> = Api::namespaced(self.client.clone(), &ns);
            self.count("nad");
            let r = match api.create(&PostParams::default(), &nad).await {
                Err(kube::Error::Api(s)) if s.code == 409 => match api.get(&name).await {
                    Ok(cur) if attach::is_ours(&cur) => {
                        let mut next = nad;
                        next.metadata.resource_version = cur.metadata.resource_version;
                        api.replace(&name, &PostParams::default(), &next)
                            .await
                            .map(|_| ())
                    }
                    Ok(_) => Ok(()), // someone else's: the next pass reports it
                    Err(e) => Err(e),
                },
                r => r.map(|_| ()),
            };
            match r {
                Ok(()) => {}
                Err(e) if benign(&e) => {}
                Err(e) => {
                    errors += 1;
                    fail(
                        "write",
                        format!("NetworkAttachmentDefinition/{ns}/{name}"),
                        e,
                    );
                }
            }
        }
        for (ns, name) in plan.delete {
            if !*leader.borrow() {
                return errors;
            }
            let api: Api<NetworkAttachmentDefinition> = Api::namespaced(self.client.clone(), &ns);
            self.count("nad");
            match api.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(e) if benign(&e) => {}
                Err(e) => {
                    errors += 1;
                    fail(
                        "delete",
                        format!("NetworkAttachmentDefinition/{ns}/{name}"),
                        e,
                    );
                }
            }
        }
        errors
    }

    /// Apply everything; returns the number of failed writes. Stops as soon
    /// as this replica is no longer the leader.
    async fn execute(&mut self, a: Actions, leader: &watch::Receiver<bool>) -> usize {
        // The cursors first: statuses below may hold values allocated from
        // them. Without them persisted, nothing else is written.
        if let Some(c) = a.cursors.filter(|c| self.cursors != Some(*c)) {
            if !*leader.borrow() {
                return 0;
            }
            self.count("cursors");
            let written = cursors::write(&self.client, &self.namespace, c).await;
            if let Ok(rv) = &written {
                let name = cluster::ALLOCATOR_CONFIGMAP;
                (self.wakes).wrote(Source::Allocator, Some(&self.namespace), name, rv.clone());
            }
            if let Err(e) = written {
                let e = Error::Api {
                    op: "write allocation cursors to",
                    target: format!(
                        "ConfigMap/{}/{}",
                        self.namespace,
                        cluster::ALLOCATOR_CONFIGMAP
                    ),
                    source: e,
                };
                tracing::warn!(error = %e, kind = e.kind(), "write failed");
                return 1;
            }
            self.cursors = Some(c);
        }
        let fins: Vec<FinalizerWrite> = a
            .add_finalizer
            .into_iter()
            .chain(a.remove_finalizer)
            .filter(|f| {
                !self.finalizers.contains(&(
                    f.target.key(),
                    f.target.resource_version.clone(),
                    f.finalizers.clone(),
                ))
            })
            .collect();
        let statuses: Vec<StatusWrite> = a
            .status
            .into_iter()
            .filter(|w| {
                self.statuses.get(&w.target.key())
                    != Some(&(w.target.resource_version.clone(), w.patch.clone()))
            })
            .collect();
        let mut errors = 0;

        let this = &*self;
        let done: Vec<(FinalizerWrite, Result<Option<String>, kube::Error>)> =
            futures::stream::iter(fins)
                .map(|f| async move {
                    if !*leader.borrow() {
                        return (f, Ok(None));
                    }
                    let r = write_finalizers(&this.client, &f).await;
                    this.count("finalizer");
                    (f, r)
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        for (f, r) in done {
            match r {
                Ok(rv) => {
                    self.wrote(&f.target, rv);
                    self.finalizers.insert((
                        f.target.key(),
                        f.target.resource_version.clone(),
                        f.finalizers,
                    ));
                }
                Err(e) if benign(&e) => {
                    tracing::debug!(target = %f.target.key(), error = %e, "finalizer patch skipped")
                }
                Err(e) => {
                    errors += 1;
                    let e = Error::Api {
                        op: "patch finalizers of",
                        target: f.target.key(),
                        source: e,
                    };
                    tracing::warn!(error = %e, kind = e.kind(), "write failed");
                }
            }
        }

        let this = &*self;
        let done: Vec<(StatusWrite, Result<Option<String>, kube::Error>)> = futures::stream::iter(
            statuses,
        )
        .map(|w| async move {
            if !*leader.borrow() {
                return (w, Ok(None));
            }
            let r = write_status(&this.client, &w).await;
            this.count("status");
            if r.is_ok() {
                for ev in &w.events {
                    if !*leader.borrow() {
                        break;
                    }
                    let event = Event {
                        type_: if ev.warning {
                            EventType::Warning
                        } else {
                            EventType::Normal
                        },
                        reason: ev.reason.clone(),
                        note: Some(ev.note.chars().take(1000).collect()),
                        action: "Reconcile".into(),
                        secondary: None,
                    };
                    this.count("event");
                    if let Err(e) = this.recorder.publish(&event, &w.target.reference).await {
                        tracing::warn!(target = %w.target.key(), error = %e, "publishing an Event");
                    }
                }
            }
            (w, r)
        })
        .buffer_unordered(self.concurrency)
        .collect()
        .await;
        for (w, r) in done {
            match r {
                Ok(rv) => {
                    self.wrote(&w.target, rv);
                    tracing::debug!(target = %w.target.key(), "status written");
                    self.statuses
                        .insert(w.target.key(), (w.target.resource_version.clone(), w.patch));
                }
                Err(e) if benign(&e) => {
                    tracing::debug!(target = %w.target.key(), error = %e, "status patch skipped")
                }
                Err(e) => {
                    errors += 1;
                    let e = Error::Api {
                        op: "patch status of",
                        target: w.target.key(),
                        source: e,
                    };
                    tracing::warn!(error = %e, kind = e.kind(), "write failed");
                }
            }
        }
        errors
    }
}

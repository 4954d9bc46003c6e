//! What one controller pass should write: a pure function of a snapshot of
//! the caches ([`Snapshot`]) to [`Actions`] (status patches, finalizer
//! changes, Events). No I/O and no clock; the executor in
//! [`super`] applies the result.
//!
//! ## Status
//! The desired status of an object is [`resolve`]'s, plus `Programmed`
//! (ANDed into `Ready`). It is written as a JSON merge patch on `/status`
//! only when it differs from the stored status: conditions keep their
//! `lastTransitionTime` unless their status flips, so a pass over an
//! unchanged cluster writes nothing.
//!
//! ## Programmed
//! The controller plans every node too (the same pure planner the agents
//! run), so it knows the digest each agent should report on its Node
//! (`kubedvr.io/programmed`). A node is *done* when the reported digest
//! equals the expected one. The expected digests are remembered across
//! passes with a key of each node's inputs ([`NodeDigests`]): a pass plans
//! only the nodes a change concerns. An object is programmed when every node it
//! concerns is done: a router's `status.nodes`, a floating IP's `node`, a SNAT
//! gateway's `activeNode`, and no error of that node's agent names the
//! object or is node-wide ([`cluster::errors`]). Otherwise
//! `Programmed=False` with reason `AgentDown` (heartbeat Lease stale or
//! missing), `AgentError` (quoting only the object's own errors: a node
//! serves many tenants) or `Pending`.
//!
//! A node's digest covers everything on it, so it also moves when *another*
//! object on the node changes. To keep the cost of an object constant (not
//! proportional to how many objects share its node), `Programmed=True` is
//! sticky: an object that was programmed, whose generation and allocations
//! (status other than conditions) are unchanged, stays programmed on a node
//! that is merely catching up on other changes — unless that node's agent is
//! down or reports errors.
//!
//! ## Finalizers
//! Every live object gets [`api::FINALIZER`]. Objects being deleted are left
//! out of the resolver's input, so the expected digests are those of plans
//! without them; the finalizer comes off once every node that *held* the
//! object (as its status recorded, plus nodes whose errors name it) is done
//! with it, or is gone (Node deleted, or no heartbeat Lease once the Lease
//! cache has synced, [`Snapshot::leases_synced`]). A stale Lease is not
//! gone: that node's kernel may still serve the object (answer ARP for its
//! address), so what it had stays allocated. A node that never had the
//! object, or fails on other objects, holds nothing.
//!
//! ## Events
//! A Warning when a condition (other than `Ready`, which repeats one of
//! them) becomes False or changes its reason — except the transient
//! `Pending` and the derivative `Unresolved` — and a Normal `Ready` event
//! when an object becomes Ready. Never on a pass that writes no status.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::Resource;
use serde_json::{Map, Value};

use crate::api::conditions::{self, FALSE, PROGRAMMED, READY, TRUE};
use crate::api::kinds::for_each_kind;
use crate::api::{self, DvrKind, PerKind, Shared};
use crate::cluster::errors::AgentError;
use crate::cluster::{self, AGENT_ERRORS_ANNOTATION};
use crate::plan::resolve::{resolve, ClusterInput, Cursors, Held, PodInfo};
use crate::plan::view::ObjectKey;

/// Condition reason: the agents have not reported the object's state yet.
pub const REASON_PENDING: &str = "Pending";
/// Condition reason: nothing to program before the object is resolved.
pub const REASON_UNRESOLVED: &str = "Unresolved";
/// Condition reason: a node's agent reports errors.
pub const REASON_AGENT_ERROR: &str = "AgentError";
/// Condition reason: a node's agent stopped heartbeating.
pub const REASON_AGENT_DOWN: &str = "AgentDown";
/// Condition reason: programmed on every node concerned.
pub const REASON_PROGRAMMED: &str = "Programmed";

pub use crate::api::Kind;

/// An object an action applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub kind: Kind,
    /// None for cluster-scoped ExternalNetworks.
    pub namespace: Option<String>,
    pub name: String,
    /// The resourceVersion the action was computed from.
    pub resource_version: Option<String>,
    /// For Events.
    pub reference: ObjectReference,
}

impl Target {
    fn of<K: Resource<DynamicType = ()>>(kind: Kind, obj: &K) -> Target {
        let m = obj.meta();
        Target {
            kind,
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone(),
            reference: obj.object_ref(&()),
        }
    }

    /// `kind/namespace/name` (`kind/name` when cluster-scoped).
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind.as_str(), self.name),
            None => format!("{}/{}", self.kind.as_str(), self.name),
        }
    }
}

/// A merge patch on an object's `/status`.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub target: Target,
    /// The JSON merge patch body: `{"status": {...}}` with `null` for fields
    /// the stored status has and the desired one lacks.
    pub patch: Value,
    /// Events that go with this change.
    pub events: Vec<EventSpec>,
}

/// The new finalizer list of an object (merge patch on the object, guarded
/// by its resourceVersion).
#[derive(Clone, Debug, PartialEq)]
pub struct FinalizerWrite {
    pub target: Target,
    pub finalizers: Vec<String>,
}

impl FinalizerWrite {
    /// The merge patch body.
    pub fn patch(&self) -> Value {
        let mut meta = Map::new();
        meta.insert("finalizers".into(), self.finalizers.clone().into());
        if let Some(rv) = &self.target.resource_version {
            meta.insert("resourceVersion".into(), rv.clone().into());
        }
        serde_json::json!({ "metadata": meta })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// Everything one pass should write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Actions {
    pub add_finalizer: Vec<FinalizerWrite>,
    pub remove_finalizer: Vec<FinalizerWrite>,
    pub status: Vec<StatusWrite>,
    /// Live objects per (kind, Ready).
    pub objects: BTreeMap<(Kind, bool), usize>,
    /// New allocation cursors to persist (before any status that uses
    /// them), when they moved.
    pub cursors: Option<Cursors>,
}

impl Actions {
    pub fn is_empty(&self) -> bool {
        self.add_finalizer.is_empty()
            && self.remove_finalizer.is_empty()
            && self.status.is_empty()
            && self.cursors.is_none()
    }
}

/// What the caches hold at the start of a pass.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The kube-dvr objects, per kind (also reached through `Deref`:
    /// `snapshot.routers`).
    pub objects: PerKind<Shared>,
    /// Endpoints: Ports via [`cluster::port_infos`].
    pub pods: std::sync::Arc<Vec<PodInfo>>,
    /// NADs routers name that kube-dvr may not own ([`super::attach`]).
    pub nad_conflicts: std::collections::BTreeSet<String>,
    pub nodes: Vec<Node>,
    /// Node → whether its agent heartbeats
    /// ([`LeaseClock`](super::liveness::LeaseClock)).
    pub agents: BTreeMap<String, bool>,
    /// Whether the Lease cache has synced: then a node with a VTEP but no
    /// agent Lease has no agent (never had one, or its Lease was deleted)
    /// and counts as down for `Programmed` and finalizers. Before, a missing
    /// Lease is unknown and taken as alive, so statuses stay stable.
    pub leases_synced: bool,
    pub now: Timestamp,
    /// The allocation cursors the controller persisted (None: none yet).
    pub cursors: Option<Cursors>,
    /// Raw JSON of the objects of [`Held::KINDS`] the caches skipped
    /// because they do not decode ([`cluster::watch`]): nobody else may take
    /// what their status holds.
    pub undecodable: Vec<Value>,
    /// Labels of the pods in namespaces where a LoadBalancer selects pods
    /// (the resolver's `pod_labels`; None: resolve as an agent does).
    pub pod_labels: Option<BTreeMap<ObjectKey, BTreeMap<String, String>>>,
}

impl std::ops::Deref for Snapshot {
    type Target = PerKind<Shared>;
    fn deref(&self) -> &PerKind<Shared> {
        &self.objects
    }
}

impl std::ops::DerefMut for Snapshot {
    fn deref_mut(&mut self) -> &mut PerKind<Shared> {
        &mut self.objects
    }
}

impl Snapshot {
    /// Whether `node`'s agent is down: its Lease is stale, or it has none
    /// once the Lease cache has synced.
    pub fn agent_down(&self, node: &str) -> bool {
        match self.agents.get(node) {
            Some(alive) => !alive,
            None => self.leases_synced,
        }
    }
}

/// A node's state as far as `Programmed` goes.
#[derive(Clone, Debug, Default)]
struct NodeProgress {
    /// The agent reports the digest of the node's expected plan: it applied
    /// it, except what its errors name.
    done: bool,
    down: bool,
    /// Down because it has no heartbeat Lease at all.
    no_lease: bool,
    /// The agent's errors, each naming its object ([`cluster::errors`]).
    errors: Vec<AgentError>,
}

impl NodeProgress {
    /// An error not pinned to one object: nothing on the node is known to
    /// be programmed.
    fn node_wide(&self) -> bool {
        self.errors.iter().any(|e| e.object.is_none())
    }

    /// The messages of the errors that belong to object `id`.
    fn errors_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.errors
            .iter()
            .filter(move |e| e.object.as_deref() == Some(id))
            .map(|e| e.message.as_str())
    }

    /// Whether the node's errors concern object `id`.
    fn failing(&self, id: &str) -> bool {
        self.node_wide() || self.errors_of(id).next().is_some()
    }

    /// The node programmed the expected plan as far as object `id` goes.
    fn done_for(&self, id: &str) -> bool {
        self.done && !self.failing(id)
    }

    /// The node is declared gone: no heartbeat Lease at all (the agent was
    /// removed, or its Lease deleted by an administrator). A Lease that
    /// merely went stale is an agent that may be down while its kernel
    /// still forwards: that node still holds what it had.
    fn gone(&self) -> bool {
        self.down && self.no_lease
    }
}

fn deleting(m: &ObjectMeta) -> bool {
    m.deletion_timestamp.is_some()
}

fn has_finalizer(m: &ObjectMeta) -> bool {
    m.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == api::FINALIZER))
}

/// The resolver's input: live objects only (objects being deleted are
/// planned away), nodes with their agents' liveness.
pub fn cluster_input(s: &Snapshot) -> ClusterInput {
    let mut objects = PerKind::<Shared>::default();
    for_each_kind!(|K| {
        *K::of_mut(&mut objects) = (K::of(&s.objects).iter())
            .filter(|o| !deleting(o.meta()))
            .cloned()
            .collect();
    });
    ClusterInput {
        objects,
        pod_labels: s.pod_labels.clone(),
        pods: s.pods.clone(),
        nad_conflicts: s.nad_conflicts.clone(),
        nodes: s
            .nodes
            .iter()
            .map(|n| {
                cluster::node_info(
                    n,
                    s.agents
                        .get(n.metadata.name.as_deref().unwrap_or(""))
                        .copied(),
                )
            })
            .collect(),
        now: s.now,
        held: held(s),
        cursors: s.cursors,
    }
}

/// What objects outside the resolver's input hold: those being deleted, and
/// those that do not decode and have no decodable version in the caches
/// (one that has is resolved from it, which keeps its allocations).
fn held(s: &Snapshot) -> Held {
    let mut held = Held::default();
    let mut cached = std::collections::BTreeSet::new();
    for_each_kind!(|K| {
        for o in K::of(&s.objects) {
            if deleting(o.meta()) {
                held.add_object(o.as_ref());
            }
            cached.extend(o.meta().uid.as_deref());
        }
    });
    held.add_undecodable(&s.undecodable, &cached);
    held
}

/// Node → the plan digest its agent should report, for every node with a
/// VTEP.
pub fn expected_digests(s: &Snapshot) -> BTreeMap<String, String> {
    let res = resolve(&cluster_input(s));
    NodeDigests::default().digests(&res.view)
}

/// The pass: resolve, plan every node, compare with what is stored.
pub fn compute(s: &Snapshot) -> Actions {
    compute_with(s, &mut NodeDigests::default())
}

/// [`compute`] with the node digests of earlier passes: only the nodes
/// whose plan's inputs changed are planned again ([`NodeDigests`]).
pub fn compute_with(s: &Snapshot, digests: &mut NodeDigests) -> Actions {
    let input = cluster_input(s);
    let res = resolve(&input);
    let expected_by_node = digests.digests(&res.view);

    // Every node with a VTEP runs an agent: what it should report.
    let mut progress: BTreeMap<String, NodeProgress> = BTreeMap::new();
    for n in &s.nodes {
        let Some(name) = n.metadata.name.as_deref() else {
            continue;
        };
        if !res.view.nodes.contains_key(name) {
            continue;
        }
        let Some(expected) = expected_by_node.get(name) else {
            continue;
        };
        let reported = cluster::annotation(&n.metadata, cluster::PROGRAMMED_ANNOTATION);
        let errors = cluster::annotation(&n.metadata, AGENT_ERRORS_ANNOTATION)
            .map(cluster::errors::decode)
            .unwrap_or_default();
        progress.insert(
            name.to_string(),
            NodeProgress {
                done: reported == Some(expected.as_str()),
                down: s.agent_down(name),
                no_lease: !s.agents.contains_key(name),
                errors,
            },
        );
    }

    let mut out = Actions {
        cursors: (s.cursors != Some(res.cursors)).then_some(res.cursors),
        ..Default::default()
    };
    let ctx = Ctx {
        now: s.now,
        progress: &progress,
    };
    for_each_kind!(|K| {
        for o in K::of(&s.objects).iter().map(AsRef::as_ref) {
            let desired = K::desired(&res, o);
            ctx.object(&mut out, K::KIND, o, o.status(), desired, K::programmed);
        }
    });

    // A deleted object's finalizer comes off once every node that held it
    // has programmed a plan without it, or is gone.
    let mut remove = |kind: Kind, o: &dyn ResourceMeta, held_by: Vec<String>| {
        let m = o.object_meta();
        if !(deleting(m) && has_finalizer(m)) {
            return;
        }
        let target = o.target(kind);
        let id = target.key();
        let held = held_by.iter().chain(
            // A node reporting an error about it still has some of it.
            progress
                .iter()
                .filter(|(_, p)| p.errors_of(&id).next().is_some())
                .map(|(n, _)| n),
        );
        let mut waiting = held.filter(|n| {
            progress
                .get(n.as_str())
                .is_some_and(|p| !p.gone() && !p.done_for(&id))
        });
        if waiting.next().is_some() {
            return;
        }
        let finalizers = m
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != api::FINALIZER)
            .cloned()
            .collect();
        out.remove_finalizer
            .push(FinalizerWrite { target, finalizers });
    };
    for_each_kind!(|K| {
        for o in K::of(&s.objects) {
            remove(
                K::KIND,
                o.as_ref(),
                K::held_by(o.status().cloned().unwrap_or_default()),
            );
        }
    });
    out
}

/// What finalizer handling needs of an object of any kind.
trait ResourceMeta {
    fn object_meta(&self) -> &ObjectMeta;
    fn target(&self, kind: Kind) -> Target;
}

impl<K: Resource<DynamicType = ()>> ResourceMeta for K {
    fn object_meta(&self) -> &ObjectMeta {
        Resource::meta(self)
    }
    fn target(&self, kind: Kind) -> Target {
        Target::of(kind, self)
    }
}

#[path = "desired_digests.rs"]
mod digests;
pub use digests::NodeDigests;

#[path = "reported.rs"]
mod reported;
pub(crate) use reported::Reported;

#[path = "desired_status.rs"]
mod status;
use status::Ctx;
pub(crate) use status::ProgrammedParts;

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;

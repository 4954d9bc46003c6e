//! From the agent's caches to the resolver's input: pure, unit-tested.
//!
//! Three filters make the agent plan only what the controller committed:
//! - objects being deleted (`metadata.deletionTimestamp`) are left out, so
//!   their kernel state is planned away while the finalizer holds them;
//! - a kube-dvr object is used only as the controller last *processed* it:
//!   when `status.observedGeneration == metadata.generation` the object as
//!   stored; otherwise the last processed version this agent saw of the same
//!   object (same uid), so a spec edit does not tear down live state while
//!   the controller catches up; and never an object the controller has not
//!   processed at all (the agent would invent allocations);
//! - the agent's own Node always carries the VTEP the agent publishes, even
//!   before the watch has delivered that annotation back.
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use crate::api::kinds::for_each_kind;
use crate::api::{Build, DvrKind, Family, PerKind, Port, Shared, Slices};
use crate::cluster;
use crate::plan::resolve::{self, ClusterInput};

/// Everything the agent's watches hold at one moment.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// The kube-dvr objects, per kind (also reached through `Deref`:
    /// `snap.routers`).
    pub objects: PerKind<Shared>,
    pub ports: Vec<Arc<Port>>,
    pub nodes: Vec<Arc<Node>>,
    /// Kind and raw JSON of the kube-dvr objects
    /// the caches skipped because they do not decode ([`cluster::watch`]).
    pub undecodable: Vec<(String, serde_json::Value)>,
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

/// Whether the controller has processed `obj`'s current spec.
pub fn is_processed<K: DvrKind>(obj: &K) -> bool {
    obj.observed_generation()
        .is_some_and(|g| g == obj.meta().generation)
}

/// Per kind: the last processed version of each object, by uid.
pub struct Committed<K> {
    by_uid: HashMap<String, Arc<K>>,
    /// Left out by the last [`Committed::select`] although the controller
    /// processed an earlier generation (their status exists): objects whose
    /// last processed version this agent never saw.
    held_back: Vec<Arc<K>>,
}

impl<K> Default for Committed<K> {
    fn default() -> Self {
        Committed {
            by_uid: HashMap::new(),
            held_back: Vec::new(),
        }
    }
}

impl<K: DvrKind> Committed<K> {
    /// The objects to plan from, given the current ones (see the module
    /// docs); forgets objects that are gone.
    pub fn select(&mut self, current: &[Arc<K>]) -> Vec<Arc<K>> {
        let mut out = Vec::with_capacity(current.len());
        let mut seen = HashMap::with_capacity(current.len());
        self.held_back.clear();
        for obj in current {
            let meta = obj.meta();
            let uid = meta.uid.clone().unwrap_or_else(|| {
                format!(
                    "{}/{}",
                    meta.namespace.as_deref().unwrap_or(""),
                    meta.name.as_deref().unwrap_or("")
                )
            });
            if meta.deletion_timestamp.is_some() {
                continue;
            }
            let chosen = if is_processed(obj.as_ref()) {
                Some(obj.clone())
            } else {
                let cached = self.by_uid.get(&uid).cloned();
                if cached.is_none() && obj.observed_generation().is_some() {
                    self.held_back.push(obj.clone());
                }
                cached
            };
            if let Some(c) = chosen {
                out.push(c.clone());
                seen.insert(uid, c);
            }
        }
        self.by_uid = seen;
        out
    }
}

/// Objects left out of the last input although the controller processed an
/// earlier version of them (see [`Committed`]), by kind.
pub type Held<'a> = PerKind<Slices<'a>>;

/// A [`Committed`] per kind.
pub struct CommittedKinds;
impl Family for CommittedKinds {
    type Of<K: DvrKind> = Committed<K>;
}

/// The filters' memory across passes.
pub struct InputState {
    committed: PerKind<CommittedKinds>,
}

impl Default for InputState {
    fn default() -> Self {
        struct Empty;
        impl Build<CommittedKinds> for Empty {
            fn build<K: DvrKind>(&mut self) -> Committed<K> {
                Committed::default()
            }
        }
        InputState {
            committed: PerKind::build(&mut Empty),
        }
    }
}

impl InputState {
    /// Objects the last input left out although an earlier generation of
    /// them was processed (see [`Committed`]): planning without them would
    /// remove what they had programmed. Only after an agent (re)start, while
    /// the controller has not caught up with an edit.
    pub fn held_back(&self) -> usize {
        let mut n = 0;
        for_each_kind!(|K| {
            n += K::of(&self.committed).held_back.len();
        });
        n
    }

    /// The objects held back by the last input, by kind.
    pub fn held(&self) -> Held<'_> {
        let mut held = Held::default();
        for_each_kind!(|K| {
            *K::of_mut(&mut held) = &K::of(&self.committed).held_back;
        });
        held
    }

    /// The resolver's input for the agent of `node` publishing `vtep`.
    ///
    /// Agent liveness of other nodes is unknown to an agent (it may not
    /// read their Leases): nodes are as ready as their kubelet says. The
    /// scheduling decisions that depend on liveness are read back from the
    /// controller's statuses anyway.
    pub fn cluster_input(
        &mut self,
        snap: &Snapshot,
        node: &str,
        vtep: Ipv4Addr,
        now: Timestamp,
    ) -> ClusterInput {
        let nodes = snap
            .nodes
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .map(|n| {
                let mut info = cluster::node_info(n, None);
                if info.name == node {
                    info.vtep = Some(vtep);
                }
                info
            })
            .collect();
        let mut objects = PerKind::default();
        for_each_kind!(|K| {
            *K::of_mut(&mut objects) = K::of_mut(&mut self.committed).select(K::of(&snap.objects));
        });
        ClusterInput {
            pod_labels: None,
            objects,
            pods: cluster::port_infos(snap.ports.iter().map(|p| &**p)).into(),
            // NADs are the controller's business.
            nad_conflicts: Default::default(),
            nodes,
            now,
            // As the controller resolves: allocations of objects being
            // deleted, or that do not decode, are not free (new ones are
            // the controller's to make).
            held: held(snap),
            cursors: None,
        }
    }
}

/// As the controller holds: allocations of objects being deleted, and of
/// objects that do not decode (unless a decodable version is cached).
fn held(snap: &Snapshot) -> resolve::Held {
    let mut held = resolve::Held::default();
    let mut cached = std::collections::BTreeSet::new();
    for_each_kind!(|K| {
        for o in K::of(&snap.objects) {
            if o.meta().deletion_timestamp.is_some() {
                held.add_object(o.as_ref());
            }
            cached.extend(o.meta().uid.as_deref());
        }
    });
    let raws = (snap.undecodable.iter())
        .filter(|(kind, _)| resolve::Held::KINDS.iter().any(|k| k.as_str() == kind))
        .map(|(_, raw)| raw);
    held.add_undecodable(raws, &cached);
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DistributedRouter;
    use serde_json::json;

    fn mk_router(
        uid: &str,
        generation: i64,
        observed: Option<i64>,
        cidr: &str,
    ) -> Arc<DistributedRouter> {
        let mut v = json!({
            "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
            "metadata": {"name": "r", "namespace": "t", "uid": uid, "generation": generation},
            "spec": {"subnets": [{"name": "s", "cidr": cidr, "gateway": "10.1.0.1", "networkAttachment": "n"}]}
        });
        if let Some(g) = observed {
            v["status"] = json!({"observedGeneration": g});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn cidr(r: &DistributedRouter) -> String {
        r.spec.subnets[0].cidr.to_string()
    }

    #[test]
    fn unprocessed_objects_are_not_planned() {
        let mut c = Committed::default();
        assert!(c
            .select(&[mk_router("u1", 1, None, "10.1.0.0/24")])
            .is_empty());
        assert!(c
            .select(&[mk_router("u1", 2, Some(1), "10.1.0.0/24")])
            .is_empty());
        assert_eq!(
            c.select(&[mk_router("u1", 2, Some(2), "10.1.0.0/24")])
                .len(),
            1
        );
    }

    #[test]
    fn an_edit_keeps_the_last_processed_version_until_processed() {
        let mut c = Committed::default();
        let v1 = mk_router("u1", 1, Some(1), "10.1.0.0/24");
        assert_eq!(cidr(&c.select(&[v1])[0]), "10.1.0.0/24");
        let v2 = mk_router("u1", 2, Some(1), "10.2.0.0/24");
        assert_eq!(cidr(&c.select(&[v2])[0]), "10.1.0.0/24");
        let v2done = mk_router("u1", 2, Some(2), "10.2.0.0/24");
        assert_eq!(cidr(&c.select(&[v2done])[0]), "10.2.0.0/24");
        // Recreated under the same name (another uid), not yet processed:
        // nothing of the old object survives.
        assert!(c
            .select(&[mk_router("u2", 1, None, "10.3.0.0/24")])
            .is_empty());
    }

    #[test]
    fn edits_unseen_before_are_held_back() {
        let mut c = Committed::default();
        // Never processed: nothing to hold back.
        c.select(&[mk_router("u1", 1, None, "10.1.0.0/24")]);
        assert!(c.held_back.is_empty());
        // Processed at generation 1, now at 2, and this agent never saw 1.
        assert!(c
            .select(&[mk_router("u1", 2, Some(1), "10.1.0.0/24")])
            .is_empty());
        assert_eq!(c.held_back.len(), 1);
        c.select(&[mk_router("u1", 2, Some(2), "10.1.0.0/24")]);
        assert!(c.held_back.is_empty());
        // Seen before: the cached version is used, nothing held back.
        assert_eq!(
            c.select(&[mk_router("u1", 3, Some(2), "10.2.0.0/24")])
                .len(),
            1
        );
        assert!(c.held_back.is_empty());
    }

    #[test]
    fn deleted_and_vanished_objects_are_forgotten() {
        let mut c = Committed::default();
        c.select(&[mk_router("u1", 1, Some(1), "10.1.0.0/24")]);
        let mut del = (*mk_router("u1", 1, Some(1), "10.1.0.0/24")).clone();
        del.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        assert!(c.select(&[Arc::new(del)]).is_empty());
        // The cache was cleared: an unprocessed edit now plans nothing.
        assert!(c
            .select(&[mk_router("u1", 2, Some(1), "10.2.0.0/24")])
            .is_empty());
    }

    #[test]
    fn own_node_carries_the_published_vtep() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let other: Node = serde_json::from_value(json!({"metadata": {"name": "n2"}})).unwrap();
        let snap = Snapshot {
            nodes: vec![Arc::new(node), Arc::new(other)],
            ..Default::default()
        };
        let input = InputState::default().cluster_input(
            &snap,
            "n1",
            "198.18.0.1".parse().unwrap(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(input.nodes[0].vtep, Some("198.18.0.1".parse().unwrap()));
        assert!(input.nodes[0].ready);
        assert_eq!(input.nodes[1].vtep, None);
    }
}

//! Attachment objects the controller owns besides statuses:
//!
//! - **NetworkAttachmentDefinitions**: one per router subnet, named by the
//!   subnet's `networkAttachment` (in the router's namespace), of CNI type
//!   `kube-dvr` naming the router and the subnet, labelled
//!   `app.kubernetes.io/managed-by: kube-dvr` and owned by the router.
//!   Created and updated with the router, deleted with it or its subnet. A
//!   NAD of that name that is not kube-dvr's (no label) is never touched:
//!   the router reports the conflict (condition `NetworkAttachments=False`,
//!   reason `NetworkAttachmentConflict`, and an Event). When two routers of
//!   a namespace name one NAD, the older router keeps it.
//! - **Port garbage collection**: a Port whose pod no longer exists (or is
//!   another pod of the same name: other UID) is deleted once it is older
//!   than [`PORT_GRACE`] (the pod may not have reached the cache yet). A
//!   normal CNI DEL deletes the Port itself; this catches DELs that never
//!   reached an agent (node lost, agent down).
//! - **VM Ports** (KubeVirt, `spec.vm`): a binding whose pod has been gone
//!   for [`PORT_GRACE`] is removed; `status.activeNode` follows the
//!   VirtualMachineInstance's `status.nodeName` (KubeVirt moves it when a
//!   live migration completes) once that node has a binding; a Port no pod
//!   carries is deleted once neither the VirtualMachine nor its instance
//!   has existed for [`PORT_GRACE`] (with KubeVirt not installed: once
//!   unbound for that long). The address survives the VM's restarts.
//!
//! Pure planning here; the controller applies the result.
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::nad::{self, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use crate::api::{DistributedRouter, Port};

/// A Port younger than this is never collected.
pub const PORT_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// What to write for NADs.
#[derive(Debug, Default)]
pub struct NadPlan {
    /// Create or replace (kube-dvr's own, with a differing config).
    pub put: Vec<NetworkAttachmentDefinition>,
    /// kube-dvr's NADs no router subnet wants: (namespace, name).
    pub delete: Vec<(String, String)>,
    /// `namespace/name` of NADs a router subnet wants that are not
    /// kube-dvr's (or that an older router of the namespace has).
    pub conflicts: BTreeSet<String>,
}

pub fn is_ours(n: &NetworkAttachmentDefinition) -> bool {
    n.labels().get(nad::MANAGED_BY_LABEL).map(String::as_str) == Some(nad::MANAGED_BY)
}

/// `ns/name` of a subnet's NAD reference; None when it names another
/// namespace (the router is invalid then and gets nothing).
fn own_nad(router_ns: &str, reference: &str) -> Option<String> {
    match reference.split_once('/') {
        Some((ns, name)) if ns == router_ns => Some(name.to_string()),
        Some(_) => None,
        None => Some(reference.to_string()),
    }
}

/// The NADs the routers want against those that exist.
/// (Slices of objects or of the caches' `Arc`s alike: no copy per pass.)
pub fn plan_nads(
    routers: &[impl Borrow<DistributedRouter>],
    existing: &[impl Borrow<NetworkAttachmentDefinition>],
) -> NadPlan {
    let mut routers: Vec<&DistributedRouter> = routers
        .iter()
        .map(Borrow::borrow)
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    routers.sort_by(|a, b| {
        (a.creation_timestamp(), a.namespace(), a.name_any()).cmp(&(
            b.creation_timestamp(),
            b.namespace(),
            b.name_any(),
        ))
    });
    let existing: BTreeMap<(String, String), &NetworkAttachmentDefinition> = existing
        .iter()
        .map(Borrow::borrow)
        .map(|n| ((n.namespace().unwrap_or_default(), n.name_any()), n))
        .collect();
    let mut plan = NadPlan::default();
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for r in routers {
        let ns = r.namespace().unwrap_or_default();
        for s in &r.spec.subnets {
            let Some(name) = own_nad(&ns, &s.network_attachment) else {
                continue;
            };
            let key = (ns.clone(), name.clone());
            if !wanted.insert(key.clone()) {
                plan.conflicts.insert(format!("{ns}/{name}"));
                continue;
            }
            let config = nad::nad_config(&name, &r.name_any(), &s.name);
            match existing.get(&key) {
                Some(n) if !is_ours(n) => {
                    plan.conflicts.insert(format!("{ns}/{name}"));
                }
                Some(n) if n.spec.config.as_deref() == Some(&config) && owned_by(n, r) => {}
                _ => plan.put.push(desired_nad(r, &ns, &name, config)),
            }
        }
    }
    for ((ns, name), n) in &existing {
        if is_ours(n) && !wanted.contains(&(ns.clone(), name.clone())) {
            plan.delete.push((ns.clone(), name.clone()));
        }
    }
    plan
}

fn owned_by(n: &NetworkAttachmentDefinition, r: &DistributedRouter) -> bool {
    n.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == r.metadata.uid.as_ref())
}

fn desired_nad(
    r: &DistributedRouter,
    ns: &str,
    name: &str,
    config: String,
) -> NetworkAttachmentDefinition {
    let owner = r.metadata.uid.as_ref().map(|uid| OwnerReference {
        api_version: DistributedRouter::api_version(&()).into_owned(),
        kind: DistributedRouter::kind(&()).into_owned(),
        name: r.name_any(),
        uid: uid.clone(),
        ..Default::default()
    });
    NetworkAttachmentDefinition {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([(
                nad::MANAGED_BY_LABEL.into(),
                nad::MANAGED_BY.into(),
            )])),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: NetworkAttachmentDefinitionSpec {
            config: Some(config),
        },
    }
}

/// A Port to collect: namespace, name, and the UID it had when seen (the
/// delete is conditional on it: the name is the address, and a new pod's
/// Port of that address must not go in its place).
pub type StalePort = (String, String, Option<String>);

/// The pods that run (not Succeeded or Failed), by (namespace, name), with
/// their UIDs.
struct Running<'a>(BTreeMap<(String, String), Option<&'a str>>);

impl<'a> Running<'a> {
    fn of(pods: &'a [impl Borrow<Pod>]) -> Running<'a> {
        Running(
            pods.iter()
                .map(Borrow::borrow)
                .filter(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    !matches!(phase, Some("Succeeded") | Some("Failed"))
                })
                .map(|p| {
                    (
                        (p.namespace().unwrap_or_default(), p.name_any()),
                        p.metadata.uid.as_deref(),
                    )
                })
                .collect(),
        )
    }

    /// Pod `ns/name` runs (and is the one of `uid`, when known).
    fn has(&self, ns: &str, name: &str, uid: &str) -> bool {
        match self.0.get(&(ns.to_string(), name.to_string())) {
            None => false,
            Some(u) => uid.is_empty() || *u == Some(uid),
        }
    }
}

/// Ports of pods (not VMs) whose pod is gone (or finished: Succeeded or
/// Failed).
pub fn stale_ports(
    ports: &[impl Borrow<Port>],
    pods: &[impl Borrow<Pod>],
    now: Timestamp,
) -> Vec<StalePort> {
    let pods = Running::of(pods);
    ports
        .iter()
        .map(Borrow::borrow)
        .filter(|p| !p.is_vm())
        .filter(|p| {
            let ns = p.namespace().unwrap_or_default();
            let alive = pods.has(&ns, &p.spec.pod, &p.spec.pod_uid);
            let young = p
                .creation_timestamp()
                .is_none_or(|t| now.duration_since(t.0) < PORT_GRACE);
            !alive && !young && p.metadata.deletion_timestamp.is_none()
        })
        .map(|p| {
            (
                p.namespace().unwrap_or_default(),
                p.name_any(),
                p.metadata.uid.clone(),
            )
        })
        .collect()
}

/// KubeVirt's objects as the controller sees them.
#[derive(Debug, Default)]
pub struct Vms {
    /// (namespace, name) of every VirtualMachine and VirtualMachineInstance.
    pub exist: BTreeSet<(String, String)>,
    /// Each VirtualMachineInstance's `status.nodeName`.
    pub node: BTreeMap<(String, String), String>,
}

/// What to write on VM Ports.
#[derive(Debug, Default, PartialEq)]
pub struct VmPortPlan {
    /// Ports with a new status (with the resourceVersion it replaces).
    pub status: Vec<Port>,
    /// Unbound Ports of VMs that are gone.
    pub delete: Vec<StalePort>,
}

/// The VM Ports' writes (see the module doc). `vms` is None without
/// KubeVirt. `since` remembers, across passes, when each binding's pod or
/// Port's VM was first seen gone (the grace runs from there).
pub fn plan_vm_ports(
    ports: &[impl Borrow<Port>],
    pods: &[impl Borrow<Pod>],
    vms: Option<&Vms>,
    since: &mut BTreeMap<String, Timestamp>,
    now: Timestamp,
) -> VmPortPlan {
    let pods = Running::of(pods);
    let mut plan = VmPortPlan::default();
    let mut seen = BTreeSet::new();
    let mut expired = |key: String| {
        let first = *since.entry(key.clone()).or_insert(now);
        seen.insert(key);
        now.duration_since(first) >= PORT_GRACE
    };
    for p in ports.iter().map(Borrow::borrow).filter(|p| p.is_vm()) {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (ns, name, uid) = (
            p.namespace().unwrap_or_default(),
            p.name_any(),
            p.metadata.uid.clone().unwrap_or_default(),
        );
        let old = p.status.clone().unwrap_or_default();
        let mut next = old.clone();
        next.bindings.retain(|b| {
            pods.has(&ns, &b.pod, &b.pod_uid)
                || !expired(format!(
                    "{uid}/{}/{}/{}",
                    b.node, b.container_id, b.interface
                ))
        });
        let key = (ns.clone(), p.spec.vm.clone());
        let runs_on = vms.and_then(|v| v.node.get(&key));
        if let Some(node) = runs_on.filter(|n| next.bindings.iter().any(|b| &&b.node == n)) {
            next.active_node = Some(node.clone());
        }
        if next != old {
            let mut port = p.clone();
            port.status = Some(next.clone());
            plan.status.push(port);
        }
        let vm_exists = vms.is_some_and(|v| v.exist.contains(&key));
        if next.bindings.is_empty() && !vm_exists && expired(uid.clone()) {
            plan.delete.push((ns, name, p.metadata.uid.clone()));
        }
    }
    since.retain(|k, _| seen.contains(k));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn router(name: &str, created: &str, subnets: &[(&str, &str)]) -> DistributedRouter {
        let subnets: Vec<_> = subnets
            .iter()
            .enumerate()
            .map(|(i, (s, nad))| {
                json!({"name": s, "cidr": format!("10.{i}.0.0/24"), "gateway": format!("10.{i}.0.1"),
                    "networkAttachment": nad})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
            "metadata": {"name": name, "namespace": "t", "uid": format!("uid-{name}"),
                "creationTimestamp": created},
            "spec": {"subnets": subnets}
        }))
        .unwrap()
    }

    fn nad(name: &str, ours: bool, config: &str) -> NetworkAttachmentDefinition {
        let labels = if ours {
            json!({nad::MANAGED_BY_LABEL: nad::MANAGED_BY})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "t", "labels": labels},
            "spec": {"config": config}
        }))
        .unwrap()
    }

    #[test]
    fn one_nad_per_subnet_and_foreign_ones_are_conflicts() {
        let r1 = router(
            "r1",
            "2026-01-01T00:00:00Z",
            &[("a", "net-a"), ("b", "t/net-b"), ("x", "other/net-x")],
        );
        let existing = [nad("net-b", false, "{}"), nad("old", true, "{}")];
        let plan = plan_nads(&[r1], &existing);
        let names: Vec<_> = plan.put.iter().map(|n| n.name_any()).collect();
        assert_eq!(
            names,
            ["net-a"],
            "the foreign net-b and another namespace's are not written"
        );
        let cfg: serde_json::Value =
            serde_json::from_str(plan.put[0].spec.config.as_deref().unwrap()).unwrap();
        assert_eq!(cfg["type"], "kube-dvr");
        assert_eq!(cfg["router"], "r1");
        assert_eq!(cfg["subnet"], "a");
        assert_eq!(plan.put[0].owner_references()[0].uid, "uid-r1");
        assert_eq!(plan.conflicts, BTreeSet::from(["t/net-b".to_string()]));
        assert_eq!(plan.delete, [("t".to_string(), "old".to_string())]);
    }

    #[test]
    fn an_unchanged_nad_is_not_rewritten_and_the_older_router_keeps_a_shared_name() {
        let r1 = router("r1", "2026-01-01T00:00:00Z", &[("a", "net-a")]);
        let r2 = router("r2", "2026-01-02T00:00:00Z", &[("a", "net-a")]);
        let none: &[NetworkAttachmentDefinition] = &[];
        let current = plan_nads(std::slice::from_ref(&r1), none).put;
        let plan = plan_nads(&[r2, r1], &current);
        assert!(plan.put.is_empty(), "{:?}", plan.put);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.conflicts, BTreeSet::from(["t/net-a".to_string()]));
    }

    #[test]
    fn ports_of_gone_pods_are_collected_after_the_grace() {
        let port = |name: &str, pod: &str, uid: &str, created: &str| -> Port {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "t", "creationTimestamp": created},
                "spec": {"router": "r", "subnet": "a", "network": "t/n", "ip": "10.0.0.5",
                    "mac": "02:00:00:00:00:05", "node": "n1", "pod": pod, "podUid": uid,
                    "containerId": "c", "interface": "net1"}
            }))
            .unwrap()
        };
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "alive", "namespace": "t", "uid": "u1"}}),
        )
        .unwrap();
        let done: Pod = serde_json::from_value(
            json!({"metadata": {"name": "done", "namespace": "t", "uid": "u2"},
                   "status": {"phase": "Succeeded"}}),
        )
        .unwrap();
        let old = "2026-01-01T00:00:00Z";
        let ports = [
            port("p1", "alive", "u1", old),
            port("p2", "alive", "u0", old),
            port("p3", "gone", "", old),
            port("p4", "gone", "", "2026-01-01T00:00:50Z"),
            port("p5", "done", "u2", old),
        ];
        let now: Timestamp = "2026-01-01T00:01:10Z".parse().unwrap();
        let stale: Vec<_> = stale_ports(&ports, &[pod, done], now)
            .into_iter()
            .map(|(_, n, _)| n)
            .collect();
        assert_eq!(stale, ["p2", "p3", "p5"]);
    }

    fn vm_port(name: &str, vm: &str, bindings: &[(&str, &str)], active: Option<&str>) -> Port {
        let bindings: Vec<_> = bindings
            .iter()
            .map(|(node, pod)| {
                json!({"node": node, "pod": pod, "containerId": format!("c-{pod}"),
                "interface": "net1"})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "t", "uid": format!("uid-{name}"),
                "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"router": "r", "subnet": "a", "network": "t/n", "ip": "10.0.0.9",
                "mac": "02:00:00:00:00:09", "vm": vm},
            "status": {"bindings": bindings, "activeNode": active}
        }))
        .unwrap()
    }

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "t", "uid": name}}))
            .unwrap()
    }

    fn plan1(
        port: &Port,
        pods: &[Pod],
        vms: Option<&Vms>,
        since: &mut BTreeMap<String, Timestamp>,
        now: Timestamp,
    ) -> VmPortPlan {
        plan_vm_ports(std::slice::from_ref(port), pods, vms, since, now)
    }

    #[test]
    fn a_vm_port_follows_its_instance_and_outlives_its_pods() {
        let t0: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let later = t0 + SignedDuration::from_secs(61);
        let key = |vm: &str| ("t".to_string(), vm.to_string());
        let migrating = vm_port("p1", "vm1", &[("n1", "src"), ("n2", "dst")], Some("n1"));
        let mut vms = Vms::default();
        vms.exist.insert(key("vm1"));
        vms.node.insert(key("vm1"), "n1".into());
        let mut since = BTreeMap::new();
        let pods = [pod("src"), pod("dst")];
        // The instance still on the source: nothing to write, not even
        // kept ports of pods that run.
        let none = plan1(&migrating, &pods, Some(&vms), &mut since, t0);
        assert_eq!(none, VmPortPlan::default());
        // Migration completed: the active node follows.
        vms.node.insert(key("vm1"), "n2".into());
        let plan = plan1(&migrating, &pods, Some(&vms), &mut since, t0);
        assert_eq!(plan.status.len(), 1);
        let p = &plan.status[0];
        assert_eq!(
            (p.name_any(), p.resource_version()),
            ("p1".into(), Some("7".into()))
        );
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.active_node.as_deref(), Some("n2"));
        assert_eq!(st.bindings.len(), 2, "both pods still run");
        // An instance on a node without a binding moves nothing.
        vms.node.insert(key("vm1"), "n3".into());
        let none = plan1(&migrating, &pods, Some(&vms), &mut since, t0);
        assert!(none.status.is_empty());
        // The source pod gone: its binding goes after the grace, not before.
        let only_dst = [pod("dst")];
        let plan = plan1(&migrating, &only_dst, Some(&vms), &mut since, t0);
        assert!(plan.status.is_empty(), "within the grace");
        let plan = plan1(&migrating, &only_dst, Some(&vms), &mut since, later);
        let kept: Vec<_> = plan.status[0]
            .status
            .as_ref()
            .unwrap()
            .bindings
            .iter()
            .map(|b| b.pod.as_str())
            .collect();
        assert_eq!(kept, ["dst"]);
        // Unbound while the VM exists (stopped, restarting): kept.
        let unbound = vm_port("p2", "vm1", &[], Some("n2"));
        let mut since = BTreeMap::new();
        for t in [t0, later] {
            let plan = plan1(&unbound, &only_dst, Some(&vms), &mut since, t);
            assert!(plan.delete.is_empty(), "the VM's address stays");
        }
        // The VM gone: deleted after the grace (UID-conditional).
        let gone = Vms::default();
        let mut since = BTreeMap::new();
        let plan = plan1(&unbound, &only_dst, Some(&gone), &mut since, t0);
        assert!(plan.delete.is_empty());
        let plan = plan1(&unbound, &only_dst, Some(&gone), &mut since, later);
        assert_eq!(
            plan.delete,
            [("t".into(), "p2".into(), Some("uid-p2".to_string()))]
        );
        // Pod Ports are not VM Ports' business, nor VM Ports stale_ports'.
        let stale = stale_ports(&[unbound], &only_dst, later);
        assert!(stale.is_empty(), "{stale:?}");
    }
}

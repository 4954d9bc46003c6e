//! Resolution: from the API objects (and pods and nodes) to the
//! [`ClusterView`] the node planner consumes, plus the desired status of every
//! kube-dvr object. The brain of the controller and of the lab; pure and
//! deterministic (no I/O, no clock: the caller passes `now`).
//!
//! Steps, each only using the ones before:
//! 1. **External networks** ([`external`]): validate CIDR, gateway, pools,
//!    attachment and node selector; attach nodes (vtep + ready + selector);
//!    allocate one `fg-` port address per attached node.
//! 2. **Routers** ([`routers`]): validate subnets (NADs of the router's own
//!    namespace only), routes, the external network reference and the
//!    namespace; allocate the router index and one VNI per subnet; resolve
//!    endpoints from kube-dvr's Port records (written by its agents when
//!    the CNI plugin attaches a pod; pods on their own namespace's NADs
//!    only).
//! 3. **Floating IPs and SNAT gateways** ([`floating`], [`snat`]): resolve
//!    router and external network; allocate external addresses from one
//!    shared space per network ([`addresses`]); resolve floating targets;
//!    allocate `sg-` ports; schedule (a floating IP on its endpoint's node, a
//!    SNAT gateway on an eligible node).
//!
//! ## Allocations persist in status
//! Everything allocated (router `index` and `subnets[].vni`, floating and
//! SNAT `address`, SNAT `activeNode` and `ports`, external `nodePorts`) is
//! read back from the object's current status and kept while still valid;
//! only what is missing is allocated. Resolving on its own output (statuses
//! copied back into the objects) changes nothing, and a restarted controller
//! resolves the objects as stored to the same result.
//!
//! Precedence when objects compete ("first come keeps it"): an existing
//! allocation in status first, then the older `creationTimestamp` (objects
//! without one last), then namespace/name.
//!
//! Objects whose spec is invalid keep (and reserve) what their status already
//! holds for routers (index, VNIs: so fixing a typo does not renumber
//! anything) but get nothing new and no view entry. A floating IP or SNAT
//! gateway holds an address exactly as long as its external network is
//! determined, exists, is valid and allows its namespace.
//!
//! ## Conditions
//! Each status carries `Valid`, `Allocated`, `Scheduled` (floating IPs and
//! SNAT gateways only) and `Ready` = all of those; routers also carry
//! `EndpointsResolved` (False with reason `DuplicateEndpointIP` when two
//! workloads claim one address; does not affect `Ready`). The controller
//! adds `Programmed` and ANDs it into `Ready`. `lastTransitionTime` is taken
//! from the object's current status when the condition's status did not
//! change, else it is [`ClusterInput::now`].
//!
//! ## Nodes
//! The view holds [`NodeFacts`] for every node that published a VTEP, ready
//! or not: a NotReady node keeps its east-west state (the kernel keeps
//! forwarding; removing it everywhere would cut traffic that may still flow).
//! Readiness matters for new placements: external attachment (new `fg-`
//! ports) and SNAT scheduling (failover). `fg-` allocations of nodes that
//! still match the network's selector are kept across NotReady periods.
mod addresses;
mod conds;
mod external;
mod floating;
mod held;
mod pools;
mod routers;
mod selector;
mod services;
mod snat;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ext;
#[cfg(test)]
mod tests_ns;
#[cfg(test)]
mod tests_services;
#[cfg(test)]
mod tests_xns;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::model::MacAddr;
use super::names;
use super::view::{ClusterView, NodeFacts, ObjectKey};
use crate::api;

pub use held::{Cursors, Held};
pub use services::BACKENDS_HEALTHY;

/// Condition type on routers: every workload address resolved to one
/// endpoint (False, reason `DuplicateEndpointIP`, when two claim one).
pub const ENDPOINTS_RESOLVED: &str = "EndpointsResolved";

/// Condition type on routers: every subnet's NetworkAttachmentDefinition is
/// kube-dvr's (False, reason `NetworkAttachmentConflict`, when one of that
/// name belongs to someone else; it is left alone).
pub const NETWORK_ATTACHMENTS: &str = "NetworkAttachments";

/// Everything resolution looks at.
#[derive(Clone, Debug, Default)]
pub struct ClusterInput {
    /// The kube-dvr objects, per kind (also reached through `Deref`:
    /// `input.routers`).
    pub objects: api::PerKind<api::Shared>,
    /// Shared: the controller keeps it across passes while no Port
    /// changes.
    pub pods: std::sync::Arc<Vec<PodInfo>>,
    pub nodes: Vec<NodeInfo>,
    /// `namespace/name` of NetworkAttachmentDefinitions a router subnet
    /// names that kube-dvr may not own (someone else's, or an older
    /// router's): reported as `NetworkAttachments=False`.
    pub nad_conflicts: std::collections::BTreeSet<String>,
    /// The `lastTransitionTime` of conditions that are new or flip (whole
    /// seconds: `metav1.Time` is serialized with second precision).
    pub now: Timestamp,
    /// Allocations of objects left out (being deleted): not free.
    pub held: Held,
    /// Where new router indexes and VNIs are searched from (next-fit);
    /// None: just above the highest value in use.
    pub cursors: Option<Cursors>,
    /// Labels of the pods of namespaces with LoadBalancers that select
    /// pods, where known (the controller); None (agents): the pods a
    /// LoadBalancer's status lists are its selected backends.
    pub pod_labels: Option<BTreeMap<ObjectKey, BTreeMap<String, String>>>,
}

impl std::ops::Deref for ClusterInput {
    type Target = api::PerKind<api::Shared>;
    fn deref(&self) -> &api::PerKind<api::Shared> {
        &self.objects
    }
}

impl std::ops::DerefMut for ClusterInput {
    fn deref_mut(&mut self) -> &mut api::PerKind<api::Shared> {
        &mut self.objects
    }
}

/// A pod as far as kube-dvr cares: where it runs and its secondary networks
/// (from its Ports, see `cluster::port_infos`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// `spec.nodeName`; None while unscheduled.
    pub node: Option<String>,
    pub networks: Vec<PodNetwork>,
}

/// One address of a pod on a secondary network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    /// `namespace/nad-name` of the subnet's NAD (a bare name is taken to
    /// be in the pod's namespace).
    pub network: String,
    pub interface: Option<String>,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Carried here, but the traffic goes to another node's copy (a VM's
    /// binding that is not the active one: a live migration's target).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
}

/// A node as far as kube-dvr cares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Published by the node's agent; None = agent not up yet.
    pub vtep: Option<Ipv4Addr>,
    /// The node's `Ready` condition.
    pub ready: bool,
    /// SnatGateways (`namespace/name`) its agent says it serves now.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub serving: BTreeSet<String>,
    /// Backends its agent's health checks find failing, as
    /// `namespace/loadbalancer=ip`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub lb_down: BTreeSet<String>,
}

/// The result of [`resolve`]: the view for the planner and the desired status
/// of every object in the input (keyed by namespace/name; external networks
/// by name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolution {
    pub view: ClusterView,
    /// Desired status per object: allocations plus conditions `Valid`,
    /// `Allocated`, `Scheduled`, `Ready` (the controller merges agents'
    /// `Programmed`, ANDs it into `Ready`, and sets `observedGeneration`,
    /// which is preset here to `metadata.generation`).
    pub routers: BTreeMap<ObjectKey, api::DistributedRouterStatus>,
    pub floating_ips: BTreeMap<ObjectKey, api::FloatingIPStatus>,
    pub snat_gateways: BTreeMap<ObjectKey, api::SnatGatewayStatus>,
    pub external_networks: BTreeMap<String, api::ExternalNetworkStatus>,
    pub firewalls: BTreeMap<ObjectKey, api::RouterFirewallStatus>,
    pub port_forwardings: BTreeMap<ObjectKey, api::PortForwardingStatus>,
    pub load_balancers: BTreeMap<ObjectKey, api::LoadBalancerStatus>,
    /// The cursors after this resolution's allocations.
    pub cursors: Cursors,
}

/// Nodes and pods, indexed.
pub(super) struct Cluster<'a> {
    pub input: &'a ClusterInput,
    pub nodes: BTreeMap<&'a str, &'a NodeInfo>,
    /// Addresses of pods on nodes with a VTEP, by qualified NAD name, pods
    /// in namespace/name order ("first" among duplicate endpoints); only
    /// NADs of the pod's own namespace.
    pub by_nad: BTreeMap<String, Vec<(&'a PodInfo, &'a str, &'a PodNetwork)>>,
}

impl<'a> Cluster<'a> {
    fn new(input: &'a ClusterInput) -> Self {
        let nodes: BTreeMap<&str, &NodeInfo> =
            input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut pods: Vec<&PodInfo> = input.pods.iter().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut by_nad: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for pod in pods {
            // Unscheduled pods and pods on nodes whose agent is not up
            // cannot be reached: they are no endpoints.
            let Some(node) = pod.node.as_deref() else {
                continue;
            };
            if nodes.get(node).and_then(|n| n.vtep).is_none() {
                continue;
            }
            for net in &pod.networks {
                // A pod on another namespace's NAD (Multus allows it unless
                // its namespace isolation is on) is no endpoint: routers
                // only use their own namespace's NADs, so it would otherwise
                // join, and be named in the status of, another tenant.
                let nad = qualify(&pod.namespace, &net.network);
                if nad_namespace(&nad) != pod.namespace {
                    continue;
                }
                by_nad.entry(nad).or_default().push((pod, node, net));
            }
        }
        Cluster {
            input,
            nodes,
            by_nad,
        }
    }

    /// The VTEP of `node`, if it exists and published one.
    pub fn vtep(&self, node: &str) -> Option<Ipv4Addr> {
        self.nodes.get(node).and_then(|n| n.vtep)
    }
}

/// `name` → `namespace/name`; `ns/name` unchanged.
pub fn qualify(namespace: &str, nad: &str) -> String {
    if nad.contains('/') {
        nad.to_string()
    } else {
        format!("{namespace}/{nad}")
    }
}

/// The namespace of a qualified `namespace/name` NAD reference.
pub(super) fn nad_namespace(qualified: &str) -> &str {
    qualified.split_once('/').map_or("", |(ns, _)| ns)
}

/// Resolve the cluster: validate, allocate, resolve endpoints, schedule.
pub fn resolve(input: &ClusterInput) -> Resolution {
    let cluster = Cluster::new(input);
    let mut exts = external::resolve(&cluster);
    let (routers, cursors) = routers::resolve(&cluster, &exts);
    let north = floating::NorthSouth::resolve(&cluster, &mut exts, &routers);

    let mut out = Resolution {
        cursors,
        ..Default::default()
    };
    out.view.nodes = input
        .nodes
        .iter()
        .filter_map(|n| {
            let vtep = n.vtep?;
            Some((
                n.name.clone(),
                NodeFacts {
                    vtep,
                    dvr_mac: names::dvr_mac(vtep),
                },
            ))
        })
        .collect();
    for e in exts.values() {
        if let Some(v) = e.view(&cluster) {
            out.view.external_networks.insert(e.name.clone(), v);
        }
        out.external_networks
            .insert(e.name.clone(), e.status(input.now));
    }
    for r in &routers {
        if let Some(v) = &r.view {
            out.view.routers.push(v.clone());
        }
        let snat_nodes = north.snat_nodes_of(&r.key);
        out.routers.insert(
            r.key.clone(),
            r.status(&snat_nodes, &input.nad_conflicts, input.now),
        );
    }
    out.view.routers.sort_by(|a, b| a.key.cmp(&b.key));
    north.finish(&mut out, &cluster, input.now);
    out
}

//! SnatGateway: the centralized default SNAT of a router, active on one
//! gateway node at a time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::validation::{
    DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN,
    IPV4_MAX, IPV4_PATTERN, MAC_MAX, MAC_PATTERN, MAX_CONDITIONS, MAX_SUBNETS,
};

/// At most this many candidate nodes per SnatGateway (the active one and
/// its warm standbys).
pub const MAX_CANDIDATES: usize = 3;

/// Desired state of a SnatGateway.
// Several `printcolumn(..)` items repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "SnatGateway",
    doc = "Default SNAT for a DistributedRouter: traffic from its subnets to the outside that has no floating IP leaves through one SNAT namespace on the active gateway node, with the SNAT address as source. Fails over to another eligible node.",
    namespaced,
    shortname = "dsnat",
    category = "kubedvr",
    status = "SnatGatewayStatus",
    derive = "PartialEq",
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.activeNode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SnatGatewaySpec {
    /// The DistributedRouter (in the same namespace) to provide SNAT for.
    /// Immutable.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("router is immutable"))]
    pub router: String,

    /// The ExternalNetwork to SNAT to. Absent: the router's external network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub external_network: Option<String>,

    /// The requested SNAT address, inside the external network's snat
    /// pool (`spec.pools.snat`): an address outside it is refused with
    /// reason `AddressOutsidePool`. Absent: one is allocated from that pool
    /// (see `status.address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// Gateway-eligible nodes (also limited to nodes attached to the
    /// external network). Absent: every attached node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// Observed state of a SnatGateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnatGatewayStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current conditions: `Ready`, `Valid`, `Allocated`, `Scheduled`,
    /// `Programmed`.
    #[serde(default)]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The SNAT address (requested or allocated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// The node where the SNAT namespace is currently active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub active_node: Option<String>,

    /// The nodes that keep this gateway programmed, in failover order: the
    /// planned active node (`activeNode`) first, then up to two warm
    /// standbys. Every node of the router probes them over the underlay
    /// and sends SNAT traffic to the first one that answers and serves, so
    /// failover needs neither the controller nor the API server. The order
    /// only changes when the active node changes (no preemptive failback);
    /// a candidate that became ineligible is replaced after 5 minutes.
    #[serde(default)]
    #[schemars(length(max = MAX_CANDIDATES))]
    pub candidates: Vec<SnatCandidateStatus>,

    /// The SNAT namespace's port (`sg-`) on each of the router's subnets.
    #[serde(default)]
    #[schemars(length(max = MAX_SUBNETS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["subnet".into()]))]
    pub ports: Vec<SnatPortStatus>,
}

/// One candidate node of a SnatGateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnatCandidateStatus {
    /// The node's name.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: String,

    /// Since when the node is not eligible (not Ready, agent down, no
    /// longer attached or selected); absent while it is. A candidate is
    /// replaced once this is 5 minutes old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ineligible_since: Option<Time>,
}

/// The SNAT namespace's port on one subnet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SnatPortStatus {
    /// The router subnet's name.
    #[schemars(length(min = 1, max = DNS1123_LABEL_MAX), pattern(DNS1123_LABEL_PATTERN))]
    pub subnet: String,

    /// The port's address, from the subnet; routers send the subnet's
    /// default-routed traffic to it.
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub ip: String,

    /// The port's MAC address, stable across failovers.
    #[schemars(length(max = MAC_MAX), pattern(MAC_PATTERN), extend("format" = "mac"))]
    pub mac: String,
}

//! FloatingIP: a 1:1 NAT between an external address and a fixed address on
//! a router's subnet, served by the node where the target runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::validation::{
    DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN, IPV4_MAX, IPV4_PATTERN, MAC_MAX, MAC_PATTERN,
    MAX_CONDITIONS, NAD_REF_MAX, NAD_REF_PATTERN,
};

/// Desired state of a FloatingIP.
// Several `printcolumn(..)` items repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "FloatingIP",
    doc = "A floating IP: an address on an external network that is translated 1:1 to a workload's fixed address behind a DistributedRouter. The node that runs the workload answers ARP for it and does the NAT.",
    namespaced,
    shortname = "dfip",
    category = "kubedvr",
    status = "FloatingIPStatus",
    derive = "PartialEq",
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address"),
    printcolumn(name = "Fixed-IP", type_ = "string", json_path = ".status.fixedIP"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
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
pub struct FloatingIPSpec {
    /// The DistributedRouter (in the same namespace) the target sits behind.
    /// Immutable.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("router is immutable"))]
    pub router: String,

    /// The ExternalNetwork the address comes from. Absent: the router's
    /// external network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub external_network: Option<String>,

    /// The requested floating address, inside the external network's floating
    /// pool (`spec.pools.floating`): an address outside it is refused with
    /// reason `AddressOutsidePool`. Absent: one is allocated from that pool
    /// (see `status.address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// What the floating IP translates to.
    pub target: FloatingTarget,
}

/// The target of a floating IP: exactly one of `fixedIP` and `pod`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.fixedIP) != has(self.pod)")
    .message("exactly one of fixedIP or pod must be set"))]
#[serde(rename_all = "camelCase")]
pub struct FloatingTarget {
    /// A fixed IPv4 address on one of the router's subnets.
    #[serde(rename = "fixedIP", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub fixed_ip: Option<String>,

    /// A pod (in the same namespace) whose address on one of the router's
    /// subnets is the target; follows the pod when it is recreated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodTarget>,
}

/// A pod as floating-IP target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTarget {
    /// The pod's name.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,

    /// The NetworkAttachmentDefinition (`name` or `namespace/name`) that
    /// selects the pod's interface when it has several on the router's
    /// subnets. Absent: the pod must have exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = NAD_REF_MAX), pattern(NAD_REF_PATTERN))]
    pub network: Option<String>,
}

/// Observed state of a FloatingIP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FloatingIPStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current conditions: `Ready`, `Valid`, `Allocated`, `Scheduled`,
    /// `Programmed`.
    #[serde(default)]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The floating address (requested or allocated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// The resolved fixed address the floating address translates to.
    #[serde(rename = "fixedIP", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub fixed_ip: Option<String>,

    /// The node that serves the floating IP (where the target runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: Option<String>,

    /// The MAC address that answers ARP for the floating address (the serving
    /// node's `fg-` port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAC_MAX), pattern(MAC_PATTERN), extend("format" = "mac"))]
    pub mac: Option<String>,
}

//! ExternalNetwork: a provider network outside the cluster that routers use
//! for floating IPs and SNAT (Neutron's external network).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::validation::{
    DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN,
    IFNAME_MAX, IFNAME_PATTERN, IPV4_CIDR_MAX, IPV4_CIDR_PATTERN, IPV4_MAX, IPV4_PATTERN,
    IPV4_RANGE_OR_CIDR_MAX, IPV4_RANGE_OR_CIDR_PATTERN, MAC_MAX, MAC_PATTERN,
    MAX_ALLOWED_NAMESPACES, MAX_CONDITIONS, MAX_NODES, MAX_POOL_ENTRIES,
};

/// Desired state of an ExternalNetwork.
// Several `printcolumn(..)` items repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "ExternalNetwork",
    doc = "An external (provider) IPv4 network reachable from the cluster's nodes. Floating IPs, SNAT addresses and each node's floating-IP gateway port (`fg-`) are allocated from its pools.",
    shortname = "extnet",
    category = "kubedvr",
    status = "ExternalNetworkStatus",
    derive = "PartialEq",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".spec.gateway"),
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
#[x_kube(validation = Rule::new(
    "cidr(self.cidr).containsIP(self.gateway)"
).message("gateway must be inside cidr").field_path(".gateway"))]
#[x_kube(validation = Rule::new(
    "self.pools.floating.all(p, p.contains('-') \
       ? p.split('-').all(a, cidr(self.cidr).containsIP(a)) \
       : cidr(self.cidr).containsCIDR(p))"
).message("every floating pool entry must be inside cidr").field_path(".pools.floating"))]
#[x_kube(validation = Rule::new(
    "self.pools.snat.all(p, p.contains('-') \
       ? p.split('-').all(a, cidr(self.cidr).containsIP(a)) \
       : cidr(self.cidr).containsCIDR(p))"
).message("every snat pool entry must be inside cidr").field_path(".pools.snat"))]
#[x_kube(validation = Rule::new(
    "self.pools.nodePorts.all(p, p.contains('-') \
       ? p.split('-').all(a, cidr(self.cidr).containsIP(a)) \
       : cidr(self.cidr).containsCIDR(p))"
).message("every nodePorts pool entry must be inside cidr").field_path(".pools.nodePorts"))]
#[serde(rename_all = "camelCase")]
pub struct ExternalNetworkSpec {
    /// The external network's IPv4 CIDR in canonical form, e.g.
    /// `203.0.113.0/24`. Immutable.
    #[schemars(length(max = IPV4_CIDR_MAX), pattern(IPV4_CIDR_PATTERN), extend("format" = "cidr"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cidr is immutable"))]
    #[x_kube(validation = Rule::new("cidr(self) == cidr(self).masked()")
        .message("cidr must be a network address (host bits zero), e.g. 203.0.113.0/24"))]
    #[x_kube(validation = Rule::new("cidr(self).prefixLength() <= 30")
        .message("cidr must have a prefix length of at most 30"))]
    pub cidr: String,

    /// The upstream gateway's IPv4 address; must be inside `cidr`. Nodes'
    /// floating-IP namespaces and SNAT namespaces route to it by default.
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub gateway: String,

    /// Address pools inside `cidr`. Absent: all pools empty (only explicitly
    /// requested addresses can be used).
    #[serde(default)]
    pub pools: ExternalPools,

    /// How nodes are attached to the external network.
    pub attachment: ExternalAttachment,

    /// Which nodes are attached to this network (and so may host floating-IP
    /// gateway ports and SNAT gateways for it). Absent: all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Namespaces whose routers, FloatingIPs and SnatGateways may use this
    /// network. Empty: all namespaces.
    #[serde(default)]
    #[schemars(
        length(max = MAX_ALLOWED_NAMESPACES),
        inner(length(max = DNS1123_LABEL_MAX), pattern(DNS1123_LABEL_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_namespaces: Vec<String>,
}

/// Address pools of an ExternalNetwork. Each entry is an inclusive IPv4 range
/// `A-B` (e.g. `203.0.113.10-203.0.113.99`) or a CIDR (e.g.
/// `203.0.113.128/25`) inside the network's `cidr`. The pools should not
/// overlap each other or contain the gateway; the controller reports
/// `Valid=False` when they do.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPools {
    /// Addresses for FloatingIPs that do not request a specific address.
    #[serde(default)]
    #[schemars(
        length(max = MAX_POOL_ENTRIES),
        inner(length(max = IPV4_RANGE_OR_CIDR_MAX), pattern(IPV4_RANGE_OR_CIDR_PATTERN))
    )]
    pub floating: Vec<String>,

    /// Addresses for SnatGateways that do not request a specific address.
    #[serde(default)]
    #[schemars(
        length(max = MAX_POOL_ENTRIES),
        inner(length(max = IPV4_RANGE_OR_CIDR_MAX), pattern(IPV4_RANGE_OR_CIDR_PATTERN))
    )]
    pub snat: Vec<String>,

    /// Addresses for the nodes' floating-IP gateway ports (`fg-`), one per
    /// attached node that hosts floating IPs.
    #[serde(default)]
    #[schemars(
        length(max = MAX_POOL_ENTRIES),
        inner(length(max = IPV4_RANGE_OR_CIDR_MAX), pattern(IPV4_RANGE_OR_CIDR_PATTERN))
    )]
    pub node_ports: Vec<String>,
}

/// How a node reaches the external network. Exactly one of `bridge` and
/// `interface`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.bridge) != has(self.interface)")
    .message("exactly one of bridge or interface must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ExternalAttachment {
    /// Name of an existing Linux bridge on each node that is connected to the
    /// external network; the agent plugs veth pairs into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = IFNAME_MAX), pattern(IFNAME_PATTERN))]
    pub bridge: Option<String>,

    /// Name of the host interface on each node that is connected to the
    /// external network; the agent attaches macvlan ports to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = IFNAME_MAX), pattern(IFNAME_PATTERN))]
    pub interface: Option<String>,
}

/// Observed state of an ExternalNetwork.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExternalNetworkStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current conditions: `Ready`, `Valid`, `Allocated`.
    #[serde(default)]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Persisted allocations of floating-IP gateway port (`fg-`) addresses,
    /// one per node.
    #[serde(default)]
    #[schemars(length(max = MAX_NODES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub node_ports: Vec<NodePortStatus>,

    /// Number of addresses from the floating pool in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_allocated: Option<u32>,

    /// Number of addresses from the snat pool in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_allocated: Option<u32>,
}

/// A node's floating-IP gateway port on an external network.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodePortStatus {
    /// The node's name.
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: String,

    /// The address of the node's `fg-` port, from the nodePorts pool.
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: String,

    /// The MAC address of the node's `fg-` port, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAC_MAX), pattern(MAC_PATTERN), extend("format" = "mac"))]
    pub mac: Option<String>,
}

//! DistributedRouter: a tenant router present on every node that hosts its
//! subnets' endpoints (Neutron's DVR router).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::validation::{
    DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN,
    IPV4_CIDR_MAX, IPV4_CIDR_PATTERN, IPV4_MAX, IPV4_PATTERN, MAC_MAX, MAC_PATTERN, MAX_CONDITIONS,
    MAX_NODES, MAX_ROUTES, MAX_SUBNETS, NAD_REF_MAX, NAD_REF_PATTERN,
};

/// Desired state of a DistributedRouter.
// Several `printcolumn(..)` items repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "DistributedRouter",
    doc = "A distributed router connecting tenant subnets. Each subnet is an L2 overlay segment (one VXLAN VNI) whose members are the pods (and VMs) attached through a Multus NetworkAttachmentDefinition; traffic between the subnets is routed on the node where it originates.",
    namespaced,
    shortname = "dvr",
    category = "kubedvr",
    status = "DistributedRouterStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Subnets",
        type_ = "string",
        json_path = ".spec.subnets[*].cidr"
    ),
    printcolumn(
        name = "External",
        type_ = "string",
        json_path = ".spec.externalNetwork"
    ),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.nodes[*]"),
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
    "self.routes.all(r, self.subnets.exists(s, cidr(s.cidr).containsIP(r.nexthop)))"
).message("every route's nexthop must be inside one of the router's subnets").field_path(".routes"))]
#[serde(rename_all = "camelCase")]
pub struct DistributedRouterSpec {
    /// The router's subnets (at most 64). Names are unique; CIDRs must not
    /// overlap.
    #[serde(default)]
    #[schemars(length(max = MAX_SUBNETS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("subnet names must be unique"))]
    #[x_kube(validation = Rule::new(
        "self.all(a, self.all(b, a.name == b.name || \
           !(cidr(a.cidr).containsCIDR(b.cidr) || cidr(b.cidr).containsCIDR(a.cidr))))"
    ).message("subnet CIDRs must not overlap"))]
    pub subnets: Vec<RouterSubnet>,

    /// Extra static routes in the router (Neutron's extra routes), each via a
    /// next hop on one of its subnets.
    #[serde(default)]
    #[schemars(length(max = MAX_ROUTES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["destination".into(), "nexthop".into()]))]
    pub routes: Vec<ExtraRoute>,

    /// Name of the ExternalNetwork that is the router's gateway to the
    /// outside; FloatingIPs and the SnatGateway of this router use it unless
    /// they name another. Absent: no north-south traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub external_network: Option<String>,
}

/// A tenant subnet attached to a router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("cidr(self.cidr).containsIP(self.gateway)")
    .message("gateway must be inside cidr").field_path(".gateway"))]
#[x_kube(validation = Rule::new("self.gateway != string(cidr(self.cidr).ip())")
    .message("gateway must not be the subnet's network address").field_path(".gateway"))]
#[serde(rename_all = "camelCase")]
pub struct RouterSubnet {
    /// The subnet's name, unique in the router (a DNS-1123 label).
    #[schemars(length(min = 1, max = DNS1123_LABEL_MAX), pattern(DNS1123_LABEL_PATTERN))]
    pub name: String,

    /// The subnet's IPv4 CIDR in canonical form, e.g. `10.0.1.0/24`; prefix
    /// length at most 30.
    #[schemars(length(max = IPV4_CIDR_MAX), pattern(IPV4_CIDR_PATTERN), extend("format" = "cidr"))]
    #[x_kube(validation = Rule::new("cidr(self) == cidr(self).masked()")
        .message("cidr must be a network address (host bits zero), e.g. 10.0.1.0/24"))]
    #[x_kube(validation = Rule::new("cidr(self).prefixLength() <= 30")
        .message("cidr must have a prefix length of at most 30"))]
    pub cidr: String,

    /// The router's address on this subnet, inside `cidr`: the default
    /// gateway of the subnet's workloads (the `qr-` port on every node).
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub gateway: String,

    /// The Multus NetworkAttachmentDefinition whose pods join this subnet:
    /// `name` or `namespace/name`, in the router's own namespace (another
    /// namespace's is refused: Valid=False, CrossNamespaceAttachment).
    #[schemars(length(min = 1, max = NAD_REF_MAX), pattern(NAD_REF_PATTERN))]
    pub network_attachment: String,
}

/// A static route in a router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExtraRoute {
    /// Destination IPv4 CIDR in canonical form, e.g. `192.168.0.0/16`.
    #[schemars(length(max = IPV4_CIDR_MAX), pattern(IPV4_CIDR_PATTERN), extend("format" = "cidr"))]
    #[x_kube(validation = Rule::new("cidr(self) == cidr(self).masked()")
        .message("destination must be a network address (host bits zero)"))]
    pub destination: String,

    /// Next-hop IPv4 address, on one of the router's subnets.
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub nexthop: String,
}

/// Observed state of a DistributedRouter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DistributedRouterStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current conditions: `Ready`, `Valid`, `Allocated`, `Programmed`.
    #[serde(default)]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Persisted per-subnet allocations (VNI, gateway MAC).
    #[serde(default)]
    #[schemars(length(max = MAX_SUBNETS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub subnets: Vec<SubnetStatus>,

    /// The router's cluster-unique index; kernel names such as `rfp-<index>`
    /// derive from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,

    /// The router's link-local /31 (from 169.254.64.0/18) for the
    /// `rfp-`/`fpr-` veth pair between the router and floating-IP namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_CIDR_MAX), pattern(IPV4_CIDR_PATTERN), extend("format" = "cidr"))]
    pub link_local: Option<String>,

    /// Nodes that host the router (nodes with endpoints on its subnets, and
    /// its SNAT node).
    #[serde(default)]
    #[schemars(
        length(max = MAX_NODES),
        inner(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub nodes: Vec<String>,

    /// Nodes whose agent reported the router's current generation as
    /// programmed.
    #[serde(default)]
    #[schemars(
        length(max = MAX_NODES),
        inner(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub programmed_nodes: Vec<String>,
}

/// Allocations for one subnet of a router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    /// The subnet's name (as in the spec).
    #[schemars(length(min = 1, max = DNS1123_LABEL_MAX), pattern(DNS1123_LABEL_PATTERN))]
    pub name: String,

    /// The subnet's VXLAN network identifier, unique in the cluster.
    #[schemars(range(min = 1, max = 16_777_215))]
    pub vni: u32,

    /// The MAC address of the router's gateway port (`qr-`) on this subnet,
    /// the same on every node.
    #[schemars(length(max = MAC_MAX), pattern(MAC_PATTERN), extend("format" = "mac"))]
    pub gateway_mac: String,

    /// The subnet's CIDR the allocation was made for.
    #[schemars(length(max = IPV4_CIDR_MAX), pattern(IPV4_CIDR_PATTERN), extend("format" = "cidr"))]
    pub cidr: String,
}

//! PortForwarding: external address:port → a workload's port, central in
//! the router's SNAT gateway (Neutron's floating-IP port forwarding).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::floating_ip::FloatingTarget;
use super::services::{PortRange, Protocol};
use super::validation::{
    DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN, IPV4_MAX, IPV4_PATTERN, MAX_CONDITIONS,
};

/// At most this many forwards per PortForwarding.
pub const MAX_FORWARDS: u32 = 256;
/// At most this many external ports per PortForwarding, ranges expanded
/// (each is one element of the gateway's map).
pub const MAX_FORWARDED_PORTS: usize = 4096;

/// Desired state of a PortForwarding.
// Several `printcolumn(..)` items repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "PortForwarding",
    doc = "Port forwarding for a DistributedRouter: external address:port (TCP or UDP, single ports or ranges) translated to a workload's fixed IP and port. Runs centrally in the router's SNAT gateway (on the SNAT address, or a dedicated address from the external network's floating pool) and follows its failover. A target that has a FloatingIP is refused: its replies would leave through the floating-IP path.",
    namespaced,
    shortname = "dpf",
    category = "kubedvr",
    status = "PortForwardingStatus",
    derive = "PartialEq",
    printcolumn(name = "Router", type_ = "string", json_path = ".spec.router"),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address"),
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
#[x_kube(validation = Rule::new("!has(self.address) || self.dedicatedAddress")
    .message("address needs dedicatedAddress: true (the SNAT address is the SnatGateway's)"))]
#[serde(rename_all = "camelCase")]
pub struct PortForwardingSpec {
    /// The DistributedRouter (in the same namespace) whose SNAT gateway
    /// forwards. Immutable.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("router is immutable"))]
    pub router: String,

    /// Forward on an address of its own, from the floating pool of the
    /// SNAT gateway's external network (`address`, or one allocated), held
    /// by this object alone. false (default): on the SNAT address, whose
    /// ports the router's PortForwardings share (first come keeps a port).
    #[serde(default)]
    pub dedicated_address: bool,

    /// The requested dedicated address (with `dedicatedAddress`), inside
    /// the floating pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// The forwards.
    #[schemars(length(min = 1, max = MAX_FORWARDS))]
    pub forwards: Vec<Forward>,
}

/// One forward: `protocol` `externalPorts` → `target`:`internalPort`
/// (a range maps port by port onto `internalPort` and up).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "!has(self.externalPorts.endPort) || self.internalPort + (self.externalPorts.endPort - self.externalPorts.port) <= 65535"
).message("the internal range ends above 65535"))]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,

    /// The external port or range.
    pub external_ports: PortRange,

    /// The workload's port (the first of the range).
    #[schemars(range(min = 1, max = 65535))]
    pub internal_port: i32,

    /// The workload: exactly one of `fixedIP` and `pod`, on one of the
    /// router's subnets.
    pub target: FloatingTarget,
}

/// Observed state of a PortForwarding.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PortForwardingStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current conditions: `Ready`, `Valid`, `Allocated`, `Scheduled`,
    /// `Programmed`.
    #[serde(default)]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The external address forwarded (the SNAT address or the dedicated
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// The node whose SNAT gateway forwards now (its active node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: Option<String>,

    /// The resolved target of each forward, in spec order.
    #[serde(default, rename = "fixedIPs")]
    #[schemars(length(max = MAX_FORWARDS))]
    pub fixed_ips: Vec<String>,
}

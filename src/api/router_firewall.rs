//! RouterFirewall: north-south policy for one DistributedRouter, enforced
//! hybrid: on every node on the floating-IP path, on the gateway on the
//! SNAT path.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::services::PortRange;
use super::validation::{
    DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN,
    IPV4_CIDR_MAX, IPV4_CIDR_PATTERN, MAX_CONDITIONS, MAX_NODES,
};

/// At most this many rules per direction.
pub const MAX_FIREWALL_RULES: u32 = 2048;
/// At most this many port ranges, and this many CIDRs, per rule.
pub const MAX_RULE_ITEMS: u32 = 32;

/// Desired state of a RouterFirewall.
// Several `printcolumn(..)` items repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "RouterFirewall",
    doc = "North-south firewall of a DistributedRouter: ordered ingress and egress rules and a default action, enforced statefully on every node where the router's floating IPs are served and on its SNAT gateway. Never applies to east-west traffic between the router's subnets. At most one per router.",
    namespaced,
    shortname = "dfw",
    category = "kubedvr",
    status = "RouterFirewallStatus",
    derive = "PartialEq",
    printcolumn(name = "Router", type_ = "string", json_path = ".spec.router"),
    printcolumn(name = "Default", type_ = "string", json_path = ".spec.defaultAction"),
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
#[serde(rename_all = "camelCase")]
pub struct RouterFirewallSpec {
    /// The DistributedRouter (in the same namespace) this policy is for.
    /// Immutable.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("router is immutable"))]
    pub router: String,

    /// What happens to a new flow no rule matches, in either direction.
    /// Replies of allowed flows are always allowed (the firewall is
    /// stateful).
    #[serde(default)]
    pub default_action: FirewallAction,

    /// Rules for flows from the outside to the router's workloads (through
    /// a floating IP or a port forwarding), in order: the first match
    /// decides. `cidrs` are source addresses; `ports` the workload's
    /// destination ports (after any port forwarding's translation).
    #[serde(default)]
    #[schemars(length(max = MAX_FIREWALL_RULES))]
    pub ingress: Vec<FirewallRule>,

    /// Rules for flows from the router's workloads to the outside (through
    /// a floating IP or the SNAT gateway), in order: the first match
    /// decides. `cidrs` are destination addresses, `ports` destination
    /// ports.
    #[serde(default)]
    #[schemars(length(max = MAX_FIREWALL_RULES))]
    pub egress: Vec<FirewallRule>,
}

/// Allow or deny.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FirewallAction {
    Allow,
    #[default]
    Deny,
}

/// Protocol a firewall rule matches.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirewallProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "ICMP")]
    Icmp,
}

/// One firewall rule. Every field left out matches anything.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "!has(self.ports) || size(self.ports) == 0 || (has(self.protocol) && self.protocol != 'ICMP')"
).message("ports need protocol TCP or UDP"))]
#[serde(rename_all = "camelCase")]
pub struct FirewallRule {
    /// A name for the rule (shown in errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_LABEL_MAX), pattern(DNS1123_LABEL_PATTERN))]
    pub name: Option<String>,

    /// What to do with a matching new flow.
    pub action: FirewallAction,

    /// The protocol. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<FirewallProtocol>,

    /// Destination ports or ranges (TCP and UDP only). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULE_ITEMS))]
    pub ports: Vec<PortRange>,

    /// The remote side's addresses (sources for ingress, destinations for
    /// egress), canonical CIDRs. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULE_ITEMS))]
    #[x_kube(validation = Rule::new("self.all(c, cidr(c) == cidr(c).masked())")
        .message("cidrs must be canonical (no host bits set)"))]
    pub cidrs: Vec<FirewallCidr>,
}

/// A canonical IPv4 CIDR.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct FirewallCidr(
    #[schemars(length(max = IPV4_CIDR_MAX), pattern(IPV4_CIDR_PATTERN))] pub String,
);

/// Observed state of a RouterFirewall.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouterFirewallStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current conditions: `Ready`, `Valid`, `Programmed`.
    #[serde(default)]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The nodes that enforce the policy: where the router's floating IPs
    /// are served and its SNAT gateway's candidates.
    #[serde(default)]
    #[schemars(length(max = MAX_NODES))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub nodes: Vec<String>,
}

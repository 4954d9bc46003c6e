//! LoadBalancer: a virtual IP with ports and health-checked backends,
//! central in the router's SNAT gateway (and its failover).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::services::Protocol;
use super::validation::{
    DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN,
    IPV4_MAX, IPV4_PATTERN, MAX_CONDITIONS, NAD_REF_MAX, NAD_REF_PATTERN,
};

/// At most this many ports per LoadBalancer.
pub const MAX_LB_PORTS: u32 = 16;
/// At most this many backends per LoadBalancer.
pub const MAX_BACKENDS: u32 = 256;

/// Desired state of a LoadBalancer.
// Several `printcolumn(..)` items repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "LoadBalancer",
    doc = "A load balancer for a DistributedRouter's workloads: a virtual IP on the external network (from its floating pool) or on one of the router's subnets (for internal clients), whose ports are spread over backends chosen by pod selector or fixed IPs. Runs centrally in the router's SNAT gateway (and follows its failover); the serving node health-checks every backend with a TCP connect and takes failing ones out.",
    namespaced,
    shortname = "dlb",
    category = "kubedvr",
    status = "LoadBalancerStatus",
    derive = "PartialEq",
    printcolumn(name = "Router", type_ = "string", json_path = ".spec.router"),
    printcolumn(name = "VIP", type_ = "string", json_path = ".status.address"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Healthy", type_ = "string", json_path = ".status.healthy"),
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
pub struct LoadBalancerSpec {
    /// The DistributedRouter (in the same namespace) whose SNAT gateway
    /// balances. Immutable.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("router is immutable"))]
    pub router: String,

    /// The router subnet the virtual IP is on (internal clients only).
    /// Absent: on the SNAT gateway's external network, from its floating
    /// pool. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_LABEL_MAX), pattern(DNS1123_LABEL_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("subnet is immutable"))]
    pub subnet: Option<String>,

    /// The requested virtual IP (in the floating pool, or a free address
    /// of `subnet`). Absent: one is allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// The ports the virtual IP serves.
    #[schemars(length(min = 1, max = MAX_LB_PORTS))]
    #[x_kube(validation = Rule::new(
        "self.all(a, self.exists_one(b, b.protocol == a.protocol && b.port == a.port))"
    ).message("protocol and port must be unique"))]
    pub ports: Vec<LoadBalancerPort>,

    /// The backends: pods (of this namespace) matching `selector`, plus
    /// `fixedIPs`.
    pub backends: Backends,

    /// How backends are checked. Absent: TCP connect to each port's
    /// `targetPort` every 5 s, out after 2 failures, back after 2 successes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// `None` (default): each new connection goes to a random healthy
    /// backend. `ClientIP`: connections of one client address go to the
    /// same backend while the set of healthy backends does not change.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
}

/// One port of the virtual IP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerPort {
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,

    /// The port on the virtual IP.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The backends' port. Absent: `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
}

impl LoadBalancerPort {
    /// The backends' port (`targetPort`, else `port`).
    pub fn target(&self) -> i32 {
        self.target_port.unwrap_or(self.port)
    }
}

/// Which workloads receive the traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.selector) || (has(self.fixedIPs) && size(self.fixedIPs) > 0)")
    .message("name a selector or fixedIPs"))]
#[serde(rename_all = "camelCase")]
pub struct Backends {
    /// Pods of this namespace with these labels, at their address on one of
    /// the router's subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// The NetworkAttachmentDefinition (`name` or `namespace/name`) that
    /// picks a selected pod's interface when it has several on the router's
    /// subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = NAD_REF_MAX), pattern(NAD_REF_PATTERN))]
    pub network: Option<String>,

    /// Fixed addresses on the router's subnets.
    #[serde(default, rename = "fixedIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_BACKENDS))]
    pub fixed_ips: Vec<BackendIp>,
}

/// An IPv4 address.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct BackendIp(#[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN))] pub String);

/// The backends' health check (TCP connect from the serving gateway).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.timeoutSeconds <= self.intervalSeconds")
    .message("timeoutSeconds must not exceed intervalSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Seconds between checks of one backend.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 300))]
    pub interval_seconds: i32,
    /// Seconds a connect may take.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: i32,
    /// Successes in a row that bring a backend back.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub healthy_threshold: i32,
    /// Failures in a row that take a backend out.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub unhealthy_threshold: i32,
    /// The port to connect to. Absent: each port's `targetPort` (a backend
    /// is healthy when every one answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

fn default_interval() -> i32 {
    5
}
fn default_timeout() -> i32 {
    2
}
fn default_threshold() -> i32 {
    2
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            healthy_threshold: default_threshold(),
            unhealthy_threshold: default_threshold(),
            port: None,
        }
    }
}

/// Session affinity.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    #[default]
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// Observed state of a LoadBalancer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current conditions: `Ready`, `Valid`, `Allocated`, `Scheduled`,
    /// `Programmed`, `BackendsHealthy`.
    #[serde(default)]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The virtual IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub address: Option<String>,

    /// The node whose SNAT gateway balances now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: Option<String>,

    /// `<healthy>/<backends>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub healthy: Option<String>,

    /// The backends and their health as the serving node last reported it.
    #[serde(default)]
    #[schemars(length(max = MAX_BACKENDS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["ip".into()]))]
    pub backends: Vec<BackendStatus>,
}

/// One backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// Its address.
    #[schemars(length(max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub ip: String,

    /// The pod, when chosen by the selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub pod: Option<String>,

    /// Whether it passes its health check (true until checked).
    pub healthy: bool,
}

//! The resolved cluster view: what the planner needs to know, after
//! validation, allocation, endpoint resolution and scheduling. The controller
//! builds it from the API; the lab builds it the same way from its manifests.
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::model::MacAddr;

/// A namespaced object's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Per-node facts the agents publish, by node name.
    pub nodes: BTreeMap<String, NodeFacts>,
    pub routers: Vec<RouterView>,
    pub external_networks: BTreeMap<String, ExternalView>,
    pub floating_ips: Vec<FloatingView>,
    pub snat_gateways: Vec<SnatView>,
    /// RouterFirewalls, by router (at most one each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firewalls: Vec<FirewallView>,
    /// PortForwardings, sorted by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forwardings: Vec<ForwardingView>,
    /// LoadBalancers, sorted by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<LoadBalancerView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeFacts {
    /// Underlay address VXLAN tunnels terminate on.
    pub vtep: Ipv4Addr,
    /// The node's own DVR MAC: routed frames leave the node with it as source,
    /// so no gateway MAC is ever seen on the overlay.
    pub dvr_mac: MacAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouterView {
    pub key: ObjectKey,
    /// Cluster-unique index: names `rfp-<index>`, the link-local /31.
    pub index: u32,
    pub subnets: Vec<SubnetView>,
    /// Extra routes (destination, next hop) in the router's main table.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Workloads on the router's subnets.
    pub endpoints: Vec<EndpointView>,
    /// Interfaces a node carries whose traffic goes to another (a live
    /// migration's target: the VM's active endpoint is still the source).
    /// Their nodes host the router's subnets, nothing routes to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby: Vec<EndpointView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubnetView {
    pub name: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Cluster-unique VXLAN network identifier.
    pub vni: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointView {
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub node: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Attachment {
    /// An existing Linux bridge on the node; kube-dvr plugs veths into it.
    Bridge(String),
    /// A host interface; kube-dvr puts macvlan ports on it.
    Interface(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalView {
    pub name: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub attachment: Attachment,
    /// The address of each attached node's `fg-` port.
    pub node_ports: BTreeMap<String, Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FloatingView {
    pub key: ObjectKey,
    pub router: ObjectKey,
    pub external: String,
    pub address: Ipv4Addr,
    pub fixed_ip: Ipv4Addr,
    /// The node that serves it: its endpoint's node.
    pub node: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnatView {
    pub key: ObjectKey,
    pub router: ObjectKey,
    pub external: String,
    pub address: Ipv4Addr,
    /// The planned active gateway node, if one is eligible and healthy.
    pub node: Option<String>,
    /// Where the gateway is kept warm, in failover order: `node` first
    /// (empty when `node` is None). Which one serves is decided on each
    /// node at run time (`crate::agent::gateway`), not here.
    pub candidates: Vec<String>,
    /// The `sg-` port on each of the router's subnets.
    pub ports: Vec<SnatPort>,
}

impl SnatView {
    /// Its `sg-` port on the subnet named `subnet`, if it has one.
    pub fn port_on(&self, subnet: &str) -> Option<&SnatPort> {
        self.ports.iter().find(|p| p.subnet == subnet)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnatPort {
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// A router's north-south firewall (`RouterFirewall`), validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FirewallView {
    pub key: ObjectKey,
    pub router: ObjectKey,
    /// The default action: allow (true) or deny.
    pub default_allow: bool,
    pub ingress: Vec<FirewallRuleView>,
    pub egress: Vec<FirewallRuleView>,
}

/// One firewall rule; empty lists match anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FirewallRuleView {
    pub allow: bool,
    /// `tcp`, `udp`, `icmp`; None: any.
    pub protocol: Option<String>,
    /// Destination port ranges (inclusive).
    pub ports: Vec<(u16, u16)>,
    /// The remote side's prefixes.
    pub cidrs: Vec<Ipv4Net>,
}

/// A PortForwarding, resolved: served by the router's SNAT gateway.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ForwardingView {
    pub key: ObjectKey,
    pub router: ObjectKey,
    /// The external address (the SNAT address, or a dedicated one).
    pub address: Ipv4Addr,
    /// Whether `address` is its own (then the gateway's `qg-` carries it).
    pub dedicated: bool,
    /// Resolved forwards (ranges expanded into single ports elsewhere).
    pub forwards: Vec<ForwardEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ForwardEntry {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// External ports, inclusive.
    pub external: (u16, u16),
    pub fixed_ip: Ipv4Addr,
    /// The first internal port (the range maps port by port).
    pub internal: u16,
}

/// A LoadBalancer, resolved: served by the router's SNAT gateway.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoadBalancerView {
    pub key: ObjectKey,
    pub router: ObjectKey,
    pub address: Ipv4Addr,
    /// The router subnet the VIP is on; None: the external network.
    pub subnet: Option<String>,
    /// (`tcp`/`udp`, port, target port).
    pub ports: Vec<(String, u16, u16)>,
    /// Backend addresses, sorted.
    pub backends: Vec<Ipv4Addr>,
    /// Session affinity by client address.
    pub client_affinity: bool,
    pub health: HealthView,
}

/// How the serving node checks backends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthView {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    /// Ports to connect to (a backend is up when all answer).
    pub ports: Vec<u16>,
}

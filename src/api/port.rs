//! Port: one workload interface attached to a router subnet, recorded by the
//! node agent when kube-dvr's CNI plugin attaches it. A Port is the address
//! allocation (its name is the address, so the API server's name uniqueness
//! makes allocation atomic across nodes) and the only source of endpoints:
//! the dataplane never learns an address, MAC or node from anything a
//! tenant can write (a pod's network-status annotation is ignored).
//!
//! Ports are written only by kube-dvr's service accounts: the agent creates
//! and deletes the Ports of its own node (the chart's admission policy
//! enforces `spec.node`), the controller deletes the Ports of pods that no
//! longer exist. Tenants may read them.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::validation::{
    DNS1123_LABEL_MAX, DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_MAX, DNS1123_SUBDOMAIN_PATTERN,
    IFNAME_MAX, IFNAME_PATTERN, IPV4_MAX, IPV4_PATTERN, MAC_MAX, MAC_PATTERN, NAD_REF_MAX,
    NAD_REF_PATTERN,
};

/// Desired state of a Port (all of it written once, by the node agent).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubedvr.io",
    version = "v1alpha1",
    kind = "Port",
    doc = "A workload interface on a DistributedRouter subnet: its address allocation and where it runs. Written by kube-dvr's node agent when its CNI plugin attaches the interface, removed on CNI DEL (or by the controller when the pod is gone). Tenants do not write Ports.",
    namespaced,
    shortname = "dport",
    category = "kubedvr",
    derive = "PartialEq",
    printcolumn(name = "Router", type_ = "string", json_path = ".spec.router"),
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.ip"),
    printcolumn(name = "MAC", type_ = "string", json_path = ".spec.mac"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Port is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// The DistributedRouter (in the same namespace).
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub router: String,
    /// The router's subnet.
    #[schemars(length(min = 1, max = DNS1123_LABEL_MAX), pattern(DNS1123_LABEL_PATTERN))]
    pub subnet: String,
    /// The subnet's NetworkAttachmentDefinition as `namespace/name`.
    #[schemars(length(min = 1, max = NAD_REF_MAX), pattern(NAD_REF_PATTERN))]
    pub network: String,
    /// The interface's address (a host address of the subnet).
    #[schemars(length(min = 7, max = IPV4_MAX), pattern(IPV4_PATTERN), ipv4)]
    pub ip: String,
    /// The interface's MAC (static, or derived from the address).
    #[schemars(length(min = 17, max = MAC_MAX), pattern(MAC_PATTERN))]
    pub mac: String,
    /// The node the interface is on.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: String,
    /// The pod (same namespace) the interface belongs to.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub pod: String,
    /// The pod's UID (`K8S_POD_UID`), when the runtime gave one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 64))]
    pub pod_uid: String,
    /// CNI_CONTAINERID of the attachment.
    #[schemars(length(min = 1, max = 256))]
    pub container_id: String,
    /// CNI_IFNAME: the interface's name in the pod.
    #[schemars(length(min = 1, max = IFNAME_MAX), pattern(IFNAME_PATTERN))]
    pub interface: String,
}

/// The name of the Port that holds `ip` on `router`'s `subnet`: one name
/// per address, so two nodes allocating the same address race on one
/// create and exactly one wins.
pub fn port_name(router: &str, subnet: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{router}.{subnet}.{ip}")
}

/// Delete parameters that delete a Port only while it still has `uid`:
/// the name is the address, so a Port someone made of the same address
/// since it was seen must stay (the API server answers 409 instead).
pub fn delete_only(uid: Option<String>) -> kube::api::DeleteParams {
    kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    }
}

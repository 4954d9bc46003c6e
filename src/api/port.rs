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
//!
//! A KubeVirt VM's Port belongs to the VM, not to a pod (`spec.vm`): it
//! keeps the address and MAC across the VM's restarts and live migrations.
//! Each pod that carries the interface is a binding in `status.bindings`,
//! added and removed by the agent of that pod's node (only its own node's
//! entries, the admission policy checks); during a migration there are
//! two, and traffic goes to one: the binding on `status.activeNode` (the
//! VirtualMachineInstance's node, written by the controller), else the
//! first.

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
    status = "PortStatus",
    selectable = ".spec.network",
    selectable = ".spec.node",
    selectable = ".spec.vm",
    printcolumn(name = "Router", type_ = "string", json_path = ".spec.router"),
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.ip"),
    printcolumn(name = "MAC", type_ = "string", json_path = ".spec.mac"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(name = "VM", type_ = "string", json_path = ".spec.vm"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeNode"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Port is immutable"))]
#[x_kube(validation = Rule::new(
    "has(self.vm) ? !has(self.node) && !has(self.pod) && !has(self.podUid) && !has(self.containerId) && !has(self.interface) : has(self.node) && has(self.pod) && has(self.containerId) && has(self.interface)"
).message("a Port names either a vm (its pods are status.bindings) or its node, pod, containerId and interface"))]
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
    /// The node the interface is on (a pod's Port; a VM's has its nodes in
    /// `status.bindings`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: String,
    /// The pod (same namespace) the interface belongs to (a pod's Port).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub pod: String,
    /// The pod's UID (`K8S_POD_UID`), when the runtime gave one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 64))]
    pub pod_uid: String,
    /// CNI_CONTAINERID of the attachment (a pod's Port).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 256))]
    pub container_id: String,
    /// CNI_IFNAME: the interface's name in the pod (a pod's Port).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = IFNAME_MAX), pattern(IFNAME_PATTERN))]
    pub interface: String,
    /// The KubeVirt VirtualMachine (same namespace) the address belongs
    /// to: the Port outlives its pods (restarts, live migration), which
    /// are its `status.bindings`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub vm: String,
}

/// Where a VM's Port is attached (a pod's Port has none: its spec says).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PortStatus {
    /// The pods carrying the VM's interface, oldest first: one, or two
    /// during a live migration. Each is added and removed by the agent of
    /// its node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub bindings: Vec<PortBinding>,
    /// The node traffic goes to: the VirtualMachineInstance's node
    /// (written by the controller). Absent, or no binding there: the
    /// first binding's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub active_node: Option<String>,
}

/// One pod carrying a Port's interface.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PortBinding {
    /// The node the pod runs on.
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub node: String,
    /// The pod (a virt-launcher pod of the VM, same namespace).
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

impl Port {
    /// Whether the Port belongs to a VM (its pods are bindings).
    pub fn is_vm(&self) -> bool {
        !self.spec.vm.is_empty()
    }

    /// The pods carrying the interface: a pod's Port its one; a VM's its
    /// status bindings.
    pub fn bindings(&self) -> Vec<PortBinding> {
        if self.is_vm() {
            return self
                .status
                .iter()
                .flat_map(|s| s.bindings.clone())
                .collect();
        }
        let s = &self.spec;
        vec![PortBinding {
            node: s.node.clone(),
            pod: s.pod.clone(),
            pod_uid: s.pod_uid.clone(),
            container_id: s.container_id.clone(),
            interface: s.interface.clone(),
        }]
    }

    /// The bindings on `node` (allocates nothing when there are none).
    pub fn bindings_on(&self, node: &str) -> Vec<PortBinding> {
        match self.is_vm() {
            true => (self.status.iter())
                .flat_map(|s| &s.bindings)
                .filter(|b| b.node == node)
                .cloned()
                .collect(),
            false if self.spec.node == node => self.bindings(),
            false => Vec::new(),
        }
    }

    /// Whether `container_id`'s `interface` on `node` carries the Port.
    /// Compares in place: the agent asks this of every cached Port.
    pub fn binds(&self, node: &str, container_id: &str, interface: &str) -> bool {
        let is = |n: &str, c: &str, i: &str| n == node && c == container_id && i == interface;
        match self.is_vm() {
            true => (self.status.iter())
                .flat_map(|s| &s.bindings)
                .any(|b| is(&b.node, &b.container_id, &b.interface)),
            false => is(
                &self.spec.node,
                &self.spec.container_id,
                &self.spec.interface,
            ),
        }
    }

    /// The binding traffic goes to ([`PortStatus::active_node`]); None
    /// for a VM's Port no pod carries.
    pub fn active_binding(&self) -> Option<PortBinding> {
        let mut all = self.bindings();
        let at = self.active_index(&all)?;
        Some(all.swap_remove(at))
    }

    /// Which of `bindings` (this Port's [`Port::bindings`]) is the active
    /// one: on `status.activeNode`, else the first.
    pub fn active_index(&self, bindings: &[PortBinding]) -> Option<usize> {
        let active = self.status.as_ref().and_then(|s| s.active_node.as_deref());
        let on_active = bindings
            .iter()
            .position(|b| Some(b.node.as_str()) == active);
        on_active.or((!bindings.is_empty()).then_some(0))
    }
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

//! KubeVirt's `kubevirt.io/v1` VirtualMachine and VirtualMachineInstance
//! (not kube-dvr's): only what kube-dvr reads. A VM's Port belongs to the
//! VM (`spec.vm`), so the controller keeps it while the VM or its instance
//! exists, and points its traffic at the instance's node
//! (`status.nodeName`, which KubeVirt moves when a live migration
//! completes). A virt-launcher pod names its VirtualMachineInstance as its
//! controlling owner; the instance has the VM's name.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Nothing of the VM's spec is read.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    plural = "virtualmachines",
    namespaced
)]
pub struct VirtualMachineSpec {}

/// Nothing of the instance's spec is read.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    plural = "virtualmachineinstances",
    namespaced,
    status = "InstanceStatus"
)]
pub struct VirtualMachineInstanceSpec {}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The node the VM runs on (the target's once a migration completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// The VM a pod carries: the name of its controlling VirtualMachineInstance
/// owner (virt-launcher pods have one), else None.
pub fn vm_of(owners: &[OwnerReference]) -> Option<String> {
    owners
        .iter()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == "VirtualMachineInstance"
                && o.api_version.starts_with("kubevirt.io/")
        })
        .map(|o| o.name.clone())
}

/// Stand-ins for KubeVirt's two CRDs (any spec and status kept), for the
/// lab and tests, where KubeVirt cannot run: the tests play its
/// controller by writing these objects.
pub fn crds_json() -> [serde_json::Value; 2] {
    let crd = |kind: &str, plural: &str| {
        serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.kubevirt.io")},
            "spec": {
                "group": "kubevirt.io",
                "scope": "Namespaced",
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        })
    };
    [
        crd("VirtualMachine", "virtualmachines"),
        crd("VirtualMachineInstance", "virtualmachineinstances"),
    ]
}

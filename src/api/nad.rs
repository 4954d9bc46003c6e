//! `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition (Multus' CRD; not
//! kube-dvr's): only what kube-dvr writes and reads. The controller owns one
//! per router subnet (see `controller::nads`); the lab installs the CRD, as
//! Multus does on a cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    shortname = "net-attach-def",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI network configuration (JSON, as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// The CNI `type` of kube-dvr's plugin (its file name in the CNI bin dir).
pub const CNI_TYPE: &str = "kube-dvr";
/// The label on NADs the controller made: it changes and deletes only these.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "kube-dvr";

/// The CNI config of router `router`'s subnet `subnet` (the NAD's
/// `spec.config`): users name a router and a subnet, never a VNI.
pub fn nad_config(name: &str, router: &str, subnet: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": CNI_TYPE,
        "router": router,
        "subnet": subnet,
        "capabilities": {"ips": true, "mac": true},
    })
    .to_string()
}

/// The CRD as Multus ships it (schema: `spec.config` string), for the lab
/// and tests.
pub fn nad_crd_json() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
        "spec": {
            "group": "k8s.cni.cncf.io",
            "scope": "Namespaced",
            "names": {"plural": "network-attachment-definitions", "singular": "network-attachment-definition",
                      "kind": "NetworkAttachmentDefinition", "shortNames": ["net-attach-def"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                    "spec": {"type": "object", "properties": {"config": {"type": "string"}}}}}}}]
        }
    })
}

//! The resource registry: built-in kinds and the kinds CustomResourceDefinitions
//! register. Discovery, routing and tables all read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::validation::Schema;

/// One `additionalPrinterColumns` entry (or a built-in column).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// A servable resource (a collection of one kind in one API group).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, the preferred (storage) one first. Objects are stored
    /// once and served under whichever version is asked for: no conversion.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes ignore `.status`, status writes
    /// change only `.status`.
    pub status: bool,
    /// CRD printer columns (built-ins get theirs from `table.rs`).
    pub columns: Vec<PrinterColumn>,
    /// Defined by a CRD (as opposed to built in).
    pub custom: bool,
    /// The CRD's OpenAPI v3 schema of each served version (custom kinds
    /// only): what admission validates objects against.
    pub schemas: BTreeMap<String, Arc<Schema>>,
}

impl ResourceType {
    /// The key objects are stored under. `events.k8s.io` events share the
    /// core `events` storage, as in kube-apiserver.
    pub fn storage_key(&self) -> (String, String) {
        if self.group == "events.k8s.io" && self.plural == "events" {
            (String::new(), "events".into())
        } else {
            (self.group.clone(), self.plural.clone())
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn verbs() -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    singular: &str,
    kind: &str,
    short: &[&str],
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![version.into()],
        plural: plural.into(),
        singular: singular.into(),
        kind: kind.into(),
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        namespaced,
        status,
        columns: Vec::new(),
        custom: false,
        schemas: BTreeMap::new(),
    }
}

/// The kinds that exist before any CRD is created.
pub fn builtins() -> Vec<ResourceType> {
    let mut pods = builtin("", "v1", "pods", "pod", "Pod", &["po"], true, true);
    pods.categories = vec!["all".into()];
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            &["ns"],
            false,
            true,
        ),
        builtin("", "v1", "nodes", "node", "Node", &["no"], false, true),
        pods,
        builtin("", "v1", "events", "event", "Event", &["ev"], true, false),
        builtin(
            "",
            "v1",
            "configmaps",
            "configmap",
            "ConfigMap",
            &["cm"],
            true,
            false,
        ),
        builtin("", "v1", "secrets", "secret", "Secret", &[], true, false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            &["sa"],
            true,
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "lease",
            "Lease",
            &[],
            true,
            false,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "event",
            "Event",
            // No short name: kubectl would warn that `ev` is ambiguous.
            &[],
            true,
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            &["crd", "crds"],
            false,
            true,
        ),
    ]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The resource a CustomResourceDefinition object defines, if it is well formed.
pub fn from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group is required")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural is required")?;
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind is required")?;
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        return Err(format!(
            "metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group ({expected})"
        ));
    }
    let versions: Vec<&Value> = spec["versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|v| v["served"].as_bool().unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    if versions.is_empty() {
        return Err("spec.versions: at least one served version is required".into());
    }
    // The storage version is preferred; otherwise the first served one.
    let mut ordered: Vec<&Value> = versions.clone();
    ordered.sort_by_key(|v| !v["storage"].as_bool().unwrap_or(false));
    let first = ordered[0];
    let columns = first["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| PrinterColumn {
                    name: c["name"].as_str().unwrap_or("").into(),
                    type_: c["type"].as_str().unwrap_or("string").into(),
                    format: c["format"].as_str().unwrap_or("").into(),
                    description: c["description"].as_str().unwrap_or("").into(),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    json_path: c["jsonPath"].as_str().unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ResourceType {
        group: group.into(),
        versions: ordered
            .iter()
            .filter_map(|v| v["name"].as_str().map(String::from))
            .collect(),
        plural: plural.into(),
        singular: names["singular"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase()),
        kind: kind.into(),
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        namespaced: spec["scope"].as_str() != Some("Cluster"),
        status: first["subresources"]["status"].is_object(),
        columns,
        custom: true,
        schemas: versions
            .iter()
            .filter_map(|v| {
                let schema = &v["schema"]["openAPIV3Schema"];
                let name = v["name"].as_str()?.to_string();
                Some((name, Arc::new(Schema::new(schema.clone())))).filter(|_| schema.is_object())
            })
            .collect(),
    })
}

//! Server-side printing: `meta.k8s.io/v1 Table` responses for `kubectl get`,
//! with CRD `additionalPrinterColumns` evaluated by a small JSONPath subset
//! (`.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`).

use serde_json::{json, Value};

use crate::resource::{PrinterColumn, ResourceType};
use crate::util::age_of;

/// Does the Accept header ask for a Table?
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|a| {
        let p: Vec<&str> = a.split(';').map(str::trim).collect();
        p.contains(&"as=Table") && p.contains(&"g=meta.k8s.io")
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<String>,
        value: String,
        negated: bool,
    },
}

fn parse_path(expr: &str) -> Option<Vec<Step>> {
    let expr = expr
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    let mut steps = Vec::new();
    let mut rest = expr.strip_prefix('$').unwrap_or(expr);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            // A filter may contain ']' only inside quotes; our subset has none.
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                let (lhs, rhs, negated) = match f.split_once("!=") {
                    Some((l, r)) => (l, r, true),
                    None => {
                        let (l, r) = f.split_once("==")?;
                        (l, r, false)
                    }
                };
                let path = lhs
                    .trim()
                    .strip_prefix("@.")?
                    .split('.')
                    .map(String::from)
                    .collect();
                let value = rhs
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string();
                steps.push(Step::Filter {
                    path,
                    value,
                    negated,
                });
            } else {
                let key = inner.trim_matches(|c| c == '"' || c == '\'');
                steps.push(Step::Field(key.to_string()));
            }
        } else {
            return None;
        }
    }
    Some(steps)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// All values `expr` selects in `obj` (empty if none or unparseable).
pub fn eval(expr: &str, obj: &Value) -> Vec<Value> {
    let Some(steps) = parse_path(expr) else {
        return Vec::new();
    };
    let mut cur = vec![obj.clone()];
    for step in &steps {
        let mut next = Vec::new();
        for v in &cur {
            match step {
                Step::Field(f) => next.extend(v.get(f).cloned()),
                Step::Index(i) => next.extend(v.get(i).cloned()),
                Step::All => next.extend(v.as_array().into_iter().flatten().cloned()),
                Step::Filter {
                    path,
                    value,
                    negated,
                } => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut x = Some(item);
                        for p in path {
                            x = x.and_then(|x| x.get(p));
                        }
                        if x.is_some_and(|x| (as_text(x) == *value) != *negated) {
                            next.push(item.clone());
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur.retain(|v| !v.is_null());
    cur
}

fn col(name: &str, type_: &str, priority: i64, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn custom_cell(c: &PrinterColumn, obj: &Value) -> Value {
    let found = eval(&c.json_path, obj);
    match found.as_slice() {
        [] => Value::Null,
        [one] if c.type_ == "date" => json!(age_of(one.as_str())),
        [one] if !one.is_object() && !one.is_array() => one.clone(),
        many => json!(many.iter().map(as_text).collect::<Vec<_>>().join(",")),
    }
}

fn name(obj: &Value) -> Value {
    obj["metadata"]["name"].clone()
}

fn age(obj: &Value) -> Value {
    json!(age_of(obj["metadata"]["creationTimestamp"].as_str()))
}

fn count(v: &Value) -> usize {
    v.as_object().map(|m| m.len()).unwrap_or(0)
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = o["spec"]["containers"]
        .as_array()
        .map(|c| c.len())
        .unwrap_or(statuses.len());
    let ready = statuses
        .iter()
        .filter(|s| s["ready"].as_bool() == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let phase = if o["metadata"]["deletionTimestamp"].is_null() {
        o["status"]["phase"]
            .as_str()
            .unwrap_or("Unknown")
            .to_string()
    } else {
        "Terminating".into()
    };
    let or_none = |v: &Value| json!(v.as_str().unwrap_or("<none>"));
    vec![
        name(o),
        json!(format!("{ready}/{total}")),
        json!(phase),
        json!(restarts),
        age(o),
        or_none(&o["status"]["podIP"]),
        or_none(&o["spec"]["nodeName"]),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let ready = eval(".status.conditions[?(@.type==\"Ready\")].status", o);
    let mut status = match ready.first().and_then(Value::as_str) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o["spec"]["unschedulable"].as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = o["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    let ip = eval(".status.addresses[?(@.type==\"InternalIP\")].address", o);
    vec![
        name(o),
        json!(status),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        age(o),
        json!(o["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .unwrap_or("")),
        json!(ip.first().and_then(Value::as_str).unwrap_or("<none>")),
    ]
}

fn event_cells(o: &Value) -> Vec<Value> {
    let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .find_map(|k| o[*k].as_str())
        .or(o["metadata"]["creationTimestamp"].as_str());
    let obj = &o["involvedObject"];
    vec![
        json!(age_of(last)),
        o["type"].clone(),
        o["reason"].clone(),
        json!(format!(
            "{}/{}",
            obj["kind"].as_str().unwrap_or("").to_lowercase(),
            obj["name"].as_str().unwrap_or("")
        )),
        o["message"].clone(),
    ]
}

/// Computes a row's cells from an object.
type Cells<'a> = Box<dyn Fn(&Value) -> Vec<Value> + 'a>;

/// Column definitions and the cell function for a resource.
fn columns(rt: &ResourceType) -> (Vec<Value>, Cells<'_>) {
    let name_col = || {
        col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace.",
        )
    };
    let age_col = || col("Age", "string", 0, "Time since creation.");
    if rt.custom {
        let mut cols = vec![name_col()];
        cols.extend(rt.columns.iter().map(|c| {
            let t = if c.type_ == "date" { "string" } else { c.type_.as_str() };
            json!({"name": c.name, "type": t, "format": c.format, "description": c.description, "priority": c.priority})
        }));
        // As kube-apiserver: declared columns replace the default Age.
        let default_age = rt.columns.is_empty();
        if default_age {
            cols.push(age_col());
        }
        let f = move |o: &Value| {
            let mut cells = vec![name(o)];
            cells.extend(rt.columns.iter().map(|c| custom_cell(c, o)));
            if default_age {
                cells.push(age(o));
            }
            cells
        };
        return (cols, Box::new(f));
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => (
            vec![
                name_col(),
                col("Ready", "string", 0, "ready containers"),
                col("Status", "string", 0, "pod phase"),
                col("Restarts", "integer", 0, "container restarts"),
                age_col(),
                col("IP", "string", 1, "pod IP"),
                col("Node", "string", 1, "node name"),
            ],
            Box::new(pod_cells),
        ),
        ("", "nodes") => (
            vec![
                name_col(),
                col("Status", "string", 0, "readiness"),
                col("Roles", "string", 0, "node roles"),
                age_col(),
                col("Version", "string", 0, "kubelet version"),
                col("Internal-IP", "string", 1, "internal address"),
            ],
            Box::new(node_cells),
        ),
        ("", "namespaces") => (
            vec![name_col(), col("Status", "string", 0, "phase"), age_col()],
            Box::new(|o: &Value| vec![name(o), o["status"]["phase"].clone(), age(o)]),
        ),
        ("", "events") => (
            vec![
                col("Last Seen", "string", 0, "last seen"),
                col("Type", "string", 0, "type"),
                col("Reason", "string", 0, "reason"),
                col("Object", "string", 0, "involved object"),
                col("Message", "string", 0, "message"),
            ],
            Box::new(event_cells),
        ),
        ("", "configmaps") => (
            vec![name_col(), col("Data", "integer", 0, "entries"), age_col()],
            Box::new(|o: &Value| {
                vec![
                    name(o),
                    json!(count(&o["data"]) + count(&o["binaryData"])),
                    age(o),
                ]
            }),
        ),
        ("", "secrets") => (
            vec![
                name_col(),
                col("Type", "string", 0, "type"),
                col("Data", "integer", 0, "entries"),
                age_col(),
            ],
            Box::new(|o: &Value| {
                vec![name(o), o["type"].clone(), json!(count(&o["data"])), age(o)]
            }),
        ),
        ("coordination.k8s.io", "leases") => (
            vec![
                name_col(),
                col("Holder", "string", 0, "holder identity"),
                age_col(),
            ],
            Box::new(|o: &Value| vec![name(o), o["spec"]["holderIdentity"].clone(), age(o)]),
        ),
        ("apiextensions.k8s.io", "customresourcedefinitions") => (
            vec![name_col(), col("Created At", "date", 0, "creation time")],
            Box::new(|o: &Value| vec![name(o), o["metadata"]["creationTimestamp"].clone()]),
        ),
        _ => (
            vec![name_col(), age_col()],
            Box::new(|o: &Value| vec![name(o), age(o)]),
        ),
    }
}

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// A `Table` of `objects` (already in served form).
pub fn table(rt: &ResourceType, objects: &[Value], rv: Option<u64>, include: Include) -> Value {
    let (cols, cells) = columns(rt);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include {
                Include::None => Value::Null,
                Include::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                }),
                Include::Object => o.clone(),
            };
            json!({"cells": cells(o), "object": object})
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"status": {"conditions": [
            {"type": "Allocated", "status": "True"}, {"type": "Ready", "status": "False"}]},
            "spec": {"subnets": [{"name": "a"}, {"name": "b"}], "address": "203.0.113.5"}});
        assert_eq!(eval(".spec.address", &o), vec![json!("203.0.113.5")]);
        assert_eq!(
            eval(".spec.subnets[*].name", &o),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(eval(".spec.subnets[1].name", &o), vec![json!("b")]);
        assert_eq!(
            eval(r#".status.conditions[?(@.type=="Ready")].status"#, &o),
            vec![json!("False")]
        );
        assert_eq!(eval("{.spec.missing}", &o), Vec::<Value>::new());
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}

//! Conversion between the stored form of an object and the form a request
//! sees. Only two things differ: `apiVersion`/`kind` follow the request's
//! group/version (CRD versions are not converted, just relabelled), and
//! `events.k8s.io/v1` Events are a view of the stored core/v1 Events (as in
//! kube-apiserver, so `kubectl describe` shows what kube's `Recorder` wrote).

use serde_json::{json, Map, Value};

use crate::resource::ResourceType;

/// (core/v1 field, events.k8s.io/v1 field)
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("count", "deprecatedCount"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
];

fn is_events_v1(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io" && rt.plural == "events"
}

fn rename(obj: &mut Value, from_to: impl Iterator<Item = (&'static str, &'static str)>) {
    if let Value::Object(m) = obj {
        for (from, to) in from_to {
            if let Some(v) = m.remove(from) {
                m.insert(to.to_string(), v);
            }
        }
    }
}

/// Request form → stored form.
pub fn ingest(rt: &ResourceType, mut obj: Value) -> Value {
    if !obj.is_object() {
        obj = Value::Object(Map::new());
    }
    if is_events_v1(rt) {
        rename(&mut obj, EVENT_FIELDS.iter().map(|(c, v)| (*v, *c)));
        if obj.get("source").is_none() {
            if let Some(c) = obj.get("reportingComponent").cloned() {
                obj["source"] = json!({ "component": c });
            }
        }
        obj["apiVersion"] = json!("v1");
    } else {
        obj["apiVersion"] = json!(rt.api_version(&rt.versions[0]));
    }
    obj["kind"] = json!(rt.kind);
    obj
}

/// Stored form → the form served for `rt` at `version`.
pub fn present(rt: &ResourceType, version: &str, obj: &Value) -> Value {
    let mut out = obj.clone();
    if is_events_v1(rt) {
        rename(&mut out, EVENT_FIELDS.iter().copied());
    }
    out["apiVersion"] = json!(rt.api_version(version));
    out["kind"] = json!(rt.kind);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::builtins;

    #[test]
    fn events_round_trip_between_groups() {
        let types = builtins();
        let v1 = types.iter().find(|t| t.group == "events.k8s.io").unwrap();
        let core = types
            .iter()
            .find(|t| t.group.is_empty() && t.plural == "events")
            .unwrap();
        let stored = ingest(
            v1,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
                   "regarding": {"name": "x"}, "note": "hello", "reportingController": "c"}),
        );
        assert_eq!(stored["involvedObject"]["name"], "x");
        assert_eq!(stored["source"]["component"], "c");
        let as_core = present(core, "v1", &stored);
        assert_eq!(
            (as_core["apiVersion"].as_str(), as_core["message"].as_str()),
            (Some("v1"), Some("hello"))
        );
        let back = present(v1, "v1", &stored);
        assert_eq!(back["note"], "hello");
        assert_eq!(back["apiVersion"], "events.k8s.io/v1");
    }
}

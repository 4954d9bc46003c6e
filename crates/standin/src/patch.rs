//! Patch bodies: JSON merge patch, JSON patch, a simplified strategic merge
//! patch and server-side apply ("good enough": the applied object is merged
//! into the live one like a merge patch; field ownership is not tracked).

use serde_json::{Map, Value};

use crate::status::ApiError;

/// The patch flavours, by request `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchKind::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Parses a patch body: YAML for apply (JSON is YAML), JSON otherwise.
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    let parsed = match kind {
        PatchKind::Apply => serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string()),
        _ => serde_json::from_slice::<Value>(body).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))
}

/// Applies `patch` of `kind` to `target`, returning the patched document.
/// (Apply is handled by the caller as a merge of the applied object.)
pub fn apply_patch(kind: PatchKind, target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut doc = target.clone();
    match kind {
        PatchKind::Merge | PatchKind::Apply => json_patch::merge(&mut doc, patch),
        PatchKind::Strategic => strategic_merge(&mut doc, patch),
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::invalid(
                    "",
                    "",
                    "",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
    }
    Ok(doc)
}

/// Keys that identify list elements for the simplified strategic merge:
/// `conditions` by `type`, containers/ports/volumes by `name`.
const MERGE_KEYS: [&str; 2] = ["type", "name"];

/// A simplified strategic merge patch: maps merge (null deletes), `$`
/// directives are dropped, lists whose elements all carry the same merge key
/// (`type` or `name`) on both sides merge by that key, other lists replace.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => {
                let merged = match t.get(k) {
                    Some(Value::Array(existing)) => merge_lists(existing, items),
                    _ => None,
                };
                t.insert(
                    k.clone(),
                    merged.unwrap_or_else(|| Value::Array(strip_directives(items))),
                );
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn strip_directives(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .filter(|i| i.get("$patch").is_none())
        .map(|i| match i {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !k.starts_with('$'))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        })
        .collect()
}

fn merge_lists(existing: &[Value], patch: &[Value]) -> Option<Value> {
    let key = MERGE_KEYS.into_iter().find(|k| {
        !patch.is_empty()
            && patch
                .iter()
                .chain(existing)
                .all(|i| i.get(*k).is_some_and(Value::is_string))
    })?;
    let mut out: Vec<Value> = existing.to_vec();
    for item in patch {
        let id = &item[key];
        let pos = out.iter().position(|e| &e[key] == id);
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                out.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic_merge(&mut out[i], item),
            None => out.extend(strip_directives(std::slice::from_ref(item))),
        }
    }
    Some(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patch() {
        let t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let m = apply_patch(PatchKind::Merge, &t, &json!({"b": {"c": null}, "l": [3]})).unwrap();
        assert_eq!(m, json!({"a": 1, "b": {"d": 3}, "l": [3]}));
        let j = apply_patch(
            PatchKind::Json,
            &t,
            &json!([{"op": "replace", "path": "/a", "value": 5}, {"op": "remove", "path": "/l/0"}]),
        )
        .unwrap();
        assert_eq!(j, json!({"a": 5, "b": {"c": 2, "d": 3}, "l": [2]}));
        let bad = apply_patch(
            PatchKind::Json,
            &t,
            &json!([{"op": "remove", "path": "/zz"}]),
        );
        assert_eq!(bad.unwrap_err().code, 422);
    }

    #[test]
    fn strategic_merges_conditions_by_type() {
        let t = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Disk", "status": "False"}]},
            "metadata": {"finalizers": ["a", "b"]}});
        let p = json!({"$setElementOrder/conditions": [], "status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "New", "status": "True"}]},
            "metadata": {"finalizers": ["b"]}});
        let out = apply_patch(PatchKind::Strategic, &t, &p).unwrap();
        assert_eq!(
            out,
            json!({"status": {"conditions": [
                {"type": "Ready", "status": "False"}, {"type": "Disk", "status": "False"},
                {"type": "New", "status": "True"}]},
                "metadata": {"finalizers": ["b"]}})
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml; charset=utf-8").unwrap(),
            PatchKind::Apply
        );
        assert_eq!(
            PatchKind::from_content_type("text/plain").unwrap_err().code,
            415
        );
        assert_eq!(
            parse_body(PatchKind::Apply, b"a: 1\n").unwrap(),
            json!({"a": 1})
        );
    }
}

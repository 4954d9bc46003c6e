//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field
//! selectors (`path=value`, `path!=value` on any dotted path of the object,
//! e.g. `metadata.name`, `spec.nodeName`, `involvedObject.uid`).

use serde_json::Value;

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq)]
struct FieldReq {
    path: String,
    value: String,
    negated: bool,
}

/// Parsed `labelSelector` + `fieldSelector` of a list or watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

fn parse_label(req: &str) -> Result<LabelReq, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {req:?}"));
    if let Some(key) = req.strip_prefix('!') {
        return Ok(LabelReq::NotExists(key.trim().to_string()));
    }
    if let Some((k, v)) = req.split_once("!=") {
        return Ok(LabelReq::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(LabelReq::Eq(k.trim().into(), v.trim().into()));
    }
    let mut words = req.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or("").trim().to_string();
    match words.next().map(str::trim) {
        None => Ok(LabelReq::Exists(key)),
        Some(rest) => {
            if let Some(set) = rest.strip_prefix("notin") {
                Ok(LabelReq::NotIn(key, parse_set(set).ok_or_else(bad)?))
            } else if let Some(set) = rest.strip_prefix("in") {
                Ok(LabelReq::In(key, parse_set(set).ok_or_else(bad)?))
            } else {
                Err(bad())
            }
        }
    }
}

fn parse_field(req: &str) -> Result<FieldReq, ApiError> {
    let (path, value, negated) = if let Some((k, v)) = req.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        (k, v, false)
    } else {
        return Err(ApiError::bad_request(format!(
            "invalid field selector: {req:?}"
        )));
    };
    Ok(FieldReq {
        path: path.trim().into(),
        value: v_trim(value),
        negated,
    })
}

fn v_trim(v: &str) -> String {
    v.trim().to_string()
}

impl Selector {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Self, ApiError> {
        let labels = split_top(label.unwrap_or(""))
            .into_iter()
            .map(parse_label)
            .collect::<Result<_, _>>()?;
        let fields = split_top(field.unwrap_or(""))
            .into_iter()
            .map(parse_field)
            .collect::<Result<_, _>>()?;
        Ok(Selector { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|f| {
                let got = field_value(obj, &f.path);
                (got == f.value) != f.negated
            })
    }
}

/// The string value at a dotted path; missing fields read as "" (so
/// `spec.nodeName=` selects unscheduled pods, as in kube-apiserver).
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": node}})
    }

    #[test]
    fn label_operators() {
        let p = pod(json!({"app": "web", "tier": "front"}), "n1");
        let m = |l: &str| Selector::parse(Some(l), None).unwrap().matches(&p);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (db, web),tier notin (back)"));
        assert!(!m("app notin (web)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(!m("missing"));
        assert!(m(""));
        assert!(Selector::parse(Some("app bogus (x)"), None).is_err());
    }

    #[test]
    fn field_paths() {
        let p = pod(json!({}), "n1");
        let m = |f: &str| Selector::parse(None, Some(f)).unwrap().matches(&p);
        assert!(m("spec.nodeName=n1"));
        assert!(!m("spec.nodeName=n2"));
        assert!(m("spec.nodeName!=n2,metadata.namespace=ns"));
        assert!(m("status.phase="));
        assert!(Selector::parse(None, Some("nonsense")).is_err());
    }
}

//! OpenAPI v3 value validation of structural schemas, as kube-openapi's
//! validator does it for custom resources: `type` (and `nullable`), `enum`,
//! string `maxLength`/`minLength`/`pattern`/`format`, numeric bounds and
//! `multipleOf`, `maxItems`/`minItems`, `x-kubernetes-list-type` `set` and
//! `map` uniqueness, `required`, `maxProperties`/`minProperties`, recursing
//! through `properties`, `additionalProperties` and `items`. Also pruning of
//! fields a schema does not declare.
//!
//! Not done (the CRDs here do not use them): the value validations inside
//! `allOf`/`anyOf`/`oneOf`/`not`, and `x-kubernetes-embedded-resource`
//! metadata checks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use crate::validation::FieldError;

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The JSON type name kube-openapi reports for a value.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
}

/// Drops the fields of `value` that `schema` does not declare, collecting
/// their paths. At the root (and in embedded resources) `apiVersion`, `kind`
/// and `metadata` are kept.
pub(crate) fn prune(
    schema: &Value,
    value: &mut Value,
    path: &str,
    root: bool,
    out: &mut Vec<String>,
) {
    match value {
        Value::Object(obj) => {
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties");
            let keep_meta = root || schema["x-kubernetes-embedded-resource"] == Value::Bool(true);
            let mut gone = Vec::new();
            for (k, v) in obj.iter_mut() {
                let p = child(path, k);
                // As kube-apiserver: an object's own apiVersion, kind and
                // metadata are never pruned by its schema (Multus' NAD CRD
                // declares `metadata: {type: object}`).
                if keep_meta && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                } else if let Some(sub) = props.and_then(|p| p.get(k)) {
                    prune(sub, v, &p, false, out);
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    prune(sub, v, &p, false, out);
                } else if additional != Some(&Value::Bool(true)) && !preserves_unknown(schema) {
                    gone.push(k.clone());
                    out.push(p);
                }
            }
            for k in gone {
                obj.remove(&k);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                prune(&schema["items"], v, &format!("{path}[{i}]"), false, out);
            }
        }
        _ => {}
    }
}

/// Checks `value` against `schema` at `path`. `old` is the correlated old
/// value on updates: a value equal to its old self is not checked again
/// (ratcheting).
pub(crate) fn check(
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if old == Some(value) || !schema.is_object() {
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) && !ty.is_empty() {
            errs.push(FieldError::type_invalid(path, "null", ty));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    let actual = type_name(value);
    let type_ok = match ty {
        "" => true,
        _ if int_or_string => matches!(actual, "integer" | "string"),
        "number" => matches!(actual, "integer" | "number"),
        "integer" => actual == "integer" || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        t => t == actual,
    };
    if !type_ok {
        errs.push(FieldError::type_invalid(path, actual, ty));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errs.push(FieldError::not_supported(path, value, allowed));
        }
    }
    match value {
        Value::String(s) => check_string(schema, s, value, path, errs),
        Value::Number(_) => check_number(schema, value, path, errs),
        Value::Array(items) => check_array(schema, items, old, path, errs),
        Value::Object(obj) => check_object(schema, obj, old, path, errs),
        _ => {}
    }
}

fn check_string(schema: &Value, s: &str, value: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(max) = schema["maxLength"].as_u64() {
        if s.chars().count() as u64 > max {
            errs.push(FieldError::too_long(path, max));
        }
    }
    if let Some(min) = schema["minLength"].as_u64() {
        if (s.chars().count() as u64) < min {
            let detail = format!("{path} in body should be at least {min} chars long");
            errs.push(FieldError::invalid(path, value, detail));
        }
    }
    if let Some(pat) = schema["pattern"].as_str() {
        if !pattern_matches(pat, s) {
            let detail = format!("{path} in body should match '{pat}'");
            errs.push(FieldError::invalid(path, value, detail));
        }
    }
    if let Some(fmt) = schema["format"].as_str() {
        if !format_ok(fmt, s) {
            let detail = format!("{path} in body must be of type {fmt}: {s:?}");
            errs.push(FieldError::invalid(path, value, detail));
        }
    }
}

fn pattern_matches(pat: &str, s: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let re = cache
        .entry(pat.to_string())
        .or_insert_with(|| Regex::new(pat).ok());
    // A pattern that does not compile was refused at CRD creation by a
    // real server; here it checks nothing.
    re.as_ref().is_none_or(|re| re.is_match(s))
}

/// The string formats kube-apiserver checks on custom resources; others
/// (and the integer formats) are accepted as they are.
fn format_ok(fmt: &str, s: &str) -> bool {
    match fmt {
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, len)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            !len.is_empty()
                && len.bytes().all(|b| b.is_ascii_digit())
                && len.parse::<u32>().is_ok_and(|l| l <= max)
        }),
        "mac" => is_mac(s),
        "date-time" | "datetime" => crate::util::parse_rfc3339(s).is_some(),
        "uuid" => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts
                    .iter()
                    .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "hostname" => crate::names::dns1123_subdomain(s).is_empty(),
        _ => true,
    }
}

/// Go's `net.ParseMAC` for 6-octet addresses: `aa:bb:cc:dd:ee:ff`,
/// `aa-bb-cc-dd-ee-ff` or `aabb.ccdd.eeff`.
fn is_mac(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    for sep in [':', '-'] {
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() == 6 && parts.iter().all(|p| hex(p, 2)) {
            return true;
        }
    }
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| hex(p, 4))
}

fn bound(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let n = value.as_f64().unwrap_or(0.0);
    if let Some(max) = schema["maximum"].as_f64() {
        let excl = schema["exclusiveMaximum"] == Value::Bool(true);
        if n > max || (excl && n == max) {
            let rel = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            let detail = format!(
                "{path} in body should be {rel} {}",
                bound(&schema["maximum"])
            );
            errs.push(FieldError::invalid(path, value, detail));
        }
    }
    if let Some(min) = schema["minimum"].as_f64() {
        let excl = schema["exclusiveMinimum"] == Value::Bool(true);
        if n < min || (excl && n == min) {
            let rel = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            let detail = format!(
                "{path} in body should be {rel} {}",
                bound(&schema["minimum"])
            );
            errs.push(FieldError::invalid(path, value, detail));
        }
    }
    if let Some(m) = schema["multipleOf"].as_f64().filter(|m| *m > 0.0) {
        if (n / m).fract() != 0.0 {
            let detail = format!(
                "{path} in body should be a multiple of {}",
                bound(&schema["multipleOf"])
            );
            errs.push(FieldError::invalid(path, value, detail));
        }
    }
}

fn check_array(
    schema: &Value,
    items: &[Value],
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if let Some(max) = schema["maxItems"].as_u64() {
        if items.len() as u64 > max {
            errs.push(FieldError::too_many(path, items.len(), max));
        }
    }
    if let Some(min) = schema["minItems"].as_u64() {
        if (items.len() as u64) < min {
            let detail = format!("{path} in body should have at least {min} items");
            errs.push(FieldError::invalid(path, &Value::from(items.len()), detail));
        }
    }
    // Items correlate with old items only in map lists (by their keys).
    let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
        .as_array()
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let key_of = |item: &Value| -> Value {
        Value::Object(
            keys.iter()
                .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect::<Map<_, _>>(),
        )
    };
    let list_type = schema["x-kubernetes-list-type"].as_str();
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match list_type {
            Some("set") if !seen.insert(item.to_string()) => {
                errs.push(FieldError::duplicate(&at, item));
            }
            Some("map") if !keys.is_empty() && !seen.insert(key_of(item).to_string()) => {
                errs.push(FieldError::duplicate(&at, &key_of(item)));
            }
            _ => {}
        }
        let old_item = match list_type {
            Some("map") if !keys.is_empty() => old
                .and_then(Value::as_array)
                .and_then(|o| o.iter().find(|o| key_of(o) == key_of(item))),
            _ => None,
        };
        check(&schema["items"], item, old_item, &at, errs);
    }
}

fn check_object(
    schema: &Value,
    obj: &Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    for req in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = req.as_str() {
            if !obj.contains_key(r) {
                errs.push(FieldError::required(&child(path, r)));
            }
        }
    }
    if let Some(max) = schema["maxProperties"].as_u64() {
        if obj.len() as u64 > max {
            errs.push(FieldError::too_many(path, obj.len(), max));
        }
    }
    if let Some(min) = schema["minProperties"].as_u64() {
        if (obj.len() as u64) < min {
            let detail = format!("{path} in body should have at least {min} properties");
            errs.push(FieldError::invalid(path, &Value::from(obj.len()), detail));
        }
    }
    let props = schema["properties"].as_object();
    for (k, v) in obj {
        // ObjectMeta is validated by the generic registry, not the schema.
        if path.is_empty() && k == "metadata" {
            continue;
        }
        let sub = match props.and_then(|p| p.get(k)) {
            Some(sub) => sub,
            None => match schema.get("additionalProperties") {
                Some(sub) if sub.is_object() => sub,
                _ => continue,
            },
        };
        check(sub, v, old.and_then(|o| o.get(k)), &child(path, k), errs);
    }
}

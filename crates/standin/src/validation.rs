//! Validation of custom resources against their CRD's structural schema, as
//! kube-apiserver's apiextensions admission does it, in one place: the
//! stand-in runs it on every create, update, patch and `/status` write, and
//! kube-dvr's CRD tests call the same functions.
//!
//! The order is the API server's: unknown fields are pruned (or, with
//! `fieldValidation=Strict`, refused), schema `default`s are filled in, then
//! the OpenAPI value validations (`schema.rs`) and the CEL
//! `x-kubernetes-validations` rules (evaluated by kube-cel, including
//! transition rules against `oldSelf` on updates) run. On updates, errors in
//! values that did not change are ignored ("validation ratcheting", on by
//! default since Kubernetes 1.30), so a status write is not refused because
//! of a spec that an older schema admitted.
//!
//! Errors are [`FieldError`]s worded like `k8s.io/apimachinery`'s
//! `field.Error` (`spec.cidr: Invalid value: "x": ...`); the stand-in returns
//! them as `422 Invalid` with `details.causes[]`.

use serde_json::Value;

pub use crate::names::{dns1123_label, dns1123_subdomain};
use crate::schema;

/// One failed check on one field: `field` is the JSON path
/// (`spec.subnets[0].cidr`), `reason` the `StatusCause` reason
/// (`FieldValueInvalid`, `FieldValueRequired`, ...), `message` the text
/// after the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Renders a value the way Go's `field.Error` does: strings quoted, numbers
/// and booleans bare, anything else as JSON.
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

impl FieldError {
    fn new(field: &str, reason: &str, message: String) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
            message,
        }
    }

    pub(crate) fn required(field: &str) -> Self {
        Self::new(field, "FieldValueRequired", "Required value".into())
    }

    pub(crate) fn invalid(field: &str, value: &Value, detail: impl std::fmt::Display) -> Self {
        Self::new(
            field,
            "FieldValueInvalid",
            format!("Invalid value: {}: {detail}", render(value)),
        )
    }

    pub(crate) fn type_invalid(field: &str, actual: &str, expected: &str) -> Self {
        Self::new(
            field,
            "FieldValueTypeInvalid",
            format!(
                "Invalid value: \"{actual}\": {field} in body must be of type {expected}: \"{actual}\""
            ),
        )
    }

    pub(crate) fn too_long(field: &str, max: u64) -> Self {
        Self::new(
            field,
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} bytes"),
        )
    }

    pub(crate) fn too_many(field: &str, actual: usize, max: u64) -> Self {
        Self::new(
            field,
            "FieldValueTooMany",
            format!("Too many: {actual}: must have at most {max} items"),
        )
    }

    pub(crate) fn duplicate(field: &str, value: &Value) -> Self {
        Self::new(
            field,
            "FieldValueDuplicate",
            format!("Duplicate value: {}", render(value)),
        )
    }

    pub(crate) fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(render).collect();
        Self::new(
            field,
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {}",
                render(value),
                allowed.join(", ")
            ),
        )
    }

    pub(crate) fn forbidden(field: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(field, "FieldValueForbidden", format!("Forbidden: {detail}"))
    }
}

/// A CRD version's structural schema, its CEL rules compiled once.
pub struct Schema {
    json: Value,
    compiled: kube_cel::CompiledSchema,
}

impl Schema {
    pub fn new(json: Value) -> Self {
        let compiled = kube_cel::compile_schema(&json);
        Schema { json, compiled }
    }

    /// The OpenAPI v3 schema itself.
    pub fn json(&self) -> &Value {
        &self.json
    }
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.json.fmt(f)
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

/// The OpenAPI v3 schema of `version` in a CustomResourceDefinition object.
pub fn crd_version_schema(crd: &Value, version: &str) -> Option<Value> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str() == Some(version))
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .filter(|s| s.is_object())
}

/// Removes the fields `schema` does not know (kube-apiserver's pruning) and
/// returns their paths (`spec.target.fixedIp`), for a strict-validation
/// error or a warning. `apiVersion`, `kind` and `metadata` at the root stay.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    schema::prune(schema, obj, "", true, &mut unknown);
    unknown
}

/// Fills in the schema's `default`s (as the API server does before
/// validating and storing).
pub fn apply_defaults(schema: &Value, obj: &Value) -> Value {
    kube_cel::apply_defaults(schema, obj)
}

/// What kube-apiserver says about `obj` (already pruned and defaulted)
/// against `schema`: value validations and CEL rules. `old` is the stored
/// object on updates: transition rules see it as `oldSelf`, and errors in
/// unchanged values are ratcheted away.
pub fn validate_custom_resource(
    schema: &Schema,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    schema::check(&schema.json, obj, old, "", &mut errs);
    // As kube-apiserver: rules are not evaluated on an object with missing
    // or mistyped fields (they would only fail to evaluate).
    let blocking = ["FieldValueRequired", "FieldValueTypeInvalid"];
    if errs.iter().any(|e| blocking.contains(&e.reason.as_str())) {
        errs.push(FieldError::invalid(
            "<nil>",
            &Value::String("null".into()),
            "some validation rules were not checked because the object was invalid; \
             correct the existing errors to complete validation",
        ));
        return errs;
    }
    if let Err(cel_errs) = kube_cel::validate_compiled(&schema.compiled, obj, old) {
        for e in cel_errs.into_vec() {
            let at_now = lookup(obj, &e.field_path);
            if let Some(old) = old {
                if at_now.is_some() && at_now == lookup(old, &e.field_path) {
                    continue; // ratcheting: an unchanged value keeps passing
                }
            }
            errs.push(cel_error(&e, at_now));
        }
    }
    errs
}

/// A failed CEL rule as `field.Invalid(path, <schema type>, message)`, or the
/// field error the rule's `reason` names.
fn cel_error(e: &kube_cel::ValidationError, value: Option<&Value>) -> FieldError {
    let path = e.field_path.as_str();
    match e.reason.as_deref() {
        Some("FieldValueForbidden") => FieldError::forbidden(path, &e.message),
        Some("FieldValueRequired") => FieldError::new(
            path,
            "FieldValueRequired",
            format!("Required value: {}", e.message),
        ),
        Some("FieldValueDuplicate") => FieldError::new(
            path,
            "FieldValueDuplicate",
            format!("Duplicate value: {}", e.message),
        ),
        _ => FieldError::invalid(
            path,
            &Value::String(value.map_or("object", schema::type_name).into()),
            &e.message,
        ),
    }
}

/// The value at a field path as kube-cel writes it (`spec.subnets[0].cidr`).
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5,
                         "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable"}]},
                "size": {"type": "integer", "minimum": 1, "maximum": 3, "default": 1},
                "ip": {"type": "string", "format": "ipv4"},
                "tags": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set",
                         "items": {"type": "string"}}},
                "x-kubernetes-validations": [{"rule": "self.size < 3 || self.name != 'big'",
                    "messageExpression": "'size ' + string(self.size) + ' too big'"}]}}})
    }

    fn msgs(obj: Value, old: Option<Value>) -> Vec<String> {
        let s = schema();
        let obj = apply_defaults(&s, &obj);
        validate_custom_resource(&Schema::new(s), &obj, old.as_ref())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn value_validations_are_worded_like_the_api_server() {
        assert_eq!(
            msgs(json!({"spec": {"name": "ok"}}), None),
            Vec::<String>::new()
        );
        assert_eq!(
            msgs(json!({"spec": {"name": "Bad", "size": 9, "ip": "1.2.3", "tags": ["a", "a", "b"]}}), None),
            [
                "spec.ip: Invalid value: \"1.2.3\": spec.ip in body must be of type ipv4: \"1.2.3\"",
                "spec.name: Invalid value: \"Bad\": spec.name in body should match '^[a-z]+$'",
                "spec.size: Invalid value: 9: spec.size in body should be less than or equal to 3",
                "spec.tags: Too many: 3: must have at most 2 items",
                "spec.tags[1]: Duplicate value: \"a\"",
            ]
        );
        assert_eq!(
            msgs(json!({"spec": {"size": "x"}}), None),
            [
                "spec.name: Required value",
                "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object \
                 was invalid; correct the existing errors to complete validation",
            ]
        );
        assert_eq!(
            msgs(json!({"spec": {"name": "toolong"}}), None),
            ["spec.name: Too long: may not be more than 5 bytes"]
        );
    }

    #[test]
    fn cel_rules_messages_and_transitions() {
        assert_eq!(
            msgs(json!({"spec": {"name": "big", "size": 3}}), None),
            ["spec: Invalid value: \"object\": size 3 too big"]
        );
        let old = json!({"spec": {"name": "a", "size": 1}});
        assert_eq!(
            msgs(json!({"spec": {"name": "b"}}), Some(old.clone())),
            ["spec.name: Invalid value: \"string\": name is immutable"]
        );
        assert!(msgs(json!({"spec": {"name": "a", "size": 2}}), Some(old)).is_empty());
    }

    #[test]
    fn unchanged_invalid_values_are_ratcheted_on_update() {
        let bad = json!({"spec": {"name": "big", "size": 9}});
        assert_eq!(msgs(bad.clone(), None).len(), 2);
        let mut with_status = bad.clone();
        with_status["status"] = json!({"x": 1});
        assert!(msgs(with_status, Some(bad.clone())).is_empty());
        let mut worse = bad.clone();
        worse["spec"]["name"] = json!("BIG");
        assert!(!msgs(worse, Some(bad)).is_empty());
    }

    #[test]
    fn pruning_reports_unknown_fields() {
        let s = schema();
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
                             "spec": {"name": "a", "nmae": "b"}, "extra": 1});
        let mut unknown = prune(&s, &mut obj);
        unknown.sort();
        assert_eq!(unknown, ["extra", "spec.nmae"]);
        assert_eq!(obj["spec"], json!({"name": "a"}));
        assert_eq!(obj["metadata"]["name"], "n");
        assert_eq!(apply_defaults(&s, &obj)["spec"]["size"], 1);
    }
}

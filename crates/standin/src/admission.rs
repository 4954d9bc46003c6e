//! Admission: what kube-apiserver refuses before an object is stored.
//!
//! - Object names: DNS-1123 subdomains, Namespaces DNS-1123 labels (`names.rs`).
//! - NamespaceLifecycle: no new objects in a namespace being deleted
//!   (`403 Forbidden`); no new objects of a kind whose CRD is being deleted
//!   (`405`).
//! - Custom resources: pruning of unknown fields (refused with
//!   `fieldValidation=Strict`, which kubectl sends), schema defaults, then
//!   the OpenAPI value validations and CEL rules of the CRD version's schema
//!   (`validation.rs`), on create, update, patch and `/status` writes alike.
//!
//! [`WriteOpts::without_admission`] skips all of it, for tests that need an
//! object a real server would hold only after a schema change (type skew).

use serde_json::{json, Value};

use crate::cascade::crd_status;
use crate::resource::{from_crd, ResourceType};
use crate::status::ApiError;
use crate::store::{meta, State, CRD_CLEANUP};
use crate::validation::{apply_defaults, prune, validate_custom_resource};

/// How a write is to be admitted.
#[derive(Debug, Clone)]
pub struct WriteOpts {
    /// `?dryRun=All`: everything but storing.
    pub dry_run: bool,
    /// The API version of the request (its schema validates custom
    /// resources); empty: the storage version.
    pub version: String,
    /// `?fieldValidation=Strict`: unknown fields are an error, not pruned.
    pub strict: bool,
    /// Run admission at all.
    pub admit: bool,
}

impl WriteOpts {
    pub fn request(dry_run: bool, version: &str, strict: bool) -> Self {
        WriteOpts {
            dry_run,
            version: version.to_string(),
            strict,
            admit: true,
        }
    }

    /// Stores what it is given (metadata is still filled in): no name,
    /// namespace-lifecycle or schema checks.
    pub fn without_admission() -> Self {
        WriteOpts {
            dry_run: false,
            version: String::new(),
            strict: false,
            admit: false,
        }
    }
}

/// What kube-apiserver's strategies fill in on a new object of a built-in
/// kind: Namespace spec.finalizers and phase, Pod phase, Secret type, CRD
/// status and cleanup finalizer.
pub(crate) fn prepare_for_create(
    rt: &ResourceType,
    name: &str,
    obj: &mut Value,
) -> Result<(), ApiError> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            // As kube-apiserver: the namespace controller's finalizer
            // holds a deleted namespace until its contents are gone.
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") if obj["status"]["phase"].is_null() => {
            obj["status"]["phase"] = json!("Pending")
        }
        ("", "secrets") if obj["type"].as_str().is_none_or(str::is_empty) => {
            obj["type"] = json!("Opaque")
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let def =
                from_crd(obj).map_err(|e| ApiError::invalid(&rt.group, &rt.plural, name, e))?;
            obj["status"] = crd_status(obj, &def);
            // Holds a deleted CRD until its objects are gone.
            let fin = &mut obj["metadata"]["finalizers"];
            match fin.as_array_mut() {
                Some(list) if !list.contains(&json!(CRD_CLEANUP)) => list.push(json!(CRD_CLEANUP)),
                Some(_) => {}
                None => *fin = json!([CRD_CLEANUP]),
            }
        }
        _ => {}
    }
    Ok(())
}

pub(crate) const CRD_KEY: (&str, &str) = ("apiextensions.k8s.io", "customresourcedefinitions");

pub(crate) fn is_terminating(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

impl State {
    /// The stored CustomResourceDefinition that defines `rt`, if custom.
    pub(crate) fn crd_of(&self, group: &str, plural: &str) -> Option<&Value> {
        self.objects
            .get(&(CRD_KEY.0.into(), CRD_KEY.1.into()))?
            .get(&(String::new(), format!("{plural}.{group}")))
            .map(|o| &**o)
    }

    /// Checks before a new object is created in namespace `ns`.
    pub(crate) fn admit_create(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &WriteOpts,
    ) -> Result<(), ApiError> {
        if !opts.admit {
            return Ok(());
        }
        let errs = crate::names::validate_name(rt, name);
        if !errs.is_empty() {
            return Err(ApiError::invalid_fields(&rt.group, &rt.kind, name, &errs));
        }
        let namespace = self
            .objects
            .get(&(String::new(), "namespaces".into()))
            .and_then(|o| o.get(&(String::new(), ns.to_string())));
        if rt.namespaced && namespace.is_some_and(|n| is_terminating(n)) {
            return Err(ApiError::namespace_terminating(
                &rt.group, &rt.plural, name, ns,
            ));
        }
        if rt.custom
            && self
                .crd_of(&rt.group, &rt.plural)
                .is_some_and(is_terminating)
        {
            return Err(ApiError::crd_terminating());
        }
        Ok(())
    }

    /// Prunes, defaults and validates a custom resource against its CRD
    /// version's schema (`old`: the stored object, on updates).
    pub(crate) fn admit_object(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOpts,
    ) -> Result<(), ApiError> {
        if !opts.admit || !rt.custom {
            return Ok(());
        }
        let version = if opts.version.is_empty() {
            &rt.versions[0]
        } else {
            &opts.version
        };
        let Some(schema) = rt.schemas.get(version) else {
            return Ok(());
        };
        let unknown = prune(schema.json(), obj);
        if opts.strict && !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: \
                 strict decoding error: {}",
                list.join(", "),
                kind = rt.kind
            )));
        }
        *obj = apply_defaults(schema.json(), obj);
        let errs = validate_custom_resource(schema, obj, old);
        if errs.is_empty() {
            Ok(())
        } else {
            let name = meta(obj, "name").unwrap_or_default();
            Err(ApiError::invalid_fields(&rt.group, &rt.kind, &name, &errs))
        }
    }
}

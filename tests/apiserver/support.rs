//! The CRD admission cases of `tests/crds/admission.rs`, judged by the real
//! kube-apiserver instead of kube-cel: the example objects and helpers of
//! `tests/crds/support.rs`, with `assert_admitted`, `assert_rejected` and
//! `admit_json` replaced by requests to the shared server.
//!
//! Each case creates its object under a fresh name (namespaced kinds in
//! namespace `admission`), sets its status through `/status` as the
//! controller does (a create ignores status), or creates `old` first and
//! then replaces it with the object, and deletes it afterwards.
use std::sync::atomic::{AtomicU32, Ordering};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::common::{block_on, namespace, shared};

#[allow(dead_code, unused_imports)]
#[path = "../crds/support.rs"]
mod base;
#[allow(unused_imports)]
pub use base::*;

const NAMESPACE: &str = "admission";

/// What the server answered: `Err(message)` when it refused.
fn submit<K>(obj: &K, old: Option<&K>) -> Result<(), String>
where
    K: CustomResourceExt + Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    K: Clone + std::fmt::Debug,
{
    static N: AtomicU32 = AtomicU32::new(0);
    let namespaced = K::crd().spec.scope == "Namespaced";
    let name = format!("adm-{}", N.fetch_add(1, Ordering::Relaxed));
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(shared().client.clone(), &namespace(NAMESPACE), &ar)
    } else {
        Api::all_with(shared().client.clone(), &ar)
    };
    let prepare = |o: &K| -> (Value, Option<Value>) {
        let mut v = serde_json::to_value(o).unwrap();
        v["metadata"] = serde_json::json!({"name": name});
        if namespaced {
            v["metadata"]["namespace"] = NAMESPACE.into();
        }
        let status = v.as_object_mut().unwrap().remove("status");
        (v, status.filter(|s| !s.is_null()))
    };
    let result = block_on(async {
        let write = |v: Value, status: Option<Value>, create: bool| {
            let api = api.clone();
            let name = name.clone();
            async move {
                let pp = PostParams::default();
                let obj: DynamicObject = serde_json::from_value(v.clone()).unwrap();
                let written = if create {
                    api.create(&pp, &obj).await
                } else {
                    let mut obj = obj;
                    obj.meta_mut().resource_version = api
                        .get(&name)
                        .await
                        .unwrap()
                        .meta()
                        .resource_version
                        .clone();
                    api.replace(&name, &pp, &obj).await
                };
                let written = written.map_err(message)?;
                if let Some(status) = status {
                    let mut body = written;
                    body.data["status"] = status;
                    api.replace_status(&name, &pp, &body)
                        .await
                        .map_err(message)?;
                }
                Ok::<(), String>(())
            }
        };
        if let Some(old) = old {
            let (v, status) = prepare(old);
            if let Err(e) = write(v, status, true).await {
                panic!("the old object was refused: {e}");
            }
        }
        let (v, status) = prepare(obj);
        let r = write(v, status, old.is_none()).await;
        let _ = api.delete(&name, &DeleteParams::default()).await;
        r
    });
    result
}

fn message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        e => panic!("not an API refusal: {e}"),
    }
}

#[track_caller]
pub fn assert_admitted<K>(obj: &K, old: Option<&K>)
where
    K: CustomResourceExt + Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    K: Clone + std::fmt::Debug,
{
    if let Err(e) = submit(obj, old) {
        panic!("kube-apiserver refused {}: {e}", K::kind(&()));
    }
}

#[track_caller]
pub fn assert_rejected<K>(obj: &K, old: Option<&K>, why: &str)
where
    K: CustomResourceExt + Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    K: Clone + std::fmt::Debug,
{
    match submit(obj, old) {
        Ok(()) => panic!(
            "kube-apiserver admitted {} (expected {why:?})",
            K::kind(&())
        ),
        Err(e) => assert!(
            e.contains(why),
            "kube-apiserver refused {} without {why:?}: {e}",
            K::kind(&())
        ),
    }
}

/// Strict field validation (kubectl's default) on create: the unknown
/// fields kube-apiserver names, one message per field, as the stand-in's
/// admission words them.
pub fn admit_json(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    obj: &Value,
    _old: Option<&Value>,
) -> Vec<String> {
    let out = super::common::kubectl(
        &["create", "--validate=strict", "--dry-run=server", "-f", "-"],
        Some(&{
            let mut v = obj.clone();
            if crd.spec.scope == "Namespaced" {
                v["metadata"]["namespace"] = namespace(NAMESPACE).into();
            }
            v.to_string()
        }),
    );
    if out.status.success() {
        return Vec::new();
    }
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // `... strict decoding error: unknown field "spec.target.fixedIp", unknown field "..."`
    match err.split_once("strict decoding error: ") {
        Some((_, fields)) => fields.trim().split(", ").map(str::to_string).collect(),
        None => vec![err],
    }
}

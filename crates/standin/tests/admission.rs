//! Admission through the unmodified kube-rs client: what a real API server
//! refuses, the stand-in refuses, with the same codes, reasons and causes.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::core::Status;
use kube::runtime::{conditions, wait::await_condition};
use kube::{Client, ResourceExt};
use kube_standin::StandIn;
use serde_json::{json, Value};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

/// A `Router` CRD whose schema uses what kube-dvr's CRDs use: required,
/// patterns, formats, bounds, a set, defaults, CEL rules with `message`,
/// `messageExpression` and an `oldSelf` transition, and a status schema.
fn router_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "routers.test.standin.io"},
        "spec": {
            "group": "test.standin.io",
            "scope": "Namespaced",
            "names": {"plural": "routers", "singular": "router", "kind": "Router"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["cidr"], "properties": {
                        "cidr": {"type": "string", "format": "cidr",
                                 "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "cidr is immutable"}]},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                        "size": {"type": "integer", "minimum": 1, "maximum": 64, "default": 4},
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
                    },
                    "x-kubernetes-validations": [{
                        "rule": "self.size <= 32 || has(self.name)",
                        "messageExpression": "'size ' + string(self.size) + ' needs a name'"}]},
                    "status": {"type": "object", "properties": {
                        "vni": {"type": "integer", "minimum": 1, "maximum": 16777215}}}
                }}}
            }]
        }
    })
}

fn gvk() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("test.standin.io", "v1", "Router"))
}

async fn start_with_routers() -> Result<(StandIn, Client, Api<DynamicObject>)> {
    let s = StandIn::start(0).await?;
    let client = Client::try_from(s.kube_config())?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(router_crd())?,
    )
    .await?;
    timeout(
        T,
        await_condition(
            crds,
            "routers.test.standin.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .context("CRD never established")??;
    let api = Api::namespaced_with(client.clone(), "default", &gvk());
    Ok((s, client, api))
}

fn router(name: &str, spec: Value) -> DynamicObject {
    let mut o = DynamicObject::new(name, &gvk());
    o.data = json!({ "spec": spec });
    o
}

fn api_error(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

/// The code and raw `Status` body of a request that fails.
async fn status_body(client: &Client, req: hyper::Request<Vec<u8>>) -> Result<(u16, Value)> {
    let resp = client.send(req.map(Into::into)).await?;
    let code = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    Ok((code, serde_json::from_slice(&body)?))
}

#[tokio::test]
async fn custom_resources_are_validated_against_their_schema() -> Result<()> {
    let (s, client, api) = start_with_routers().await?;
    let pp = PostParams::default();

    // Schema and CEL errors, all at once, as 422 Invalid with causes.
    let bad = router(
        "r1",
        json!({"cidr": "10.0.0.0/33", "name": "Bad", "size": 40, "tags": ["a", "a"]}),
    );
    let req = hyper::Request::post("/apis/test.standin.io/v1/namespaces/default/routers")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&bad)?)?;
    let (code, status) = status_body(&client, req).await?;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    let causes: Vec<(String, String)> = status["details"]["causes"]
        .as_array()
        .context("causes")?
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or("").into(),
                c["message"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        causes,
        [
            ("spec.cidr".into(), "Invalid value: \"10.0.0.0/33\": spec.cidr in body must be of type cidr: \"10.0.0.0/33\"".into()),
            ("spec.name".into(), "Invalid value: \"Bad\": spec.name in body should match '^[a-z]+$'".into()),
            ("spec.tags[1]".into(), "Duplicate value: \"a\"".into()),
        ],
        "{status}"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Router.test.standin.io \"r1\" is invalid: ["),
        "{status}"
    );
    let e = api_error(
        api.create(&pp, &router("r1", json!({"name": "a"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.cidr: Required value"),
        "{}",
        e.message
    );
    let e = api_error(
        api.create(
            &pp,
            &router("r1", json!({"cidr": "10.0.0.0/24", "size": 40})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message
            .ends_with("spec: Invalid value: \"object\": size 40 needs a name"),
        "{}",
        e.message
    );
    let e = api_error(
        api.create(
            &pp,
            &router(
                "r1",
                json!({"cidr": "10.0.0.0/24", "size": 65, "name": "x"}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message
            .contains("spec.size in body should be less than or equal to 64"),
        "{}",
        e.message
    );

    // A valid object is defaulted; unknown fields are pruned.
    let ok = api
        .create(
            &pp,
            &router("r1", json!({"cidr": "10.0.0.0/24", "nmae": "typo"})),
        )
        .await?;
    assert_eq!(ok.data["spec"], json!({"cidr": "10.0.0.0/24", "size": 4}));

    // Updates: the transition rule, through replace, merge patch and apply.
    let mut moved = ok.clone();
    moved.data["spec"]["cidr"] = json!("10.1.0.0/24");
    let e = api_error(api.replace("r1", &pp, &moved).await.unwrap_err());
    assert!(
        e.message
            .ends_with("spec.cidr: Invalid value: \"string\": cidr is immutable"),
        "{}",
        e.message
    );
    let merge = Patch::Merge(json!({"spec": {"cidr": "10.1.0.0/24"}}));
    let e = api_error(
        api.patch("r1", &PatchParams::default(), &merge)
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("cidr is immutable"), "{}", e.message);
    let apply = Patch::Apply(json!({"apiVersion": "test.standin.io/v1", "kind": "Router",
        "metadata": {"name": "r1"}, "spec": {"cidr": "10.0.0.0/24", "size": 0}}));
    let e = api_error(
        api.patch("r1", &PatchParams::apply("t"), &apply)
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("should be greater than or equal to 1"),
        "{}",
        e.message
    );
    let fine = Patch::Merge(json!({"spec": {"size": 8}}));
    assert_eq!(
        api.patch("r1", &PatchParams::default(), &fine).await?.data["spec"]["size"],
        8
    );

    // Status writes validate the status schema.
    let st = Patch::Merge(json!({"status": {"vni": 16_777_216}}));
    let e = api_error(
        api.patch_status("r1", &PatchParams::default(), &st)
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("status.vni in body should be less than or equal to 16777215"),
        "{}",
        e.message
    );
    let st = Patch::Merge(json!({"status": {"vni": 7}}));
    assert_eq!(
        api.patch_status("r1", &PatchParams::default(), &st)
            .await?
            .data["status"]["vni"],
        7
    );

    // fieldValidation=Strict (kubectl's default) refuses unknown fields.
    let typo = router("r2", json!({"cidr": "10.0.0.0/24", "nmae": "x"}));
    let req = hyper::Request::post(
        "/apis/test.standin.io/v1/namespaces/default/routers?fieldValidation=Strict",
    )
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&typo)?)?;
    let (code, status) = status_body(&client, req).await?;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("strict decoding error: unknown field \"spec.nmae\""),
        "{status}"
    );
    assert!(api.get_opt("r2").await?.is_none());
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn object_names_are_validated() -> Result<()> {
    let s = StandIn::start(0).await?;
    let client = Client::try_from(s.kube_config())?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    let e = api_error(
        cms.create(&PostParams::default(), &cm("Bad_Name"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{}",
        e.message
    );
    cms.create(&PostParams::default(), &cm("ok.with-dots"))
        .await?;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = |name: &str| -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    let e = api_error(
        nss.create(&PostParams::default(), &ns("with.dots"))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("a lowercase RFC 1123 label must consist of"),
        "{}",
        e.message
    );
    let e = api_error(
        nss.create(&PostParams::default(), &ns(&"n".repeat(64)))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("must be no more than 63 characters"),
        "{}",
        e.message
    );
    nss.create(&PostParams::default(), &ns(&"n".repeat(63)))
        .await?;
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn strategic_merge_patch_on_a_custom_resource_is_unsupported() -> Result<()> {
    let (s, client, api) = start_with_routers().await?;
    api.create(
        &PostParams::default(),
        &router("r1", json!({"cidr": "10.0.0.0/24"})),
    )
    .await?;
    let smp = Patch::Strategic(json!({"spec": {"size": 5}}));
    let e = api_error(
        api.patch("r1", &PatchParams::default(), &smp)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    assert_eq!(api.get("r1").await?.data["spec"]["size"], 4);
    // Built-in kinds still take it.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}}))?,
    )
    .await?;
    let smp = Patch::Strategic(json!({"data": {"a": "b"}}));
    cms.patch("c", &PatchParams::default(), &smp).await?;
    s.shutdown().await;
    Ok(())
}

async fn wait_gone<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    timeout(T, async {
        while api.get_opt(name).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, kube::Error>(())
    })
    .await
    .with_context(|| format!("{name} never went away"))??;
    Ok(())
}

#[tokio::test]
async fn crd_deletion_waits_for_its_objects_finalizers() -> Result<()> {
    let (s, client, api) = start_with_routers().await?;
    let mut held = router("held", json!({"cidr": "10.0.0.0/24"}));
    held.metadata.finalizers = Some(vec!["test.standin.io/hold".into()]);
    api.create(&PostParams::default(), &held).await?;
    api.create(
        &PostParams::default(),
        &router("free", json!({"cidr": "10.0.1.0/24"})),
    )
    .await?;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("routers.test.standin.io", &DeleteParams::default())
        .await?;
    // The CRD stays, terminating, while an object holds it; objects without
    // finalizers are gone, the held one is marked.
    let crd = crds.get("routers.test.standin.io").await?;
    assert!(crd.metadata.deletion_timestamp.is_some());
    assert!(api.get_opt("free").await?.is_none());
    assert!(api.get("held").await?.metadata.deletion_timestamp.is_some());
    let e = api_error(
        api.create(
            &PostParams::default(),
            &router("new", json!({"cidr": "10.0.2.0/24"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 405, "{}", e.message);

    // Releasing the finalizer lets the object, then the CRD, go.
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    api.patch("held", &PatchParams::default(), &release).await?;
    wait_gone(&api, "held").await?;
    wait_gone(&crds, "routers.test.standin.io").await?;
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn namespace_stays_terminating_until_its_contents_are_gone() -> Result<()> {
    let s = StandIn::start(0).await?;
    let client = Client::try_from(s.kube_config())?;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "t1"}}))?,
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t1");
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["test.standin.io/hold"]}}),
    )?;
    cms.create(&PostParams::default(), &held).await?;
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "free"}}))?,
    )
    .await?;

    // The namespaces the cluster needs cannot be deleted.
    let e = api_error(
        nss.delete("default", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            403,
            "namespaces \"default\" is forbidden: this namespace may not be deleted"
        )
    );

    nss.delete("t1", &DeleteParams::default()).await?;
    let ns = nss.get("t1").await?;
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert!(cms.get_opt("free").await?.is_none());
    assert!(cms.get("held").await?.metadata.deletion_timestamp.is_some());
    // NamespaceLifecycle: nothing new in a terminating namespace.
    let e = api_error(
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"}}))?,
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(
        e.message.contains(
            "unable to create new content in namespace t1 because it is being terminated"
        ),
        "{}",
        e.message
    );

    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    cms.patch("held", &PatchParams::default(), &release).await?;
    wait_gone(&cms, "held").await?;
    wait_gone(&nss, "t1").await?;
    // The name is free again.
    let again = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "t1"}}))?,
        )
        .await?;
    assert_eq!(again.name_any(), "t1");
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn insert_without_admission_stores_what_admission_refuses() -> Result<()> {
    let s = StandIn::start(0).await?;
    let client = Client::try_from(s.kube_config())?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "counters.test.standin.io"},
            "spec": {
                "group": "test.standin.io", "scope": "Namespaced",
                "names": {"plural": "counters", "singular": "counter", "kind": "Counter"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 10}}},
                        "status": {"type": "object", "properties": {"seen": {"type": "integer"}}}}}}}]
            }
        }))?,
    )
    .await?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("test.standin.io", "v1", "Counter"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    // What an older schema admitted (a string) is refused today...
    let mut skewed = DynamicObject::new("old", &ar);
    skewed.data = json!({"spec": {"n": "eleven"}, "status": {"seen": "x"}});
    let refused = api_error(
        api.create(&PostParams::default(), &skewed)
            .await
            .unwrap_err(),
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    // ...but can be put in place as a cluster upgraded under it would hold it,
    // and watchers and readers see it as stored.
    let stored = s
        .insert_without_admission(serde_json::to_value(&skewed)?)
        .map_err(anyhow::Error::msg)?;
    assert_eq!(stored["spec"]["n"], "eleven");
    let raw = api.get("old").await?;
    assert_eq!(
        (&raw.data["spec"]["n"], &raw.data["status"]["seen"]),
        (&json!("eleven"), &json!("x"))
    );
    // Replacing an existing object works the same way.
    skewed.data["spec"]["n"] = json!(99);
    s.insert_without_admission(serde_json::to_value(&skewed)?)
        .map_err(anyhow::Error::msg)?;
    assert_eq!(api.get("old").await?.data["spec"]["n"], 99);
    // A label change through the API is still admitted: unchanged invalid
    // values are ratcheted, as in kube-apiserver.
    let label = Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}));
    api.patch("old", &PatchParams::default(), &label).await?;
    s.shutdown().await;
    Ok(())
}

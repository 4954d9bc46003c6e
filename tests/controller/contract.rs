//! The exact requests that matter, against a `tower-test` mock API server:
//! status merge patch, finalizer add/remove, Lease acquire/renew/lose.
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use kube_dvr::api::PerKind;
use kube_dvr::controller::desired::{compute, Kind, Snapshot};
use kube_dvr::controller::leader::{LeaderElector, LeaseConfig};
use kube_dvr::controller::{write_finalizers, write_status};

use super::support::{mk_fip, mk_node, mk_port};

type H = Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (Client, H) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

/// Take the next request and answer it with `status` and `body`.
async fn answer(h: &mut H, status: u16, reply: Value) -> Seen {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), h.next_request())
        .await
        .expect("a request within 5 s")
        .expect("the client is alive");
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    Seen {
        method,
        path,
        content_type,
        body,
    }
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "NotFound", "code": 404, "message": "not found"})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "Conflict", "code": 409, "message": "the object has been modified"})
}

/// The lab's manifests, nodes and the pod `a-web`, before any status.
fn snapshot() -> Snapshot {
    let m = kube_dvr::lab::Manifests::load("examples/lab/manifests".as_ref()).unwrap();
    let mut fip = mk_fip(
        "tenant-a",
        "web",
        "main",
        "10.10.1.10",
        Some("203.0.113.100"),
    );
    fip.metadata.generation = Some(1);
    fip.metadata.resource_version = Some("41".into());
    Snapshot {
        objects: PerKind {
            external_networks: m
                .objects
                .external_networks
                .into_iter()
                .map(Into::into)
                .collect(),
            routers: m.objects.routers.into_iter().map(Into::into).collect(),
            floating_ips: vec![fip.into()],
            ..Default::default()
        },
        pods: kube_dvr::cluster::port_infos(&[mk_port(
            "tenant-a",
            "a-web",
            "node-1",
            "tenant-a/net-a1",
            "10.10.1.10",
            "02:0a:00:01:00:0a",
        )])
        .into(),
        nodes: vec![mk_node("node-1", "198.18.0.11", "compute")],
        now: k8s_openapi::jiff::Timestamp::now(),
        ..Default::default()
    }
}

#[tokio::test]
async fn status_write_is_a_merge_patch_on_the_status_subresource() {
    let actions = compute(&snapshot());
    let w = actions
        .status
        .iter()
        .find(|w| w.target.kind == Kind::FloatingIP)
        .unwrap()
        .clone();
    let (client, mut h) = mock_client();
    let task = tokio::spawn(async move { write_status(&client, &w).await });
    let seen = answer(
        &mut h,
        200,
        json!({"apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
        "metadata": {"name": "web", "namespace": "tenant-a"}}),
    )
    .await;
    task.await.unwrap().unwrap();
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/kubedvr.io/v1alpha1/namespaces/tenant-a/floatingips/web/status"
    );
    assert_eq!(seen.content_type, "application/merge-patch+json");
    let st = &seen.body["status"];
    assert_eq!(st["address"], "203.0.113.100");
    assert_eq!(st["node"], "node-1");
    assert_eq!(st["observedGeneration"], 1);
    let types: Vec<&str> = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for t in ["Ready", "Valid", "Allocated", "Scheduled", "Programmed"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    assert!(
        seen.body.get("spec").is_none(),
        "a status patch carries no spec"
    );
}

#[tokio::test]
async fn finalizer_add_and_remove_are_guarded_merge_patches() {
    let s = snapshot();
    let actions = compute(&s);
    let add = actions
        .add_finalizer
        .iter()
        .find(|f| f.target.kind == Kind::FloatingIP)
        .unwrap()
        .clone();
    let (client, mut h) = mock_client();
    let c = client.clone();
    let task = tokio::spawn(async move { write_finalizers(&c, &add).await });
    let seen = answer(
        &mut h,
        200,
        json!({"apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
        "metadata": {"name": "web", "namespace": "tenant-a"}}),
    )
    .await;
    task.await.unwrap().unwrap();
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/kubedvr.io/v1alpha1/namespaces/tenant-a/floatingips/web"
    );
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(
        seen.body,
        json!({"metadata": {"finalizers": ["kubedvr.io/cleanup"], "resourceVersion": "41"}})
    );

    // Removal: the object is being deleted, no node holds it any more.
    let mut s = s;
    let fip = std::sync::Arc::make_mut(&mut s.floating_ips[0]);
    fip.metadata.finalizers = Some(vec![
        "example.com/other".into(),
        "kubedvr.io/cleanup".into(),
    ]);
    fip.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let digests = kube_dvr::controller::desired::expected_digests(&s);
    for n in &mut s.nodes {
        let d = digests[n.metadata.name.as_deref().unwrap()].clone();
        n.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(kube_dvr::cluster::PROGRAMMED_ANNOTATION.into(), d);
    }
    let rm = compute(&s)
        .remove_finalizer
        .into_iter()
        .find(|f| f.target.kind == Kind::FloatingIP)
        .unwrap();
    let task = tokio::spawn(async move { write_finalizers(&client, &rm).await });
    // A conflict (the object changed meanwhile) is reported, not retried blindly.
    let seen = answer(&mut h, 409, conflict()).await;
    assert!(task.await.unwrap().is_err());
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.body,
        json!({"metadata": {"finalizers": ["example.com/other"], "resourceVersion": "41"}})
    );
    assert!(!seen.body.to_string().contains("kubedvr.io/cleanup"));
}

fn lease_cfg() -> LeaseConfig {
    LeaseConfig::new("kube-dvr", "kube-dvr-controller", "controller-0")
}

fn lease(holder: &str, rv: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kube-dvr-controller", "namespace": "kube-dvr", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 3}})
}

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kube-dvr/leases/kube-dvr-controller";

#[tokio::test]
async fn lease_acquire_renew_and_lose() {
    let (client, mut h) = mock_client();
    let mut el = LeaderElector::new(client, lease_cfg());

    // Acquire: GET (404) then POST with our identity.
    let task = tokio::spawn(async move {
        let r = el.try_acquire_or_renew().await;
        (el, r)
    });
    let get = answer(&mut h, 404, not_found()).await;
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", LEASE_PATH)
    );
    let post = answer(&mut h, 201, lease("controller-0", "5")).await;
    let (mut el, r) = task.await.unwrap();
    assert!(r.unwrap(), "created the Lease: leader");
    assert_eq!(post.method, "POST");
    assert_eq!(
        post.path,
        "/apis/coordination.k8s.io/v1/namespaces/kube-dvr/leases"
    );
    assert_eq!(post.body["metadata"]["name"], "kube-dvr-controller");
    assert_eq!(post.body["spec"]["holderIdentity"], "controller-0");
    assert_eq!(post.body["spec"]["leaseDurationSeconds"], 15);
    assert!(post.body["spec"]["renewTime"].is_string());

    // Renew: GET then PUT guarded by the resourceVersion read.
    let task = tokio::spawn(async move {
        let r = el.try_acquire_or_renew().await;
        (el, r)
    });
    answer(&mut h, 200, lease("controller-0", "7")).await;
    let put = answer(&mut h, 200, lease("controller-0", "8")).await;
    let (mut el, r) = task.await.unwrap();
    assert!(r.unwrap());
    assert_eq!(
        (put.method.as_str(), put.path.as_str()),
        ("PUT", LEASE_PATH)
    );
    assert_eq!(put.body["metadata"]["resourceVersion"], "7");
    assert_eq!(put.body["spec"]["holderIdentity"], "controller-0");
    assert_ne!(
        put.body["spec"]["renewTime"], "2026-01-01T00:00:00.000000Z",
        "renewTime moves"
    );
    assert_eq!(
        put.body["spec"]["leaseTransitions"], 3,
        "a renewal is no transition"
    );

    // Lose the race: 409 on the PUT means another replica won.
    let task = tokio::spawn(async move {
        let r = el.try_acquire_or_renew().await;
        (el, r)
    });
    answer(&mut h, 200, lease("controller-0", "8")).await;
    answer(&mut h, 409, conflict()).await;
    let (mut el, r) = task.await.unwrap();
    assert!(!r.unwrap());
    assert!(!el.is_leader());

    // Someone else holds a fresh Lease: no write at all.
    let task = tokio::spawn(async move {
        let r = el.try_acquire_or_renew().await;
        (el, r)
    });
    answer(&mut h, 200, lease("controller-1", "9")).await;
    let (_el, r) = task.await.unwrap();
    assert!(!r.unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), h.next_request())
            .await
            .is_err(),
        "a standby must not write a Lease it does not hold"
    );
}

#[tokio::test]
async fn renewal_failure_steps_down() {
    let (client, mut h) = mock_client();
    let mut el = LeaderElector::new(client, lease_cfg());
    let task = tokio::spawn(async move {
        let r = el.try_acquire_or_renew().await;
        (el, r)
    });
    answer(&mut h, 200, lease("controller-0", "7")).await;
    answer(&mut h, 200, lease("controller-0", "8")).await;
    let (mut el, r) = task.await.unwrap();
    assert!(r.unwrap() && el.is_leader());
    let task = tokio::spawn(async move {
        let r = el.try_acquire_or_renew().await;
        (el, r)
    });
    answer(
        &mut h,
        500,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "InternalError", "code": 500, "message": "etcd down"}),
    )
    .await;
    let (el, r) = task.await.unwrap();
    assert!(r.is_err());
    assert!(!el.is_leader(), "a leader that cannot renew is no leader");
}

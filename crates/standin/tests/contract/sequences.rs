//! Request sequences a client of the API makes, with what it must see:
//! the contract between kube-dvr and the API server. Each takes a client and
//! a namespace of its own. `tests/kube_client.rs` runs them on the stand-in;
//! kube-dvr's `tests/apiserver/contract.rs` runs the very same sequences on
//! the stand-in and on a real kube-apiserver, so the stand-in stays honest
//! where it is still used.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{conditions, reflector, wait::await_condition, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::time::timeout;

pub const T: Duration = Duration::from_secs(10);

/// Every sequence, by name.
pub const ALL: &[&str] = &[
    "crud_conflicts_and_errors",
    "status_subresource_and_generation",
    "finalizers_hold_deletion_until_removed",
    "watcher_with_field_selector_sees_only_its_node",
    "reflector_converges",
    "lease_optimistic_concurrency",
    "recorder_events_are_visible_as_core_events",
    "lists_come_in_pages",
];

/// Run the sequence `name`.
pub async fn run(name: &str, client: &Client, ns: &str) -> Result<()> {
    match name {
        "crud_conflicts_and_errors" => crud_conflicts_and_errors(client, ns).await,
        "status_subresource_and_generation" => status_subresource_and_generation(client, ns).await,
        "finalizers_hold_deletion_until_removed" => {
            finalizers_hold_deletion_until_removed(client, ns).await
        }
        "watcher_with_field_selector_sees_only_its_node" => {
            watcher_with_field_selector_sees_only_its_node(client, ns).await
        }
        "reflector_converges" => reflector_converges(client, ns).await,
        "lease_optimistic_concurrency" => lease_optimistic_concurrency(client, ns).await,
        "recorder_events_are_visible_as_core_events" => {
            recorder_events_are_visible_as_core_events(client, ns).await
        }
        "lists_come_in_pages" => lists_come_in_pages(client, ns).await,
        other => bail!("no sequence {other}"),
    }
}

pub fn status_of(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

/// Installs a namespaced `Gadget` CRD with a status subresource and returns
/// an API for its objects in `ns`. The CRD may exist already (one server,
/// several sequences).
pub async fn gadgets(client: &Client, ns: &str) -> Result<Api<DynamicObject>> {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.test.standin.io"},
        "spec": {
            "group": "test.standin.io",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    timeout(
        T,
        await_condition(
            crds,
            "gadgets.test.standin.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .context("CRD never established")??;
    let gvk = GroupVersionKind::gvk("test.standin.io", "v1", "Gadget");
    Ok(Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk(&gvk),
    ))
}

pub fn gadget(name: &str, spec: serde_json::Value) -> DynamicObject {
    let gvk = GroupVersionKind::gvk("test.standin.io", "v1", "Gadget");
    let mut o = DynamicObject::new(name, &ApiResource::from_gvk(&gvk));
    o.data = json!({ "spec": spec });
    o
}

pub fn pod(ns: &str, name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "t"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod")
}

pub async fn crud_conflicts_and_errors(client: &Client, ns: &str) -> Result<()> {
    let api = gadgets(client, ns).await?;
    let created = api
        .create(&PostParams::default(), &gadget("g1", json!({"size": 1})))
        .await?;
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let rv1 = created.resource_version().context("rv")?;

    let dup = api
        .create(&PostParams::default(), &gadget("g1", json!({})))
        .await
        .unwrap_err();
    assert_eq!(status_of(&dup), Some((409, "AlreadyExists".into())));
    let missing = api.get("nope").await.unwrap_err();
    assert_eq!(status_of(&missing), Some((404, "NotFound".into())));

    // A current update succeeds, bumps resourceVersion and generation...
    let mut fresh = api.get("g1").await?;
    fresh.data["spec"]["size"] = json!(2);
    let updated = api.replace("g1", &PostParams::default(), &fresh).await?;
    assert_ne!(updated.resource_version(), Some(rv1.clone()));
    assert_eq!(updated.metadata.generation, Some(2));
    // ...a stale one is refused.
    let mut stale = created.clone();
    stale.data["spec"]["size"] = json!(3);
    let err = api
        .replace("g1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some((409, "Conflict".into())));

    let list = api.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    assert_eq!(list.items[0].data["spec"]["size"], 2);
    Ok(())
}

pub async fn status_subresource_and_generation(client: &Client, ns: &str) -> Result<()> {
    let api = gadgets(client, ns).await?;
    api.create(&PostParams::default(), &gadget("g", json!({"size": 1})))
        .await?;

    // Server-side apply on /status: only status changes, generation stays.
    let applied = json!({
        "apiVersion": "test.standin.io/v1", "kind": "Gadget", "metadata": {"name": "g"},
        "spec": {"size": 99},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}
    });
    let pp = PatchParams::apply("standin-test").force();
    let after = api.patch_status("g", &pp, &Patch::Apply(&applied)).await?;
    assert_eq!(after.data["status"]["conditions"][0]["status"], "True");
    assert_eq!(
        after.data["spec"]["size"], 1,
        "a status write must not touch spec"
    );
    assert_eq!(after.metadata.generation, Some(1));

    // Re-applying the same status is not a write: same resourceVersion.
    let again = api.patch_status("g", &pp, &Patch::Apply(&applied)).await?;
    assert_eq!(again.resource_version(), after.resource_version());

    // Merge patch on /status.
    let merged = api
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Up"}})),
        )
        .await?;
    assert_eq!(merged.data["status"]["phase"], "Up");
    assert_eq!(merged.metadata.generation, Some(1));

    // Main-resource writes ignore status; metadata-only changes keep generation.
    let labelled = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Down"}})),
        )
        .await?;
    assert_eq!(labelled.data["status"]["phase"], "Up");
    assert_eq!(labelled.metadata.generation, Some(1));
    let respec = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await?;
    assert_eq!(respec.metadata.generation, Some(2));

    // JSON patch and server-side apply of the main resource.
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/size", "value": 6}]))?;
    let patched = api
        .patch("g", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await?;
    assert_eq!(
        (
            patched.data["spec"]["size"].as_i64(),
            patched.metadata.generation
        ),
        (Some(6), Some(3))
    );
    // Creating by apply: the name must be in the body, not only the URL.
    let nameless = api
        .patch(
            "g2",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "test.standin.io/v1", "kind": "Gadget", "spec": {"size": 7}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&nameless).map(|s| s.0), Some(400));
    let created = api
        .patch(
            "g2",
            &pp,
            &Patch::Apply(json!({"apiVersion": "test.standin.io/v1", "kind": "Gadget",
                "metadata": {"name": "g2"}, "spec": {"size": 7}})),
        )
        .await?;
    assert_eq!(
        (
            created.data["spec"]["size"].as_i64(),
            created.metadata.generation
        ),
        (Some(7), Some(1))
    );
    Ok(())
}

pub async fn finalizers_hold_deletion_until_removed(client: &Client, ns: &str) -> Result<()> {
    let api = gadgets(client, ns).await?;
    let mut g = gadget("f", json!({}));
    g.metadata.finalizers = Some(vec!["test.standin.io/cleanup".into()]);
    let created = api.create(&PostParams::default(), &g).await?;
    let rv = created.resource_version().context("rv")?;
    let mut events = api.watch(&WatchParams::default(), &rv).await?.boxed();

    let deleted = api.delete("f", &DeleteParams::default()).await?;
    let marked = deleted
        .left()
        .context("object with finalizers must be returned, not a Status")?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        api.get("f").await?.metadata.deletion_timestamp.is_some(),
        "object must stay"
    );

    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    let err = api.get("f").await.unwrap_err();
    assert_eq!(status_of(&err).map(|s| s.0), Some(404));

    let mut seen = Vec::new();
    while let Some(ev) = timeout(T, events.try_next()).await?? {
        match ev {
            WatchEvent::Modified(o) => {
                seen.push(("MODIFIED", o.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Deleted(_) => {
                seen.push(("DELETED", true));
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => bail!("unexpected event {other:?}"),
        }
    }
    assert_eq!(seen, vec![("MODIFIED", true), ("DELETED", true)]);
    Ok(())
}

pub async fn watcher_with_field_selector_sees_only_its_node(
    client: &Client,
    ns: &str,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod(ns, "a1", "n1"))
        .await?;
    pods.create(&PostParams::default(), &pod(ns, "b1", "n2"))
        .await?;
    let all: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut stream = watcher(all, watcher::Config::default().fields("spec.nodeName=n1")).boxed();
    let mut names = Vec::new();
    loop {
        match timeout(T, stream.try_next())
            .await??
            .context("watcher ended")?
        {
            watcher::Event::InitApply(p) => names.push(p.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, vec!["a1"]);
    pods.create(&PostParams::default(), &pod(ns, "b2", "n2"))
        .await?;
    pods.create(&PostParams::default(), &pod(ns, "a2", "n1"))
        .await?;
    match timeout(T, stream.try_next())
        .await??
        .context("watcher ended")?
    {
        watcher::Event::Apply(p) => assert_eq!(p.name_any(), "a2", "n2's pod must not be seen"),
        other => bail!("unexpected {other:?}"),
    }
    // The Pod status subresource: status writes keep the spec.
    let st = pods
        .patch_status(
            "a2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podIP": "10.0.0.5"}})),
        )
        .await?;
    assert_eq!(
        st.status.and_then(|s| s.pod_ip).as_deref(),
        Some("10.0.0.5")
    );
    Ok(())
}

pub async fn reflector_converges(client: &Client, ns: &str) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let (reader, writer) = reflector::store();
    let rf = reflector(writer, watcher(cms.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(rf.for_each(|_| async {}));
    for n in ["x", "y", "z"] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": n}, "data": {"k": n}}))?,
        )
        .await?;
    }
    cms.delete("y", &DeleteParams::default()).await?;
    cms.patch(
        "z",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "zz"}})),
    )
    .await?;
    timeout(T, async {
        loop {
            let mut names: Vec<(String, String)> = reader
                .state()
                .iter()
                .map(|c| {
                    (
                        c.name_any(),
                        c.data
                            .as_ref()
                            .and_then(|d| d.get("k").cloned())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            names.sort();
            if names == vec![("x".into(), "x".into()), ("z".into(), "zz".into())] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("reflector never converged")?;
    task.abort();
    Ok(())
}

pub async fn lease_optimistic_concurrency(client: &Client, ns: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "kube-dvr-controller"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))?;
    let held = leases.create(&PostParams::default(), &lease).await?;
    let mut by_b = held.clone();
    by_b.spec.as_mut().context("spec")?.holder_identity = Some("b".into());
    let taken = leases
        .replace("kube-dvr-controller", &PostParams::default(), &by_b)
        .await?;
    assert_eq!(
        taken.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
    // "a" still holds the old version: its renewal must fail.
    let mut by_a = held;
    by_a.spec.as_mut().context("spec")?.lease_duration_seconds = Some(30);
    let err = leases
        .replace("kube-dvr-controller", &PostParams::default(), &by_a)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(st) if st.is_conflict()),
        "{err:?}"
    );
    Ok(())
}

pub async fn recorder_events_are_visible_as_core_events(client: &Client, ns: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let p = pods
        .create(&PostParams::default(), &pod(ns, "ev", "n1"))
        .await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "standin-test".into(),
            instance: None,
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("ev".into()),
        namespace: Some(ns.into()),
        uid: p.uid(),
        ..Default::default()
    };
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: "Invalid".into(),
        note: Some("subnet overlaps".into()),
        action: "Validate".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await?;
    recorder.publish(&ev, &reference).await?; // second time: a series patch
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    let found = core
        .list(&ListParams::default().fields("involvedObject.name=ev,involvedObject.kind=Pod"))
        .await?;
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].message.as_deref(), Some("subnet overlaps"));
    assert_eq!(found.items[0].reason.as_deref(), Some("Invalid"));
    assert!(
        found.items[0].series.is_some(),
        "the repeat must be recorded as a series"
    );
    Ok(())
}

/// `limit` and `continue`: five ConfigMaps listed two at a time come back
/// each exactly once, in three pages of at most two, the last without a
/// token.
pub async fn lists_come_in_pages(client: &Client, ns: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let label = "contract-pages=yes";
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("page-{i}"), "labels": {"contract-pages": "yes"}}
        }))?;
        api.create(&PostParams::default(), &cm).await?;
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().labels(label).limit(2);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await?;
        pages += 1;
        if page.items.len() > 2 {
            bail!("a page of {} items with limit 2", page.items.len());
        }
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                lp = ListParams::default()
                    .labels(label)
                    .limit(2)
                    .continue_token(&token)
            }
            None => break,
        }
        if pages > 10 {
            bail!("more than 10 pages for 5 objects");
        }
    }
    names.sort();
    let want: Vec<String> = (0..5).map(|i| format!("page-{i}")).collect();
    if names != want || pages != 3 {
        bail!("paged list: {names:?} in {pages} pages");
    }
    for i in 0..5 {
        api.delete(&format!("page-{i}"), &DeleteParams::default())
            .await?;
    }
    Ok(())
}

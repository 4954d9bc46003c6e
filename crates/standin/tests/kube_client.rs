//! The unmodified kube-rs clients against a real `StandIn` on 127.0.0.1.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{conditions, reflector, wait::await_condition, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use kube_standin::{Options, StandIn};
use serde_json::json;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn start() -> Result<(StandIn, Client)> {
    let s = StandIn::start(0).await?;
    let client = Client::try_from(s.kube_config())?;
    Ok((s, client))
}

fn status_of(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

/// Installs a namespaced `Gadget` CRD with a status subresource and returns
/// an API for its objects in `default`.
async fn gadgets(client: &Client) -> Result<Api<DynamicObject>> {
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
    crds.create(&PostParams::default(), &crd).await?;
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
        "default",
        &ApiResource::from_gvk(&gvk),
    ))
}

fn gadget(name: &str, spec: serde_json::Value) -> DynamicObject {
    let gvk = GroupVersionKind::gvk("test.standin.io", "v1", "Gadget");
    let mut o = DynamicObject::new(name, &ApiResource::from_gvk(&gvk));
    o.data = json!({ "spec": spec });
    o
}

#[tokio::test]
async fn crud_conflicts_and_errors() -> Result<()> {
    let (s, client) = start().await?;
    let api = gadgets(&client).await?;
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
    assert!(s.write_count() >= 3, "writes counted: {}", s.write_count());

    // The kubeconfig file works for kube-rs too.
    let path = std::env::temp_dir().join(format!("standin-kubeconfig-{}", std::process::id()));
    s.write_kubeconfig(&path)?;
    let kc = kube::config::Kubeconfig::read_from(&path)?;
    std::fs::remove_file(&path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    assert_eq!(cfg.default_namespace, "default");
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("test.standin.io", "v1", "Gadget"));
    let via_file: Api<DynamicObject> = Api::default_namespaced_with(Client::try_from(cfg)?, &ar);
    assert_eq!(via_file.get("g1").await?.data["spec"]["size"], 2);
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_generation() -> Result<()> {
    let (s, client) = start().await?;
    let api = gadgets(&client).await?;
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
    let created = api
        .patch(
            "g2",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "test.standin.io/v1", "kind": "Gadget", "spec": {"size": 7}}),
            ),
        )
        .await?;
    assert_eq!(
        (
            created.data["spec"]["size"].as_i64(),
            created.metadata.generation
        ),
        (Some(7), Some(1))
    );
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() -> Result<()> {
    let (s, client) = start().await?;
    let api = gadgets(&client).await?;
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
    s.shutdown().await;
    Ok(())
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "t"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod")
}

#[tokio::test]
async fn watcher_with_field_selector_sees_only_its_node() -> Result<()> {
    let (s, client) = start().await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("a1", "n1"))
        .await?;
    pods.create(&PostParams::default(), &pod("b1", "n2"))
        .await?;
    let all: Api<Pod> = Api::all(client.clone());
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
    pods.create(&PostParams::default(), &pod("b2", "n2"))
        .await?;
    pods.create(&PostParams::default(), &pod("a2", "n1"))
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
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn watch_resumes_and_expired_versions_relist() -> Result<()> {
    let s = StandIn::start_with(
        0,
        Options {
            bookmark_interval: Duration::from_millis(200),
            ..Options::default()
        },
    )
    .await?;
    let client = Client::try_from(s.kube_config())?;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = |n: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": n}})).expect("cm")
    };
    let first = cms.create(&PostParams::default(), &cm("c1")).await?;
    let rv = first.resource_version().context("rv")?;
    cms.create(&PostParams::default(), &cm("c2")).await?;
    cms.delete("c1", &DeleteParams::default()).await?;

    // Resume from c1's version: exactly the later changes, in order.
    let wp = WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    };
    let mut events = cms.watch(&wp, &rv).await?.boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match timeout(T, events.try_next())
            .await??
            .context("watch ended")?
        {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Bookmark(_) => {}
            other => bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, vec!["ADDED c2", "DELETED c1"]);
    // Bookmarks arrive on an idle watch.
    match timeout(T, events.try_next())
        .await??
        .context("watch ended")?
    {
        WatchEvent::Bookmark(b) => assert!(!b.metadata.resource_version.is_empty()),
        other => bail!("expected a bookmark, got {other:?}"),
    }

    // Older than the log: 410 Expired.
    s.compact_log();
    let mut expired = cms.watch(&WatchParams::default(), &rv).await?.boxed();
    match timeout(T, expired.try_next())
        .await??
        .context("watch ended")?
    {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => bail!("expected 410, got {other:?}"),
    }

    // A watcher whose position gets compacted away relists and carries on.
    let mut w = watcher(
        cms.clone(),
        watcher::Config::default().timeout(1).disable_bookmarks(),
    )
    .boxed();
    let mut inits = 0;
    loop {
        if let watcher::Event::InitDone = timeout(T, w.try_next()).await??.context("ended")? {
            inits += 1;
            break;
        }
    }
    // Writes elsewhere move the global version past the watcher's position.
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}}))?,
        )
        .await?;
    s.compact_log();
    cms.create(&PostParams::default(), &cm("c3")).await?;
    let (mut saw_c3, mut saw_gone) = (false, false);
    while inits < 2 || !saw_c3 {
        // The watcher reports the 410 as an error item, then relists.
        match timeout(T, w.next()).await?.context("ended")? {
            Err(watcher::Error::WatchError(e)) if e.code == 410 => saw_gone = true,
            Err(e) => bail!("unexpected watcher error {e}"),
            Ok(watcher::Event::InitDone) => inits += 1,
            Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) if o.name_any() == "c3" => {
                saw_c3 = true
            }
            Ok(_) => {}
        }
    }
    assert!(saw_gone, "the watcher must have hit 410 Gone");
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn reflector_converges() -> Result<()> {
    let (s, client) = start().await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
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
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn lease_optimistic_concurrency() -> Result<()> {
    let (s, client) = start().await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
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
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn recorder_events_are_visible_as_core_events() -> Result<()> {
    let (s, client) = start().await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let p = pods
        .create(&PostParams::default(), &pod("ev", "n1"))
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
        namespace: Some("default".into()),
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
    let core: Api<CoreEvent> = Api::default_namespaced(client.clone());
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
    s.shutdown().await;
    Ok(())
}

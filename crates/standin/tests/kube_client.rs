//! The unmodified kube-rs clients against a real `StandIn` on 127.0.0.1.
//!
//! The request sequences themselves are in `contract/sequences.rs`, shared
//! with kube-dvr's `tests/apiserver/contract.rs`, which runs them on a real
//! kube-apiserver too; what only the stand-in can show (its write counter,
//! its kubeconfig file, a log compaction on demand) stays here.

#[path = "contract/sequences.rs"]
mod sequences;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kube_standin::{Options, StandIn};
use serde_json::json;
use tokio::time::timeout;

use sequences::T;

async fn start() -> Result<(StandIn, Client)> {
    let s = StandIn::start(0).await?;
    let client = Client::try_from(s.kube_config())?;
    Ok((s, client))
}

/// A sequence on a fresh stand-in, in `default`.
async fn on_standin(name: &str) -> Result<()> {
    let (s, client) = start().await?;
    sequences::run(name, &client, "default").await?;
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn crud_conflicts_and_errors() -> Result<()> {
    let (s, client) = start().await?;
    sequences::crud_conflicts_and_errors(&client, "default").await?;
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
    on_standin("status_subresource_and_generation").await
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() -> Result<()> {
    on_standin("finalizers_hold_deletion_until_removed").await
}

#[tokio::test]
async fn watcher_with_field_selector_sees_only_its_node() -> Result<()> {
    on_standin("watcher_with_field_selector_sees_only_its_node").await
}

#[tokio::test]
async fn lists_come_in_pages() -> Result<()> {
    on_standin("lists_come_in_pages").await
}

#[tokio::test]
async fn reflector_converges() -> Result<()> {
    on_standin("reflector_converges").await
}

#[tokio::test]
async fn lease_optimistic_concurrency() -> Result<()> {
    on_standin("lease_optimistic_concurrency").await
}

#[tokio::test]
async fn recorder_events_are_visible_as_core_events() -> Result<()> {
    on_standin("recorder_events_are_visible_as_core_events").await
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

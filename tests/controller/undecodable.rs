//! One object that does not decode (written under another version of its
//! type, as during an upgrade) stops nothing: the controller resolves every
//! other object, reports the bad one (Warning Event `Undecodable`, the
//! gauge `kube_dvr_undecodable_objects`), and hands what its status holds
//! to nobody while it exists.
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::Api;
use serde_json::json;

use kube_dvr::api::{
    self, conditions, DistributedRouter, ExternalNetwork, FloatingIP, SnatGateway,
};
use kube_dvr::cluster::watch::M_UNDECODABLE;

use super::standin::{events_for, opts, standin, start};
use super::support::*;

/// The address the pool would hand out next (`b-api` asks for none and the
/// lowest free is after `web`'s 203.0.113.100).
const SKEWED_ADDRESS: &str = "203.0.113.101";

/// Every decodable kube-dvr object is Ready.
async fn decodable_ready(client: &kube::Client) -> bool {
    let ready = |c: Option<&Vec<api::Condition>>| c.is_some_and(|c| conditions::is_ready(c));
    let e = list_decodable::<ExternalNetwork>(client).await;
    let r = list_decodable::<DistributedRouter>(client).await;
    let f = list_decodable::<FloatingIP>(client).await;
    let s = list_decodable::<SnatGateway>(client).await;
    !f.is_empty()
        && e.iter()
            .all(|o| ready(o.status.as_ref().map(|s| &s.conditions)))
        && r.iter()
            .all(|o| ready(o.status.as_ref().map(|s| &s.conditions)))
        && f.iter()
            .all(|o| ready(o.status.as_ref().map(|s| &s.conditions)))
        && s.iter()
            .all(|o| ready(o.status.as_ref().map(|s| &s.conditions)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_floating_ip_is_skipped_reported_and_holds_its_address() {
    let (standin, client) = standin().await;
    setup_cluster(&client).await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "tenant-x"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    agents_heartbeat(&client, &NODES).await;
    // Another tenant's floating IP, stored under another version of the
    // type: `spec.router` is a number. Its status holds an address.
    standin
        .insert_without_admission(json!({
            "apiVersion": api::API_VERSION, "kind": "FloatingIP",
            "metadata": {"name": "skewed", "namespace": "tenant-x"},
            "spec": {"router": 7, "target": {"fixedIP": "10.10.1.10"}},
            "status": {"address": SKEWED_ADDRESS, "node": "node-1"}
        }))
        .unwrap();
    apply_examples(&client).await;
    let c = start(&client, opts("controller-0"));

    // Everything else is resolved, programmed and Ready.
    eventually(15, "every decodable object Ready", || async {
        agents_program(&client, None).await;
        decodable_ready(&client).await.then_some(())
    })
    .await;
    // The skewed object's address went to nobody.
    let fips = list_decodable::<FloatingIP>(&client).await;
    let api_fip = fips
        .iter()
        .find(|f| f.metadata.name.as_deref() == Some("api"))
        .unwrap();
    let api_address = api_fip.status.as_ref().unwrap().address.clone();
    assert!(api_address.is_some());
    assert_ne!(api_address.as_deref(), Some(SKEWED_ADDRESS));
    // Reported: a Warning Event naming it, and the gauge.
    let ev = eventually(10, "an Undecodable event", || async {
        events_for(&client, "tenant-x", "skewed")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Undecodable"))
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let note = ev.message.unwrap_or_default();
    assert!(note.contains("FloatingIP tenant-x/skewed"), "{note}");
    assert_eq!(ev.involved_object.kind.as_deref(), Some("FloatingIP"));
    assert_eq!(
        c.telemetry.value(M_UNDECODABLE, &[("kind", "FloatingIP")]),
        Some(1.0)
    );
    assert_eq!(
        c.telemetry
            .value(M_UNDECODABLE, &[("kind", "DistributedRouter")]),
        Some(0.0)
    );

    // A new floating IP asking for that address does not get it.
    let fip_api = Api::<FloatingIP>::namespaced(client.clone(), "tenant-b");
    let asks = mk_fip(
        "tenant-b",
        "asks",
        "main",
        "10.10.1.10",
        Some(SKEWED_ADDRESS),
    );
    fip_api.create(&PostParams::default(), &asks).await.unwrap();
    let allocated = eventually(10, "asks' Allocated condition", || async {
        let st = fip_api.get("asks").await.ok()?.status?;
        conditions::find_condition(&st.conditions, "Allocated").cloned()
    })
    .await;
    assert_eq!(
        (allocated.status.as_str(), allocated.reason.as_str()),
        ("False", "AddressInUse"),
        "{allocated:?}"
    );
    // Passes that follow report the same version of the object no more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let evs: Vec<_> = events_for(&client, "tenant-x", "skewed").await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(
        evs[0].count.unwrap_or(1) == 1 && evs[0].series.is_none(),
        "{evs:?}"
    );

    // Deleted: no longer reported, and its address is free.
    let ar = ApiResource::erase::<FloatingIP>(&());
    Api::<DynamicObject>::namespaced_with(client.clone(), "tenant-x", &ar)
        .delete("skewed", &DeleteParams::default())
        .await
        .unwrap();
    let address = eventually(10, "asks gets the address", || async {
        fip_api.get("asks").await.ok()?.status?.address
    })
    .await;
    assert_eq!(address, SKEWED_ADDRESS);
    assert_eq!(
        c.telemetry.value(M_UNDECODABLE, &[("kind", "FloatingIP")]),
        Some(0.0)
    );
    c.stop().await;
    standin.shutdown().await;
}

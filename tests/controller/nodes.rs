//! Per-node, per-object reporting against the stand-in: one agent's errors
//! hold only the objects they name, and no tenant sees another's names.
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;

use kube_dvr::api::{conditions, DistributedRouter, FloatingIP};
use kube_dvr::cluster;

use super::standin::{all_ready, events_for, opts, standin, start};
use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erroring_node_holds_no_other_tenants_deletion_and_leaks_no_names() {
    let (standin, client) = standin().await;
    setup_cluster(&client).await;
    agents_heartbeat(&client, &NODES).await;
    apply_examples(&client).await;
    let c = start(&client, opts("controller-0"));
    eventually(10, "every object Ready", || async {
        agents_program(&client, None).await;
        all_ready(&client).await.then_some(())
    })
    .await;

    // gw-1 (tenant-a's SNAT gateway only) fails and makes no more progress;
    // node-2 (both tenants) fails on tenant-a's router.
    let nodes: Api<Node> = Api::all(client.clone());
    for (node, errors) in [
        (
            "gw-1",
            json!([{"object": "SnatGateway/tenant-a/default",
                    "message": "create macvlan qg-0 in snat-tenant-a.main: tenant-a detail"}]),
        ),
        (
            "node-2",
            json!([{"object": "DistributedRouter/tenant-a/main",
                    "message": "add route in qrouter-tenant-a.main: tenant-a detail"}]),
        ),
    ] {
        let patch = json!({"metadata": {"annotations": {
            cluster::AGENT_ERRORS_ANNOTATION: errors.to_string()}}});
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    // tenant-b deletes its floating IP (served on node-2): node-1 and
    // node-2 program the plan without it; gw-1 never reports again.
    let fips = Api::<FloatingIP>::namespaced(client.clone(), "tenant-b");
    fips.delete("api", &DeleteParams::default()).await.unwrap();
    eventually(10, "tenant-b's floating IP gone", || async {
        agents_program(&client, Some(&["node-1", "node-2"])).await;
        fips.get_opt("api").await.unwrap().is_none().then_some(())
    })
    .await;

    // tenant-b's router (node-1, node-2) stays Ready and names nothing of
    // tenant-a; tenant-a's router and SNAT gateway carry their own errors.
    let rb = Api::<DistributedRouter>::namespaced(client.clone(), "tenant-b")
        .get("main")
        .await
        .unwrap();
    let st = rb.status.clone().unwrap();
    assert!(conditions::is_ready(&st.conditions), "{:?}", st.conditions);
    let text = serde_json::to_string(&st).unwrap();
    assert!(!text.contains("tenant-a"), "{text}");
    for name in ["main", "api"] {
        for e in events_for(&client, "tenant-b", name).await {
            let note = e.message.unwrap_or_default();
            assert!(!note.contains("tenant-a"), "{note}");
        }
    }
    let ra = eventually(10, "tenant-a's router reports its error", || async {
        let r = Api::<DistributedRouter>::namespaced(client.clone(), "tenant-a")
            .get("main")
            .await
            .unwrap();
        let st = r.status?;
        let p = conditions::find_condition(&st.conditions, conditions::PROGRAMMED)?.clone();
        (p.reason == "AgentError").then_some(p)
    })
    .await;
    assert!(
        ra.message.contains("node-2") && ra.message.contains("tenant-a detail"),
        "{}",
        ra.message
    );
    c.stop().await;
    standin.shutdown().await;
}

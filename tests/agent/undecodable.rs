//! Objects that do not decode (type skew during an upgrade) stop nothing:
//! the agent programs everything else, and an object that turns
//! undecodable keeps its last good version (its traffic stays) — and its
//! kernel state across an agent restart, read from its raw status.
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use kube_dvr::api::{self, DistributedRouter};
use kube_dvr::cluster::{self, plan_digest, watch::M_UNDECODABLE};
use kube_dvr::dataplane::sandbox;
use kube_dvr::plan::names;

use super::support::*;
use super::tenant;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn agent_programs_next_to_undecodable_objects_and_keeps_one_that_turns_bad() {
    if !sandbox::enter(
        "undecodable::agent_programs_next_to_undecodable_objects_and_keeps_one_that_turns_bad",
    ) {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        // n1's facts as its agent publishes them, so that the plan can be
        // computed before: the typed helpers cannot read what comes next.
        let vtep = "198.18.0.1";
        let facts = json!({"metadata": {"annotations": {
            cluster::VTEP_ANNOTATION: vtep,
            cluster::DVR_MAC_ANNOTATION: names::dvr_mac(vtep.parse().unwrap()).to_string()}}});
        c.nodes()
            .patch("n1", &PatchParams::default(), &Patch::Merge(&facts))
            .await
            .unwrap();
        c.controller_pass().await;
        let plan = c.expected_plan("n1").await;
        let want = plan_digest(&plan);
        // Another namespace's router, stored under another version of the
        // type: its index is out of range for u32.
        let other: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
        Api::<Namespace>::all(c.client.clone())
            .create(&PostParams::default(), &other)
            .await
            .unwrap();
        c.standin
            .insert_without_admission(json!({
                "apiVersion": api::API_VERSION, "kind": "DistributedRouter",
                "metadata": {"name": "skewed", "namespace": "other", "generation": 1},
                "spec": {"subnets": [{"name": "s", "cidr": "10.9.0.0/24", "gateway": "10.9.0.1",
                                      "networkAttachment": "net-x"}]},
                "status": {"observedGeneration": 1, "index": 1u64 << 40}
            }))
            .unwrap();
        let a = start_agent(&c.client, agent_options("n1"));
        let gauge = |kind| a.telemetry.value(M_UNDECODABLE, &[("kind", kind)]);
        let programmed = || async {
            c.annotation("n1", cluster::PROGRAMMED_ANNOTATION)
                .await
                .as_deref()
                == Some(want.as_str())
        };
        assert!(
            wait_until(10 * SEC, programmed).await,
            "r1 programmed next to the skewed router"
        );
        let namespaces: Vec<String> = plan.namespaces.keys().cloned().collect();
        assert!(!namespaces.is_empty());
        assert_eq!(netns_list(), namespaces);
        assert_eq!(gauge("DistributedRouter"), Some(1.0));

        // r1 itself turns undecodable (a field of another type; what names
        // its kernel state stays readable): the agent keeps its last good
        // version and its kernel state.
        let ar = ApiResource::erase::<DistributedRouter>(&());
        let mut r1 = serde_json::to_value(
            Api::<DynamicObject>::namespaced_with(c.client.clone(), TENANT, &ar)
                .get("r1")
                .await
                .unwrap(),
        )
        .unwrap();
        r1["status"]["nodes"] = json!("n1");
        c.standin.insert_without_admission(r1).unwrap();
        assert!(
            wait_until(5 * SEC, || async {
                gauge("DistributedRouter") == Some(2.0)
            })
            .await,
            "r1 recorded"
        );
        tokio::time::sleep(SEC / 2).await;
        assert!(programmed().await, "the plan is unchanged");
        assert_eq!(netns_list(), namespaces, "r1's state stays");
        a.stop().await;

        // Restarted while r1 is still bad: the new agent never saw a good
        // version of it, plans without it, and keeps its state, read from
        // r1's raw status — no kernel write at all.
        let links_before = link_indexes();
        let a = start_agent(&c.client, agent_options("n1"));
        assert!(
            wait_until(10 * SEC, || async {
                a.telemetry.is_ready() && !programmed().await
            })
            .await,
            "the restarted agent ran a pass without r1"
        );
        let gauge = a
            .telemetry
            .value(M_UNDECODABLE, &[("kind", "DistributedRouter")]);
        assert_eq!(gauge, Some(2.0));
        assert_eq!(netns_list(), namespaces, "r1's namespaces kept");
        assert_eq!(link_indexes(), links_before, "r1's root links kept");
        assert_eq!(a.kernel_writes(), 0.0, "kernel writes after the restart");
        a.stop().await;
    });
}

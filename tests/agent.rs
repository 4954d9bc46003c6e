//! The node agent against the real stand-in API server and the real kernel,
//! inside the sandbox (a private user + mount + network namespace whose own
//! network namespace plays the node's).
//!
//! The controller's part (statuses with `observedGeneration`) is played by
//! `Cluster::controller_pass`: the same `resolve` the controller runs.
#[path = "agent/liveness.rs"]
mod liveness;
#[path = "agent/restart.rs"]
mod restart;
#[path = "agent/support.rs"]
mod support;
#[path = "agent/undecodable.rs"]
mod undecodable;
#[path = "agent/wiring.rs"]
mod wiring;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;

use kube_dvr::api::ExtraRoute;
use kube_dvr::cluster::{self, plan_digest};
use kube_dvr::dataplane::sandbox;
use kube_dvr::plan::model::NodeState;
use kube_dvr::plan::names;

use support::*;

const SEC: Duration = Duration::from_secs(1);

/// r1 (one subnet, one extra route) with endpoints p1 on n1 and p2 on n2.
async fn tenant(c: &Cluster) {
    let mut r1 = mk_router("r1", &[("s1", "10.10.1.0/24", "10.10.1.1", "net-a")]);
    r1.spec.routes = vec![ExtraRoute {
        destination: "10.20.0.0/16".into(),
        nexthop: "10.10.1.10".into(),
    }];
    c.create(r1).await;
    c.create(mk_port(
        "p1",
        "n1",
        "net-a",
        "10.10.1.10",
        "02:00:00:00:01:0a",
    ))
    .await;
    c.create(mk_port(
        "p2",
        "n2",
        "net-a",
        "10.10.1.11",
        "02:00:00:00:01:0b",
    ))
    .await;
}

/// Wait until n1 reports the digest the controller expects.
async fn wait_programmed(c: &Cluster, timeout: Duration) -> bool {
    wait_until(timeout, || async {
        let want = plan_digest(&c.expected_plan("n1").await);
        c.annotation("n1", cluster::PROGRAMMED_ANNOTATION).await == Some(want)
    })
    .await
}

fn vni_of_first_subnet(plan: &NodeState) -> u32 {
    plan.root
        .links
        .keys()
        .find_map(|l| l.strip_prefix("dvrvx-"))
        .expect("a vxlan device in the plan")
        .parse()
        .unwrap()
}

#[test]
fn agent_programs_reports_follows_restarts_and_repairs() {
    if !sandbox::enter("agent_programs_reports_follows_restarts_and_repairs") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        let a1 = start_agent(&c.client, agent_options("n1"));

        // Facts and heartbeat.
        assert!(
            wait_until(5 * SEC, || async {
                c.annotation("n1", cluster::VTEP_ANNOTATION).await.as_deref() == Some("198.18.0.1")
            })
            .await,
            "vtep annotation published"
        );
        let mac = names::dvr_mac("198.18.0.1".parse().unwrap()).to_string();
        assert_eq!(c.annotation("n1", cluster::DVR_MAC_ANNOTATION).await, Some(mac));
        let leases: Api<Lease> = Api::namespaced(c.client.clone(), NS);
        assert!(wait_until(5 * SEC, || async { leases.get_opt("kube-dvr-agent-n1").await.unwrap().is_some() }).await);
        let lease = leases.get("kube-dvr-agent-n1").await.unwrap().spec.unwrap();
        assert_eq!(lease.holder_identity.as_deref(), Some("n1"));
        assert_eq!(lease.lease_duration_seconds, Some(cluster::AGENT_HEARTBEAT_TIMEOUT_SECS as i32));

        // The controller has not processed r1: nothing is planned from it.
        let empty = plan_digest(&NodeState::default());
        assert!(
            wait_until(5 * SEC, || async {
                c.annotation("n1", cluster::PROGRAMMED_ANNOTATION).await.as_deref() == Some(empty.as_str())
            })
            .await,
            "unprocessed router planned nothing"
        );
        assert!(a1.telemetry.is_ready());
        assert_eq!(netns_list(), Vec::<String>::new());

        // Processed: programmed, and the reported digest is the controller's.
        c.controller_pass().await;
        assert!(wait_programmed(&c, 5 * SEC).await, "programmed digest reported");
        let plan = c.expected_plan("n1").await;
        let vni = vni_of_first_subnet(&plan);
        let qr = "qrouter-0"; // r1, router index 0
        assert_eq!(netns_list(), vec![qr.to_string()]);
        let root = links(None);
        assert!(root.contains(&names::vxlan(vni)) && root.contains(&names::bridge(vni)), "{root:?}");
        let addrs = sh(&["ip", "-n", qr, "-4", "addr", "show", "dev", &names::qr(vni)]);
        assert!(addrs.contains("10.10.1.1/24"), "{addrs}");
        let neigh = neighbours(qr);
        assert!(neigh.contains(&"10.10.1.10".into()) && neigh.contains(&"10.10.1.11".into()), "{neigh:?}");
        assert!(routes(qr).contains(&"10.20.0.0/16".into()));
        let fdb = sh(&["bridge", "fdb", "show", "dev", &names::vxlan(vni)]);
        assert!(fdb.contains("00:00:00:00:00:00 dst 198.18.0.2"), "{fdb}");
        assert!(nft_tables().iter().any(|t| t.starts_with("bridge ")), "{:?}", nft_tables());
        assert_eq!(c.annotation("n1", cluster::AGENT_ERRORS_ANNOTATION).await, None);
        assert!(a1.kernel_writes() > 0.0);
        assert_eq!(
            a1.telemetry.value("kube_dvr_programmed_objects", &[("kind", "DistributedRouter")]),
            Some(1.0)
        );

        // A new endpoint is followed within a second.
        let t0 = Instant::now();
        c.create(mk_port("p3", "n2", "net-a", "10.10.1.12", "02:00:00:00:01:0c")).await;
        assert!(
            wait_until(SEC, || async { neighbours(qr).contains(&"10.10.1.12".into()) }).await,
            "new endpoint programmed within a second"
        );
        eprintln!("new endpoint programmed after {:?}", t0.elapsed());
        assert!(wait_programmed(&c, 2 * SEC).await);

        // A spec edit the controller has not processed changes nothing
        // (and tears nothing down); once processed it is programmed.
        let mut r1 = c.routers().get("r1").await.unwrap();
        r1.spec.subnets.push(serde_json::from_value(json!(
            {"name": "s2", "cidr": "10.10.2.0/24", "gateway": "10.10.2.1", "networkAttachment": "net-b"}
        )).unwrap());
        c.routers().replace("r1", &Default::default(), &r1).await.unwrap();
        let qr_links_before = links(Some(qr));
        tokio::time::sleep(SEC / 2).await;
        assert_eq!(links(Some(qr)), qr_links_before, "unprocessed edit planned");
        assert_eq!(netns_list(), vec![qr.to_string()]);
        c.controller_pass().await;
        assert!(
            wait_until(2 * SEC, || async { links(Some(qr)).len() > qr_links_before.len() }).await,
            "processed edit programmed"
        );
        assert!(wait_programmed(&c, 2 * SEC).await);

        // Restart: zero kernel writes, zero API writes, nothing recreated.
        tokio::time::sleep(SEC / 2).await;
        let writes = c.standin.write_count();
        let indexes = link_indexes();
        let qr_indexes = sh(&["ip", "-n", qr, "-o", "link"]);
        a1.stop().await;
        let mut opts = agent_options("n1");
        opts.resync = Duration::from_millis(1500);
        let a2 = start_agent(&c.client, opts);
        assert!(wait_until(5 * SEC, || async { a2.telemetry.is_ready() }).await, "restarted agent ready");
        tokio::time::sleep(2 * SEC).await; // including one full resync
        assert_eq!(a2.kernel_writes(), 0.0, "kernel writes after restart");
        assert_eq!(c.standin.write_count(), writes, "API writes after restart");
        assert_eq!(link_indexes(), indexes);
        assert_eq!(sh(&["ip", "-n", qr, "-o", "link"]), qr_indexes);

        // Drift behind the agent's back is repaired by the periodic resync.
        sh(&["ip", "-n", qr, "route", "del", "10.20.0.0/16"]);
        sh(&["ip", "-n", qr, "neigh", "del", "10.10.1.11", "dev", &names::qr(vni)]);
        assert!(!routes(qr).contains(&"10.20.0.0/16".into()));
        assert!(
            wait_until(3 * SEC, || async {
                routes(qr).contains(&"10.20.0.0/16".into()) && neighbours(qr).contains(&"10.10.1.11".into())
            })
            .await,
            "drift repaired by resync"
        );
        assert!(a2.kernel_writes() >= 2.0);

        // Deleting the router removes its state within a second.
        let t0 = Instant::now();
        c.routers().delete("r1", &DeleteParams::default()).await.unwrap();
        assert!(
            wait_until(SEC, || async { netns_list().is_empty() }).await,
            "router's namespace removed within a second"
        );
        eprintln!("router removed after {:?}", t0.elapsed());
        assert!(wait_until(SEC, || async { !links(None).iter().any(|l| l.starts_with("dvr")) }).await);
        assert!(wait_until(2 * SEC, || async {
            c.annotation("n1", cluster::PROGRAMMED_ANNOTATION).await.as_deref() == Some(empty.as_str())
        })
        .await);
        a2.stop().await;
    });
}

#[test]
fn agent_uninstall_removes_everything_and_never_rebuilds() {
    if !sandbox::enter("agent_uninstall_removes_everything_and_never_rebuilds") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        c.controller_pass().await;
        let a = start_agent(&c.client, agent_options("n1"));
        assert!(wait_programmed(&c, 5 * SEC).await);
        assert_eq!(netns_list().len(), 1);

        let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), NS);
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": cluster::UNINSTALL_CONFIGMAP}}))
                .unwrap();
        cms.create(&Default::default(), &cm).await.unwrap();
        assert!(
            wait_until(5 * SEC, || async {
                c.annotation("n1", cluster::CLEANED_ANNOTATION)
                    .await
                    .as_deref()
                    == Some("true")
            })
            .await,
            "cleaned=true"
        );
        let gone = || {
            netns_list().is_empty()
                && !links(None)
                    .iter()
                    .any(|l| l.starts_with("dvr") || l.starts_with("qrb-"))
                && nft_tables().is_empty()
        };
        assert!(
            gone(),
            "left: {:?} {:?} {:?}",
            netns_list(),
            links(None),
            nft_tables()
        );
        assert_eq!(
            c.annotation("n1", cluster::PROGRAMMED_ANNOTATION).await,
            None
        );
        assert_eq!(
            c.annotation("n1", cluster::VTEP_ANNOTATION)
                .await
                .as_deref(),
            Some("198.18.0.1")
        );

        // Changes and the ConfigMap's removal rebuild nothing.
        c.create(mk_port(
            "p3",
            "n1",
            "net-a",
            "10.10.1.12",
            "02:00:00:00:01:0c",
        ))
        .await;
        c.controller_pass().await;
        cms.delete(cluster::UNINSTALL_CONFIGMAP, &DeleteParams::default())
            .await
            .unwrap();
        tokio::time::sleep(SEC).await;
        assert!(gone(), "rebuilt after uninstall");
        assert!(
            !a.task.is_finished(),
            "the agent keeps running (heartbeat) until stopped"
        );
        a.stop().await;
    });
}

#[test]
fn agent_cleanup_one_shot_removes_kernel_state() {
    if !sandbox::enter("agent_cleanup_one_shot_removes_kernel_state") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        c.controller_pass().await;
        let a = start_agent(&c.client, agent_options("n1"));
        assert!(wait_programmed(&c, 5 * SEC).await);
        a.stop().await;
        // Stopping the agent leaves the kernel as it was.
        assert_eq!(netns_list(), vec!["qrouter-0".to_string()]);
        // A stranger's link survives the cleanup.
        sh(&["ip", "link", "add", "keepme", "type", "bridge"]);
        for _ in 0..2 {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-dvr"))
                .args(["agent", "--cleanup", "--netns-dir", "/run/netns"])
                .env_remove("NODE_NAME")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(netns_list(), Vec::<String>::new());
        let root = links(None);
        assert!(
            !root
                .iter()
                .any(|l| l.starts_with("dvr") || l.starts_with("qrb-")),
            "{root:?}"
        );
        assert!(root.contains(&"keepme".to_string()));
        assert_eq!(nft_tables(), Vec::<String>::new());
    });
}

#[test]
fn agent_heartbeat_renews_and_the_agent_retries_a_late_node() {
    if !sandbox::enter("agent_heartbeat_renews_and_the_agent_retries_a_late_node") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        let mut opts = agent_options("n3");
        opts.heartbeat = Duration::from_millis(300);
        opts.vtep = Some("198.18.0.3".parse().unwrap());
        let a = start_agent(&c.client, opts);
        // n3 does not exist yet: the agent waits for it.
        tokio::time::sleep(SEC / 2).await;
        assert!(!a.task.is_finished());
        // Meanwhile the netns directory became a shared mount point of its
        // own (namespaces made there propagate to the host on a node).
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/run/netns"))
            .unwrap_or_else(|| panic!("/run/netns is no mount point:\n{mountinfo}"));
        assert!(line.contains(" shared:"), "{line}");
        c.create_node(mk_node("n3", None, None)).await;
        assert!(
            wait_until(5 * SEC, || async {
                c.annotation("n3", cluster::VTEP_ANNOTATION)
                    .await
                    .as_deref()
                    == Some("198.18.0.3")
            })
            .await
        );
        let leases: Api<Lease> = Api::namespaced(c.client.clone(), NS);
        assert!(
            wait_until(5 * SEC, || async {
                leases.get_opt("kube-dvr-agent-n3").await.unwrap().is_some()
            })
            .await
        );
        let first = leases
            .get("kube-dvr-agent-n3")
            .await
            .unwrap()
            .spec
            .unwrap()
            .renew_time
            .unwrap();
        assert!(
            wait_until(3 * SEC, || async {
                leases
                    .get("kube-dvr-agent-n3")
                    .await
                    .unwrap()
                    .spec
                    .unwrap()
                    .renew_time
                    .unwrap()
                    != first
            })
            .await,
            "lease renewed"
        );
        // Someone removes a published fact: the agent puts it back.
        c.nodes()
            .patch(
                "n3",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {cluster::DVR_MAC_ANNOTATION: null}}}),
                ),
            )
            .await
            .unwrap();
        assert!(
            wait_until(3 * SEC, || async {
                c.annotation("n3", cluster::DVR_MAC_ANNOTATION)
                    .await
                    .is_some()
            })
            .await,
            "dvr-mac restored"
        );
        a.stop().await;
    });
}

/// A kernel failure is reported on the Node, naming the object it belongs
/// to (the digest of the plan is reported too: every other object on the
/// node is programmed), and retried until it clears, without any new event.
#[test]
fn agent_reports_kernel_errors_and_retries() {
    if !sandbox::enter("agent_reports_kernel_errors_and_retries") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        c.controller_pass().await;
        let vni = c.routers().get("r1").await.unwrap().status.unwrap().subnets[0].vni;
        // A stranger's VXLAN device holds the VNI on the VXLAN port: ours
        // cannot be created.
        sh(&[
            "ip",
            "link",
            "add",
            "stranger",
            "type",
            "vxlan",
            "id",
            &vni.to_string(),
            "dstport",
            "4789",
            "local",
            "198.18.0.1",
            "nolearning",
        ]);
        let a = start_agent(&c.client, agent_options("n1"));
        assert!(
            wait_until(5 * SEC, || async {
                c.annotation("n1", cluster::AGENT_ERRORS_ANNOTATION)
                    .await
                    .is_some()
            })
            .await,
            "errors reported"
        );
        let errors = c
            .annotation("n1", cluster::AGENT_ERRORS_ANNOTATION)
            .await
            .unwrap();
        assert!(errors.contains(&names::vxlan(vni)), "{errors}");
        let listed = cluster::errors::decode(&errors);
        assert!(
            listed
                .iter()
                .all(|e| e.object.as_deref() == Some("DistributedRouter/t/r1")),
            "{listed:?}"
        );
        assert!(wait_programmed(&c, 5 * SEC).await, "the digest is reported");
        assert!(
            a.telemetry
                .value("kube_dvr_reconcile_errors_total", &[])
                .unwrap()
                >= 1.0
        );
        assert!(
            a.telemetry.is_ready(),
            "ready after the first pass, even a failed one"
        );

        sh(&["ip", "link", "del", "stranger"]);
        assert!(
            wait_until(5 * SEC, || async {
                c.annotation("n1", cluster::AGENT_ERRORS_ANNOTATION)
                    .await
                    .is_none()
            })
            .await,
            "retried after the failure cleared"
        );
        assert!(wait_programmed(&c, 5 * SEC).await);
        assert!(links(None).contains(&names::vxlan(vni)));
        let text = a.telemetry.render();
        for m in [
            "kube_dvr_kernel_writes_total{kind=\"link\"}",
            "kube_dvr_reconcile_duration_seconds_count{pass=\"full\"}",
            "kube_dvr_programmed_objects{kind=\"DistributedRouter\"} 1",
            "kube_dvr_api_writes_total{kind=\"Node\"}",
        ] {
            assert!(text.contains(m), "{m} missing in\n{text}");
        }
        a.stop().await;
    });
}

/// An agent that starts while an edit awaits the controller does not tear
/// down what the object's previous version programmed.
#[test]
fn agent_restart_during_an_unprocessed_edit_keeps_the_state() {
    if !sandbox::enter("agent_restart_during_an_unprocessed_edit_keeps_the_state") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        c.controller_pass().await;
        let a1 = start_agent(&c.client, agent_options("n1"));
        assert!(wait_programmed(&c, 5 * SEC).await);
        a1.stop().await;
        let qr = "qrouter-0";
        let before = links(Some(qr));

        // Edited while no agent runs; the controller has not caught up.
        let mut r1 = c.routers().get("r1").await.unwrap();
        r1.spec.subnets.push(
            serde_json::from_value(json!({"name": "s2", "cidr": "10.10.2.0/24",
                "gateway": "10.10.2.1", "networkAttachment": "net-b"}))
            .unwrap(),
        );
        c.routers()
            .replace("r1", &Default::default(), &r1)
            .await
            .unwrap();
        let a2 = start_agent(&c.client, agent_options("n1"));
        tokio::time::sleep(SEC).await;
        assert_eq!(
            netns_list(),
            vec![qr.to_string()],
            "state kept while waiting"
        );
        assert_eq!(links(Some(qr)), before);
        assert_eq!(a2.kernel_writes(), 0.0);
        assert!(
            !a2.telemetry.is_ready(),
            "not ready before its first kernel pass"
        );

        c.controller_pass().await;
        assert!(wait_programmed(&c, 3 * SEC).await);
        assert!(links(Some(qr)).len() > before.len(), "the edit programmed");
        assert!(a2.telemetry.is_ready());
        a2.stop().await;
    });
}

/// Coalesce only under load (`kube_dvr::pacing`): a change right after a
/// cheap pass waits a few times that pass, not the debounce. A new router
/// makes the agent pass at once (a no-op: the controller has not processed
/// it yet); the controller's status write follows 100 ms later, well inside
/// a 5 s debounce, and is programmed within a second all the same.
#[test]
fn agent_change_right_after_a_cheap_pass_does_not_wait_out_the_debounce() {
    if !sandbox::enter("agent_change_right_after_a_cheap_pass_does_not_wait_out_the_debounce") {
        return;
    }
    runtime().block_on(async {
        let c = Cluster::start().await;
        tenant(&c).await;
        c.create(mk_port(
            "p3",
            "n1",
            "net-b",
            "10.30.1.10",
            "02:00:00:00:03:0a",
        ))
        .await;
        c.controller_pass().await;
        let mut o = agent_options("n1");
        o.debounce = 5 * SEC;
        let a = start_agent(&c.client, o);
        assert!(wait_programmed(&c, 10 * SEC).await, "r1 programmed");
        assert_eq!(netns_list(), vec!["qrouter-0".to_string()]);
        // Idle: well past the window of the agent's last (cheap) pass.
        tokio::time::sleep(Duration::from_millis(500)).await;

        c.create(mk_router(
            "r2",
            &[("s1", "10.30.1.0/24", "10.30.1.1", "net-b")],
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = std::time::Instant::now();
        c.controller_pass().await;
        assert!(
            wait_programmed(&c, SEC).await,
            "r2 programmed within 1 s of its status, not after the 5 s debounce"
        );
        assert_eq!(
            netns_list(),
            vec!["qrouter-0".to_string(), "qrouter-1".to_string()]
        );
        eprintln!("r2 programmed {:?} after its status write", t0.elapsed());
        a.stop().await;
    });
}

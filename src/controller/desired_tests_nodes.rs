//! Per-node, per-object reporting: an agent's errors concern only the
//! objects they name, and a deletion waits only for the nodes that held the
//! object.
use super::*;

fn set_errors(s: &mut Snapshot, node: &str, errors: Value) {
    let n = s
        .nodes
        .iter_mut()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .unwrap();
    n.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(AGENT_ERRORS_ANNOTATION.into(), errors.to_string());
}

/// tenant-a's router spans n1 and n3 (floating IP `web` on n1); tenant-b's
/// router and its floating IP `api` live on n1 only, with the same CIDR.
fn two_tenants() -> Snapshot {
    let mut s = mk_world();
    s.nodes.push(mk_node("n3", "198.18.0.3"));
    s.agents.insert("n3".into(), true);
    std::sync::Arc::make_mut(&mut s.pods)[1] =
        mk_pod("tenant-a", "w3", "n3", "10.10.1.11", "02:00:00:00:01:0b");
    let mut rb = mk_router("tenant-b", "main", "public");
    rb.metadata.uid = Some("uid-b-main".into());
    s.routers.push(rb.into());
    let mut fb = mk_fip("tenant-b", "api", "10.10.1.10", 5);
    fb.metadata.uid = Some("uid-b-api".into());
    s.floating_ips.push(fb.into());
    std::sync::Arc::make_mut(&mut s.pods).push(mk_pod(
        "tenant-b",
        "v1",
        "n1",
        "10.10.1.10",
        "02:00:00:00:02:0a",
    ));
    s
}

fn status_text<K: Serialize>(o: &std::sync::Arc<K>) -> String {
    serde_json::to_value(&**o).unwrap()["status"].to_string()
}

#[test]
fn an_erroring_node_blocks_only_its_own_objects_and_names_no_other_tenant() {
    let mut s = two_tenants();
    settle(&mut s, true);
    for r in &s.routers {
        assert!(conditions::is_ready(&r.status.as_ref().unwrap().conditions));
    }
    // n3's agent fails on tenant-a's router and makes no progress; n1's
    // fails on tenant-a's floating IP (the rest of its plan is applied).
    set_errors(
        &mut s,
        "n3",
        json!([{"object": "DistributedRouter/tenant-a/main",
                "message": "create vxlan dvrvx-1 in root: File exists (tenant-a secret)"}]),
    );
    set_errors(
        &mut s,
        "n1",
        json!([{"object": "FloatingIP/tenant-a/web",
                "message": "add route 203.0.113.100/32 in fip-public: tenant-a secret"}]),
    );
    // tenant-b adds a floating IP on n1: n1 has not programmed it yet.
    std::sync::Arc::make_mut(&mut s.pods).push(mk_pod(
        "tenant-b",
        "v2",
        "n1",
        "10.10.1.12",
        "02:00:00:00:02:0c",
    ));
    let mut f2 = mk_fip("tenant-b", "api2", "10.10.1.12", 6);
    f2.metadata.uid = Some("uid-b-api2".into());
    s.floating_ips.push(f2.into());
    let a = compute(&s);
    for w in &a.status {
        if w.target.namespace.as_deref() == Some("tenant-b") {
            assert!(!w.patch.to_string().contains("tenant-a"), "{}", w.patch);
            for e in &w.events {
                assert!(!e.note.contains("tenant-a"), "{e:?}");
            }
        }
    }
    apply(&mut s, &a);
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    apply(&mut s, &a);
    for f in &s.floating_ips {
        let st = f.status.as_ref().unwrap();
        let ns = f.metadata.namespace.as_deref().unwrap();
        if ns == "tenant-b" {
            assert!(conditions::is_ready(&st.conditions), "{:?}", st.conditions);
            assert!(!status_text(f).contains("tenant-a"), "{}", status_text(f));
        } else {
            let c = cond(&st.conditions, PROGRAMMED);
            assert_eq!(c.reason, REASON_AGENT_ERROR);
            assert!(c.message.contains("tenant-a secret"), "{}", c.message);
        }
    }
    let rb = &s.routers[1];
    assert!(conditions::is_ready(
        &rb.status.as_ref().unwrap().conditions
    ));
    assert!(!status_text(rb).contains("tenant-a"), "{}", status_text(rb));
    let ra = s.routers[0].status.as_ref().unwrap();
    assert_eq!(cond(&ra.conditions, PROGRAMMED).reason, REASON_AGENT_ERROR);

    // Deleting tenant-b's floating IP waits for n1 only: n3 (stuck on
    // tenant-a's router) never had it.
    std::sync::Arc::make_mut(&mut s.floating_ips[1])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    assert!(compute(&s).remove_finalizer.is_empty(), "n1 still has it");
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    assert_eq!(a.remove_finalizer.len(), 1, "{a:?}");
    assert_eq!(
        a.remove_finalizer[0].target.key(),
        "FloatingIP/tenant-b/api"
    );
    apply(&mut s, &a);

    // tenant-a's floating IP: n1 names it in its errors, so n1 is not done
    // with its removal although it reports the new digest.
    std::sync::Arc::make_mut(&mut s.floating_ips[0])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    agents_program(&mut s, Some("n1"));
    assert!(compute(&s).remove_finalizer.is_empty());
    set_errors(&mut s, "n1", json!([]));
    assert_eq!(compute(&s).remove_finalizer.len(), 1);
}

#[test]
fn a_node_wide_error_names_nothing_and_holds_only_that_nodes_objects() {
    let mut s = two_tenants();
    settle(&mut s, true);
    set_errors(
        &mut s,
        "n3",
        json!([{"message": "nftables apply in root: tenant-a and tenant-b rules"}]),
    );
    let a = compute(&s);
    apply(&mut s, &a);
    let ra = s.routers[0].status.as_ref().unwrap();
    let c = cond(&ra.conditions, PROGRAMMED);
    assert_eq!(c.reason, REASON_AGENT_ERROR);
    assert!(!c.message.contains("rules"), "{}", c.message);
    // tenant-b is not on n3: untouched, and its deletion does not wait.
    assert!(a
        .status
        .iter()
        .all(|w| w.target.namespace.as_deref() != Some("tenant-b")));
    std::sync::Arc::make_mut(&mut s.routers[1])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    assert!(
        a.remove_finalizer
            .iter()
            .any(|f| f.target.key() == "DistributedRouter/tenant-b/main"),
        "{a:?}"
    );
}

//! Cross-namespace isolation: a tenant's router sees only its own
//! namespace's NetworkAttachmentDefinitions and pods.
use super::tests::*;
use super::*;
use crate::api::conditions::{TRUE, VALID};

/// Tenants A and B, same CIDRs; two pods of B on B's `net-a` claim one
/// address (B's router names both in its `EndpointsResolved` message).
fn two_tenants() -> ClusterInput {
    let mut input = mk_input();
    input.routers.push(mk_std_router("tenant-b", 2).into());
    for (name, node, mac) in [("b-secret-pod", "n3", 9), ("b-twin", "n2", 10)] {
        std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
            "tenant-b",
            name,
            Some(node),
            &[("tenant-b/net-a", "10.0.1.10", mac)],
        ));
    }
    input
}

/// Every string of a router status, for "names no pod of B" checks.
fn status_text(st: &api::DistributedRouterStatus) -> String {
    serde_json::to_string(st).unwrap()
}

#[test]
fn router_naming_another_namespaces_attachment_is_invalid_and_leaks_nothing() {
    let mut input = two_tenants();
    // A's second router names B's NAD (same CIDR as B's subnet `a`).
    input.routers.push(
        mk_router(
            "tenant-a",
            "spy",
            3,
            None,
            &[("s", "10.0.1.0/24", "10.0.1.1", "tenant-b/net-a")],
        )
        .into(),
    );
    let res = resolve(&input);

    let spy = &res.routers[&key("tenant-a", "spy")];
    assert_false(&spy.conditions, VALID, "CrossNamespaceAttachment");
    let msg = &cond(&spy.conditions, VALID).message;
    assert!(
        msg.contains("\"s\"") && msg.contains("tenant-b/net-a"),
        "{msg}"
    );
    assert!(!status_text(spy).contains("b-secret-pod"), "{spy:#?}");
    assert!(spy.nodes.is_empty(), "{spy:#?}");
    // Nothing of it is programmed anywhere.
    assert!(res
        .view
        .routers
        .iter()
        .all(|r| r.key != key("tenant-a", "spy")));

    // A's other router and B's router are unaffected; B's pod is B's.
    let a = router_status(&res, "tenant-a");
    assert_eq!(cond(&a.conditions, VALID).status, TRUE);
    assert!(!status_text(a).contains("b-secret-pod"), "{a:#?}");
    let b = router_status(&res, "tenant-b");
    assert_eq!(cond(&b.conditions, VALID).status, TRUE);
    let b_view = res
        .view
        .routers
        .iter()
        .find(|r| r.key == key("tenant-b", "r"))
        .unwrap();
    assert_eq!(
        b_view.endpoints.iter().map(|e| e.ip).collect::<Vec<_>>(),
        [ip("10.0.1.10")]
    );
    assert_eq!(b.nodes, ["n3"]);
}

#[test]
fn own_namespace_qualified_attachment_is_fine() {
    let mut input = mk_input();
    input.routers = vec![mk_router(
        "tenant-a",
        "r",
        1,
        None,
        &[("a", "10.0.1.0/24", "10.0.1.1", "tenant-a/net-a")],
    )
    .into()];
    let res = resolve(&input);
    let st = router_status(&res, "tenant-a");
    assert_eq!(cond(&st.conditions, VALID).status, TRUE);
    assert_eq!(res.view.routers[0].endpoints.len(), 2);
}

#[test]
fn pod_of_another_namespace_on_a_tenants_attachment_is_no_endpoint() {
    let mut input = two_tenants();
    // A pod of B that names A's NADs (Multus allows it unless namespace
    // isolation is on): one address A's p1 uses, one free.
    std::sync::Arc::make_mut(&mut input.pods).push(mk_pod(
        "tenant-b",
        "a-intruder",
        Some("n3"),
        &[
            ("tenant-a/net-a", "10.0.1.10", 7),
            ("tenant-a/net-b", "10.0.2.30", 8),
        ],
    ));
    let res = resolve(&input);
    let a = router_status(&res, "tenant-a");
    assert_eq!(
        cond(&a.conditions, ENDPOINTS_RESOLVED).status,
        TRUE,
        "{a:#?}"
    );
    assert!(!status_text(a).contains("a-intruder"), "{a:#?}");
    let a_view = res
        .view
        .routers
        .iter()
        .find(|r| r.key == key("tenant-a", "r"))
        .unwrap();
    let ep = a_view
        .endpoints
        .iter()
        .find(|e| e.ip == ip("10.0.1.10"))
        .unwrap();
    assert_eq!(ep.node, "n1", "p1 keeps its address: {ep:?}");
    assert!(
        a_view.endpoints.iter().all(|e| e.ip != ip("10.0.2.30")),
        "{a_view:#?}"
    );
}

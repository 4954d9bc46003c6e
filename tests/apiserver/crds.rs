//! `crds/` on kube-apiserver: accepted as is (structural schema, every CEL
//! rule compiled within the cost budget), and the printer columns as the
//! real `kubectl get` shows them. The admission cases themselves are
//! `tests/crds/admission.rs`, run here against this server (see
//! `support.rs`).
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_dvr::api::{self, DistributedRouter, FloatingIP};
use serde_json::{json, Value};

use super::common::{block_on, kubectl_ok, namespace, shared, text};
use super::support::{fixed, mk_fip, mk_router};

const KNOWN_CRD_WARNING: &str = "Warning: unrecognized format \"uint32\"";

#[test]
fn crds_are_accepted_as_is() {
    let s = shared();
    assert!(
        s.crd_apply.status.success(),
        "kubectl apply -f crds/: {}",
        text(&s.crd_apply)
    );
    // No warnings but the known one: schemars writes `format: uint32` for
    // u32 fields, a format kube-apiserver does not know and ignores (the
    // bounds are enforced by minimum/maximum). Any other warning fails.
    let stderr = String::from_utf8_lossy(&s.crd_apply.stderr);
    let unexpected: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Warning") && *l != KNOWN_CRD_WARNING)
        .collect();
    assert!(unexpected.is_empty(), "{stderr}");
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    for want in api::crds() {
        let name = want.metadata.name.clone().unwrap();
        let got = block_on(crds.get(&name)).unwrap();
        let conds = got
            .status
            .as_ref()
            .unwrap()
            .conditions
            .clone()
            .unwrap_or_default();
        for t in ["NamesAccepted", "Established"] {
            assert!(
                conds.iter().any(|c| c.type_ == t && c.status == "True"),
                "{name}: {t} in {conds:?}"
            );
        }
        // Stored as generated: every rule and column is there.
        let rules = |c: &CustomResourceDefinition| {
            let v = serde_json::to_value(&c.spec.versions[0].schema).unwrap();
            v.to_string().matches("x-kubernetes-validations").count()
        };
        assert_eq!(rules(&got), rules(&want), "{name}: CEL rules stored");
        assert_eq!(
            got.spec.versions[0].additional_printer_columns,
            want.spec.versions[0].additional_printer_columns
        );
    }
}

/// Status as the controller writes it, through `/status`.
fn with_status<K>(api: &Api<K>, obj: &K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap();
    let mut create = serde_json::to_value(obj).unwrap();
    let status = create.as_object_mut().unwrap().remove("status").unwrap();
    let created: K = serde_json::from_value(create).unwrap();
    block_on(api.create(&PostParams::default(), &created)).unwrap();
    block_on(api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    ))
    .unwrap();
}

#[test]
fn printer_columns_come_back_in_kubectl_get() {
    let ns = namespace("columns");
    let c = shared().client.clone();
    let mut r = mk_router();
    r.metadata.namespace = Some(ns.clone());
    with_status(&Api::<DistributedRouter>::namespaced(c.clone(), &ns), &r);
    let mut f = mk_fip(fixed("10.0.1.5"));
    f.metadata.namespace = Some(ns.clone());
    let mut st: Value = json!({
        "observedGeneration": 1, "address": "203.0.113.20", "fixedIP": "10.0.1.5", "node": "node-1",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]
    });
    f.status = Some(serde_json::from_value(st.take()).unwrap());
    with_status(&Api::<FloatingIP>::namespaced(c, &ns), &f);

    let table = kubectl_ok(&["get", "dfip", "-n", &ns], None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ADDRESS", "FIXED-IP", "NODE", "READY", "AGE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["web", "203.0.113.20", "10.0.1.5", "node-1", "True"],
        "{table}"
    );

    let table = kubectl_ok(&["get", "dvr", "-n", &ns], None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SUBNETS", "EXTERNAL", "NODES", "READY", "AGE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    // kube-apiserver renders a `[*]` column from its first match only
    // (10.0.1.0/24 of two subnets, node-1 of two nodes); `-o wide` or
    // `-o yaml` show the rest. The stand-in does the same.
    assert_eq!(
        &row[..5],
        ["r1", "10.0.1.0/24", "public", "node-1", "False"],
        "{table}"
    );
}

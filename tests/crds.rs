//! The generated CRDs: `crds/` is up to date, the schemas are documented and
//! enforce what they claim, and example objects round-trip through serde.
//!
//! Admission (schema + CEL, without an API server) is in `crds/admission.rs`,
//! its machinery and the example objects in `crds/support.rs`.

#[path = "crds/admission.rs"]
mod admission;
#[path = "crds/support.rs"]
mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, Resource};
use kube_dvr::api::{
    self, DistributedRouter, ExternalNetwork, ExternalPools, FloatingIP, FloatingIPStatus,
    LoadBalancer, PodTarget, PortForwarding, RouterFirewall, SnatGateway,
};
use regex::Regex;
use serde_json::{json, Value};

use support::*;

const CRDS_FILE: &str = "crds/kubedvr.io_crds.yaml";

// ---------------------------------------------------------------- crds/ file

#[test]
fn crds_dir_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRDS_FILE);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == api::crds_yaml(),
        "{CRDS_FILE} is stale or missing; regenerate it with\n\n    \
         cargo run -- crds > {CRDS_FILE}\n"
    );
}

#[test]
fn crds_file_parses_as_four_crds() {
    let docs: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&api::crds_yaml())
        .map(|d| serde::Deserialize::deserialize(d).expect("a CRD document"))
        .collect();
    assert_eq!(docs, api::crds());
}

// ---------------------------------------------------------------- names

#[test]
fn names_short_names_scope_and_columns() {
    fn check(
        crd: &CustomResourceDefinition,
        plural: &str,
        short: &str,
        scope: &str,
        cols: &[&str],
    ) {
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(&*format!("{plural}.kubedvr.io"))
        );
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["kubedvr".to_string()][..])
        );
        assert_eq!(crd.spec.scope, scope);
        let v = &crd.spec.versions[0];
        let names: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, cols, "{plural} printer columns");
        let ready = v
            .additional_printer_columns
            .iter()
            .flatten()
            .find(|c| c.name == "Ready");
        assert_eq!(
            ready.unwrap().json_path,
            r#".status.conditions[?(@.type=="Ready")].status"#
        );
    }
    check(
        &ExternalNetwork::crd(),
        "externalnetworks",
        "extnet",
        "Cluster",
        &["CIDR", "Gateway", "Ready", "Age"],
    );
    check(
        &DistributedRouter::crd(),
        "distributedrouters",
        "dvr",
        "Namespaced",
        &["Subnets", "External", "Nodes", "Ready", "Age"],
    );
    check(
        &FloatingIP::crd(),
        "floatingips",
        "dfip",
        "Namespaced",
        &["Address", "Fixed-IP", "Node", "Ready", "Age"],
    );
    check(
        &SnatGateway::crd(),
        "snatgateways",
        "dsnat",
        "Namespaced",
        &["Address", "Node", "Ready", "Age"],
    );
    check(
        &RouterFirewall::crd(),
        "routerfirewalls",
        "dfw",
        "Namespaced",
        &["Router", "Default", "Nodes", "Ready", "Age"],
    );
    check(
        &PortForwarding::crd(),
        "portforwardings",
        "dpf",
        "Namespaced",
        &["Router", "Address", "Node", "Ready", "Age"],
    );
    check(
        &LoadBalancer::crd(),
        "loadbalancers",
        "dlb",
        "Namespaced",
        &["Router", "VIP", "Node", "Healthy", "Ready", "Age"],
    );

    // Kube-OVN's short names must stay free so both can be installed.
    let kube_ovn = [
        "fip", "eip", "snat", "dnat", "vpc", "subnet", "vip", "ovn-fip", "ovn-eip",
    ];
    for crd in api::crds() {
        for s in crd.spec.names.short_names.unwrap() {
            assert!(
                !kube_ovn.contains(&s.as_str()) && !s.starts_with("ovn-"),
                "{s} clashes"
            );
        }
    }
}

// ---------------------------------------------------------------- schema docs

/// Every property at any depth has a non-empty description (it becomes
/// `kubectl explain`).
fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let p = format!("{path}.{name}");
            let doc = prop
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            if doc.trim().is_empty() {
                out.push(p.clone());
            }
            undocumented(prop, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undocumented(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_property_has_a_description() {
    for crd in api::crds() {
        let schema = schema_of(&crd);
        assert!(schema["description"].as_str().is_some_and(|d| d.len() > 20));
        let mut missing = vec![];
        undocumented(&schema, &crd.spec.names.kind, &mut missing);
        assert!(
            missing.is_empty(),
            "properties without a description: {missing:?}"
        );
    }
    // The walker itself finds a gap.
    let mut missing = vec![];
    undocumented(
        &json!({"properties": {"a": {"description": "x", "items": {"properties": {"b": {}}}}}}),
        "T",
        &mut missing,
    );
    assert_eq!(missing, ["T.a[].b"]);
}

#[test]
fn status_and_conditions_follow_conventions() {
    // Every kind of the registry; a Port (kube-dvr's own record) has none.
    for crd in api::Kind::ALL.iter().map(|k| k.crd()) {
        let s = schema_of(&crd);
        let status = &s["properties"]["status"]["properties"];
        assert_eq!(
            status["observedGeneration"]["format"], "int64",
            "{}",
            crd.spec.names.kind
        );
        let conds = &status["conditions"];
        assert_eq!(conds["x-kubernetes-list-type"], "map");
        assert_eq!(conds["x-kubernetes-list-map-keys"], json!(["type"]));
        assert!(conds["items"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("lastTransitionTime")));
    }
}
#[test]
fn every_cel_rule_compiles_in_scope_and_within_budget() {
    /// Variables bound by CEL comprehensions (`self.all(x, ...)`).
    static BOUND: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"\.(all|exists|exists_one|map|filter)\((\w+),").unwrap()
    });
    fn walk(schema: &Value, compiled: &kube_cel::CompiledSchema, path: &str, n: &mut usize) {
        for rule in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let rule = rule["rule"].as_str().unwrap();
            *n += 1;
            // kube-cel's scope check does not know comprehension variables
            // (`self.all(x, ...)`): drop its warnings about those.
            let bound: Vec<String> = BOUND
                .captures_iter(rule)
                .map(|c| c[2].to_string())
                .collect();
            let warnings: Vec<_> =
                kube_cel::analyze_rule(rule, compiled, kube_cel::ScopeContext::CrdValidation)
                    .into_iter()
                    .filter(|w| {
                        w.kind != kube_cel::WarningKind::WrongScope
                            || !bound
                                .iter()
                                .any(|v| w.message.contains(&format!("variable '{v}'")))
                    })
                    .collect();
            assert!(warnings.is_empty(), "{path}: {rule}: {warnings:#?}");
        }
        for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
            walk(
                prop,
                &compiled.properties[name],
                &format!("{path}.{name}"),
                n,
            );
        }
        if let (Some(items), Some(c)) = (schema.get("items"), compiled.items.as_deref()) {
            walk(items, c, &format!("{path}[]"), n);
        }
    }
    let mut rules = 0;
    for crd in api::crds() {
        let schema = schema_of(&crd);
        let compiled = kube_cel::compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{:?}",
            compiled.compilation_errors()
        );
        walk(&schema, &compiled, &crd.spec.names.kind, &mut rules);
    }
    assert!(rules >= 15, "only {rules} CEL rules found");
}
#[test]
fn examples_round_trip_through_serde() {
    fn round_trip<K>(obj: K)
    where
        K: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Resource,
    {
        let v = serde_json::to_value(&obj).unwrap();
        assert_eq!(v["apiVersion"], "kubedvr.io/v1alpha1");
        let back: K = serde_json::from_value(v).unwrap();
        assert_eq!(back, obj);
        let y = serde_yaml::to_string(&obj).unwrap();
        assert_eq!(serde_yaml::from_str::<K>(&y).unwrap(), obj);
    }
    round_trip(mk_extnet());
    round_trip(mk_router());
    round_trip(mk_fip(fixed("10.0.1.5")));
    round_trip(mk_snat());
}

#[test]
fn wire_names_are_camel_case_and_none_is_omitted() {
    let v = serde_json::to_value(mk_fip(fixed("10.0.1.5"))).unwrap();
    assert_eq!(
        v["spec"],
        json!({"router": "r1", "address": "203.0.113.20", "target": {"fixedIP": "10.0.1.5"}})
    );
    assert!(v.get("status").is_none());

    let status = FloatingIPStatus {
        fixed_ip: Some("10.0.1.5".into()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&status).unwrap(),
        json!({"conditions": [], "fixedIP": "10.0.1.5"})
    );

    let v = serde_json::to_value(mk_router()).unwrap();
    assert_eq!(
        v["spec"]["subnets"][1]["networkAttachment"],
        "shared/net-back"
    );
    assert_eq!(v["spec"]["externalNetwork"], "public");
    assert_eq!(v["status"]["subnets"][0]["gatewayMac"], "FA:16:3E:AA:BB:CC");
    assert_eq!(v["status"]["linkLocal"], "169.254.64.14/31");
    assert_eq!(v["status"]["programmedNodes"], json!(["node-1"]));

    let v = serde_json::to_value(mk_extnet()).unwrap();
    assert_eq!(
        v["spec"]["pools"]["nodePorts"][0],
        "203.0.113.200-203.0.113.250"
    );
    assert_eq!(
        v["spec"]["allowedNamespaces"],
        json!(["tenant-a", "tenant-b"])
    );
    assert_eq!(
        v["spec"]["nodeSelector"]["matchLabels"]["kubedvr.io/external"],
        "true"
    );
    assert_eq!(v["status"]["floatingAllocated"], 3);
    assert!(v["metadata"].get("namespace").is_none());

    let v = serde_json::to_value(mk_snat()).unwrap();
    assert_eq!(v["status"]["activeNode"], "node-3");
}

#[test]
fn manifests_as_users_write_them_deserialize() {
    let fip: FloatingIP = serde_yaml::from_str(
        r#"
apiVersion: kubedvr.io/v1alpha1
kind: FloatingIP
metadata: {name: db, namespace: tenant-a}
spec:
  router: r1
  target:
    pod: {name: db-0, network: net-back}
"#,
    )
    .unwrap();
    assert_eq!(
        fip.spec.target.pod,
        Some(PodTarget {
            name: "db-0".into(),
            network: Some("net-back".into())
        })
    );
    assert_eq!(fip.spec.address, None);
    assert_admitted(&fip, None);

    // Lists may be omitted; they default to empty (in the schema, too).
    let r: DistributedRouter = serde_yaml::from_str(
        "apiVersion: kubedvr.io/v1alpha1\nkind: DistributedRouter\nmetadata: {name: empty}\nspec: {}\n",
    )
    .unwrap();
    assert!(r.spec.subnets.is_empty() && r.spec.routes.is_empty());
    let e: ExternalNetwork = serde_yaml::from_str(
        r#"
apiVersion: kubedvr.io/v1alpha1
kind: ExternalNetwork
metadata: {name: lab}
spec:
  cidr: 198.51.100.0/24
  gateway: 198.51.100.1
  pools: {floating: [198.51.100.16/28]}
  attachment: {interface: eth1}
"#,
    )
    .unwrap();
    assert!(e.spec.pools.snat.is_empty() && e.spec.allowed_namespaces.is_empty());
    assert_admitted(&e, None);
    // Pools may be omitted altogether: the schema default makes the CEL
    // rules that walk them see empty lists.
    let e: ExternalNetwork = serde_yaml::from_str(
        "apiVersion: kubedvr.io/v1alpha1\nkind: ExternalNetwork\nmetadata: {name: bare}\n\
         spec: {cidr: 198.51.100.0/24, gateway: 198.51.100.1, attachment: {bridge: br-ex}}\n",
    )
    .unwrap();
    assert_eq!(e.spec.pools, ExternalPools::default());
    let mut raw = serde_json::to_value(&e).unwrap();
    raw["spec"].as_object_mut().unwrap().remove("pools");
    let schema = schema_of(&ExternalNetwork::crd());
    assert!(kube_cel::Validator::new()
        .validate(&schema, &raw, None)
        .is_ok());
}

#[test]
fn example_manifests_are_admitted() {
    fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                yaml_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    yaml_files(&root.join("examples"), &mut files);
    files.sort();
    let crds = api::crds();
    let (mut failures, mut checked) = (vec![], 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(v) = <Value as serde::Deserialize>::deserialize(doc) else {
                continue; // not ours to judge
            };
            if v["apiVersion"] != api::API_VERSION {
                continue;
            }
            let name = format!("{}: {} {}", f.display(), v["kind"], v["metadata"]["name"]);
            let Some(crd) = crds
                .iter()
                .find(|c| v["kind"] == c.spec.names.kind.as_str())
            else {
                failures.push(format!("{name}: unknown kind"));
                continue;
            };
            checked += 1;
            failures.extend(
                admit_json(crd, &v, None)
                    .into_iter()
                    .map(|e| format!("{name}: {e}")),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "example manifests rejected: {failures:#?}"
    );
    assert!(
        files.is_empty() || checked > 0,
        "no kubedvr.io objects found in examples/"
    );
}

/// `spec.address` says what the controller enforces: inside the pool (the
/// resolver's `AddressOutsidePool`), not merely inside the network's CIDR.
#[test]
fn address_descriptions_match_what_the_controller_enforces() {
    for (crd, pool) in [
        (FloatingIP::crd(), "spec.pools.floating"),
        (SnatGateway::crd(), "spec.pools.snat"),
    ] {
        let v = serde_json::to_value(&crd).unwrap();
        let d = v.pointer(
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/address/description",
        )
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
        assert!(d.contains(pool) && d.contains("AddressOutsidePool"), "{d}");
        assert!(!d.contains("CIDR"), "{d}");
    }
}

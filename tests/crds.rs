//! The generated CRDs: `crds/` is up to date, the schemas are documented and
//! enforce what they claim, and example objects round-trip through serde.
//!
//! Admission is approximated without an API server: a small OpenAPI checker
//! (types, required, patterns, lengths, item counts, list-map keys, unknown
//! fields) plus kube-cel, the Rust port of the Kubernetes CEL libraries, for
//! the `x-kubernetes-validations` rules.

use std::collections::HashSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::ObjectMeta;
use kube::{CustomResourceExt, Resource};
use kube_dvr::api::{
    self, condition, conditions, DistributedRouter, DistributedRouterSpec, DistributedRouterStatus,
    ExternalAttachment, ExternalNetwork, ExternalNetworkSpec, ExternalNetworkStatus, ExternalPools,
    ExtraRoute, FloatingIP, FloatingIPSpec, FloatingIPStatus, FloatingTarget, LabelSelector,
    NodePortStatus, PodTarget, RouterSubnet, SnatGateway, SnatGatewaySpec, SnatGatewayStatus,
    SnatPortStatus, SubnetStatus,
};
use regex::Regex;
use serde_json::{json, Value};

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

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(s).unwrap()
}

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
    for crd in api::crds() {
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

// ---------------------------------------------------------------- admission

/// A small OpenAPI v3 checker for what the API server enforces structurally.
fn check_schema(schema: &Value, value: &Value, path: &str, errs: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != json!(true) {
            errs.push(format!("{path}: null not allowed"));
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    match ty {
        "object" => {
            let Some(obj) = value.as_object() else {
                return errs.push(format!("{path}: expected object"));
            };
            for req in schema["required"].as_array().into_iter().flatten() {
                if !obj.contains_key(req.as_str().unwrap()) {
                    errs.push(format!("{path}.{}: Required value", req.as_str().unwrap()));
                }
            }
            for (k, v) in obj {
                let p = format!("{path}.{k}");
                if let Some(sub) = schema["properties"].get(k) {
                    check_schema(sub, v, &p, errs);
                } else if let Some(sub) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    check_schema(sub, v, &p, errs);
                } else if !(path.is_empty()
                    && ["apiVersion", "kind", "metadata"].contains(&k.as_str()))
                {
                    errs.push(format!("{p}: unknown field"));
                }
            }
        }
        "array" => {
            let Some(arr) = value.as_array() else {
                return errs.push(format!("{path}: expected array"));
            };
            if let Some(max) = schema["maxItems"].as_u64() {
                if arr.len() as u64 > max {
                    errs.push(format!("{path}: Too many: {} > maxItems {max}", arr.len()));
                }
            }
            if let Some(min) = schema["minItems"].as_u64() {
                if (arr.len() as u64) < min {
                    errs.push(format!("{path}: Too few items"));
                }
            }
            match schema["x-kubernetes-list-type"].as_str() {
                Some("set") => {
                    let uniq: HashSet<String> = arr.iter().map(Value::to_string).collect();
                    if uniq.len() != arr.len() {
                        errs.push(format!("{path}: Duplicate value"));
                    }
                }
                Some("map") => {
                    let keys = schema["x-kubernetes-list-map-keys"].as_array().unwrap();
                    let uniq: HashSet<String> = arr
                        .iter()
                        .map(|e| {
                            keys.iter()
                                .map(|k| e[k.as_str().unwrap()].to_string())
                                .collect()
                        })
                        .collect();
                    if uniq.len() != arr.len() {
                        errs.push(format!("{path}: Duplicate value (list map key)"));
                    }
                }
                _ => {}
            }
            for (i, v) in arr.iter().enumerate() {
                check_schema(&schema["items"], v, &format!("{path}[{i}]"), errs);
            }
        }
        "string" => {
            let Some(s) = value.as_str() else {
                return errs.push(format!("{path}: expected string"));
            };
            let len = s.chars().count() as u64;
            if schema["maxLength"].as_u64().is_some_and(|m| len > m) {
                errs.push(format!("{path}: Too long: maxLength"));
            }
            if schema["minLength"].as_u64().is_some_and(|m| len < m) {
                errs.push(format!("{path}: Too short: minLength"));
            }
            if let Some(pat) = schema["pattern"].as_str() {
                if !Regex::new(pat).unwrap().is_match(s) {
                    errs.push(format!("{path}: does not match pattern {pat}"));
                }
            }
        }
        "integer" => match value.as_i64() {
            None => errs.push(format!("{path}: expected integer")),
            Some(n) => {
                if schema["minimum"].as_f64().is_some_and(|m| (n as f64) < m) {
                    errs.push(format!("{path}: below minimum"));
                }
                if schema["maximum"].as_f64().is_some_and(|m| (n as f64) > m) {
                    errs.push(format!("{path}: above maximum"));
                }
            }
        },
        "boolean" if !value.is_boolean() => errs.push(format!("{path}: expected boolean")),
        _ => {}
    }
}

/// What the API server would say about creating `obj` (or updating `old` to
/// `obj`): schema errors and CEL rule failures, as messages.
fn admit<K: CustomResourceExt + serde::Serialize>(obj: &K, old: Option<&K>) -> Vec<String> {
    let schema = schema_of(&K::crd());
    let obj = serde_json::to_value(obj).unwrap();
    let old = old.map(|o| serde_json::to_value(o).unwrap());
    let mut errs = vec![];
    check_schema(&schema, &obj, "", &mut errs);
    if let Err(e) = kube_cel::Validator::new().validate(&schema, &obj, old.as_ref()) {
        errs.extend(
            e.into_iter()
                .map(|e| format!("{}: {} ({})", e.field_path, e.message, e.rule)),
        );
    }
    errs
}

#[track_caller]
fn assert_admitted<K: CustomResourceExt + serde::Serialize>(obj: &K, old: Option<&K>) {
    let errs = admit(obj, old);
    assert!(errs.is_empty(), "expected admission, got {errs:#?}");
}

#[track_caller]
fn assert_rejected<K: CustomResourceExt + serde::Serialize>(obj: &K, old: Option<&K>, why: &str) {
    let errs = admit(obj, old);
    assert!(
        errs.iter().any(|e| e.contains(why)),
        "expected a rejection containing {why:?}, got {errs:#?}"
    );
}

#[test]
fn every_cel_rule_compiles_in_scope_and_within_budget() {
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
            let bound: Vec<String> = Regex::new(r"\.(all|exists|exists_one|map|filter)\((\w+),")
                .unwrap()
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

// ---------------------------------------------------------------- examples

fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

fn mk_extnet() -> ExternalNetwork {
    let mut e = ExternalNetwork::new(
        "public",
        ExternalNetworkSpec {
            cidr: "203.0.113.0/24".into(),
            gateway: "203.0.113.1".into(),
            pools: ExternalPools {
                floating: vec!["203.0.113.10-203.0.113.99".into()],
                snat: vec!["203.0.113.128/28".into()],
                node_ports: vec![
                    "203.0.113.200-203.0.113.250".into(),
                    "203.0.113.251-203.0.113.254".into(),
                ],
            },
            attachment: ExternalAttachment {
                bridge: Some("br-ext".into()),
                interface: None,
            },
            node_selector: Some(LabelSelector {
                match_labels: Some(
                    [("kubedvr.io/external".to_string(), "true".to_string())].into(),
                ),
                ..Default::default()
            }),
            allowed_namespaces: vec!["tenant-a".into(), "tenant-b".into()],
        },
    );
    e.status = Some(ExternalNetworkStatus {
        observed_generation: Some(1),
        conditions: vec![condition(conditions::READY, true, "Ready", "", Some(1))],
        node_ports: vec![NodePortStatus {
            node: "node-1".into(),
            address: "203.0.113.200".into(),
            mac: Some("fa:16:3e:00:00:01".into()),
        }],
        floating_allocated: Some(3),
        snat_allocated: Some(1),
    });
    e
}

fn subnet(name: &str, cidr: &str, gateway: &str, nad: &str) -> RouterSubnet {
    RouterSubnet {
        name: name.into(),
        cidr: cidr.into(),
        gateway: gateway.into(),
        network_attachment: nad.into(),
    }
}

fn mk_router() -> DistributedRouter {
    let mut r = DistributedRouter::new(
        "r1",
        DistributedRouterSpec {
            subnets: vec![
                subnet("front", "10.0.1.0/24", "10.0.1.1", "net-front"),
                subnet("back", "10.0.2.0/24", "10.0.2.1", "shared/net-back"),
            ],
            routes: vec![ExtraRoute {
                destination: "192.168.0.0/16".into(),
                nexthop: "10.0.1.254".into(),
            }],
            external_network: Some("public".into()),
        },
    );
    r.metadata = meta("r1", Some("tenant-a"));
    r.status = Some(DistributedRouterStatus {
        observed_generation: Some(2),
        conditions: vec![condition(
            conditions::READY,
            false,
            "NotProgrammed",
            "node-2 pending",
            Some(2),
        )],
        subnets: vec![SubnetStatus {
            name: "front".into(),
            vni: 16_777_215,
            gateway_mac: "FA:16:3E:AA:BB:CC".into(),
            cidr: "10.0.1.0/24".into(),
        }],
        index: Some(7),
        link_local: Some("169.254.64.14/31".into()),
        nodes: vec!["node-1".into(), "node-2.example.com".into()],
        programmed_nodes: vec!["node-1".into()],
    });
    r
}

fn mk_fip(target: FloatingTarget) -> FloatingIP {
    let mut f = FloatingIP::new(
        "web",
        FloatingIPSpec {
            router: "r1".into(),
            external_network: None,
            address: Some("203.0.113.20".into()),
            target,
        },
    );
    f.metadata = meta("web", Some("tenant-a"));
    f
}

fn fixed(ip: &str) -> FloatingTarget {
    FloatingTarget {
        fixed_ip: Some(ip.into()),
        pod: None,
    }
}

fn mk_snat() -> SnatGateway {
    let mut s = SnatGateway::new(
        "r1",
        SnatGatewaySpec {
            router: "r1".into(),
            external_network: Some("public".into()),
            address: None,
            node_selector: None,
        },
    );
    s.metadata = meta("r1", Some("tenant-a"));
    s.status = Some(SnatGatewayStatus {
        observed_generation: Some(1),
        conditions: vec![condition(
            conditions::SCHEDULED,
            true,
            "Scheduled",
            "",
            Some(1),
        )],
        address: Some("203.0.113.130".into()),
        active_node: Some("node-3".into()),
        ports: vec![SnatPortStatus {
            subnet: "front".into(),
            ip: "10.0.1.2".into(),
            mac: "fa:16:3e:11:22:33".into(),
        }],
    });
    s
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

// ---------------------------------------------------------------- rules

#[test]
fn external_network_admission() {
    let ok = mk_extnet();
    assert_admitted(&ok, None);
    let mut iface = ok.clone();
    iface.spec.attachment = ExternalAttachment {
        bridge: None,
        interface: Some("eth1.100".into()),
    };
    assert_admitted(&iface, None);

    let with = |f: &dyn Fn(&mut ExternalNetworkSpec)| {
        let mut e = mk_extnet();
        f(&mut e.spec);
        e
    };
    assert_rejected(
        &with(&|s| s.gateway = "198.51.100.1".into()),
        None,
        "gateway must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.gateway = "203.0.113.01".into()),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.cidr = "203.0.113.5/24".into()),
        None,
        "must be a network address",
    );
    assert_rejected(
        &with(&|s| s.cidr = "203.0.113.0/33".into()),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.cidr = "203.0.113.0/31".into()),
        None,
        "prefix length",
    );
    assert_rejected(
        &with(&|s| s.cidr = "2001:db8::/64".into()),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.pools.floating = vec!["198.51.100.10-198.51.100.20".into()]),
        None,
        "every floating pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.floating = vec!["203.0.113.10-198.51.100.20".into()]),
        None,
        "every floating pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.snat = vec!["203.0.112.0/23".into()]),
        None,
        "every snat pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.node_ports = vec!["203.0.114.0/28".into()]),
        None,
        "every nodePorts pool entry must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.pools.snat = vec!["203.0.113.1-".into()]),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.pools.snat = vec!["203.0.113.1".into(); 33]),
        None,
        "maxItems",
    );
    assert_rejected(
        &with(&|s| {
            s.attachment = ExternalAttachment {
                bridge: Some("br0".into()),
                interface: Some("eth1".into()),
            }
        }),
        None,
        "exactly one of bridge or interface",
    );
    assert_rejected(
        &with(&|s| s.attachment = ExternalAttachment::default()),
        None,
        "exactly one of bridge or interface",
    );
    assert_rejected(
        &with(&|s| s.attachment.bridge = Some("br-external-net0".into())),
        None,
        "maxLength",
    );
    assert_rejected(
        &with(&|s| s.attachment.bridge = Some("br/ext".into())),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.allowed_namespaces = vec!["Tenant_A".into()]),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.allowed_namespaces = vec!["a".into(), "a".into()]),
        None,
        "Duplicate value",
    );

    // cidr is immutable; the rest is not.
    let moved = with(&|s| {
        s.cidr = "198.51.100.0/24".into();
        s.gateway = "198.51.100.1".into();
        s.pools = ExternalPools::default();
    });
    assert_admitted(&moved, None);
    assert_rejected(&moved, Some(&ok), "cidr is immutable");
    assert_admitted(&with(&|s| s.gateway = "203.0.113.254".into()), Some(&ok));

    let mut bad_status = mk_extnet();
    bad_status.status.as_mut().unwrap().node_ports[0].mac = Some("fa:16:3e:00:00".into());
    assert_rejected(&bad_status, None, "does not match pattern");
}

#[test]
fn distributed_router_admission() {
    let ok = mk_router();
    assert_admitted(&ok, None);
    let mut empty = ok.clone();
    empty.spec = DistributedRouterSpec::default();
    assert_admitted(&empty, None);

    let with = |f: &dyn Fn(&mut DistributedRouterSpec)| {
        let mut r = mk_router();
        f(&mut r.spec);
        r
    };
    assert_rejected(
        &with(&|s| s.subnets[1].name = "front".into()),
        None,
        "subnet names must be unique",
    );
    assert_rejected(
        &with(&|s| s.subnets[1].name = "front".into()),
        None,
        "Duplicate value",
    );
    assert_rejected(
        &with(&|s| s.subnets[1] = subnet("back", "10.0.0.0/16", "10.0.0.1", "net-back")),
        None,
        "subnet CIDRs must not overlap",
    );
    assert_rejected(
        &with(&|s| s.subnets[1] = subnet("back", "10.0.1.0/24", "10.0.1.1", "net-back")),
        None,
        "subnet CIDRs must not overlap",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].gateway = "10.0.2.1".into()),
        None,
        "gateway must be inside cidr",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].gateway = "10.0.1.0".into()),
        None,
        "network address",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].cidr = "10.0.1.1/24".into()),
        None,
        "must be a network address",
    );
    assert_rejected(
        &with(&|s| s.subnets[0] = subnet("front", "10.0.1.0/31", "10.0.1.1", "n")),
        None,
        "prefix length",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].name = "Front".into()),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].network_attachment = "a/b/c".into()),
        None,
        "does not match pattern",
    );
    assert_rejected(
        &with(&|s| s.subnets[0].network_attachment = String::new()),
        None,
        "minLength",
    );
    assert_rejected(
        &with(&|s| s.routes[0].nexthop = "172.16.0.1".into()),
        None,
        "nexthop must be inside",
    );
    assert_rejected(
        &with(&|s| s.routes[0].destination = "192.168.1.0/16".into()),
        None,
        "network address",
    );
    assert_rejected(
        &with(&|s| s.routes.push(s.routes[0].clone())),
        None,
        "Duplicate value",
    );
    assert_rejected(
        &with(&|s| s.external_network = Some("Public Net".into())),
        None,
        "does not match pattern",
    );

    // 64 subnets are fine; 65 are not.
    let many = |n: usize| {
        with(&|s| {
            s.routes.clear();
            s.subnets = (0..n)
                .map(|i| {
                    subnet(
                        &format!("s{i}"),
                        &format!("10.1.{i}.0/24"),
                        &format!("10.1.{i}.1"),
                        "n",
                    )
                })
                .collect();
        })
    };
    assert_admitted(&many(64), None);
    assert_rejected(&many(65), None, "maxItems");

    let mut bad_vni = mk_router();
    bad_vni.status.as_mut().unwrap().subnets[0].vni = 16_777_216;
    assert_rejected(&bad_vni, None, "above maximum");
    bad_vni.status.as_mut().unwrap().subnets[0].vni = 0;
    assert_rejected(&bad_vni, None, "below minimum");
}

#[test]
fn floating_ip_admission() {
    let ok = mk_fip(fixed("10.0.1.5"));
    assert_admitted(&ok, None);
    let pod = mk_fip(FloatingTarget {
        fixed_ip: None,
        pod: Some(PodTarget {
            name: "web-0".into(),
            network: None,
        }),
    });
    assert_admitted(&pod, None);
    // Changing the target or address is allowed.
    assert_admitted(&pod, Some(&ok));

    let both = mk_fip(FloatingTarget {
        fixed_ip: Some("10.0.1.5".into()),
        pod: Some(PodTarget {
            name: "web-0".into(),
            network: None,
        }),
    });
    assert_rejected(&both, None, "exactly one of fixedIP or pod");
    assert_rejected(
        &mk_fip(FloatingTarget::default()),
        None,
        "exactly one of fixedIP or pod",
    );
    assert_rejected(&mk_fip(fixed("10.0.1.256")), None, "does not match pattern");

    let mut moved = ok.clone();
    moved.spec.router = "r2".into();
    assert_admitted(&moved, None);
    assert_rejected(&moved, Some(&ok), "router is immutable");

    let mut addr = ok.clone();
    addr.spec.address = Some("203.0.113.20/32".into());
    assert_rejected(&addr, None, "does not match pattern");

    let mut st = ok.clone();
    st.status = Some(FloatingIPStatus {
        observed_generation: Some(1),
        conditions: vec![
            condition(conditions::READY, true, "Ready", "", Some(1)),
            condition(conditions::PROGRAMMED, true, "Programmed", "", Some(1)),
        ],
        address: Some("203.0.113.20".into()),
        fixed_ip: Some("10.0.1.5".into()),
        node: Some("node-1".into()),
        mac: Some("fa:16:3e:00:00:01".into()),
    });
    assert_admitted(&st, None);
    st.status.as_mut().unwrap().conditions.push(condition(
        conditions::READY,
        false,
        "Gone",
        "",
        Some(1),
    ));
    assert_rejected(&st, None, "Duplicate value");
}

#[test]
fn snat_gateway_admission() {
    let ok = mk_snat();
    assert_admitted(&ok, None);
    let mut moved = ok.clone();
    moved.spec.router = "r2".into();
    assert_rejected(&moved, Some(&ok), "router is immutable");
    let mut readdressed = ok.clone();
    readdressed.spec.address = Some("203.0.113.131".into());
    assert_admitted(&readdressed, Some(&ok));
    let mut bad = ok.clone();
    bad.spec.router = String::new();
    assert_rejected(&bad, None, "minLength");
}

#[test]
fn unknown_fields_are_reported_by_the_checker() {
    // Guards the checker: a typo in a manifest must not pass unnoticed.
    let schema = schema_of(&FloatingIP::crd());
    let mut v = serde_json::to_value(mk_fip(fixed("10.0.1.5"))).unwrap();
    v["spec"]["target"]["fixedIp"] = json!("10.0.1.6");
    let mut errs = vec![];
    check_schema(&schema, &v, "", &mut errs);
    assert_eq!(errs, [".spec.target.fixedIp: unknown field"]);
}

//! Shared by the CRD tests: an approximation of API-server admission and
//! example objects (`mk_*`).
//!
//! Admission without an API server: the API stand-in's own validation
//! (`kube_standin::validation`: pruning, defaults, OpenAPI value checks and
//! the `x-kubernetes-validations` CEL rules through kube-cel), called
//! directly, so these tests and the stand-in judge objects the same way.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::ObjectMeta;
use kube::CustomResourceExt;
use kube_dvr::api::{
    condition, conditions, DistributedRouter, DistributedRouterSpec, DistributedRouterStatus,
    ExternalAttachment, ExternalNetwork, ExternalNetworkSpec, ExternalNetworkStatus, ExternalPools,
    ExtraRoute, FloatingIP, FloatingIPSpec, FloatingTarget, LabelSelector, NodePortStatus,
    RouterSubnet, SnatCandidateStatus, SnatGateway, SnatGatewaySpec, SnatGatewayStatus,
    SnatPortStatus, SubnetStatus,
};
use kube_standin::validation;
use serde_json::Value;

/// The OpenAPI v3 schema of a CRD's only version, as JSON.
pub fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(s).unwrap()
}

/// What the API server would say about creating `obj` (or updating `old` to
/// `obj`): schema errors and CEL rule failures, as messages.
pub fn admit<K: CustomResourceExt + serde::Serialize>(obj: &K, old: Option<&K>) -> Vec<String> {
    let obj = serde_json::to_value(obj).unwrap();
    let old = old.map(|o| serde_json::to_value(o).unwrap());
    admit_json(&K::crd(), &obj, old.as_ref())
}

/// [`admit`] for raw JSON (so unknown fields are still there to be found):
/// the stand-in's own admission (pruning, defaults, schema, CEL), with
/// `fieldValidation=Strict` (kubectl's default), so unknown fields are
/// errors.
pub fn admit_json(crd: &CustomResourceDefinition, obj: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema_of(crd);
    let mut obj = obj.clone();
    let mut errs: Vec<String> = validation::prune(&schema, &mut obj)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    let obj = validation::apply_defaults(&schema, &obj);
    let old = old.map(|o| validation::apply_defaults(&schema, o));
    errs.extend(
        validation::validate_custom_resource(&validation::Schema::new(schema), &obj, old.as_ref())
            .iter()
            .map(ToString::to_string),
    );
    errs
}

#[track_caller]
pub fn assert_admitted<K: CustomResourceExt + serde::Serialize>(obj: &K, old: Option<&K>) {
    let errs = admit(obj, old);
    assert!(errs.is_empty(), "expected admission, got {errs:#?}");
}

#[track_caller]
pub fn assert_rejected<K: CustomResourceExt + serde::Serialize>(
    obj: &K,
    old: Option<&K>,
    why: &str,
) {
    let errs = admit(obj, old);
    assert!(
        errs.iter().any(|e| e.contains(why)),
        "expected a rejection containing {why:?}, got {errs:#?}"
    );
}

// ---------------------------------------------------------------- examples

pub fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

pub fn mk_extnet() -> ExternalNetwork {
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

pub fn subnet(name: &str, cidr: &str, gateway: &str, nad: &str) -> RouterSubnet {
    RouterSubnet {
        name: name.into(),
        cidr: cidr.into(),
        gateway: gateway.into(),
        network_attachment: nad.into(),
    }
}

pub fn mk_router() -> DistributedRouter {
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

pub fn mk_fip(target: FloatingTarget) -> FloatingIP {
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

pub fn fixed(ip: &str) -> FloatingTarget {
    FloatingTarget {
        fixed_ip: Some(ip.into()),
        pod: None,
    }
}

pub fn mk_snat() -> SnatGateway {
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
        candidates: vec![
            SnatCandidateStatus {
                node: "node-3".into(),
                ineligible_since: None,
            },
            SnatCandidateStatus {
                node: "node-4".into(),
                ineligible_since: Some(Time(Timestamp::UNIX_EPOCH)),
            },
        ],
        ports: vec![SnatPortStatus {
            subnet: "front".into(),
            ip: "10.0.1.2".into(),
            mac: "fa:16:3e:11:22:33".into(),
        }],
    });
    s
}

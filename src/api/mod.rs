//! The custom resources of kube-dvr: API group `kubedvr.io`, version
//! `v1alpha1`.
//!
//! | kind | scope | short name |
//! |---|---|---|
//! | [`ExternalNetwork`] | cluster | `extnet` |
//! | [`DistributedRouter`] | namespaced | `dvr` |
//! | [`FloatingIP`] | namespaced | `dfip` |
//! | [`SnatGateway`] | namespaced | `dsnat` |
//! | [`Port`] | namespaced | `dport` (written by kube-dvr only) |
//!
//! All share the category `kubedvr` (`kubectl get kubedvr`). All but Port
//! (a record kube-dvr writes once) have a status subresource with
//! `observedGeneration` and `conditions` (see [`conditions`]), and printer
//! columns ending in `Ready` and `Age`.
//!
//! The CRDs are generated from these types ([`crds`], [`crds_yaml`];
//! `kube-dvr crds` prints them). Everything the API server can check on its
//! own is in the schema, so invalid objects are rejected at admission rather
//! than reported later:
//! - OpenAPI `format`/`pattern`/`maxLength`/`maxItems` for IPv4 addresses,
//!   CIDRs, address ranges, MACs, interface names and DNS-1123 object names
//!   (patterns in [`validation`]);
//! - CEL rules (`x-kubernetes-validations`) for cross-field constraints:
//!   gateways inside their CIDR, CIDRs in canonical form, pools inside the
//!   external CIDR, non-overlapping router subnets, route next hops on a
//!   router subnet, exactly one of two alternatives, immutable fields. They use
//!   the Kubernetes CEL IP/CIDR library (`isCIDR`, `cidr()`, `ip()`), so the
//!   CRDs need Kubernetes 1.31 or newer.
//!
//! What needs other objects (a router's external network exists, a floating
//! address is free, a fixed IP is on one of the router's subnets) is checked by
//! the controller and reported as `Valid=False` / `Ready=False`.
//!
//! Only IPv4 is supported for now.

pub mod conditions;
mod external_network;
mod floating_ip;
pub mod kinds;
pub mod kubevirt;
mod load_balancer;
pub mod nad;
mod port;
mod port_forwarding;
pub mod reference;
mod router;
mod router_firewall;
pub mod services;
mod snat_gateway;
pub mod validation;

pub use conditions::{condition, find_condition, is_ready, set_condition};
pub use external_network::{
    ExternalAttachment, ExternalNetwork, ExternalNetworkSpec, ExternalNetworkStatus, ExternalPools,
    NodePortStatus,
};
pub use floating_ip::{FloatingIP, FloatingIPSpec, FloatingIPStatus, FloatingTarget, PodTarget};
pub use kinds::{Build, DvrKind, Family, Kind, Objects, PerKind, Shared, Slices};
pub use load_balancer::{
    BackendIp, BackendStatus, Backends, HealthCheck, LoadBalancer, LoadBalancerPort,
    LoadBalancerSpec, LoadBalancerStatus, SessionAffinity, MAX_BACKENDS,
};
pub use port::{delete_only, port_name, Port, PortBinding, PortSpec, PortStatus};
pub use port_forwarding::{
    Forward, PortForwarding, PortForwardingSpec, PortForwardingStatus, MAX_FORWARDED_PORTS,
};
pub use router::{
    DistributedRouter, DistributedRouterSpec, DistributedRouterStatus, ExtraRoute, RouterSubnet,
    SubnetStatus,
};
pub use router_firewall::{
    FirewallAction, FirewallCidr, FirewallProtocol, FirewallRule, RouterFirewall,
    RouterFirewallSpec, RouterFirewallStatus,
};
pub use services::{PortRange, Protocol};
pub use snat_gateway::{
    SnatCandidateStatus, SnatGateway, SnatGatewaySpec, SnatGatewayStatus, SnatPortStatus,
    MAX_CANDIDATES,
};

/// Re-exported so users of this module need not name k8s-openapi paths.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of all kube-dvr resources.
pub const GROUP: &str = "kubedvr.io";
/// The (only) API version of all kube-dvr resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of all kube-dvr objects: `kubedvr.io/v1alpha1`.
pub const API_VERSION: &str = "kubedvr.io/v1alpha1";
/// The category all kube-dvr CRDs belong to: `kubectl get kubedvr`.
pub const CATEGORY: &str = "kubedvr";
/// The finalizer the controller puts on objects whose removal needs cleanup
/// (released allocations, kernel state on nodes).
pub const FINALIZER: &str = "kubedvr.io/cleanup";

/// The CustomResourceDefinitions of all kube-dvr kinds: the user-facing
/// ones in the order of [`Kind::ALL`] (the [`kinds`] registry), then
/// [`Port`] (kube-dvr's own record, written by its agents: not in the
/// registry of user-facing kinds).
pub fn crds() -> Vec<CustomResourceDefinition> {
    (Kind::ALL.iter().map(|k| k.crd()))
        .chain([Port::crd()])
        .collect()
}

/// [`crds`] as multi-document YAML: each CRD preceded by `---`, in the
/// order of [`crds`]. This is what `crds/kubedvr.io_crds.yaml` holds.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        // A CRD is plain data (strings, maps, lists): serialization cannot fail.
        out.push_str(&serde_yaml::to_string(&crd).expect("CRD serializes to YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_are_in_group_version_and_category() {
        let crds = crds();
        let names: Vec<_> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
        assert_eq!(
            names,
            [
                "ExternalNetwork",
                "DistributedRouter",
                "FloatingIP",
                "SnatGateway",
                "RouterFirewall",
                "PortForwarding",
                "LoadBalancer",
                "Port"
            ]
        );
        for crd in &crds {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.versions.len(), 1);
            assert_eq!(crd.spec.versions[0].name, VERSION);
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&[CATEGORY.to_string()][..])
            );
            let status = crd.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref());
            assert!(
                status.is_some(),
                "{} lacks the status subresource",
                crd.spec.names.kind
            );
        }
        assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
    }

    #[test]
    fn crds_yaml_has_one_document_per_crd() {
        let yaml = crds_yaml();
        assert!(yaml.starts_with("---\n"));
        assert_eq!(yaml.matches("\n---\n").count() + 1, crds().len());
        assert_eq!(yaml, crds_yaml(), "output must be stable");
    }
}

//! What the controller, the agents and the lab share about the cluster:
//! the annotations agents publish on their Node, turning API objects into
//! the resolver's input, and the digest by which an agent reports which plan
//! it has programmed.
//!
//! Per-node facts follow flannel's habit of Node annotations:
//! - `kubedvr.io/vtep`: the node's underlay address (VXLAN endpoint);
//! - `kubedvr.io/dvr-mac`: its DVR MAC (derived from the VTEP; informative);
//! - `kubedvr.io/programmed`: the digest of the node plan the agent last
//!   applied, and `kubedvr.io/agent-errors` what failed in it, per object
//!   ([`errors`]).
//!
//! The watch caches of the controller and the agents are built here
//! ([`watch`]), so that an object that does not decode is skipped and
//! reported the same way by both.
//!
//! The controller computes every node's plan too (the planner is a pure
//! function of the same objects), so "programmed" is exact: a node is done
//! with a change when its reported digest equals the controller's.
pub mod errors;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

use crate::api::Port;

use crate::plan::model::NodeState;
use crate::plan::resolve::{NodeInfo, PodInfo, PodNetwork};

/// The pod annotation Multus writes after attaching a pod's networks. For
/// users only: kube-dvr never reads it (endpoints come from Ports).
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The pod annotation that asks Multus for secondary networks
/// (`namespace/name` of NADs, comma-separated).
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

pub const VTEP_ANNOTATION: &str = "kubedvr.io/vtep";
pub const DVR_MAC_ANNOTATION: &str = "kubedvr.io/dvr-mac";
pub const PROGRAMMED_ANNOTATION: &str = "kubedvr.io/programmed";
pub const AGENT_ERRORS_ANNOTATION: &str = "kubedvr.io/agent-errors";
pub const CLEANED_ANNOTATION: &str = "kubedvr.io/cleaned";
/// The SnatGateways (`namespace/name`, comma-separated) the node's agent
/// serves right now (its run-time choice, `agent::gateway`); absent when
/// none. The controller moves `activeNode` to the node that serves.
pub const SNAT_SERVING_ANNOTATION: &str = "kubedvr.io/snat-serving";
/// Node annotation: the LoadBalancer backends its agent's health checks
/// find failing, `namespace/name=ip` comma-separated; absent when none.
pub const LB_DOWN_ANNOTATION: &str = "kubedvr.io/lb-down";
/// The ConfigMap whose presence (in the release namespace) tells every agent
/// to remove all its kernel state: set by `kube-dvr uninstall`.
pub const UNINSTALL_CONFIGMAP: &str = "kube-dvr-uninstall";
/// The ConfigMap (in the release namespace) where the controller persists
/// its allocation cursors (router indexes, VNIs).
pub const ALLOCATOR_CONFIGMAP: &str = "kube-dvr-allocator";
/// Name of the controller's leader-election Lease.
pub const CONTROLLER_LEASE: &str = "kube-dvr-controller";
/// A client for the API server (in-cluster or kubeconfig), with every
/// request bounded: connecting takes at most 10 s, sending 30 s, and a
/// response may be awaited 295 s — just above the 290 s after which the
/// server ends a watch, the longest request there is (kube-rs' defaults,
/// made explicit here so they stay).
pub async fn client() -> Result<kube::Client, kube::Error> {
    let mut cfg = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    cfg.connect_timeout = Some(std::time::Duration::from_secs(10));
    cfg.write_timeout = Some(std::time::Duration::from_secs(30));
    cfg.read_timeout = Some(std::time::Duration::from_secs(295));
    kube::Client::try_from(cfg)
}

/// Prefix of each agent's heartbeat Lease (`kube-dvr-agent-<node>`).
pub const AGENT_LEASE_PREFIX: &str = "kube-dvr-agent-";
/// An agent whose heartbeat is older than this is unhealthy: its node gets
/// no new SNAT gateways and loses the ones it has.
pub const AGENT_HEARTBEAT_TIMEOUT_SECS: i64 = 30;

/// The resolver's endpoints, from kube-dvr's own Port records (never from
/// anything a tenant writes, such as a pod's network-status annotation):
/// one [`PodInfo`] per pod with the Ports it holds. Ports whose address or
/// MAC does not parse are skipped (the schema refuses them; a Port is
/// written only by kube-dvr). A VM's Port is an endpoint of its active
/// binding's pod and node only ([`Port::active_binding`]): during a live
/// migration two pods carry its MAC, and traffic goes to one.
pub fn port_infos<'a>(ports: impl IntoIterator<Item = &'a Port>) -> Vec<PodInfo> {
    let mut by_pod: BTreeMap<(String, String), PodInfo> = BTreeMap::new();
    for port in ports {
        let ns = port.metadata.namespace.clone().unwrap_or_default();
        let s = &port.spec;
        let (Ok(ip), Ok(mac)) = (s.ip.parse::<Ipv4Addr>(), s.mac.parse()) else {
            continue;
        };
        // A VM's Port is where its active binding is (unbound, nowhere);
        // its other bindings are standby.
        let bindings = port.bindings();
        let Some(active) = port.active_index(&bindings) else {
            continue;
        };
        for (i, b) in bindings.into_iter().enumerate() {
            let standby = i != active;
            let info = by_pod
                .entry((ns.clone(), b.pod.clone()))
                .or_insert_with(|| PodInfo {
                    namespace: ns.clone(),
                    name: b.pod,
                    node: Some(b.node),
                    networks: Vec::new(),
                });
            info.networks.push(PodNetwork {
                network: s.network.clone(),
                interface: Some(b.interface),
                ip,
                mac,
                standby,
            });
        }
    }
    by_pod.into_values().collect()
}

/// The node as the resolver sees it: labels, published VTEP, and whether it
/// is healthy (kubelet says Ready and, where known, its agent heartbeats).
pub fn node_info(node: &Node, agent_alive: Option<bool>) -> NodeInfo {
    let ann = node.metadata.annotations.as_ref();
    let vtep = ann
        .and_then(|a| a.get(VTEP_ANNOTATION))
        .and_then(|v| v.parse::<Ipv4Addr>().ok());
    let kubelet_ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    // A comma-separated annotation as a set (absent: empty).
    let list = |key: &str| -> BTreeSet<String> {
        (ann.and_then(|a| a.get(key)).into_iter())
            .flat_map(|v| v.split(','))
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect()
    };
    let serving = list(SNAT_SERVING_ANNOTATION);
    NodeInfo {
        lb_down: list(LB_DOWN_ANNOTATION),
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        vtep,
        ready: kubelet_ready && agent_alive.unwrap_or(true),
        serving,
    }
}

/// A stable digest of a node plan (FNV-1a 64 over its canonical JSON: the
/// plan is made of ordered maps and sets, so equal plans serialize equally).
pub fn plan_digest(plan: &NodeState) -> String {
    let json = serde_json::to_vec(plan).expect("a node plan serializes");
    let mut h: u64 = 0xcbf29ce484222325;
    for b in json {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Read an annotation.
pub fn annotation<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Node name → the digest its agent reports as programmed.
pub fn programmed_digests<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
) -> BTreeMap<String, String> {
    nodes
        .into_iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.clone()?,
                annotation(&n.metadata, PROGRAMMED_ANNOTATION)?.to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::NsState;

    #[test]
    fn digest_is_stable_and_sensitive() {
        let mut a = NodeState::default();
        let d0 = plan_digest(&a);
        assert_eq!(d0, plan_digest(&a.clone()));
        a.namespaces
            .insert("qrouter-x.y".into(), NsState::default());
        assert_ne!(d0, plan_digest(&a));
    }

    #[test]
    fn port_infos_group_ports_by_pod() {
        let port = |name: &str, pod: &str, ip: &str| -> Port {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "t"},
                "spec": {"router": "r", "subnet": "a", "network": "t/net-a", "ip": ip,
                    "mac": "02:00:00:00:00:05", "node": "n1", "pod": pod,
                    "containerId": "c", "interface": "net1"}
            }))
            .unwrap()
        };
        let ports = [
            port("r.a.10.0.0.5", "p", "10.0.0.5"),
            port("r.a.10.0.0.6", "p", "10.0.0.6"),
            port("r.a.10.0.0.7", "q", "10.0.0.7"),
            port("bad", "q", "not-an-ip"),
        ];
        let infos = port_infos(&ports);
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].name, "p");
        assert_eq!(infos[0].node.as_deref(), Some("n1"));
        assert_eq!(infos[0].networks.len(), 2);
        assert_eq!(infos[0].networks[0].network, "t/net-a");
        assert_eq!(infos[1].networks.len(), 1);
    }

    #[test]
    fn a_vm_port_is_where_its_active_binding_is() {
        let vm_port = |bindings: &[(&str, &str)], active: Option<&str>| -> Port {
            let bindings: Vec<_> = bindings
                .iter()
                .map(|(node, pod)| {
                    serde_json::json!({"node": node, "pod": pod,
                    "containerId": format!("c-{pod}"), "interface": "net1"})
                })
                .collect();
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "r.a.10.0.0.9", "namespace": "t"},
                "spec": {"router": "r", "subnet": "a", "network": "t/net-a", "ip": "10.0.0.9",
                    "mac": "02:00:00:00:00:09", "vm": "vm1"},
                "status": {"bindings": bindings, "activeNode": active}
            }))
            .unwrap()
        };
        // The active binding; every other one is standby.
        let at = |p: &Port| {
            let infos = port_infos([p]);
            let (active, standby): (Vec<_>, Vec<_>) =
                infos.iter().partition(|i| !i.networks[0].standby);
            assert!(active.len() <= 1, "{infos:?}");
            assert_eq!(active.len() + standby.len(), p.bindings().len());
            active
                .first()
                .map(|i| (i.name.clone(), i.node.clone().unwrap()))
        };
        let pair = |pod: &str, node: &str| Some((pod.to_string(), node.to_string()));
        let migrating = [("n1", "launcher-a"), ("n2", "launcher-b")];
        assert_eq!(at(&vm_port(&migrating, None)), pair("launcher-a", "n1"));
        assert_eq!(
            at(&vm_port(&migrating, Some("n2"))),
            pair("launcher-b", "n2")
        );
        assert_eq!(
            at(&vm_port(&migrating, Some("n3"))),
            pair("launcher-a", "n1"),
            "an active node without a binding: the first"
        );
        assert_eq!(at(&vm_port(&[], Some("n1"))), None, "unbound: no endpoint");
    }

    #[test]
    fn node_info_needs_kubelet_ready_and_a_live_agent() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"a": "b"}, "annotations": {VTEP_ANNOTATION: "198.18.0.1"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let i = node_info(&node, Some(true));
        assert_eq!(i.vtep, Some("198.18.0.1".parse().unwrap()));
        assert!(i.ready);
        assert!(!node_info(&node, Some(false)).ready);
    }
}

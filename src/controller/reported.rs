//! What a controller pass needs of each kind ([`Reported`]): one impl per
//! kind of the [registry](crate::api::kinds). The pass itself
//! ([`compute`](super::compute)) iterates the registry and names no kind.
use super::ProgrammedParts;
use crate::api::{
    DistributedRouter, DvrKind, ExternalNetwork, FloatingIP, LoadBalancer, PortForwarding,
    RouterFirewall, SnatGateway,
};
use crate::plan::resolve::Resolution;
use crate::plan::view::ObjectKey;

/// A kind the controller writes the status of.
pub(crate) trait Reported: DvrKind {
    /// The resolver's desired status of `o` (None: not resolved).
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status>;
    /// The parts of a desired status `Programmed` is computed from and
    /// written to; None for a kind that is not programmed on nodes.
    fn programmed(st: &mut Self::Status) -> Option<ProgrammedParts<'_>>;
    /// The nodes that, as a (deleted) object's status records, hold its
    /// state: its finalizer waits for them.
    fn held_by(st: Self::Status) -> Vec<String>;
}

fn key_of<K: DvrKind>(o: &K) -> ObjectKey {
    let m = o.meta();
    ObjectKey::new(
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

impl Reported for ExternalNetwork {
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status> {
        let name = o.metadata.name.as_deref().unwrap_or("");
        res.external_networks.get(name).cloned()
    }
    fn programmed(_: &mut Self::Status) -> Option<ProgrammedParts<'_>> {
        None
    }
    fn held_by(st: Self::Status) -> Vec<String> {
        st.node_ports.into_iter().map(|p| p.node).collect()
    }
}

impl Reported for DistributedRouter {
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status> {
        res.routers.get(&key_of(o)).cloned()
    }
    fn programmed(st: &mut Self::Status) -> Option<ProgrammedParts<'_>> {
        Some(ProgrammedParts {
            conditions: &mut st.conditions,
            nodes: st.nodes.clone(),
            programmed_nodes: Some(&mut st.programmed_nodes),
        })
    }
    fn held_by(st: Self::Status) -> Vec<String> {
        st.nodes.into_iter().chain(st.programmed_nodes).collect()
    }
}

impl Reported for FloatingIP {
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status> {
        res.floating_ips.get(&key_of(o)).cloned()
    }
    fn programmed(st: &mut Self::Status) -> Option<ProgrammedParts<'_>> {
        Some(ProgrammedParts {
            nodes: st.node.iter().cloned().collect(),
            conditions: &mut st.conditions,
            programmed_nodes: None,
        })
    }
    fn held_by(st: Self::Status) -> Vec<String> {
        st.node.into_iter().collect()
    }
}

impl Reported for SnatGateway {
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status> {
        res.snat_gateways.get(&key_of(o)).cloned()
    }
    fn programmed(st: &mut Self::Status) -> Option<ProgrammedParts<'_>> {
        // The active node and every eligible standby: a standby not
        // programmed is not warm.
        let mut nodes: Vec<String> = st.active_node.iter().cloned().collect();
        nodes.extend(
            st.candidates
                .iter()
                .filter(|c| c.ineligible_since.is_none())
                .map(|c| c.node.clone())
                .filter(|n| st.active_node.as_ref() != Some(n)),
        );
        Some(ProgrammedParts {
            nodes,
            conditions: &mut st.conditions,
            programmed_nodes: None,
        })
    }
    fn held_by(st: Self::Status) -> Vec<String> {
        let mut nodes: Vec<String> = st.active_node.into_iter().collect();
        nodes.extend(st.candidates.into_iter().map(|c| c.node));
        nodes.sort();
        nodes.dedup();
        nodes
    }
}

impl Reported for RouterFirewall {
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status> {
        res.firewalls.get(&key_of(o)).cloned()
    }
    fn programmed(st: &mut Self::Status) -> Option<ProgrammedParts<'_>> {
        Some(ProgrammedParts {
            nodes: st.nodes.clone(),
            conditions: &mut st.conditions,
            programmed_nodes: None,
        })
    }
    fn held_by(st: Self::Status) -> Vec<String> {
        st.nodes
    }
}

/// A kind served on one node, `status.node` (the gateway's serving node for
/// forwardings and balancers).
fn on_node<'s>(
    node: &Option<String>,
    conditions: &'s mut Vec<crate::api::Condition>,
) -> ProgrammedParts<'s> {
    ProgrammedParts {
        nodes: node.iter().cloned().collect(),
        conditions,
        programmed_nodes: None,
    }
}

impl Reported for PortForwarding {
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status> {
        res.port_forwardings.get(&key_of(o)).cloned()
    }
    fn programmed(st: &mut Self::Status) -> Option<ProgrammedParts<'_>> {
        Some(on_node(&st.node, &mut st.conditions))
    }
    fn held_by(st: Self::Status) -> Vec<String> {
        st.node.into_iter().collect()
    }
}

impl Reported for LoadBalancer {
    fn desired(res: &Resolution, o: &Self) -> Option<Self::Status> {
        res.load_balancers.get(&key_of(o)).cloned()
    }
    fn programmed(st: &mut Self::Status) -> Option<ProgrammedParts<'_>> {
        Some(on_node(&st.node, &mut st.conditions))
    }
    fn held_by(st: Self::Status) -> Vec<String> {
        st.node.into_iter().collect()
    }
}

//! ExternalNetworks: validation, node attachment, `fg-` port allocation.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::conds::{fail, order_of, Check, CondSet, Fail, Order};
use super::pools::{is_host, parse_cidr, parse_entry, parse_ip, Pool, Span};
use super::{selector, Cluster};
use crate::api::conditions::{ALLOCATED, VALID};
use crate::api::{ExternalNetwork, ExternalNetworkStatus, NodePortStatus};
use crate::plan::names;
use crate::plan::view::{Attachment, ExternalView};

/// The parsed spec of a valid external network.
#[derive(Debug)]
pub(super) struct ExtSpec {
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub floating: Pool,
    pub snat: Pool,
    pub node_ports: Pool,
    pub attachment: Attachment,
}

/// One external network, resolved.
pub(super) struct ExtState<'a> {
    pub obj: &'a ExternalNetwork,
    pub name: String,
    /// `Ok` iff `spec` is Some.
    pub valid: Check,
    pub spec: Option<ExtSpec>,
    /// Nodes with a VTEP, Ready, matching the node selector.
    pub attached: BTreeSet<String>,
    /// `fg-` addresses by node (kept and new).
    pub node_ports: BTreeMap<String, Ipv4Addr>,
    pub allocated: Check,
    /// Addresses held from the floating / snat pools (set by the
    /// north-south step).
    pub floating_used: u32,
    pub snat_used: u32,
}

impl ExtState<'_> {
    /// Whether `namespace` may use this network.
    pub fn allows(&self, namespace: &str) -> bool {
        let allowed = &self.obj.spec.allowed_namespaces;
        allowed.is_empty() || allowed.iter().any(|n| n == namespace)
    }

    pub fn view(&self, cluster: &Cluster) -> Option<ExternalView> {
        let spec = self.spec.as_ref()?;
        Some(ExternalView {
            name: self.name.clone(),
            cidr: spec.cidr,
            gateway: spec.gateway,
            attachment: spec.attachment.clone(),
            // Kept ports of NotReady nodes stay: their floating IPs keep
            // working as long as the node forwards.
            node_ports: self
                .node_ports
                .iter()
                .filter(|(n, _)| cluster.vtep(n).is_some())
                .map(|(n, a)| (n.clone(), *a))
                .collect(),
        })
    }

    pub fn status(&self, now: Timestamp) -> ExternalNetworkStatus {
        let old = self.obj.status.clone().unwrap_or_default();
        let generation = self.obj.metadata.generation;
        let mut c = CondSet::new(&old.conditions, generation, now);
        c.put(VALID, &self.valid, "Valid");
        c.put(ALLOCATED, &self.allocated, "Allocated");
        c.ready(&[&self.valid, &self.allocated]);
        let valid = self.spec.is_some();
        ExternalNetworkStatus {
            observed_generation: generation,
            conditions: c.finish(),
            node_ports: self
                .node_ports
                .iter()
                .map(|(node, addr)| NodePortStatus {
                    node: node.clone(),
                    address: addr.to_string(),
                    mac: Some(names::external_mac(*addr).to_string()),
                })
                .collect(),
            floating_allocated: valid.then_some(self.floating_used),
            snat_allocated: valid.then_some(self.snat_used),
        }
    }
}

/// Validate every external network and allocate `fg-` ports.
pub(super) fn resolve<'a>(cluster: &Cluster<'a>) -> BTreeMap<String, ExtState<'a>> {
    let mut out = BTreeMap::new();
    for obj in &cluster.input.external_networks {
        let name = obj.name_any();
        let parsed = validate(obj);
        let (valid, spec) = match parsed {
            Ok(s) => (Ok(()), Some(s)),
            Err(f) => (Err(f), None),
        };
        let st = ExtState {
            obj,
            name: name.clone(),
            valid,
            spec,
            attached: BTreeSet::new(),
            node_ports: BTreeMap::new(),
            allocated: Err(fail(
                "InvalidSpec",
                "nothing is allocated while Valid is False",
            )),
            floating_used: 0,
            snat_used: 0,
        };
        out.insert(name, st);
    }
    refuse_hash_collisions(&mut out);
    for st in out.values_mut().filter(|st| st.spec.is_some()) {
        allocate_node_ports(cluster, st);
    }
    out
}

/// Kernel names of an external network (`fip-`, `fg-`, `fgb-`) carry the
/// 32-bit hash of its name, never the name (up to 253 bytes). Two valid
/// networks whose names hash alike would share them: the older one (then
/// the first by name) keeps them, every other is invalid with reason
/// `NameHashCollision` and is not programmed anywhere.
fn refuse_hash_collisions(nets: &mut BTreeMap<String, ExtState>) {
    let mut by_hash: BTreeMap<u32, Vec<(Order, String)>> = BTreeMap::new();
    for st in nets.values().filter(|st| st.spec.is_some()) {
        by_hash
            .entry(names::fnv32(&st.name))
            .or_default()
            .push((order_of(&st.obj.metadata), st.name.clone()));
    }
    for (hash, mut group) in by_hash.into_iter().filter(|(_, g)| g.len() > 1) {
        group.sort();
        let keeper = group[0].1.clone();
        for (_, name) in &group[1..] {
            let st = nets.get_mut(name).expect("grouped from the map");
            st.spec = None;
            st.valid = Err(fail(
                "NameHashCollision",
                format!(
                    "the name hashes to {hash:08x}, as ExternalNetwork {keeper} does; kernel names (fip-{hash:08x}, fg-{hash:08x}) are taken by it: use another name"
                ),
            ));
        }
    }
}

fn validate(obj: &ExternalNetwork) -> Result<ExtSpec, Fail> {
    let spec = &obj.spec;
    let cidr = parse_cidr("cidr", &spec.cidr).map_err(|m| fail("InvalidCIDR", m))?;
    if cidr.prefix_len() > 30 {
        return Err(fail(
            "InvalidCIDR",
            format!("cidr {cidr} is too small: use a prefix length of at most 30"),
        ));
    }
    let gateway = parse_ip("gateway", &spec.gateway).map_err(|m| fail("InvalidGateway", m))?;
    if !is_host(cidr, gateway) {
        return Err(fail(
            "GatewayOutsideCIDR",
            format!("gateway {gateway} is not a host address of cidr {cidr}"),
        ));
    }
    let reserved: BTreeSet<u32> = [cidr.network(), cidr.broadcast(), gateway]
        .into_iter()
        .map(u32::from)
        .collect();
    let mut all: Vec<(Span, &str, String)> = Vec::new();
    let mut pool = |which: &'static str, entries: &[String]| -> Result<Pool, Fail> {
        let mut p = Pool {
            text: entries.to_vec(),
            reserved: reserved.clone(),
            ..Pool::default()
        };
        for e in entries {
            let span =
                parse_entry(e).map_err(|m| fail("InvalidPool", format!("pools.{which}: {m}")))?;
            let (lo, hi) = span;
            let (clo, chi) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
            if lo < clo || hi > chi {
                return Err(fail(
                    "PoolOutsideCIDR",
                    format!("pools.{which} entry {e} is not inside cidr {cidr}"),
                ));
            }
            if lo <= u32::from(gateway) && u32::from(gateway) <= hi {
                return Err(fail(
                    "PoolContainsGateway",
                    format!("pools.{which} entry {e} contains the gateway {gateway}"),
                ));
            }
            p.spans.push(span);
            all.push((span, which, e.clone()));
        }
        p.spans.sort();
        Ok(p)
    };
    let floating = pool("floating", &spec.pools.floating)?;
    let snat = pool("snat", &spec.pools.snat)?;
    let node_ports = pool("nodePorts", &spec.pools.node_ports)?;
    all.sort();
    for w in all.windows(2) {
        let ((_, a_hi), a_pool, a) = &w[0];
        let ((b_lo, _), b_pool, b) = &w[1];
        if b_lo <= a_hi {
            return Err(fail(
                "OverlappingPools",
                format!("pools.{a_pool} entry {a} overlaps pools.{b_pool} entry {b}"),
            ));
        }
    }
    let attachment = match (&spec.attachment.bridge, &spec.attachment.interface) {
        (Some(b), None) => Attachment::Bridge(b.clone()),
        (None, Some(i)) => Attachment::Interface(i.clone()),
        _ => {
            return Err(fail(
                "InvalidAttachment",
                "set exactly one of attachment.bridge and attachment.interface",
            ))
        }
    };
    if let Some(sel) = &spec.node_selector {
        selector::validate(sel).map_err(|m| fail("InvalidNodeSelector", m))?;
    }
    Ok(ExtSpec {
        cidr,
        gateway,
        floating,
        snat,
        node_ports,
        attachment,
    })
}

/// Keep the `fg-` addresses of nodes that still exist and match the
/// selector (even while NotReady or without a VTEP: no churn on a flap);
/// allocate for attached nodes that have none, in node-name order.
fn allocate_node_ports(cluster: &Cluster, st: &mut ExtState) {
    let spec = st.spec.as_ref().expect("valid");
    let sel = st.obj.spec.node_selector.as_ref();
    let matching = |node: &str| {
        cluster
            .nodes
            .get(node)
            .is_some_and(|n| selector::matches(sel, &n.labels).unwrap_or(false))
    };
    st.attached = cluster
        .nodes
        .values()
        .filter(|n| n.ready && n.vtep.is_some() && matching(&n.name))
        .map(|n| n.name.clone())
        .collect();

    let mut used = BTreeSet::new();
    let mut kept: Vec<(&str, Ipv4Addr)> = st
        .obj
        .status
        .iter()
        .flat_map(|s| &s.node_ports)
        .filter_map(|p| Some((p.node.as_str(), p.address.parse().ok()?)))
        .collect();
    kept.sort();
    for (node, addr) in kept {
        if matching(node)
            && spec.node_ports.contains(addr)
            && !st.node_ports.contains_key(node)
            && used.insert(addr)
        {
            st.node_ports.insert(node.to_string(), addr);
        }
    }
    let mut starved = Vec::new();
    for node in &st.attached {
        if st.node_ports.contains_key(node) {
            continue;
        }
        match spec.node_ports.lowest_free(&used) {
            Some(a) => {
                used.insert(a);
                st.node_ports.insert(node.clone(), a);
            }
            None => starved.push(node.as_str()),
        }
    }
    st.allocated = if starved.is_empty() {
        Ok(())
    } else {
        Err(fail(
            "PoolExhausted",
            format!(
                "the nodePorts pool ({}) has no free address for node(s) {}: floating IPs on them cannot be served; enlarge pools.nodePorts",
                spec.node_ports.describe(),
                starved.join(", ")
            ),
        ))
    };
}

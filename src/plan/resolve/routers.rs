//! DistributedRouters: validation, index and VNI allocation, endpoints.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::conds::{fail, order_of, Check, CondSet, Fail, Order};
use super::external::ExtState;
use super::held::{next_fit, Cursors, Held};
use super::pools::{is_host, parse_cidr, parse_ip};
use super::{nad_namespace, qualify, Cluster, ENDPOINTS_RESOLVED, NETWORK_ATTACHMENTS};
use crate::api::conditions::{ALLOCATED, CROSS_NAMESPACE_ATTACHMENT, VALID};
use crate::api::{DistributedRouter, DistributedRouterStatus, SubnetStatus};
use crate::plan::names;
use crate::plan::view::{EndpointView, ObjectKey, RouterView, SubnetView};

/// Router indexes: `[0, MAX_ROUTERS)`, bounded by the link-local pool.
pub(super) const MAX_ROUTERS: u32 = 8192;
/// VNIs below this are left to other users of VXLAN.
pub(super) const VNI_MIN: u32 = 4096;
pub(super) const VNI_MAX: u32 = (1 << 24) - 1;
/// How many conflicts a message lists before "and N more".
const MAX_LISTED: usize = 5;

/// A validated subnet.
#[derive(Clone, Debug)]
pub(super) struct Subnet {
    pub name: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// `namespace/name` of the NetworkAttachmentDefinition.
    pub nad: String,
}

/// One router, resolved.
pub(super) struct RouterState<'a> {
    pub obj: &'a DistributedRouter,
    pub key: ObjectKey,
    pub order: Order,
    pub valid: Check,
    /// Validated subnets (empty unless valid).
    pub subnets: Vec<Subnet>,
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub index: Option<u32>,
    /// VNI by subnet name.
    pub vnis: BTreeMap<String, u32>,
    pub allocated: Check,
    /// Endpoint conflicts (duplicate IPs), as sentences.
    pub conflicts: Vec<String>,
    /// Present iff valid and allocated.
    pub view: Option<RouterView>,
}

impl RouterState<'_> {
    /// Why the router is not usable by floating IPs / SNAT, if it is not.
    pub fn not_ready(&self) -> Option<&Fail> {
        self.valid.as_ref().err().or(self.allocated.as_ref().err())
    }

    /// The subnet of the router containing `ip`.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.cidr.contains(&ip))
    }

    pub fn status(
        &self,
        snat_nodes: &[String],
        nad_conflicts: &BTreeSet<String>,
        now: Timestamp,
    ) -> DistributedRouterStatus {
        let old = self.obj.status.clone().unwrap_or_default();
        let generation = self.obj.metadata.generation;
        let mut c = CondSet::new(&old.conditions, generation, now);
        c.put(VALID, &self.valid, "Valid");
        c.put(ALLOCATED, &self.allocated, "Allocated");
        c.ready(&[&self.valid, &self.allocated]);
        let mut nodes = BTreeSet::new();
        if let Some(v) = &self.view {
            let resolved = if self.conflicts.is_empty() {
                Ok(())
            } else {
                Err(fail("DuplicateEndpointIP", list(&self.conflicts)))
            };
            c.put(ENDPOINTS_RESOLVED, &resolved, "Resolved");
            let taken: Vec<String> = self
                .subnets
                .iter()
                .filter(|s| nad_conflicts.contains(&s.nad))
                .map(|s| {
                    format!(
                        "subnet {:?}: NetworkAttachmentDefinition {} exists and is not kube-dvr's \
                         (or another router's); it is left alone",
                        s.name, s.nad
                    )
                })
                .collect();
            let attach = if taken.is_empty() {
                Ok(())
            } else {
                Err(fail("NetworkAttachmentConflict", list(&taken)))
            };
            c.put(NETWORK_ATTACHMENTS, &attach, "Owned");
            nodes.extend(v.endpoints.iter().map(|e| e.node.clone()));
            nodes.extend(snat_nodes.iter().cloned());
        }
        // Persisted allocations in spec order (also of an invalid router:
        // they stay reserved until it is fixed or deleted).
        let mut seen = BTreeSet::new();
        let subnets = self
            .obj
            .spec
            .subnets
            .iter()
            .filter(|s| seen.insert(s.name.as_str()))
            .filter_map(|s| {
                let vni = *self.vnis.get(&s.name)?;
                Some(SubnetStatus {
                    name: s.name.clone(),
                    vni,
                    gateway_mac: names::gateway_mac(vni).to_string(),
                    cidr: s.cidr.clone(),
                })
            })
            .collect();
        DistributedRouterStatus {
            observed_generation: generation,
            conditions: c.finish(),
            subnets,
            index: self.index,
            link_local: self.index.and_then(link_local_cidr),
            nodes: nodes.into_iter().collect(),
            // Reported by agents through the controller: passed through.
            programmed_nodes: old.programmed_nodes,
        }
    }
}

/// `a; b; c and 2 more`.
pub(super) fn list(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > MAX_LISTED {
        s.push_str(&format!("; and {} more", items.len() - MAX_LISTED));
    }
    s
}

fn link_local_cidr(index: u32) -> Option<String> {
    names::link_local(index).map(|(a, _)| format!("{a}/31"))
}

/// Validate, allocate and resolve endpoints for every router; the result is
/// sorted by precedence.
pub(super) fn resolve<'a>(
    cluster: &Cluster<'a>,
    exts: &BTreeMap<String, ExtState>,
) -> (Vec<RouterState<'a>>, Cursors) {
    let mut states: Vec<RouterState> = cluster
        .input
        .routers
        .iter()
        .map(|obj| {
            let key = ObjectKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
            let (valid, subnets, routes) = match validate(obj, &key, exts) {
                Ok((s, r)) => (Ok(()), s, r),
                Err(f) => (Err(f), vec![], vec![]),
            };
            RouterState {
                obj,
                order: order_of(&obj.metadata),
                key,
                valid,
                subnets,
                routes,
                index: None,
                vnis: BTreeMap::new(),
                allocated: Err(fail(
                    "InvalidSpec",
                    "nothing new is allocated while Valid is False",
                )),
                conflicts: vec![],
                view: None,
            }
        })
        .collect();
    states.sort_by(|a, b| a.order.cmp(&b.order));
    let cursors = allocate(&mut states, &cluster.input.held, cluster.input.cursors);
    for st in states.iter_mut() {
        if st.valid.is_ok() && st.allocated.is_ok() {
            resolve_endpoints(cluster, st);
        }
    }
    (states, cursors)
}

type Validated = (Vec<Subnet>, Vec<(Ipv4Net, Ipv4Addr)>);

fn validate(
    obj: &DistributedRouter,
    key: &ObjectKey,
    exts: &BTreeMap<String, ExtState>,
) -> Result<Validated, Fail> {
    let mut subnets: Vec<Subnet> = Vec::new();
    for s in &obj.spec.subnets {
        let what = format!("subnet {:?}: cidr", s.name);
        let cidr = parse_cidr(&what, &s.cidr).map_err(|m| fail("InvalidCIDR", m))?;
        if cidr.prefix_len() > 30 {
            return Err(fail(
                "InvalidCIDR",
                format!(
                    "subnet {:?}: cidr {cidr} is too small, use a prefix length of at most 30",
                    s.name
                ),
            ));
        }
        let gw = parse_ip(&format!("subnet {:?}: gateway", s.name), &s.gateway)
            .map_err(|m| fail("InvalidGateway", m))?;
        if !is_host(cidr, gw) {
            return Err(fail(
                "GatewayOutsideCIDR",
                format!(
                    "subnet {:?}: gateway {gw} is not a host address of {cidr}",
                    s.name
                ),
            ));
        }
        if let Some(prev) = subnets.iter().find(|p| p.name == s.name) {
            return Err(fail(
                "DuplicateSubnetName",
                format!(
                    "two subnets are named {:?} ({} and {cidr}): names must be unique",
                    prev.name, prev.cidr
                ),
            ));
        }
        if let Some(prev) = subnets
            .iter()
            .find(|p| p.cidr.contains(&cidr.network()) || cidr.contains(&p.cidr.network()))
        {
            return Err(fail(
                "OverlappingSubnets",
                format!(
                    "subnet {:?} ({cidr}) overlaps subnet {:?} ({})",
                    s.name, prev.name, prev.cidr
                ),
            ));
        }
        // Another namespace's NAD would make its pods this router's
        // endpoints (and name them in this router's status).
        let nad = qualify(&key.namespace, &s.network_attachment);
        if nad_namespace(&nad) != key.namespace {
            return Err(fail(
                CROSS_NAMESPACE_ATTACHMENT,
                format!(
                    "subnet {:?}: networkAttachment {:?} is in another namespace; a router may only use NetworkAttachmentDefinitions of its own namespace {:?}",
                    s.name, s.network_attachment, key.namespace
                ),
            ));
        }
        subnets.push(Subnet {
            name: s.name.clone(),
            cidr,
            gateway: gw,
            nad,
        });
    }
    let mut routes = Vec::new();
    for r in &obj.spec.routes {
        let dst =
            parse_cidr("route destination", &r.destination).map_err(|m| fail("InvalidRoute", m))?;
        let via = parse_ip("route nexthop", &r.nexthop).map_err(|m| fail("InvalidRoute", m))?;
        if !subnets.iter().any(|s| is_host(s.cidr, via)) {
            return Err(fail(
                "NexthopNotOnSubnet",
                format!("route to {dst}: nexthop {via} is not a host address on any of the router's subnets"),
            ));
        }
        routes.push((dst, via));
    }
    if let Some(ext) = &obj.spec.external_network {
        let Some(e) = exts.get(ext) else {
            return Err(fail(
                "ExternalNetworkNotFound",
                format!("ExternalNetwork {ext:?} does not exist"),
            ));
        };
        if !e.allows(&key.namespace) {
            return Err(fail(
                "NamespaceNotAllowed",
                format!(
                    "ExternalNetwork {ext:?} does not allow namespace {:?} (allowedNamespaces: {})",
                    key.namespace,
                    e.obj.spec.allowed_namespaces.join(", ")
                ),
            ));
        }
    }
    Ok((subnets, routes))
}

/// Pass 1: every router (valid or not) keeps the index and VNIs its status
/// holds, if in range and not claimed by a router earlier in precedence.
/// Values `held` by routers being deleted are not free either.
/// Pass 2: valid routers get what is missing, next-fit from `cursors`
/// ([`held`](super::held)); without cursors (nothing persisted yet) from
/// just above the highest value in use. Returns the advanced cursors.
fn allocate(states: &mut [RouterState], held: &Held, cursors: Option<Cursors>) -> Cursors {
    let mut used_idx = BTreeSet::new();
    let mut used_vni = BTreeSet::new();
    for st in states.iter_mut() {
        let Some(status) = &st.obj.status else {
            continue;
        };
        if let Some(i) = status.index.filter(|i| *i < MAX_ROUTERS) {
            if used_idx.insert(i) {
                st.index = Some(i);
            }
        }
        for s in &status.subnets {
            let in_spec = st.obj.spec.subnets.iter().any(|x| x.name == s.name);
            if in_spec
                && !st.vnis.contains_key(&s.name)
                && (VNI_MIN..=VNI_MAX).contains(&s.vni)
                && used_vni.insert(s.vni)
            {
                st.vnis.insert(s.name.clone(), s.vni);
            }
        }
    }
    used_idx.extend(&held.router_indexes);
    used_vni.extend(&held.vnis);
    let mut cursors = cursors.unwrap_or_else(|| Cursors {
        router_index: used_idx.last().map_or(0, |i| i + 1),
        vni: used_vni.last().map_or(VNI_MIN, |v| v + 1),
    });
    // An invalid router gets nothing new; it is Allocated if it already
    // holds everything.
    for st in states.iter_mut().filter(|s| s.valid.is_err()) {
        let complete = st.index.is_some()
            && st
                .obj
                .spec
                .subnets
                .iter()
                .all(|s| st.vnis.contains_key(&s.name));
        if complete {
            st.allocated = Ok(());
        }
    }
    for st in states.iter_mut().filter(|s| s.valid.is_ok()) {
        let mut missing = Vec::new();
        if st.index.is_none() {
            match next_fit(&used_idx, &mut cursors.router_index, 0, MAX_ROUTERS - 1) {
                Some(i) => {
                    used_idx.insert(i);
                    st.index = Some(i);
                }
                None => missing.push(format!(
                    "no free router index (at most {MAX_ROUTERS} routers)"
                )),
            }
        }
        for s in &st.subnets {
            if st.vnis.contains_key(&s.name) {
                continue;
            }
            match next_fit(&used_vni, &mut cursors.vni, VNI_MIN, VNI_MAX) {
                Some(v) => {
                    used_vni.insert(v);
                    st.vnis.insert(s.name.clone(), v);
                }
                None => missing.push(format!(
                    "no free VNI for subnet {:?} (range {VNI_MIN}-{VNI_MAX})",
                    s.name
                )),
            }
        }
        st.allocated = if missing.is_empty() {
            Ok(())
        } else {
            let reason = if st.index.is_none() {
                "IndexExhausted"
            } else {
                "VniExhausted"
            };
            Err(fail(reason, list(&missing)))
        };
    }
    cursors
}

/// Endpoints: every pod network entry whose network is a subnet's NAD and
/// whose IP is a host address of that subnet, on a node with a VTEP. The
/// first claimant of an IP (pods by namespace/name) keeps it; the gateway
/// address is never an endpoint.
fn resolve_endpoints(cluster: &Cluster, st: &mut RouterState) {
    let mut endpoints: Vec<EndpointView> = Vec::new();
    let mut owner: BTreeMap<(&str, Ipv4Addr), String> = BTreeMap::new();
    for s in &st.subnets {
        owner.insert((s.name.as_str(), s.gateway), "the router's gateway".into());
    }
    let mut conflicts = Vec::new();
    let mut standby = Vec::new();
    for s in &st.subnets {
        for (pod, node, net) in cluster.by_nad.get(&s.nad).into_iter().flatten() {
            if !is_host(s.cidr, net.ip) {
                continue;
            }
            if net.standby {
                standby.push(EndpointView {
                    subnet: s.name.clone(),
                    ip: net.ip,
                    mac: net.mac,
                    node: node.to_string(),
                });
                continue;
            }
            let who = format!("pod {}/{}", pod.namespace, pod.name);
            if let Some(first) = owner.get(&(s.name.as_str(), net.ip)) {
                conflicts.push(format!(
                    "{} on subnet {:?} is used by {first} and {who}; only the first is routed",
                    net.ip, s.name
                ));
                continue;
            }
            owner.insert((s.name.as_str(), net.ip), who);
            endpoints.push(EndpointView {
                subnet: s.name.clone(),
                ip: net.ip,
                mac: net.mac,
                node: node.to_string(),
            });
        }
    }
    endpoints.sort();
    standby.sort();
    st.conflicts = conflicts;
    st.view = Some(RouterView {
        key: st.key.clone(),
        index: st.index.expect("allocated"),
        subnets: st
            .subnets
            .iter()
            .map(|s| SubnetView {
                name: s.name.clone(),
                cidr: s.cidr,
                gateway: s.gateway,
                vni: st.vnis[&s.name],
            })
            .collect(),
        routes: st.routes.clone(),
        endpoints,
        standby,
    });
}

//! SnatGateways: one per router, an address from the snat pool, an `sg-`
//! port per router subnet, and an active node with failover.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::addresses::{Kind, Request};
use super::conds::{fail, order_of, Check, CondSet, Fail, Order};
use super::external::ExtState;
use super::floating::{
    also, check_requested, external_of, find_router, router_exists, router_ready, status_addr,
};
use super::pools::{highest_free_host, is_host};
use super::routers::RouterState;
use super::{selector, Cluster, Resolution};
use crate::api::conditions::{ALLOCATED, SCHEDULED, VALID};
use crate::api::{
    SnatCandidateStatus, SnatGateway, SnatGatewayStatus, SnatPortStatus, MAX_CANDIDATES,
};
use crate::plan::names;
use crate::plan::view::{ObjectKey, SnatPort, SnatView};

pub(super) struct SnatState<'a> {
    obj: &'a SnatGateway,
    key: ObjectKey,
    order: Order,
    router: Option<usize>,
    valid: Check,
    /// Another SnatGateway of the same router came first.
    duplicate: bool,
    ext: Result<String, Fail>,
    requested: Result<Option<Ipv4Addr>, Fail>,
    /// `Some` once allocation was attempted.
    pub(super) address: Option<Result<Ipv4Addr, Fail>>,
    ports: Option<Result<Vec<SnatPort>, Fail>>,
    scheduled: Check,
    pub(super) node: Option<String>,
    /// `node` first, then the warm standbys.
    candidates: Vec<SnatCandidateStatus>,
    pub(super) view: Option<SnatView>,
}

/// How long a candidate may stay ineligible before it is replaced: long
/// enough that a node restart or a short API outage (heartbeats seen stale)
/// does not reshuffle standbys, short enough that a dead node does not
/// leave a gateway with fewer standbys for long.
pub const CANDIDATE_GRACE_SECS: i64 = 300;

/// Resolve every SnatGateway up to (not including) address allocation;
/// sorted by precedence.
pub(super) fn prepare_all<'a>(
    cluster: &Cluster<'a>,
    routers: &[RouterState],
    exts: &BTreeMap<String, ExtState>,
) -> Vec<SnatState<'a>> {
    let mut out: Vec<SnatState> = cluster
        .input
        .snat_gateways
        .iter()
        .map(|obj| {
            let ns = obj.namespace().unwrap_or_default();
            let rkey = ObjectKey::new(&ns, &obj.spec.router);
            let router = find_router(routers, &rkey);
            let ext = external_of(
                &ns,
                obj.spec.external_network.as_deref(),
                router.map(|i| &routers[i]),
                exts,
            );
            let requested = check_requested(obj.spec.address.as_deref(), Kind::Snat, &ext, exts);
            SnatState {
                obj,
                key: ObjectKey::new(&ns, obj.name_any()),
                order: order_of(&obj.metadata),
                router,
                valid: router_exists(router, &rkey),
                duplicate: false,
                ext,
                requested,
                address: None,
                ports: None,
                scheduled: Ok(()),
                node: None,
                candidates: Vec::new(),
                view: None,
            }
        })
        .collect();
    out.sort_by(|a, b| a.order.cmp(&b.order));

    // One SnatGateway per router: the one holding an address keeps it,
    // then precedence.
    let mut idx: Vec<usize> = (0..out.len()).collect();
    let holds = |s: &SnatState| s.obj.status.as_ref().is_some_and(|x| x.address.is_some());
    idx.sort_by(|&a, &b| (!holds(&out[a]), &out[a].order).cmp(&(!holds(&out[b]), &out[b].order)));
    let mut first: BTreeMap<(String, String), ObjectKey> = BTreeMap::new();
    for i in idx {
        let s = &mut out[i];
        let rkey = (s.key.namespace.clone(), s.obj.spec.router.clone());
        if let Some(winner) = first.get(&rkey) {
            s.duplicate = true;
            also(
                &mut s.valid,
                Err(fail(
                    "DuplicateSnatGateway",
                    format!(
                        "router {} already has SnatGateway {winner}; a router has at most one",
                        rkey.1
                    ),
                )),
            );
        } else {
            first.insert(rkey, s.key.clone());
        }
    }
    for s in out.iter_mut() {
        also(&mut s.valid, s.ext.clone().map(|_| ()));
        also(&mut s.valid, s.requested.clone().map(|_| ()));
        if let Some(sel) = &s.obj.spec.node_selector {
            also(
                &mut s.valid,
                selector::validate(sel).map_err(|m| fail("InvalidNodeSelector", m)),
            );
        }
        also(&mut s.valid, router_ready(routers, s.router));
    }
    out
}

impl SnatState<'_> {
    /// The router it serves.
    pub(super) fn router_key(&self) -> ObjectKey {
        ObjectKey::new(&self.key.namespace, &self.obj.spec.router)
    }

    /// Not a second SnatGateway of its router.
    pub(super) fn is_primary(&self) -> bool {
        !self.duplicate
    }

    pub(super) fn valid_check(&self) -> Check {
        self.valid.clone()
    }

    pub(super) fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// Its external network, when determined.
    pub(super) fn external(&self) -> Result<String, Fail> {
        self.ext.clone()
    }

    /// The address request, if this gateway may hold an address.
    pub(super) fn request(&self) -> Option<Request> {
        let (Ok(ext), Ok(requested), false) = (&self.ext, &self.requested, self.duplicate) else {
            return None;
        };
        Some(Request {
            kind: Kind::Snat,
            ext: ext.clone(),
            order: self.order.clone(),
            label: format!("SnatGateway {}", self.key),
            requested: *requested,
            held: status_addr(self.obj.status.as_ref().and_then(|s| s.address.as_deref())),
        })
    }

    fn allocated(&self) -> Check {
        let addr = match (&self.address, &self.ext, &self.requested) {
            (Some(Ok(_)), _, _) => Ok(()),
            (Some(Err(f)), _, _) | (None, Err(f), _) | (None, _, Err(f)) => Err(f.clone()),
            (None, Ok(_), Ok(_)) => Err(fail(
                "NotAllocated",
                "no address is allocated while Valid is False",
            )),
        };
        addr?;
        match &self.ports {
            Some(Ok(_)) => Ok(()),
            Some(Err(f)) => Err(f.clone()),
            None => Err(fail(
                "NotAllocated",
                "no sg- ports are allocated while Valid is False",
            )),
        }
    }
}

/// Ports and scheduling, after addresses are allocated.
pub(super) fn finish_all(
    snats: &mut [SnatState],
    cluster: &Cluster,
    routers: &[RouterState],
    exts: &BTreeMap<String, ExtState>,
) {
    let vips = subnet_vips(cluster);
    let none = BTreeSet::new();
    for s in snats.iter_mut().filter(|s| s.valid.is_ok()) {
        let vips = vips.get(&s.router_key()).unwrap_or(&none);
        s.ports = Some(ports(s, &routers[s.router.expect("valid")], vips));
    }
    // Pass 1: keep the node that serves (reported by the agents), else the
    // active node while it stays eligible (no flapping).
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut eligibles: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, s) in snats.iter_mut().enumerate() {
        if let Err(v) = &s.valid {
            s.scheduled = Err(fail(
                "NotValid",
                format!("not scheduled while Valid is False: {}", v.message),
            ));
            continue;
        }
        if let Err(a) = s.allocated() {
            s.scheduled = Err(fail(
                "NotAllocated",
                format!("not scheduled until allocated: {}", a.message),
            ));
            continue;
        }
        let eligible = eligible(s, cluster, exts);
        eligibles.insert(i, eligible.clone());
        match serving_node(s, cluster, &eligible) {
            Some(n) => {
                *load.entry(n.clone()).or_default() += 1;
                s.node = Some(n);
            }
            None => pending.push((i, eligible)),
        }
    }
    // Pass 2: the least loaded eligible node, ties by name.
    for (i, eligible) in pending {
        let s = &mut snats[i];
        let best = eligible
            .iter()
            .min_by_key(|n| (load.get(*n).copied().unwrap_or(0), *n))
            .cloned();
        match best {
            Some(n) => {
                *load.entry(n.clone()).or_default() += 1;
                s.node = Some(n);
            }
            None => {
                s.scheduled = Err(fail(
                    "NoEligibleNode",
                    format!(
                        "no node is Ready, runs the kube-dvr agent, matches the SnatGateway's nodeSelector and is attached to ExternalNetwork {:?}; SNAT is down until one is",
                        s.ext.as_ref().expect("valid")
                    ),
                ))
            }
        }
    }
    candidates(snats, &eligibles, cluster);
    for s in snats.iter_mut() {
        if let (Ok(()), Some(Ok(address)), Some(Ok(ports)), Ok(ext)) =
            (&s.valid, &s.address, &s.ports, &s.ext)
        {
            s.view = Some(SnatView {
                key: s.key.clone(),
                router: ObjectKey::new(&s.key.namespace, &s.obj.spec.router),
                external: ext.clone(),
                address: *address,
                node: s.node.clone(),
                candidates: if s.node.is_some() {
                    s.candidates.iter().map(|c| c.node.clone()).collect()
                } else {
                    Vec::new()
                },
                ports: ports.clone(),
            });
        }
    }
}

/// The active node to keep: the node that actually serves — an eligible
/// candidate whose agent reports serving the gateway, when the current
/// active node does not (the agents moved it at run time, see
/// `agent::gateway`; several: the first in candidate order) — else the
/// current active node while it stays eligible.
fn serving_node(s: &SnatState, cluster: &Cluster, eligible: &BTreeSet<String>) -> Option<String> {
    let status = s.obj.status.as_ref();
    let current = status
        .and_then(|x| x.active_node.clone())
        .filter(|n| eligible.contains(n));
    let key = s.key.to_string();
    let reports = |n: &str| {
        eligible.contains(n)
            && cluster
                .nodes
                .get(n)
                .is_some_and(|info| info.serving.contains(&key))
    };
    if current.as_deref().is_some_and(reports) {
        return current;
    }
    status
        .iter()
        .flat_map(|x| x.candidates.iter())
        .map(|c| c.node.as_str())
        .find(|n| reports(n))
        .map(str::to_string)
        .or(current)
}

/// Candidates: the active node first; then the previous candidates, in
/// their order, while eligible or ineligible for less than
/// [`CANDIDATE_GRACE_SECS`] (and still known with a VTEP); then eligible
/// nodes with the fewest candidacies (ties by name), up to
/// [`MAX_CANDIDATES`]. The order changes only when the active node does.
fn candidates(
    snats: &mut [SnatState],
    eligibles: &BTreeMap<usize, BTreeSet<String>>,
    cluster: &Cluster,
) {
    let now = cluster.input.now;
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in snats.iter_mut().enumerate() {
        let Some(eligible) = eligibles.get(&i) else {
            continue;
        };
        let old = s
            .obj
            .status
            .as_ref()
            .map(|x| x.candidates.clone())
            .unwrap_or_default();
        let mut list: Vec<SnatCandidateStatus> = Vec::new();
        if let Some(n) = &s.node {
            list.push(SnatCandidateStatus {
                node: n.clone(),
                ineligible_since: None,
            });
        }
        for c in old {
            if list.len() >= MAX_CANDIDATES || list.iter().any(|l| l.node == c.node) {
                continue;
            }
            if eligible.contains(&c.node) {
                list.push(SnatCandidateStatus {
                    node: c.node,
                    ineligible_since: None,
                });
                continue;
            }
            let known = cluster
                .nodes
                .get(c.node.as_str())
                .is_some_and(|n| n.vtep.is_some());
            let since = c.ineligible_since.clone().unwrap_or(Time(now));
            if known && now.as_second() - since.0.as_second() < CANDIDATE_GRACE_SECS {
                list.push(SnatCandidateStatus {
                    node: c.node,
                    ineligible_since: Some(since),
                });
            }
        }
        for c in &list {
            *load.entry(c.node.clone()).or_default() += 1;
        }
        s.candidates = list;
    }
    for (i, s) in snats.iter_mut().enumerate() {
        let Some(eligible) = eligibles.get(&i) else {
            continue;
        };
        if s.node.is_none() {
            continue;
        }
        while s.candidates.len() < MAX_CANDIDATES {
            let next = eligible
                .iter()
                .filter(|n| !s.candidates.iter().any(|c| &c.node == *n))
                .min_by_key(|n| (load.get(*n).copied().unwrap_or(0), *n))
                .cloned();
            let Some(n) = next else { break };
            *load.entry(n.clone()).or_default() += 1;
            s.candidates.push(SnatCandidateStatus {
                node: n,
                ineligible_since: None,
            });
        }
    }
}

/// Ready nodes with a VTEP attached to the external network (which implies
/// both) and matching the gateway's own selector.
fn eligible(
    s: &SnatState,
    cluster: &Cluster,
    exts: &BTreeMap<String, ExtState>,
) -> BTreeSet<String> {
    let ext = &exts[s.ext.as_ref().expect("valid")];
    let sel = s.obj.spec.node_selector.as_ref();
    ext.attached
        .iter()
        .filter(|n| {
            cluster
                .nodes
                .get(n.as_str())
                .is_some_and(|info| selector::matches(sel, &info.labels).unwrap_or(false))
        })
        .cloned()
        .collect()
}

/// Per router, its subnet virtual IPs (LoadBalancers with `subnet`): held
/// in status or requested; `(subnet, address)`. The `sg-` port never takes
/// one. One pass over the LoadBalancers for all gateways.
fn subnet_vips(cluster: &Cluster) -> BTreeMap<ObjectKey, BTreeSet<(String, Ipv4Addr)>> {
    let mut out: BTreeMap<ObjectKey, BTreeSet<(String, Ipv4Addr)>> = BTreeMap::new();
    for lb in &cluster.input.load_balancers {
        let Some(sub) = lb.spec.subnet.clone() else {
            continue;
        };
        let held = lb.status.as_ref().and_then(|s| s.address.as_deref());
        let Some(ip) = held
            .or(lb.spec.address.as_deref())
            .and_then(|a| a.parse().ok())
        else {
            continue;
        };
        let router = ObjectKey::new(lb.namespace().unwrap_or_default(), &lb.spec.router);
        out.entry(router).or_default().insert((sub, ip));
    }
    out
}

/// One `sg-` port per router subnet: the persisted address while it is still
/// a free host address of the subnet, else the highest free host address
/// (broadcast - 1 and down), avoiding the gateway, endpoints, route next
/// hops and subnet virtual IPs. A workload that takes the port's address wins: the port moves.
fn ports(
    s: &SnatState,
    router: &RouterState,
    vips: &BTreeSet<(String, Ipv4Addr)>,
) -> Result<Vec<SnatPort>, Fail> {
    let view = router.view.as_ref().expect("ready");
    let old: Vec<SnatPortStatus> = s.obj.status.clone().map(|x| x.ports).unwrap_or_default();
    let mut out = Vec::new();
    for sub in &view.subnets {
        let mut avoid: BTreeSet<Ipv4Addr> = view
            .endpoints
            .iter()
            .filter(|e| e.subnet == sub.name)
            .map(|e| e.ip)
            .collect();
        avoid.insert(sub.gateway);
        avoid.extend(router.routes.iter().map(|(_, via)| *via));
        avoid.extend(
            (vips.iter())
                .filter(|(n, _)| *n == sub.name)
                .map(|(_, ip)| *ip),
        );
        let kept = old
            .iter()
            .find(|p| p.subnet == sub.name)
            .and_then(|p| p.ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| is_host(sub.cidr, *ip) && !avoid.contains(ip));
        let Some(ip) = kept.or_else(|| highest_free_host(sub.cidr, &avoid)) else {
            return Err(fail(
                "SubnetFull",
                format!(
                    "subnet {:?} ({}) has no free address for the SNAT port",
                    sub.name, sub.cidr
                ),
            ));
        };
        out.push(SnatPort {
            subnet: sub.name.clone(),
            ip,
            mac: names::sg_mac(sub.vni),
        });
    }
    Ok(out)
}

pub(super) fn finish_output(snats: Vec<SnatState>, out: &mut Resolution, now: Timestamp) {
    for s in snats {
        let old = s.obj.status.clone().unwrap_or_default();
        let generation = s.obj.metadata.generation;
        let allocated = s.allocated();
        let mut c = CondSet::new(&old.conditions, generation, now);
        c.put(VALID, &s.valid, "Valid");
        c.put(ALLOCATED, &allocated, "Allocated");
        c.put(SCHEDULED, &s.scheduled, "Scheduled");
        c.ready(&[&s.valid, &allocated, &s.scheduled]);
        let status = SnatGatewayStatus {
            observed_generation: generation,
            conditions: c.finish(),
            address: match &s.address {
                Some(Ok(a)) => Some(a.to_string()),
                _ => None,
            },
            active_node: s.node.clone(),
            candidates: s.candidates.clone(),
            ports: match &s.ports {
                Some(Ok(p)) => p
                    .iter()
                    .map(|p| SnatPortStatus {
                        subnet: p.subnet.clone(),
                        ip: p.ip.to_string(),
                        mac: p.mac.to_string(),
                    })
                    .collect(),
                _ => vec![],
            },
        };
        out.snat_gateways.insert(s.key.clone(), status);
        if let Some(v) = s.view {
            out.view.snat_gateways.push(v);
        }
    }
    out.view.snat_gateways.sort_by(|a, b| a.key.cmp(&b.key));
}

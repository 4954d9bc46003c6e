//! FloatingIPs, and the north-south step that resolves them together with
//! SnatGateways (they share each external network's address space).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::addresses::{self, Kind, Request};
use super::conds::{fail, order_of, Check, CondSet, Fail, Order};
use super::external::ExtState;
use super::routers::RouterState;
use super::snat::SnatState;
use super::{qualify, Cluster, Resolution};
use crate::api::conditions::{ALLOCATED, SCHEDULED, VALID};
use crate::api::{FloatingIP, FloatingIPStatus};
use crate::plan::model::MacAddr;
use crate::plan::names;
use crate::plan::view::{FloatingView, ObjectKey};

/// What a floating IP translates to, once resolved against the router.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub subnet: String,
    pub ip: Ipv4Addr,
    /// For pod targets: the pod's interface MAC (the endpoint must be that
    /// pod's, not another workload that claimed the same IP first).
    mac: Option<MacAddr>,
}

pub(super) struct FipState<'a> {
    obj: &'a FloatingIP,
    key: ObjectKey,
    order: Order,
    router: Option<usize>,
    valid: Check,
    /// The external network, when determined, existing, valid and allowed.
    ext: Result<String, Fail>,
    /// `spec.address`, checked against the pool.
    requested: Result<Option<Ipv4Addr>, Fail>,
    /// `Some` once allocation was attempted.
    address: Option<Result<Ipv4Addr, Fail>>,
    target: Option<Target>,
    scheduled: Check,
    /// The serving node and its `fg-` address.
    node: Option<(String, Ipv4Addr)>,
}

/// Floating IPs and SNAT gateways, resolved.
pub(super) struct NorthSouth<'a> {
    fips: Vec<FipState<'a>>,
    pub(super) snats: Vec<SnatState<'a>>,
    services: super::services::Services<'a>,
}

/// The external network a FloatingIP or SnatGateway uses: its own
/// `externalNetwork` or its router's; one per router.
pub(super) fn external_of(
    namespace: &str,
    own: Option<&str>,
    router: Option<&RouterState>,
    exts: &BTreeMap<String, ExtState>,
) -> Result<String, Fail> {
    let routers = router.and_then(|r| r.obj.spec.external_network.as_deref());
    let name = match (own, routers) {
        (Some(a), Some(b)) if a != b => {
            return Err(fail(
                "ExternalNetworkMismatch",
                format!(
                    "spec.externalNetwork is {a:?} but router {} uses {b:?}: a router has one external network; drop spec.externalNetwork or make them equal",
                    router.expect("has one").key.name
                ),
            ))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(fail(
                "NoExternalNetwork",
                "neither spec.externalNetwork nor the router's spec.externalNetwork is set",
            ))
        }
    };
    let Some(ext) = exts.get(name) else {
        return Err(fail(
            "ExternalNetworkNotFound",
            format!("ExternalNetwork {name:?} does not exist"),
        ));
    };
    if !ext.allows(namespace) {
        return Err(fail(
            "NamespaceNotAllowed",
            format!(
                "ExternalNetwork {name:?} does not allow namespace {namespace:?} (allowedNamespaces: {})",
                ext.obj.spec.allowed_namespaces.join(", ")
            ),
        ));
    }
    if let Err(f) = &ext.valid {
        return Err(fail(
            "ExternalNetworkInvalid",
            format!("ExternalNetwork {name:?} is not valid: {}", f.message),
        ));
    }
    Ok(name.to_string())
}

/// Check a requested address: parses and lies in `kind`'s pool.
pub(super) fn check_requested(
    requested: Option<&str>,
    kind: Kind,
    ext: &Result<String, Fail>,
    exts: &BTreeMap<String, ExtState>,
) -> Result<Option<Ipv4Addr>, Fail> {
    let Some(s) = requested else { return Ok(None) };
    let addr: Ipv4Addr = s.parse().map_err(|_| {
        fail(
            "InvalidAddress",
            format!("spec.address {s:?} is not an IPv4 address"),
        )
    })?;
    if let Ok(name) = ext {
        let pool = kind.pool(&exts[name]);
        if !pool.contains(addr) {
            return Err(fail(
                "AddressOutsidePool",
                format!(
                    "spec.address {addr} is not in the {} pool of ExternalNetwork {name:?} ({})",
                    kind.pool_name(),
                    pool.describe()
                ),
            ));
        }
    }
    Ok(Some(addr))
}

/// `Err` into the first failure of `check` if it has none yet.
pub(super) fn also(check: &mut Check, f: Result<(), Fail>) {
    if check.is_ok() {
        *check = f;
    }
}

pub(super) fn find_router(routers: &[RouterState], key: &ObjectKey) -> Option<usize> {
    routers.iter().position(|r| &r.key == key)
}

pub(super) fn router_ready(routers: &[RouterState], idx: Option<usize>) -> Check {
    let Some(r) = idx.map(|i| &routers[i]) else {
        return Ok(());
    };
    match r.not_ready() {
        Some(f) => Err(fail(
            "RouterNotReady",
            format!("DistributedRouter {} is not ready: {}", r.key, f.message),
        )),
        None => Ok(()),
    }
}

pub(super) fn router_exists(idx: Option<usize>, key: &ObjectKey) -> Check {
    match idx {
        Some(_) => Ok(()),
        None => Err(fail(
            "RouterNotFound",
            format!("DistributedRouter {key} does not exist"),
        )),
    }
}

impl<'a> NorthSouth<'a> {
    pub fn resolve(
        cluster: &Cluster<'a>,
        exts: &mut BTreeMap<String, ExtState>,
        routers: &[RouterState],
    ) -> Self {
        let mut fips: Vec<FipState> = cluster
            .input
            .floating_ips
            .iter()
            .map(|obj| prepare(cluster, obj, routers, exts))
            .collect();
        fips.sort_by(|a, b| a.order.cmp(&b.order));
        let mut snats = super::snat::prepare_all(cluster, routers, exts);
        let mut services = super::services::prepare(cluster, routers, exts, &snats);

        // Addresses: one space per external network for both kinds.
        let mut reqs = Vec::new();
        let mut owners = Vec::new();
        for (i, f) in fips.iter().enumerate() {
            if let (Ok(ext), Ok(requested)) = (&f.ext, &f.requested) {
                reqs.push(Request {
                    kind: Kind::Floating,
                    ext: ext.clone(),
                    order: f.order.clone(),
                    label: format!("FloatingIP {}", f.key),
                    requested: *requested,
                    held: status_addr(f.obj.status.as_ref().and_then(|s| s.address.as_deref())),
                });
                owners.push((Kind::Floating, i));
            }
        }
        for (i, s) in snats.iter().enumerate() {
            if let Some(req) = s.request() {
                reqs.push(req);
                owners.push((Kind::Snat, i));
            }
        }
        // Dedicated forwarding addresses and external virtual IPs: from the
        // floating pool, after floating IPs and SNAT gateways.
        let n = reqs.len();
        let mut service_owners = Vec::new();
        for (req, lb, i) in services.requests() {
            reqs.push(req);
            service_owners.push((lb, i));
        }
        let mut results = addresses::allocate(&reqs, exts, &cluster.input.held.addresses);
        for ((req, (lb, i)), res) in reqs[n..]
            .iter()
            .zip(service_owners)
            .zip(results.split_off(n))
        {
            if res.is_ok() {
                exts.get_mut(&req.ext).expect("valid network").floating_used += 1;
            }
            services.allocated(lb, i, res);
        }
        reqs.truncate(n);
        for ((kind, i), (req, res)) in owners.into_iter().zip(reqs.iter().zip(results)) {
            let ext = exts
                .get_mut(&req.ext)
                .expect("requests name valid networks");
            if res.is_ok() {
                match kind {
                    Kind::Floating => ext.floating_used += 1,
                    Kind::Snat => ext.snat_used += 1,
                }
            }
            match kind {
                Kind::Floating => fips[i].address = Some(res),
                Kind::Snat => snats[i].address = Some(res),
            }
        }
        target_conflicts(&mut fips, routers);
        for f in fips.iter_mut() {
            schedule(f, routers, exts, cluster);
        }
        super::snat::finish_all(&mut snats, cluster, routers, exts);
        let mut fip_targets = std::collections::BTreeSet::new();
        let mut fip_nodes: BTreeMap<ObjectKey, std::collections::BTreeSet<String>> =
            BTreeMap::new();
        // Floating IPs in effect (in the view): one that is not (no
        // address, target not found) takes no path away from a forward.
        for v in fips.iter().filter_map(|f| f.view()) {
            fip_targets.insert((v.router.clone(), v.fixed_ip));
            fip_nodes.entry(v.router).or_default().insert(v.node);
        }
        services.finish(routers, &fip_targets, &fip_nodes, &snats);
        NorthSouth {
            fips,
            snats,
            services,
        }
    }

    /// The candidate nodes of the SNAT gateway of `router` (the active
    /// one first), if any: each of them programs the router's subnets.
    pub fn snat_nodes_of(&self, router: &ObjectKey) -> Vec<String> {
        self.snats
            .iter()
            .filter_map(|s| s.view.as_ref())
            .find(|v| &v.router == router)
            .map(|v| v.candidates.clone())
            .unwrap_or_default()
    }

    pub fn finish(self, out: &mut Resolution, cluster: &Cluster, now: Timestamp) {
        for f in &self.fips {
            out.floating_ips.insert(f.key.clone(), f.status(now));
            if let Some(v) = f.view() {
                out.view.floating_ips.push(v);
            }
        }
        out.view.floating_ips.sort_by(|a, b| a.key.cmp(&b.key));
        super::snat::finish_output(self.snats, out, now);
        self.services.output(out, cluster, now);
    }
}

pub(super) fn status_addr(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|a| a.parse().ok())
}

/// Resolve what does not depend on other FloatingIPs.
fn prepare<'a>(
    cluster: &Cluster,
    obj: &'a FloatingIP,
    routers: &[RouterState],
    exts: &BTreeMap<String, ExtState>,
) -> FipState<'a> {
    let ns = obj.namespace().unwrap_or_default();
    let key = ObjectKey::new(&ns, obj.name_any());
    let rkey = ObjectKey::new(&ns, &obj.spec.router);
    let router = find_router(routers, &rkey);
    let mut valid = router_exists(router, &rkey);
    let ext = external_of(
        &ns,
        obj.spec.external_network.as_deref(),
        router.map(|i| &routers[i]),
        exts,
    );
    also(&mut valid, ext.clone().map(|_| ()));
    let requested = check_requested(obj.spec.address.as_deref(), Kind::Floating, &ext, exts);
    also(&mut valid, requested.clone().map(|_| ()));
    also(&mut valid, router_ready(routers, router));
    let mut st = FipState {
        obj,
        order: order_of(&obj.metadata),
        key,
        router,
        valid,
        address: None,
        requested,
        ext,
        target: None,
        scheduled: Ok(()),
        node: None,
    };
    if st.valid.is_ok() {
        match resolve_target(
            cluster,
            &obj.spec.target,
            &ns,
            &routers[router.expect("valid")],
        ) {
            Ok(t) => st.target = Some(t),
            Err((true, f)) => st.valid = Err(f),
            Err((false, f)) => st.scheduled = Err(f),
        }
    }
    st
}

/// The target: `Err((true, _))` makes the FloatingIP invalid,
/// `Err((false, _))` means the target is not there yet (TargetNotFound).
pub(super) fn resolve_target(
    cluster: &Cluster,
    t: &crate::api::FloatingTarget,
    ns: &str,
    router: &RouterState,
) -> Result<Target, (bool, Fail)> {
    match (&t.fixed_ip, &t.pod) {
        (Some(ip), None) => {
            let ip: Ipv4Addr = ip.parse().map_err(|_| {
                (
                    true,
                    fail(
                        "InvalidTarget",
                        format!("target.fixedIP {ip:?} is not an IPv4 address"),
                    ),
                )
            })?;
            let Some(s) = router.subnet_of(ip) else {
                return Err((
                    true,
                    fail(
                        "TargetNotOnRouter",
                        format!(
                            "target.fixedIP {ip} is not inside any subnet of router {}",
                            router.key.name
                        ),
                    ),
                ));
            };
            Ok(Target {
                subnet: s.name.clone(),
                ip,
                mac: None,
            })
        }
        (None, Some(p)) => {
            let Some(pod) = cluster
                .input
                .pods
                .iter()
                .find(|x| x.namespace == ns && x.name == p.name)
            else {
                return Err((
                    false,
                    fail(
                        "TargetNotFound",
                        format!("pod {ns}/{} does not exist", p.name),
                    ),
                ));
            };
            let want = p.network.as_deref().map(|n| qualify(ns, n));
            let hits: Vec<Target> = pod
                .networks
                .iter()
                .filter_map(|n| {
                    let nad = qualify(&pod.namespace, &n.network);
                    if want.as_ref().is_some_and(|w| *w != nad) {
                        return None;
                    }
                    let s = router
                        .subnets
                        .iter()
                        .find(|s| s.nad == nad && s.cidr.contains(&n.ip))?;
                    Some(Target {
                        subnet: s.name.clone(),
                        ip: n.ip,
                        mac: Some(n.mac),
                    })
                })
                .collect();
            match hits.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err((
                    false,
                    fail(
                        "TargetNotFound",
                        format!(
                            "pod {ns}/{} has no address on a subnet of router {}{}",
                            p.name,
                            router.key.name,
                            want.map(|w| format!(" through network {w}"))
                                .unwrap_or_default()
                        ),
                    ),
                )),
                many => Err((
                    true,
                    fail(
                        "AmbiguousTarget",
                        format!(
                            "pod {ns}/{} has {} addresses on router {}'s subnets ({}): set target.pod.network",
                            p.name,
                            many.len(),
                            router.key.name,
                            many.iter()
                                .map(|t| format!("{} on {}", t.ip, t.subnet))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                )),
            }
        }
        _ => Err((
            true,
            fail(
                "InvalidTarget",
                "set exactly one of target.fixedIP and target.pod",
            ),
        )),
    }
}

/// Two FloatingIPs on one fixed IP of one router: the first (status holder,
/// then precedence) keeps it, the others get `TargetInUse`.
fn target_conflicts(fips: &mut [FipState], routers: &[RouterState]) {
    let mut idx: Vec<usize> = (0..fips.len())
        .filter(|&i| fips[i].valid.is_ok() && fips[i].target.is_some())
        .collect();
    let holds = |f: &FipState| {
        let t = f.target.as_ref().expect("filtered");
        status_addr(f.obj.status.as_ref().and_then(|s| s.fixed_ip.as_deref())) == Some(t.ip)
    };
    idx.sort_by(|&a, &b| {
        (!holds(&fips[a]), &fips[a].order).cmp(&(!holds(&fips[b]), &fips[b].order))
    });
    let mut owner: BTreeMap<(usize, Ipv4Addr), ObjectKey> = BTreeMap::new();
    for i in idx {
        let f = &mut fips[i];
        let r = f.router.expect("valid");
        let ip = f.target.as_ref().expect("filtered").ip;
        match owner.get(&(r, ip)) {
            Some(first) => {
                f.valid = Err(fail(
                    "TargetInUse",
                    format!(
                        "fixed IP {ip} on router {} is already the target of FloatingIP {first}",
                        routers[r].key.name
                    ),
                ));
            }
            None => {
                owner.insert((r, ip), f.key.clone());
            }
        }
    }
}

/// A floating IP is served where its endpoint is, through that node's `fg-`
/// port on the external network.
fn schedule(
    f: &mut FipState,
    routers: &[RouterState],
    exts: &BTreeMap<String, ExtState>,
    cluster: &Cluster,
) {
    if let Err(v) = &f.valid {
        f.scheduled = Err(fail(
            "NotValid",
            format!("not scheduled while Valid is False: {}", v.message),
        ));
        return;
    }
    if f.scheduled.is_err() {
        return; // TargetNotFound from resolution
    }
    let router = &routers[f.router.expect("valid")];
    let view = router.view.as_ref().expect("ready");
    let t = f.target.as_ref().expect("valid and found");
    let Some(ep) = view
        .endpoints
        .iter()
        .find(|e| e.subnet == t.subnet && e.ip == t.ip && t.mac.is_none_or(|m| m == e.mac))
    else {
        f.scheduled = Err(fail(
            "TargetNotFound",
            format!(
                "no workload with address {} on subnet {:?} of router {} runs on a node with a kube-dvr agent",
                t.ip, t.subnet, router.key.name
            ),
        ));
        return;
    };
    let ext_name = f.ext.as_ref().expect("valid");
    let ext = &exts[ext_name];
    let port = ext
        .node_ports
        .get(&ep.node)
        .filter(|_| cluster.vtep(&ep.node).is_some());
    match port {
        Some(addr) => f.node = Some((ep.node.clone(), *addr)),
        None => {
            f.scheduled = Err(fail(
                "NodeNotAttached",
                format!(
                    "the target runs on node {} which has no gateway port on ExternalNetwork {ext_name:?}: it does not match the network's nodeSelector, is not Ready, or the nodePorts pool is exhausted",
                    ep.node
                ),
            ))
        }
    }
}

impl FipState<'_> {
    fn allocated(&self) -> Check {
        match (&self.address, &self.ext, &self.requested) {
            (Some(Ok(_)), _, _) => Ok(()),
            (Some(Err(f)), _, _) | (None, Err(f), _) | (None, _, Err(f)) => Err(f.clone()),
            (None, Ok(_), Ok(_)) => Err(fail("NotAllocated", "no address was allocated")),
        }
    }

    fn status(&self, now: Timestamp) -> FloatingIPStatus {
        let old = self.obj.status.clone().unwrap_or_default();
        let generation = self.obj.metadata.generation;
        let allocated = self.allocated();
        let mut c = CondSet::new(&old.conditions, generation, now);
        c.put(VALID, &self.valid, "Valid");
        c.put(ALLOCATED, &allocated, "Allocated");
        c.put(SCHEDULED, &self.scheduled, "Scheduled");
        c.ready(&[&self.valid, &allocated, &self.scheduled]);
        let address = match &self.address {
            Some(Ok(a)) => Some(a.to_string()),
            _ => None,
        };
        FloatingIPStatus {
            observed_generation: generation,
            conditions: c.finish(),
            address,
            fixed_ip: self.target.as_ref().map(|t| t.ip.to_string()),
            node: self.node.as_ref().map(|(n, _)| n.clone()),
            // The serving node's `fg-` port answers ARP for the address.
            mac: self
                .node
                .as_ref()
                .map(|(_, fg)| names::external_mac(*fg).to_string()),
        }
    }

    fn view(&self) -> Option<FloatingView> {
        let (Ok(()), Some(Ok(address)), Some((node, _)), Some(t), Ok(ext)) = (
            &self.valid,
            &self.address,
            &self.node,
            &self.target,
            &self.ext,
        ) else {
            return None;
        };
        Some(FloatingView {
            key: self.key.clone(),
            router: ObjectKey::new(&self.key.namespace, &self.obj.spec.router),
            external: ext.clone(),
            address: *address,
            fixed_ip: t.ip,
            node: node.clone(),
        })
    }
}

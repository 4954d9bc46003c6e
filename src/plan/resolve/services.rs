//! Services of a router (hybrid mode): RouterFirewalls (enforced where the
//! router's floating IPs are served and on its SNAT gateway),
//! PortForwardings and LoadBalancers (central, in the SNAT gateway).
//!
//! Resolved inside the north-south step ([`super::floating::NorthSouth`]):
//! dedicated forwarding addresses and external virtual IPs come from the
//! floating pool of the SNAT gateway's external network, in the same
//! address space (and with the same conflict rules) as floating and SNAT
//! addresses. Every check that fails leaves the object out of the view:
//! nothing of it is programmed, and no other object is affected.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::addresses::{Kind, Request};
use super::conds::{fail, order_of, Check, CondSet, Fail, Order};
use super::external::ExtState;
use super::floating::{
    also, check_requested, find_router, resolve_target, router_exists, router_ready, status_addr,
    Target,
};
use super::pools::{highest_free_host, is_host, parse_cidr};
use super::routers::RouterState;
use super::snat::SnatState;
use super::{selector, Cluster, Resolution};
use crate::api::conditions::{ALLOCATED, SCHEDULED, VALID};
use crate::api::{
    BackendStatus, FirewallAction, FirewallProtocol, FirewallRule, FloatingTarget, LoadBalancer,
    LoadBalancerStatus, PodTarget, PortForwarding, PortForwardingStatus, RouterFirewall,
    RouterFirewallStatus, MAX_BACKENDS, MAX_FORWARDED_PORTS,
};
use crate::plan::view::{
    FirewallRuleView, FirewallView, ForwardEntry, ForwardingView, HealthView, LoadBalancerView,
    ObjectKey, SnatView,
};

/// Condition type on LoadBalancers: every backend passes its health check
/// on the serving node (False, reason `BackendsDown`, naming them). Does
/// not affect `Ready`.
pub const BACKENDS_HEALTHY: &str = "BackendsHealthy";

pub(super) struct FwState<'a> {
    obj: &'a RouterFirewall,
    key: ObjectKey,
    router: Option<usize>,
    valid: Check,
    rules: Option<(Vec<FirewallRuleView>, Vec<FirewallRuleView>)>,
    nodes: Vec<String>,
}

pub(super) struct PfState<'a> {
    obj: &'a PortForwarding,
    key: ObjectKey,
    order: Order,
    router: Option<usize>,
    valid: Check,
    /// The SNAT gateway's external network.
    ext: Result<String, Fail>,
    requested: Result<Option<Ipv4Addr>, Fail>,
    /// A dedicated address, once allocation was attempted.
    address: Option<Result<Ipv4Addr, Fail>>,
    /// Per forward: protocol, external ports (inclusive), first internal
    /// port; checked.
    spans: Vec<(&'static str, u16, u16, u16)>,
    targets: Vec<Option<Target>>,
    scheduled: Check,
    node: Option<String>,
    view: Option<ForwardingView>,
}

pub(super) struct LbState<'a> {
    obj: &'a LoadBalancer,
    key: ObjectKey,
    order: Order,
    router: Option<usize>,
    valid: Check,
    ext: Result<String, Fail>,
    requested: Result<Option<Ipv4Addr>, Fail>,
    address: Option<Result<Ipv4Addr, Fail>>,
    /// Protocol, port, backends' port; checked.
    ports: Vec<(&'static str, u16, u16)>,
    /// Backends: address and, when selected, the pod.
    backends: Vec<(Ipv4Addr, Option<String>)>,
    scheduled: Check,
    node: Option<String>,
    view: Option<LoadBalancerView>,
}

/// The services, resolved.
pub(super) struct Services<'a> {
    fws: Vec<FwState<'a>>,
    pub(super) pfs: Vec<PfState<'a>>,
    pub(super) lbs: Vec<LbState<'a>>,
}

/// The SNAT gateway of `router` that is valid and not a duplicate.
fn snat_of<'s, 'a>(snats: &'s [SnatState<'a>], router: &ObjectKey) -> Option<&'s SnatState<'a>> {
    snats
        .iter()
        .find(|s| s.router_key() == *router && s.is_primary())
}

fn gateway_check(snat: Option<&SnatState>, router: &ObjectKey) -> Check {
    match snat {
        Some(s) => s.valid_check().map_err(|f| {
            fail(
                "SnatGatewayNotReady",
                format!(
                    "SnatGateway {} of router {} is not valid: {}",
                    s.key(),
                    router.name,
                    f.message
                ),
            )
        }),
        None => Err(fail(
            "NoSnatGateway",
            format!(
                "router {} has no SnatGateway: services run in its gateway namespace",
                router.name
            ),
        )),
    }
}

/// Prepare every service object up to address allocation.
pub(super) fn prepare<'a>(
    cluster: &Cluster<'a>,
    routers: &[RouterState],
    exts: &BTreeMap<String, ExtState>,
    snats: &[SnatState<'a>],
) -> Services<'a> {
    let input = cluster.input;
    let mut fws: Vec<FwState> = input
        .firewalls
        .iter()
        .map(|obj| {
            let ns = obj.namespace().unwrap_or_default();
            let rkey = ObjectKey::new(&ns, &obj.spec.router);
            let router = find_router(routers, &rkey);
            let mut valid = router_exists(router, &rkey);
            let rules = firewall_rules(obj);
            also(&mut valid, rules.as_ref().map(|_| ()).map_err(Clone::clone));
            also(&mut valid, router_ready(routers, router));
            FwState {
                obj,
                key: ObjectKey::new(&ns, obj.name_any()),
                router,
                valid,
                rules: rules.ok(),
                nodes: Vec::new(),
            }
        })
        .collect();
    // One firewall per router, among the valid ones (an invalid one does
    // not keep a valid one out): the one enforced (status lists nodes)
    // keeps it, then precedence.
    let mut idx: Vec<usize> = (0..fws.len()).filter(|&i| fws[i].valid.is_ok()).collect();
    let holds = |f: &FwState| f.obj.status.as_ref().is_some_and(|s| !s.nodes.is_empty());
    idx.sort_by(|&a, &b| {
        let (fa, fb) = (&fws[a], &fws[b]);
        (!holds(fa), order_of(&fa.obj.metadata)).cmp(&(!holds(fb), order_of(&fb.obj.metadata)))
    });
    let mut first: BTreeMap<ObjectKey, ObjectKey> = BTreeMap::new();
    for i in idx {
        let f = &mut fws[i];
        let rkey = ObjectKey::new(&f.key.namespace, &f.obj.spec.router);
        match first.get(&rkey) {
            Some(w) => also(
                &mut f.valid,
                Err(fail(
                    "DuplicateFirewall",
                    format!(
                        "router {} already has RouterFirewall {w}; a router has at most one",
                        rkey.name
                    ),
                )),
            ),
            None => {
                first.insert(rkey, f.key.clone());
            }
        }
    }

    let mut pfs: Vec<PfState> = input
        .port_forwardings
        .iter()
        .map(|obj| prepare_pf(cluster, obj, routers, exts, snats))
        .collect();
    pfs.sort_by(|a, b| a.order.cmp(&b.order));
    let mut lbs: Vec<LbState> = input
        .load_balancers
        .iter()
        .map(|obj| prepare_lb(cluster, obj, routers, exts, snats))
        .collect();
    lbs.sort_by(|a, b| a.order.cmp(&b.order));
    Services { fws, pfs, lbs }
}

/// A firewall's rules, checked.
fn firewall_rules(
    obj: &RouterFirewall,
) -> Result<(Vec<FirewallRuleView>, Vec<FirewallRuleView>), Fail> {
    let conv = |dir: &str, rules: &[FirewallRule]| -> Result<Vec<FirewallRuleView>, Fail> {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let what = match &r.name {
                    Some(n) => format!("{dir}[{i}] ({n})"),
                    None => format!("{dir}[{i}]"),
                };
                let protocol = r.protocol.map(|p| match p {
                    FirewallProtocol::Tcp => "tcp",
                    FirewallProtocol::Udp => "udp",
                    FirewallProtocol::Icmp => "icmp",
                });
                if !r.ports.is_empty() && !matches!(protocol, Some("tcp" | "udp")) {
                    return Err(fail(
                        "InvalidRule",
                        format!("{what}: ports need protocol TCP or UDP"),
                    ));
                }
                let mut ports: Vec<(u16, u16)> = Vec::new();
                for p in &r.ports {
                    let Some(span) = p.span() else {
                        return Err(fail(
                            "InvalidRule",
                            format!(
                                "{what}: ports {}-{} are not a range of 1-65535",
                                p.port,
                                p.end_port.unwrap_or(p.port)
                            ),
                        ));
                    };
                    ports.push(span);
                }
                let cidrs = r
                    .cidrs
                    .iter()
                    .map(|c| parse_cidr(&format!("{what}: cidr"), &c.0))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|m| fail("InvalidRule", m))?;
                // As sets nft accepts: no overlapping intervals (ranges
                // merged, prefixes inside others dropped), sorted.
                let ports = merge_ranges(ports);
                let cidrs = ipnet::Ipv4Net::aggregate(&cidrs);
                Ok(FirewallRuleView {
                    allow: r.action == FirewallAction::Allow,
                    protocol: protocol.map(str::to_string),
                    ports,
                    cidrs,
                })
            })
            .collect()
    };
    Ok((
        conv("ingress", &obj.spec.ingress)?,
        conv("egress", &obj.spec.egress)?,
    ))
}

/// Port ranges sorted, overlapping and adjacent ones merged.
fn merge_ranges(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// What a central service (forwarding, balancer) of router `name` in
/// namespace `ns` needs first: the router's key and index, its SnatGateway
/// (valid, not a duplicate), and whether both are there.
fn central<'s, 'a>(
    ns: &str,
    name: &str,
    routers: &[RouterState],
    snats: &'s [SnatState<'a>],
) -> (ObjectKey, Option<usize>, Option<&'s SnatState<'a>>, Check) {
    let rkey = ObjectKey::new(ns, name);
    let router = find_router(routers, &rkey);
    let mut valid = router_exists(router, &rkey);
    let snat = snat_of(snats, &rkey);
    also(&mut valid, gateway_check(snat, &rkey));
    (rkey, router, snat, valid)
}

fn prepare_pf<'a>(
    cluster: &Cluster,
    obj: &'a PortForwarding,
    routers: &[RouterState],
    exts: &BTreeMap<String, ExtState>,
    snats: &[SnatState],
) -> PfState<'a> {
    let ns = obj.namespace().unwrap_or_default();
    let (_, router, snat, mut valid) = central(&ns, &obj.spec.router, routers, snats);
    let ext = snat.map_or_else(
        || Err(fail("NoSnatGateway", "no SnatGateway")),
        |s| s.external(),
    );
    let requested = if obj.spec.dedicated_address {
        check_requested(obj.spec.address.as_deref(), Kind::Floating, &ext, exts)
    } else if obj.spec.address.is_some() {
        Err(fail(
            "InvalidAddress",
            "spec.address needs spec.dedicatedAddress: true",
        ))
    } else {
        Ok(None)
    };
    also(&mut valid, requested.clone().map(|_| ()));
    also(&mut valid, router_ready(routers, router));
    // Ports: within the object, no external port twice.
    let mut count = 0usize;
    let mut seen: BTreeSet<(&str, u16)> = BTreeSet::new();
    let mut spans = Vec::new();
    for (i, f) in obj.spec.forwards.iter().enumerate() {
        let span = (f.external_ports.span())
            .zip(crate::api::services::port(f.internal_port))
            .filter(|((lo, hi), internal)| u32::from(*internal) + u32::from(hi - lo) <= 65535);
        let Some(((lo, hi), internal)) = span else {
            also(
                &mut valid,
                Err(fail(
                    "InvalidPort",
                    format!(
                        "forwards[{i}]: ports {}-{} → {} do not fit in 1-65535",
                        f.external_ports.port,
                        f.external_ports.end_port.unwrap_or(f.external_ports.port),
                        f.internal_port
                    ),
                )),
            );
            continue;
        };
        spans.push((f.protocol.nft(), lo, hi, internal));
        count += usize::from(hi - lo) + 1;
        for p in lo..=hi {
            if !seen.insert((f.protocol.nft(), p)) {
                also(
                    &mut valid,
                    Err(fail(
                        "DuplicatePort",
                        format!(
                            "forwards[{i}]: {} port {p} is forwarded twice",
                            f.protocol.nft()
                        ),
                    )),
                );
                break;
            }
        }
    }
    if count > MAX_FORWARDED_PORTS {
        also(
            &mut valid,
            Err(fail(
                "TooManyPorts",
                format!("the forwards cover {count} ports; at most {MAX_FORWARDED_PORTS}"),
            )),
        );
    }
    let mut st = PfState {
        obj,
        key: ObjectKey::new(&ns, obj.name_any()),
        order: order_of(&obj.metadata),
        router,
        valid,
        ext,
        requested,
        address: None,
        spans,
        targets: Vec::new(),
        scheduled: Ok(()),
        node: None,
        view: None,
    };
    if st.valid.is_ok() {
        let r = &routers[router.expect("valid")];
        for (i, f) in obj.spec.forwards.iter().enumerate() {
            match resolve_target(cluster, &f.target, &ns, r) {
                Ok(t) => st.targets.push(Some(t)),
                Err((true, e)) => {
                    st.valid = Err(fail(e.reason, format!("forwards[{i}]: {}", e.message)));
                    break;
                }
                Err((false, e)) => {
                    also(
                        &mut st.scheduled,
                        Err(fail(e.reason, format!("forwards[{i}]: {}", e.message))),
                    );
                    st.targets.push(None);
                }
            }
        }
    }
    st
}

fn prepare_lb<'a>(
    cluster: &Cluster,
    obj: &'a LoadBalancer,
    routers: &[RouterState],
    exts: &BTreeMap<String, ExtState>,
    snats: &[SnatState],
) -> LbState<'a> {
    let ns = obj.namespace().unwrap_or_default();
    let (rkey, router, snat, mut valid) = central(&ns, &obj.spec.router, routers, snats);
    also(&mut valid, router_ready(routers, router));
    let r = router.map(|i| &routers[i]);
    let (ext, requested) = match &obj.spec.subnet {
        None => {
            let ext = snat.map_or_else(
                || Err(fail("NoSnatGateway", "no SnatGateway")),
                |s| s.external(),
            );
            let req = check_requested(obj.spec.address.as_deref(), Kind::Floating, &ext, exts);
            (ext, req)
        }
        Some(sub) => {
            let ext = Err(fail("SubnetAddress", "the virtual IP is on a subnet"));
            let req = match (r, r.and_then(|r| r.subnets.iter().find(|s| &s.name == sub))) {
                (Some(_), None) => Err(fail(
                    "SubnetNotFound",
                    format!("router {} has no subnet {sub:?}", rkey.name),
                )),
                (_, Some(s)) => match obj.spec.address.as_deref() {
                    None => Ok(None),
                    Some(a) => match a.parse::<Ipv4Addr>() {
                        Ok(ip) if is_host(s.cidr, ip) && ip != s.gateway => Ok(Some(ip)),
                        _ => Err(fail(
                            "InvalidAddress",
                            format!(
                                "spec.address {a:?} is not a free host address of subnet {sub:?} ({})",
                                s.cidr
                            ),
                        )),
                    },
                },
                (None, None) => Ok(None),
            };
            (ext, req)
        }
    };
    also(&mut valid, requested.clone().map(|_| ()));
    if let Some(sel) = &obj.spec.backends.selector {
        also(
            &mut valid,
            selector::validate(sel).map_err(|m| fail("InvalidSelector", m)),
        );
        // Without pod labels (an agent) the selected pods are the status'
        // (see `backends`): only once the controller found it valid, so an
        // agent never plans (or allocates an address for) what the
        // controller refused.
        if cluster.input.pod_labels.is_none() {
            let accepted = (obj.status.iter()).any(|st| {
                st.conditions.iter().any(|c| {
                    c.type_ == VALID
                        && c.status == crate::api::conditions::TRUE
                        && c.observed_generation == obj.metadata.generation
                })
            });
            if !accepted {
                also(
                    &mut valid,
                    Err(fail(
                        "SelectorNotResolved",
                        "the controller has not resolved the selector of this generation",
                    )),
                );
            }
        }
    }
    let mut ports: Vec<(&'static str, u16, u16)> = Vec::new();
    for p in &obj.spec.ports {
        let port = crate::api::services::port;
        match port(p.port).zip(port(p.target())) {
            Some((a, _)) if ports.iter().any(|q| q.0 == p.protocol.nft() && q.1 == a) => also(
                &mut valid,
                Err(fail(
                    "DuplicatePort",
                    format!("{} port {a} is listed twice", p.protocol.nft()),
                )),
            ),
            Some((a, b)) => ports.push((p.protocol.nft(), a, b)),
            None => also(
                &mut valid,
                Err(fail(
                    "InvalidPort",
                    format!("port {} → {} is not in 1-65535", p.port, p.target()),
                )),
            ),
        }
    }
    let mut st = LbState {
        ports,
        obj,
        key: ObjectKey::new(&ns, obj.name_any()),
        order: order_of(&obj.metadata),
        router,
        valid,
        ext,
        requested,
        address: None,
        backends: Vec::new(),
        scheduled: Ok(()),
        node: None,
        view: None,
    };
    if st.valid.is_ok() {
        let r = r.expect("valid");
        match backends(cluster, obj, &ns, r) {
            Ok(b) => st.backends = b,
            Err(f) => st.valid = Err(f),
        }
    }
    st
}

/// The backends: fixed IPs (on the router's subnets) and the selected pods'
/// addresses. The selector is matched where pod labels are known (the
/// controller); elsewhere (agents) the pods the controller last selected,
/// from the status, are used.
fn backends(
    cluster: &Cluster,
    obj: &LoadBalancer,
    ns: &str,
    router: &RouterState,
) -> Result<Vec<(Ipv4Addr, Option<String>)>, Fail> {
    let mut out = Vec::new();
    for b in &obj.spec.backends.fixed_ips {
        let target = FloatingTarget {
            fixed_ip: Some(b.0.clone()),
            pod: None,
        };
        match resolve_target(cluster, &target, ns, router) {
            Ok(t) => out.push((t.ip, None)),
            Err((_, f)) => {
                return Err(fail(
                    "InvalidBackend",
                    format!("backends.fixedIPs: {}", f.message),
                ))
            }
        }
    }
    let pods: Vec<String> = match (&obj.spec.backends.selector, &cluster.input.pod_labels) {
        (None, _) => Vec::new(),
        (Some(sel), Some(labels)) => {
            let mut names: Vec<String> = labels
                .iter()
                .filter(|(k, l)| {
                    k.namespace == ns && selector::matches(Some(sel), l).unwrap_or(false)
                })
                .map(|(k, _)| k.name.clone())
                .collect();
            names.sort();
            names
        }
        (Some(_), None) => (obj.status.iter())
            .flat_map(|s| &s.backends)
            .filter_map(|b| b.pod.clone())
            .collect(),
    };
    for name in pods {
        let target = FloatingTarget {
            fixed_ip: None,
            pod: Some(PodTarget {
                name: name.clone(),
                network: obj.spec.backends.network.clone(),
            }),
        };
        // A selected pod without an address on the router is no backend
        // (yet); one with several needs `backends.network`.
        match resolve_target(cluster, &target, ns, router) {
            Ok(t) => out.push((t.ip, Some(name))),
            Err((true, f)) => {
                return Err(fail(
                    "InvalidBackend",
                    format!("backends.selector: {}", f.message),
                ))
            }
            Err((false, _)) => {}
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    if out.len() > MAX_BACKENDS as usize {
        return Err(fail(
            "TooManyBackends",
            format!(
                "{} backends; at most {MAX_BACKENDS} (narrow the selector)",
                out.len()
            ),
        ));
    }
    Ok(out)
}

impl Services<'_> {
    /// Address requests for dedicated forwarding addresses and external
    /// virtual IPs (floating pool), with the index into `pfs` (`false`)
    /// or `lbs` (`true`).
    pub(super) fn requests(&self) -> Vec<(Request, bool, usize)> {
        let mut out = Vec::new();
        for (i, p) in self.pfs.iter().enumerate() {
            if let (true, Ok(ext), Ok(requested), Ok(())) =
                (p.obj.spec.dedicated_address, &p.ext, &p.requested, &p.valid)
            {
                out.push((
                    Request {
                        kind: Kind::Floating,
                        ext: ext.clone(),
                        order: p.order.clone(),
                        label: format!("PortForwarding {}", p.key),
                        requested: *requested,
                        held: status_addr(p.obj.status.as_ref().and_then(|s| s.address.as_deref())),
                    },
                    false,
                    i,
                ));
            }
        }
        for (i, l) in self.lbs.iter().enumerate() {
            if let (None, Ok(ext), Ok(requested), Ok(())) =
                (&l.obj.spec.subnet, &l.ext, &l.requested, &l.valid)
            {
                out.push((
                    Request {
                        kind: Kind::Floating,
                        ext: ext.clone(),
                        order: l.order.clone(),
                        label: format!("LoadBalancer {}", l.key),
                        requested: *requested,
                        held: status_addr(l.obj.status.as_ref().and_then(|s| s.address.as_deref())),
                    },
                    true,
                    i,
                ));
            }
        }
        out
    }

    /// Record the result of a request from [`Services::requests`].
    pub(super) fn allocated(&mut self, lb: bool, i: usize, res: Result<Ipv4Addr, Fail>) {
        if lb {
            self.lbs[i].address = Some(res);
        } else {
            self.pfs[i].address = Some(res);
        }
    }

    /// Everything after addresses and SNAT scheduling: firewall nodes,
    /// targets that have floating IPs, port conflicts, subnet virtual IPs,
    /// scheduling and views.
    pub(super) fn finish(
        &mut self,
        routers: &[RouterState],
        fip_targets: &BTreeSet<(ObjectKey, Ipv4Addr)>,
        fip_nodes: &BTreeMap<ObjectKey, BTreeSet<String>>,
        snats: &[SnatState],
    ) {
        let snat_view = |router: &ObjectKey| -> Option<&SnatView> {
            snat_of(snats, router).and_then(|s| s.view.as_ref())
        };
        for f in self.fws.iter_mut().filter(|f| f.valid.is_ok()) {
            let rkey = &routers[f.router.expect("valid")].key;
            let mut nodes: BTreeSet<String> = fip_nodes.get(rkey).cloned().unwrap_or_default();
            if let Some(v) = snat_view(rkey) {
                nodes.extend(v.candidates.iter().cloned());
            }
            f.nodes = nodes.into_iter().collect();
        }

        // Port forwardings: no target with a floating IP; on a shared SNAT
        // address, first come keeps a port.
        let mut owners: BTreeMap<(Ipv4Addr, &str, u16), ObjectKey> = BTreeMap::new();
        for p in self.pfs.iter_mut() {
            if p.valid.is_err() {
                continue;
            }
            let rkey = routers[p.router.expect("valid")].key.clone();
            if let Some(t) = p
                .targets
                .iter()
                .flatten()
                .find(|t| fip_targets.contains(&(rkey.clone(), t.ip)))
            {
                p.valid = Err(fail(
                    "TargetHasFloatingIP",
                    format!(
                        "target {} has a FloatingIP: its replies would leave through the floating-IP path, not the gateway; forward to it through its floating IP instead",
                        t.ip
                    ),
                ));
                continue;
            }
            let Some(v) = snat_view(&rkey) else {
                p.scheduled = Err(fail(
                    "GatewayNotReady",
                    "the router's SnatGateway is not allocated",
                ));
                continue;
            };
            let address = if p.obj.spec.dedicated_address {
                match &p.address {
                    Some(Ok(a)) => *a,
                    _ => continue,
                }
            } else {
                v.address
            };
            let ports = || {
                (p.spans.iter())
                    .flat_map(|&(proto, lo, hi, _)| (lo..=hi).map(move |port| (proto, port)))
            };
            let clash = ports().find_map(|(proto, port)| {
                let o = owners.get(&(address, proto, port))?;
                Some(format!(
                    "{proto} port {port} of {address} is already forwarded by PortForwarding {o}"
                ))
            });
            if let Some(m) = clash {
                p.valid = Err(fail("PortInUse", m));
                continue;
            }
            for (proto, port) in ports() {
                owners.insert((address, proto, port), p.key.clone());
            }
            match &v.node {
                Some(n) => p.node = Some(n.clone()),
                None => {
                    also(
                        &mut p.scheduled,
                        Err(fail(
                            "GatewayNotScheduled",
                            "the router's SnatGateway has no node",
                        )),
                    );
                }
            }
            let forwards = (p.spans.iter().zip(&p.targets))
                .filter_map(|(&(proto, lo, hi, internal), t)| {
                    Some(ForwardEntry {
                        protocol: proto.to_string(),
                        external: (lo, hi),
                        fixed_ip: t.as_ref()?.ip,
                        internal,
                    })
                })
                .collect();
            p.view = Some(ForwardingView {
                key: p.key.clone(),
                router: rkey,
                address,
                dedicated: p.obj.spec.dedicated_address,
                forwards,
            });
        }

        // Load balancers on a subnet: a free host address of it.
        let mut taken: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        let mut order: Vec<usize> = (0..self.lbs.len()).collect();
        // As external addresses: holders, then requested addresses, then
        // the rest, each in precedence order.
        let rank = |l: &LbState| match (&l.obj.status, &l.requested) {
            (Some(s), _) if s.address.is_some() => 0,
            (_, Ok(Some(_))) => 1,
            _ => 2,
        };
        order.sort_by(|&a, &b| {
            let (x, y) = (&self.lbs[a], &self.lbs[b]);
            (rank(x), &x.order).cmp(&(rank(y), &y.order))
        });
        for i in order {
            let l = &mut self.lbs[i];
            let Some(sub) = l.obj.spec.subnet.clone() else {
                continue;
            };
            if l.valid.is_err() {
                continue;
            }
            let router = &routers[l.router.expect("valid")];
            let Some(view) = router.view.as_ref() else {
                continue;
            };
            let Some(s) = view.subnets.iter().find(|s| s.name == sub) else {
                continue;
            };
            let used = taken.entry(format!("{}/{sub}", router.key)).or_default();
            let mut avoid: BTreeSet<Ipv4Addr> = (view.endpoints.iter())
                .filter(|e| e.subnet == sub)
                .map(|e| e.ip)
                .collect();
            avoid.insert(s.gateway);
            avoid.extend(router.routes.iter().map(|(_, via)| *via));
            if let Some(p) = snat_view(&router.key).and_then(|v| v.port_on(&sub)) {
                avoid.insert(p.ip);
            }
            avoid.extend(used.iter().copied());
            let held = status_addr(l.obj.status.as_ref().and_then(|s| s.address.as_deref()))
                .filter(|a| is_host(s.cidr, *a) && !avoid.contains(a));
            let res = match l.requested.clone().expect("valid") {
                Some(a) if avoid.contains(&a) => Err(fail(
                    "AddressInUse",
                    format!("{a} on subnet {sub:?} is in use (a workload, the gateway, the SNAT port or another virtual IP)"),
                )),
                Some(a) => Ok(a),
                None => held
                    .or_else(|| highest_free_host(s.cidr, &avoid))
                    .ok_or_else(|| fail("SubnetFull", format!("subnet {sub:?} has no free address"))),
            };
            if let Ok(a) = &res {
                used.insert(*a);
            }
            l.address = Some(res);
        }

        for l in self.lbs.iter_mut() {
            if l.valid.is_err() {
                continue;
            }
            let rkey = routers[l.router.expect("valid")].key.clone();
            let Some(v) = snat_view(&rkey) else {
                l.scheduled = Err(fail(
                    "GatewayNotReady",
                    "the router's SnatGateway is not allocated",
                ));
                continue;
            };
            let Some(Ok(address)) = l.address else {
                continue;
            };
            match &v.node {
                Some(n) => l.node = Some(n.clone()),
                None => {
                    l.scheduled = Err(fail(
                        "GatewayNotScheduled",
                        "the router's SnatGateway has no node",
                    ))
                }
            }
            let spec = &l.obj.spec;
            let hc = spec.health_check.clone().unwrap_or_default();
            let mut hports: Vec<u16> = match hc.port.and_then(crate::api::services::port) {
                Some(p) => vec![p],
                None => l
                    .ports
                    .iter()
                    .filter(|p| p.0 == "tcp")
                    .map(|p| p.2)
                    .collect(),
            };
            hports.sort();
            hports.dedup();
            l.view = Some(LoadBalancerView {
                key: l.key.clone(),
                router: rkey,
                address,
                subnet: spec.subnet.clone(),
                ports: (l.ports.iter())
                    .map(|&(proto, port, target)| (proto.to_string(), port, target))
                    .collect(),
                backends: l.backends.iter().map(|(ip, _)| *ip).collect(),
                client_affinity: spec.session_affinity == crate::api::SessionAffinity::ClientIp,
                health: {
                    // The schema bounds these; clamped all the same.
                    let secs = |v: i32, max: i32| v.clamp(1, max) as u64 * 1000;
                    let count = |v: i32| v.clamp(1, 10) as u32;
                    let interval_ms = secs(hc.interval_seconds, 300);
                    HealthView {
                        interval_ms,
                        timeout_ms: secs(hc.timeout_seconds, 60).min(interval_ms),
                        rise: count(hc.healthy_threshold),
                        fall: count(hc.unhealthy_threshold),
                        ports: hports,
                    }
                },
            });
        }
    }

    /// Statuses and views into `out`. `down`: per LoadBalancer, the backends
    /// its serving node reports failing.
    pub(super) fn output(self, out: &mut Resolution, cluster: &Cluster, now: Timestamp) {
        for f in self.fws {
            let old = f.obj.status.clone().unwrap_or_default();
            let generation = f.obj.metadata.generation;
            let mut c = CondSet::new(&old.conditions, generation, now);
            c.put(VALID, &f.valid, "Valid");
            c.ready(&[&f.valid]);
            let ok = f.valid.is_ok();
            out.firewalls.insert(
                f.key.clone(),
                RouterFirewallStatus {
                    observed_generation: generation,
                    conditions: c.finish(),
                    nodes: if ok { f.nodes.clone() } else { Vec::new() },
                },
            );
            if let (true, Some((ingress, egress))) = (ok, f.rules) {
                out.view.firewalls.push(FirewallView {
                    key: f.key,
                    router: ObjectKey::new(
                        f.obj.namespace().unwrap_or_default(),
                        &f.obj.spec.router,
                    ),
                    default_allow: f.obj.spec.default_action == FirewallAction::Allow,
                    ingress,
                    egress,
                });
            }
        }
        out.view.firewalls.sort_by(|a, b| a.key.cmp(&b.key));

        for p in self.pfs {
            let old = p.obj.status.clone().unwrap_or_default();
            let generation = p.obj.metadata.generation;
            let allocated: Check = match (&p.address, p.obj.spec.dedicated_address, &p.view) {
                (Some(Err(f)), _, _) => Err(f.clone()),
                (_, _, Some(_)) => Ok(()),
                _ => Err(fail("NotAllocated", "no address while Valid is False")),
            };
            let scheduled = match (&p.valid, &p.scheduled) {
                (Err(v), _) => Err(fail(
                    "NotValid",
                    format!("not scheduled while Valid is False: {}", v.message),
                )),
                (_, s) => s.clone(),
            };
            let mut c = CondSet::new(&old.conditions, generation, now);
            c.put(VALID, &p.valid, "Valid");
            c.put(ALLOCATED, &allocated, "Allocated");
            c.put(SCHEDULED, &scheduled, "Scheduled");
            c.ready(&[&p.valid, &allocated, &scheduled]);
            out.port_forwardings.insert(
                p.key.clone(),
                PortForwardingStatus {
                    observed_generation: generation,
                    conditions: c.finish(),
                    address: p.view.as_ref().map(|v| v.address.to_string()),
                    node: p.node.clone().filter(|_| p.view.is_some()),
                    fixed_ips: p
                        .targets
                        .iter()
                        .filter(|_| p.valid.is_ok())
                        .map(|t| t.as_ref().map(|t| t.ip.to_string()).unwrap_or_default())
                        .collect(),
                },
            );
            if let Some(v) = p.view {
                out.view.port_forwardings.push(v);
            }
        }
        out.view.port_forwardings.sort_by(|a, b| a.key.cmp(&b.key));

        for l in self.lbs {
            let old = l.obj.status.clone().unwrap_or_default();
            let generation = l.obj.metadata.generation;
            let allocated: Check = match &l.address {
                Some(Ok(_)) => Ok(()),
                Some(Err(f)) => Err(f.clone()),
                None => Err(l
                    .valid
                    .clone()
                    .err()
                    .unwrap_or_else(|| fail("NotAllocated", "no virtual IP was allocated"))),
            };
            let scheduled = match (&l.valid, &l.scheduled) {
                (Err(v), _) => Err(fail(
                    "NotValid",
                    format!("not scheduled while Valid is False: {}", v.message),
                )),
                (_, s) => s.clone(),
            };
            // Health as the serving node reports it.
            let key = l.key.to_string();
            let down: BTreeSet<Ipv4Addr> = l
                .node
                .as_deref()
                .and_then(|n| cluster.nodes.get(n))
                .map(|n| {
                    n.lb_down
                        .iter()
                        .filter_map(|e| {
                            let (k, ip) = e.rsplit_once('=')?;
                            (k == key).then(|| ip.parse().ok()).flatten()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let backends: Vec<BackendStatus> = (l.backends.iter())
                .map(|(ip, pod)| BackendStatus {
                    ip: ip.to_string(),
                    pod: pod.clone(),
                    healthy: !down.contains(ip),
                })
                .collect();
            let healthy_n = backends.iter().filter(|b| b.healthy).count();
            let health: Check = if l.view.is_none() {
                Err(fail("NotServed", "not served"))
            } else if backends.is_empty() {
                Err(fail("NoBackends", "no backend is selected"))
            } else if healthy_n < backends.len() {
                Err(fail(
                    "BackendsDown",
                    format!(
                        "failing their health check: {}",
                        (backends.iter())
                            .filter(|b| !b.healthy)
                            .map(|b| b.ip.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            } else {
                Ok(())
            };
            let mut c = CondSet::new(&old.conditions, generation, now);
            c.put(VALID, &l.valid, "Valid");
            c.put(ALLOCATED, &allocated, "Allocated");
            c.put(SCHEDULED, &scheduled, "Scheduled");
            c.put(BACKENDS_HEALTHY, &health, "BackendsHealthy");
            c.ready(&[&l.valid, &allocated, &scheduled]);
            let served = l.view.is_some();
            out.load_balancers.insert(
                l.key.clone(),
                LoadBalancerStatus {
                    observed_generation: generation,
                    conditions: c.finish(),
                    address: match &l.address {
                        Some(Ok(a)) => Some(a.to_string()),
                        _ => None,
                    },
                    node: l.node.clone().filter(|_| served),
                    healthy: served.then(|| format!("{healthy_n}/{}", backends.len())),
                    backends,
                },
            );
            if let Some(v) = l.view {
                out.view.load_balancers.push(v);
            }
        }
        out.view.load_balancers.sort_by(|a, b| a.key.cmp(&b.key));
    }
}

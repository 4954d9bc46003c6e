//! The node planner: `plan_node(view, node)` is each node's desired kernel
//! state, computed without I/O.
//!
//! East-west: every node that hosts an endpoint of a router gets the router's
//! `qrouter-` namespace with a `qr-` port on every subnet (gateway IP and the
//! subnet's gateway MAC, identical on all nodes), the subnets' bridges and
//! VXLAN devices, FDB entries for remote VTEPs and endpoints (l2population),
//! and permanent neighbours for every endpoint: the router never ARPs across
//! nodes. A bridge-family nftables table keeps gateway MACs off the overlay.
//!
//! North-south: a floating IP is served on its endpoint's node through the
//! node's `fip-<hash of the external network's name>` namespace; a router's
//! SNAT gateway is a `snat-` namespace on each of its candidate nodes,
//! reached from every `qrouter-` through a per-subnet policy rule ordered
//! after the floating-IP rule. Only the serving candidate has it attached
//! (`sgb-` ports on the subnet bridges, `qgb-` on the external bridge or
//! the `qg-` macvlan present); the others keep it warm and detached. Which
//! candidate serves is the plan's first ([`plan_node`], what the digest
//! covers) unless the node decided otherwise at run time
//! ([`plan_node_serving`], see `crate::agent::gateway`): then the FDB entries of
//! the `sg-` MACs point at the serving node's VTEP. Every namespace is named from an index or a bounded hash, never
//! from user names (see `names`).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::model::*;
use super::names;
use super::tables::{
    add_firewall, bridge_table, fip_table, port_element, snat_table, GatewayServices,
};
use super::view::*;

/// Desired kernel state of `node`. A node the view has no facts for (its
/// agent has not published a VTEP yet) gets an empty plan.
pub fn plan_node(view: &ClusterView, node: &str) -> NodeState {
    plan_node_serving(view, node, &Serving::new())
}

/// Per SnatGateway, the node that serves it in this node's view, where it
/// differs from the plan's first candidate (run-time state, never part of
/// the reported digest).
pub type Serving = BTreeMap<ObjectKey, String>;

/// The node serving `s` given `serving`: the override, else the first
/// candidate.
pub fn serving_node<'a>(s: &'a SnatView, serving: &'a Serving) -> Option<&'a str> {
    serving
        .get(&s.key)
        .map(String::as_str)
        .or(s.candidates.first().map(String::as_str))
}

/// [`plan_node`] with the serving node of some SnatGateways decided at run
/// time: that node has the gateway attached, every other node of the router
/// sends to it.
pub fn plan_node_serving(view: &ClusterView, node: &str, serving: &Serving) -> NodeState {
    plan_node_run(view, node, serving, &Down::new())
}

/// Per LoadBalancer, the backends this node's health checks find failing
/// (run-time state like [`Serving`], never part of the reported digest):
/// the gateway leaves them out while it serves.
pub type Down = BTreeMap<ObjectKey, BTreeSet<Ipv4Addr>>;

/// [`plan_node_serving`] with the backends this node found failing left
/// out of its load balancers.
pub fn plan_node_run(view: &ClusterView, node: &str, serving: &Serving, down: &Down) -> NodeState {
    let mut st = NodeState::default();
    let Some(facts) = view.nodes.get(node) else {
        return st;
    };
    let snat_by_router: BTreeMap<&ObjectKey, &SnatView> =
        view.snat_gateways.iter().map(|s| (&s.router, s)).collect();

    let mut gw_macs = BTreeSet::new();
    let mut gw_ips = BTreeSet::new();
    let mut bridged = BTreeSet::new();
    for router in &view.routers {
        let snat = snat_by_router.get(&router.key).copied();
        let candidates: &[String] = snat.map_or(&[], |s| &s.candidates);
        let Some(hosted) = carries(router, candidates, node) else {
            continue;
        };
        // Nodes that carry the router's subnets: its endpoints' (standby
        // ones too) and its SNAT candidates.
        let mut carriers: BTreeSet<&str> = (router.endpoints.iter().chain(&router.standby))
            .map(|e| e.node.as_str())
            .collect();
        carriers.extend(candidates.iter().map(String::as_str));
        let snat_node = snat.and_then(|s| serving_node(s, serving));
        for subnet in &router.subnets {
            if bridged.insert(subnet.vni) {
                plan_subnet_l2(
                    &mut st.root,
                    view,
                    facts,
                    node,
                    router,
                    subnet,
                    &carriers,
                    snat.zip(snat_node),
                );
            }
        }
        if hosted {
            plan_qrouter(&mut st, view, router, snat);
            for subnet in &router.subnets {
                gw_macs.insert(port_element(subnet.vni, names::gateway_mac(subnet.vni)));
                gw_ips.insert(port_element(subnet.vni, subnet.gateway));
            }
        }
    }
    if !bridged.is_empty() {
        st.root.nft = Some(bridge_table(facts.dvr_mac, gw_macs, gw_ips));
    }
    plan_floating(&mut st, view, node);
    plan_snat(&mut st, view, node, serving, down);
    st
}

/// Whether `node` carries `router`: `Some(true)` when one of the router's
/// endpoints (or standby endpoints) is there, `Some(false)` when it is only
/// one of the SNAT `candidates`, None when neither.
fn carries(router: &RouterView, candidates: &[String], node: &str) -> Option<bool> {
    let hosted = (router.endpoints.iter().chain(&router.standby)).any(|e| e.node == node);
    (hosted || candidates.iter().any(|c| c == node)).then_some(hosted)
}

/// The routers whose state `node`'s plan holds (see [`carries`]): the
/// routers whose every Port the node's agent must know.
pub fn routers_on(view: &ClusterView, node: &str) -> BTreeSet<ObjectKey> {
    let candidates: BTreeMap<&ObjectKey, &[String]> = (view.snat_gateways.iter())
        .map(|s| (&s.router, s.candidates.as_slice()))
        .collect();
    (view.routers.iter())
        .filter(|r| {
            let c = candidates.get(&r.key).copied().unwrap_or(&[]);
            carries(r, c, node).is_some()
        })
        .map(|r| r.key.clone())
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn plan_subnet_l2(
    root: &mut NsState,
    view: &ClusterView,
    facts: &NodeFacts,
    node: &str,
    router: &RouterView,
    subnet: &SubnetView,
    carriers: &BTreeSet<&str>,
    snat: Option<(&SnatView, &str)>,
) {
    let br = names::bridge(subnet.vni);
    let vx = names::vxlan(subnet.vni);
    add_link(root, &br, LinkKind::Bridge, None, None);
    add_link(
        root,
        &vx,
        LinkKind::Vxlan {
            vni: subnet.vni,
            local: facts.vtep,
            port: names::VXLAN_PORT,
        },
        None,
        Some(&br),
    );
    let vtep_of = |n: &str| view.nodes.get(n).map(|f| f.vtep);
    for remote in carriers.iter().filter(|n| **n != node) {
        if let Some(dst) = vtep_of(remote) {
            root.fdb.insert(FdbEntry {
                link: vx.clone(),
                mac: MacAddr::ZERO,
                dst,
            });
        }
    }
    for ep in router
        .endpoints
        .iter()
        .filter(|e| e.subnet == subnet.name && e.node != node)
    {
        if let Some(dst) = vtep_of(&ep.node) {
            root.fdb.insert(FdbEntry {
                link: vx.clone(),
                mac: ep.mac,
                dst,
            });
        }
    }
    // The `sg-` MACs live where the gateway is served.
    if let Some((s, sn)) = snat {
        if sn != node {
            if let (Some(dst), Some(port)) = (vtep_of(sn), s.port_on(&subnet.name)) {
                root.fdb.insert(FdbEntry {
                    link: vx.clone(),
                    mac: port.mac,
                    dst,
                });
            }
        }
    }
}

/// The router's namespace on a node that hosts its endpoints.
fn plan_qrouter(
    st: &mut NodeState,
    view: &ClusterView,
    router: &RouterView,
    snat: Option<&SnatView>,
) {
    let name = names::qrouter_ns(router.index);
    for subnet in &router.subnets {
        let (qr, qrb, br) = (
            names::qr(subnet.vni),
            names::qr_bridge(subnet.vni),
            names::bridge(subnet.vni),
        );
        add_veth(
            st,
            End::named(&name, &qr, Some(names::gateway_mac(subnet.vni))),
            End::root(&qrb, Some(&br)),
        );
    }
    let ns = st.namespaces.entry(name).or_default();
    router_sysctls(ns);
    for (i, subnet) in router.subnets.iter().enumerate() {
        let qr = names::qr(subnet.vni);
        port_sysctls(ns, &qr);
        let prefix = Ipv4Net::new(subnet.gateway, subnet.cidr.prefix_len()).expect("valid prefix");
        ns.addresses.insert(Address {
            link: qr.clone(),
            addr: prefix,
        });
        for ep in router.endpoints.iter().filter(|e| e.subnet == subnet.name) {
            ns.neighbours.insert(Neighbour {
                link: qr.clone(),
                ip: ep.ip,
                mac: ep.mac,
            });
        }
        // Default SNAT: this subnet's traffic that matched nothing in `main`
        // (no default route there) goes to the `sg-` port on the gateway node.
        let port = snat
            .filter(|s| s.node.is_some())
            .and_then(|s| s.port_on(&subnet.name));
        if let Some(port) = port {
            let table = names::snat_table(subnet.vni);
            ns.neighbours.insert(Neighbour {
                link: qr.clone(),
                ip: port.ip,
                mac: port.mac,
            });
            ns.routes.insert(Route {
                table,
                dst: default_net(),
                via: Some(port.ip),
                dev: Some(qr.clone()),
            });
            ns.rules.insert(Rule {
                priority: names::SNAT_RULE_PRIORITY + i as u32,
                from: Some(subnet.cidr),
                fwmark: None,
                table,
            });
            // Virtual IPs on the subnet live on the `sg-` port: the router
            // never ARPs across nodes for them either.
            for lb in (view.load_balancers.iter())
                .filter(|lb| lb.router == router.key && lb.subnet.as_ref() == Some(&subnet.name))
            {
                ns.neighbours.insert(Neighbour {
                    link: qr.clone(),
                    ip: lb.address,
                    mac: port.mac,
                });
            }
        }
    }
    for (dst, via) in &router.routes {
        ns.routes.insert(Route {
            table: MAIN_TABLE,
            dst: *dst,
            via: Some(*via),
            dev: None,
        });
    }
}

fn plan_floating(st: &mut NodeState, view: &ClusterView, node: &str) {
    // Per router served here: its floating IPs (one external network per router).
    let mut by_router: BTreeMap<&ObjectKey, Vec<&FloatingView>> = BTreeMap::new();
    for f in view.floating_ips.iter().filter(|f| f.node == node) {
        by_router.entry(&f.router).or_default().push(f);
    }
    for (rkey, fips) in by_router {
        let Some(router) = view.routers.iter().find(|r| &r.key == rkey) else {
            continue;
        };
        let ext_name = &fips[0].external;
        let Some(ext) = view.external_networks.get(ext_name) else {
            continue;
        };
        let Some(port_ip) = ext.node_ports.get(node) else {
            continue;
        };
        let Some((rfp_ip, fpr_ip)) = names::link_local(router.index) else {
            continue;
        };
        let qns = names::qrouter_ns(router.index);
        if !st.namespaces.contains_key(&qns) {
            // The floating IP's endpoint is not on this node: nothing to serve.
            continue;
        }
        let fns = names::fip_ns(ext_name);
        plan_external_port(
            st,
            &fns,
            ext,
            &names::fg(ext_name),
            &names::fg_bridge(ext_name),
            *port_ip,
            true,
        );
        let (rfp, fpr) = (names::rfp(router.index), names::fpr(router.index));
        add_veth(
            st,
            End::named(&qns, &rfp, None),
            End::named(&fns, &fpr, None),
        );

        let f_ns = st.namespaces.get_mut(&fns).expect("made above");
        port_sysctls(f_ns, &fpr);
        f_ns.addresses.insert(Address {
            link: fpr.clone(),
            addr: Ipv4Net::new(fpr_ip, 31).unwrap(),
        });
        for f in &fips {
            f_ns.routes.insert(Route {
                table: MAIN_TABLE,
                dst: Ipv4Net::new(f.address, 32).unwrap(),
                via: Some(rfp_ip),
                dev: Some(fpr.clone()),
            });
        }
        let q_ns = st.namespaces.get_mut(&qns).expect("checked above");
        port_sysctls(q_ns, &rfp);
        q_ns.addresses.insert(Address {
            link: rfp.clone(),
            addr: Ipv4Net::new(rfp_ip, 31).unwrap(),
        });
        q_ns.routes.insert(Route {
            table: names::FIP_TABLE,
            dst: default_net(),
            via: Some(fpr_ip),
            dev: Some(rfp.clone()),
        });
        q_ns.rules.insert(Rule {
            priority: names::FIP_RULE_PRIORITY,
            from: None,
            fwmark: Some(names::FIP_MARK),
            table: names::FIP_TABLE,
        });
        let mut table = fip_table(&fips);
        if let Some(fw) = view.firewalls.iter().find(|f| &f.router == rkey) {
            // The floating-IP path crosses `rfp-` both ways.
            add_firewall(&mut table, fw, "rfp-*");
        }
        q_ns.nft = Some(table);
    }
}

/// The `snat-` namespace on every candidate node: programmed in full
/// everywhere (warm standby), attached only where it is served: there the
/// `sgb-` ports are on the subnet bridges and the external port is on the
/// external network (`qgb-` on its bridge; a `qg-` macvlan exists only
/// there, a macvlan cannot be detached).
fn plan_snat(st: &mut NodeState, view: &ClusterView, node: &str, serving: &Serving, down: &Down) {
    for s in view
        .snat_gateways
        .iter()
        .filter(|s| s.candidates.iter().any(|c| c == node))
    {
        let active = serving_node(s, serving) == Some(node);
        let Some(router) = view.routers.iter().find(|r| r.key == s.router) else {
            continue;
        };
        let Some(ext) = view.external_networks.get(&s.external) else {
            continue;
        };
        let name = names::snat_ns(router.index);
        if active || matches!(ext.attachment, Attachment::Bridge(_)) {
            plan_external_port(
                st,
                &name,
                ext,
                &names::qg(router.index),
                &names::qg_bridge(router.index),
                s.address,
                false,
            );
            if !active {
                detach(&mut st.root, &names::qg_bridge(router.index));
            }
        } else {
            router_sysctls(st.namespaces.entry(name.clone()).or_default());
        }
        for subnet in &router.subnets {
            let Some(port) = s.port_on(&subnet.name) else {
                continue;
            };
            let (sg, sgb, br) = (
                names::sg(subnet.vni),
                names::sg_bridge(subnet.vni),
                names::bridge(subnet.vni),
            );
            add_veth(
                st,
                End::named(&name, &sg, Some(port.mac)),
                End::root(&sgb, active.then_some(br.as_str())),
            );
            let ns = st.namespaces.get_mut(&name).expect("made above");
            port_sysctls(ns, &sg);
            ns.addresses.insert(Address {
                link: sg.clone(),
                addr: Ipv4Net::new(port.ip, subnet.cidr.prefix_len()).unwrap(),
            });
            for ep in router.endpoints.iter().filter(|e| e.subnet == subnet.name) {
                ns.neighbours.insert(Neighbour {
                    link: sg.clone(),
                    ip: ep.ip,
                    mac: ep.mac,
                });
            }
        }
        let ns = st.namespaces.get_mut(&name).expect("made above");
        for (dst, via) in &router.routes {
            ns.routes.insert(Route {
                table: MAIN_TABLE,
                dst: *dst,
                via: Some(*via),
                dev: None,
            });
        }
        let qg = names::qg(router.index);
        let svc = GatewayServices {
            firewall: view.firewalls.iter().find(|f| f.router == router.key),
            forwardings: (view.port_forwardings.iter())
                .filter(|f| f.router == router.key)
                .collect(),
            balancers: (view.load_balancers.iter())
                .filter(|lb| lb.router == router.key)
                .map(|lb| {
                    let out = down.get(&lb.key);
                    let healthy = (lb.backends.iter())
                        .filter(|b| out.is_none_or(|d| !d.contains(b)))
                        .copied()
                        .collect();
                    (lb, healthy)
                })
                .collect(),
            ports: (router.subnets.iter())
                .filter_map(|sub| Some((names::sg(sub.vni), s.port_on(&sub.name)?.ip)))
                .collect(),
        };
        // Addresses of its own on the gateway's ports, as /32s (each its
        // own primary: none depends on another's removal): dedicated
        // forwarding addresses and external virtual IPs on `qg-` (where it
        // exists), subnet virtual IPs on that subnet's `sg-`.
        let has_qg = ns.links.contains_key(&qg);
        let dedicated = (svc.forwardings.iter())
            .filter(|f| f.dedicated)
            .map(|f| f.address);
        let ext_vips = (svc.balancers.iter())
            .filter(|(lb, _)| lb.subnet.is_none())
            .map(|(lb, _)| lb.address);
        for a in dedicated.chain(ext_vips).filter(|_| has_qg) {
            ns.addresses.insert(Address {
                link: qg.clone(),
                addr: Ipv4Net::new(a, 32).expect("valid prefix"),
            });
        }
        for (lb, _) in &svc.balancers {
            let Some(sub) =
                (lb.subnet.as_ref()).and_then(|n| router.subnets.iter().find(|s| &s.name == n))
            else {
                continue;
            };
            ns.addresses.insert(Address {
                link: names::sg(sub.vni),
                addr: Ipv4Net::new(lb.address, 32).expect("valid prefix"),
            });
        }
        ns.nft = Some(snat_table(&qg, s.address, &svc));
    }
}

/// Take `link` (in the root namespace) off its bridge.
fn detach(root: &mut NsState, link: &str) {
    if let Some(l) = root.links.get_mut(link) {
        l.master = None;
    }
}

/// A namespace with a port on an external network: `fg-` in `fip-` (proxy
/// ARP for the floating IPs routed behind it) or `qg-` in `snat-`.
fn plan_external_port(
    st: &mut NodeState,
    ns_name: &str,
    ext: &ExternalView,
    port: &str,
    bridge_port: &str,
    addr: Ipv4Addr,
    proxy_arp: bool,
) {
    let mac = Some(names::external_mac(addr));
    match &ext.attachment {
        Attachment::Bridge(br) => add_veth(
            st,
            End::named(ns_name, port, mac),
            End::root(bridge_port, Some(br)),
        ),
        Attachment::Interface(parent) => {
            let ns = st.namespaces.entry(ns_name.to_string()).or_default();
            add_link(
                ns,
                port,
                LinkKind::Macvlan {
                    parent: parent.clone(),
                },
                mac,
                None,
            )
        }
    }
    let ns = st.namespaces.get_mut(ns_name).expect("made above");
    router_sysctls(ns);
    port_sysctls(ns, port);
    if proxy_arp {
        ns.sysctls
            .insert(format!("net/ipv4/conf/{port}/proxy_arp"), "1".into());
        // The default delays the first proxy ARP reply by up to 0.8 s.
        ns.sysctls
            .insert(format!("net/ipv4/neigh/{port}/proxy_delay"), "0".into());
    }
    ns.addresses.insert(Address {
        link: port.to_string(),
        addr: Ipv4Net::new(addr, ext.cidr.prefix_len()).unwrap(),
    });
    ns.routes.insert(Route {
        table: MAIN_TABLE,
        dst: default_net(),
        via: Some(ext.gateway),
        dev: Some(port.to_string()),
    });
}

fn default_net() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).unwrap()
}

fn add_link(
    ns: &mut NsState,
    name: &str,
    kind: LinkKind,
    mac: Option<MacAddr>,
    master: Option<&str>,
) {
    let mtu = match kind {
        LinkKind::Macvlan { .. } => None,
        _ => Some(names::OVERLAY_MTU),
    };
    ns.links.insert(
        name.to_string(),
        Link {
            name: name.to_string(),
            kind,
            mac,
            master: master.map(str::to_string),
            mtu,
        },
    );
}

/// One end of a veth pair.
struct End<'a> {
    ns: NsRef,
    name: &'a str,
    mac: Option<MacAddr>,
    master: Option<&'a str>,
}

impl<'a> End<'a> {
    fn root(name: &'a str, master: Option<&'a str>) -> Self {
        End {
            ns: NsRef::Root,
            name,
            mac: None,
            master,
        }
    }
    fn named(ns: &str, name: &'a str, mac: Option<MacAddr>) -> Self {
        End {
            ns: NsRef::Named(ns.to_string()),
            name,
            mac,
            master: None,
        }
    }
}

fn ns_mut<'s>(st: &'s mut NodeState, r: &NsRef) -> &'s mut NsState {
    match r {
        NsRef::Root => &mut st.root,
        NsRef::Named(n) => st.namespaces.entry(n.clone()).or_default(),
    }
}

/// A veth pair; each end is listed in its own namespace, naming the other.
fn add_veth(st: &mut NodeState, a: End, b: End) {
    for (me, other) in [(&a, &b), (&b, &a)] {
        let kind = LinkKind::Veth {
            peer: other.name.to_string(),
            peer_ns: other.ns.clone(),
        };
        add_link(ns_mut(st, &me.ns), me.name, kind, me.mac, me.master);
    }
}

/// A routing namespace: forward, never redirect, no reverse-path filter
/// (routing here is asymmetric by design).
fn router_sysctls(ns: &mut NsState) {
    for (k, v) in [
        ("net/ipv4/ip_forward", "1"),
        // Redirects would send workloads straight to the `sg-` port and
        // floating-IP egress would silently bypass its NAT.
        ("net/ipv4/conf/all/send_redirects", "0"),
        ("net/ipv4/conf/default/send_redirects", "0"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
    ] {
        ns.sysctls.insert(k.into(), v.into());
    }
}

/// Per-port values: `send_redirects` is OR-ed with `all`, `rp_filter` is
/// the max of the two, so both levels must be set.
fn port_sysctls(ns: &mut NsState, port: &str) {
    ns.sysctls
        .insert(format!("net/ipv4/conf/{port}/send_redirects"), "0".into());
    ns.sysctls
        .insert(format!("net/ipv4/conf/{port}/rp_filter"), "0".into());
}

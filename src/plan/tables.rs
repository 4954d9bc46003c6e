//! The nftables tables the node planner puts in a node's namespaces, as
//! plain values (the dataplane renders and diffs them).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::model::*;
use super::names;
use super::view::{FirewallRuleView, FirewallView, FloatingView, ForwardingView, LoadBalancerView};

/// Keeps gateway MACs off the overlay (bridge family, node root namespace).
///
/// Every set is keyed by the VXLAN port (`ifname . address`), so each
/// segment's rules see only that segment's gateway address and MAC: two
/// tenants may use the same CIDR with different gateways, and one tenant's
/// workload may hold the address that is the other tenant's gateway.
/// `gw_macs` / `gw_ips` elements are `dvrvx-<vni> . <mac or address>`.
pub(super) fn bridge_table(
    dvr_mac: MacAddr,
    gw_macs: BTreeSet<String>,
    gw_ips: BTreeSet<String>,
) -> NftTable {
    let set = |key: &str, elems: BTreeSet<String>| NftSet {
        key_type: key.into(),
        data_type: None,
        elements: elems.into_iter().map(|e| (e, None)).collect(),
    };
    NftTable {
        family: NftFamily::Bridge,
        name: NFT_TABLE.into(),
        sets: BTreeMap::from([
            ("gw_macs".to_string(), set("ifname . ether_addr", gw_macs)),
            ("gw_ips".to_string(), set("ifname . ipv4_addr", gw_ips)),
        ]),
        chains: BTreeMap::from([(
            "forward".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "filter".into(),
                    hook: "forward".into(),
                    priority: 0,
                }),
                rules: vec![
                    // Every node answers for its segment's gateway itself:
                    // never across.
                    "arp operation request oifname . arp daddr ip @gw_ips drop".into(),
                    "oifname . ether daddr @gw_macs drop".into(),
                    // Routed frames leave with the node's DVR MAC as source.
                    format!("oifname . ether saddr @gw_macs ether saddr set {dvr_mac}"),
                ],
            },
        )]),
    }
}

/// The element of a per-port bridge set: `<VXLAN port> . <value>`, in the
/// notation nft lists it back (an interface name needs no quotes here).
pub(super) fn port_element(vni: u32, value: impl std::fmt::Display) -> String {
    format!("{} . {value}", names::vxlan(vni))
}

fn base(kind: &str, hook: &str, priority: i32) -> Option<NftBaseChain> {
    Some(NftBaseChain {
        kind: kind.into(),
        hook: hook.into(),
        priority,
    })
}

/// A router's firewall in `t`: the base chain `forward` accepts replies
/// (stateful) and sends new flows that enter through `port` (an interface
/// glob: the router's side of the north-south path) to `fw_in`, those that
/// leave through it to `fw_out`; both end in the default action. Other
/// forwarded traffic (east-west, hairpin) is not looked at. A policy change
/// rewrites these chains in the table's one transaction; flows already
/// accepted keep their conntrack entries, and their packets are checked
/// again (only replies are accepted without the rules), so a flow the new
/// rules still allow is not dropped and one they deny stops at once.
pub(super) fn add_firewall(t: &mut NftTable, fw: &FirewallView, port: &str) {
    let default = if fw.default_allow { "accept" } else { "drop" };
    let chain = |rules: &[FirewallRuleView], remote: &str| NftChain {
        base: None,
        rules: rules
            .iter()
            .map(|r| firewall_rule(r, remote))
            .chain([default.to_string()])
            .collect(),
    };
    t.chains.insert("fw_in".into(), chain(&fw.ingress, "saddr"));
    t.chains.insert("fw_out".into(), chain(&fw.egress, "daddr"));
    t.chains.insert(
        "forward".into(),
        NftChain {
            base: base("filter", "forward", 0),
            rules: vec![
                "ct direction reply accept".into(),
                "ct state related accept".into(),
                format!("iifname \"{port}\" jump fw_in"),
                format!("oifname \"{port}\" jump fw_out"),
            ],
        },
    );
}

/// One firewall rule in nft syntax; `remote` is `saddr` (ingress) or
/// `daddr` (egress).
fn firewall_rule(r: &FirewallRuleView, remote: &str) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &r.protocol {
        parts.push(format!("meta l4proto {p}"));
    }
    // One value is matched as such, several as an anonymous set: smaller
    // netlink messages (a set is objects of its own), same meaning.
    let one_or_set = |items: Vec<String>| match items.as_slice() {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    };
    if !r.ports.is_empty() {
        let ports: Vec<String> = (r.ports.iter())
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        parts.push(format!("th dport {}", one_or_set(ports)));
    }
    if !r.cidrs.is_empty() {
        let cidrs: Vec<String> = r.cidrs.iter().map(|c| c.to_string()).collect();
        parts.push(format!("ip {remote} {}", one_or_set(cidrs)));
    }
    parts.push(if r.allow { "accept" } else { "drop" }.into());
    parts.join(" ")
}

/// Floating-IP NAT in a `qrouter-`: maps keyed by address, so adding a
/// floating IP is two map elements and a set element, never a rule.
pub(super) fn fip_table(fips: &[&FloatingView]) -> NftTable {
    let map = |pairs: Vec<(String, String)>| NftSet {
        key_type: "ipv4_addr".into(),
        data_type: Some("ipv4_addr".into()),
        elements: pairs.into_iter().map(|(k, v)| (k, Some(v))).collect(),
    };
    let dnat = fips
        .iter()
        .map(|f| (f.address.to_string(), f.fixed_ip.to_string()))
        .collect();
    let snat = fips
        .iter()
        .map(|f| (f.fixed_ip.to_string(), f.address.to_string()))
        .collect();
    let fixed = NftSet {
        key_type: "ipv4_addr".into(),
        data_type: None,
        elements: fips
            .iter()
            .map(|f| (f.fixed_ip.to_string(), None))
            .collect(),
    };
    NftTable {
        family: NftFamily::Ip,
        name: NFT_TABLE.into(),
        sets: BTreeMap::from([
            (names::FIP_DNAT_MAP.to_string(), map(dnat)),
            ("fip_snat".to_string(), map(snat)),
            ("fip_fixed".to_string(), fixed),
        ]),
        chains: BTreeMap::from([
            (
                "mangle".to_string(),
                NftChain {
                    base: base("filter", "prerouting", -150),
                    rules: vec![format!(
                        "ip saddr @fip_fixed meta mark set {:#x}",
                        names::FIP_MARK
                    )],
                },
            ),
            (
                "prerouting".to_string(),
                NftChain {
                    base: base("nat", "prerouting", -100),
                    rules: vec!["iifname \"rfp-*\" dnat to ip daddr map @fip_dnat".into()],
                },
            ),
            (
                "postrouting".to_string(),
                NftChain {
                    base: base("nat", "postrouting", 100),
                    rules: vec!["oifname \"rfp-*\" snat to ip saddr map @fip_snat".into()],
                },
            ),
        ]),
    }
}

/// What a `snat-` namespace serves besides default SNAT.
pub(super) struct GatewayServices<'a> {
    pub firewall: Option<&'a FirewallView>,
    pub forwardings: Vec<&'a ForwardingView>,
    /// Each load balancer with the backends to use (the healthy ones).
    pub balancers: Vec<(&'a LoadBalancerView, Vec<Ipv4Addr>)>,
    /// `(sg- port, its address)` per subnet: traffic DNATed back into a
    /// subnet (hairpin, load balancing) leaves with that address.
    pub ports: Vec<(String, Ipv4Addr)>,
}

/// Default SNAT in a `snat-` namespace, and the router's central services:
/// port forwarding (one map keyed by `address . protocol . port`, so a
/// forward is a map element, never a rule), load balancers (one rule per
/// virtual IP and port: `numgen random`, or `jhash ip saddr` for client
/// affinity, over the healthy backends) and the firewall on `qg-`.
pub(super) fn snat_table(qg: &str, address: Ipv4Addr, svc: &GatewayServices) -> NftTable {
    let mut t = NftTable {
        family: NftFamily::Ip,
        name: NFT_TABLE.into(),
        sets: BTreeMap::new(),
        chains: BTreeMap::new(),
    };
    // The forwarding map and the rules around it are there whether or
    // not the router forwards anything: a forward is a map element, and
    // the first one does not rewrite a chain (a rewrite waits for an RCU
    // grace period, ~10 ms).
    let mut elements = BTreeMap::new();
    for f in &svc.forwardings {
        for e in &f.forwards {
            for (i, port) in (e.external.0..=e.external.1).enumerate() {
                let internal = u32::from(e.internal) + i as u32;
                elements.insert(
                    format!("{} . {} . {port}", f.address, e.protocol),
                    Some(format!("{} . {internal}", e.fixed_ip)),
                );
            }
        }
    }
    t.sets.insert(
        names::PF_DNAT_MAP.into(),
        NftSet {
            key_type: "ipv4_addr . inet_proto . inet_service".into(),
            data_type: Some("ipv4_addr . inet_service".into()),
            elements,
        },
    );
    let mut pre = vec![format!(
        "dnat ip to ip daddr . meta l4proto . th dport map @{}",
        names::PF_DNAT_MAP
    )];
    for (lb, backends) in &svc.balancers {
        if backends.is_empty() {
            continue; // nothing to send to: the VIP refuses connections
        }
        let hash = if lb.client_affinity {
            format!("jhash ip saddr mod {}", backends.len())
        } else {
            format!("numgen random mod {}", backends.len())
        };
        for (proto, port, target) in &lb.ports {
            let map: Vec<String> = (backends.iter().enumerate())
                .map(|(i, b)| format!("{i} : {b} . {target}"))
                .collect();
            pre.push(format!(
                "ip daddr {} meta l4proto {proto} th dport {port} ct mark set {:#x} dnat ip to {hash} map {{ {} }}",
                lb.address,
                names::LB_CT_MARK,
                map.join(", ")
            ));
        }
    }
    t.chains.insert(
        "prerouting".into(),
        NftChain {
            base: base("nat", "prerouting", -100),
            rules: pre,
        },
    );
    // Load-balanced flows, and flows forwarded back into the subnets
    // (hairpin), leave with the gateway's address on the subnet.
    let mut post = Vec::new();
    for (sg, ip) in &svc.ports {
        post.push(format!(
            "oifname \"{sg}\" ct mark {:#x} snat to {ip}",
            names::LB_CT_MARK
        ));
        post.push(format!(
            "iifname \"sg-*\" oifname \"{sg}\" ct status dnat snat to {ip}"
        ));
    }
    post.push(format!("oifname \"{qg}\" snat to {address}"));
    t.chains.insert(
        "postrouting".into(),
        NftChain {
            base: base("nat", "postrouting", 100),
            rules: post,
        },
    );
    if let Some(fw) = svc.firewall {
        add_firewall(&mut t, fw, qg);
    }
    t
}

//! The nftables tables the node planner puts in a node's namespaces, as
//! plain values (the dataplane renders and diffs them).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::model::*;
use super::names;
use super::view::FloatingView;

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
    let base = |kind: &str, hook: &str, priority| {
        Some(NftBaseChain {
            kind: kind.into(),
            hook: hook.into(),
            priority,
        })
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

/// Default SNAT in a `snat-` namespace.
pub(super) fn snat_table(qg: &str, address: Ipv4Addr) -> NftTable {
    NftTable {
        family: NftFamily::Ip,
        name: NFT_TABLE.into(),
        sets: BTreeMap::new(),
        chains: BTreeMap::from([(
            "postrouting".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "nat".into(),
                    hook: "postrouting".into(),
                    priority: 100,
                }),
                rules: vec![format!("oifname \"{qg}\" snat to {address}")],
            },
        )]),
    }
}

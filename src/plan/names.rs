//! Kernel object names and numbers, derived from allocations. Kernel
//! interface names are at most 15 bytes; every name here fits.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::model::MacAddr;

pub const QROUTER_PREFIX: &str = "qrouter-";
pub const FIP_PREFIX: &str = "fip-";
pub const SNAT_PREFIX: &str = "snat-";
/// Name prefixes of the namespaces kube-dvr makes. A name prefix alone
/// does not make a namespace kube-dvr's: OpenStack's agents use the same
/// names on hosts that run both, so a namespace is kube-dvr's only if it
/// also carries [`OWNER_TAG`] (see `dataplane::netns`).
pub const OWNED_NETNS_PREFIXES: [&str; 3] = [QROUTER_PREFIX, FIP_PREFIX, SNAT_PREFIX];
/// The alias (`IFLA_IFALIAS`) of `lo` in every namespace kube-dvr made: its
/// mark of ownership. A namespace with an owned prefix but without the tag
/// is someone else's and is never observed, changed or deleted.
pub const OWNER_TAG: &str = "kube-dvr";
/// Name prefixes of the links kube-dvr owns in a node's root namespace
/// (subnet bridges and VXLAN ports, bridge-side veth ends): the one list the
/// planner's names below and the engine's observation share. No other
/// system known to run beside kube-dvr (Neutron's agents, OVN, the CNI
/// reference plugins) names links with these prefixes.
pub const OWNED_LINK_PREFIXES: [&str; 6] = ["dvrbr-", "dvrvx-", "qrb-", "sgb-", "fgb-", "qgb-"];

pub const VXLAN_PORT: u16 = 4789;
/// MTU of overlay links: 1500 minus the VXLAN/UDP/IP/Ethernet overhead.
pub const OVERLAY_MTU: u32 = 1450;
/// Table that holds the floating-IP default route in each `qrouter-`.
pub const FIP_TABLE: u32 = 16;
/// fwmark set on packets from workloads that own a floating IP.
pub const FIP_MARK: u32 = 0x10;
pub const FIP_RULE_PRIORITY: u32 = 40000;
/// The nftables map floating → fixed address in a `qrouter-`.
pub const FIP_DNAT_MAP: &str = "fip_dnat";
/// The conntrack mark of load-balanced connections in a `snat-`
/// namespace: they leave towards the backend with the `sg-` address as
/// source, so replies come back through the gateway.
pub const LB_CT_MARK: u32 = 0x20;
/// The port-forwarding map in a `snat-` namespace.
pub const PF_DNAT_MAP: &str = "pf_dnat";
/// Per-subnet SNAT rules start here, one priority per subnet.
pub const SNAT_RULE_PRIORITY: u32 = 40100;
/// The link-local range the per-router `rfp-`/`fpr-` /31s come from.
pub const LINK_LOCAL_POOL: &str = "169.254.64.0/18";

/// The router's namespace: named by its allocated index, never by user
/// names (a namespace + router name can be 63 + 253 bytes, beyond the
/// 255-byte file-name limit). Indexes are unique, so names are too.
pub fn qrouter_ns(router_index: u32) -> String {
    format!("{QROUTER_PREFIX}{router_index}")
}
/// The router's SNAT gateway namespace (by index, like [`qrouter_ns`]).
pub fn snat_ns(router_index: u32) -> String {
    format!("{SNAT_PREFIX}{router_index}")
}
/// The floating-IP namespace of an external network: the network's name
/// hash, like its `fg-` port. Two networks whose names hash alike are
/// detected by the resolver (`NameHashCollision`) and only one is served.
pub fn fip_ns(external: &str) -> String {
    format!("{FIP_PREFIX}{:08x}", fnv32(external))
}
pub fn bridge(vni: u32) -> String {
    format!("dvrbr-{vni}")
}
pub fn vxlan(vni: u32) -> String {
    format!("dvrvx-{vni}")
}
/// Router port on a subnet, inside `qrouter-`.
pub fn qr(vni: u32) -> String {
    format!("qr-{vni}")
}
/// The bridge-side peer of `qr-`.
pub fn qr_bridge(vni: u32) -> String {
    format!("qrb-{vni}")
}
/// SNAT port on a subnet, inside `snat-`.
pub fn sg(vni: u32) -> String {
    format!("sg-{vni}")
}
pub fn sg_bridge(vni: u32) -> String {
    format!("sgb-{vni}")
}
pub fn rfp(router_index: u32) -> String {
    format!("rfp-{router_index}")
}
pub fn fpr(router_index: u32) -> String {
    format!("fpr-{router_index}")
}
pub fn qg(router_index: u32) -> String {
    format!("qg-{router_index}")
}
pub fn qg_bridge(router_index: u32) -> String {
    format!("qgb-{router_index}")
}
/// The `fg-` port of an external network in `fip-`.
pub fn fg(external: &str) -> String {
    format!("fg-{:08x}", fnv32(external))
}
pub fn fg_bridge(external: &str) -> String {
    format!("fgb-{:08x}", fnv32(external))
}
/// Table of a subnet's SNAT default route in `qrouter-`.
pub fn snat_table(vni: u32) -> u32 {
    vni
}

/// The /31 of a router's `rfp-` (even address) / `fpr-` (odd) pair.
pub fn link_local(router_index: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let pool: Ipv4Net = LINK_LOCAL_POOL.parse().expect("valid pool");
    let base = u32::from(pool.network());
    let off = router_index.checked_mul(2)?;
    if off + 1 >= 1 << (32 - pool.prefix_len()) {
        return None;
    }
    Some((Ipv4Addr::from(base + off), Ipv4Addr::from(base + off + 1)))
}

/// The router's gateway MAC on a subnet: the same on every node.
pub fn gateway_mac(vni: u32) -> MacAddr {
    MacAddr::local(0x0a, vni as u64)
}
/// The MAC of the `sg-` port on a subnet.
pub fn sg_mac(vni: u32) -> MacAddr {
    MacAddr::local(0x1a, vni as u64)
}
/// A node's DVR MAC, derived from its VTEP address: unique because VTEPs
/// are, stable across restarts, and needing no allocation.
pub fn dvr_mac(vtep: Ipv4Addr) -> MacAddr {
    MacAddr::local(0x2a, u32::from(vtep) as u64)
}
/// The MAC of a port that owns an external address (`fg-`, `qg-`), stable
/// across restarts so upstream ARP caches stay right.
pub fn external_mac(addr: Ipv4Addr) -> MacAddr {
    MacAddr::local(0x3a, u32::from(addr) as u64)
}

/// 32-bit FNV-1a: short, stable name hashes (not for security).
pub fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        for n in [
            bridge(16_777_215),
            vxlan(16_777_215),
            qr_bridge(16_777_215),
            sg_bridge(16_777_215),
            qg_bridge(8191),
            fg("a-very-long-external-network-name"),
            fg_bridge("x"),
            rfp(8191),
        ] {
            assert!(n.len() <= 15, "{n} is longer than IFNAMSIZ-1");
        }
        // Namespace files: bounded whatever the users' names (a 253-byte
        // external network name, the largest index).
        for n in [
            qrouter_ns(u32::MAX),
            snat_ns(u32::MAX),
            fip_ns(&"x".repeat(253)),
        ] {
            assert!(n.len() <= 18, "{n}");
        }
        assert_eq!(qrouter_ns(7), "qrouter-7");
        assert_eq!(fip_ns("ext"), format!("fip-{:08x}", fnv32("ext")));
    }

    #[test]
    fn link_local_pairs_are_disjoint_and_bounded() {
        assert_eq!(
            link_local(0),
            Some((
                "169.254.64.0".parse().unwrap(),
                "169.254.64.1".parse().unwrap()
            ))
        );
        assert_eq!(
            link_local(1),
            Some((
                "169.254.64.2".parse().unwrap(),
                "169.254.64.3".parse().unwrap()
            ))
        );
        assert_eq!(
            link_local(8191).unwrap().1,
            "169.254.127.255".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(link_local(8192), None);
    }

    #[test]
    fn macs_are_local_unicast_and_distinct_by_kind() {
        for m in [
            gateway_mac(7),
            sg_mac(7),
            dvr_mac("198.18.0.7".parse().unwrap()),
            external_mac("203.0.113.7".parse().unwrap()),
        ] {
            assert_eq!(
                m.0[0] & 0x03,
                0x02,
                "{m} must be locally administered unicast"
            );
        }
        assert_ne!(gateway_mac(7), sg_mac(7));
        assert_ne!(gateway_mac(7), gateway_mac(8));
    }
}

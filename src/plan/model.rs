//! The kernel state of one node as a plain value.
//!
//! The planner computes a desired [`NodeState`]; the dataplane observes the
//! kernel into the same type and applies `diff(observed, desired)`. Only
//! objects kube-dvr owns appear here: links with kube-dvr name prefixes, the
//! namespaces it creates, routes with [`ROUTE_PROTOCOL`], rules in
//! [`RULE_PRIORITIES`], permanent neighbours and FDB entries on its own links,
//! and its own nftables tables. Everything else on a node is invisible to the
//! engine and therefore never touched.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Route protocol number that marks routes kube-dvr installed
/// (`ip route show proto 230`).
pub const ROUTE_PROTOCOL: u8 = 230;
/// Policy-routing rule priorities kube-dvr owns. They sit after the `main`
/// rule (32766) so east-west (connected and extra routes in `main`) wins
/// over the floating-IP and SNAT tables.
pub const RULE_PRIORITIES: std::ops::RangeInclusive<u32> = 40000..=40999;
/// The only nftables table name kube-dvr creates, in any family and namespace.
pub const NFT_TABLE: &str = "kube_dvr";

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// A locally administered unicast MAC whose last five bytes come from
    /// `seed`: stable for the same seed, `prefix` tells kinds apart.
    pub fn local(prefix: u8, seed: u64) -> MacAddr {
        let b = seed.to_be_bytes();
        // 0x02 bit = locally administered, 0x01 bit clear = unicast.
        MacAddr([(prefix & 0xfc) | 0x02, b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address.
#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes separated by ':'")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(|| BadMac(s.into()))?;
            if p.len() != 2 {
                return Err(BadMac(s.into()));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| BadMac(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.into()));
        }
        Ok(MacAddr(out))
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for MacAddr {
    type Error = BadMac;
    fn try_from(s: String) -> Result<Self, BadMac> {
        s.parse()
    }
}

/// Desired or observed kernel state of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The node's own network namespace (the host's on a real node, the
    /// simulated node's in the lab): subnet bridges, VXLAN devices, FDB, the
    /// bridge-family nftables table, the bridge-side ends of veth pairs.
    pub root: NsState,
    /// Network namespaces kube-dvr owns (`qrouter-`, `fip-`, `snat-`), by name.
    pub namespaces: BTreeMap<String, NsState>,
}

/// Where a namespace-crossing object lives: the node's root namespace or a
/// named namespace kube-dvr owns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NsRef {
    Root,
    Named(String),
}

/// The owned state of one network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsState {
    /// Links by name.
    pub links: BTreeMap<String, Link>,
    /// IPv4 addresses on owned links.
    pub addresses: BTreeSet<Address>,
    /// Routes with [`ROUTE_PROTOCOL`] (connected routes are the kernel's).
    pub routes: BTreeSet<Route>,
    /// Policy rules with a priority in [`RULE_PRIORITIES`].
    pub rules: BTreeSet<Rule>,
    /// Permanent neighbour (ARP) entries on owned links.
    pub neighbours: BTreeSet<Neighbour>,
    /// Static FDB entries on owned VXLAN devices (`bridge fdb ... self dst`).
    pub fdb: BTreeSet<FdbEntry>,
    /// sysctls under `/proc/sys`, e.g. `net/ipv4/ip_forward` → `1`. Only
    /// the keys listed are observed.
    pub sysctls: BTreeMap<String, String>,
    /// kube-dvr's nftables table in this namespace, if any.
    pub nft: Option<NftTable>,
}

/// A network interface kube-dvr owns. Always administratively up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    pub kind: LinkKind,
    /// Desired MAC address; `None` leaves the kernel's choice.
    pub mac: Option<MacAddr>,
    /// The bridge (in the same namespace) this link is a port of.
    pub master: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    Bridge,
    /// A VXLAN device: `nolearning`, no multicast group; remote VTEPs come
    /// from FDB entries.
    Vxlan {
        vni: u32,
        local: Ipv4Addr,
        port: u16,
    },
    /// One end of a veth pair. Both ends are listed, each in its namespace,
    /// naming the other. If either end is missing the pair is recreated.
    Veth {
        peer: String,
        peer_ns: NsRef,
    },
    /// A macvlan (bridge mode) on `parent`, which lives in the root namespace.
    Macvlan {
        parent: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address {
    pub link: String,
    pub addr: Ipv4Net,
}

/// A route. `table` is the kernel table id (254 = main).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    pub table: u32,
    pub dst: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub dev: Option<String>,
}

pub const MAIN_TABLE: u32 = 254;

/// A policy-routing rule: `priority`, an optional source prefix and/or
/// fwmark selector, and the table to look up.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub priority: u32,
    pub from: Option<Ipv4Net>,
    pub fwmark: Option<u32>,
    pub table: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Neighbour {
    pub link: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// `bridge fdb append <mac> dev <link> dst <dst> self permanent`.
/// The all-zero MAC is the flood (BUM) entry for a remote VTEP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FdbEntry {
    pub link: String,
    pub mac: MacAddr,
    pub dst: Ipv4Addr,
}

/// nftables family of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NftFamily {
    Ip,
    Bridge,
    Inet,
}

impl NftFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            NftFamily::Ip => "ip",
            NftFamily::Bridge => "bridge",
            NftFamily::Inet => "inet",
        }
    }
}

/// kube-dvr's nftables table in one namespace. Sets and maps are diffed
/// element by element; a chain whose rules differ is rewritten as a whole
/// (flush + add, in the same atomic batch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftTable {
    pub family: NftFamily,
    pub name: String,
    /// Named sets and maps.
    pub sets: BTreeMap<String, NftSet>,
    pub chains: BTreeMap<String, NftChain>,
}

/// A named set (`data_type: None`) or map (`data_type: Some`). Element keys
/// and values are in nft's own notation (`203.0.113.10`, `02:00:00:00:00:01`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftSet {
    /// e.g. `ipv4_addr`, `ether_addr`.
    pub key_type: String,
    pub data_type: Option<String>,
    pub elements: BTreeMap<String, Option<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftChain {
    /// `None` for a regular chain.
    pub base: Option<NftBaseChain>,
    /// Rule bodies in nft syntax, in order (no `comment`: the engine tags each
    /// rule itself to recognise it when observing).
    pub rules: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftBaseChain {
    /// `filter` or `nat`.
    pub kind: String,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: String,
    pub priority: i32,
}

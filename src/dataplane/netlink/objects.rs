//! Addresses, routes, rules, neighbours and FDB entries.
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::*;
use crate::plan::model::MacAddr;

/// `NDA_DST`-carrying FDB entries on VXLAN devices come as AF_BRIDGE (7).
const AF_BRIDGE: AddressFamily = AddressFamily::Bridge;

impl Netlink {
    // ------------------------------------------------------------ addresses

    pub fn addresses(&mut self) -> io::Result<Vec<KAddress>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetAddress(req))?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
            // peer on point-to-point links).
            let mut local = None;
            let mut address = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                    AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                if let Ok(net) = Ipv4Net::new(ip, a.header.prefix_len) {
                    out.push(KAddress {
                        index: a.header.index,
                        addr: net,
                    });
                }
            }
        }
        Ok(out)
    }

    fn address_message(index: u32, addr: Ipv4Net) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = addr.prefix_len();
        m.header.index = index;
        m.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr.addr())));
        m.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr.addr())));
        if addr.prefix_len() < 31 {
            m.attributes
                .push(AddressAttribute::Broadcast(addr.broadcast()));
        }
        m
    }

    /// Add an address; already present = success.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Net) -> io::Result<()> {
        ok_if_exists(self.request(
            RouteNetlinkMessage::NewAddress(Self::address_message(index, addr)),
            NLM_F_CREATE | NLM_F_EXCL,
        ))
    }

    pub fn del_address(&mut self, index: u32, addr: Ipv4Net) -> io::Result<()> {
        ok_if_gone(self.request(
            RouteNetlinkMessage::DelAddress(Self::address_message(index, addr)),
            0,
        ))
    }

    // --------------------------------------------------------------- routes

    /// All IPv4 unicast routes of all tables.
    pub fn routes(&mut self) -> io::Result<Vec<KRoute>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetRoute(req))?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.address_family != AddressFamily::Inet {
                continue;
            }
            let mut table = u32::from(r.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut via = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let Ok(dst) = Ipv4Net::new(dst, r.header.destination_prefix_length) else {
                continue;
            };
            out.push(KRoute {
                table,
                dst,
                via,
                oif,
                protocol: r.header.protocol.into(),
            });
        }
        Ok(out)
    }

    fn route_message(route: &KRoute) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = route.dst.prefix_len();
        m.header.table = if route.table < 256 {
            route.table as u8
        } else {
            0
        };
        m.header.protocol = RouteProtocol::from(route.protocol);
        m.header.kind = RouteType::Unicast;
        m.header.scope = if route.via.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.attributes.push(RouteAttribute::Table(route.table));
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                route.dst.addr(),
            )));
        if let Some(via) = route.via {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
        }
        if let Some(oif) = route.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        m
    }

    /// Add a route next to existing ones with the same destination (no
    /// `NLM_F_EXCL`, no replace); an identical route = success.
    pub fn add_route(&mut self, route: &KRoute) -> io::Result<()> {
        ok_if_exists(self.request(
            RouteNetlinkMessage::NewRoute(Self::route_message(route)),
            NLM_F_CREATE,
        ))
    }

    pub fn del_route(&mut self, route: &KRoute) -> io::Result<()> {
        let mut m = Self::route_message(route);
        // Leave scope unspecified (NOWHERE matches any) on delete.
        m.header.scope = RouteScope::NoWhere;
        ok_if_gone(self.request(RouteNetlinkMessage::DelRoute(m), 0))
    }

    // ---------------------------------------------------------------- rules

    pub fn rules(&mut self) -> io::Result<Vec<KRule>> {
        let mut req = RuleMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetRule(req))?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRule(r) = m else {
                continue;
            };
            if r.header.family != AddressFamily::Inet {
                continue;
            }
            let mut rule = KRule {
                priority: 0,
                from: None,
                fwmark: None,
                table: u32::from(r.header.table),
            };
            for a in &r.attributes {
                match a {
                    RuleAttribute::Priority(p) => rule.priority = *p,
                    RuleAttribute::Source(IpAddr::V4(ip)) => {
                        rule.from = Ipv4Net::new(*ip, r.header.src_len).ok()
                    }
                    RuleAttribute::FwMark(m) => rule.fwmark = Some(*m),
                    RuleAttribute::Table(t) => rule.table = *t,
                    _ => {}
                }
            }
            out.push(rule);
        }
        Ok(out)
    }

    fn rule_message(rule: &KRule) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.action = RuleAction::ToTable;
        m.header.table = if rule.table < 256 {
            rule.table as u8
        } else {
            0
        };
        m.attributes.push(RuleAttribute::Priority(rule.priority));
        m.attributes.push(RuleAttribute::Table(rule.table));
        if let Some(from) = rule.from {
            m.header.src_len = from.prefix_len();
            m.attributes
                .push(RuleAttribute::Source(IpAddr::V4(from.network())));
        }
        if let Some(mark) = rule.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            m.attributes.push(RuleAttribute::FwMask(u32::MAX));
        }
        m
    }

    pub fn add_rule(&mut self, rule: &KRule) -> io::Result<()> {
        ok_if_exists(self.request(
            RouteNetlinkMessage::NewRule(Self::rule_message(rule)),
            NLM_F_CREATE | NLM_F_EXCL,
        ))
    }

    pub fn del_rule(&mut self, rule: &KRule) -> io::Result<()> {
        ok_if_gone(self.request(RouteNetlinkMessage::DelRule(Self::rule_message(rule)), 0))
    }

    // ----------------------------------------------------------- neighbours

    pub fn neighbours(&mut self) -> io::Result<Vec<KNeighbour>> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(req))?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.family != AddressFamily::Inet {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
                    NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(KNeighbour {
                    index: n.header.ifindex,
                    ip,
                    mac,
                    permanent: n.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }

    /// Add or replace a permanent neighbour entry.
    pub fn set_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: MacAddr) -> io::Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn del_neighbour(&mut self, index: u32, ip: Ipv4Addr) -> io::Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        ok_if_gone(self.request(RouteNetlinkMessage::DelNeighbour(m), 0))
    }

    // ------------------------------------------------------------------ fdb

    pub fn fdb(&mut self) -> io::Result<Vec<KFdb>> {
        let mut req = NeighbourMessage::default();
        req.header.family = AF_BRIDGE;
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(req))?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.family != AF_BRIDGE {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                        dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => dst = Some(*i),
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push(KFdb {
                    index: n.header.ifindex,
                    mac,
                    dst,
                    on_self: n.header.flags.contains(NeighbourFlags::Own),
                });
            }
        }
        Ok(out)
    }

    fn fdb_message(index: u32, mac: MacAddr, dst: Ipv4Addr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AF_BRIDGE;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        m
    }

    /// `bridge fdb append <mac> dev <index> dst <dst> self permanent` for
    /// the flood entry (all-zero MAC; multicast too): one more remote.
    /// `bridge fdb replace …` for a unicast MAC: the vxlan driver appends
    /// only to flood entries and leaves an existing unicast entry as it is,
    /// so a MAC moving to another node (a VM's active binding, an address
    /// taken again elsewhere) must replace its remote; the diff's delete of
    /// the old remote that follows then finds nothing (before: it removed
    /// the entry, and the MAC had no remote at all).
    pub fn add_fdb(&mut self, index: u32, mac: MacAddr, dst: Ipv4Addr) -> io::Result<()> {
        let flood = mac.0 == [0; 6] || mac.0[0] & 1 == 1;
        let how = if flood { NLM_F_APPEND } else { NLM_F_REPLACE };
        ok_if_exists(self.request(
            RouteNetlinkMessage::NewNeighbour(Self::fdb_message(index, mac, dst)),
            NLM_F_CREATE | how,
        ))
    }

    pub fn del_fdb(&mut self, index: u32, mac: MacAddr, dst: Ipv4Addr) -> io::Result<()> {
        ok_if_gone(self.request(
            RouteNetlinkMessage::DelNeighbour(Self::fdb_message(index, mac, dst)),
            0,
        ))
    }
}

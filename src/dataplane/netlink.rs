//! A small synchronous rtnetlink client: one socket per network namespace.
//!
//! A netlink socket stays bound to the namespace it was created in, so
//! [`Netlink::open_in`] creates it on a thread inside the namespace and the
//! socket can then be used from any thread. Requests carry
//! `NLM_F_REQUEST|NLM_F_ACK` and are answered one by one (a request costs
//! ~15 µs in the kernel; the round trip adds little); dumps use `NLM_F_DUMP`.
//!
//! The types here are kernel-facing (interface indexes, not names); the
//! engine maps them onto [`crate::plan::model`].
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::path::Path;

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage, MacVlanMode,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::plan::model::MacAddr;

/// Kinds of links the engine creates and recognises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KLinkKind {
    Bridge,
    Vxlan {
        vni: u32,
        local: Option<Ipv4Addr>,
        port: u16,
    },
    Veth,
    Macvlan,
    /// Any other kind, by its `IFLA_INFO_KIND` string (or empty).
    Other(String),
}

/// One link as the kernel dumps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KLink {
    pub index: u32,
    pub name: String,
    pub kind: KLinkKind,
    /// `IFLA_MASTER`.
    pub master: Option<u32>,
    /// `IFLA_LINK`: the veth peer's or macvlan parent's index.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the namespace of `link`, as this namespace
    /// numbers it; `None` = the same namespace.
    pub link_netnsid: Option<i32>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    /// `IFLA_GROUP`.
    pub group: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KAddress {
    pub index: u32,
    pub addr: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KRoute {
    pub table: u32,
    pub dst: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KRule {
    pub priority: u32,
    pub from: Option<Ipv4Net>,
    pub fwmark: Option<u32>,
    pub table: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KNeighbour {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

/// A bridge-family FDB entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KFdb {
    pub index: u32,
    pub mac: MacAddr,
    pub dst: Option<Ipv4Addr>,
    /// `NTF_SELF`: the entry lives in the device's own table (VXLAN).
    pub on_self: bool,
}

/// Attributes to change in place on an existing link (`RTM_SETLINK`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkChange {
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// `Some(0)` = nomaster.
    pub master: Option<u32>,
    pub up: bool,
}

impl LinkChange {
    pub fn up() -> LinkChange {
        LinkChange {
            up: true,
            ..Default::default()
        }
    }
}

/// A link to create (up, except a veth peer: see [`NewKind::Veth`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewLink {
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub master: Option<u32>,
    /// Create the link in this namespace instead of the socket's.
    pub netns_fd: Option<RawFd>,
}

/// What kind of link to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewKind {
    Bridge,
    Vxlan {
        vni: u32,
        local: Ipv4Addr,
        port: u16,
    },
    /// A veth pair; `peer.netns_fd` puts the peer in another namespace. The
    /// peer is created down (the kernel cannot open it before the pair is
    /// complete) and without master: set both afterwards.
    Veth {
        peer: NewLink,
    },
    /// A bridge-mode macvlan on `parent` (an index in the socket's namespace).
    Macvlan {
        parent: u32,
    },
}

/// Whether an error from a create request means "already there".
pub fn is_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc_errno::EEXIST)
}

/// Whether an error from a delete request means "already gone".
pub fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::ENOENT) | Some(libc_errno::ESRCH) | Some(libc_errno::ENODEV)
    )
}

mod libc_errno {
    pub const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
    pub const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;
    pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
    pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
}

const RECV_BUF: usize = 1 << 16;
/// `NDA_DST`-carrying FDB entries on VXLAN devices come as AF_BRIDGE (7).
const AF_BRIDGE: AddressFamily = AddressFamily::Bridge;

/// An rtnetlink socket bound to one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Open a socket in the calling thread's namespace.
    pub fn open_here() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Short acks (no echo of the request) and room for big dumps.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_rx_buf_sz(4 << 20);
        Ok(Netlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Open a socket inside the namespace file at `ns`.
    pub fn open_in(ns: &Path) -> io::Result<Netlink> {
        super::netns::run_in(ns, Netlink::open_here)?
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Receive datagrams until `handle` says the exchange `seq` is done.
    fn recv_until(
        &mut self,
        seq: u32,
        mut handle: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> io::Result<bool>,
    ) -> io::Result<()> {
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let n = self.sock.recv(&mut self.buf, 0)?;
            if n > self.buf.len() {
                return Err(io::Error::other("netlink message truncated"));
            }
            let mut off = 0;
            let mut done = false;
            while off + 16 <= self.buf.len() {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap()) as usize;
                if len < 16 || off + len > self.buf.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len])
                        .map_err(|e| io::Error::other(format!("netlink decode: {e}")))?;
                off += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    // A late answer to an earlier exchange: ignore.
                    continue;
                }
                if handle(msg.payload)? {
                    done = true;
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Send one request and wait for its ack.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        let mut result = Ok(());
        self.recv_until(seq, |p| match p {
            NetlinkPayload::Error(e) => {
                if e.code.is_some() {
                    result = Err(e.to_io());
                }
                Ok(true)
            }
            _ => Ok(false),
        })?;
        result
    }

    /// Dump all objects of one kind.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        let mut err = None;
        self.recv_until(seq, |p| match p {
            NetlinkPayload::InnerMessage(m) => {
                out.push(m);
                Ok(false)
            }
            NetlinkPayload::Done(_) => Ok(true),
            NetlinkPayload::Error(e) => {
                if e.code.is_some() {
                    err = Some(e.to_io());
                }
                Ok(true)
            }
            _ => Ok(false),
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    // ---------------------------------------------------------------- links

    pub fn links(&mut self) -> io::Result<Vec<KLink>> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// One link by name (`None` if there is none).
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<KLink>> {
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.to_string()));
        let seq = self.send(RouteNetlinkMessage::GetLink(req), NLM_F_REQUEST)?;
        let mut found = None;
        let mut err = None;
        self.recv_until(seq, |p| match p {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                found = Some(parse_link(l));
                Ok(true)
            }
            NetlinkPayload::Error(e) => {
                if e.code.is_some() {
                    err = Some(e.to_io());
                }
                Ok(true)
            }
            _ => Ok(false),
        })?;
        match err {
            Some(e) if is_gone(&e) => Ok(None),
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    pub fn create_link(&mut self, link: &NewLink, kind: &NewKind) -> io::Result<()> {
        let mut msg = new_link_message(link, true);
        let (info_kind, data) = match kind {
            NewKind::Bridge => (InfoKind::Bridge, None),
            NewKind::Vxlan { vni, local, port } => (
                InfoKind::Vxlan,
                Some(InfoData::Vxlan(vec![
                    InfoVxlan::Id(*vni),
                    InfoVxlan::Local(*local),
                    InfoVxlan::Port(*port),
                    InfoVxlan::Learning(false),
                ])),
            ),
            NewKind::Veth { peer } => (
                InfoKind::Veth,
                // Not up: opening a veth end before its pair is complete
                // fails with ENOTCONN, so the peer is brought up afterwards.
                Some(InfoData::Veth(InfoVeth::Peer(new_link_message(
                    peer, false,
                )))),
            ),
            NewKind::Macvlan { parent } => {
                msg.attributes.push(LinkAttribute::Link(*parent));
                (
                    InfoKind::MacVlan,
                    Some(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                        MacVlanMode::Bridge,
                    )])),
                )
            }
        };
        let mut info = vec![LinkInfo::Kind(info_kind)];
        info.extend(data.map(LinkInfo::Data));
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn set_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if change.up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        if let Some(mac) = change.mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(mtu) = change.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(m) = change.master {
            msg.attributes.push(LinkAttribute::Controller(m));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Put a link in device group `group`.
    pub fn set_link_group(&mut self, index: u32, group: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Group(group));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Delete every link of device group `group` at once (one unregister
    /// batch in the kernel, so one RCU grace period instead of one per link).
    pub fn delete_link_group(&mut self, group: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group));
        ok_if_gone(self.request(RouteNetlinkMessage::DelLink(msg), 0))
    }

    /// Delete a link by index; already gone = success.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        ok_if_gone(self.request(RouteNetlinkMessage::DelLink(msg), 0))
    }

    /// The id this namespace gives the namespace open at `fd` (`None` if it
    /// has none).
    pub fn nsid_of(&mut self, fd: RawFd) -> io::Result<Option<i32>> {
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(fd as u32));
        let seq = self.send(RouteNetlinkMessage::GetNsId(msg), NLM_F_REQUEST | NLM_F_ACK)?;
        let mut id = None;
        let mut err = None;
        self.recv_until(seq, |p| match p {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                for a in m.attributes {
                    if let NsidAttribute::Id(i) = a {
                        id = (i >= 0).then_some(i);
                    }
                }
                Ok(false)
            }
            NetlinkPayload::Error(e) => {
                if e.code.is_some() {
                    err = Some(e.to_io());
                }
                Ok(true)
            }
            NetlinkPayload::Done(_) => Ok(true),
            _ => Ok(false),
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(id),
        }
    }

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

    /// `bridge fdb append <mac> dev <index> dst <dst> self permanent`.
    pub fn add_fdb(&mut self, index: u32, mac: MacAddr, dst: Ipv4Addr) -> io::Result<()> {
        ok_if_exists(self.request(
            RouteNetlinkMessage::NewNeighbour(Self::fdb_message(index, mac, dst)),
            NLM_F_CREATE | NLM_F_APPEND,
        ))
    }

    pub fn del_fdb(&mut self, index: u32, mac: MacAddr, dst: Ipv4Addr) -> io::Result<()> {
        ok_if_gone(self.request(
            RouteNetlinkMessage::DelNeighbour(Self::fdb_message(index, mac, dst)),
            0,
        ))
    }
}

fn ok_if_exists(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if is_exists(&e) => Ok(()),
        r => r,
    }
}

fn ok_if_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if is_gone(&e) => Ok(()),
        r => r,
    }
}

fn mac_of(b: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(b).ok().map(MacAddr)
}

fn new_link_message(link: &NewLink, up: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    if up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    msg.attributes
        .push(LinkAttribute::IfName(link.name.clone()));
    if let Some(mac) = link.mac {
        msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(mtu) = link.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(m) = link.master {
        msg.attributes.push(LinkAttribute::Controller(m));
    }
    if let Some(fd) = link.netns_fd {
        msg.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    msg
}

fn parse_link(l: LinkMessage) -> KLink {
    let mut k = KLink {
        index: l.header.index,
        name: String::new(),
        kind: KLinkKind::Other(String::new()),
        master: None,
        link: None,
        link_netnsid: None,
        mac: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        group: 0,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => k.name = n,
            LinkAttribute::Controller(m) => k.master = Some(m),
            LinkAttribute::Link(i) => k.link = Some(i),
            LinkAttribute::LinkNetNsId(i) => k.link_netnsid = Some(i),
            LinkAttribute::Address(b) => k.mac = mac_of(&b),
            LinkAttribute::Mtu(m) => k.mtu = m,
            LinkAttribute::Group(g) => k.group = g,
            LinkAttribute::LinkInfo(infos) => k.kind = parse_kind(infos),
            _ => {}
        }
    }
    k
}

fn parse_kind(infos: Vec<LinkInfo>) -> KLinkKind {
    let mut kind = KLinkKind::Other(String::new());
    let mut vx = None;
    for i in infos {
        match i {
            LinkInfo::Kind(InfoKind::Bridge) => kind = KLinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Veth) => kind = KLinkKind::Veth,
            LinkInfo::Kind(InfoKind::MacVlan) => kind = KLinkKind::Macvlan,
            LinkInfo::Kind(InfoKind::Vxlan) => {
                kind = KLinkKind::Vxlan {
                    vni: 0,
                    local: None,
                    port: 0,
                }
            }
            LinkInfo::Kind(other) => kind = KLinkKind::Other(other.to_string()),
            LinkInfo::Data(InfoData::Vxlan(d)) => vx = Some(d),
            _ => {}
        }
    }
    if let (KLinkKind::Vxlan { vni, local, port }, Some(d)) = (&mut kind, vx) {
        for a in d {
            match a {
                InfoVxlan::Id(v) => *vni = v,
                InfoVxlan::Local(l) => *local = Some(l),
                InfoVxlan::Port(p) => *port = p,
                _ => {}
            }
        }
    }
    kind
}

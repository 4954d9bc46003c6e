//! Links: dump, create (bridge, VXLAN, veth, macvlan), change, delete.
use std::io;
use std::os::fd::RawFd;

use super::*;
use netlink_packet_core::{NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage, MacVlanMode,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;

impl Netlink {
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
        if let Some(a) = &change.alias {
            msg.attributes.push(LinkAttribute::IfAlias(a.clone()));
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
        alias: None,
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
            LinkAttribute::IfAlias(a) if !a.is_empty() => k.alias = Some(a),
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

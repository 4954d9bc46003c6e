//! Kernel-facing values: what dumps return and what requests take.
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use ipnet::Ipv4Net;

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
    /// `IFLA_IFALIAS` (`None` = unset).
    pub alias: Option<String>,
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
    /// Set `IFLA_IFALIAS`.
    pub alias: Option<String>,
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

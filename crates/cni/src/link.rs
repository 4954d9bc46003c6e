//! The kernel side of an attachment, through `rtnetlink`: a veth whose
//! host end is a port of the subnet's bridge and whose other end is created
//! directly inside the pod's network namespace under its final name
//! (`ip link add H type veth peer name IFNAME netns NS`), so a half-made
//! attachment never shows up in the pod under a temporary name.
//!
//! One netlink socket per namespace: the pod's is opened on a short-lived
//! OS thread that enters the namespace, opens the socket and ends; the
//! socket stays bound to the namespace it was opened in, and the process's
//! own threads never change namespace.
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::agent::Route;
use crate::error::{self, CniError, Result};

const ENODEV: i32 = 19;
const ENOENT: i32 = 2;

/// A netlink connection bound to one network namespace.
pub struct Nl {
    h: Handle,
}

impl Nl {
    /// The namespace the plugin runs in (the node's).
    pub fn here() -> Result<Nl> {
        let (conn, h, _) = rtnetlink::new_connection()
            .map_err(|e| CniError::kernel("opening a netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Nl { h })
    }

    /// The namespace at `path` (a bind mount or `/proc/<pid>/ns/net`).
    pub fn in_netns(ns: &File) -> Result<Nl> {
        let rt = tokio::runtime::Handle::current();
        let fd = ns
            .try_clone()
            .map_err(|e| CniError::kernel("dup netns fd", e))?;
        let h = std::thread::spawn(move || -> Result<Handle> {
            let _in_rt = rt.enter();
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| CniError::kernel("entering the pod's network namespace", e))?;
            let (conn, h, _) = rtnetlink::new_connection()
                .map_err(|e| CniError::kernel("opening a netlink socket in the pod", e))?;
            rt.spawn(conn);
            Ok(h)
        })
        .join()
        .map_err(|_| CniError::new(error::KERNEL, "netns thread panicked"))??;
        Ok(Nl { h })
    }

    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut s = self.h.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(l) => Ok(l),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(CniError::kernel(format!("looking up link {name}"), e)),
        }
    }

    /// Delete link `name`; absent is success. Returns whether it existed.
    pub async fn del_link(&self, name: &str) -> Result<bool> {
        let Some(l) = self.link(name).await? else {
            return Ok(false);
        };
        match self.h.link().del(l.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(CniError::kernel(format!("deleting link {name}"), e)),
        }
    }

    async fn set(&self, what: &str, m: LinkMessage) -> Result<()> {
        self.h
            .link()
            .set(m)
            .execute()
            .await
            .map_err(|e| CniError::kernel(what, e))
    }

    async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let msgs: Vec<_> = self
            .h
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| CniError::kernel("listing addresses", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Main-table IPv4 routes `(dst, gw)` through link `index`.
    async fn routes(&self, index: u32) -> Result<Vec<Route>> {
        let q = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<_> = self
            .h
            .route()
            .get(q)
            .execute()
            .try_collect()
            .await
            .map_err(|e| CniError::kernel("listing routes", e))?;
        let mut out = Vec::new();
        for m in msgs {
            let (mut dst, mut gw, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let (Some(gw), Some(i)) = (gw, oif) {
                if i == index {
                    if let Ok(dst) = ipnet::Ipv4Net::new(dst, m.header.destination_prefix_length) {
                        out.push(Route { dst, gw });
                    }
                }
            }
        }
        Ok(out)
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

pub fn mac_of(l: &LinkMessage) -> Vec<u8> {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn controller_of(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

fn is_up(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Up)
}

/// Open the pod's namespace file. A missing one is reported as `None`
/// (DEL must succeed then).
pub fn open_netns(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(ENOENT) => Ok(None),
        Err(e) => Err(CniError::new(
            error::INVALID_ENV,
            format!("cannot open CNI_NETNS {}", path.display()),
        )
        .details(e.to_string())),
    }
}

/// What an attachment consists of.
#[derive(Debug, Clone)]
pub struct Want {
    pub bridge: String,
    /// The host end of the veth (derived from container ID and interface).
    pub host: String,
    pub ifname: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u32,
    /// Routes through the interface (all via the subnet's gateway).
    pub routes: Vec<Route>,
}

/// What ADD made, for the result.
#[derive(Debug, Clone)]
pub struct Made {
    pub bridge_mac: Vec<u8>,
    pub host_mac: Vec<u8>,
}

/// Make the attachment; on any failure remove what was made (the veth: its
/// pod end goes with it) and return the error.
pub async fn add(host: &Nl, ns: &File, w: &Want) -> Result<Made> {
    let bridge = host.link(&w.bridge).await?.ok_or_else(|| {
        CniError::new(
            error::TRY_AGAIN,
            format!(
                "the subnet's bridge {} does not exist on this node yet",
                w.bridge
            ),
        )
    })?;
    let pod = Nl::in_netns(ns)?;
    if pod.link(&w.ifname).await?.is_some() {
        return Err(CniError::new(
            error::KERNEL,
            format!("the pod already has an interface {}", w.ifname),
        ));
    }
    // A leftover of an earlier ADD for this container and interface that
    // died before rolling back (the name is derived from both).
    host.del_link(&w.host).await?;

    let peer = LinkUnspec::new_with_name(&w.ifname)
        .mtu(w.mtu)
        .address(w.mac.to_vec())
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(w.host.clone())
        .mtu(w.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.h
        .link()
        .add(veth)
        .execute()
        .await
        .map_err(|e| CniError::kernel(format!("creating veth {}/{}", w.host, w.ifname), e))?;

    ipv4_only(ns, &w.ifname);
    match plug(host, &pod, bridge.header.index, w).await {
        Ok(host_mac) => Ok(Made {
            bridge_mac: mac_of(&bridge),
            host_mac,
        }),
        Err(e) => {
            // Roll back: deleting the host end removes the pod end too.
            if let Err(re) = host.del_link(&w.host).await {
                return Err(CniError {
                    details: format!("{}; rollback failed too: {}", e.details, re.details),
                    ..e
                });
            }
            Err(e)
        }
    }
}

/// Turn IPv6 off on the pod's interface before it comes up (kube-dvr's
/// subnets are IPv4): its stack then sends nothing on its own (no DAD,
/// router or MLD solicitations). A live migration's target pod carries the
/// VM's MAC without being its endpoint; a frame from it would teach the
/// subnet's bridges that the MAC lives there and pull the VM's traffic
/// away from the source. Best effort: a kernel without IPv6 has no such
/// setting.
fn ipv4_only(ns: &File, ifname: &str) {
    let key = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    std::thread::scope(|s| {
        s.spawn(|| {
            if nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).is_ok() {
                let _ = std::fs::write(&key, "1");
            }
        });
    });
}

async fn plug(host: &Nl, pod: &Nl, bridge: u32, w: &Want) -> Result<Vec<u8>> {
    let h = host
        .link(&w.host)
        .await?
        .ok_or_else(|| CniError::new(error::KERNEL, format!("veth {} vanished", w.host)))?;
    host.set(
        &format!("plugging {} into {}", w.host, w.bridge),
        LinkUnspec::new_with_index(h.header.index)
            .controller(bridge)
            .up()
            .build(),
    )
    .await?;
    let p = pod.link(&w.ifname).await?.ok_or_else(|| {
        CniError::new(error::KERNEL, format!("{} not found in the pod", w.ifname))
    })?;
    let idx = p.header.index;
    pod.h
        .address()
        .add(idx, IpAddr::V4(w.ip), w.prefix)
        .execute()
        .await
        .map_err(|e| {
            CniError::kernel(format!("adding {}/{} to {}", w.ip, w.prefix, w.ifname), e)
        })?;
    pod.set(
        &format!("setting {} up", w.ifname),
        LinkUnspec::new_with_index(idx).up().build(),
    )
    .await?;
    for r in &w.routes {
        let m = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .gateway(r.gw)
            .output_interface(idx)
            .build();
        pod.h
            .route()
            .add(m)
            .execute()
            .await
            .map_err(|e| CniError::kernel(format!("adding route {} via {}", r.dst, r.gw), e))?;
    }
    Ok(mac_of(&h))
}

/// Remove the attachment: the host end of the veth (the pod end goes with
/// it; with the pod's namespace gone, both are gone already). Absent is
/// success.
pub async fn del(host: &Nl, host_name: &str) -> Result<()> {
    host.del_link(host_name).await.map(|_| ())
}

/// Verify the attachment is as `w` says: both veth ends exist and are up,
/// the host end is a port of the bridge, the pod end has the MAC, the
/// address and the routes.
pub async fn check(host: &Nl, ns: &File, w: &Want) -> Result<()> {
    let fail = |m: String| CniError::new(error::CHECK_FAILED, m);
    let h = host
        .link(&w.host)
        .await?
        .ok_or_else(|| fail(format!("host interface {} is missing", w.host)))?;
    let br = host
        .link(&w.bridge)
        .await?
        .ok_or_else(|| fail(format!("bridge {} is missing", w.bridge)))?;
    if controller_of(&h) != Some(br.header.index) {
        return Err(fail(format!("{} is not a port of {}", w.host, w.bridge)));
    }
    if !is_up(&h) {
        return Err(fail(format!("{} is down", w.host)));
    }
    let pod = Nl::in_netns(ns)?;
    let p = pod
        .link(&w.ifname)
        .await?
        .ok_or_else(|| fail(format!("the pod has no interface {}", w.ifname)))?;
    if mac_of(&p) != w.mac {
        return Err(fail(format!(
            "{} has MAC {}, not {}",
            w.ifname,
            crate::conf::fmt_mac(&mac_of(&p)),
            crate::conf::fmt_mac(&w.mac)
        )));
    }
    if !is_up(&p) {
        return Err(fail(format!("{} is down", w.ifname)));
    }
    let addrs = pod.addresses(p.header.index).await?;
    if !addrs.contains(&(w.ip, w.prefix)) {
        return Err(fail(format!("{} lacks {}/{}", w.ifname, w.ip, w.prefix)));
    }
    let routes = pod.routes(p.header.index).await?;
    for r in &w.routes {
        if !routes.contains(r) {
            return Err(fail(format!("route {} via {} is missing", r.dst, r.gw)));
        }
    }
    Ok(())
}

//! Executing ops: names resolved to indexes, one request per op (link
//! deletions in bulk), writes counted. See [`super::engine`] for the quirks
//! behind the special cases.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::diff::{ns_name, Op};
use super::engine::{Engine, WriteStats};
use super::error::Error;
use super::netlink::{KRoute, KRule, LinkChange, Netlink, NewKind, NewLink};
use super::{netns, nft};
use crate::plan::model::{LinkKind, NsRef, Route, Rule, ROUTE_PROTOCOL, RULE_PRIORITIES};

const EADDRINUSE: i32 = nix::errno::Errno::EADDRINUSE as i32;

impl Engine {
    /// The index of link `name` in `ns`.
    pub(super) fn index(&mut self, ns: &NsRef, name: &str) -> Result<u32, Error> {
        let h = self.handle(ns)?;
        if !h.dirty {
            if let Some(i) = h.by_name.get(name) {
                return Ok(*i);
            }
        }
        self.refresh_links(ns)?;
        let h = self.handle(ns)?;
        h.by_name.get(name).copied().ok_or_else(|| Error::NotFound {
            ns: ns_name(ns).to_string(),
            what: "link",
            name: name.to_string(),
        })
    }

    /// Record the index of link `name` in `ns`, just created.
    pub(super) fn learn(&mut self, ns: &NsRef, name: &str) -> Result<(), Error> {
        let h = self.handle(ns)?;
        let l = h.nl.link_by_name(name).map_err(|source| Error::Netlink {
            ns: ns_name(ns).to_string(),
            op: "get",
            object: format!("link {name}"),
            source,
        })?;
        if let Some(old) = h.by_name.remove(name) {
            h.by_index.remove(&old);
        }
        if let Some(l) = l {
            h.by_name.insert(l.name.clone(), l.index);
            h.by_index.insert(l.index, l.name);
        }
        Ok(())
    }

    pub(super) fn forget(&mut self, ns: &NsRef, name: &str) {
        if let Some(h) = self.handles.get_mut(ns) {
            if let Some(i) = h.by_name.remove(name) {
                h.by_index.remove(&i);
            }
        }
    }

    pub(super) fn nl(&mut self, ns: &NsRef) -> Result<&mut Netlink, Error> {
        Ok(&mut self.handle(ns)?.nl)
    }

    pub(super) fn apply(&mut self, op: &Op, w: &mut WriteStats) -> Result<(), Error> {
        let kind = op.kind();
        let nlerr = |ns: &NsRef, what: &'static str, object: String| {
            let ns = ns_name(ns).to_string();
            move |source| Error::Netlink {
                ns,
                op: what,
                object,
                source,
            }
        };
        match op {
            Op::CreateNetns { name } => {
                w.add(kind, 1);
                netns::create(&self.cfg.netns_dir, name).map_err(|source| match source.kind() {
                    std::io::ErrorKind::AlreadyExists => Error::NotOwned { ns: name.clone() },
                    _ => Error::Netns {
                        ns: name.clone(),
                        op: "create",
                        source,
                    },
                })
            }
            Op::DeleteNetns { name } => {
                w.add(kind, 1);
                self.drop_handle(&NsRef::Named(name.clone()));
                netns::delete(&self.cfg.netns_dir, name).map_err(|source| Error::Netns {
                    ns: name.clone(),
                    op: "delete",
                    source,
                })
            }
            Op::CreateLink { ns, link, peer } => {
                let mut new = NewLink {
                    name: link.name.clone(),
                    mac: link.mac,
                    mtu: link.mtu,
                    master: None,
                    netns_fd: None,
                };
                // Files whose fds the request carries; closed after it.
                let mut files: Vec<File> = Vec::new();
                let mut open_ns = |e: &Engine, target: &NsRef| -> Result<i32, Error> {
                    let f = File::open(e.ns_path(target)).map_err(|source| Error::Netns {
                        ns: ns_name(target).to_string(),
                        op: "open",
                        source,
                    })?;
                    let fd = f.as_raw_fd();
                    files.push(f);
                    Ok(fd)
                };
                let (sock_ns, kind_new) = match &link.kind {
                    LinkKind::Bridge => {
                        // The MTU is set by the follow-up request the diff
                        // emits: only a change through `ndo_change_mtu`
                        // pins a bridge's MTU (see the module docs).
                        new.mtu = None;
                        (ns.clone(), NewKind::Bridge)
                    }
                    LinkKind::Vxlan { vni, local, port } => (
                        ns.clone(),
                        NewKind::Vxlan {
                            vni: *vni,
                            local: *local,
                            port: *port,
                        },
                    ),
                    LinkKind::Veth {
                        peer: pname,
                        peer_ns,
                    } => {
                        let p = peer.clone();
                        let mut pl = NewLink {
                            name: pname.clone(),
                            mac: p.as_ref().and_then(|p| p.mac),
                            mtu: p.as_ref().and_then(|p| p.mtu),
                            master: None,
                            netns_fd: None,
                        };
                        if peer_ns != ns {
                            pl.netns_fd = Some(open_ns(self, peer_ns)?);
                        } else if let Some(m) = p.as_ref().and_then(|p| p.master.as_ref()) {
                            pl.master = Some(self.index(ns, m)?);
                        }
                        (ns.clone(), NewKind::Veth { peer: pl })
                    }
                    LinkKind::Macvlan { parent } => {
                        let parent = self.index(&NsRef::Root, parent)?;
                        if ns != &NsRef::Root {
                            new.netns_fd = Some(open_ns(self, ns)?);
                        }
                        (NsRef::Root, NewKind::Macvlan { parent })
                    }
                };
                if let Some(m) = &link.master {
                    if &sock_ns == ns {
                        new.master = Some(self.index(ns, m)?);
                    }
                }
                w.add(kind, 1);
                let mut r = self.nl(&sock_ns)?.create_link(&new, &kind_new);
                // A namespace deleted from outside dies asynchronously; until
                // it has, its macvlan still holds the MAC on the parent.
                let mut tries = 0;
                while matches!(kind_new, NewKind::Macvlan { .. })
                    && r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(EADDRINUSE)
                    && tries < 50
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    tries += 1;
                    w.add(kind, 1);
                    r = self.nl(&sock_ns)?.create_link(&new, &kind_new);
                }
                drop(files);
                r.map_err(nlerr(ns, "create", format!("link {}", link.name)))?;
                // Learn the new indexes with a get each (no dump).
                self.learn(ns, &link.name)?;
                if let LinkKind::Veth { peer, peer_ns } = &link.kind {
                    self.learn(peer_ns, peer)?;
                }
                Ok(())
            }
            Op::DeleteLink { ns, name } => {
                let idx = match self.index(ns, name) {
                    Ok(i) => i,
                    Err(Error::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                // The peer of a deleted veth stays in its namespace's map:
                // the diff never refers to it again except to recreate it,
                // which learns its new index.
                self.forget(ns, name);
                w.add(kind, 1);
                let r = self.nl(ns)?.delete_link(idx);
                r.map_err(nlerr(ns, "delete", format!("link {name}")))
            }
            Op::SetLink {
                ns,
                name,
                mac,
                mtu,
                master,
                up,
            } => {
                let idx = self.index(ns, name)?;
                let master = match master {
                    None => None,
                    Some(None) => Some(0),
                    Some(Some(m)) => Some(self.index(ns, m)?),
                };
                let change = LinkChange {
                    mac: *mac,
                    mtu: *mtu,
                    master,
                    up: *up,
                    alias: None,
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.set_link(idx, &change);
                r.map_err(nlerr(ns, "set", format!("link {name}")))
            }
            Op::SetSysctl { ns, key, value } => {
                w.add(kind, 1);
                let path = self.ns_path(ns);
                let file = Path::new("/proc/sys").join(key);
                let serr = |source| Error::Sysctl {
                    ns: ns_name(ns).to_string(),
                    op: "write",
                    key: key.clone(),
                    source,
                };
                netns::run_in(&path, || std::fs::write(&file, value.as_bytes()))
                    .map_err(serr)?
                    .map_err(serr)
            }
            Op::AddAddress { ns, address } => {
                let idx = self.index(ns, &address.link)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.add_address(idx, address.addr);
                r.map_err(nlerr(ns, "add", format!("address {}", address.addr)))
            }
            Op::DelAddress { ns, address } => {
                let Ok(idx) = self.index(ns, &address.link) else {
                    return Ok(());
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_address(idx, address.addr);
                r.map_err(nlerr(ns, "delete", format!("address {}", address.addr)))
            }
            Op::AddRoute { ns, route } => {
                let k = self.kroute(ns, route)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.add_route(&k);
                r.map_err(nlerr(ns, "add", format!("route {route:?}")))
            }
            Op::DelRoute { ns, route } => {
                let k = match self.kroute(ns, route) {
                    Ok(k) => k,
                    Err(Error::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_route(&k);
                r.map_err(nlerr(ns, "delete", format!("route {route:?}")))
            }
            Op::AddRule { ns, rule } => {
                w.add(kind, 1);
                let r = self.nl(ns)?.add_rule(&krule(rule));
                r.map_err(nlerr(ns, "add", format!("rule {rule:?}")))
            }
            Op::DelRule { ns, rule } => {
                w.add(kind, 1);
                let r = self.nl(ns)?.del_rule(&krule(rule));
                r.map_err(nlerr(ns, "delete", format!("rule {rule:?}")))
            }
            Op::SetNeighbour { ns, neighbour: n } => {
                let idx = self.index(ns, &n.link)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.set_neighbour(idx, n.ip, n.mac);
                r.map_err(nlerr(
                    ns,
                    "set",
                    format!("neighbour {} dev {}", n.ip, n.link),
                ))
            }
            Op::DelNeighbour { ns, neighbour: n } => {
                let Ok(idx) = self.index(ns, &n.link) else {
                    return Ok(());
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_neighbour(idx, n.ip);
                r.map_err(nlerr(
                    ns,
                    "delete",
                    format!("neighbour {} dev {}", n.ip, n.link),
                ))
            }
            Op::AddFdb { ns, entry: e } => {
                let idx = self.index(ns, &e.link)?;
                w.add(kind, 1);
                let r = self.nl(ns)?.add_fdb(idx, e.mac, e.dst);
                r.map_err(nlerr(ns, "add", format!("fdb {} dev {}", e.mac, e.link)))
            }
            Op::DelFdb { ns, entry: e } => {
                let Ok(idx) = self.index(ns, &e.link) else {
                    return Ok(());
                };
                w.add(kind, 1);
                let r = self.nl(ns)?.del_fdb(idx, e.mac, e.dst);
                r.map_err(nlerr(ns, "delete", format!("fdb {} dev {}", e.mac, e.link)))
            }
            Op::Nft {
                ns,
                observed,
                desired,
            } => {
                let batch = nft::plan_batch(observed.as_ref(), desired.as_ref());
                if batch.is_empty() {
                    return Ok(());
                }
                w.add(kind, batch.writes().max(1));
                let path = self.ns_path(ns);
                let nerr = |source| Error::Nft {
                    ns: ns_name(ns).to_string(),
                    op: "apply",
                    source: Box::new(source),
                };
                netns::run_in(&path, || nft::apply(&batch))
                    .map_err(|source| Error::Netns {
                        ns: ns_name(ns).to_string(),
                        op: "enter",
                        source,
                    })?
                    .map_err(nerr)
            }
        }
    }

    /// Delete links in bulk: put them in [`BULK_DELETE_GROUP`], check that
    /// no other link of the namespace is in it, delete the group. Falls back
    /// to one request per link if another link uses the group.
    pub(super) fn delete_links(
        &mut self,
        ns: &NsRef,
        names: &[&str],
        w: &mut WriteStats,
    ) -> Result<(), Error> {
        let nlerr = |op: &'static str, object: String| {
            let ns = ns_name(ns).to_string();
            move |source| Error::Netlink {
                ns,
                op,
                object,
                source,
            }
        };
        let mut indexes = Vec::new();
        for name in names {
            match self.index(ns, name) {
                Ok(i) => indexes.push(i),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut mine = std::collections::HashSet::new();
        for &idx in &indexes {
            w.add("link", 1);
            match self.nl(ns)?.set_link_group(idx, BULK_DELETE_GROUP) {
                Ok(()) => {
                    mine.insert(idx);
                }
                // Gone meanwhile (a veth whose peer was deleted before).
                Err(e) if super::netlink::is_gone(&e) => {}
                Err(e) => return Err(nlerr("set group of", format!("link #{idx}"))(e)),
            }
        }
        let links = self.refresh_links(ns)?;
        let foreign = links
            .iter()
            .any(|l| l.group == BULK_DELETE_GROUP && !mine.contains(&l.index));
        if foreign {
            for &idx in &mine {
                w.add("link", 1);
                self.nl(ns)?
                    .delete_link(idx)
                    .map_err(nlerr("delete", format!("link #{idx}")))?;
            }
        } else if !mine.is_empty() {
            w.add("link", 1);
            self.nl(ns)?
                .delete_link_group(BULK_DELETE_GROUP)
                .map_err(nlerr("delete", format!("link group {BULK_DELETE_GROUP}")))?;
        }
        for name in names {
            self.forget(ns, name);
        }
        Ok(())
    }

    fn kroute(&mut self, ns: &NsRef, r: &Route) -> Result<KRoute, Error> {
        let oif = match &r.dev {
            Some(d) => Some(self.index(ns, d)?),
            None => None,
        };
        Ok(KRoute {
            table: r.table,
            dst: r.dst,
            via: r.via,
            oif,
            protocol: ROUTE_PROTOCOL,
        })
    }
}

/// Device group links are moved to just before a bulk delete ("KDVR").
pub const BULK_DELETE_GROUP: u32 = 0x4b44_5652;
/// Fewer deletions than this go one request each.
pub(super) const BULK_DELETE_MIN: usize = 4;

/// How many ops at the head of `ops` delete links in the same namespace.
pub(super) fn delete_run(ops: &[Op]) -> usize {
    let Some(Op::DeleteLink { ns: first, .. }) = ops.first() else {
        return 0;
    };
    ops.iter()
        .take_while(|op| matches!(op, Op::DeleteLink { ns, .. } if ns == first))
        .count()
}

fn krule(r: &Rule) -> KRule {
    debug_assert!(RULE_PRIORITIES.contains(&r.priority));
    KRule {
        priority: r.priority,
        from: r.from,
        fwmark: r.fwmark,
        table: r.table,
    }
}

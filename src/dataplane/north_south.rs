//! Side effects of north-south changes that are not kernel *state* and so
//! have no place in the diff:
//! - a floating IP removed (or re-targeted) from a `qrouter-`: its
//!   conntrack entries are deleted there, so NAT'd flows through it stop
//!   (OSSN-0020: otherwise established flows keep working): one dump of the
//!   namespace's table per pass for all removed addresses, deletes batched
//!   ([`conntrack`], over netlink; no process);
//! - a floating IP appearing in a `fip-` namespace (its /32 route added):
//!   gratuitous ARP on the `fg-` port, so upstream caches that pointed at
//!   another node (a move) are corrected at once;
//! - a SNAT gateway attached on this node (an `sgb-`/`qgb-` port put on
//!   its bridge, or a `qg-` macvlan made in a `snat-` namespace): three
//!   gratuitous ARPs on each attached port for its addresses, so the
//!   external switch and upstream caches, and the subnet bridges, follow a
//!   failover at once; likewise when an address is added to a port that is
//!   attached (a PortForwarding's dedicated address or a LoadBalancer's VIP
//!   on a serving gateway: the address may have been answered elsewhere).
use std::net::Ipv4Addr;

use super::diff::Op;
use super::engine::{Engine, OpError, Report};
use super::error::Error;
use super::{conntrack, garp, netns};
use crate::plan::model::{LinkKind, NftTable, NodeState, NsRef};
use crate::plan::names::{FIP_DNAT_MAP, FIP_PREFIX, QROUTER_PREFIX, SNAT_PREFIX};

/// Gratuitous ARPs per address when a SNAT gateway is attached.
const SNAT_GARP_COUNT: usize = 3;

/// The `snat-` port behind a root-namespace link that `op` attaches, a
/// `qg-` macvlan `op` creates in a `snat-` namespace, or an attached port
/// of a `snat-` namespace `op` adds an address to: (namespace, port).
fn snat_attach(op: &Op, desired: &NodeState) -> Option<(String, String)> {
    let in_snat = |ns: &NsRef| matches!(ns, NsRef::Named(n) if n.starts_with(SNAT_PREFIX));
    let root_end = |name: &str| {
        let l = desired.root.links.get(name)?;
        l.master.as_ref()?;
        match &l.kind {
            LinkKind::Veth {
                peer,
                peer_ns: NsRef::Named(ns),
            } if ns.starts_with(SNAT_PREFIX) => Some((ns.clone(), peer.clone())),
            _ => None,
        }
    };
    match op {
        Op::SetLink {
            ns: NsRef::Root,
            name,
            master: Some(Some(_)),
            ..
        } => root_end(name),
        Op::CreateLink {
            ns: NsRef::Root,
            link,
            ..
        } => root_end(&link.name),
        Op::CreateLink { ns, link, .. }
            if in_snat(ns) && matches!(link.kind, LinkKind::Macvlan { .. }) =>
        {
            let NsRef::Named(n) = ns else { return None };
            Some((n.clone(), link.name.clone()))
        }
        Op::AddAddress { ns, address } if in_snat(ns) => {
            let NsRef::Named(n) = ns else { return None };
            let link = desired.namespaces.get(n)?.links.get(&address.link)?;
            let attached = match &link.kind {
                // A macvlan `qg-` exists only where the gateway is served.
                LinkKind::Macvlan { .. } => true,
                LinkKind::Veth {
                    peer,
                    peer_ns: NsRef::Root,
                } => desired.root.links.get(peer)?.master.is_some(),
                _ => false,
            };
            attached.then(|| (n.clone(), address.link.clone()))
        }
        _ => None,
    }
}

/// Keys of `map` in `observed` that `desired` lacks or maps elsewhere.
pub fn removed_keys(
    observed: Option<&NftTable>,
    desired: Option<&NftTable>,
    map: &str,
) -> Vec<Ipv4Addr> {
    let Some(old) = observed.and_then(|t| t.sets.get(map)) else {
        return vec![];
    };
    let new = desired.and_then(|t| t.sets.get(map));
    old.elements
        .iter()
        .filter(|(k, v)| new.and_then(|n| n.elements.get(*k)) != Some(*v))
        .filter_map(|(k, _)| k.parse().ok())
        .collect()
}

impl Engine {
    /// Run the side effects of `ops` (already applied).
    pub(super) fn north_south_effects(
        &mut self,
        ops: &[Op],
        desired: &NodeState,
        report: &mut Report,
    ) {
        self.announce_snat(ops, desired, report);
        let mut announce: Vec<(NsRef, Ipv4Addr)> = Vec::new();
        for op in ops {
            match op {
                Op::Nft {
                    ns: ns @ NsRef::Named(name),
                    observed,
                    desired,
                } if name.starts_with(QROUTER_PREFIX) => {
                    let gone = removed_keys(observed.as_ref(), desired.as_ref(), FIP_DNAT_MAP);
                    if gone.is_empty() {
                        continue;
                    }
                    let path = self.ns_path(ns);
                    match netns::run_in(&path, || conntrack::remove_destinations(&gone)) {
                        Ok(Ok(r)) => report.writes.add("conntrack", r.deleted),
                        Ok(Err(e)) | Err(e) => report.errors.push(OpError {
                            op: format!("flush conntrack of {gone:?} in {name}"),
                            error: Error::Netns {
                                ns: name.clone(),
                                op: "conntrack",
                                source: e,
                            },
                        }),
                    }
                }
                Op::AddRoute {
                    ns: ns @ NsRef::Named(name),
                    route,
                } if name.starts_with(FIP_PREFIX) && route.dst.prefix_len() == 32 => {
                    announce.push((ns.clone(), route.dst.addr()));
                }
                _ => {}
            }
        }
        // One link dump and one namespace entry per `fip-` namespace.
        let mut by_ns: std::collections::BTreeMap<NsRef, Vec<Ipv4Addr>> = Default::default();
        for (ns, ip) in announce {
            by_ns.entry(ns).or_default().push(ip);
        }
        for (ns, ips) in by_ns {
            let NsRef::Named(name) = &ns else { continue };
            let name = name.clone();
            let links = self.handle(&ns).and_then(|h| {
                h.nl.links().map_err(|source| Error::Netlink {
                    ns: name.clone(),
                    op: "dump",
                    object: "links".into(),
                    source,
                })
            });
            let fg = match links {
                Ok(links) => links.into_iter().find(|l| l.name.starts_with("fg-")),
                Err(error) => {
                    report.errors.push(OpError {
                        op: format!("gratuitous ARP in {name}"),
                        error,
                    });
                    continue;
                }
            };
            let Some((fg, mac)) = fg.and_then(|l| l.mac.map(|m| (l.name, m))) else {
                continue;
            };
            let path = self.ns_path(&ns);
            let sent = netns::run_in(&path, || {
                garp::announce(&fg, &ips, mac, 2).map(|()| ips.len() as u64)
            });
            match sent {
                Ok(Ok(n)) => report.writes.add("garp", n),
                Ok(Err(e)) | Err(e) => report.errors.push(OpError {
                    op: format!("gratuitous ARP on {fg} in {name}"),
                    error: Error::Netns {
                        ns: name,
                        op: "garp",
                        source: e,
                    },
                }),
            }
        }
    }
}

impl Engine {
    /// Gratuitous ARPs for SNAT ports just attached (see the module docs).
    fn announce_snat(&mut self, ops: &[Op], desired: &NodeState, report: &mut Report) {
        let mut by_ns: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for (ns, port) in ops.iter().filter_map(|op| snat_attach(op, desired)) {
            by_ns.entry(ns).or_default().insert(port);
        }
        for (ns, ports) in by_ns {
            let Some(st) = desired.namespaces.get(&ns) else {
                continue;
            };
            let sends: Vec<(String, Vec<Ipv4Addr>, crate::plan::model::MacAddr)> = ports
                .into_iter()
                .filter_map(|p| {
                    let mac = st.links.get(&p)?.mac?;
                    let ips = st
                        .addresses
                        .iter()
                        .filter(|a| a.link == p)
                        .map(|a| a.addr.addr())
                        .collect();
                    Some((p, ips, mac))
                })
                .collect();
            let path = self.ns_path(&NsRef::Named(ns.clone()));
            let sent = netns::run_in(&path, || {
                let mut n = 0;
                for (port, ips, mac) in &sends {
                    garp::announce(port, ips, *mac, SNAT_GARP_COUNT)?;
                    n += ips.len() as u64;
                }
                Ok::<u64, std::io::Error>(n)
            });
            match sent {
                Ok(Ok(n)) => report.writes.add("garp", n),
                Ok(Err(e)) | Err(e) => report.errors.push(OpError {
                    op: format!("gratuitous ARP in {ns}"),
                    error: Error::Netns {
                        ns,
                        op: "garp",
                        source: e,
                    },
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::{NftFamily, NftSet};
    use std::collections::BTreeMap;

    fn table(pairs: &[(&str, &str)]) -> NftTable {
        NftTable {
            family: NftFamily::Ip,
            name: "kube_dvr".into(),
            sets: BTreeMap::from([(
                FIP_DNAT_MAP.to_string(),
                NftSet {
                    key_type: "ipv4_addr".into(),
                    data_type: Some("ipv4_addr".into()),
                    elements: pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                        .collect(),
                },
            )]),
            chains: BTreeMap::new(),
        }
    }

    #[test]
    fn an_address_added_to_an_attached_gateway_port_is_announced() {
        use crate::plan::model::{Address, Link, NsState};
        let veth = |peer: &str, peer_ns: NsRef, master: Option<&str>| Link {
            name: String::new(),
            kind: LinkKind::Veth {
                peer: peer.into(),
                peer_ns,
            },
            mac: None,
            master: master.map(Into::into),
            mtu: None,
        };
        let mut st = NodeState::default();
        let mut gw = NsState::default();
        gw.links
            .insert("qg-1".into(), veth("qgb-1", NsRef::Root, None));
        gw.links
            .insert("sg-7".into(), veth("sgb-7", NsRef::Root, None));
        st.namespaces.insert("snat-1".into(), gw);
        let ns = NsRef::Named("snat-1".into());
        st.root
            .links
            .insert("qgb-1".into(), veth("qg-1", ns.clone(), Some("br-ext")));
        // sgb-7 detached: a standby's port.
        st.root
            .links
            .insert("sgb-7".into(), veth("sg-7", ns.clone(), None));
        let add = |link: &str| Op::AddAddress {
            ns: ns.clone(),
            address: Address {
                link: link.into(),
                addr: "203.0.113.150/32".parse().unwrap(),
            },
        };
        assert_eq!(
            snat_attach(&add("qg-1"), &st),
            Some(("snat-1".to_string(), "qg-1".to_string()))
        );
        assert_eq!(snat_attach(&add("sg-7"), &st), None, "not attached here");
    }

    #[test]
    fn removed_and_retargeted_floating_ips_are_flushed() {
        let old = table(&[
            ("203.0.113.1", "10.0.0.1"),
            ("203.0.113.2", "10.0.0.2"),
            ("203.0.113.3", "10.0.0.3"),
        ]);
        let new = table(&[("203.0.113.1", "10.0.0.1"), ("203.0.113.2", "10.0.0.9")]);
        let gone = removed_keys(Some(&old), Some(&new), FIP_DNAT_MAP);
        assert_eq!(
            gone,
            vec![
                "203.0.113.2".parse::<Ipv4Addr>().unwrap(),
                "203.0.113.3".parse().unwrap()
            ]
        );
        assert_eq!(removed_keys(Some(&old), None, FIP_DNAT_MAP).len(), 3);
        assert!(removed_keys(None, Some(&new), FIP_DNAT_MAP).is_empty());
    }
}

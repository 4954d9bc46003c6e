//! Side effects of north-south changes that are not kernel *state* and so
//! have no place in the diff:
//! - a floating IP removed (or re-targeted) from a `qrouter-`: its
//!   conntrack entries are deleted there, so NAT'd flows through it stop
//!   (OSSN-0020: otherwise established flows keep working): one dump of the
//!   namespace's table per pass for all removed addresses, deletes batched
//!   ([`conntrack`], over netlink; no process);
//! - a floating IP appearing in a `fip-` namespace (its /32 route added):
//!   gratuitous ARP on the `fg-` port, so upstream caches that pointed at
//!   another node (a move) are corrected at once.
use std::net::Ipv4Addr;

use super::diff::Op;
use super::engine::{Engine, OpError, Report};
use super::error::Error;
use super::{conntrack, garp, netns};
use crate::plan::model::{NftTable, NsRef};
use crate::plan::names::{FIP_DNAT_MAP, FIP_PREFIX, QROUTER_PREFIX};

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
    pub(super) fn north_south_effects(&mut self, ops: &[Op], report: &mut Report) {
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

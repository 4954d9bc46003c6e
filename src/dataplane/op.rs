//! The ops a diff produces and the executor applies.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::plan::model::{
    Address, FdbEntry, Link, MacAddr, Neighbour, NftTable, NsRef, Route, Rule,
};

/// Facts about the observed kernel that
/// [`NodeState`](crate::plan::model::NodeState) has no field for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedExtra {
    /// Owned links that are administratively down.
    pub down: BTreeSet<(NsRef, String)>,
    /// Owned links that must be recreated whatever the model shows: an
    /// unknown kind, or a veth whose peer could not be resolved.
    pub broken: BTreeSet<(NsRef, String)>,
    /// kube-dvr tables in other families than the one in `NsState::nft`
    /// (always stale).
    pub extra_nft: BTreeMap<NsRef, Vec<NftTable>>,
}

/// One kernel change. Link-bound objects name their link; the executor
/// resolves names to indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    CreateNetns {
        name: String,
    },
    /// Create `link` (up, with its MAC / MTU / master). For a veth, `peer` is
    /// the other end's spec (its namespace is in `link.kind`).
    CreateLink {
        ns: NsRef,
        link: Link,
        peer: Option<Link>,
    },
    DeleteLink {
        ns: NsRef,
        name: String,
    },
    /// Change attributes in place; `master: Some(None)` = nomaster.
    SetLink {
        ns: NsRef,
        name: String,
        mac: Option<MacAddr>,
        mtu: Option<u32>,
        master: Option<Option<String>>,
        up: bool,
    },
    SetSysctl {
        ns: NsRef,
        key: String,
        value: String,
    },
    AddAddress {
        ns: NsRef,
        address: Address,
    },
    AddRoute {
        ns: NsRef,
        route: Route,
    },
    AddRule {
        ns: NsRef,
        rule: Rule,
    },
    /// Add or replace a permanent neighbour.
    SetNeighbour {
        ns: NsRef,
        neighbour: Neighbour,
    },
    AddFdb {
        ns: NsRef,
        entry: FdbEntry,
    },
    /// Bring the kube-dvr table of one family from `observed` to `desired`.
    Nft {
        ns: NsRef,
        observed: Option<NftTable>,
        desired: Option<NftTable>,
    },
    DelRoute {
        ns: NsRef,
        route: Route,
    },
    DelRule {
        ns: NsRef,
        rule: Rule,
    },
    DelNeighbour {
        ns: NsRef,
        neighbour: Neighbour,
    },
    DelFdb {
        ns: NsRef,
        entry: FdbEntry,
    },
    DelAddress {
        ns: NsRef,
        address: Address,
    },
    DeleteNetns {
        name: String,
    },
}

impl Op {
    /// The [`super::engine::WriteStats`] kind this op writes.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateNetns { .. } | Op::DeleteNetns { .. } => "netns",
            Op::CreateLink { .. } | Op::DeleteLink { .. } | Op::SetLink { .. } => "link",
            Op::SetSysctl { .. } => "sysctl",
            Op::AddAddress { .. } | Op::DelAddress { .. } => "address",
            Op::AddRoute { .. } | Op::DelRoute { .. } => "route",
            Op::AddRule { .. } | Op::DelRule { .. } => "rule",
            Op::SetNeighbour { .. } | Op::DelNeighbour { .. } => "neighbour",
            Op::AddFdb { .. } | Op::DelFdb { .. } => "fdb",
            Op::Nft { .. } => "nft",
        }
    }

    /// The namespace the op acts in (`None` for namespace ops).
    pub fn ns(&self) -> Option<&NsRef> {
        match self {
            Op::CreateNetns { .. } | Op::DeleteNetns { .. } => None,
            Op::CreateLink { ns, .. }
            | Op::DeleteLink { ns, .. }
            | Op::SetLink { ns, .. }
            | Op::SetSysctl { ns, .. }
            | Op::AddAddress { ns, .. }
            | Op::AddRoute { ns, .. }
            | Op::AddRule { ns, .. }
            | Op::SetNeighbour { ns, .. }
            | Op::AddFdb { ns, .. }
            | Op::Nft { ns, .. }
            | Op::DelRoute { ns, .. }
            | Op::DelRule { ns, .. }
            | Op::DelNeighbour { ns, .. }
            | Op::DelFdb { ns, .. }
            | Op::DelAddress { ns, .. } => Some(ns),
        }
    }

    /// Whether the op removes something.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Op::DeleteNetns { .. }
                | Op::DeleteLink { .. }
                | Op::DelRoute { .. }
                | Op::DelRule { .. }
                | Op::DelNeighbour { .. }
                | Op::DelFdb { .. }
                | Op::DelAddress { .. }
        )
    }
}

/// Display name of a namespace reference.
pub fn ns_name(ns: &NsRef) -> &str {
    match ns {
        NsRef::Root => "<root>",
        NsRef::Named(n) => n,
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateNetns { name } => write!(f, "create netns {name}"),
            Op::DeleteNetns { name } => write!(f, "delete netns {name}"),
            Op::CreateLink { ns, link, .. } => {
                write!(f, "create link {} in {}", link.name, ns_name(ns))
            }
            Op::DeleteLink { ns, name } => write!(f, "delete link {name} in {}", ns_name(ns)),
            Op::SetLink { ns, name, .. } => write!(f, "set link {name} in {}", ns_name(ns)),
            Op::SetSysctl { ns, key, value } => {
                write!(f, "sysctl {key}={value} in {}", ns_name(ns))
            }
            Op::AddAddress { ns, address: a } => {
                write!(
                    f,
                    "add address {} dev {} in {}",
                    a.addr,
                    a.link,
                    ns_name(ns)
                )
            }
            Op::DelAddress { ns, address: a } => {
                write!(
                    f,
                    "del address {} dev {} in {}",
                    a.addr,
                    a.link,
                    ns_name(ns)
                )
            }
            Op::AddRoute { ns, route } => write!(f, "add route {route:?} in {}", ns_name(ns)),
            Op::DelRoute { ns, route } => write!(f, "del route {route:?} in {}", ns_name(ns)),
            Op::AddRule { ns, rule } => write!(f, "add rule {rule:?} in {}", ns_name(ns)),
            Op::DelRule { ns, rule } => write!(f, "del rule {rule:?} in {}", ns_name(ns)),
            Op::SetNeighbour { ns, neighbour: n } => write!(
                f,
                "set neighbour {} lladdr {} dev {} in {}",
                n.ip,
                n.mac,
                n.link,
                ns_name(ns)
            ),
            Op::DelNeighbour { ns, neighbour: n } => {
                write!(
                    f,
                    "del neighbour {} dev {} in {}",
                    n.ip,
                    n.link,
                    ns_name(ns)
                )
            }
            Op::AddFdb { ns, entry: e } => write!(
                f,
                "add fdb {} dev {} dst {} in {}",
                e.mac,
                e.link,
                e.dst,
                ns_name(ns)
            ),
            Op::DelFdb { ns, entry: e } => write!(
                f,
                "del fdb {} dev {} dst {} in {}",
                e.mac,
                e.link,
                e.dst,
                ns_name(ns)
            ),
            Op::Nft {
                ns,
                observed,
                desired,
            } => {
                let fam = desired.as_ref().or(observed.as_ref()).map(|t| t.family);
                write!(
                    f,
                    "nft table {} {} in {}",
                    fam.map(|f| f.as_str()).unwrap_or("?"),
                    crate::plan::model::NFT_TABLE,
                    ns_name(ns)
                )
            }
        }
    }
}

//! Allocations that stay reserved while nothing resolves their objects, and
//! where new router indexes and VNIs are searched from.
//!
//! **Held** ([`Held`]): an object being deleted is left out of resolution (its
//! state is planned away), but its router index, VNIs and external address
//! stay reserved until its finalizer is removed, i.e. until every node that
//! had it confirmed removal or is gone. Otherwise a node whose agent is down
//! would keep answering ARP for a floating address, and NAT it into the old
//! tenant's workload, while a new tenant is handed the same address.
//!
//! Objects that do not decode (type skew during an upgrade; see
//! `cluster::watch`) are not resolved either; what their raw status holds
//! stays reserved the same way ([`Held::add_undecodable`]) for as long as
//! they exist.
//!
//! **Quarantine** ([`Cursors`]): router indexes and VNIs are allocated
//! next-fit from a cursor that only moves forward (wrapping at the top of
//! the range), so the values of a deleted router are the last to be reused:
//! a new router does not inherit a just-deleted router's segment while
//! stale attachments to it may still exist. The controller persists the
//! cursors (see `controller`), so a restart does not rewind them.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::api::{DvrKind, Kind};

/// Allocations of objects not in the resolver's input that nobody else may
/// take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub router_indexes: BTreeSet<u32>,
    pub vnis: BTreeSet<u32>,
    /// Floating, SNAT, dedicated forwarding and external virtual IP
    /// addresses.
    pub addresses: BTreeSet<Ipv4Addr>,
}

impl Held {
    /// The kinds whose objects hold allocations in their status.
    pub const KINDS: [Kind; 5] = [
        Kind::DistributedRouter,
        Kind::FloatingIP,
        Kind::SnatGateway,
        Kind::PortForwarding,
        Kind::LoadBalancer,
    ];

    /// Add what an object left out of resolution (being deleted) holds,
    /// from its status, read as [`Held::add_raw`] reads an object that does
    /// not decode: one reading for both.
    pub fn add_object<K: DvrKind>(&mut self, o: &K) {
        if !Held::KINDS.contains(&K::KIND) {
            return;
        }
        if let Ok(v) = serde_json::to_value(o) {
            self.add_raw(&v);
        }
    }

    /// Add what objects that do not decode hold (their raw JSON, of
    /// [`Held::KINDS`]), except those whose uid is in `cached`: an object
    /// with a decodable version in the caches is resolved from it, which
    /// keeps its allocations (holding them here too would take them from
    /// itself).
    pub fn add_undecodable<'a>(
        &mut self,
        raws: impl IntoIterator<Item = &'a serde_json::Value>,
        cached: &BTreeSet<&str>,
    ) {
        for raw in raws {
            let uid = raw["metadata"]["uid"].as_str();
            if !uid.is_some_and(|u| cached.contains(u)) {
                self.add_raw(raw);
            }
        }
    }

    /// Add what a raw object (one that does not decode into its type) holds,
    /// read leniently from its JSON status.
    pub fn add_raw(&mut self, obj: &serde_json::Value) {
        let st = &obj["status"];
        if let Some(i) = st["index"].as_u64().and_then(|i| u32::try_from(i).ok()) {
            self.router_indexes.insert(i);
        }
        for s in st["subnets"].as_array().into_iter().flatten() {
            if let Some(v) = s["vni"].as_u64().and_then(|v| u32::try_from(v).ok()) {
                self.vnis.insert(v);
            }
        }
        if let Some(a) = st["address"].as_str().and_then(|a| a.parse().ok()) {
            if holds_external_address(obj) {
                self.addresses.insert(a);
            }
        }
    }
}

/// Whether `obj`'s `status.address` is an external address of its own: a
/// PortForwarding's only with `dedicatedAddress` (else it is its SnatGateway's,
/// which must not lose it), a LoadBalancer's only without `subnet` (else it
/// is a tenant subnet's address, which may be another tenant's floating
/// address too: overlapping CIDRs are allowed across routers).
fn holds_external_address(obj: &serde_json::Value) -> bool {
    let spec = &obj["spec"];
    match obj["kind"].as_str() {
        Some("PortForwarding") => spec["dedicatedAddress"].as_bool() == Some(true),
        Some("LoadBalancer") => spec["subnet"].is_null(),
        _ => true,
    }
}

/// Where the next-fit search for a new router index and a new VNI starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursors {
    pub router_index: u32,
    pub vni: u32,
}

/// The first value in `[*cursor, max]`, then in `[min, *cursor)`, that is not
/// in `used`; moves `*cursor` past it.
pub(super) fn next_fit(used: &BTreeSet<u32>, cursor: &mut u32, min: u32, max: u32) -> Option<u32> {
    let start = (*cursor).clamp(min, max);
    let found = (start..=max)
        .chain(min..start)
        .find(|v| !used.contains(v))?;
    *cursor = if found == max { min } else { found + 1 };
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_objects_hold_what_their_raw_status_holds_unless_cached() {
        let raw = |uid: &str, status: serde_json::Value| serde_json::json!({"metadata": {"uid": uid}, "status": status});
        let raws = [
            raw(
                "fip",
                serde_json::json!({"address": "203.0.113.7", "node": 5}),
            ),
            raw(
                "router",
                serde_json::json!({"index": 3, "subnets": [{"vni": 4100}, {"vni": -1}]}),
            ),
            raw("out-of-range", serde_json::json!({"index": 1u64 << 40})),
            raw("cached", serde_json::json!({"address": "203.0.113.8"})),
        ];
        let mut h = Held::default();
        h.add_undecodable(&raws, &BTreeSet::from(["cached"]));
        assert_eq!(
            h.addresses,
            BTreeSet::from(["203.0.113.7".parse().unwrap()])
        );
        assert_eq!(h.router_indexes, BTreeSet::from([3]));
        assert_eq!(h.vnis, BTreeSet::from([4100]));
    }

    #[test]
    fn services_hold_only_external_addresses_of_their_own() {
        let mut h = Held::default();
        let obj = |kind: &str, spec: serde_json::Value, addr: &str| serde_json::json!({"kind": kind, "spec": spec, "status": {"address": addr}});
        // On the SNAT address: its SnatGateway's, not the forwarding's.
        h.add_raw(&obj(
            "PortForwarding",
            serde_json::json!({}),
            "203.0.113.50",
        ));
        // A subnet VIP: a tenant subnet's address.
        h.add_raw(&obj(
            "LoadBalancer",
            serde_json::json!({"subnet": "a"}),
            "203.0.113.60",
        ));
        assert!(h.addresses.is_empty(), "{h:?}");
        h.add_raw(&obj(
            "PortForwarding",
            serde_json::json!({"dedicatedAddress": true}),
            "203.0.113.150",
        ));
        h.add_raw(&obj("LoadBalancer", serde_json::json!({}), "203.0.113.120"));
        let want: BTreeSet<Ipv4Addr> = ["203.0.113.150", "203.0.113.120"]
            .map(|a| a.parse().unwrap())
            .into();
        assert_eq!(h.addresses, want);
    }

    #[test]
    fn next_fit_moves_forward_and_wraps() {
        let used = BTreeSet::from([5, 6]);
        let mut c = 4;
        assert_eq!(next_fit(&used, &mut c, 0, 9), Some(4));
        assert_eq!(next_fit(&used, &mut c, 0, 9), Some(7));
        assert_eq!(c, 8);
        let mut c = 9;
        assert_eq!(next_fit(&used, &mut c, 0, 9), Some(9));
        assert_eq!(c, 0);
        let full: BTreeSet<u32> = (0..=9).collect();
        assert_eq!(next_fit(&full, &mut c, 0, 9), None);
        // Below the range: from the bottom.
        let mut c = 0;
        assert_eq!(next_fit(&used, &mut c, 5, 9), Some(7));
    }
}

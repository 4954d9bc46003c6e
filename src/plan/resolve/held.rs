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
//! **Quarantine** ([`Cursors`]): router indexes and VNIs are allocated
//! next-fit from a cursor that only moves forward (wrapping at the top of
//! the range), so the values of a deleted router are the last to be reused:
//! a new router does not inherit a just-deleted router's segment while
//! stale attachments to it may still exist. The controller persists the
//! cursors (see `controller`), so a restart does not rewind them.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::api::{DistributedRouter, FloatingIP, SnatGateway};

/// Allocations of objects not in the resolver's input that nobody else may
/// take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub router_indexes: BTreeSet<u32>,
    pub vnis: BTreeSet<u32>,
    /// Floating and SNAT addresses (on any external network).
    pub addresses: BTreeSet<Ipv4Addr>,
}

impl Held {
    /// What objects being deleted hold, from their statuses.
    pub fn of<'a>(
        routers: impl IntoIterator<Item = &'a DistributedRouter>,
        floating_ips: impl IntoIterator<Item = &'a FloatingIP>,
        snat_gateways: impl IntoIterator<Item = &'a SnatGateway>,
    ) -> Held {
        let mut h = Held::default();
        for r in routers {
            let Some(st) = &r.status else { continue };
            h.router_indexes.extend(st.index);
            h.vnis.extend(st.subnets.iter().map(|s| s.vni));
        }
        let addresses = floating_ips
            .into_iter()
            .filter_map(|f| f.status.as_ref()?.address.as_deref())
            .chain(
                snat_gateways
                    .into_iter()
                    .filter_map(|s| s.status.as_ref()?.address.as_deref()),
            );
        h.addresses
            .extend(addresses.filter_map(|a| a.parse::<Ipv4Addr>().ok()));
        h
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
            self.addresses.insert(a);
        }
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

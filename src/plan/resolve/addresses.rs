//! External addresses: one address space per external network, shared by
//! FloatingIPs (floating pool) and SnatGateways (snat pool).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::conds::{fail, Fail, Order};
use super::external::ExtState;
use super::pools::Pool;

/// Which pool a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Floating,
    Snat,
}

impl Kind {
    pub fn pool<'e>(self, ext: &'e ExtState) -> &'e Pool {
        let spec = ext.spec.as_ref().expect("only valid networks allocate");
        match self {
            Kind::Floating => &spec.floating,
            Kind::Snat => &spec.snat,
        }
    }

    pub fn pool_name(self) -> &'static str {
        match self {
            Kind::Floating => "floating",
            Kind::Snat => "snat",
        }
    }
}

/// One object wanting an address on a (valid) external network.
pub(super) struct Request {
    pub kind: Kind,
    pub ext: String,
    pub order: Order,
    /// `FloatingIP ns/name`, for messages naming the holder.
    pub label: String,
    /// `spec.address`, already checked to be in the pool.
    pub requested: Option<Ipv4Addr>,
    /// `status.address`.
    pub held: Option<Ipv4Addr>,
}

/// Assign addresses; the result is parallel to `reqs`.
///
/// 1. Holders: a status address that is still in the pool (and equals the
///    requested one, if any) is kept, in precedence order.
/// 2. Requested addresses not yet assigned, in precedence order; taken ones
///    fail with `AddressInUse` naming the holder.
/// 3. The rest get the lowest free address of their pool (`PoolExhausted`).
///
/// Addresses `held` by objects being deleted (or that do not decode) are
/// taken for all three: a request for one fails with `AddressInUse` until
/// the deletion completes ([`Held`](super::Held)).
pub(super) fn allocate(
    reqs: &[Request],
    exts: &BTreeMap<String, ExtState>,
    held: &BTreeSet<Ipv4Addr>,
) -> Vec<Result<Ipv4Addr, Fail>> {
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by(|&a, &b| (&reqs[a].order, reqs[a].kind).cmp(&(&reqs[b].order, reqs[b].kind)));
    let mut out: Vec<Option<Result<Ipv4Addr, Fail>>> = reqs.iter().map(|_| None).collect();
    let mut holder: BTreeMap<(&str, Ipv4Addr), &str> = BTreeMap::new();

    let held_by_deleted = held;
    for &i in &order {
        let r = &reqs[i];
        let Some(held) = r.held else { continue };
        let pool = r.kind.pool(&exts[&r.ext]);
        if pool.contains(held)
            && !held_by_deleted.contains(&held)
            && r.requested.is_none_or(|a| a == held)
            && !holder.contains_key(&(r.ext.as_str(), held))
        {
            holder.insert((&r.ext, held), &r.label);
            out[i] = Some(Ok(held));
        }
    }
    for &i in &order {
        let r = &reqs[i];
        let (None, Some(want)) = (&out[i], r.requested) else {
            continue;
        };
        if held_by_deleted.contains(&want) {
            out[i] = Some(Err(fail(
                "AddressInUse",
                format!(
                    "address {want} on ExternalNetwork {:?} is still held by an object being deleted (free once every node has removed it) or by one that does not decode (free once it is fixed or deleted)",
                    r.ext
                ),
            )));
            continue;
        }
        out[i] = Some(match holder.get(&(r.ext.as_str(), want)) {
            Some(h) => Err(fail(
                "AddressInUse",
                format!(
                    "address {want} on ExternalNetwork {:?} is held by {h}; request another address or remove spec.address",
                    r.ext
                ),
            )),
            None => {
                holder.insert((&r.ext, want), &r.label);
                Ok(want)
            }
        });
    }
    let mut used: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for (ext, addr) in holder.keys() {
        used.entry(ext).or_default().insert(*addr);
    }
    let networks: BTreeSet<&str> = reqs.iter().map(|r| r.ext.as_str()).collect();
    for ext in networks {
        used.entry(ext)
            .or_default()
            .extend(held_by_deleted.iter().copied());
    }
    for &i in &order {
        if out[i].is_some() {
            continue;
        }
        let r = &reqs[i];
        let pool = r.kind.pool(&exts[&r.ext]);
        let taken = used.entry(&r.ext).or_default();
        out[i] = Some(match pool.lowest_free(taken) {
            Some(a) => {
                taken.insert(a);
                Ok(a)
            }
            None => Err(fail(
                "PoolExhausted",
                format!(
                    "the {} pool of ExternalNetwork {:?} ({}) has no free address; enlarge it or release an address",
                    r.kind.pool_name(),
                    r.ext,
                    pool.describe()
                ),
            )),
        });
    }
    out.into_iter()
        .map(|o| o.expect("every request decided"))
        .collect()
}

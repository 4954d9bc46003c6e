//! Retry delays with jitter: one rule for every retry loop.
//!
//! After an API outage every agent of a cluster fails at the same moment;
//! with fixed or purely exponential delays they would all retry in the same
//! instant again, pass after pass (thundering herd). Each delay here is drawn
//! uniformly from the upper half of its nominal value ("equal jitter"): the
//! retries spread out, and none comes sooner than half the nominal delay nor
//! later than the nominal delay.
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A uniformly distributed number in `[0, 1)`. Not cryptographic: the
/// standard library's per-process random hash keys, which is all spreading
/// retries needs.
fn unit() -> f64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `nominal` jittered into `[nominal / 2, nominal]`.
pub fn jitter(nominal: Duration) -> Duration {
    nominal.mul_f64(0.5 + 0.5 * unit())
}

/// The delay before retry number `failures` (1 = first retry): `base`
/// doubled per failure up to `cap`, jittered.
pub fn exponential(failures: u32, base: Duration, cap: Duration) -> Duration {
    let n = failures.saturating_sub(1).min(20);
    jitter(base.saturating_mul(1 << n).min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_differ_and_stay_in_bounds() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        for failures in 1..12 {
            let nominal = base.saturating_mul(1 << (failures - 1)).min(cap);
            let delays: Vec<Duration> = (0..50).map(|_| exponential(failures, base, cap)).collect();
            for d in &delays {
                assert!(*d >= nominal / 2 && *d <= nominal, "{d:?} for {nominal:?}");
            }
            let mut distinct = delays.clone();
            distinct.sort();
            distinct.dedup();
            assert!(distinct.len() > 40, "jittered: {delays:?}");
        }
        assert!(exponential(100, base, cap) <= cap);
        assert!(jitter(Duration::ZERO).is_zero());
    }
}

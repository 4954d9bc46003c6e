//! Agent liveness from the agents' heartbeat Leases (`kube-dvr-agent-<node>`),
//! judged by local observation, as client-go's leader election does.
//!
//! The controller never compares an agent's `renewTime` with its own clock:
//! a node whose clock runs ahead would otherwise stay "alive" long after its
//! agent died (and one whose clock runs behind would flap down). Instead it
//! records, on its own monotonic clock, when it last saw each Lease's
//! renewal change; an agent is down once no change was seen for the Lease's
//! `leaseDurationSeconds` (at most [`AGENT_HEARTBEAT_TIMEOUT_SECS`], so an
//! agent cannot declare itself immortal). A Lease seen for the first time
//! counts as just renewed: a restarted controller gives every agent one lease
//! duration before failing anything over.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;

use crate::cluster::{AGENT_HEARTBEAT_TIMEOUT_SECS, AGENT_LEASE_PREFIX};

/// What identifies one renewal of a Lease: it changes with every renewal.
type Mark = (Option<String>, Option<String>);

/// When each agent Lease was last seen to change, on the local clock.
#[derive(Debug, Default)]
pub struct LeaseClock {
    seen: HashMap<String, (Mark, Instant)>,
}

impl LeaseClock {
    /// Node → whether its agent heartbeats, given the Leases as cached at
    /// local time `now` (see the module docs). Leases that are gone are
    /// forgotten.
    pub fn observe<'a>(
        &mut self,
        leases: impl IntoIterator<Item = &'a Lease>,
        now: Instant,
    ) -> BTreeMap<String, bool> {
        let mut out = BTreeMap::new();
        let mut seen = HashMap::new();
        for l in leases {
            let Some(node) = l
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix(AGENT_LEASE_PREFIX))
            else {
                continue;
            };
            let spec = l.spec.clone().unwrap_or_default();
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
            let mark: Mark = (
                renewed.map(|t| t.0.to_string()),
                spec.holder_identity.clone(),
            );
            let at = match self.seen.get(node) {
                Some((m, at)) if *m == mark => *at,
                _ => now,
            };
            let max = AGENT_HEARTBEAT_TIMEOUT_SECS.max(1) as u64;
            let duration = spec
                .lease_duration_seconds
                .map_or(max, |d| (d.max(1) as u64).min(max));
            let alive = renewed.is_some()
                && spec
                    .holder_identity
                    .as_deref()
                    .is_some_and(|h| !h.is_empty())
                && now.saturating_duration_since(at) <= Duration::from_secs(duration);
            out.insert(node.to_string(), alive);
            seen.insert(node.to_string(), (mark, at));
        }
        self.seen = seen;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use serde_json::json;

    fn lease(node: &str, renewed: Timestamp, holder: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{AGENT_LEASE_PREFIX}{node}"), "namespace": "kube-dvr"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30,
                "renewTime": renewed.to_string()}
        }))
        .unwrap()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_renewal_time_far_in_the_future_does_not_keep_a_dead_agent_alive() {
        // The node's clock runs a day ahead of the controller's.
        let skewed = Timestamp::now() + SignedDuration::from_hours(24);
        let mut c = LeaseClock::default();
        let t0 = Instant::now();
        let mut renewed = skewed;
        let mut t = t0;
        // Renewing every 10 s: alive throughout.
        for _ in 0..6 {
            assert!(c.observe(&[lease("n1", renewed, "n1")], t)["n1"]);
            renewed += SignedDuration::from_secs(10);
            t += 10 * S;
        }
        // Renewals stop: alive for one lease duration, then down, however
        // far ahead its renewTime claims to be.
        let last = lease("n1", renewed, "n1");
        assert!(c.observe(std::slice::from_ref(&last), t)["n1"]);
        assert!(c.observe(std::slice::from_ref(&last), t + 30 * S)["n1"]);
        assert!(!c.observe(std::slice::from_ref(&last), t + 31 * S)["n1"]);
        assert!(!c.observe(&[last], t + 3600 * S)["n1"]);
    }

    #[test]
    fn a_renewal_time_in_the_past_keeps_a_renewing_agent_alive() {
        // The node's clock runs an hour behind: every renewal still counts.
        let mut c = LeaseClock::default();
        let t0 = Instant::now();
        let old = Timestamp::now() - SignedDuration::from_hours(1);
        for i in 0..10 {
            let l = lease("n1", old + SignedDuration::from_secs(10 * i), "n1");
            assert!(c.observe(&[l], t0 + 10 * S * i as u32)["n1"]);
        }
    }

    #[test]
    fn first_sight_is_a_renewal_and_empty_holders_are_down() {
        let mut c = LeaseClock::default();
        let t0 = Instant::now();
        let stale = Timestamp::now() - SignedDuration::from_hours(1);
        let leases = [
            lease("n1", stale, "n1"),
            lease("n2", stale, ""),
            serde_json::from_value(json!({"metadata": {"name": "kube-dvr-controller"}})).unwrap(),
        ];
        let m = c.observe(&leases, t0);
        assert_eq!(m.len(), 2);
        assert!(m["n1"], "a restarted controller waits a lease duration");
        assert!(!m["n2"]);
        assert!(!c.observe(&leases, t0 + 31 * S)["n1"]);
        // The lease's own duration counts, bounded by the default.
        let mut short = lease("n3", stale, "n3");
        short.spec.as_mut().unwrap().lease_duration_seconds = Some(1);
        let mut long = lease("n4", stale, "n4");
        long.spec.as_mut().unwrap().lease_duration_seconds = Some(1_000_000);
        c.observe(&[short.clone(), long.clone()], t0);
        let m = c.observe(&[short, long], t0 + 2 * S);
        assert!(!m["n3"]);
        assert!(m["n4"]);
        let m = c.observe(&[], t0 + 2 * S);
        assert!(m.is_empty());
    }
}

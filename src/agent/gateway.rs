//! Which candidate serves each SNAT gateway, decided on this node from its
//! own probes ([`super::probe`]), without the API server. Pure.
//!
//! Every node of a router sends the gateway's traffic (the FDB entries of
//! its `sg-` MACs) to the serving node of its own view; a candidate
//! attaches the gateway when it is that node. The rules:
//!
//! - A candidate that serves keeps serving while it can serve (ready, and
//!   it hears some peer, unless it is the only candidate) and no
//!   higher-ranked candidate that is up claims the gateway too (two claim
//!   only after a partition heals: the higher rank wins). An isolated
//!   candidate resigns at once: the others take over.
//! - Otherwise the serving node is the first candidate that is up and
//!   claims the gateway (no preemptive failback: a returning node sees the
//!   claim and stays standby); with no claim heard, the first candidate up
//!   in rank order. This node takes it itself only when every
//!   higher-ranked candidate is down in its view and it has heard peers
//!   without a gap for the hold-down (a node whose underlay just came back
//!   first learns who serves).
//! - A session not decided yet counts as up, and as claiming exactly when
//!   the peer is the plan's first candidate: an agent that (re)starts
//!   follows the plan and changes nothing.
//! - Upstream readiness (the external network's gateway answers ARP from
//!   the candidate, [`super::probe`]) is a preference, not a veto: while
//!   some candidate that is up here (this node included) reaches its
//!   upstream, candidates that do not count as down, so a serving node
//!   whose external link failed resigns and the next ready one takes
//!   over; when none reaches it (the upstream itself is down, or never
//!   answers ARP probes) readiness is ignored and nothing moves.
use std::collections::BTreeMap;

use crate::plan::view::{ClusterView, ObjectKey, SnatView};

/// A peer as this node sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Its session is up (or not decided yet) and it said it can serve.
    pub up: bool,
    /// Its session is not decided yet.
    pub init: bool,
    /// Its recent reply claims the gateway.
    pub claims: bool,
    /// Its recent reply does not list the gateway as unready (its upstream
    /// answers).
    pub ready: bool,
}

/// What this node itself may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Me {
    /// May keep serving (ready, hears a peer).
    pub stay: bool,
    /// May start serving (ready, has heard peers for the hold-down).
    pub activate: bool,
    /// This node reaches the gateway's upstream.
    pub ready: bool,
}

/// The serving node of one gateway in the view of `me`. `current` is the
/// decision this node applied last (`None`: the plan's, the first
/// candidate). Never `me` unless `me` is a candidate.
pub fn decide(
    me: &str,
    candidates: &[String],
    current: Option<&str>,
    seen: impl Fn(&str) -> Seen,
    own: Me,
) -> Option<String> {
    let c0 = candidates.first()?.as_str();
    let current = current.unwrap_or(c0);
    let rank = candidates.iter().position(|c| c == me);
    let single = candidates.len() == 1;
    let claims = |c: &str| {
        let s = seen(c);
        s.claims || (s.init && c == c0)
    };
    // Readiness counts only while some candidate up here has it.
    let tier = candidates.iter().any(|c| {
        if c == me {
            own.ready
        } else {
            let s = seen(c);
            s.up && s.ready
        }
    });
    let up = |c: &str| {
        let s = seen(c);
        s.up && (s.ready || !tier)
    };
    let own_ready = own.ready || !tier;
    if let Some(r) = rank {
        if current == me && (own.stay || single) && own_ready {
            let outranked = candidates[..r].iter().any(|c| up(c) && claims(c));
            if !outranked {
                return Some(me.to_string());
            }
        }
    }
    let others = || candidates.iter().map(String::as_str).filter(|c| *c != me);
    if let Some(c) = others().find(|c| up(c) && claims(c)) {
        return Some(c.to_string());
    }
    if let Some(c) = others().find(|c| claims(c)) {
        // Claimed by a node still in hold-down: it answers, wait for it.
        return Some(c.to_string());
    }
    for c in candidates {
        if c == me {
            if (own.activate || single) && own_ready {
                return Some(me.to_string());
            }
        } else if up(c) {
            return Some(c.clone());
        }
    }
    // Nobody usable: keep pointing where we did, never at ourselves.
    if current != me {
        return Some(current.to_string());
    }
    others().next().map(str::to_string)
}

/// The SNAT gateways this node takes part in: it hosts their router's
/// endpoints or is one of their candidates.
pub fn relevant<'a>(view: &'a ClusterView, me: &'a str) -> impl Iterator<Item = &'a SnatView> {
    view.snat_gateways.iter().filter(move |s| {
        !s.candidates.is_empty()
            && (s.candidates.iter().any(|c| c == me)
                || view
                    .routers
                    .iter()
                    .find(|r| r.key == s.router)
                    .is_some_and(|r| r.endpoints.iter().any(|e| e.node == me)))
    })
}

/// Every relevant gateway's serving node (also those that follow the
/// plan) and its router's index. `seen(node, router index)`.
pub fn decide_all(
    view: &ClusterView,
    me: &str,
    current: &BTreeMap<ObjectKey, String>,
    seen: impl Fn(&str, u32) -> Seen,
    own: impl Fn(u32) -> Me,
) -> BTreeMap<ObjectKey, (String, u32)> {
    relevant(view, me)
        .filter_map(|s| {
            let index = view.routers.iter().find(|r| r.key == s.router)?.index;
            let d = decide(
                me,
                &s.candidates,
                current.get(&s.key).map(String::as_str),
                |c| seen(c, index),
                own(index),
            )?;
            Some((s.key.clone(), (d, index)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
    const UP: Seen = Seen {
        up: true,
        init: false,
        claims: false,
        ready: true,
    };
    const CLAIMING: Seen = Seen {
        up: true,
        init: false,
        claims: true,
        ready: true,
    };
    const INIT: Seen = Seen {
        up: true,
        init: true,
        claims: false,
        ready: true,
    };
    const DOWN: Seen = Seen {
        up: false,
        init: false,
        claims: false,
        ready: false,
    };
    const OK: Me = Me {
        stay: true,
        activate: true,
        ready: true,
    };
    const ISOLATED: Me = Me {
        stay: false,
        activate: false,
        ready: true,
    };
    /// Hears peers, but its upstream does not answer.
    const CUT_OFF: Me = Me {
        stay: true,
        activate: true,
        ready: false,
    };

    fn table(pairs: &[(&'static str, Seen)]) -> impl Fn(&str) -> Seen {
        let pairs = pairs.to_vec();
        move |n| {
            pairs
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, s)| *s)
                .unwrap_or(DOWN)
        }
    }

    #[test]
    fn a_fresh_start_follows_the_plan() {
        let c = cands(&["a", "b", "c"]);
        let all_init = table(&[("a", INIT), ("b", INIT), ("c", INIT)]);
        for me in ["a", "b", "c", "compute"] {
            assert_eq!(decide(me, &c, None, &all_init, OK).as_deref(), Some("a"));
        }
    }

    #[test]
    fn the_next_candidate_takes_over_when_the_first_is_down() {
        let c = cands(&["a", "b", "c"]);
        let seen = table(&[("a", DOWN), ("b", UP), ("c", UP)]);
        assert_eq!(decide("b", &c, None, &seen, OK).as_deref(), Some("b"));
        assert_eq!(decide("c", &c, None, &seen, OK).as_deref(), Some("b"));
        assert_eq!(decide("compute", &c, None, &seen, OK).as_deref(), Some("b"));
        // b has not heard peers for the hold-down yet: it waits, c too.
        let waiting = Me {
            stay: true,
            activate: false,
            ready: true,
        };
        assert_eq!(decide("b", &c, None, &seen, waiting).as_deref(), Some("c"));
    }

    #[test]
    fn an_isolated_gateway_resigns() {
        let c = cands(&["a", "b"]);
        let seen = table(&[]);
        assert_eq!(
            decide("a", &c, Some("a"), &seen, ISOLATED).as_deref(),
            Some("b")
        );
        // The only candidate never resigns: nobody could take over.
        assert_eq!(
            decide("a", &cands(&["a"]), Some("a"), &seen, ISOLATED).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn no_preemptive_failback() {
        let c = cands(&["a", "b", "c"]);
        // a is back, b serves (claims): a stays standby, everyone stays on b.
        let seen = table(&[("a", UP), ("b", CLAIMING), ("c", UP)]);
        assert_eq!(decide("a", &c, Some("b"), &seen, OK).as_deref(), Some("b"));
        assert_eq!(
            decide("compute", &c, Some("b"), &seen, OK).as_deref(),
            Some("b")
        );
        // a's session to b is still in hold-down but b's claim was heard.
        let holding = Seen {
            up: false,
            init: false,
            claims: true,
            ready: true,
        };
        let seen = table(&[("b", holding), ("c", UP)]);
        assert_eq!(decide("a", &c, Some("b"), &seen, OK).as_deref(), Some("b"));
        // b keeps serving: a is up but does not claim.
        let seen = table(&[("a", UP), ("c", UP)]);
        assert_eq!(decide("b", &c, Some("b"), &seen, OK).as_deref(), Some("b"));
    }

    #[test]
    fn after_a_partition_heals_the_higher_rank_wins() {
        let c = cands(&["a", "b"]);
        let seen = table(&[("a", CLAIMING)]);
        assert_eq!(decide("b", &c, Some("b"), &seen, OK).as_deref(), Some("a"));
        let seen = table(&[("b", CLAIMING)]);
        assert_eq!(decide("a", &c, Some("a"), &seen, OK).as_deref(), Some("a"));
    }

    #[test]
    fn nobody_up_keeps_the_last_choice_but_never_self() {
        let c = cands(&["a", "b"]);
        let seen = table(&[]);
        assert_eq!(
            decide("compute", &c, Some("b"), &seen, OK).as_deref(),
            Some("b")
        );
        assert_eq!(
            decide("b", &c, Some("b"), &seen, ISOLATED).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_gateway_without_upstream_hands_over_to_a_ready_one() {
        let c = cands(&["a", "b", "c"]);
        let unready = |s: Seen| Seen { ready: false, ..s };
        // a serves but its upstream is gone: it resigns for b.
        let seen = table(&[("b", UP), ("c", UP)]);
        assert_eq!(
            decide("a", &c, Some("a"), &seen, CUT_OFF).as_deref(),
            Some("b")
        );
        // The others see a unready; while it still claims (it has not
        // detached yet) they wait for it: never two attached.
        let seen = table(&[("a", unready(CLAIMING)), ("c", UP)]);
        assert_eq!(decide("b", &c, Some("a"), &seen, OK).as_deref(), Some("a"));
        // Its claim gone, b takes over in every view.
        let seen = table(&[("a", unready(UP)), ("b", UP), ("c", UP)]);
        for me in ["b", "c", "compute"] {
            assert_eq!(decide(me, &c, Some("a"), &seen, OK).as_deref(), Some("b"));
        }
        // A standby without upstream never takes over while c has it.
        let seen = table(&[("a", DOWN), ("c", UP)]);
        assert_eq!(
            decide("b", &c, Some("a"), &seen, CUT_OFF).as_deref(),
            Some("c")
        );
        // Back, a stays standby: b claims (no preemption).
        let seen = table(&[("a", UP), ("b", CLAIMING), ("c", UP)]);
        assert_eq!(decide("a", &c, Some("b"), &seen, OK).as_deref(), Some("b"));
    }

    #[test]
    fn readiness_is_ignored_when_no_candidate_has_it() {
        // The upstream itself is down (or never answers ARP): nothing moves.
        let c = cands(&["a", "b"]);
        let seen = table(&[("b", Seen { ready: false, ..UP })]);
        assert_eq!(
            decide("a", &c, Some("a"), &seen, CUT_OFF).as_deref(),
            Some("a")
        );
        let seen = table(&[(
            "a",
            Seen {
                ready: false,
                ..CLAIMING
            },
        )]);
        assert_eq!(
            decide("b", &c, Some("a"), &seen, CUT_OFF).as_deref(),
            Some("a")
        );
        // ... and a dead node is still replaced.
        let seen = table(&[("a", DOWN)]);
        assert_eq!(
            decide("b", &c, Some("a"), &seen, CUT_OFF).as_deref(),
            Some("b")
        );
    }
}

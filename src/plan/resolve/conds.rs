//! Condition bookkeeping for resolution: outcomes as `Result<(), Fail>`,
//! rendered to `metav1.Condition`s with deterministic transition times.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use crate::api::conditions::{is_valid_reason, FALSE, READY, TRUE};

/// Why a condition is False: a CamelCase reason and a message a user can act
/// on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fail {
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of one check.
pub(super) type Check = Result<(), Fail>;

pub(super) fn fail(reason: &'static str, message: impl Into<String>) -> Fail {
    debug_assert!(is_valid_reason(reason), "invalid reason {reason:?}");
    Fail {
        reason,
        message: message.into(),
    }
}

/// Precedence of objects competing for the same thing ("first come keeps
/// it", after existing allocations): older `creationTimestamp` first, objects
/// without one (not stored yet, e.g. lab manifests) last, then
/// namespace/name.
pub(super) type Order = (bool, Option<Time>, String, String);

pub(super) fn order_of(meta: &ObjectMeta) -> Order {
    (
        meta.creation_timestamp.is_none(),
        meta.creation_timestamp.clone(),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Builds an object's conditions. A condition whose status is unchanged from
/// the object's current status keeps its `lastTransitionTime`; one that is new
/// or flipped gets `now`. So resolving the same input twice, or resolving on
/// its own output, yields identical conditions.
pub(super) struct CondSet<'a> {
    old: &'a [Condition],
    generation: Option<i64>,
    now: Timestamp,
    out: Vec<Condition>,
}

impl<'a> CondSet<'a> {
    pub fn new(old: &'a [Condition], generation: Option<i64>, now: Timestamp) -> Self {
        CondSet {
            old,
            generation,
            // `metav1.Time` has second precision: anything finer would not
            // survive a round trip through the API server.
            now: Timestamp::from_second(now.as_second()).unwrap_or(now),
            out: Vec::new(),
        }
    }

    /// Add condition `type_`: True with `ok_reason` (empty message) when
    /// `check` passed, else False with the failure's reason and message.
    pub fn put(&mut self, type_: &str, check: &Check, ok_reason: &'static str) {
        let (status, reason, message) = match check {
            Ok(()) => (TRUE, ok_reason, String::new()),
            Err(f) => (FALSE, f.reason, f.message.clone()),
        };
        debug_assert!(is_valid_reason(reason), "invalid reason {reason:?}");
        let time = match self.old.iter().find(|c| c.type_ == type_) {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(self.now),
        };
        self.out.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: self.generation,
            last_transition_time: time,
        });
    }

    /// Add `Ready`: True when all `checks` passed, else False with the first
    /// failure.
    pub fn ready(&mut self, checks: &[&Check]) {
        let first = checks.iter().find_map(|c| c.as_ref().err()).cloned();
        self.put(READY, &first.map_or(Ok(()), Err), "Ready");
    }

    /// The conditions, sorted by type.
    pub fn finish(mut self) -> Vec<Condition> {
        self.out.sort_by(|a, b| a.type_.cmp(&b.type_));
        self.out
    }
}

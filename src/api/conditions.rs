//! Status conditions (`metav1.Condition`) as all kube-dvr kinds use them.
//!
//! Every status carries `Ready` plus the specific conditions that explain it:
//! - [`VALID`]: the spec is consistent with the rest of the cluster (what the
//!   CRD schema cannot check, e.g. the referenced router exists).
//! - [`ALLOCATED`]: addresses, VNIs, MACs, indexes are assigned.
//! - [`SCHEDULED`]: a node was chosen (the node serving a floating IP, the
//!   active SNAT node).
//! - [`PROGRAMMED`]: the agents on the relevant nodes applied it to the kernel.
//!
//! [`set_condition`] follows apimachinery's `meta.SetStatusCondition`: the
//! transition time only moves when the status flips, so a reconcile pass that
//! changes nothing produces an identical status (and therefore no write).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The object is fully working.
pub const READY: &str = "Ready";
/// The spec is valid with respect to other objects.
pub const VALID: &str = "Valid";
/// Allocations (addresses, VNIs, MACs, indexes) are assigned.
pub const ALLOCATED: &str = "Allocated";
/// A serving node was chosen.
pub const SCHEDULED: &str = "Scheduled";
/// The dataplane on the relevant nodes is programmed.
pub const PROGRAMMED: &str = "Programmed";

/// `Valid` reason of a DistributedRouter whose subnet names another
/// namespace's NetworkAttachmentDefinition. Not supported (no grant
/// mechanism): a tenant must never route, or see the names of, another
/// namespace's pods.
pub const CROSS_NAMESPACE_ATTACHMENT: &str = "CrossNamespaceAttachment";

/// `Condition.status` values.
pub const TRUE: &str = "True";
/// `Condition.status` values.
pub const FALSE: &str = "False";
/// `Condition.status` values.
pub const UNKNOWN: &str = "Unknown";

/// A condition of `type_` with status `True`/`False`, transition time now.
///
/// `reason` must be CamelCase (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`,
/// the API server rejects anything else); `generation` is the
/// `metadata.generation` the condition was computed from.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    debug_assert!(
        is_valid_reason(reason),
        "invalid condition reason {reason:?}"
    );
    Condition {
        type_: type_.to_string(),
        status: if status { TRUE } else { FALSE }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now()),
    }
}

/// Now, in whole seconds: `metav1.Time` is serialized with second precision,
/// so anything finer would not survive a round trip through the API server
/// and every status comparison after a read would differ.
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).expect("current time is in range")
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// Whether `Ready` is `True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    is_true(conditions, READY)
}

/// Insert or update `new` in `conditions` (keyed by type). When the status
/// does not change, the existing `lastTransitionTime` is kept. Returns whether
/// anything (status, reason, message, observedGeneration) changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            if old.status != new.status {
                old.last_transition_time = new.last_transition_time;
            }
            old.status = new.status;
            old.reason = new.reason;
            old.message = new.message;
            old.observed_generation = new.observed_generation;
            changed
        }
    }
}

/// Whether `reason` is acceptable to the API server as `Condition.reason`.
pub fn is_valid_reason(reason: &str) -> bool {
    let b = reason.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b',' | b':');
    !b.is_empty()
        && b.len() <= 1024
        && b[0].is_ascii_alphabetic()
        && b.iter().all(inner)
        && (b.len() == 1 || b[b.len() - 1].is_ascii_alphanumeric() || b[b.len() - 1] == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(c: &Condition) -> Timestamp {
        c.last_transition_time.0
    }

    #[test]
    fn condition_fields() {
        let c = condition(READY, false, "NoEndpoint", "pod has no address", Some(3));
        assert_eq!(c.type_, "Ready");
        assert_eq!(c.status, "False");
        assert_eq!(c.reason, "NoEndpoint");
        assert_eq!(c.message, "pod has no address");
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(condition(VALID, true, "Valid", "", None).status, "True");
        assert_eq!(c.last_transition_time.0.subsec_nanosecond(), 0);
    }

    #[test]
    fn is_ready_needs_ready_true() {
        assert!(!is_ready(&[]));
        assert!(!is_ready(&[condition(
            ALLOCATED,
            true,
            "Allocated",
            "",
            None
        )]));
        assert!(!is_ready(&[condition(READY, false, "Pending", "", None)]));
        let mut unknown = condition(READY, true, "Pending", "", None);
        unknown.status = UNKNOWN.into();
        assert!(!is_ready(&[unknown]));
        assert!(is_ready(&[
            condition(ALLOCATED, false, "PoolExhausted", "", None),
            condition(READY, true, "Ready", "", None),
        ]));
    }

    #[test]
    fn set_condition_keeps_transition_time_unless_status_flips() {
        let mut conds = vec![];
        let mut first = condition(READY, false, "Pending", "waiting", Some(1));
        first.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        assert!(set_condition(&mut conds, first));
        assert_eq!(conds.len(), 1);

        // Same status, same everything: no change, time kept.
        let again = condition(READY, false, "Pending", "waiting", Some(1));
        assert!(!set_condition(&mut conds, again));
        assert_eq!(at(&conds[0]), Timestamp::UNIX_EPOCH);

        // Same status, new message: changed, time kept.
        let msg = condition(READY, false, "Pending", "still waiting", Some(2));
        assert!(set_condition(&mut conds, msg));
        assert_eq!(at(&conds[0]), Timestamp::UNIX_EPOCH);
        assert_eq!(conds[0].message, "still waiting");
        assert_eq!(conds[0].observed_generation, Some(2));

        // Status flips: time moves.
        let flip = condition(READY, true, "Ready", "", Some(2));
        assert!(set_condition(&mut conds, flip));
        assert_ne!(at(&conds[0]), Timestamp::UNIX_EPOCH);
        assert!(is_ready(&conds));

        // Other types are added, not replaced.
        assert!(set_condition(
            &mut conds,
            condition(PROGRAMMED, true, "Programmed", "", Some(2))
        ));
        assert_eq!(conds.len(), 2);
        assert!(is_true(&conds, PROGRAMMED));
    }

    #[test]
    fn reasons() {
        for ok in ["Ready", "R", "NoEndpoint", "Pool_Exhausted", "a:b,c_"] {
            assert!(is_valid_reason(ok), "{ok}");
        }
        for bad in ["", "1Bad", "Has Space", "Trailing:", "dash-ed"] {
            assert!(!is_valid_reason(bad), "{bad}");
        }
    }
}

//! The status of one object in a pass: its desired status (the resolver's
//! plus `Programmed`), compared with the stored one into a merge patch and
//! the Events that go with it. See [`super`] for the model.
use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde::Serialize;
use serde_json::Value;

use super::*;

/// The parts of a status `Programmed` is computed from and written to.
pub(crate) struct ProgrammedParts<'a> {
    pub(crate) conditions: &'a mut Vec<Condition>,
    /// The nodes the object concerns.
    pub(crate) nodes: Vec<String>,
    /// Routers: where to list the done nodes.
    pub(crate) programmed_nodes: Option<&'a mut Vec<String>>,
}

pub(super) struct Ctx<'a> {
    pub(super) now: Timestamp,
    pub(super) progress: &'a BTreeMap<String, NodeProgress>,
}

/// A status as JSON without what `Programmed` bookkeeping changes: equal
/// allocations.
fn allocations(status: &Value) -> Value {
    let mut v = status.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["conditions", "programmedNodes", "observedGeneration"] {
            o.remove(k);
        }
    }
    v
}

/// Conditions sorted by type, for comparison.
fn normalized(status: &Value) -> Value {
    let mut v = status.clone();
    if let Some(Value::Array(cs)) = v.get_mut("conditions") {
        cs.sort_by(|a, b| a["type"].as_str().cmp(&b["type"].as_str()));
    }
    v
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).expect("a status serializes")
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn object<K, S>(
        &self,
        out: &mut Actions,
        kind: Kind,
        obj: &K,
        stored: Option<&S>,
        desired: Option<S>,
        parts: impl FnOnce(&mut S) -> Option<ProgrammedParts<'_>>,
    ) where
        K: Resource<DynamicType = ()>,
        S: Serialize + Clone + Default,
    {
        let m = obj.meta();
        if deleting(m) {
            return;
        }
        let target = Target::of(kind, obj);
        if !has_finalizer(m) {
            let mut finalizers = m.finalizers.clone().unwrap_or_default();
            finalizers.push(api::FINALIZER.to_string());
            out.add_finalizer.push(FinalizerWrite {
                target: target.clone(),
                finalizers,
            });
        }
        let Some(mut desired) = desired else { return };
        let stored_v = stored
            .map(to_value)
            .unwrap_or_else(|| to_value(&S::default()));
        let stored_conds: Vec<Condition> =
            serde_json::from_value(stored_v.get("conditions").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        let generation = m.generation;
        let same_alloc_before = {
            let d = to_value(&desired);
            allocations(&d) == allocations(&stored_v)
                && stored_v.get("observedGeneration").and_then(Value::as_i64) == generation
        };
        if let Some(p) = parts(&mut desired) {
            let sticky = same_alloc_before && conditions::is_true(&stored_conds, PROGRAMMED);
            // Routers list their programmed nodes; a floating IP or SNAT
            // gateway that was programmed covered its (unchanged) node.
            let stored_pn: BTreeSet<String> = if p.programmed_nodes.is_some() {
                serde_json::from_value(
                    stored_v
                        .get("programmedNodes")
                        .cloned()
                        .unwrap_or(Value::Null),
                )
                .unwrap_or_default()
            } else if sticky {
                p.nodes.iter().cloned().collect()
            } else {
                BTreeSet::new()
            };
            self.programmed(
                p,
                &target.key(),
                generation,
                &stored_conds,
                sticky,
                &stored_pn,
            );
        }
        let desired_v = to_value(&desired);
        let conds: Vec<Condition> =
            serde_json::from_value(desired_v.get("conditions").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        let ready = conditions::is_ready(&conds);
        *out.objects.entry((kind, ready)).or_default() += 1;
        if normalized(&desired_v) == normalized(&stored_v) {
            return;
        }
        // Merge patch: fields the stored status has and the desired lacks
        // are removed explicitly.
        let mut patch = desired_v.as_object().cloned().unwrap_or_default();
        if let Some(old) = stored_v.as_object() {
            for k in old.keys() {
                patch.entry(k.clone()).or_insert(Value::Null);
            }
        }
        let events = events_for(kind, &target.name, &stored_conds, &conds);
        out.status.push(StatusWrite {
            target,
            patch: serde_json::json!({ "status": patch }),
            events,
        });
    }

    /// Compute `Programmed`, AND it into `Ready`, fill `programmedNodes`.
    fn programmed(
        &self,
        p: ProgrammedParts<'_>,
        id: &str,
        generation: Option<i64>,
        stored: &[Condition],
        sticky: bool,
        stored_pn: &BTreeSet<String>,
    ) {
        let resolved = conditions::is_ready(p.conditions);
        let default = NodeProgress::default();
        let prog = |n: &str| self.progress.get(n).unwrap_or(&default);
        let healthy = |n: &str| !prog(n).down && !prog(n).failing(id);
        let done: Vec<String> = p
            .nodes
            .iter()
            .filter(|n| prog(n).done_for(id) || (sticky && stored_pn.contains(*n) && healthy(n)))
            .cloned()
            .collect();
        if let Some(pn) = p.programmed_nodes {
            *pn = if resolved { done.clone() } else { Vec::new() };
        }
        let missing: Vec<&str> = p
            .nodes
            .iter()
            .map(String::as_str)
            .filter(|n| !done.iter().any(|d| d == n))
            .collect();
        let (ok, reason, message) = if !resolved {
            (
                false,
                REASON_UNRESOLVED,
                "nothing is programmed until the object is Ready otherwise".to_string(),
            )
        } else if missing.is_empty() {
            let msg = if p.nodes.is_empty() {
                "no node needs it yet".to_string()
            } else {
                format!("programmed on {}", p.nodes.join(", "))
            };
            (true, REASON_PROGRAMMED, msg)
        } else if missing.iter().any(|n| prog(n).down) {
            let down: Vec<&str> = missing.iter().copied().filter(|n| prog(n).down).collect();
            let what = if down.iter().all(|n| prog(n).no_lease) {
                "has no heartbeat Lease"
            } else {
                "stopped heartbeating"
            };
            (
                false,
                REASON_AGENT_DOWN,
                format!("the kube-dvr agent on {} {what}", down.join(", ")),
            )
        } else if let Some(n) = missing.iter().find(|n| prog(n).failing(id)) {
            // Only this object's own errors are shown: the node's other
            // errors may name other tenants' objects.
            let own: Vec<&str> = prog(n).errors_of(id).collect();
            let message = if own.is_empty() {
                format!(
                    "the agent on {n} reports errors in state the node's objects share \
                     (see the agent's log)"
                )
            } else {
                format!("agent on {n}: {}", own.join("; "))
            };
            (false, REASON_AGENT_ERROR, message)
        } else {
            (
                false,
                REASON_PENDING,
                format!(
                    "waiting for the agent on {} to program it",
                    missing.join(", ")
                ),
            )
        };
        self.put(
            p.conditions,
            stored,
            PROGRAMMED,
            ok,
            reason,
            message.clone(),
            generation,
        );
        if resolved && !ok {
            self.put(
                p.conditions,
                stored,
                READY,
                false,
                reason,
                message,
                generation,
            );
        }
        p.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    }

    /// Set a condition; its transition time is the stored one when the
    /// status did not flip, else now.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        conds: &mut Vec<Condition>,
        stored: &[Condition],
        type_: &str,
        ok: bool,
        reason: &str,
        message: String,
        generation: Option<i64>,
    ) {
        let status = if ok { TRUE } else { FALSE };
        let time = match conditions::find_condition(stored, type_) {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(Timestamp::from_second(self.now.as_second()).unwrap_or(self.now)),
        };
        let c = Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: time,
        };
        match conds.iter_mut().find(|x| x.type_ == type_) {
            Some(x) => *x = c,
            None => conds.push(c),
        }
    }
}

/// Events for a status change from `old` to `new` conditions.
fn events_for(kind: Kind, name: &str, old: &[Condition], new: &[Condition]) -> Vec<EventSpec> {
    let mut out = Vec::new();
    for c in new {
        if c.type_ == READY
            || c.status != FALSE
            || c.reason == REASON_PENDING
            || c.reason == REASON_UNRESOLVED
        {
            continue;
        }
        let before = conditions::find_condition(old, &c.type_);
        if before.is_some_and(|b| b.status == FALSE && b.reason == c.reason) {
            continue;
        }
        out.push(EventSpec {
            warning: true,
            reason: c.reason.clone(),
            note: format!("{}: {}", c.type_, c.message),
        });
    }
    if conditions::is_ready(new) && !conditions::is_ready(old) {
        out.push(EventSpec {
            warning: false,
            reason: "Ready".into(),
            note: format!("{} {name} is ready", kind.as_str()),
        });
    }
    out
}

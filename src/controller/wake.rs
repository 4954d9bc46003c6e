//! What wakes the controller's pass loop, and what a pass must redo.
//!
//! Every cache's change stream is tagged with its [`Source`]. An event
//! wakes the loop, except:
//! - the echo of the controller's own write: a status or finalizer patch,
//!   the allocation cursors, a VM Port's status. The executor records the
//!   resourceVersion each write returned ([`Wakes::wrote`]); the watch event
//!   carrying exactly that version changes nothing the pass did not already
//!   account for (the pass that wrote it computed from the state before and
//!   wrote the difference). Without this, every change cost two or three
//!   more passes over the whole cluster, each writing nothing;
//! - a heartbeat renewal of a Lease seen renewed within the agent heartbeat
//!   timeout: liveness did not change (an agent going stale is found by
//!   the resync, a Lease that is new, deleted, or renewed after a silence
//!   longer than the timeout wakes). At 1,000 nodes renewing every 10 s this
//!   was a pass every 10 ms.
//!
//! The pass learns which sources changed since the one before
//! ([`Wakes::take`]) and redoes only what they concern: the attachments
//! (stale Ports, VM Ports, NADs) only after Pods, Ports, NADs, KubeVirt's
//! objects or routers changed, or on a resync.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::Notify;

use crate::api::Kind;
use crate::cluster::watch::Touched;
use crate::cluster::AGENT_HEARTBEAT_TIMEOUT_SECS;
use crate::telemetry::Telemetry;

/// Which cache an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Kind(Kind),
    Pods,
    Ports,
    Nads,
    Vms,
    Vmis,
    Nodes,
    Leases,
    Allocator,
}

impl Source {
    /// Whether a change here concerns the attachments phase.
    pub fn attachments(self) -> bool {
        matches!(
            self,
            Source::Pods
                | Source::Ports
                | Source::Nads
                | Source::Vms
                | Source::Vmis
                | Source::Kind(Kind::DistributedRouter)
        )
    }
}

/// An echo awaited is forgotten after this long (its event may never come:
/// a re-list skips versions).
const ECHO_TTL: Duration = Duration::from_secs(60);

type ObjectId = (Source, Option<String>, String);

/// The wake-ups of the pass loop (see the module docs).
pub struct Wakes {
    notify: Notify,
    dirty: Mutex<BTreeSet<Source>>,
    /// Own writes whose watch events are still to come: object → the
    /// resourceVersions written, with when.
    echoes: Mutex<HashMap<ObjectId, Vec<(String, Instant)>>>,
    /// Agent Lease name → when its last renewal was seen.
    renewals: Mutex<HashMap<String, Instant>>,
    heartbeat_timeout: Duration,
    telemetry: Arc<Telemetry>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent maps.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Wakes {
    pub fn new(telemetry: Arc<Telemetry>) -> Arc<Wakes> {
        Arc::new(Wakes {
            notify: Notify::new(),
            dirty: Mutex::new(BTreeSet::new()),
            echoes: Mutex::new(HashMap::new()),
            renewals: Mutex::new(HashMap::new()),
            heartbeat_timeout: Duration::from_secs(AGENT_HEARTBEAT_TIMEOUT_SECS.max(1) as u64),
            telemetry,
        })
    }

    /// The controller wrote `name` (in `namespace`) of `source`, which is
    /// now at `resource_version`.
    pub fn wrote(
        &self,
        source: Source,
        namespace: Option<&str>,
        name: &str,
        resource_version: Option<String>,
    ) {
        let Some(rv) = resource_version else { return };
        let id = (source, namespace.map(str::to_string), name.to_string());
        lock(&self.echoes)
            .entry(id)
            .or_default()
            .push((rv, Instant::now()));
    }

    /// Whether an event wakes the loop (see the module docs).
    fn wakes(&self, source: Source, touched: &Option<Touched>) -> bool {
        let Some(t) = touched else { return true };
        let id = (source, t.namespace.clone(), t.name.clone());
        if let Some(rv) = &t.resource_version {
            let mut echoes = lock(&self.echoes);
            if let Some(rvs) = echoes.get_mut(&id) {
                if let Some(i) = rvs.iter().position(|(r, _)| r == rv) {
                    rvs.swap_remove(i);
                    if rvs.is_empty() {
                        echoes.remove(&id);
                    }
                    return false;
                }
            }
        }
        if source == Source::Leases {
            let mut renewals = lock(&self.renewals);
            if t.deleted {
                renewals.remove(&t.name);
                return true;
            }
            let now = Instant::now();
            let before = renewals.insert(t.name.clone(), now);
            return before.is_none_or(|b| now - b > self.heartbeat_timeout);
        }
        true
    }

    /// Drive `streams` until they end, waking the loop as the module docs
    /// say.
    pub async fn drive(
        self: Arc<Self>,
        streams: Vec<BoxStream<'static, (Source, Option<Touched>)>>,
    ) {
        let mut all = futures::stream::select_all(streams);
        while let Some((source, touched)) = all.next().await {
            if !self.wakes(source, &touched) {
                self.telemetry.inc(
                    "kube_dvr_controller_events_ignored_total",
                    "Watch events that did not wake the pass loop: echoes of the controller's own writes, heartbeat renewals.",
                    &[("source", if source == Source::Leases { "lease" } else { "echo" })],
                    1,
                );
                continue;
            }
            lock(&self.dirty).insert(source);
            self.notify.notify_one();
        }
    }

    /// Until an event wakes the loop.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// The sources changed since the last call; forgets echoes awaited too
    /// long.
    pub fn take(&self) -> BTreeSet<Source> {
        lock(&self.echoes).retain(|_, rvs| {
            rvs.retain(|(_, at)| at.elapsed() < ECHO_TTL);
            !rvs.is_empty()
        });
        std::mem::take(&mut *lock(&self.dirty))
    }
}

/// Tag a cache's change stream with its source.
pub fn tagged(
    source: Source,
    stream: BoxStream<'static, Option<Touched>>,
) -> BoxStream<'static, (Source, Option<Touched>)> {
    stream.map(move |t| (source, t)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touched(name: &str, rv: &str) -> Option<Touched> {
        Some(Touched {
            namespace: Some("t".into()),
            name: name.into(),
            resource_version: Some(rv.into()),
            deleted: false,
        })
    }

    #[test]
    fn an_own_write_echo_does_not_wake_once() {
        let w = Wakes::new(Telemetry::new());
        let src = Source::Kind(Kind::FloatingIP);
        w.wrote(src, Some("t"), "f", Some("7".into()));
        // Another version of the object, another object, another source:
        // each wakes.
        assert!(w.wakes(src, &touched("f", "6")));
        assert!(w.wakes(src, &touched("g", "7")));
        assert!(w.wakes(Source::Ports, &touched("f", "7")));
        // The echo itself does not, and only once.
        assert!(!w.wakes(src, &touched("f", "7")));
        assert!(w.wakes(src, &touched("f", "7")));
        // A list (no object) always wakes.
        assert!(w.wakes(src, &None));
    }

    #[test]
    fn lease_renewals_wake_only_when_new_gone_or_after_a_silence() {
        let w = Wakes::new(Telemetry::new());
        assert!(w.wakes(Source::Leases, &touched("kube-dvr-agent-n1", "1")));
        assert!(!w.wakes(Source::Leases, &touched("kube-dvr-agent-n1", "2")));
        let gone = Some(Touched {
            deleted: true,
            ..touched("kube-dvr-agent-n1", "3").unwrap()
        });
        assert!(w.wakes(Source::Leases, &gone));
        assert!(w.wakes(Source::Leases, &touched("kube-dvr-agent-n1", "4")));
        // Renewed after a silence longer than the timeout: it may have been
        // declared down, so it wakes.
        let long_ago = Instant::now() - w.heartbeat_timeout - Duration::from_secs(1);
        lock(&w.renewals).insert("kube-dvr-agent-n1".into(), long_ago);
        assert!(w.wakes(Source::Leases, &touched("kube-dvr-agent-n1", "5")));
    }
}

//! What makes the controller run a pass, and what a pass must redo.
//!
//! Every cache's change stream is tagged with its [`Source`]. An event
//! wakes the loop, and the loop runs a pass unless every event since the
//! last one was one of these:
//! - the echo of the controller's own write: a status or finalizer patch,
//!   the allocation cursors (not a VM Port's status: the endpoints were
//!   computed before it; not a deletion). The executor records the
//!   resourceVersion each write returned ([`Wakes::wrote`]); the watch event
//!   carrying exactly that version changes nothing the pass did not already
//!   account for (the pass that wrote it computed from the state before and
//!   wrote the difference). Echoes are sorted out when the next pass would
//!   start ([`Wakes::take`]), once every write of the last pass is
//!   recorded: a watch event often arrives before its write's response.
//!   Without this, every change cost two or three more passes over the
//!   whole cluster, each writing nothing;
//! - a heartbeat renewal of a Lease seen renewed within the agent heartbeat
//!   timeout: liveness did not change (an agent going stale is found by
//!   the resync, every 10 s by default: a `--resync` longer than the 30 s
//!   timeout delays `AgentDown` to it; a Lease that is new, deleted, or
//!   renewed after a silence longer than the timeout wakes). At 1,000 nodes renewing every 10 s this
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
    /// Sources changed by something other than one object (a list).
    dirty: Mutex<BTreeSet<Source>>,
    /// Objects changed since the last pass, sorted out by [`Wakes::take`].
    touched: Mutex<Vec<(Source, Touched)>>,
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
            touched: Mutex::new(Vec::new()),
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

    /// Whether `t` is the echo of a write recorded (then forgotten). A
    /// deletion never is: removing the last finalizer deletes the object
    /// at the version the patch returned, and what it held is freed only
    /// by a pass.
    fn echo(&self, source: Source, t: &Touched) -> bool {
        let Some(rv) = &t.resource_version else {
            return false;
        };
        if t.deleted {
            return false;
        }
        let id = (source, t.namespace.clone(), t.name.clone());
        let mut echoes = lock(&self.echoes);
        let Some(rvs) = echoes.get_mut(&id) else {
            return false;
        };
        let Some(i) = rvs.iter().position(|(r, _)| r == rv) else {
            return false;
        };
        rvs.swap_remove(i);
        if rvs.is_empty() {
            echoes.remove(&id);
        }
        true
    }

    /// Whether a Lease event may change liveness (see the module docs).
    fn renewal_matters(&self, t: &Touched) -> bool {
        let mut renewals = lock(&self.renewals);
        if t.deleted {
            renewals.remove(&t.name);
            return true;
        }
        let now = Instant::now();
        let before = renewals.insert(t.name.clone(), now);
        before.is_none_or(|b| now - b > self.heartbeat_timeout)
    }

    /// Record one event; whether it wakes the loop.
    fn event(&self, source: Source, touched: Option<Touched>) -> bool {
        match touched {
            None => {
                lock(&self.dirty).insert(source);
                true
            }
            Some(t) if source == Source::Leases && !self.renewal_matters(&t) => false,
            Some(t) => {
                lock(&self.touched).push((source, t));
                true
            }
        }
    }

    fn ignored(&self, why: &'static str) {
        self.telemetry.inc(
            "kube_dvr_controller_events_ignored_total",
            "Watch events that caused no pass: echoes of the controller's own writes, heartbeat renewals.",
            &[("why", why)],
            1,
        );
    }

    /// Drive `streams` until they end, waking the loop as the module docs
    /// say.
    pub async fn drive(
        self: Arc<Self>,
        streams: Vec<BoxStream<'static, (Source, Option<Touched>)>>,
    ) {
        let mut all = futures::stream::select_all(streams);
        while let Some((source, touched)) = all.next().await {
            if self.event(source, touched) {
                self.notify.notify_one();
            } else {
                self.ignored("renewal");
            }
        }
    }

    /// Until an event wakes the loop.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// The sources changed since the last call, the echoes of the
    /// controller's own writes left out (empty: nothing but echoes, no pass
    /// needed); forgets echoes awaited too long.
    pub fn take(&self) -> BTreeSet<Source> {
        let touched = std::mem::take(&mut *lock(&self.touched));
        let mut dirty = std::mem::take(&mut *lock(&self.dirty));
        for (source, t) in touched {
            if self.echo(source, &t) {
                self.ignored("echo");
            } else {
                dirty.insert(source);
            }
        }
        lock(&self.echoes).retain(|_, rvs| {
            rvs.retain(|(_, at)| at.elapsed() < ECHO_TTL);
            !rvs.is_empty()
        });
        dirty
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
    fn own_write_echoes_cause_no_pass_even_when_they_beat_the_response() {
        let w = Wakes::new(Telemetry::new());
        let src = Source::Kind(Kind::FloatingIP);
        // The watch event arrives before the write's response is recorded.
        assert!(w.event(src, touched("f", "7")));
        w.wrote(src, Some("t"), "f", Some("7".into()));
        assert!(w.take().is_empty(), "only an echo: no pass");
        // The same version again (a re-delivery) is no echo any more.
        w.event(src, touched("f", "7"));
        assert_eq!(w.take(), BTreeSet::from([src]));
        // A deletion at the version written (the last finalizer removed)
        // is a change.
        w.wrote(src, Some("t"), "d", Some("3".into()));
        let deleted = Touched {
            deleted: true,
            ..touched("d", "3").unwrap()
        };
        w.event(src, Some(deleted));
        assert_eq!(w.take(), BTreeSet::from([src]));
        // Another version of the object, another object, another source:
        // each is a change.
        w.wrote(src, Some("t"), "f", Some("9".into()));
        w.event(src, touched("f", "8"));
        assert_eq!(w.take(), BTreeSet::from([src]));
        w.event(src, touched("g", "9"));
        w.event(Source::Ports, touched("f", "9"));
        assert_eq!(w.take(), BTreeSet::from([src, Source::Ports]));
        // A list (no object) always is.
        assert!(w.event(Source::Nodes, None));
        assert_eq!(w.take(), BTreeSet::from([Source::Nodes]));
    }

    #[test]
    fn lease_renewals_wake_only_when_new_gone_or_after_a_silence() {
        let w = Wakes::new(Telemetry::new());
        let lease = |rv| touched("kube-dvr-agent-n1", rv);
        assert!(w.event(Source::Leases, lease("1")));
        assert!(!w.event(Source::Leases, lease("2")));
        let gone = Touched {
            deleted: true,
            ..lease("3").unwrap()
        };
        assert!(w.event(Source::Leases, Some(gone)));
        assert!(w.event(Source::Leases, lease("4")));
        // Renewed after a silence longer than the timeout: it may have been
        // declared down, so it wakes.
        let long_ago = Instant::now() - w.heartbeat_timeout - Duration::from_secs(1);
        lock(&w.renewals).insert("kube-dvr-agent-n1".into(), long_ago);
        assert!(w.event(Source::Leases, lease("5")));
        assert_eq!(w.take(), BTreeSet::from([Source::Leases]));
    }
}

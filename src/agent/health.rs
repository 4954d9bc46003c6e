//! Health checks of LoadBalancer backends, on the node that serves the
//! router's SNAT gateway.
//!
//! The pass tells the checker which balancers this node serves
//! ([`Checks::set_targets`]); the checker connects (TCP) from inside the
//! gateway's `snat-` namespace to every backend on each of its check ports,
//! every `interval`, and counts results: `fall` failures in a row take a
//! backend out, `rise` successes bring it back. A backend starts up (new
//! ones, and all of them after a failover: the new gateway did not check
//! them before). When a backend goes out or comes back the checker wakes
//! the pass, which plans the gateway without it ([`Checks::down`], a
//! run-time input like the serving node, never in the reported digest) and
//! reports it in the Node annotation `kubedvr.io/lb-down` for the
//! controller's `status.backends`. Neither the API server nor the
//! controller is on this path.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::dataplane::netns;
use crate::plan::view::{HealthView, ObjectKey};
use crate::plan::Down;

/// How often the checker looks for due checks.
const TICK: Duration = Duration::from_millis(100);
/// Checks running at once (each holds a blocking thread while it
/// connects): unreachable backends cannot take the threads the agent's
/// kernel passes need.
const CONCURRENT_CHECKS: usize = 16;
/// At most this many failing backends in the Node annotation (the first,
/// in order): a Node's annotations are bounded, and the report carries
/// the agent's other facts too.
pub const MAX_REPORTED_DOWN: usize = 256;

/// What to check for one balancer.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The gateway's `snat-` namespace file.
    pub ns: PathBuf,
    pub backends: Vec<Ipv4Addr>,
    pub health: HealthView,
}

#[derive(Clone, Debug)]
struct Backend {
    up: bool,
    /// Results in a row that disagree with `up`.
    against: u32,
    next: Instant,
    running: bool,
}

#[derive(Default)]
struct Inner {
    targets: BTreeMap<ObjectKey, Target>,
    backends: BTreeMap<(ObjectKey, Ipv4Addr), Backend>,
}

/// Handle of the checker task.
#[derive(Clone)]
pub struct Checks {
    inner: Arc<Mutex<Inner>>,
    wake: tokio::sync::watch::Sender<u64>,
}

impl Checks {
    /// A checker and the receiver it wakes when a backend goes out or comes
    /// back.
    pub fn new() -> (Checks, tokio::sync::watch::Receiver<u64>) {
        let (wake, rx) = tokio::sync::watch::channel(0);
        (
            Checks {
                inner: Arc::new(Mutex::new(Inner::default())),
                wake,
            },
            rx,
        )
    }

    /// The balancers this node serves now; forgets the others (and their
    /// backends' state), starts new backends up.
    pub fn set_targets(&self, targets: BTreeMap<ObjectKey, Target>) {
        let mut g = self.inner.lock().expect("health lock");
        let now = Instant::now();
        let wanted: BTreeSet<(ObjectKey, Ipv4Addr)> = (targets.iter())
            .flat_map(|(k, t)| t.backends.iter().map(move |b| (k.clone(), *b)))
            .collect();
        g.backends.retain(|k, _| wanted.contains(k));
        for k in wanted {
            g.backends.entry(k).or_insert(Backend {
                up: true,
                against: 0,
                next: now,
                running: false,
            });
        }
        g.targets = targets;
    }

    /// The backends found failing, per balancer.
    pub fn down(&self) -> Down {
        let g = self.inner.lock().expect("health lock");
        let mut out = Down::new();
        for ((k, ip), b) in &g.backends {
            if !b.up {
                out.entry(k.clone()).or_default().insert(*ip);
            }
        }
        out
    }

    /// Record one check's result; true when the backend went out or came
    /// back.
    fn record(&self, key: &(ObjectKey, Ipv4Addr), ok: bool) -> bool {
        let mut g = self.inner.lock().expect("health lock");
        let Some(health) = g.targets.get(&key.0).map(|t| t.health.clone()) else {
            return false;
        };
        let Some(b) = g.backends.get_mut(key) else {
            return false;
        };
        b.running = false;
        b.next = Instant::now() + Duration::from_millis(health.interval_ms);
        if ok == b.up {
            b.against = 0;
            return false;
        }
        b.against += 1;
        let needed = if b.up { health.fall } else { health.rise };
        if b.against < needed {
            return false;
        }
        b.up = ok;
        b.against = 0;
        tracing::info!(balancer = %key.0, backend = %key.1, up = ok, "load-balancer backend {}", if ok { "back" } else { "out" });
        true
    }

    /// Run the checks until dropped.
    pub async fn run(self) {
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS));
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let due: Vec<((ObjectKey, Ipv4Addr), Target)> = {
                let mut g = self.inner.lock().expect("health lock");
                let Inner { targets, backends } = &mut *g;
                (backends.iter_mut())
                    .filter(|(_, b)| !b.running && b.next <= now)
                    .filter_map(|(k, b)| {
                        let t = targets.get(&k.0)?;
                        b.running = true;
                        Some((k.clone(), t.clone()))
                    })
                    .collect()
            };
            for (key, target) in due {
                let me = self.clone();
                let slots = slots.clone();
                tokio::spawn(async move {
                    let Ok(_slot) = slots.acquire_owned().await else {
                        return;
                    };
                    let ip = key.1;
                    let ok = tokio::task::spawn_blocking(move || check(&target, ip))
                        .await
                        .unwrap_or(false);
                    if me.record(&key, ok) {
                        me.wake.send_modify(|n| *n += 1);
                    }
                });
            }
        }
    }
}

/// One check: a TCP connect from inside the gateway's namespace to every
/// check port of `ip`. Without TCP ports (a UDP-only balancer) a backend
/// is taken as up.
fn check(t: &Target, ip: Ipv4Addr) -> bool {
    let timeout = Duration::from_millis(t.health.timeout_ms.max(100));
    let ports = t.health.ports.clone();
    netns::run_in(&t.ns, move || {
        ports
            .iter()
            .all(|p| TcpStream::connect_timeout(&SocketAddr::from((ip, *p)), timeout).is_ok())
    })
    .unwrap_or(false)
}

/// The `kubedvr.io/lb-down` annotation for `down` (`None`: none down), at
/// most [`MAX_REPORTED_DOWN`] entries.
pub fn annotation(down: &Down) -> Option<String> {
    let items: Vec<String> = (down.iter())
        .flat_map(|(k, ips)| ips.iter().map(move |ip| format!("{k}={ip}")))
        .take(MAX_REPORTED_DOWN)
        .collect();
    (!items.is_empty()).then(|| items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(fall: u32, rise: u32) -> Target {
        Target {
            ns: PathBuf::from("/proc/self/ns/net"),
            backends: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
            health: HealthView {
                interval_ms: 1000,
                timeout_ms: 500,
                rise,
                fall,
                ports: vec![80],
            },
        }
    }

    #[test]
    fn a_backend_goes_out_after_fall_failures_and_back_after_rise_successes() {
        let (c, _rx) = Checks::new();
        let k = ObjectKey::new("t", "lb");
        c.set_targets(BTreeMap::from([(k.clone(), target(2, 3))]));
        let b = (k.clone(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(c.down().is_empty(), "backends start up");
        assert!(!c.record(&b, false));
        assert!(!c.record(&b, true), "a success resets the count");
        assert!(!c.record(&b, false));
        assert!(c.record(&b, false), "second failure in a row: out");
        assert_eq!(c.down()[&k], BTreeSet::from([b.1]));
        assert!(!c.record(&b, true));
        assert!(!c.record(&b, true));
        assert!(c.record(&b, true), "third success: back");
        assert!(c.down().is_empty());
        assert_eq!(annotation(&c.down()), None);
    }

    #[test]
    fn forgotten_balancers_and_backends_lose_their_state() {
        let (c, _rx) = Checks::new();
        let k = ObjectKey::new("t", "lb");
        c.set_targets(BTreeMap::from([(k.clone(), target(1, 1))]));
        let b = (k.clone(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(c.record(&b, false));
        assert_eq!(annotation(&c.down()).as_deref(), Some("t/lb=10.0.0.2"));
        // Failover away and back: the backend starts up again.
        c.set_targets(BTreeMap::new());
        assert!(!c.record(&b, false), "no target: ignored");
        c.set_targets(BTreeMap::from([(k, target(1, 1))]));
        assert!(c.down().is_empty());
    }

    #[tokio::test]
    async fn checks_connect_and_report_a_closed_port() {
        // A listener on loopback of this namespace: one backend answers,
        // the other (a closed port) does not.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut t = target(1, 1);
        t.backends = vec![Ipv4Addr::LOCALHOST];
        t.health.ports = vec![port];
        assert!(check(&t, Ipv4Addr::LOCALHOST));
        drop(l);
        assert!(!check(&t, Ipv4Addr::LOCALHOST));
    }
}

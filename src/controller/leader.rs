//! Leader election on a `coordination.k8s.io/v1` Lease, after client-go's
//! `leaderelection` package.
//!
//! - A replica **acquires** the Lease when it does not exist (create), when
//!   its holder is empty (released), or when the record has not changed for
//!   `leaseDurationSeconds` *as observed locally* (client-go's rule: clock
//!   skew between replicas does not matter, only how long this replica has
//!   seen the same record).
//! - Every write after a read is a `replace` guarded by the read's
//!   `resourceVersion`: when two replicas race, the API server accepts one
//!   and answers `409 Conflict` to the other, who thereby lost.
//! - The leader **renews** (same guarded replace, new `renewTime`) every
//!   `renew_interval`; any failure to renew means it steps down at once
//!   (stops writing) and competes again like a standby.
//! - On shutdown the leader **releases** the Lease (empty holder), so a
//!   standby takes over at its next retry instead of after a full lease
//!   duration.
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("{op} Lease {namespace}/{name}: {source}")]
    Api {
        op: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{op} Lease {namespace}/{name}: no answer within {timeout:?}")]
    Timeout {
        op: &'static str,
        namespace: String,
        name: String,
        timeout: Duration,
    },
}

impl LeaderError {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LeaderError::Api { .. } => "api",
            LeaderError::Timeout { .. } => "timeout",
        }
    }
}

/// How to elect.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (`holderIdentity`), e.g. its pod name.
    pub identity: String,
    /// `leaseDurationSeconds` (whole seconds, at least 1).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// How often a standby tries to acquire.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    /// The defaults of the controller: 15 s lease, renew every 5 s, retry
    /// every 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The record last seen (resourceVersion) and when it was first seen.
    observed: Option<(String, Instant)>,
    leader: bool,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            leader: false,
        }
    }

    /// Whether the last [`LeaderElector::try_acquire_or_renew`] left this
    /// replica the leader.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    fn err(&self, op: &'static str) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        move |source| LeaderError::Api {
            op,
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source,
        }
    }

    fn duration_secs(&self) -> i32 {
        self.cfg.lease_duration.as_secs().max(1) as i32
    }

    /// One round: create, take over, or renew the Lease. Returns whether
    /// this replica is the leader now. An error means it is not (a leader
    /// that cannot renew steps down).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let timeout = self.cfg.renew_interval.max(Duration::from_secs(1));
        let res = match tokio::time::timeout(timeout, self.round()).await {
            Ok(r) => r,
            Err(_) => Err(LeaderError::Timeout {
                op: "renew",
                namespace: self.cfg.namespace.clone(),
                name: self.cfg.name.clone(),
                timeout,
            }),
        };
        self.leader = matches!(res, Ok(true));
        res
    }

    async fn round(&mut self) -> Result<bool, LeaderError> {
        let existing = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(self.err("get"))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Someone else created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err("create")(e)),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.cfg.identity;
        if !mine && !holder.is_empty() {
            // Someone else holds it: take over only once the record has not
            // changed for a whole lease duration (observed locally).
            let duration = spec
                .lease_duration_seconds
                .map_or(self.cfg.lease_duration, |s| {
                    Duration::from_secs(s.max(0) as u64)
                });
            let first_seen = match &self.observed {
                Some((seen_rv, at)) if *seen_rv == rv => *at,
                _ => {
                    let at = Instant::now();
                    self.observed = Some((rv.clone(), at));
                    at
                }
            };
            if first_seen.elapsed() < duration {
                return Ok(false);
            }
        }
        if !mine {
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.cfg.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_secs());
        spec.renew_time = Some(now());
        // `lease` still carries the resourceVersion read above: a concurrent
        // writer makes this a 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err("update")(e)),
        }
    }

    /// Give the Lease up (empty holder) if this replica holds it, so a
    /// standby need not wait for it to expire.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        if !self.leader {
            return Ok(());
        }
        self.leader = false;
        let Some(mut lease) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(self.err("get"))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.err("release")(e)),
        }
    }

    /// Compete until `shutdown`, publishing leadership on `tx` (true while
    /// leader). Releases the Lease on shutdown.
    pub async fn run(mut self, tx: watch::Sender<bool>, shutdown: CancellationToken) {
        loop {
            let leader = match self.try_acquire_or_renew().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), "leader election round failed");
                    false
                }
            };
            let was = *tx.borrow();
            if leader != was {
                if leader {
                    tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
                } else {
                    tracing::warn!(identity = %self.cfg.identity, lease = %self.cfg.name, "lost leadership");
                }
                let _ = tx.send(leader);
            }
            let wait = if leader {
                self.cfg.renew_interval
            } else {
                // Jittered: standbys do not retry in lockstep.
                crate::backoff::jitter(self.cfg.retry_interval)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let _ = tx.send(false);
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the leader Lease");
        }
    }
}

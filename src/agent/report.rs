//! What the agent writes to the API: its Node's annotations and its
//! heartbeat Lease. Every write is skipped when it would change nothing, so
//! an idle (or restarted) agent makes no API writes.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;

use super::Error;
use crate::cluster;

/// Desired annotation values: `Some` = set to, `None` = absent. Keys not in
/// the map are left alone.
pub type Annotations = BTreeMap<&'static str, Option<String>>;

/// The node's VTEP: the `--vtep` flag, else the Node's InternalIP.
pub fn vtep_of(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The annotation changes that turn `node`'s into `desired`.
pub fn changes(node: &Node, desired: &Annotations) -> Annotations {
    desired
        .iter()
        .filter(|(k, v)| cluster::annotation(&node.metadata, k) != v.as_deref())
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// The latest report a pass wants written: the Node as its snapshot had it
/// and the annotations. `None`: write nothing (uninstalling).
pub type Wanted = Option<(std::sync::Arc<Node>, Annotations)>;

/// Writes what the passes want reported, in its own task: a pass (the
/// failover path) never waits for the API server, which may be slow,
/// unreachable with packets dropped (a 10 s connect timeout) or hung. Only
/// the latest report counts; a failed write is retried after a jittered
/// 2 s unless a newer one comes first. `wrote` counts each write made.
pub async fn write_reports(
    reporter: std::sync::Arc<tokio::sync::Mutex<NodeReporter>>,
    mut wanted: tokio::sync::watch::Receiver<Wanted>,
    wrote: impl Fn(),
) {
    while wanted.changed().await.is_ok() {
        loop {
            let mut r = reporter.lock().await;
            let Some((node, want)) = wanted.borrow_and_update().clone() else {
                break;
            };
            match r.report(&node, &want).await {
                Ok(w) => {
                    if w {
                        wrote();
                    }
                    break;
                }
                Err(e) => {
                    drop(r);
                    tracing::warn!(error = %e, "reporting failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(crate::backoff::jitter(Duration::from_secs(2))) => {}
                        c = wanted.changed() => if c.is_err() { return },
                    }
                }
            }
        }
    }
}

/// Writes the agent's Node annotations, each change once: a change already
/// written is not written again while the watch cache has not caught up.
pub struct NodeReporter {
    api: Api<Node>,
    node: String,
    /// The Node's resourceVersion in the cache when we last patched, and
    /// what we patched.
    last: Option<(Option<String>, Annotations)>,
}

impl NodeReporter {
    pub fn new(api: Api<Node>, node: &str) -> Self {
        NodeReporter {
            api,
            node: node.to_string(),
            last: None,
        }
    }

    /// Bring `cached` (the Node as the watch cache has it) to `desired`.
    /// Returns whether a write was made.
    pub async fn report(&mut self, cached: &Node, desired: &Annotations) -> Result<bool, Error> {
        let delta = changes(cached, desired);
        if delta.is_empty() {
            return Ok(false);
        }
        let rv = cached.metadata.resource_version.clone();
        if let Some((last_rv, last)) = &self.last {
            // Our own write has not come back through the watch yet.
            if *last_rv == rv && delta.iter().all(|(k, v)| last.get(k) == Some(v)) {
                return Ok(false);
            }
        }
        self.patch(&delta).await?;
        self.last = Some((rv, delta));
        Ok(true)
    }

    /// A merge patch of the annotations in `delta` (None removes).
    pub async fn patch(&self, delta: &Annotations) -> Result<(), Error> {
        let patch = serde_json::json!({"metadata": {"annotations": delta}});
        self.api
            .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Api {
                op: "patch annotations of node",
                object: self.node.clone(),
                source,
            })?;
        Ok(())
    }
}

/// The agent's heartbeat: Lease `kube-dvr-agent-<node>`, renewed every
/// `interval`. A renewal newer than `interval` (an agent restart) is kept as
/// is, so a restart writes nothing.
pub struct Heartbeat {
    pub api: Api<Lease>,
    pub name: String,
    pub holder: String,
    pub interval: Duration,
}

impl Heartbeat {
    /// Renew if due; returns how long until the next renewal is due and
    /// whether it wrote.
    pub async fn beat(&self) -> Result<(Duration, bool), Error> {
        let err = |op| {
            let object = self.name.clone();
            move |source| Error::Api { op, object, source }
        };
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(err("get lease"))?;
        let spec = LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(cluster::AGENT_HEARTBEAT_TIMEOUT_SECS as i32),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        };
        match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        acquire_time: Some(MicroTime(now)),
                        ..spec
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map_err(err("create lease"))?;
                Ok((self.interval, true))
            }
            Some(mut lease) => {
                let old = lease.spec.clone().unwrap_or_default();
                let ours = old.holder_identity.as_deref() == Some(&self.holder);
                let age = old
                    .renew_time
                    .as_ref()
                    .map(|t| now.duration_since(t.0))
                    .and_then(|d| Duration::try_from(d).ok());
                if let (true, Some(age)) = (ours, age) {
                    if age < self.interval {
                        return Ok((self.interval - age, false));
                    }
                }
                lease.spec = Some(LeaseSpec {
                    acquire_time: if ours {
                        old.acquire_time
                    } else {
                        Some(MicroTime(now))
                    },
                    lease_transitions: old.lease_transitions,
                    ..spec
                });
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map_err(err("renew lease"))?;
                Ok((self.interval, true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mock = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    /// The next request's `programmed` annotation, and its responder.
    async fn next(
        h: &mut Mock,
    ) -> (
        serde_json::Value,
        tower_test::mock::SendResponse<http::Response<kube::client::Body>>,
    ) {
        use http_body_util::BodyExt;
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), h.next_request())
            .await
            .expect("a request")
            .expect("client alive");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (
            v["metadata"]["annotations"][cluster::PROGRAMMED_ANNOTATION].clone(),
            send,
        )
    }

    /// The report task against a mock API server: a failed write is not
    /// retried once a newer report is wanted (latest wins), each write
    /// counted once, and `None` stops it.
    #[tokio::test]
    async fn the_report_task_writes_the_latest_report_and_stops_on_none() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (svc, mut h) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let api: Api<Node> = Api::all(kube::Client::new(svc, "default"));
        let reporter = std::sync::Arc::new(tokio::sync::Mutex::new(NodeReporter::new(api, "n1")));
        let (tx, rx) = tokio::sync::watch::channel(None);
        let wrote = std::sync::Arc::new(AtomicUsize::new(0));
        let w = wrote.clone();
        let task = tokio::spawn(write_reports(reporter, rx, move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        let node: std::sync::Arc<Node> = std::sync::Arc::new(
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"}})).unwrap(),
        );
        let want =
            |d: &str| Annotations::from([(cluster::PROGRAMMED_ANNOTATION, Some(d.to_string()))]);
        tx.send_replace(Some((node.clone(), want("a"))));
        let (seen, send) = next(&mut h).await;
        assert_eq!(seen, "a");
        tx.send_replace(Some((node.clone(), want("b"))));
        send.send_response(
            http::Response::builder()
                .status(500)
                .body(kube::client::Body::from(b"{}".to_vec()))
                .unwrap(),
        );
        let (seen, send) = next(&mut h).await;
        assert_eq!(seen, "b", "the newer report, not a retry of the failed one");
        send.send_response(
            http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(
                    serde_json::to_vec(&*node).unwrap(),
                ))
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(wrote.load(Ordering::Relaxed), 1);
        tx.send_replace(None);
        let quiet = tokio::time::timeout(Duration::from_millis(300), h.next_request()).await;
        assert!(quiet.is_err(), "nothing written after None");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends when the passes are gone")
            .unwrap();
    }

    #[test]
    fn changes_are_only_what_differs() {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n",
            "annotations": {cluster::VTEP_ANNOTATION: "198.18.0.1", cluster::AGENT_ERRORS_ANNOTATION: "x"}}}))
        .unwrap();
        let mut want = Annotations::new();
        want.insert(cluster::VTEP_ANNOTATION, Some("198.18.0.1".into()));
        want.insert(cluster::AGENT_ERRORS_ANNOTATION, None);
        want.insert(cluster::CLEANED_ANNOTATION, None);
        want.insert(cluster::PROGRAMMED_ANNOTATION, Some("abc".into()));
        let c = changes(&node, &want);
        assert_eq!(c.len(), 2);
        assert_eq!(c[cluster::AGENT_ERRORS_ANNOTATION], None);
        assert_eq!(c[cluster::PROGRAMMED_ANNOTATION].as_deref(), Some("abc"));
    }

    #[test]
    fn vtep_is_the_internal_ip() {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n"},
            "status": {"addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "198.18.0.7"}]}}))
        .unwrap();
        assert_eq!(vtep_of(&node), Some("198.18.0.7".parse().unwrap()));
    }
}

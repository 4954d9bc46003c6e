//! kube-standin: an in-memory, single-process stand-in for kube-apiserver.
//!
//! **For kube-dvr's lab and tests only — never production.** There is no
//! authentication, no authorization, no persistence, and it listens on plain
//! HTTP on 127.0.0.1. It does refuse what a real API server's validation and
//! built-in admission refuse (`admission.rs`), so tests and the lab exercise
//! the inputs a cluster would accept; [`StandIn::insert_without_admission`]
//! bypasses that for tests that need an object only a schema change could
//! have left behind.
//!
//! It exists because no kube-apiserver can be installed on the machines
//! kube-dvr is developed on, while the lab and the API-level tests need one
//! that the *unmodified* kube-rs clients (controllers, watchers, reflectors,
//! Lease-based leader election, the Events `Recorder`, server-side apply) and
//! the real `kubectl` can talk to.
//!
//! # Model
//! - Objects are stored as JSON ([`serde_json::Value`]) keyed by
//!   `(group, plural, namespace, name)` (`store.rs`). One global counter
//!   gives every write its `resourceVersion`; `uid`, `creationTimestamp` and
//!   `generation` are filled as kube-apiserver does (generation moves only
//!   when `spec` — or, for kinds without one, anything outside metadata and
//!   status — changes). A write that changes nothing is not recorded.
//! - Every write is appended to a bounded event log; watches stream from it
//!   and resume from any resourceVersion still in it, older ones get
//!   `410 Expired` (`watch.rs`).
//! - Built-in kinds (`resource.rs`): Namespaces (default, kube-system,
//!   kube-public, kube-node-lease pre-created), Nodes, Pods, Events (core/v1,
//!   and events.k8s.io/v1 as a view of the same objects), ConfigMaps,
//!   Secrets, ServiceAccounts, Leases, CustomResourceDefinitions. Creating a
//!   CRD registers its kind for discovery, CRUD, watch and printer columns;
//!   deleting it deletes its objects (honouring their finalizers) and then
//!   the CRD and its kind (`cascade.rs`). CRD versions are served without
//!   conversion.
//! - Admission (`admission.rs`): object names (DNS-1123 subdomain; label for
//!   Namespaces); no new objects in a Terminating namespace (`403`) or of a
//!   Terminating CRD; custom resources pruned, defaulted and validated
//!   against their CRD version's schema — OpenAPI value validations and CEL
//!   rules with `oldSelf` (`validation.rs`, `schema.rs`) — on every write,
//!   `/status` included, with ratcheting of unchanged values; errors are
//!   `422 Invalid` with `details.causes[]`. `fieldValidation=Strict` (what
//!   kubectl sends) turns unknown fields into `400`; otherwise they are pruned.
//! - Semantics kept: optimistic concurrency (`409 Conflict`), `AlreadyExists`
//!   / `NotFound` Status objects, finalizers and `deletionTimestamp`,
//!   `/status` subresources, label and field selectors, namespace deletion
//!   (the Namespace stays, phase `Terminating`, until its contents are gone,
//!   their finalizers honoured), garbage collection of dependents by
//!   `ownerReferences` (background propagation).
//! - Simplified: strategic merge patch on built-in kinds (maps merge, lists
//!   of objects with a `type`/`name` key merge by it, other lists replace;
//!   on custom resources it is `415`, as in kube-apiserver) and server-side
//!   apply (the applied object is merged into the live one like a JSON merge
//!   patch; field ownership is not tracked and `managedFields` are not kept).
//!   Built-in kinds keep a `status` given at create time.
//! - Discovery (legacy and aggregated v2), server-side `Table`s for
//!   `kubectl get`, and a schema-less `/openapi/v3` that tells kubectl the
//!   server validates fields (so it skips client-side validation, which would
//!   need `/openapi/v2`, not served; for custom resources the stand-in
//!   validates, for built-in kinds only names).
//! - JSON and YAML request bodies; of protobuf only what kubectl's generator
//!   commands send (`kubectl create namespace|configmap|secret|
//!   serviceaccount`). Responses are always JSON.

#![forbid(unsafe_code)]

mod admission;
mod cascade;
mod convert;
mod discovery;
mod http;
mod names;
mod patch;
mod protobuf;
mod resource;
mod schema;
mod selector;
mod status;
mod store;
mod table;
mod util;
pub mod validation;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Errors starting the stand-in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// Tunables; [`StandIn::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many events the watch log keeps (default 10 000).
    pub event_log_capacity: usize,
    /// Interval of BOOKMARK events on watches that allow them (default 10 s).
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            event_log_capacity: 10_000,
            bookmark_interval: Duration::from_secs(10),
        }
    }
}

/// A running stand-in apiserver. Dropping it without [`StandIn::shutdown`]
/// leaves the server task running until the runtime ends.
pub struct StandIn {
    addr: SocketAddr,
    store: Arc<store::Store>,
    bookmark_interval: Duration,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Bind 127.0.0.1:port (0 = any) and serve in a tokio task.
    pub async fn start(port: u16) -> Result<StandIn, Error> {
        Self::start_with(port, Options::default()).await
    }

    /// [`StandIn::start`] with non-default [`Options`].
    pub async fn start_with(port: u16, options: Options) -> Result<StandIn, Error> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| Error::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { port, source })?;
        let store = Arc::new(store::Store::new(options.event_log_capacity));
        let (stop, task) = spawn_server(listener, &store, addr, options.bookmark_interval);
        tracing::info!(%addr, "kube-standin serving (in-memory stand-in, not for production)");
        Ok(StandIn {
            addr,
            store,
            bookmark_interval: options.bookmark_interval,
            stop,
            task,
        })
    }

    /// Stop serving, keeping every object: connections (watches included)
    /// are closed and the port released, as when a kube-apiserver stops
    /// while etcd keeps the data. [`StandIn::serve_again`] resumes.
    pub async fn stop_serving(&mut self) {
        let _ = self.stop.send(true);
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }

    /// Serve the same objects again on the same address after
    /// [`StandIn::stop_serving`] (resourceVersions go on where they were,
    /// so clients resume their watches).
    pub async fn serve_again(&mut self) -> Result<(), Error> {
        let port = self.addr.port();
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind { port, source })?;
        let (stop, task) = spawn_server(listener, &self.store, self.addr, self.bookmark_interval);
        self.stop = stop;
        self.task = task;
        tracing::info!(addr = %self.addr, "kube-standin serving again");
        Ok(())
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig with cluster, user and context "standin"
    /// (namespace `default`) pointing at this server.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {url}\n\
             users:\n- name: standin\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    \
             cluster: standin\n    user: standin\n    namespace: default\ncurrent-context: standin\n",
            url = self.url()
        );
        std::fs::write(path, text)
    }

    /// A kube-rs client configuration for this server (namespace `default`).
    pub fn kube_config(&self) -> kube::Config {
        let uri = self.url().parse().expect("a valid loopback URL");
        kube::Config::new(uri)
    }

    /// Successful mutating requests (POST/PUT/PATCH/DELETE) so far.
    pub fn write_count(&self) -> u64 {
        self.store.write_count()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.current_rv()
    }

    /// Stores `object` (with `apiVersion`, `kind` and `metadata.name`; a
    /// namespaced object in `metadata.namespace`, default `default`) as
    /// given, **bypassing admission**: no name, namespace-lifecycle, schema
    /// or CEL checks, no pruning or defaulting; `status` is stored too.
    /// Creates the object or replaces an existing one's content; watches see
    /// the change. Metadata is still filled in (uid, resourceVersion, ...).
    ///
    /// For tests only: it simulates what a real cluster can hold although
    /// today's schema would refuse it, e.g. an object written under an older
    /// or newer CRD version (type skew during an upgrade). Returns the stored
    /// object as served.
    pub fn insert_without_admission(
        &self,
        object: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let rt = self
            .store
            .types()
            .into_iter()
            .find(|t| t.kind == kind && t.versions.iter().any(|v| t.api_version(v) == api_version))
            .ok_or_else(|| format!("no kind {kind} served at {api_version}"))?;
        let version = api_version
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or("metadata.name is required")?
            .to_string();
        let ns = match object["metadata"]["namespace"].as_str() {
            Some(ns) if rt.namespaced => ns.to_string(),
            None if rt.namespaced => "default".into(),
            _ => String::new(),
        };
        let opts = admission::WriteOpts::without_admission();
        let mut body = convert::ingest(&rt, object.clone());
        if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let (mut out, _) = self
            .store
            .write(&rt, &ns, &name, store::Part::Main, &opts, |_| {
                Ok(body.clone())
            })
            .map_err(|e| e.to_string())?;
        if rt.status && object.get("status").is_some() {
            (out, _) = self
                .store
                .write(&rt, &ns, &name, store::Part::Status, &opts, |_| Ok(body))
                .map_err(|e| e.to_string())?;
        }
        Ok(convert::present(&rt, &version, &out))
    }

    /// Drops the whole watch event log, as an etcd compaction would: every
    /// watch from an earlier resourceVersion then gets `410 Expired`.
    pub fn compact_log(&self) {
        self.store.compact();
    }

    /// Stops accepting, ends open connections and watches.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serve `store` on `listener` in a task; the sender stops it.
fn spawn_server(
    listener: TcpListener,
    store: &Arc<store::Store>,
    addr: SocketAddr,
    bookmark_interval: Duration,
) -> (tokio::sync::watch::Sender<bool>, JoinHandle<()>) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(http::Ctx {
        store: store.clone(),
        addr: addr.to_string(),
        bookmark_interval,
        shutdown: stop_rx.clone(),
    });
    (stop, tokio::spawn(serve(listener, ctx, stop_rx)))
}

async fn serve(
    listener: TcpListener,
    ctx: Arc<http::Ctx>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Connections live in this set: leaving the loop drops it, aborting them.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let ctx = ctx.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| http::handle(ctx.clone(), req));
                    if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                        tracing::debug!(error = %e, "standin connection ended");
                    }
                });
            }
        }
    }
    conns.shutdown().await;
}

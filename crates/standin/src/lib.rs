//! kube-standin: an in-memory, single-process stand-in for kube-apiserver.
//!
//! **For kube-dvr's lab and tests only — never production.** There is no
//! authentication, no authorization, no admission, no schema validation, no
//! persistence, and it listens on plain HTTP on 127.0.0.1.
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
//!   deleting it removes the kind and its objects. CRD versions are served
//!   without conversion.
//! - Semantics kept: optimistic concurrency (`409 Conflict`), `AlreadyExists`
//!   / `NotFound` Status objects, finalizers and `deletionTimestamp`,
//!   `/status` subresources, label and field selectors, namespace deletion
//!   removing its contents, garbage collection of dependents by
//!   `ownerReferences` (background propagation).
//! - Simplified: strategic merge patch (maps merge, lists of objects with a
//!   `type`/`name` key merge by it, other lists replace) and server-side
//!   apply (the applied object is merged into the live one like a JSON merge
//!   patch; field ownership is not tracked and `managedFields` are not kept).
//!   Built-in kinds keep a `status` given at create time.
//! - Discovery (legacy and aggregated v2), server-side `Table`s for
//!   `kubectl get`, and a schema-less `/openapi/v3` that tells kubectl the
//!   server validates fields (so it skips client-side validation, which would
//!   need `/openapi/v2`, not served; the stand-in does not validate either).
//! - JSON and YAML request bodies; of protobuf only what kubectl's generator
//!   commands send (`kubectl create namespace|configmap|secret|
//!   serviceaccount`). Responses are always JSON.

#![forbid(unsafe_code)]

mod cascade;
mod convert;
mod discovery;
mod http;
mod patch;
mod protobuf;
mod resource;
mod selector;
mod status;
mod store;
mod table;
mod util;
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
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(http::Ctx {
            store: store.clone(),
            addr: addr.to_string(),
            bookmark_interval: options.bookmark_interval,
            shutdown: stop_rx.clone(),
        });
        let task = tokio::spawn(serve(listener, ctx, stop_rx));
        tracing::info!(%addr, "kube-standin serving (in-memory stand-in, not for production)");
        Ok(StandIn {
            addr,
            store,
            stop,
            task,
        })
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

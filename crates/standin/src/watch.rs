//! Watches: newline-delimited JSON events streamed from the store's event
//! log, one chunk per event. A resourceVersion older than the log answers
//! with an `ERROR` event carrying `410 Expired`, which makes kube-rs watchers
//! relist.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::convert::present;
use crate::resource::ResourceType;
use crate::selector::Selector;
use crate::store::{EventType, Store};
use crate::table::{table, Include};

/// A watch request, as parsed from the query string.
pub struct WatchRequest {
    pub rt: ResourceType,
    pub version: String,
    pub namespace: Option<String>,
    pub selector: Selector,
    /// None (or "0"): start with ADDED events for every current object.
    pub since: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    /// `sendInitialEvents=true`: end the initial events with a bookmark
    /// annotated `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    /// Events carry single-row Tables (`kubectl get --watch`).
    pub as_table: Option<Include>,
}

/// A response body fed from a channel; a dropped body (client gone) closes
/// the channel and ends the producing task.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

/// Starts the producer task and returns the body to stream.
pub fn spawn(store: Arc<Store>, req: WatchRequest, shutdown: watch::Receiver<bool>) -> ChannelBody {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(store, req, tx, shutdown));
    ChannelBody(rx)
}

async fn run(
    store: Arc<Store>,
    req: WatchRequest,
    tx: mpsc::Sender<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changed = store.subscribe();
    let rt = &req.rt;
    let key = rt.storage_key();
    let view = |o: &Value| present(rt, &req.version, o);
    let wrap = |o: Value| match req.as_table {
        Some(inc) => table(rt, std::slice::from_ref(&o), None, inc),
        None => o,
    };
    let bookmark = |rv: u64, end: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            json!({"kind": rt.kind, "apiVersion": rt.api_version(&req.version), "metadata": meta}),
        )
    };
    let deadline = Instant::now() + req.timeout;
    let mut last = match req.since {
        Some(rv) => rv,
        None => {
            let (items, rv) = store.list(rt, req.namespace.as_deref(), &req.selector, view);
            for o in items {
                if tx.send(line("ADDED", wrap(o))).await.is_err() {
                    return;
                }
            }
            if req.initial_events_end && tx.send(bookmark(rv, true)).await.is_err() {
                return;
            }
            rv
        }
    };
    let mut next_bookmark = Instant::now() + req.bookmark_interval;
    loop {
        let (entries, now_rv) = match store.events_after(&key, last) {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(line("ERROR", e.to_status())).await;
                return;
            }
        };
        for e in entries {
            if req.namespace.as_ref().is_some_and(|ns| ns != &e.namespace) {
                continue;
            }
            let obj = view(&e.object);
            let now_match = req.selector.matches(&obj);
            let kind = match e.kind {
                EventType::Modified => {
                    let was = e
                        .previous
                        .as_ref()
                        .is_some_and(|p| req.selector.matches(&view(p)));
                    match (was, now_match) {
                        (true, true) => Some(EventType::Modified),
                        (false, true) => Some(EventType::Added),
                        (true, false) => Some(EventType::Deleted),
                        (false, false) => None,
                    }
                }
                k => now_match.then_some(k),
            };
            if let Some(kind) = kind {
                if tx.send(line(kind.as_str(), wrap(obj))).await.is_err() {
                    return;
                }
            }
        }
        last = last.max(now_rv);
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = sleep_until(deadline) => return,
            _ = sleep_until(next_bookmark), if req.bookmarks => {
                next_bookmark = Instant::now() + req.bookmark_interval;
                if tx.send(bookmark(last, false)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        }
    }
}

//! The agent's Ports: only those of the routers its node needs, never the
//! cluster's (issue 11: an agent's memory must not grow with pods on nodes
//! that share none of its routers).
//!
//! Three kinds of watch, each with a field selector the Port CRD makes
//! selectable (`selectableFields`: `.spec.node`, `.spec.network`, `.spec.vm`):
//! - this node's pod Ports (`spec.node=<node>`): they name the routers the
//!   node hosts;
//! - the VM Ports (`spec.vm!=`): a VM's Port has its nodes in
//!   `status.bindings`, which no selector reaches. They are few (one per VM
//!   interface), and they name the routers of the VMs on this node;
//! - one watch per subnet of the routers the node needs
//!   (`spec.network=<namespace>/<nad>`, the subnet's NetworkAttachmentDefinition,
//!   which is how the resolver finds a subnet's endpoints): every Port of
//!   that subnet, wherever it runs.
//!
//! Which routers a node needs is the planner's answer
//! ([`crate::plan::routers_on`]: an endpoint here, or a SNAT candidate
//! here); the pass asks for their subnets' networks ([`PortCache::track`])
//! and plans only once those watches have synced, so a restart never
//! programs a router with part of its endpoints (which would remove the
//! others' tunnels). Watches no longer needed stop.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;
use tokio::task::AbortHandle;

use crate::api::Port;
use crate::cluster::watch::{cache, Touched, Undecodable};

/// One network's Ports.
struct Scoped {
    store: Store<Port>,
    /// Whether its first list is in. (Not `Store::wait_until_ready`: its
    /// future keeps one waker, so of two tasks waiting only the last
    /// polled would wake.)
    listed: tokio::sync::watch::Receiver<bool>,
    task: AbortHandle,
}

impl Drop for Scoped {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Ports of this node, of the VMs, and of the networks (router subnets)
/// the node needs.
pub struct PortCache {
    client: Client,
    undecodable: Arc<Undecodable>,
    changed: tokio::sync::watch::Sender<u64>,
    own: Store<Port>,
    vms: Store<Port>,
    networks: Mutex<BTreeMap<String, Scoped>>,
    /// Networks the CNI plugin allocated on lately ([`PortCache::ensure`]),
    /// until when: kept watched while their new Port is on its way.
    pinned: Mutex<BTreeMap<String, tokio::time::Instant>>,
}

/// How long a network the CNI plugin allocated on stays watched without
/// the pass needing it.
const PIN: Duration = Duration::from_secs(60);

/// A watch's stream driven to its end; every event bumps `changed`. With
/// `listed`, it says when `store` has its first list (this task is the
/// store's only poller of readiness).
pub(super) async fn pump<K: kube::Resource + Clone + 'static>(
    mut stream: futures::stream::BoxStream<'static, Option<Touched>>,
    changed: tokio::sync::watch::Sender<u64>,
    listed: Option<(Store<K>, tokio::sync::watch::Sender<bool>)>,
) where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    use futures::FutureExt;
    while stream.next().await.is_some() {
        if let Some((store, tx)) = &listed {
            if !*tx.borrow() && store.wait_until_ready().now_or_never().is_some() {
                tx.send_replace(true);
            }
        }
        changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl PortCache {
    /// Start the node's and the VMs' watches; `tasks` owns them.
    pub fn start(
        client: &Client,
        node: &str,
        tasks: &mut tokio::task::JoinSet<()>,
        changed: &tokio::sync::watch::Sender<u64>,
        undecodable: Arc<Undecodable>,
    ) -> Arc<PortCache> {
        let mut watch = |fields: String| {
            let cfg = watcher::Config::default().fields(&fields);
            let (store, stream) = cache::<Port>(client, None, cfg, &undecodable);
            tasks.spawn(pump::<Port>(stream, changed.clone(), None));
            store
        };
        let own = watch(format!("spec.node={node}"));
        let vms = watch("spec.vm!=".to_string());
        Arc::new(PortCache {
            client: client.clone(),
            undecodable,
            changed: changed.clone(),
            own,
            vms,
            networks: Mutex::new(BTreeMap::new()),
            pinned: Mutex::new(BTreeMap::new()),
        })
    }

    fn networks(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Scoped>> {
        // A panic while holding the lock leaves a consistent map.
        self.networks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until the node's and the VMs' watches have synced.
    pub async fn wait_until_ready(&self) -> Result<(), ()> {
        let r = tokio::try_join!(self.own.wait_until_ready(), self.vms.wait_until_ready());
        r.map(drop).map_err(drop)
    }

    /// Every Port cached, each once.
    pub fn state(&self) -> Vec<Arc<Port>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for store in self.stores() {
            for p in store.state() {
                if seen.insert(ObjectRef::from_obj(p.as_ref())) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The Port `name` in `namespace`, if cached.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Port>> {
        let key = ObjectRef::new(name).within(namespace);
        self.stores().iter().find_map(|s| s.get(&key))
    }

    /// Every store: the node's, the VMs', then each network's.
    fn stores(&self) -> Vec<Store<Port>> {
        let mut stores = vec![self.own.clone(), self.vms.clone()];
        stores.extend(self.networks().values().map(|s| s.store.clone()));
        stores
    }

    /// The networks watched now.
    pub fn tracked(&self) -> BTreeSet<String> {
        self.networks().keys().cloned().collect()
    }

    /// The networks whose Ports are listed.
    pub fn listed(&self) -> BTreeSet<String> {
        (self.networks().iter())
            .filter(|(_, s)| *s.listed.borrow())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Watch the Ports of `networks` (and of the networks pinned by
    /// [`PortCache::ensure`]): start the missing watches, stop the others.
    pub fn track(&self, networks: &BTreeSet<String>) {
        let now = tokio::time::Instant::now();
        let mut keep = networks.clone();
        // Under the map's lock: a network `ensure` pins meanwhile is kept.
        let mut map = self.networks();
        {
            let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
            pinned.retain(|_, until| *until > now);
            keep.extend(pinned.keys().cloned());
        }
        map.retain(|k, _| keep.contains(k));
        for key in &keep {
            if map.contains_key(key) {
                continue;
            }
            let cfg = watcher::Config::default().fields(&format!("spec.network={key}"));
            let (store, stream) = cache::<Port>(&self.client, None, cfg, &self.undecodable);
            let (tx, listed) = tokio::sync::watch::channel(false);
            let pumped = pump(stream, self.changed.clone(), Some((store.clone(), tx)));
            let task = tokio::spawn(pumped).abort_handle();
            tracing::debug!(network = %key, "watching the network's Ports");
            let scoped = Scoped {
                store,
                listed,
                task,
            };
            map.insert(key.clone(), scoped);
        }
    }

    /// Watch `network`'s Ports too (keeping the others) and wait, at most
    /// `timeout`, until they are listed: what the CNI plugin's allocation
    /// needs before it picks an address. Returns whether they are.
    pub async fn ensure(&self, network: &str, timeout: Duration) -> bool {
        (self.pinned.lock().unwrap_or_else(|e| e.into_inner()))
            .insert(network.to_string(), tokio::time::Instant::now() + PIN);
        self.track(&self.tracked());
        self.wait_synced(&BTreeSet::from([network.to_string()]), timeout)
            .await
            .is_empty()
    }

    /// Wait, at most `timeout`, for the watches of `networks` to sync;
    /// returns those that did not (or are not watched).
    pub async fn wait_synced(
        &self,
        networks: &BTreeSet<String>,
        timeout: Duration,
    ) -> BTreeSet<String> {
        let waits: Vec<(String, Option<tokio::sync::watch::Receiver<bool>>)> = {
            let map = self.networks();
            (networks.iter())
                .map(|k| (k.clone(), map.get(k).map(|s| s.listed.clone())))
                .collect()
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing = BTreeSet::new();
        for (key, listed) in waits {
            let ok = match listed {
                Some(mut rx) => tokio::time::timeout_at(deadline, rx.wait_for(|l| *l))
                    .await
                    .is_ok_and(|r| r.is_ok()),
                None => false,
            };
            if !ok {
                missing.insert(key);
            }
        }
        missing
    }
}

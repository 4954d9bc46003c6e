//! The agent's watches: caches of everything it plans from, and of the
//! uninstall ConfigMap ([`cluster::watch`]: an object that does not decode
//! is skipped, logged and counted, never stalls the cache). Every event
//! bumps one counter the main loop waits on; bumps during a pass (or just
//! after it) coalesce into one pass there.
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use std::sync::Arc;

use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use super::{input, keep, Error};
use crate::api::{DistributedRouter, ExternalNetwork, FloatingIP, SnatGateway};
use crate::cluster;
use crate::cluster::watch::Undecodable;

/// The caches the agent plans from.
pub(super) struct Caches {
    pub(super) external_networks: Store<ExternalNetwork>,
    pub(super) routers: Store<DistributedRouter>,
    pub(super) floating_ips: Store<FloatingIP>,
    pub(super) snat_gateways: Store<SnatGateway>,
    pub(super) pods: Store<Pod>,
    pub(super) nodes: Store<Node>,
    pub(super) uninstall: Store<ConfigMap>,
    /// Objects the caches skipped because they do not decode.
    pub(super) undecodable: Arc<Undecodable>,
}

impl Caches {
    /// Start every watch as a task in `tasks`.
    pub(super) fn start(
        client: &Client,
        namespace: &str,
        tasks: &mut JoinSet<()>,
        changed: &tokio::sync::watch::Sender<u64>,
        undecodable: Arc<Undecodable>,
    ) -> Caches {
        let all = watcher::Config::default;
        let uninstall = watcher::Config::default()
            .fields(&format!("metadata.name={}", cluster::UNINSTALL_CONFIGMAP));
        let c = (client, &undecodable);
        Caches {
            external_networks: reflect(tasks, c, None, all(), changed),
            routers: reflect(tasks, c, None, all(), changed),
            floating_ips: reflect(tasks, c, None, all(), changed),
            snat_gateways: reflect(tasks, c, None, all(), changed),
            pods: reflect(tasks, c, None, all(), changed),
            nodes: reflect(tasks, c, None, all(), changed),
            uninstall: reflect(tasks, c, Some(namespace), uninstall, changed),
            undecodable,
        }
    }

    pub(super) fn snapshot(&self) -> input::Snapshot {
        input::Snapshot {
            external_networks: self.external_networks.state(),
            routers: self.routers.state(),
            floating_ips: self.floating_ips.state(),
            snat_gateways: self.snat_gateways.state(),
            pods: self.pods.state(),
            nodes: self.nodes.state(),
            undecodable: (self.undecodable.list().into_iter())
                .filter(|o| keep::KINDS.contains(&o.kind.as_str()))
                .map(|o| (o.kind, o.raw))
                .collect(),
        }
    }

    pub(super) async fn wait_until_ready(&self) -> Result<(), Error> {
        let r = tokio::try_join!(
            self.external_networks.wait_until_ready(),
            self.routers.wait_until_ready(),
            self.floating_ips.wait_until_ready(),
            self.snat_gateways.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.uninstall.wait_until_ready(),
        );
        r.map(|_| ()).map_err(|_| Error::WatchEnded)
    }
}

/// Watch `K` (all namespaces, or `namespace`) into a cache
/// ([`cluster::watch::cache`]); every event bumps `changed`.
fn reflect<K>(
    tasks: &mut JoinSet<()>,
    (client, undecodable): (&Client, &Arc<Undecodable>),
    namespace: Option<&str>,
    cfg: watcher::Config,
    changed: &tokio::sync::watch::Sender<u64>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, mut stream) = cluster::watch::cache(client, namespace, cfg, undecodable);
    let changed = changed.clone();
    tasks.spawn(async move {
        while stream.next().await.is_some() {
            changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    reader
}

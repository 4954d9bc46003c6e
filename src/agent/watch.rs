//! The agent's watches: reflector caches of everything it plans from, and
//! of the uninstall ConfigMap. Every event bumps one counter the main loop
//! waits on (debounced there), so bursts coalesce into one pass.
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use super::{input, Error};
use crate::api::{DistributedRouter, ExternalNetwork, FloatingIP, SnatGateway};
use crate::cluster;

/// The caches the agent plans from.
pub(super) struct Caches {
    pub(super) external_networks: Store<ExternalNetwork>,
    pub(super) routers: Store<DistributedRouter>,
    pub(super) floating_ips: Store<FloatingIP>,
    pub(super) snat_gateways: Store<SnatGateway>,
    pub(super) pods: Store<Pod>,
    pub(super) nodes: Store<Node>,
    pub(super) uninstall: Store<ConfigMap>,
}

impl Caches {
    /// Start every watch as a task in `tasks`.
    pub(super) fn start(
        client: &Client,
        namespace: &str,
        tasks: &mut JoinSet<()>,
        changed: &tokio::sync::watch::Sender<u64>,
    ) -> Caches {
        let all = watcher::Config::default;
        let uninstall = watcher::Config::default()
            .fields(&format!("metadata.name={}", cluster::UNINSTALL_CONFIGMAP));
        Caches {
            external_networks: reflect(tasks, Api::all(client.clone()), all(), changed),
            routers: reflect(tasks, Api::all(client.clone()), all(), changed),
            floating_ips: reflect(tasks, Api::all(client.clone()), all(), changed),
            snat_gateways: reflect(tasks, Api::all(client.clone()), all(), changed),
            pods: reflect(tasks, Api::all(client.clone()), all(), changed),
            nodes: reflect(tasks, Api::all(client.clone()), all(), changed),
            uninstall: reflect(
                tasks,
                Api::namespaced(client.clone(), namespace),
                uninstall,
                changed,
            ),
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

/// Watch `api` into a cache; every event bumps `changed`.
fn reflect<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    cfg: watcher::Config,
    changed: &tokio::sync::watch::Sender<u64>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, cfg)
        .default_backoff()
        // Managed fields are large and never read.
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer);
    let changed = changed.clone();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.send_modify(|n| *n = n.wrapping_add(1)),
                Err(e) => tracing::warn!(kind = K::kind(&Default::default()).as_ref(), error = %e, "watch failed; retrying"),
            }
        }
    });
    reader
}

//! The agent's watches: caches of everything it plans from, and of the
//! uninstall ConfigMap ([`cluster::watch`]: an object that does not decode
//! is skipped, logged and counted, never stalls the cache). Every event
//! bumps one counter the main loop waits on; bumps during a pass (or just
//! after it) coalesce into one pass there.
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use std::sync::Arc;

use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use super::port_cache::{pump, PortCache};
use super::{input, Error};
use crate::api::kinds::for_each_kind;
use crate::api::{Build, DvrKind, Kind, PerKind};
use crate::cluster;
use crate::cluster::watch::{Stores, Undecodable};

/// The caches the agent plans from.
pub(super) struct Caches {
    pub(super) objects: PerKind<Stores>,
    /// kube-dvr's Port records: the endpoints (never Pods: what a
    /// tenant can write about a pod is not trusted), and only those of the
    /// routers this node needs ([`PortCache`]).
    pub(super) ports: Arc<PortCache>,
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
        node: &str,
        tasks: &mut JoinSet<()>,
        changed: &tokio::sync::watch::Sender<u64>,
        undecodable: Arc<Undecodable>,
    ) -> Caches {
        let all = watcher::Config::default;
        let uninstall = watcher::Config::default()
            .fields(&format!("metadata.name={}", cluster::UNINSTALL_CONFIGMAP));
        let c = (client, &undecodable);
        struct Kinds<'a> {
            tasks: &'a mut JoinSet<()>,
            c: (&'a Client, &'a Arc<Undecodable>),
            changed: &'a tokio::sync::watch::Sender<u64>,
        }
        impl Build<Stores> for Kinds<'_> {
            fn build<K: DvrKind>(&mut self) -> Store<K> {
                // Without condition messages: see `cache_slim`.
                let (client, und) = self.c;
                let (reader, stream) =
                    cluster::watch::cache_slim(client, None, Default::default(), und);
                self.tasks
                    .spawn(pump::<K>(stream, self.changed.clone(), None));
                reader
            }
        }
        let objects = PerKind::build(&mut Kinds { tasks, c, changed });
        Caches {
            objects,
            ports: PortCache::start(client, node, tasks, changed, undecodable.clone()),
            nodes: reflect(tasks, c, None, all(), changed),
            uninstall: reflect(tasks, c, Some(namespace), uninstall, changed),
            undecodable,
        }
    }

    pub(super) fn snapshot(&self) -> input::Snapshot {
        let mut objects = PerKind::default();
        for_each_kind!(|K| {
            *K::of_mut(&mut objects) = K::of(&self.objects).state();
        });
        input::Snapshot {
            objects,
            ports: self.ports.state(),
            nodes: self.nodes.state(),
            undecodable: (self.undecodable.list().into_iter())
                .filter(|o| Kind::from_name(&o.kind).is_some())
                .map(|o| (o.kind, o.raw))
                .collect(),
        }
    }

    pub(super) async fn wait_until_ready(&self) -> Result<(), Error> {
        for_each_kind!(|K| {
            (K::of(&self.objects).wait_until_ready().await).map_err(|_| Error::WatchEnded)?;
        });
        (self.ports.wait_until_ready().await).map_err(|_| Error::WatchEnded)?;
        let r = tokio::try_join!(
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
    let (reader, stream) = cluster::watch::cache(client, namespace, cfg, undecodable);
    tasks.spawn(pump::<K>(stream, changed.clone(), None));
    reader
}

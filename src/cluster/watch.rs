//! The watch caches of the controller and the agents, and what they do with
//! an object that does not decode.
//!
//! A typed kube-rs watch (`Api<K>`) fails its whole LIST when one object in
//! it does not decode into `K` (type skew during an upgrade, a number out of
//! range, a field of the wrong type written behind admission): the watcher
//! retries forever, the cache never syncs, and every tenant stalls. So every
//! cache here watches `Api<DynamicObject>` with `K`'s [`ApiResource`] and
//! decodes each object on its own ([`Decoder`]):
//!
//! - an object that decodes goes into the typed [`Store<K>`] as before
//!   (managed fields stripped: large and never read);
//! - one that does not is left out and recorded in the [`Undecodable`]
//!   registry (kind, name, uid, error, raw JSON): a `tracing::warn!` once per
//!   object and resourceVersion, the gauge `kube_dvr_undecodable_objects`
//!   (by kind), and — in the controller, which has Events RBAC — a Warning
//!   Event `Undecodable` on the object, once per resourceVersion.
//!
//! **An object that becomes undecodable after having been good keeps its
//! last good version in the cache** (also across a re-list), and leaves the
//! cache only on a real Delete (or when a re-list no longer contains it, or
//! it comes back under another uid). When unsure, keep: dropping it would
//! make every agent tear down its traffic during a version-skew upgrade, and
//! let the controller hand its allocations to another tenant. An object
//! never seen good is not resolved at all; the controller still reserves
//! what its raw status holds (`Held::add_raw`).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, TypeMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::telemetry::Telemetry;

/// Name of the gauge of undecodable objects, by kind.
pub const M_UNDECODABLE: &str = "kube_dvr_undecodable_objects";
const M_UNDECODABLE_HELP: &str =
    "Objects skipped because they do not decode into their type, by kind.";

/// One object that does not decode.
#[derive(Clone, Debug, PartialEq)]
pub struct UndecodableObject {
    pub kind: String,
    /// None for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// Why it does not decode (serde's message).
    pub error: String,
    /// The object as served (managed fields stripped).
    pub raw: Value,
    /// For Events.
    pub reference: ObjectReference,
}

impl UndecodableObject {
    /// `Kind ns/name` (`Kind name` when cluster-scoped).
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// (kind, namespace, name).
type Key = (String, Option<String>, String);

/// The objects that currently do not decode, shared by every cache of one
/// controller or agent.
pub struct Undecodable {
    objects: Mutex<BTreeMap<Key, UndecodableObject>>,
    telemetry: Arc<Telemetry>,
}

impl Undecodable {
    pub fn new(telemetry: Arc<Telemetry>) -> Arc<Undecodable> {
        Arc::new(Undecodable {
            objects: Mutex::new(BTreeMap::new()),
            telemetry,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, UndecodableObject>> {
        // A panic while holding the lock leaves a consistent map.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every object that does not decode, by kind, namespace, name.
    pub fn list(&self) -> Vec<UndecodableObject> {
        self.lock().values().cloned().collect()
    }

    /// The raw JSON of the undecodable objects of `kinds`.
    pub fn raw_of(&self, kinds: &[&str]) -> Vec<Value> {
        self.lock()
            .values()
            .filter(|o| kinds.contains(&o.kind.as_str()))
            .map(|o| o.raw.clone())
            .collect()
    }

    fn gauge(&self, objects: &BTreeMap<Key, UndecodableObject>, kind: &str) {
        let n = objects.keys().filter(|k| k.0 == kind).count();
        self.telemetry.set(
            M_UNDECODABLE,
            M_UNDECODABLE_HELP,
            &[("kind", kind)],
            n as f64,
        );
    }

    /// Record `o`; warns when this object at this resourceVersion is new.
    fn record(&self, o: UndecodableObject) {
        let mut objects = self.lock();
        let key = (o.kind.clone(), o.namespace.clone(), o.name.clone());
        let known = objects
            .get(&key)
            .is_some_and(|p| p.uid == o.uid && p.resource_version == o.resource_version);
        if !known {
            tracing::warn!(
                kind = %o.kind,
                object = %o.label(),
                uid = o.uid.as_deref().unwrap_or(""),
                resource_version = o.resource_version.as_deref().unwrap_or(""),
                error = %o.error,
                "object does not decode; skipped (its last decodable version, if any, stays in effect)"
            );
        }
        let kind = o.kind.clone();
        objects.insert(key, o);
        self.gauge(&objects, &kind);
    }

    fn forget(&self, key: &Key) {
        let mut objects = self.lock();
        if objects.remove(key).is_some() {
            self.gauge(&objects, &key.0);
        }
    }

    /// After a re-list of `kind`: forget what it no longer contains.
    fn retain(&self, kind: &str, listed: &BTreeSet<Key>) {
        let mut objects = self.lock();
        objects.retain(|k, _| k.0 != kind || listed.contains(k));
        self.gauge(&objects, kind);
    }
}

/// `K` from `o`, or why not. Strips `o`'s managed fields (large and never
/// read) and sets its apiVersion and kind to `K`'s (list items may come
/// without them).
pub fn decode<K>(o: &mut DynamicObject) -> Result<K, String>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    o.metadata.managed_fields = None;
    // kubectl's copy of the whole object as last applied: nothing here
    // reads it, and it doubles what `kubectl apply` writes.
    if let Some(a) = o.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            o.metadata.annotations = None;
        }
    }
    o.types = Some(TypeMeta {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
    });
    let v = serde_json::to_value(&*o).map_err(|e| e.to_string())?;
    serde_json::from_value(v).map_err(|e| e.to_string())
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop the messages of an object's status conditions (what [`cache_slim`]
/// keeps out of an agent's caches: prose for people, which no decision
/// reads).
fn drop_condition_messages(o: &mut DynamicObject) {
    let conds = o
        .data
        .get_mut("status")
        .and_then(|s| s.get_mut("conditions"));
    for c in conds.and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(m) = c.get_mut("message") {
            *m = Value::String(String::new());
        }
    }
}

/// Turns the watch events of `DynamicObject`s into events of `K`, one
/// object at a time (see the module docs).
pub struct Decoder<K: Resource<DynamicType = ()> + 'static> {
    ar: ApiResource,
    /// The typed cache, for the last good version of an object.
    store: Store<K>,
    registry: Arc<Undecodable>,
    /// The objects listed since the last `Init`.
    listed: BTreeSet<Key>,
    /// Condition messages dropped ([`cache_slim`]).
    slim: bool,
}

impl<K> Decoder<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static,
{
    pub fn new(store: Store<K>, registry: Arc<Undecodable>) -> Self {
        Decoder {
            ar: ApiResource::erase::<K>(&()),
            store,
            registry,
            listed: BTreeSet::new(),
            slim: false,
        }
    }

    fn key(&self, o: &DynamicObject) -> Key {
        (
            self.ar.kind.clone(),
            o.metadata.namespace.clone(),
            o.metadata.name.clone().unwrap_or_default(),
        )
    }

    fn decode(&self, o: &mut DynamicObject) -> Result<K, String> {
        if self.slim {
            drop_condition_messages(o);
        }
        decode(o)
    }

    /// The cached (last good) version of `o`, of any uid.
    fn cached(&self, o: &DynamicObject) -> Option<Arc<K>> {
        let name = o.metadata.name.as_deref()?;
        let r = match &o.metadata.namespace {
            Some(ns) => ObjectRef::new(name).within(ns),
            None => ObjectRef::new(name),
        };
        self.store.get(&r)
    }

    fn undecodable(&self, o: &DynamicObject, error: String) -> UndecodableObject {
        let m = &o.metadata;
        UndecodableObject {
            kind: self.ar.kind.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            error,
            raw: serde_json::to_value(o).unwrap_or(Value::Null),
            reference: ObjectReference {
                api_version: Some(self.ar.api_version.clone()),
                kind: Some(self.ar.kind.clone()),
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                ..Default::default()
            },
        }
    }

    /// The typed event for one watch event; None when there is nothing to
    /// tell the typed cache.
    pub fn event(&mut self, ev: watcher::Event<DynamicObject>) -> Option<watcher::Event<K>> {
        use watcher::Event as E;
        match ev {
            E::Init => {
                self.listed.clear();
                Some(E::Init)
            }
            E::InitDone => {
                self.registry.retain(&self.ar.kind, &self.listed);
                self.listed.clear();
                Some(E::InitDone)
            }
            E::InitApply(mut o) => {
                let key = self.key(&o);
                self.listed.insert(key.clone());
                match self.decode(&mut o) {
                    Ok(k) => {
                        self.registry.forget(&key);
                        Some(E::InitApply(k))
                    }
                    Err(e) => {
                        self.registry.record(self.undecodable(&o, e));
                        // The re-list replaces the cache: carry the last
                        // good version of the same object over.
                        self.cached(&o)
                            .filter(|c| c.meta().uid == o.metadata.uid)
                            .map(|c| E::InitApply((*c).clone()))
                    }
                }
            }
            E::Apply(mut o) => {
                let key = self.key(&o);
                match self.decode(&mut o) {
                    Ok(k) => {
                        self.registry.forget(&key);
                        Some(E::Apply(k))
                    }
                    Err(e) => {
                        self.registry.record(self.undecodable(&o, e));
                        // Same object: its last good version stays. Another
                        // object under the same name: the old one is gone.
                        self.cached(&o)
                            .filter(|c| c.meta().uid != o.metadata.uid)
                            .map(|c| E::Delete((*c).clone()))
                    }
                }
            }
            E::Delete(mut o) => {
                self.registry.forget(&self.key(&o));
                match self.decode(&mut o) {
                    Ok(k) => Some(E::Delete(k)),
                    Err(_) => self.cached(&o).map(|c| E::Delete((*c).clone())),
                }
            }
        }
    }
}

/// The object one watch event changed in a cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Touched {
    pub namespace: Option<String>,
    pub name: String,
    /// Its resourceVersion after the event.
    pub resource_version: Option<String>,
    pub deleted: bool,
}

impl Touched {
    fn of<K: Resource>(ev: &watcher::Event<K>) -> Option<Touched> {
        let (o, deleted) = match ev {
            watcher::Event::Apply(o) => (o, false),
            watcher::Event::Delete(o) => (o, true),
            _ => return None,
        };
        let m = o.meta();
        Some(Touched {
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone(),
            deleted,
        })
    }
}

/// A reflector store per kind ([`PerKind`](crate::api::PerKind)).
pub struct Stores;
impl crate::api::Family for Stores {
    type Of<K: crate::api::DvrKind> = Store<K>;
}

/// A cache of `K` (all namespaces, or `namespace`), filled one decodable
/// object at a time; undecodable ones go to `registry`. The stream drives
/// the watch; each item means "something changed" (undecodable objects
/// included, so a pass can report them): the object an Apply or Delete
/// changed, None for anything else (a list, an object that does not
/// decode).
pub fn cache<K>(
    client: &Client,
    namespace: Option<&str>,
    cfg: watcher::Config,
    registry: &Arc<Undecodable>,
) -> (Store<K>, BoxStream<'static, Option<Touched>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    cache_with(client, namespace, cfg, registry, false)
}

/// [`cache`] without the messages of the objects' status conditions: an
/// agent's caches of kube-dvr objects (its resolver reads conditions'
/// types, statuses, reasons and generations, never their prose; about a
/// fifth of a FloatingIP).
pub fn cache_slim<K>(
    client: &Client,
    namespace: Option<&str>,
    cfg: watcher::Config,
    registry: &Arc<Undecodable>,
) -> (Store<K>, BoxStream<'static, Option<Touched>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    cache_with(client, namespace, cfg, registry, true)
}

fn cache_with<K>(
    client: &Client,
    namespace: Option<&str>,
    cfg: watcher::Config,
    registry: &Arc<Undecodable>,
    slim: bool,
) -> (Store<K>, BoxStream<'static, Option<Touched>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    // The gauge exists (0) from the start.
    registry.retain(&ar.kind, &BTreeSet::new());
    let (reader, mut writer) = reflector::store::<K>();
    let mut decoder = Decoder::new(reader.clone(), registry.clone());
    decoder.slim = slim;
    let kind = ar.kind;
    let stream = watcher(api, cfg)
        .default_backoff()
        .map(move |ev| match ev {
            Ok(ev) => {
                let ev = decoder.event(ev)?;
                writer.apply_watcher_event(&ev);
                Touched::of(&ev)
            }
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying");
                None
            }
        })
        .boxed();
    (reader, stream)
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;

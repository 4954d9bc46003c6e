//! The object store: every object as JSON, one global resourceVersion
//! counter, a bounded event log that watches resume from, and the semantics
//! kube-apiserver's generic registry gives every kind (metadata defaulting,
//! optimistic concurrency, generation, finalizers, `/status`, garbage
//! collection by ownerReferences, CRD registration).
//!
//! Values in and out of this module are in *stored* form (see `convert.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::admission::{prepare_for_create, WriteOpts};
use crate::cascade::crd_status;
use crate::resource::{builtins, from_crd, ResourceType};
use crate::selector::Selector;
use crate::status::ApiError;
use crate::util::{name_suffix, new_uid, now_rfc3339};

/// `(group, plural)` of the stored collection.
pub type TypeKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct LogEntry {
    pub rv: u64,
    pub key: TypeKey,
    pub namespace: String,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The object before a MODIFIED change (to turn selector transitions into
    /// ADDED/DELETED, as kube-apiserver does).
    pub previous: Option<Arc<Value>>,
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

pub(crate) struct State {
    pub(crate) rv: u64,
    pub(crate) types: Vec<ResourceType>,
    pub(crate) objects: HashMap<TypeKey, Objects>,
    pub(crate) log: VecDeque<Arc<LogEntry>>,
    pub(crate) log_capacity: usize,
    /// Events with rv <= this have been dropped from the log.
    pub(crate) compacted: u64,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

pub struct Store {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    writes: AtomicU64,
}

pub(crate) fn meta(obj: &Value, field: &str) -> Option<String> {
    obj["metadata"][field].as_str().map(String::from)
}

/// What `generation` tracks: `spec`, or for kinds without one everything
/// except metadata and status.
fn spec_of(obj: &Value) -> Value {
    if let Some(spec) = obj.get("spec") {
        return spec.clone();
    }
    let mut o = obj.clone();
    if let Value::Object(m) = &mut o {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

/// The finalizer kube-apiserver puts on every CRD.
pub(crate) const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Whether something still holds a deleted object: `metadata.finalizers`,
/// or for a Namespace also `spec.finalizers` (the namespace controller's).
pub(crate) fn has_finalizers(key: &TypeKey, obj: &Value) -> bool {
    let non_empty = |v: &Value| v.as_array().is_some_and(|f| !f.is_empty());
    non_empty(&obj["metadata"]["finalizers"])
        || (key.0.is_empty() && key.1 == "namespaces" && non_empty(&obj["spec"]["finalizers"]))
}

impl Store {
    pub fn new(log_capacity: usize) -> Self {
        let mut st = State {
            rv: 0,
            types: builtins(),
            objects: HashMap::new(),
            log: VecDeque::new(),
            log_capacity: log_capacity.max(1),
            compacted: 0,
        };
        let ns_type = st
            .types
            .iter()
            .find(|t| t.plural == "namespaces")
            .cloned()
            .expect("builtin");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"metadata": {"name": ns}});
            let opts = WriteOpts::request(false, "v1", false);
            st.create(&ns_type, "", crate::convert::ingest(&ns_type, obj), &opts)
                .expect("pre-create namespace");
        }
        let (changed, _) = watch::channel(st.rv);
        Store {
            state: Mutex::new(st),
            changed,
            writes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, st: &State) {
        self.changed.send_replace(st.rv);
    }

    pub fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Drops every event from the log (like an etcd compaction): watches from
    /// any earlier resourceVersion then get `410 Gone`.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.log.clear();
        st.compacted = st.rv;
    }

    pub fn types(&self) -> Vec<ResourceType> {
        self.lock().types.clone()
    }

    /// The resource served at `group/version/plural`, if any.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock()
            .types
            .iter()
            .find(|t| {
                t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    /// Matching objects and the list's resourceVersion.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selector,
        view: impl Fn(&Value) -> Value,
    ) -> (Vec<Value>, u64) {
        let (items, rv, _) = self.list_page(rt, ns, sel, view, None, None);
        (items, rv)
    }

    /// One page of a list (`limit`, `continue`): at most `limit` items
    /// after the key `after` (namespace, name), in key order, and the key
    /// of the last one when more remain. Pages after the first come from
    /// the current state, not from a snapshot at the first page's version
    /// as kube-apiserver's do: the caller reports the first page's version,
    /// so a watch from it replays whatever changed meanwhile.
    pub fn list_page(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selector,
        view: impl Fn(&Value) -> Value,
        limit: Option<usize>,
        after: Option<(String, String)>,
    ) -> (Vec<Value>, u64, Option<(String, String)>) {
        use std::ops::Bound;
        let st = self.lock();
        let Some(objs) = st.objects.get(&rt.storage_key()) else {
            return (Vec::new(), st.rv, None);
        };
        let from = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut more = None;
        let matching = (objs.range((from, Bound::Unbounded)))
            .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
            .map(|(k, o)| (k, view(o)))
            .filter(|(_, o)| sel.matches(o));
        let mut last = None;
        for (k, o) in matching {
            if limit.is_some_and(|l| items.len() >= l) {
                more = last;
                break;
            }
            last = Some(k.clone());
            items.push(o);
        }
        (items, st.rv, more)
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.lock()
            .objects
            .get(&rt.storage_key())
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Log entries after `since` for one collection, or `410 Expired`.
    /// Also returns the current resourceVersion: once these entries are sent,
    /// the watcher has seen everything up to it.
    pub fn events_after(
        &self,
        key: &TypeKey,
        since: u64,
    ) -> Result<(Vec<Arc<LogEntry>>, u64), ApiError> {
        let st = self.lock();
        if since < st.compacted {
            return Err(ApiError::expired(since, st.compacted + 1));
        }
        let start = st.log.partition_point(|e| e.rv <= since);
        Ok((
            st.log
                .range(start..)
                .filter(|e| &e.key == key)
                .cloned()
                .collect(),
            st.rv,
        ))
    }

    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        if opts.dry_run {
            let rv = st.rv;
            let out = st.prepare_create(rt, ns, obj, opts)?;
            st.rv = rv;
            return Ok(out);
        }
        let out = st.create(rt, ns, obj, opts)?;
        self.notify(&st);
        Ok(out)
    }

    /// Read-modify-write of one object. `f` gets the stored object (None if
    /// absent) and returns the new one; returning a value for an absent
    /// object creates it (server-side apply). Returns the result and whether
    /// it was created.
    pub fn write(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        part: Part,
        opts: &WriteOpts,
        f: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<(Value, bool), ApiError> {
        let mut st = self.lock();
        let key = rt.storage_key();
        let current = st
            .objects
            .get(&key)
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())))
            .cloned();
        let Some(current) = current else {
            if part == Part::Status {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            }
            let new = f(None)?;
            // kube-apiserver takes the name of an object created by a patch
            // (server-side apply) from the body only.
            if new["metadata"]["name"].as_str() != Some(name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({name} based on URL) was undeterminable: name must be provided"
                )));
            }
            let out = if opts.dry_run {
                st.prepare_create(rt, ns, new, opts)?
            } else {
                st.create(rt, ns, new, opts)?
            };
            self.notify(&st);
            return Ok((out, true));
        };
        let new = f(Some(&current))?;
        if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                new["metadata"]["name"]
            )));
        }
        let out = st.update(rt, ns, name, &current, new, part, opts)?;
        self.notify(&st);
        Ok((out, false))
    }

    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        if rt.storage_key() == ("".into(), "namespaces".into())
            && ["default", "kube-system", "kube-public"].contains(&name)
        {
            return Err(ApiError::forbidden(
                &rt.group,
                &rt.plural,
                name,
                "this namespace may not be deleted",
            ));
        }
        let key = rt.storage_key();
        let current = st
            .objects
            .get(&key)
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if dry_run {
            return Ok((*current).clone());
        }
        let out = st.delete(&key, ns, name);
        self.notify(&st);
        Ok(out.unwrap_or_else(|| (*current).clone()))
    }

    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selector,
        view: impl Fn(&Value) -> Value,
    ) -> Vec<Value> {
        let mut st = self.lock();
        let key = rt.storage_key();
        let names: Vec<(String, String)> = st
            .objects
            .get(&key)
            .map(|objs| {
                objs.iter()
                    .filter(|((o_ns, _), o)| ns.is_none_or(|n| n == o_ns) && sel.matches(&view(o)))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let out = names
            .iter()
            .filter_map(|(n, name)| st.delete(&key, n, name))
            .collect();
        self.notify(&st);
        out
    }
}

impl State {
    pub(crate) fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub(crate) fn record(
        &mut self,
        key: &TypeKey,
        ns: &str,
        kind: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let entry = LogEntry {
            rv: self.rv,
            key: key.clone(),
            namespace: ns.to_string(),
            kind,
            object,
            previous,
        };
        self.log.push_back(Arc::new(entry));
        while self.log.len() > self.log_capacity {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    fn exists(&self, key: &TypeKey, ns: &str, name: &str) -> bool {
        self.objects
            .get(key)
            .is_some_and(|o| o.contains_key(&(ns.to_string(), name.to_string())))
    }

    /// Validates and fills metadata for a new object; bumps the rv.
    fn prepare_create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let name = match (meta(&obj, "name"), meta(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n,
            (_, Some(prefix)) => format!("{prefix}{}", name_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.plural,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        };
        let key = rt.storage_key();
        let m = &mut obj["metadata"];
        m["name"] = json!(name);
        if rt.namespaced {
            if let Some(body_ns) = m["namespace"].as_str() {
                if !body_ns.is_empty() && body_ns != ns {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object does not match the namespace sent on the request ({body_ns} != {ns})"
                    )));
                }
            }
            m["namespace"] = json!(ns);
            if !self.exists(&("".into(), "namespaces".into()), "", ns) {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
        } else if let Value::Object(mm) = m {
            mm.remove("namespace");
        }
        if self.exists(&key, ns, &name) {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        self.admit_create(rt, ns, &name, opts)?;
        if let Value::Object(mm) = m {
            for k in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                mm.remove(k);
            }
        }
        m["uid"] = json!(new_uid());
        m["creationTimestamp"] = json!(now_rfc3339());
        m["generation"] = json!(1);
        if rt.custom && rt.status {
            if let Value::Object(o) = &mut obj {
                o.remove("status");
            }
        }
        prepare_for_create(rt, &name, &mut obj)?;
        self.admit_object(rt, &mut obj, None, opts)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        Ok(obj)
    }

    fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let obj = self.prepare_create(rt, ns, obj, opts)?;
        let key = rt.storage_key();
        let name = meta(&obj, "name").unwrap_or_default();
        let ns = if rt.namespaced { ns } else { "" };
        let stored = Arc::new(obj.clone());
        self.objects
            .entry(key.clone())
            .or_default()
            .insert((ns.to_string(), name), stored.clone());
        self.record(&key, ns, EventType::Added, stored, None);
        self.after_write(&key, &obj, false);
        Ok(obj)
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: &Value,
        new: Value,
        part: Part,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let old_rv = meta(old, "resourceVersion").unwrap_or_default();
        if let Some(rv) = meta(&new, "resourceVersion") {
            if !rv.is_empty() && rv != old_rv {
                return Err(ApiError::conflict(&rt.group, &rt.plural, name));
            }
        }
        let mut result = match part {
            Part::Status => {
                let mut r = old.clone();
                r["status"] = new.get("status").cloned().unwrap_or(Value::Null);
                r
            }
            Part::Main => {
                let mut r = new;
                if !r["metadata"].is_object() {
                    r["metadata"] = json!({});
                }
                for k in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "namespace",
                    "name",
                ] {
                    match old["metadata"].get(k) {
                        Some(v) => r["metadata"][k] = v.clone(),
                        None => {
                            if let Value::Object(m) = &mut r["metadata"] {
                                m.remove(k);
                            }
                        }
                    }
                }
                if let Value::Object(m) = &mut r["metadata"] {
                    m.remove("managedFields");
                }
                if rt.status {
                    r["status"] = old.get("status").cloned().unwrap_or(Value::Null);
                }
                if rt.storage_key() == ("".into(), "namespaces".into()) {
                    // spec.finalizers changes only through /finalize.
                    r["spec"] = old.get("spec").cloned().unwrap_or(Value::Null);
                }
                if spec_of(&r) != spec_of(old) {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
                    r["metadata"]["generation"] = json!(g + 1);
                }
                r
            }
        };
        if let Value::Object(o) = &mut result {
            if o.get("status").is_some_and(Value::is_null) {
                o.remove("status");
            }
        }
        result["metadata"]["resourceVersion"] = json!(old_rv);
        let is_crd = rt.storage_key()
            == (
                "apiextensions.k8s.io".into(),
                "customresourcedefinitions".into(),
            );
        if is_crd && part == Part::Main && spec_of(&result) != spec_of(old) {
            let def =
                from_crd(&result).map_err(|e| ApiError::invalid(&rt.group, &rt.plural, name, e))?;
            result["status"] = crd_status(&result, &def);
        }
        self.admit_object(rt, &mut result, Some(old), opts)?;
        // A write that changes nothing is not a write: no new resourceVersion,
        // no watch event (controllers that re-apply their status rely on it).
        if &result == old || opts.dry_run {
            return Ok(result);
        }
        let key = rt.storage_key();
        let rv = self.next_rv();
        result["metadata"]["resourceVersion"] = json!(rv.to_string());
        let deleting = !result["metadata"]["deletionTimestamp"].is_null();
        if deleting && !has_finalizers(&key, &result) {
            self.remove(&key, ns, name, Arc::new(result.clone()));
            return Ok(result);
        }
        let stored = Arc::new(result.clone());
        self.objects
            .entry(key.clone())
            .or_default()
            .insert((ns.to_string(), name.to_string()), stored.clone());
        self.record(
            &key,
            ns,
            EventType::Modified,
            stored,
            Some(Arc::new(old.clone())),
        );
        self.after_write(&key, &result, false);
        Ok(result)
    }
}

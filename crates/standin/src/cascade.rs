//! Deletion (marking objects held by finalizers, removal) and the side
//! effects of committed writes, as kube-apiserver and its controllers
//! produce them: CRD (un)registration and status; a deleted CRD or Namespace
//! stays (with a `deletionTimestamp`; a Namespace in phase `Terminating`)
//! while its objects are deleted, their finalizers honoured, and goes with
//! the last of them (its own finalizer, `customresourcecleanup.apiextensions.k8s.io`
//! or the Namespace's `spec.finalizers: [kubernetes]`, is then released);
//! garbage collection of dependents by `ownerReferences`.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::admission::{is_terminating, CRD_KEY};
use crate::resource::{from_crd, ResourceType};
use crate::store::{has_finalizers, meta, EventType, State, TypeKey, CRD_CLEANUP};
use crate::util::now_rfc3339;

impl State {
    /// Side effects of a committed write: CRD (un)registration, the deletion
    /// of a terminating CRD's objects or namespace's contents (and of the CRD
    /// or Namespace itself once they are gone), garbage collection of
    /// dependents.
    pub(crate) fn after_write(&mut self, key: &TypeKey, obj: &Value, deleted: bool) {
        match (key.0.as_str(), key.1.as_str()) {
            CRD_KEY => {
                if let Ok(def) = from_crd(obj) {
                    self.types
                        .retain(|t| !(t.group == def.group && t.plural == def.plural));
                    let dkey = def.storage_key();
                    if deleted {
                        // Gone for good (its finalizer removed by hand, or
                        // its objects are all gone): nothing of it stays.
                        for (ns, name) in self.names(&dkey, None) {
                            self.force_remove(&dkey, &ns, &name);
                        }
                    } else {
                        self.types.push(def);
                        if is_terminating(obj) {
                            for (ns, name) in self.names(&dkey, None) {
                                self.delete(&dkey, &ns, &name);
                            }
                            self.finish_crd(&dkey);
                        }
                    }
                }
            }
            ("", "namespaces") => {
                let ns = meta(obj, "name").unwrap_or_default();
                if deleted || is_terminating(obj) {
                    let keys: Vec<TypeKey> = self.objects.keys().cloned().collect();
                    for k in keys {
                        for (n, name) in self.names(&k, Some(&ns)) {
                            self.delete(&k, &n, &name);
                        }
                    }
                }
                if !deleted && is_terminating(obj) {
                    self.finish_namespace(&ns);
                }
            }
            _ if deleted => {
                if let Some(ns) = meta(obj, "namespace") {
                    self.finish_namespace(&ns);
                }
                self.finish_crd(key);
            }
            _ => {}
        }
        if deleted {
            if let Some(uid) = meta(obj, "uid") {
                let mut dependents = Vec::new();
                for (k, objs) in &self.objects {
                    for ((n, name), o) in objs {
                        let owned =
                            o["metadata"]["ownerReferences"]
                                .as_array()
                                .is_some_and(|refs| {
                                    refs.iter().any(|r| r["uid"].as_str() == Some(uid.as_str()))
                                });
                        if owned {
                            dependents.push((k.clone(), n.clone(), name.clone()));
                        }
                    }
                }
                for (k, n, name) in dependents {
                    self.delete(&k, &n, &name);
                }
            }
        }
    }

    /// Deletes (or, with finalizers, marks for deletion) one object.
    pub(crate) fn delete(&mut self, key: &TypeKey, ns: &str, name: &str) -> Option<Value> {
        let current = self
            .objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))?
            .clone();
        if has_finalizers(key, &current) {
            if !current["metadata"]["deletionTimestamp"].is_null() {
                return Some((*current).clone());
            }
            let mut marked = (*current).clone();
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let g = marked["metadata"]["generation"].as_i64().unwrap_or(0);
            marked["metadata"]["generation"] = json!(g + 1);
            if key.0.is_empty() && key.1 == "namespaces" {
                marked["status"]["phase"] = json!("Terminating");
            }
            let rv = self.next_rv();
            marked["metadata"]["resourceVersion"] = json!(rv.to_string());
            let stored = Arc::new(marked.clone());
            self.objects
                .entry(key.clone())
                .or_default()
                .insert((ns.to_string(), name.to_string()), stored.clone());
            self.record(key, ns, EventType::Modified, stored, Some(current));
            self.after_write(key, &marked, false);
            return Some(marked);
        }
        let mut gone = (*current).clone();
        let rv = self.next_rv();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.remove(key, ns, name, Arc::new(gone.clone()));
        Some(gone)
    }

    /// Removes an object for good (rv already bumped) and cascades.
    pub(crate) fn remove(&mut self, key: &TypeKey, ns: &str, name: &str, last: Arc<Value>) {
        if let Some(objs) = self.objects.get_mut(key) {
            objs.remove(&(ns.to_string(), name.to_string()));
        }
        self.record(key, ns, EventType::Deleted, last.clone(), None);
        self.after_write(key, &last, true);
    }

    /// `(namespace, name)` of every stored object of `key` (in `ns`).
    fn names(&self, key: &TypeKey, ns: Option<&str>) -> Vec<(String, String)> {
        self.objects
            .get(key)
            .map(|o| {
                o.keys()
                    .filter(|(n, _)| ns.is_none_or(|ns| ns == n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes an object now, finalizers or not.
    fn force_remove(&mut self, key: &TypeKey, ns: &str, name: &str) {
        let Some(o) = self
            .objects
            .get(key)
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())))
            .cloned()
        else {
            return;
        };
        let mut gone = (*o).clone();
        let rv = self.next_rv();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.remove(key, ns, name, Arc::new(gone));
    }

    /// Drops `finalizer` from the list at `pointer` of a terminating object
    /// and removes the object once nothing holds it any more.
    fn release(&mut self, key: &TypeKey, ns: &str, name: &str, pointer: &str, finalizer: &str) {
        let Some(cur) = self
            .objects
            .get(key)
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())))
            .cloned()
        else {
            return;
        };
        let held = cur
            .pointer(pointer)
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|f| f == finalizer));
        if !is_terminating(&cur) || !held {
            return;
        }
        let mut next = (*cur).clone();
        if let Some(Value::Array(l)) = next.pointer_mut(pointer) {
            l.retain(|f| f != finalizer);
        }
        let rv = self.next_rv();
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        if has_finalizers(key, &next) {
            let stored = Arc::new(next.clone());
            self.objects
                .entry(key.clone())
                .or_default()
                .insert((ns.to_string(), name.to_string()), stored.clone());
            self.record(key, ns, EventType::Modified, stored, Some(cur));
        } else {
            self.remove(key, ns, name, Arc::new(next));
        }
    }

    /// A terminating namespace goes once nothing is left in it (its
    /// contents' finalizers are honoured).
    fn finish_namespace(&mut self, ns: &str) {
        let key = (String::new(), "namespaces".to_string());
        let terminating = self
            .objects
            .get(&key)
            .and_then(|o| o.get(&(String::new(), ns.to_string())))
            .is_some_and(|o| is_terminating(o));
        if !terminating
            || self
                .objects
                .values()
                .any(|o| o.keys().any(|(n, _)| n == ns))
        {
            return;
        }
        self.release(&key, "", ns, "/spec/finalizers", "kubernetes");
    }

    /// A terminating CRD goes once its objects are gone.
    fn finish_crd(&mut self, key: &TypeKey) {
        if self.objects.get(key).is_some_and(|o| !o.is_empty()) {
            return;
        }
        let crd = (CRD_KEY.0.to_string(), CRD_KEY.1.to_string());
        let name = format!("{}.{}", key.1, key.0);
        self.release(&crd, "", &name, "/metadata/finalizers", CRD_CLEANUP);
    }
}

/// The status kube-apiserver gives an accepted CRD.
pub(crate) fn crd_status(crd: &Value, def: &ResourceType) -> Value {
    let now = now_rfc3339();
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
    json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": [def.versions[0]],
    })
}

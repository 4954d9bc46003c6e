//! Side effects of committed writes, as kube-apiserver's controllers would
//! produce them: CRD (un)registration and status, deletion of a namespace's
//! contents, garbage collection of dependents by `ownerReferences`.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::resource::{from_crd, ResourceType};
use crate::store::{meta, State, TypeKey};
use crate::util::now_rfc3339;

impl State {
    /// Side effects of a committed write: CRD (un)registration, namespace
    /// content deletion, garbage collection of dependents.
    pub(crate) fn after_write(&mut self, key: &TypeKey, obj: &Value, deleted: bool) {
        match (key.0.as_str(), key.1.as_str()) {
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Ok(def) = from_crd(obj) {
                    self.types
                        .retain(|t| !(t.group == def.group && t.plural == def.plural));
                    let dkey = def.storage_key();
                    if deleted {
                        let names: Vec<_> = self
                            .objects
                            .get(&dkey)
                            .map(|o| o.keys().cloned().collect())
                            .unwrap_or_default();
                        for (ns, name) in names {
                            if let Some(o) = self
                                .objects
                                .get(&dkey)
                                .and_then(|o| o.get(&(ns.clone(), name.clone())))
                                .cloned()
                            {
                                let mut gone = (*o).clone();
                                let rv = self.next_rv();
                                gone["metadata"]["resourceVersion"] = json!(rv.to_string());
                                self.remove(&dkey, &ns, &name, Arc::new(gone));
                            }
                        }
                    } else {
                        self.types.push(def);
                    }
                }
            }
            ("", "namespaces") if deleted => {
                let ns = meta(obj, "name").unwrap_or_default();
                let mut victims = Vec::new();
                for (k, objs) in &self.objects {
                    victims.extend(
                        objs.keys()
                            .filter(|(n, _)| n == &ns)
                            .map(|(n, name)| (k.clone(), n.clone(), name.clone())),
                    );
                }
                for (k, n, name) in victims {
                    self.delete(&k, &n, &name);
                }
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

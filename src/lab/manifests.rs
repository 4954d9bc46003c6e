//! Loading user manifests (multi-document YAML, every `*.yaml`/`*.yml` in a
//! directory, in name order) into typed kube-dvr objects.
use std::path::Path;

use serde::Deserialize;

use kube::Resource;

use crate::api::kinds::for_each_kind;
use crate::api::{DvrKind, Objects, PerKind};

/// The kube-dvr objects of a set of manifests, per kind (also reached
/// through `Deref`: `manifests.routers`).
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub objects: PerKind<Objects>,
}

impl std::ops::Deref for Manifests {
    type Target = PerKind<Objects>;
    fn deref(&self) -> &PerKind<Objects> {
        &self.objects
    }
}

impl std::ops::DerefMut for Manifests {
    fn deref_mut(&mut self) -> &mut PerKind<Objects> {
        &mut self.objects
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}, document {doc}: {message}")]
    Parse {
        path: String,
        doc: usize,
        message: String,
    },
}

impl Manifests {
    /// Every YAML file of `dir` (or the single file `dir`), in name order.
    pub fn load(dir: &Path) -> Result<Manifests, ManifestError> {
        let read_err = |source| ManifestError::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        if dir.is_file() {
            files.push(dir.to_path_buf());
        } else {
            for e in std::fs::read_dir(dir).map_err(read_err)? {
                let p = e.map_err(read_err)?.path();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if matches!(ext, "yaml" | "yml") && p.file_name() != Some("topology.yaml".as_ref())
                {
                    files.push(p);
                }
            }
        }
        files.sort();
        let mut m = Manifests::default();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| ManifestError::Read {
                path: f.display().to_string(),
                source,
            })?;
            m.add_yaml(&f.display().to_string(), &text)?;
        }
        Ok(m)
    }

    /// Add the objects of one multi-document YAML text.
    pub fn add_yaml(&mut self, path: &str, text: &str) -> Result<(), ManifestError> {
        for (doc, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let perr = |message: String| ManifestError::Parse {
                path: path.into(),
                doc: doc + 1,
                message,
            };
            let value = serde_yaml::Value::deserialize(de).map_err(|e| perr(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string();
            let api_version = value
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .unwrap_or("");
            if api_version != crate::api::API_VERSION {
                return Err(perr(format!(
                    "apiVersion {api_version:?} is not {}",
                    crate::api::API_VERSION
                )));
            }
            fn typed<T: serde::de::DeserializeOwned>(v: serde_yaml::Value) -> Result<T, String> {
                serde_yaml::from_value(v).map_err(|e| e.to_string())
            }
            let mut known = false;
            for_each_kind!(|K| {
                if kind == K::KIND.as_str() {
                    let mut o: K = typed(value.clone()).map_err(perr)?;
                    if K::KIND.namespaced() {
                        default_namespace(o.meta_mut());
                    }
                    K::of_mut(&mut self.objects).push(o);
                    known = true;
                }
            });
            if !known {
                return Err(perr(format!("unknown kind {kind:?}")));
            }
        }
        Ok(())
    }
}

fn default_namespace(meta: &mut kube::api::ObjectMeta) {
    if meta.namespace.is_none() {
        meta.namespace = Some("default".into());
    }
}

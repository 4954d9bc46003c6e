//! Persistence of the allocation cursors ([`Cursors`]): ConfigMap
//! [`cluster::ALLOCATOR_CONFIGMAP`] in the controller's namespace, data
//! `routerIndex` and `vni`. Router indexes and VNIs are allocated next-fit
//! from these cursors so that a deleted router's values are the last to be
//! reused (see `plan::resolve::held`); persisting them keeps that true
//! across controller restarts and leader changes. The controller writes the
//! cursors before the statuses of a pass: a crash in between skips values,
//! never reuses one.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::cluster;
use crate::plan::resolve::Cursors;

const ROUTER_INDEX: &str = "routerIndex";
const VNI: &str = "vni";

/// The cursors a ConfigMap holds (None without the ConfigMap, or when it
/// does not hold both numbers).
pub fn read(cm: Option<&ConfigMap>) -> Option<Cursors> {
    let data = cm?.data.as_ref()?;
    Some(Cursors {
        router_index: data.get(ROUTER_INDEX)?.parse().ok()?,
        vni: data.get(VNI)?.parse().ok()?,
    })
}

fn data(c: Cursors) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ROUTER_INDEX.to_string(), c.router_index.to_string()),
        (VNI.to_string(), c.vni.to_string()),
    ])
}

/// Write `c`: a merge patch of the ConfigMap, created when missing.
/// Returns the ConfigMap's new resourceVersion.
pub async fn write(
    client: &Client,
    namespace: &str,
    c: Cursors,
) -> Result<Option<String>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "data": data(c) });
    match api
        .patch(
            cluster::ALLOCATOR_CONFIGMAP,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(cluster::ALLOCATOR_CONFIGMAP.into()),
                    ..Default::default()
                },
                data: Some(data(c)),
                ..Default::default()
            };
            let made = api.create(&PostParams::default(), &cm).await;
            made.map(|cm| cm.metadata.resource_version)
        }
        r => r.map(|cm| cm.metadata.resource_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_configmap_data() {
        let c = Cursors {
            router_index: 12,
            vni: 4200,
        };
        let cm = ConfigMap {
            data: Some(data(c)),
            ..Default::default()
        };
        assert_eq!(read(Some(&cm)), Some(c));
        assert_eq!(read(None), None);
        assert_eq!(read(Some(&ConfigMap::default())), None);
    }
}

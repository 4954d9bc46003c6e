//! `kube-dvr uninstall`: have every agent remove its kernel state before the
//! chart is deleted (Helm's pre-delete hook runs it).
//!
//! 1. Create the ConfigMap [`cluster::UNINSTALL_CONFIGMAP`] in the release
//!    namespace. Agents watch it: when it exists they remove everything they
//!    own on their node, annotate the Node `kubedvr.io/cleaned=true`, drop
//!    `kubedvr.io/programmed`, and stop reconciling.
//! 2. Wait until every Node that carries `kubedvr.io/vtep` (every node an
//!    agent ever ran on) is cleaned — or its agent is down (heartbeat Lease
//!    missing, or not seen renewed for its lease duration by this process:
//!    [`LeaseClock`](crate::controller::liveness::LeaseClock)):
//!    nobody is left there to clean, waiting would only time out.
//! 3. Delete the ConfigMap and return.
//!
//! On timeout the error names the nodes still pending, and the ConfigMap is
//! left in place, so agents that come back still clean up; delete it to
//! cancel the uninstall.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::cluster::{self, CLEANED_ANNOTATION, UNINSTALL_CONFIGMAP, VTEP_ANNOTATION};
use crate::controller::liveness::LeaseClock;

/// Errors of `kube-dvr uninstall`.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("{op}: {source}")]
    Api {
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "timed out after {timeout:?} waiting for the agents on {} to clean up (the ConfigMap {namespace}/{UNINSTALL_CONFIGMAP} is left in place so they still do when they come back; delete it to cancel)",
        nodes.join(", ")
    )]
    Timeout {
        timeout: Duration,
        namespace: String,
        nodes: Vec<String>,
    },
}

impl UninstallError {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UninstallError::Api { .. } => "api",
            UninstallError::Timeout { .. } => "timeout",
        }
    }
}

#[derive(Clone, Debug)]
pub struct UninstallOptions {
    /// The release namespace (agents' Leases, the ConfigMap).
    pub namespace: String,
    pub timeout: Duration,
    /// How often to look at the Nodes.
    pub poll: Duration,
}

impl UninstallOptions {
    pub fn new(namespace: impl Into<String>, timeout: Duration) -> Self {
        UninstallOptions {
            namespace: namespace.into(),
            timeout,
            poll: Duration::from_secs(1),
        }
    }
}

/// Agent nodes that are neither cleaned nor down (pure).
pub fn pending_nodes(nodes: &[Node], agents: &BTreeMap<String, bool>) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| cluster::annotation(&n.metadata, VTEP_ANNOTATION).is_some())
        .filter(|n| cluster::annotation(&n.metadata, CLEANED_ANNOTATION) != Some("true"))
        .filter_map(|n| n.metadata.name.clone())
        // A node without a live heartbeat has nobody to clean it.
        .filter(|name| agents.get(name) == Some(&true))
        .collect()
}

/// Run the uninstall: signal, wait, clean up the signal.
pub async fn run(client: Client, opts: &UninstallOptions) -> Result<(), UninstallError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &opts.namespace);
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &opts.namespace);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(UNINSTALL_CONFIGMAP.into()),
            namespace: Some(opts.namespace.clone()),
            ..Default::default()
        },
        data: Some([("reason".to_string(), "kube-dvr uninstall".to_string())].into()),
        ..Default::default()
    };
    match cms.create(&PostParams::default(), &cm).await {
        Ok(_) => {
            tracing::info!(namespace = %opts.namespace, "created {UNINSTALL_CONFIGMAP}: agents clean up")
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::info!("{UNINSTALL_CONFIGMAP} exists already")
        }
        Err(source) => {
            return Err(UninstallError::Api {
                op: "create the uninstall ConfigMap",
                source,
            })
        }
    }
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut last: Vec<String> = Vec::new();
    let mut clock = LeaseClock::default();
    loop {
        match pending(&nodes, &leases, &mut clock).await {
            Ok(p) if p.is_empty() => break,
            Ok(p) => {
                if p != last {
                    tracing::info!(nodes = %p.join(", "), "waiting for agents to clean up");
                }
                last = p;
            }
            // Transient API errors: keep trying until the deadline.
            Err(e) => tracing::warn!(error = %e, "listing nodes or leases"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(UninstallError::Timeout {
                timeout: opts.timeout,
                namespace: opts.namespace.clone(),
                nodes: last,
            });
        }
        tokio::time::sleep(opts.poll).await;
    }
    match cms
        .delete(UNINSTALL_CONFIGMAP, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            return Err(UninstallError::Api {
                op: "delete the uninstall ConfigMap",
                source,
            })
        }
    }
    tracing::info!("every agent node is clean");
    Ok(())
}

async fn pending(
    nodes: &Api<Node>,
    leases: &Api<Lease>,
    clock: &mut LeaseClock,
) -> Result<Vec<String>, UninstallError> {
    let nodes = nodes
        .list(&ListParams::default())
        .await
        .map_err(|source| UninstallError::Api {
            op: "list nodes",
            source,
        })?;
    let leases = leases
        .list(&ListParams::default())
        .await
        .map_err(|source| UninstallError::Api {
            op: "list leases",
            source,
        })?;
    let agents = clock.observe(&leases.items, std::time::Instant::now());
    Ok(pending_nodes(&nodes.items, &agents))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_node(name: &str, ann: &[(&str, &str)]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.annotations = Some(
            ann.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    #[test]
    fn pending_are_live_agent_nodes_not_yet_cleaned() {
        let nodes = [
            mk_node(
                "clean",
                &[
                    (VTEP_ANNOTATION, "198.18.0.1"),
                    (CLEANED_ANNOTATION, "true"),
                ],
            ),
            mk_node("dirty", &[(VTEP_ANNOTATION, "198.18.0.2")]),
            mk_node("dead", &[(VTEP_ANNOTATION, "198.18.0.3")]),
            mk_node("no-lease", &[(VTEP_ANNOTATION, "198.18.0.4")]),
            mk_node("no-agent", &[]),
        ];
        let agents: BTreeMap<String, bool> = [
            ("clean", true),
            ("dirty", true),
            ("dead", false),
            ("no-agent", true),
        ]
        .iter()
        .map(|(n, a)| (n.to_string(), *a))
        .collect();
        assert_eq!(pending_nodes(&nodes, &agents), ["dirty"]);
    }
}

//! On a real kube-apiserver the lab runs the controller and every agent
//! with the identities the Helm chart gives them, not as admin: the chart's
//! RBAC objects (and any ValidatingAdmissionPolicy it ships), rendered by
//! `helm template`, are applied as they are, and each component gets a
//! bound token of its ServiceAccount — an agent's bound to its Node, so it
//! carries `authentication.kubernetes.io/node-name` as a DaemonSet pod's
//! token does. A lab that converges then shows that everything the
//! components do is allowed.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use kube::Client;

use super::apiserver::{tools_dir, ApiServer, ApiServerError};

/// The kinds taken from the rendered chart: who may do what.
pub const IDENTITY_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// `charts/kube-dvr`, next to the current directory or in the source tree
/// this binary was built from.
pub fn chart_dir() -> PathBuf {
    let here = Path::new("charts/kube-dvr");
    if here.join("Chart.yaml").exists() {
        return here.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/kube-dvr")
}

/// `helm template <release> charts/kube-dvr --namespace <namespace> [extra]`
/// as JSON documents (hooks included; their annotations tell them apart).
pub fn render_chart(
    release: &str,
    namespace: &str,
    extra: &[&str],
) -> Result<Vec<serde_json::Value>, ApiServerError> {
    let helm = tools_dir().join("helm");
    let out = Command::new(&helm)
        .args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(extra)
        .output()
        .map_err(|e| {
            ApiServerError::Failed(format!(
                "run {} (scripts/install-tools.sh installs it): {e}",
                helm.display()
            ))
        })?;
    if !out.status.success() {
        return Err(ApiServerError::Failed(format!(
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(d)
            .map_err(|e| ApiServerError::Failed(format!("helm template output: {e}")))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Whether a rendered object is a Helm hook (created only around install,
/// upgrade or delete).
pub fn is_hook(doc: &serde_json::Value) -> bool {
    doc["metadata"]["annotations"]["helm.sh/hook"].is_string()
}

/// Server-side apply of `docs` as they are (field manager `manager`).
pub async fn apply(
    client: &Client,
    docs: &[serde_json::Value],
    manager: &str,
) -> Result<(), ApiServerError> {
    for doc in docs {
        let (group, version) = match doc["apiVersion"].as_str().unwrap_or("").split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                doc["apiVersion"].as_str().unwrap_or("").into(),
            ),
        };
        let kind = doc["kind"].as_str().unwrap_or("");
        let name = doc["metadata"]["name"].as_str().unwrap_or("");
        let gvk = GroupVersionKind::gvk(&group, &version, kind);
        let (ar, caps) =
            pinned_kind(client, &gvk)
                .await
                .map_err(|source| ApiServerError::Kube {
                    op: format!("discover {kind}"),
                    source,
                })?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().unwrap_or("default"),
                &ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(doc),
        )
        .await
        .map_err(|source| ApiServerError::Kube {
            op: format!("apply {kind} {name}"),
            source,
        })?;
    }
    Ok(())
}

/// The service account the chart gives `component` (`controller`,
/// `agent`).
pub fn service_account(docs: &[serde_json::Value], component: &str) -> Option<String> {
    docs.iter()
        .find(|d| {
            d["kind"] == "ServiceAccount"
                && !is_hook(d)
                && d["metadata"]["labels"]["app.kubernetes.io/component"] == component
        })
        .and_then(|d| d["metadata"]["name"].as_str().map(String::from))
}

/// Bound tokens with the chart's identities for the controller and each
/// node's agent (for their kubeconfigs: [`ApiServer::write_kubeconfig`]).
pub struct Identities {
    pub controller: String,
    pub agents: BTreeMap<String, String>,
}

/// Apply the chart's identity objects for release `kube-dvr` in
/// `namespace` and hand out tokens for the controller and the agents of
/// `nodes` (which must exist: agents' tokens are bound to them).
pub async fn chart_identities(
    server: &ApiServer,
    admin: &Client,
    namespace: &str,
    nodes: &[String],
) -> Result<Identities, ApiServerError> {
    let docs: Vec<_> = render_chart("kube-dvr", namespace, &[])?
        .into_iter()
        .filter(|d| !is_hook(d) && IDENTITY_KINDS.contains(&d["kind"].as_str().unwrap_or("")))
        .collect();
    apply(admin, &docs, "kube-dvr-lab").await?;
    let sa = |c: &str| {
        service_account(&docs, c).ok_or_else(|| {
            ApiServerError::Failed(format!("the chart renders no {c} ServiceAccount"))
        })
    };
    let (controller_sa, agent_sa) = (sa("controller")?, sa("agent")?);
    let controller = server
        .service_account_token(namespace, &controller_sa, None)
        .await?;
    let mut agents = BTreeMap::new();
    for n in nodes {
        let token = server
            .service_account_token(namespace, &agent_sa, Some(n))
            .await?;
        agents.insert(n.clone(), token);
    }
    Ok(Identities { controller, agents })
}

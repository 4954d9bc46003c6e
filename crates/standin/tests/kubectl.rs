//! The real `kubectl` against a real `StandIn`: CRDs with printer columns,
//! short names, apply, status patches, describe, delete, nodes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Context, Result};
use kube_standin::StandIn;
use tokio::process::Command;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.standin.io
spec:
  group: test.standin.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
    additionalPrinterColumns:
    - {name: Address, type: string, jsonPath: .spec.address}
    - {name: Subnets, type: string, jsonPath: ".spec.subnets[*].name"}
    - {name: Ready, type: string, jsonPath: ".status.conditions[?(@.type==\"Ready\")].status"}
"#;

const WIDGET: &str = r#"
apiVersion: test.standin.io/v1
kind: Widget
metadata: {name: w1, labels: {app: demo}}
spec:
  address: 203.0.113.7
  subnets: [{name: a}, {name: b}]
"#;

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {node-role.kubernetes.io/gateway: ""}}
status:
  conditions: [{type: Ready, status: "True"}]
  nodeInfo: {kubeletVersion: v1.32.0}
"#;

struct Kubectl {
    dir: PathBuf,
}

impl Kubectl {
    fn new(s: &StandIn) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "standin-kubectl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        s.write_kubeconfig(&dir.join("kubeconfig"))?;
        Ok(Kubectl { dir })
    }

    fn file(&self, name: &str, text: &str) -> Result<String> {
        let p = self.dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p.display().to_string())
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .output()
            .await
            .context("running kubectl")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs kubectl and requires success; returns stdout.
    async fn ok(&self, args: &[&str]) -> Result<String> {
        let (ok, out, err) = self.run(args).await?;
        ensure!(ok, "kubectl {args:?} failed: {err}{out}");
        Ok(out)
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have_kubectl() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn yaml(text: &str) -> Result<serde_json::Value> {
    Ok(serde_yaml::from_str(text)?)
}

#[tokio::test]
async fn kubectl_crd_lifecycle_with_printer_columns() -> Result<()> {
    if !have_kubectl() {
        eprintln!("skipping: kubectl not installed");
        return Ok(());
    }
    let s = StandIn::start(0).await?;
    let k = Kubectl::new(&s)?;
    let crd = k.file("crd.yaml", CRD)?;
    assert!(k.ok(&["apply", "-f", &crd]).await?.contains("created"));
    let widget = k.file("w.yaml", WIDGET)?;
    assert!(k
        .ok(&["apply", "-f", &widget])
        .await?
        .contains("widget.test.standin.io/w1 created"));
    k.ok(&[
        "patch",
        "wg",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ])
    .await?;

    // Server-side printing: Name and the CRD's printer columns, by short name
    // (declared columns replace the default Age, as in kube-apiserver).
    let table = k.ok(&["get", "wg"]).await?;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        vec!["NAME", "ADDRESS", "SUBNETS", "READY"],
        "{table}"
    );
    assert_eq!(
        lines[1][..4],
        ["w1", "203.0.113.7", "a,b", "True"],
        "{table}"
    );

    let obj = yaml(&k.ok(&["get", "widget", "w1", "-o", "yaml"]).await?)?;
    assert_eq!(obj["spec"]["address"], "203.0.113.7");
    assert_eq!(obj["metadata"]["generation"], 1);
    assert_eq!(obj["status"]["conditions"][0]["status"], "True");

    // Re-applying a changed spec: a patch, generation moves, status stays.
    let changed = k.file("w2.yaml", &WIDGET.replace("203.0.113.7", "203.0.113.8"))?;
    assert!(k
        .ok(&["apply", "-f", &changed])
        .await?
        .contains("configured"));
    let obj = yaml(&k.ok(&["get", "wg", "w1", "-o", "yaml"]).await?)?;
    assert_eq!(
        (
            obj["spec"]["address"].as_str(),
            obj["metadata"]["generation"].as_i64()
        ),
        (Some("203.0.113.8"), Some(2))
    );
    assert_eq!(obj["status"]["conditions"][0]["type"], "Ready");
    assert!(k
        .ok(&["apply", "-f", &changed])
        .await?
        .contains("unchanged"));

    let described = k.ok(&["describe", "wg", "w1"]).await?;
    assert!(
        described.contains("203.0.113.8") && described.contains("Kind:         Widget"),
        "{described}"
    );

    // Labels and selectors.
    k.ok(&["label", "wg", "w1", "tier=edge"]).await?;
    assert!(k
        .ok(&["get", "wg", "-l", "tier=edge", "-o", "name"])
        .await?
        .contains("widget.test.standin.io/w1"));
    assert!(k
        .ok(&["get", "wg", "-l", "tier!=edge", "-o", "name"])
        .await?
        .trim()
        .is_empty());

    assert!(k.ok(&["delete", "wg", "w1"]).await?.contains("deleted"));
    let (_, out, err) = k.run(&["get", "wg"]).await?;
    assert!(
        out.is_empty() && err.contains("No resources found"),
        "{out}{err}"
    );

    // Deleting the CRD removes the kind.
    k.ok(&["delete", "-f", &crd]).await?;
    let (ok, _, err) = k.run(&["get", "widgets.test.standin.io"]).await?;
    assert!(!ok && err.contains("doesn't have a resource type"), "{err}");
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_nodes_namespaces_and_raw() -> Result<()> {
    if !have_kubectl() {
        eprintln!("skipping: kubectl not installed");
        return Ok(());
    }
    let s = StandIn::start(0).await?;
    let k = Kubectl::new(&s)?;
    let ns = k.ok(&["get", "namespaces", "-o", "name"]).await?;
    assert!(
        ns.contains("namespace/default") && ns.contains("namespace/kube-system"),
        "{ns}"
    );
    let node = k.file("node.yaml", NODE)?;
    k.ok(&["apply", "-f", &node]).await?;
    let nodes = k.ok(&["get", "nodes"]).await?;
    let row: Vec<&str> = nodes
        .lines()
        .nth(1)
        .context("a node row")?
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["n1", "Ready", "gateway"], "{nodes}");
    let version = k.ok(&["get", "--raw", "/version"]).await?;
    assert!(version.contains("standin"));
    // Generator commands send protobuf bodies.
    k.ok(&["create", "namespace", "t1"]).await?;
    k.ok(&["create", "configmap", "c", "-n", "t1", "--from-literal=a=b"])
        .await?;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "t1",
        "--from-literal=p=hunter2",
    ])
    .await?;
    let cm = yaml(
        &k.ok(&["get", "configmap", "c", "-n", "t1", "-o", "yaml"])
            .await?,
    )?;
    assert_eq!(cm["data"]["a"], "b");
    let secret = yaml(
        &k.ok(&["get", "secret", "s", "-n", "t1", "-o", "yaml"])
            .await?,
    )?;
    assert_eq!(
        (secret["data"]["p"].as_str(), secret["type"].as_str()),
        (Some("aHVudGVyMg=="), Some("Opaque"))
    );
    // Deleting the namespace deletes its contents.
    k.ok(&["delete", "namespace", "t1"]).await?;
    let (_, out, err) = k.run(&["get", "configmaps", "-A"]).await?;
    assert!(
        out.is_empty() && err.contains("No resources found"),
        "{out}{err}"
    );
    assert!(s.write_count() >= 5);
    s.shutdown().await;
    Ok(())
}

/// A CRD with a real schema: kubectl's errors then carry its messages.
const STRICT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gates.test.standin.io
spec:
  group: test.standin.io
  scope: Namespaced
  names: {plural: gates, singular: gate, kind: Gate}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [address]
            properties:
              address:
                type: string
                format: ipv4
                x-kubernetes-validations:
                - {rule: self == oldSelf, message: address is immutable}
              port: {type: integer, maximum: 65535}
"#;

#[tokio::test]
async fn kubectl_sees_the_api_servers_refusals() -> Result<()> {
    if !have_kubectl() {
        eprintln!("skipping: kubectl not installed");
        return Ok(());
    }
    let s = StandIn::start(0).await?;
    let k = Kubectl::new(&s)?;
    k.ok(&["apply", "-f", &k.file("crd.yaml", STRICT_CRD)?])
        .await?;
    let gate = |addr: &str, extra: &str| {
        format!("apiVersion: test.standin.io/v1\nkind: Gate\nmetadata: {{name: g1}}\nspec: {{address: {addr}{extra}}}\n")
    };
    // Schema errors, with the field path, as kube-apiserver words them.
    let (ok, _, err) = k
        .run(&[
            "apply",
            "-f",
            &k.file("bad.yaml", &gate("10.0.0.256", ", port: 70000"))?,
        ])
        .await?;
    assert!(!ok, "{err}");
    assert!(
        err.contains("The Gate \"g1\" is invalid")
            && err.contains("spec.address in body must be of type ipv4")
            && err.contains("spec.port in body should be less than or equal to 65535"),
        "{err}"
    );
    // kubectl validates strictly: a typo is an error, not silently dropped.
    let (ok, _, err) = k
        .run(&[
            "apply",
            "-f",
            &k.file("typo.yaml", &gate("10.0.0.1", ", prot: 80"))?,
        ])
        .await?;
    assert!(!ok && err.contains("unknown field \"spec.prot\""), "{err}");
    // The CRD's own CEL message on a transition.
    k.ok(&["apply", "-f", &k.file("g.yaml", &gate("10.0.0.1", ""))?])
        .await?;
    let (ok, _, err) = k
        .run(&["apply", "-f", &k.file("g2.yaml", &gate("10.0.0.2", ""))?])
        .await?;
    assert!(!ok && err.contains("address is immutable"), "{err}");
    // Strategic merge patch (kubectl patch's default) is not for custom resources.
    let (ok, _, err) = k
        .run(&["patch", "gate", "g1", "-p", r#"{"spec":{"port":80}}"#])
        .await?;
    assert!(
        !ok && err.contains("application/strategic-merge-patch+json"),
        "{err}"
    );
    k.ok(&[
        "patch",
        "gate",
        "g1",
        "--type=merge",
        "-p",
        r#"{"spec":{"port":80}}"#,
    ])
    .await?;
    // Names.
    let (ok, _, err) = k.run(&["create", "namespace", "Tenant_A"]).await?;
    assert!(!ok && err.contains("a lowercase RFC 1123 label"), "{err}");

    // A namespace with a held object stays Terminating; nothing new goes in.
    k.ok(&["create", "namespace", "t1"]).await?;
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: t1, finalizers: [test.standin.io/hold]}\n";
    k.ok(&["apply", "-f", &k.file("held.yaml", held)?]).await?;
    k.ok(&["delete", "namespace", "t1", "--wait=false"]).await?;
    let phase = k
        .ok(&["get", "namespace", "t1", "-o", "jsonpath={.status.phase}"])
        .await?;
    assert_eq!(phase, "Terminating");
    let (ok, _, err) = k.run(&["create", "configmap", "late", "-n", "t1"]).await?;
    assert!(
        !ok && err.contains("because it is being terminated"),
        "{err}"
    );
    k.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "t1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await?;
    k.ok(&["wait", "--for=delete", "namespace/t1", "--timeout=10s"])
        .await?;
    s.shutdown().await;
    Ok(())
}

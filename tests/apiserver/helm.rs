//! `helm install`, `helm upgrade` and `helm uninstall` of the chart against
//! kube-apiserver. There is no kubelet: the DaemonSet and the Deployment
//! are accepted but never run a pod, and the pre-delete hook's Job is
//! created but nothing would run it. The test plays the kubelet and the job
//! controller for that one Job: it runs the Job's command (`kube-dvr
//! uninstall`, this build) with a token of the Job's own ServiceAccount —
//! so the hook's RBAC is exercised too — and then records the Job complete,
//! which is what `helm uninstall` waits for.
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::common::{block_on, eventually, helm, kubectl_ok, namespace, shared, text};

const NS: &str = "helm";
const RELEASE: &str = "kdvr";

/// Every object of the release still in the cluster, as `kind/name`.
fn release_objects() -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let kinds =
        "daemonsets,deployments,services,serviceaccounts,configmaps,jobs,roles,rolebindings,\
                 poddisruptionbudgets,clusterroles,clusterrolebindings,\
                 validatingadmissionpolicies,validatingadmissionpolicybindings";
    let out = kubectl_ok(
        &["get", kinds, "-n", NS, "-l", &selector, "-o", "name"],
        None,
    );
    out.lines().map(String::from).collect()
}

#[test]
fn helm_install_upgrade_and_uninstall() {
    let s = shared();
    namespace(NS);
    let chart = kube_dvr::lab::identities::chart_dir();
    let chart = chart.to_str().unwrap();

    let out = helm(&["install", RELEASE, chart, "--namespace", NS]);
    assert!(out.status.success(), "helm install: {}", text(&out));
    let objects = release_objects();
    for want in [
        format!("daemonset.apps/{RELEASE}-kube-dvr-agent"),
        format!("deployment.apps/{RELEASE}-kube-dvr-controller"),
        format!("clusterrole.rbac.authorization.k8s.io/{RELEASE}-kube-dvr-agent"),
    ] {
        assert!(objects.contains(&want), "{want} not in {objects:#?}");
    }
    // Nothing runs the pods: no kubelet, no scheduler.
    let ds = kubectl_ok(
        &[
            "get",
            "daemonset",
            "-n",
            NS,
            &format!("{RELEASE}-kube-dvr-agent"),
            "-o",
            "jsonpath={.status.numberReady}",
        ],
        None,
    );
    assert!(matches!(ds.as_str(), "" | "0"), "{ds}");

    let out = helm(&[
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        NS,
        "--set",
        "controller.replicas=2",
    ]);
    assert!(out.status.success(), "helm upgrade: {}", text(&out));
    let replicas = kubectl_ok(
        &[
            "get",
            "deployment",
            "-n",
            NS,
            &format!("{RELEASE}-kube-dvr-controller"),
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(replicas, "2");

    // helm uninstall runs the pre-delete hook and waits for its Job.
    let mut uninstall = Command::new(kube_dvr::lab::apiserver::tools_dir().join("helm"));
    uninstall
        .env("KUBECONFIG", &s.server.kubeconfig)
        .env("HELM_CACHE_HOME", s.server.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", s.server.dir().join("helm/config"))
        .env("HELM_DATA_HOME", s.server.dir().join("helm/data"))
        .args(["uninstall", RELEASE, "--namespace", NS, "--timeout", "120s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let helm_uninstall = uninstall.spawn().unwrap();
    let name = format!("{RELEASE}-kube-dvr-uninstall");
    let jobs: Api<Job> = Api::namespaced(s.client.clone(), NS);
    let job = eventually(Duration::from_secs(60), || {
        block_on(jobs.get_opt(&name)).unwrap()
    })
    .expect("the pre-delete hook creates its Job");
    let spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let sa = spec.service_account_name.clone().unwrap();
    let args = spec.containers[0].args.clone().unwrap();
    assert_eq!(args[0], "uninstall", "{args:?}");

    // The kubelet's part: run the container's command as the Job's identity.
    let token = block_on(s.server.service_account_token(NS, &sa, None)).unwrap();
    let kubeconfig = s.server.dir().join("uninstall-hook.kubeconfig");
    s.server.write_kubeconfig(&kubeconfig, &token).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_kube-dvr"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .output()
        .unwrap();
    assert!(run.status.success(), "kube-dvr {args:?}: {}", text(&run));
    // The job controller's part: the Job succeeded.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "startTime": now, "completionTime": now, "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        ]
    }});
    block_on(jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)))
        .unwrap_or_else(|e| panic!("record the Job complete: {e}"));

    let out = helm_uninstall.wait_with_output().unwrap();
    assert!(out.status.success(), "helm uninstall: {}", text(&out));
    // Nothing of the release is left (the hook's objects go with
    // hook-succeeded; the uninstall ConfigMap is removed by the command).
    assert_eq!(release_objects(), Vec::<String>::new());
    let cms = kubectl_ok(&["get", "configmaps", "-n", NS, "-o", "name"], None);
    assert!(!cms.contains("kube-dvr-uninstall"), "{cms}");
}

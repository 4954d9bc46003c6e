//! The lab's container runtime and Multus: the only way a workload is
//! attached. For each network of a workload it reads the
//! NetworkAttachmentDefinition the controller made from the API (as Multus
//! does), adds the workload's static address and MAC as `runtimeConfig`
//! (Multus' `ips` / `mac` capabilities) when the topology gives one, and
//! runs kube-dvr's CNI plugin in the node's network namespace with the CNI
//! environment and the config on stdin, exactly as Multus delegates. Then,
//! for the workload's first network, it sets the default route through the
//! result's gateway (Multus' `default-route`).
//!
//! The plugin is the `kube-dvr` binary itself (run with `CNI_COMMAND` and
//! no arguments it is the plugin). The one thing a real node does
//! differently: each node has its own `/run`, the lab's nodes share one
//! file system, so the runtime names each node's agent socket in
//! `KUBE_DVR_CNI_SOCKET`.
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::infra::{ip_batch, LabPaths};
use super::topology::{WorkloadNetwork, WorkloadSpec};
use crate::plan::model::MacAddr;

/// One plugin invocation: which workload interface.
#[derive(Debug, Clone)]
pub struct Attach<'a> {
    pub workload: &'a WorkloadSpec,
    /// The interface's index: `eth<m>` in the workload.
    pub m: usize,
    pub net: &'a WorkloadNetwork,
    /// The NAD's `spec.config`.
    pub config: String,
    /// The pod's UID (Multus passes it as `K8S_POD_UID`), if known.
    pub pod_uid: Option<String>,
}

/// The plugin binary: `KUBE_DVR_CNI_PLUGIN`, else this process when it is
/// `kube-dvr`, else `kube-dvr` beside it or one directory up (a test or
/// bench binary in `target/*/deps`).
pub fn plugin_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KUBE_DVR_CNI_PLUGIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    if exe.file_name().is_some_and(|n| n == "kube-dvr") {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    for cand in [dir.join("kube-dvr"), dir.join("../kube-dvr")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(format!(
        "the kube-dvr binary (the CNI plugin) is not beside {}; set KUBE_DVR_CNI_PLUGIN",
        exe.display()
    ))
}

/// The container ID the lab's runtime gives workload `name`'s sandbox.
pub fn container_id(workload: &str) -> String {
    format!("lab-{workload}")
}

/// What the lab's Multus hands the plugin: the NAD's config, with the
/// static address and MAC as runtime config.
pub fn delegate_config(a: &Attach<'_>) -> Result<serde_json::Value, String> {
    let mut conf: serde_json::Value = serde_json::from_str(&a.config)
        .map_err(|e| format!("NAD config of {}: {e}", a.net.network))?;
    let mut rc = serde_json::Map::new();
    if let Some(ip) = a.net.ip {
        rc.insert("ips".into(), serde_json::json!([ip.to_string()]));
    }
    if let Some(mac) = a.net.mac {
        rc.insert("mac".into(), serde_json::json!(mac.to_string()));
    }
    if !rc.is_empty() {
        conf["runtimeConfig"] = serde_json::Value::Object(rc);
    }
    Ok(conf)
}

/// Run the plugin's `command` (ADD or DEL) for `a` on its node; the
/// parsed result on ADD.
pub fn run_plugin(
    paths: &LabPaths,
    plugin: &Path,
    command: &str,
    a: &Attach<'_>,
) -> Result<Option<serde_json::Value>, String> {
    let w = a.workload;
    let conf = delegate_config(a)?;
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", paths.node(&w.node).display()))
        .arg(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id(&w.name))
        .env("CNI_NETNS", paths.workload(&w.name))
        .env("CNI_IFNAME", format!("eth{}", a.m))
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}{}",
                w.namespace,
                w.name,
                container_id(&w.name),
                a.pod_uid
                    .as_deref()
                    .map(|u| format!(";K8S_POD_UID={u}"))
                    .unwrap_or_default()
            ),
        )
        .env("CNI_PATH", plugin.parent().unwrap_or(Path::new("/")))
        .env("KUBE_DVR_CNI_SOCKET", paths.cni_socket(&w.node))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running the CNI plugin {}: {e}", plugin.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "CNI {command} of {}/{} eth{} on {}: {} {}",
            w.namespace,
            w.name,
            a.m,
            w.node,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&stdout)
        .map(Some)
        .map_err(|e| format!("CNI {command} result: {e}: {stdout}"))
}

/// The CNI error code in a failed [`run_plugin`]'s message (the error
/// object the plugin printed).
pub fn error_code(err: &str) -> Option<u64> {
    let start = err.find('{')?;
    let v: serde_json::Value = serde_json::Deserializer::from_str(&err[start..])
        .into_iter()
        .next()?
        .ok()?;
    v["code"].as_u64()
}

/// ADD as kubelet does it: on "try again later" (code 11) DEL, wait and
/// ADD again, up to `tries` times.
pub fn add_with_retries(
    paths: &LabPaths,
    plugin: &Path,
    a: &Attach<'_>,
    tries: usize,
) -> Result<Option<serde_json::Value>, String> {
    let mut last = String::new();
    for attempt in 0..tries.max(1) {
        match run_plugin(paths, plugin, "ADD", a) {
            Ok(r) => return Ok(r),
            Err(e) if error_code(&e) == Some(11) => {
                tracing::info!(attempt, error = %e, "CNI ADD: try again later");
                let _ = run_plugin(paths, plugin, "DEL", a);
                std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The gateway of the first address in a CNI result.
pub fn result_gateway(result: &serde_json::Value) -> Option<Ipv4Addr> {
    result["ips"][0]["gateway"].as_str()?.parse().ok()
}

/// The address (without prefix) of the first entry in a CNI result, and
/// the MAC of the interface it is on: what Multus reports in network-status.
pub fn result_address(result: &serde_json::Value) -> Option<(Ipv4Addr, MacAddr)> {
    let ip = &result["ips"][0];
    let addr = ip["address"].as_str()?.split('/').next()?.parse().ok()?;
    let iface = ip["interface"].as_u64()? as usize;
    let mac = result["interfaces"][iface]["mac"].as_str()?.parse().ok()?;
    Some((addr, mac))
}

/// Multus' `default-route`: the workload's default route through `gw`.
pub fn default_route(paths: &LabPaths, workload: &str, gw: Ipv4Addr) -> Result<(), String> {
    ip_batch(
        &paths.workload(workload),
        &format!("route replace default via {gw}\n"),
    )
    .map_err(|e| e.to_string())
}

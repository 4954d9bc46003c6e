//! CNI results: what VERSION and ADD print, and reading `prevResult` back
//! for CHECK. Shape as in the spec (and as the reference `bridge` plugin
//! prints it): `interfaces` lists the bridge, the host end and the pod end
//! (with `sandbox`), `ips[].interface` indexes the pod end.
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::agent::Route;
use crate::conf::{fmt_mac, parse_mac, SUPPORTED_VERSIONS};
use crate::error::{self, CniError, Result};
use crate::link::{Made, Want};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<ResultRoute>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// Spec 1.1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResultRoute {
    pub dst: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dns {}

/// VERSION: answered in the version the caller asked in (when this plugin
/// speaks it), else the newest.
pub fn version(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_string());
    serde_json::json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

/// ADD's result.
pub fn added(version: &str, netns: &Path, w: &Want, made: &Made, gateway: Ipv4Addr) -> String {
    let mtu = (version != "1.0.0").then_some(w.mtu);
    let r = CniResult {
        cni_version: version.to_string(),
        interfaces: vec![
            Interface {
                name: w.bridge.clone(),
                mac: fmt_mac(&made.bridge_mac),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: w.host.clone(),
                mac: fmt_mac(&made.host_mac),
                mtu,
                sandbox: None,
            },
            Interface {
                name: w.ifname.clone(),
                mac: fmt_mac(&w.mac),
                mtu,
                sandbox: Some(netns.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            address: Ipv4Net::new(w.ip, w.prefix).expect("prefix checked"),
            gateway: Some(gateway),
            interface: Some(2),
        }],
        routes: w
            .routes
            .iter()
            .map(|r| ResultRoute {
                dst: r.dst,
                gw: Some(r.gw),
            })
            .collect(),
        dns: Dns {},
    };
    serde_json::to_string(&r).expect("serializable")
}

/// CHECK: what ADD made, read back from `prevResult`.
pub fn expected(prev: &serde_json::Value, host: &str, ifname: &str) -> Result<Want> {
    let bad = |m: String| CniError::new(error::INVALID_CONFIG, format!("prevResult: {m}"));
    let r: CniResult = serde_json::from_value(prev.clone()).map_err(|e| bad(e.to_string()))?;
    let (idx, pod) = r
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| bad(format!("no interface {ifname} in a sandbox")))?;
    let mac = parse_mac(&pod.mac).ok_or_else(|| bad(format!("bad MAC {:?}", pod.mac)))?;
    let ip = r
        .ips
        .iter()
        .find(|i| i.interface == Some(idx))
        .ok_or_else(|| bad(format!("no address on {ifname}")))?;
    let bridge = r
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name != host)
        .ok_or_else(|| bad("no bridge interface".into()))?;
    if !r.interfaces.iter().any(|i| i.name == host) {
        return Err(bad(format!("no host interface {host}")));
    }
    Ok(Want {
        bridge: bridge.name.clone(),
        host: host.to_string(),
        ifname: ifname.to_string(),
        mac,
        ip: ip.address.addr(),
        prefix: ip.address.prefix_len(),
        mtu: pod.mtu.unwrap_or(0),
        routes: r
            .routes
            .iter()
            .filter_map(|rt| rt.gw.map(|gw| Route { dst: rt.dst, gw }))
            .collect(),
    })
}

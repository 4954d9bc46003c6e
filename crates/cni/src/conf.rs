//! What the runtime hands the plugin: the network configuration on stdin
//! (from the NetworkAttachmentDefinition, plus Multus' `runtimeConfig`) and
//! the `CNI_*` environment.
//!
//! ```json
//! {"cniVersion": "1.1.0", "name": "net-a1", "type": "kube-dvr",
//!  "router": "r1",            // or "<namespace>/r1"; bare = the pod's namespace
//!  "subnet": "a1",
//!  "defaultRoute": false,                 // optional: default route via the gateway
//!  "runtimeConfig": {"ips": ["10.1.0.5/24"], "mac": "02:00:00:00:00:05"}}
//! ```
//! Users never name VNIs or bridges: the node agent maps router and subnet
//! to them. The config is tenant input (a NAD): it cannot name the agent's
//! socket (the plugin, root on the node, would trust whatever answers
//! there); only the runtime's environment can.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{self, CniError, Result};

/// Spec versions this plugin speaks. 0.x is left out on purpose: its result
/// format differs (`ips[].version`), it has no STATUS/GC, and the NADs
/// kube-dvr writes say 1.x; every runtime and Multus release of the last
/// years speaks 1.0.0.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
pub const DEFAULT_SOCKET: &str = "/run/kube-dvr/cni.sock";
/// The environment variable (the runtime's) that names the agent's socket.
pub const SOCKET_ENV: &str = "KUBE_DVR_CNI_SOCKET";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub router: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub default_route: bool,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// Conventions' `args.cni` (static `ips`, `mac`), as the reference
    /// `static` plugin reads them.
    #[serde(default)]
    pub args: Option<ConfArgs>,
    #[serde(default)]
    pub prev_result: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Capability `ips`: addresses in CIDR notation.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Capability `mac`.
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfArgs {
    #[serde(default)]
    pub cni: RuntimeConfig,
}

impl NetConf {
    /// Parse stdin: undecodable → code 6, a version this plugin does not
    /// speak → code 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(error::DECODING, "cannot decode the network configuration")
                .details(e.to_string())
        })?;
        check_version(&conf.cni_version)?;
        Ok(conf)
    }

    /// The agent's socket: the runtime's `KUBE_DVR_CNI_SOCKET` (the lab's
    /// simulated nodes share one file system, so its runtime names each
    /// node's socket), else [`DEFAULT_SOCKET`]. Never the config's: a NAD
    /// is tenant input.
    pub fn socket(&self) -> PathBuf {
        std::env::var_os(SOCKET_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The router (namespace, name) and subnet this attachment names.
    /// A bare router name is in the pod's namespace.
    pub fn target(&self, pod_namespace: &str) -> Result<(String, String, String)> {
        let bad = |m: &str| CniError::new(error::INVALID_CONFIG, m.to_string());
        let router = self
            .router
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad("the network configuration names no \"router\""))?;
        let subnet = self
            .subnet
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("the network configuration names no \"subnet\""))?;
        let (ns, name) = match router.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                (ns, name)
            }
            Some(_) => {
                return Err(bad(
                    "\"router\" must be \"<name>\" or \"<namespace>/<name>\"",
                ))
            }
            None => (pod_namespace, router),
        };
        Ok((ns.to_string(), name.to_string(), subnet.to_string()))
    }

    /// The static address: `runtimeConfig.ips`, else `args.cni.ips`, else
    /// CNI_ARGS `IP=`. Exactly one IPv4 address; its prefix length, when
    /// given, is checked against the subnet later.
    pub fn static_ip(&self, cni_args: &CniArgs) -> Result<Option<(Ipv4Addr, Option<u8>)>> {
        let from_args = self.args.as_ref().map(|a| a.cni.ips.clone());
        let list: Vec<String> = if !self.runtime_config.ips.is_empty() {
            self.runtime_config.ips.clone()
        } else if let Some(ips) = from_args.filter(|v| !v.is_empty()) {
            ips
        } else if let Some(ip) = cni_args.get("IP") {
            ip.split(',').map(str::to_string).collect()
        } else {
            return Ok(None);
        };
        let [one] = list.as_slice() else {
            return Err(CniError::new(
                error::INVALID_CONFIG,
                format!(
                    "exactly one static IPv4 address is supported, got {}",
                    list.len()
                ),
            ));
        };
        let bad = || {
            CniError::new(
                error::INVALID_CONFIG,
                format!("static address {one:?} is not an IPv4 address (a.b.c.d or a.b.c.d/len)"),
            )
        };
        match one.trim().split_once('/') {
            Some((a, len)) => {
                let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
                let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
                Ok(Some((a, Some(len))))
            }
            None => Ok(Some((one.trim().parse().map_err(|_| bad())?, None))),
        }
    }

    /// The static MAC: `runtimeConfig.mac`, else `args.cni.mac`, else
    /// CNI_ARGS `MAC=`; it must be a unicast address.
    pub fn static_mac(&self, cni_args: &CniArgs) -> Result<Option<[u8; 6]>> {
        let s = self
            .runtime_config
            .mac
            .clone()
            .or_else(|| self.args.as_ref().and_then(|a| a.cni.mac.clone()))
            .or_else(|| cni_args.get("MAC").map(str::to_string));
        let Some(s) = s else { return Ok(None) };
        let mac = parse_mac(&s).ok_or_else(|| {
            CniError::new(error::INVALID_CONFIG, format!("{s:?} is not a MAC address"))
        })?;
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(CniError::new(
                error::INVALID_CONFIG,
                format!("{s} is not a unicast MAC address"),
            ));
        }
        Ok(Some(mac))
    }
}

pub fn check_version(v: &str) -> Result<()> {
    if SUPPORTED_VERSIONS.contains(&v) {
        return Ok(());
    }
    Err(CniError::new(
        error::INCOMPATIBLE_VERSION,
        format!("CNI version {v:?} is not supported"),
    )
    .details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))))
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

pub fn fmt_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// CNI_ARGS: `K=V;K=V` (the runtime's `K8S_POD_NAMESPACE`,
/// `K8S_POD_NAME`, `IgnoreUnknown`; static `IP=`, `MAC=`).
#[derive(Debug, Clone, Default)]
pub struct CniArgs(BTreeMap<String, String>);

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs> {
        let mut m = BTreeMap::new();
        for kv in s.split(';').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                CniError::new(
                    error::INVALID_ENV,
                    format!("CNI_ARGS: {kv:?} is not KEY=VALUE"),
                )
            })?;
            m.insert(k.to_string(), v.to_string());
        }
        Ok(CniArgs(m))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// The `CNI_*` environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: CniArgs,
}

impl Env {
    pub fn from_process() -> Result<Env> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS").map(PathBuf::from),
            ifname: var("CNI_IFNAME"),
            args: CniArgs::parse(&var("CNI_ARGS").unwrap_or_default())?,
        })
    }

    pub fn require<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str> {
        v.as_deref()
            .ok_or_else(|| CniError::new(error::INVALID_ENV, format!("{name} is not set")))
    }

    pub fn netns(&self) -> Result<&PathBuf> {
        self.netns
            .as_ref()
            .ok_or_else(|| CniError::new(error::INVALID_ENV, "CNI_NETNS is not set"))
    }

    /// The pod's namespace (the runtime sets it for every Kubernetes pod).
    pub fn pod_namespace(&self) -> Result<&str> {
        self.args.get("K8S_POD_NAMESPACE").ok_or_else(|| {
            CniError::new(
                error::INVALID_ENV,
                "CNI_ARGS has no K8S_POD_NAMESPACE: kube-dvr attaches Kubernetes pods only",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(s: &str) -> NetConf {
        NetConf::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn versions_and_decoding() {
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, error::DECODING);
        let e = NetConf::parse(br#"{"cniVersion":"0.4.0"}"#).unwrap_err();
        assert_eq!(e.code, error::INCOMPATIBLE_VERSION);
        conf(r#"{"cniVersion":"1.0.0"}"#);
    }

    #[test]
    fn router_in_pod_namespace_unless_qualified() {
        let c = conf(r#"{"cniVersion":"1.1.0","router":"r1","subnet":"a"}"#);
        assert_eq!(
            c.target("t").unwrap(),
            ("t".into(), "r1".into(), "a".into())
        );
        let c = conf(r#"{"cniVersion":"1.1.0","router":"x/r1","subnet":"a"}"#);
        assert_eq!(c.target("t").unwrap().0, "x");
        for bad in [
            r#"{"cniVersion":"1.1.0","subnet":"a"}"#,
            r#"{"cniVersion":"1.1.0","router":"r"}"#,
            r#"{"cniVersion":"1.1.0","router":"/r","subnet":"a"}"#,
            r#"{"cniVersion":"1.1.0","router":"a/b/c","subnet":"a"}"#,
        ] {
            assert_eq!(
                conf(bad).target("t").unwrap_err().code,
                error::INVALID_CONFIG
            );
        }
    }

    #[test]
    fn static_address_sources_in_order() {
        let args = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=t;IP=10.0.0.9").unwrap();
        let c = conf(r#"{"cniVersion":"1.1.0","runtimeConfig":{"ips":["10.0.0.5/24"]}}"#);
        assert_eq!(
            c.static_ip(&args).unwrap(),
            Some(("10.0.0.5".parse().unwrap(), Some(24)))
        );
        let c = conf(r#"{"cniVersion":"1.1.0","args":{"cni":{"ips":["10.0.0.6"]}}}"#);
        assert_eq!(
            c.static_ip(&args).unwrap(),
            Some(("10.0.0.6".parse().unwrap(), None))
        );
        let c = conf(r#"{"cniVersion":"1.1.0"}"#);
        assert_eq!(
            c.static_ip(&args).unwrap(),
            Some(("10.0.0.9".parse().unwrap(), None))
        );
        assert_eq!(c.static_ip(&CniArgs::default()).unwrap(), None);
        for bad in [
            r#"{"cniVersion":"1.1.0","runtimeConfig":{"ips":["10.0.0.5/24","10.0.0.6/24"]}}"#,
            r#"{"cniVersion":"1.1.0","runtimeConfig":{"ips":["fd00::1/64"]}}"#,
            r#"{"cniVersion":"1.1.0","runtimeConfig":{"ips":["10.0.0.5/33"]}}"#,
        ] {
            assert_eq!(
                conf(bad).static_ip(&args).unwrap_err().code,
                error::INVALID_CONFIG
            );
        }
    }

    #[test]
    fn static_mac() {
        let none = CniArgs::default();
        let c = conf(r#"{"cniVersion":"1.1.0","runtimeConfig":{"mac":"02:00:00:00:00:05"}}"#);
        assert_eq!(c.static_mac(&none).unwrap(), Some([2, 0, 0, 0, 0, 5]));
        let args = CniArgs::parse("MAC=02:aa:00:00:00:01").unwrap();
        let c = conf(r#"{"cniVersion":"1.1.0"}"#);
        assert_eq!(c.static_mac(&args).unwrap(), Some([2, 0xaa, 0, 0, 0, 1]));
        for bad in ["01:00:5e:00:00:01", "zz:00:00:00:00:01", "02:00:00:00:00"] {
            let c = conf(&format!(
                r#"{{"cniVersion":"1.1.0","runtimeConfig":{{"mac":"{bad}"}}}}"#
            ));
            assert_eq!(c.static_mac(&none).unwrap_err().code, error::INVALID_CONFIG);
        }
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=t;K8S_POD_NAME=p").unwrap();
        assert_eq!(a.get("K8S_POD_NAMESPACE"), Some("t"));
        assert_eq!(CniArgs::parse("junk").unwrap_err().code, error::INVALID_ENV);
    }
}

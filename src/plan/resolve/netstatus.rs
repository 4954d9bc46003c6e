//! The Multus `k8s.v1.cni.cncf.io/network-status` pod annotation.
use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{PodNetwork, ResolveError};

/// The pod annotation Multus writes after attaching a pod's networks.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One entry of the annotation (fields kube-dvr does not use are ignored).
#[derive(Deserialize)]
struct Entry {
    name: String,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    default: bool,
}

/// Parse the Multus network-status annotation of a pod in `pod_namespace`.
///
/// The cluster network (`default: true`) is skipped; names without a
/// namespace get the pod's. One [`PodNetwork`] per IPv4 address (IPv6
/// addresses are skipped: kube-dvr is IPv4 only). Entries without an IPv4
/// address or without a MAC (L2-only or not yet configured attachments) are
/// skipped, since kube-dvr cannot route to them. Malformed JSON, IPs or MACs
/// are errors.
pub fn parse_network_status(
    pod_namespace: &str,
    annotation: &str,
) -> Result<Vec<PodNetwork>, ResolveError> {
    let entries: Vec<Entry> =
        serde_json::from_str(annotation).map_err(|e| ResolveError::NetworkStatus {
            reason: e.to_string(),
        })?;
    let mut out = Vec::new();
    for e in entries.into_iter().filter(|e| !e.default) {
        let network = if e.name.contains('/') {
            e.name.clone()
        } else {
            format!("{pod_namespace}/{}", e.name)
        };
        let Some(mac) = e.mac.as_deref().filter(|m| !m.is_empty()) else {
            continue;
        };
        let mac = mac.parse().map_err(|_| ResolveError::NetworkStatus {
            reason: format!("network {network:?}: invalid MAC {mac:?}"),
        })?;
        for ip in &e.ips {
            // Some CNIs report addresses with a prefix length.
            let addr = ip.split('/').next().unwrap_or(ip);
            if addr.contains(':') {
                continue; // IPv6
            }
            let ip: Ipv4Addr = addr.parse().map_err(|_| ResolveError::NetworkStatus {
                reason: format!("network {network:?}: invalid IP {ip:?}"),
            })?;
            out.push(PodNetwork {
                network: network.clone(),
                interface: e.interface.clone(),
                ip,
                mac,
            });
        }
    }
    Ok(out)
}

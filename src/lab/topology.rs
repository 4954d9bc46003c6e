//! The lab's topology file: the physical world kube-dvr runs in (nodes, the
//! underlay, external segments and their hosts, workloads). What kube-dvr
//! should do in it comes from the manifests, as in a cluster.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::plan::model::MacAddr;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    /// The underlay subnet all VTEPs are on.
    pub underlay: Ipv4Net,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub external_segments: Vec<SegmentSpec>,
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub vtep: Ipv4Addr,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentSpec {
    pub name: String,
    pub cidr: Ipv4Net,
    /// The bridge every node has on this segment.
    pub node_bridge: String,
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    pub ip: Ipv4Addr,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub node: String,
    pub networks: Vec<WorkloadNetwork>,
    /// The pod's labels (LoadBalancer selectors match them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadNetwork {
    /// `namespace/nad-name`: the NetworkAttachmentDefinition the pod asks
    /// Multus for (the router subnet's `networkAttachment`).
    pub network: String,
    /// A static address with prefix length (Multus `ips`), e.g.
    /// `10.10.1.10/24`; absent: kube-dvr's IPAM picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Net>,
    /// A static MAC (Multus `mac`); absent: derived from the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("reading topology {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing topology {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("topology {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: p.clone(),
            source,
        })?;
        let t: Topology = serde_yaml::from_str(&text).map_err(|source| TopologyError::Parse {
            path: p.clone(),
            source,
        })?;
        t.validate()
            .map_err(|message| TopologyError::Invalid { path: p, message })?;
        Ok(t)
    }

    /// Names must be unique and short enough for the interface names the lab
    /// derives from positions; addresses must fit their networks.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        let all = self
            .nodes
            .iter()
            .map(|n| &n.name)
            .chain(self.workloads.iter().map(|w| &w.name))
            .chain(
                self.external_segments
                    .iter()
                    .flat_map(|s| s.hosts.iter().map(|h| &h.name)),
            );
        for n in all {
            if !names.insert(n) {
                return Err(format!(
                    "name {n:?} is used twice (nodes, workloads and hosts share one namespace)"
                ));
            }
            if n.is_empty()
                || n.len() > 40
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(format!(
                    "name {n:?} must be 1-40 characters of [a-zA-Z0-9-]"
                ));
            }
        }
        for n in &self.nodes {
            if !self.underlay.contains(&n.vtep) {
                return Err(format!(
                    "node {}: vtep {} is outside the underlay {}",
                    n.name, n.vtep, self.underlay
                ));
            }
        }
        for w in &self.workloads {
            if !self.nodes.iter().any(|n| n.name == w.node) {
                return Err(format!("workload {}: unknown node {}", w.name, w.node));
            }
        }
        for s in &self.external_segments {
            for h in &s.hosts {
                if !s.cidr.contains(&h.ip) {
                    return Err(format!(
                        "host {}: {} is outside segment {} ({})",
                        h.name, h.ip, s.name, s.cidr
                    ));
                }
            }
        }
        if self.nodes.len() > 99 || self.workloads.len() > 999 || self.external_segments.len() > 9 {
            return Err("at most 99 nodes, 999 workloads and 9 external segments".into());
        }
        Ok(())
    }
}

//! Types the service kinds share ([`RouterFirewall`](super::RouterFirewall),
//! [`PortForwarding`](super::PortForwarding),
//! [`LoadBalancer`](super::LoadBalancer)).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A transport protocol.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// nftables' name of the protocol (`meta l4proto tcp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One port or a range of ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("!has(self.endPort) || self.endPort >= self.port")
    .message("endPort must not be below port"))]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// The first (or only) port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// The last port of the range, inclusive. Absent: only `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub end_port: Option<u16>,
}

impl PortRange {
    /// The last port (`port` when no range).
    pub fn end(&self) -> u16 {
        self.end_port.unwrap_or(self.port).max(self.port)
    }
}

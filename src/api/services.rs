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
    pub port: i32,

    /// The last port of the range, inclusive. Absent: only `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub end_port: Option<i32>,
}

impl PortRange {
    /// The first and last port, when both are ports (1-65535) and the
    /// range is not empty.
    pub fn span(&self) -> Option<(u16, u16)> {
        let lo = port(self.port)?;
        let hi = port(self.end_port.unwrap_or(self.port))?;
        (lo <= hi).then_some((lo, hi))
    }
}

/// `p` as a port number, when it is one (1-65535). The schema says so
/// already; the resolver does not trust it.
pub fn port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

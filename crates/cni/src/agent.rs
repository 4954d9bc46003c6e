//! The plugin's side of the node agent's socket: one JSON request, one JSON
//! response per connection (the wire types mirror `kube_dvr::agent::cni`;
//! the crate's tests run this client against that server).
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{self, CniError, Result};

/// How long the plugin waits for the agent (connect, send, answer): an
/// attachment may take a few API round trips (an address taken by a
/// concurrent ADD on another node is retried with the next).
const TIMEOUT: Duration = Duration::from_secs(20);
/// Far above any answer; a bound on what a confused peer can make us read.
const MAX_RESPONSE: u64 = 1 << 20;

#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request<'a> {
    /// What the agent knows about a router subnet, for a pod about to join it.
    #[serde(rename_all = "camelCase")]
    Attachment {
        pod_namespace: &'a str,
        pod_name: &'a str,
        router_namespace: &'a str,
        router: &'a str,
        subnet: &'a str,
        /// A static address; absent: kube-dvr's IPAM picks one.
        #[serde(skip_serializing_if = "Option::is_none")]
        ip: Option<Ipv4Addr>,
        /// A static MAC; absent: the agent derives one from the address.
        #[serde(skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
        pod_uid: &'a str,
        container_id: &'a str,
        interface: &'a str,
    },
    /// Forget (delete the Port of) a container's interface: CNI DEL.
    #[serde(rename_all = "camelCase")]
    Release {
        pod_namespace: &'a str,
        container_id: &'a str,
        interface: &'a str,
    },
    /// Whether the agent can answer attachments (CNI STATUS).
    Status,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Attachment(Attachment),
    Ready,
    Released,
    Error { reason: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub bridge: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The address and MAC recorded in the interface's Port.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Whether this ADD created the Port (a failure then releases it).
    #[serde(default)]
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gw: Ipv4Addr,
}

/// Send `req` to the agent at `socket`. An unreachable or silent agent is
/// "try again later" (code 11); its refusals map to plugin codes.
pub async fn ask(socket: &Path, req: &Request<'_>) -> Result<Response> {
    let unreachable = |e: String| {
        CniError::new(
            error::TRY_AGAIN,
            format!(
                "the kube-dvr agent on this node is not reachable at {}",
                socket.display()
            ),
        )
        .details(e)
    };
    let io = async {
        let mut s = UnixStream::connect(socket).await?;
        // Only an agent running as this plugin's user (root on a node) is
        // believed: its answer decides which bridge a pod joins.
        let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
        let peer = s.peer_cred()?.uid();
        if peer != me {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("the socket's server runs as uid {peer}, not {me}"),
            ));
        }
        s.write_all(&serde_json::to_vec(req).expect("serializable"))
            .await?;
        s.shutdown().await?;
        let mut buf = Vec::new();
        s.take(MAX_RESPONSE).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(TIMEOUT, io)
        .await
        .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let resp: Response = serde_json::from_slice(&buf).map_err(|e| {
        CniError::new(error::AGENT_PROTOCOL, "cannot decode the agent's answer")
            .details(e.to_string())
    })?;
    if let Response::Error { reason, message } = resp {
        return Err(CniError::new(code_of(&reason), message).details(format!("agent: {reason}")));
    }
    Ok(resp)
}

/// Check an attachment the agent answered before acting on it as root:
/// a kube-dvr subnet bridge, an address inside the subnet.
pub fn sane(a: &Attachment) -> Result<()> {
    let bridge_ok = a
        .bridge
        .strip_prefix("dvrbr-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let ip_ok = a.ip.is_some_and(|ip| a.cidr.contains(&ip));
    if bridge_ok && ip_ok && a.cidr.contains(&a.gateway) {
        Ok(())
    } else {
        Err(CniError::new(
            error::AGENT_PROTOCOL,
            format!("the agent's answer is not a kube-dvr attachment: {a:?}"),
        ))
    }
}

/// Whether `e` says the agent could not be asked at all (as opposed to an
/// answer from it, whose details start with `agent:`).
pub fn unreachable(e: &CniError) -> bool {
    e.code == error::TRY_AGAIN && !e.details.starts_with("agent:")
}

/// The CNI code of an agent refusal.
fn code_of(reason: &str) -> u32 {
    match reason {
        "NotReady" => error::TRY_AGAIN,
        "UnknownRouter" => error::UNKNOWN_ROUTER,
        "UnknownSubnet" => error::UNKNOWN_SUBNET,
        "AddressOutsideSubnet" => error::ADDRESS_OUTSIDE_SUBNET,
        "AddressReserved" => error::ADDRESS_RESERVED,
        "CrossNamespace" => error::CROSS_NAMESPACE,
        "AddressTaken" | "InterfaceInUse" => error::ADDRESS_TAKEN,
        "SubnetExhausted" => error::SUBNET_EXHAUSTED,
        // An endpoint that keeps no records needs a static address.
        "NoAddress" => error::INVALID_CONFIG,
        "ApiUnavailable" | "AllocationContended" | "AllocationInProgress" => error::TRY_AGAIN,
        "PortRefused" => error::PORT_REFUSED,
        "BadRequest" => error::INVALID_CONFIG,
        _ => error::AGENT_PROTOCOL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(bridge: &str, ip: &str) -> Attachment {
        Attachment {
            bridge: bridge.into(),
            cidr: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            mtu: 1450,
            routes: vec![],
            ip: Some(ip.parse().unwrap()),
            mac: None,
            created: true,
        }
    }

    #[test]
    fn agent_refusals_map_to_their_codes() {
        for (reason, code) in [
            ("AddressTaken", error::ADDRESS_TAKEN),
            ("SubnetExhausted", error::SUBNET_EXHAUSTED),
            ("AllocationInProgress", error::TRY_AGAIN),
            ("ApiUnavailable", error::TRY_AGAIN),
            ("PortRefused", error::PORT_REFUSED),
            ("NoAddress", error::INVALID_CONFIG),
            ("SomethingNew", error::AGENT_PROTOCOL),
        ] {
            assert_eq!(code_of(reason), code, "{reason}");
        }
    }

    /// Whatever answers on the socket, the plugin plugs a pod only into a
    /// kube-dvr subnet bridge and with an address of that subnet.
    #[test]
    fn only_a_subnet_bridge_and_an_address_inside_it_are_accepted() {
        assert!(sane(&att("dvrbr-100", "10.1.0.5")).is_ok());
        for (bridge, ip) in [
            ("br-public", "10.1.0.5"),
            ("underlay", "10.1.0.5"),
            ("dvrbr-", "10.1.0.5"),
            ("dvrbr-1x", "10.1.0.5"),
            ("dvrbr-100", "10.2.0.5"),
        ] {
            let e = sane(&att(bridge, ip)).unwrap_err();
            assert_eq!(e.code, error::AGENT_PROTOCOL, "{bridge} {ip}");
        }
    }
}

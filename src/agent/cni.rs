//! The agent's endpoint for kube-dvr's CNI plugin (`crates/cni`): a unix
//! socket on the node (default [`DEFAULT_SOCKET`], mode 0600, root only)
//! answering "what is router R's subnet S on this node" from the agent's
//! last resolved [`ClusterView`] — a cached view, so a briefly slow or
//! unreachable API server does not fail pod start.
//!
//! # Protocol
//! One JSON request per connection, the client then shuts down its write
//! side; one JSON response, then the agent closes. A request that does not
//! arrive within [`READ_TIMEOUT`] or exceeds [`MAX_REQUEST`] bytes is
//! dropped.
//!
//! ```json
//! {"op":"attachment","podNamespace":"t","podName":"p","routerNamespace":"t",
//!  "router":"r1","subnet":"a","ip":"10.1.0.5"}
//! → {"attachment":{"bridge":"dvrbr-100","cidr":"10.1.0.0/24","gateway":"10.1.0.1",
//!    "mtu":1450,"routes":[{"dst":"10.2.0.0/24","gw":"10.1.0.1"}]}}
//! → {"error":{"reason":"CrossNamespace","message":"…"}}
//! {"op":"status"} → "ready"
//! ```
//!
//! # What is checked (the plugin's config is tenant input)
//! A pod attaches only to routers of its own namespace (`podNamespace`
//! comes from the runtime's CNI_ARGS, the router from the NAD, which the
//! tenant may have written); the router must be in the view (valid and
//! processed by the controller) and have the subnet; the address must be a
//! host address of the subnet other than the gateway and the SNAT
//! gateway's port. Whether the address is free is IPAM's job (not there
//! yet).
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::plan::names;
use crate::plan::view::{ClusterView, ObjectKey};
use crate::telemetry::Telemetry;

pub const DEFAULT_SOCKET: &str = "/run/kube-dvr/cni.sock";
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_REQUEST: u64 = 64 * 1024;

const M_REQUESTS: &str = "kube_dvr_cni_requests_total";
const M_REQUESTS_HELP: &str = "Requests of the CNI plugin answered by the agent, by op and result.";

/// The view the endpoint answers from: `None` until the agent's first
/// resolve.
pub type Published = watch::Receiver<Option<Arc<ClusterView>>>;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    #[serde(rename_all = "camelCase")]
    Attachment {
        pod_namespace: String,
        #[serde(default)]
        pod_name: String,
        router_namespace: String,
        router: String,
        subnet: String,
        ip: Ipv4Addr,
    },
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Attachment(Attachment),
    Ready,
    Error {
        reason: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// The subnet's bridge on the node, `dvrbr-<vni>`.
    pub bridge: String,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// MTU of the pod's interface: the overlay's (VXLAN overhead taken).
    pub mtu: u32,
    /// Through the gateway: the router's other subnets and the
    /// destinations of its extra routes.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gw: Ipv4Addr,
}

fn refuse(reason: &'static str, message: String) -> Response {
    Response::Error { reason, message }
}

/// The answer to `req` from `view` (pure).
pub fn answer(view: Option<&ClusterView>, req: &Request) -> Response {
    let Some(view) = view else {
        return refuse(
            "NotReady",
            "the kube-dvr agent on this node has not resolved the cluster yet".into(),
        );
    };
    let Request::Attachment {
        pod_namespace,
        router_namespace,
        router,
        subnet,
        ip,
        ..
    } = req
    else {
        return Response::Ready;
    };
    let key = ObjectKey::new(router_namespace, router);
    if pod_namespace != router_namespace {
        return refuse(
            "CrossNamespace",
            format!(
                "a pod of namespace {pod_namespace} may attach only to routers of its own \
                 namespace, not to {key}"
            ),
        );
    }
    let Some(r) = view.routers.iter().find(|r| r.key == key) else {
        return refuse(
            "UnknownRouter",
            format!(
                "router {key} is unknown to the kube-dvr agent on this node: it does not exist, \
                 is not valid, or the controller has not processed it yet"
            ),
        );
    };
    let Some(s) = r.subnets.iter().find(|s| &s.name == subnet) else {
        let names: Vec<&str> = r.subnets.iter().map(|s| s.name.as_str()).collect();
        return refuse(
            "UnknownSubnet",
            format!(
                "router {key} has no subnet {subnet:?} (it has: {})",
                names.join(", ")
            ),
        );
    };
    let cidr = s.cidr;
    let host_range = cidr.prefix_len() >= 31 || (*ip != cidr.network() && *ip != cidr.broadcast());
    if !cidr.contains(ip) || !host_range {
        return refuse(
            "AddressOutsideSubnet",
            format!("{ip} is not a host address of subnet {subnet} ({cidr}) of router {key}"),
        );
    }
    if *ip == s.gateway {
        return refuse(
            "AddressReserved",
            format!("{ip} is the gateway of subnet {subnet} of router {key}"),
        );
    }
    let snat_port = view
        .snat_gateways
        .iter()
        .filter(|g| g.router == key)
        .flat_map(|g| &g.ports)
        .any(|p| &p.subnet == subnet && p.ip == *ip);
    if snat_port {
        return refuse(
            "AddressReserved",
            format!("{ip} is the SNAT gateway's port on subnet {subnet} of router {key}"),
        );
    }
    let mut routes: Vec<Route> = Vec::new();
    let others = r
        .subnets
        .iter()
        .filter(|o| o.name != s.name)
        .map(|o| o.cidr);
    let extra = r.routes.iter().map(|(dst, _)| *dst);
    for dst in others.chain(extra) {
        // A default route is the NAD's choice (`defaultRoute`), and a
        // destination inside the subnet is on-link already.
        if dst.prefix_len() == 0 || cidr.contains(&dst) {
            continue;
        }
        let rt = Route { dst, gw: s.gateway };
        if !routes.contains(&rt) {
            routes.push(rt);
        }
    }
    Response::Attachment(Attachment {
        bridge: names::bridge(s.vni),
        cidr,
        gateway: s.gateway,
        mtu: names::OVERLAY_MTU,
        routes,
    })
}

/// Bind the socket at `path`: its directory is created (0700) if absent,
/// a stale socket from an earlier run is replaced, the socket is 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Bind `path` and serve it on a task of `tasks` (the agent's background
/// set: dropping it stops serving).
pub(super) fn start(
    path: &Path,
    view: Published,
    telemetry: &Arc<Telemetry>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), super::Error> {
    let l = bind(path).map_err(|source| super::Error::CniSocket {
        path: path.display().to_string(),
        source,
    })?;
    tracing::info!(path = %path.display(), "serving the CNI plugin");
    tasks.spawn(serve(l, view, Some(telemetry.clone())));
    Ok(())
}

/// Answer connections on `listener` for ever (each on its own task).
pub async fn serve(listener: UnixListener, view: Published, telemetry: Option<Arc<Telemetry>>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "CNI socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let view = view.clone();
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &view, telemetry.as_deref()).await {
                tracing::debug!(error = %e, "CNI socket: connection dropped");
            }
        });
    }
}

async fn handle(
    mut s: UnixStream,
    view: &Published,
    telemetry: Option<&Telemetry>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut limited = (&mut s).take(MAX_REQUEST + 1);
    tokio::time::timeout(READ_TIMEOUT, limited.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let (op, resp) = if buf.len() as u64 > MAX_REQUEST {
        ("invalid", refuse("BadRequest", "request too large".into()))
    } else {
        match serde_json::from_slice::<Request>(&buf) {
            Ok(req) => {
                let resp = answer(view.borrow().as_deref(), &req);
                log(&req, &resp);
                let op = match req {
                    Request::Attachment { .. } => "attachment",
                    Request::Status => "status",
                };
                (op, resp)
            }
            Err(e) => ("invalid", refuse("BadRequest", e.to_string())),
        }
    };
    if let Some(t) = telemetry {
        let result = match &resp {
            Response::Error { reason, .. } => reason,
            _ => "ok",
        };
        t.inc(
            M_REQUESTS,
            M_REQUESTS_HELP,
            &[("op", op), ("result", result)],
            1,
        );
    }
    s.write_all(&serde_json::to_vec(&resp).expect("serializable"))
        .await?;
    s.shutdown().await
}

fn log(req: &Request, resp: &Response) {
    let Request::Attachment {
        pod_namespace,
        pod_name,
        router,
        subnet,
        ip,
        ..
    } = req
    else {
        return;
    };
    match resp {
        Response::Error { reason, message } => tracing::info!(
            pod = %format!("{pod_namespace}/{pod_name}"), %router, %subnet, %ip, %reason, %message,
            "CNI attachment refused"
        ),
        _ => tracing::info!(
            pod = %format!("{pod_namespace}/{pod_name}"), %router, %subnet, %ip,
            "CNI attachment answered"
        ),
    }
}

#[cfg(test)]
#[path = "cni_tests.rs"]
mod tests;

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
//! {"op":"attachment","podNamespace":"t","podName":"p","podUid":"…",
//!  "containerId":"…","interface":"net1","routerNamespace":"t",
//!  "router":"r1","subnet":"a","ip":"10.1.0.5"}          // ip, mac optional
//! → {"attachment":{"bridge":"dvrbr-100","cidr":"10.1.0.0/24","gateway":"10.1.0.1",
//!    "mtu":1450,"routes":[{"dst":"10.2.0.0/24","gw":"10.1.0.1"}],
//!    "ip":"10.1.0.5","mac":"0a:58:0a:01:00:05"}}
//! → {"error":{"reason":"CrossNamespace","message":"…"}}
//! {"op":"release","podNamespace":"t","containerId":"…","interface":"net1"} → "released"
//! {"op":"status"} → "ready"
//! ```
//!
//! # What is checked (the plugin's config is tenant input)
//! A pod attaches only to routers of its own namespace (`podNamespace`
//! comes from the runtime's CNI_ARGS, the router from the NAD, which the
//! tenant may have written); the router must be in the view (valid and
//! processed by the controller) and have the subnet; a static address must
//! be a host address of the subnet other than the gateway and the SNAT
//! gateway's port. The address is then recorded as a Port
//! ([`super::ports`]: kube-dvr's IPAM): a static one only when free, else
//! the next free one. The Port, not the pod, is what the dataplane routes.
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::ports::{Claim, PortRecords};
use crate::plan::model::MacAddr;
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
        /// A static address; `None`: the next free one.
        #[serde(default)]
        ip: Option<Ipv4Addr>,
        /// A static MAC; `None`: derived from the address.
        #[serde(default)]
        mac: Option<MacAddr>,
        #[serde(default)]
        pod_uid: String,
        #[serde(default)]
        container_id: String,
        #[serde(default)]
        interface: String,
    },
    /// CNI DEL: forget the Port of a container's interface.
    #[serde(rename_all = "camelCase")]
    Release {
        pod_namespace: String,
        container_id: String,
        interface: String,
    },
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Attachment(Attachment),
    Ready,
    Released,
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
    /// The interface's address and MAC, as recorded in its Port (absent
    /// only where the agent keeps no records: [`serve`] without them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Whether this request created the Port (not a retried ADD's): only
    /// then does a failed ADD release it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gw: Ipv4Addr,
}

fn refuse(reason: &'static str, message: String) -> Response {
    Response::Error { reason, message }
}

/// The answer to `req` from `view` (pure): for an attachment, what the
/// subnet is and which addresses are reserved; the address is recorded
/// afterwards ([`handle`]).
pub fn answer(view: Option<&ClusterView>, req: &Request) -> Response {
    match check(view, req) {
        Ok(Some((a, _))) => Response::Attachment(a),
        Ok(None) => Response::Ready,
        Err(r) => r,
    }
}

/// An attachment's subnet and its reserved addresses, `None` for other
/// requests.
fn check(
    view: Option<&ClusterView>,
    req: &Request,
) -> Result<Option<(Attachment, Vec<Ipv4Addr>)>, Response> {
    let Some(view) = view else {
        return Err(refuse(
            "NotReady",
            "the kube-dvr agent on this node has not resolved the cluster yet".into(),
        ));
    };
    let Request::Attachment {
        pod_namespace,
        router_namespace,
        router,
        subnet,
        ip,
        mac,
        ..
    } = req
    else {
        return Ok(None);
    };
    let key = ObjectKey::new(router_namespace, router);
    if pod_namespace != router_namespace {
        return Err(refuse(
            "CrossNamespace",
            format!(
                "a pod of namespace {pod_namespace} may attach only to routers of its own \
                 namespace, not to {key}"
            ),
        ));
    }
    let Some(r) = view.routers.iter().find(|r| r.key == key) else {
        return Err(refuse(
            "UnknownRouter",
            format!(
                "router {key} is unknown to the kube-dvr agent on this node: it does not exist, \
                 is not valid, or the controller has not processed it yet"
            ),
        ));
    };
    let Some(s) = r.subnets.iter().find(|s| &s.name == subnet) else {
        let names: Vec<&str> = r.subnets.iter().map(|s| s.name.as_str()).collect();
        return Err(refuse(
            "UnknownSubnet",
            format!(
                "router {key} has no subnet {subnet:?} (it has: {})",
                names.join(", ")
            ),
        ));
    };
    let cidr = s.cidr;
    let mut reserved: Vec<Ipv4Addr> = vec![s.gateway];
    reserved.extend(
        (view.snat_gateways.iter())
            .filter(|g| g.router == key)
            .flat_map(|g| &g.ports)
            .filter(|p| &p.subnet == subnet)
            .map(|p| p.ip),
    );
    let vips: Vec<Ipv4Addr> = (view.load_balancers.iter())
        .filter(|lb| lb.router == key && lb.subnet.as_ref() == Some(subnet))
        .map(|lb| lb.address)
        .collect();
    if let Some(ip) = ip {
        if vips.contains(ip) {
            return Err(refuse(
                "AddressReserved",
                format!("{ip} is a LoadBalancer's virtual IP on subnet {subnet} of router {key}"),
            ));
        }
        let host_range =
            cidr.prefix_len() >= 31 || (*ip != cidr.network() && *ip != cidr.broadcast());
        if !cidr.contains(ip) || !host_range {
            return Err(refuse(
                "AddressOutsideSubnet",
                format!("{ip} is not a host address of subnet {subnet} ({cidr}) of router {key}"),
            ));
        }
        if *ip == s.gateway {
            return Err(refuse(
                "AddressReserved",
                format!("{ip} is the gateway of subnet {subnet} of router {key}"),
            ));
        }
        if reserved.contains(ip) {
            return Err(refuse(
                "AddressReserved",
                format!("{ip} is the SNAT gateway's port on subnet {subnet} of router {key}"),
            ));
        }
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
    let a = Attachment {
        bridge: names::bridge(s.vni),
        cidr,
        gateway: s.gateway,
        mtu: names::OVERLAY_MTU,
        routes,
        ip: *ip,
        mac: *mac,
        created: false,
    };
    if ip.is_none() {
        // Next hops of the router's routes on this subnet (appliances,
        // which attach with them as static addresses): a pod handed one
        // dynamically would receive the route's traffic.
        reserved.extend(
            (r.routes.iter())
                .map(|(_, via)| *via)
                .filter(|via| cidr.contains(via)),
        );
    }
    reserved.extend(vips);
    Ok(Some((a, reserved)))
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
/// set: dropping it stops serving), recording Ports in `records`.
pub(super) fn start(
    path: &Path,
    view: Published,
    records: Arc<PortRecords>,
    telemetry: &Arc<Telemetry>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), super::Error> {
    let l = bind(path).map_err(|source| super::Error::CniSocket {
        path: path.display().to_string(),
        source,
    })?;
    tracing::info!(path = %path.display(), "serving the CNI plugin");
    tasks.spawn(serve_with(l, view, Some(records), Some(telemetry.clone())));
    Ok(())
}

/// Answer connections on `listener` for ever without recording Ports: an
/// attachment then needs a static address and is answered from the view
/// alone. Only for tests of the plugin's kernel work without an API
/// server; the agent always records ([`start`]).
pub async fn serve(listener: UnixListener, view: Published, telemetry: Option<Arc<Telemetry>>) {
    serve_with(listener, view, None, telemetry).await
}

/// Answer connections on `listener` for ever (each on its own task).
pub async fn serve_with(
    listener: UnixListener,
    view: Published,
    records: Option<Arc<PortRecords>>,
    telemetry: Option<Arc<Telemetry>>,
) {
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
        let records = records.clone();
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &view, records.as_deref(), telemetry.as_deref()).await {
                tracing::debug!(error = %e, "CNI socket: connection dropped");
            }
        });
    }
}

/// The answer to `req`: checked against the view, then recorded.
async fn respond(view: &Published, records: Option<&PortRecords>, req: &Request) -> Response {
    if let Request::Release {
        pod_namespace,
        container_id,
        interface,
    } = req
    {
        return match records {
            None => Response::Released,
            Some(r) => match r.release(pod_namespace, container_id, interface).await {
                Ok(_) => Response::Released,
                Err(e) => refuse(e.reason, e.message),
            },
        };
    }
    let checked = check(view.borrow().as_deref(), req);
    let (mut a, reserved) = match checked {
        Ok(Some(x)) => x,
        Ok(None) => return Response::Ready,
        Err(r) => return r,
    };
    let Request::Attachment {
        pod_namespace,
        pod_name,
        pod_uid,
        container_id,
        interface,
        router,
        subnet,
        ip,
        mac,
        ..
    } = req
    else {
        return Response::Ready;
    };
    let Some(records) = records else {
        if ip.is_none() {
            return refuse(
                "NoAddress",
                "this endpoint keeps no Port records: give the pod a static address".into(),
            );
        }
        return Response::Attachment(a);
    };
    if container_id.is_empty() || interface.is_empty() || pod_name.is_empty() {
        return refuse(
            "BadRequest",
            "an attachment needs podName, containerId and interface".into(),
        );
    }
    let claim = Claim {
        namespace: pod_namespace,
        router,
        subnet,
        cidr: a.cidr,
        reserved,
        ip: *ip,
        mac: *mac,
        pod: pod_name,
        pod_uid,
        container_id,
        interface,
    };
    match records.allocate(&claim).await {
        Ok(g) => {
            a.ip = Some(g.ip);
            a.mac = Some(g.mac);
            a.created = g.created;
            Response::Attachment(a)
        }
        Err(e) => refuse(e.reason, e.message),
    }
}

async fn handle(
    mut s: UnixStream,
    view: &Published,
    records: Option<&PortRecords>,
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
                let resp = respond(view, records, &req).await;
                log(&req, &resp);
                let op = match req {
                    Request::Attachment { .. } => "attachment",
                    Request::Release { .. } => "release",
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
    match (req, resp) {
        (
            Request::Attachment {
                pod_namespace,
                pod_name,
                router,
                subnet,
                ..
            },
            Response::Error { reason, message },
        ) => tracing::info!(
            pod = %format!("{pod_namespace}/{pod_name}"), %router, %subnet, %reason, %message,
            "CNI attachment refused"
        ),
        (
            Request::Attachment {
                pod_namespace,
                pod_name,
                router,
                subnet,
                ..
            },
            Response::Attachment(a),
        ) => tracing::info!(
            pod = %format!("{pod_namespace}/{pod_name}"), %router, %subnet, ip = ?a.ip,
            "CNI attachment recorded"
        ),
        (
            Request::Release {
                pod_namespace,
                container_id,
                interface,
            },
            resp,
        ) => tracing::info!(
            namespace = %pod_namespace, %container_id, %interface, ?resp, "CNI release"
        ),
        _ => {}
    }
}

#[cfg(test)]
#[path = "cni_tests.rs"]
mod tests;

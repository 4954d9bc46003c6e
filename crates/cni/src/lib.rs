//! `kube-dvr-cni`: kube-dvr's CNI plugin (spec 1.0.0 and 1.1.0), installed
//! into the node's CNI bin directory as `kube-dvr` (the NAD's `"type"`) by
//! the agent DaemonSet's init container; Multus calls it as a delegate.
//!
//! ADD asks the node agent, over its unix socket, to attach the pod to the
//! NAD's router subnet: the agent checks the request against its cached
//! view (so a slow API server does not fail the check), records the
//! interface as a Port (kube-dvr's IPAM: a static address from Multus
//! `ips`, else the next free one) and answers bridge, gateway, prefix, MTU,
//! routes, address and MAC. ADD waits for the subnet's bridge (the agent
//! makes it once it sees the Port), creates a veth with its pod end
//! directly in the pod's namespace, plugs the host end into the bridge,
//! sets MAC, address and routes, and prints the CNI result; on any failure
//! it removes what it made and releases the Port. DEL removes the veth and
//! releases the Port (an unreachable agent is fine: the controller
//! collects Ports of pods that are gone). CHECK verifies what ADD made
//! against `prevResult`. STATUS asks the agent whether it can answer. GC
//! keeps nothing node-local to collect (a veth dies with its pod's
//! namespace; DEL removes the host end otherwise) and succeeds.
//!
//! Errors are CNI error objects on stdout with exit status 1; the codes are
//! in [`error`].
#![forbid(unsafe_code)]

mod agent;
mod conf;
mod error;
mod link;
mod result;

use std::io::{Read, Write};

use conf::{Env, NetConf};
use error::{CniError, Result};

/// Run the plugin: read the configuration from stdin, the command from
/// the CNI environment, print the result, exit 1 with a CNI error object
/// on failure. `kube-dvr-cni`'s `main`, and `kube-dvr`'s when it is
/// invoked as a plugin (`CNI_COMMAND` set, no arguments).
pub fn main() {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The version errors are reported in: the config's when it has one.
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| conf::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| conf::SUPPORTED_VERSIONS[1].to_string());
    let res = match read {
        Ok(_) => rt.block_on(run(&stdin)),
        Err(e) => Err(CniError::new(error::DECODING, "cannot read stdin").details(e.to_string())),
    };
    let mut out = std::io::stdout().lock();
    match res {
        Ok(Some(json)) => {
            let _ = writeln!(out, "{json}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            let _ = out.flush();
            std::process::exit(1);
        }
    }
}

/// Run one command; `Some(json)` is what to print on success.
async fn run(stdin: &[u8]) -> Result<Option<String>> {
    let env = Env::from_process()?;
    match env.command.as_str() {
        "VERSION" => Ok(Some(result::version(stdin))),
        "ADD" => add(&env, &NetConf::parse(stdin)?).await.map(Some),
        "DEL" => del(&env, &NetConf::parse(stdin)?).await.map(|()| None),
        "CHECK" => check(&env, &NetConf::parse(stdin)?).await.map(|()| None),
        "STATUS" => status(&NetConf::parse(stdin)?).await.map(|()| None),
        // Nothing node-local outlives an attachment: see the crate docs.
        "GC" => NetConf::parse(stdin).map(|_| None),
        "" => Err(CniError::new(
            error::INVALID_ENV,
            "CNI_COMMAND is not set: this is kube-dvr's CNI plugin, run by the container runtime",
        )
        .details(format!(
            "kube-dvr-cni {}, CNI versions {}",
            env!("CARGO_PKG_VERSION"),
            conf::SUPPORTED_VERSIONS.join(", ")
        ))),
        other => Err(CniError::new(
            error::INVALID_ENV,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    }
}

/// The host end of the veth: derived from container ID and interface name,
/// so DEL finds it with nothing but the environment (and the node agent
/// finds the interface of a Port).
pub fn host_name(container_id: &str, ifname: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("dvrp{h:08x}")
}

fn random_mac() -> Result<[u8; 6]> {
    let mut m = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut m))
        .map_err(|e| CniError::kernel("reading /dev/urandom", e))?;
    // Locally administered unicast.
    m[0] = (m[0] & 0xfc) | 0x02;
    Ok(m)
}

/// How long ADD waits for the subnet's bridge: the agent makes it in the
/// pass after it sees the first Port of the subnet on its node.
const BRIDGE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn add(env: &Env, conf: &NetConf) -> Result<String> {
    let cid = Env::require(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME")?;
    let netns = env.netns()?;
    let pod_ns = env.pod_namespace()?;
    let (router_ns, router, subnet) = conf.target(pod_ns)?;
    let (ip, prefix) = match conf.static_ip(&env.args)? {
        Some((ip, prefix)) => (Some(ip), prefix),
        None => (None, None),
    };
    let mac = conf.static_mac(&env.args)?.map(|m| conf::fmt_mac(&m));
    let ns = link::open_netns(netns)?.ok_or_else(|| {
        CniError::new(
            error::INVALID_ENV,
            format!("CNI_NETNS {} does not exist", netns.display()),
        )
    })?;
    let req = agent::Request::Attachment {
        pod_namespace: pod_ns,
        pod_name: env.args.get("K8S_POD_NAME").unwrap_or(""),
        router_namespace: &router_ns,
        router: &router,
        subnet: &subnet,
        ip,
        mac,
        pod_uid: env.args.get("K8S_POD_UID").unwrap_or(""),
        container_id: cid,
        interface: ifname,
    };
    let socket = conf.socket();
    let att = match agent::ask(&socket, &req).await? {
        agent::Response::Attachment(a) => a,
        other => {
            return Err(CniError::new(
                error::AGENT_PROTOCOL,
                format!("unexpected answer from the agent: {other:?}"),
            ))
        }
    };
    // The Port is recorded: a failure releases it if this ADD made it (a
    // retried ADD's Port is the earlier ADD's), so a failed ADD leaves
    // nothing behind.
    let made = attach(env, conf, &ns, cid, ifname, prefix, &att).await;
    if made.is_err() && att.created {
        let _ = release(&socket, pod_ns, cid, ifname).await;
    }
    made
}

async fn attach(
    env: &Env,
    conf: &NetConf,
    ns: &std::fs::File,
    cid: &str,
    ifname: &str,
    prefix: Option<u8>,
    att: &agent::Attachment,
) -> Result<String> {
    let netns = env.netns()?;
    agent::sane(att)?;
    let ip = att.ip.ok_or_else(|| {
        CniError::new(
            error::AGENT_PROTOCOL,
            "the agent recorded no address for the interface",
        )
    })?;
    if let Some(p) = prefix.filter(|p| *p != att.cidr.prefix_len()) {
        return Err(CniError::new(
            error::ADDRESS_OUTSIDE_SUBNET,
            format!("static address {ip}/{p}: the subnet is {}", att.cidr),
        ));
    }
    let mac = match att.mac.as_deref().and_then(conf::parse_mac) {
        Some(m) => m,
        None => random_mac()?,
    };
    let mut routes = att.routes.clone();
    if conf.default_route {
        routes.push(agent::Route {
            dst: "0.0.0.0/0".parse().expect("valid"),
            gw: att.gateway,
        });
    }
    let want = link::Want {
        bridge: att.bridge.clone(),
        host: host_name(cid, ifname),
        ifname: ifname.to_string(),
        mac,
        ip,
        prefix: att.cidr.prefix_len(),
        mtu: att.mtu,
        routes,
    };
    let host = link::Nl::here()?;
    wait_for_bridge(&host, &want.bridge).await?;
    let made = link::add(&host, ns, &want).await?;
    Ok(result::added(
        &conf.cni_version,
        netns,
        &want,
        &made,
        att.gateway,
    ))
}

/// Wait until `bridge` exists (the agent's pass makes it after recording
/// the subnet's first Port on this node); `link::add` reports it missing.
async fn wait_for_bridge(host: &link::Nl, bridge: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + BRIDGE_WAIT;
    while host.link(bridge).await?.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Ask the agent to delete the Port of `cid`'s `ifname`.
async fn release(socket: &std::path::Path, pod_ns: &str, cid: &str, ifname: &str) -> Result<()> {
    let req = agent::Request::Release {
        pod_namespace: pod_ns,
        container_id: cid,
        interface: ifname,
    };
    agent::ask(socket, &req).await.map(|_| ())
}

async fn del(env: &Env, conf: &NetConf) -> Result<()> {
    let cid = Env::require(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME")?;
    let host = link::Nl::here()?;
    link::del(&host, &host_name(cid, ifname)).await?;
    // The Port: an unreachable agent is fine (the controller deletes the
    // Ports of pods that are gone); a refusal (the API server did not
    // take the delete) is reported so that the runtime retries.
    let Ok(pod_ns) = env.pod_namespace() else {
        return Ok(());
    };
    match release(&conf.socket(), pod_ns, cid, ifname).await {
        Ok(()) => Ok(()),
        Err(e) if agent::unreachable(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let cid = Env::require(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME")?;
    let netns = env.netns()?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            error::INVALID_CONFIG,
            "CHECK needs prevResult in the configuration",
        )
    })?;
    let want = result::expected(prev, &host_name(cid, ifname), ifname)?;
    let ns = link::open_netns(netns)?.ok_or_else(|| {
        CniError::new(
            error::CHECK_FAILED,
            format!("CNI_NETNS {} does not exist", netns.display()),
        )
    })?;
    let host = link::Nl::here()?;
    link::check(&host, &ns, &want).await
}

async fn status(conf: &NetConf) -> Result<()> {
    match agent::ask(&conf.socket(), &agent::Request::Status).await {
        Ok(_) => Ok(()),
        Err(e) => Err(CniError {
            code: error::NOT_AVAILABLE,
            ..e
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_fit_and_differ() {
        let a = super::host_name("c1", "net1");
        assert_eq!(a.len(), 12);
        assert!(a.len() <= 15);
        assert_ne!(a, super::host_name("c1", "net2"));
        assert_ne!(a, super::host_name("c2", "net1"));
        assert_eq!(a, super::host_name("c1", "net1"));
    }
}

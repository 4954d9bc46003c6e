//! `kube-dvr agent`: flags, environment and process wiring around [`run`].
//! The library entry point [`run`] reads no flags and no environment; this
//! module does.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{run, AgentOptions, Error};
use crate::controller::cli::parse_duration;
use crate::dataplane::engine::EngineConfig;
use crate::telemetry;

/// Flags of `kube-dvr agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// This node's name.
    #[arg(
        long,
        env = "NODE_NAME",
        required_unless_present = "cleanup",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub node: Option<String>,
    /// Directory of named network namespaces (shared with the host).
    #[arg(long, default_value = crate::dataplane::netns::DEFAULT_DIR)]
    pub netns_dir: PathBuf,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "127.0.0.1:9481")]
    pub metrics_addr: SocketAddr,
    /// The node's VTEP (underlay address); default: the Node's InternalIP.
    #[arg(long)]
    pub vtep: Option<Ipv4Addr>,
    /// Namespace of the agent's heartbeat Lease and of the uninstall
    /// ConfigMap.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-dvr")]
    pub namespace: String,
    /// The unix socket the CNI plugin asks (`kube-dvr-cni`, see
    /// `crates/cni`); root-only (0600). Empty: not served.
    #[arg(long, env = "KUBE_DVR_CNI_SOCKET", default_value = super::cni::DEFAULT_SOCKET)]
    pub cni_socket: PathBuf,
    /// UDP port of the SNAT gateway probes between nodes' VTEPs (0: off).
    #[arg(long, default_value_t = super::probe::DEFAULT_PORT)]
    pub probe_port: u16,
    /// The node's network namespace, where the agent's links live (the
    /// lab runs agents outside their simulated node's namespace).
    #[arg(long, default_value = "/proc/self/ns/net", hide = true)]
    pub root_netns: PathBuf,
    /// Period of the full resync (a kernel pass even when nothing changed).
    #[arg(long, default_value = "60s", value_parser = parse_duration, hide = true)]
    pub resync: Duration,
    /// A Port whose interface has been gone this long is deleted.
    #[arg(long, default_value = "60s", value_parser = parse_duration, hide = true)]
    pub orphan_grace: Duration,
    /// Tuning of the agent's loops (see `AgentOptions`); the lab passes its
    /// own.
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub debounce: Option<Duration>,
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub heartbeat: Option<Duration>,
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub hold_back: Option<Duration>,
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub pass_timeout: Option<Duration>,
    /// One-shot: remove all kube-dvr kernel state on this node and exit (no
    /// API needed).
    #[arg(long)]
    pub cleanup: bool,
}

/// Run `kube-dvr agent` until SIGTERM or Ctrl-C.
pub fn main(args: Args) -> Result<(), Error> {
    let engine = EngineConfig {
        root_netns: args.root_netns.clone(),
        netns_dir: args.netns_dir.clone(),
    };
    if args.cleanup {
        let report = super::cleanup(engine)?;
        for e in &report.errors {
            tracing::error!(op = %e.op, error = %e.error, "cleanup op failed");
        }
        println!(
            "cleanup: {} kernel writes, {} errors",
            report.writes.total(),
            report.errors.len()
        );
        return match report.errors.first() {
            None => Ok(()),
            Some(first) => Err(Error::Cleanup {
                failed: report.errors.len(),
                first: format!("{}: {}", first.op, first.error),
            }),
        };
    }
    let mut opts = AgentOptions::new(args.node.clone().unwrap_or_default());
    opts.namespace = args.namespace.clone();
    opts.vtep = args.vtep;
    opts.probe_port = args.probe_port;
    opts.engine = engine;
    opts.cni_socket = Some(args.cni_socket.clone()).filter(|p| !p.as_os_str().is_empty());
    opts.resync = args.resync;
    opts.orphan_grace = args.orphan_grace;
    let tuning = [
        (&mut opts.debounce, args.debounce),
        (&mut opts.heartbeat, args.heartbeat),
        (&mut opts.hold_back, args.hold_back),
        (&mut opts.pass_timeout, args.pass_timeout),
    ];
    for (field, value) in tuning {
        if let Some(v) = value {
            *field = v;
        }
    }
    super::heap::limit_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Task(format!("tokio runtime: {e}")))?;
    rt.block_on(async move {
        let client = crate::cluster::client()
            .await
            .map_err(|source| Error::Api {
                op: "connect to",
                object: "the API server".into(),
                source,
            })?;
        let (t, shutdown) = telemetry::start_component(args.metrics_addr, " (kernel state stays)");
        run(client, opts, t, shutdown).await
    })
}

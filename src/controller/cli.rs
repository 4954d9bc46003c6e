//! `kube-dvr controller` and `kube-dvr uninstall`: flags, environment and
//! process wiring around [`super::run`] and [`crate::uninstall::run`]. The
//! library entry points read no flags and no environment; this module does.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use super::{run, ControllerOptions};
use crate::telemetry;
use crate::uninstall::{self, UninstallOptions};

/// Flags of `kube-dvr controller`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:9480")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease (and of the agents' Leases).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-dvr")]
    pub leader_election_namespace: String,
    /// This replica's identity in leader election. Default: `$POD_NAME`,
    /// else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// Flags of `kube-dvr uninstall`.
#[derive(Clone, Debug, clap::Args)]
pub struct UninstallArgs {
    /// How long to wait for every agent to clean up, e.g. `240s`, `4m`.
    #[arg(long, default_value = "240s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The release namespace (agents' Leases, the uninstall ConfigMap).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-dvr")]
    pub namespace: String,
}

/// `90`, `90s`, `4m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 240s"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kube-dvr-controller".into())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// Run `kube-dvr controller` until SIGTERM or Ctrl-C.
pub fn main(args: Args) -> anyhow::Result<()> {
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let opts = ControllerOptions::new(args.leader_election_namespace.clone(), identity);
    runtime()?.block_on(async move {
        let client = crate::cluster::client()
            .await
            .context("connecting to the API server")?;
        let (t, shutdown) = telemetry::start_component(args.metrics_addr, "");
        run(client, opts, t, shutdown).await.context("controller")
    })
}

/// Run `kube-dvr uninstall`.
pub fn uninstall_main(args: UninstallArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = crate::cluster::client()
            .await
            .context("connecting to the API server")?;
        uninstall::run(client, &UninstallOptions::new(args.namespace, args.timeout))
            .await
            .context("uninstall")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("240s"), Ok(Duration::from_secs(240)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("4m"), Ok(Duration::from_secs(240)));
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert!(parse_duration("4x").is_err());
        assert!(parse_duration("s").is_err());
    }
}

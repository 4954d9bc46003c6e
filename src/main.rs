//! `kube-dvr`: one binary for every component. `lab` exists only with the
//! `lab` cargo feature (default; the image is built without it).
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
#[cfg(feature = "lab")]
use {clap::Args, kube_dvr::lab, std::path::PathBuf};

#[derive(Parser)]
#[command(
    name = "kube-dvr",
    version,
    about = "Distributed virtual routing for Kubernetes"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "KUBE_DVR_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the CustomResourceDefinitions (multi-document YAML).
    Crds,
    /// Print generated documentation: `docs crd-reference` (docs/crd-reference.md).
    Docs {
        #[arg(value_parser = ["crd-reference"])]
        doc: String,
    },
    /// kube-dvr on this machine with nodes simulated as network namespaces.
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Lab(LabCmd),
    /// The node agent (DaemonSet): programs this node's kernel and reports.
    Agent(kube_dvr::agent::cli::Args),
    /// The controller (Deployment, leader-elected): validates, allocates,
    /// schedules, writes status.
    Controller(kube_dvr::controller::cli::Args),
    /// Have every agent remove its kernel state, wait for it (Helm's
    /// pre-delete hook).
    Uninstall(kube_dvr::controller::cli::UninstallArgs),
}

#[cfg(feature = "lab")]
#[derive(Subcommand)]
enum LabCmd {
    /// Build a lab, probe every pair of endpoints, print the matrix, tear
    /// down. Exits non-zero if any probe disagrees with what is expected.
    Demo(LabArgs),
    /// Build a lab and keep it running until interrupted (Ctrl-C tears it down).
    Up(LabArgs),
    /// Remove a lab (also after a crash) and list what is left (nothing).
    Down(StateArgs),
    /// Stop a component of a running lab gracefully (SIGTERM): `api`,
    /// `controller` or `agent/<node>`.
    Stop(ComponentArgs),
    /// Kill a component of a running lab (SIGKILL; `api`: as stop).
    Kill(ComponentArgs),
    /// Start a stopped or killed component again, from the command line the
    /// lab recorded (`controller`, `agent/<node>`).
    Start(ComponentArgs),
    /// Take a node's underlay (`eth0`) or external links down or up:
    /// `lab link gw-1 external down`.
    Link {
        #[command(flatten)]
        state: StateArgs,
        node: String,
        link: lab::infra::NodeLink,
        #[arg(value_parser = ["down", "up"])]
        state_to: String,
    },
    /// Run a command inside a lab workload, node or external host:
    /// `lab exec a-web -- ping 10.10.2.10`.
    Exec {
        #[command(flatten)]
        state: StateArgs,
        /// A workload name, `node-<name>`, `host-<name>`, or `switch`.
        target: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

#[cfg(feature = "lab")]
#[derive(Args)]
struct StateArgs {
    /// Where the lab keeps its namespace files and state.
    #[arg(long, default_value = lab::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[cfg(feature = "lab")]
#[derive(Args)]
struct ComponentArgs {
    #[command(flatten)]
    state: StateArgs,
    /// `api`, `controller` or `agent/<node>`.
    component: lab::Component,
}

#[cfg(feature = "lab")]
#[derive(Args)]
struct LabArgs {
    /// The physical world: nodes, underlay, external segments, workloads.
    #[arg(long, default_value = "examples/lab/topology.yaml")]
    topology: PathBuf,
    /// Directory (or file) of kube-dvr manifests to apply.
    #[arg(long, default_value = "examples/lab/manifests")]
    manifests: PathBuf,
    /// The API server: the in-memory stand-in (fast), or a real
    /// kube-apiserver with etcd built into .tools/bin by
    /// scripts/install-tools.sh.
    #[arg(long, value_enum, default_value = "standin")]
    api: lab::ApiKind,
    #[command(flatten)]
    state: StateArgs,
}

#[cfg(feature = "lab")]
impl LabArgs {
    fn options(&self) -> lab::LabOptions {
        lab::LabOptions {
            topology: self.topology.clone(),
            manifests: self.manifests.clone(),
            state_dir: self.state.state_dir.clone(),
            api: self.api,
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // Installed as the CNI plugin `kube-dvr` (one binary for the image's
    // init container and the lab): the runtime runs it with CNI_COMMAND set
    // and no arguments.
    if std::env::var_os("CNI_COMMAND").is_some() && std::env::args_os().len() == 1 {
        kube_dvr_cni::main();
        return ExitCode::SUCCESS;
    }
    // A component the lab started dies with the lab.
    #[cfg(feature = "lab")]
    lab::procs::die_with_parent();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Controller(args) => {
            kube_dvr::controller::cli::main(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Uninstall(args) => {
            kube_dvr::controller::cli::uninstall_main(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Agent(args) => {
            kube_dvr::agent::cli::main(args).context("agent")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Docs { .. } => {
            print!("{}", kube_dvr::api::reference::crd_reference_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Crds => {
            print!("{}", kube_dvr::api::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Demo(args)) => {
            let ok = lab::demo(&args.options(), &mut std::io::stdout()).context("lab demo")?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Up(args)) => lab_up(&args),
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Down(s)) => {
            let (removed, left) = lab::down(&s.state_dir);
            for r in &removed {
                println!("removed {r}");
            }
            if left.is_empty() {
                println!(
                    "lab down: {} namespaces and processes removed, nothing left under {}",
                    removed.len(),
                    s.state_dir.display()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for l in &left {
                    println!("still present: {l}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Stop(a)) => lab_signal(&a, true),
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Kill(a)) => lab_signal(&a, false),
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Start(a)) => {
            let paths = lab::LabPaths::new(&a.state.state_dir);
            if a.component == lab::Component::Api {
                // The API server lives in the `lab up` process: asked to
                // serve again (SIGUSR2).
                let pid = signal_lab_up(&paths, nix::sys::signal::Signal::SIGUSR2)?;
                println!("api: lab up (pid {pid}) asked to serve again");
                return Ok(ExitCode::SUCCESS);
            }
            let pid = lab::procs::start_detached(&paths, &a.component)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("lab start {}", a.component))?;
            println!(
                "{} started (pid {pid}, log {})",
                a.component,
                lab::procs::log_path(&paths, &a.component).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Link {
            state,
            node,
            link,
            state_to,
        }) => {
            let paths = lab::LabPaths::new(&state.state_dir);
            let names = lab::infra::set_node_link(&paths, &node, link, state_to == "up")
                .context("lab link")?;
            println!("node {node}: {} {state_to}", names.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Cmd::Lab(LabCmd::Exec { state, target, cmd }) => {
            let paths = lab::LabPaths::new(&state.state_dir);
            let infra = paths.infra();
            let ns = [
                target.clone(),
                format!("wl-{target}"),
                format!("node-{target}"),
                format!("host-{target}"),
            ]
            .iter()
            .map(|n| infra.join(n))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "no lab workload, node or host named {target:?} under {}",
                    infra.display()
                )
            })?;
            let status = std::process::Command::new("nsenter")
                .arg(format!("--net={}", ns.display()))
                .args(&cmd)
                .status()
                .context("run nsenter")?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
    }
}

/// Send `sig` to the running `lab up` process (where the API server
/// lives); its pid.
#[cfg(feature = "lab")]
fn signal_lab_up(paths: &lab::LabPaths, sig: nix::sys::signal::Signal) -> anyhow::Result<i32> {
    let pid: i32 = std::fs::read_to_string(paths.pid_file())
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("no lab up at {}", paths.root.display()))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .with_context(|| format!("signal lab up (pid {pid})"))?;
    Ok(pid)
}

/// `lab stop|kill <component>`: signal a running lab's component and wait
/// until it is gone. The API server lives in the `lab up` process: it is
/// asked to stop it (SIGUSR1; `lab start api` sends SIGUSR2).
#[cfg(feature = "lab")]
fn lab_signal(a: &ComponentArgs, graceful: bool) -> anyhow::Result<ExitCode> {
    use nix::sys::signal::Signal;
    let paths = lab::LabPaths::new(&a.state.state_dir);
    let c = &a.component;
    if *c == lab::Component::Api {
        let pid = signal_lab_up(&paths, Signal::SIGUSR1)?;
        println!("api: lab up (pid {pid}) asked to stop it");
        return Ok(ExitCode::SUCCESS);
    }
    let sig = if graceful {
        Signal::SIGTERM
    } else {
        Signal::SIGKILL
    };
    match lab::procs::signal(&paths, c, sig).map_err(anyhow::Error::msg)? {
        None => println!("{c} is not running"),
        Some(pid) => {
            let gone = lab::procs::wait_gone(
                pid,
                None,
                lab::procs::STOP_TIMEOUT + std::time::Duration::from_secs(1),
            );
            anyhow::ensure!(gone, "{c} (pid {pid}) still runs");
            println!(
                "{c} (pid {pid}) {}",
                if graceful { "stopped" } else { "killed" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "lab")]
fn lab_up(args: &LabArgs) -> anyhow::Result<ExitCode> {
    let opts = args.options();
    let mut lab = lab::Lab::up(&opts).context("lab up")?;
    let state = opts.state_dir.display();
    let kubeconfig = lab.kubeconfig();
    println!(
        "lab is up: {} nodes, {} workloads; {} in this process, the controller and {} agents as processes of their own",
        lab.topology.nodes.len(),
        lab.topology.workloads.len(),
        match opts.api {
            lab::ApiKind::StandIn => "API stand-in",
            lab::ApiKind::KubeApiServer => "kube-apiserver (with etcd)",
        },
        lab.topology.nodes.len()
    );
    for (k, w) in lab.topology.workloads.iter().enumerate() {
        let ips: Vec<String> = (0..w.networks.len())
            .map(|m| match lab.attachment(k, m) {
                Some((ip, _)) => ip.to_string(),
                None => "(not attached)".into(),
            })
            .collect();
        println!(
            "  workload {:<10} on {:<8} {}",
            w.name,
            w.node,
            ips.join(", ")
        );
    }
    println!("kubeconfig: {}", kubeconfig.display());
    println!("try:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get kubedvr -A            # routers, floating IPs, SNAT gateways, external networks");
    println!("  kubectl describe dvr -n tenant-a main");
    println!("  kube-dvr lab exec a-web -- ping -c 3 10.10.2.10");
    println!("  kube-dvr lab exec ext-host -- ping -c 3 203.0.113.100");
    println!("  kube-dvr lab exec node-1 -- ls {state}/nodes/node-1/netns   # the node's qrouter-/fip-/snat- namespaces");
    println!("  kube-dvr lab kill agent/gw-1      # SIGKILL; `lab start agent/gw-1` runs it again");
    println!("  kube-dvr lab link gw-1 underlay down");
    println!("Ctrl-C (or `kube-dvr lab down --state-dir {state}`) removes everything.");
    // Signals are awaited on a thread of their own: the lab's calls block
    // on the lab's runtime and must not run inside another one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    // `lab stop|kill api` asks with SIGUSR1.
    let stop_api = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api_flag = stop_api.clone();
    // `lab start api` with SIGUSR2.
    let start_api = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api_start_flag = start_api.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
            let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = usr1.recv() => {
                        api_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ = usr2.recv() => {
                        api_start_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        });
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut api_up = true;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        lab.cluster_mut().reap();
        if stop_api.swap(false, std::sync::atomic::Ordering::Relaxed) && api_up {
            lab.cluster_mut().stop_api();
            api_up = false;
            println!("lab: the API server is stopped (components run on what they cached)");
        }
        if start_api.swap(false, std::sync::atomic::Ordering::Relaxed) && !api_up {
            match lab.cluster_mut().start_api() {
                Ok(()) => {
                    api_up = true;
                    println!("lab: the API server serves again");
                }
                Err(e) => eprintln!("lab: {e}"),
            }
        }
        if !api_up {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        // Play the CNI: plug in workloads whose subnet appeared (say, added
        // with kubectl) once the cluster converged.
        if let Err(e) = lab.try_converge(std::time::Duration::from_millis(300)) {
            eprintln!("lab: {e}");
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let removed = lab.down();
    println!("lab down: removed {} namespaces", removed.len());
    Ok(ExitCode::SUCCESS)
}

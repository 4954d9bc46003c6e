//! The lab: kube-dvr on one Linux machine, with nodes simulated as network
//! namespaces. It loads a topology (the physical world) and manifests (what
//! users ask for), runs them through the same resolution, planner and
//! dataplane engine as a cluster, and probes real traffic between
//! workloads, nodes and external hosts.
pub mod apiserver;
pub mod cluster;
pub mod identities;
pub mod infra;
pub mod manifests;
pub mod matrix;
pub mod probe;
pub mod procs;
pub mod runtime;
pub mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;

use crate::api::kinds::for_each_kind;
use crate::api::DvrKind;
use crate::controller::desired::cluster_input;
use crate::dataplane::engine::{Engine, EngineConfig};
use crate::plan::plan_node;
use crate::plan::resolve::{self, Resolution};

pub use cluster::{ApiKind, LabCluster};
pub use infra::LabPaths;
pub use manifests::Manifests;
pub use procs::Component;
pub use topology::Topology;

/// Where `lab` keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/kube-dvr-lab";
/// How long `apply` waits for the cluster to converge.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub topology: PathBuf,
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
    pub api: ApiKind,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    #[error(transparent)]
    Manifests(#[from] manifests::ManifestError),
    #[error(transparent)]
    Infra(#[from] infra::InfraError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("node {node}: {source}")]
    Engine {
        node: String,
        source: crate::dataplane::engine::Error,
    },
    #[error("a lab is already up at {0} (run `kube-dvr lab down` first)")]
    AlreadyUp(String),
    #[error("{0}")]
    Other(String),
}

/// A running lab: simulated hardware, the API stand-in, the controller and
/// one agent per node.
pub struct Lab {
    pub paths: LabPaths,
    pub topology: Topology,
    /// What the lab applies through the API; [`Lab::apply`] makes the API
    /// match it (tests edit it, as a user edits manifests).
    pub manifests: Manifests,
    /// The resolution of what the API holds, as of the last convergence.
    pub resolution: Resolution,
    pub cluster: Option<LabCluster>,
    api: ApiKind,
    stop: Arc<AtomicBool>,
    /// Each workload's service's own stop flag ([`Lab::stop_service`]).
    services: BTreeMap<String, Arc<AtomicBool>>,
    /// Workload interfaces (workload index, network index) the lab's
    /// runtime has attached through the CNI plugin, with the address and
    /// MAC the plugin's result gave them.
    attached: BTreeMap<(usize, usize), (std::net::Ipv4Addr, crate::plan::model::MacAddr)>,
}

impl Lab {
    /// Build the simulated hardware, start the cluster, apply the manifests
    /// and wait until every node has programmed them. On failure nothing is
    /// left behind.
    pub fn up(opts: &LabOptions) -> Result<Lab, LabError> {
        let topology = Topology::load(&opts.topology)?;
        let manifests = Manifests::load(&opts.manifests)?;
        Lab::up_on(&opts.state_dir, topology, manifests, opts.api)
    }

    /// [`Lab::up_on`] the API stand-in.
    pub fn up_with(
        state_dir: &Path,
        topology: Topology,
        manifests: Manifests,
    ) -> Result<Lab, LabError> {
        Lab::up_on(state_dir, topology, manifests, ApiKind::StandIn)
    }

    pub fn up_on(
        state_dir: &Path,
        topology: Topology,
        manifests: Manifests,
        api: ApiKind,
    ) -> Result<Lab, LabError> {
        let paths = LabPaths::new(state_dir);
        let left = infra::leftovers(&paths);
        if !left.is_empty() {
            return Err(LabError::AlreadyUp(paths.root.display().to_string()));
        }
        let mut lab = Lab {
            paths,
            topology,
            manifests,
            resolution: Resolution::default(),
            cluster: None,
            api,
            stop: Arc::new(AtomicBool::new(false)),
            services: Default::default(),
            attached: Default::default(),
        };
        let built = lab.build().and_then(|()| lab.apply());
        if let Err(e) = built {
            lab.stop.store(true, Ordering::Relaxed);
            if let Some(c) = lab.cluster.take() {
                c.shutdown();
            }
            infra::teardown(&lab.paths);
            return Err(e);
        }
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        std::fs::create_dir_all(&self.paths.root).map_err(|e| LabError::Other(e.to_string()))?;
        std::fs::write(self.paths.pid_file(), std::process::id().to_string())
            .map_err(|e| LabError::Other(e.to_string()))?;
        infra::build(&self.paths, &self.topology)?;
        let names: Vec<String> = self
            .topology
            .workloads
            .iter()
            .map(|w| w.name.clone())
            .collect();
        for name in names {
            self.start_service(&name)?;
        }
        for s in &self.topology.external_segments {
            for h in &s.hosts {
                let own = Arc::new(AtomicBool::new(false));
                probe::serve(&self.paths.host(&h.name), &h.name, self.stop.clone(), own)
                    .map_err(|e| LabError::Other(format!("probe service in {}: {e}", h.name)))?;
            }
        }
        self.cluster = Some(LabCluster::start(&self.paths, &self.topology, self.api)?);
        Ok(())
    }

    /// Start workload `name`'s "who are you" service (again).
    pub fn start_service(&mut self, name: &str) -> Result<(), LabError> {
        let own = Arc::new(AtomicBool::new(false));
        probe::serve(
            &self.paths.workload(name),
            name,
            self.stop.clone(),
            own.clone(),
        )
        .map_err(|e| LabError::Other(format!("probe service in {name}: {e}")))?;
        self.services.insert(name.to_string(), own);
        Ok(())
    }

    /// Stop workload `name`'s service: its ports refuse connections (a
    /// failed backend).
    pub fn stop_service(&mut self, name: &str) {
        if let Some(own) = self.services.remove(name) {
            own.store(true, Ordering::Relaxed);
            // The accept loops notice within their 5 ms poll; the
            // listeners close when they exit.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn cluster(&self) -> &LabCluster {
        self.cluster.as_ref().expect("a running lab has a cluster")
    }

    pub fn cluster_mut(&mut self) -> &mut LabCluster {
        self.cluster.as_mut().expect("a running lab has a cluster")
    }

    /// The kubeconfig of the lab's API server (admin on kube-apiserver).
    pub fn kubeconfig(&self) -> PathBuf {
        self.cluster().kubeconfig.clone()
    }

    /// Make the API hold the manifests, wait until the controller and every
    /// agent have converged, then plug workloads in (the CNI's part).
    pub fn apply(&mut self) -> Result<(), LabError> {
        let m = self.manifests.clone();
        self.cluster_mut().sync(&m)?;
        self.converge()
    }

    /// Wait for convergence on whatever the API holds (also changes made
    /// with kubectl), attach workloads whose networks now exist (the
    /// runtime's part: the CNI plugin records their Ports), and wait again
    /// until the nodes have programmed those Ports.
    pub fn converge(&mut self) -> Result<(), LabError> {
        self.converge_within(CONVERGE_TIMEOUT)
    }

    /// Like [`Lab::converge`], but give up quietly after `timeout`
    /// (returns whether the cluster had converged).
    pub fn try_converge(&mut self, timeout: Duration) -> Result<bool, LabError> {
        match self.converge_within(timeout) {
            Ok(()) => Ok(true),
            Err(LabError::Cluster(cluster::ClusterError::NotConverged { .. })) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn converge_within(&mut self, timeout: Duration) -> Result<(), LabError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let snapshot = self.cluster().wait_converged(left)?;
            if self.attach_workloads()? == 0 {
                self.resolution = resolve::resolve(&cluster_input(&snapshot));
                return Ok(());
            }
        }
    }

    /// Attach each workload network not attached yet whose
    /// NetworkAttachmentDefinition exists, through the CNI plugin
    /// ([`runtime`]), all at once; returns how many were attached. A
    /// failed ADD is an error (the lab's workloads are all valid).
    fn attach_workloads(&mut self) -> Result<usize, LabError> {
        let mut todo = Vec::new();
        for (k, w) in self.topology.workloads.iter().enumerate() {
            for (m, net) in w.networks.iter().enumerate() {
                if self.attached.contains_key(&(k, m)) {
                    continue;
                }
                let Some(config) = self.cluster().nad_config(&net.network)? else {
                    continue;
                };
                let pod_uid = self.cluster().pod_uid(&w.namespace, &w.name)?;
                todo.push((
                    k,
                    runtime::Attach {
                        workload: w,
                        m,
                        net,
                        config,
                        pod_uid,
                    },
                ));
            }
        }
        if todo.is_empty() {
            return Ok(0);
        }
        let plugin = runtime::plugin_path().map_err(LabError::Other)?;
        let paths = &self.paths;
        let results: Vec<Result<Option<serde_json::Value>, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (todo.iter())
                .map(|(_, a)| s.spawn(|| runtime::add_with_retries(paths, &plugin, a, 3)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("plugin thread"))
                .collect()
        });
        let mut done = Vec::new();
        for ((k, a), r) in todo.iter().zip(results) {
            let result = r.map_err(LabError::Other)?.unwrap_or_default();
            if a.m == 0 {
                if let Some(gw) = runtime::result_gateway(&result) {
                    runtime::default_route(paths, &a.workload.name, gw).map_err(LabError::Other)?;
                }
            }
            let addr = runtime::result_address(&result).ok_or_else(|| {
                LabError::Other(format!(
                    "CNI ADD of {}: no address in {result}",
                    a.workload.name
                ))
            })?;
            done.push(((*k, a.m), addr));
        }
        let n = done.len();
        self.attached.extend(done);
        Ok(n)
    }

    /// The address and MAC workload `k`'s network `m` got from the CNI
    /// plugin (`None` before it is attached).
    pub fn attachment(
        &self,
        k: usize,
        m: usize,
    ) -> Option<(std::net::Ipv4Addr, crate::plan::model::MacAddr)> {
        self.attached.get(&(k, m)).copied()
    }

    /// Check the kernel against the plans: a full pass of a fresh engine on
    /// every node (as an agent makes after a restart). Returns the kernel
    /// writes it had to make: 0 when every agent has programmed exactly its
    /// plan.
    pub fn resync(&mut self) -> Result<u64, LabError> {
        let mut total = 0;
        for n in &self.topology.nodes {
            let cfg = EngineConfig {
                root_netns: self.paths.node(&n.name),
                netns_dir: self.paths.node_netns_dir(&n.name),
            };
            let mut engine = Engine::new(cfg).map_err(|source| LabError::Engine {
                node: n.name.clone(),
                source,
            })?;
            let desired = plan_node(&self.resolution.view, &n.name);
            let report = engine
                .reconcile(&desired)
                .map_err(|source| LabError::Engine {
                    node: n.name.clone(),
                    source,
                })?;
            if report.writes.total() > 0 {
                tracing::warn!(node = %n.name, writes = ?report.writes, "resync: the kernel differed from the plan");
            }
            total += report.writes.total();
        }
        Ok(total)
    }

    /// Remove everything the lab made. Returns what was removed.
    pub fn down(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.cluster.take() {
            c.shutdown();
        }
        infra::teardown(&self.paths)
    }
}

/// `lab demo`: up, probe, print, down. Returns whether every probe agreed.
pub fn demo(opts: &LabOptions, out: &mut dyn std::io::Write) -> Result<bool, LabError> {
    let mut lab = Lab::up(opts)?;
    let result = (|| -> Result<bool, LabError> {
        print_status(out, &lab).map_err(|e| LabError::Other(e.to_string()))?;
        let probes = matrix::expected(&lab);
        let mut results = matrix::run(&lab, &probes);
        // A load-balancer backend fails and comes back.
        results.extend(matrix::backend_failure(&mut lab, out)?);
        matrix::print(out, &lab, &results).map_err(|e| LabError::Other(e.to_string()))?;
        Ok(results.iter().all(|r| r.agrees()))
    })();
    let removed = lab.down();
    let _ = writeln!(out, "lab down: removed {} namespaces", removed.len());
    result
}

/// A kind's columns in [`print_status`]: one impl per kind.
trait StatusRow: DvrKind {
    /// The address it stands for, if any.
    fn address(&self) -> Option<String>;
    /// Where it is programmed.
    fn placement(&self) -> String;
}

impl StatusRow for crate::api::ExternalNetwork {
    fn address(&self) -> Option<String> {
        Some(self.spec.cidr.clone())
    }
    fn placement(&self) -> String {
        let ports = self.status.as_ref().map_or(0, |st| st.node_ports.len());
        format!("{ports} node ports")
    }
}

impl StatusRow for crate::api::DistributedRouter {
    fn address(&self) -> Option<String> {
        None
    }
    fn placement(&self) -> String {
        self.status
            .as_ref()
            .map(|st| st.nodes.join(","))
            .unwrap_or_default()
    }
}

impl StatusRow for crate::api::FloatingIP {
    fn address(&self) -> Option<String> {
        self.status.as_ref()?.address.clone()
    }
    fn placement(&self) -> String {
        self.status
            .as_ref()
            .and_then(|st| st.node.clone())
            .unwrap_or_default()
    }
}

impl StatusRow for crate::api::SnatGateway {
    fn address(&self) -> Option<String> {
        self.status.as_ref()?.address.clone()
    }
    fn placement(&self) -> String {
        (self.status.as_ref())
            .and_then(|st| st.active_node.clone())
            .unwrap_or_default()
    }
}

impl StatusRow for crate::api::RouterFirewall {
    fn address(&self) -> Option<String> {
        None
    }
    fn placement(&self) -> String {
        self.status
            .as_ref()
            .map(|st| st.nodes.join(","))
            .unwrap_or_default()
    }
}

impl StatusRow for crate::api::PortForwarding {
    fn address(&self) -> Option<String> {
        self.status.as_ref()?.address.clone()
    }
    fn placement(&self) -> String {
        (self.status.as_ref())
            .and_then(|st| st.node.clone())
            .unwrap_or_default()
    }
}

impl StatusRow for crate::api::LoadBalancer {
    fn address(&self) -> Option<String> {
        self.status.as_ref()?.address.clone()
    }
    fn placement(&self) -> String {
        (self.status.as_ref())
            .and_then(|st| st.node.clone())
            .unwrap_or_default()
    }
}

/// What `kubectl get kubedvr -A` would show: every object's Ready, reason,
/// address and node, as the controller wrote them.
fn print_status(out: &mut dyn std::io::Write, lab: &Lab) -> Result<(), Box<dyn std::error::Error>> {
    use crate::api::conditions::{find_condition, READY};
    let s = lab.cluster().snapshot()?;
    writeln!(
        out,
        "{:<20} {:<22} {:<6} {:<12} {:<15} NODE",
        "KIND", "NAME", "READY", "REASON", "ADDRESS"
    )?;
    let mut row = |kind: &str,
                   meta: &kube::api::ObjectMeta,
                   conds: &[crate::api::Condition],
                   addr: Option<&str>,
                   node: String| {
        let ready = find_condition(conds, READY);
        let name = match &meta.namespace {
            Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
            None => meta.name.clone().unwrap_or_default(),
        };
        writeln!(
            out,
            "{kind:<20} {name:<22} {:<6} {:<12} {:<15} {node}",
            ready.map(|c| c.status.as_str()).unwrap_or("-"),
            ready.map(|c| c.reason.as_str()).unwrap_or("-"),
            addr.unwrap_or("-"),
        )
    };
    for_each_kind!(|K| {
        for o in K::of(&s.objects) {
            let conds = o.conditions().unwrap_or(&[]);
            let (addr, node) = (o.address(), o.placement());
            row(K::KIND.as_str(), o.meta(), conds, addr.as_deref(), node)?;
        }
    });
    writeln!(out)?;
    Ok(())
}

/// `lab down`: remove a lab by its state directory, even after a crash.
pub fn down(state_dir: &Path) -> (Vec<String>, Vec<String>) {
    let paths = LabPaths::new(state_dir);
    if let Ok(pid) = std::fs::read_to_string(paths.pid_file()) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // Only a live kube-dvr process: a stale pid file may name a pid
            // the kernel has since given to something else.
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("kube-dvr"));
            if ours && pid as u32 != std::process::id() {
                // A running `lab up`: stop it (it tears down itself) and wait
                // until it is gone, so none of its agents still programs a
                // node while the namespaces are removed.
                let pid = nix::unistd::Pid::from_raw(pid);
                if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
                    let start = std::time::Instant::now();
                    while nix::sys::signal::kill(pid, None).is_ok()
                        && start.elapsed() < std::time::Duration::from_secs(30)
                    {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
        }
    }
    // Component processes left running (a crashed or killed `lab up`, or
    // started by `lab start` after it).
    let mut removed: Vec<String> = procs::end_all(&paths)
        .into_iter()
        .map(|p| format!("process {p}"))
        .collect();
    let running = procs::running(&paths);
    removed.extend(infra::teardown(&paths));
    let mut left = infra::leftovers(&paths);
    left.extend(running.into_iter().map(|p| format!("process {p}")));
    (removed, left)
}

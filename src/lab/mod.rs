//! The lab: kube-dvr on one Linux machine, with nodes simulated as network
//! namespaces. It loads a topology (the physical world) and manifests (what
//! users ask for), runs them through the same resolution, planner and
//! dataplane engine as a cluster, and probes real traffic between
//! workloads, nodes and external hosts.
pub mod infra;
pub mod manifests;
pub mod matrix;
pub mod probe;
pub mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dataplane::engine::{Engine, EngineConfig, Report};
use crate::plan::resolve::{self, ClusterInput, NodeInfo, PodInfo, PodNetwork, Resolution};
use crate::plan::{names, plan_node};

pub use infra::LabPaths;
pub use manifests::Manifests;
pub use topology::Topology;

/// Where `lab` keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/kube-dvr-lab";

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub topology: PathBuf,
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    #[error(transparent)]
    Manifests(#[from] manifests::ManifestError),
    #[error(transparent)]
    Infra(#[from] infra::InfraError),
    #[error("node {node}: {source}")]
    Engine { node: String, source: crate::dataplane::engine::Error },
    #[error("a lab is already up at {0} (run `kube-dvr lab down` first)")]
    AlreadyUp(String),
    #[error("{0}")]
    Other(String),
}

/// A running lab.
pub struct Lab {
    pub paths: LabPaths,
    pub topology: Topology,
    pub manifests: Manifests,
    pub resolution: Resolution,
    engines: BTreeMap<String, Engine>,
    stop: Arc<AtomicBool>,
}

impl Lab {
    /// Build the simulated hardware, program every node from the manifests
    /// and start the probe services. On failure nothing is left behind.
    pub fn up(opts: &LabOptions) -> Result<Lab, LabError> {
        let topology = Topology::load(&opts.topology)?;
        let manifests = Manifests::load(&opts.manifests)?;
        Lab::up_with(&opts.state_dir, topology, manifests)
    }

    pub fn up_with(state_dir: &Path, topology: Topology, manifests: Manifests) -> Result<Lab, LabError> {
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
            engines: BTreeMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let built = lab.build().and_then(|()| lab.apply().map(|_| ()));
        if let Err(e) = built {
            lab.stop.store(true, Ordering::Relaxed);
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
        for n in &self.topology.nodes {
            let cfg = EngineConfig {
                root_netns: self.paths.node(&n.name),
                netns_dir: self.paths.node_netns_dir(&n.name),
            };
            let engine = Engine::new(cfg).map_err(|source| LabError::Engine { node: n.name.clone(), source })?;
            self.engines.insert(n.name.clone(), engine);
        }
        for w in &self.topology.workloads {
            probe::serve(&self.paths.workload(&w.name), &w.name, self.stop.clone())
                .map_err(|e| LabError::Other(format!("probe service in {}: {e}", w.name)))?;
        }
        for s in &self.topology.external_segments {
            for h in &s.hosts {
                probe::serve(&self.paths.host(&h.name), &h.name, self.stop.clone())
                    .map_err(|e| LabError::Other(format!("probe service in {}: {e}", h.name)))?;
            }
        }
        Ok(())
    }

    /// What the cluster would tell the resolver: nodes with their published
    /// VTEPs, pods with their Multus network-status.
    pub fn cluster_input(&self) -> ClusterInput {
        let t = &self.topology;
        ClusterInput {
            external_networks: self.manifests.external_networks.clone(),
            routers: self.manifests.routers.clone(),
            floating_ips: self.manifests.floating_ips.clone(),
            snat_gateways: self.manifests.snat_gateways.clone(),
            pods: t
                .workloads
                .iter()
                .map(|w| PodInfo {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    node: Some(w.node.clone()),
                    networks: w
                        .networks
                        .iter()
                        .enumerate()
                        .map(|(m, n)| PodNetwork {
                            network: n.network.clone(),
                            interface: Some(format!("eth{m}")),
                            ip: n.ip.addr(),
                            mac: n.mac,
                        })
                        .collect(),
                })
                .collect(),
            nodes: t
                .nodes
                .iter()
                .map(|n| NodeInfo {
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                    vtep: Some(n.vtep),
                    ready: true,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Resolve the manifests, program every node, plug workloads in.
    /// Statuses are fed back so allocations stay put across calls, as the
    /// controller's are through the API.
    pub fn apply(&mut self) -> Result<BTreeMap<String, Report>, LabError> {
        self.feed_back_status();
        self.resolution = resolve::resolve(&self.cluster_input());
        self.feed_back_status();
        let mut reports = BTreeMap::new();
        for (node, engine) in self.engines.iter_mut() {
            let desired = plan_node(&self.resolution.view, node);
            let report = engine
                .reconcile(&desired)
                .map_err(|source| LabError::Engine { node: node.clone(), source })?;
            if !report.errors.is_empty() {
                let errs: Vec<String> = report.errors.iter().map(|e| format!("{}: {}", e.op, e.error)).collect();
                return Err(LabError::Other(format!("node {node}: {}", errs.join("; "))));
            }
            reports.insert(node.clone(), report);
        }
        self.attach_workloads()?;
        Ok(reports)
    }

    /// Copy the resolver's statuses into the manifests' objects.
    fn feed_back_status(&mut self) {
        use crate::plan::view::ObjectKey;
        let key = |m: &kube::api::ObjectMeta| {
            ObjectKey::new(m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
        };
        let r = &self.resolution;
        for o in &mut self.manifests.routers {
            if let Some(s) = r.routers.get(&key(&o.metadata)) {
                o.status = Some(s.clone());
            }
        }
        for o in &mut self.manifests.floating_ips {
            if let Some(s) = r.floating_ips.get(&key(&o.metadata)) {
                o.status = Some(s.clone());
            }
        }
        for o in &mut self.manifests.snat_gateways {
            if let Some(s) = r.snat_gateways.get(&key(&o.metadata)) {
                o.status = Some(s.clone());
            }
        }
        for o in &mut self.manifests.external_networks {
            if let Some(s) = r.external_networks.get(o.metadata.name.as_deref().unwrap_or("")) {
                o.status = Some(s.clone());
            }
        }
    }

    /// Plug each workload's ports into its subnet's bridge (the CNI's job).
    fn attach_workloads(&self) -> Result<(), LabError> {
        for (k, w) in self.topology.workloads.iter().enumerate() {
            for (m, net) in w.networks.iter().enumerate() {
                let Some((router, subnet)) = self.subnet_of(&w.node, net.mac) else { continue };
                let sub = router.subnets.iter().find(|s| s.name == subnet).expect("endpoint's subnet");
                let gw = (m == 0).then_some(sub.gateway);
                infra::attach_workload(
                    &self.paths,
                    &w.node,
                    &w.name,
                    &infra::workload_port(k, m),
                    &names::bridge(sub.vni),
                    gw,
                )?;
            }
        }
        Ok(())
    }

    /// The router and subnet an endpoint (by node and MAC) resolved to.
    fn subnet_of(&self, node: &str, mac: crate::plan::model::MacAddr) -> Option<(&crate::plan::view::RouterView, String)> {
        self.resolution.view.routers.iter().find_map(|r| {
            r.endpoints
                .iter()
                .find(|e| e.node == node && e.mac == mac)
                .map(|e| (r, e.subnet.clone()))
        })
    }

    /// Reconcile every node again without changing anything: total writes.
    pub fn resync(&mut self) -> Result<u64, LabError> {
        let mut total = 0;
        for (node, engine) in self.engines.iter_mut() {
            let desired = plan_node(&self.resolution.view, node);
            let report = engine
                .reconcile(&desired)
                .map_err(|source| LabError::Engine { node: node.clone(), source })?;
            total += report.writes.total();
        }
        Ok(total)
    }

    /// Remove everything the lab made. Returns what was removed.
    pub fn down(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.engines);
        infra::teardown(&self.paths)
    }
}

/// `lab demo`: up, probe, print, down. Returns whether every probe agreed.
pub fn demo(opts: &LabOptions, out: &mut dyn std::io::Write) -> Result<bool, LabError> {
    let lab = Lab::up(opts)?;
    let result = (|| -> Result<bool, LabError> {
        let probes = matrix::expected(&lab);
        let results = matrix::run(&lab, &probes);
        matrix::print(out, &lab, &results).map_err(|e| LabError::Other(e.to_string()))?;
        Ok(results.iter().all(|r| r.agrees()))
    })();
    let removed = lab.down();
    let _ = writeln!(out, "lab down: removed {} namespaces", removed.len());
    result
}

/// `lab down`: remove a lab by its state directory, even after a crash.
pub fn down(state_dir: &Path) -> (Vec<String>, Vec<String>) {
    let paths = LabPaths::new(state_dir);
    if let Ok(pid) = std::fs::read_to_string(paths.pid_file()) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            if pid as u32 != std::process::id() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
    }
    let removed = infra::teardown(&paths);
    (removed, infra::leftovers(&paths))
}

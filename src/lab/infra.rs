//! The lab's simulated hardware: a switch namespace with the underlay bridge
//! and one bridge per external segment, a namespace per node (its "host"
//! network namespace, where the agent's engine has its root), per external
//! host and per workload.
//!
//! Isolation between simulated nodes: each node's engine gets its own
//! namespace directory (`nodes/<node>/netns`) as its `/run/netns`, and the
//! node's namespace file as its root. An engine lists, creates and deletes
//! namespaces only in its own directory and links only in its own root, so it
//! sees exactly what an agent on a real node would see. The lab itself is not
//! an agent: it builds the simulated hardware with `ip -batch` (forking is
//! fine here; the engine never forks per object).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::dataplane::netns;

use super::topology::Topology;

/// Where one lab keeps its namespace files and state.
#[derive(Clone, Debug)]
pub struct LabPaths {
    pub root: PathBuf,
}

impl LabPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LabPaths { root: root.into() }
    }
    /// Namespace files of the simulated hardware.
    pub fn infra(&self) -> PathBuf {
        self.root.join("infra")
    }
    /// A node's own namespace directory: its agent's `/run/netns`.
    pub fn node_netns_dir(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node).join("netns")
    }
    pub fn switch(&self) -> PathBuf {
        self.infra().join("switch")
    }
    pub fn node(&self, node: &str) -> PathBuf {
        self.infra().join(format!("node-{node}"))
    }
    pub fn workload(&self, name: &str) -> PathBuf {
        self.infra().join(format!("wl-{name}"))
    }
    pub fn host(&self, name: &str) -> PathBuf {
        self.infra().join(format!("host-{name}"))
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    /// The node agent's CNI socket (a real node's is
    /// `/run/kube-dvr/cni.sock`; the lab's nodes share one file system).
    pub fn cni_socket(&self, node: &str) -> PathBuf {
        self.root.join("cni").join(format!("{node}.sock"))
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("lab.pid")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("lab namespace {name}: {source}")]
    Netns {
        name: String,
        source: std::io::Error,
    },
    #[error("ip -batch in {ns}: {message}\nscript:\n{script}")]
    Ip {
        ns: String,
        message: String,
        script: String,
    },
}

/// Run an `ip -batch` script inside the namespace file `ns`.
pub fn ip_batch(ns: &Path, script: &str) -> Result<(), InfraError> {
    let err = |message: String| InfraError::Ip {
        ns: ns.display().to_string(),
        message,
        script: script.to_string(),
    };
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("spawn nsenter/ip: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

fn mk_ns(dir: &Path, name: &str) -> Result<PathBuf, InfraError> {
    netns::create(dir, name).map_err(|source| InfraError::Netns {
        name: name.into(),
        source,
    })?;
    Ok(netns::path(dir, name))
}

/// Build the simulated hardware: switch, nodes, external hosts, and an
/// empty network namespace per workload.
pub fn build(paths: &LabPaths, t: &Topology) -> Result<(), InfraError> {
    let infra = paths.infra();
    let sw = mk_ns(&infra, "switch")?;
    let mut sw_script = String::from("link add underlay type bridge\nlink set underlay up\n");
    for (j, s) in t.external_segments.iter().enumerate() {
        sw_script += &format!("link add x{j} type bridge\nlink set x{j} up\n");
        let _ = s;
    }
    ip_batch(&sw, &sw_script)?;

    for (i, n) in t.nodes.iter().enumerate() {
        let node = mk_ns(&infra, &format!("node-{}", n.name))?;
        std::fs::create_dir_all(paths.node_netns_dir(&n.name)).map_err(|source| {
            InfraError::Netns {
                name: n.name.clone(),
                source,
            }
        })?;
        let mut sw_s = format!(
            "link add u{i} type veth peer name eth0 netns {node}\nlink set u{i} master underlay up\n",
            node = node.display()
        );
        let mut node_s = format!(
            "addr add {}/{} dev eth0\nlink set eth0 up\n",
            n.vtep,
            t.underlay.prefix_len()
        );
        for (j, s) in t.external_segments.iter().enumerate() {
            sw_s += &format!(
                "link add x{j}n{i} type veth peer name ext{j} netns {node}\nlink set x{j}n{i} master x{j} up\n",
                node = node.display()
            );
            node_s += &format!(
                "link add {br} type bridge\nlink set {br} up\nlink set ext{j} master {br} up\n",
                br = s.node_bridge
            );
        }
        ip_batch(&sw, &sw_s)?;
        ip_batch(&node, &node_s)?;
    }

    for (j, s) in t.external_segments.iter().enumerate() {
        for (k, h) in s.hosts.iter().enumerate() {
            let host = mk_ns(&infra, &format!("host-{}", h.name))?;
            ip_batch(
                &sw,
                &format!(
                    "link add x{j}h{k} type veth peer name eth0 netns {host}\nlink set x{j}h{k} master x{j} up\n",
                    host = host.display()
                ),
            )?;
            ip_batch(
                &host,
                &format!(
                    "addr add {}/{} dev eth0\nlink set eth0 up\n",
                    h.ip,
                    s.cidr.prefix_len()
                ),
            )?;
        }
    }

    // Workloads are empty sandboxes: kube-dvr's CNI plugin gives them their
    // interfaces (the lab's runtime, `super::runtime`).
    for w in &t.workloads {
        mk_ns(&infra, &format!("wl-{}", w.name))?;
    }
    Ok(())
}

/// A node's links to the outside world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeLink {
    /// `eth0`: the underlay (its VTEP).
    Underlay,
    /// `ext<j>`: every external segment's link.
    External,
}

/// Set `node`'s underlay or external link(s) down or up (a cable pulled,
/// or plugged back in). Returns the links changed.
pub fn set_node_link(
    paths: &LabPaths,
    node: &str,
    link: NodeLink,
    up: bool,
) -> Result<Vec<String>, InfraError> {
    let ns = paths.node(node);
    if !ns.exists() {
        return Err(InfraError::Netns {
            name: format!("node-{node}"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("not found under {}", paths.root.display()),
            ),
        });
    }
    let names: Vec<String> = match link {
        NodeLink::Underlay => vec!["eth0".into()],
        NodeLink::External => {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", ns.display()))
                .args(["ip", "-o", "link", "show"])
                .output()
                .map_err(|e| InfraError::Ip {
                    ns: ns.display().to_string(),
                    message: format!("run nsenter: {e}"),
                    script: String::new(),
                })?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
                .filter(|n| {
                    n.strip_prefix("ext")
                        .is_some_and(|j| j.parse::<u32>().is_ok())
                })
                .collect()
        }
    };
    let state = if up { "up" } else { "down" };
    let script: String = names
        .iter()
        .map(|n| format!("link set {n} {state}\n"))
        .collect();
    ip_batch(&ns, &script)?;
    Ok(names)
}

/// Remove every namespace the lab made (simulated hardware and every node's
/// own namespaces), then the state directory. Returns what was removed.
/// Safe to run on a half-built or crashed lab.
pub fn teardown(paths: &LabPaths) -> Vec<String> {
    let mut removed = Vec::new();
    let nodes_dir = paths.root.join("nodes");
    let node_dirs: Vec<PathBuf> = std::fs::read_dir(&nodes_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("netns"))
                .collect()
        })
        .unwrap_or_default();
    // Node-owned namespaces first (their veths die with them), then hardware.
    for dir in node_dirs.iter().chain(std::iter::once(&paths.infra())) {
        for name in netns::list(dir).unwrap_or_default() {
            match netns::delete(dir, &name) {
                Ok(()) => removed.push(format!("{}", dir.join(&name).display())),
                Err(e) => eprintln!(
                    "lab down: could not remove {}: {e}",
                    dir.join(&name).display()
                ),
            }
        }
    }
    // The namespace directories are (shared) bind mounts of themselves, as
    // `ip netns` makes /run/netns: unmount them before removing the tree.
    for dir in node_dirs.iter().chain(std::iter::once(&paths.infra())) {
        let _ = nix::mount::umount2(dir.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&paths.root);
    removed
}

/// Namespace files still present under the lab's root (for verification).
pub fn leftovers(paths: &LabPaths) -> Vec<String> {
    let mut left = Vec::new();
    let mut dirs = vec![paths.infra()];
    if let Ok(rd) = std::fs::read_dir(paths.root.join("nodes")) {
        dirs.extend(rd.filter_map(|e| e.ok()).map(|e| e.path().join("netns")));
    }
    for d in dirs {
        for n in netns::list(&d).unwrap_or_default() {
            left.push(d.join(n).display().to_string());
        }
    }
    left
}

//! The lab's component processes: the controller and one agent per node
//! run as processes of the `kube-dvr` binary (`kube-dvr controller`,
//! `kube-dvr agent`), as pods would on a cluster, so faults are real: a
//! SIGKILLed agent leaves its kernel state and nothing else.
//!
//! Each component's record (pid, command line, environment, metrics
//! address) is kept in the lab's state directory (`procs/<name>.json`), so
//! that another `kube-dvr lab` invocation can stop, kill or start it again
//! from the recorded command line, and `lab down` can end them after a
//! crash of `lab up`.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::infra::LabPaths;

/// Set in a component's environment by the lab: the component exits with
/// (SIGKILL) the lab process that started it (see [`die_with_parent`]).
pub const PARENT_ENV: &str = "KUBE_DVR_LAB_PARENT";

/// How long a graceful stop may take before the process is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A component's name: `api`, `controller` or `agent/<node>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Api,
    Controller,
    Agent(String),
}

impl std::str::FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "api" => Ok(Component::Api),
            "controller" => Ok(Component::Controller),
            _ => match s.strip_prefix("agent/") {
                Some(n) if !n.is_empty() && !n.contains('/') => Ok(Component::Agent(n.into())),
                _ => Err(format!(
                    "unknown component {s:?}: api, controller or agent/<node>"
                )),
            },
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Component::Api => f.write_str("api"),
            Component::Controller => f.write_str("controller"),
            Component::Agent(n) => write!(f, "agent/{n}"),
        }
    }
}

impl Component {
    /// The file stem of its record and log.
    fn stem(&self) -> String {
        match self {
            Component::Api => "api".into(),
            Component::Controller => "controller".into(),
            Component::Agent(n) => format!("agent-{n}"),
        }
    }
}

/// What the lab knows of a component process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The process (0: not running).
    pub pid: u32,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment set on top of the lab's.
    pub env: Vec<(String, String)>,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub metrics: SocketAddr,
}

/// The directory of the records.
pub fn dir(paths: &LabPaths) -> PathBuf {
    paths.root.join("procs")
}

fn record_path(paths: &LabPaths, c: &Component) -> PathBuf {
    dir(paths).join(format!("{}.json", c.stem()))
}

/// The log a process started outside `lab up` writes to.
pub fn log_path(paths: &LabPaths, c: &Component) -> PathBuf {
    dir(paths).join(format!("{}.log", c.stem()))
}

pub fn read(paths: &LabPaths, c: &Component) -> Result<Record, String> {
    let p = record_path(paths, c);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        format!(
            "no record of {c} ({}: {e}); is a lab up with --state-dir {}?",
            p.display(),
            paths.root.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn write(paths: &LabPaths, c: &Component, r: &Record) -> Result<(), String> {
    std::fs::create_dir_all(dir(paths)).map_err(|e| e.to_string())?;
    let p = record_path(paths, c);
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Every recorded component.
pub fn all(paths: &LabPaths) -> Vec<(Component, Record)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir(paths))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let c = match stem {
            "controller" => Component::Controller,
            "api" => Component::Api,
            s => match s.strip_prefix("agent-") {
                Some(n) => Component::Agent(n.into()),
                None => continue,
            },
        };
        if let Ok(r) = read(paths, &c) {
            out.push((c, r));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether `pid` is a live (not zombie) `kube-dvr` process.
pub fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("kube-dvr"))
}

/// Send `sig` to the recorded process of `c` if it runs; returns its pid.
pub fn signal(paths: &LabPaths, c: &Component, sig: Signal) -> Result<Option<u32>, String> {
    let r = read(paths, c)?;
    if !alive(r.pid) {
        return Ok(None);
    }
    signal::kill(Pid::from_raw(r.pid as i32), sig).map_err(|e| format!("kill {}: {e}", r.pid))?;
    Ok(Some(r.pid))
}

/// Wait until `pid` is gone (reaping it through `child` when it is ours).
/// Returns whether it is.
pub fn wait_gone(pid: u32, child: Option<&mut Child>, timeout: Duration) -> bool {
    let start = Instant::now();
    let mut child = child.filter(|c| c.id() == pid);
    loop {
        let gone = match child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => !alive(pid),
        };
        if gone {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stop `pid` (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) or kill it
/// (SIGKILL), and wait until it is gone.
pub fn end(pid: u32, mut child: Option<&mut Child>, graceful: bool) {
    if !alive(pid) {
        if let Some(c) = child.filter(|c| c.id() == pid) {
            let _ = c.try_wait();
        }
        return;
    }
    let p = Pid::from_raw(pid as i32);
    if graceful {
        let _ = signal::kill(p, Signal::SIGTERM);
        if wait_gone(pid, child.as_deref_mut(), STOP_TIMEOUT) {
            return;
        }
        tracing::warn!(pid, "did not stop within 10 s: killing it");
    }
    let _ = signal::kill(p, Signal::SIGKILL);
    wait_gone(pid, child, STOP_TIMEOUT);
}

/// The command of a record.
fn command(r: &Record) -> Command {
    let mut cmd = Command::new(&r.argv[0]);
    cmd.args(&r.argv[1..]).envs(r.env.iter().cloned());
    cmd
}

/// Start `c` again from its record, detached from the caller (its own
/// process group, its log in [`log_path`]); records the new pid.
pub fn start_detached(paths: &LabPaths, c: &Component) -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    let mut r = read(paths, c)?;
    if alive(r.pid) {
        return Err(format!("{c} is running (pid {})", r.pid));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(paths, c))
        .map_err(|e| e.to_string())?;
    let mut cmd = command(&r);
    cmd.env_remove(PARENT_ENV)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let child = cmd
        .spawn()
        .map_err(|e| format!("start {c} ({}): {e}", r.argv[0]))?;
    r.pid = child.id();
    write(paths, c, &r)?;
    Ok(r.pid)
}

/// Starts processes from one thread that lives as long as the lab: its
/// children die with it (see [`die_with_parent`]), also when the lab
/// process is killed.
pub struct Spawner {
    tx: Option<mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawner {
    pub fn new() -> Spawner {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<std::io::Result<Child>>)>();
        let thread = std::thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the lab's spawner thread");
        Spawner {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Start a process for `r` (stderr and stdout: the lab's) and record
    /// its pid.
    pub fn spawn(&self, paths: &LabPaths, c: &Component, r: &mut Record) -> Result<Child, String> {
        let mut cmd = command(r);
        cmd.env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null());
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("spawner running")
            .send((cmd, tx))
            .map_err(|_| "the spawner thread is gone".to_string())?;
        let child = rx
            .recv()
            .map_err(|_| "the spawner thread is gone".to_string())?
            .map_err(|e| format!("start {c} ({}): {e}", r.argv[0]))?;
        r.pid = child.id();
        write(paths, c, r)?;
        Ok(child)
    }
}

impl Default for Spawner {
    fn default() -> Self {
        Spawner::new()
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// In a component the lab started (`$KUBE_DVR_LAB_PARENT` set): die with
/// the lab process, so a crashed or killed lab leaves no component behind.
pub fn die_with_parent() {
    let Some(parent) = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The parent may have died before the line above.
    if nix::unistd::getppid().as_raw() != parent {
        std::process::exit(1);
    }
}

/// End every recorded component that still runs (graceful first); returns
/// what was ended.
pub fn end_all(paths: &LabPaths) -> Vec<String> {
    let mut ended = Vec::new();
    for (c, r) in all(paths) {
        if alive(r.pid) {
            end(r.pid, None, true);
            ended.push(format!("{c} (pid {})", r.pid));
        }
    }
    ended
}

/// Component processes of the lab at `paths` still running.
pub fn running(paths: &LabPaths) -> Vec<String> {
    all(paths)
        .into_iter()
        .filter(|(_, r)| alive(r.pid))
        .map(|(c, r)| format!("{c} (pid {})", r.pid))
        .collect()
}

/// A blocking HTTP GET of `path` on `addr`: status and body (`None` when
/// nothing answers).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((status, body.to_string()))
}

/// A component's metrics and readiness, read over HTTP from the process.
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub addr: SocketAddr,
}

impl Telemetry {
    /// `/metrics` (empty when the process does not answer).
    pub fn render(&self) -> String {
        self.try_render().unwrap_or_default()
    }
    /// `/metrics`; `None` when the process does not answer.
    pub fn try_render(&self) -> Option<String> {
        match http_get(self.addr, "/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }
    /// The value of a counter or gauge, as [`crate::telemetry::Telemetry::value`]
    /// (`None` when absent or the process does not answer).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{k}=\"{v}\"")
            })
            .collect();
        let prefix = format!("{name}{{{}}} ", labels.join(","));
        self.render()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
    }
    /// `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        matches!(http_get(self.addr, "/readyz"), Some((200, _)))
    }
    /// `/healthz` answers 200.
    pub fn is_healthy(&self) -> bool {
        matches!(http_get(self.addr, "/healthz"), Some((200, _)))
    }
}

/// A free loopback port for a component's metrics (taken again on a
/// restart: the server binds with SO_REUSEADDR).
pub fn free_addr() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

/// The `kube-dvr` binary the components run ([`super::runtime::plugin_path`]).
pub fn exe() -> Result<PathBuf, String> {
    super::runtime::plugin_path()
}

/// `path` as a string argument.
pub fn arg(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names() {
        for s in ["api", "controller", "agent/node-1"] {
            let c: Component = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
        assert_eq!(
            "agent/gw-1".parse::<Component>(),
            Ok(Component::Agent("gw-1".into()))
        );
        for bad in ["agent", "agent/", "agent/a/b", "node-1", ""] {
            assert!(bad.parse::<Component>().is_err(), "{bad}");
        }
    }
}

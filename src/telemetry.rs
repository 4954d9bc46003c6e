//! Metrics in the Prometheus text format, and the `/metrics`, `/healthz`,
//! `/readyz` endpoints every component serves.
//!
//! A deliberately small registry: counters, gauges and histograms keyed by
//! name and label set, rendered on scrape. Names follow controller-runtime
//! where one applies (`controller_runtime_reconcile_total`, ...) and
//! `kube_dvr_*` for the dataplane. `/readyz` answers 200 once the component
//! says its first full sync is done.
//!
//! `/healthz` reflects progress, not mere existence: with a watchdog
//! ([`Telemetry::watch_progress`]) it answers 503 once a reconcile pass has
//! been running longer than the bound (a stuck kernel call, a hung API
//! request of the controller's pass) or work has been pending that long
//! without a pass finishing, so kubelet's liveness probe restarts a wedged
//! component. It recovers by itself when the pass ends. It also answers
//! 503 for good once an in-process libnftables call never returned
//! (`dataplane::nft::exec::wedged`): only a new process frees the library.
//! (The agent's own API writes — its Node report, its heartbeat — are
//! tasks of their own that retry; they never hold a pass.)
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Histogram buckets in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    help: BTreeMap<&'static str, (Kind, &'static str)>,
    values: BTreeMap<(&'static str, String), f64>,
    histograms: BTreeMap<(&'static str, String), Histogram>,
}

/// The watchdog's view of a reconcile loop.
#[derive(Default)]
struct Progress {
    /// Unhealthy beyond this; `None` = no watchdog.
    bound: Option<Duration>,
    /// The pass in progress started then.
    running: Option<Instant>,
    /// The oldest change no pass has started on yet.
    pending: Option<Instant>,
}

/// How long an HTTP client may take to send its request (and how long an
/// idle connection is kept): connections do not pile up.
pub const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by a component's loops and its HTTP endpoint.
#[derive(Default)]
pub struct Telemetry {
    reg: Mutex<Registry>,
    ready: AtomicBool,
    healthy: AtomicBool,
    progress: Mutex<Progress>,
}

fn label_string(labels: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s
}

impl Telemetry {
    pub fn new() -> Arc<Telemetry> {
        let t = Telemetry::default();
        t.healthy.store(true, Ordering::Relaxed);
        Arc::new(t)
    }

    fn describe(&self, reg: &mut Registry, name: &'static str, kind: Kind, help: &'static str) {
        reg.help.entry(name).or_insert((kind, help));
    }

    /// Add `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: u64) {
        let mut reg = self.reg.lock().unwrap();
        self.describe(&mut reg, name, Kind::Counter, help);
        *reg.values.entry((name, label_string(labels))).or_default() += by as f64;
    }

    /// Set a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], value: f64) {
        let mut reg = self.reg.lock().unwrap();
        self.describe(&mut reg, name, Kind::Gauge, help);
        reg.values.insert((name, label_string(labels)), value);
    }

    /// Record one observation (seconds) in a histogram.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        seconds: f64,
    ) {
        let mut reg = self.reg.lock().unwrap();
        self.describe(&mut reg, name, Kind::Histogram, help);
        let h = reg
            .histograms
            .entry((name, label_string(labels)))
            .or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// The value of a counter or gauge (tests, benchmarks).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let reg = self.reg.lock().unwrap();
        let key = label_string(labels);
        reg.values
            .iter()
            .find(|((n, l), _)| *n == name && *l == key)
            .map(|(_, v)| *v)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Judge health by progress (see the module docs): unhealthy when a pass
    /// runs, or work waits, longer than `bound`.
    pub fn watch_progress(&self, bound: Duration) {
        self.progress.lock().unwrap().bound = Some(bound);
    }

    /// A change arrived that a pass has to handle.
    pub fn work_pending(&self) {
        let mut p = self.progress.lock().unwrap();
        p.pending.get_or_insert_with(Instant::now);
    }

    /// A pass starts: it takes on every pending change.
    pub fn pass_started(&self) {
        let mut p = self.progress.lock().unwrap();
        p.running = Some(Instant::now());
        p.pending = None;
    }

    /// The pass ended (with or without errors: it made progress).
    pub fn pass_finished(&self) {
        self.progress.lock().unwrap().running = None;
    }

    /// What `/healthz` answers: alive, and no pass or pending work older
    /// than the watchdog's bound.
    pub fn is_healthy(&self) -> bool {
        if !self.healthy.load(Ordering::Relaxed) || crate::dataplane::nft::exec::wedged() {
            return false;
        }
        let p = self.progress.lock().unwrap();
        let Some(bound) = p.bound else {
            return true;
        };
        let stale = |t: Option<Instant>| t.is_some_and(|t| t.elapsed() > bound);
        !stale(p.running) && !stale(p.pending)
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        let reg = self.reg.lock().unwrap();
        let mut out = String::new();
        for (name, (kind, help)) in &reg.help {
            let t = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {t}");
            if *kind == Kind::Histogram {
                for ((n, l), h) in reg.histograms.iter().filter(|((n, _), _)| n == name) {
                    let sep = if l.is_empty() { "" } else { "," };
                    for (i, b) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"{b}\"}} {}", h.counts[i]);
                    }
                    let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                    let _ = writeln!(out, "{n}_sum{{{l}}} {}", h.sum);
                    let _ = writeln!(out, "{n}_count{{{l}}} {}", h.count);
                }
            } else {
                for ((n, l), v) in reg.values.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{n}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

/// A component's start-up plumbing: a fresh registry served on `addr` in
/// the background, and a token cancelled on SIGTERM or Ctrl-C (logged with
/// `note`). Call inside a tokio runtime.
pub fn start_component(
    addr: SocketAddr,
    note: &'static str,
) -> (Arc<Telemetry>, tokio_util::sync::CancellationToken) {
    let t = Telemetry::new();
    let served = t.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(addr, served).await {
            tracing::error!(%addr, error = %e, "metrics server failed");
        }
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down{note}");
        stop.cancel();
    });
    (t, shutdown)
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `addr` until the task is
/// dropped. A minimal HTTP/1.1 responder: one request per connection.
pub async fn serve(addr: SocketAddr, t: Arc<Telemetry>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, t).await
}

pub async fn serve_on(listener: TcpListener, t: Arc<Telemetry>) -> std::io::Result<()> {
    serve_with(listener, t, HTTP_READ_TIMEOUT).await
}

/// [`serve_on`] with a bound on reading each request and on writing each
/// response: a client that connects and says nothing (or reads nothing) is
/// dropped after `timeout`.
pub async fn serve_with(
    listener: TcpListener,
    t: Arc<Telemetry>,
    timeout: Duration,
) -> std::io::Result<()> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let t = t.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(m) => n += m,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        return true;
                    }
                }
                true
            };
            if !matches!(tokio::time::timeout(timeout, read).await, Ok(true)) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let (code, ctype, body) = match path {
                "/metrics" => (200, "text/plain; version=0.0.4", t.render()),
                "/healthz" | "/livez" if t.is_healthy() => (200, "text/plain", "ok\n".into()),
                "/healthz" | "/livez" => (
                    503,
                    "text/plain",
                    "unhealthy: reconcile loop stuck or stopped\n".into(),
                ),
                "/readyz" if t.is_ready() => (200, "text/plain", "ok\n".into()),
                "/readyz" => (503, "text/plain", "first sync not done\n".into()),
                _ => (404, "text/plain", "not found\n".into()),
            };
            let reason = match code {
                200 => "OK",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(timeout, sock.write_all(resp.as_bytes())).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let t = Telemetry::new();
        t.inc(
            "kube_dvr_kernel_writes_total",
            "Kernel writes.",
            &[("kind", "route")],
            3,
        );
        t.inc(
            "kube_dvr_kernel_writes_total",
            "Kernel writes.",
            &[("kind", "route")],
            2,
        );
        t.set(
            "kube_dvr_programmed_objects",
            "Objects.",
            &[("kind", "FloatingIP")],
            7.0,
        );
        t.observe(
            "kube_dvr_reconcile_duration_seconds",
            "Pass time.",
            &[],
            0.02,
        );
        let text = t.render();
        assert!(
            text.contains("kube_dvr_kernel_writes_total{kind=\"route\"} 5"),
            "{text}"
        );
        assert!(text.contains("# TYPE kube_dvr_programmed_objects gauge"));
        assert!(
            text.contains("kube_dvr_reconcile_duration_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kube_dvr_reconcile_duration_seconds_bucket{le=\"0.01\"} 0"),
            "{text}"
        );
        assert_eq!(
            t.value("kube_dvr_kernel_writes_total", &[("kind", "route")]),
            Some(5.0)
        );
    }

    #[tokio::test]
    async fn endpoints_answer_with_real_meaning() {
        let t = Telemetry::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_on(l, t.clone()));
        async fn get(addr: SocketAddr, path: &str) -> String {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        t.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        t.inc(
            "controller_runtime_reconcile_total",
            "Reconciles.",
            &[("controller", "x"), ("result", "success")],
            1,
        );
        assert!(get(addr, "/metrics")
            .await
            .contains("controller_runtime_reconcile_total{controller=\"x\",result=\"success\"} 1"));
    }

    #[test]
    fn health_follows_progress() {
        let t = Telemetry::new();
        assert!(t.is_healthy(), "no watchdog: healthy");
        t.watch_progress(Duration::from_millis(50));
        t.pass_started();
        assert!(t.is_healthy());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!t.is_healthy(), "a pass stuck beyond the bound");
        t.pass_finished();
        assert!(t.is_healthy(), "recovers when the pass ends");
        t.work_pending();
        std::thread::sleep(Duration::from_millis(80));
        assert!(!t.is_healthy(), "work pending beyond the bound");
        t.pass_started();
        t.pass_finished();
        assert!(t.is_healthy());
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_with(l, Telemetry::new(), Duration::from_millis(200)));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Say nothing: the server hangs up (EOF) well before 5 s.
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server closed the idle connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}

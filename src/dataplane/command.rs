//! Calls the dataplane makes outside its own netlink code, each bounded in
//! time: the `nft` process where libnftables cannot be loaded ([`run`]),
//! and libnftables calls in-process ([`bounded`]). A call that hangs (a
//! wedged kernel lock, a stuck binary) is reported as an error at the
//! bound, so a pass always ends and its failure is retried, instead of
//! blocking the agent forever behind a healthy-looking `/healthz`.
//!
//! A process is killed at the bound. A library call cannot be: [`bounded`]
//! stops waiting for it and leaves its thread behind (see there).
//!
//! The bound is one process-wide value ([`set_timeout`]): commands run on
//! threads inside other network namespaces that have no engine at hand, and
//! one agent runs one engine.
use std::io::{self, Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default bound on one command: far above the seconds a big `nft` batch
/// takes, far below a liveness probe's patience.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64);

/// Set the bound on every later command.
pub fn set_timeout(d: Duration) {
    TIMEOUT_MS.store(d.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// The current bound.
pub fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Run `cmd` with `input` on its stdin and collect its output, like
/// [`Command::output`], but kill it once it runs longer than [`timeout`]
/// (`io::ErrorKind::TimedOut`).
pub fn run(cmd: &mut Command, input: Option<Vec<u8>>) -> io::Result<Output> {
    let limit = timeout();
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Feed stdin and drain stdout/stderr from helper threads: a chatty
    // command can never deadlock us on a full pipe.
    let writer = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(bytes)) => Some(std::thread::spawn(move || stdin.write_all(&bytes))),
        _ => None,
    };
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let mut nap = Duration::from_micros(50);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{:?} killed after {limit:?}", cmd.get_program()),
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if let Some(w) = writer {
        // A command that exits without reading all its input is judged by
        // its status, not by the broken pipe.
        let _ = w.join();
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Run `f` on a new thread and wait at most [`timeout`] for its result
/// (`io::ErrorKind::TimedOut` after that). For in-process library calls
/// (libnftables), which, unlike a process, cannot be killed: at the bound
/// the caller gets its error and goes on (the pass fails, is reported and
/// retried, `/healthz` sees a pass that ended), while the call's thread is
/// left to finish or hang on its own. What it holds stays held: a hung
/// libnftables call keeps the library's process-wide lock, so `nft::exec`
/// marks the library wedged (later calls go through the `nft` process,
/// `/healthz` fails until kubelet restarts the agent). A call that ends after its bound
/// still takes effect (a batch still commits; the next pass observes it).
///
/// The thread is spawned from the calling thread, so it starts in the
/// calling thread's network namespace.
pub fn bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    bounded_for(what, timeout(), f)
}

fn bounded_for<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("kd-bounded".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    match rx.recv_timeout(limit) {
        Ok(v) => Ok(v),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} abandoned after {limit:?} (an in-process call cannot be killed)"),
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(io::Error::other(format!("{what} panicked")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_input_pass_through() {
        let out = run(&mut Command::new("cat"), Some(b"hello".to_vec())).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn a_hanging_command_is_killed() {
        // The bound is process-wide: only this test lowers it, and `sleep`
        // is the only command that would take that long.
        let t0 = Instant::now();
        let r = {
            let mut c = Command::new("sh");
            c.args(["-c", "sleep 0.2; sleep 5"]);
            let limit = Duration::from_millis(300);
            // Bound this call only (restored below).
            let old = timeout();
            set_timeout(limit);
            let r = run(&mut c, None);
            set_timeout(old);
            r
        };
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_hanging_call_is_abandoned_at_the_bound() {
        // Explicit bounds: `a_hanging_command_is_killed` lowers the
        // process-wide one meanwhile, and a panic's backtrace can take long.
        let ample = Duration::from_secs(30);
        assert_eq!(bounded_for("sum", ample, || 1 + 1).unwrap(), 2);
        let t0 = Instant::now();
        let limit = Duration::from_millis(200);
        let r = bounded_for("nap", limit, || std::thread::sleep(Duration::from_secs(3)));
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("nap abandoned after"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        let e = bounded_for("boom", ample, || panic!("expected")).unwrap_err();
        assert!(e.to_string().contains("boom panicked"), "{e}");
    }
}

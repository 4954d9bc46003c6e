//! External commands the dataplane runs (`nft`; conntrack is over netlink), each bounded
//! in time: a command that hangs (a wedged kernel lock, a stuck binary) is
//! killed and reported as an error, so a pass always ends and its failure
//! is retried, instead of blocking the agent forever behind a healthy-looking
//! `/healthz`.
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
}

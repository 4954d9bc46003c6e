//! Real traffic in the lab: a tiny "who are you" TCP service in every
//! workload and external host, and probes (TCP and ping) run from inside
//! their source namespace.
//!
//! The service answers `<name> <source address it saw>`: the name proves
//! which workload answered (overlapping tenants can reuse an address), the
//! address proves what NAT did on the way.
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::dataplane::netns;

pub const PORT: u16 = 7777;
/// A second port the service answers on (firewall rules tell them apart).
pub const OTHER_PORT: u16 = 7780;

/// Start the service inside `ns` on [`PORT`] and [`OTHER_PORT`]; it runs
/// until `stop` (the lab's) or `own` (this service's) is set. One thread
/// per service, asleep in `poll(2)` until a connection comes (a lab has
/// hundreds of services: polling loops would eat the machine).
pub fn serve(
    ns: &Path,
    name: &str,
    stop: Arc<AtomicBool>,
    own: Arc<AtomicBool>,
) -> std::io::Result<()> {
    // The listening sockets are created inside the namespace and stay there.
    let listeners = netns::run_in(ns, || {
        [PORT, OTHER_PORT]
            .map(|port| TcpListener::bind(("0.0.0.0", port)))
            .into_iter()
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("whoami-{name}"))
        .spawn(move || {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            while !stop.load(Ordering::Relaxed) && !own.load(Ordering::Relaxed) {
                // Wakes for a connection, or every 100 ms to see the flags.
                let mut fds: Vec<PollFd> = (listeners.iter())
                    .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                    .collect();
                if !matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(n) if n > 0) {
                    continue;
                }
                for l in &listeners {
                    while let Ok((mut s, peer)) = l.accept() {
                        let _ = s.set_nonblocking(false);
                        let _ = writeln!(s, "{name} {}", peer.ip());
                    }
                }
            }
        })?;
    Ok(())
}

/// What a probe observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The service named `who` answered and saw `seen` as our address.
    Answered {
        who: String,
        seen: Ipv4Addr,
    },
    /// ping got replies (it cannot tell who answered).
    Echoed,
    NoAnswer,
    /// Several connections: who answered how often, seeing which source,
    /// and how many got no answer.
    Spread {
        answers: std::collections::BTreeMap<String, (usize, Ipv4Addr)>,
        missed: usize,
    },
}

/// `n` TCP connections in a row from inside `ns` to `dst`:`port` (it
/// stops after two without an answer: the verdict is made).
pub fn spread(ns: &Path, dst: Ipv4Addr, port: u16, n: usize, timeout: Duration) -> Observed {
    let mut answers = std::collections::BTreeMap::new();
    let mut missed = 0;
    for _ in 0..n {
        match tcp_port(ns, dst, port, timeout) {
            Observed::Answered { who, seen } => answers.entry(who).or_insert((0, seen)).0 += 1,
            _ => missed += 1,
        }
        if missed >= 2 {
            break;
        }
    }
    Observed::Spread { answers, missed }
}

/// TCP probe from inside `ns` to `dst`, port [`PORT`].
pub fn tcp(ns: &Path, dst: Ipv4Addr, timeout: Duration) -> Observed {
    tcp_port(ns, dst, PORT, timeout)
}

/// TCP probe from inside `ns` to `dst`:`port`.
pub fn tcp_port(ns: &Path, dst: Ipv4Addr, port: u16, timeout: Duration) -> Observed {
    let run = move || -> Option<(String, Ipv4Addr)> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        let mut line = String::new();
        BufReader::new(&mut s).read_line(&mut line).ok()?;
        let mut it = line.split_whitespace();
        Some((it.next()?.to_string(), it.next()?.parse().ok()?))
    };
    match netns::run_in(ns, run) {
        Ok(Some((who, seen))) => Observed::Answered { who, seen },
        _ => Observed::NoAnswer,
    }
}

/// ICMP echo from inside `ns`: up to three requests, success on any reply.
pub fn ping(ns: &Path, dst: Ipv4Addr) -> Observed {
    let run = move || {
        Command::new("ping")
            .args(["-n", "-q", "-c", "3", "-i", "0.2", "-W", "1"])
            .arg(dst.to_string())
            .output()
    };
    match netns::run_in(ns, run) {
        Ok(Ok(out)) if out.status.success() => Observed::Echoed,
        _ => Observed::NoAnswer,
    }
}

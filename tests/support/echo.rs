//! Echo services inside a network namespace, for lab tests and benchmarks:
//! a line-echo TCP service (one line back per line) for long-lived flows,
//! and a datagram echo (each UDP datagram back to its sender) for probes.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;

use kube_dvr::dataplane::netns;

/// Listen on `port` in namespace `ns`; one thread per connection.
#[allow(dead_code)] // not every includer uses both services
pub fn echo_server(ns: &Path, port: u16) {
    let l = netns::run_in(ns, || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    if writeln!(w, "{line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Send every UDP datagram to `port` in namespace `ns` back to its sender,
/// from one thread.
#[allow(dead_code)] // not every includer uses both services
pub fn udp_echo_server(ns: &Path, port: u16) {
    let s = netns::run_in(ns, || UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
}

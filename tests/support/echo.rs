//! A line-echo TCP service (one line back per line) inside a network
//! namespace, for long-lived flows in lab tests and benchmarks.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use kube_dvr::dataplane::netns;

/// Listen on `port` in namespace `ns`; one thread per connection.
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

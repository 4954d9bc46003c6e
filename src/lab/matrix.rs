//! The probe matrix: what should happen between every pair of endpoints
//! (derived from the resolved view, i.e. from what users asked for, not from
//! the kernel), what did happen, and whether the two agree.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::probe::{self, Observed};
use super::Lab;
use crate::plan::view::ObjectKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ping,
}

/// What a probe should see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `who` answers and sees `seen` as the source.
    Reach { who: String, seen: Ipv4Addr },
    /// ping gets replies.
    Echo,
    /// The target never answers. (Another workload that owns the same
    /// address in the source's own tenant may: that is not the target.)
    Isolated { target: String },
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// Section of the matrix: `east-west`, `floating-in`, `egress`, `hairpin`.
    pub section: &'static str,
    pub from: String,
    pub from_ns: PathBuf,
    pub to: String,
    pub dst: Ipv4Addr,
    pub kind: Kind,
    pub expect: Expect,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub probe: Probe,
    pub observed: Observed,
}

impl Outcome {
    pub fn agrees(&self) -> bool {
        match (&self.probe.expect, &self.observed) {
            (Expect::Reach { who, seen }, Observed::Answered { who: w, seen: s }) => {
                who == w && seen == s
            }
            (Expect::Echo, Observed::Echoed) => true,
            (Expect::Isolated { target }, Observed::Answered { who, .. }) => who != target,
            (Expect::Isolated { .. }, Observed::NoAnswer) => true,
            _ => false,
        }
    }
}

/// A workload's place in the view.
struct Ep {
    name: String,
    router: ObjectKey,
    ip: Ipv4Addr,
    ns: PathBuf,
}

/// Every probe worth running in this lab, with its expected outcome.
pub fn expected(lab: &Lab) -> Vec<Probe> {
    let view = &lab.resolution.view;
    let mut eps = Vec::new();
    for (k, w) in lab.topology.workloads.iter().enumerate() {
        let first = (0..w.networks.len()).find_map(|m| {
            let (_, mac) = lab.attachment(k, m)?;
            view.routers.iter().find_map(|r| {
                r.endpoints
                    .iter()
                    .find(|e| e.node == w.node && e.mac == mac)
                    .map(|e| (r.key.clone(), e.ip))
            })
        });
        if let Some((router, ip)) = first {
            eps.push(Ep {
                name: w.name.clone(),
                router,
                ip,
                ns: lab.paths.workload(&w.name),
            });
        }
    }
    let fip_of: BTreeMap<(ObjectKey, Ipv4Addr), Ipv4Addr> = view
        .floating_ips
        .iter()
        .map(|f| ((f.router.clone(), f.fixed_ip), f.address))
        .collect();
    let snat_of: BTreeMap<ObjectKey, Ipv4Addr> = view
        .snat_gateways
        .iter()
        .filter(|s| s.node.is_some())
        .map(|s| (s.router.clone(), s.address))
        .collect();
    // The address a workload's traffic to the outside carries, if any.
    let egress = |e: &Ep| {
        fip_of
            .get(&(e.router.clone(), e.ip))
            .or(snat_of.get(&e.router))
            .copied()
    };

    let mut out = Vec::new();
    let mk = |section, from: &Ep, to: String, dst, kind, expect| Probe {
        section,
        from: from.name.clone(),
        from_ns: from.ns.clone(),
        to,
        dst,
        kind,
        expect,
    };
    for a in &eps {
        for b in eps.iter().filter(|b| b.name != a.name) {
            let to = format!("{} {}", b.name, b.ip);
            if a.router == b.router {
                out.push(mk(
                    "east-west",
                    a,
                    to.clone(),
                    b.ip,
                    Kind::Tcp,
                    Expect::Reach {
                        who: b.name.clone(),
                        seen: a.ip,
                    },
                ));
                out.push(mk("east-west", a, to, b.ip, Kind::Ping, Expect::Echo));
            } else {
                let iso = Expect::Isolated {
                    target: b.name.clone(),
                };
                out.push(mk("isolation", a, to.clone(), b.ip, Kind::Tcp, iso.clone()));
                // ping cannot tell who answered: only where nobody in a's own
                // tenant owns the address.
                if !eps.iter().any(|c| c.router == a.router && c.ip == b.ip) {
                    out.push(mk("isolation", a, to, b.ip, Kind::Ping, iso));
                }
            }
        }
    }
    let hosts: Vec<(String, Ipv4Addr, PathBuf)> = lab
        .topology
        .external_segments
        .iter()
        .flat_map(|s| {
            s.hosts
                .iter()
                .map(|h| (h.name.clone(), h.ip, lab.paths.host(&h.name)))
        })
        .collect();
    for f in &view.floating_ips {
        let Some(target) = eps
            .iter()
            .find(|e| e.router == f.router && e.ip == f.fixed_ip)
        else {
            continue;
        };
        for (h, hip, hns) in &hosts {
            let host = Ep {
                name: h.clone(),
                router: ObjectKey::new("", ""),
                ip: *hip,
                ns: hns.clone(),
            };
            let to = format!("{} {}", target.name, f.address);
            out.push(mk(
                "floating-in",
                &host,
                to.clone(),
                f.address,
                Kind::Tcp,
                Expect::Reach {
                    who: target.name.clone(),
                    seen: *hip,
                },
            ));
            out.push(mk(
                "floating-in",
                &host,
                to,
                f.address,
                Kind::Ping,
                Expect::Echo,
            ));
        }
        for a in eps.iter().filter(|a| a.name != target.name) {
            let to = format!("{} {}", target.name, f.address);
            let expect = match egress(a) {
                Some(src) => Expect::Reach {
                    who: target.name.clone(),
                    seen: src,
                },
                None => Expect::Isolated {
                    target: target.name.clone(),
                },
            };
            out.push(mk("hairpin", a, to, f.address, Kind::Tcp, expect));
        }
    }
    for a in &eps {
        for (h, hip, _) in &hosts {
            let expect = match egress(a) {
                Some(src) => Expect::Reach {
                    who: h.clone(),
                    seen: src,
                },
                None => Expect::Isolated { target: h.clone() },
            };
            out.push(mk(
                "egress",
                a,
                format!("{h} {hip}"),
                *hip,
                Kind::Tcp,
                expect,
            ));
        }
    }
    out
}

/// Run probes, several at a time.
pub fn run(_lab: &Lab, probes: &[Probe]) -> Vec<Outcome> {
    let timeout = Duration::from_millis(1500);
    let mut out: Vec<Option<Outcome>> = vec![None; probes.len()];
    for (chunk_out, chunk) in out.chunks_mut(16).zip(probes.chunks(16)) {
        std::thread::scope(|s| {
            for (slot, p) in chunk_out.iter_mut().zip(chunk) {
                s.spawn(move || {
                    let observed = match p.kind {
                        Kind::Tcp => probe::tcp(&p.from_ns, p.dst, timeout),
                        Kind::Ping => probe::ping(&p.from_ns, p.dst),
                    };
                    *slot = Some(Outcome {
                        probe: p.clone(),
                        observed,
                    });
                });
            }
        });
    }
    out.into_iter()
        .map(|o| o.expect("every probe ran"))
        .collect()
}

fn show_expect(e: &Expect) -> String {
    match e {
        Expect::Reach { who, seen } => format!("{who} sees {seen}"),
        Expect::Echo => "echo".into(),
        Expect::Isolated { target } => format!("{target} unreachable"),
    }
}

fn show_observed(o: &Observed) -> String {
    match o {
        Observed::Answered { who, seen } => format!("{who} sees {seen}"),
        Observed::Echoed => "echo".into(),
        Observed::NoAnswer => "no answer".into(),
    }
}

/// Print the matrix, one line per probe, and a summary line.
pub fn print(out: &mut dyn std::io::Write, _lab: &Lab, results: &[Outcome]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<11} {:<9} {:<24} {:<5} {:<26} {:<26} RESULT",
        "SECTION", "FROM", "TO", "PROBE", "EXPECTED", "OBSERVED"
    )?;
    for r in results {
        let p = &r.probe;
        writeln!(
            out,
            "{:<11} {:<9} {:<24} {:<5} {:<26} {:<26} {}",
            p.section,
            p.from,
            p.to,
            match p.kind {
                Kind::Tcp => "tcp",
                Kind::Ping => "ping",
            },
            show_expect(&p.expect),
            show_observed(&r.observed),
            if r.agrees() { "ok" } else { "MISMATCH" }
        )?;
    }
    let bad = results.iter().filter(|r| !r.agrees()).count();
    writeln!(
        out,
        "{} probes: {} as expected, {} mismatched",
        results.len(),
        results.len() - bad,
        bad
    )
}

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
    /// [`SPREAD`] TCP connections in a row (to a load balancer).
    Spread,
}

/// Connections per [`Kind::Spread`] probe: with two backends the chance
/// that a random choice misses one is 2 × 2⁻²⁴.
pub const SPREAD: usize = 24;

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
    /// Every connection is answered, by each of these (backend → the
    /// source address it sees) at least once and by no one else.
    Spread {
        backends: BTreeMap<String, Ipv4Addr>,
    },
}

impl Expect {
    /// `who` answers and sees `seen`, or (`None`) never answers.
    fn reach(who: &str, seen: Option<Ipv4Addr>) -> Expect {
        match seen {
            Some(seen) => Expect::Reach {
                who: who.to_string(),
                seen,
            },
            None => Expect::Isolated {
                target: who.to_string(),
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// Section of the matrix: `east-west`, `floating-in`, `egress`, `hairpin`.
    pub section: &'static str,
    pub from: String,
    pub from_ns: PathBuf,
    pub to: String,
    pub dst: Ipv4Addr,
    /// TCP port ([`probe::PORT`] unless a section says otherwise).
    pub port: u16,
    pub kind: Kind,
    pub expect: Expect,
}

impl Probe {
    /// The same probe to TCP port `port`.
    fn at(self, port: u16) -> Probe {
        Probe { port, ..self }
    }
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
            (Expect::Spread { backends }, Observed::Spread { answers, .. })
                if backends.is_empty() =>
            {
                answers.is_empty()
            }
            (Expect::Spread { backends }, Observed::Spread { answers, missed }) => {
                *missed == 0
                    && answers.len() == backends.len()
                    && (answers.iter()).all(|(who, (_, seen))| backends.get(who) == Some(seen))
            }
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
    expected_of(lab, &endpoints(lab))
}

/// The lab's external hosts.
fn hosts(lab: &Lab) -> Vec<Ep> {
    (lab.topology.external_segments.iter())
        .flat_map(|s| {
            s.hosts.iter().map(|h| Ep {
                name: h.name.clone(),
                router: ObjectKey::new("", ""),
                ip: h.ip,
                ns: lab.paths.host(&h.name),
            })
        })
        .collect()
}

/// Every attached workload, at its first address on a router.
fn endpoints(lab: &Lab) -> Vec<Ep> {
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
    eps
}

/// [`expected`]'s probes once its endpoints are known.
fn expected_of(lab: &Lab, eps: &[Ep]) -> Vec<Probe> {
    let view = &lab.resolution.view;
    // The address a workload's traffic to the outside carries, if any.
    let egress = |e: &Ep| egress_of(view, e).map(|(a, _)| a);

    let mut out = Vec::new();
    let mk = |section, from: &Ep, to: String, dst, kind, expect| Probe {
        section,
        from: from.name.clone(),
        from_ns: from.ns.clone(),
        to,
        dst,
        port: probe::PORT,
        kind,
        expect,
    };
    // What the router's firewall (if any) says to a new flow.
    let allows = |router: &ObjectKey, ingress: bool, kind: Kind, port: u16, remote: Ipv4Addr| {
        let proto = if kind == Kind::Ping { "icmp" } else { "tcp" };
        firewall_allows(view, router, ingress, proto, port, remote)
    };
    for a in eps {
        for b in eps.iter().filter(|b| b.name != a.name) {
            let to = format!("{} {}", b.name, b.ip);
            if a.router == b.router {
                // East-west: never firewalled.
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
    let hosts = hosts(lab);
    for f in &view.floating_ips {
        let Some(target) = eps
            .iter()
            .find(|e| e.router == f.router && e.ip == f.fixed_ip)
        else {
            continue;
        };
        let to = format!("{} {}", target.name, f.address);
        for host in &hosts {
            for kind in [Kind::Tcp, Kind::Ping] {
                let allowed = allows(&f.router, true, kind, probe::PORT, host.ip);
                let expect = match kind {
                    Kind::Ping if allowed => Expect::Echo,
                    _ => Expect::reach(&target.name, Some(host.ip).filter(|_| allowed)),
                };
                out.push(mk("floating-in", host, to.clone(), f.address, kind, expect));
            }
            // The firewall: the other port, and the rules' verdict.
            let allowed = allows(&f.router, true, Kind::Tcp, probe::OTHER_PORT, host.ip);
            let p = mk(
                "firewall",
                host,
                format!("{} {}:{}", target.name, f.address, probe::OTHER_PORT),
                f.address,
                Kind::Tcp,
                Expect::reach(&target.name, Some(host.ip).filter(|_| allowed)),
            );
            out.push(p.at(probe::OTHER_PORT));
        }
        for a in eps.iter().filter(|a| a.name != target.name) {
            let seen = egress(a).filter(|src| {
                allows(&a.router, false, Kind::Tcp, probe::PORT, f.address)
                    && allows(&f.router, true, Kind::Tcp, probe::PORT, *src)
            });
            let expect = Expect::reach(&target.name, seen);
            out.push(mk("hairpin", a, to.clone(), f.address, Kind::Tcp, expect));
        }
    }
    for a in eps {
        for h in &hosts {
            for (section, port) in [("egress", probe::PORT), ("firewall", probe::OTHER_PORT)] {
                let seen = egress(a).filter(|_| allows(&a.router, false, Kind::Tcp, port, h.ip));
                let expect = Expect::reach(&h.name, seen);
                let p = mk(
                    section,
                    a,
                    format!("{} {}:{port}", h.name, h.ip),
                    h.ip,
                    Kind::Tcp,
                    expect,
                );
                out.push(p.at(port));
            }
        }
    }

    // Port forwarding: from outside (the client's address is kept), and
    // from the router's own workloads (hairpin: with a floating IP they
    // come from outside; through the SNAT gateway they are NATed to the
    // gateway's port on the target's subnet, so replies come back).
    let sg_ip = |router: &ObjectKey, target: Ipv4Addr| -> Option<Ipv4Addr> {
        let r = view.routers.iter().find(|r| &r.key == router)?;
        let sub = r.subnets.iter().find(|s| s.cidr.contains(&target))?;
        let g = view.snat_gateways.iter().find(|g| &g.router == router)?;
        Some(g.port_on(&sub.name)?.ip)
    };
    for pf in &view.port_forwardings {
        for e in &pf.forwards {
            let Some(target) = eps
                .iter()
                .find(|t| t.router == pf.router && t.ip == e.fixed_ip)
            else {
                continue;
            };
            // The first and last port of a range.
            let mut ports = vec![e.external.0];
            if e.external.1 != e.external.0 {
                ports.push(e.external.1);
            }
            for ext_port in ports {
                let internal = e.internal + (ext_port - e.external.0);
                let answers = [probe::PORT, probe::OTHER_PORT].contains(&internal);
                let to = format!("{} {}:{ext_port}", target.name, pf.address);
                for host in &hosts {
                    let ok = answers && allows(&pf.router, true, Kind::Tcp, internal, host.ip);
                    let expect = Expect::reach(&target.name, Some(host.ip).filter(|_| ok));
                    let p = mk(
                        "port-forward",
                        host,
                        to.clone(),
                        pf.address,
                        Kind::Tcp,
                        expect,
                    );
                    out.push(p.at(ext_port));
                }
                for a in eps
                    .iter()
                    .filter(|a| a.router == pf.router && a.name != target.name)
                {
                    let via_fip = egress_of(view, a).filter(|(_, fip)| *fip).map(|(a, _)| a);
                    let seen = match via_fip {
                        Some(src) => Some(src).filter(|_| {
                            allows(&a.router, false, Kind::Tcp, ext_port, pf.address)
                                && allows(&pf.router, true, Kind::Tcp, internal, src)
                        }),
                        None => sg_ip(&pf.router, e.fixed_ip),
                    };
                    let expect = Expect::reach(&target.name, seen.filter(|_| answers));
                    let p = mk("port-forward", a, to.clone(), pf.address, Kind::Tcp, expect);
                    out.push(p.at(ext_port));
                }
            }
        }
    }

    // Load balancers: connections spread over the backends, which see the
    // gateway's port on their subnet as the source.
    out.extend(lb_section(lab, eps, &hosts, &BTreeMap::new()));
    out
}

/// The load-balancer probes, with the backends in `down` out.
fn lb_section(
    lab: &Lab,
    eps: &[Ep],
    hosts: &[Ep],
    down: &BTreeMap<ObjectKey, Vec<Ipv4Addr>>,
) -> Vec<Probe> {
    let view = &lab.resolution.view;
    let allows = |router: &ObjectKey, port: u16, remote: Ipv4Addr| {
        firewall_allows(view, router, true, "tcp", port, remote)
    };
    let mut out = Vec::new();
    for (lb, backends) in balancers(lab, eps, down) {
        let to = format!("{} {}:{}", lb.key.name, lb.address, lb.ports[0].1);
        // The backends' port: what the firewall sees after translation.
        let port = lb.ports[0].2;
        for from in hosts.iter().chain(eps) {
            let own = from.router == lb.router;
            let open = match (&lb.subnet, egress_of(view, from)) {
                // A subnet VIP: the router's own workloads only (inside the
                // gateway: no firewall).
                (Some(_), _) => own,
                // An external VIP from outside.
                (None, _) if hosts.iter().any(|h| h.name == from.name) => {
                    allows(&lb.router, port, from.ip)
                }
                // From a workload: out through its floating IP (both
                // firewalls on the way), or, of the same router, through
                // the gateway itself (hairpin, not filtered).
                (None, Some((src, true))) => {
                    firewall_allows(view, &from.router, false, "tcp", lb.ports[0].1, lb.address)
                        && allows(&lb.router, port, src)
                }
                (None, Some((_, false))) => own,
                (None, None) => false,
            };
            let backends: BTreeMap<String, Ipv4Addr> = (backends.iter())
                .filter(|_| open)
                .map(|(name, _, seen)| (name.clone(), *seen))
                .collect();
            out.push(Probe {
                section: "load-balancer",
                from: from.name.clone(),
                from_ns: from.ns.clone(),
                to: to.clone(),
                dst: lb.address,
                port: lb.ports[0].1,
                kind: Kind::Spread,
                expect: Expect::Spread { backends },
            });
        }
    }
    out
}

/// Whether `router`'s firewall lets a new flow through: `ingress` from
/// `remote`, else to it. The rules as the user wrote them (the view), not
/// as nft has them.
pub fn firewall_allows(
    view: &crate::plan::view::ClusterView,
    router: &ObjectKey,
    ingress: bool,
    proto: &str,
    port: u16,
    remote: Ipv4Addr,
) -> bool {
    let Some(fw) = view.firewalls.iter().find(|f| &f.router == router) else {
        return true;
    };
    let rules = if ingress { &fw.ingress } else { &fw.egress };
    let hit = rules.iter().find(|r| {
        r.protocol.as_deref().is_none_or(|p| p == proto)
            && (r.ports.is_empty()
                || (proto != "icmp" && r.ports.iter().any(|(a, b)| *a <= port && port <= *b)))
            && (r.cidrs.is_empty() || r.cidrs.iter().any(|c| c.contains(&remote)))
    });
    hit.map_or(fw.default_allow, |r| r.allow)
}

/// A load balancer's backend: workload name, address, the source address
/// it sees.
type Backend = (String, Ipv4Addr, Ipv4Addr);

/// Each load balancer with its backends that answer (workload name,
/// address, the source address it sees), leaving out `down`.
fn balancers<'v>(
    lab: &'v Lab,
    eps: &[Ep],
    down: &BTreeMap<ObjectKey, Vec<Ipv4Addr>>,
) -> Vec<(&'v crate::plan::view::LoadBalancerView, Vec<Backend>)> {
    let view = &lab.resolution.view;
    let mut out = Vec::new();
    for lb in &view.load_balancers {
        let r = view.routers.iter().find(|r| r.key == lb.router);
        let g = view.snat_gateways.iter().find(|g| g.router == lb.router);
        let backends = (lb.backends.iter())
            .filter(|b| !down.get(&lb.key).is_some_and(|d| d.contains(b)))
            .filter_map(|b| {
                let ep = eps.iter().find(|e| e.router == lb.router && e.ip == *b)?;
                let sub = r?.subnets.iter().find(|s| s.cidr.contains(b))?;
                Some((ep.name.clone(), *b, g?.port_on(&sub.name)?.ip))
            })
            .collect();
        out.push((lb, backends));
    }
    out
}

/// The address `ep`'s traffic to the outside leaves with, and whether it
/// is its floating IP (else its router's SNAT address).
fn egress_of(view: &crate::plan::view::ClusterView, ep: &Ep) -> Option<(Ipv4Addr, bool)> {
    let fip = (view.floating_ips.iter()).find(|f| f.router == ep.router && f.fixed_ip == ep.ip);
    if let Some(f) = fip {
        return Some((f.address, true));
    }
    (view.snat_gateways.iter())
        .find(|g| g.router == ep.router && g.node.is_some())
        .map(|g| (g.address, false))
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
                        Kind::Tcp => probe::tcp_port(&p.from_ns, p.dst, p.port, timeout),
                        Kind::Ping => probe::ping(&p.from_ns, p.dst),
                        Kind::Spread => probe::spread(&p.from_ns, p.dst, p.port, SPREAD, timeout),
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
        Expect::Spread { backends } if backends.is_empty() => "no answer".into(),
        Expect::Spread { backends } => {
            let names: Vec<&str> = backends.keys().map(String::as_str).collect();
            format!("{} share", names.join("+"))
        }
    }
}

fn show_observed(o: &Observed) -> String {
    match o {
        Observed::Answered { who, seen } => format!("{who} sees {seen}"),
        Observed::Echoed => "echo".into(),
        Observed::NoAnswer => "no answer".into(),
        Observed::Spread { answers, missed } => {
            let mut parts: Vec<String> = (answers.iter())
                .map(|(who, (n, _))| format!("{who} {n}"))
                .collect();
            if *missed > 0 {
                parts.push(format!("none {missed}"));
            }
            parts.join(", ")
        }
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
                Kind::Spread => "tcp×24",
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

/// The load balancers' failure step: stop the service of one backend that
/// a load balancer shares with another, wait until the controller's status
/// says it failed its health check, probe every load balancer again (the
/// failed backend gets nothing), then start it and wait until it is back.
/// Prints what happens; returns the probes' outcomes.
pub fn backend_failure(
    lab: &mut Lab,
    out: &mut dyn std::io::Write,
) -> Result<Vec<Outcome>, super::LabError> {
    use super::LabError;
    let eps = endpoints(lab);
    let Some((victim, ip)) = balancers(lab, &eps, &BTreeMap::new())
        .into_iter()
        .find(|(_, b)| b.len() >= 2)
        .and_then(|(_, b)| b.last().map(|(n, ip, _)| (n.clone(), *ip)))
    else {
        return Ok(Vec::new());
    };
    let io = |e: std::io::Error| LabError::Other(e.to_string());
    let start = std::time::Instant::now();
    lab.stop_service(&victim);
    let down = wait_health(lab, ip, false)?;
    writeln!(
        out,
        "load-balancer: {victim} ({ip}) stopped; status says healthy=false after {:.1} s",
        start.elapsed().as_secs_f64()
    )
    .map_err(io)?;
    let probes = lb_section(lab, &eps, &hosts(lab), &down);
    let probes: Vec<Probe> = probes
        .into_iter()
        .map(|p| Probe {
            to: format!("{} ({victim} down)", p.to),
            ..p
        })
        .collect();
    let results = run(lab, &probes);
    let start = std::time::Instant::now();
    lab.start_service(&victim)?;
    wait_health(lab, ip, true)?;
    writeln!(
        out,
        "load-balancer: {victim} started again; status says healthy=true after {:.1} s",
        start.elapsed().as_secs_f64()
    )
    .map_err(io)?;
    Ok(results)
}

/// Wait (at most 30 s) until every LoadBalancer status that lists `ip`
/// says `healthy`; the backends down, per LoadBalancer.
fn wait_health(
    lab: &Lab,
    ip: Ipv4Addr,
    healthy: bool,
) -> Result<BTreeMap<ObjectKey, Vec<Ipv4Addr>>, super::LabError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = lab.cluster().snapshot()?;
        let mut down: BTreeMap<ObjectKey, Vec<Ipv4Addr>> = BTreeMap::new();
        let mut settled = true;
        for lb in &s.objects.load_balancers {
            let key = ObjectKey::new(
                lb.metadata.namespace.clone().unwrap_or_default(),
                lb.metadata.name.clone().unwrap_or_default(),
            );
            for b in lb.status.iter().flat_map(|st| &st.backends) {
                if b.ip == ip.to_string() && b.healthy != healthy {
                    settled = false;
                }
                if !b.healthy {
                    if let Ok(a) = b.ip.parse() {
                        down.entry(key.clone()).or_default().push(a);
                    }
                }
            }
        }
        if settled {
            return Ok(down);
        }
        if std::time::Instant::now() >= deadline {
            return Err(super::LabError::Other(format!(
                "no LoadBalancer status says {ip} healthy={healthy} after 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

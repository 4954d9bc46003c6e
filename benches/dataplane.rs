//! Dataplane benchmarks: `cargo bench --bench dataplane` (no root needed:
//! it re-runs itself inside a private user + mount + network namespace).
//!
//! East-west (issue: program 100 routers × 4 subnets × 50 endpoints),
//! north-south (`BENCH_FIPS` floating IPs on one node, default 10,000: from
//! empty, onto a programmed router vs a hand-made batch, the N+1st vs the
//! first, an unchanged full pass) and conntrack (removing 1,000 floating IPs
//! with 100,000 entries). Every figure is a median over repeated runs
//! (`BENCH_REPS`, default 11; the measurements that rebuild all N floating
//! IPs run at most 5 times, 3 past 5,000), with a baseline measured in the
//! same run, and the kernel writes the engine counted. The last line,
//! `scale: fips10k_ms=… floor10k_ms=… next_vs_first=… idle10k_ms=…
//! idle10k_writes=… ct_remove1k_ms=…`, sums up the issue's scale targets
//! (the `10k` fields are at `BENCH_FIPS`; `-` for what was not run). Both reconcile paths are measured: `full` (observe the
//! kernel, diff, apply: the periodic level-triggered pass) and `change`
//! (diff against what the engine last programmed, touching only the
//! namespaces whose desired state changed: the path user changes take).
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube_dvr::dataplane::engine::{Engine, EngineConfig};
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::plan::model::{MacAddr, NodeState};
use kube_dvr::plan::names;
use kube_dvr::plan::plan_node;
use kube_dvr::plan::view::*;

const NODE: &str = "n0";

fn node_facts(i: u32) -> NodeFacts {
    let vtep = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i);
    NodeFacts {
        vtep,
        dvr_mac: names::dvr_mac(vtep),
    }
}

/// `routers` × `subnets` × `endpoints`, endpoints spread over `nodes` nodes
/// (endpoint e on node e % nodes, so every router is hosted on n0).
fn east_west(routers: u32, subnets: u32, endpoints: u32, nodes: u32) -> ClusterView {
    let mut v = ClusterView {
        nodes: (0..nodes)
            .map(|i| (format!("n{i}"), node_facts(i)))
            .collect(),
        ..Default::default()
    };
    for r in 0..routers {
        let mut rv = RouterView {
            key: ObjectKey::new(format!("t{r}"), "r"),
            index: r,
            subnets: vec![],
            routes: vec![],
            endpoints: vec![],
            standby: vec![],
        };
        for s in 0..subnets {
            let vni = 4096 + r * 16 + s;
            rv.subnets.push(SubnetView {
                name: format!("s{s}"),
                cidr: format!("10.{s}.0.0/16").parse().unwrap(),
                gateway: Ipv4Addr::new(10, s as u8, 0, 1),
                vni,
            });
            for e in 0..endpoints {
                rv.endpoints
                    .push(endpoint(r, s, e, &format!("n{}", e % nodes)));
            }
        }
        v.routers.push(rv);
    }
    v
}

fn endpoint(r: u32, s: u32, e: u32, node: &str) -> EndpointView {
    EndpointView {
        subnet: format!("s{s}"),
        ip: Ipv4Addr::new(10, s as u8, (e / 250) as u8 + 1, (e % 250) as u8 + 2),
        mac: MacAddr([
            0x02,
            (r >> 8) as u8,
            r as u8,
            s as u8,
            (e >> 8) as u8,
            e as u8,
        ]),
        node: node.into(),
    }
}

/// The first floating address; floating IP `i` is this plus `i`.
const FIP_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 0);
/// Floating IPs plus extras that fit in 198.19.1.0 – 198.19.255.255 (the
/// external network is 198.19.0.0/16; 198.19.0.x holds its gateway and the
/// node's port).
const FIP_MAX: u32 = 255 * 256;

/// Floating address `i` (inside 198.19.0.0/16 for `i < FIP_MAX`).
fn fip_address(i: u32) -> Ipv4Addr {
    assert!(i < FIP_MAX, "floating address {i} past 198.19.255.255");
    Ipv4Addr::from(u32::from(FIP_BASE) + i)
}

/// One router with `fips` floating IPs, all on n0 (4 subnets, local
/// endpoints: floating IP `i` targets endpoint `i / 4` of subnet `i % 4`).
fn floating(fips: u32) -> ClusterView {
    let mut v = east_west(1, 4, 0, 2);
    let ext_cidr = "198.19.0.0/16".parse().unwrap(); // no traffic is sent in benchmarks
    v.external_networks.insert(
        "ext".into(),
        ExternalView {
            name: "ext".into(),
            cidr: ext_cidr,
            gateway: Ipv4Addr::new(198, 19, 0, 1),
            attachment: Attachment::Bridge("br-ext".into()),
            node_ports: [(NODE.to_string(), Ipv4Addr::new(198, 19, 0, 10))].into(),
        },
    );
    for i in 0..fips {
        let ep = endpoint(0, i % 4, i / 4, NODE);
        v.routers[0].endpoints.push(ep.clone());
        v.floating_ips.push(FloatingView {
            key: ObjectKey::new("t0", format!("f{i}")),
            router: v.routers[0].key.clone(),
            external: "ext".into(),
            address: fip_address(i),
            fixed_ip: ep.ip,
            node: NODE.into(),
        });
    }
    v
}

/// A fresh simulated node: its own root namespace and namespace directory.
fn fresh_node(name: &str) -> Engine {
    let dir = PathBuf::from("/run/bench");
    netns::create(&dir, name).unwrap();
    let root = netns::path(&dir, name);
    // The external bridge the floating-IP namespace plugs into.
    let st = std::process::Command::new("nsenter")
        .arg(format!("--net={}", root.display()))
        .args(["ip", "link", "add", "br-ext", "type", "bridge"])
        .status()
        .unwrap();
    assert!(st.success());
    Engine::new(EngineConfig {
        root_netns: root,
        netns_dir: dir.join(format!("{name}-netns")),
    })
    .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

struct Pass {
    time: Duration,
    writes: u64,
}

fn full(e: &mut Engine, desired: &NodeState) -> Pass {
    let t = Instant::now();
    let r = e.reconcile(desired).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    Pass {
        time: t.elapsed(),
        writes: r.writes.total(),
    }
}

fn change(e: &mut Engine, desired: &NodeState) -> Pass {
    let t = Instant::now();
    let r = e.reconcile_changes(desired).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    Pass {
        time: t.elapsed(),
        writes: r.writes.total(),
    }
}

/// Add one remote endpoint `reps` times; median time and writes per change.
fn add_endpoints(
    e: &mut Engine,
    v: &mut ClusterView,
    reps: u32,
    path: fn(&mut Engine, &NodeState) -> Pass,
) -> (Duration, u64) {
    let mut times = vec![];
    let mut writes = vec![];
    for _ in 0..reps {
        // A new remote endpoint each time (an index past all existing ones).
        let next = 5000 + v.routers[0].endpoints.len() as u32;
        v.routers[0].endpoints.push(endpoint(0, 0, next, "n1"));
        let desired = plan_node(v, NODE);
        let p = path(e, &desired);
        times.push(p.time);
        writes.push(p.writes);
    }
    writes.sort();
    (median(times), writes[writes.len() / 2])
}

fn bench_east_west(reps: u32) {
    println!("== east-west: 100 routers x 4 subnets x 50 endpoints (10 nodes), node n0");
    let mut v = east_west(100, 4, 50, 10);
    let desired = plan_node(&v, NODE);
    let mut e = fresh_node("ew");
    let p = full(&mut e, &desired);
    println!(
        "program from empty:          {:>12}  {} kernel writes",
        ms(p.time),
        p.writes
    );
    let by_kind = e.writes().by_kind().clone();
    println!("  writes by kind: {by_kind:?}");

    let idle: Vec<Pass> = (0..reps).map(|_| full(&mut e, &desired)).collect();
    assert!(
        idle.iter().all(|p| p.writes == 0),
        "an unchanged pass wrote"
    );
    let idle_full = median(idle.iter().map(|p| p.time).collect());
    let idle_change = median(
        (0..reps)
            .map(|_| change(&mut e, &desired))
            .inspect(|p| assert_eq!(p.writes, 0))
            .map(|p| p.time)
            .collect(),
    );
    println!(
        "unchanged pass (full):       {:>12}  0 writes",
        ms(idle_full)
    );
    println!(
        "unchanged pass (change):     {:>12}  0 writes",
        ms(idle_change)
    );

    // Baseline in the same run: one router x 4 subnets, one endpoint each.
    let mut small = east_west(1, 4, 1, 10);
    let mut b = fresh_node("ew-base");
    full(&mut b, &plan_node(&small, NODE));
    let (base_full, base_w) = add_endpoints(&mut b, &mut small, reps, full);
    let (base_change, _) = add_endpoints(&mut b, &mut small, reps, change);
    let (big_full, big_w) = add_endpoints(&mut e, &mut v, reps, full);
    let (big_change, big_cw) = add_endpoints(&mut e, &mut v, reps, change);
    println!(
        "add one endpoint (change):   {:>12}  {} writes   empty node: {:>10}  ratio {:.2}x",
        ms(big_change),
        big_cw,
        ms(base_change),
        big_change.as_secs_f64() / base_change.as_secs_f64()
    );
    println!("add one endpoint (full):     {:>12}  {} writes   empty node: {:>10}  ratio {:.2}x  ({} writes there)", ms(big_full), big_w, ms(base_full), big_full.as_secs_f64() / base_full.as_secs_f64(), base_w);
    let t = Instant::now();
    let r = e.cleanup().unwrap();
    println!(
        "cleanup:                     {:>12}  {} writes",
        ms(t.elapsed()),
        r.writes.total()
    );
    b.cleanup().unwrap();
}

/// What [`main`] prints on its `scale:` line (`None`: not measured in this run).
#[derive(Default)]
struct Scale {
    fips: Option<Duration>,
    floor: Option<Duration>,
    next_vs_first: Option<f64>,
    idle: Option<Duration>,
    idle_writes: Option<u64>,
    ct_remove: Option<Duration>,
}

impl Scale {
    /// One line, fixed form, so runs can be compared (`-`: not measured).
    fn line(&self) -> String {
        let ms =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
        format!(
            "scale: fips10k_ms={} floor10k_ms={} next_vs_first={} idle10k_ms={} idle10k_writes={} ct_remove1k_ms={}",
            ms(self.fips),
            ms(self.floor),
            self.next_vs_first.map_or("-".into(), |r| format!("{r:.2}")),
            ms(self.idle),
            self.idle_writes.map_or("-".into(), |w| w.to_string()),
            ms(self.ct_remove),
        )
    }
}

/// `n` floating IPs on one node (`BENCH_FIPS`, default 10,000). `reps`
/// bounds the repeated measurements; the two that rebuild all `n` floating
/// IPs per repetition (onto a programmed router, and the floor) run at most
/// 5 times, and 3 times past 5,000 floating IPs (each repetition is a full
/// pass that removes them all and a change pass that adds them back).
fn bench_floating(reps: u32, n: u32, scale: &mut Scale) {
    println!("== north-south: {n} floating IPs on one node");
    let big_reps = if n > 5000 { reps.min(3) } else { reps.min(5) };
    // From empty: everything (namespaces, links, NAT table, routes, maps).
    let all = floating(n);
    let mut e = fresh_node("fip");
    let p = full(&mut e, &plan_node(&all, NODE));
    println!(
        "{n} floating IPs from an empty node: {:>12}  {} kernel writes",
        ms(p.time),
        p.writes
    );
    e.cleanup().unwrap();

    // The floating IPs alone, router already programmed, vs the floor.
    let mut times = vec![];
    let mut writes = 0;
    let mut with_router = floating(n);
    let fips = std::mem::take(&mut with_router.floating_ips);
    for _ in 0..big_reps {
        with_router.floating_ips.clear();
        full(&mut e, &plan_node(&with_router, NODE));
        with_router.floating_ips = fips.clone();
        let p = change(&mut e, &plan_node(&with_router, NODE));
        times.push(p.time);
        writes = p.writes;
    }
    let engine_n = median(times);
    let floor = floor_batch(n, big_reps);
    println!("{n} floating IPs onto a programmed router: {:>12}  {} writes; hand-made batch (floor): {:>10}  ratio {:.2}x", ms(engine_n), writes, ms(floor), engine_n.as_secs_f64() / floor.as_secs_f64());

    // The N+1st vs the first. Extra k: the endpoint after all of subnet 0's
    // (floating IP i targets endpoint i / 4 there) and the address after
    // the n floating IPs'.
    let mut first = vec![];
    let mut next = vec![];
    let (mut w_first, mut w_next) = (0, 0);
    let extra = |v: &mut ClusterView, k: u32| {
        let ep = endpoint(0, 0, n.div_ceil(4) + k, NODE);
        v.routers[0].endpoints.push(ep.clone());
        v.floating_ips.push(FloatingView {
            key: ObjectKey::new("t0", format!("x{k}")),
            router: v.routers[0].key.clone(),
            external: "ext".into(),
            address: fip_address(n + k),
            fixed_ip: ep.ip,
            node: NODE.into(),
        });
    };
    let mut empty = floating(0);
    let mut b = fresh_node("fip-base");
    full(&mut b, &plan_node(&empty, NODE));
    let mut big = floating(n);
    full(&mut e, &plan_node(&big, NODE));
    for k in 0..reps {
        // The first: on a node whose router has no floating IP yet.
        empty.floating_ips.clear();
        change(&mut b, &plan_node(&empty, NODE));
        extra(&mut empty, k);
        let p = change(&mut b, &plan_node(&empty, NODE));
        first.push(p.time);
        w_first = p.writes;
        // The N+1st.
        extra(&mut big, k);
        let p = change(&mut e, &plan_node(&big, NODE));
        next.push(p.time);
        w_next = p.writes;
        big.floating_ips.pop();
        change(&mut e, &plan_node(&big, NODE));
    }
    let (f, x) = (median(first), median(next));
    println!(
        "add the first floating IP:   {:>12}  {} writes",
        ms(f),
        w_first
    );
    println!(
        "add the {}th:             {:>12}  {} writes   ratio {:.2}x",
        n + 1,
        ms(x),
        w_next,
        x.as_secs_f64() / f.as_secs_f64()
    );
    let desired = plan_node(&big, NODE);
    let idle: Vec<Pass> = (0..reps).map(|_| full(&mut e, &desired)).collect();
    let idle_writes = idle.iter().map(|p| p.writes).max().unwrap_or(0);
    let idle_time = median(idle.into_iter().map(|p| p.time).collect());
    println!(
        "unchanged pass at {n} (full): {:>12}  {idle_writes} writes (most in one pass)",
        ms(idle_time)
    );
    assert_eq!(idle_writes, 0, "an unchanged pass wrote");
    e.cleanup().unwrap();
    b.cleanup().unwrap();
    *scale = Scale {
        fips: Some(engine_n),
        floor: Some(floor),
        next_vs_first: Some(x.as_secs_f64() / f.as_secs_f64()),
        idle: Some(idle_time),
        idle_writes: Some(idle_writes),
        ..std::mem::take(scale)
    };
}

/// The floor: the same `n` floating IPs as one hand-written nft batch and
/// `n` route requests on one netlink socket, no observation, no diff.
fn floor_batch(n: u32, reps: u32) -> Duration {
    use std::io::Write;
    let dir = PathBuf::from("/run/bench");
    let mut times = vec![];
    for rep in 0..reps {
        let name = format!("floor{rep}");
        netns::create(&dir, &name).unwrap();
        let path = netns::path(&dir, &name);
        let sh = |script: &str, cmd: &[&str]| {
            let mut c = std::process::Command::new("nsenter")
                .arg(format!("--net={}", path.display()))
                .args(cmd)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(c.wait().unwrap().success());
        };
        sh(
            "link add d0 type veth peer name d1\nlink set d0 up\nlink set d1 up\naddr add 169.254.64.1/31 dev d0\n",
            &["ip", "-batch", "-"],
        );
        sh("add table ip t\nadd map ip t fdnat { type ipv4_addr : ipv4_addr; }\nadd map ip t fsnat { type ipv4_addr : ipv4_addr; }\nadd set ip t fixed { type ipv4_addr; }\n", &["nft", "-f", "-"]);
        let mut nft = String::new();
        let pairs: Vec<(Ipv4Addr, Ipv4Addr)> = (0..n)
            .map(|i| (fip_address(i), endpoint(0, i % 4, i / 4, NODE).ip))
            .collect();
        let j = |f: &dyn Fn(&(Ipv4Addr, Ipv4Addr)) -> String| {
            pairs.iter().map(f).collect::<Vec<_>>().join(", ")
        };
        nft += &format!(
            "add element ip t fdnat {{ {} }}\n",
            j(&|(a, b)| format!("{a} : {b}"))
        );
        nft += &format!(
            "add element ip t fsnat {{ {} }}\n",
            j(&|(a, b)| format!("{b} : {a}"))
        );
        nft += &format!(
            "add element ip t fixed {{ {} }}\n",
            j(&|(_, b)| b.to_string())
        );
        let t = Instant::now();
        sh(&nft, &["nft", "-f", "-"]);
        // Routes over netlink in-process, as the engine does, one socket.
        let mut nl = kube_dvr::dataplane::netlink::Netlink::open_in(&path).unwrap();
        let dev = nl
            .links()
            .unwrap()
            .into_iter()
            .find(|l| l.name == "d0")
            .unwrap()
            .index;
        for (a, _) in &pairs {
            nl.add_route(&kube_dvr::dataplane::netlink::KRoute {
                table: 254,
                dst: ipnet::Ipv4Net::new(*a, 32).unwrap(),
                via: Some(Ipv4Addr::new(169, 254, 64, 0)),
                oif: Some(dev),
                protocol: kube_dvr::plan::model::ROUTE_PROTOCOL,
            })
            .unwrap();
        }
        times.push(t.elapsed());
        netns::delete(&dir, &name).unwrap();
    }
    median(times)
}

/// Conntrack entries for a floating-IP removal: two inbound flows to each
/// floating IP (from two peers) and unrelated flows up to `total`.
fn conntrack_load(v: &ClusterView, total: u32) -> Vec<(Ipv4Addr, u16, Ipv4Addr, u16)> {
    let mut flows = Vec::with_capacity(total as usize);
    for f in &v.floating_ips {
        flows.push((Ipv4Addr::new(198, 51, 100, 1), 40000, f.address, 80));
        flows.push((Ipv4Addr::new(198, 51, 100, 2), 40001, f.address, 80));
    }
    let unrelated = total as usize - flows.len();
    for i in 0..unrelated as u32 {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i / 60_000);
        let src = Ipv4Addr::new(198, 18, 64, (i % 250) as u8);
        flows.push((src, 1024 + (i % 60_000) as u16, dst, 53));
    }
    flows
}

fn bench_conntrack(reps: u32, scale: &mut Scale) {
    use kube_dvr::dataplane::conntrack::{self, Conntrack};
    const ENTRIES: u32 = 100_000;
    println!(
        "== conntrack: remove 1,000 floating IPs with {ENTRIES} conntrack entries in their router"
    );
    let all = floating(1000);
    let mut none = floating(1000);
    none.floating_ips.clear();
    let mut e = fresh_node("ct");
    full(&mut e, &plan_node(&all, NODE));
    let dir = PathBuf::from("/run/bench/ct-netns");
    let q = netns::list(&dir)
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with(names::QROUTER_PREFIX))
        .expect("qrouter namespace");
    let q = netns::path(&dir, &q);
    let flows = conntrack_load(&all, ENTRIES);
    let in_q = |f: &(dyn Fn(&mut Conntrack) -> u64 + Sync)| -> u64 {
        netns::run_in(&q, || f(&mut Conntrack::open_here().unwrap())).unwrap()
    };
    let fill = || in_q(&|ct| ct.insert_udp(&flows, 600).unwrap());
    let flush = || {
        in_q(&|ct| {
            let d = ct.dump().unwrap();
            ct.delete(&d).unwrap()
        })
    };
    let matching = flows
        .iter()
        .filter(|f| all.floating_ips.iter().any(|x| x.address == f.2))
        .count() as u64;

    let (mut with_ct, mut empty_ct, mut dumps) = (vec![], vec![], vec![]);
    let mut writes = 0;
    for _ in 0..reps.min(5) {
        // Floor: the same removal with an empty conntrack table.
        change(&mut e, &plan_node(&all, NODE));
        empty_ct.push(change(&mut e, &plan_node(&none, NODE)).time);
        // The removal with the full table.
        change(&mut e, &plan_node(&all, NODE));
        assert_eq!(fill(), ENTRIES as u64);
        let t = Instant::now();
        assert_eq!(in_q(&|ct| ct.dump().unwrap().len() as u64), ENTRIES as u64);
        dumps.push(t.elapsed());
        let p = change(&mut e, &plan_node(&none, NODE));
        with_ct.push(p.time);
        writes = p.writes;
        let left = flush();
        assert_eq!(
            left,
            ENTRIES as u64 - matching,
            "exactly the floating IPs' entries went"
        );
    }
    let (w, z, d) = (median(with_ct), median(empty_ct), median(dumps));
    scale.ct_remove = Some(w);
    println!(
        "remove 1,000 floating IPs, {ENTRIES} entries: {:>12}  {writes} writes ({matching} entries deleted); empty table (floor): {:>10}  ratio {:.2}x; one dump of the table: {}",
        ms(w),
        ms(z),
        w.as_secs_f64() / z.as_secs_f64(),
        ms(d)
    );

    // The old way, for comparison: two `conntrack -D` processes per
    // address, each scanning the table. Measured on 10 addresses.
    change(&mut e, &plan_node(&all, NODE));
    fill();
    let sample: Vec<Ipv4Addr> = all
        .floating_ips
        .iter()
        .take(10)
        .map(|f| f.address)
        .collect();
    let t = Instant::now();
    netns::run_in(&q, || {
        for ip in &sample {
            for sel in ["--orig-dst", "--reply-dst"] {
                let _ = std::process::Command::new("conntrack")
                    .args(["-D", sel, &ip.to_string()])
                    .output();
            }
        }
    })
    .unwrap();
    let per = t.elapsed() / sample.len() as u32;
    let r = netns::run_in(&q, || conntrack::remove_destinations(&sample))
        .unwrap()
        .unwrap();
    assert_eq!(r.deleted, 0, "the processes deleted the sample's entries");
    println!(
        "old way (`conntrack -D` x2 per address): {:>10} per address (10 measured) = ~{:.1} s for 1,000",
        ms(per),
        per.as_secs_f64() * 1000.0
    );
    flush();
    e.cleanup().unwrap();
}

/// The sandbox. As root it is a mount + network namespace only (no user
/// namespace), unless `BENCH_USERNS` is set: nft raises its socket's send
/// buffer for a big batch with `SO_SNDBUFFORCE`, which needs `CAP_NET_ADMIN`
/// in the initial user namespace, and without it a batch over ~400 KB (the
/// default buffer; ~10,000 floating IPs' elements) fails with `Message too
/// long`, the engine's and the floor's alike. A node's agent has that
/// capability. Without root, the default sandbox: lower `BENCH_FIPS`.
fn enter() -> Vec<String> {
    if sandbox::inside()
        || !nix::unistd::geteuid().is_root()
        || std::env::var_os("BENCH_USERNS").is_some()
    {
        return sandbox::enter_bench();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private"])
        .arg(std::env::current_exe().expect("current executable"))
        .args(&args)
        // What `sandbox::inside` looks for: the child prepares the sandbox.
        .env("KUBE_DVR_SANDBOX", "1")
        .status()
        .expect("run unshare (util-linux)");
    std::process::exit(if status.success() { 0 } else { 1 });
}

/// Whether this process runs in the initial user namespace (its uid map is
/// the identity over the whole range), where nft may raise its buffers.
fn initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

fn main() {
    let args = enter();
    let reps: u32 = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(11);
    let fips: u32 = std::env::var("BENCH_FIPS")
        .ok()
        .and_then(|n| n.parse().ok())
        // In a user namespace (not root) nft cannot send a 10,000-element
        // batch (see `enter`): 1,000 there.
        .unwrap_or(if initial_user_namespace() {
            10_000
        } else {
            1_000
        });
    let which = args.first().map(String::as_str).unwrap_or("all");
    let mut scale = Scale::default();
    if matches!(which, "all" | "east-west") {
        bench_east_west(reps);
    }
    if matches!(which, "all" | "floating") {
        bench_floating(reps, fips, &mut scale);
    }
    if matches!(which, "all" | "conntrack") {
        bench_conntrack(reps, &mut scale);
    }
    println!("{}", scale.line());
}

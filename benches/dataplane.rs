//! Dataplane benchmarks: `cargo bench --bench dataplane` (no root needed:
//! it re-runs itself inside a private user + mount + network namespace).
//!
//! East-west (issue: program 100 routers × 4 subnets × 50 endpoints) and
//! north-south (1,000 floating IPs). Every figure is a median over repeated
//! runs, with a baseline measured in the same run, and the kernel writes the
//! engine counted. Both reconcile paths are measured: `full` (observe the
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

/// One router with `fips` floating IPs, all on n0 (4 subnets, local endpoints).
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
            address: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 1, 0)) + i),
            fixed_ip: ep.ip,
            node: NODE.into(),
        });
    }
    // The endpoint the 1,001st (and the first) floating IP will target.
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

fn bench_floating(reps: u32) {
    println!("== north-south: 1,000 floating IPs on one node");
    // From empty: everything (namespaces, links, NAT table, routes, maps).
    let v1000 = floating(1000);
    let mut e = fresh_node("fip");
    let p = full(&mut e, &plan_node(&v1000, NODE));
    println!(
        "1,000 floating IPs from an empty node: {:>12}  {} kernel writes",
        ms(p.time),
        p.writes
    );
    e.cleanup().unwrap();

    // The floating IPs alone, router already programmed, vs the floor.
    let mut times = vec![];
    let mut writes = 0;
    let mut with_router = floating(1000);
    let fips = std::mem::take(&mut with_router.floating_ips);
    for _ in 0..reps.min(5) {
        with_router.floating_ips.clear();
        full(&mut e, &plan_node(&with_router, NODE));
        with_router.floating_ips = fips.clone();
        let p = change(&mut e, &plan_node(&with_router, NODE));
        times.push(p.time);
        writes = p.writes;
    }
    let engine_1000 = median(times);
    let floor = floor_batch(1000, reps.min(5));
    println!("1,000 floating IPs onto a programmed router: {:>12}  {} writes; hand-made batch (floor): {:>10}  ratio {:.2}x", ms(engine_1000), writes, ms(floor), engine_1000.as_secs_f64() / floor.as_secs_f64());

    // The 1,001st vs the first.
    let mut first = vec![];
    let mut next = vec![];
    let (mut w_first, mut w_next) = (0, 0);
    let extra = |v: &mut ClusterView, n: u32| {
        let ep = endpoint(0, 0, 900 + n, NODE);
        v.routers[0].endpoints.push(ep.clone());
        v.floating_ips.push(FloatingView {
            key: ObjectKey::new("t0", format!("x{n}")),
            router: v.routers[0].key.clone(),
            external: "ext".into(),
            address: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 200, 0)) + n),
            fixed_ip: ep.ip,
            node: NODE.into(),
        });
    };
    let mut empty = floating(0);
    let mut b = fresh_node("fip-base");
    full(&mut b, &plan_node(&empty, NODE));
    let mut big = floating(1000);
    full(&mut e, &plan_node(&big, NODE));
    for n in 0..reps {
        // The first: on a node whose router has no floating IP yet.
        empty.floating_ips.clear();
        change(&mut b, &plan_node(&empty, NODE));
        extra(&mut empty, n);
        let p = change(&mut b, &plan_node(&empty, NODE));
        first.push(p.time);
        w_first = p.writes;
        // The 1,001st.
        extra(&mut big, n);
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
        "add the 1,001st:             {:>12}  {} writes   ratio {:.2}x",
        ms(x),
        w_next,
        x.as_secs_f64() / f.as_secs_f64()
    );
    let desired = plan_node(&big, NODE);
    let idle: Vec<Pass> = (0..reps).map(|_| full(&mut e, &desired)).collect();
    assert!(idle.iter().all(|p| p.writes == 0));
    println!(
        "unchanged pass at 1,000 (full): {:>12}  0 writes",
        ms(median(idle.into_iter().map(|p| p.time).collect()))
    );
    e.cleanup().unwrap();
    b.cleanup().unwrap();
}

/// The floor: the same 1,000 floating IPs as one hand-written nft batch and
/// 1,000 route requests on one netlink socket, no observation, no diff.
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
        let mut routes = String::new();
        let pairs: Vec<(Ipv4Addr, Ipv4Addr)> = (0..n)
            .map(|i| {
                (
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 1, 0)) + i),
                    endpoint(0, i % 4, i / 4, NODE).ip,
                )
            })
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
        for (a, _) in &pairs {
            routes += &format!("route add {a}/32 via 169.254.64.0 dev d0 proto 230\n");
        }
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
        let _ = routes;
        netns::delete(&dir, &name).unwrap();
    }
    median(times)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(ok) = sandbox::rerun_self(&args) {
        std::process::exit(if ok { 0 } else { 1 });
    }
    let reps: u32 = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(11);
    let which = args.first().map(String::as_str).unwrap_or("all");
    if matches!(which, "all" | "east-west") {
        bench_east_west(reps);
    }
    if matches!(which, "all" | "floating") {
        bench_floating(reps);
    }
}

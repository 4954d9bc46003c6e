//! One small nftables batch through libnftables in-process vs through the
//! `nft` process (issue 11): `cargo bench --bench nft` (no root needed: it
//! re-runs itself inside a private user + mount + network namespace).
//!
//! A router namespace holds kube-dvr's `ip` table with a DNAT map of
//! `BENCH_ELEMENTS` elements (default 1,000) and a chain using it. Each run
//! applies one batch that adds one new map element, the way the engine does
//! on the change path: `netns::run_in` (a thread entering the namespace)
//! around `nft::apply_with`; the two backends alternate run by run.
//! `BENCH_RUNS` runs per backend (default 200, at least 50), after 5
//! uncounted warm-up runs each. Also: `observe` (the table listed as JSON
//! and parsed), timed the same way.
//!
//! Prints per backend median and p90 in ms, and the ratio of the medians.
use std::path::Path;
use std::time::{Duration, Instant};

use kube_dvr::dataplane::nft::{self, Backend};
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::plan::model::{NftBaseChain, NftChain, NftFamily, NftSet, NftTable, NFT_TABLE};

const NS: &str = "qrouter-bench";

fn addr(i: u32) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn table(elements: u32) -> NftTable {
    NftTable {
        family: NftFamily::Ip,
        name: NFT_TABLE.into(),
        sets: [(
            "fip_dnat".to_string(),
            NftSet {
                key_type: "ipv4_addr".into(),
                data_type: Some("ipv4_addr".into()),
                elements: (0..elements)
                    .map(|i| (addr(i), Some(addr(i + 1_000_000))))
                    .collect(),
            },
        )]
        .into(),
        chains: [(
            "prerouting".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "nat".into(),
                    hook: "prerouting".into(),
                    priority: -100,
                }),
                rules: vec!["dnat to ip daddr map @fip_dnat".into()],
            },
        )]
        .into(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p / 100.0).round() as usize]
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    sandbox::enter_bench();
    let runs = env("BENCH_RUNS", 200).max(50);
    let elements = env("BENCH_ELEMENTS", 1000);
    assert!(
        nft::exec::library_available(),
        "libnftables.so.1 (libnftables1) is needed to compare"
    );
    let dir = Path::new("/run/netns");
    netns::create(dir, NS).expect("namespace");
    let path = netns::path(dir, NS);
    let mut current = table(elements);
    netns::run_in(&path, || nft::apply(&nft::plan_batch(None, Some(&current))))
        .unwrap()
        .expect("initial table");

    let backends = [Backend::Library, Backend::Process];
    let mut apply: [Vec<f64>; 2] = Default::default();
    let mut observe: [Vec<f64>; 2] = Default::default();
    let mut next = elements;
    for run in 0..(runs + 5) {
        for (i, b) in backends.iter().enumerate() {
            // One element more: the batch is one `add element` statement.
            let mut desired = current.clone();
            desired
                .sets
                .get_mut("fip_dnat")
                .unwrap()
                .elements
                .insert(addr(next), Some(addr(next + 1_000_000)));
            next += 1;
            let batch = nft::plan_batch(Some(&current), Some(&desired));
            assert_eq!(batch.writes(), 1, "{}", batch.script());
            let t0 = Instant::now();
            netns::run_in(&path, || nft::apply_with(*b, &batch))
                .unwrap()
                .unwrap_or_else(|e| panic!("{b:?}: {e}"));
            let a = t0.elapsed();
            current = desired;
            let t0 = Instant::now();
            let seen = netns::run_in(&path, || nft::observe_with(*b, NftFamily::Ip, NFT_TABLE))
                .unwrap()
                .unwrap_or_else(|e| panic!("{b:?}: {e}"))
                .expect("table");
            let o = t0.elapsed();
            assert_eq!(
                seen.sets["fip_dnat"].elements.len(),
                current.sets["fip_dnat"].elements.len()
            );
            if run >= 5 {
                apply[i].push(ms(a));
                observe[i].push(ms(o));
            }
        }
    }
    println!(
        "nft: one-element batch into a {elements}-element map, {runs} runs per backend, \
         inside netns::run_in"
    );
    for (what, v) in [("apply", &apply), ("observe", &observe)] {
        for (i, b) in backends.iter().enumerate() {
            println!(
                "  {what:<7} {:<8} median {:.3} ms  p90 {:.3} ms",
                format!("{b:?}"),
                pct(&v[i], 50.0),
                pct(&v[i], 90.0)
            );
        }
        println!(
            "  {what:<7} process / library (medians): {:.1}x",
            pct(&v[1], 50.0) / pct(&v[0], 50.0)
        );
    }
    println!(
        "nft: apply_library_p50_ms={:.3} apply_process_p50_ms={:.3} ratio={:.1}",
        pct(&apply[0], 50.0),
        pct(&apply[1], 50.0),
        pct(&apply[1], 50.0) / pct(&apply[0], 50.0)
    );
}

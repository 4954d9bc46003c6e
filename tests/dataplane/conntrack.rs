//! Conntrack removal over netlink (`dataplane::conntrack`), checked with the
//! `conntrack` tool: entries made by the tool, counted by the tool.
use super::*;
use kube_dvr::dataplane::conntrack::{self, Conntrack};
use kube_dvr::dataplane::sandbox;
use std::net::Ipv4Addr;

/// `conntrack -I` with original `src → dst` and reply `rsrc → rdst`.
fn insert(proto: &[&str], src: &str, dst: &str, rsrc: &str, rdst: &str) {
    let mut args = vec![
        "conntrack",
        "-I",
        "-s",
        src,
        "-d",
        dst,
        "-r",
        rsrc,
        "-q",
        rdst,
        "-t",
        "120",
    ];
    args.extend_from_slice(proto);
    sh(&args);
}

fn listed() -> String {
    let out = Command::new("conntrack").arg("-L").output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn count() -> u64 {
    sh(&["conntrack", "-C"]).trim().parse().unwrap()
}

#[test]
fn removal_matches_original_and_reply_destinations_of_every_protocol() {
    if !sandbox::enter(
        "conntrack::removal_matches_original_and_reply_destinations_of_every_protocol",
    ) {
        return;
    }
    let udp = |sp: &'static str, dp: &'static str| {
        [
            "-p",
            "udp",
            "--sport",
            sp,
            "--dport",
            dp,
            "--reply-port-src",
            dp,
            "--reply-port-dst",
            sp,
        ]
    };
    let fip = "203.0.113.9";
    // Inbound to the floating IP (DNAT'd: original destination).
    insert(&udp("1000", "53"), "198.51.100.7", fip, fip, "198.51.100.7");
    // Outbound from its workload (SNAT'd: reply destination).
    insert(
        &udp("2000", "53"),
        "10.0.0.5",
        "198.51.100.7",
        "198.51.100.7",
        fip,
    );
    insert(
        &[
            "-p",
            "tcp",
            "--sport",
            "1001",
            "--dport",
            "80",
            "--reply-port-src",
            "80",
            "--reply-port-dst",
            "1001",
            "--state",
            "ESTABLISHED",
        ],
        "198.51.100.7",
        fip,
        fip,
        "198.51.100.7",
    );
    insert(
        &[
            "-p",
            "icmp",
            "--icmp-type",
            "8",
            "--icmp-code",
            "0",
            "--icmp-id",
            "7",
        ],
        "198.51.100.7",
        fip,
        fip,
        "198.51.100.7",
    );
    // Another floating IP's flow stays.
    insert(
        &udp("3000", "53"),
        "198.51.100.8",
        "203.0.113.10",
        "203.0.113.10",
        "198.51.100.8",
    );
    assert_eq!(count(), 5);

    let r = conntrack::remove_destinations(&[fip.parse().unwrap()]).unwrap();
    assert_eq!((r.scanned, r.deleted), (5, 4), "{r:?}");
    let left = listed();
    assert_eq!(count(), 1, "{left}");
    assert!(
        left.contains("dst=203.0.113.10") && !left.contains(fip),
        "{left}"
    );
    // Nothing left to remove: no deletes.
    let r = conntrack::remove_destinations(&[fip.parse().unwrap()]).unwrap();
    assert_eq!((r.scanned, r.deleted), (1, 0));
}

#[test]
fn many_entries_are_removed_in_batches() {
    if !sandbox::enter("conntrack::many_entries_are_removed_in_batches") {
        return;
    }
    // 20,000 flows to 200 addresses (100 each); remove 50 of the addresses.
    let dst = |i: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 1, 0)) + i);
    let flows: Vec<(Ipv4Addr, u16, Ipv4Addr, u16)> = (0..20_000u32)
        .map(|i| {
            (
                Ipv4Addr::new(198, 51, 100, 1),
                1024 + (i / 200) as u16,
                dst(i % 200),
                53,
            )
        })
        .collect();
    let mut ct = Conntrack::open_here().unwrap();
    assert_eq!(ct.insert_udp(&flows, 300).unwrap(), 20_000);
    assert_eq!(count(), 20_000);
    assert_eq!(ct.dump().unwrap().len(), 20_000);
    let gone: Vec<Ipv4Addr> = (0..50).map(dst).collect();
    let r = conntrack::remove_destinations(&gone).unwrap();
    assert_eq!((r.scanned, r.deleted), (20_000, 5_000), "{r:?}");
    assert_eq!(count(), 15_000);
    let left = ct.dump().unwrap();
    assert!(left.iter().all(|e| !gone.contains(&e.orig_dst.unwrap())));
}

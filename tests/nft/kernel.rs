//! Kernel tests: each runs in its own sandbox (user + mount + net namespace).
use std::fs::File;
use std::process::Command;

use kube_dvr::dataplane::nft::{apply, observe, plan_batch, render, rule_tag, NftBatch};
use kube_dvr::dataplane::sandbox;
use kube_dvr::plan::model::{NftFamily, NftTable, NFT_TABLE};

use super::{mk_bridge_table, mk_nat_table};

// ----------------------------------------------------------- kernel helpers

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh")
}

/// Run `cmd`, panic with its stderr unless it succeeds; its stdout.
fn run(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(cmd: &str) -> serde_json::Value {
    serde_json::from_str(&run(cmd)).expect("nft JSON")
}

/// Observe, plan, apply; returns the batch that was applied.
fn converge(family: NftFamily, desired: Option<&NftTable>) -> NftBatch {
    let observed = observe(family, NFT_TABLE).expect("observe");
    let b = plan_batch(observed.as_ref(), desired);
    apply(&b).expect("apply");
    b
}

fn assert_converged(family: NftFamily, desired: Option<&NftTable>) {
    let observed = observe(family, NFT_TABLE).expect("observe");
    let b = plan_batch(observed.as_ref(), desired);
    assert!(
        b.is_empty(),
        "not converged, would still run:\n{}",
        b.script()
    );
}

/// A table kube-dvr does not own, which must survive everything.
fn add_foreign_table() {
    run("nft 'add table ip other; add chain ip other c; add rule ip other c counter'");
}

fn assert_foreign_table_intact() {
    let out = run("nft list table ip other");
    assert!(out.contains("counter"), "{out}");
}

/// Packet counters of the rules of `table` that have one, in listing order.
fn rule_counters(netns: Option<&str>, table: &str) -> Vec<u64> {
    let exec = netns
        .map(|n| format!("ip netns exec {n} "))
        .unwrap_or_default();
    let v = json(&format!("{exec}nft -j list table {table}"));
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter_map(|r| {
            r["expr"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|e| e.get("counter"))
                .map(|c| c["packets"].as_u64().unwrap())
        })
        .collect()
}

fn ping(netns: &str, dst: &str) -> bool {
    // A few tries: the first echo may wait for ARP.
    (0..3).any(|_| {
        sh(&format!("ip netns exec {netns} ping -n -c1 -W1 {dst}"))
            .status
            .success()
    })
}

/// Run `f` on a thread that has entered the named network namespace.
fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(format!("/run/netns/{name}")).expect("open netns");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

// ------------------------------------------------------------ kernel tests

#[test]
fn apply_observe_converge() {
    if !sandbox::enter("kernel::apply_observe_converge") {
        return;
    }
    add_foreign_table();
    for desired in [
        mk_nat_table(&[("203.0.113.10", "198.18.1.2")]),
        mk_bridge_table(false),
    ] {
        let b = converge(desired.family, Some(&desired));
        assert!(!b.is_empty());
        // The kernel holds what we wrote.
        let listed = json(&format!(
            "nft -j list table {} kube_dvr",
            desired.family.as_str()
        ));
        let text = listed.to_string();
        for (name, chain) in &desired.chains {
            assert!(
                text.contains(&format!("\"name\":\"{name}\"")),
                "chain {name}: {text}"
            );
            for r in &chain.rules {
                assert!(text.contains(&rule_tag(r)), "tag of {r}: {text}");
            }
        }
        let observed = observe(desired.family, NFT_TABLE)
            .unwrap()
            .expect("table exists");
        for (name, set) in &desired.sets {
            assert_eq!(observed.sets[name].elements, set.elements, "set {name}");
        }
        assert_converged(desired.family, Some(&desired));
        // Converged means nothing to do: apply of an empty batch is a no-op.
        assert!(converge(desired.family, Some(&desired)).is_empty());
    }
    assert!(observe(NftFamily::Inet, NFT_TABLE).unwrap().is_none());
    assert_foreign_table_intact();
}

#[test]
fn render_loads_as_written() {
    if !sandbox::enter("kernel::render_loads_as_written") {
        return;
    }
    let desired = mk_nat_table(&[
        ("203.0.113.10", "198.18.1.2"),
        ("203.0.113.11", "198.18.1.3"),
    ]);
    std::fs::write("/run/t.nft", render(&desired)).unwrap();
    run("nft -f /run/t.nft");
    assert_converged(NftFamily::Ip, Some(&desired));
}

#[test]
fn thousand_elements_one_batch() {
    if !sandbox::enter("kernel::thousand_elements_one_batch") {
        return;
    }
    add_foreign_table();
    let base = mk_nat_table(&[]);
    converge(NftFamily::Ip, Some(&base));
    let fips: Vec<(String, String)> = (0..1000u32)
        .map(|i| {
            (
                format!("198.18.{}.{}", i / 250, i % 250),
                format!("203.0.113.{}", i % 250),
            )
        })
        .collect();
    let mut big = base.clone();
    big.sets.get_mut("fip_dnat").unwrap().elements = fips
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let b = converge(NftFamily::Ip, Some(&big));
    assert_eq!(b.writes(), 1000);
    assert_eq!(b.script().lines().count(), 1, "one compact statement");
    let observed = observe(NftFamily::Ip, NFT_TABLE).unwrap().unwrap();
    assert_eq!(observed.sets["fip_dnat"].elements.len(), 1000);
    assert_eq!(
        observed.sets["fip_dnat"].elements,
        big.sets["fip_dnat"].elements
    );
    assert_converged(NftFamily::Ip, Some(&big));

    // Remove one: exactly it is deleted.
    let gone = fips[500].0.clone();
    big.sets.get_mut("fip_dnat").unwrap().elements.remove(&gone);
    let b = converge(NftFamily::Ip, Some(&big));
    assert_eq!(
        b.script(),
        format!("delete element ip kube_dvr fip_dnat {{ {gone} }}\n")
    );
    assert_eq!(b.writes(), 1);
    let observed = observe(NftFamily::Ip, NFT_TABLE).unwrap().unwrap();
    assert_eq!(observed.sets["fip_dnat"].elements.len(), 999);
    assert!(!observed.sets["fip_dnat"].elements.contains_key(&gone));

    // Move one: its value is replaced in the same transaction.
    let moved = fips[7].0.clone();
    *big.sets
        .get_mut("fip_dnat")
        .unwrap()
        .elements
        .get_mut(&moved)
        .unwrap() = Some("203.0.113.254".into());
    let b = converge(NftFamily::Ip, Some(&big));
    assert_eq!(b.writes(), 2);
    let observed = observe(NftFamily::Ip, NFT_TABLE).unwrap().unwrap();
    assert_eq!(
        observed.sets["fip_dnat"].elements[&moved].as_deref(),
        Some("203.0.113.254")
    );
    assert_converged(NftFamily::Ip, Some(&big));
    assert_foreign_table_intact();
}

#[test]
fn repairs_rules_behind_our_back() {
    if !sandbox::enter("kernel::repairs_rules_behind_our_back") {
        return;
    }
    add_foreign_table();
    let desired = mk_nat_table(&[("203.0.113.10", "198.18.1.2")]);
    converge(NftFamily::Ip, Some(&desired));

    // Someone deletes our DNAT rule.
    let listed = json("nft -j -a list chain ip kube_dvr prerouting");
    let handle = listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o.get("rule"))
        .map(|r| r["handle"].as_u64().unwrap())
        .expect("one rule");
    run(&format!(
        "nft delete rule ip kube_dvr prerouting handle {handle}"
    ));
    let observed = observe(NftFamily::Ip, NFT_TABLE).unwrap().unwrap();
    assert!(observed.chains["prerouting"].rules.is_empty());
    let b = plan_batch(Some(&observed), Some(&desired));
    let rule = &desired.chains["prerouting"].rules[0];
    assert_eq!(
        b.script(),
        format!(
            "flush chain ip kube_dvr prerouting\nadd rule ip kube_dvr prerouting {rule} comment \"{}\"\n",
            rule_tag(rule)
        )
    );
    assert_eq!(b.writes(), 1);
    apply(&b).unwrap();
    assert_converged(NftFamily::Ip, Some(&desired));

    // Someone adds an untagged rule to our chain: the chain is rewritten.
    run("nft add rule ip kube_dvr postrouting counter");
    let b = converge(NftFamily::Ip, Some(&desired));
    assert!(
        b.script()
            .starts_with("flush chain ip kube_dvr postrouting\n"),
        "{}",
        b.script()
    );
    assert_eq!(b.script().lines().count(), 2);
    assert!(!run("nft list chain ip kube_dvr postrouting").contains("counter"));
    assert_converged(NftFamily::Ip, Some(&desired));
    assert_foreign_table_intact();
}

#[test]
fn structural_change_and_delete() {
    if !sandbox::enter("kernel::structural_change_and_delete") {
        return;
    }
    add_foreign_table();
    let desired = mk_nat_table(&[("203.0.113.10", "198.18.1.2")]);
    converge(NftFamily::Ip, Some(&desired));

    let mut moved = desired.clone();
    moved
        .chains
        .get_mut("prerouting")
        .unwrap()
        .base
        .as_mut()
        .unwrap()
        .priority = -90;
    let b = converge(NftFamily::Ip, Some(&moved));
    assert!(b.script().starts_with("delete table ip kube_dvr\n"));
    let observed = observe(NftFamily::Ip, NFT_TABLE).unwrap().unwrap();
    assert_eq!(
        observed.chains["prerouting"]
            .base
            .as_ref()
            .unwrap()
            .priority,
        -90
    );
    assert_converged(NftFamily::Ip, Some(&moved));

    // A chain we don't want any more, created by hand, is swept.
    run("nft add chain ip kube_dvr stray");
    let b = converge(NftFamily::Ip, Some(&moved));
    assert!(b.script().starts_with("delete table"));
    assert!(!observe(NftFamily::Ip, NFT_TABLE)
        .unwrap()
        .unwrap()
        .chains
        .contains_key("stray"));

    // A policy we never set counts as structural too.
    run("nft 'add chain ip kube_dvr mangle { policy drop; }'");
    let b = converge(NftFamily::Ip, Some(&moved));
    assert!(b.script().starts_with("delete table"), "{}", b.script());
    assert!(run("nft list chain ip kube_dvr mangle").contains("policy accept"));
    assert_converged(NftFamily::Ip, Some(&moved));

    // Desired none: the table goes, the foreign one stays.
    let b = converge(NftFamily::Ip, None);
    assert_eq!(b.script(), "delete table ip kube_dvr\n");
    assert!(observe(NftFamily::Ip, NFT_TABLE).unwrap().is_none());
    assert!(converge(NftFamily::Ip, None).is_empty());
    assert_foreign_table_intact();
}

#[test]
fn failed_batch_changes_nothing() {
    if !sandbox::enter("kernel::failed_batch_changes_nothing") {
        return;
    }
    let desired = mk_nat_table(&[("203.0.113.10", "198.18.1.2")]);
    converge(NftFamily::Ip, Some(&desired));
    let mut broken = desired.clone();
    broken
        .sets
        .get_mut("fip_dnat")
        .unwrap()
        .elements
        .insert("203.0.113.20".into(), Some("198.18.1.5".into()));
    broken
        .chains
        .get_mut("prerouting")
        .unwrap()
        .rules
        .push("ip saddr @no_such_set drop".into());
    let err = apply(&plan_batch(
        observe(NftFamily::Ip, NFT_TABLE).unwrap().as_ref(),
        Some(&broken),
    ))
    .expect_err("a rule naming a missing set must fail");
    assert_eq!(err.kind(), "nft_failed");
    let msg = err.to_string();
    assert!(msg.contains("no_such_set"), "{msg}");
    assert!(
        msg.contains("add element ip kube_dvr fip_dnat"),
        "script head in {msg}"
    );
    // Atomic: the element of the failed batch was not added either.
    assert_converged(NftFamily::Ip, Some(&desired));
}

/// Floating-IP NAT really translates. Namespaces: `w` (a workload
/// 198.18.1.2 behind the router), `r` (the router, holding the table), `e`
/// (an external host 203.0.113.2, which has no route to 198.18.1.0/24).
/// 203.0.113.10 is the floating IP.
#[test]
fn nat_translates_packets() {
    if !sandbox::enter("kernel::nat_translates_packets") {
        return;
    }
    for cmd in [
        "ip netns add w",
        "ip netns add r",
        "ip netns add e",
        "ip -n w link add w0 type veth peer name qr-w netns r",
        "ip -n e link add e0 type veth peer name rfp-e netns r",
        "ip -n w addr add 198.18.1.2/24 dev w0",
        "ip -n r addr add 198.18.1.1/24 dev qr-w",
        "ip -n r addr add 203.0.113.1/24 dev rfp-e",
        "ip -n e addr add 203.0.113.2/24 dev e0",
        "ip -n w link set w0 up",
        "ip -n r link set qr-w up",
        "ip -n r link set rfp-e up",
        "ip -n e link set e0 up",
        "ip -n w route add default via 198.18.1.1",
        "ip -n e route add 203.0.113.10/32 via 203.0.113.1",
        "ip netns exec r sysctl -qw net.ipv4.ip_forward=1",
    ] {
        run(cmd);
    }
    // Count what the mangle rule marks (the test's table only).
    let counted = |mut t: NftTable| {
        t.chains.get_mut("mangle").unwrap().rules =
            vec!["ip saddr @fip_snat_keys counter meta mark set 0x10".into()];
        t
    };
    let no_fip = counted(mk_nat_table(&[]));
    let fip = counted(mk_nat_table(&[("203.0.113.10", "198.18.1.2")]));
    in_netns("r", || converge(NftFamily::Ip, Some(&no_fip)));
    // The table went to r, the calling thread's namespace, not ours.
    assert!(observe(NftFamily::Ip, NFT_TABLE).unwrap().is_none());
    assert!(!ping("e", "203.0.113.10"), "DNAT without a map element");
    assert!(!ping("w", "203.0.113.2"), "SNAT without a map element");

    let b = in_netns("r", || converge(NftFamily::Ip, Some(&fip)));
    assert_eq!(b.writes(), 3);
    assert!(ping("e", "203.0.113.10"), "in through DNAT");
    assert!(ping("w", "203.0.113.2"), "out through SNAT");
    // Outbound packets of the floating IP's workload got the mark.
    let marked = in_netns("r", || rule_counters(None, "ip kube_dvr"));
    assert!(marked[0] >= 1, "mangle rule counters: {marked:?}");
    let ct = run("ip netns exec r conntrack -L -p icmp --src 198.18.1.2 2>/dev/null");
    assert!(
        ct.contains("dst=203.0.113.10"),
        "reply goes to the floating IP: {ct}"
    );

    in_netns("r", || converge(NftFamily::Ip, Some(&no_fip)));
    assert!(
        !ping("e", "203.0.113.10"),
        "DNAT after the element was removed"
    );
    in_netns("r", || assert_converged(NftFamily::Ip, Some(&no_fip)));
}

/// East-west: frames a gateway sends out of a VXLAN port leave with the
/// node's DVR MAC; ARP for a gateway IP and frames to a gateway MAC never
/// leave through one. Namespaces `a` (the gateway, 02:00:00:00:00:01,
/// 198.18.1.1), `b` (a local workload), `c` (behind the "VXLAN" port
/// `dvrvx-c`, a veth standing in); the bridge and table are in the sandbox's
/// namespace. `c` counts what arrives with a netdev ingress chain.
#[test]
fn bridge_hides_gateway_mac() {
    if !sandbox::enter("kernel::bridge_hides_gateway_mac") {
        return;
    }
    // The bridge, then the table, then the ports: frames sent before the
    // table (IPv6 DAD, MLD) would leak, and a bridge-family chain created
    // before the namespace's first bridge never sees a frame (kernel quirk,
    // see the module docs).
    run("ip link add br0 type bridge && ip link set br0 up");
    converge(NftFamily::Bridge, Some(&mk_bridge_table(true)));
    for (ns, port, ip) in [
        ("a", "dvrvp-a", "198.18.1.1"),
        ("b", "dvrvp-b", "198.18.1.2"),
        ("c", "dvrvx-c", "198.18.1.3"),
    ] {
        run(&format!("ip netns add {ns}"));
        run(&format!(
            "ip link add {port} type veth peer name {ns}0 netns {ns}"
        ));
        run(&format!("ip link set {port} master br0 up"));
        run(&format!("ip -n {ns} addr add {ip}/24 dev {ns}0"));
    }
    run("ip -n a link set a0 address 02:00:00:00:00:01");
    for ns in ["a", "b"] {
        run(&format!("ip -n {ns} link set {ns}0 up"));
    }
    run(r#"ip netns exec c nft 'table netdev obs {
        chain in {
            type filter hook ingress device c0 priority 0;
            ether saddr 02:00:00:00:00:01 counter
            ether saddr 02:aa:00:00:00:01 counter
            arp operation request arp daddr ip 198.18.1.1 counter
            ether daddr 02:00:00:00:00:09 counter
        }
    }'"#);
    run("ip -n c link set c0 up");

    // b ↔ gateway works locally; its ARP for the gateway IP stays home.
    assert!(ping("b", "198.18.1.1"));
    // The gateway reaches c, always from the DVR MAC.
    assert!(ping("a", "198.18.1.3"));
    // A frame to a (not yet learned) gateway MAC is flooded — but not over VXLAN.
    run("ip -n b neigh add 198.18.1.9 lladdr 02:00:00:00:00:09 dev b0 nud permanent");
    assert!(!ping("b", "198.18.1.9"));

    let ours = rule_counters(None, "bridge kube_dvr");
    let seen = rule_counters(Some("c"), "netdev obs");
    assert!(ours[0] >= 2, "gateway frames rewritten: {ours:?}");
    assert!(ours[1] >= 1, "gateway ARP dropped: {ours:?}");
    assert!(ours[2] >= 1, "frames to a gateway MAC dropped: {ours:?}");
    assert_eq!(seen[0], 0, "c saw the gateway MAC as source: {seen:?}");
    assert!(seen[1] >= 2, "c saw the DVR MAC as source: {seen:?}");
    assert_eq!(seen[2], 0, "c saw ARP for the gateway IP: {seen:?}");
    assert_eq!(seen[3], 0, "c saw a frame to a gateway MAC: {seen:?}");
    // And no gateway MAC was learned on the VXLAN port.
    let fdb = run("bridge fdb show br br0");
    assert!(
        !fdb.lines()
            .any(|l| l.contains("02:00:00:00:00:01") && l.contains("dvrvx-c")),
        "{fdb}"
    );
}

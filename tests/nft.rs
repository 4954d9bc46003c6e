//! nftables in the dataplane: golden scripts (pure) and kernel tests in the
//! sandbox (real tables, real packets, in `nft/kernel.rs`).
use std::collections::BTreeMap;

use kube_dvr::dataplane::nft::{self, plan_batch, render, rule_tag};
use kube_dvr::plan::model::{NftBaseChain, NftChain, NftFamily, NftSet, NftTable, NFT_TABLE};

#[path = "nft/kernel.rs"]
mod kernel;

// ---------------------------------------------------------------- builders

fn mk_set(key: &str, elems: &[&str]) -> NftSet {
    NftSet {
        key_type: key.into(),
        data_type: None,
        elements: elems.iter().map(|e| (e.to_string(), None)).collect(),
    }
}

fn mk_map(key: &str, data: &str, elems: &[(&str, &str)]) -> NftSet {
    NftSet {
        key_type: key.into(),
        data_type: Some(data.into()),
        elements: elems
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect(),
    }
}

fn mk_chain(base: Option<(&str, &str, i32)>, rules: &[&str]) -> NftChain {
    NftChain {
        base: base.map(|(kind, hook, priority)| NftBaseChain {
            kind: kind.into(),
            hook: hook.into(),
            priority,
        }),
        rules: rules.iter().map(|r| r.to_string()).collect(),
    }
}

fn mk_table(
    family: NftFamily,
    sets: Vec<(&str, NftSet)>,
    chains: Vec<(&str, NftChain)>,
) -> NftTable {
    NftTable {
        family,
        name: NFT_TABLE.into(),
        sets: sets.into_iter().map(|(n, s)| (n.to_string(), s)).collect(),
        chains: chains
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
    }
}

/// The east-west table: the gateway MAC never crosses the overlay.
/// `counter` is for the tests only (the agent's rules carry none).
fn mk_bridge_table(counter: bool) -> NftTable {
    let c = if counter { " counter" } else { "" };
    let rules = [
        format!(r#"oifname "dvrvx-*" ether saddr @gw_macs{c} ether saddr set 02:aa:00:00:00:01"#),
        format!(r#"oifname "dvrvx-*" arp operation request arp daddr ip @gw_ips{c} drop"#),
        format!(r#"oifname "dvrvx-*" ether daddr @gw_macs{c} drop"#),
    ];
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    mk_table(
        NftFamily::Bridge,
        vec![
            ("gw_ips", mk_set("ipv4_addr", &["198.18.1.1"])),
            (
                "gw_macs",
                mk_set("ether_addr", &["02:00:00:00:00:01", "02:00:00:00:00:09"]),
            ),
        ],
        vec![("forward", mk_chain(Some(("filter", "forward", 0)), &rules))],
    )
}

/// The floating-IP table of a router namespace.
fn mk_nat_table(fips: &[(&str, &str)]) -> NftTable {
    let snat: Vec<(&str, &str)> = fips.iter().map(|(f, x)| (*x, *f)).collect();
    let keys: Vec<&str> = fips.iter().map(|(_, x)| *x).collect();
    mk_table(
        NftFamily::Ip,
        vec![
            ("fip_dnat", mk_map("ipv4_addr", "ipv4_addr", fips)),
            ("fip_snat", mk_map("ipv4_addr", "ipv4_addr", &snat)),
            ("fip_snat_keys", mk_set("ipv4_addr", &keys)),
        ],
        vec![
            (
                "mangle",
                mk_chain(
                    Some(("filter", "prerouting", -150)),
                    &["ip saddr @fip_snat_keys meta mark set 0x10"],
                ),
            ),
            (
                "postrouting",
                mk_chain(
                    Some(("nat", "postrouting", 100)),
                    &[r#"oifname "rfp-*" snat to ip saddr map @fip_snat"#],
                ),
            ),
            (
                "prerouting",
                mk_chain(
                    Some(("nat", "prerouting", -100)),
                    &[r#"iifname "rfp-*" dnat to ip daddr map @fip_dnat"#],
                ),
            ),
        ],
    )
}

// ------------------------------------------------------------ pure goldens

#[test]
fn golden_render_bridge() {
    let want = r#"table bridge kube_dvr {
	set gw_ips {
		type ipv4_addr
		elements = { 198.18.1.1 }
	}

	set gw_macs {
		type ether_addr
		elements = { 02:00:00:00:00:01,
			     02:00:00:00:00:09 }
	}

	chain forward {
		type filter hook forward priority 0; policy accept;
		oifname "dvrvx-*" ether saddr @gw_macs ether saddr set 02:aa:00:00:00:01 comment "kd:@0"
		oifname "dvrvx-*" arp operation request arp daddr ip @gw_ips drop comment "kd:@1"
		oifname "dvrvx-*" ether daddr @gw_macs drop comment "kd:@2"
	}
}
"#;
    let t = mk_bridge_table(false);
    assert_eq!(render(&t), with_tags(want, &t.chains["forward"].rules));
}

#[test]
fn golden_render_nat() {
    let t = mk_nat_table(&[
        ("203.0.113.10", "198.18.1.2"),
        ("203.0.113.11", "198.18.1.3"),
    ]);
    let want = r#"table ip kube_dvr {
	map fip_dnat {
		type ipv4_addr : ipv4_addr
		elements = { 203.0.113.10 : 198.18.1.2,
			     203.0.113.11 : 198.18.1.3 }
	}

	map fip_snat {
		type ipv4_addr : ipv4_addr
		elements = { 198.18.1.2 : 203.0.113.10,
			     198.18.1.3 : 203.0.113.11 }
	}

	set fip_snat_keys {
		type ipv4_addr
		elements = { 198.18.1.2,
			     198.18.1.3 }
	}

	chain mangle {
		type filter hook prerouting priority -150; policy accept;
		ip saddr @fip_snat_keys meta mark set 0x10 comment "kd:3afa2695f587811e"
	}

	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		oifname "rfp-*" snat to ip saddr map @fip_snat comment "kd:53cbcf394eaabf4f"
	}

	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		iifname "rfp-*" dnat to ip daddr map @fip_dnat comment "kd:f613c93ba383e830"
	}
}
"#;
    assert_eq!(render(&t), want);
}

/// Replace `kd:@i` in a golden text by the tag of `rules[i]`.
fn with_tags(golden: &str, rules: &[String]) -> String {
    let mut s = golden.to_string();
    for (i, r) in rules.iter().enumerate() {
        s = s.replace(&format!("kd:@{i}"), &rule_tag(r));
    }
    s
}

#[test]
fn golden_create_and_delete() {
    let t = mk_nat_table(&[("203.0.113.10", "198.18.1.2")]);
    let b = plan_batch(None, Some(&t));
    let want = r#"add table ip kube_dvr
add map ip kube_dvr fip_dnat { type ipv4_addr : ipv4_addr; }
add map ip kube_dvr fip_snat { type ipv4_addr : ipv4_addr; }
add set ip kube_dvr fip_snat_keys { type ipv4_addr; }
add chain ip kube_dvr mangle { type filter hook prerouting priority -150; policy accept; }
add chain ip kube_dvr postrouting { type nat hook postrouting priority 100; policy accept; }
add chain ip kube_dvr prerouting { type nat hook prerouting priority -100; policy accept; }
add element ip kube_dvr fip_dnat { 203.0.113.10 : 198.18.1.2 }
add element ip kube_dvr fip_snat { 198.18.1.2 : 203.0.113.10 }
add element ip kube_dvr fip_snat_keys { 198.18.1.2 }
add rule ip kube_dvr mangle ip saddr @fip_snat_keys meta mark set 0x10 comment "kd:3afa2695f587811e"
add rule ip kube_dvr postrouting oifname "rfp-*" snat to ip saddr map @fip_snat comment "kd:53cbcf394eaabf4f"
add rule ip kube_dvr prerouting iifname "rfp-*" dnat to ip daddr map @fip_dnat comment "kd:f613c93ba383e830"
"#;
    assert_eq!(b.script(), want);
    // table + 3 sets + 3 chains + 3 elements + 3 chains' rules.
    assert_eq!(b.writes(), 13);

    assert_eq!(
        plan_batch(Some(&t), None).script(),
        "delete table ip kube_dvr\n"
    );
    assert_eq!(plan_batch(Some(&t), None).writes(), 1);
    assert!(plan_batch(None, None).is_empty());
    assert!(plan_batch(Some(&t), Some(&t)).is_empty());
    assert_eq!(plan_batch(Some(&t), Some(&t)).writes(), 0);
}

#[test]
fn golden_update_is_minimal() {
    let old = mk_nat_table(&[
        ("203.0.113.10", "198.18.1.2"),
        ("203.0.113.11", "198.18.1.3"),
    ]);
    // .10 moves to another workload, .11 goes, .12 comes; a new set and a
    // new regular chain; the mangle rule changes.
    let mut new = mk_nat_table(&[
        ("203.0.113.10", "198.18.1.4"),
        ("203.0.113.12", "198.18.1.3"),
    ]);
    new.sets
        .insert("extra".into(), mk_set("ipv4_addr", &["203.0.113.99"]));
    new.chains
        .insert("jumps".into(), mk_chain(None, &["counter"]));
    new.chains.get_mut("mangle").unwrap().rules = vec![
        "ip saddr @fip_snat_keys meta mark set 0x10".into(),
        "ip saddr @extra drop".into(),
    ];
    let b = plan_batch(Some(&old), Some(&new));
    let want = r#"add set ip kube_dvr extra { type ipv4_addr; }
add chain ip kube_dvr jumps
delete element ip kube_dvr fip_dnat { 203.0.113.10, 203.0.113.11 }
delete element ip kube_dvr fip_snat { 198.18.1.2, 198.18.1.3 }
delete element ip kube_dvr fip_snat_keys { 198.18.1.2 }
add element ip kube_dvr extra { 203.0.113.99 }
add element ip kube_dvr fip_dnat { 203.0.113.10 : 198.18.1.4, 203.0.113.12 : 198.18.1.3 }
add element ip kube_dvr fip_snat { 198.18.1.3 : 203.0.113.12, 198.18.1.4 : 203.0.113.10 }
add element ip kube_dvr fip_snat_keys { 198.18.1.4 }
add rule ip kube_dvr jumps counter comment "kd:@0"
flush chain ip kube_dvr mangle
add rule ip kube_dvr mangle ip saddr @fip_snat_keys meta mark set 0x10 comment "kd:3afa2695f587811e"
add rule ip kube_dvr mangle ip saddr @extra drop comment "kd:@1"
"#;
    let tags = ["counter".to_string(), "ip saddr @extra drop".to_string()];
    assert_eq!(b.script(), with_tags(want, &tags));
    // set + chain + 5 deleted + 6 added elements + 2 chains' rules.
    assert_eq!(b.writes(), 15);

    // A changed priority is structural: the table is replaced atomically.
    let mut moved = old.clone();
    moved
        .chains
        .get_mut("prerouting")
        .unwrap()
        .base
        .as_mut()
        .unwrap()
        .priority = -90;
    let s = plan_batch(Some(&old), Some(&moved)).script();
    assert!(
        s.starts_with("delete table ip kube_dvr\nadd table ip kube_dvr\n"),
        "{s}"
    );
    assert!(s.contains("add chain ip kube_dvr prerouting { type nat hook prerouting priority -90;"));
    // So is a set that should not exist any more, or one with a new type.
    let mut fewer = old.clone();
    fewer.sets.remove("fip_snat_keys");
    assert!(plan_batch(Some(&old), Some(&fewer))
        .script()
        .starts_with("delete table"));
    let mut retyped = old.clone();
    retyped.sets.get_mut("fip_snat").unwrap().data_type = Some("ether_addr".into());
    assert!(plan_batch(Some(&old), Some(&retyped))
        .script()
        .starts_with("delete table"));
}

#[test]
fn observed_spelling_does_not_cause_churn() {
    // nft lists marks in decimal and MACs in lower case.
    let mut desired = mk_table(
        NftFamily::Ip,
        vec![(
            "m",
            mk_map("mark", "ether_addr", &[("0x10", "02:AA:00:00:00:01")]),
        )],
        vec![],
    );
    let mut observed = desired.clone();
    observed.sets.get_mut("m").unwrap().elements =
        BTreeMap::from([("16".to_string(), Some("02:aa:00:00:00:01".to_string()))]);
    assert!(plan_batch(Some(&observed), Some(&desired)).is_empty());
    desired.sets.get_mut("m").unwrap().elements =
        BTreeMap::from([("0x10".to_string(), Some("02:aa:00:00:00:02".to_string()))]);
    let b = plan_batch(Some(&observed), Some(&desired));
    assert_eq!(
        b.script(),
        "delete element ip kube_dvr m { 16 }\nadd element ip kube_dvr m { 0x10 : 02:aa:00:00:00:02 }\n"
    );
    assert_eq!(b.writes(), 2);
}

#[test]
fn huge_element_lists_are_chunked_compactly() {
    let fips: Vec<(String, String)> = (0..5000u32)
        .map(|i| {
            (
                format!("198.18.{}.{}", i / 256, i % 256),
                format!("203.0.113.{}", i % 256),
            )
        })
        .collect();
    let fips: Vec<(&str, &str)> = fips.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let empty = mk_nat_table(&[]);
    let mut t = empty.clone();
    t.sets
        .insert("fip_dnat".into(), mk_map("ipv4_addr", "ipv4_addr", &fips));
    let b = plan_batch(Some(&empty), Some(&t));
    assert_eq!(b.writes(), 5000);
    let lines: Vec<_> = b.script().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "5000 elements in chunks of 2048");
    assert!(lines
        .iter()
        .all(|l| l.starts_with("add element ip kube_dvr fip_dnat { ")));
}

#[test]
fn errors_have_kinds() {
    let e = nft::NftError::Parse {
        family: "ip",
        table: "kube_dvr".into(),
        detail: "x".into(),
    };
    assert_eq!(e.kind(), "nft_parse");
}

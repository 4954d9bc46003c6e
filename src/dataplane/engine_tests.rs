//! The change path's bookkeeping without a kernel.
use super::*;
use crate::dataplane::nft::plan_batch;
use crate::dataplane::north_south::removed_keys;
use crate::plan::model::{NftBaseChain, NftChain, NftFamily};
use crate::plan::names::FIP_DNAT_MAP;

/// A floating-IP table: `fip_dnat` floating → fixed, `fip_fixed` the fixed
/// addresses, one base chain.
fn fip_table(pairs: &[(&str, &str)], rule: &str) -> NftTable {
    let map = |elems: BTreeMap<String, Option<String>>, data: Option<&str>| NftSet {
        key_type: "ipv4_addr".into(),
        data_type: data.map(Into::into),
        elements: elems,
    };
    NftTable {
        family: NftFamily::Ip,
        name: "kube_dvr".into(),
        sets: BTreeMap::from([
            (
                FIP_DNAT_MAP.to_string(),
                map(
                    pairs
                        .iter()
                        .map(|(f, x)| (f.to_string(), Some(x.to_string())))
                        .collect(),
                    Some("ipv4_addr"),
                ),
            ),
            (
                "fip_fixed".to_string(),
                map(
                    pairs.iter().map(|(_, x)| (x.to_string(), None)).collect(),
                    None,
                ),
            ),
        ]),
        chains: BTreeMap::from([(
            "prerouting".to_string(),
            NftChain {
                base: Some(NftBaseChain {
                    kind: "nat".into(),
                    hook: "prerouting".into(),
                    priority: -100,
                }),
                rules: vec![rule.into()],
            },
        )]),
    }
}

fn ns(nft: NftTable) -> NsState {
    NsState {
        nft: Some(nft),
        ..NsState::default()
    }
}

const RULE: &str = "dnat to ip daddr map @fip_dnat";

#[test]
fn element_changes_shrink_to_the_difference_and_patch_back() {
    let l = ns(fip_table(
        &[
            ("198.19.1.1", "10.0.0.1"),
            ("198.19.1.2", "10.0.0.2"),
            ("198.19.1.3", "10.0.0.3"),
        ],
        RULE,
    ));
    // .2 retargeted, .3 gone, .4 new, .1 unchanged.
    let d = ns(fip_table(
        &[
            ("198.19.1.1", "10.0.0.1"),
            ("198.19.1.2", "10.0.0.9"),
            ("198.19.1.4", "10.0.0.4"),
        ],
        RULE,
    ));
    let (b, a) = shrink_sets(&l, &d);
    let (bt, at) = (b.nft.as_ref().unwrap(), a.nft.as_ref().unwrap());
    let keys = |t: &NftTable, set: &str| t.sets[set].elements.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(bt, FIP_DNAT_MAP), ["198.19.1.2", "198.19.1.3"]);
    assert_eq!(keys(at, FIP_DNAT_MAP), ["198.19.1.2", "198.19.1.4"]);
    assert_eq!(keys(bt, "fip_fixed"), ["10.0.0.2", "10.0.0.3"]);
    assert_eq!(keys(at, "fip_fixed"), ["10.0.0.4", "10.0.0.9"]);
    assert_eq!(bt.chains, l.nft.as_ref().unwrap().chains);

    // The same batch and the same conntrack flushes as from the whole tables.
    let whole = plan_batch(l.nft.as_ref(), d.nft.as_ref());
    let shrunk = plan_batch(b.nft.as_ref(), a.nft.as_ref());
    assert_eq!(shrunk.script(), whole.script());
    assert_eq!(shrunk.writes(), whole.writes());
    assert_eq!(
        removed_keys(b.nft.as_ref(), a.nft.as_ref(), FIP_DNAT_MAP),
        removed_keys(l.nft.as_ref(), d.nft.as_ref(), FIP_DNAT_MAP)
    );

    let mut last = l.clone();
    patch(&mut last, &b, &a, &d);
    assert_eq!(last, d);
}

#[test]
fn other_table_changes_keep_both_tables_whole() {
    let pairs = [("198.19.1.1", "10.0.0.1"), ("198.19.1.2", "10.0.0.2")];
    let l = ns(fip_table(&pairs, RULE));
    // A rule changed (and an element went): the chain is rewritten, so the
    // diff sees both tables as they are.
    let d = ns(fip_table(&pairs[..1], "ip daddr @fip_fixed accept"));
    let (b, a) = shrink_sets(&l, &d);
    assert_eq!(b.nft, l.nft);
    assert_eq!(a.nft, d.nft);
    let mut last = l.clone();
    patch(&mut last, &b, &a, &d);
    assert_eq!(last, d);

    // A table that goes, or comes.
    let none = NsState::default();
    let (b, a) = shrink_sets(&l, &none);
    assert_eq!((b.nft, a.nft), (l.nft.clone(), None));
    let (b, a) = shrink_sets(&none, &d);
    assert_eq!((b.nft, a.nft), (None, d.nft.clone()));
}

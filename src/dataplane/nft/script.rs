//! nft text: batch statements and the full-table rendering. Pure.
use std::fmt::Write;

use super::rule_tag;
use crate::plan::model::{NftBaseChain, NftSet, NftTable};

fn table_ref(t: &NftTable) -> String {
    format!("{} {}", t.family.as_str(), t.name)
}

pub(super) fn add_table(t: &NftTable) -> String {
    format!("add table {}", table_ref(t))
}

pub(super) fn delete_table(t: &NftTable) -> String {
    format!("delete table {}", table_ref(t))
}

/// `type K; flags ...` / `type K : V; flags ...`. A key type may carry
/// further declarations after a `;` (that is how [`super::observe`] reports
/// flags), so the data type goes between the key and the first `;`.
fn set_type(set: &NftSet) -> String {
    let (key, rest) = match set.key_type.split_once(';') {
        Some((k, r)) => (k.trim(), Some(r.trim())),
        None => (set.key_type.trim(), None),
    };
    let mut s = format!("type {key}");
    if let Some(data) = &set.data_type {
        write!(s, " : {}", data.trim()).unwrap();
    }
    if let Some(rest) = rest.filter(|r| !r.is_empty()) {
        write!(s, "; {rest}").unwrap();
    }
    s
}

fn set_keyword(set: &NftSet) -> &'static str {
    if set.data_type.is_some() {
        "map"
    } else {
        "set"
    }
}

pub(super) fn add_set(t: &NftTable, name: &str, set: &NftSet) -> String {
    format!(
        "add {} {} {name} {{ {}; }}",
        set_keyword(set),
        table_ref(t),
        set_type(set)
    )
}

fn base_decl(b: &NftBaseChain) -> String {
    format!(
        "type {} hook {} priority {}; policy accept;",
        b.kind, b.hook, b.priority
    )
}

pub(super) fn add_chain(t: &NftTable, name: &str, base: Option<&NftBaseChain>) -> String {
    match base {
        Some(b) => format!("add chain {} {name} {{ {} }}", table_ref(t), base_decl(b)),
        None => format!("add chain {} {name}", table_ref(t)),
    }
}

pub(super) fn flush_chain(t: &NftTable, name: &str) -> String {
    format!("flush chain {} {name}", table_ref(t))
}

/// A rule as written: its text plus its tag.
fn tagged(rule: &str) -> String {
    format!("{} comment \"{}\"", rule.trim(), rule_tag(rule))
}

/// All rules of a chain, one `add rule` line each (one statement as far as
/// [`super::NftBatch::writes`] is concerned).
pub(super) fn add_rules(t: &NftTable, chain: &str, rules: &[String]) -> String {
    let prefix = format!("add rule {} {chain}", table_ref(t));
    rules
        .iter()
        .map(|r| format!("{prefix} {}", tagged(r)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn element(k: &str, v: Option<&String>) -> String {
    match v {
        Some(v) => format!("{} : {}", k.trim(), v.trim()),
        None => k.trim().to_string(),
    }
}

pub(super) fn add_elements(
    t: &NftTable,
    set: &str,
    elems: &[(&String, Option<&String>)],
) -> String {
    let list: Vec<_> = elems.iter().map(|(k, v)| element(k, *v)).collect();
    format!(
        "add element {} {set} {{ {} }}",
        table_ref(t),
        list.join(", ")
    )
}

pub(super) fn delete_elements(t: &NftTable, set: &str, keys: &[&String]) -> String {
    let list: Vec<_> = keys.iter().map(|k| k.trim()).collect();
    format!(
        "delete element {} {set} {{ {} }}",
        table_ref(t),
        list.join(", ")
    )
}

/// The full text of `table` in `nft list` layout, rules tagged as they are
/// written. Loadable with `nft -f`. Pure (golden tests, docs, `--dry-run`).
pub fn render(table: &NftTable) -> String {
    let mut s = format!("table {} {{\n", table_ref(table));
    let mut blocks = Vec::new();
    for (name, set) in &table.sets {
        let mut b = format!("\t{} {name} {{\n\t\t{}\n", set_keyword(set), set_type(set));
        if !set.elements.is_empty() {
            let list: Vec<_> = set
                .elements
                .iter()
                .map(|(k, v)| element(k, v.as_ref()))
                .collect();
            // nft's own layout: continuation lines aligned after "{ ".
            writeln!(b, "\t\telements = {{ {} }}", list.join(",\n\t\t\t     ")).unwrap();
        }
        b.push_str("\t}\n");
        blocks.push(b);
    }
    for (name, chain) in &table.chains {
        let mut b = format!("\tchain {name} {{\n");
        if let Some(base) = &chain.base {
            writeln!(b, "\t\t{}", base_decl(base)).unwrap();
        }
        for r in &chain.rules {
            writeln!(b, "\t\t{}", tagged(r)).unwrap();
        }
        b.push_str("\t}\n");
        blocks.push(b);
    }
    s.push_str(&blocks.join("\n"));
    s.push_str("}\n");
    s
}

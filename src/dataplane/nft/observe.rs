//! Reading a table back from `nft -j list table` (or the same listing
//! through libnftables).
use std::collections::BTreeMap;

use serde_json::Value;

use super::exec::{self, Backend};
use super::NftError;
use crate::plan::model::{NftBaseChain, NftChain, NftFamily, NftSet, NftTable};

/// Read kube-dvr's table `table` of `family` in the CALLING THREAD's network
/// namespace (`list table ...` with JSON output, through libnftables or an
/// `nft -j` child, see [`exec`]). `Ok(None)` when the table does not exist.
///
/// The result is not the model text the table was written from:
/// - each rule is reported as its tag, the literal string `"kd:<hash>"`
///   (see [`super::rule_tag`]); a rule without a kube-dvr tag is reported as
///   `"untagged:<handle>"`, which matches no desired rule;
/// - set and map elements are in nft's canonical notation (lower-case MACs,
///   integers in decimal, prefixes `a/len`, ranges `a-b`, concatenations
///   `a . b`, verdicts `drop`, `jump c`);
/// - declarations kube-dvr never writes show up in the type strings so that
///   they count as structural changes: set flags as `key_type` suffix
///   `"; flags a,b"`, a base chain policy other than accept as a `kind`
///   suffix `" policy drop"`.
///
/// Compare with [`super::plan_batch`], not with `==`.
pub fn observe(family: NftFamily, table: &str) -> Result<Option<NftTable>, NftError> {
    observe_with(exec::backend(), family, table)
}

/// [`observe`] through the given backend.
pub fn observe_with(
    backend: Backend,
    family: NftFamily,
    table: &str,
) -> Result<Option<NftTable>, NftError> {
    let cmd = format!("list table {} {table}", family.as_str());
    let out = exec::run_command_with(backend, &cmd, true).map_err(|source| NftError::Spawn {
        op: "observe",
        source,
    })?;
    if !out.ok {
        if out.stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NftError::failed(
            "observe",
            out.status,
            out.stderr,
            String::new(),
        ));
    }
    parse_table_json(family, table, &out.stdout)
}

/// Parse `nft -j list table <family> <table>` output (see [`observe`]).
/// `Ok(None)` when the output holds no such table.
pub fn parse_table_json(
    family: NftFamily,
    table: &str,
    json: &str,
) -> Result<Option<NftTable>, NftError> {
    let bad = |detail: String| NftError::Parse {
        family: family.as_str(),
        table: table.to_string(),
        detail,
    };
    let v: Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"nftables\" array".into()))?;
    let mine = |o: &Value| {
        o.get("family").and_then(Value::as_str) == Some(family.as_str())
            && o.get("table").and_then(Value::as_str) == Some(table)
    };
    let mut found = false;
    let mut t = NftTable {
        family,
        name: table.to_string(),
        sets: BTreeMap::new(),
        chains: BTreeMap::new(),
    };
    for item in items {
        let Some((kind, o)) = item.as_object().and_then(|m| m.iter().next()) else {
            continue;
        };
        match kind.as_str() {
            "table" => {
                found |= o.get("family").and_then(Value::as_str) == Some(family.as_str())
                    && o.get("name").and_then(Value::as_str) == Some(table);
            }
            "set" | "map" if mine(o) => {
                let name =
                    str_field(o, "name").ok_or_else(|| bad(format!("{kind} without name")))?;
                let set = parse_set(o).map_err(|e| bad(format!("{kind} {name}: {e}")))?;
                t.sets.insert(name.to_string(), set);
            }
            "chain" if mine(o) => {
                let name = str_field(o, "name").ok_or_else(|| bad("chain without name".into()))?;
                let base = match str_field(o, "type") {
                    None => None,
                    Some(ty) => {
                        let mut kind = ty.to_string();
                        match str_field(o, "policy") {
                            Some("accept") | None => {}
                            Some(p) => kind = format!("{kind} policy {p}"),
                        }
                        Some(NftBaseChain {
                            kind,
                            hook: str_field(o, "hook").unwrap_or_default().to_string(),
                            priority: o.get("prio").and_then(Value::as_i64).unwrap_or_default()
                                as i32,
                        })
                    }
                };
                let chain = t.chains.entry(name.to_string()).or_insert(NftChain {
                    base: None,
                    rules: Vec::new(),
                });
                chain.base = base;
            }
            "rule" if mine(o) => {
                let chain =
                    str_field(o, "chain").ok_or_else(|| bad("rule without chain".into()))?;
                let tag = match str_field(o, "comment") {
                    Some(c) if super::is_tag(c) => c.to_string(),
                    _ => format!(
                        "untagged:{}",
                        o.get("handle").and_then(Value::as_u64).unwrap_or_default()
                    ),
                };
                // nft lists chains before rules; be robust anyway.
                t.chains
                    .entry(chain.to_string())
                    .or_insert(NftChain {
                        base: None,
                        rules: Vec::new(),
                    })
                    .rules
                    .push(tag);
            }
            _ => {}
        }
    }
    Ok(found.then_some(t))
}

fn str_field<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

fn parse_set(o: &Value) -> Result<NftSet, String> {
    let mut key_type = type_text(o.get("type")).ok_or("no type")?;
    if let Some(flags) = o.get("flags").and_then(Value::as_array) {
        let flags: Vec<_> = flags.iter().filter_map(Value::as_str).collect();
        if !flags.is_empty() {
            key_type = format!("{key_type}; flags {}", flags.join(","));
        }
    }
    let data_type = match o.get("map") {
        None => None,
        Some(m) => Some(type_text(Some(m)).ok_or("bad map type")?),
    };
    let mut elements = BTreeMap::new();
    for e in o
        .get("elem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match (&data_type, e) {
            (Some(_), Value::Array(kv)) if kv.len() == 2 => {
                let k = expr_text(&kv[0]).ok_or_else(|| format!("element key {}", kv[0]))?;
                let v = expr_text(&kv[1]).ok_or_else(|| format!("element value {}", kv[1]))?;
                elements.insert(k, Some(v));
            }
            _ => {
                let k = expr_text(e).ok_or_else(|| format!("element {e}"))?;
                elements.insert(k, None);
            }
        }
    }
    Ok(NftSet {
        key_type,
        data_type,
        elements,
    })
}

/// A type is a name or, for concatenations, a list of names.
fn type_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let parts: Option<Vec<_>> = parts.iter().map(|p| p.as_str()).collect();
            Some(parts?.join(" . "))
        }
        _ => None,
    }
}

/// An element key or value in nft notation.
fn expr_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(m) => {
            let (k, inner) = m.iter().next()?;
            match k.as_str() {
                // An element with attributes (timeout, counter, comment).
                "elem" => expr_text(inner.get("val")?),
                "prefix" => Some(format!(
                    "{}/{}",
                    expr_text(inner.get("addr")?)?,
                    inner.get("len")?.as_u64()?
                )),
                "range" => {
                    let r = inner.as_array()?;
                    Some(format!(
                        "{}-{}",
                        expr_text(r.first()?)?,
                        expr_text(r.get(1)?)?
                    ))
                }
                "concat" => {
                    let parts: Option<Vec<_>> = inner.as_array()?.iter().map(expr_text).collect();
                    Some(parts?.join(" . "))
                }
                "accept" | "drop" | "continue" | "return" => Some(k.clone()),
                "jump" | "goto" => Some(format!("{k} {}", inner.get("target")?.as_str()?)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_sets_chains_and_odd_elements() {
        let json = r#"{"nftables": [
          {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"table": {"family": "ip", "name": "kube_dvr", "handle": 1}},
          {"map": {"family": "ip", "name": "fip_dnat", "table": "kube_dvr", "type": "ipv4_addr",
                   "handle": 1, "map": "ipv4_addr", "elem": [["203.0.113.10", "10.0.0.5"]]}},
          {"set": {"family": "ip", "name": "iv", "table": "kube_dvr", "type": "ipv4_addr",
                   "flags": ["interval"], "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}},
                   {"range": ["11.1.0.0", "11.1.2.255"]}, {"elem": {"val": "12.0.0.1", "timeout": 5}}]}},
          {"map": {"family": "ip", "name": "m2", "table": "kube_dvr", "type": "mark", "map": "verdict",
                   "elem": [[3, {"drop": null}], [16, {"jump": {"target": "empty"}}]]}},
          {"chain": {"family": "ip", "table": "kube_dvr", "name": "pre", "handle": 4, "type": "nat",
                     "hook": "prerouting", "prio": -100, "policy": "accept"}},
          {"chain": {"family": "ip", "table": "kube_dvr", "name": "empty", "handle": 10}},
          {"rule": {"family": "ip", "table": "kube_dvr", "chain": "pre", "handle": 7,
                    "comment": "kd:0123456789abcdef", "expr": []}},
          {"rule": {"family": "ip", "table": "kube_dvr", "chain": "pre", "handle": 8, "expr": []}}
        ]}"#;
        let t = parse_table_json(NftFamily::Ip, "kube_dvr", json)
            .unwrap()
            .expect("table present");
        let m = &t.sets["fip_dnat"];
        assert_eq!(m.data_type.as_deref(), Some("ipv4_addr"));
        assert_eq!(m.elements["203.0.113.10"].as_deref(), Some("10.0.0.5"));
        let iv = &t.sets["iv"];
        assert_eq!(iv.key_type, "ipv4_addr; flags interval");
        let keys: Vec<_> = iv.elements.keys().map(String::as_str).collect();
        assert_eq!(keys, ["10.0.0.0/8", "11.1.0.0-11.1.2.255", "12.0.0.1"]);
        assert_eq!(t.sets["m2"].elements["16"].as_deref(), Some("jump empty"));
        assert_eq!(t.sets["m2"].elements["3"].as_deref(), Some("drop"));
        let pre = &t.chains["pre"];
        assert_eq!(pre.base.as_ref().unwrap().priority, -100);
        assert_eq!(pre.rules, ["kd:0123456789abcdef", "untagged:8"]);
        assert!(t.chains["empty"].base.is_none());
        assert!(parse_table_json(NftFamily::Bridge, "kube_dvr", json)
            .unwrap()
            .is_none());
    }
}

//! nftables: kube-dvr's own table, observed, diffed and applied as one
//! atomic batch.
//!
//! The model ([`NftTable`]) holds rules as plain nft text without comments.
//! When a rule is written, the engine appends `comment "kd:<hash>"`, where
//! `<hash>` is the 64-bit FNV-1a of the rule text (whitespace collapsed), in
//! hex: see [`rule_tag`]. The kernel's JSON does not give back the text a
//! rule was written with, so [`observe`] reports each rule by its tag and
//! [`plan_batch`] compares tag sequences. A rule without a kube-dvr tag (added
//! by hand, say) never matches, so its chain is rewritten.
//!
//! What a batch does, from observed to desired:
//! - no table wanted → `delete table`; no table yet → create everything;
//! - a structural difference (a set/map with another key or data type, a base
//!   chain with another type, hook or priority, a set/map or chain that should
//!   not exist) → `delete table` and create everything, in the same
//!   transaction, so packets see the old or the new table, never none;
//! - otherwise new sets and chains are added, set and map elements are added
//!   and deleted one by one (a map element whose value changed is deleted and
//!   re-added), and a chain whose tags differ is flushed and refilled.
//!
//! The batch runs as one script, that is one netlink transaction, through
//! libnftables in-process, or the `nft` process where the library is
//! missing ([`exec`]). Both [`observe`] and [`apply`] act in the calling
//! thread's network namespace.
//!
//! Kernel quirk (seen on 6.18): a `bridge`-family base chain registered in a
//! network namespace before the first bridge device was ever created there
//! never sees a frame, and stays blind after bridges appear (flushing or
//! adding chains does not help; deleting and re-creating the table does).
//! Create the subnet bridges before the bridge-family table.
pub mod exec;
mod observe;
mod script;

use std::collections::BTreeMap;

pub use exec::Backend;
pub use observe::{observe, observe_with, parse_table_json};
pub use script::render;

use crate::plan::model::{NftSet, NftTable};

/// Elements per `add element`/`delete element` statement. One statement per
/// set is the compact form; chunks keep single statements reasonably small.
const ELEMENT_CHUNK: usize = 2048;

/// Errors of the nftables layer.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("{op}: cannot run nft: {source}")]
    Spawn {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {failure}")]
    Failed {
        op: &'static str,
        /// Boxed: keeps the error (and errors that wrap it) small.
        failure: Box<NftFailure>,
    },
    #[error("observe {family} {table}: unexpected nft JSON: {detail}")]
    Parse {
        family: &'static str,
        table: String,
        detail: String,
    },
}

/// What a failed nft call (library or process) said.
#[derive(Debug, thiserror::Error)]
#[error("nft failed ({status}): {stderr}; script begins:\n{script_head}")]
pub struct NftFailure {
    pub status: String,
    pub stderr: String,
    /// The first lines of the script (empty for `observe`).
    pub script_head: String,
}

impl NftError {
    fn failed(op: &'static str, status: String, stderr: String, script_head: String) -> Self {
        NftError::Failed {
            op,
            failure: Box::new(NftFailure {
                status,
                stderr,
                script_head,
            }),
        }
    }

    /// A short stable label (for metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            NftError::Spawn { .. } => "nft_spawn",
            NftError::Failed { .. } => "nft_failed",
            NftError::Parse { .. } => "nft_parse",
        }
    }
}

/// The tag a rule carries in the kernel: `kd:` and the 64-bit FNV-1a of the
/// rule text with whitespace collapsed, as 16 hex digits. Text that already
/// is a tag (an observed rule) is returned as is.
pub fn rule_tag(rule: &str) -> String {
    if is_tag(rule) {
        return rule.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut first = true;
    for word in rule.split_whitespace() {
        if !first {
            h = fnv_step(h, b' ');
        }
        first = false;
        for &b in word.as_bytes() {
            h = fnv_step(h, b);
        }
    }
    format!("kd:{h:016x}")
}

fn fnv_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
}

fn is_tag(s: &str) -> bool {
    s.strip_prefix("kd:")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A set of changes to one table, applied atomically by [`apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftBatch {
    statements: Vec<String>,
    writes: u64,
}

impl NftBatch {
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Kernel writes this batch makes: one per element added or removed, one
    /// per chain whose rules are (re)written, one per table, set or chain
    /// created or deleted. Replacing a map element's value counts two.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The nft script, one statement per line (for logs and golden tests).
    pub fn script(&self) -> String {
        let mut s = String::new();
        for st in &self.statements {
            s.push_str(st);
            s.push('\n');
        }
        s
    }

    fn push(&mut self, statement: String, writes: u64) {
        self.statements.push(statement);
        self.writes += writes;
    }
}

/// What to change to go from `observed` to `desired` (`None` = no table).
/// Pure. `observed` normally comes from [`observe`] (rules as tags); rules
/// of `desired` are model text.
pub fn plan_batch(observed: Option<&NftTable>, desired: Option<&NftTable>) -> NftBatch {
    let mut b = NftBatch::default();
    match (observed, desired) {
        (None, None) => {}
        (Some(o), None) => b.push(script::delete_table(o), 1),
        (None, Some(d)) => create(&mut b, d),
        (Some(o), Some(d)) if structural_change(o, d) => {
            b.push(script::delete_table(o), 1);
            create(&mut b, d);
        }
        (Some(o), Some(d)) => update(&mut b, o, d),
    }
    b
}

/// Apply `batch` as one atomic transaction in the calling thread's network
/// namespace, with the process-wide [`exec::backend`]. An empty batch
/// does nothing.
pub fn apply(batch: &NftBatch) -> Result<(), NftError> {
    apply_with(exec::backend(), batch)
}

/// [`apply`] through the given backend.
pub fn apply_with(backend: Backend, batch: &NftBatch) -> Result<(), NftError> {
    if batch.is_empty() {
        return Ok(());
    }
    let script = batch.script();
    // Bounded in time (a hung nft is killed, a hung library call
    // abandoned: the pass fails and is retried).
    let out = exec::run_batch_with(backend, &script).map_err(|source| NftError::Spawn {
        op: "apply",
        source,
    })?;
    if !out.ok {
        let head = script.lines().take(8).collect::<Vec<_>>().join("\n");
        return Err(NftError::failed("apply", out.status, out.stderr, head));
    }
    Ok(())
}

/// Every statement needed to build `d` from nothing.
fn create(b: &mut NftBatch, d: &NftTable) {
    b.push(script::add_table(d), 1);
    for (name, set) in &d.sets {
        b.push(script::add_set(d, name, set), 1);
    }
    for (name, chain) in &d.chains {
        b.push(script::add_chain(d, name, chain.base.as_ref()), 1);
    }
    for (name, set) in &d.sets {
        let elems: Vec<_> = set.elements.iter().map(|(k, v)| (k, v.as_ref())).collect();
        add_elements(b, d, name, &elems);
    }
    for (name, chain) in &d.chains {
        if !chain.rules.is_empty() {
            b.push(script::add_rules(d, name, &chain.rules), 1);
        }
    }
}

/// A difference that element and rule edits cannot express.
fn structural_change(o: &NftTable, d: &NftTable) -> bool {
    if o.family != d.family || o.name != d.name {
        return true;
    }
    let sets = o.sets.iter().any(|(name, os)| match d.sets.get(name) {
        None => true,
        Some(ds) => {
            norm_type(&os.key_type) != norm_type(&ds.key_type)
                || os.data_type.as_deref().map(norm_type) != ds.data_type.as_deref().map(norm_type)
        }
    });
    let chains = o.chains.iter().any(|(name, oc)| match d.chains.get(name) {
        None => true,
        Some(dc) => oc.base != dc.base,
    });
    sets || chains
}

fn update(b: &mut NftBatch, o: &NftTable, d: &NftTable) {
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for (name, ds) in &d.sets {
        match o.sets.get(name) {
            None => {
                b.push(script::add_set(d, name, ds), 1);
                let all: Vec<_> = ds.elements.iter().map(|(k, v)| (k, v.as_ref())).collect();
                adds.push((name, all));
            }
            Some(os) => {
                let (del, add) = element_diff(os, ds);
                if !del.is_empty() {
                    deletes.push((name, del));
                }
                if !add.is_empty() {
                    adds.push((name, add));
                }
            }
        }
    }
    let mut rewrites = Vec::new();
    for (name, dc) in &d.chains {
        match o.chains.get(name) {
            None => {
                b.push(script::add_chain(d, name, dc.base.as_ref()), 1);
                if !dc.rules.is_empty() {
                    rewrites.push((name, dc, false));
                }
            }
            Some(oc) => {
                let tags = |rules: &[String]| rules.iter().map(|r| rule_tag(r)).collect::<Vec<_>>();
                if tags(&oc.rules) != tags(&dc.rules) {
                    rewrites.push((name, dc, true));
                }
            }
        }
    }
    for (name, keys) in deletes {
        for chunk in keys.chunks(ELEMENT_CHUNK) {
            b.push(script::delete_elements(d, name, chunk), chunk.len() as u64);
        }
    }
    for (name, elems) in adds {
        add_elements(b, d, name, &elems);
    }
    for (name, chain, existed) in rewrites {
        if existed {
            b.push(script::flush_chain(d, name), 0);
        }
        if chain.rules.is_empty() {
            // The flush alone is the rewrite.
            b.writes += 1;
        } else {
            b.push(script::add_rules(d, name, &chain.rules), 1);
        }
    }
}

fn add_elements(b: &mut NftBatch, t: &NftTable, set: &str, elems: &[(&String, Option<&String>)]) {
    for chunk in elems.chunks(ELEMENT_CHUNK) {
        b.push(script::add_elements(t, set, chunk), chunk.len() as u64);
    }
}

/// Keys to delete (in the observed spelling) and elements to add.
fn element_diff<'a>(
    o: &'a NftSet,
    d: &'a NftSet,
) -> (Vec<&'a String>, Vec<(&'a String, Option<&'a String>)>) {
    let norm_map = |s: &'a NftSet| -> BTreeMap<String, (&'a String, Option<String>)> {
        s.elements
            .iter()
            .map(|(k, v)| (norm_value(k), (k, v.as_deref().map(norm_value))))
            .collect()
    };
    let on = norm_map(o);
    let dn = norm_map(d);
    let mut del = Vec::new();
    let mut add = Vec::new();
    for (nk, (k, v)) in &on {
        match dn.get(nk) {
            Some((_, dv)) if dv == v => {}
            _ => del.push(*k),
        }
    }
    for (nk, (k, v)) in &dn {
        match on.get(nk) {
            Some((_, ov)) if ov == v => {}
            _ => add.push((*k, d.elements.get(*k).and_then(|v| v.as_ref()))),
        }
    }
    (del, add)
}

/// Element text as nft prints it back: lower case, integers in decimal
/// (`0x10` is listed as `16`).
fn norm_value(s: &str) -> String {
    let t = s.trim().to_ascii_lowercase();
    if let Some(hex) = t.strip_prefix("0x") {
        if let Ok(n) = u64::from_str_radix(hex, 16) {
            return n.to_string();
        }
    }
    t
}

fn norm_type(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_whitespace_blind() {
        // FNV-1a 64 of the empty string is the offset basis.
        assert_eq!(rule_tag(""), "kd:cbf29ce484222325");
        assert_eq!(rule_tag("a"), "kd:af63dc4c8601ec8c");
        assert_eq!(
            rule_tag("ip saddr  1.2.3.4\tdrop"),
            rule_tag("ip saddr 1.2.3.4 drop")
        );
        assert_ne!(rule_tag("drop"), rule_tag("accept"));
        let t = rule_tag("drop");
        assert_eq!(rule_tag(&t), t);
    }

    #[test]
    fn errors_stay_small_enough_to_wrap() {
        // Wrapped with context by the engine; clippy's large-Err limit is 128.
        assert!(std::mem::size_of::<NftError>() <= 72);
        let e = NftError::failed(
            "apply",
            "exit 1".into(),
            "Error: x".into(),
            "add table".into(),
        );
        assert_eq!(e.kind(), "nft_failed");
        assert!(e.to_string().contains("Error: x"), "{e}");
    }

    #[test]
    fn values_normalise_like_nft_lists_them() {
        assert_eq!(norm_value("0x10"), "16");
        assert_eq!(norm_value("02:AA:00:00:00:01"), "02:aa:00:00:00:01");
        assert_eq!(norm_value("203.0.113.1"), "203.0.113.1");
    }
}

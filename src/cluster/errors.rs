//! Agent errors, per object.
//!
//! A node serves many tenants. An agent's errors therefore go on its Node
//! (`kubedvr.io/agent-errors`) as a JSON list of [`AgentError`]s, each naming
//! the one object its kernel operation belonged to, so the controller shows
//! an error only on that object's status and never shows a tenant another
//! tenant's names. An error the agent cannot pin to one object (the node's
//! shared state: the bridge-family nftables table, an observation of the
//! root namespace) has no object: every object on that node is then not
//! programmed, with a message that names nothing.
//!
//! Attribution ([`Owners`]) goes by the kernel names in the failed
//! operation's text: every kernel name is derived from one object's
//! allocations ([`crate::plan::names`]), so the names an operation mentions
//! say whose it is. When an operation mentions several objects of equal
//! specificity it stays unattributed (node-wide) rather than guess.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::api::{DistributedRouter, ExternalNetwork, FloatingIP, SnatGateway};
use crate::plan::names;
use crate::plan::view::{ClusterView, ObjectKey};

/// Longest `kubedvr.io/agent-errors` value written; later errors are
/// counted, not listed.
pub const MAX_ERRORS_LEN: usize = 4000;
/// Longest message of one error.
const MAX_MESSAGE_LEN: usize = 600;

/// One failed kernel operation of an agent pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    /// The object it belongs to, as [`object_id`] spells it; absent for
    /// node-wide state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub message: String,
}

/// `Kind/namespace/name`, or `Kind/name` for cluster-scoped kinds: the same
/// spelling as the controller's targets.
pub fn object_id(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{kind}/{ns}/{name}"),
        _ => format!("{kind}/{name}"),
    }
}

/// The annotation value for `errors` (None when there are none): a JSON
/// list, bounded to [`MAX_ERRORS_LEN`]; what does not fit is summarized by
/// a last, node-wide entry.
pub fn encode(errors: &[AgentError]) -> Option<String> {
    if errors.is_empty() {
        return None;
    }
    let mut kept: Vec<AgentError> = Vec::new();
    let mut len = 2;
    for e in errors {
        let mut e = e.clone();
        if e.message.len() > MAX_MESSAGE_LEN {
            let mut cut = MAX_MESSAGE_LEN;
            while !e.message.is_char_boundary(cut) {
                cut -= 1;
            }
            e.message.truncate(cut);
            e.message.push('…');
        }
        let n = serde_json::to_string(&e).map_or(0, |s| s.len()) + 1;
        if len + n > MAX_ERRORS_LEN - 80 {
            kept.push(AgentError {
                object: None,
                message: format!("and {} more errors", errors.len() - kept.len()),
            });
            break;
        }
        len += n;
        kept.push(e);
    }
    serde_json::to_string(&kept).ok()
}

/// Parse an annotation value. Text that is not such a list (an older agent)
/// is one node-wide error.
pub fn decode(text: &str) -> Vec<AgentError> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(text).unwrap_or_else(|_| {
        vec![AgentError {
            object: None,
            message: text.to_string(),
        }]
    })
}

/// Kernel name → the object it belongs to, and how specific that is.
#[derive(Debug, Default)]
pub struct Owners {
    by_token: HashMap<String, (u8, String)>,
}

/// Specificity: a floating address names one FloatingIP; a router's or a
/// SNAT gateway's names one of those; an external network's shared names
/// (`fip-`, `fg-`) many tenants' objects.
const EXTERNAL: u8 = 1;
const ROUTER: u8 = 2;
const FLOATING: u8 = 3;

fn router_id(k: &ObjectKey) -> String {
    object_id("DistributedRouter", Some(&k.namespace), &k.name)
}
fn snat_id(k: &ObjectKey) -> String {
    object_id("SnatGateway", Some(&k.namespace), &k.name)
}

impl Owners {
    fn add(&mut self, token: String, rank: u8, id: &str) {
        self.by_token.insert(token, (rank, id.to_string()));
    }

    fn add_router(&mut self, id: &str, index: Option<u32>, vnis: &[u32]) {
        for &v in vnis {
            for t in [
                names::bridge(v),
                names::vxlan(v),
                names::qr(v),
                names::qr_bridge(v),
            ] {
                self.add(t, ROUTER, id);
            }
        }
        if let Some(i) = index {
            self.add(names::qrouter_ns(i), ROUTER, id);
            self.add(names::rfp(i), ROUTER, id);
            self.add(names::fpr(i), ROUTER, id);
        }
    }

    fn add_snat(&mut self, id: &str, index: Option<u32>, vnis: &[u32]) {
        for &v in vnis {
            self.add(names::sg(v), ROUTER, id);
            self.add(names::sg_bridge(v), ROUTER, id);
        }
        if let Some(i) = index {
            self.add(names::snat_ns(i), ROUTER, id);
            self.add(names::qg(i), ROUTER, id);
            self.add(names::qg_bridge(i), ROUTER, id);
        }
    }

    fn add_external(&mut self, name: &str) {
        let id = object_id("ExternalNetwork", None, name);
        for t in [names::fip_ns(name), names::fg(name), names::fg_bridge(name)] {
            self.add(t, EXTERNAL, &id);
        }
    }

    /// The owners of every kernel name of a resolved view.
    pub fn from_view(view: &ClusterView) -> Owners {
        let mut o = Owners::default();
        for name in view.external_networks.keys() {
            o.add_external(name);
        }
        let mut routers = HashMap::new();
        for r in &view.routers {
            let vnis: Vec<u32> = r.subnets.iter().map(|s| s.vni).collect();
            o.add_router(&router_id(&r.key), Some(r.index), &vnis);
            routers.insert(r.key.clone(), (r.index, vnis));
        }
        for s in &view.snat_gateways {
            let (index, vnis) = routers.get(&s.router).cloned().unwrap_or_default();
            o.add_snat(&snat_id(&s.key), Some(index), &vnis);
            o.add(s.address.to_string(), ROUTER, &snat_id(&s.key));
        }
        for f in &view.floating_ips {
            let id = object_id("FloatingIP", Some(&f.key.namespace), &f.key.name);
            o.add(f.address.to_string(), FLOATING, &id);
        }
        o
    }

    /// Add the objects being deleted (left out of the view, their state
    /// being planned away), from what their statuses recorded: a failure
    /// to remove their state is theirs.
    pub fn add_deleting(
        &mut self,
        external_networks: &[&ExternalNetwork],
        routers: &[&DistributedRouter],
        floating_ips: &[&FloatingIP],
        snat_gateways: &[&SnatGateway],
    ) {
        let key = |m: &kube::api::ObjectMeta| {
            ObjectKey::new(
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        for e in external_networks {
            self.add_external(e.metadata.name.as_deref().unwrap_or(""));
        }
        let mut allocs: HashMap<ObjectKey, (Option<u32>, Vec<u32>)> = HashMap::new();
        for r in routers {
            let k = key(&r.metadata);
            let st = r.status.clone().unwrap_or_default();
            let vnis: Vec<u32> = st.subnets.iter().map(|s| s.vni).collect();
            self.add_router(&router_id(&k), st.index, &vnis);
            allocs.insert(k, (st.index, vnis));
        }
        for s in snat_gateways {
            let k = key(&s.metadata);
            let router = ObjectKey::new(k.namespace.clone(), s.spec.router.clone());
            let (index, vnis) = allocs.get(&router).cloned().unwrap_or_default();
            self.add_snat(&snat_id(&k), index, &vnis);
            if let Some(a) = s.status.as_ref().and_then(|s| s.address.clone()) {
                self.add(a, ROUTER, &snat_id(&k));
            }
        }
        for f in floating_ips {
            let k = key(&f.metadata);
            if let Some(a) = f.status.as_ref().and_then(|s| s.address.clone()) {
                self.add(
                    a,
                    FLOATING,
                    &object_id("FloatingIP", Some(&k.namespace), &k.name),
                );
            }
        }
    }

    /// The one object the text of a failed operation belongs to: the most
    /// specific owner of the kernel names it mentions, when that is a
    /// single object.
    pub fn attribute(&self, text: &str) -> Option<String> {
        let mut best: Option<(u8, &str)> = None;
        let mut ambiguous = false;
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c))) {
            let token = token.trim_end_matches('.');
            let Some((rank, id)) = self.by_token.get(token) else {
                continue;
            };
            match best {
                Some((r, b)) if *rank < r || (*rank == r && b == id) => {}
                Some((r, _)) if *rank == r => ambiguous = true,
                _ => {
                    best = Some((*rank, id));
                    ambiguous = false;
                }
            }
        }
        (!ambiguous).then_some(best?.1.to_string())
    }
}

#[cfg(test)]
#[path = "errors_tests.rs"]
mod tests;

//! The digest each node's agent should report, remembered across passes
//! ([`NodeDigests`]): a pass re-plans only the nodes whose inputs changed
//! ([`node_keys`]), so one change costs planning on the nodes it concerns,
//! not on every node of the cluster.
use std::collections::{BTreeMap, HashMap};

use crate::cluster;
use crate::plan::inputs::node_keys;
use crate::plan::plan_node;
use crate::plan::view::ClusterView;

/// Node → (key of its plan's inputs, digest of its plan), from the last pass.
#[derive(Debug, Default)]
pub struct NodeDigests {
    by_node: HashMap<String, (u64, String)>,
    /// Nodes the last [`NodeDigests::digests`] planned (the others' keys
    /// had not moved).
    pub replanned: usize,
}

impl NodeDigests {
    /// Node → the digest of `plan_node(view, node)`, for every node of
    /// `view.nodes`; plans only the nodes whose key moved since the last
    /// call, forgets nodes that are gone.
    pub fn digests(&mut self, view: &ClusterView) -> BTreeMap<String, String> {
        let mut next = HashMap::with_capacity(view.nodes.len());
        let mut out = BTreeMap::new();
        self.replanned = 0;
        for (node, key) in node_keys(view) {
            let digest = match self.by_node.remove(&node) {
                Some((k, d)) if k == key => d,
                _ => {
                    self.replanned += 1;
                    cluster::plan_digest(&plan_node(view, &node))
                }
            };
            out.insert(node.clone(), digest.clone());
            next.insert(node, (key, digest));
        }
        self.by_node = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::inputs::tests::{mutations, world};

    fn fresh(view: &ClusterView) -> BTreeMap<String, String> {
        (view.nodes.keys())
            .map(|n| (n.clone(), cluster::plan_digest(&plan_node(view, n))))
            .collect()
    }

    #[test]
    fn remembered_digests_equal_fresh_ones_after_every_change() {
        let mut cache = NodeDigests::default();
        let mut v = world();
        assert_eq!(cache.digests(&v), fresh(&v));
        assert_eq!(cache.replanned, 5);
        for (name, change) in mutations() {
            change(&mut v);
            assert_eq!(cache.digests(&v), fresh(&v), "after {name}");
        }
        // A node gone is forgotten; back, it is planned again (with every
        // node whose tenants it carries: their FDB names its VTEP).
        let facts = v.nodes.remove("n5").unwrap();
        assert_eq!(cache.digests(&v), fresh(&v));
        v.nodes.insert("n5".into(), facts);
        assert_eq!(cache.digests(&v), fresh(&v));
        // In the unchanged world n5 carries nothing: only it.
        let mut v = world();
        cache.digests(&v);
        let facts = v.nodes.remove("n5").unwrap();
        cache.digests(&v);
        assert_eq!(cache.replanned, 0);
        v.nodes.insert("n5".into(), facts);
        assert_eq!(cache.digests(&v), fresh(&v));
        assert_eq!(cache.replanned, 1);
    }

    #[test]
    fn a_change_replans_only_the_nodes_it_concerns() {
        let mut cache = NodeDigests::default();
        let mut v = world();
        cache.digests(&v);
        // Nothing changed: nothing planned.
        cache.digests(&v);
        assert_eq!(cache.replanned, 0);
        // A new floating IP: its node only.
        let (_, change) = mutations()[0];
        change(&mut v);
        assert_eq!(cache.digests(&v), fresh(&v));
        assert_eq!(cache.replanned, 1);
    }
}

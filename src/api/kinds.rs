//! The registry of kube-dvr kinds: one list ([`registry!`]) that every layer
//! iterates, so that no layer enumerates the kinds by hand.
//!
//! What it gives:
//! - [`Kind`]: one variant per kind, [`Kind::ALL`] in CRD order, name,
//!   plural, scope, CRD and `ApiResource` of each;
//! - [`DvrKind`]: what every layer may ask of a kind without naming it
//!   (its [`Kind`], status type, `observedGeneration`, conditions, its
//!   collection in a [`PerKind`]);
//! - [`PerKind`]: one collection per kind, its shape chosen by a
//!   [`Family`] (`Vec<K>`: [`Objects`]; `Vec<Arc<K>>`: [`Shared`]; a
//!   reflector store, a per-kind memory … in the layers);
//! - `for_each_kind!(|K| { … })`: runs a block once per kind with `K` bound
//!   to the kind's type, so a layer can use its own traits of `K`. A layer
//!   that lacks its trait for a new kind then fails to compile instead of
//!   leaving the kind "Pending" forever.
//!
//! # How to add a kind
//! 1. `src/api/<kind>.rs`: the `CustomResource` type (`///` on every
//!    field, printer columns ending in `Ready` and `Age`, category
//!    [`CATEGORY`](super::CATEGORY)) and a status with `observedGeneration`
//!    and `conditions`; `pub use` it in `src/api/mod.rs`.
//! 2. One line in [`registry!`] below: `Type(StatusType) field_name,`.
//!    The compiler then names every layer that must say something about it:
//!    the controller's `reported::Reported` (desired status, nodes that
//!    hold it) and the lab's `StatusRow` (its `kubectl get` columns). The
//!    resolver (`src/plan/resolve/`: the kind's checks, allocations,
//!    status and view entry, a `Resolution` field) and the planner read
//!    the kind's fields; a kind whose objects carry addresses in status
//!    says which ones hold in `resolve::Held`. The service kinds
//!    (`router_firewall.rs`, `port_forwarding.rs`, `load_balancer.rs`,
//!    resolved in `plan/resolve/services.rs`) were added this way.
//! 3. `kube-dvr crds > charts/kube-dvr/crds/kubedvr.io_crds.yaml` and
//!    `kube-dvr docs crd-reference > docs/crd-reference.md` (tests fail
//!    while they are stale; `crds/` holds the same file); RBAC follows
//!    from the list in `kube-dvr.resources`,
//!    `charts/kube-dvr/templates/_helpers.tpl` (one word; `tests/chart.rs`
//!    checks it against [`Kind::ALL`]).
use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::NamespaceResourceScope;
use kube::api::ApiResource;
use kube::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Condition;

/// The one list of kube-dvr kinds, in CRD order: `Type(StatusType)
/// field_name,` per kind, where `field_name` names the kind's collection in
/// [`PerKind`] (and so in every snapshot). `registry!({path::to::m} …)`
/// calls the macro `m` with the list in brackets, followed by the remaining
/// tokens.
macro_rules! registry {
    ({ $($m:tt)* } $($rest:tt)*) => {
        $($m)*! {
            [
                ExternalNetwork(ExternalNetworkStatus) external_networks,
                DistributedRouter(DistributedRouterStatus) routers,
                FloatingIP(FloatingIPStatus) floating_ips,
                SnatGateway(SnatGatewayStatus) snat_gateways,
                RouterFirewall(RouterFirewallStatus) firewalls,
                PortForwarding(PortForwardingStatus) port_forwardings,
                LoadBalancer(LoadBalancerStatus) load_balancers,
            ]
            $($rest)*
        }
    };
}

/// `for_each_kind!(|K| { … })`: the block once per registered kind, in
/// [`Kind::ALL`] order, with the type alias `K` naming the kind. The block
/// may use `?`, `.await` and `return` of the enclosing function.
macro_rules! for_each_kind {
    (|$k:ident| $body:block) => {
        $crate::api::kinds::registry!({ $crate::api::kinds::for_each_kind_expand } | $k | $body)
    };
}

#[doc(hidden)]
macro_rules! for_each_kind_expand {
    ([$($t:ident($s:ident) $f:ident,)*] |$k:ident| $body:block) => {
        $(
            {
                #[allow(dead_code)]
                type $k = $crate::api::$t;
                $body
            }
        )*
    };
}

pub(crate) use {for_each_kind, for_each_kind_expand, registry};

/// What every layer may ask of a kube-dvr kind without naming it.
pub trait DvrKind:
    Resource<DynamicType = ()>
    + CustomResourceExt
    + Clone
    + fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind's variant.
    const KIND: Kind;
    /// Its status type (with `observedGeneration` and `conditions`).
    type Status: Clone + Default + fmt::Debug + PartialEq + Serialize + DeserializeOwned;

    fn status(&self) -> Option<&Self::Status>;
    fn status_mut(&mut self) -> &mut Option<Self::Status>;
    /// `status.observedGeneration`, `None` without a status.
    fn observed_generation(&self) -> Option<Option<i64>>;
    /// `status.conditions`, `None` without a status.
    fn conditions(&self) -> Option<&[Condition]>;
    /// This kind's collection in `all`.
    fn of<F: Family>(all: &PerKind<F>) -> &F::Of<Self>;
    fn of_mut<F: Family>(all: &mut PerKind<F>) -> &mut F::Of<Self>;
}

/// The shape of one kind's collection in a [`PerKind`].
pub trait Family {
    type Of<K: DvrKind>;
}

/// Makes one kind's collection of a [`PerKind`] ([`PerKind::build`]).
pub trait Build<F: Family> {
    fn build<K: DvrKind>(&mut self) -> F::Of<K>;
}

/// `Vec<K>`: objects owned (a controller snapshot, manifests, a resolver
/// input).
#[derive(Clone, Copy, Debug, Default)]
pub struct Objects;
impl Family for Objects {
    type Of<K: DvrKind> = Vec<K>;
}

/// `Vec<Arc<K>>`: objects as reflector stores hand them out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shared;
impl Family for Shared {
    type Of<K: DvrKind> = Vec<Arc<K>>;
}

/// `&[Arc<K>]`: a view of [`Shared`] collections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slices<'a>(std::marker::PhantomData<&'a ()>);
impl<'a> Family for Slices<'a> {
    type Of<K: DvrKind> = &'a [Arc<K>];
}

macro_rules! define {
    ([$($t:ident($s:ident) $f:ident,)*]) => {
        /// The kube-dvr kinds ([`registry!`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $($t,)*
        }

        impl Kind {
            /// Every kind, in CRD order.
            pub const ALL: &'static [Kind] = &[$(Kind::$t,)*];

            /// The kind's name (`kind:`), also the metrics label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$t => stringify!($t),)*
                }
            }

            /// The kind named `name`.
            pub fn from_name(name: &str) -> Option<Kind> {
                Kind::ALL.iter().copied().find(|k| k.as_str() == name)
            }

            /// The resource's plural (`floatingips`).
            pub fn plural(self) -> String {
                match self {
                    $(Kind::$t => <super::$t as Resource>::plural(&()).into_owned(),)*
                }
            }

            /// Whether objects of the kind live in a namespace.
            pub fn namespaced(self) -> bool {
                match self {
                    $(Kind::$t => TypeId::of::<<super::$t as Resource>::Scope>()
                        == TypeId::of::<NamespaceResourceScope>(),)*
                }
            }

            /// The kind's generated CRD.
            pub fn crd(self) -> CustomResourceDefinition {
                match self {
                    $(Kind::$t => super::$t::crd(),)*
                }
            }

            /// For dynamic API calls.
            pub fn api_resource(self) -> ApiResource {
                match self {
                    $(Kind::$t => ApiResource::erase::<super::$t>(&()),)*
                }
            }
        }

        $(
            impl DvrKind for super::$t {
                const KIND: Kind = Kind::$t;
                type Status = super::$s;

                fn status(&self) -> Option<&Self::Status> {
                    self.status.as_ref()
                }
                fn status_mut(&mut self) -> &mut Option<Self::Status> {
                    &mut self.status
                }
                fn observed_generation(&self) -> Option<Option<i64>> {
                    self.status.as_ref().map(|s| s.observed_generation)
                }
                fn conditions(&self) -> Option<&[Condition]> {
                    self.status.as_ref().map(|s| &s.conditions[..])
                }
                fn of<F: Family>(all: &PerKind<F>) -> &F::Of<Self> {
                    &all.$f
                }
                fn of_mut<F: Family>(all: &mut PerKind<F>) -> &mut F::Of<Self> {
                    &mut all.$f
                }
            }
        )*

        /// One collection per kind, shaped by `F`; a field per kind, named
        /// as in [`registry!`].
        pub struct PerKind<F: Family> {
            $(pub $f: F::Of<super::$t>,)*
        }

        impl<F: Family> PerKind<F> {
            /// One collection per kind, each made by `b`.
            pub fn build(b: &mut impl Build<F>) -> Self {
                PerKind { $($f: b.build::<super::$t>(),)* }
            }
        }

        impl<F: Family> Default for PerKind<F>
        where
            $(F::Of<super::$t>: Default,)*
        {
            fn default() -> Self {
                PerKind { $($f: Default::default(),)* }
            }
        }

        impl<F: Family> Clone for PerKind<F>
        where
            $(F::Of<super::$t>: Clone,)*
        {
            fn clone(&self) -> Self {
                PerKind { $($f: self.$f.clone(),)* }
            }
        }

        impl<F: Family> Copy for PerKind<F>
        where
            $(F::Of<super::$t>: Copy,)*
        {
        }

        impl<F: Family> fmt::Debug for PerKind<F>
        where
            $(F::Of<super::$t>: fmt::Debug,)*
        {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("PerKind")
                    $(.field(stringify!($f), &self.$f))*
                    .finish()
            }
        }
    };
}

registry!({ define });

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_visited_once_in_order() {
        let mut seen = Vec::new();
        for_each_kind!(|K| {
            seen.push(K::KIND);
        });
        assert_eq!(seen, Kind::ALL);
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.as_str()), Some(*k));
            assert_eq!(k.crd().spec.names.kind, k.as_str());
            assert_eq!(k.crd().spec.names.plural, k.plural());
            assert_eq!(k.namespaced(), k.crd().spec.scope == "Namespaced");
        }
        assert!(!Kind::ExternalNetwork.namespaced());
        assert!(Kind::FloatingIP.namespaced());
    }

    #[test]
    fn per_kind_reaches_each_collection_by_type() {
        let mut all: PerKind<Objects> = PerKind::default();
        super::super::FloatingIP::of_mut(&mut all)
            .push(super::super::FloatingIP::new("f", Default::default()));
        assert_eq!(all.floating_ips.len(), 1);
        assert!(super::super::DistributedRouter::of(&all).is_empty());
    }
}

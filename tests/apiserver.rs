//! kube-dvr against a real kube-apiserver: etcd, kube-apiserver and
//! kube-controller-manager built from Go modules into `.tools/bin` by
//! `scripts/install-tools.sh` (Kubernetes v1.37.2, see `tools/kube/`),
//! started once for this whole binary by `kube_dvr::lab::apiserver` on
//! loopback (RBAC, the default admission plugins plus NodeRestriction).
//! Tests share the server and keep to a namespace each.
//!
//! - `apiserver/crds.rs`: `crds/` accepted as is; printer columns.
//! - `crds/admission.rs` (the kube-cel cases) judged by this server through
//!   `apiserver/support.rs`: every invalid-manifest class refused with the
//!   CRD's own message, `oldSelf` immutability.
//! - `apiserver/rbac.rs`: the chart's identities, what they may and may not do.
//! - `apiserver/helm.rs`: helm install / upgrade / uninstall.
//! - `apiserver/contract.rs`: the stand-in's request sequences on both servers.
#[path = "crds/admission.rs"]
mod admission;
#[path = "apiserver/common.rs"]
mod common;
#[path = "apiserver/contract.rs"]
mod contract;
#[path = "apiserver/crds.rs"]
mod crds;
#[path = "apiserver/helm.rs"]
mod helm;
#[path = "apiserver/rbac.rs"]
mod rbac;
#[path = "apiserver/support.rs"]
mod support;
#[path = "apiserver/tools.rs"]
mod tools;

//! The stand-in's contract: the request sequences of
//! `crates/standin/tests/contract/sequences.rs`, each run on a fresh
//! stand-in and on the shared kube-apiserver (in a namespace of its own),
//! with the same expectations. Known differences between the two servers
//! are listed in [`KNOWN_DIFFERENCES`]; a sequence is never skipped.
//!
//! What the sequences cannot share is adjusted once here, for both servers:
//! on kube-apiserver a Pod needs its namespace's `default` ServiceAccount
//! (kube-controller-manager creates it), so each sequence's namespace waits
//! for it first.
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::Client;
use kube_standin::StandIn;

use super::common::{block_on, eventually, namespace, shared};

#[path = "../../crates/standin/tests/contract/sequences.rs"]
mod sequences;

/// Where the stand-in and kube-apiserver answer differently, as far as a
/// client of kube-dvr can tell. Each is documented in docs/ARCHITECTURE.md
/// (API stand-in) and none is exercised by the sequences.
pub const KNOWN_DIFFERENCES: &[&str] = &[
    "no authentication or authorization: every request is admin",
    "no ServiceAccount admission: pods need no service account",
    "printer columns with [*] print the first match, as kube-apiserver does; \
     the stand-in's Table has no row metadata for -o wide extras",
];

fn on_kube_apiserver(name: &str) {
    let ns = namespace(&format!("contract-{}", name.replace('_', "-")));
    let client = shared().client.clone();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    eventually(Duration::from_secs(30), || {
        block_on(sas.get_opt("default")).unwrap()
    })
    .expect("kube-controller-manager creates the default ServiceAccount");
    block_on(sequences::run(name, &client, &ns))
        .unwrap_or_else(|e| panic!("{name} on kube-apiserver: {e:#}"));
}

fn on_standin(name: &str) {
    block_on(async {
        let s = StandIn::start(0).await.unwrap();
        let client = Client::try_from(s.kube_config()).unwrap();
        let r = sequences::run(name, &client, "default").await;
        s.shutdown().await;
        r.unwrap_or_else(|e| panic!("{name} on the stand-in: {e:#}"));
    });
}

fn both(name: &str) {
    on_standin(name);
    on_kube_apiserver(name);
}

#[test]
fn every_sequence_is_run_here() {
    for d in KNOWN_DIFFERENCES {
        eprintln!("known difference of the stand-in: {d}");
    }
    let here = include_str!("contract.rs");
    for name in sequences::ALL {
        assert!(
            here.contains(&format!("both(\"{name}\")")),
            "sequence {name} is not run on both servers"
        );
    }
}

#[test]
fn contract_crud_conflicts_and_errors() {
    both("crud_conflicts_and_errors");
}

#[test]
fn contract_status_subresource_and_generation() {
    both("status_subresource_and_generation");
}

#[test]
fn contract_finalizers_hold_deletion_until_removed() {
    both("finalizers_hold_deletion_until_removed");
}

#[test]
fn contract_watcher_with_field_selector_sees_only_its_node() {
    both("watcher_with_field_selector_sees_only_its_node");
}

#[test]
fn contract_lists_come_in_pages() {
    both("lists_come_in_pages");
}

#[test]
fn contract_reflector_converges() {
    both("reflector_converges");
}

#[test]
fn contract_lease_optimistic_concurrency() {
    both("lease_optimistic_concurrency");
}

#[test]
fn contract_recorder_events_are_visible_as_core_events() {
    both("recorder_events_are_visible_as_core_events");
}

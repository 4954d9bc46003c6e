//! The controller: contract tests (the exact requests it sends, against a
//! `tower-test` mock) and integration tests against the in-memory API
//! stand-in (statuses, Programmed from node digests, invalid manifests,
//! restarts, deletion, leader election, uninstall, API writes at scale,
//! objects that do not decode).
#[path = "controller/contract.rs"]
mod contract;
#[path = "controller/nodes.rs"]
mod nodes;
#[path = "controller/standin.rs"]
mod standin;
#[path = "controller/support.rs"]
mod support;
#[path = "controller/undecodable.rs"]
mod undecodable;

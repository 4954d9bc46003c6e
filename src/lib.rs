//! kube-dvr: distributed virtual routing for Kubernetes, after OpenStack
//! Neutron's DVR.
//!
//! Layers only call down:
//! - [`api`]: the custom resource types (`kubedvr.io/v1alpha1`).
//! - [`plan`]: pure functions from a resolved cluster view to each node's
//!   desired kernel state ([`plan::model::NodePlan`]).
//! - [`dataplane`]: observe the kernel, diff against a plan, apply the minimal
//!   change (netlink in-process, nftables as atomic batches).
//! - wiring: `controller`, `agent`, `lab`.
//!
//! The `lab` module (and with it the API stand-in, `kube-standin`) exists
//! only with the `lab` cargo feature: on by default for `cargo run -- lab`
//! and the tests, off in the image (the Dockerfile builds with
//! `--no-default-features`), so nothing the chart deploys carries an
//! unauthenticated API server.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod backoff;
pub mod cluster;
pub mod controller;
pub mod dataplane;
#[cfg(feature = "lab")]
pub mod lab;
pub mod pacing;
pub mod plan;
pub mod telemetry;
pub mod uninstall;

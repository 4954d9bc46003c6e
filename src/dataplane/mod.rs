//! The dataplane: observe the kernel, diff against a plan, apply the minimal
//! change.
pub mod nft;
pub mod sandbox;
pub mod netlink;
pub mod netns;
mod apply;
pub mod diff;
mod op;
pub mod engine;
pub mod error;
mod observe;
pub mod garp;
pub mod north_south;

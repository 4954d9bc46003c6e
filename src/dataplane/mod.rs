//! The dataplane: observe the kernel, diff against a plan, apply the minimal
//! change.
mod apply;
pub mod command;
pub mod conntrack;
pub mod diff;
pub mod engine;
pub mod error;
pub mod fence;
pub mod garp;
pub mod keep;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod north_south;
mod observe;
mod op;
pub mod sandbox;

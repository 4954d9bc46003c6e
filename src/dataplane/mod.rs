//! The dataplane: observe the kernel, diff against a plan, apply the minimal
//! change.
pub mod nft;
pub mod sandbox;

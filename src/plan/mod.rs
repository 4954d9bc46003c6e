//! Pure planning: from a resolved cluster view to each node's desired
//! kernel state. No I/O here.
pub mod inputs;
pub mod model;
pub mod names;
pub mod node;
pub mod resolve;
mod tables;
pub mod view;

pub use node::{
    plan_node, plan_node_run, plan_node_serving, routers_on, serving_node, Down, Serving,
};
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_services;

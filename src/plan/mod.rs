//! Pure planning: from a resolved cluster view to each node's desired
//! kernel state. No I/O here.
pub mod model;

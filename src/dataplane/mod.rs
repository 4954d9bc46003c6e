//! dataplane layer.

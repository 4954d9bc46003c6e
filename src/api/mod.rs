//! api layer.

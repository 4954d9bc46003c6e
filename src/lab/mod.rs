//! lab layer.

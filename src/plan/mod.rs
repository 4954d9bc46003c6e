//! plan layer.

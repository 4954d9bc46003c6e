//! kube-standin.

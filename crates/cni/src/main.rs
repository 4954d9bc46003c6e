//! `kube-dvr-cni`: kube-dvr's CNI plugin (the crate's library, see its
//! docs). The `kube-dvr` binary is the same plugin when run with
//! `CNI_COMMAND` set and no arguments, so one binary can be installed.
#![forbid(unsafe_code)]

fn main() {
    kube_dvr_cni::main()
}

//! The dataplane layer's error type.
use std::io;

/// An error of the dataplane layer, with the namespace, object and operation
/// it happened on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating, deleting, listing or entering a network namespace.
    #[error("netns {op} {ns}: {source}")]
    Netns {
        ns: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A netlink request or dump.
    #[error("netlink {op} {object} in {ns}: {source}")]
    Netlink {
        ns: String,
        op: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },
    /// Reading or writing `/proc/sys/<key>` inside a namespace.
    #[error("sysctl {op} {key} in {ns}: {source}")]
    Sysctl {
        ns: String,
        op: &'static str,
        key: String,
        #[source]
        source: io::Error,
    },
    /// Observing or applying the nftables table.
    #[error("nftables {op} in {ns}: {source}")]
    Nft {
        ns: String,
        op: &'static str,
        #[source]
        source: Box<super::nft::NftError>,
    },
    /// A namespace with a name kube-dvr needs exists but was not made by
    /// kube-dvr (no [`crate::plan::names::OWNER_TAG`] on its `lo`): it is
    /// left alone and nothing is programmed in it.
    #[error("netns {ns} exists and is not kube-dvr's (no ownership tag on its lo); left alone")]
    NotOwned { ns: String },
    /// A name the plan refers to does not exist in the kernel.
    #[error("{what} {name} not found in {ns}")]
    NotFound {
        ns: String,
        what: &'static str,
        name: String,
    },
}

impl Error {
    /// A short, stable label (for metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Netns { .. } => "netns",
            Error::Netlink { .. } => "netlink",
            Error::Sysctl { .. } => "sysctl",
            Error::Nft { .. } => "nft",
            Error::NotFound { .. } => "not_found",
            Error::NotOwned { .. } => "not_owned",
        }
    }
}

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
        }
    }
}

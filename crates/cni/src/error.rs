//! CNI errors: what the plugin prints on stdout (with a non-zero exit)
//! when a command fails, `{"cniVersion","code","msg","details"}`.
//!
//! Codes 1–99 are the spec's well-known ones; 100 and above are this
//! plugin's (spec: "Error codes 100+ are reserved for plugin-specific
//! errors"). The table is in docs/ARCHITECTURE.md ("Attachment").
use serde::Serialize;

/// Spec: incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Spec: invalid necessary environment variables.
pub const INVALID_ENV: u32 = 4;
/// Spec: failure to decode content.
pub const DECODING: u32 = 6;
/// Spec: invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// Spec: try again later (the node agent is unreachable or not ready).
pub const TRY_AGAIN: u32 = 11;
/// Spec (STATUS): the plugin is not available.
pub const NOT_AVAILABLE: u32 = 50;

/// A kernel (netlink) operation failed.
pub const KERNEL: u32 = 100;
/// The router is unknown to the node agent (absent, invalid, or not yet
/// processed by the controller).
pub const UNKNOWN_ROUTER: u32 = 101;
/// The router has no subnet of that name.
pub const UNKNOWN_SUBNET: u32 = 102;
/// The static address is not a host address of the subnet.
pub const ADDRESS_OUTSIDE_SUBNET: u32 = 103;
/// The static address is the subnet's gateway or its SNAT port.
pub const ADDRESS_RESERVED: u32 = 104;
/// The pod's namespace is not the router's.
pub const CROSS_NAMESPACE: u32 = 105;
/// The node agent answered something this plugin does not understand.
pub const AGENT_PROTOCOL: u32 = 106;
/// CHECK found the attachment different from what ADD made.
pub const CHECK_FAILED: u32 = 107;
/// The static address is held by another interface's Port.
pub const ADDRESS_TAKEN: u32 = 108;
/// The subnet has no free address.
pub const SUBNET_EXHAUSTED: u32 = 109;
/// The API server refused the Port (validation or admission).
pub const PORT_REFUSED: u32 = 110;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A failed kernel operation, naming what it was doing.
    pub fn kernel(op: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        CniError::new(KERNEL, format!("{op} failed")).details(e.to_string())
    }

    /// The JSON the runtime reads.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            #[serde(flatten)]
            e: &'a CniError,
        }
        serde_json::to_string(&Out {
            cni_version,
            e: self,
        })
        .expect("serializable")
    }
}

pub type Result<T> = std::result::Result<T, CniError>;

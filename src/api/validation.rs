//! Schema building blocks shared by the resource types: OpenAPI patterns
//! (Go RE2 syntax, which the API server uses; also valid Rust `regex`) and
//! length limits.
//!
//! The patterns are deliberately strict (IPv4 only, dotted quad without
//! leading zeros, CIDR prefix 0..=32) so that CEL rules further down can call
//! `cidr()`/`ip()` on a field without tripping over a malformed value.

macro_rules! octet {
    () => {
        "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}
macro_rules! ipv4 {
    () => {
        concat!("(", octet!(), "\\.){3}", octet!())
    };
}
macro_rules! prefix {
    () => {
        "/(3[0-2]|[12]?[0-9])"
    };
}
macro_rules! dns_label {
    () => {
        "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    };
}
macro_rules! dns_subdomain {
    () => {
        concat!(dns_label!(), "(\\.", dns_label!(), ")*")
    };
}

/// An IPv4 address in dotted-quad form, e.g. `203.0.113.1`.
pub const IPV4_PATTERN: &str = concat!("^", ipv4!(), "$");
/// An IPv4 CIDR, e.g. `203.0.113.0/24`.
pub const IPV4_CIDR_PATTERN: &str = concat!("^", ipv4!(), prefix!(), "$");
/// An address pool entry: an inclusive IPv4 range `A-B` or an IPv4 CIDR.
pub const IPV4_RANGE_OR_CIDR_PATTERN: &str =
    concat!("^", ipv4!(), "(-", ipv4!(), "|", prefix!(), ")$");
/// A MAC address, six colon-separated hex pairs, e.g. `fa:16:3e:00:00:01`.
pub const MAC_PATTERN: &str = "^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$";
/// A DNS-1123 label (namespaces, subnet names): at most [`DNS1123_LABEL_MAX`].
pub const DNS1123_LABEL_PATTERN: &str = concat!("^", dns_label!(), "$");
/// A DNS-1123 subdomain (most object names, node names): at most
/// [`DNS1123_SUBDOMAIN_MAX`].
pub const DNS1123_SUBDOMAIN_PATTERN: &str = concat!("^", dns_subdomain!(), "$");
/// A reference to a NetworkAttachmentDefinition: `name` or `namespace/name`.
pub const NAD_REF_PATTERN: &str = concat!("^(", dns_label!(), "/)?", dns_subdomain!(), "$");
/// A Linux interface name (bridge or host interface): at most
/// [`IFNAME_MAX`] bytes, no `/`, no whitespace, not `.`/`..`.
pub const IFNAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$";

/// Longest IPv4 address text: `255.255.255.255`.
pub const IPV4_MAX: u32 = 15;
/// Longest IPv4 CIDR text: `255.255.255.255/32`.
pub const IPV4_CIDR_MAX: u32 = 18;
/// Longest pool entry text: `255.255.255.255-255.255.255.255`.
pub const IPV4_RANGE_OR_CIDR_MAX: u32 = 31;
/// MAC address text length.
pub const MAC_MAX: u32 = 17;
/// Maximum length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX: u32 = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: u32 = 253;
/// Maximum length of `namespace/name`.
pub const NAD_REF_MAX: u32 = DNS1123_LABEL_MAX + 1 + DNS1123_SUBDOMAIN_MAX;
/// Linux `IFNAMSIZ` minus the terminating NUL.
pub const IFNAME_MAX: u32 = 15;

/// Most subnets a DistributedRouter may have.
pub const MAX_SUBNETS: u32 = 64;
/// Most extra routes a DistributedRouter may have.
pub const MAX_ROUTES: u32 = 64;
/// Most entries in each address pool of an ExternalNetwork.
pub const MAX_POOL_ENTRIES: u32 = 32;
/// Most namespaces in `ExternalNetwork.spec.allowedNamespaces`.
pub const MAX_ALLOWED_NAMESPACES: u32 = 256;
/// Most entries in status node lists (and per-node allocations).
pub const MAX_NODES: u32 = 5000;
/// Most conditions in a status.
pub const MAX_CONDITIONS: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns are exercised against real values (with the `regex`
    /// crate) by the admission tests in `tests/crds/`; here only the macro
    /// expansion is checked.
    #[test]
    fn patterns_expand_as_expected() {
        assert_eq!(
            IPV4_PATTERN,
            "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
        );
        assert!(IPV4_CIDR_PATTERN.ends_with("/(3[0-2]|[12]?[0-9])$"));
        assert_eq!(NAD_REF_MAX, 317);
    }
}

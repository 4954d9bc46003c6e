//! Object-name validation, with kube-apiserver's messages: most kinds need a
//! DNS-1123 subdomain (253 characters), Namespaces a DNS-1123 label (63).

use serde_json::Value;

use crate::resource::ResourceType;
use crate::validation::FieldError;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// The problems kube-apiserver's `IsDNS1123Label` reports (none: valid).
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !is_label(s) {
        out.push(LABEL_MSG.to_string());
    }
    out
}

/// The problems kube-apiserver's `IsDNS1123Subdomain` reports (none: valid).
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_label) {
        out.push(SUBDOMAIN_MSG.to_string());
    }
    out
}

/// `metadata.name` errors for a new object of `rt`.
pub(crate) fn validate_name(rt: &ResourceType, name: &str) -> Vec<FieldError> {
    let problems = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => dns1123_label(name),
        // Checked against spec.names + spec.group when the CRD is parsed.
        ("apiextensions.k8s.io", "customresourcedefinitions") => Vec::new(),
        _ => dns1123_subdomain(name),
    };
    let value = Value::String(name.into());
    problems
        .iter()
        .map(|p| FieldError::invalid("metadata.name", &value, p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("tenant-a").is_empty());
        assert!(dns1123_label("a.b").len() == 1);
        assert_eq!(dns1123_label(&"a".repeat(64)).len(), 1);
        assert!(dns1123_subdomain("node-1.example.com").is_empty());
        assert_eq!(dns1123_subdomain("Bad_Name"), [SUBDOMAIN_MSG]);
        assert_eq!(dns1123_subdomain("-a").len(), 1);
        assert_eq!(dns1123_subdomain("a..b").len(), 1);
        assert_eq!(dns1123_subdomain(&"a".repeat(254)).len(), 1);
        assert!(dns1123_subdomain(&"a".repeat(63)).is_empty());
    }
}

//! `metav1.LabelSelector` matching (matchLabels and matchExpressions with
//! `In`, `NotIn`, `Exists`, `DoesNotExist`), as the API server defines it.
use std::collections::BTreeMap;

use crate::api::LabelSelector;

/// Whether `labels` match `selector`. An absent selector matches everything
/// (as the fields that hold one document); an empty selector too. A malformed
/// selector (unknown operator, values where none are allowed or missing where
/// required) is an error sentence for a condition message.
pub(super) fn matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let Some(sel) = selector else {
        return Ok(true);
    };
    validate(sel)?;
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => unreachable!("validated above"),
        }
    });
    Ok(labels_ok && exprs_ok)
}

/// Check a selector's shape without matching anything.
pub(super) fn validate(sel: &LabelSelector) -> Result<(), String> {
    for e in sel.match_expressions.iter().flatten() {
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => {
                return Err(format!(
                    "nodeSelector expression on {:?}: operator {} needs at least one value",
                    e.key, e.operator
                ))
            }
            "Exists" | "DoesNotExist" if n > 0 => {
                return Err(format!(
                    "nodeSelector expression on {:?}: operator {} takes no values",
                    e.key, e.operator
                ))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "nodeSelector expression on {:?}: unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)",
                    e.key
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(json: serde_json::Value) -> LabelSelector {
        serde_json::from_value(json).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_and_expressions() {
        let s = sel(serde_json::json!({
            "matchLabels": {"role": "gw"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "drain", "operator": "DoesNotExist"},
                {"key": "tier", "operator": "NotIn", "values": ["edge"]},
            ]
        }));
        let m = |l: &[(&str, &str)]| matches(Some(&s), &labels(l)).unwrap();
        assert!(m(&[("role", "gw"), ("zone", "a")]));
        assert!(!m(&[("role", "gw"), ("zone", "c")]));
        assert!(!m(&[("role", "gw")]));
        assert!(!m(&[("role", "gw"), ("zone", "a"), ("drain", "")]));
        assert!(!m(&[("role", "gw"), ("zone", "b"), ("tier", "edge")]));
        assert!(!m(&[("role", "x"), ("zone", "a")]));
        let exists =
            sel(serde_json::json!({"matchExpressions": [{"key": "gw", "operator": "Exists"}]}));
        assert!(matches(Some(&exists), &labels(&[("gw", "")])).unwrap());
        assert!(!matches(Some(&exists), &labels(&[])).unwrap());
        assert!(matches(None, &labels(&[])).unwrap());
        assert!(matches(Some(&LabelSelector::default()), &labels(&[])).unwrap());
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        ] {
            assert!(
                matches(Some(&sel(bad.clone())), &labels(&[])).is_err(),
                "{bad}"
            );
        }
    }
}

//! Generated documentation stays in sync with the code.

use std::path::Path;

/// `docs/crd-reference.md` is exactly what `kube-dvr docs crd-reference`
/// prints (generated from the CRD schemas of the Rust types).
#[test]
fn crd_reference_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/crd-reference.md");
    let expected = kube_dvr::api::reference::crd_reference_markdown();
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .map(|i| i + 1)
            .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()) + 1);
        panic!(
            "{} is stale (first difference at line {first}); regenerate it with\n\n    \
             cargo run -q -- docs crd-reference > docs/crd-reference.md\n",
            path.display()
        );
    }
}

/// Every kind and every spec field of the generated CRDs appears in the
/// reference: the walker does not silently skip parts of a schema.
#[test]
fn crd_reference_lists_every_spec_field() {
    let md = kube_dvr::api::reference::crd_reference_markdown();
    for crd in kube_dvr::api::crds() {
        let kind = &crd.spec.names.kind;
        assert!(md.contains(&format!("## {kind}\n")), "{kind} missing");
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        let spec = schema
            .properties
            .as_ref()
            .and_then(|p| p.get("spec"))
            .expect("spec");
        for field in spec.properties.as_ref().expect("spec fields").keys() {
            let row = format!("| `spec.{field}` |");
            assert!(md.contains(&row), "{kind}: no row for spec.{field}");
        }
    }
}

//! Just enough of Kubernetes' protobuf encoding to accept the request bodies
//! kubectl's generator commands send (`kubectl create namespace|configmap|
//! secret|serviceaccount`): those use typed clients that always encode
//! protobuf and do not fall back to JSON. Everything else is refused with
//! `415`. Responses are always JSON (kubectl accepts it).

use serde_json::{json, Map, Value};

use crate::status::ApiError;

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn next_field(&mut self) -> Option<Result<(u64, Field<'a>), ()>> {
        if self.buf.is_empty() {
            return None;
        }
        let Some(tag) = self.varint() else {
            return Some(Err(()));
        };
        let field = match tag & 7 {
            0 => self.varint().map(Field::Varint),
            2 => self.varint().and_then(|n| {
                let n = usize::try_from(n).ok()?;
                (n <= self.buf.len()).then(|| {
                    let (b, rest) = self.buf.split_at(n);
                    self.buf = rest;
                    Field::Bytes(b)
                })
            }),
            1 if self.buf.len() >= 8 => {
                self.buf = &self.buf[8..];
                Some(Field::Fixed)
            }
            5 if self.buf.len() >= 4 => {
                self.buf = &self.buf[4..];
                Some(Field::Fixed)
            }
            _ => None,
        };
        Some(field.map(|f| (tag >> 3, f)).ok_or(()))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ()> {
    let mut r = Reader { buf };
    std::iter::from_fn(|| r.next_field()).collect()
}

fn text(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

/// A `map<string, string|bytes>` entry; bytes values are base64 (JSON form).
fn map_entry(b: &[u8], base64_value: bool, into: &mut Map<String, Value>) -> Result<(), ()> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = String::from_utf8_lossy(x).into_owned(),
            (2, Field::Bytes(x)) => {
                v = if base64_value {
                    json!(base64(x))
                } else {
                    text(x)
                }
            }
            _ => {}
        }
    }
    into.insert(k, v);
    Ok(())
}

fn object_meta(b: &[u8]) -> Result<Value, ()> {
    let mut m = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => drop(m.insert("name".into(), text(x))),
            (2, Field::Bytes(x)) => drop(m.insert("generateName".into(), text(x))),
            (3, Field::Bytes(x)) => drop(m.insert("namespace".into(), text(x))),
            (11, Field::Bytes(x)) => map_entry(x, false, &mut labels)?,
            (12, Field::Bytes(x)) => map_entry(x, false, &mut annotations)?,
            (14, Field::Bytes(x)) => finalizers.push(text(x)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

fn decode_kind(kind: &str, raw: &[u8]) -> Result<Option<Value>, ()> {
    let mut o = Map::new();
    let (mut data, mut binary, mut string_data) = (Map::new(), Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(x)) => drop(o.insert("metadata".into(), object_meta(x)?)),
            ("Namespace", 2, Field::Bytes(x)) => {
                let fin: Vec<Value> = fields(x)?
                    .into_iter()
                    .filter_map(|(n, f)| match (n, f) {
                        (1, Field::Bytes(s)) => Some(text(s)),
                        _ => None,
                    })
                    .collect();
                o.insert("spec".into(), json!({"finalizers": fin}));
            }
            ("ConfigMap", 2, Field::Bytes(x)) => map_entry(x, false, &mut data)?,
            ("ConfigMap", 3, Field::Bytes(x)) => map_entry(x, true, &mut binary)?,
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                drop(o.insert("immutable".into(), json!(v != 0)))
            }
            ("Secret", 2, Field::Bytes(x)) => map_entry(x, true, &mut data)?,
            ("Secret", 3, Field::Bytes(x)) => drop(o.insert("type".into(), text(x))),
            ("Secret", 4, Field::Bytes(x)) => map_entry(x, false, &mut string_data)?,
            ("ServiceAccount", 4, Field::Varint(v)) => {
                drop(o.insert("automountServiceAccountToken".into(), json!(v != 0)))
            }
            ("Namespace" | "ConfigMap" | "Secret" | "ServiceAccount", _, _) => {}
            _ => return Ok(None),
        }
    }
    for (k, m) in [
        ("data", data),
        ("binaryData", binary),
        ("stringData", string_data),
    ] {
        if !m.is_empty() {
            o.insert(k.into(), Value::Object(m));
        }
    }
    Ok(Some(Value::Object(o)))
}

/// Decodes a `application/vnd.kubernetes.protobuf` body of a supported kind.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let unsupported = |what: &str| {
        ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf ({what}; only Namespace, ConfigMap, Secret and \
             ServiceAccount are decoded: use `kubectl apply -f`/`create -f`, which send JSON)"
        ))
    };
    let bad = || ApiError::bad_request("malformed protobuf body");
    let env = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (n, f) in fields(env).map_err(|_| bad())? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).map_err(|_| bad())? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => {
                            api_version = String::from_utf8_lossy(x).into_owned()
                        }
                        (2, Field::Bytes(x)) => kind = String::from_utf8_lossy(x).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = Some(x),
            (3, Field::Bytes(enc)) if !enc.is_empty() => {
                return Err(unsupported("content encoding"))
            }
            _ => {}
        }
    }
    if api_version != "v1"
        || !matches!(
            kind.as_str(),
            "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
        )
    {
        return Err(unsupported(&format!("{api_version} {kind}")));
    }
    let mut obj = decode_kind(&kind, raw.unwrap_or_default())
        .map_err(|_| bad())?
        .ok_or_else(|| unsupported(&kind))?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, b: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3) | 2, b.len() as u8];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = [ld(1, b"cm"), ld(11, &[ld(1, b"app"), ld(2, b"x")].concat())].concat();
        let raw = [
            ld(1, &meta),
            ld(2, &[ld(1, b"k"), ld(2, b"v")].concat()),
            ld(3, &[ld(1, b"b"), ld(2, b"hi!")].concat()),
        ]
        .concat();
        let env = [
            MAGIC.to_vec(),
            ld(1, &[ld(1, b"v1"), ld(2, b"ConfigMap")].concat()),
            ld(2, &raw),
        ]
        .concat();
        let v = decode(&env).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "x"}},
                   "data": {"k": "v"}, "binaryData": {"b": "aGkh"}})
        );
        let pod = [
            MAGIC.to_vec(),
            ld(1, &[ld(1, b"v1"), ld(2, b"Pod")].concat()),
            ld(2, &[]),
        ]
        .concat();
        assert_eq!(decode(&pod).unwrap_err().code, 415);
        assert_eq!(decode(b"junk").unwrap_err().code, 400);
        assert_eq!(base64(b"ab"), "YWI=");
    }
}

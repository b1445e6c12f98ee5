//! Just enough of the Kubernetes protobuf encoding to accept the bodies
//! kubectl's imperative commands send (`kubectl create namespace`,
//! `create configmap`, `create secret generic`, `create service ...`).
//!
//! Only the fields those commands set are decoded (see the schemas below);
//! other fields and other kinds are refused with 415, as before.

use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};
use super::objects::base64_encode;

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Bool,
    TextList,
    TextMap,
    BytesMap,
    IntOrString,
    Message(&'static [Field]),
    MessageList(&'static [Field]),
}

type Field = (u64, &'static str, Kind);

const OBJECT_META: &[Field] = &[
    (1, "name", Kind::Text),
    (2, "generateName", Kind::Text),
    (3, "namespace", Kind::Text),
    (6, "resourceVersion", Kind::Text),
    (11, "labels", Kind::TextMap),
    (12, "annotations", Kind::TextMap),
    (14, "finalizers", Kind::TextList),
];

const SERVICE_PORT: &[Field] = &[
    (1, "name", Kind::Text),
    (2, "protocol", Kind::Text),
    (3, "port", Kind::Integer),
    (4, "targetPort", Kind::IntOrString),
    (5, "nodePort", Kind::Integer),
];

const SERVICE_SPEC: &[Field] = &[
    (1, "ports", Kind::MessageList(SERVICE_PORT)),
    (2, "selector", Kind::TextMap),
    (3, "clusterIP", Kind::Text),
    (4, "type", Kind::Text),
    (5, "externalIPs", Kind::TextList),
    (10, "externalName", Kind::Text),
];

const NAMESPACE: &[Field] = &[(1, "metadata", Kind::Message(OBJECT_META))];

const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (2, "data", Kind::TextMap),
    (3, "binaryData", Kind::BytesMap),
    (4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (2, "data", Kind::BytesMap),
    (3, "type", Kind::Text),
    (5, "immutable", Kind::Bool),
];

const SERVICE: &[Field] = &[
    (1, "metadata", Kind::Message(OBJECT_META)),
    (2, "spec", Kind::Message(SERVICE_SPEC)),
];

struct Reader<'a> {
    bytes: &'a [u8],
}

fn malformed() -> ApiError {
    ApiError::bad_request("malformed protobuf body")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> ApiResult<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first().ok_or_else(malformed)?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed())
    }

    fn take(&mut self, len: usize) -> ApiResult<&'a [u8]> {
        if len > self.bytes.len() {
            return Err(malformed());
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    /// Next (field number, wire type, payload); varints come back in `number`.
    fn field(&mut self) -> ApiResult<(u64, Payload<'a>)> {
        let key = self.varint()?;
        let payload = match key & 7 {
            0 => Payload::Number(self.varint()?),
            1 => {
                self.take(8)?;
                Payload::Skipped
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed())?;
                Payload::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Payload::Skipped
            }
            _ => return Err(malformed()),
        };
        Ok((key >> 3, payload))
    }
}

enum Payload<'a> {
    Number(u64),
    Bytes(&'a [u8]),
    /// Fixed-width values, which none of the decoded fields use.
    Skipped,
}

fn text(bytes: &[u8]) -> ApiResult<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed())
}

/// A map entry: key = field 1, value = field 2.
fn map_entry(bytes: &[u8]) -> ApiResult<(String, Vec<u8>)> {
    let mut reader = Reader { bytes };
    let (mut key, mut value) = (String::new(), Vec::new());
    while !reader.bytes.is_empty() {
        match reader.field()? {
            (1, Payload::Bytes(b)) => key = text(b)?,
            (2, Payload::Bytes(b)) => value = b.to_vec(),
            _ => {}
        }
    }
    Ok((key, value))
}

fn int_or_string(bytes: &[u8]) -> ApiResult<Value> {
    let mut reader = Reader { bytes };
    let (mut is_string, mut int_value, mut string_value) = (false, 0i64, String::new());
    while !reader.bytes.is_empty() {
        match reader.field()? {
            (1, Payload::Number(n)) => is_string = n == 1,
            (2, Payload::Number(n)) => int_value = n as i64,
            (3, Payload::Bytes(b)) => string_value = text(b)?,
            _ => {}
        }
    }
    Ok(if is_string {
        json!(string_value)
    } else {
        json!(int_value)
    })
}

fn decode_message(bytes: &[u8], schema: &[Field]) -> ApiResult<Value> {
    let mut reader = Reader { bytes };
    let mut object = Map::new();
    while !reader.bytes.is_empty() {
        let (number, payload) = reader.field()?;
        let Some(&(_, name, kind)) = schema.iter().find(|(n, _, _)| *n == number) else {
            continue;
        };
        let name = name.to_string();
        match (kind, payload) {
            // Protobuf carries unset scalars as zero values; JSON leaves them out.
            (Kind::Text, Payload::Bytes(b)) => {
                if !b.is_empty() {
                    object.insert(name, json!(text(b)?));
                }
            }
            (Kind::Integer | Kind::Bool, Payload::Number(0)) => {}
            (Kind::Integer, Payload::Number(n)) => {
                object.insert(name, json!(n as i64));
            }
            (Kind::Bool, Payload::Number(_)) => {
                object.insert(name, json!(true));
            }
            (Kind::TextList, Payload::Bytes(b)) => {
                let list = object.entry(name).or_insert_with(|| json!([]));
                if let Some(items) = list.as_array_mut() {
                    items.push(json!(text(b)?));
                }
            }
            (Kind::TextMap | Kind::BytesMap, Payload::Bytes(b)) => {
                let (key, value) = map_entry(b)?;
                let value = match kind {
                    Kind::BytesMap => json!(base64_encode(&value)),
                    _ => json!(text(&value)?),
                };
                let map = object.entry(name).or_insert_with(|| json!({}));
                if let Some(map) = map.as_object_mut() {
                    map.insert(key, value);
                }
            }
            (Kind::IntOrString, Payload::Bytes(b)) => {
                object.insert(name, int_or_string(b)?);
            }
            (Kind::Message(fields), Payload::Bytes(b)) => {
                object.insert(name, decode_message(b, fields)?);
            }
            (Kind::MessageList(fields), Payload::Bytes(b)) => {
                let decoded = decode_message(b, fields)?;
                let list = object.entry(name).or_insert_with(|| json!([]));
                if let Some(items) = list.as_array_mut() {
                    items.push(decoded);
                }
            }
            _ => return Err(malformed()),
        }
    }
    Ok(Value::Object(object))
}

pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// Decodes a `k8s\0`-framed protobuf body of a supported kind into JSON.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let mut reader = Reader { bytes: envelope };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !reader.bytes.is_empty() {
        match reader.field()? {
            (1, Payload::Bytes(type_meta)) => {
                let mut meta = Reader { bytes: type_meta };
                while !meta.bytes.is_empty() {
                    match meta.field()? {
                        (1, Payload::Bytes(b)) => api_version = text(b)?,
                        (2, Payload::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Payload::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "Service") => SERVICE,
        _ => {
            return Err(ApiError::unsupported_media_type(&format!(
                "application/vnd.kubernetes.protobuf ({api_version} {kind}; the double decodes protobuf only for v1 Namespace, ConfigMap, Secret and Service)"
            )));
        }
    };
    let mut object = decode_message(raw, schema)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length_delimited(field: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_namespace() -> ApiResult<()> {
        let metadata = length_delimited(1, b"team-a");
        let raw = length_delimited(1, &metadata);
        let mut type_meta = length_delimited(1, b"v1");
        type_meta.extend(length_delimited(2, b"Namespace"));
        let mut body = MAGIC.to_vec();
        body.extend(length_delimited(1, &type_meta));
        body.extend(length_delimited(2, &raw));
        let decoded = decode(&body)?;
        assert_eq!(decoded["metadata"]["name"], "team-a");
        assert_eq!(decoded["kind"], "Namespace");
        Ok(())
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let mut body = MAGIC.to_vec();
        body.extend([0x0a, 0x10, 0x01]);
        assert!(decode(&body).is_err());
    }
}

//! Envoy API messages in protobuf wire format (as xDS delivers resources) turned into the
//! document tree a YAML or JSON file becomes, field by field with Envoy 1.40's descriptors,
//! so that the same readers and checks take them, with the same error messages.
//!
//! The tree is what proto JSON would say with the proto field names: enums by name, bytes in
//! base64, durations as `"1.5s"`, wrappers as their value, `Struct` as a mapping and each
//! `Any` as a mapping with `"@type"`. A field the descriptors do not know (from a newer API)
//! is an error, never dropped; an `Any` of a type they do not know keeps only its `"@type"`,
//! which every reader refuses as it refuses that type in a file.

use std::sync::Mutex;

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, ReflectMessage, Value as Proto};

use crate::error::ConfigError;
use crate::tree::{Entry, Node, Value};

/// Envoy 1.40's API (the types wasmproxy reads and all they import), gzipped; made by
/// `tools/xds/descriptors` from go-control-plane's generated code.
const DESCRIPTORS: &[u8] = include_bytes!("../descriptors/envoy-api.bin.gz");

/// Nested `Any`s deeper than this are refused (each is decoded on its own, so the protobuf
/// decoder's own limit does not bound the whole).
const MAX_ANY_DEPTH: usize = 32;

/// The descriptors, loaded when a resource comes and released when asked (they take some
/// 6 MiB, and take some 7 ms to load).
static POOL: Mutex<Option<DescriptorPool>> = Mutex::new(None);

fn load_pool() -> Result<DescriptorPool, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(DESCRIPTORS)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("the built-in Envoy API descriptors do not unpack: {e}"))?;
    DescriptorPool::decode(bytes.as_slice()).map_err(|e| format!("the built-in Envoy API descriptors do not load: {e}"))
}

/// The descriptors (a cheap handle), loaded if they are not.
fn pool() -> Result<DescriptorPool, String> {
    let mut held = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = held.as_ref() {
        return Ok(pool.clone());
    }
    let pool = load_pool()?;
    *held = Some(pool.clone());
    Ok(pool)
}

/// Lets the descriptors go (once no resource is being read); the next resource loads them
/// again. True if they were loaded.
pub fn release_descriptors() -> bool {
    POOL.lock().unwrap_or_else(|e| e.into_inner()).take().is_some()
}

/// The message type of that full name, if Envoy 1.40's API (as wasmproxy carries it) has it.
#[cfg(test)]
fn message_type(name: &str) -> Option<prost_reflect::MessageDescriptor> {
    pool().ok()?.get_message_by_name(name)
}

/// An `Any` (its type URL and its value's bytes) as a tree: a mapping with `"@type"` and the
/// message's fields. `path` names it in errors.
pub(crate) fn any_to_tree(type_url: &str, value: &[u8], path: &str) -> Result<Node, ConfigError> {
    let pool = pool().map_err(|e| ConfigError::new(path, e))?;
    Converter { depth: 0, pool }.any(type_url, value, path)
}

struct Converter {
    depth: usize,
    pool: DescriptorPool,
}

impl Converter {
    fn any(&mut self, type_url: &str, value: &[u8], path: &str) -> Result<Node, ConfigError> {
        self.depth += 1;
        if self.depth > MAX_ANY_DEPTH {
            return Err(ConfigError::new(path, format!("Any nested deeper than {MAX_ANY_DEPTH} levels")));
        }
        let mut entries = vec![entry("@type", quoted(type_url))];
        let name = type_url.rsplit('/').next().unwrap_or_default();
        if let Some(descriptor) = self.pool.get_message_by_name(name) {
            let message = DynamicMessage::decode(descriptor, value)
                .map_err(|e| ConfigError::new(path, format!("not a valid {name}: {e}")))?;
            match self.well_known(&message, path)? {
                Some(node) => entries.push(entry("value", node)),
                None => entries.extend(self.fields(&message, path)?),
            }
        }
        self.depth -= 1;
        Ok(map(entries))
    }

    fn message(&mut self, message: &DynamicMessage, path: &str) -> Result<Node, ConfigError> {
        match self.well_known(message, path)? {
            Some(node) => Ok(node),
            None => Ok(map(self.fields(message, path)?)),
        }
    }

    /// The fields set, in field number order; an error for a field the descriptor lacks.
    fn fields(&mut self, message: &DynamicMessage, path: &str) -> Result<Vec<Entry>, ConfigError> {
        if let Some(unknown) = message.unknown_fields().next() {
            let name = message.descriptor().full_name().to_string();
            return Err(ConfigError::new(
                path,
                format!("field number {} is not in Envoy 1.40's {name}", unknown.number()),
            ));
        }
        let mut entries = Vec::new();
        for (field, value) in message.fields() {
            let field_path = child(path, field.name());
            entries.push(entry(field.name(), self.value(&field.kind(), value, &field_path)?));
        }
        Ok(entries)
    }

    fn value(&mut self, kind: &Kind, value: &Proto, path: &str) -> Result<Node, ConfigError> {
        Ok(match value {
            Proto::Bool(b) => plain(b.to_string()),
            Proto::I32(n) => plain(n.to_string()),
            Proto::I64(n) => plain(n.to_string()),
            Proto::U32(n) => plain(n.to_string()),
            Proto::U64(n) => plain(n.to_string()),
            Proto::F32(n) => float(f64::from(*n)),
            Proto::F64(n) => float(*n),
            Proto::String(s) => quoted(s),
            Proto::Bytes(b) => quoted(&crate::base64::encode(b)),
            Proto::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
                Some(v) => plain(v.name().to_string()),
                None => plain(n.to_string()),
            },
            Proto::Message(m) => self.message(m, path)?,
            Proto::List(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    nodes.push(self.value(kind, item, &format!("{path}[{i}]"))?);
                }
                Node { value: Value::Seq(nodes), pos: None }
            }
            Proto::Map(entries) => {
                let value_kind = kind.as_message().map(|m| m.map_entry_value_field().kind()).unwrap_or(Kind::String);
                let mut keyed: Vec<(String, &Proto)> = entries.iter().map(|(k, v)| (map_key(k), v)).collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out = Vec::with_capacity(keyed.len());
                for (key, v) in keyed {
                    let node = self.value(&value_kind, v, &child(path, &key))?;
                    out.push(entry(&key, node));
                }
                map(out)
            }
        })
    }

    /// The proto JSON form of the well-known types that have one of their own.
    fn well_known(&mut self, message: &DynamicMessage, path: &str) -> Result<Option<Node>, ConfigError> {
        let name = message.descriptor().full_name().to_string();
        let field = |name: &str| message.get_field_by_name(name).map(|v| v.into_owned());
        Ok(Some(match name.as_str() {
            "google.protobuf.Any" => {
                let url = field("type_url").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                let value = field("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
                self.any(&url, &value, path)?
            }
            "google.protobuf.Duration" => {
                let seconds = field("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
                let nanos = field("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
                quoted(&duration(seconds, nanos))
            }
            "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue" => {
                let descriptor = message.descriptor();
                let Some(value_field) = descriptor.get_field_by_name("value") else { return Ok(None) };
                let value = message.get_field(&value_field);
                self.value(&value_field.kind(), &value, path)?
            }
            "google.protobuf.Struct" => {
                let Some(Proto::Map(fields)) = field("fields") else { return Ok(Some(map(Vec::new()))) };
                let mut keyed: Vec<(String, Proto)> = fields.into_iter().map(|(k, v)| (map_key(&k), v)).collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out = Vec::with_capacity(keyed.len());
                for (key, v) in keyed {
                    let node = match &v {
                        Proto::Message(m) => self.message(m, &child(path, &key))?,
                        _ => Node { value: Value::Null, pos: None },
                    };
                    out.push(entry(&key, node));
                }
                map(out)
            }
            "google.protobuf.Value" => match message.fields().next() {
                None => Node { value: Value::Null, pos: None },
                Some((f, _)) if f.name() == "null_value" => Node { value: Value::Null, pos: None },
                Some((f, v)) => {
                    let kind = f.kind();
                    self.value(&kind, v, path)?
                }
            },
            "google.protobuf.ListValue" => match message.descriptor().get_field_by_name("values") {
                Some(values) => self.value(&values.kind(), &message.get_field(&values), path)?,
                None => Node { value: Value::Seq(Vec::new()), pos: None },
            },
            _ => return Ok(None),
        }))
    }
}

fn entry(key: &str, value: Node) -> Entry {
    Entry { key: key.to_string(), key_pos: None, value }
}

fn map(entries: Vec<Entry>) -> Node {
    Node { value: Value::Map(entries), pos: None }
}

/// A scalar the reader may take as a number, a boolean or an enum name.
fn plain(text: String) -> Node {
    Node { value: Value::Scalar { text, quoted: false }, pos: None }
}

/// A scalar that is always a string.
fn quoted(text: &str) -> Node {
    Node { value: Value::Scalar { text: text.to_string(), quoted: true }, pos: None }
}

/// Floats as proto JSON writes them; NaN and the infinities as its strings.
fn float(n: f64) -> Node {
    if n.is_nan() {
        quoted("NaN")
    } else if n.is_infinite() {
        quoted(if n > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        plain(n.to_string())
    }
}

/// A `Duration` as proto JSON writes it: seconds with up to nine decimals, then `s`.
fn duration(seconds: i64, nanos: i32) -> String {
    let negative = seconds < 0 || nanos < 0;
    let (s, n) = (seconds.unsigned_abs(), nanos.unsigned_abs());
    let sign = if negative { "-" } else { "" };
    if n == 0 {
        return format!("{sign}{s}s");
    }
    let fraction = format!("{n:09}");
    format!("{sign}{s}.{}s", fraction.trim_end_matches('0'))
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// Encodes a message given as proto JSON-ish field values, through the descriptors.
    fn encode(name: &str, build: impl FnOnce(&mut DynamicMessage)) -> Vec<u8> {
        let mut message = DynamicMessage::new(message_type(name).unwrap());
        build(&mut message);
        message.encode_to_vec()
    }

    #[test]
    fn every_type_the_readers_take_is_known() {
        for name in [
            "envoy.config.listener.v3.Listener",
            "envoy.config.cluster.v3.Cluster",
            "envoy.config.route.v3.RouteConfiguration",
            "envoy.config.endpoint.v3.ClusterLoadAssignment",
            "envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "envoy.extensions.access_loggers.wasm.v3.WasmAccessLog",
            "envoy.extensions.filters.http.router.v3.Router",
            "envoy.extensions.filters.http.wasm.v3.Wasm",
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "envoy.extensions.filters.network.wasm.v3.Wasm",
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "envoy.extensions.transport_sockets.tls.v3.Secret",
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "envoy.extensions.wasm.v3.WasmService",
            "envoy.service.discovery.v3.DiscoveryResponse",
            "google.protobuf.BytesValue",
            "google.protobuf.StringValue",
            "google.protobuf.Struct",
            "udpa.type.v1.TypedStruct",
            "xds.type.v3.TypedStruct",
        ] {
            assert!(message_type(name).is_some(), "{name}");
        }
    }

    #[test]
    fn scalars_enums_durations_wrappers_and_nested_any() {
        let router = encode("envoy.extensions.filters.http.router.v3.Router", |m| {
            m.set_field_by_name("suppress_envoy_headers", Proto::Bool(true));
        });
        let cluster = encode("envoy.config.cluster.v3.Cluster", |m| {
            m.set_field_by_name("name", Proto::String("backend".into()));
            m.set_field_by_name("type", Proto::EnumNumber(1));
            let timeout = encode("google.protobuf.Duration", |d| {
                d.set_field_by_name("seconds", Proto::I64(1));
                d.set_field_by_name("nanos", Proto::I32(500_000_000));
            });
            let timeout = DynamicMessage::decode(message_type("google.protobuf.Duration").unwrap(), &*timeout).unwrap();
            m.set_field_by_name("connect_timeout", Proto::Message(timeout));
            let mut any = DynamicMessage::new(message_type("google.protobuf.Any").unwrap());
            any.set_field_by_name(
                "type_url",
                Proto::String("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into()),
            );
            any.set_field_by_name("value", Proto::Bytes(router.clone().into()));
            let mut options = std::collections::HashMap::new();
            options.insert(MapKey::String("router".into()), Proto::Message(any));
            m.set_field_by_name("typed_extension_protocol_options", Proto::Map(options));
        });
        let node =
            any_to_tree("type.googleapis.com/envoy.config.cluster.v3.Cluster", &cluster, "resources[0]").unwrap();
        let json = node.to_json();
        assert_eq!(
            json,
            serde_json::json!({
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": "backend",
                "type": "STRICT_DNS",
                "connect_timeout": "1.5s",
                "typed_extension_protocol_options": {"router": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": true,
                }},
            })
        );
        let wrapped =
            encode("google.protobuf.StringValue", |m| m.set_field_by_name("value", Proto::String("x".into())));
        let node = any_to_tree("type.googleapis.com/google.protobuf.StringValue", &wrapped, "").unwrap();
        assert_eq!(
            node.to_json(),
            serde_json::json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "x"})
        );
    }

    #[test]
    fn unknown_fields_bad_bytes_and_unknown_types() {
        // Field 999 (varint 1) is in no Cluster.
        let mut bytes =
            encode("envoy.config.cluster.v3.Cluster", |m| m.set_field_by_name("name", Proto::String("c".into())));
        bytes.extend_from_slice(&[0xb8, 0x3e, 0x01]);
        let error =
            any_to_tree("type.googleapis.com/envoy.config.cluster.v3.Cluster", &bytes, "resources[2]").unwrap_err();
        assert_eq!(
            error.to_string(),
            "resources[2]: field number 999 is not in Envoy 1.40's envoy.config.cluster.v3.Cluster"
        );
        let error =
            any_to_tree("type.googleapis.com/envoy.config.cluster.v3.Cluster", &[0x0a, 0x05, b'a'], "r").unwrap_err();
        assert!(error.to_string().starts_with("r: not a valid envoy.config.cluster.v3.Cluster: "), "{error}");
        let node = any_to_tree("type.googleapis.com/acme.Unknown", &[1, 2, 3], "").unwrap();
        assert_eq!(node.to_json(), serde_json::json!({"@type": "type.googleapis.com/acme.Unknown"}));
    }

    #[test]
    fn the_descriptors_are_let_go_and_loaded_again() {
        assert!(message_type("envoy.config.cluster.v3.Cluster").is_some());
        release_descriptors();
        let cluster =
            encode("envoy.config.cluster.v3.Cluster", |m| m.set_field_by_name("name", Proto::String("c".into())));
        release_descriptors();
        let node = any_to_tree("type.googleapis.com/envoy.config.cluster.v3.Cluster", &cluster, "").unwrap();
        assert_eq!(node.to_json()["name"], "c");
    }

    #[test]
    fn durations_as_proto_json() {
        assert_eq!(duration(5, 0), "5s");
        assert_eq!(duration(0, 250_000_000), "0.25s");
        assert_eq!(duration(-1, -5), "-1.000000005s");
    }
}

//! JSON bootstrap files read into the tree.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::ConfigError;
use crate::tree::{Entry, Node, Value};

/// Parses JSON text into a tree (without positions: serde_json does not report them per value).
pub(crate) fn parse_json(text: &str) -> Result<Node, ConfigError> {
    serde_json::from_str::<JsonNode>(text).map(|n| n.0).map_err(|e| ConfigError {
        path: String::new(),
        line: Some(e.line()),
        column: Some(e.column()),
        message: format!("JSON syntax error: {}", strip_position(&e.to_string())),
    })
}

/// serde_json appends " at line L column C" to its messages; we report those separately.
fn strip_position(message: &str) -> &str {
    message.rfind(" at line ").map_or(message, |i| &message[..i])
}

struct JsonNode(Node);

fn node(value: Value) -> JsonNode {
    JsonNode(Node { value, pos: None })
}

fn plain(text: String) -> JsonNode {
    node(Value::Scalar { text, quoted: false })
}

impl<'de> Deserialize<'de> for JsonNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = JsonNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<JsonNode, E> {
        Ok(plain(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<JsonNode, E> {
        Ok(plain(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<JsonNode, E> {
        Ok(plain(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<JsonNode, E> {
        Ok(plain(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())))
    }

    fn visit_str<E>(self, v: &str) -> Result<JsonNode, E> {
        Ok(node(Value::Scalar { text: v.to_owned(), quoted: true }))
    }

    fn visit_unit<E>(self) -> Result<JsonNode, E> {
        Ok(node(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonNode, A::Error> {
        let mut items = Vec::new();
        while let Some(JsonNode(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(node(Value::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonNode, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, JsonNode(value))) = map.next_entry::<String, JsonNode>()? {
            entries.push(Entry { key, key_pos: None, value });
        }
        Ok(node(Value::Map(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_syntax_error() {
        let error = parse_json("{\n  \"a\": 1,\n}").unwrap_err();
        assert_eq!(error.message, "JSON syntax error: trailing comma");
        assert_eq!((error.line, error.column), (Some(3), Some(1)));
    }
}

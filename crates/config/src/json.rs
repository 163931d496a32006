//! JSON in (a bootstrap file into the tree) and out (a `google.protobuf.Struct` as a plugin's configuration text).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::ConfigError;
use crate::model::StructValue;
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

/// Writes a node as compact JSON, the way a `google.protobuf.Struct` reaches a plugin: plain
/// scalars that read as booleans, nulls or numbers become those (numbers are doubles, as in
/// `Struct`, so `1.0` is written `1`); everything else is a string. Keys keep their order.
pub(crate) fn to_json(node: &Node, out: &mut String) {
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Scalar { text, quoted: false } => match plain_scalar_json(text) {
            Some(json) => out.push_str(&json),
            None => push_string(text, out),
        },
        Value::Scalar { text, quoted: true } => push_string(text, out),
        Value::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                to_json(item, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(&entry.key, out);
                out.push(':');
                to_json(&entry.value, out);
            }
            out.push('}');
        }
    }
}

/// Reads a node as a `google.protobuf.Value`, with the same scalar rules as [`to_json`].
pub(crate) fn to_struct_value(node: &Node) -> StructValue {
    match &node.value {
        Value::Null => StructValue::Null,
        Value::Scalar { text, quoted: false } => match plain_scalar_json(text).as_deref() {
            Some("true") => StructValue::Bool(true),
            Some("false") => StructValue::Bool(false),
            Some(number) => number.parse().map_or_else(|_| StructValue::String(text.clone()), StructValue::Number),
            None => StructValue::String(text.clone()),
        },
        Value::Scalar { text, quoted: true } => StructValue::String(text.clone()),
        Value::Seq(items) => StructValue::List(items.iter().map(to_struct_value).collect()),
        Value::Map(entries) => {
            StructValue::Struct(entries.iter().map(|e| (e.key.clone(), to_struct_value(&e.value))).collect())
        }
    }
}

fn push_string(text: &str, out: &mut String) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// The JSON for a plain YAML scalar that is a boolean or a number (YAML 1.2 core schema), if it is one.
fn plain_scalar_json(text: &str) -> Option<String> {
    match text {
        "true" | "True" | "TRUE" => return Some("true".into()),
        "false" | "False" | "FALSE" => return Some("false".into()),
        _ => {}
    }
    if !is_decimal_number(text) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    if value.fract() == 0.0 && value.abs() < 1e21 {
        // An integral double: written without a fraction, as protobuf's JSON printer does.
        return Some(format!("{value:.0}"));
    }
    serde_json::Number::from_f64(value).map(|n| n.to_string())
}

/// `[-+]?(digits[.digits?]|.digits)([eE][-+]?digits)?`
fn is_decimal_number(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => (digits(int) && (frac.is_empty() || digits(frac))) || (int.is_empty() && digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::parse_yaml;

    fn json_of(yaml: &str) -> String {
        let mut out = String::new();
        to_json(&parse_yaml(yaml).unwrap(), &mut out);
        out
    }

    #[test]
    fn struct_as_compact_json() {
        assert_eq!(
            json_of("b: 1\na: 1.50\nc: \"1\"\nd: [true, ~, x y]\ne: {f: 1e3}\ng: -0.25\nh: 0x10\n"),
            r#"{"b":1,"a":1.5,"c":"1","d":[true,null,"x y"],"e":{"f":1000},"g":-0.25,"h":"0x10"}"#
        );
    }

    #[test]
    fn json_input_keeps_order_and_types() {
        let node = parse_json(r#"{"z": 1.0, "a": "s", "n": null, "l": [false]}"#).unwrap();
        let mut out = String::new();
        to_json(&node, &mut out);
        assert_eq!(out, r#"{"z":1,"a":"s","n":null,"l":[false]}"#);
    }

    #[test]
    fn json_syntax_error() {
        let error = parse_json("{\n  \"a\": 1,\n}").unwrap_err();
        assert_eq!(error.message, "JSON syntax error: trailing comma");
        assert_eq!((error.line, error.column), (Some(3), Some(1)));
    }
}

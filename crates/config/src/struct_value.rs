//! `google.protobuf.Struct` values: read from the tree with Envoy's YAML scalar rules, and
//! written in protobuf wire format (what plugins get as a Struct configuration, and inside
//! `xds.*` messages).

use crate::model::StructValue;
use crate::reader::{Ctx, Field};
use crate::tree::{Node, Value};

/// Reads a node as a `google.protobuf.Value` the way Envoy 1.40 converts YAML: a plain scalar
/// that yaml-cpp reads as a boolean is one (`true`, `Yes`, `off`, `y`, ...); one it reads as a
/// 64-bit integer (decimal, `0x` hex, leading-`0` octal, with a sign) is a number when it fits
/// 32 bits and its decimal digits as a string otherwise; anything else, floats included
/// (`2.5`, `1e3`), is a string, and so is every quoted scalar. JSON input (nodes without a
/// position) keeps JSON's types, as Envoy's JSON parser does.
pub(crate) fn to_struct_value(node: &Node) -> StructValue {
    match &node.value {
        Value::Null => StructValue::Null,
        Value::Scalar { text, quoted: false } if node.pos.is_none() => json_scalar(text),
        Value::Scalar { text, quoted: false } => plain_scalar(text),
        Value::Scalar { text, quoted: true } => StructValue::String(text.clone()),
        Value::Seq(items) => StructValue::List(items.iter().map(to_struct_value).collect()),
        Value::Map(entries) => {
            StructValue::Struct(entries.iter().map(|e| (e.key.clone(), to_struct_value(&e.value))).collect())
        }
    }
}

/// A JSON number or boolean.
fn json_scalar(text: &str) -> StructValue {
    match text {
        "true" => StructValue::Bool(true),
        "false" => StructValue::Bool(false),
        _ => text.parse().map_or_else(|_| StructValue::String(text.to_owned()), StructValue::Number),
    }
}

/// A mapping read as a Struct's fields.
pub(crate) fn struct_fields(ctx: &mut Ctx, field: &Field<'_>) -> Option<Vec<(String, StructValue)>> {
    match to_struct_value(field.node) {
        StructValue::Struct(fields) => Some(fields),
        StructValue::Null => Some(Vec::new()),
        _ => {
            field.error(ctx, format!("expected a mapping, found {}", field.node.kind()));
            None
        }
    }
}

fn plain_scalar(text: &str) -> StructValue {
    if let Some(b) = yaml_cpp_bool(text) {
        return StructValue::Bool(b);
    }
    match stream_integer(text) {
        Some(n) if i32::try_from(n).is_ok() => StructValue::Number(n as f64),
        Some(n) => StructValue::String(n.to_string()),
        None => StructValue::String(text.to_owned()),
    }
}

/// yaml-cpp's booleans: y/n, yes/no, true/false, on/off, each all lower case, all upper case,
/// or with a capital first letter.
fn yaml_cpp_bool(text: &str) -> Option<bool> {
    const WORDS: [(&str, bool); 8] = [
        ("y", true),
        ("n", false),
        ("yes", true),
        ("no", false),
        ("true", true),
        ("false", false),
        ("on", true),
        ("off", false),
    ];
    let lower = text.to_ascii_lowercase();
    let (_, value) = WORDS.iter().find(|(w, _)| *w == lower)?;
    let mut capitalized = lower.clone();
    capitalized[..1].make_ascii_uppercase();
    (text == lower || text == lower.to_ascii_uppercase() || text == capitalized).then_some(*value)
}

/// An `int64_t` read by a C++ stream with the base left to the text (`0x` hex, leading `0`
/// octal, else decimal), as yaml-cpp reads one: the whole text must be the number.
fn stream_integer(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (digits, radix) = if let Some(hex) = unsigned.strip_prefix("0x").or_else(|| unsigned.strip_prefix("0X")) {
        (hex, 16)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (&unsigned[1..], 8)
    } else {
        (unsigned, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// `google.protobuf.Struct` in wire format: map entries (field 1) of key (1) and Value (2), keys
/// sorted as protobuf's deterministic serialization writes them.
pub fn encode_struct(fields: &[(String, StructValue)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, StructValue)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, value) in sorted {
        let mut entry = Vec::new();
        string_field(&mut entry, 1, key);
        message_field(&mut entry, 2, &encode_value(value));
        message_field(&mut out, 1, &entry);
    }
    out
}

/// `google.protobuf.Value`: null (1), number (2), string (3), bool (4), struct (5), list (6).
fn encode_value(value: &StructValue) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        StructValue::Null => out.extend_from_slice(&[1 << 3, 0]),
        StructValue::Number(n) => {
            out.push((2 << 3) | 1);
            out.extend_from_slice(&n.to_le_bytes());
        }
        StructValue::String(s) => message_field(&mut out, 3, s.as_bytes()),
        StructValue::Bool(b) => out.extend_from_slice(&[4 << 3, u8::from(*b)]),
        StructValue::Struct(fields) => message_field(&mut out, 5, &encode_struct(fields)),
        StructValue::List(items) => {
            let mut list = Vec::new();
            for item in items {
                message_field(&mut list, 1, &encode_value(item));
            }
            message_field(&mut out, 6, &list);
        }
    }
    out
}

/// A string field, left out when empty (proto3).
pub fn string_field(out: &mut Vec<u8>, number: u32, value: &str) {
    if !value.is_empty() {
        message_field(out, number, value.as_bytes());
    }
}

/// A length-delimited field.
pub fn message_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    varint(out, u64::from(number << 3 | 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::parse_yaml;

    fn value_of(scalar: &str) -> StructValue {
        match to_struct_value(&parse_yaml(&format!("k: {scalar}")).unwrap()) {
            StructValue::Struct(mut fields) => fields.remove(0).1,
            other => panic!("{other:?}"),
        }
    }

    /// What Envoy 1.40 made of each scalar in `node.metadata`, read back as `xds.node.metadata.k`.
    #[test]
    fn scalars_convert_as_in_envoy() {
        let number = StructValue::Number;
        let string = |s: &str| StructValue::String(s.into());
        for (scalar, expected) in [
            ("1", number(1.0)),
            ("-4", number(-4.0)),
            ("+7", number(7.0)),
            ("007", number(7.0)),
            ("010", number(8.0)),
            ("-010", number(-8.0)),
            ("0x10", number(16.0)),
            ("-0x10", number(-16.0)),
            ("0X1F", number(31.0)),
            ("2147483647", number(2147483647.0)),
            ("0x80000000", string("2147483648")),
            ("3000000000", string("3000000000")),
            ("-2147483649", string("-2147483649")),
            ("2.5", string("2.5")),
            ("1.0", string("1.0")),
            ("1e3", string("1e3")),
            (".5", string(".5")),
            ("09", string("09")),
            ("0o17", string("0o17")),
            ("1_000", string("1_000")),
            ("12abc", string("12abc")),
            ("'7'", string("7")),
            ("\" 5\"", string(" 5")),
            ("y", StructValue::Bool(true)),
            ("yes", StructValue::Bool(true)),
            ("True", StructValue::Bool(true)),
            ("on", StructValue::Bool(true)),
            ("Off", StructValue::Bool(false)),
            ("NO", StructValue::Bool(false)),
            ("oN", string("oN")),
            ("~", StructValue::Null),
        ] {
            assert_eq!(value_of(scalar), expected, "{scalar}");
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The 10 bytes Envoy 1.40 hands a plugin configured with the Struct `{a: b}`.
    #[test]
    fn struct_encodes_as_envoy() {
        let fields = vec![("a".to_string(), StructValue::String("b".into()))];
        assert_eq!(hex(&encode_struct(&fields)), "0a080a016112031a0162");
    }
}

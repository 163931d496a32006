//! The few protobuf messages the proxy reads and writes without a protobuf library (a
//! plugin's `GrpcService`, the foreign functions' arguments, gRPC health checks): field
//! numbers and their values.

/// A field's value, by its wire type.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Every field of a protobuf message with its number; `None` if it is not one.
fn fields(mut bytes: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return None;
        }
        let value = match wire {
            0 => Value::Varint(varint(&mut bytes)?),
            1 => {
                bytes = bytes.get(8..)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let value = bytes.get(..len)?;
                bytes = &bytes[len..];
                Value::Bytes(value)
            }
            5 => {
                bytes = bytes.get(4..)?;
                Value::Fixed
            }
            _ => return None,
        };
        out.push((number, value));
    }
    Some(out)
}

/// The length-delimited fields of a protobuf message; `None` if it is not one (any other
/// wire type is skipped when well-formed).
pub fn length_delimited_fields(bytes: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let fields = fields(bytes)?;
    Some(fields.into_iter().filter_map(|(n, v)| if let Value::Bytes(b) = v { Some((n, b)) } else { None }).collect())
}

/// The first varint field `number` of a protobuf message (an enum, a number); `None` if
/// it has none or is not a message.
pub fn varint_field(bytes: &[u8], number: u64) -> Option<u64> {
    fields(bytes)?
        .into_iter()
        .find_map(|(n, v)| if let (true, Value::Varint(x)) = (n == number, v) { Some(x) } else { None })
}

/// A message of one string field `number` (empty: the empty message, as protobuf writes it).
pub fn string_field(number: u64, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !value.is_empty() {
        put_varint(&mut out, number << 3 | 2);
        put_varint(&mut out, value.len() as u64);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

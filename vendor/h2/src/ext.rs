//! Extensions specific to the HTTP/2 protocol.

use crate::hpack::BytesStr;

use bytes::Bytes;
use std::fmt;

/// Represents the `:protocol` pseudo-header used by
/// the [Extended CONNECT Protocol].
///
/// [Extended CONNECT Protocol]: https://datatracker.ietf.org/doc/html/rfc8441#section-4
#[derive(Clone, Eq, PartialEq)]
pub struct Protocol {
    value: BytesStr,
}

impl Protocol {
    /// Converts a static string to a protocol name.
    pub const fn from_static(value: &'static str) -> Self {
        Self {
            value: BytesStr::from_static(value),
        }
    }

    /// Returns a str representation of the header.
    pub fn as_str(&self) -> &str {
        self.value.as_str()
    }

    pub(crate) fn try_from(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        Ok(Self {
            value: BytesStr::try_from(bytes)?,
        })
    }
}

impl<'a> From<&'a str> for Protocol {
    fn from(value: &'a str) -> Self {
        Self {
            value: BytesStr::from(value),
        }
    }
}

impl AsRef<[u8]> for Protocol {
    fn as_ref(&self) -> &[u8] {
        self.value.as_ref()
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// The order in which a request's pseudo-headers (`:method`, `:scheme`, `:authority`,
/// `:path`, `:protocol`) came in its header block. wasmproxy's addition to h2: a proxy that
/// shows requests as the client sent them (as Envoy does) needs the order HPACK decoding
/// otherwise loses. Found in the extensions of requests a server accepts.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct PseudoOrder {
    names: [u8; 5],
    len: u8,
}

impl PseudoOrder {
    const NAMES: [&'static str; 5] = [":method", ":scheme", ":authority", ":path", ":protocol"];

    pub(crate) fn push(&mut self, name: &str) {
        if let Some(i) = Self::NAMES.iter().position(|n| &n[1..] == name) {
            if usize::from(self.len) < self.names.len() {
                self.names[usize::from(self.len)] = i as u8;
                self.len += 1;
            }
        }
    }

    /// The pseudo-header names, in the order they came.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.names[..usize::from(self.len)].iter().map(|&i| Self::NAMES[usize::from(i)])
    }
}

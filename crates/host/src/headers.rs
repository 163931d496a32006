//! An ordered header map with Envoy's rules: keys lower-cased, repeated keys kept.

/// An ordered list of header (or trailer, or metadata) entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Headers {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map from `(name, value)` pairs; names are lower-cased.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.add(k.as_ref(), v.as_ref());
        }
        h
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Envoy's `HeaderMap::byteSize()`: the sum of every key's and value's length.
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The first value of `name` (compared lower-cased).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        let name = lower(name);
        self.entries.iter().find(|(k, _)| *k == name.as_ref()).map(|(_, v)| v.as_slice())
    }

    /// Appends an entry, keeping the ones already there. As in Envoy's header maps,
    /// pseudo-headers (`:name`) stay before the others: one is added after the last of them.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        let entry = (lower(name).into_owned(), value.to_vec());
        if entry.0.starts_with(b":") {
            let at = self.entries.iter().position(|(k, _)| !k.starts_with(b":")).unwrap_or(self.entries.len());
            self.entries.insert(at, entry);
        } else {
            self.entries.push(entry);
        }
    }

    /// Envoy's `setCopy`, behind `proxy_replace_header_map_value`: every entry of `name`
    /// removed, then the value added (so the header moves to the end of its section).
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    /// Sets `name` to one value: the first entry is replaced, later ones removed; added if absent.
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        let name = lower(name);
        match self.entries.iter().position(|(k, _)| *k == name.as_ref()) {
            Some(first) => {
                self.entries[first].1 = value.to_vec();
                let mut i = 0;
                self.entries.retain(|(k, _)| {
                    let keep = i <= first || *k != name.as_ref();
                    i += 1;
                    keep
                });
            }
            None => self.entries.push((name.into_owned(), value.to_vec())),
        }
    }

    /// Removes every entry of `name`.
    pub fn remove(&mut self, name: &[u8]) {
        let name = lower(name);
        self.entries.retain(|(k, _)| *k != name.as_ref());
    }

    /// Iterates over `(name, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Headers::from_pairs(iter)
    }
}

fn lower(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if name.iter().any(u8::is_ascii_uppercase) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_lowercases() {
        let mut h = Headers::from_pairs([("Foo", "1"), ("bar", "2"), ("foo", "3")]);
        assert_eq!(h.get(b"FOO"), Some(&b"1"[..]));
        assert_eq!(h.byte_size(), 3 + 1 + 3 + 1 + 3 + 1);
        h.replace(b"foo", b"x");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![(&b"foo"[..], &b"x"[..]), (b"bar", b"2")]);
        h.replace(b"new", b"y");
        h.remove(b"BAR");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![(&b"foo"[..], &b"x"[..]), (b"new", b"y")]);
    }
}

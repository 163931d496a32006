//! An ordered header map with Envoy's rules: keys lower-cased, repeated keys kept.

/// An ordered list of header (or trailer, or metadata) entries. Names and values live back
/// to back in one buffer (two allocations per map, not two per entry); an entry changed or
/// removed leaves its old bytes behind until they are half the buffer.
#[derive(Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Bytes of `bytes` no entry points at any more.
    dead: usize,
}

/// Where one entry's name and value are in `Headers::bytes`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
}

impl Headers {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `entries` entries of `bytes` bytes in all.
    pub fn with_capacity(entries: usize, bytes: usize) -> Self {
        Headers { bytes: Vec::with_capacity(bytes), entries: Vec::with_capacity(entries), dead: 0 }
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
        self.entries.iter().map(|e| (e.name_len + e.value_len) as usize).sum()
    }

    fn name_of(&self, e: &Entry) -> &[u8] {
        &self.bytes[e.name as usize..(e.name + e.name_len) as usize]
    }

    fn value_of(&self, e: &Entry) -> &[u8] {
        &self.bytes[e.value as usize..(e.value + e.value_len) as usize]
    }

    /// Copies `data` to the end of the buffer; where it starts.
    fn store(&mut self, data: &[u8]) -> u32 {
        let at = self.bytes.len() as u32;
        self.bytes.extend_from_slice(data);
        at
    }

    /// A new entry, its name lower-cased.
    fn entry(&mut self, name: &[u8], value: &[u8]) -> Entry {
        let at = self.bytes.len();
        self.bytes.extend(name.iter().map(u8::to_ascii_lowercase));
        Entry { name: at as u32, name_len: name.len() as u32, value: self.store(value), value_len: value.len() as u32 }
    }

    /// The first value of `name` (compared lower-cased).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        let name = lower(name);
        self.entries.iter().find(|e| self.name_of(e) == name.as_ref()).map(|e| self.value_of(e))
    }

    /// Appends an entry, keeping the ones already there. As in Envoy's header maps,
    /// pseudo-headers (`:name`) stay before the others: one is added after the last of them.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        let entry = self.entry(name, value);
        if name.starts_with(b":") {
            let at = self.entries.iter().position(|e| !self.name_of(e).starts_with(b":")).unwrap_or(self.entries.len());
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
        match self.entries.iter().position(|e| self.name_of(e) == name.as_ref()) {
            Some(first) => {
                self.dead += self.entries[first].value_len as usize;
                let at = self.store(value);
                self.entries[first].value = at;
                self.entries[first].value_len = value.len() as u32;
                self.retain(|i, n| i <= first || n != name.as_ref());
            }
            None => {
                let entry = self.entry(&name, value);
                self.entries.push(entry);
            }
        }
    }

    /// Removes every entry of `name`.
    pub fn remove(&mut self, name: &[u8]) {
        let name = lower(name);
        self.retain(|_, n| n != name.as_ref());
    }

    /// Removes every entry whose (lower-case) name `unwanted` picks, in one pass.
    pub fn remove_if(&mut self, mut unwanted: impl FnMut(&[u8]) -> bool) {
        if self.iter().any(|(name, _)| unwanted(name)) {
            self.retain(|_, name| !unwanted(name));
        }
    }

    /// Keeps the entries for which `keep(index, name)` holds; compacts the buffer once
    /// most of it is dead.
    fn retain(&mut self, mut keep: impl FnMut(usize, &[u8]) -> bool) {
        let (bytes, mut dead) = (&self.bytes, 0);
        let mut i = 0;
        self.entries.retain(|e| {
            let name = &bytes[e.name as usize..(e.name + e.name_len) as usize];
            let kept = keep(i, name);
            i += 1;
            if !kept {
                dead += (e.name_len + e.value_len) as usize;
            }
            kept
        });
        self.dead += dead;
        if self.dead > 256 && self.dead * 2 > self.bytes.len() {
            self.compact();
        }
    }

    /// Copies the live bytes into a fresh buffer.
    fn compact(&mut self) {
        let mut fresh = Headers::with_capacity(self.entries.len(), self.bytes.len() - self.dead);
        for (k, v) in self.iter() {
            let entry = fresh.entry(k, v);
            fresh.entries.push(entry);
        }
        *self = fresh;
    }

    /// Iterates over `(name, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.entries.iter().map(|e| (self.name_of(e), self.value_of(e)))
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
        self.dead = 0;
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        f.debug_list().entries(self.iter().map(|(k, v)| (text(k), text(v)))).finish()
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
        h.add(b":Path", b"/");
        assert_eq!(h.iter().next(), Some((&b":path"[..], &b"/"[..])), "pseudo-headers first");
        assert_eq!(h, Headers::from_pairs([(":path", "/"), ("foo", "x"), ("new", "y")]));
    }

    #[test]
    fn dead_bytes_are_compacted_away() {
        let mut h = Headers::new();
        for i in 0..1000 {
            h.replace(b"x-counter", format!("{i:0100}").as_bytes());
            h.add(b"x-temp", b"0123456789");
            h.remove(b"x-temp");
        }
        assert_eq!(h.len(), 1);
        assert_eq!(h.get(b"x-counter"), Some(format!("{:0100}", 999).as_bytes()));
        assert!(h.bytes.len() < 1024, "the buffer holds {} bytes", h.bytes.len());
    }
}

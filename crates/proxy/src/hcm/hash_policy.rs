//! A route's `hash_policy`: the hash of a request that a hashing load balancer
//! (`RING_HASH`, `MAGLEV`) places on its ring, made as Envoy makes it so that a key goes to
//! the same host through wasmproxy as through Envoy.

use std::net::SocketAddr;

use regex::Regex;
use wasmproxy_config::model::{HashKey, HashPolicy};
use wasmproxy_host::Headers;

use crate::upstream::hashing::{xx, xx_chain};

/// A route's hash policies, their header rewrites compiled.
#[derive(Default)]
pub struct HashPolicies(Vec<(HashPolicy, Option<(Regex, String)>)>);

impl HashPolicies {
    /// Compiles `policies`' header rewrites.
    pub fn new(policies: &[HashPolicy]) -> Result<HashPolicies, (String, regex::Error)> {
        let mut compiled = Vec::with_capacity(policies.len());
        for p in policies {
            let rewrite = match &p.key {
                HashKey::Header { rewrite: Some(rw), .. } => {
                    Some((Regex::new(&rw.pattern).map_err(|e| (rw.pattern.clone(), e))?, rw.substitution.clone()))
                }
                _ => None,
            };
            compiled.push((p.clone(), rewrite));
        }
        Ok(HashPolicies(compiled))
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The request's hash (none if no policy yields one): each policy's hash folded in by
    /// rotating the hash so far one bit left; a `terminal` policy ends it once there is one.
    pub fn hash(&self, headers: &Headers, client: SocketAddr) -> Option<u64> {
        let mut hash = None;
        for (policy, rewrite) in &self.0 {
            if let Some(next) = key_hash(&policy.key, rewrite.as_ref(), headers, client) {
                hash = Some(hash.map_or(0, |h: u64| h.rotate_left(1)) ^ next);
            }
            if policy.terminal && hash.is_some() {
                break;
            }
        }
        hash
    }
}

/// One policy's hash of the request.
fn key_hash(key: &HashKey, rewrite: Option<&(Regex, String)>, headers: &Headers, client: SocketAddr) -> Option<u64> {
    match key {
        HashKey::Header { name, .. } => {
            let mut values: Vec<Vec<u8>> = headers
                .iter()
                .filter(|(k, _)| *k == name.as_bytes())
                .map(|(_, v)| match rewrite {
                    Some((re, with)) => {
                        re.replace_all(&String::from_utf8_lossy(v), with.as_str()).into_owned().into_bytes()
                    }
                    None => v.to_vec(),
                })
                .collect();
            if values.is_empty() {
                return None;
            }
            values.sort();
            Some(xx_chain(values.iter().map(Vec::as_slice)))
        }
        HashKey::Cookie(name) => {
            let value = cookie(headers, name)?;
            (!value.is_empty()).then(|| xx(value))
        }
        HashKey::SourceIp => Some(xx(client.ip().to_string().as_bytes())),
        HashKey::QueryParameter(name) => {
            let path = headers.get(b":path")?;
            let query = &path[path.iter().position(|b| *b == b'?')? + 1..];
            query.split(|b| *b == b'&').find_map(|pair| {
                let (k, v) = match pair.iter().position(|b| *b == b'=') {
                    Some(at) => (&pair[..at], &pair[at + 1..]),
                    None => (pair, &b""[..]),
                };
                (k == name.as_bytes()).then(|| xx(v))
            })
        }
    }
}

/// The value of the cookie `name` in the request's `cookie` headers.
fn cookie<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers.iter().filter(|(k, _)| *k == b"cookie").find_map(|(_, v)| {
        v.split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|b| *b == b'=')?;
            let value = &pair[at + 1..];
            let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
            (pair[..at].trim_ascii() == name.as_bytes()).then_some(value)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmproxy_config::model::HashPolicy;

    fn policies(keys: Vec<(HashKey, bool)>) -> HashPolicies {
        let list: Vec<HashPolicy> = keys.into_iter().map(|(key, terminal)| HashPolicy { key, terminal }).collect();
        HashPolicies::new(&list).expect("compiles")
    }

    fn headers(list: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (k, v) in list {
            h.add(k.as_bytes(), v.as_bytes());
        }
        h
    }

    #[test]
    fn hashes_are_envoys() {
        let client: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let header = |name: &str| (HashKey::Header { name: name.into(), rewrite: None }, false);
        let one = policies(vec![header("x-user")]);
        assert_eq!(one.hash(&headers(&[("x-user", "alice")]), client), Some(xx(b"alice")));
        assert_eq!(one.hash(&headers(&[]), client), None, "no header, no hash");
        // Several values: sorted, each hashed with the previous hash as seed.
        let two = one.hash(&headers(&[("x-user", "b"), ("x-user", "a")]), client);
        assert_eq!(two, Some(twox_hash::XxHash64::oneshot(xx(b"a"), b"b")));
        // Two policies: the first rotated left one bit, then xor.
        let both = policies(vec![header("x-a"), (HashKey::SourceIp, false)]);
        let expected = xx(b"1").rotate_left(1) ^ xx(b"10.0.0.1");
        assert_eq!(both.hash(&headers(&[("x-a", "1")]), client), Some(expected));
        // A terminal policy that yielded a hash ends it.
        let terminal =
            policies(vec![(HashKey::Header { name: "x-a".into(), rewrite: None }, true), (HashKey::SourceIp, false)]);
        assert_eq!(terminal.hash(&headers(&[("x-a", "1")]), client), Some(xx(b"1")));
        let cookie = policies(vec![(HashKey::Cookie("session".into()), false)]);
        assert_eq!(cookie.hash(&headers(&[("cookie", "a=1; session=xyz")]), client), Some(xx(b"xyz")));
        let query = policies(vec![(HashKey::QueryParameter("u".into()), false)]);
        assert_eq!(query.hash(&headers(&[(":path", "/p?x=1&u=bob")]), client), Some(xx(b"bob")));
    }
}

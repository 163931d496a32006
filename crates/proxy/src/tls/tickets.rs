//! Session tickets sealed with the keys a filter chain is given (`session_ticket_keys`),
//! so that every instance holding them resumes the sessions of the others: the first key
//! seals, any key opens (for rotation). A key is Envoy's 80 bytes: a 16-byte name (which
//! goes in front of each ticket, to find its key), 32 bytes BoringSSL uses for an HMAC,
//! unused here, and a 32-byte AES key; tickets are sealed with AES-256-GCM under a random
//! nonce, with aws-lc-rs.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use wasmproxy_config::model::DataSource;

/// The length of a key, as Envoy wants it.
const KEY_BYTES: usize = 80;
/// How long a ticket is good for, in seconds (BoringSSL's default session lifetime).
const TICKET_LIFETIME_SECS: u32 = 7200;

/// The ticket keys of a filter chain.
pub struct TicketKeys(Vec<([u8; 16], LessSafeKey)>);

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKeys({} keys)", self.0.len())
    }
}

impl TicketKeys {
    /// The keys of `session_ticket_keys.keys` (`read` gives a `DataSource`'s bytes); an
    /// error names the key that is not 80 bytes.
    pub fn new(
        keys: &[DataSource],
        read: impl Fn(&DataSource, &str) -> Result<Vec<u8>, String>,
    ) -> Result<TicketKeys, String> {
        let mut sealing = Vec::with_capacity(keys.len());
        for (i, source) in keys.iter().enumerate() {
            let field = format!("session_ticket_keys.keys[{i}]");
            let bytes = read(source, &field)?;
            if bytes.len() != KEY_BYTES {
                // Envoy's words.
                return Err(format!(
                    "{field}: Incorrect TLS session ticket key length. Length {}, expected length {KEY_BYTES}.",
                    bytes.len()
                ));
            }
            let mut name = [0u8; 16];
            name.copy_from_slice(&bytes[..16]);
            let key = UnboundKey::new(&AES_256_GCM, &bytes[48..80]).map_err(|e| format!("{field}: {e}"))?;
            sealing.push((name, LessSafeKey::new(key)));
        }
        Ok(TicketKeys(sealing))
    }
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    /// `name | nonce | sealed state | tag`.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (name, key) = self.0.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name), &mut sealed).ok()?;
        Some([&name[..], &nonce[..], &sealed].concat())
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = ticket.split_at_checked(16)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let (name, key) = self.0.iter().find(|(n, _)| n == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut opened = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(name), &mut opened).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustls::server::ProducesTickets;

    use super::*;

    fn keys(sources: &[Vec<u8>]) -> Result<TicketKeys, String> {
        let sources: Vec<DataSource> = sources.iter().map(|b| DataSource::Inline(b.clone())).collect();
        TicketKeys::new(&sources, |source, _| match source {
            DataSource::Inline(bytes) => Ok(bytes.clone()),
            DataSource::File(_) => unreachable!(),
        })
    }

    #[test]
    fn the_first_key_seals_and_any_key_opens() {
        let (one, two) = (vec![1u8; 80], vec![2u8; 80]);
        let old = keys(std::slice::from_ref(&one)).unwrap();
        let rotated = keys(&[two.clone(), one.clone()]).unwrap();
        let ticket = old.encrypt(b"session state").unwrap();
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"session state", "an older key still opens");
        let fresh = rotated.encrypt(b"later").unwrap();
        assert_eq!(&fresh[..16], &two[..16], "the first key seals");
        assert!(old.decrypt(&fresh).is_none(), "a key it does not hold");
        let mut tampered = ticket.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(old.decrypt(&tampered).is_none());
        assert!(old.decrypt(&ticket[..20]).is_none());
        assert_ne!(old.encrypt(b"same").unwrap(), old.encrypt(b"same").unwrap(), "a nonce each");
    }

    #[test]
    fn a_key_must_be_80_bytes() {
        let error = keys(&[vec![0u8; 80], vec![0u8; 79]]).unwrap_err();
        assert_eq!(
            error,
            "session_ticket_keys.keys[1]: Incorrect TLS session ticket key length. Length 79, expected length 80."
        );
    }
}

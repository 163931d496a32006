//! Resumable sessions as Envoy (BoringSSL) keeps them.
//!
//! - Session tickets sealed with the keys a filter chain is given (`session_ticket_keys`),
//!   so that every instance holding them resumes the sessions of the others: the first key
//!   seals, any key opens (for rotation). A key is Envoy's 80 bytes: a 16-byte name (which
//!   goes in front of each ticket, to find its key), 32 bytes BoringSSL uses for an HMAC,
//!   unused here, and a 32-byte AES key; tickets are sealed with AES-256-GCM under a random
//!   nonce, with aws-lc-rs. Without keys, a random key of the chain's own, replaced every
//!   two days (the one before still opens), as BoringSSL rotates its own.
//! - Sessions that end: a TLS 1.2 session lives `session_timeout` (7200 s unless set), a
//!   TLS 1.3 one two days, and each carries the time it ends, sealed with it.
//! - The session cache keeps TLS 1.2 sessions only: BoringSSL resumes TLS 1.3 by tickets.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::server::{ProducesTickets, StoresServerSessions};
use wasmproxy_config::model::DataSource;

/// The length of a key, as Envoy wants it.
const KEY_BYTES: usize = 80;
/// How long a TLS 1.2 session lives unless `session_timeout` says (BoringSSL's
/// `SSL_DEFAULT_SESSION_TIMEOUT`).
const DEFAULT_SESSION_TIMEOUT_SECS: u32 = 7200;
/// How long a TLS 1.3 session lives (BoringSSL's `SSL_DEFAULT_SESSION_PSK_DHE_TIMEOUT`,
/// which Envoy leaves as it is), and how often a chain's own ticket key is replaced.
const TLS13_SESSION_SECS: u32 = 2 * 24 * 60 * 60;
/// The bytes in front of a session: the second it ends, since the Unix epoch, and the
/// session context it was made in.
const STAMP_BYTES: usize = 16;
/// TLS 1.3 as a session records its version.
const TLS13: u16 = 0x0304;

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

impl TicketKeys {
    /// One random key, for a chain not given any.
    fn random() -> Result<Box<dyn ProducesTickets>, rustls::crypto::GetRandomFailed> {
        let mut key = [0u8; KEY_BYTES];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| rustls::crypto::GetRandomFailed)?;
        let keys = TicketKeys::new(&[DataSource::Inline(key.to_vec())], |source, _| match source {
            DataSource::Inline(bytes) => Ok(bytes.clone()),
            DataSource::File(_) => Err(String::new()),
        });
        Ok(Box::new(keys.map_err(|_| rustls::crypto::GetRandomFailed)?))
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    /// Not asked: [`Tickets`] answers.
    fn lifetime(&self) -> u32 {
        DEFAULT_SESSION_TIMEOUT_SECS
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

/// A chain's session ticket keys (`session_ticket_keys`, or the secret
/// `session_ticket_keys_sds_secret_config` names), replaced in place when the secret
/// changes: tickets sealed from then on use the new first key, and any key the new list
/// still holds opens older ones.
#[derive(Debug)]
pub struct TicketKeyRing(RwLock<TicketKeys>);

impl TicketKeyRing {
    /// The keys of `keys` (`read` gives a `DataSource`'s bytes); an error names the key
    /// that is not 80 bytes.
    pub fn load(
        keys: &[DataSource],
        read: impl Fn(&DataSource, &str) -> Result<Vec<u8>, String>,
    ) -> Result<TicketKeyRing, String> {
        Ok(TicketKeyRing(RwLock::new(TicketKeys::new(keys, read)?)))
    }

    /// Puts `keys` in place of the keys held, unless one of them does not load.
    pub fn replace(
        &self,
        keys: &[DataSource],
        read: impl Fn(&DataSource, &str) -> Result<Vec<u8>, String>,
    ) -> Result<(), String> {
        let loaded = TicketKeys::new(keys, read)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(())
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, TicketKeys> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl ProducesTickets for TicketKeyRing {
    fn enabled(&self) -> bool {
        true
    }

    /// Not asked: [`Tickets`] answers.
    fn lifetime(&self) -> u32 {
        DEFAULT_SESSION_TIMEOUT_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.keys().encrypt(plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.keys().decrypt(ticket)
    }
}

/// How long sessions live, by TLS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetimes {
    /// A TLS 1.2 session's, in seconds.
    pub tls12: u32,
    /// A TLS 1.3 session's, in seconds.
    pub tls13: u32,
}

impl SessionLifetimes {
    /// Envoy's, for a chain's `session_timeout` (0 meaning BoringSSL's default, as
    /// `SSL_CTX_set_timeout` takes it).
    pub fn new(session_timeout_secs: Option<u32>) -> SessionLifetimes {
        let tls12 = session_timeout_secs.filter(|s| *s != 0).unwrap_or(DEFAULT_SESSION_TIMEOUT_SECS);
        SessionLifetimes { tls12, tls13: TLS13_SESSION_SECS }
    }

    /// The lifetime of the session rustls encoded as `plain`.
    fn of(&self, plain: &[u8]) -> u32 {
        match session_version(plain) {
            Some(TLS13) => self.tls13,
            _ => self.tls12,
        }
    }
}

/// The TLS version of a session as rustls 0.23 encodes its server sessions: a byte saying
/// whether a server name follows, the name with a one-byte length, then the version. The
/// unit tests hold rustls to it.
fn session_version(plain: &[u8]) -> Option<u16> {
    let at = match *plain.first()? {
        1 => 2 + usize::from(*plain.get(1)?),
        _ => 1,
    };
    Some(u16::from_be_bytes([*plain.get(at)?, *plain.get(at + 1)?]))
}

/// The time now, in seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a chain's sessions are bound to besides their keys: how many times its client
/// certificate checks changed (none: they never change). A session made before a change is
/// not resumed, its client certificate having passed checks no longer in force (Envoy's
/// session id context changes with the CA and the SAN matchers).
pub type SessionContext = Option<Arc<AtomicU64>>;

/// The session context now.
fn context_now(context: &SessionContext) -> u64 {
    context.as_ref().map_or(0, |c| c.load(Ordering::Relaxed))
}

/// `plain` with the second it ends and the session context in front.
fn stamp(plain: &[u8], lifetime: u32, now: u64, context: u64) -> Vec<u8> {
    let ends_at = now.saturating_add(u64::from(lifetime));
    [&ends_at.to_be_bytes()[..], &context.to_be_bytes()[..], plain].concat()
}

/// What [`stamp`] made, if it has not ended by `now` and was made in `context`.
fn unless_stale(mut stored: Vec<u8>, now: u64, context: u64) -> Option<Vec<u8>> {
    let ends_at = u64::from_be_bytes(stored.get(..8)?.try_into().ok()?);
    let made_in = u64::from_be_bytes(stored.get(8..STAMP_BYTES)?.try_into().ok()?);
    (now < ends_at && made_in == context).then(|| stored.split_off(STAMP_BYTES))
}

thread_local! {
    /// The lifetime of the session this thread last sealed in a ticket: rustls asks for
    /// the ticket's lifetime right after sealing it, on the same thread.
    static LAST_SEALED_LIFETIME: Cell<u32> = const { Cell::new(DEFAULT_SESSION_TIMEOUT_SECS) };
}

/// A chain's session tickets: sealed by its keys, each ending with its session.
#[derive(Debug)]
pub struct Tickets {
    /// The keys.
    keys: Arc<dyn ProducesTickets>,
    /// How long sessions live.
    lifetimes: SessionLifetimes,
    /// What sessions are bound to.
    context: SessionContext,
    /// The time now, in seconds since the Unix epoch.
    clock: fn() -> u64,
}

impl Tickets {
    /// Tickets under the chain's keys, or, without any, under a random key replaced every
    /// two days; each opens only in the session context it was sealed in.
    pub fn new(
        keys: Option<Arc<TicketKeyRing>>,
        lifetimes: SessionLifetimes,
        context: SessionContext,
    ) -> Result<Tickets, String> {
        let keys: Arc<dyn ProducesTickets> = match keys {
            None => Arc::new(
                rustls::TicketRotator::new(TLS13_SESSION_SECS, TicketKeys::random)
                    .map_err(|e| format!("session tickets: {e}"))?,
            ),
            Some(ring) => ring,
        };
        Ok(Tickets { keys, lifetimes, context, clock: unix_now })
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LAST_SEALED_LIFETIME.with(Cell::get)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let lifetime = self.lifetimes.of(plain);
        LAST_SEALED_LIFETIME.with(|last| last.set(lifetime));
        self.keys.encrypt(&stamp(plain, lifetime, (self.clock)(), context_now(&self.context)))
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        unless_stale(self.keys.decrypt(ticket)?, (self.clock)(), context_now(&self.context))
    }
}

/// A chain's session cache: TLS 1.2 sessions, each until it ends.
#[derive(Debug)]
pub struct SessionCache {
    /// The sessions, each with the second it ends in front.
    sessions: Arc<dyn StoresServerSessions>,
    /// How long a TLS 1.2 session lives.
    lifetime: u32,
    /// What sessions are bound to.
    context: SessionContext,
    /// The time now, in seconds since the Unix epoch.
    clock: fn() -> u64,
}

impl SessionCache {
    /// A cache of up to `entries` sessions, each resumed only in the session context it
    /// was made in.
    pub fn new(entries: usize, lifetimes: SessionLifetimes, context: SessionContext) -> SessionCache {
        let sessions = rustls::server::ServerSessionMemoryCache::new(entries);
        SessionCache { sessions, lifetime: lifetimes.tls12, context, clock: unix_now }
    }

    /// A stored session, if it is still good.
    fn good(&self, stored: Option<Vec<u8>>) -> Option<Vec<u8>> {
        unless_stale(stored?, (self.clock)(), context_now(&self.context))
    }
}

impl StoresServerSessions for SessionCache {
    /// Refuses TLS 1.3 sessions, so that rustls sends no ticket naming one.
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        session_version(&value) != Some(TLS13)
            && self.sessions.put(key, stamp(&value, self.lifetime, (self.clock)(), context_now(&self.context)))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.good(self.sessions.get(key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.good(self.sessions.take(key))
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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

    thread_local! {
        /// The time the tests below say it is, on their own thread (rustls seals and opens
        /// on the thread that drives the handshake).
        static NOW: Cell<u64> = const { Cell::new(0) };
    }

    fn now() -> u64 {
        NOW.with(Cell::get)
    }

    fn set_now(secs: u64) {
        NOW.with(|now| now.set(secs));
    }

    /// A server for `a.example` and 127.0.0.1 of one TLS version, with tickets or a session
    /// cache (or both) living as `session_timeout` says, on the tests' clock.
    fn server(
        version: &'static rustls::SupportedProtocolVersion,
        tickets: bool,
        cache: bool,
        session_timeout: u32,
    ) -> (Arc<rustls::ServerConfig>, rustls::RootCertStore) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.serialize_der().try_into().unwrap())
            .unwrap();
        let lifetimes = SessionLifetimes::new(Some(session_timeout));
        let mut sealed = Tickets::new(None, lifetimes, None).unwrap();
        sealed.clock = now;
        if tickets {
            config.ticketer = Arc::new(sealed);
        }
        let mut sessions = SessionCache::new(16, lifetimes, None);
        sessions.clock = now;
        config.session_storage = match cache {
            true => Arc::new(sessions),
            false => Arc::new(rustls::server::NoServerSessionStorage {}),
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        (Arc::new(config), roots)
    }

    /// A handshake in memory, the client's tickets taken in; whether it resumed.
    fn resumed(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>, name: &str) -> bool {
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client_side = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut server_side = rustls::ServerConnection::new(server.clone()).unwrap();
        for _ in 0..8 {
            let mut bytes = Vec::new();
            while client_side.wants_write() {
                client_side.write_tls(&mut bytes).unwrap();
            }
            let mut read = &bytes[..];
            while !read.is_empty() {
                server_side.read_tls(&mut read).unwrap();
                server_side.process_new_packets().unwrap();
            }
            let mut bytes = Vec::new();
            while server_side.wants_write() {
                server_side.write_tls(&mut bytes).unwrap();
            }
            let mut read = &bytes[..];
            while !read.is_empty() {
                client_side.read_tls(&mut read).unwrap();
                client_side.process_new_packets().unwrap();
            }
        }
        assert!(!client_side.is_handshaking());
        client_side.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    fn client(roots: rustls::RootCertStore, tickets: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        if !tickets {
            config.resumption = config.resumption.tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
        }
        Arc::new(config)
    }

    #[test]
    fn sessions_end_as_boringssl_ends_them() {
        use rustls::version::{TLS12, TLS13};
        let two_days = 2 * 24 * 3600;
        // (version, name the client asks for, when the session must have ended)
        for (version, name, ends) in [
            (&TLS12, "a.example", 60),
            (&TLS12, "127.0.0.1", 60),
            (&TLS13, "a.example", two_days),
            (&TLS13, "127.0.0.1", two_days),
        ] {
            let start = 1_000_000;
            set_now(start);
            let (server, roots) = server(version, true, false, 60);
            // Every resumption takes a fresh ticket (with the new session's own end), so
            // each is measured from a full handshake.
            for (after, resumes) in [(ends - 1, true), (ends, false)] {
                let client = client(roots.clone(), true);
                set_now(start);
                assert!(!resumed(&server, &client, name));
                set_now(start + after);
                assert_eq!(resumed(&server, &client, name), resumes, "{version:?} {name} after {after} s");
            }
        }
    }

    #[test]
    fn the_session_cache_keeps_tls12_sessions_until_they_end() {
        use rustls::version::{TLS12, TLS13};
        let start = 5_000_000_000;
        set_now(start);
        let (tls12, roots) = server(&TLS12, false, true, 0);
        for (after, resumes) in [(7199, true), (7200, false)] {
            let client = client(roots.clone(), false);
            set_now(start);
            assert!(!resumed(&tls12, &client, "a.example"));
            set_now(start + after);
            assert_eq!(resumed(&tls12, &client, "a.example"), resumes, "after {after} s");
        }
        // BoringSSL resumes TLS 1.3 sessions by tickets only.
        let (tls13, roots) = server(&TLS13, false, true, 0);
        let client = client(roots, true);
        assert!(!resumed(&tls13, &client, "a.example"));
        assert!(!resumed(&tls13, &client, "a.example"));
    }

    #[test]
    fn a_chain_without_keys_still_seals_and_names_the_lifetime_of_what_it_sealed() {
        let tickets = Tickets::new(None, SessionLifetimes::new(None), None).unwrap();
        // An encoded TLS 1.3 session with a server name, then a TLS 1.2 one without.
        let tls13 = [&[1u8, 9][..], b"a.example", &[0x03, 0x04, 0x13, 0x01]].concat();
        let tls12 = [0u8, 0x03, 0x03, 0xc0, 0x2b];
        let sealed = tickets.encrypt(&tls13).unwrap();
        assert_eq!(tickets.lifetime(), 2 * 24 * 3600);
        assert_eq!(tickets.decrypt(&sealed).unwrap(), tls13);
        tickets.encrypt(&tls12).unwrap();
        assert_eq!(tickets.lifetime(), 7200);
        assert_eq!(session_version(&[1, 200, 0]), None, "a name longer than the bytes");
    }

    #[test]
    fn sessions_made_before_the_client_checks_change_are_not_resumed() {
        let context: SessionContext = Some(Arc::default());
        let tickets = Tickets::new(None, SessionLifetimes::new(None), context.clone()).unwrap();
        let cache = SessionCache::new(4, SessionLifetimes::new(None), context.clone());
        let tls12 = [0u8, 0x03, 0x03, 0xc0, 0x2b];
        let sealed = tickets.encrypt(&tls12).unwrap();
        assert!(cache.put(b"id".to_vec(), tls12.to_vec()));
        assert_eq!(tickets.decrypt(&sealed).as_deref(), Some(&tls12[..]));
        assert_eq!(cache.get(b"id").as_deref(), Some(&tls12[..]));
        context.as_ref().unwrap().fetch_add(1, Ordering::Relaxed);
        assert_eq!(tickets.decrypt(&sealed), None);
        assert_eq!(cache.get(b"id"), None);
        // Sessions made since resume.
        let sealed = tickets.encrypt(&tls12).unwrap();
        assert_eq!(tickets.decrypt(&sealed).as_deref(), Some(&tls12[..]));
    }
}

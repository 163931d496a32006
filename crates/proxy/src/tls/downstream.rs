//! A filter chain's TLS settings (`DownstreamTlsContext`) as rustls takes them: the
//! certificates served (each replaceable in place, for secrets that rotate; several picked
//! from by the client's hello as Envoy picks), client certificates asked for and checked
//! (see `validation.rs`), resumption, and the TLS 1.2 suite picked as Envoy picks it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig, SignatureScheme, SupportedCipherSuite};
use tokio::net::TcpStream;
use wasmproxy_config::model::{CLUSTER_OCSP_STAPLE, DownstreamTls, OcspStaplePolicy, TlsCertificate, TlsVersion};

use crate::tls::certificate::{CertificateDetails, CertificateInfo, ContextCertificates, server_names};
use crate::tls::ocsp::{Staple, Stapling};
use crate::tls::pem;
use crate::tls::session::{Refused, TlsTransport};
use crate::tls::tickets::{SessionCache, SessionLifetimes, TicketKeyRing, Tickets};
use crate::tls::validation::ClientChecks;

/// The most sessions a chain's cache keeps (BoringSSL's default).
const SESSION_CACHE_ENTRIES: usize = 20 * 1024;

/// A filter chain's TLS, ready for handshakes.
#[derive(Debug)]
pub struct ServerTls {
    /// What each certificate is served with, in the order configured (all sharing one
    /// ticket key and session cache).
    served: Vec<Offer>,
    /// The TLS 1.2 cipher suites, in groups of equal preference, best first (none when
    /// TLS 1.2 is not spoken or the client's preference rules).
    preference: Vec<Vec<SupportedCipherSuite>>,
    /// How client certificates are checked, if they are asked for.
    client_checks: Option<Arc<ClientChecks>>,
    /// `ocsp_staple_policy`.
    ocsp_policy: OcspStaplePolicy,
}

/// A certificate, with rustls's settings for it: all the chain's cipher suites (rustls
/// taking the client's order), and, when there is a TLS 1.2 suite to choose, the same with
/// each TLS 1.2 suite alone (see [`ServerTls::settings_for`]).
#[derive(Debug)]
struct Offer {
    /// The settings with every suite.
    config: Arc<ServerConfig>,
    /// The settings with each TLS 1.2 suite alone (and TLS 1.3's).
    by_suite: Vec<(CipherSuite, Arc<ServerConfig>)>,
    /// The certificate.
    certificate: Arc<ServedCertificate>,
}

impl ServerTls {
    /// The handshake on an accepted connection, and what the certificate served says (for
    /// `connection.*_local_certificate`). With several certificates, the client's hello
    /// picks one as Envoy picks it (see [`ServerTls::pick`]); with TLS 1.2 suites to choose
    /// from, it picks the suite too (see [`ServerTls::settings_for`]). What is done about
    /// OCSP is told to `stapled` before the handshake goes on (or is refused for it).
    pub async fn accept(
        &self,
        tcp: TcpStream,
        stapled: impl FnOnce(Stapling),
    ) -> Result<(TlsTransport, Arc<CertificateInfo>), Refused> {
        let now = unix_now();
        let decide = |offer: &Offer, asks_ocsp: bool| {
            let stapling = offer.certificate.stapling(self.ocsp_policy, asks_ocsp, now);
            stapled(stapling);
            stapling != Stapling::Refused
        };
        if let [offer] = self.served.as_slice()
            && offer.by_suite.is_empty()
        {
            let session = TlsTransport::accept(tcp, |asks| decide(offer, asks).then(|| offer.config.clone())).await?;
            return Ok((session, offer.certificate.local()));
        }
        TlsTransport::accept_choosing(tcp, |hello, asks_ocsp| {
            let offer = match self.served.as_slice() {
                [one] => one,
                all => &all[self.pick(hello.server_name(), hello.signature_schemes(), asks_ocsp, now)],
            };
            let settings = self.settings_for(offer, hello.cipher_suites());
            decide(offer, asks_ocsp).then(|| (settings, offer.certificate.local()))
        })
        .await
    }

    /// The settings for a client offering the suites `offered`. Should TLS 1.2 be agreed,
    /// the suite is the one BoringSSL picks for Envoy (which prefers its own order): in the
    /// first group holding a suite the client offers and the certificate's key signs for,
    /// the one the client lists first. rustls only knows one order or the other, so the
    /// settings are those with that suite alone.
    fn settings_for(&self, offer: &Offer, offered: &[CipherSuite]) -> Arc<ServerConfig> {
        let signs = offer.certificate.signature_algorithm();
        for group in &self.preference {
            let in_group = |wanted: &&CipherSuite| {
                group.iter().any(|s| s.suite() == **wanted && s.usable_for_signature_algorithm(signs))
            };
            if let Some(chosen) = offered.iter().find(in_group) {
                let alone = offer.by_suite.iter().find(|(suite, _)| suite == chosen);
                return alone.map_or_else(|| offer.config.clone(), |(_, config)| config.clone());
            }
        }
        offer.config.clone()
    }

    /// The certificate for a client that sent `server_name`, can verify `schemes` and
    /// does or does not ask for an OCSP staple (at `now`): among those naming the server
    /// exactly, else by a wildcard, else all of them, the first ECDSA one the client can
    /// verify and the OCSP policy allows, else the first such one, else the first.
    fn pick(&self, server_name: Option<&str>, schemes: &[SignatureScheme], asks_ocsp: bool, now: i64) -> usize {
        let all: Vec<usize> = (0..self.served.len()).collect();
        let naming = |exact: bool| -> Vec<usize> {
            let Some(name) = server_name else { return Vec::new() };
            all.iter().copied().filter(|i| self.served[*i].certificate.names(name, exact)).collect()
        };
        let exact = naming(true);
        let candidates = if !exact.is_empty() { exact } else { naming(false) };
        let candidates = if candidates.is_empty() { all } else { candidates };
        let usable = |i: &&usize| {
            let certificate = &self.served[**i].certificate;
            certificate.usable(schemes) && certificate.stapling(self.ocsp_policy, asks_ocsp, now) != Stapling::Refused
        };
        let ecdsa = |i: &&usize| self.served[**i].certificate.is_ecdsa();
        candidates
            .iter()
            .find(|i| usable(i) && ecdsa(i))
            .or_else(|| candidates.iter().find(usable))
            .map_or(candidates[0], |i| *i)
    }
}

impl ContextCertificates for ServerTls {
    fn ca_certificate(&self) -> Option<CertificateDetails> {
        self.client_checks.as_ref().and_then(|c| c.ca())
    }

    fn certificate_chain(&self) -> Vec<CertificateDetails> {
        self.served.iter().filter_map(|offer| offer.certificate.details()).collect()
    }
}

/// A chain's certificate and key, replaced in place when its secret changes: handshakes
/// from then on get the new one, connections already open keep theirs.
#[derive(Debug)]
pub struct ServedCertificate {
    served: RwLock<Served>,
    /// The strictest OCSP staple policy of the listeners serving it, a replacement is held
    /// to (none while only clusters present it).
    policy: RwLock<Option<OcspStaplePolicy>>,
    /// A cluster presents it as its client certificate: a replacement may not have an
    /// OCSP staple.
    presented_by_cluster: AtomicBool,
}

/// A certificate and key as served, and what they say.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// The names it serves: its DNS names, else its subject's common name.
    names: Vec<String>,
    /// For `connection.*_local_certificate`.
    info: Arc<CertificateInfo>,
    /// For `/certs`.
    details: Option<CertificateDetails>,
    /// How many times the certificate was replaced.
    generation: u64,
    /// Its OCSP response, if it has one.
    staple: Staple,
}

impl ServedCertificate {
    /// Reads and checks a certificate and its key (`tls_certificates[position]`).
    pub fn load(certificate: &TlsCertificate, position: usize) -> Result<ServedCertificate, String> {
        let served = RwLock::new(ServedCertificate::read(certificate, position)?);
        Ok(ServedCertificate { served, policy: RwLock::new(None), presented_by_cluster: AtomicBool::new(false) })
    }

    /// Serves `certificate` from now on, once read and checked (else the current one stays).
    pub fn replace(&self, certificate: &TlsCertificate) -> Result<(), String> {
        let mut read = ServedCertificate::read(certificate, 0)?;
        if let Some(policy) = *self.policy.read().unwrap_or_else(|e| e.into_inner()) {
            read.staple.required(policy).map_err(|e| format!("tls_certificates[0]: {e}"))?;
        }
        if self.presented_by_cluster.load(Ordering::Relaxed) && read.staple.stapled.is_some() {
            return Err(format!("tls_certificates[0].ocsp_staple: {CLUSTER_OCSP_STAPLE}"));
        }
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        read.generation = served.generation + 1;
        *served = read;
        Ok(())
    }

    /// How many times the certificate was replaced (a cluster resumes no session made
    /// with an earlier one).
    pub fn generation(&self) -> u64 {
        self.served().generation
    }

    /// The certificate and key served now.
    pub fn key(&self) -> Arc<CertifiedKey> {
        self.served().key.clone()
    }

    /// What the certificate served now says.
    pub fn local(&self) -> Arc<CertificateInfo> {
        self.served().info.clone()
    }

    /// Checks that a listener whose OCSP staple policy is `policy` may serve it, and holds
    /// replacements to that from now on (Envoy's words if not).
    fn served_under(&self, policy: OcspStaplePolicy) -> Result<(), &'static str> {
        self.served().staple.required(policy)?;
        let mut strictest = self.policy.write().unwrap_or_else(|e| e.into_inner());
        let stricter = |p: OcspStaplePolicy| p == OcspStaplePolicy::MustStaple;
        if strictest.is_none_or(|current| !stricter(current) && stricter(policy)) {
            *strictest = Some(policy);
        }
        Ok(())
    }

    /// Checks that a cluster may present it as its client certificate (it has no OCSP
    /// staple), and holds replacements to that from now on.
    pub fn presented_by_cluster(&self) -> Result<(), String> {
        if self.served().staple.stapled.is_some() {
            return Err(format!("tls_certificates[0].ocsp_staple: {CLUSTER_OCSP_STAPLE}"));
        }
        self.presented_by_cluster.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// What a handshake does about OCSP under `policy` at `now`, for a client that does
    /// or does not ask for a staple.
    fn stapling(&self, policy: OcspStaplePolicy, asks_ocsp: bool, now: i64) -> Stapling {
        self.served().staple.decide(policy, asks_ocsp, now)
    }

    /// What `/certs` shows of the certificate served now.
    pub fn details(&self) -> Option<CertificateDetails> {
        self.served().details.clone()
    }

    /// Whether it names `server_name`: `exact`ly, or by a wildcard.
    fn names(&self, server_name: &str, exact: bool) -> bool {
        self.served().names.iter().any(|n| match exact {
            true => n.eq_ignore_ascii_case(server_name),
            false => n.starts_with("*.") && crate::tls::certificate::dns_name_covers(n, server_name),
        })
    }

    /// Whether a client that verifies `schemes` can take its signature.
    fn usable(&self, schemes: &[SignatureScheme]) -> bool {
        self.served().key.key.choose_scheme(schemes).is_some()
    }

    /// Whether its key is an ECDSA key.
    fn is_ecdsa(&self) -> bool {
        self.signature_algorithm() == rustls::SignatureAlgorithm::ECDSA
    }

    /// What its key signs with.
    fn signature_algorithm(&self) -> rustls::SignatureAlgorithm {
        self.served().key.key.algorithm()
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.served.read().unwrap_or_else(|e| e.into_inner())
    }

    fn read(certificate: &TlsCertificate, position: usize) -> Result<Served, String> {
        let key = pem::certified_key(certificate, &pem::provider(), position)?;
        let info = Arc::new(CertificateInfo::leaf(&key));
        let details = key.cert.first().and_then(|leaf| pem::details(&certificate.certificate_chain, leaf));
        let names = key.cert.first().map(|leaf| server_names(leaf)).unwrap_or_default();
        let field = format!("tls_certificates[{position}].ocsp_staple");
        let response = certificate.ocsp_staple.as_ref().map(|source| pem::read(source, &field)).transpose()?;
        let staple = Staple::new(&key, response).map_err(|e| format!("{field}: {e}"))?;
        let details = details.map(|d| CertificateDetails { ocsp: staple.validity(), ..d });
        Ok(Served { key, names, info, details, generation: 0, staple })
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.served();
        Some(served.staple.key_at(&served.key, unix_now()))
    }
}

/// The TLS settings of a filter chain as rustls takes them: the `certificates` served
/// (one at least), its versions, ALPN protocols, client certificate checks, resumption,
/// and its TLS 1.2 cipher suites in Envoy's order of preference; tickets are sealed with
/// `ticket_keys` (none: a random key of the chain's own); client certificates are asked
/// for and checked by `client_checks`, if given. An error names the field at fault.
pub fn server_config(
    tls: &DownstreamTls,
    certificates: Vec<Arc<ServedCertificate>>,
    ticket_keys: Option<Arc<TicketKeyRing>>,
    client_checks: Option<Arc<ClientChecks>>,
) -> Result<ServerTls, String> {
    if certificates.is_empty() {
        return Err("tls_certificates: a certificate is required".into());
    }
    for (position, certificate) in certificates.iter().enumerate() {
        let served = certificate.served_under(tls.ocsp_staple_policy);
        served.map_err(|e| format!("tls_certificates[{position}]: {e}"))?;
    }
    let provider = pem::server_provider_with(&tls.algorithms);
    // Resumption as Envoy (BoringSSL) has it: tickets under the chain's keys or a key of
    // its own (every worker shares them), and a session cache of BoringSSL's size.
    let lifetimes = SessionLifetimes::new(tls.session_timeout_secs);
    // Sessions are bound to the client certificate checks in force when they were made.
    let context = client_checks.as_ref().map(|checks| checks.generation());
    let ticketer: Option<Arc<dyn ProducesTickets>> = match tls.stateless_resumption {
        true => Some(Arc::new(Tickets::new(ticket_keys, lifetimes, context.clone())?)),
        false => None,
    };
    let sessions: Arc<dyn StoresServerSessions> = match tls.stateful_resumption {
        true => Arc::new(SessionCache::new(SESSION_CACHE_ENTRIES, lifetimes, context)),
        false => Arc::new(rustls::server::NoServerSessionStorage {}),
    };
    let settings = |provider: Arc<CryptoProvider>, certificate: &Arc<ServedCertificate>| {
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&pem::versions(tls.versions))
            .map_err(|e| format!("tls_params: {e}"))?;
        let builder = match &client_checks {
            None => builder.with_no_client_auth(),
            Some(checks) => builder.with_client_cert_verifier(checks.clone()),
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        config.alpn_protocols = tls.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        if let Some(ticketer) = &ticketer {
            config.ticketer = ticketer.clone();
        }
        config.session_storage = sessions.clone();
        Ok::<_, String>(Arc::new(config))
    };
    let preference = match tls.versions.0 {
        TlsVersion::Tls12 if !tls.prefer_client_ciphers => pem::tls12_preference(&tls.algorithms, &provider),
        _ => Vec::new(),
    };
    // A choice to make only with two suites or more.
    let choosing = preference.iter().map(Vec::len).sum::<usize>() > 1;
    let mut served = Vec::with_capacity(certificates.len());
    for certificate in certificates {
        let config = settings(provider.clone(), &certificate)?;
        let mut by_suite = Vec::new();
        for suite in preference.iter().flatten().filter(|_| choosing) {
            by_suite.push((suite.suite(), settings(pem::provider_with_tls12_suite(&provider, *suite), &certificate)?));
        }
        served.push(Offer { config, by_suite, certificate });
    }
    Ok(ServerTls { served, preference, client_checks, ocsp_policy: tls.ocsp_staple_policy })
}

/// The time, in seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use wasmproxy_config::model::{CertificateSource, DataSource, TlsAlgorithms, TlsVersion};

    use super::*;

    /// A self-signed certificate for `names`, with a key of `algorithm`.
    fn certificate(names: &[&str], algorithm: &'static rcgen::SignatureAlgorithm) -> Arc<ServedCertificate> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "cn.example");
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = TlsCertificate {
            certificate_chain: DataSource::Inline(cert.pem().into_bytes()),
            private_key: DataSource::Inline(key.serialize_pem().into_bytes()),
            ocsp_staple: None,
        };
        Arc::new(ServedCertificate::load(&pem, 0).unwrap())
    }

    fn chain(certificates: Vec<Arc<ServedCertificate>>) -> ServerTls {
        let tls = DownstreamTls {
            certificates: vec![CertificateSource::Inline(TlsCertificate {
                certificate_chain: DataSource::Inline(Vec::new()),
                private_key: DataSource::Inline(Vec::new()),
                ocsp_staple: None,
            })],
            alpn_protocols: Vec::new(),
            versions: (TlsVersion::Tls12, TlsVersion::Tls13),
            algorithms: TlsAlgorithms::default(),
            validation: None,
            require_client_certificate: false,
            stateless_resumption: true,
            stateful_resumption: true,
            session_ticket_keys: Vec::new(),
            session_ticket_keys_sds: None,
            session_timeout_secs: None,
            prefer_client_ciphers: false,
            ocsp_staple_policy: OcspStaplePolicy::Lenient,
        };
        server_config(&tls, certificates, None, None).unwrap()
    }

    #[test]
    fn a_tls12_suite_is_picked_in_envoys_order_and_the_client_picks_within_a_group() {
        use CipherSuite::*;
        let tls = chain(vec![certificate(&["a.example"], &rcgen::PKCS_ECDSA_P256_SHA256)]);
        let picked = |offered: &[CipherSuite]| {
            let config = tls.settings_for(&tls.served[0], offered);
            let tls12: Vec<CipherSuite> = config
                .crypto_provider()
                .cipher_suites
                .iter()
                .filter(|s| s.tls13().is_none())
                .map(|s| s.suite())
                .collect();
            if tls12.len() == 1 { Some(tls12[0]) } else { None }
        };
        let (aes128, aes256, chacha) = (
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        );
        // Envoy's groups: [AES-128 | ChaCha20], then AES-256; RSA suites never for this key.
        assert_eq!(picked(&[aes256, chacha, aes128]), Some(chacha));
        assert_eq!(picked(&[aes256, aes128, chacha]), Some(aes128));
        assert_eq!(picked(&[TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, aes256]), Some(aes256));
        assert_eq!(picked(&[TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]), None, "nothing in common: every suite");
    }

    #[test]
    fn the_client_hello_picks_the_certificate_as_envoy_does() {
        let ecdsa = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ed25519 = &rcgen::PKCS_ED25519;
        let tls = chain(vec![
            certificate(&["a.example"], ed25519),
            certificate(&["*.w.example"], ecdsa),
            certificate(&["a.example"], ecdsa),
            certificate(&[], ed25519),
        ]);
        let all = [SignatureScheme::ED25519, SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::RSA_PSS_SHA256];
        let no_ecdsa = [SignatureScheme::ED25519];
        // An exact name first, ECDSA preferred when the client takes it.
        assert_eq!(tls.pick(Some("a.example"), &all, false, 0), 2);
        assert_eq!(tls.pick(Some("A.EXAMPLE"), &no_ecdsa, false, 0), 0);
        // Else a wildcard; else every certificate.
        assert_eq!(tls.pick(Some("x.w.example"), &all, false, 0), 1);
        assert_eq!(tls.pick(Some("x.y.w.example"), &no_ecdsa, false, 0), 0);
        assert_eq!(tls.pick(None, &all, false, 0), 1);
        // The subject's common name, for a certificate without DNS names.
        assert_eq!(tls.pick(Some("cn.example"), &all, false, 0), 3);
        // Nothing the client can verify: the first candidate.
        assert_eq!(tls.pick(Some("a.example"), &[SignatureScheme::RSA_PSS_SHA256], false, 0), 0);
        assert_eq!(tls.certificate_chain().len(), 4, "/certs lists each");
    }
}

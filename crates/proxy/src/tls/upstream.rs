//! A cluster's TLS settings (`UpstreamTlsContext`) as rustls takes them, and the check of
//! the upstream's certificate as Envoy makes it: none without a `validation_context`;
//! with one, the chain must lead to `trusted_ca` and, if SAN matchers are given, one of
//! the certificate's subject alternative names must match one of them. The name the
//! proxy connected to is not checked (Envoy does not, unless told to).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, NamedGroup, SignatureScheme};
use tokio::net::TcpStream;
use wasmproxy_config::model::{
    CertificateSource, CertificateValidation, SdsSecret, UpstreamHttpOptions, UpstreamTls, ValidationSource,
};

use crate::tls::certificate::{CertificateDetails, ContextCertificates, SanMatchers, TlsInfo};
use crate::tls::downstream::ServedCertificate;
use crate::tls::pem;
use crate::tls::session::{HandshakeError, TlsTransport};
use crate::tls::validation::{ChecksPeers, ServedValidation, merged};

/// A cluster's TLS, ready for handshakes.
#[derive(Debug)]
pub struct UpstreamTlsConfig {
    /// For HTTP: the configured ALPN protocols, else the cluster's protocol.
    /// For HTTP, by what ALPN offers: HTTP/1.1, HTTP/2, both.
    http: [Arc<ClientConfig>; 3],
    /// For the TCP proxy: the configured ALPN protocols only.
    raw: Arc<ClientConfig>,
    /// `sni`.
    sni: Option<ServerName<'static>>,
    /// `auto_sni` and `auto_san_validation`.
    auto: (bool, bool),
    /// The check of the upstream's certificate, for connections whose host it checks.
    verifier: Arc<EnvoyVerifier>,
    /// The client certificate, if any (replaced in place when its secret changes).
    client_certificate: Option<Arc<ServedCertificate>>,
}

impl ContextCertificates for UpstreamTlsConfig {
    fn ca_certificate(&self) -> Option<CertificateDetails> {
        self.verifier.checks.check().ca.clone()
    }

    fn certificate_chain(&self) -> Vec<CertificateDetails> {
        self.client_certificate.iter().filter_map(|c| c.details()).collect()
    }
}

/// Where a cluster's secrets come from: the server's secrets, or none at all.
pub trait ClusterSecrets {
    /// The client certificate `source` gives.
    fn certificate(&mut self, source: &CertificateSource) -> Result<Arc<ServedCertificate>, String>;
    /// The validation context secret `sds` names.
    fn validation(&mut self, sds: &SdsSecret) -> Result<Arc<ServedValidation>, String>;
}

/// No secrets: certificates given inline only (a cluster built apart from the
/// configuration's: the xDS control plane's, or one fetching a module by URL).
pub struct InlineOnly(pub &'static str);

impl ClusterSecrets for InlineOnly {
    fn certificate(&mut self, source: &CertificateSource) -> Result<Arc<ServedCertificate>, String> {
        match source {
            CertificateSource::Inline(certificate) => ServedCertificate::load(certificate, 0).map(Arc::new),
            CertificateSource::Sds(sds) => Err(self.refusal(sds)),
        }
    }

    fn validation(&mut self, sds: &SdsSecret) -> Result<Arc<ServedValidation>, String> {
        Err(self.refusal(sds))
    }
}

impl InlineOnly {
    fn refusal(&self, sds: &SdsSecret) -> String {
        format!("secret {:?}: secrets are not supported by wasmproxy for {}", sds.name, self.0)
    }
}

/// What ALPN offers on an HTTP connection (unless `alpn_protocols` says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    Http2,
    /// `h2`, `http/1.1`: the upstream chooses.
    Either,
}

impl UpstreamTlsConfig {
    /// Reads and checks the settings (client certificate, CA, from `secrets` where a
    /// secret gives them); HTTP connections offer by ALPN the protocol they want (when
    /// `alpn_protocols` names none); `options` may take each connection's server name from
    /// its first request. An error names the field.
    pub fn new(
        tls: &UpstreamTls,
        options: &UpstreamHttpOptions,
        secrets: &mut dyn ClusterSecrets,
    ) -> Result<UpstreamTlsConfig, String> {
        let provider = pem::provider_with(&tls.algorithms);
        let checks = match &tls.validation {
            None => UpstreamChecks::fixed(None, provider.clone())?,
            Some(ValidationSource::Inline(validation)) => UpstreamChecks::fixed(Some(validation), provider.clone())?,
            Some(ValidationSource::Sds { secret, default }) => {
                let field = match default {
                    Some(_) => "combined_validation_context",
                    None => "validation_context_sds_secret_config",
                };
                UpstreamChecks::from_secret(secrets.validation(secret)?, default.as_ref(), provider.clone())
                    .map_err(|e| format!("{field}: secret {:?}: {e}", secret.name))?
            }
        };
        let verifier = Arc::new(EnvoyVerifier { checks, host: None, provider: provider.clone() });
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&pem::versions(tls.versions))
            .map_err(|e| format!("tls_params: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let client_certificate = tls.certificate.as_ref().map(|c| secrets.certificate(c)).transpose()?;
        if let Some(certificate) = &client_certificate {
            certificate.presented_by_cluster()?;
        }
        let mut config = match &client_certificate {
            Some(certificate) => builder.with_client_cert_resolver(Arc::new(ClientCertificate(certificate.clone()))),
            None => builder.with_no_client_auth(),
        };
        let sessions = Sessions {
            certificate: client_certificate.clone(),
            checks: verifier.checks.clone(),
            made: Mutex::default(),
        };
        config.resumption = rustls::client::Resumption::store(Arc::new(sessions));
        // SNI goes with a DNS name (`sni`, or a request's host), never with an address.
        config.enable_sni = true;
        let configured: Vec<Vec<u8>> = tls.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        let offering = |protocols: Vec<Vec<u8>>| {
            let mut http = config.clone();
            http.alpn_protocols = if configured.is_empty() { protocols } else { configured.clone() };
            Arc::new(http)
        };
        let http = [
            offering(vec![b"http/1.1".to_vec()]),
            offering(vec![b"h2".to_vec()]),
            offering(vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
        ];
        config.alpn_protocols = configured.clone();
        let sni = match &tls.sni {
            Some(name) => Some(
                ServerName::try_from(name.clone()).map_err(|e| format!("sni: {name:?} is not a server name: {e}"))?,
            ),
            None => None,
        };
        Ok(UpstreamTlsConfig {
            http,
            raw: Arc::new(config),
            sni,
            auto: (options.auto_sni, options.auto_san_validation),
            verifier,
            client_certificate,
        })
    }

    /// Whether a connection's server name comes from its first request's host
    /// (`auto_sni` or `auto_san_validation`): connections are then kept per host.
    pub fn per_host(&self) -> bool {
        self.auto.0 || self.auto.1
    }

    /// The handshake on a new connection to `endpoint`, for HTTP (for a request to `host`,
    /// when [`UpstreamTlsConfig::per_host`]) or for the TCP proxy.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        endpoint: SocketAddr,
        http: Option<Alpn>,
        host: Option<&str>,
    ) -> Result<TlsTransport, HandshakeError> {
        let host = host.and_then(|h| ServerName::try_from(h.to_string()).ok());
        let auto_sni = host.clone().filter(|_| self.auto.0);
        // Without `sni`, the endpoint's address names it: rustls sends no SNI for an address.
        let name = auto_sni.or_else(|| self.sni.clone()).unwrap_or_else(|| ServerName::IpAddress(endpoint.ip().into()));
        let mut config = match http {
            Some(alpn) => self.http[alpn as usize].clone(),
            None => self.raw.clone(),
        };
        if let Some(host) = host.filter(|_| self.auto.1) {
            // The host's name replaces the SAN matchers, as Envoy's override list does.
            let mut checking = (*config).clone();
            let verifier = self.verifier.for_host(&host.to_str());
            checking.dangerous().set_certificate_verifier(Arc::new(verifier));
            config = Arc::new(checking);
        }
        TlsTransport::connect(tcp, config, name).await
    }

    /// What a handshake made with these settings settled, for the `upstream.*` properties
    /// (the local certificate is the configured one as served now, as BoringSSL reports
    /// it).
    pub fn info(&self, session: &TlsTransport) -> Arc<TlsInfo> {
        Arc::new(TlsInfo::new(session, self.client_certificate.as_ref().map(|c| c.local())))
    }
}

/// The client certificate, sent (as served now) whenever the upstream asks for one.
#[derive(Debug)]
struct ClientCertificate(Arc<ServedCertificate>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The sessions a cluster resumes (in rustls's memory cache, of rustls's default size),
/// forgotten when its client certificate or its validation context changes: Envoy makes a
/// new TLS context then, whose session cache starts empty, so that a session is not
/// resumed past a certificate or a CA it was not made with.
#[derive(Debug)]
struct Sessions {
    certificate: Option<Arc<ServedCertificate>>,
    checks: Arc<UpstreamChecks>,
    /// The cache in use, once there is one.
    made: Mutex<Option<MadeUnder>>,
}

/// A session cache, and the certificate's and the checks' generations it was made under.
#[derive(Debug)]
struct MadeUnder {
    generations: (u64, u64),
    cache: Arc<ClientSessionMemoryCache>,
}

/// How many sessions a cluster keeps (rustls's default).
const CLIENT_SESSIONS: usize = 256;

impl Sessions {
    /// The cache for the certificate and checks in force now.
    fn cache(&self) -> Arc<ClientSessionMemoryCache> {
        let now =
            (self.certificate.as_ref().map_or(0, |c| c.generation()), self.checks.generation.load(Ordering::Relaxed));
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        match &*made {
            Some(under) if under.generations == now => under.cache.clone(),
            _ => {
                let cache = Arc::new(ClientSessionMemoryCache::new(CLIENT_SESSIONS));
                *made = Some(MadeUnder { generations: now, cache: cache.clone() });
                cache
            }
        }
    }
}

impl ClientSessionStore for Sessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.cache().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.cache().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.cache().take_tls13_ticket(server_name)
    }
}

/// Checks an upstream's certificate as Envoy's default validator does.
#[derive(Debug)]
struct EnvoyVerifier {
    /// The cluster's checks.
    checks: Arc<UpstreamChecks>,
    /// `auto_san_validation`: the certificate must name the request's host, in place of the
    /// SAN matchers, even without `trusted_ca`.
    host: Option<SanMatchers>,
    provider: Arc<CryptoProvider>,
}

impl EnvoyVerifier {
    /// `auto_san_validation`: the same chain check, then the certificate must name `host`
    /// (a DNS name, or a wildcard covering it).
    fn for_host(&self, host: &str) -> EnvoyVerifier {
        EnvoyVerifier {
            checks: self.checks.clone(),
            host: Some(SanMatchers::host(host)),
            provider: self.provider.clone(),
        }
    }
}

/// A cluster's check of its upstreams' certificates, rebuilt in place when the secret its
/// validation context comes from changes.
#[derive(Debug)]
struct UpstreamChecks {
    /// What the secret's context is merged into (`default_validation_context`).
    base: Option<CertificateValidation>,
    /// The secret, if the context comes from one (held so that it stays served while the
    /// cluster is).
    _secret: Option<Arc<ServedValidation>>,
    provider: Arc<CryptoProvider>,
    /// The check in force.
    current: RwLock<Arc<ChainCheck>>,
    /// How many times the check was replaced.
    generation: AtomicU64,
}

impl UpstreamChecks {
    /// Checks against an inline `validation_context` (none: nothing is checked).
    fn fixed(
        validation: Option<&CertificateValidation>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<UpstreamChecks>, String> {
        let current = RwLock::new(Arc::new(ChainCheck::new(validation, &provider)?));
        Ok(Arc::new(UpstreamChecks { base: None, _secret: None, provider, current, generation: AtomicU64::new(0) }))
    }

    /// Checks against the context of `secret`, merged into `default` if given.
    fn from_secret(
        secret: Arc<ServedValidation>,
        default: Option<&CertificateValidation>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<UpstreamChecks>, String> {
        secret.subscribe(|context| {
            let current = RwLock::new(Arc::new(ChainCheck::new(Some(&merged(default, context)), &provider)?));
            Ok(UpstreamChecks {
                base: default.cloned(),
                _secret: Some(secret.clone()),
                provider,
                current,
                generation: AtomicU64::new(0),
            })
        })
    }

    fn check(&self) -> Arc<ChainCheck> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ChecksPeers for UpstreamChecks {
    fn rebuild(&self, secret: &CertificateValidation) -> Result<Box<dyn FnOnce() + '_>, String> {
        let check = ChainCheck::new(Some(&merged(self.base.as_ref(), secret)), &self.provider)?;
        Ok(Box::new(move || {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(check);
            self.generation.fetch_add(1, Ordering::Relaxed);
        }))
    }
}

/// One validation context's check.
#[derive(Debug)]
struct ChainCheck {
    /// webpki's check of the chain against `trusted_ca` and the CRLs (none: the chain is
    /// not checked). Its check of the name connected to is not Envoy's and is left out.
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// The subject alternative names one of which it must have.
    san_matchers: SanMatchers,
    /// What `/certs` shows of its CA.
    ca: Option<CertificateDetails>,
}

impl ChainCheck {
    fn new(validation: Option<&CertificateValidation>, provider: &Arc<CryptoProvider>) -> Result<ChainCheck, String> {
        let Some(validation) = validation else {
            return Ok(ChainCheck { chain: None, san_matchers: SanMatchers::new(&[])?, ca: None });
        };
        let san_matchers = SanMatchers::new(&validation.subject_alt_names)?;
        let (roots, ca) = pem::trust_anchors(validation.trusted_ca.as_ref())?;
        let builder = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let builder = match &validation.crl {
            None => builder,
            Some(crl) => {
                // A certificate whose issuer has no CRL here passes (see docs/CONFIG.md).
                let builder = builder.with_crls(pem::crls(crl)?).allow_unknown_revocation_status();
                if validation.only_verify_leaf_cert_crl { builder.only_check_end_entity_revocation() } else { builder }
            }
        };
        let chain = builder.build().map_err(|e| format!("validation_context: {e}"))?;
        Ok(ChainCheck { chain: Some(chain), san_matchers, ca })
    }
}

impl ServerCertVerifier for EnvoyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let check = self.checks.check();
        match &check.chain {
            // webpki checks the name last: a name it finds wrong means the chain passed.
            Some(chain) => match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(_)
                | Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
                )) => {}
                Err(e) => return Err(e),
            },
            None if self.host.is_none() => return Ok(ServerCertVerified::assertion()),
            None => {}
        }
        self.host.as_ref().unwrap_or(&check.san_matchers).check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

//! A cluster's TLS settings (`UpstreamTlsContext`) as rustls takes them, and the check of
//! the upstream's certificate as Envoy makes it: none without a `validation_context`;
//! with one, the chain must lead to `trusted_ca` and, if SAN matchers are given, one of
//! the certificate's subject alternative names must match one of them. The name the
//! proxy connected to is not checked (Envoy does not, unless told to).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use wasmproxy_config::model::{CertificateValidation, UpstreamHttpOptions, UpstreamTls};

use crate::tls::certificate::{CertificateDetails, CertificateInfo, ContextCertificates, SanMatchers, TlsInfo};
use crate::tls::pem;
use crate::tls::session::{HandshakeError, TlsTransport};

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
    /// What the client certificate says (`upstream.*_local_certificate`).
    client_certificate: Option<Arc<CertificateInfo>>,
    /// What `/certs` shows of the CA and of the client certificate.
    shown: (Option<CertificateDetails>, Option<CertificateDetails>),
}

impl ContextCertificates for UpstreamTlsConfig {
    fn ca_certificate(&self) -> Option<CertificateDetails> {
        self.shown.0.clone()
    }

    fn certificate_chain(&self) -> Vec<CertificateDetails> {
        self.shown.1.iter().cloned().collect()
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
    /// Reads and checks the settings (client certificate, CA); HTTP connections offer by
    /// ALPN the protocol they want (when `alpn_protocols` names none); `options` may take
    /// each connection's server name from its first request. An error names the field.
    pub fn new(tls: &UpstreamTls, options: &UpstreamHttpOptions) -> Result<UpstreamTlsConfig, String> {
        let provider = pem::provider_with(&tls.algorithms);
        let (verifier, ca) = EnvoyVerifier::new(tls.validation.as_ref(), provider.clone())?;
        let verifier = Arc::new(verifier);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&pem::versions(tls.versions))
            .map_err(|e| format!("tls_params: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let certified = tls.certificate.as_ref().map(|c| pem::certified_key(c, &provider, 0)).transpose()?;
        let client_certificate = certified.as_ref().map(|c| Arc::new(CertificateInfo::leaf(c)));
        let shown_client = tls
            .certificate
            .as_ref()
            .zip(certified.as_ref().and_then(|c| c.cert.first()))
            .and_then(|(configured, leaf)| pem::details(&configured.certificate_chain, leaf));
        let mut config = match certified {
            Some(certified) => builder.with_client_cert_resolver(Arc::new(ClientCertificate(certified))),
            None => builder.with_no_client_auth(),
        };
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
            shown: (ca, shown_client),
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
    /// (the local certificate is the configured one, as BoringSSL reports it).
    pub fn info(&self, session: &TlsTransport) -> Arc<TlsInfo> {
        Arc::new(TlsInfo::new(session, self.client_certificate.clone()))
    }
}

/// The client certificate, sent whenever the upstream asks for one.
#[derive(Debug)]
struct ClientCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks an upstream's certificate as Envoy's default validator does.
#[derive(Debug)]
struct EnvoyVerifier {
    /// webpki's check of the chain against `trusted_ca` and the CRLs (none: the chain is
    /// not checked). Its check of the name connected to is not Envoy's and is left out.
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// The subject alternative names one of which it must have.
    san_matchers: SanMatchers,
    /// Whether the names are checked without `trusted_ca` too (`auto_san_validation`).
    names_always: bool,
    provider: Arc<CryptoProvider>,
}

impl EnvoyVerifier {
    /// The verifier, and what `/certs` shows of its CA.
    fn new(
        validation: Option<&CertificateValidation>,
        provider: Arc<CryptoProvider>,
    ) -> Result<(EnvoyVerifier, Option<CertificateDetails>), String> {
        let Some(validation) = validation else {
            let unchecked =
                EnvoyVerifier { chain: None, san_matchers: SanMatchers::new(&[])?, names_always: false, provider };
            return Ok((unchecked, None));
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
        Ok((EnvoyVerifier { chain: Some(chain), san_matchers, names_always: false, provider }, ca))
    }

    /// `auto_san_validation`: the same chain check, then the certificate must name `host`
    /// (a DNS name, or a wildcard covering it) in place of the SAN matchers, even without
    /// `trusted_ca`.
    fn for_host(&self, host: &str) -> EnvoyVerifier {
        EnvoyVerifier {
            chain: self.chain.clone(),
            san_matchers: SanMatchers::host(host),
            names_always: true,
            provider: self.provider.clone(),
        }
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
        match &self.chain {
            // webpki checks the name last: a name it finds wrong means the chain passed.
            Some(chain) => match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(_)
                | Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
                )) => {}
                Err(e) => return Err(e),
            },
            None if !self.names_always => return Ok(ServerCertVerified::assertion()),
            None => {}
        }
        self.san_matchers.check(end_entity)?;
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

//! A filter chain's TLS settings (`DownstreamTlsContext`) as rustls takes them: the
//! certificate served (replaceable in place, for secrets that rotate), and client
//! certificates asked for and checked as Envoy checks them (the chain must lead to
//! `trusted_ca`, one subject alternative name must match if any matcher is given; none
//! sent is refused only with `require_client_certificate`).

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use wasmproxy_config::model::{CertificateValidation, DownstreamTls, TlsCertificate};

use crate::tls::certificate::{CertificateDetails, CertificateInfo, ContextCertificates, SanMatchers};
use crate::tls::pem;

/// The most sessions a chain's cache keeps (BoringSSL's default).
const SESSION_CACHE_ENTRIES: usize = 20 * 1024;

/// A filter chain's TLS, ready for handshakes.
#[derive(Debug)]
pub struct ServerTls {
    /// rustls' settings.
    pub config: Arc<ServerConfig>,
    /// The certificate served (and what it says, for `connection.*_local_certificate`).
    pub certificate: Arc<ServedCertificate>,
    /// What `/certs` shows of the CA client certificates are checked against.
    ca: Option<CertificateDetails>,
}

impl ContextCertificates for ServerTls {
    fn ca_certificate(&self) -> Option<CertificateDetails> {
        self.ca.clone()
    }

    fn certificate_chain(&self) -> Option<CertificateDetails> {
        self.certificate.details()
    }
}

/// A chain's certificate and key, replaced in place when its secret changes: handshakes
/// from then on get the new one, connections already open keep theirs.
#[derive(Debug)]
pub struct ServedCertificate(RwLock<Served>);

/// A certificate and key as served, and what they say.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// For `connection.*_local_certificate`.
    info: Arc<CertificateInfo>,
    /// For `/certs`.
    details: Option<CertificateDetails>,
}

impl ServedCertificate {
    /// Reads and checks a certificate and its key.
    pub fn load(certificate: &TlsCertificate) -> Result<ServedCertificate, String> {
        Ok(ServedCertificate(RwLock::new(ServedCertificate::read(certificate)?)))
    }

    /// Serves `certificate` from now on, once read and checked (else the current one stays).
    pub fn replace(&self, certificate: &TlsCertificate) -> Result<(), String> {
        let read = ServedCertificate::read(certificate)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = read;
        Ok(())
    }

    /// What the certificate served now says.
    pub fn local(&self) -> Arc<CertificateInfo> {
        self.served().info.clone()
    }

    /// What `/certs` shows of the certificate served now.
    pub fn details(&self) -> Option<CertificateDetails> {
        self.served().details.clone()
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn read(certificate: &TlsCertificate) -> Result<Served, String> {
        let key = pem::certified_key(certificate, &pem::provider())?;
        let info = Arc::new(CertificateInfo::leaf(&key));
        let details = key.cert.first().and_then(|leaf| pem::details(&certificate.certificate_chain, leaf));
        Ok(Served { key, info, details })
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served().key.clone())
    }
}

/// The TLS settings of a filter chain as rustls takes them: `certificate` served, its
/// versions, ALPN protocols and client certificate checks. An error names the field at
/// fault.
pub fn server_config(tls: &DownstreamTls, certificate: Arc<ServedCertificate>) -> Result<ServerTls, String> {
    let provider = pem::provider_with(&tls.algorithms);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&pem::versions(tls.versions))
        .map_err(|e| format!("tls_params: {e}"))?;
    let (builder, ca) = match &tls.validation {
        None => (builder.with_no_client_auth(), None),
        Some(validation) => {
            let (verifier, ca) = ClientVerifier::new(validation, tls.require_client_certificate, provider)?;
            (builder.with_client_cert_verifier(Arc::new(verifier)), ca)
        }
    };
    let mut config = builder.with_cert_resolver(certificate.clone());
    config.alpn_protocols = tls.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Resumption as Envoy (BoringSSL) has it by default: tickets under a key of the
    // chain's own (every worker shares it), and a session cache of BoringSSL's size.
    if tls.stateless_resumption {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    }
    config.session_storage = match tls.stateful_resumption {
        true => rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        false => Arc::new(rustls::server::NoServerSessionStorage {}),
    };
    Ok(ServerTls { config: Arc::new(config), certificate, ca })
}

/// rustls' check of the chain (webpki), then Envoy's subject alternative name matchers.
#[derive(Debug)]
struct ClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    san_matchers: SanMatchers,
}

impl ClientVerifier {
    fn new(
        validation: &CertificateValidation,
        required: bool,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<(ClientVerifier, Option<CertificateDetails>), String> {
        let (roots, ca) = pem::trust_anchors(&validation.trusted_ca)?;
        let roots = Arc::new(roots);
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
        let builder = if required { builder } else { builder.allow_unauthenticated() };
        let builder = match &validation.crl {
            None => builder,
            Some(crl) => {
                // A certificate whose issuer has no CRL here passes (see docs/CONFIG.md).
                let builder = builder.with_crls(pem::crls(crl)?).allow_unknown_revocation_status();
                if validation.only_verify_leaf_cert_crl { builder.only_check_end_entity_revocation() } else { builder }
            }
        };
        let chain = builder.build().map_err(|e| format!("validation_context: {e}"))?;
        Ok((ClientVerifier { chain, san_matchers: SanMatchers::new(&validation.subject_alt_names)? }, ca))
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain.verify_client_cert(end_entity, intermediates, now)?;
        self.san_matchers.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

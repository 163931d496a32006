//! A filter chain's TLS settings (`DownstreamTlsContext`) as rustls takes them: the
//! certificates served (each replaceable in place, for secrets that rotate; several picked
//! from by the client's hello as Envoy picks), and client
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

use tokio::net::TcpStream;

use crate::tls::certificate::{CertificateDetails, CertificateInfo, ContextCertificates, SanMatchers, server_names};
use crate::tls::pem;
use crate::tls::session::{Refused, TlsTransport};
use crate::tls::tickets::TicketKeys;

/// The most sessions a chain's cache keeps (BoringSSL's default).
const SESSION_CACHE_ENTRIES: usize = 20 * 1024;

/// A filter chain's TLS, ready for handshakes.
#[derive(Debug)]
pub struct ServerTls {
    /// rustls' settings for each certificate (sharing one ticket key and session cache),
    /// in the order configured, with the certificate.
    served: Vec<(Arc<ServerConfig>, Arc<ServedCertificate>)>,
    /// What `/certs` shows of the CA client certificates are checked against.
    ca: Option<CertificateDetails>,
}

impl ServerTls {
    /// The handshake on an accepted connection, and what the certificate served says (for
    /// `connection.*_local_certificate`). With several certificates, the client's hello
    /// picks one as Envoy picks it: see [`ServerTls::pick`].
    pub async fn accept(&self, tcp: TcpStream) -> Result<(TlsTransport, Arc<CertificateInfo>), Refused> {
        if let [(config, certificate)] = self.served.as_slice() {
            return Ok((TlsTransport::accept(tcp, config.clone()).await?, certificate.local()));
        }
        TlsTransport::accept_choosing(tcp, |hello| {
            let (config, certificate) = &self.served[self.pick(hello.server_name(), hello.signature_schemes())];
            (config.clone(), certificate.local())
        })
        .await
    }

    /// The certificate for a client that sent `server_name` and can verify `schemes`:
    /// among those naming the server exactly, else by a wildcard, else all of them, the
    /// first ECDSA one the client can verify, else the first it can verify, else the first.
    fn pick(&self, server_name: Option<&str>, schemes: &[SignatureScheme]) -> usize {
        let all: Vec<usize> = (0..self.served.len()).collect();
        let naming = |exact: bool| -> Vec<usize> {
            let Some(name) = server_name else { return Vec::new() };
            all.iter().copied().filter(|i| self.served[*i].1.names(name, exact)).collect()
        };
        let exact = naming(true);
        let candidates = if !exact.is_empty() { exact } else { naming(false) };
        let candidates = if candidates.is_empty() { all } else { candidates };
        let usable = |i: &&usize| self.served[**i].1.usable(schemes);
        let ecdsa = |i: &&usize| self.served[**i].1.is_ecdsa();
        candidates
            .iter()
            .find(|i| usable(i) && ecdsa(i))
            .or_else(|| candidates.iter().find(usable))
            .map_or(candidates[0], |i| *i)
    }
}

impl ContextCertificates for ServerTls {
    fn ca_certificate(&self) -> Option<CertificateDetails> {
        self.ca.clone()
    }

    fn certificate_chain(&self) -> Vec<CertificateDetails> {
        self.served.iter().filter_map(|(_, c)| c.details()).collect()
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
    /// The names it serves: its DNS names, else its subject's common name.
    names: Vec<String>,
    /// For `connection.*_local_certificate`.
    info: Arc<CertificateInfo>,
    /// For `/certs`.
    details: Option<CertificateDetails>,
}

impl ServedCertificate {
    /// Reads and checks a certificate and its key (`tls_certificates[position]`).
    pub fn load(certificate: &TlsCertificate, position: usize) -> Result<ServedCertificate, String> {
        Ok(ServedCertificate(RwLock::new(ServedCertificate::read(certificate, position)?)))
    }

    /// Serves `certificate` from now on, once read and checked (else the current one stays).
    pub fn replace(&self, certificate: &TlsCertificate) -> Result<(), String> {
        let read = ServedCertificate::read(certificate, 0)?;
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
        self.served().key.key.algorithm() == rustls::SignatureAlgorithm::ECDSA
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn read(certificate: &TlsCertificate, position: usize) -> Result<Served, String> {
        let key = pem::certified_key(certificate, &pem::provider(), position)?;
        let info = Arc::new(CertificateInfo::leaf(&key));
        let details = key.cert.first().and_then(|leaf| pem::details(&certificate.certificate_chain, leaf));
        let names = key.cert.first().map(|leaf| server_names(leaf)).unwrap_or_default();
        Ok(Served { key, names, info, details })
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served().key.clone())
    }
}

/// The TLS settings of a filter chain as rustls takes them: the `certificates` served
/// (one at least), its versions, ALPN protocols and client certificate checks. An error
/// names the field at fault.
pub fn server_config(tls: &DownstreamTls, certificates: Vec<Arc<ServedCertificate>>) -> Result<ServerTls, String> {
    let Some(first) = certificates.first() else { return Err("tls_certificates: a certificate is required".into()) };
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
    let mut config = builder.with_cert_resolver(first.clone());
    config.alpn_protocols = tls.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Resumption as Envoy (BoringSSL) has it by default: tickets under a key of the
    // chain's own (every worker shares it), and a session cache of BoringSSL's size.
    if tls.stateless_resumption && tls.session_ticket_keys.is_empty() {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    } else if tls.stateless_resumption {
        config.ticketer = Arc::new(TicketKeys::new(&tls.session_ticket_keys, pem::read)?);
    }
    config.session_storage = match tls.stateful_resumption {
        true => rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        false => Arc::new(rustls::server::NoServerSessionStorage {}),
    };
    let served = certificates
        .into_iter()
        .map(|certificate| {
            let mut own = config.clone();
            own.cert_resolver = certificate.clone();
            (Arc::new(own), certificate)
        })
        .collect();
    Ok(ServerTls { served, ca })
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
        };
        Arc::new(ServedCertificate::load(&pem, 0).unwrap())
    }

    fn chain(certificates: Vec<Arc<ServedCertificate>>) -> ServerTls {
        let tls = DownstreamTls {
            certificates: vec![CertificateSource::Inline(TlsCertificate {
                certificate_chain: DataSource::Inline(Vec::new()),
                private_key: DataSource::Inline(Vec::new()),
            })],
            alpn_protocols: Vec::new(),
            versions: (TlsVersion::Tls12, TlsVersion::Tls13),
            algorithms: TlsAlgorithms::default(),
            validation: None,
            require_client_certificate: false,
            stateless_resumption: true,
            stateful_resumption: true,
            session_ticket_keys: Vec::new(),
        };
        server_config(&tls, certificates).unwrap()
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
        assert_eq!(tls.pick(Some("a.example"), &all), 2);
        assert_eq!(tls.pick(Some("A.EXAMPLE"), &no_ecdsa), 0);
        // Else a wildcard; else every certificate.
        assert_eq!(tls.pick(Some("x.w.example"), &all), 1);
        assert_eq!(tls.pick(Some("x.y.w.example"), &no_ecdsa), 0);
        assert_eq!(tls.pick(None, &all), 1);
        // The subject's common name, for a certificate without DNS names.
        assert_eq!(tls.pick(Some("cn.example"), &all), 3);
        // Nothing the client can verify: the first candidate.
        assert_eq!(tls.pick(Some("a.example"), &[SignatureScheme::RSA_PSS_SHA256]), 0);
        assert_eq!(tls.certificate_chain().len(), 4, "/certs lists each");
    }
}

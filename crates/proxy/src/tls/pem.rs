//! What both sides' TLS settings read from the configuration: PEM certificates and keys
//! from `DataSource`s, the TLS versions, the crypto provider. Errors name the field.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use wasmproxy_config::model::{DataSource, TlsCertificate, TlsVersion};

/// The crypto provider (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The bytes of a `DataSource` (`field` names it in the error).
fn read(source: &DataSource, field: &str) -> Result<Vec<u8>, String> {
    match source {
        DataSource::File(path) => {
            std::fs::read(path).map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))
        }
        DataSource::Inline(bytes) => Ok(bytes.clone()),
    }
}

/// PEM certificates (at least one).
pub fn certificates(source: &DataSource, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(source, field)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{field}: not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{field}: no PEM certificate in it"));
    }
    Ok(chain)
}

/// A certificate chain and its key (`tls_certificates[0]`), read and checked against each
/// other.
pub fn certified_key(certificate: &TlsCertificate, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let chain_field = "tls_certificates[0].certificate_chain";
    let chain = certificates(&certificate.certificate_chain, chain_field)?;
    let key_field = "tls_certificates[0].private_key";
    let key = PrivateKeyDer::from_pem_slice(&read(&certificate.private_key, key_field)?)
        .map_err(|e| format!("{key_field}: not a PEM private key: {e}"))?;
    let signing_key =
        provider.key_provider.load_private_key(key).map_err(|e| format!("{key_field}: not a usable key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!("{key_field}: does not match the certificate"));
        }
        // A certificate webpki does not read (X.509 v1, as in Envoy's TLS example) is
        // used as it is, as BoringSSL uses it.
        Err(e) => tracing::debug!("{chain_field}: key not checked against it: {e}"),
    }
    Ok(Arc::new(certified))
}

/// The CA certificates of a `trusted_ca`, as trust anchors.
pub fn trust_anchors(source: &DataSource) -> Result<rustls::RootCertStore, String> {
    let field = "validation_context.trusted_ca";
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(source, field)? {
        roots.add(cert).map_err(|e| format!("{field}: not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// rustls' versions from `min` to `max`.
pub fn versions((min, max): (TlsVersion, TlsVersion)) -> Vec<&'static rustls::SupportedProtocolVersion> {
    [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect()
}

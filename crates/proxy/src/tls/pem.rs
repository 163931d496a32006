//! What both sides' TLS settings read from the configuration: PEM certificates and keys
//! from `DataSource`s, the TLS versions, the crypto provider with the cipher suites and
//! curves asked for, and their names as Envoy (BoringSSL) names them. Errors name the field.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, NamedGroup, SupportedCipherSuite};
use wasmproxy_config::model::{DataSource, MISSING_CA, TlsAlgorithms, TlsCertificate, TlsVersion};

use crate::tls::certificate::CertificateDetails;
use crate::tls::hkdf;

/// The crypto provider: aws-lc-rs, TLS 1.3's key schedule on the HKDF of `hkdf.rs`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_provider())
}

/// rustls's aws-lc-rs provider, its TLS 1.3 suites on the HKDF of `hkdf.rs`.
fn aws_lc_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = provider.cipher_suites.into_iter().map(hkdf::with_fast_hkdf).collect();
    provider
}

/// The crypto provider with `tls_params`' cipher suites (TLS 1.2's, in that order; TLS
/// 1.3's are all kept, as in Envoy) and curves (in that order); empty lists keep rustls'.
pub fn provider_with(algorithms: &TlsAlgorithms) -> Arc<CryptoProvider> {
    let mut provider = aws_lc_provider();
    if !algorithms.cipher_suites.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        let tls13 = all.iter().filter(|s| s.tls13().is_some()).copied();
        let tls12 = algorithms
            .cipher_suites
            .iter()
            .flatten()
            .filter_map(|name| all.iter().find(|s| cipher_name(s.suite()) == name));
        provider.cipher_suites = tls13.chain(tls12.copied()).collect();
    }
    if !algorithms.ecdh_curves.is_empty() {
        let all = rustls::crypto::aws_lc_rs::ALL_KX_GROUPS;
        provider.kx_groups = algorithms
            .ecdh_curves
            .iter()
            .filter_map(|name| all.iter().find(|g| curve_name(g.name()) == name))
            .copied()
            .collect();
    }
    Arc::new(provider)
}

/// The key exchange groups of a listener not given any, as Envoy has them: X25519 with
/// ML-KEM-768, X25519, P-256 (not P-384, which rustls would also take).
const ENVOY_SERVER_CURVES: &[NamedGroup] = &[NamedGroup::X25519MLKEM768, NamedGroup::X25519, NamedGroup::secp256r1];

/// [`provider_with`] for a listener: without `ecdh_curves`, Envoy's groups.
pub fn server_provider_with(algorithms: &TlsAlgorithms) -> Arc<CryptoProvider> {
    let mut provider = Arc::unwrap_or_clone(provider_with(algorithms));
    if algorithms.ecdh_curves.is_empty() {
        provider.kx_groups.retain(|g| ENVOY_SERVER_CURVES.contains(&g.name()));
    }
    Arc::new(provider)
}

/// Envoy's TLS 1.2 cipher suites for a listener not given any, in groups of equal
/// preference, best first.
const ENVOY_SERVER_CIPHER_SUITES: &[&[&str]] = &[
    &["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"],
    &["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"],
    &["ECDHE-ECDSA-AES256-GCM-SHA384"],
    &["ECDHE-RSA-AES256-GCM-SHA384"],
];

/// A listener's TLS 1.2 cipher suites (those of `provider`), in groups of equal
/// preference, best first: `tls_params.cipher_suites`', or Envoy's.
pub fn tls12_preference(algorithms: &TlsAlgorithms, provider: &CryptoProvider) -> Vec<Vec<SupportedCipherSuite>> {
    let named = |name: &str| {
        provider.cipher_suites.iter().find(|s| s.tls13().is_none() && cipher_name(s.suite()) == name).copied()
    };
    let configured: Vec<Vec<&str>> =
        algorithms.cipher_suites.iter().map(|g| g.iter().map(String::as_str).collect()).collect();
    let names: Vec<Vec<&str>> = match configured.is_empty() {
        true => ENVOY_SERVER_CIPHER_SUITES.iter().map(|g| g.to_vec()).collect(),
        false => configured,
    };
    let groups = names.iter().map(|g| g.iter().filter_map(|n| named(n)).collect::<Vec<_>>());
    groups.filter(|g| !g.is_empty()).collect()
}

/// `provider` with TLS 1.3's cipher suites and `tls12` alone.
pub fn provider_with_tls12_suite(provider: &CryptoProvider, tls12: SupportedCipherSuite) -> Arc<CryptoProvider> {
    let mut alone = provider.clone();
    alone.cipher_suites.retain(|s| s.tls13().is_some());
    alone.cipher_suites.push(tls12);
    Arc::new(alone)
}

/// A cipher suite's name as BoringSSL gives it (and Envoy's `ssl.ciphers.*` stats).
pub fn cipher_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "unknown",
    }
}

/// A key exchange group's name as BoringSSL gives it (and Envoy's `ssl.curves.*` stats).
pub fn curve_name(group: NamedGroup) -> &'static str {
    match group {
        NamedGroup::X25519 => "X25519",
        NamedGroup::secp256r1 => "P-256",
        NamedGroup::secp384r1 => "P-384",
        NamedGroup::secp521r1 => "P-521",
        NamedGroup::X25519MLKEM768 => "X25519MLKEM768",
        _ => "unknown",
    }
}

/// The bytes of a `DataSource` (`field` names it in the error).
pub fn read(source: &DataSource, field: &str) -> Result<Vec<u8>, String> {
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

/// A certificate chain and its key (`tls_certificates[position]`), read and checked
/// against each other.
pub fn certified_key(
    certificate: &TlsCertificate,
    provider: &CryptoProvider,
    position: usize,
) -> Result<Arc<CertifiedKey>, String> {
    let chain_field = format!("tls_certificates[{position}].certificate_chain");
    let chain = certificates(&certificate.certificate_chain, &chain_field)?;
    let key_field = format!("tls_certificates[{position}].private_key");
    let key = PrivateKeyDer::from_pem_slice(&read(&certificate.private_key, &key_field)?)
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

/// The CA certificates of a `trusted_ca`, as trust anchors, and what `/certs` shows of
/// the first (none: Envoy's refusal of a context without one).
pub fn trust_anchors(
    source: Option<&DataSource>,
) -> Result<(rustls::RootCertStore, Option<CertificateDetails>), String> {
    let field = "validation_context.trusted_ca";
    let Some(source) = source else {
        return Err(format!("{field}: {MISSING_CA}"));
    };
    let mut roots = rustls::RootCertStore::empty();
    let cas = certificates(source, field)?;
    let shown = details(source, &cas[0]);
    for cert in cas {
        roots.add(cert).map_err(|e| format!("{field}: not a usable CA certificate: {e}"))?;
    }
    Ok((roots, shown))
}

/// What admin's `/certs` shows of the first certificate of `source`, which was read as
/// `first` (its file's name, or `<inline>`).
pub fn details(source: &DataSource, first: &CertificateDer<'_>) -> Option<CertificateDetails> {
    let path = match source {
        DataSource::File(path) => path.display().to_string(),
        DataSource::Inline(_) => "<inline>".to_string(),
    };
    CertificateDetails::new(first, path)
}

/// The PEM certificate revocation lists of a `validation_context.crl` (at least one).
pub fn crls(source: &DataSource) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let field = "validation_context.crl";
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&read(source, field)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{field}: not PEM certificate revocation lists: {e}"))?;
    if crls.is_empty() {
        return Err(format!("{field}: no PEM certificate revocation list in it"));
    }
    Ok(crls)
}

/// rustls' versions from `min` to `max`.
pub fn versions((min, max): (TlsVersion, TlsVersion)) -> Vec<&'static rustls::SupportedProtocolVersion> {
    [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect()
}

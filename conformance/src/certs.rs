//! The certificates of a run, made once and written beside the configs: a CA
//! (`@TLS_CA@`); the server certificate TLS listeners and the recording upstream present,
//! for `localhost` and `*.example.com` (`@TLS_CERT@`, `@TLS_KEY@`); a client certificate for
//! mTLS scenarios (`@TLS_CLIENT_CERT@`, `@TLS_CLIENT_KEY@`), for `client.example.com` and
//! `spiffe://example.com/client`, subject `CN=client,O=Example`. Clients trust the CA.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The files of a run's certificates, for the configs.
pub struct RunCertificates {
    /// The server certificate (PEM).
    pub cert: String,
    /// Its key.
    pub key: String,
    /// The CA certificate.
    pub ca: String,
    /// The client certificate.
    pub client_cert: String,
    /// Its key.
    pub client_key: String,
}

/// What the client side of a run uses: the CA to trust, the client certificate and key.
pub struct ClientSide {
    /// The CA.
    pub ca: CertificateDer<'static>,
    /// The client certificate.
    pub cert: CertificateDer<'static>,
    /// Its key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// The run's client side, once the certificates are made.
pub static CLIENT: OnceLock<ClientSide> = OnceLock::new();

/// The recording upstream's TLS settings (the server certificate, ALPN h2 and http/1.1).
pub static UPSTREAM: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();

/// Makes the certificates in `dir`; returns their paths, for the configs.
pub fn write_run_certificates(dir: &Path) -> Result<RunCertificates, String> {
    let fail = |e: rcgen::Error| e.to_string();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "conformance CA");
    let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
    let ca = ca_params.self_signed(&ca_key).map_err(fail)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);

    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "*.example.com".to_string()]).map_err(fail)?;
    let server_key = rcgen::KeyPair::generate().map_err(fail)?;
    let server = server_params.signed_by(&server_key, &issuer).map_err(fail)?;

    let mut client_params = rcgen::CertificateParams::new(vec!["client.example.com".to_string()]).map_err(fail)?;
    let uri = "spiffe://example.com/client".try_into().map_err(fail)?;
    client_params.subject_alt_names.push(rcgen::SanType::URI(uri));
    client_params.distinguished_name = rcgen::DistinguishedName::new();
    client_params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
    client_params.distinguished_name.push(rcgen::DnType::CommonName, "client");
    let client_key = rcgen::KeyPair::generate().map_err(fail)?;
    let client = client_params.signed_by(&client_key, &issuer).map_err(fail)?;

    let write = |name: &str, text: String| -> Result<String, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path.display().to_string())
    };
    let files = RunCertificates {
        cert: write("tls-cert.pem", server.pem())?,
        key: write("tls-key.pem", server_key.serialize_pem())?,
        ca: write("tls-ca.pem", ca.pem())?,
        client_cert: write("tls-client-cert.pem", client.pem())?,
        client_key: write("tls-client-key.pem", client_key.serialize_pem())?,
    };
    let server_key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut upstream = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![server.der().clone()], server_key)
        .map_err(|e| e.to_string())?;
    upstream.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let _ = UPSTREAM.set(Arc::new(upstream));
    let _ = CLIENT.set(ClientSide {
        ca: ca.der().clone(),
        cert: client.der().clone(),
        key: PrivatePkcs8KeyDer::from(client_key.serialize_der()),
    });
    Ok(files)
}

/// `config` with its placeholders for the certificates filled in.
pub fn fill(config: &str, files: &RunCertificates) -> String {
    config
        .replace("@TLS_CERT@", &files.cert)
        .replace("@TLS_KEY@", &files.key)
        .replace("@TLS_CA@", &files.ca)
        .replace("@TLS_CLIENT_CERT@", &files.client_cert)
        .replace("@TLS_CLIENT_KEY@", &files.client_key)
}

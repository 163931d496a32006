//! The certificates of a run, made once and written beside the configs: a CA
//! (`@TLS_CA@`); the server certificate TLS listeners and the recording upstream present,
//! for `localhost` and `*.example.com` (`@TLS_CERT@`, `@TLS_KEY@`); a client certificate for
//! mTLS scenarios (`@TLS_CLIENT_CERT@`, `@TLS_CLIENT_KEY@`), for `client.example.com` and
//! `spiffe://example.com/client`, subject `CN=client,O=Example`; OCSP responses for the
//! server certificate, one current and one expired (`@OCSP_CURRENT@`, `@OCSP_EXPIRED@`).
//! Clients trust the CA.

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
    /// An OCSP response for the server certificate, current until 2099 (DER).
    pub ocsp_current: String,
    /// One that stopped being current in January 2026.
    pub ocsp_expired: String,
}

/// The server certificate's serial number (its OCSP responses name it).
const SERVER_SERIAL: &[u8] = &[0x0c, 0x5a, 0x11, 0xed];

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

    let mut server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "*.example.com".to_string()]).map_err(fail)?;
    server_params.serial_number = Some(rcgen::SerialNumber::from_slice(SERVER_SERIAL));
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

    let write = |name: &str, bytes: Vec<u8>| -> Result<String, String> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path.display().to_string())
    };
    let files = RunCertificates {
        cert: write("tls-cert.pem", server.pem().into_bytes())?,
        key: write("tls-key.pem", server_key.serialize_pem().into_bytes())?,
        ca: write("tls-ca.pem", ca.pem().into_bytes())?,
        client_cert: write("tls-client-cert.pem", client.pem().into_bytes())?,
        client_key: write("tls-client-key.pem", client_key.serialize_pem().into_bytes())?,
        ocsp_current: write("ocsp-current.der", ocsp_response("20260101000000Z", "20991231000000Z"))?,
        ocsp_expired: write("ocsp-expired.der", ocsp_response("20260101000000Z", "20260102000000Z"))?,
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
        .replace("@OCSP_CURRENT@", &files.ocsp_current)
        .replace("@OCSP_EXPIRED@", &files.ocsp_expired)
}

/// A DER element of type `tag` holding `content`.
fn element(tag: u8, content: &[u8]) -> Vec<u8> {
    let length = content.len();
    let mut out = match length {
        0..0x80 => vec![tag, length as u8],
        0x80..0x100 => vec![tag, 0x81, length as u8],
        _ => vec![tag, 0x82, (length >> 8) as u8, length as u8],
    };
    out.extend_from_slice(content);
    out
}

/// A successful basic OCSP response saying the server certificate is good, current from
/// `this_update` to `next_update` (`YYYYMMDDHHMMSSZ`). Unsigned: Envoy does not check the
/// signature of a response it staples.
fn ocsp_response(this_update: &str, next_update: &str) -> Vec<u8> {
    const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    const OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let hash_algorithm = element(0x30, &[element(0x06, SHA1), element(0x05, &[])].concat());
    let cert_id =
        [hash_algorithm, element(0x04, &[0xaa; 20]), element(0x04, &[0xbb; 20]), element(0x02, SERVER_SERIAL)];
    let single = [
        element(0x30, &cert_id.concat()),
        element(0x80, &[]),
        element(0x18, this_update.as_bytes()),
        element(0xa0, &element(0x18, next_update.as_bytes())),
    ];
    let responder = element(0xa2, &element(0x04, &[0xcc; 20]));
    let data = [responder, element(0x18, this_update.as_bytes()), element(0x30, &element(0x30, &single.concat()))];
    let basic = [element(0x30, &data.concat()), element(0x30, &element(0x06, ECDSA_SHA256)), element(0x03, &[0, 0])];
    let bytes = [element(0x06, OCSP_BASIC), element(0x04, &element(0x30, &basic.concat()))];
    element(0x30, &[element(0x0a, &[0]), element(0xa0, &element(0x30, &bytes.concat()))].concat())
}

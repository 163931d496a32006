//! The certificate TLS listeners present in a run: self-signed for `localhost` and
//! `*.example.com` (for scenarios that pick a filter chain by server name), made once
//! and written beside the configs (`@TLS_CERT@`, `@TLS_KEY@`); the client trusts it.

use std::path::Path;

/// Makes the certificate and its key in `dir`; returns their paths, for the configs.
pub fn write_localhost_certificate(dir: &Path) -> Result<(String, String), String> {
    let names = vec!["localhost".to_string(), "*.example.com".to_string()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    std::fs::write(&cert, made.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    std::fs::write(&key, made.signing_key.serialize_pem()).map_err(|e| format!("{}: {e}", key.display()))?;
    let _ = crate::client::TRUSTED.set(made.cert.der().clone());
    Ok((cert.display().to_string(), key.display().to_string()))
}

/// `config` with its placeholders for the certificate and key filled in.
pub fn fill(config: &str, files: &(String, String)) -> String {
    config.replace("@TLS_CERT@", &files.0).replace("@TLS_KEY@", &files.1)
}

//! What a certificate says, read with x509-parser: its subject alternative names (for
//! Envoy's SAN matchers and the `*_san_*` properties), its subject as Envoy prints it, its
//! digest; and what a handshake settled, for the properties.

use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;
use sha2::Digest;
use wasmproxy_config::model::{SanMatcher, SanType, ValueMatch};
use x509_parser::extensions::GeneralName;

use crate::matcher::{value_matches, value_regex};
use crate::tls::session::TlsTransport;

/// What plugins read of a certificate (`connection.subject_peer_certificate`, ...).
#[derive(Debug, Clone, Default)]
pub struct CertificateInfo {
    /// The subject, as RFC 2253 prints it (`CN=client,O=Example`), as Envoy shows it.
    pub subject: String,
    /// The DNS subject alternative names, in order.
    pub dns_sans: Vec<String>,
    /// The URI subject alternative names, in order.
    pub uri_sans: Vec<String>,
    /// The SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
}

impl CertificateInfo {
    /// What a DER certificate says (empty fields where it does not parse).
    pub fn new(der: &[u8]) -> CertificateInfo {
        let names = subject_alt_names(der);
        let of = |kind: SanType| names.iter().filter(|(t, _)| *t == kind).map(|(_, n)| n.clone()).collect();
        let subject = x509_parser::parse_x509_certificate(der).map(|(_, c)| rfc2253(c.subject())).unwrap_or_default();
        let digest = sha2::Sha256::digest(der);
        CertificateInfo {
            subject,
            dns_sans: of(SanType::Dns),
            uri_sans: of(SanType::Uri),
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// What the leaf of a certificate chain says (empty for an empty chain).
    pub fn leaf(certified: &rustls::sign::CertifiedKey) -> CertificateInfo {
        certified.cert.first().map(|c| CertificateInfo::new(c)).unwrap_or_default()
    }
}

/// What admin's `/certs` shows of a certificate (Envoy's `CertificateDetails`).
#[derive(Debug, Clone)]
pub struct CertificateDetails {
    /// The file it was read from, or `<inline>`.
    pub path: String,
    /// Its serial number, lowercase hex, two digits a byte.
    pub serial: String,
    /// Its DNS, URI and IP address subject alternative names, in order.
    pub names: Vec<(SanType, String)>,
    /// When it starts and stops being valid, in seconds since the Unix epoch.
    pub valid: (i64, i64),
    /// When its OCSP response (if it has one) starts and stops being current (no end: it
    /// never is).
    pub ocsp: Option<(i64, Option<i64>)>,
}

impl CertificateDetails {
    /// What a DER certificate read from `path` says (`None` if it does not parse).
    pub fn new(der: &[u8], path: String) -> Option<CertificateDetails> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        let names = subject_alt_names(der)
            .into_iter()
            .filter(|(kind, _)| matches!(kind, SanType::Dns | SanType::Uri | SanType::IpAddress))
            .collect();
        Some(CertificateDetails {
            path,
            // As BoringSSL prints it: whole bytes, no leading zero byte.
            serial: cert.raw_serial().iter().skip_while(|b| **b == 0).map(|b| format!("{b:02x}")).collect(),
            names,
            valid: (validity.not_before.timestamp(), validity.not_after.timestamp()),
            ocsp: None,
        })
    }

    /// As Envoy's `/certs` writes it, `now` being the time in seconds since the Unix epoch.
    pub fn json(&self, now: i64) -> serde_json::Value {
        let names: Vec<serde_json::Value> = self
            .names
            .iter()
            .map(|(kind, name)| {
                let key = match kind {
                    SanType::Dns => "dns",
                    SanType::Uri => "uri",
                    _ => "ip_address",
                };
                serde_json::json!({ key: name })
            })
            .collect();
        let at = |unix: i64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
            crate::clock::Utc::at(t).protobuf_timestamp()
        };
        let mut details = serde_json::json!({
            "path": self.path,
            "serial_number": self.serial,
            "subject_alt_names": names,
            // Whole days left, none once expired; a uint64, which protobuf's JSON quotes.
            "days_until_expiration": ((self.valid.1 - now).max(0) / 86_400).to_string(),
            "valid_from": at(self.valid.0),
            "expiration_time": at(self.valid.1),
        });
        // Without a nextUpdate, Envoy shows the time of asking as its end.
        if let (Some((from, until)), Some(fields)) = (self.ocsp, details.as_object_mut()) {
            let ocsp = serde_json::json!({ "valid_from": at(from), "expiration": at(until.unwrap_or(now)) });
            fields.insert("ocsp_details".into(), ocsp);
        }
        details
    }
}

/// The certificates a TLS context holds, as admin's `/certs` lists them: a listener's
/// filter chain's or a cluster's.
pub trait ContextCertificates: Send + Sync {
    /// The CA it checks peers against (`validation_context.trusted_ca`), if any.
    fn ca_certificate(&self) -> Option<CertificateDetails>;
    /// The certificates it presents (rotated ones as they are now).
    fn certificate_chain(&self) -> Vec<CertificateDetails>;
}

/// What a TLS handshake settled: a downstream connection's (`connection.*`) or an upstream
/// one's (`upstream.*`).
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3` (`*.tls_version`).
    pub version: &'static str,
    /// The peer's certificate, if it sent one (`*_peer_certificate`).
    pub peer: Option<Box<CertificateInfo>>,
    /// The proxy's own certificate, if it presented one (`*_local_certificate`).
    pub local: Option<Arc<CertificateInfo>>,
}

impl TlsInfo {
    /// What `session`'s handshake settled, the proxy having presented `local`.
    pub fn new(session: &TlsTransport, local: Option<Arc<CertificateInfo>>) -> TlsInfo {
        TlsInfo {
            version: session.version().unwrap_or("unknown"),
            peer: session.peer_certificate().map(|c| Box::new(CertificateInfo::new(&c))),
            local,
        }
    }
}

/// A distinguished name as RFC 2253 prints it: the last RDN first, `,` between RDNs, `+`
/// within one, the usual short names, special characters escaped.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            let parts: Vec<String> = rdn
                .iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let key = short_name(&oid).map_or(oid, str::to_string);
                    let value = attr
                        .as_str()
                        .map_or_else(|_| String::from_utf8_lossy(attr.attr_value().data).into_owned(), str::to_string);
                    format!("{key}={}", escape(&value))
                })
                .collect();
            parts.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The short name of an attribute type, as OpenSSL and BoringSSL print it.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// RFC 2253 escaping of an attribute value.
fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let edge = (i == 0 && (c == '#' || c == ' ')) || (i == last && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Envoy's subject alternative name matchers: a certificate passes if one of its names
/// matches one of them.
#[derive(Debug)]
pub struct SanMatchers(Vec<(Option<SanType>, ValueMatch, Option<Regex>)>);

impl SanMatchers {
    /// The matchers, their regexes compiled.
    pub fn new(matchers: &[SanMatcher]) -> Result<SanMatchers, String> {
        let mut compiled = Vec::with_capacity(matchers.len());
        for m in matchers {
            let regex = value_regex(&m.matcher)
                .map_err(|e| format!("validation_context.match_typed_subject_alt_names: bad regex: {e}"))?;
            compiled.push((m.san_type, m.matcher.clone(), regex));
        }
        Ok(SanMatchers(compiled))
    }

    /// One matcher: a DNS name equal to `host` (or a wildcard covering it).
    pub fn host(host: &str) -> SanMatchers {
        let exact = ValueMatch::Exact { value: host.to_string(), ignore_case: false };
        SanMatchers(vec![(Some(SanType::Dns), exact, None)])
    }

    /// Passes a DER certificate, or refuses it as rustls refuses a certificate for another
    /// name (any certificate passes when there is no matcher).
    pub fn check(&self, der: &[u8]) -> Result<(), rustls::Error> {
        match self.accept(der) {
            true => Ok(()),
            false => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)),
        }
    }

    /// Whether a DER certificate passes (any certificate does when there is no matcher).
    fn accept(&self, der: &[u8]) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let names = subject_alt_names(der);
        self.0.iter().any(|(kind, matcher, regex)| {
            names.iter().filter(|(t, _)| kind.is_none_or(|k| k == *t)).any(|(t, name)| match (t, matcher) {
                (SanType::Dns, ValueMatch::Exact { value, .. }) => dns_name_covers(name, value),
                _ => value_matches(matcher, regex.as_ref(), Some(name)),
            })
        })
    }
}

/// The names a server certificate serves, for picking it by SNI: its DNS names, else the
/// common names of its subject.
pub fn server_names(der: &[u8]) -> Vec<String> {
    let dns: Vec<String> =
        subject_alt_names(der).into_iter().filter(|(t, _)| *t == SanType::Dns).map(|(_, n)| n).collect();
    if !dns.is_empty() {
        return dns;
    }
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect()
}

/// The subject alternative names of a DER certificate, with their types (none if it does
/// not parse).
fn subject_alt_names(der: &[u8]) -> Vec<(SanType, String)> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some((SanType::Dns, d.to_string())),
            GeneralName::RFC822Name(e) => Some((SanType::Email, e.to_string())),
            GeneralName::URI(u) => Some((SanType::Uri, u.to_string())),
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes {
                    [a, b, c, d] => IpAddr::from([*a, *b, *c, *d]),
                    _ => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                };
                Some((SanType::IpAddress, ip.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// Whether a certificate's DNS name `san` covers `name`: equal, or a wildcard of one label
/// (`*.example.com` covers `a.example.com`, not `a.b.example.com`), as Envoy matches an
/// exact DNS matcher.
pub fn dns_name_covers(san: &str, name: &str) -> bool {
    if san.eq_ignore_ascii_case(name) {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_kind_of_name_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string(), "*.w.example".into()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI("spiffe://cluster/ns/app".try_into().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name("ops@example.com".try_into().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_alt_names(cert.der()),
            vec![
                (SanType::Dns, "a.example".into()),
                (SanType::Dns, "*.w.example".into()),
                (SanType::Uri, "spiffe://cluster/ns/app".into()),
                (SanType::IpAddress, "127.0.0.1".into()),
                (SanType::Email, "ops@example.com".into()),
            ]
        );
        assert!(subject_alt_names(b"not a certificate").is_empty());
    }

    #[test]
    fn the_subject_is_printed_as_rfc_2253_prints_it() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CountryName, "US");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params.distinguished_name.push(rcgen::DnType::CommonName, "client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = CertificateInfo::new(cert.der());
        assert_eq!(info.subject, "CN=client,O=Example\\, Inc.,C=US");
        assert_eq!(info.dns_sans, vec!["a.example".to_string()]);
        assert_eq!(info.sha256.len(), 64);
    }

    #[test]
    fn admin_shows_a_certificate_as_envoy_does() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("::1".parse().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name("ops@example.com".try_into().unwrap()));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0c, 0x04, 0x6e]));
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 1, 31);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let details = CertificateDetails::new(cert.der(), "<inline>".into()).unwrap();
        let jan_10 = 1_767_225_600 + 9 * 86_400 + 3600;
        assert_eq!(
            details.json(jan_10),
            serde_json::json!({
                "path": "<inline>",
                "serial_number": "0c046e",
                "subject_alt_names": [{ "dns": "a.example" }, { "ip_address": "::1" }],
                "days_until_expiration": "20",
                "valid_from": "2026-01-01T00:00:00Z",
                "expiration_time": "2026-01-31T00:00:00Z",
            })
        );
        assert_eq!(details.json(jan_10 + 100 * 86_400)["days_until_expiration"], "0");
    }

    #[test]
    fn a_wildcard_covers_one_label() {
        assert!(dns_name_covers("*.w.example", "api.w.example"));
        assert!(dns_name_covers("A.example", "a.example"));
        assert!(!dns_name_covers("*.w.example", "a.b.w.example"));
        assert!(!dns_name_covers("*.w.example", "w.example"));
    }
}

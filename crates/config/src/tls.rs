//! `transport_socket` `envoy.transport_sockets.tls`: a filter chain's
//! `DownstreamTlsContext` (certificates, ALPN, the TLS versions, resumption, client
//! certificates checked against a CA and subject alternative names, inline or from a
//! secret) and a cluster's
//! `UpstreamTlsContext` (SNI, ALPN, versions, a client certificate, the CA and subject
//! alternative names the upstream's certificate is checked against); every other field
//! is refused by name.

use crate::config_source::read_file_source;
use crate::matcher::read_string_matcher;
use crate::model::{
    CLUSTER_OCSP_STAPLE, CertificateSource, CertificateValidation, DataSource, DownstreamTls, MISSING_CA,
    OcspStaplePolicy, SanMatcher, SanType, SdsSecret, Secret, SecretKind, TlsAlgorithms, TlsCertificate, TlsVersion,
    UpstreamTls, ValidationSource,
};
use crate::reader::{Ctx, Field, Msg, type_error};
use crate::wasm::{self, read_data_source};

const TRANSPORT_SOCKET: &[&str] = &["name", "typed_config"];
const DOWNSTREAM_TLS_CONTEXT: &[&str] = &[
    "common_tls_context",
    "require_client_certificate",
    "require_sni",
    "session_ticket_keys",
    "session_ticket_keys_sds_secret_config",
    "disable_stateless_session_resumption",
    "disable_stateful_session_resumption",
    "session_timeout",
    "ocsp_staple_policy",
    "full_scan_certs_on_sni_mismatch",
    "prefer_client_ciphers",
];
const COMMON_TLS_CONTEXT: &[&str] = &[
    "tls_params",
    "tls_certificates",
    "tls_certificate_sds_secret_configs",
    "tls_certificate_provider_instance",
    "custom_tls_certificate_selector",
    "tls_certificate_certificate_provider",
    "tls_certificate_certificate_provider_instance",
    "validation_context",
    "validation_context_sds_secret_config",
    "combined_validation_context",
    "validation_context_certificate_provider",
    "validation_context_certificate_provider_instance",
    "alpn_protocols",
    "custom_handshaker",
    "key_log",
];
const TLS_PARAMS: &[&str] = &[
    "tls_minimum_protocol_version",
    "tls_maximum_protocol_version",
    "cipher_suites",
    "ecdh_curves",
    "signature_algorithms",
    "compliance_policies",
];
const TLS_CERTIFICATE: &[&str] = &[
    "certificate_chain",
    "private_key",
    "pkcs12",
    "watched_directory",
    "private_key_provider",
    "password",
    "ocsp_staple",
    "signed_certificate_timestamp",
];

const UPSTREAM_TLS_CONTEXT: &[&str] = &[
    "common_tls_context",
    "sni",
    "auto_host_sni",
    "auto_sni_san_validation",
    "allow_renegotiation",
    "max_session_keys",
    "enforce_rsa_key_usage",
];
const VALIDATION_CONTEXT: &[&str] = &[
    "trusted_ca",
    "ca_certificate_provider_instance",
    "system_root_certs",
    "watched_directory",
    "verify_certificate_spki",
    "verify_certificate_hash",
    "match_typed_subject_alt_names",
    "match_subject_alt_names",
    "require_signed_certificate_timestamp",
    "crl",
    "allow_expired_certificate",
    "trust_chain_verification",
    "custom_validator_config",
    "only_verify_leaf_cert_crl",
    "max_verify_depth",
];
const SAN_MATCHER: &[&str] = &["san_type", "matcher", "oid"];
const SDS_SECRET_CONFIG: &[&str] = &["name", "sds_config"];
const SECRET: &[&str] = &["name", "tls_certificate", "session_ticket_keys", "validation_context", "generic_secret"];
const OCSP_STAPLE_POLICY: &[(&str, i64, Option<OcspStaplePolicy>)] = &[
    ("LENIENT_STAPLING", 0, Some(OcspStaplePolicy::Lenient)),
    ("STRICT_STAPLING", 1, Some(OcspStaplePolicy::Strict)),
    ("MUST_STAPLE", 2, Some(OcspStaplePolicy::MustStaple)),
];
const SAN_TYPE: &[(&str, i64, Option<SanType>)] = &[
    ("SAN_TYPE_UNSPECIFIED", 0, None),
    ("EMAIL", 1, Some(SanType::Email)),
    ("DNS", 2, Some(SanType::Dns)),
    ("URI", 3, Some(SanType::Uri)),
    ("IP_ADDRESS", 4, Some(SanType::IpAddress)),
    ("OTHER_NAME", 5, None),
];

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const DOWNSTREAM_TLS_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// Reads a filter chain's `transport_socket`; `None` (with an error) for one wasmproxy does
/// not serve.
pub(crate) fn read_transport_socket(ctx: &mut Ctx, field: &Field<'_>) -> Option<DownstreamTls> {
    let mut tls = tls_context(ctx, field, DOWNSTREAM_TLS_TYPE, DOWNSTREAM_TLS_CONTEXT)?;
    let require = tls.get(ctx, "require_client_certificate");
    let require_client_certificate = require.as_ref().and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    let mut disabled = |name: &str| tls.get(ctx, name).and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    let stateless_resumption = !disabled("disable_stateless_session_resumption");
    let stateful_resumption = !disabled("disable_stateful_session_resumption");
    let prefer_client_ciphers = tls.get(ctx, "prefer_client_ciphers").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    let ocsp_staple_policy = tls.get(ctx, "ocsp_staple_policy").map(|f| f.enumeration(ctx, OCSP_STAPLE_POLICY));
    tls.at_most_one(
        ctx,
        &["session_ticket_keys", "session_ticket_keys_sds_secret_config", "disable_stateless_session_resumption"],
    );
    let session_ticket_keys = match tls.get(ctx, "session_ticket_keys") {
        Some(f) => Some(read_session_ticket_keys(ctx, &f)?),
        None => None,
    };
    let session_ticket_keys_sds = match tls.get(ctx, "session_ticket_keys_sds_secret_config") {
        Some(f) => Some(read_sds_secret_config(ctx, &f)?),
        None => None,
    };
    let session_timeout_secs = match tls.get(ctx, "session_timeout") {
        Some(f) => Some(read_session_timeout(ctx, &f)?),
        None => None,
    };
    let common = tls.required(ctx, "common_tls_context");
    tls.finish(ctx);
    let downstream = read_common_tls_context(ctx, &common?)?;
    let ocsp_staple_policy = ocsp_staple_policy.unwrap_or(Some(OcspStaplePolicy::default()))?;
    if require_client_certificate && downstream.validation.is_none() {
        let at = require.map_or_else(|| field.origin(), |f| f.origin());
        ctx.error(&at, "require_client_certificate without a validation_context is not supported by wasmproxy");
        return None;
    }
    Some(DownstreamTls {
        require_client_certificate,
        stateless_resumption,
        stateful_resumption,
        session_ticket_keys: session_ticket_keys.unwrap_or_default(),
        session_ticket_keys_sds,
        session_timeout_secs,
        prefer_client_ciphers,
        ocsp_staple_policy,
        ..downstream
    })
}

/// `session_timeout`: whole seconds (Envoy drops the fractions), below 2^32 as Envoy's
/// validation wants.
fn read_session_timeout(ctx: &mut Ctx, field: &Field<'_>) -> Option<u32> {
    let timeout = field.duration(ctx)?;
    match u32::try_from(timeout.as_secs()) {
        Ok(secs) => Some(secs),
        Err(_) => {
            field.error(ctx, format!("{}s is too long: a session timeout is less than 4294967296s", timeout.as_secs()));
            None
        }
    }
}

const TLS_SESSION_TICKET_KEYS: &[&str] = &["keys"];

/// `session_ticket_keys.keys`: one at least (each 80 bytes, checked when it is read).
fn read_session_ticket_keys(ctx: &mut Ctx, field: &Field<'_>) -> Option<Vec<DataSource>> {
    let mut msg = field.message(ctx, TLS_SESSION_TICKET_KEYS)?;
    let keys = msg.required(ctx, "keys").map(|f| (f.origin(), f.list()));
    msg.finish(ctx);
    let (origin, keys) = keys?;
    if keys.is_empty() {
        ctx.error(&origin, "at least one key is required");
        return None;
    }
    let read: Vec<Option<DataSource>> = keys.iter().map(|k| data_source(ctx, k)).collect();
    read.into_iter().collect()
}

/// Reads a cluster's `transport_socket`; `None` (with an error) for one wasmproxy does not
/// serve.
pub(crate) fn read_upstream_transport_socket(ctx: &mut Ctx, field: &Field<'_>) -> Option<UpstreamTls> {
    let mut tls = tls_context(ctx, field, UPSTREAM_TLS_TYPE, UPSTREAM_TLS_CONTEXT)?;
    let sni = tls.get(ctx, "sni").and_then(|f| f.string(ctx)).filter(|s| !s.is_empty());
    let common = tls.get(ctx, "common_tls_context");
    tls.finish(ctx);
    let mut upstream = UpstreamTls {
        sni,
        alpn_protocols: Vec::new(),
        versions: (TlsVersion::Tls12, TlsVersion::Tls12),
        algorithms: TlsAlgorithms::default(),
        certificate: None,
        validation: None,
    };
    let Some(common) = common else { return Some(upstream) };
    let mut msg = common.message(ctx, COMMON_TLS_CONTEXT)?;
    let params = match msg.get(ctx, "tls_params") {
        Some(f) => read_tls_params(ctx, &f, TlsVersion::Tls12),
        None => Some((upstream.versions, TlsAlgorithms::default())),
    };
    upstream.alpn_protocols = read_alpn(ctx, &mut msg);
    let validation = read_validation_source(ctx, &mut msg);
    let certificates = read_certificate_sources(ctx, &mut msg, false);
    msg.finish(ctx);
    upstream.certificate = match certificates?.as_slice() {
        [] => None,
        [CertificateSource::Inline(TlsCertificate { ocsp_staple: Some(_), .. })] => {
            let at = common.origin().with_child("tls_certificates[0]").with_child("ocsp_staple");
            ctx.error(&at, CLUSTER_OCSP_STAPLE);
            return None;
        }
        [one] => Some(one.clone()),
        [first, _, ..] => {
            let field = match first {
                CertificateSource::Inline(_) => "tls_certificates",
                CertificateSource::Sds(_) => "tls_certificate_sds_secret_configs",
            };
            let at = common.origin().with_child(field);
            ctx.error(&at, "more than one client certificate is not supported by wasmproxy");
            return None;
        }
    };
    upstream.validation = validation?;
    (upstream.versions, upstream.algorithms) = params?;
    Some(upstream)
}

/// Opens a `transport_socket`'s TLS context of type `type_name`.
fn tls_context<'a>(
    ctx: &mut Ctx,
    field: &Field<'a>,
    type_name: &str,
    fields: &'static [&'static str],
) -> Option<Msg<'a>> {
    let mut msg = field.message(ctx, TRANSPORT_SOCKET)?;
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let typed = msg.get(ctx, "typed_config");
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let Some(typed) = typed else {
        ctx.error(&origin, format!("transport socket {name:?} without typed_config is not supported by wasmproxy"));
        return None;
    };
    let any = typed.any(ctx)?;
    if any.type_name != type_name {
        type_error(ctx, &typed, &any, &format!("{TLS_SOCKET} ({type_name})"));
        return None;
    }
    any.message(ctx, fields)
}

/// `common_tls_context.alpn_protocols`.
fn read_alpn(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Vec<String> {
    let list = msg.get(ctx, "alpn_protocols").map(|f| f.list()).unwrap_or_default();
    list.iter().filter_map(|p| p.string(ctx)).collect()
}

/// A `validation_context`: `trusted_ca`, the subject alternative names to match, the CRLs.
/// A `part` (a secret's, or a `default_validation_context`) may lack `trusted_ca`: it is
/// required of the context in use.
fn read_validation_context(ctx: &mut Ctx, field: &Field<'_>, part: bool) -> Option<CertificateValidation> {
    let mut msg = field.message(ctx, VALIDATION_CONTEXT)?;
    let trusted_ca = msg.get(ctx, "trusted_ca").map(|f| data_source(ctx, &f));
    let mut subject_alt_names = Vec::new();
    for item in msg.get(ctx, "match_typed_subject_alt_names").map(|f| f.list()).unwrap_or_default() {
        let Some(mut m) = item.message(ctx, SAN_MATCHER) else { continue };
        let san_type = m.required(ctx, "san_type").and_then(|f| f.enumeration(ctx, SAN_TYPE));
        let matcher = m.required(ctx, "matcher").and_then(|f| read_string_matcher(ctx, &f));
        m.finish(ctx);
        if let (Some(san_type), Some(matcher)) = (san_type, matcher) {
            subject_alt_names.push(SanMatcher { san_type: Some(san_type), matcher });
        }
    }
    for item in msg.get(ctx, "match_subject_alt_names").map(|f| f.list()).unwrap_or_default() {
        if let Some(matcher) = read_string_matcher(ctx, &item) {
            subject_alt_names.push(SanMatcher { san_type: None, matcher });
        }
    }
    let crl = msg.get(ctx, "crl").map(|f| data_source(ctx, &f));
    let only_verify_leaf_cert_crl =
        msg.get(ctx, "only_verify_leaf_cert_crl").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let origin = msg.origin().clone();
    msg.finish(ctx);
    if trusted_ca.is_none() && !part {
        ctx.error(&origin, MISSING_CA);
        return None;
    }
    Some(CertificateValidation {
        trusted_ca: trusted_ca.map_or(Some(None), |c| c.map(Some))?,
        subject_alt_names,
        crl: crl.map_or(Some(None), |c| c.map(Some))?,
        only_verify_leaf_cert_crl,
    })
}

const COMBINED_VALIDATION_CONTEXT: &[&str] = &[
    "default_validation_context",
    "validation_context_sds_secret_config",
    "validation_context_certificate_provider",
    "validation_context_certificate_provider_instance",
];

/// A common TLS context's validation context: `validation_context`,
/// `validation_context_sds_secret_config` or `combined_validation_context` (`Some(None)`:
/// none; `None`: an error was reported).
fn read_validation_source(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Option<Option<ValidationSource>> {
    msg.at_most_one(
        ctx,
        &["validation_context", "validation_context_sds_secret_config", "combined_validation_context"],
    );
    if let Some(f) = msg.get(ctx, "validation_context") {
        return Some(Some(ValidationSource::Inline(read_validation_context(ctx, &f, false)?)));
    }
    if let Some(f) = msg.get(ctx, "validation_context_sds_secret_config") {
        return Some(Some(ValidationSource::Sds { secret: read_sds_secret_config(ctx, &f)?, default: None }));
    }
    let Some(f) = msg.get(ctx, "combined_validation_context") else { return Some(None) };
    let mut combined = f.message(ctx, COMBINED_VALIDATION_CONTEXT)?;
    let default = combined.required(ctx, "default_validation_context").map(|f| read_validation_context(ctx, &f, true));
    let secret =
        combined.required(ctx, "validation_context_sds_secret_config").map(|f| read_sds_secret_config(ctx, &f));
    combined.finish(ctx);
    Some(Some(ValidationSource::Sds { secret: secret??, default: Some(default??) }))
}

fn read_common_tls_context(ctx: &mut Ctx, field: &Field<'_>) -> Option<DownstreamTls> {
    let mut msg = field.message(ctx, COMMON_TLS_CONTEXT)?;
    let params = match msg.get(ctx, "tls_params") {
        Some(f) => read_tls_params(ctx, &f, TlsVersion::Tls13),
        None => Some(((TlsVersion::Tls12, TlsVersion::Tls13), TlsAlgorithms::default())),
    };
    let alpn_protocols = read_alpn(ctx, &mut msg);
    let validation = read_validation_source(ctx, &mut msg);
    let certificates = read_certificate_sources(ctx, &mut msg, true);
    msg.finish(ctx);
    let validation = validation?;
    let (versions, algorithms) = params?;
    Some(DownstreamTls {
        certificates: certificates?,
        alpn_protocols,
        versions,
        algorithms,
        validation,
        require_client_certificate: false,
        stateless_resumption: true,
        stateful_resumption: true,
        session_ticket_keys: Vec::new(),
        session_ticket_keys_sds: None,
        session_timeout_secs: None,
        prefer_client_ciphers: false,
        ocsp_staple_policy: OcspStaplePolicy::default(),
    })
}

/// A common TLS context's `tls_certificates` or `tls_certificate_sds_secret_configs` (not
/// both); at least one if `required` (`None`: an error was reported).
fn read_certificate_sources(ctx: &mut Ctx, msg: &mut Msg<'_>, required: bool) -> Option<Vec<CertificateSource>> {
    let inline = msg.get(ctx, "tls_certificates").map(|f| f.list()).unwrap_or_default();
    let secrets = msg.get(ctx, "tls_certificate_sds_secret_configs").map(|f| f.list()).unwrap_or_default();
    match (inline.as_slice(), secrets.as_slice()) {
        ([], []) if required => {
            ctx.error(&msg.origin().with_child("tls_certificates"), "a certificate is required");
            None
        }
        (inline, []) => {
            let read: Vec<_> =
                inline.iter().map(|c| read_tls_certificate(ctx, c).map(CertificateSource::Inline)).collect();
            read.into_iter().collect()
        }
        ([], secrets) => {
            let read: Vec<_> =
                secrets.iter().map(|c| read_sds_secret_config(ctx, c).map(CertificateSource::Sds)).collect();
            read.into_iter().collect()
        }
        (_, [sds, ..]) => {
            sds.error(ctx, "certificates from SDS beside tls_certificates are not supported by wasmproxy");
            None
        }
    }
}

/// An `SdsSecretConfig`: the secret's name, and the file it is in (none: a static secret).
fn read_sds_secret_config(ctx: &mut Ctx, field: &Field<'_>) -> Option<SdsSecret> {
    let mut msg = field.message(ctx, SDS_SECRET_CONFIG)?;
    let name = msg.required(ctx, "name").and_then(|f| f.string(ctx));
    let source = msg.get(ctx, "sds_config").map(|f| read_file_source(ctx, &f));
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let name = name?;
    let source = match source {
        Some(source) => Some(source?),
        None => {
            ctx.refs.secret_refs.push((name.clone(), origin.with_child("name")));
            None
        }
    };
    Some(SdsSecret { name, source })
}

/// A `Secret` (`static_resources.secrets`, or a resource of an SDS file).
pub(crate) fn read_secret(ctx: &mut Ctx, field: &Field<'_>) -> Option<Secret> {
    let mut msg = field.message(ctx, SECRET)?;
    let name = msg.required(ctx, "name").and_then(|f| f.string(ctx));
    msg.at_most_one(ctx, &["tls_certificate", "session_ticket_keys", "validation_context", "generic_secret"]);
    let certificate = msg.get(ctx, "tls_certificate");
    let ticket_keys = msg.get(ctx, "session_ticket_keys");
    let validation = msg.get(ctx, "validation_context");
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let kind = match (certificate, ticket_keys, validation) {
        (Some(certificate), _, _) => SecretKind::TlsCertificate(read_tls_certificate(ctx, &certificate)?),
        (None, Some(keys), _) => SecretKind::SessionTicketKeys(read_session_ticket_keys(ctx, &keys)?),
        (None, None, Some(validation)) => {
            SecretKind::ValidationContext(read_validation_context(ctx, &validation, true)?)
        }
        (None, None, None) => {
            ctx.error(
                &origin,
                "a secret needs tls_certificate, session_ticket_keys or validation_context (the kinds wasmproxy serves)",
            );
            return None;
        }
    };
    Some(Secret { name: name?, kind })
}

/// `tls_params`: the versions (`max_auto` is the side's default highest one, Envoy's:
/// TLS 1.3 for servers, TLS 1.2 for clients), cipher suites and curves.
fn read_tls_params(
    ctx: &mut Ctx,
    field: &Field<'_>,
    max_auto: TlsVersion,
) -> Option<((TlsVersion, TlsVersion), TlsAlgorithms)> {
    let mut msg = field.message(ctx, TLS_PARAMS)?;
    let mut version = |msg: &mut crate::reader::Msg<'_>, name: &str, auto: TlsVersion| {
        let Some(f) = msg.get(ctx, name) else { return Some(auto) };
        let old = "TLS 1.0 and 1.1 are not supported by wasmproxy (rustls speaks TLS 1.2 and 1.3)";
        match f.string(ctx)?.as_str() {
            "TLS_AUTO" => Some(auto),
            "TLSv1_2" => Some(TlsVersion::Tls12),
            "TLSv1_3" => Some(TlsVersion::Tls13),
            "TLSv1_0" | "TLSv1_1" => {
                f.error(ctx, old);
                None
            }
            other => {
                f.error(ctx, format!("unknown TLS version {other:?}"));
                None
            }
        }
    };
    let min = version(&mut msg, "tls_minimum_protocol_version", TlsVersion::Tls12);
    let max = version(&mut msg, "tls_maximum_protocol_version", max_auto);
    let cipher_suites = msg.get(ctx, "cipher_suites").map(|f| read_names(ctx, &f, CIPHER_SUITES, "cipher suite"));
    let ecdh_curves =
        msg.get(ctx, "ecdh_curves").map(|f| read_names(ctx, &f, ECDH_CURVES, "curve").map(|g| g.concat()));
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let (min, max) = (min?, max?);
    if min > max {
        ctx.error(&origin, "tls_minimum_protocol_version is above tls_maximum_protocol_version");
        return None;
    }
    let algorithms = TlsAlgorithms {
        cipher_suites: cipher_suites.unwrap_or(Some(Vec::new()))?,
        ecdh_curves: ecdh_curves.unwrap_or(Some(Vec::new()))?,
    };
    Some(((min, max), algorithms))
}

/// Cipher suites by OpenSSL name: whether rustls has them (those it has not are left out
/// with a warning, as long as one is left).
const CIPHER_SUITES: &[(&str, bool)] = &[
    ("ECDHE-ECDSA-AES128-GCM-SHA256", true),
    ("ECDHE-RSA-AES128-GCM-SHA256", true),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", true),
    ("ECDHE-RSA-AES256-GCM-SHA384", true),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", true),
    ("ECDHE-RSA-CHACHA20-POLY1305", true),
    ("ECDHE-ECDSA-AES128-SHA", false),
    ("ECDHE-RSA-AES128-SHA", false),
    ("ECDHE-ECDSA-AES256-SHA", false),
    ("ECDHE-RSA-AES256-SHA", false),
    ("AES128-GCM-SHA256", false),
    ("AES256-GCM-SHA384", false),
    ("AES128-SHA", false),
    ("AES256-SHA", false),
    ("DES-CBC3-SHA", false),
    ("ECDHE-PSK-AES128-CBC-SHA", false),
    ("ECDHE-PSK-AES256-CBC-SHA", false),
    ("ECDHE-PSK-CHACHA20-POLY1305", false),
    ("PSK-AES128-CBC-SHA", false),
    ("PSK-AES256-CBC-SHA", false),
];

/// Curves by BoringSSL name: whether rustls (aws-lc-rs) has them.
const ECDH_CURVES: &[(&str, bool)] = &[
    ("X25519", true),
    ("P-256", true),
    ("P-384", true),
    ("X25519MLKEM768", true),
    ("P-521", false),
    ("X25519Kyber768Draft00", false),
];

/// A list of names from `table` (BoringSSL's `[a|b]` equal-preference groups taken in
/// order): an unknown name is an error, one rustls lacks is left out with a warning, and
/// at least one must be left.
/// Names from `table`, one list per item: BoringSSL's equal-preference group `[a|b]`, or one
/// name. Those rustls has not are left out with a warning, groups left empty dropped.
fn read_names(ctx: &mut Ctx, field: &Field<'_>, table: &[(&str, bool)], what: &str) -> Option<Vec<Vec<String>>> {
    let mut groups = Vec::new();
    let mut bad = false;
    for item in field.list() {
        let Some(text) = item.string(ctx) else { continue };
        let mut group = Vec::new();
        for name in text.trim_start_matches('[').trim_end_matches(']').split('|') {
            match table.iter().find(|(known, _)| *known == name) {
                Some((_, true)) => group.push(name.to_string()),
                Some((_, false)) => ctx.warn(&item.origin(), format!("{what} {name} is not in rustls: left out")),
                None => {
                    item.error(ctx, format!("unknown {what} {name:?}"));
                    bad = true;
                }
            }
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    if groups.is_empty() && !bad {
        field.error(ctx, format!("no {what} left that rustls has"));
        return None;
    }
    (!bad).then_some(groups)
}

fn read_tls_certificate(ctx: &mut Ctx, field: &Field<'_>) -> Option<TlsCertificate> {
    let mut msg = field.message(ctx, TLS_CERTIFICATE)?;
    let chain = msg.required(ctx, "certificate_chain").and_then(|f| data_source(ctx, &f));
    let key = msg.required(ctx, "private_key").and_then(|f| data_source(ctx, &f));
    let ocsp = msg.get(ctx, "ocsp_staple").map(|f| data_source(ctx, &f));
    msg.finish(ctx);
    Some(TlsCertificate {
        certificate_chain: chain?,
        private_key: key?,
        ocsp_staple: ocsp.map_or(Some(None), |o| o.map(Some))?,
    })
}

/// A `DataSource`; a relative file name resolves as Wasm modules' do.
fn data_source(ctx: &mut Ctx, field: &Field<'_>) -> Option<DataSource> {
    Some(match read_data_source(ctx, field)? {
        wasm::DataSource::File(name) => DataSource::File(ctx.base_dir.join(name)),
        wasm::DataSource::Inline(bytes) => DataSource::Inline(bytes),
    })
}

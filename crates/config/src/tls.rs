//! A filter chain's `transport_socket`: `envoy.transport_sockets.tls` with Envoy's
//! `DownstreamTlsContext`, as far as wasmproxy serves it (one certificate, ALPN, the TLS
//! versions); every other field is refused by name.

use crate::model::{DataSource, DownstreamTls, TlsCertificate, TlsVersion};
use crate::reader::{Ctx, Field, type_error};
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

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const DOWNSTREAM_TLS_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// Reads a filter chain's `transport_socket`; `None` (with an error) for one wasmproxy does
/// not serve.
pub(crate) fn read_transport_socket(ctx: &mut Ctx, field: &Field<'_>) -> Option<DownstreamTls> {
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
    if any.type_name != DOWNSTREAM_TLS_TYPE {
        type_error(ctx, &typed, &any, &format!("{TLS_SOCKET} ({DOWNSTREAM_TLS_TYPE})"));
        return None;
    }
    let mut tls = any.message(ctx, DOWNSTREAM_TLS_CONTEXT)?;
    if let Some(f) = tls.get(ctx, "require_client_certificate")
        && f.bool_value(ctx) == Some(true)
    {
        f.error(ctx, "client certificates (mTLS) are not supported by wasmproxy yet");
    }
    let common = tls.required(ctx, "common_tls_context");
    tls.finish(ctx);
    read_common_tls_context(ctx, &common?)
}

fn read_common_tls_context(ctx: &mut Ctx, field: &Field<'_>) -> Option<DownstreamTls> {
    let mut msg = field.message(ctx, COMMON_TLS_CONTEXT)?;
    let versions = match msg.get(ctx, "tls_params") {
        Some(f) => read_tls_params(ctx, &f),
        None => Some((TlsVersion::Tls12, TlsVersion::Tls13)),
    };
    let alpn_protocols = msg
        .get(ctx, "alpn_protocols")
        .map(|f| f.list().iter().filter_map(|p| p.string(ctx)).collect())
        .unwrap_or_default();
    let certificates = msg.get(ctx, "tls_certificates").map(|f| f.list()).unwrap_or_default();
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let certificate = match certificates.as_slice() {
        [] => {
            ctx.error(&origin.with_child("tls_certificates"), "a certificate is required");
            None
        }
        [one] => read_tls_certificate(ctx, one),
        [_, extra, ..] => {
            extra.error(ctx, "more than one certificate is not supported by wasmproxy yet");
            None
        }
    };
    Some(DownstreamTls { certificate: certificate?, alpn_protocols, versions: versions? })
}

fn read_tls_params(ctx: &mut Ctx, field: &Field<'_>) -> Option<(TlsVersion, TlsVersion)> {
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
    let max = version(&mut msg, "tls_maximum_protocol_version", TlsVersion::Tls13);
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let (min, max) = (min?, max?);
    if min > max {
        ctx.error(&origin, "tls_minimum_protocol_version is above tls_maximum_protocol_version");
        return None;
    }
    Some((min, max))
}

fn read_tls_certificate(ctx: &mut Ctx, field: &Field<'_>) -> Option<TlsCertificate> {
    let mut msg = field.message(ctx, TLS_CERTIFICATE)?;
    let chain = msg.required(ctx, "certificate_chain").and_then(|f| data_source(ctx, &f));
    let key = msg.required(ctx, "private_key").and_then(|f| data_source(ctx, &f));
    msg.finish(ctx);
    Some(TlsCertificate { certificate_chain: chain?, private_key: key? })
}

/// A `DataSource`; a relative file name resolves as Wasm modules' do.
fn data_source(ctx: &mut Ctx, field: &Field<'_>) -> Option<DataSource> {
    Some(match read_data_source(ctx, field)? {
        wasm::DataSource::File(name) => DataSource::File(ctx.base_dir.join(name)),
        wasm::DataSource::Inline(bytes) => DataSource::Inline(bytes),
    })
}

//! TLS end to end with a CA of the test's own: clusters with Envoy's `UpstreamTlsContext`
//! in front of a real TLS upstream that asks for a client certificate and tells what it
//! saw (SNI, ALPN, the client's certificate); the upstream's certificate checked against a
//! CA and subject alternative names, or not at all; the TCP proxy with TLS on both sides;
//! and listeners that require client certificates (mTLS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use common::{admin_get, echo_upstream, replace, start, stat, until};

/// A CA, and certificates it issues, written as PEM files in a directory of their own.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("wasmproxy-upstream-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_params: params, ca_key }
    }

    /// A certificate for `names`, issued by the CA: its chain and key files' paths.
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.issue_with(file, names, |_| {})
    }

    /// [`Pki::issue`], its parameters changed by `change` first.
    fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        change: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        change(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::new(self.ca_params.clone(), &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (chain, key_file) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}-key.pem")));
        std::fs::write(&chain, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (chain, key_file)
    }

    /// A CRL from the CA revoking the certificates in these PEM files, written to `file`.
    fn revoke(&self, file: &str, certificates: &[&PathBuf]) -> PathBuf {
        let revoked_certs = certificates
            .iter()
            .map(|path| {
                let der = CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap();
                let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
                rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&rcgen::Issuer::new(self.ca_params.clone(), &self.ca_key)).unwrap();
        let path = self.dir.join(file);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// The upstream's TLS settings: its certificate, ALPN h2 and http/1.1, and client
/// certificates asked for and checked against the CA when sent.
fn upstream_config(pki: &Pki, (chain, key): &(PathBuf, PathBuf)) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(chain).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).allow_unauthenticated().build().unwrap();
    let mut config =
        rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// An HTTPS upstream answering every request with what the handshake settled:
/// `sni=<name> alpn=<protocol> client_cert=<yes|no>`.
fn https_upstream(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let (_, session) = tls.get_ref();
                    let seen = format!(
                        "sni={} alpn={} client_cert={}",
                        session.server_name().unwrap_or("none"),
                        session.alpn_protocol().map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned()),
                        if session.peer_certificates().is_some() { "yes" } else { "no" },
                    );
                    let service = service_fn(move |_req| {
                        let seen = seen.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes::Bytes::from(seen))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    addr
}

/// A cluster named `name` to `addr`, with these lines of `UpstreamTlsContext` (and HTTP/2
/// if `h2`).
fn cluster(name: &str, addr: SocketAddr, tls: &str, h2: bool) -> String {
    let protocol = if h2 {
        "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        \
         explicit_http_config: { http2_protocol_options: {} }\n"
    } else {
        ""
    };
    format!(
        "  - name: {name}\n{protocol}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        \
         - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n    transport_socket:\n      \
         name: envoy.transport_sockets.tls\n      typed_config:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{tls}",
        addr.port()
    )
}

fn route(prefix: &str, cluster: &str) -> String {
    format!("              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: {cluster} }}\n")
}

fn bootstrap(routes: &str, clusters: &str) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
{clusters}"#
    )
}

/// `GET path` over plain HTTP/1.1: the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_from(addr, path, "x")
}

/// `GET path` for `host` over plain HTTP/1.1: the status and the body.
fn get_from(addr: SocketAddr, path: &str, host: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn requests_go_to_tls_upstreams_checked_as_envoy_checks_them() {
    let pki = Pki::new("http");
    let backend = pki.issue("backend", &["backend.example"]);
    let client = pki.issue("client", &["proxy.example"]);
    let upstream = https_upstream(upstream_config(&pki, &backend));
    let validation = |san: &str| {
        format!(
            "          validation_context:\n            trusted_ca: {{ filename: \"{}\" }}\n            \
             match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: {san} }} }}]\n",
            pki.path("ca.pem")
        )
    };
    let client_cert = format!(
        "          tls_certificates:\n          - certificate_chain: {{ filename: \"{}\" }}\n            \
         private_key: {{ filename: \"{}\" }}\n",
        client.0.display(),
        client.1.display()
    );
    let clusters = [
        cluster(
            "checked",
            upstream,
            &format!(
                "        sni: backend.example\n        common_tls_context:\n{}{client_cert}",
                validation("backend.example")
            ),
            false,
        ),
        cluster(
            "wrong_name",
            upstream,
            &format!("        common_tls_context:\n{}", validation("other.example")),
            false,
        ),
        cluster("unchecked", upstream, "", true),
    ];
    let routes = [route("/checked", "checked"), route("/wrong", "wrong_name"), route("/unchecked", "unchecked")];
    let server = start(&bootstrap(&routes.concat(), &clusters.concat()), 1);
    let addr = server.listeners[0].1;

    // SNI and the client certificate as configured; ALPN http/1.1 for an HTTP/1.1 cluster.
    assert_eq!(get(addr, "/checked"), (200, "sni=backend.example alpn=http/1.1 client_cert=yes".into()));
    // No validation context: nothing checked, no SNI; h2 offered for an HTTP/2 cluster.
    assert_eq!(get(addr, "/unchecked"), (200, "sni=none alpn=h2 client_cert=no".into()));
    // A certificate without the name asked for: the connection fails, 503 as in Envoy.
    let (status, body) = get(addr, "/wrong");
    assert_eq!(status, 503);
    assert!(body.starts_with("upstream connect error or disconnect/reset before headers"), "{body}");
    assert_eq!(stat(&server, "cluster.checked.ssl.handshake"), 1);
    assert_eq!(stat(&server, "cluster.checked.ssl.versions.TLSv1.2"), 1, "Envoy's client default: TLS 1.2 at most");
    assert_eq!(stat(&server, "cluster.wrong_name.ssl.fail_verify_san"), 1);
    assert_eq!(stat(&server, "cluster.wrong_name.ssl.connection_error"), 0);
    assert_eq!(stat(&server, "cluster.wrong_name.upstream_cx_connect_fail"), 1);

    // Admin's /certs: each cluster's CA and client certificate, in order, as Envoy shows them.
    let certs: serde_json::Value = serde_json::from_str(&admin_get(&server, "/certs")).unwrap();
    let contexts = certs["certificates"].as_array().unwrap();
    assert_eq!(contexts.len(), 3, "{certs}");
    let ca = &contexts[0]["ca_cert"][0];
    assert_eq!(ca["path"], pki.path("ca.pem"));
    assert_eq!(ca["subject_alt_names"], serde_json::json!([]));
    let days: u64 = ca["days_until_expiration"].as_str().unwrap().parse().unwrap();
    assert!(days > 300, "rcgen's certificates are valid for years: {ca}");
    let shown = &contexts[0]["cert_chain"][0];
    assert_eq!(shown["path"], client.0.display().to_string());
    assert_eq!(shown["subject_alt_names"], serde_json::json!([{ "dns": "proxy.example" }]));
    assert!(shown["valid_from"].as_str().unwrap().ends_with('Z'), "{shown}");
    assert_eq!(contexts[1]["ca_cert"][0]["path"], pki.path("ca.pem"));
    assert_eq!(contexts[1]["cert_chain"], serde_json::json!([]));
    assert_eq!(contexts[2], serde_json::json!({ "ca_cert": [], "cert_chain": [] }));
    server.stop();
}

/// An HTTPS upstream that answers each request with the DNS names of the client
/// certificate it was sent (`client=<names>`, `client=none`) and closes the connection.
fn closing_https_upstream(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let Ok(session) = rustls::ServerConnection::new(config.clone()) else { return };
            let mut tls = rustls::StreamOwned::new(session, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let names = tls.conn.peer_certificates().map_or("none".to_string(), |chain| {
                let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
                let san = cert.subject_alternative_name().unwrap().unwrap();
                san.value.general_names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
            });
            let body = format!("client={names}");
            let _ = write!(tls, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    addr
}

#[test]
fn a_clusters_client_certificate_and_ca_from_sds_files_rotate_without_a_restart() {
    let pki = Pki::new("cluster-sds");
    let other = Pki::new("cluster-sds-other");
    let backend = pki.issue("backend", &["backend.example"]);
    let (first, second) = (pki.issue("first", &["first.example"]), pki.issue("second", &["second.example"]));
    let upstream = closing_https_upstream(upstream_config(&pki, &backend));
    let secret = |name: &str, version: &str, body: String| {
        let path = pki.dir.join(format!("{name}.yaml"));
        let text = format!(
            "version_info: {version}\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: {name}\n  {body}\n"
        );
        replace(&path, text);
        path
    };
    let certificate = |(chain, key): &(PathBuf, PathBuf)| {
        format!(
            "tls_certificate: {{ certificate_chain: {{ filename: \"{}\" }}, private_key: {{ filename: \"{}\" }} }}",
            chain.display(),
            key.display()
        )
    };
    let ca = |pki: &Pki| format!("validation_context: {{ trusted_ca: {{ filename: \"{}\" }} }}", pki.path("ca.pem"));
    let client_file = secret("client", "one", certificate(&first));
    let ca_file = secret("upstream-ca", "one", ca(&pki));
    let tls = format!(
        "        common_tls_context:\n          tls_certificate_sds_secret_configs:\n          - name: client\n            \
         sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n          combined_validation_context:\n            \
         validation_context_sds_secret_config:\n              name: upstream-ca\n              \
         sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n            \
         default_validation_context: {{ match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: backend.example }} }}] }}\n",
        client_file.display(),
        ca_file.display()
    );
    let yaml = bootstrap(&route("/", "backend"), &cluster("backend", upstream, &tls, false));
    let server = start(&format!("node: {{ id: edge-1, cluster: edge }}\n{yaml}"), 1);
    let addr = server.listeners[0].1;
    assert_eq!(get(addr, "/"), (200, "client=DNSName(first.example)".into()));
    // Each request on a new connection (the upstream closes it), resuming the session.
    assert_eq!(get(addr, "/"), (200, "client=DNSName(first.example)".into()));
    assert_eq!(counted(&server, "cluster.backend.ssl.session_reused", 1), 1);

    // The client certificate replaced: new connections present the new one.
    secret("client", "two", certificate(&second));
    assert_eq!(counted(&server, "sds.client.update_success", 2), 2);
    assert_eq!(get(addr, "/"), (200, "client=DNSName(second.example)".into()));
    assert_eq!(stat(&server, "cluster.backend.ssl.session_reused"), 1, "no session made with the old one resumed");
    let certs: serde_json::Value = serde_json::from_str(&admin_get(&server, "/certs")).unwrap();
    assert_eq!(
        certs["certificates"][0]["cert_chain"][0]["subject_alt_names"],
        serde_json::json!([{ "dns": "second.example" }])
    );

    // A certificate with an OCSP staple: rejected, as a cluster presents none; the last
    // good one stays.
    let stapled = pki.issue_with("stapled", &["third.example"], |p| {
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x61]))
    });
    let staple = ocsp_file(&pki, "stapled.der", &[0x61], "20991231000000Z");
    let mut with_staple = certificate(&stapled);
    with_staple.insert_str(with_staple.len() - 2, &format!(", ocsp_staple: {{ filename: \"{}\" }}", staple.display()));
    secret("client", "three", with_staple);
    assert_eq!(counted(&server, "sds.client.update_rejected", 1), 1);
    assert_eq!(get(addr, "/"), (200, "client=DNSName(second.example)".into()));

    // The CA replaced by one that did not issue the upstream's certificate: refused.
    secret("upstream-ca", "two", ca(&other));
    assert_eq!(counted(&server, "sds.upstream-ca.update_success", 2), 2);
    assert_eq!(get(addr, "/").0, 503);
    assert_eq!(stat(&server, "cluster.backend.ssl.fail_verify_error"), 1);
    let certs: serde_json::Value = serde_json::from_str(&admin_get(&server, "/certs")).unwrap();
    assert_eq!(certs["certificates"][0]["ca_cert"][0]["path"], other.path("ca.pem"));

    // And back: the default context's SAN matcher still applies with the merged CA.
    secret("upstream-ca", "three", ca(&pki));
    assert_eq!(counted(&server, "sds.upstream-ca.update_success", 3), 3);
    assert_eq!(get(addr, "/").0, 200);
    server.stop();

    // Started with the stapled certificate: refused, naming the field.
    let config = wasmproxy_config::load_str(&format!("node: {{ id: edge-1, cluster: edge }}\n{yaml}"), Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let Err(e) = wasmproxy_proxy::Server::start(config, Default::default()) else { panic!("started") };
    let refusal =
        "tls_certificates[0].ocsp_staple: a cluster's client certificate with an OCSP staple is not supported";
    assert!(e.to_string().contains(refusal), "{e}");
}

#[test]
fn a_cluster_with_secrets_starts_beside_an_xds_control_plane_but_cannot_be_its_cluster() {
    let pki = Pki::new("xds-secrets");
    let client = pki.issue("client", &["proxy.example"]);
    let secrets = format!(
        "  secrets:\n  - name: client\n    tls_certificate: {{ certificate_chain: {{ filename: \"{}\" }}, \
         private_key: {{ filename: \"{}\" }} }}\n",
        client.0.display(),
        client.1.display()
    );
    let tls = "        common_tls_context:\n          tls_certificate_sds_secret_configs: [{ name: client }]\n";
    // (Nothing listens on port 1: start-up waits out the initial fetch, made short.)
    let ads = wasmproxy_conformance::config::ads_bootstrap("edge-1", "GRPC", "1").replace(
        "{ ads: {}, resource_api_version: V3 }",
        "{ ads: {}, resource_api_version: V3, initial_fetch_timeout: 0.1s }",
    );
    // Another static cluster takes its client certificate from a secret: start-up goes on.
    let yaml = format!("{ads}{}{secrets}", cluster("backend", "127.0.0.1:1".parse().unwrap(), tls, false));
    let config = wasmproxy_config::load_str(&yaml, std::path::Path::new(".")).unwrap();
    let server = wasmproxy_proxy::Server::start(config, Default::default()).unwrap_or_else(|e| panic!("{e}"));
    server.stop();
    // The control plane's own cluster cannot: the xDS streams' clusters take no secrets.
    let own = yaml.replacen("  - name: xds_cluster\n", &format!("  - name: xds_cluster\n    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{tls}"), 1);
    let config = wasmproxy_config::load_str(&own, std::path::Path::new(".")).unwrap();
    let error = wasmproxy_proxy::Server::start(config, Default::default()).err().unwrap().to_string();
    assert!(
        error.contains(
            "secret \"client\": secrets are not supported by wasmproxy for the clusters xDS streams go through"
        ),
        "{error}"
    );
}

#[test]
fn auto_sni_names_each_http2_connection_after_its_host_and_checks_the_name_even_without_a_ca() {
    let pki = Pki::new("auto-sni");
    let upstream = https_upstream(upstream_config(&pki, &pki.issue("backend", &["backend.example", "*.w.example"])));
    let auto = cluster("auto", upstream, "", true).replace(
        "        explicit_http_config:",
        "        upstream_http_protocol_options: { auto_sni: true, auto_san_validation: true }\n        explicit_http_config:",
    );
    assert!(auto.contains("auto_sni"), "{auto}");
    let server = start(&bootstrap(&route("/", "auto"), &auto), 1);
    let addr = server.listeners[0].1;

    assert_eq!(get_from(addr, "/", "backend.example:8443"), (200, "sni=backend.example alpn=h2 client_cert=no".into()));
    assert_eq!(get_from(addr, "/", "api.w.example"), (200, "sni=api.w.example alpn=h2 client_cert=no".into()));
    // A host the certificate does not name: refused, though no CA is configured.
    assert_eq!(get_from(addr, "/", "other.example").0, 503);
    assert_eq!(stat(&server, "cluster.auto.ssl.fail_verify_san"), 1);
    // One HTTP/2 connection per host, each reused for its host only.
    assert_eq!(get_from(addr, "/", "backend.example"), (200, "sni=backend.example alpn=h2 client_cert=no".into()));
    assert_eq!(get_from(addr, "/", "api.w.example").0, 200);
    assert_eq!(stat(&server, "cluster.auto.upstream_cx_total"), 3);
    assert_eq!(stat(&server, "cluster.auto.ssl.handshake"), 2);
    server.stop();
}

#[test]
fn a_certificate_from_another_ca_or_expired_is_refused() {
    let pki = Pki::new("other-ca");
    let stranger = Pki::new("stranger");
    let backend = stranger.issue("backend", &["backend.example"]);
    let upstream = https_upstream(upstream_config(&stranger, &backend));
    let tls = format!(
        "        common_tls_context:\n          validation_context:\n            trusted_ca: {{ filename: \"{}\" }}\n",
        pki.path("ca.pem")
    );
    // And an upstream whose certificate from the trusted CA has expired.
    let expired = pki.issue_with("expired", &["backend.example"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let stale = https_upstream(upstream_config(&pki, &expired));
    let clusters = [cluster("strict", upstream, &tls, false), cluster("stale", stale, &tls, false)];
    let server =
        start(&bootstrap(&[route("/strict", "strict"), route("/stale", "stale")].concat(), &clusters.concat()), 1);
    assert_eq!(get(server.listeners[0].1, "/strict").0, 503);
    assert_eq!(stat(&server, "cluster.strict.ssl.fail_verify_error"), 1);
    let (status, body) = get(server.listeners[0].1, "/stale");
    assert_eq!(status, 503);
    assert!(body.contains("remote connection failure"), "{body}");
    assert_eq!(stat(&server, "cluster.stale.ssl.fail_verify_error"), 1);
    server.stop();
}

#[test]
fn the_tcp_proxy_terminates_tls_and_originates_it() {
    let pki = Pki::new("tcp");
    let backend = pki.issue("backend", &["backend.example"]);
    let front = pki.issue("front", &["front.example"]);
    // The upstream echoes what comes through its TLS session.
    let config = upstream_config(&pki, &backend);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let session = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(session, tcp);
            let mut buf = [0u8; 1024];
            while let Ok(n) = tls.read(&mut buf) {
                if n == 0 || tls.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let yaml = format!(
        r#"static_resources:
  listeners:
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{}" }}
              private_key: {{ filename: "{}" }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
  clusters:
{}"#,
        front.0.display(),
        front.1.display(),
        cluster(
            "backend",
            upstream,
            &format!(
                "        sni: backend.example\n        common_tls_context:\n          validation_context:\n            \
                 trusted_ca: {{ filename: \"{}\" }}\n",
                pki.path("ca.pem")
            ),
            false
        )
    );
    let server = start(&yaml, 1);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("front.example").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let tcp = TcpStream::connect(server.listeners[0].1).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(session, tcp);
    tls.write_all(b"through two sessions").unwrap();
    let mut back = [0u8; 20];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"through two sessions");
    drop(tls);
    server.stop();
}

/// A TCP proxy listener terminating TLS with `front` and requiring a client certificate
/// from the CA naming `client.example`, to a plain echo upstream.
fn mtls_listener(pki: &Pki, front: &(PathBuf, PathBuf), echo: SocketAddr) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: mtls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{}" }}
              private_key: {{ filename: "{}" }}
            validation_context:
              trusted_ca: {{ filename: "{}" }}
              match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: client.example }} }}]
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
  clusters:
  - name: echo
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        front.0.display(),
        front.1.display(),
        pki.path("ca.pem"),
        echo.port()
    )
}

/// Connects over TLS trusting the CA, with `client` as the client certificate if given;
/// sends `ping` and returns what came back, or the error.
fn ping(pki: &Pki, addr: SocketAddr, client: Option<&(PathBuf, PathBuf)>) -> Result<Vec<u8>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_file_iter(chain).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from("front.example").unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(Arc::new(config), name).unwrap(), tcp);
    tls.write_all(b"ping")?;
    let mut back = [0u8; 4];
    tls.read_exact(&mut back)?;
    Ok(back.to_vec())
}

#[test]
fn a_listener_requires_client_certificates_from_its_ca_with_the_right_name() {
    let pki = Pki::new("mtls");
    let front = pki.issue("front", &["front.example"]);
    let good = pki.issue("client", &["client.example"]);
    let misnamed = pki.issue("misnamed", &["intruder.example"]);
    let server = start(&mtls_listener(&pki, &front, echo_upstream()), 1);
    let addr = server.listeners[0].1;
    assert_eq!(ping(&pki, addr, Some(&good)).unwrap(), b"ping");
    assert!(ping(&pki, addr, None).is_err(), "no client certificate: refused");
    assert!(ping(&pki, addr, Some(&misnamed)).is_err(), "a name the matchers do not take: refused");
    let stranger = Pki::new("mtls-stranger");
    let foreign = stranger.issue("client", &["client.example"]);
    assert!(ping(&pki, addr, Some(&foreign)).is_err(), "another CA's certificate: refused");
    let ssl = |name: &str| stat(&server, &format!("listener.127.0.0.1_0.ssl.{name}"));
    assert_eq!(ssl("handshake"), 1);
    // The client may see the refusal before the server has counted it.
    assert_eq!(counted(&server, "listener.127.0.0.1_0.ssl.fail_verify_no_cert", 1), 1);
    assert_eq!(counted(&server, "listener.127.0.0.1_0.ssl.fail_verify_san", 1), 1);
    assert_eq!(counted(&server, "listener.127.0.0.1_0.ssl.fail_verify_error", 1), 1);
    assert_eq!(ssl("connection_error"), 0, "failed checks are not connection errors, as in Envoy");
    server.stop();
}

#[test]
fn certificates_a_crl_revokes_are_refused_on_both_sides() {
    let pki = Pki::new("crl");
    let front = pki.issue("front", &["front.example"]);
    let good = pki.issue("client", &["client.example"]);
    let revoked = pki.issue("revoked", &["client.example"]);
    let crl = pki.revoke("clients.crl", &[&revoked.0]);
    let crl_line = |indent: &str| format!("{indent}crl: {{ filename: \"{}\" }}\n", crl.display());
    let yaml = mtls_listener(&pki, &front, echo_upstream()).replace(
        "              match_typed_subject_alt_names:",
        &format!("{}              match_typed_subject_alt_names:", crl_line("              ")),
    );
    assert!(yaml.contains("crl:"), "{yaml}");
    let server = start(&yaml, 1);
    let addr = server.listeners[0].1;
    assert_eq!(ping(&pki, addr, Some(&good)).unwrap(), b"ping");
    assert!(ping(&pki, addr, Some(&revoked)).is_err(), "a revoked client certificate: refused");
    assert_eq!(counted(&server, "listener.127.0.0.1_0.ssl.fail_verify_error", 1), 1);
    server.stop();

    // An upstream whose certificate the cluster's CRL revokes: a connection failure.
    let backend = pki.issue("backend", &["backend.example"]);
    let upstream = https_upstream(upstream_config(&pki, &backend));
    let validation = format!(
        "        common_tls_context:\n          validation_context:\n            trusted_ca: {{ filename: \"{}\" }}\n{}",
        pki.path("ca.pem"),
        crl_line("            ")
    );
    let upstream_crl = pki.revoke("upstreams.crl", &[&backend.0]);
    let clusters = [
        cluster("clean", upstream, &validation, false),
        cluster(
            "revoked",
            upstream,
            &validation.replace(&crl.display().to_string(), &upstream_crl.display().to_string()),
            false,
        ),
    ];
    let server =
        start(&bootstrap(&[route("/clean", "clean"), route("/revoked", "revoked")].concat(), &clusters.concat()), 1);
    let addr = server.listeners[0].1;
    assert_eq!(get(addr, "/clean").0, 200);
    assert_eq!(get(addr, "/revoked").0, 503);
    assert_eq!(stat(&server, "cluster.revoked.ssl.fail_verify_error"), 1);
    assert_eq!(stat(&server, "cluster.clean.ssl.handshake"), 1);
    server.stop();
}

#[test]
fn a_returning_client_resumes_its_session_unless_resumption_is_disabled() {
    let pki = Pki::new("resume");
    let front = pki.issue("front", &["front.example"]);
    let echo = echo_upstream();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    for (extra, reused) in [
        ("", 1),
        (
            "          disable_stateless_session_resumption: true\n          disable_stateful_session_resumption: true\n",
            0,
        ),
    ] {
        let server = start(&tls_listener(&pki, &front, echo, extra), 1);
        // One client configuration (and so one session cache) for both connections.
        let client =
            Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots.clone()).with_no_client_auth());
        for _ in 0..2 {
            ping_front(&client, server.listeners[0].1);
        }
        assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.handshake"), 2);
        assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.session_reused"), reused, "{extra:?}");
        server.stop();
    }
}

/// A TLS connection to `front.example` at `addr` made with `client`, after one echoed `ping`.
fn ping_front(
    client: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("front.example").unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(client.clone(), name).unwrap(), tcp);
    tls.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    tls.read_exact(&mut back).unwrap();
    tls
}

/// The mTLS listener without its client certificate checks, with these lines of
/// `DownstreamTlsContext` in their place.
fn tls_listener(pki: &Pki, front: &(PathBuf, PathBuf), echo: SocketAddr, context_lines: &str) -> String {
    mtls_listener(pki, front, echo).replace("          require_client_certificate: true\n", context_lines).replace(
        &format!(
            "            validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n              \
             match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: client.example }} }}]\n",
            pki.path("ca.pem")
        ),
        "",
    )
}

/// A session ticket key file of 80 `byte`s, in the PKI's directory.
fn ticket_key(pki: &Pki, file: &str, byte: u8) -> PathBuf {
    let path = pki.dir.join(file);
    std::fs::write(&path, [byte; 80]).unwrap();
    path
}

/// Key files as a flow list of `DataSource`s.
fn key_files(keys: &[&PathBuf]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{{ filename: \"{}\" }}", k.display())).collect();
    format!("[{}]", keys.join(", "))
}

#[test]
fn instances_sharing_session_ticket_keys_resume_each_others_sessions() {
    let pki = Pki::new("ticket-keys");
    let front = pki.issue("front", &["front.example"]);
    let echo = echo_upstream();
    let key = |file: &str, byte: u8| ticket_key(&pki, file, byte);
    let (shared, other, third) = (key("shared.key", 7), key("other.key", 9), key("third.key", 11));
    let listener = |keys: &[&PathBuf]| {
        tls_listener(&pki, &front, echo, &format!("          session_ticket_keys: {{ keys: {} }}\n", key_files(keys)))
    };
    let first = start(&listener(&[&shared]), 1);
    // The second instance seals with a newer key, and still opens tickets of the shared one.
    let second = start(&listener(&[&other, &shared]), 1);
    let stranger = start(&listener(&[&third]), 1);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    // Only tickets: the proxies' session caches are their own.
    client.resumption = rustls::client::Resumption::in_memory_sessions(8);
    let client = Arc::new(client);
    let resumed = |server: &wasmproxy_proxy::RunningServer| {
        ping_front(&client, server.listeners[0].1).conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    };
    assert!(!resumed(&first), "a first connection has no session to resume");
    assert!(resumed(&second), "a ticket the first instance sealed opens on the second");
    assert!(!resumed(&stranger), "an instance without the key makes a new session");
    // The client offers the stranger's newest ticket first, then one of the first's own.
    assert!(resumed(&first) || resumed(&first), "the first opens its own tickets");
    // A key of the wrong length stops start-up, naming it.
    let short = key("short.key", 1);
    std::fs::write(&short, [1u8; 79]).unwrap();
    let config = wasmproxy_config::load_str(&listener(&[&short]), std::path::Path::new(".")).unwrap();
    let error = wasmproxy_proxy::Server::start(config, Default::default()).err().unwrap().to_string();
    assert!(
        error.contains("session_ticket_keys.keys[0]: Incorrect TLS session ticket key length. Length 79"),
        "{error}"
    );
    for server in [first, second, stranger] {
        server.stop();
    }
}

#[test]
fn session_ticket_keys_from_an_sds_file_rotate_without_a_restart() {
    let pki = Pki::new("ticket-sds");
    let front = pki.issue("front", &["front.example"]);
    let echo = echo_upstream();
    let (old, new) = (ticket_key(&pki, "old.key", 3), ticket_key(&pki, "new.key", 5));
    let sds = pki.dir.join("tickets.yaml");
    let secret = |version: &str, keys: &[&PathBuf]| {
        format!(
            "version_info: {version}\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: tickets\n  session_ticket_keys: {{ keys: {} }}\n",
            key_files(keys)
        )
    };
    std::fs::write(&sds, secret("one", &[&old])).unwrap();
    let listener = |tickets: &str| tls_listener(&pki, &front, echo, tickets);
    let from_sds = format!(
        "node: {{ id: edge-1, cluster: edge }}\n{}",
        listener(&format!(
            "          session_ticket_keys_sds_secret_config:\n            name: tickets\n            \
             sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n",
            sds.display()
        ))
    );
    let rotating = start(&from_sds, 1);
    // Another instance, sealing and opening with the new key only.
    let newer = start(&listener(&format!("          session_ticket_keys: {{ keys: {} }}\n", key_files(&[&new]))), 1);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    // A fresh client (tickets only) takes a ticket from the rotating instance, then offers
    // it to the other one: which key sealed it.
    let sealed_with_new_key = || {
        let mut client = rustls::ClientConfig::builder().with_root_certificates(roots.clone()).with_no_client_auth();
        client.resumption = rustls::client::Resumption::in_memory_sessions(8);
        let client = Arc::new(client);
        ping_front(&client, rotating.listeners[0].1);
        ping_front(&client, newer.listeners[0].1).conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    };
    assert!(!sealed_with_new_key());
    assert_eq!(stat(&rotating, "sds.tickets.update_success"), 1);

    // The new key put first, moved into place: new tickets are sealed with it.
    replace(&sds, secret("two", &[&new, &old]).into_bytes());
    assert_eq!(counted(&rotating, "sds.tickets.update_success", 2), 2);
    assert!(sealed_with_new_key());

    // A key of the wrong length: refused, the last good keys stay.
    let short = pki.dir.join("short.key");
    std::fs::write(&short, [1u8; 79]).unwrap();
    replace(&sds, secret("three", &[&short]).into_bytes());
    assert_eq!(counted(&rotating, "sds.tickets.update_rejected", 1), 1);
    assert!(sealed_with_new_key());

    // A secret naming a certificate where ticket keys are wanted stops start-up.
    let wrong = from_sds.replace("name: tickets", "name: front");
    std::fs::write(
        pki.dir.join("front.yaml"),
        format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: front\n  tls_certificate:\n    certificate_chain: {{ filename: \"{}\" }}\n    private_key: {{ filename: \"{}\" }}\n",
            front.0.display(),
            front.1.display()
        ),
    )
    .unwrap();
    let wrong = wrong.replace(&sds.display().to_string(), &pki.dir.join("front.yaml").display().to_string());
    let config = wasmproxy_config::load_str(&wrong, std::path::Path::new(".")).unwrap();
    let error = wasmproxy_proxy::Server::start(config, Default::default()).err().unwrap().to_string();
    assert!(error.contains("secret \"front\" holds a tls_certificate, not session_ticket_keys"), "{error}");
    for server in [rotating, newer] {
        server.stop();
    }
}

/// Connects over TLS trusting the CA and returns the session (after one echoed `ping`) and
/// the certificate the server presented.
fn connect(pki: &Pki, addr: SocketAddr) -> (rustls::StreamOwned<rustls::ClientConnection, TcpStream>, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("front.example").unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(Arc::new(config), name).unwrap(), tcp);
    tls.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    tls.read_exact(&mut back).unwrap();
    let presented = tls.conn.peer_certificates().unwrap()[0].to_vec();
    (tls, presented)
}

#[test]
fn a_certificate_from_an_sds_file_rotates_without_a_restart_or_a_dropped_connection() {
    let pki = Pki::new("sds");
    let (chain, key) = pki.issue("front", &["front.example"]);
    let sds = pki.dir.join("sds.yaml");
    std::fs::write(
        &sds,
        format!(
            "version_info: one\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: front\n  tls_certificate:\n    certificate_chain: {{ filename: \"{}\" }}\n    private_key: {{ filename: \"{}\" }}\n",
            chain.display(),
            key.display()
        ),
    )
    .unwrap();
    let yaml = mtls_listener(&pki, &(chain.clone(), key.clone()), echo_upstream())
        .replace("          require_client_certificate: true\n", "")
        .replace(
            &format!(
                "            tls_certificates:\n            - certificate_chain: {{ filename: \"{}\" }}\n              \
                 private_key: {{ filename: \"{}\" }}\n            validation_context:\n              \
                 trusted_ca: {{ filename: \"{}\" }}\n              \
                 match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: client.example }} }}]\n",
                chain.display(),
                key.display(),
                pki.path("ca.pem")
            ),
            &format!(
                "            tls_certificate_sds_secret_configs:\n            - name: front\n              \
                 sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n",
                sds.display()
            ),
        );
    assert!(yaml.contains("tls_certificate_sds_secret_configs"), "{yaml}");
    // Envoy requires a named node for SDS.
    let yaml = format!("node: {{ id: edge-1, cluster: edge }}\n{yaml}");
    let server = start(&yaml, 1);
    let addr = server.listeners[0].1;
    let (mut open, first) = connect(&pki, addr);
    assert_eq!(first, CertificateDer::pem_file_iter(&chain).unwrap().next().unwrap().unwrap().to_vec());

    // A new certificate and key for the same name, moved into place as cert-manager does.
    let renewed = pki.issue("renewed", &["front.example"]);
    let renewed_der = CertificateDer::pem_file_iter(&renewed.0).unwrap().next().unwrap().unwrap().to_vec();
    replace(&key, std::fs::read(&renewed.1).unwrap());
    replace(&chain, std::fs::read(&renewed.0).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connect(&pki, addr).1 != renewed_der {
        assert!(std::time::Instant::now() < deadline, "the renewed certificate was never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Admin's /certs shows the certificate served now.
    let serial = |der: &[u8]| {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        cert.raw_serial().iter().skip_while(|b| **b == 0).map(|b| format!("{b:02x}")).collect::<String>()
    };
    let certs: serde_json::Value = serde_json::from_str(&admin_get(&server, "/certs")).unwrap();
    let shown = &certs["certificates"][0]["cert_chain"][0];
    assert_eq!(shown["serial_number"], serial(&renewed_der), "{certs}");
    assert_eq!(shown["path"], chain.display().to_string(), "{certs}");
    assert_eq!(shown["subject_alt_names"], serde_json::json!([{ "dns": "front.example" }]), "{certs}");
    assert_eq!(certs["certificates"][0]["ca_cert"], serde_json::json!([]), "{certs}");
    // The connection opened before the rotation goes on.
    open.write_all(b"more").unwrap();
    let mut back = [0u8; 4];
    open.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"more");

    // A broken certificate file: refused, the renewed one stays.
    // (A reload between the two moves above may have been rejected already: a key that
    // does not match its certificate.)
    let rejected = stat(&server, "sds.front.update_rejected");
    replace(&chain, b"not a certificate");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stat(&server, "sds.front.update_rejected") == rejected {
        assert!(std::time::Instant::now() < deadline, "the broken certificate was never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(connect(&pki, addr).1, renewed_der);
    assert!(stat(&server, "sds.front.update_success") >= 2);
    drop(open);
    server.stop();
}

#[test]
fn client_certificates_are_checked_against_a_ca_from_an_sds_file_that_rotates() {
    let pki = Pki::new("validation-sds");
    let next = Pki::new("validation-sds-next");
    let front = pki.issue("front", &["front.example"]);
    let (client, misnamed) = (pki.issue("client", &["client.example"]), pki.issue("misnamed", &["x.example"]));
    let next_client = next.issue("client", &["client.example"]);
    let sds = pki.dir.join("validation.yaml");
    let secret = |version: &str, ca: &str| {
        format!(
            "version_info: {version}\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: client-ca\n  validation_context: {{ trusted_ca: {{ filename: \"{ca}\" }} }}\n"
        )
    };
    std::fs::write(&sds, secret("one", &pki.path("ca.pem"))).unwrap();
    // The SAN matcher in the default context, the CA in the secret's, as Istio has them.
    let yaml = mtls_listener(&pki, &front, echo_upstream()).replace(
        &format!("            validation_context:\n              trusted_ca: {{ filename: \"{}\" }}\n", pki.path("ca.pem")),
        &format!(
            "            combined_validation_context:\n              validation_context_sds_secret_config:\n                \
             name: client-ca\n                sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n              \
             default_validation_context:\n  ",
            sds.display()
        ),
    );
    assert!(yaml.contains("default_validation_context:\n                match_typed"), "{yaml}");
    let server = start(&format!("node: {{ id: edge-1, cluster: edge }}\n{yaml}"), 1);
    let addr = server.listeners[0].1;
    assert_eq!(ping(&pki, addr, Some(&client)).unwrap(), b"ping");
    assert!(ping(&pki, addr, Some(&misnamed)).is_err(), "the default context's SAN matcher applies");
    assert!(ping(&pki, addr, Some(&next_client)).is_err(), "the next CA is not trusted yet");
    let ca_shown = || {
        let certs: serde_json::Value = serde_json::from_str(&admin_get(&server, "/certs")).unwrap();
        certs["certificates"][0]["ca_cert"][0]["path"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(ca_shown(), pki.path("ca.pem"));
    let resuming = client_config(&pki, &client);
    let mut open = ping_front(&resuming, addr);
    assert_eq!(ping_front(&resuming, addr).conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));

    // The secret now trusts the next CA only.
    replace(&sds, secret("two", &next.path("ca.pem")));
    assert_eq!(counted(&server, "sds.client-ca.update_success", 2), 2);
    assert_eq!(ping(&pki, addr, Some(&next_client)).unwrap(), b"ping");
    assert!(ping(&pki, addr, Some(&client)).is_err(), "the old CA is no longer trusted");
    // Nor is a session made under it resumed: its certificate is checked again, and refused.
    let name = rustls::pki_types::ServerName::try_from("front.example").unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut again = rustls::StreamOwned::new(rustls::ClientConnection::new(resuming, name).unwrap(), tcp);
    let echoed = again.write_all(b"ping").and_then(|()| again.read_exact(&mut [0u8; 4]));
    assert!(echoed.is_err(), "resumed past the CA's change");
    assert_eq!(ca_shown(), next.path("ca.pem"));
    open.write_all(b"more").unwrap();
    let mut back = [0u8; 4];
    open.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"more", "a connection checked before the change goes on");

    // A CA file that is not PEM: refused, the last good CA stays.
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    replace(&sds, secret("three", &garbage.display().to_string()));
    assert_eq!(counted(&server, "sds.client-ca.update_rejected", 1), 1);
    assert_eq!(ping(&pki, addr, Some(&next_client)).unwrap(), b"ping");
    assert!(ping(&pki, addr, Some(&misnamed)).is_err());
    drop(open);
    server.stop();

    // A secret of another kind is refused at start-up, naming it.
    let tickets = pki.dir.join("tickets.yaml");
    std::fs::write(
        &tickets,
        format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: client-ca\n  session_ticket_keys: {{ keys: [{{ filename: \"{}\" }}] }}\n",
            ticket_key(&pki, "t.key", 1).display()
        ),
    )
    .unwrap();
    let wrong = yaml.replace(&sds.display().to_string(), &tickets.display().to_string());
    let config =
        wasmproxy_config::load_str(&format!("node: {{ id: a, cluster: b }}\n{wrong}"), std::path::Path::new("."))
            .unwrap();
    let error = wasmproxy_proxy::Server::start(config, Default::default()).err().unwrap().to_string();
    assert!(error.contains("secret \"client-ca\" holds session_ticket_keys, not a validation_context"), "{error}");
}

/// A client trusting the CA, presenting `client`, keeping sessions to resume.
fn client_config(pki: &Pki, (chain, key): &(PathBuf, PathBuf)) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let chain = CertificateDer::pem_file_iter(chain).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    Arc::new(config)
}

#[test]
fn a_client_that_stalls_in_the_handshake_is_closed_at_the_chains_timeout() {
    let pki = Pki::new("stall");
    let front = pki.issue("front", &["front.example"]);
    let yaml = mtls_listener(&pki, &front, echo_upstream()).replacen(
        "      filters:\n",
        "      transport_socket_connect_timeout: 0.2s\n      filters:\n",
        1,
    );
    let server = start(&yaml, 1);
    let mut tcp = TcpStream::connect(server.listeners[0].1).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The start of a ClientHello, then nothing.
    tcp.write_all(b"\x16\x03\x01").unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5), "closed at the timeout, not the client's read timeout");
    assert_eq!(stat(&server, "listener.127.0.0.1_0.downstream_cx_transport_socket_connect_timeout"), 1);
    server.stop();
}

/// A counter once it reaches `expected` (at most 10 s later), or its last value.
fn counted(server: &wasmproxy_proxy::RunningServer, name: &str, expected: u64) -> u64 {
    let seen = until(|| stat(server, name).to_string(), |v| v == expected.to_string());
    seen.parse().unwrap_or(0)
}

/// A DER element: `tag`, then `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() >= 0x80 {
        out.extend([0x82, (content.len() >> 8) as u8]);
    }
    out.push(content.len() as u8);
    [out, content.to_vec()].concat()
}

/// An unsigned OCSP response (Envoy does not check the signature) saying the certificate
/// with `serial` is good until `next_update` (`YYYYMMDDHHMMSSZ`), written to `file`.
fn ocsp_file(pki: &Pki, file: &str, serial: &[u8], next_update: &str) -> PathBuf {
    let sha1 = der(0x30, &[der(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]), der(0x05, &[])].concat());
    let id = der(0x30, &[sha1, der(0x04, &[1; 20]), der(0x04, &[2; 20]), der(0x02, serial)].concat());
    let times = [der(0x18, b"20260101000000Z"), der(0xa0, &der(0x18, next_update.as_bytes()))].concat();
    let single = der(0x30, &[id, der(0x80, &[]), times].concat());
    let data =
        der(0x30, &[der(0xa2, &der(0x04, &[3; 20])), der(0x18, b"20260101000000Z"), der(0x30, &single)].concat());
    let signature = [der(0x30, &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])), der(0x03, &[0])];
    let basic = der(0x30, &[data, signature.concat()].concat());
    let oid = der(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01]);
    let response = der(0x30, &[der(0x0a, &[0]), der(0xa0, &der(0x30, &[oid, der(0x04, &basic)].concat()))].concat());
    let path = pki.dir.join(file);
    std::fs::write(&path, response).unwrap();
    path
}

#[test]
fn ocsp_responses_are_stapled_shown_in_certs_and_checked_at_start_up() {
    let pki = Pki::new("ocsp");
    let serial = [0x42, 0x17, 0x99];
    let with_serial =
        |p: &mut rcgen::CertificateParams| p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let front = pki.issue_with("front", &["front.example"], with_serial);
    let current = ocsp_file(&pki, "current.der", &serial, "20991231000000Z");
    let echo = echo_upstream();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let client = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let stapled = |policy: &str, staple: &Path| {
        let lines = format!("          ocsp_staple_policy: {policy}\n");
        let key_line = format!("              private_key: {{ filename: \"{}\" }}\n", front.1.display());
        let staple_line = format!("{key_line}              ocsp_staple: {{ filename: \"{}\" }}\n", staple.display());
        tls_listener(&pki, &front, echo, &lines).replace(&key_line, &staple_line)
    };

    // A current response is stapled for a client that asks (rustls's always does), and
    // /certs shows when it is current.
    let server = start(&stapled("MUST_STAPLE", &current), 1);
    ping_front(&client, server.listeners[0].1);
    assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_requests"), 1);
    assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_responses"), 1);
    let certs: serde_json::Value = serde_json::from_str(&admin_get(&server, "/certs")).unwrap();
    let ocsp = &certs["certificates"][0]["cert_chain"][0]["ocsp_details"];
    assert_eq!(ocsp["valid_from"], "2026-01-01T00:00:00Z", "{certs}");
    assert_eq!(ocsp["expiration"], "2099-12-31T00:00:00Z", "{certs}");
    server.stop();

    // An expired one under STRICT_STAPLING: the handshake is refused.
    let expired = ocsp_file(&pki, "expired.der", &serial, "20260102000000Z");
    let server = start(&stapled("STRICT_STAPLING", &expired), 1);
    let name = rustls::pki_types::ServerName::try_from("front.example").unwrap();
    let tcp = TcpStream::connect(server.listeners[0].1).unwrap();
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(client.clone(), name).unwrap(), tcp);
    let refused = tls.write_all(b"ping").and_then(|()| tls.read_exact(&mut [0u8; 4]));
    assert!(refused.unwrap_err().to_string().contains("HandshakeFailure"), "alert handshake_failure");
    assert_eq!(counted(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_failed", 1), 1);
    assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.connection_error"), 1);
    server.stop();

    // Responses that cannot be served stop start-up, in Envoy's words.
    let other = ocsp_file(&pki, "other.der", &[0x43], "20991231000000Z");
    let garbage = pki.dir.join("garbage.der");
    std::fs::write(&garbage, "not DER").unwrap();
    let must_staple = pki.issue_with("must", &["front.example"], |p| {
        let feature = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        p.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 24], feature));
    });
    let failing = [
        (
            stapled("LENIENT_STAPLING", &other),
            "tls_certificates[0].ocsp_staple: OCSP response does not match its TLS certificate",
        ),
        (
            stapled("LENIENT_STAPLING", &garbage),
            "tls_certificates[0].ocsp_staple: OCSP Response is not a well-formed ASN.1 SEQUENCE",
        ),
        (
            tls_listener(&pki, &front, echo, "          ocsp_staple_policy: MUST_STAPLE\n"),
            "tls_certificates[0]: Required OCSP response is missing from TLS context",
        ),
        (
            tls_listener(&pki, &must_staple, echo, ""),
            "tls_certificates[0]: OCSP response is required for must-staple certificate",
        ),
    ];
    for (yaml, error) in failing {
        let config = wasmproxy_config::load_str(&yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        let Err(e) = wasmproxy_proxy::Server::start(config, Default::default()) else { panic!("started: {error}") };
        assert!(e.to_string().contains(error), "{e}");
    }
}

#[test]
fn an_ocsp_response_from_an_sds_file_rotates_with_its_certificate_and_must_be_there_under_must_staple() {
    let pki = Pki::new("ocsp-sds");
    let issue = |file: &str, serial: &'static [u8]| {
        pki.issue_with(file, &["front.example"], |p| p.serial_number = Some(rcgen::SerialNumber::from_slice(serial)))
    };
    let (first, renewed) = (issue("first", &[0x51]), issue("renewed", &[0x52]));
    let (first_ocsp, renewed_ocsp) = (
        ocsp_file(&pki, "first.der", &[0x51], "20991231000000Z"),
        ocsp_file(&pki, "renewed.der", &[0x52], "20991231000000Z"),
    );
    let sds = pki.dir.join("sds.yaml");
    let secret = |version: &str, (chain, key): &(PathBuf, PathBuf), staple: Option<&PathBuf>| {
        let staple = staple.map(|s| format!("    ocsp_staple: {{ filename: \"{}\" }}\n", s.display()));
        format!(
            "version_info: {version}\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: front\n  tls_certificate:\n    certificate_chain: {{ filename: \"{}\" }}\n    private_key: {{ filename: \"{}\" }}\n{}",
            chain.display(),
            key.display(),
            staple.unwrap_or_default()
        )
    };
    std::fs::write(&sds, secret("one", &first, Some(&first_ocsp))).unwrap();
    let inline = format!(
        "            tls_certificates:\n            - certificate_chain: {{ filename: \"{}\" }}\n              \
         private_key: {{ filename: \"{}\" }}\n",
        first.0.display(),
        first.1.display()
    );
    let from_sds = format!(
        "            tls_certificate_sds_secret_configs:\n            - name: front\n              \
         sds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n",
        sds.display()
    );
    let yaml = tls_listener(&pki, &first, echo_upstream(), "          ocsp_staple_policy: MUST_STAPLE\n")
        .replace(&inline, &from_sds);
    assert!(yaml.contains("tls_certificate_sds_secret_configs"), "{yaml}");
    let server = start(&format!("node: {{ id: edge-1, cluster: edge }}\n{yaml}"), 1);
    let addr = server.listeners[0].1;
    connect(&pki, addr);
    assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_responses"), 1);

    // The renewed certificate with its own response: served and stapled.
    let der = |chain: &PathBuf| CertificateDer::pem_file_iter(chain).unwrap().next().unwrap().unwrap().to_vec();
    replace(&sds, secret("two", &renewed, Some(&renewed_ocsp)));
    until(|| (connect(&pki, addr).1 == der(&renewed.0)).to_string(), |served| served == "true");
    let stapled = stat(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_responses");
    assert_eq!(stapled, stat(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_requests"), "every handshake stapled");
    let certs: serde_json::Value = serde_json::from_str(&admin_get(&server, "/certs")).unwrap();
    assert_eq!(certs["certificates"][0]["cert_chain"][0]["serial_number"], "52", "{certs}");

    // Without a response, under MUST_STAPLE: rejected; the renewed one stays, stapled.
    replace(&sds, secret("three", &first, None));
    assert_eq!(counted(&server, "sds.front.update_rejected", 1), 1);
    assert_eq!(connect(&pki, addr).1, der(&renewed.0));
    assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_responses"), stapled + 1);
    assert_eq!(stat(&server, "listener.127.0.0.1_0.ssl.ocsp_staple_failed"), 0);
    server.stop();
}

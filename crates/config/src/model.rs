//! The validated model of a configuration: what the proxy runs, with Envoy's defaults
//! filled in. Every type here is plain data; `crate::load` builds it from Envoy YAML/JSON.

use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration (Envoy's `Bootstrap`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// `admin.address`, if an admin listener is configured.
    pub admin: Option<Admin>,
    /// `static_resources.listeners`.
    pub listeners: Vec<Listener>,
    /// `static_resources.clusters`.
    pub clusters: Vec<Cluster>,
    /// `bootstrap_extensions` of type `envoy.bootstrap.wasm` (`WasmService`).
    pub wasm_services: Vec<WasmService>,
    /// `node`: who this proxy is, as plugins see it in `xds.node`.
    pub node: Node,
    /// `layered_runtime` static layer values, flattened to `key → value` (e.g.
    /// `"wasm.callback_deadline_ms" → "500"`).
    pub runtime: Vec<(String, String)>,
    /// `stats_flush_interval` (Envoy's default: 5 s): histograms and `server.uptime` are
    /// refreshed on it.
    pub stats_flush_interval: Duration,
    /// `stats_config`: tags extracted from stat names.
    pub stats_config: StatsConfig,
    /// The configuration as given, as JSON (admin `/config_dump`).
    pub document: serde_json::Value,
    /// `dynamic_resources`: listeners and clusters read from files and read again when
    /// the files change.
    pub dynamic_resources: DynamicResources,
    /// `static_resources.secrets`.
    pub secrets: Vec<Secret>,
}

impl Bootstrap {
    /// Every Wasm plugin of the static configuration: the listeners' and the services'.
    pub fn wasm_plugins(&self) -> Vec<&WasmPlugin> {
        let services = self.wasm_services.iter().map(|s| &s.plugin);
        self.listeners.iter().flat_map(Listener::wasm_plugins).chain(services).collect()
    }
}

impl Listener {
    /// Its filter chains, the default one last.
    pub fn chains(&self) -> impl Iterator<Item = &FilterChain> {
        self.filter_chains.iter().chain(&self.default_filter_chain)
    }

    /// The field of the `index`th of [`Listener::chains`] (`filter_chains[1]`,
    /// `default_filter_chain`), for errors.
    pub fn chain_field(&self, index: usize) -> String {
        match index < self.filter_chains.len() {
            true => format!("filter_chains[{index}]"),
            false => "default_filter_chain".to_string(),
        }
    }

    /// Every Wasm plugin the listener runs: network filters, HTTP filters (the default of
    /// a discovered one), access loggers (of connection managers and TCP proxies).
    pub fn wasm_plugins(&self) -> Vec<&WasmPlugin> {
        let mut plugins = Vec::new();
        let filters = self.chains().flat_map(|c| &c.filters);
        for filter in filters {
            match filter {
                NetworkFilter::Wasm(plugin) => plugins.push(plugin),
                NetworkFilter::Discovered(d) => plugins.extend(d.default.as_ref()),
                NetworkFilter::HttpConnectionManager(hcm) => {
                    plugins.extend(hcm.http_filters.iter().filter_map(|f| match f {
                        HttpFilter::Wasm(plugin) => Some(&**plugin),
                        HttpFilter::Discovered(d) => d.default.as_ref(),
                        HttpFilter::Router | HttpFilter::Native(_) => None,
                    }));
                    plugins.extend(hcm.access_logs.iter().filter_map(|log| match &log.sink {
                        AccessLogSink::Wasm(plugin) => Some(&**plugin),
                        _ => None,
                    }));
                }
                NetworkFilter::TcpProxy(proxy) => {
                    plugins.extend(proxy.access_logs.iter().filter_map(|log| match &log.sink {
                        AccessLogSink::Wasm(plugin) => Some(&**plugin),
                        _ => None,
                    }));
                }
            }
        }
        plugins
    }
}

/// `dynamic_resources`: where listeners (LDS) and clusters (CDS) come from besides
/// `static_resources`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicResources {
    /// `lds_config`.
    pub lds: Option<ConfigSource>,
    /// `cds_config`.
    pub cds: Option<ConfigSource>,
    /// `ads_config`: the aggregated discovery stream the `ads` sources use.
    pub ads: Option<ApiConfigSource>,
}

/// An `ApiConfigSource` over gRPC: `ads_config`, or a source's `api_config_source` (a
/// stream of its own for each type).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiConfigSource {
    /// `api_type: DELTA_GRPC` (the incremental protocol); else `GRPC` (state of the world).
    pub delta: bool,
    /// `grpc_services[0].envoy_grpc.cluster_name`: a static cluster.
    pub cluster: String,
    /// `envoy_grpc.authority` (the cluster's name when empty).
    pub authority: String,
    /// `set_node_on_first_message_only`.
    pub set_node_on_first_message_only: bool,
}

/// A `ConfigSource`: a file, the ADS stream, or a gRPC stream of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `path_config_source`.
    File(FileSource),
    /// `ads: {}`.
    Ads {
        /// `initial_fetch_timeout` (15 s unless set; zero: no limit): how long the first
        /// answer is waited for before what depends on it goes on without it.
        initial_fetch_timeout: std::time::Duration,
    },
    /// `api_config_source` with `api_type` GRPC or DELTA_GRPC.
    Grpc {
        /// The stream's settings.
        api: ApiConfigSource,
        /// As for `Ads`.
        initial_fetch_timeout: std::time::Duration,
    },
}

impl ConfigSource {
    /// The file, if it is one.
    pub fn file(&self) -> Option<&FileSource> {
        match self {
            ConfigSource::File(f) => Some(f),
            ConfigSource::Ads { .. } | ConfigSource::Grpc { .. } => None,
        }
    }

    /// How long the first answer is waited for, if it comes from xDS (ADS or gRPC).
    pub fn initial_fetch_timeout(&self) -> Option<std::time::Duration> {
        match self {
            ConfigSource::File(_) => None,
            ConfigSource::Ads { initial_fetch_timeout } | ConfigSource::Grpc { initial_fetch_timeout, .. } => {
                Some(*initial_fetch_timeout)
            }
        }
    }
}

/// A `ConfigSource` that is a file (`path_config_source`, or the deprecated `path`): read
/// at start and again whenever it is replaced (moved into place, as Envoy expects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// `path`: the file holding a `DiscoveryResponse` (`version_info`, `resources`).
    pub path: std::path::PathBuf,
    /// `watched_directory.path`: a move into this directory triggers the reload instead
    /// of a change to `path` itself (for Kubernetes ConfigMaps' symlink swaps).
    pub watched_directory: Option<std::path::PathBuf>,
}

/// `rds`: the route configuration named `route_config_name`, from an RDS file or ADS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsSource {
    /// `route_config_name`.
    pub route_config_name: String,
    /// `config_source`.
    pub source: ConfigSource,
}

/// `eds_cluster_config`: the endpoints named `service_name` (the cluster's name if empty),
/// from an EDS file or ADS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdsSource {
    /// `service_name`, or the cluster's name.
    pub service_name: String,
    /// `eds_config`.
    pub source: ConfigSource,
}

/// `ClusterLoadAssignment`, as an EDS file holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadAssignment {
    /// `cluster_name`: the EDS service name it is for.
    pub cluster_name: String,
    /// Every `endpoints[].lb_endpoints[]`, in order.
    pub endpoints: Vec<Endpoint>,
}

/// The resources of one dynamic resource file, as a `DiscoveryResponse` holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceFile<T> {
    /// `version_info` (empty if absent).
    pub version_info: String,
    /// `resources`, in order.
    pub resources: Vec<T>,
    /// Each resource as given, as JSON (admin `/config_dump`).
    pub documents: Vec<serde_json::Value>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            admin: None,
            listeners: Vec::new(),
            clusters: Vec::new(),
            wasm_services: Vec::new(),
            node: Node::default(),
            runtime: Vec::new(),
            stats_flush_interval: Duration::from_secs(5),
            stats_config: StatsConfig::default(),
            document: serde_json::Value::Null,
            dynamic_resources: DynamicResources::default(),
            secrets: Vec::new(),
        }
    }
}

/// `node`: the identity the bootstrap gives this proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// `id`.
    pub id: String,
    /// `cluster`.
    pub cluster: String,
    /// `metadata` (a `google.protobuf.Struct`), keys in source order.
    pub metadata: Vec<(String, StructValue)>,
    /// `locality`.
    pub locality: Locality,
}

/// `node.locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// `region`.
    pub region: String,
    /// `zone`.
    pub zone: String,
    /// `sub_zone`.
    pub sub_zone: String,
}

/// A `google.protobuf.Value`, as YAML or JSON gives it (plain scalars that read as numbers or
/// booleans are those; numbers are doubles, as in `Struct`).
#[derive(Debug, Clone, PartialEq)]
pub enum StructValue {
    /// `null`.
    Null,
    /// A number.
    Number(f64),
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A list.
    List(Vec<StructValue>),
    /// A nested struct, keys in source order.
    Struct(Vec<(String, StructValue)>),
}

/// `metadata` (`envoy.config.core.v3.Metadata`): Structs by filter namespace, in source order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// `filter_metadata`.
    pub filter_metadata: Vec<(String, Vec<(String, StructValue)>)>,
    /// `typed_filter_metadata` (each a `google.protobuf.Struct`).
    pub typed_filter_metadata: Vec<(String, Vec<(String, StructValue)>)>,
}

/// `stats_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    /// `stats_tags`, in order.
    pub stats_tags: Vec<StatsTag>,
    /// `use_all_default_tags` (default true): Envoy's own tags (`envoy_cluster_name`, ...).
    pub use_all_default_tags: bool,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { stats_tags: Vec::new(), use_all_default_tags: true }
    }
}

/// One of `stats_tags` (`envoy.config.metrics.v3.TagSpecifier`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsTag {
    /// `tag_name`.
    pub tag_name: String,
    /// `regex` (checked to compile: its first capture group is cut from the name, its
    /// second, or else its first, is the value) or `fixed_value`.
    pub value: StatsTagValue,
}

/// Where a tag's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StatsTagValue {
    /// `regex`.
    Regex(String),
    /// `fixed_value`.
    Fixed(String),
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Where it listens.
    pub address: SocketAddress,
}

/// `socket_address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAddress {
    /// An IP address or host name (`0.0.0.0`, `127.0.0.1`, `::`, `upstream.local`).
    pub address: String,
    /// The port (0 = pick one).
    pub port: u16,
}

/// A listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// `name` (defaults to `listener_<index>` if absent).
    pub name: String,
    /// `address.socket_address`.
    pub address: SocketAddress,
    /// `filter_chains`, in order: a connection gets the one its `filter_chain_match` picks.
    pub filter_chains: Vec<FilterChain>,
    /// `default_filter_chain`: for a connection no chain matches.
    pub default_filter_chain: Option<FilterChain>,
    /// `listener_filters` and their timeout.
    pub listener_filters: ListenerFilters,
    /// `traffic_direction` as its number (UNSPECIFIED 0, INBOUND 1, OUTBOUND 2), for `xds.listener_direction`.
    pub traffic_direction: i64,
    /// `per_connection_buffer_limit_bytes` (1 MiB if absent): the most body bytes the
    /// filters may hold back on one stream; 0 lifts the limit.
    pub buffer_limit_bytes: u32,
    /// `metadata`, for `xds.listener_metadata`.
    pub metadata: Metadata,
}

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub const DEFAULT_BUFFER_LIMIT_BYTES: u32 = 1 << 20;

/// A listener's `listener_filters`: the ones wasmproxy has, and how long they may take.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerFilters {
    /// `envoy.filters.listener.tls_inspector`: the ClientHello read before a chain is picked
    /// (SNI, ALPN, and whether the client speaks TLS at all).
    pub tls_inspector: bool,
    /// `listener_filters_timeout` (Envoy's default: 15 s; zero: none).
    pub timeout: Duration,
    /// `continue_on_listener_filters_timeout`: past the timeout, a chain is picked with what
    /// is known (else the connection closes).
    pub continue_on_timeout: bool,
}

impl Default for ListenerFilters {
    fn default() -> Self {
        ListenerFilters { tls_inspector: false, timeout: Duration::from_secs(15), continue_on_timeout: false }
    }
}

/// One filter chain: when it applies, its network filters in order (the last is the
/// terminal one), and its TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterChain {
    /// `name` (for `xds.filter_chain_name`).
    pub name: String,
    /// `filter_chain_match` (all empty: any connection).
    pub matching: FilterChainMatch,
    /// The network filters, in order.
    pub filters: Vec<NetworkFilter>,
    /// `transport_socket` `envoy.transport_sockets.tls`: TLS terminated on this chain.
    pub tls: Option<DownstreamTls>,
    /// `transport_socket_connect_timeout`: the longest a TLS handshake may take (none: no
    /// limit, Envoy's default).
    pub handshake_timeout: Option<Duration>,
}

/// `filter_chain_match`: what a connection must have for the chain to apply. An empty
/// criterion matches anything; of the chains that match, the most specific one is picked,
/// criterion by criterion in Envoy's order (destination port, destination IP, server name,
/// transport protocol, application protocols, direct source IP, source type, source IP,
/// source port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterChainMatch {
    /// `destination_port`.
    pub destination_port: Option<u16>,
    /// `prefix_ranges`: the destination (local) address.
    pub prefix_ranges: Vec<CidrRange>,
    /// `server_names`: SNI, exact (`www.example.com`) or a wildcard (`*.example.com`), lowercase.
    pub server_names: Vec<String>,
    /// `transport_protocol` (`tls`, `raw_buffer`; empty: any).
    pub transport_protocol: String,
    /// `application_protocols` (ALPN offered by the client).
    pub application_protocols: Vec<String>,
    /// `direct_source_prefix_ranges`.
    pub direct_source_prefix_ranges: Vec<CidrRange>,
    /// `source_type`.
    pub source_type: SourceType,
    /// `source_prefix_ranges`.
    pub source_prefix_ranges: Vec<CidrRange>,
    /// `source_ports`.
    pub source_ports: Vec<u16>,
}

/// `envoy.config.core.v3.CidrRange`, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrRange {
    /// The network's address.
    pub address: std::net::IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

impl CidrRange {
    /// The range, with the host bits of `address` cleared; `None` if `prefix_len` is longer
    /// than the address.
    pub fn new(address: std::net::IpAddr, prefix_len: u8) -> Option<CidrRange> {
        use std::net::IpAddr;
        let address = match address {
            IpAddr::V4(a) if prefix_len <= 32 => {
                IpAddr::V4((u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)).into())
            }
            IpAddr::V6(a) if prefix_len <= 128 => {
                IpAddr::V6((u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0)).into())
            }
            _ => return None,
        };
        Some(CidrRange { address, prefix_len })
    }

    /// Whether `ip` is in the range (an IPv4 address mapped into IPv6 counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        CidrRange::new(ip.to_canonical(), self.prefix_len).is_some_and(|r| r.address == self.address)
    }
}

/// `filter_chain_match.source_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceType {
    /// `ANY`.
    #[default]
    Any,
    /// `SAME_IP_OR_LOOPBACK`: the client is on this machine (loopback, or the address it
    /// connected to).
    SameIpOrLoopback,
    /// `EXTERNAL`: any other client.
    External,
}

/// Envoy's `DownstreamTlsContext`, as far as wasmproxy serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct DownstreamTls {
    /// `common_tls_context.tls_certificates`, or the secrets
    /// `tls_certificate_sds_secret_configs` names: one or more, the first being the default.
    pub certificates: Vec<CertificateSource>,
    /// `common_tls_context.alpn_protocols`, in the listener's order of preference.
    pub alpn_protocols: Vec<String>,
    /// `common_tls_context.tls_params`: the lowest and highest version (Envoy's server
    /// defaults: TLS 1.2 to TLS 1.3).
    pub versions: (TlsVersion, TlsVersion),
    /// `common_tls_context.tls_params`' cipher suites and curves.
    pub algorithms: TlsAlgorithms,
    /// `common_tls_context.validation_context` (or a secret holding one): client
    /// certificates are asked for and, when sent, checked against it.
    pub validation: Option<ValidationSource>,
    /// `require_client_certificate`: a client without a certificate is refused.
    pub require_client_certificate: bool,
    /// Session tickets (not `disable_stateless_session_resumption`).
    pub stateless_resumption: bool,
    /// A session cache (not `disable_stateful_session_resumption`).
    pub stateful_resumption: bool,
    /// `session_ticket_keys.keys`: the keys session tickets are sealed with (the first)
    /// and opened with (any), 80 bytes each, so that instances sharing them resume each
    /// other's sessions; none: a key of the chain's own.
    pub session_ticket_keys: Vec<DataSource>,
    /// `session_ticket_keys_sds_secret_config`: the secret holding those keys instead, read
    /// again when it changes.
    pub session_ticket_keys_sds: Option<SdsSecret>,
    /// `session_timeout`, whole seconds: how long a TLS 1.2 session may be resumed (none or
    /// 0: BoringSSL's 7200). TLS 1.3 sessions keep BoringSSL's two days, as in Envoy.
    pub session_timeout_secs: Option<u32>,
    /// `prefer_client_ciphers`: the TLS 1.2 suite the client prefers, not the listener.
    pub prefer_client_ciphers: bool,
    /// `ocsp_staple_policy`: what a handshake does without a current OCSP response.
    pub ocsp_staple_policy: OcspStaplePolicy,
}

/// `ocsp_staple_policy`: what happens when a client asks for an OCSP response and the
/// certificate has none, or an expired one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OcspStaplePolicy {
    /// `LENIENT_STAPLING`: the handshake goes on without a staple.
    #[default]
    Lenient,
    /// `STRICT_STAPLING`: without a staple if there is no response; refused if it expired.
    Strict,
    /// `MUST_STAPLE`: every certificate needs a response; refused if it expired.
    MustStaple,
}

/// Where a validation context comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidationSource {
    /// `validation_context`.
    Inline(CertificateValidation),
    /// `validation_context_sds_secret_config`, or `combined_validation_context`.
    Sds {
        /// The secret holding one, read again when it changes.
        secret: SdsSecret,
        /// `default_validation_context`: what the secret's context is merged into, if any.
        default: Option<CertificateValidation>,
    },
}

/// Where a chain's certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CertificateSource {
    /// One of `tls_certificates`.
    Inline(TlsCertificate),
    /// One of `tls_certificate_sds_secret_configs`: a secret, by name.
    Sds(SdsSecret),
}

/// An `SdsSecretConfig`: a secret's name and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSecret {
    /// `name`.
    pub name: String,
    /// `sds_config` (`path_config_source`): the file that holds it, read again when it or
    /// a file it names is replaced; none: `static_resources.secrets`.
    pub source: Option<FileSource>,
}

/// A `Secret` (in `static_resources.secrets` or an SDS file), as far as wasmproxy serves
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    /// `name`.
    pub name: String,
    /// What it holds.
    pub kind: SecretKind,
}

/// What a secret holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretKind {
    /// `tls_certificate`: a certificate and its key.
    TlsCertificate(TlsCertificate),
    /// `session_ticket_keys.keys`: session ticket keys, 80 bytes each.
    SessionTicketKeys(Vec<DataSource>),
    /// `validation_context`: how peers' certificates are checked.
    ValidationContext(CertificateValidation),
}

impl SecretKind {
    /// The field that holds it, to name it in errors.
    pub fn field(&self) -> &'static str {
        match self {
            SecretKind::TlsCertificate(_) => "tls_certificate",
            SecretKind::SessionTicketKeys(_) => "session_ticket_keys",
            SecretKind::ValidationContext(_) => "validation_context",
        }
    }
}

/// A certificate chain and its private key, in PEM.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsCertificate {
    /// `certificate_chain`.
    pub certificate_chain: DataSource,
    /// `private_key`.
    pub private_key: DataSource,
    /// `ocsp_staple`: a DER OCSP response for the certificate, stapled to handshakes of
    /// clients that ask for it (a listener's certificates only).
    pub ocsp_staple: Option<DataSource>,
}

/// `tls_params.cipher_suites` and `ecdh_curves`, as far as rustls has them (OpenSSL names,
/// in order of preference; empty: rustls' defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsAlgorithms {
    /// TLS 1.2 cipher suites (`ECDHE-RSA-AES128-GCM-SHA256`, ...) in groups of equal
    /// preference (BoringSSL's `[a|b]`; most groups have one); TLS 1.3's are not
    /// configurable, as in Envoy.
    pub cipher_suites: Vec<Vec<String>>,
    /// Key exchange groups (`X25519`, `P-256`, ...).
    pub ecdh_curves: Vec<String>,
}

/// A TLS version wasmproxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLSv1_2`.
    Tls12,
    /// `TLSv1_3`.
    Tls13,
}

/// Envoy's `DataSource`: a file, or bytes in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// `filename`, as given (a relative name resolves against the working directory).
    File(PathBuf),
    /// `inline_bytes` (base64 in JSON/YAML) or `inline_string`.
    Inline(Vec<u8>),
}

/// A network (L4) filter.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkFilter {
    /// `envoy.filters.network.http_connection_manager` (also the old name `envoy.http_connection_manager`).
    HttpConnectionManager(Box<HttpConnectionManager>),
    /// `envoy.filters.network.wasm`.
    Wasm(WasmPlugin),
    /// `envoy.filters.network.tcp_proxy`.
    TcpProxy(TcpProxy),
    /// A Wasm network filter configured by ECDS (`config_discovery`).
    Discovered(Box<DiscoveredFilter>),
}

/// `envoy.filters.network.tcp_proxy`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpProxy {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// `cluster`.
    pub cluster: String,
    /// `access_log`: written when a connection ends.
    pub access_logs: Vec<AccessLog>,
    /// `idle_timeout`: a connection through which no byte moved that long is closed (1 h
    /// unless set, Envoy's default; `0s`: never).
    pub idle_timeout: Option<Duration>,
}

/// `codec_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecType {
    /// Sniff HTTP/2 prior knowledge, else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 (h2c) only.
    Http2,
}

/// The HTTP connection manager.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConnectionManager {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// `codec_type`.
    pub codec_type: CodecType,
    /// `server_name` (Envoy's default: `envoy`).
    pub server_name: String,
    /// `route_config` (empty when the routes come from `rds`).
    pub route_config: RouteConfig,
    /// `rds`: the routes come from an RDS file.
    pub rds: Option<RdsSource>,
    /// `http_filters`, in order; the last is the router.
    pub http_filters: Vec<HttpFilter>,
    /// Each filter's `name` and `disabled`, one per entry of `http_filters`.
    pub filter_options: Vec<FilterOptions>,
    /// `request_headers_timeout` (Envoy default: none).
    pub request_headers_timeout: Option<Duration>,
    /// `stream_idle_timeout` (Envoy default: 5 minutes).
    pub stream_idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout` (Envoy default: 1 hour).
    pub idle_timeout: Option<Duration>,
    /// `http_protocol_options.accept_http_10`: HTTP/1.0 requests are served (Envoy's
    /// default: answered 426).
    pub accept_http_10: bool,
    /// `http2_protocol_options.allow_connect`: HTTP/2 clients may use extended CONNECT
    /// (RFC 8441: WebSocket over HTTP/2).
    pub allow_connect: bool,
    /// `http_protocol_options.default_host_for_http_10`: the host of an HTTP/1.0 request
    /// that names none.
    pub default_host_for_http_10: Option<String>,
    /// `access_log`.
    pub access_logs: Vec<AccessLog>,
    /// How the client's address is found, and what is added for the upstream.
    pub forwarding: Forwarding,
    /// `upgrade_configs`: the upgrade types (lower-cased) and whether each is allowed.
    pub upgrades: Vec<Upgrade>,
    /// What is done to request paths and hosts before routing.
    pub paths: PathHandling,
    /// `request_id_extension` (`UuidRequestIdConfig`): how tracing packs its decision into
    /// `x-request-id` (without `tracing` it changes nothing, as in Envoy).
    pub request_id: UuidRequestId,
    /// `tracing`.
    pub tracing: Option<Tracing>,
    /// The router's `start_child_span`: a span of its own for the upstream request.
    pub start_child_span: bool,
}

/// `envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UuidRequestId {
    /// `pack_trace_reason` (true).
    pub pack_trace_reason: bool,
    /// `use_request_id_for_trace_sampling` (true).
    pub use_for_trace_sampling: bool,
}

impl Default for UuidRequestId {
    fn default() -> Self {
        UuidRequestId { pack_trace_reason: true, use_for_trace_sampling: true }
    }
}

/// The connection manager's path and host handling before any filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathHandling {
    /// `normalize_path`: dot segments removed, escapes of unreserved characters decoded,
    /// backslashes made slashes (RFC 3986, as Envoy's canonicalizer).
    pub normalize: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `path_with_escaped_slashes_action`.
    pub escaped_slashes: EscapedSlashes,
    /// `strip_matching_host_port` / `strip_any_host_port`.
    pub strip_port: StripPort,
}

/// `path_with_escaped_slashes_action`: what a path with `%2F` or `%5C` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// `KEEP_UNCHANGED` (and Envoy's default).
    #[default]
    Keep,
    /// `REJECT_REQUEST`: 400.
    Reject,
    /// `UNESCAPE_AND_REDIRECT`: a redirect to the path unescaped.
    Redirect,
    /// `UNESCAPE_AND_FORWARD`.
    Unescape,
}

/// Which port is taken off the request's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StripPort {
    /// None.
    #[default]
    None,
    /// `strip_matching_host_port`: the listener's port.
    Matching,
    /// `strip_any_host_port`: any.
    Any,
}

/// An `upgrade_configs` entry (of the connection manager or of a route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `upgrade_type`, lower-cased (`websocket`, ...).
    pub kind: String,
    /// `enabled` (default true).
    pub enabled: bool,
}

/// What an HTTP connection manager does with the client's address and Envoy's own
/// request headers (`use_remote_address`, `xff_num_trusted_hops`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarding {
    /// `use_remote_address`: the peer is the client (appended to `x-forwarded-for`), not
    /// the last address of `x-forwarded-for`.
    pub use_remote_address: bool,
    /// `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// `skip_xff_append`.
    pub skip_xff_append: bool,
    /// `via` (empty: none).
    pub via: String,
    /// `generate_request_id` (default true).
    pub generate_request_id: bool,
    /// `preserve_external_request_id`.
    pub preserve_external_request_id: bool,
    /// `always_set_request_id_in_response`.
    pub always_set_request_id_in_response: bool,
    /// `add_user_agent`: `user-agent` (if none) and `x-envoy-downstream-service-cluster`
    /// from the node's cluster, `x-envoy-downstream-service-node` from its id.
    pub add_user_agent: bool,
    /// `internal_address_config.cidr_ranges`: the client addresses whose requests are
    /// internal (none, by Envoy 1.40's default).
    pub internal_ranges: Vec<CidrRange>,
    /// `server_header_transformation`.
    pub server_header: ServerHeader,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            use_remote_address: false,
            xff_num_trusted_hops: 0,
            skip_xff_append: false,
            via: String::new(),
            generate_request_id: true,
            preserve_external_request_id: false,
            always_set_request_id_in_response: false,
            add_user_agent: false,
            internal_ranges: Vec::new(),
            server_header: ServerHeader::Overwrite,
        }
    }
}

/// `server_header_transformation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    /// `OVERWRITE`: `server_name`, always.
    Overwrite,
    /// `APPEND_IF_ABSENT`: `server_name` unless the response has one.
    AppendIfAbsent,
    /// `PASS_THROUGH`: the upstream's, or none.
    PassThrough,
}

/// One `access_log` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    /// Where lines go.
    pub sink: AccessLogSink,
    /// How they are formatted.
    pub format: AccessLogFormat,
    /// `log_format.omit_empty_values`: empty values print as nothing (text) or are left
    /// out (JSON), instead of `-` and `null`.
    pub omit_empty_values: bool,
}

/// An access logger.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogSink {
    /// `envoy.access_loggers.file`: appended to a file.
    File(PathBuf),
    /// `envoy.access_loggers.stdout`.
    Stdout,
    /// `envoy.access_loggers.stderr`.
    Stderr,
    /// `envoy.access_loggers.wasm`: a plugin's `on_log` sees each finished request.
    Wasm(Box<WasmPlugin>),
}

/// `log_format`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AccessLogFormat {
    /// Envoy's default line.
    #[default]
    Default,
    /// A text format with command operators (`%REQ(:PATH)%` ...).
    Text(String),
    /// `json_format`: an object whose string values are formats.
    Json(serde_json::Value),
}

/// The connection manager's `tracing`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// `client_sampling`, in ten-thousandths (default all).
    pub client_sampling: u32,
    /// `random_sampling`, in ten-thousandths (default all).
    pub random_sampling: u32,
    /// `overall_sampling`, in ten-thousandths (default all).
    pub overall_sampling: u32,
    /// `max_path_tag_length` (default 256).
    pub max_path_tag_length: usize,
    /// `custom_tags`.
    pub custom_tags: Vec<CustomTag>,
    /// `provider` (none: requests are sampled and counted, no span is reported).
    pub provider: Option<TracingProvider>,
    /// `spawn_upstream_span`: a span of its own for the upstream request.
    pub spawn_upstream_span: bool,
    /// `no_context_propagation`: spans are reported, nothing is told to the upstream.
    pub no_context_propagation: bool,
}

/// A `CustomTag`.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomTag {
    /// `literal`, or `environment` (read when the configuration was).
    Literal {
        /// `tag`.
        tag: String,
        /// The value.
        value: String,
    },
    /// `request_header`.
    RequestHeader {
        /// `tag`.
        tag: String,
        /// `name` (lower-cased).
        name: String,
        /// `default_value`.
        default: String,
    },
}

/// A tracing provider.
#[derive(Debug, Clone, PartialEq)]
pub enum TracingProvider {
    /// `envoy.tracers.zipkin`.
    Zipkin(ZipkinProvider),
    /// `envoy.tracers.opentelemetry`.
    OpenTelemetry(Box<OtelProvider>),
}

/// `envoy.config.trace.v3.ZipkinConfig` (JSON v2 over HTTP).
#[derive(Debug, Clone, PartialEq)]
pub struct ZipkinProvider {
    /// `collector_cluster`.
    pub cluster: String,
    /// `collector_endpoint`: the path spans are posted to.
    pub endpoint: String,
    /// `trace_id_128bit`.
    pub trace_id_128bit: bool,
    /// `shared_span_context` (default true).
    pub shared_span_context: bool,
    /// `collector_hostname` (default: the cluster's name).
    pub collector_hostname: Option<String>,
    /// `split_spans_for_request`.
    pub split_spans_for_request: bool,
    /// `trace_context_option: USE_B3_WITH_W3C_PROPAGATION`.
    pub w3c: bool,
}

/// `envoy.config.trace.v3.OpenTelemetryConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelProvider {
    /// Where spans go.
    pub export: OtelExport,
    /// `service_name` (default `unknown_service:envoy`).
    pub service_name: String,
    /// `max_cache_size`: the most spans a worker keeps waiting (default 1024).
    pub max_cache_size: usize,
    /// `set_telemetry_sdk_resource_attributes` (default true).
    pub sdk_attributes: bool,
    /// `set_service_name_resource_attribute` (default true).
    pub service_name_attribute: bool,
    /// `set_instrumentation_scope` (default true).
    pub scope: bool,
}

/// Where OpenTelemetry spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub enum OtelExport {
    /// `grpc_service.envoy_grpc`: OTLP over gRPC.
    Grpc(GrpcService),
    /// `http_service`: OTLP over HTTP (protobuf) to `http_uri` (an absolute URI: its host
    /// and path), with `request_headers_to_add`.
    Http {
        /// `http_uri`.
        uri: HttpUri,
        /// `request_headers_to_add`.
        headers: Vec<HeaderToAdd>,
    },
}

/// A `GrpcService` with `envoy_grpc`.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcService {
    /// `envoy_grpc.cluster_name`: a static cluster.
    pub cluster: String,
    /// `envoy_grpc.authority`, if set (else the cluster's name is the `:authority`).
    pub authority: Option<String>,
    /// `timeout`, if set and not zero (where the caller reads it).
    pub timeout: Option<Duration>,
}

impl GrpcService {
    /// The `:authority` of its calls.
    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }
}

/// An `HttpUri`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUri {
    /// `uri`, as written.
    pub uri: String,
    /// `cluster`: a static cluster.
    pub cluster: String,
    /// `timeout`.
    pub timeout: Duration,
}

/// What an `http_filters` entry says besides its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilterOptions {
    /// `name`: what routes' `typed_per_filter_config` call it.
    pub name: String,
    /// `disabled`: off unless a route turns it on.
    pub disabled: bool,
}

/// A route's (virtual host's, route configuration's) `typed_per_filter_config` entry for
/// one filter: an `envoy.config.route.v3.FilterConfig` that turns it off or on, or a native
/// filter's own per-route configuration (which turns it on).
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOverride {
    /// The filter's name.
    pub name: String,
    /// `disabled`.
    pub disabled: bool,
    /// The filter's own configuration for these routes.
    pub config: Option<PerFilterConfig>,
}

/// A native filter's configuration for some routes.
#[derive(Debug, Clone, PartialEq)]
pub enum PerFilterConfig {
    /// `envoy.extensions.filters.http.cors.v3.CorsPolicy`.
    Cors(Box<CorsPolicy>),
    /// `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`: replaces the
    /// filter's own, with buckets of its own.
    LocalRateLimit(Box<LocalRateLimit>),
    /// `envoy.extensions.filters.http.compressor.v3.CompressorPerRoute`.
    Compressor(Box<CompressorPerRoute>),
    /// `envoy.extensions.filters.http.csrf.v3.CsrfPolicy`: replaces the filter's.
    Csrf(Box<CsrfPolicy>),
    /// `envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute`.
    ExtAuthz(Box<ExtAuthzPerRoute>),
    /// `envoy.extensions.filters.http.rbac.v3.RBACPerRoute` (none: no checks there).
    Rbac(Option<Box<Rbac>>),
    /// `envoy.extensions.filters.http.fault.v3.HTTPFault`: replaces the filter's.
    Fault(Box<Fault>),
    /// `envoy.extensions.filters.http.buffer.v3.BufferPerRoute`: the route's own
    /// `max_request_bytes`, or none (`disabled`).
    Buffer(Option<u32>),
    /// `envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute`.
    HeaderMutation(Box<MutationBlock>),
}

/// A native HTTP filter: one Envoy builds in, which wasmproxy runs as Envoy does.
#[derive(Debug, Clone, PartialEq)]
pub enum NativeFilter {
    /// `envoy.filters.http.cors`: its policies come from the routes.
    Cors,
    /// `envoy.filters.http.local_ratelimit`.
    LocalRateLimit(Box<LocalRateLimit>),
    /// `envoy.filters.http.compressor`.
    Compressor(Box<Compressor>),
    /// `envoy.filters.http.decompressor`.
    Decompressor(Box<Decompressor>),
    /// `envoy.filters.http.csrf`.
    Csrf(Box<CsrfPolicy>),
    /// `envoy.filters.http.ext_authz`.
    ExtAuthz(Box<ExtAuthz>),
    /// `envoy.filters.http.rbac`.
    Rbac(Box<Rbac>),
    /// `envoy.filters.http.fault`.
    Fault(Box<Fault>),
    /// `envoy.filters.http.buffer`: its `max_request_bytes`.
    Buffer(u32),
    /// `envoy.filters.http.header_mutation`.
    HeaderMutation(Box<HeaderMutationFilter>),
    /// `envoy.filters.http.ratelimit`.
    RateLimit(Box<RateLimitFilter>),
    /// `envoy.filters.http.health_check`.
    HealthCheck(Box<HealthCheckFilter>),
    /// `envoy.filters.http.grpc_http1_bridge`.
    GrpcHttp1Bridge,
}

/// `envoy.filters.http.ext_authz`'s configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthz {
    /// The authorization service.
    pub service: AuthzService,
    /// `failure_mode_allow`: a failed check lets the request go on.
    pub failure_mode_allow: bool,
    /// `failure_mode_allow_header_add`: such a request carries
    /// `x-envoy-auth-failure-mode-allowed: true`.
    pub failure_mode_allow_header_add: bool,
    /// `clear_route_cache` (the route is always found again from the headers the service
    /// leaves, in wasmproxy).
    pub clear_route_cache: bool,
    /// `status_on_error` (403 unless a status in 100..=511).
    pub status_on_error: u16,
    /// `filter_enabled`, in millionths (all when unset).
    pub filter_enabled: u32,
    /// `deny_at_disable`: a request the filter is not enabled for is refused.
    pub deny_at_disable: bool,
    /// `stat_prefix` (stats under `ext_authz.<stat_prefix>.` when set).
    pub stat_prefix: String,
    /// `allowed_headers` (or the HTTP service's deprecated
    /// `authorization_request.allowed_headers`): the request headers sent, if set.
    pub allowed_headers: Option<Vec<ValueMatch>>,
    /// `disallowed_headers`: never sent.
    pub disallowed_headers: Vec<ValueMatch>,
    /// `charge_cluster_response_stats`: a denial counts in the route's cluster's
    /// `upstream_rq_<code>`.
    pub charge_cluster_response_stats: bool,
    /// `max_denied_response_body_bytes` (0: no limit).
    pub max_denied_response_body_bytes: usize,
    /// `with_request_body`: the request body is sent too.
    pub with_request_body: Option<BodySettings>,
}

/// `ext_authz`'s `with_request_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySettings {
    /// `max_request_bytes`: a longer body is answered 413.
    pub max_request_bytes: u32,
    /// `pack_as_bytes`: a gRPC check carries it as `raw_body`.
    pub pack_as_bytes: bool,
}

/// The service `ext_authz` asks.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthzService {
    /// `grpc_service`: `envoy.service.auth.v3.Authorization/Check` (timeout 200 ms unless set).
    Grpc(GrpcService),
    /// `http_service`.
    Http(Box<HttpAuthzService>),
}

/// `ext_authz`'s `http_service`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAuthzService {
    /// `server_uri`: its cluster and timeout (the URI itself is not used, as in Envoy).
    pub server: HttpUri,
    /// `path_prefix`.
    pub path_prefix: String,
    /// `authorization_request.headers_to_add`: literal headers set on each check.
    pub headers_to_add: Vec<(String, String)>,
    /// `authorization_request.allowed_headers`, until merged into the filter's.
    pub legacy_allowed_headers: Option<Vec<ValueMatch>>,
    /// `authorization_response.allowed_upstream_headers`: set on the request.
    pub allowed_upstream_headers: Vec<ValueMatch>,
    /// `authorization_response.allowed_upstream_headers_to_append`: added to the request.
    pub allowed_upstream_headers_to_append: Vec<ValueMatch>,
    /// `authorization_response.allowed_client_headers`: sent back with a denial.
    pub allowed_client_headers: Vec<ValueMatch>,
    /// `authorization_response.allowed_client_headers_on_success`: added to the response.
    pub allowed_client_headers_on_success: Vec<ValueMatch>,
}

/// An `ExtAuthzPerRoute`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthzPerRoute {
    /// `disabled`.
    pub disabled: bool,
    /// `check_settings.context_extensions` (sent to a gRPC service).
    pub context_extensions: Vec<(String, String)>,
    /// `check_settings.with_request_body.max_request_bytes`: the body is sent for these
    /// routes, at most this long.
    pub with_request_body: Option<u32>,
    /// `check_settings.disable_request_body_buffering`.
    pub disable_request_body_buffering: bool,
}

/// `envoy.filters.http.rbac`'s configuration (or a route's `RBACPerRoute.rbac`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rbac {
    /// `matcher` or `rules`: enforced.
    pub enforced: Option<RbacEngine>,
    /// `shadow_matcher` or `shadow_rules`: only counted.
    pub shadow: Option<RbacEngine>,
    /// `rules_stat_prefix`.
    pub rules_stat_prefix: String,
    /// `shadow_rules_stat_prefix`.
    pub shadow_rules_stat_prefix: String,
    /// `track_per_rule_stats`.
    pub track_per_rule_stats: bool,
}

/// What decides a request: policies, or a matcher.
#[derive(Debug, Clone, PartialEq)]
pub enum RbacEngine {
    /// `config.rbac.v3.RBAC`.
    Rules(RbacRules),
    /// An `xds.type.matcher.v3.Matcher` of RBAC actions.
    Matcher(RbacMatcher),
}

/// `config.rbac.v3.RBAC`.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacRules {
    /// `action`: what a matching policy means.
    pub action: RbacAction,
    /// `policies`, sorted by name (the first that matches is the effective one).
    pub policies: Vec<(String, RbacPolicy)>,
}

/// `config.rbac.v3.RBAC.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacAction {
    /// `ALLOW`.
    Allow,
    /// `DENY`.
    Deny,
    /// `LOG`: allowed either way.
    Log,
}

/// A `Policy`: it matches when a permission and a principal do.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacPolicy {
    /// `permissions` (any).
    pub permissions: Vec<Permission>,
    /// `principals` (any).
    pub principals: Vec<Principal>,
}

/// A `Permission`: what the request does.
#[derive(Debug, Clone, PartialEq)]
pub enum Permission {
    /// `any`.
    Any,
    /// `and_rules`.
    And(Vec<Permission>),
    /// `or_rules`.
    Or(Vec<Permission>),
    /// `not_rule`.
    Not(Box<Permission>),
    /// `header`.
    Header(HeaderMatcher),
    /// `url_path`: the path without its query.
    UrlPath(ValueMatch),
    /// `destination_ip`: the connection's local address.
    DestinationIp(CidrRange),
    /// `destination_port`.
    DestinationPort(u16),
    /// `destination_port_range`: `start <= port < end`.
    DestinationPortRange(u32, u32),
    /// `requested_server_name`: SNI (empty without).
    RequestedServerName(ValueMatch),
}

/// A `Principal`: who sends the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// `any`.
    Any,
    /// `and_ids`.
    And(Vec<Principal>),
    /// `or_ids`.
    Or(Vec<Principal>),
    /// `not_id`.
    Not(Box<Principal>),
    /// `authenticated`: a TLS peer (with a certificate whose URI SAN, DNS SAN or subject
    /// matches `principal_name`, if given).
    Authenticated(Option<ValueMatch>),
    /// `source_ip`: the connection's peer.
    SourceIp(CidrRange),
    /// `direct_remote_ip`: the connection's peer.
    DirectRemoteIp(CidrRange),
    /// `remote_ip`: the client's address (from `x-forwarded-for` if trusted).
    RemoteIp(CidrRange),
    /// `header`.
    Header(HeaderMatcher),
    /// `url_path`.
    UrlPath(ValueMatch),
}

/// An RBAC matcher: the first predicate that matches gives the action, else `on_no_match`
/// (none: denied).
#[derive(Debug, Clone, PartialEq)]
pub struct RbacMatcher {
    /// `matcher_list.matchers`.
    pub matchers: Vec<(MatchPredicate, RbacMatchAction)>,
    /// `on_no_match`.
    pub on_no_match: Option<RbacMatchAction>,
}

/// An `envoy.config.rbac.v3.Action`.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacMatchAction {
    /// `name`: the effective policy's.
    pub name: String,
    /// `action`.
    pub action: RbacAction,
}

/// A matcher's `Predicate`.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchPredicate {
    /// `single_predicate`: the input's value matches (no value: no match).
    Single {
        /// `input`.
        input: MatchInput,
        /// `value_match`.
        value: ValueMatch,
    },
    /// `or_matcher`.
    Or(Vec<MatchPredicate>),
    /// `and_matcher`.
    And(Vec<MatchPredicate>),
    /// `not_matcher`.
    Not(Box<MatchPredicate>),
}

/// A matcher's input.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchInput {
    /// `HttpRequestHeaderMatchInput`: the header's values joined by commas.
    RequestHeader(String),
    /// `DestinationIPInput`.
    DestinationIp,
    /// `DestinationPortInput`.
    DestinationPort,
    /// `SourceIPInput`.
    SourceIp,
    /// `SourcePortInput`.
    SourcePort,
    /// `DirectSourceIPInput`.
    DirectSourceIp,
    /// `ServerNameInput`.
    ServerName,
}

/// A `FractionalPercent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent {
    /// `numerator`.
    pub numerator: u32,
    /// `denominator`: 100, 10 000 or 1 000 000.
    pub denominator: u32,
}

impl Percent {
    /// The share in millionths (a numerator over its denominator counts as all).
    pub fn per_million(self) -> u32 {
        (u64::from(self.numerator.min(self.denominator)) * (1_000_000 / u64::from(self.denominator))) as u32
    }
}

/// `envoy.filters.http.fault`'s configuration (or a route's).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// `delay`.
    pub delay: Option<FaultDelay>,
    /// `abort`.
    pub abort: Option<FaultAbort>,
    /// `upstream_cluster`: faults only for requests routed there (empty: any).
    pub upstream_cluster: String,
    /// `headers`: faults only for requests they all match.
    pub headers: Vec<HeaderMatcher>,
    /// `downstream_nodes`: faults only for requests whose
    /// `x-envoy-downstream-service-node` is one of them (empty: any).
    pub downstream_nodes: Vec<String>,
    /// `max_active_faults` (none: no limit).
    pub max_active_faults: Option<u64>,
    /// `disable_downstream_cluster_stats`.
    pub disable_downstream_cluster_stats: bool,
}

/// A fault's `delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    /// `fixed_delay`; none for `header_delay` (`x-envoy-fault-delay-request`, in ms).
    pub fixed: Option<Duration>,
    /// `percentage` (0% when unset).
    pub percentage: Percent,
}

/// A fault's `abort`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultAbort {
    /// What the request is aborted with.
    pub kind: AbortKind,
    /// `percentage` (0% when unset).
    pub percentage: Percent,
}

/// What an abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortKind {
    /// `http_status`.
    Http(u16),
    /// `grpc_status` (HTTP 200).
    Grpc(u32),
    /// `header_abort`: `x-envoy-fault-abort-request` or `x-envoy-fault-abort-grpc-request`.
    Header,
}

/// `envoy.filters.http.header_mutation`'s configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMutationFilter {
    /// `mutations`.
    pub mutations: MutationBlock,
    /// `most_specific_header_mutations_wins`: routes' mutations from the least specific to
    /// the most (else the other way, the least specific's applied last).
    pub most_specific_wins: bool,
}

/// A `Mutations` block (the filter's, or a route's `HeaderMutationPerRoute`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MutationBlock {
    /// `request_mutations`, in order.
    pub request: Vec<HeaderOp>,
    /// `response_mutations`, in order.
    pub response: Vec<HeaderOp>,
}

/// One header mutation.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderOp {
    /// `remove`: every value of the header.
    Remove(String),
    /// `append`: a `HeaderValueOption`.
    Append(HeaderToAdd),
    /// `remove_on_match`: every header whose name matches.
    RemoveOnMatch(ValueMatch),
}

/// A `rate_limits` entry of a virtual host or a route: its actions make one descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    /// `stage`: the rate limit filter of the same stage uses it.
    pub stage: u32,
    /// `actions`, each an entry of the descriptor (all must apply, or no descriptor).
    pub actions: Vec<RateLimitAction>,
}

/// A rate limit action: one descriptor entry.
#[derive(Debug, Clone, PartialEq)]
pub enum RateLimitAction {
    /// `source_cluster`: `("source_cluster", <this node's cluster>)`.
    SourceCluster,
    /// `destination_cluster`: `("destination_cluster", <the route's cluster>)`.
    DestinationCluster,
    /// `request_headers`: `(key, <the header's value>)`; without the header, no
    /// descriptor (or no entry, with `skip_if_absent`).
    RequestHeaders {
        /// `header_name`.
        header: String,
        /// `descriptor_key`.
        key: String,
        /// `skip_if_absent`.
        skip_if_absent: bool,
    },
    /// `remote_address`: `("remote_address", <the client's address>)`.
    RemoteAddress,
    /// `generic_key`: `(key, value)`.
    GenericKey {
        /// `descriptor_key` (`generic_key` by default).
        key: String,
        /// `descriptor_value`.
        value: String,
    },
    /// `header_value_match`: `(key, value)` if the headers match as `expect_match` says,
    /// else no descriptor.
    HeaderValueMatch {
        /// `descriptor_key` (`header_match` by default).
        key: String,
        /// `descriptor_value`.
        value: String,
        /// `expect_match`.
        expect_match: bool,
        /// `headers`.
        headers: Vec<HeaderMatcher>,
    },
}

/// `envoy.filters.http.ratelimit`'s configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitFilter {
    /// `domain`.
    pub domain: String,
    /// `stage`.
    pub stage: u32,
    /// `request_type`: which requests are checked.
    pub request_type: RequestType,
    /// `timeout` (20 ms by default).
    pub timeout: Duration,
    /// `failure_mode_deny`: a failed check refuses the request.
    pub failure_mode_deny: bool,
    /// `rate_limited_as_resource_exhausted`.
    pub resource_exhausted: bool,
    /// `rate_limit_service.grpc_service`.
    pub service: GrpcService,
    /// `disable_x_envoy_ratelimited_header`.
    pub disable_x_envoy_ratelimited_header: bool,
    /// `rate_limited_status` (429 by default).
    pub rate_limited_status: u16,
    /// `status_on_error` (500 by default).
    pub status_on_error: u16,
}

/// `request_type` of the rate limit filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// `both`.
    Both,
    /// `internal`: requests with `x-envoy-internal: true`.
    Internal,
    /// `external`: the others.
    External,
}

/// `envoy.filters.http.health_check`'s configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckFilter {
    /// `pass_through_mode`: health checks go upstream (else this proxy answers them).
    pub pass_through: bool,
    /// `headers`: what makes a request a health check (none: every request).
    pub headers: Vec<HeaderMatcher>,
    /// `cluster_min_healthy_percentages`: clusters and the share of their endpoints that
    /// must be healthy (or degraded) for a 200.
    pub clusters: Vec<(String, f64)>,
}

/// A `CsrfPolicy` (the CSRF filter's, or a route's).
#[derive(Debug, Clone, PartialEq)]
pub struct CsrfPolicy {
    /// `filter_enabled`, in millionths.
    pub filter_enabled: u32,
    /// `shadow_enabled`, in millionths (unset: 0).
    pub shadow_enabled: u32,
    /// `additional_origins`.
    pub additional_origins: Vec<ValueMatch>,
}

/// A CORS policy (`CorsPolicy`, typed per route or the deprecated `cors` of virtual hosts
/// and routes). Empty strings and lists are unset: the next, less specific, policy's apply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CorsPolicy {
    /// `allow_origin_string_match`.
    pub allow_origin: Vec<ValueMatch>,
    /// `allow_methods`.
    pub allow_methods: String,
    /// `allow_headers`.
    pub allow_headers: String,
    /// `expose_headers`.
    pub expose_headers: String,
    /// `max_age`, sent as written.
    pub max_age: String,
    /// `allow_credentials`.
    pub allow_credentials: Option<bool>,
    /// `allow_private_network_access`.
    pub allow_private_network_access: Option<bool>,
    /// `forward_not_matching_preflights` (unset: true).
    pub forward_not_matching_preflights: Option<bool>,
    /// `filter_enabled`, in millionths (unset: on).
    pub filter_enabled: Option<u32>,
    /// `shadow_enabled`, in millionths (unset: off).
    pub shadow_enabled: Option<u32>,
}

/// `envoy.filters.http.local_ratelimit`'s configuration (the filter's, or a route's).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRateLimit {
    /// `stat_prefix`: its stats are `<stat_prefix>.http_local_rate_limit.*`.
    pub stat_prefix: String,
    /// `status.code` (429 unless 400 or more).
    pub status: u16,
    /// `token_bucket` (none: every request is allowed).
    pub token_bucket: Option<TokenBucket>,
    /// `filter_enabled`, in millionths (unset: 0, the filter does nothing).
    pub filter_enabled: u32,
    /// `filter_enforced`, in millionths (unset: 0, nothing is refused).
    pub filter_enforced: u32,
    /// `response_headers_to_add`, on the refusal.
    pub response_headers_to_add: Vec<HeaderToAdd>,
    /// `request_headers_to_add_when_not_enforced`.
    pub request_headers_when_not_enforced: Vec<HeaderToAdd>,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit_headers: bool,
    /// `rate_limited_as_resource_exhausted`: gRPC refusals carry RESOURCE_EXHAUSTED.
    pub grpc_resource_exhausted: bool,
    /// `descriptors`: buckets for the descriptors the route's `rate_limits` make.
    pub descriptors: Vec<LocalDescriptor>,
    /// `stage`: the route's `rate_limits` of this stage make the descriptors.
    pub stage: u32,
    /// `vh_rate_limits`: whether the virtual host's `rate_limits` make descriptors too.
    pub vh_rate_limits: VhRateLimits,
    /// `always_consume_default_token_bucket` (default true): the filter's own bucket is
    /// taken from even when a descriptor matched.
    pub always_consume_default: bool,
    /// `max_dynamic_descriptors` (default 20): buckets kept per descriptor with an empty
    /// value, one per value seen, the least recently used dropped past it.
    pub max_dynamic_descriptors: u32,
}

/// A local rate limit `descriptors` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalDescriptor {
    /// `entries`: keys and values, in order (an empty value matches any).
    pub entries: Vec<(String, String)>,
    /// `token_bucket`.
    pub token_bucket: TokenBucket,
}

/// When a virtual host's `rate_limits` apply besides its route's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhRateLimits {
    /// `OVERRIDE`: when the route has none (or `include_vh_rate_limits`).
    Override,
    /// `INCLUDE`: always.
    Include,
    /// `IGNORE`: never (unless `include_vh_rate_limits`).
    Ignore,
}

/// A `TokenBucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// `max_tokens`: what it holds, and holds at first.
    pub max_tokens: u32,
    /// `tokens_per_fill` (default 1).
    pub tokens_per_fill: u32,
    /// `fill_interval`.
    pub fill_interval: Duration,
}

/// `envoy.filters.http.compressor`'s configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressor {
    /// `compressor_library`: its name (in stats) and the algorithm.
    pub library: CompressionLibrary,
    /// `response_direction_config` (or the deprecated top-level fields).
    pub response: CompressionDirection,
    /// Whether `response_direction_config` was given: response stats then have a
    /// `response.` segment.
    pub response_config_given: bool,
    /// `response_direction_config.disable_on_etag_header`.
    pub disable_on_etag_header: bool,
    /// `response_direction_config.remove_accept_encoding_header`.
    pub remove_accept_encoding_header: bool,
    /// `response_direction_config.uncompressible_response_codes`.
    pub uncompressible_response_codes: Vec<u16>,
    /// `response_direction_config.weaken_etag_on_compress`.
    pub weaken_etag_on_compress: bool,
    /// `request_direction_config` (none: requests are not compressed).
    pub request: Option<CompressionDirection>,
    /// `choose_first`.
    pub choose_first: bool,
}

/// A compressor's `CommonDirectionConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionDirection {
    /// `enabled.default_value` (unset: on).
    pub enabled: bool,
    /// `min_content_length` (default 30).
    pub min_content_length: u64,
    /// `content_type`, lower-cased (empty: Envoy's default list).
    pub content_types: Vec<String>,
}

/// A `compressor_library` or `decompressor_library`: its name and its algorithm.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionLibrary {
    /// `name`.
    pub name: String,
    /// The algorithm and its settings.
    pub algorithm: Algorithm,
}

/// A compression algorithm with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// gzip: level (0-9, 0 for zlib's default), window bits, memory level.
    Gzip {
        /// `compression_level`.
        level: u32,
        /// `window_bits`.
        window_bits: u8,
        /// `memory_level`.
        memory_level: u8,
        /// `compression_strategy`, as zlib numbers it (0 default, 1 filtered, 2 Huffman
        /// only, 3 RLE, 4 fixed).
        strategy: u8,
    },
    /// brotli: quality and window bits.
    Brotli {
        /// `quality`.
        quality: u32,
        /// `window_bits`.
        window_bits: u32,
    },
    /// zstd: the level.
    Zstd {
        /// `compression_level`.
        level: i32,
    },
}

impl Algorithm {
    /// Its `content-encoding` token.
    pub fn encoding(&self) -> &'static str {
        match self {
            Algorithm::Gzip { .. } => "gzip",
            Algorithm::Brotli { .. } => "br",
            Algorithm::Zstd { .. } => "zstd",
        }
    }

    /// Its segment in stat names.
    pub fn stat_name(&self) -> &'static str {
        match self {
            Algorithm::Gzip { .. } => "gzip",
            Algorithm::Brotli { .. } => "brotli",
            Algorithm::Zstd { .. } => "zstd",
        }
    }
}

/// `CompressorPerRoute`.
#[derive(Debug, Clone, PartialEq)]
pub enum CompressorPerRoute {
    /// `disabled: true`: responses on these routes are not compressed.
    Disabled,
    /// `overrides.response_direction_config`: compression on, with
    /// `remove_accept_encoding_header` if given.
    Enabled {
        /// `remove_accept_encoding_header`.
        remove_accept_encoding_header: Option<bool>,
    },
}

/// `envoy.filters.http.decompressor`'s configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Decompressor {
    /// `decompressor_library`.
    pub library: CompressionLibrary,
    /// `request_direction_config.common_config.enabled` (default on).
    pub request_enabled: bool,
    /// `request_direction_config.advertise_accept_encoding` (default on).
    pub advertise_accept_encoding: bool,
    /// `response_direction_config.common_config.enabled` (default on).
    pub response_enabled: bool,
    /// `ignore_no_transform_header`, per direction ([request, response]).
    pub ignore_no_transform: [bool; 2],
    /// gzip's `max_inflate_ratio` (100 for the others).
    pub max_inflate_ratio: u32,
}

/// An HTTP filter.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpFilter {
    /// `envoy.filters.http.wasm`.
    Wasm(Box<WasmPlugin>),
    /// One of Envoy's own filters that wasmproxy runs.
    Native(NativeFilter),
    /// `config_discovery`: a Wasm filter whose configuration comes from ECDS.
    Discovered(Box<DiscoveredFilter>),
    /// `envoy.filters.http.router` (with or without `typed_config`).
    Router,
}

/// An HTTP filter's `config_discovery`: its configuration is the ECDS resource named as
/// the filter (`envoy.config.core.v3.TypedExtensionConfig`), a Wasm filter.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredFilter {
    /// The filter's `name`: the resource asked for.
    pub name: String,
    /// `config_source`: ADS or a gRPC stream.
    pub source: ConfigSource,
    /// `default_config`, used until the first one comes (with
    /// `apply_default_config_without_warming`) or once the wait for it is over.
    pub default: Option<WasmPlugin>,
    /// `apply_default_config_without_warming`.
    pub apply_default_without_warming: bool,
}

/// An ECDS resource: a filter configuration by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionConfig {
    /// `name`.
    pub name: String,
    /// Whether `typed_config` is a Wasm HTTP filter or a Wasm network filter.
    pub kind: FilterKind,
    /// `typed_config`.
    pub plugin: WasmPlugin,
}

/// The chain a Wasm filter runs in, which its `@type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilterKind {
    /// `envoy.extensions.filters.http.wasm.v3.Wasm`, in a connection manager's chain.
    Http,
    /// `envoy.extensions.filters.network.wasm.v3.Wasm`, in a filter chain's.
    Network,
}

impl FilterKind {
    /// The Wasm filter's type (after `type.googleapis.com/`).
    pub fn wasm_type(self) -> &'static str {
        match self {
            FilterKind::Http => "envoy.extensions.filters.http.wasm.v3.Wasm",
            FilterKind::Network => "envoy.extensions.filters.network.wasm.v3.Wasm",
        }
    }

    /// The word Envoy's ECDS stats use for it: `extension_config_discovery.<word>.<name>.`.
    pub fn stats_word(self) -> &'static str {
        match self {
            FilterKind::Http => "http_filter",
            FilterKind::Network => "network_filter",
        }
    }
}

/// `route_config`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteConfig {
    /// `name`.
    pub name: String,
    /// `virtual_hosts`, in order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// The headers added and removed for every route.
    pub headers: HeaderMutations,
    /// `most_specific_header_mutations_wins`: the route's mutations are applied last (by
    /// default the route configuration's are).
    pub most_specific_header_mutations_wins: bool,
    /// `internal_only_headers`: removed from requests that are not internal.
    pub internal_only_headers: Vec<String>,
    /// `typed_per_filter_config`, for every route.
    pub filter_overrides: Vec<FilterOverride>,
}

/// `request_headers_to_add`, `request_headers_to_remove`, `response_headers_to_add` and
/// `response_headers_to_remove` of a route configuration, a virtual host or a route.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderMutations {
    /// `request_headers_to_add`.
    pub request_add: Vec<HeaderToAdd>,
    /// `request_headers_to_remove` (lower-cased).
    pub request_remove: Vec<String>,
    /// `response_headers_to_add`.
    pub response_add: Vec<HeaderToAdd>,
    /// `response_headers_to_remove` (lower-cased).
    pub response_remove: Vec<String>,
}

impl HeaderMutations {
    /// Nothing to add or remove.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// A `HeaderValueOption`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderToAdd {
    /// `header.key` (lower-cased).
    pub name: String,
    /// `header.value`, a substitution format (or `raw_value`, as text).
    pub value: Vec<crate::format::Piece>,
    /// `append_action` (or the deprecated `append`).
    pub action: AppendAction,
    /// `keep_empty_value`: a value that formats empty is still added.
    pub keep_empty_value: bool,
}

/// `HeaderValueOption.append_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// `APPEND_IF_EXISTS_OR_ADD` (the default): another value.
    AppendIfExistsOrAdd,
    /// `ADD_IF_ABSENT`: only if the header is not there.
    AddIfAbsent,
    /// `OVERWRITE_IF_EXISTS_OR_ADD`: this value only.
    OverwriteIfExistsOrAdd,
    /// `OVERWRITE_IF_EXISTS`: replaced if there, else nothing.
    OverwriteIfExists,
}

/// A virtual host.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    /// `name`.
    pub name: String,
    /// `domains`: exact (`example.com`, `example.com:8080`), suffix (`*.example.com`),
    /// prefix (`example.*`) or `*`.
    pub domains: Vec<String>,
    /// `routes`, first match wins.
    pub routes: Vec<Route>,
    /// `metadata`, for `xds.virtual_host_metadata`.
    pub metadata: Metadata,
    /// The headers added and removed for its routes.
    pub headers: HeaderMutations,
    /// `retry_policy`, for routes without one.
    pub retry_policy: Option<RetryPolicy>,
    /// `typed_per_filter_config`, for its routes.
    pub filter_overrides: Vec<FilterOverride>,
    /// `cors` (deprecated), for its routes, if no route has a typed CORS policy.
    pub cors: Option<Box<CorsPolicy>>,
    /// `include_request_attempt_count`: upstream requests carry `x-envoy-attempt-count`.
    pub include_request_attempt_count: bool,
    /// `include_attempt_count_in_response`: responses carry `x-envoy-attempt-count`.
    pub include_attempt_count_in_response: bool,
    /// `rate_limits`.
    pub rate_limits: Vec<RateLimitPolicy>,
}

/// A route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `name` (may be empty).
    pub name: String,
    /// `match`.
    pub matcher: RouteMatch,
    /// `route`, `direct_response` or `redirect`.
    pub action: RouteAction,
    /// `metadata`, for `xds.route_metadata`.
    pub metadata: Metadata,
    /// The headers added and removed.
    pub headers: HeaderMutations,
    /// `typed_per_filter_config`.
    pub filter_overrides: Vec<FilterOverride>,
    /// `decorator`: what tracing names the route's spans (without `tracing`, which
    /// wasmproxy refuses for now, it changes nothing, as in Envoy).
    pub decorator: Option<Decorator>,
}

/// A route's `decorator`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decorator {
    /// `operation`.
    pub operation: String,
    /// `propagate` (true): the operation goes upstream in `x-envoy-decorator-operation`.
    pub propagate: bool,
}

/// `match`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// `prefix`, `path` or `safe_regex.regex`.
    pub path: PathMatch,
    /// `case_sensitive` (default true).
    pub case_sensitive: bool,
    /// `headers`.
    pub headers: Vec<HeaderMatcher>,
    /// `query_parameters`.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// `grpc`: only gRPC requests (`content-type: application/grpc[+...]`).
    pub grpc: bool,
}

/// How a route matches the path (without the query string).
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    /// `prefix`.
    Prefix(String),
    /// `path`: the whole path.
    Exact(String),
    /// `safe_regex.regex` (RE2 syntax, matched against the whole path).
    Regex(String),
}

/// `headers[]` of a route match.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatcher {
    /// `name` (lower-cased).
    pub name: String,
    /// How the value matches.
    pub value: ValueMatch,
    /// `invert_match`.
    pub invert: bool,
}

/// `query_parameters[]` of a route match.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryParameterMatcher {
    /// `name`.
    pub name: String,
    /// How the value matches.
    pub value: ValueMatch,
}

/// A value matcher (`exact_match`, `prefix_match`, `suffix_match`, `contains_match`,
/// `safe_regex_match`, `present_match`, or the newer `string_match{exact|prefix|suffix|contains|safe_regex, ignore_case}`).
#[derive(Debug, Clone, PartialEq)]
pub enum ValueMatch {
    /// The header or parameter is there (any value).
    Present,
    /// Equal.
    Exact {
        /// The value.
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// Starts with.
    Prefix {
        /// The prefix.
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// Ends with.
    Suffix {
        /// The suffix.
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// Contains.
    Contains {
        /// The substring.
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// Matches the whole value.
    Regex(String),
}

/// What a matched route does.
// Route actions are made once per configuration and read in place: their size is not
// worth a box on the request path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// `route`: forward to a cluster.
    Forward(ForwardAction),
    /// `direct_response`.
    DirectResponse {
        /// `status`.
        status: u16,
        /// `body.inline_string` (or `inline_bytes`).
        body: Option<Vec<u8>>,
    },
    /// `redirect`.
    Redirect(RedirectAction),
}

/// `route`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAction {
    /// `cluster` (empty with `cluster_header` or `weighted_clusters`).
    pub cluster: String,
    /// `cluster_header`: the cluster is named by this request header.
    pub cluster_header: Option<String>,
    /// `weighted_clusters.clusters`: the cluster is drawn by weight for each stream.
    pub weighted_clusters: Vec<WeightedCluster>,
    /// `cluster_not_found_response_code`: 503 (default), 404 or 500.
    pub cluster_not_found_status: u16,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: the path (not the query) rewritten.
    pub regex_rewrite: Option<RegexRewrite>,
    /// `host_rewrite_literal`.
    pub host_rewrite_literal: Option<String>,
    /// `auto_host_rewrite`: the host becomes the chosen endpoint's hostname (its
    /// `hostname`, or the name a DNS cluster resolved), if it has one.
    pub auto_host_rewrite: bool,
    /// `host_rewrite_header`: the host becomes this request header's value, if not empty.
    pub host_rewrite_header: Option<String>,
    /// `host_rewrite_path_regex`: the host becomes the path rewritten.
    pub host_rewrite_path_regex: Option<RegexRewrite>,
    /// `timeout` (Envoy default 15 s; `0s` = none, given as `None`).
    pub timeout: Option<Duration>,
    /// `upgrade_configs`: per upgrade type, allowed or not on this route (overriding the
    /// connection manager's).
    pub upgrades: Vec<Upgrade>,
    /// `retry_policy` (else the virtual host's).
    pub retry_policy: Option<RetryPolicy>,
    /// `hash_policy`: what a hashing load balancer (`RING_HASH`, `MAGLEV`) hashes.
    pub hash_policy: Vec<HashPolicy>,
    /// `priority: HIGH`: the cluster's `HIGH` circuit breakers and connections apply.
    pub high_priority: bool,
    /// `request_mirror_policies`: where copies of the request go.
    pub mirrors: Vec<MirrorPolicy>,
    /// `cors` (deprecated), if no typed CORS policy applies to the route.
    pub cors: Option<Box<CorsPolicy>>,
    /// `rate_limits`.
    pub rate_limits: Vec<RateLimitPolicy>,
    /// `include_vh_rate_limits`: the virtual host's rate limits apply too.
    pub include_vh_rate_limits: bool,
}

/// One of `request_mirror_policies`: a copy of each request (its answer ignored) to a
/// cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPolicy {
    /// `cluster` (empty with `cluster_header`).
    pub cluster: String,
    /// `cluster_header`: the request header naming the cluster.
    pub cluster_header: Option<String>,
    /// `runtime_fraction.default_value`, in millionths of requests (all if unset).
    pub per_million: u32,
    /// `-shadow` appended to the copy's host (not with `disable_shadow_host_suffix_append`).
    pub host_suffix: bool,
}

/// One `hash_policy` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HashPolicy {
    /// What is hashed.
    pub key: HashKey,
    /// `terminal`: when it yields a hash, the later entries are skipped.
    pub terminal: bool,
}

/// What a `hash_policy` entry hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    /// `header.header_name` (every value), rewritten by `header.regex_rewrite`.
    Header {
        /// The header's name, lowercase.
        name: String,
        /// `regex_rewrite`.
        rewrite: Option<RegexRewrite>,
    },
    /// `cookie.name` (without `ttl`: only a cookie the request has).
    Cookie(String),
    /// `connection_properties.source_ip`.
    SourceIp,
    /// `query_parameter.name`.
    QueryParameter(String),
}

/// A `RegexMatchAndSubstitute`: every match of `pattern` replaced by `substitution`
/// (RE2's `\1` references written as the regex crate's `${1}`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegexRewrite {
    /// `pattern.regex`.
    pub pattern: String,
    /// `substitution`, in the regex crate's syntax.
    pub substitution: String,
}

impl Default for ForwardAction {
    /// A route to no cluster yet, with Envoy's defaults (15 s timeout, 503 for a missing
    /// cluster).
    fn default() -> Self {
        ForwardAction {
            cluster: String::new(),
            cluster_header: None,
            weighted_clusters: Vec::new(),
            cluster_not_found_status: 503,
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite_literal: None,
            auto_host_rewrite: false,
            host_rewrite_header: None,
            host_rewrite_path_regex: None,
            timeout: Some(Duration::from_secs(15)),
            upgrades: Vec::new(),
            retry_policy: None,
            hash_policy: Vec::new(),
            high_priority: false,
            mirrors: Vec::new(),
            cors: None,
            rate_limits: Vec::new(),
            include_vh_rate_limits: false,
        }
    }
}

/// One of `weighted_clusters.clusters`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCluster {
    /// `name`.
    pub name: String,
    /// `weight`.
    pub weight: u32,
    /// Its header mutations, applied before the route's.
    pub headers: HeaderMutations,
    /// `host_rewrite_literal`.
    pub host_rewrite_literal: Option<String>,
}

/// `retry_policy`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `retry_on`.
    pub retry_on: RetryOn,
    /// `num_retries` (default 1).
    pub num_retries: u32,
    /// `per_try_timeout` (none: each try may take the route's whole timeout).
    pub per_try_timeout: Option<Duration>,
    /// `retriable_status_codes`, for `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `retry_back_off`: base and maximum interval (default 25 ms and ten times the base).
    pub back_off: (Duration, Duration),
    /// `retry_host_predicate` with `previous_hosts`: a try goes to an endpoint not tried yet.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts`: how many times the endpoint is picked again
    /// to find one not tried (default 1).
    pub host_selection_retry_max_attempts: u32,
    /// `retriable_headers`, for `retriable-headers`: an answer with a header one of them
    /// matches is tried again.
    pub retriable_headers: Vec<HeaderMatcher>,
    /// `retriable_request_headers`: only a request one of them matches is tried again.
    pub retriable_request_headers: Vec<HeaderMatcher>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: Vec::new(),
            back_off: (Duration::from_millis(25), Duration::from_millis(250)),
            previous_hosts: false,
            host_selection_retry_max_attempts: 1,
            retriable_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
        }
    }
}

/// The conditions of `retry_on`, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn(pub u32);

impl RetryOn {
    /// `5xx`: a 5xx answer, or none (a reset, a connection failure, a per-try timeout).
    pub const FIVE_XX: u32 = 1;
    /// `gateway-error`: 502, 503, 504, or no answer.
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    /// `reset`: no answer.
    pub const RESET: u32 = 1 << 2;
    /// `connect-failure`: no connection.
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    /// `retriable-4xx`: 409.
    pub const RETRIABLE_4XX: u32 = 1 << 4;
    /// `refused-stream`: an HTTP/2 `REFUSED_STREAM`.
    pub const REFUSED_STREAM: u32 = 1 << 5;
    /// `retriable-status-codes`: the policy's (and `x-envoy-retriable-status-codes`).
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    /// `envoy-ratelimited`: an answer with `x-envoy-ratelimited`.
    pub const ENVOY_RATELIMITED: u32 = 1 << 7;
    /// gRPC `cancelled` (1) in the response headers.
    pub const GRPC_CANCELLED: u32 = 1 << 8;
    /// gRPC `deadline-exceeded` (4).
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 9;
    /// gRPC `internal` (13).
    pub const GRPC_INTERNAL: u32 = 1 << 10;
    /// gRPC `resource-exhausted` (8).
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 11;
    /// gRPC `unavailable` (14).
    pub const GRPC_UNAVAILABLE: u32 = 1 << 12;
    /// `retriable-headers`.
    pub const RETRIABLE_HEADERS: u32 = 1 << 13;

    /// Whether any of `bits` is set.
    pub fn any(self, bits: u32) -> bool {
        self.0 & bits != 0
    }
}

/// `redirect`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedirectAction {
    /// `scheme_redirect`, or `https_redirect: true` as `https`.
    pub scheme: Option<String>,
    /// `host_redirect`.
    pub host: Option<String>,
    /// `port_redirect`.
    pub port: Option<u16>,
    /// `path_redirect`.
    pub path: Option<String>,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `response_code`: 301 (default), 302, 303, 307, 308.
    pub status: u16,
    /// `strip_query`.
    pub strip_query: bool,
}

/// `envoy.extensions.wasm.v3.PluginConfig` (inside `Wasm.config`, or a `WasmService`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WasmPlugin {
    /// `name`.
    pub name: String,
    /// `root_id`.
    pub root_id: String,
    /// `vm_config`.
    pub vm: WasmVm,
    /// `configuration`: StringValue/BytesValue contents raw, Struct as JSON text, absent = empty.
    pub configuration: Vec<u8>,
    /// `failure_policy`, or the deprecated `fail_open` (both at once is an error).
    pub failure_policy: FailurePolicy,
    /// `reload_config.backoff` for FAIL_RELOAD: (base interval, max interval).
    pub reload_backoff: Option<(Duration, Duration)>,
    /// `allow_on_headers_stop_iteration`.
    pub allow_on_headers_stop_iteration: bool,
    /// Set by the deprecated `fail_open: true`: unlike FAIL_OPEN, even the stream in which
    /// the VM fails goes on without the filter (Envoy 1.40 answers it 200, not 503).
    pub legacy_fail_open: bool,
}

/// `failure_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// FAIL_CLOSED (and UNSPECIFIED): 503 for the stream.
    #[default]
    FailClosed,
    /// FAIL_OPEN: skip the filter.
    FailOpen,
    /// FAIL_RELOAD: a fresh VM, with backoff.
    FailReload,
}

/// `vm_config`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WasmVm {
    /// `vm_id`.
    pub vm_id: String,
    /// `runtime` as written (`envoy.wasm.runtime.v8|wasmtime|wamr|null`); wasmproxy runs all on wasmtime.
    pub runtime: String,
    /// `code.local`.
    pub code: WasmCode,
    /// `configuration` (same encoding as the plugin's).
    pub configuration: Vec<u8>,
    /// `environment_variables`: `key_values` plus `host_env_keys` resolved at load time.
    pub environment: Vec<(String, String)>,
}

/// `code.local`.
#[derive(Debug, Clone, PartialEq)]
pub enum WasmCode {
    /// `filename`, as given (a relative name resolves against the working directory).
    File(PathBuf),
    /// `inline_bytes` (base64 in JSON/YAML) or `inline_string`.
    Inline(Vec<u8>),
    /// `remote`: fetched by URL through a cluster or from an OCI registry, checked against
    /// its sha256.
    Remote(Box<RemoteCode>),
}

/// The scheme of a module in an OCI registry (wasmproxy's; Envoy fetches only by HTTP).
pub const OCI_SCHEME: &str = "oci://";

/// `vm_config.code.remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCode {
    /// `http_uri.uri`: `http://` or `https://`, or `oci://registry/repository[:tag][@digest]`.
    pub uri: String,
    /// `http_uri.cluster`: the cluster the request goes through; `None` for `oci://`, which
    /// is pulled from the registry the reference names.
    pub cluster: Option<String>,
    /// `http_uri.timeout`: for each attempt.
    pub timeout: std::time::Duration,
    /// `sha256`, lowercase hex.
    pub sha256: String,
    /// `retry_policy.num_retries` (Envoy's default: 1).
    pub retries: u32,
    /// `retry_policy.retry_back_off.base_interval` (Envoy's default: 1 s).
    pub base_interval: std::time::Duration,
    /// `retry_policy.retry_back_off.max_interval` (10 times the base if not set).
    pub max_interval: std::time::Duration,
    /// `vm_config.nack_on_code_cache_miss`: an update whose module is not cached yet is
    /// refused (NACKed) while the module is fetched, rather than warmed until it is.
    pub nack_on_cache_miss: bool,
}

impl Default for WasmCode {
    fn default() -> Self {
        WasmCode::Inline(Vec::new())
    }
}

/// `bootstrap_extensions` `envoy.bootstrap.wasm`.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmService {
    /// `config`.
    pub plugin: WasmPlugin,
    /// `singleton`: one VM on the main thread; else one per worker.
    pub singleton: bool,
}

/// A cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `name`.
    pub name: String,
    /// `type` (`STATIC`, `STRICT_DNS`, `LOGICAL_DNS`, either case).
    pub discovery: Discovery,
    /// `connect_timeout` (Envoy default 5 s).
    pub connect_timeout: Duration,
    /// `lb_policy`.
    pub lb_policy: LbPolicy,
    /// `load_assignment.endpoints[].lb_endpoints[]`, in order.
    pub endpoints: Vec<Endpoint>,
    /// `dns_refresh_rate`: how often DNS clusters resolve their hosts again (Envoy: 5 s).
    pub dns_refresh_rate: Duration,
    /// `dns_lookup_family`: which resolved addresses DNS clusters use.
    pub dns_lookup_family: DnsLookupFamily,
    /// `eds_cluster_config`, for an EDS cluster.
    pub eds: Option<EdsSource>,
    /// HTTP/2 to the upstream (`typed_extension_protocol_options` with
    /// `explicit_http_config.http2_protocol_options`, or the older `http2_protocol_options`).
    pub http2: bool,
    /// `metadata`, for `xds.cluster_metadata`.
    pub metadata: Metadata,
    /// `transport_socket` `envoy.transport_sockets.tls`: TLS to the endpoints.
    pub tls: Option<UpstreamTls>,
    /// `typed_extension_protocol_options`' `upstream_http_protocol_options`.
    pub upstream_http: UpstreamHttpOptions,
    /// `circuit_breakers.thresholds` of the `DEFAULT` priority, or Envoy's defaults.
    pub circuit_breakers: CircuitBreakers,
    /// `circuit_breakers.thresholds` of the `HIGH` priority (routes with `priority: HIGH`).
    pub high_circuit_breakers: CircuitBreakers,
    /// How each request's protocol is chosen (else `http2` says).
    pub protocol_choice: ProtocolChoice,
    /// `common_http_protocol_options` (and the older `max_requests_per_connection`).
    pub connections: ConnectionOptions,
    /// `common_lb_config`.
    pub common_lb: CommonLb,
    /// `health_checks` (at most one, as Envoy runs them).
    pub health_checks: Vec<HealthCheck>,
    /// `outlier_detection`.
    pub outlier_detection: Option<OutlierDetection>,
}

/// One `lb_endpoints[]` entry with its locality's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `endpoint.address.socket_address`.
    pub address: SocketAddress,
    /// `endpoint.hostname` (the health checks' host and `use_hostname_for_hashing`).
    pub hostname: String,
    /// `load_balancing_weight` (1 if unset).
    pub weight: u32,
    /// `health_status` as the control plane reports it.
    pub health_status: EdsHealth,
    /// `endpoint.health_check_config`: where and as what host the health checks go.
    pub health_check_port: Option<u16>,
    /// `endpoint.health_check_config.hostname`.
    pub health_check_hostname: String,
    /// The locality's `locality`.
    pub locality: Locality,
    /// The locality's `load_balancing_weight` (0 if unset).
    pub locality_weight: u32,
    /// The locality's `priority` (0 is the highest).
    pub priority: u32,
}

impl Endpoint {
    /// An endpoint at `address` with every setting at its default.
    pub fn at(address: SocketAddress) -> Endpoint {
        Endpoint {
            address,
            hostname: String::new(),
            weight: 1,
            health_status: EdsHealth::Unknown,
            health_check_port: None,
            health_check_hostname: String::new(),
            locality: Locality::default(),
            locality_weight: 0,
            priority: 0,
        }
    }
}

/// `health_status` of an endpoint from the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EdsHealth {
    /// `UNKNOWN` (healthy unless health checks say otherwise).
    #[default]
    Unknown,
    /// `HEALTHY`.
    Healthy,
    /// `UNHEALTHY`, `DRAINING` or `TIMEOUT`: not used.
    Unhealthy,
    /// `DEGRADED`: used when too few hosts are healthy.
    Degraded,
}

/// `common_lb_config` and the policy's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonLb {
    /// `healthy_panic_threshold` in percent (Envoy: 50): below it, every host is used.
    pub panic_threshold: f64,
    /// `locality_weighted_lb_config`: localities are chosen by weight first.
    pub locality_weighted: bool,
    /// `consistent_hashing_lb_config.use_hostname_for_hashing`.
    pub hash_by_hostname: bool,
    /// `least_request_lb_config.choice_count` (2).
    pub choice_count: u32,
    /// `least_request_lb_config.active_request_bias` (1.0 if unset; when set, least
    /// request is weighted even when the weights are equal, as in Envoy 1.40).
    pub active_request_bias: Option<f64>,
    /// `ring_hash_lb_config.minimum_ring_size` (1024).
    pub minimum_ring_size: u64,
    /// `ring_hash_lb_config.maximum_ring_size` (8M).
    pub maximum_ring_size: u64,
    /// `maglev_lb_config.table_size` (65537).
    pub maglev_table_size: u64,
}

impl Default for CommonLb {
    fn default() -> Self {
        CommonLb {
            panic_threshold: 50.0,
            locality_weighted: false,
            hash_by_hostname: false,
            choice_count: 2,
            active_request_bias: None,
            minimum_ring_size: 1024,
            maximum_ring_size: 8 * 1024 * 1024,
            maglev_table_size: 65537,
        }
    }
}

/// One entry of `health_checks`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// `timeout`.
    pub timeout: Duration,
    /// `interval`.
    pub interval: Duration,
    /// `initial_jitter`.
    pub initial_jitter: Duration,
    /// `interval_jitter`.
    pub interval_jitter: Duration,
    /// `interval_jitter_percent`.
    pub interval_jitter_percent: u32,
    /// `unhealthy_threshold`.
    pub unhealthy_threshold: u32,
    /// `healthy_threshold`.
    pub healthy_threshold: u32,
    /// `reuse_connection` (true).
    pub reuse_connection: bool,
    /// `no_traffic_interval` (60 s): the interval while the cluster has had no traffic.
    pub no_traffic_interval: Duration,
    /// `no_traffic_healthy_interval` (else `no_traffic_interval`).
    pub no_traffic_healthy_interval: Option<Duration>,
    /// `unhealthy_interval` (else `interval`).
    pub unhealthy_interval: Option<Duration>,
    /// `unhealthy_edge_interval` (else `unhealthy_interval`).
    pub unhealthy_edge_interval: Option<Duration>,
    /// `healthy_edge_interval` (else `interval`).
    pub healthy_edge_interval: Option<Duration>,
    /// `always_log_health_check_failures`.
    pub always_log_failures: bool,
    /// What is checked.
    pub kind: HealthCheckKind,
}

/// The health checker of a `health_checks` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheckKind {
    /// `http_health_check`.
    Http(HttpHealthCheck),
    /// `tcp_health_check`: `send` bytes, then every `receive` payload in the answer (an
    /// empty `send` checks only that a connection opens).
    Tcp {
        /// `send`.
        send: Vec<u8>,
        /// `receive`, each found in order in what the endpoint sends back.
        receive: Vec<Vec<u8>>,
    },
    /// `grpc_health_check`: `grpc.health.v1.Health/Check` answered `SERVING`.
    Grpc {
        /// `service_name`.
        service_name: String,
        /// `authority` (else the cluster's name).
        authority: String,
        /// `initial_metadata`.
        metadata: Vec<(String, String)>,
    },
}

/// `http_health_check`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpHealthCheck {
    /// `host` (the endpoint's `health_check_config.hostname` first; else the cluster's name).
    pub host: String,
    /// `path`.
    pub path: String,
    /// `method` (GET).
    pub method: String,
    /// `request_headers_to_add`.
    pub headers_to_add: Vec<HeaderToAdd>,
    /// `request_headers_to_remove`.
    pub headers_to_remove: Vec<String>,
    /// `expected_statuses` as `[start, end)` ranges (200 only if unset).
    pub expected_statuses: Vec<(u16, u16)>,
    /// `retriable_statuses`: failures that count toward `unhealthy_threshold` rather than
    /// making the host unhealthy at once.
    pub retriable_statuses: Vec<(u16, u16)>,
    /// `codec_client_type` HTTP2.
    pub http2: bool,
}

/// `outlier_detection`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// `consecutive_5xx` (5).
    pub consecutive_5xx: u32,
    /// `consecutive_gateway_failure` (5).
    pub consecutive_gateway_failure: u32,
    /// `consecutive_local_origin_failure` (5).
    pub consecutive_local_origin_failure: u32,
    /// `interval` (10 s).
    pub interval: Duration,
    /// `base_ejection_time` (30 s).
    pub base_ejection_time: Duration,
    /// `max_ejection_time` (300 s).
    pub max_ejection_time: Duration,
    /// `max_ejection_time_jitter` (0).
    pub max_ejection_time_jitter: Duration,
    /// `max_ejection_percent` (10).
    pub max_ejection_percent: u32,
    /// `enforcing_consecutive_5xx` (100).
    pub enforcing_consecutive_5xx: u32,
    /// `enforcing_consecutive_gateway_failure` (0).
    pub enforcing_consecutive_gateway_failure: u32,
    /// `enforcing_consecutive_local_origin_failure` (100).
    pub enforcing_consecutive_local_origin_failure: u32,
    /// `enforcing_success_rate` (100).
    pub enforcing_success_rate: u32,
    /// `enforcing_local_origin_success_rate` (100).
    pub enforcing_local_origin_success_rate: u32,
    /// `success_rate_minimum_hosts` (5).
    pub success_rate_minimum_hosts: u32,
    /// `success_rate_request_volume` (100).
    pub success_rate_request_volume: u32,
    /// `success_rate_stdev_factor` (1900, in thousandths).
    pub success_rate_stdev_factor: u32,
    /// `failure_percentage_threshold` (85).
    pub failure_percentage_threshold: u32,
    /// `enforcing_failure_percentage` (0).
    pub enforcing_failure_percentage: u32,
    /// `enforcing_failure_percentage_local_origin` (0).
    pub enforcing_failure_percentage_local_origin: u32,
    /// `failure_percentage_minimum_hosts` (5).
    pub failure_percentage_minimum_hosts: u32,
    /// `failure_percentage_request_volume` (50).
    pub failure_percentage_request_volume: u32,
    /// `split_external_local_origin_errors`.
    pub split_external_local_origin_errors: bool,
    /// `successful_active_health_check_uneject_host` (true).
    pub uneject_on_health_check_success: bool,
    /// `always_eject_one_host`.
    pub always_eject_one_host: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            split_external_local_origin_errors: false,
            uneject_on_health_check_success: true,
            always_eject_one_host: false,
        }
    }
}

/// How an HTTP cluster picks each request's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolChoice {
    /// `explicit_http_config` (or nothing): the cluster's `http2`.
    #[default]
    Explicit,
    /// `auto_config`: HTTP/2 if the upstream's TLS agrees to it (ALPN), else HTTP/1.1.
    Alpn,
    /// `use_downstream_protocol_config`: the protocol the client's request came in.
    Downstream,
}

/// `common_http_protocol_options` of a cluster's upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `idle_timeout` (Envoy: 1 h; 0: none): a connection without requests that long closes.
    pub idle_timeout: Option<Duration>,
    /// `max_requests_per_connection`: a connection that carried this many takes no more.
    pub max_requests: Option<u32>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions { idle_timeout: Some(Duration::from_secs(3600)), max_requests: None }
    }
}

/// `circuit_breakers` thresholds of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// `max_connections` (1024).
    pub max_connections: u32,
    /// `max_pending_requests` (1024).
    pub max_pending_requests: u32,
    /// `max_requests` (1024).
    pub max_requests: u32,
    /// `max_retries` (3).
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 3 }
    }
}

/// Envoy's `UpstreamHttpProtocolOptions`: the server name of new TLS connections taken
/// from each request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamHttpOptions {
    /// `auto_sni`: a new connection's SNI is the request's host (`:authority` without its
    /// port), or `override_auto_sni_header`'s value when the request has it.
    pub auto_sni: bool,
    /// `auto_san_validation`: the upstream's certificate must name that host (in place of
    /// the validation context's SAN matchers).
    pub auto_san_validation: bool,
    /// `override_auto_sni_header`.
    pub override_auto_sni_header: Option<String>,
}

/// Envoy's own words for a validation context without `trusted_ca` (a secret's may lack
/// it until merged into a default context).
pub const MISSING_CA: &str = "SAN-based verification of peer certificates without trusted CA is insecure and not allowed (trusted_ca is required)";

/// Why a cluster's client certificate with an OCSP staple, inline or from a secret, is
/// refused.
pub const CLUSTER_OCSP_STAPLE: &str =
    "a cluster's client certificate with an OCSP staple is not supported by wasmproxy";

/// Envoy's `UpstreamTlsContext`, as far as wasmproxy serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// `sni`: the server name sent (none: no SNI, as in Envoy).
    pub sni: Option<String>,
    /// `common_tls_context.alpn_protocols` (none: `h2` or `http/1.1` for HTTP, by the
    /// cluster's protocol, as Envoy falls back to).
    pub alpn_protocols: Vec<String>,
    /// `common_tls_context.tls_params` (Envoy's client defaults: TLS 1.2 to TLS 1.2).
    pub versions: (TlsVersion, TlsVersion),
    /// `common_tls_context.tls_params`' cipher suites and curves.
    pub algorithms: TlsAlgorithms,
    /// `common_tls_context.tls_certificates` or `tls_certificate_sds_secret_configs`: the
    /// client certificate, if any.
    pub certificate: Option<CertificateSource>,
    /// `common_tls_context.validation_context` (or a secret holding one): how the
    /// upstream's certificate is checked (none: it is not, as in Envoy).
    pub validation: Option<ValidationSource>,
}

/// A `CertificateValidationContext`: the CAs a peer's certificate must chain to, and the
/// subject alternative names it must have one of.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateValidation {
    /// `trusted_ca`: PEM certificates (none only in a part to be merged: a secret's, or a
    /// `default_validation_context`; a context in use has it).
    pub trusted_ca: Option<DataSource>,
    /// `match_typed_subject_alt_names` (and the older `match_subject_alt_names`, any type):
    /// one must match (none: any name).
    pub subject_alt_names: Vec<SanMatcher>,
    /// `crl`: PEM certificate revocation lists; a certificate one of them revokes is refused.
    pub crl: Option<DataSource>,
    /// `only_verify_leaf_cert_crl`: only the peer's own certificate is looked up in them
    /// (else every certificate of its chain).
    pub only_verify_leaf_cert_crl: bool,
}

impl CertificateValidation {
    /// `default` with `secret` merged into it, as protobuf merges (Envoy's
    /// `combined_validation_context`): the secret's `trusted_ca` and `crl` where it has
    /// them, the SAN matchers of both, `only_verify_leaf_cert_crl` if either says so.
    pub fn merged(default: &CertificateValidation, secret: &CertificateValidation) -> CertificateValidation {
        CertificateValidation {
            trusted_ca: secret.trusted_ca.clone().or_else(|| default.trusted_ca.clone()),
            subject_alt_names: default.subject_alt_names.iter().chain(&secret.subject_alt_names).cloned().collect(),
            crl: secret.crl.clone().or_else(|| default.crl.clone()),
            only_verify_leaf_cert_crl: default.only_verify_leaf_cert_crl || secret.only_verify_leaf_cert_crl,
        }
    }
}

/// One `SubjectAltNameMatcher`.
#[derive(Debug, Clone, PartialEq)]
pub struct SanMatcher {
    /// `san_type` (none: any type, from `match_subject_alt_names`).
    pub san_type: Option<SanType>,
    /// `matcher`.
    pub matcher: ValueMatch,
}

/// A subject alternative name's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    /// `EMAIL`.
    Email,
    /// `DNS`.
    Dns,
    /// `URI`.
    Uri,
    /// `IP_ADDRESS`.
    IpAddress,
}

/// `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discovery {
    /// `STATIC`.
    #[default]
    Static,
    /// `STRICT_DNS`.
    StrictDns,
    /// `LOGICAL_DNS`.
    LogicalDns,
    /// `EDS`: the endpoints come from an EDS file (`eds_cluster_config`).
    Eds,
}

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsLookupFamily {
    /// `AUTO`: IPv6 addresses if the host has any, else IPv4.
    #[default]
    Auto,
    /// `V4_ONLY`.
    V4Only,
    /// `V6_ONLY`.
    V6Only,
    /// `V4_PREFERRED`: IPv4 addresses if the host has any, else IPv6.
    V4Preferred,
    /// `ALL`: every address.
    All,
}

/// `lb_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// `ROUND_ROBIN`.
    #[default]
    RoundRobin,
    /// `RANDOM`.
    Random,
    /// `LEAST_REQUEST`.
    LeastRequest,
    /// `RING_HASH`.
    RingHash,
    /// `MAGLEV`.
    Maglev,
}

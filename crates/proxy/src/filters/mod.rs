//! The HTTP filters a connection manager runs, behind one interface: Wasm plugins and the
//! native filters (CORS, CSRF, local rate limit, compressor, decompressor, external
//! authorization, global rate limit, RBAC, fault injection, buffer, header mutation, health check,
//! gRPC HTTP/1 bridge),
//! a context per stream in each, and what routes configure for them.

pub mod buffer;
pub mod codec;
pub mod compressor;
pub mod cors;
pub mod csrf;
pub mod decompressor;
pub mod ext_authz;
pub mod fault;
pub mod grpc_http1_bridge;
pub mod header_mutation;
pub mod header_options;
pub mod health_check;
pub mod local_ratelimit;
pub mod ratelimit;
pub mod rbac;

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use wasmproxy_config::model::{CompressorPerRoute, ExtAuthzPerRoute, FailurePolicy, NativeFilter, PerFilterConfig};
use wasmproxy_host::{Headers, VmError};
use wasmproxy_stats::Store;

use crate::http::direction::Direction;
use crate::http::reply::{DataVerdict, Verdict};
use crate::stream_info::StreamRef;
use crate::tracer::ParentSpan;
use crate::upstream::cluster::Clusters;
use crate::wasm::http_filter::{FilterSlot, FilterStream};

/// One filter of a connection manager's chain on one worker.
pub enum ChainFilter {
    /// `envoy.filters.http.wasm`: a plugin's root context.
    Wasm(Rc<FilterSlot>),
    /// CORS: its policies come from the routes.
    Cors(Rc<cors::CorsFilter>),
    /// `envoy.filters.http.local_ratelimit`.
    LocalRateLimit(Rc<local_ratelimit::RateLimitFilter>),
    /// `envoy.filters.http.compressor`.
    Compressor(Rc<compressor::CompressorFilter>),
    /// `envoy.filters.http.decompressor`.
    Decompressor(Rc<decompressor::DecompressorFilter>),
    /// `envoy.filters.http.csrf`.
    Csrf(Rc<csrf::CsrfFilter>),
    /// `envoy.filters.http.ext_authz`.
    ExtAuthz(Rc<ext_authz::ExtAuthzFilter>),
    /// `envoy.filters.http.rbac`.
    Rbac(Rc<rbac::RbacFilter>),
    /// `envoy.filters.http.fault`.
    Fault(Rc<fault::FaultFilter>),
    /// `envoy.filters.http.buffer`: its name and `max_request_bytes`.
    Buffer(Rc<str>, u32),
    /// `envoy.filters.http.header_mutation`: its name and configuration.
    HeaderMutation(Rc<str>, Arc<header_mutation::Config>),
    /// `envoy.filters.http.ratelimit`.
    RateLimit(Rc<ratelimit::RateLimitFilter>),
    /// `envoy.filters.http.health_check`.
    HealthCheck(Rc<health_check::HealthCheck>),
    /// `envoy.filters.http.grpc_http1_bridge`.
    GrpcHttp1Bridge,
}

/// A native filter as a snapshot holds it: its name and what the workers share (its
/// configuration, a rate limiter's bucket, compiled regexes).
#[derive(Clone)]
pub struct SharedNative {
    /// The filter's `name` (what routes' `typed_per_filter_config` call it).
    pub name: String,
    /// What it is.
    pub kind: SharedKind,
}

/// A native filter's configuration, ready for the workers.
#[derive(Clone)]
pub enum SharedKind {
    /// CORS.
    Cors,
    /// A local rate limit and its bucket.
    LocalRateLimit(Arc<local_ratelimit::Limiter>),
    /// A compressor.
    Compressor(Box<wasmproxy_config::model::Compressor>),
    /// A decompressor.
    Decompressor(Box<wasmproxy_config::model::Decompressor>),
    /// CSRF, with its policy.
    Csrf(Arc<csrf::Policy>),
    /// External authorization.
    ExtAuthz(Arc<ext_authz::Config>),
    /// RBAC, its engines compiled.
    Rbac(Arc<rbac::Config>),
    /// Fault injection.
    Fault(Arc<fault::Config>),
    /// Buffer, with its `max_request_bytes`.
    Buffer(u32),
    /// Header mutation.
    HeaderMutation(Arc<header_mutation::Config>),
    /// Global rate limit.
    RateLimit(Arc<wasmproxy_config::model::RateLimitFilter>),
    /// Health check.
    HealthCheck(Arc<health_check::Config>),
    /// The gRPC HTTP/1 bridge.
    GrpcHttp1Bridge,
}

impl SharedNative {
    /// The filter `name` configured so; `Err` for a regex that does not compile.
    pub fn new(name: &str, config: &NativeFilter) -> Result<SharedNative, (String, regex::Error)> {
        let kind = match config {
            NativeFilter::Cors => SharedKind::Cors,
            NativeFilter::LocalRateLimit(l) => SharedKind::LocalRateLimit(Arc::new(local_ratelimit::Limiter::new(l))),
            NativeFilter::Compressor(c) => SharedKind::Compressor(c.clone()),
            NativeFilter::Decompressor(d) => SharedKind::Decompressor(d.clone()),
            NativeFilter::Csrf(p) => SharedKind::Csrf(Arc::new(csrf::Policy::new(p)?)),
            NativeFilter::ExtAuthz(a) => SharedKind::ExtAuthz(Arc::new(ext_authz::Config::new(a)?)),
            NativeFilter::Rbac(r) => SharedKind::Rbac(Arc::new(rbac::Config::new(r)?)),
            NativeFilter::Fault(f) => SharedKind::Fault(Arc::new(fault::Config::new(f)?)),
            NativeFilter::Buffer(max) => SharedKind::Buffer(*max),
            NativeFilter::HealthCheck(h) => SharedKind::HealthCheck(Arc::new(health_check::Config::new(h)?)),
            NativeFilter::RateLimit(r) => SharedKind::RateLimit(Arc::new((**r).clone())),
            NativeFilter::HeaderMutation(h) => SharedKind::HeaderMutation(Arc::new(header_mutation::Config::new(h)?)),
            NativeFilter::GrpcHttp1Bridge => SharedKind::GrpcHttp1Bridge,
        };
        Ok(SharedNative { name: name.to_string(), kind })
    }

    /// The filter on a worker (see [`WorkerContext`]).
    pub fn on_worker(&self, cx: &WorkerContext<'_>) -> ChainFilter {
        let WorkerContext { store, http_prefix, compressors, clusters, .. } = *cx;
        let name = self.name.clone();
        match &self.kind {
            SharedKind::Cors => ChainFilter::Cors(Rc::new(cors::CorsFilter::new(name, store, http_prefix))),
            SharedKind::LocalRateLimit(limiter) => {
                ChainFilter::LocalRateLimit(Rc::new(local_ratelimit::RateLimitFilter::new(name, limiter.clone(), cx)))
            }
            SharedKind::Compressor(c) => ChainFilter::Compressor(Rc::new(compressor::CompressorFilter::new(
                name,
                c,
                compressors.to_vec(),
                store,
                http_prefix,
            ))),
            SharedKind::Decompressor(d) => {
                ChainFilter::Decompressor(Rc::new(decompressor::DecompressorFilter::new(d, store, http_prefix)))
            }
            SharedKind::Csrf(policy) => {
                ChainFilter::Csrf(Rc::new(csrf::CsrfFilter::new(name, policy.clone(), store, http_prefix)))
            }
            SharedKind::ExtAuthz(config) => ChainFilter::ExtAuthz(Rc::new(ext_authz::ExtAuthzFilter::new(
                name,
                config.clone(),
                clusters.clone(),
                store,
                http_prefix,
            ))),
            SharedKind::Rbac(config) => {
                ChainFilter::Rbac(Rc::new(rbac::RbacFilter::new(name, config.clone(), store, http_prefix)))
            }
            SharedKind::Fault(config) => {
                ChainFilter::Fault(Rc::new(fault::FaultFilter::new(name, config.clone(), store, http_prefix)))
            }
            SharedKind::Buffer(max) => ChainFilter::Buffer(name.into(), *max),
            SharedKind::HeaderMutation(config) => ChainFilter::HeaderMutation(name.into(), config.clone()),
            SharedKind::HealthCheck(config) => {
                ChainFilter::HealthCheck(Rc::new(health_check::HealthCheck::new(config.clone(), cx)))
            }
            SharedKind::RateLimit(config) => {
                ChainFilter::RateLimit(Rc::new(ratelimit::RateLimitFilter::new(config.clone(), cx)))
            }
            SharedKind::GrpcHttp1Bridge => ChainFilter::GrpcHttp1Bridge,
        }
    }
}

/// What a worker gives its filters: its stats store, the connection manager's stats prefix
/// (`http.<stat_prefix>.`), the chain's compressors, its clusters (for the services filters
/// call), this node's cluster.
#[derive(Clone, Copy)]
pub struct WorkerContext<'a> {
    /// The stats store.
    pub store: &'a Arc<Store>,
    /// `http.<stat_prefix>.`.
    pub http_prefix: &'a str,
    /// Every compressor of the chain.
    pub compressors: &'a [compressor::Sibling],
    /// The worker's clusters.
    pub clusters: &'a Rc<Clusters>,
    /// `node.cluster`.
    pub local_cluster: &'a str,
}

/// What a stream's route configures for the filters.
#[derive(Default)]
pub struct RouteFilters {
    /// `typed_per_filter_config` entries, most specific first (the route's, its virtual
    /// host's, its route configuration's).
    pub entries: Vec<Arc<RouteFilter>>,
    /// The deprecated `cors` policies: the route's, then its virtual host's.
    pub legacy_cors: Vec<Arc<cors::Policy>>,
    /// The route's and its virtual host's `rate_limits`.
    pub rate_limits: ratelimit::RoutePolicies,
}

/// One `typed_per_filter_config` entry, compiled.
pub struct RouteFilter {
    /// The filter's name.
    pub name: String,
    /// Whether it turns the filter off.
    pub disabled: bool,
    /// The filter's own configuration there.
    pub config: Option<RouteConfig>,
}

/// A native filter's configuration for some routes, compiled (a rate limiter's bucket
/// made once per route configuration level, shared by the workers).
pub enum RouteConfig {
    /// A CORS policy.
    Cors(Arc<cors::Policy>),
    /// A local rate limit, replacing the filter's own.
    LocalRateLimit(Arc<local_ratelimit::Limiter>),
    /// The compressor's per-route setting.
    Compressor(CompressorPerRoute),
    /// A CSRF policy, replacing the filter's.
    Csrf(Arc<csrf::Policy>),
    /// External authorization's settings for these routes.
    ExtAuthz(Box<ExtAuthzPerRoute>),
    /// RBAC engines replacing the filter's (none: no checks).
    Rbac(Option<Arc<rbac::Config>>),
    /// Faults replacing the filter's.
    Fault(Arc<fault::Config>),
    /// The buffer's own limit for these routes, or none (off).
    Buffer(Option<u32>),
    /// Header mutations added for these routes.
    HeaderMutation(Arc<header_mutation::Block>),
}

impl RouteFilter {
    /// A `typed_per_filter_config` entry; `Err` for a CORS regex that does not compile.
    pub fn compile(o: &wasmproxy_config::model::FilterOverride) -> Result<RouteFilter, (String, regex::Error)> {
        let config = match &o.config {
            None => None,
            Some(PerFilterConfig::Cors(p)) => Some(RouteConfig::Cors(Arc::new(cors::Policy::new(p)?))),
            Some(PerFilterConfig::LocalRateLimit(l)) => {
                Some(RouteConfig::LocalRateLimit(Arc::new(local_ratelimit::Limiter::new(l))))
            }
            Some(PerFilterConfig::Compressor(c)) => Some(RouteConfig::Compressor((**c).clone())),
            Some(PerFilterConfig::Csrf(p)) => Some(RouteConfig::Csrf(Arc::new(csrf::Policy::new(p)?))),
            Some(PerFilterConfig::ExtAuthz(a)) => Some(RouteConfig::ExtAuthz(a.clone())),
            Some(PerFilterConfig::Buffer(limit)) => Some(RouteConfig::Buffer(*limit)),
            Some(PerFilterConfig::HeaderMutation(b)) => {
                Some(RouteConfig::HeaderMutation(Arc::new(header_mutation::Block::new(b)?)))
            }
            Some(PerFilterConfig::Fault(f)) => Some(RouteConfig::Fault(Arc::new(fault::Config::new(f)?))),
            Some(PerFilterConfig::Rbac(r)) => {
                Some(RouteConfig::Rbac(r.as_deref().map(rbac::Config::new).transpose()?.map(Arc::new)))
            }
        };
        Ok(RouteFilter { name: o.name.clone(), disabled: o.disabled, config })
    }
}

impl RouteFilters {
    /// The configurations of the filter `name`, most specific first.
    pub fn configs<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a RouteConfig> + 'a {
        self.entries.iter().filter(move |e| e.name == name).filter_map(|e| e.config.as_ref())
    }
}

/// The route a filter starts a stream on, as far as filters care: its per-filter
/// configurations, and whether it forwards (a direct response or a redirect does not).
#[derive(Clone, Copy)]
pub struct StreamRoute<'a> {
    /// Its filters' configurations.
    pub filters: &'a RouteFilters,
    /// Whether it is a `route` (not a `redirect` or `direct_response`).
    pub forwards: bool,
}

impl ChainFilter {
    /// A new stream through this filter, on `route` (none matched); the calls it makes
    /// are spans under `parent` (the stream's, if traced).
    #[inline]
    pub fn start_stream(
        &self,
        info: &StreamRef,
        route: Option<StreamRoute<'_>>,
        parent: Option<&ParentSpan>,
    ) -> Result<StreamFilter, VmError> {
        Ok(match self {
            ChainFilter::Wasm(slot) => StreamFilter::Wasm(slot.start_stream(info)?),
            ChainFilter::Cors(f) => StreamFilter::Cors(cors::CorsStream::new(f, info, route)),
            ChainFilter::LocalRateLimit(f) => {
                StreamFilter::LocalRateLimit(local_ratelimit::RateLimitStream::new(f, info, route))
            }
            ChainFilter::Compressor(f) => StreamFilter::Compressor(compressor::CompressorStream::new(f, route)),
            ChainFilter::Decompressor(f) => StreamFilter::Decompressor(decompressor::DecompressorStream::new(f)),
            ChainFilter::Csrf(f) => StreamFilter::Csrf(csrf::CsrfStream::new(f, info, route)),
            ChainFilter::ExtAuthz(f) => StreamFilter::ExtAuthz(ext_authz::ExtAuthzStream::new(f, info, route, parent)),
            ChainFilter::Rbac(f) => StreamFilter::Rbac(rbac::RbacStream::new(f, info, route)),
            ChainFilter::Fault(f) => StreamFilter::Fault(fault::FaultStream::new(f, info, route)),
            ChainFilter::Buffer(name, max) => StreamFilter::Buffer(buffer::BufferStream::new(name, *max, route)),
            ChainFilter::HealthCheck(f) => StreamFilter::HealthCheck(health_check::HealthCheckStream::new(f, info)),
            ChainFilter::RateLimit(f) => {
                StreamFilter::RateLimit(ratelimit::RateLimitStream::new(f, info, route, parent))
            }
            ChainFilter::HeaderMutation(name, config) => {
                StreamFilter::HeaderMutation(header_mutation::HeaderMutationStream::new(name, config, info, route))
            }
            ChainFilter::GrpcHttp1Bridge => StreamFilter::GrpcHttp1Bridge(grpc_http1_bridge::BridgeStream::new(info)),
        })
    }

    /// Whether a stream goes on without this filter when it cannot start (a Wasm filter
    /// whose VM failed, under `FAIL_OPEN`).
    pub fn fails_open(&self) -> bool {
        match self {
            ChainFilter::Wasm(slot) => slot.failure_policy == FailurePolicy::FailOpen,
            _ => true,
        }
    }

    /// Whether a stream goes on without this filter when it fails in a callback (the Wasm
    /// filter's deprecated `fail_open`).
    pub fn fails_open_in_stream(&self) -> bool {
        match self {
            ChainFilter::Wasm(slot) => slot.reload.0.legacy_fail_open,
            _ => false,
        }
    }

    /// Whether this is a Wasm filter: a stream it was not reached by still gets a context
    /// for the access-log phase (`on_log`, as in Envoy), and a plugin that changes the
    /// request headers makes the route be found again for the filters after it.
    pub fn is_wasm(&self) -> bool {
        matches!(self, ChainFilter::Wasm(_))
    }

    /// Whether the filter reads its route's configuration when a stream starts.
    pub fn reads_route(&self) -> bool {
        !self.is_wasm()
    }
}

/// One stream's context in one filter.
pub enum StreamFilter {
    /// A Wasm plugin's stream context.
    Wasm(FilterStream),
    /// CORS.
    Cors(cors::CorsStream),
    /// Local rate limit.
    LocalRateLimit(local_ratelimit::RateLimitStream),
    /// Compressor.
    Compressor(compressor::CompressorStream),
    /// Decompressor.
    Decompressor(decompressor::DecompressorStream),
    /// CSRF.
    Csrf(csrf::CsrfStream),
    /// External authorization.
    ExtAuthz(ext_authz::ExtAuthzStream),
    /// RBAC.
    Rbac(rbac::RbacStream),
    /// Fault injection.
    Fault(fault::FaultStream),
    /// Buffer.
    Buffer(buffer::BufferStream),
    /// Header mutation.
    HeaderMutation(header_mutation::HeaderMutationStream),
    /// Global rate limit.
    RateLimit(ratelimit::RateLimitStream),
    /// Health check.
    HealthCheck(health_check::HealthCheckStream),
    /// The gRPC HTTP/1 bridge.
    GrpcHttp1Bridge(grpc_http1_bridge::BridgeStream),
}

impl StreamFilter {
    /// The request headers; each filter sees the headers the previous one left.
    #[inline]
    pub async fn request_headers(&mut self, headers: &mut Headers, eos: bool) -> Verdict {
        match self {
            StreamFilter::Wasm(s) => s.request_headers(headers, eos).await,
            StreamFilter::Cors(s) => s.request_headers(headers),
            StreamFilter::LocalRateLimit(s) => s.request_headers(headers),
            StreamFilter::Compressor(s) => s.request_headers(headers, eos),
            StreamFilter::Decompressor(s) => s.request_headers(headers, eos),
            StreamFilter::Csrf(s) => s.request_headers(headers),
            StreamFilter::ExtAuthz(s) => s.request_headers(headers, eos).await,
            StreamFilter::Rbac(s) => s.request_headers(headers),
            StreamFilter::Fault(s) => s.request_headers(headers).await,
            StreamFilter::Buffer(s) => s.request_headers(eos),
            StreamFilter::HeaderMutation(s) => s.request_headers(headers),
            StreamFilter::RateLimit(s) => s.request_headers(headers).await,
            StreamFilter::HealthCheck(s) => s.request_headers(headers, eos),
            StreamFilter::GrpcHttp1Bridge(s) => s.request_headers(headers),
        }
    }

    /// The whole request body, for a filter whose request headers waited for it
    /// ([`Verdict::WaitForBody`]); the headers have not gone past it yet.
    pub async fn request_body(&mut self, headers: &mut Headers, body: &Bytes) -> Verdict {
        match self {
            StreamFilter::Buffer(s) => s.request_body(headers, body),
            StreamFilter::ExtAuthz(s) => s.request_body(headers, body).await,
            StreamFilter::HealthCheck(s) => s.request_body(),
            _ => Verdict::Continue,
        }
    }

    /// The whole response, for a filter whose response headers waited for it
    /// ([`Verdict::WaitForBody`]), with its trailers; the headers have not gone past it yet.
    pub fn response_body(&mut self, headers: &mut Headers, body: &Bytes, trailers: Option<&Headers>) -> Verdict {
        match self {
            StreamFilter::GrpcHttp1Bridge(s) => s.response_body(headers, body, trailers),
            _ => Verdict::Continue,
        }
    }

    /// The response headers.
    #[inline]
    pub async fn response_headers(&mut self, headers: &mut Headers, eos: bool) -> Verdict {
        match self {
            StreamFilter::Wasm(s) => s.response_headers(headers, eos).await,
            StreamFilter::Cors(s) => s.response_headers(headers),
            StreamFilter::LocalRateLimit(s) => s.response_headers(headers),
            StreamFilter::Compressor(s) => s.response_headers(headers, eos),
            StreamFilter::Decompressor(s) => s.response_headers(headers, eos),
            StreamFilter::ExtAuthz(s) => s.response_headers(headers),
            StreamFilter::HeaderMutation(s) => s.response_headers(headers),
            StreamFilter::RateLimit(s) => s.response_headers(headers),
            StreamFilter::HealthCheck(s) => s.response_headers(headers),
            StreamFilter::GrpcHttp1Bridge(s) => s.response_headers(eos),
            StreamFilter::Csrf(_) | StreamFilter::Rbac(_) | StreamFilter::Fault(_) | StreamFilter::Buffer(_) => {
                Verdict::Continue
            }
        }
    }

    /// One chunk of a body (see [`FilterStream::data`]): what passes on, held back up to
    /// `limit` bytes.
    #[inline]
    pub async fn data(&mut self, direction: Direction, chunk: Bytes, eos: bool, limit: usize) -> DataVerdict {
        match self {
            StreamFilter::Wasm(s) => s.data(direction, chunk, eos, limit).await,
            StreamFilter::Compressor(s) => DataVerdict::Pass(s.data(direction, chunk, eos)),
            StreamFilter::Decompressor(s) => s.data(direction, chunk, eos),
            StreamFilter::Cors(_)
            | StreamFilter::LocalRateLimit(_)
            | StreamFilter::Csrf(_)
            | StreamFilter::ExtAuthz(_)
            | StreamFilter::Rbac(_)
            | StreamFilter::Fault(_)
            | StreamFilter::Buffer(_)
            | StreamFilter::HeaderMutation(_)
            | StreamFilter::RateLimit(_)
            | StreamFilter::HealthCheck(_)
            | StreamFilter::GrpcHttp1Bridge(_) => DataVerdict::Pass(chunk),
        }
    }

    /// The end of a body that ends with trailers: a Wasm filter gets no body callback (as in
    /// Envoy) but gives up what it held; a native filter gets the end of its body (a
    /// compressor finishes its stream). What passes on.
    pub async fn end_before_trailers(&mut self, direction: Direction, limit: usize) -> DataVerdict {
        match self {
            StreamFilter::Wasm(s) => DataVerdict::Pass(s.release_held(direction).unwrap_or_default()),
            _ => self.data(direction, Bytes::new(), true, limit).await,
        }
    }

    /// The trailers of a body.
    #[inline]
    pub async fn trailers(&mut self, direction: Direction, trailers: &mut Headers) -> Verdict {
        match self {
            StreamFilter::Wasm(s) => s.trailers(direction, trailers).await,
            StreamFilter::Decompressor(s) => s.trailers(direction, trailers),
            _ => Verdict::Continue,
        }
    }

    /// The access-log phase, with the final headers lent.
    #[inline]
    pub fn log(&self, request: &mut Option<Headers>, response: &mut Option<Headers>) {
        if let StreamFilter::Wasm(s) = self {
            s.log(request, response);
        }
    }

    /// The end of the stream, once every filter has logged.
    #[inline]
    pub fn end(self) {
        if let StreamFilter::Wasm(s) = self {
            s.end();
        }
    }
}

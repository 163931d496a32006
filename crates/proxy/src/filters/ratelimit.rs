//! `envoy.filters.http.ratelimit`, as Envoy 1.40's: the descriptors the route's (and its
//! virtual host's) `rate_limits` make for a request are sent to the rate limit service
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`); over the limit, the
//! client gets 429; a service that fails lets the request go on unless `failure_mode_deny`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use prost::Message;
use rustc_hash::FxHashMap;
use wasmproxy_config::model::{RateLimitAction, RateLimitFilter as Config, RateLimitPolicy, RequestType, VhRateLimits};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::{StreamRoute, WorkerContext};
use crate::http::reply::{LocalReply, Verdict, is_grpc_request};
use crate::matcher::HeaderMatchers;
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;
use crate::tracer::{CallSpan, ParentSpan};
use crate::upstream::cluster::Clusters;
use crate::upstream::grpc::call_service;

/// A `rate_limits` entry with its header matchers compiled.
pub struct Policy {
    stage: u32,
    actions: Vec<(RateLimitAction, Option<HeaderMatchers>)>,
}

impl Policy {
    /// Compiles `policy`; `Err` names a regex that does not compile.
    pub fn new(policy: &RateLimitPolicy) -> Result<Policy, (String, regex::Error)> {
        let actions = policy
            .actions
            .iter()
            .map(|a| {
                let matchers = match a {
                    RateLimitAction::HeaderValueMatch { headers, .. } => Some(HeaderMatchers::new(headers)?),
                    _ => None,
                };
                Ok((a.clone(), matchers))
            })
            .collect::<Result<_, (String, regex::Error)>>()?;
        Ok(Policy { stage: policy.stage, actions })
    }

    /// The descriptor this policy makes for a request, if every action applies.
    fn descriptor(&self, r: &DescriptorInputs<'_>) -> Option<Vec<(String, String)>> {
        let mut entries = Vec::new();
        for (action, matchers) in &self.actions {
            match action {
                RateLimitAction::SourceCluster => entries.push(("source_cluster".into(), r.local_cluster.to_string())),
                RateLimitAction::DestinationCluster => {
                    entries.push(("destination_cluster".into(), r.route_cluster.to_string()))
                }
                RateLimitAction::RequestHeaders { header, key, skip_if_absent } => {
                    match r.headers.get(header.as_bytes()) {
                        Some(v) => entries.push((key.clone(), String::from_utf8_lossy(v).into_owned())),
                        None if *skip_if_absent => {}
                        None => return None,
                    }
                }
                RateLimitAction::RemoteAddress => entries.push(("remote_address".into(), r.remote_address.clone())),
                RateLimitAction::GenericKey { key, value } => entries.push((key.clone(), value.clone())),
                RateLimitAction::HeaderValueMatch { key, value, expect_match, .. } => {
                    let matched = matchers.as_ref().is_some_and(|m| m.all(r.headers));
                    if matched != *expect_match {
                        return None;
                    }
                    entries.push((key.clone(), value.clone()));
                }
            }
        }
        (!entries.is_empty()).then_some(entries)
    }
}

/// A route's rate limit policies and its virtual host's.
#[derive(Clone, Default)]
pub struct RoutePolicies {
    /// The route's `rate_limits`.
    pub route: Arc<[Policy]>,
    /// The virtual host's.
    pub vhost: Arc<[Policy]>,
    /// The route's `include_vh_rate_limits`.
    pub include_vhost: bool,
}

impl RoutePolicies {
    /// The descriptors of the policies of `stage` that apply for a request: the route's,
    /// and its virtual host's as `vhost` says (or always, if the route includes them).
    pub fn descriptors(&self, stage: u32, vhost: VhRateLimits, inputs: &DescriptorInputs<'_>) -> Vec<Descriptor> {
        let with_vhost = self.include_vhost
            || match vhost {
                VhRateLimits::Override => self.route.is_empty(),
                VhRateLimits::Include => true,
                VhRateLimits::Ignore => false,
            };
        self.route
            .iter()
            .chain(self.vhost.iter().filter(|_| with_vhost))
            .filter(|p| p.stage == stage)
            .filter_map(|p| p.descriptor(inputs))
            .collect()
    }
}

/// A descriptor: its entries, in order.
pub type Descriptor = Vec<(String, String)>;

/// What descriptors are made of: the request's headers, this node's cluster, the route's,
/// the client's address.
pub struct DescriptorInputs<'a> {
    /// The request headers.
    pub headers: &'a Headers,
    /// `node.cluster`.
    pub local_cluster: &'a str,
    /// The route's cluster.
    pub route_cluster: &'a str,
    /// The client's address.
    pub remote_address: String,
}

/// The filter on a worker.
pub struct RateLimitFilter {
    config: Arc<Config>,
    clusters: Rc<Clusters>,
    store: Arc<Store>,
    local_cluster: String,
    /// `cluster.<route's cluster>.ratelimit.<outcome>`, made when first counted.
    cluster_stats: RefCell<FxHashMap<(String, &'static str), Counter>>,
}

impl RateLimitFilter {
    /// The filter configured by `config` on the worker `cx` describes.
    pub fn new(config: Arc<Config>, cx: &WorkerContext<'_>) -> RateLimitFilter {
        RateLimitFilter {
            config,
            clusters: cx.clusters.clone(),
            store: cx.store.clone(),
            local_cluster: cx.local_cluster.to_string(),
            cluster_stats: RefCell::default(),
        }
    }

    /// Counts `outcome` under the route's `cluster`.
    fn count(&self, cluster: &str, outcome: &'static str) {
        self.cluster_stats
            .borrow_mut()
            .entry((cluster.to_string(), outcome))
            .or_insert_with(|| {
                let tags = [("envoy_cluster_name", cluster)];
                Scope::new(&self.store, &format!("cluster.{cluster}.ratelimit."), "cluster.ratelimit.", &tags)
                    .counter(outcome)
            })
            .inc();
    }
}

/// One stream through the filter: its route's policies, and the response headers the
/// service asked for.
pub struct RateLimitStream {
    filter: Rc<RateLimitFilter>,
    info: StreamRef,
    policies: Option<RoutePolicies>,
    response: Vec<(String, String)>,
    /// The stream's span, the call's parent.
    parent: Option<ParentSpan>,
}

impl RateLimitStream {
    /// A stream on `route`; its call to the service is a span under `parent`.
    pub fn new(
        filter: &Rc<RateLimitFilter>,
        info: &StreamRef,
        route: Option<StreamRoute<'_>>,
        parent: Option<&ParentSpan>,
    ) -> RateLimitStream {
        let policies = route.filter(|r| r.forwards).map(|r| r.filters.rate_limits.clone());
        let parent = parent.cloned();
        RateLimitStream { filter: filter.clone(), info: info.clone(), policies, response: Vec::new(), parent }
    }

    /// The request headers: its descriptors checked with the service, the stream waiting
    /// for the answer.
    pub async fn request_headers(&mut self, headers: &mut Headers) -> Verdict {
        let filter = self.filter.clone();
        let config = &filter.config;
        let internal = headers.get(b"x-envoy-internal") == Some(b"true");
        let wanted = match config.request_type {
            RequestType::Both => true,
            RequestType::Internal => internal,
            RequestType::External => !internal,
        };
        let cluster = self.info.borrow().cluster_name.clone();
        let Some(policies) = self.policies.as_ref().filter(|_| wanted && !cluster.is_empty()) else {
            return Verdict::Continue;
        };
        let inputs = DescriptorInputs {
            headers,
            local_cluster: &filter.local_cluster,
            route_cluster: &cluster,
            remote_address: self.info.borrow().downstream_remote.ip().to_string(),
        };
        let descriptors = policies.descriptors(config.stage, VhRateLimits::Override, &inputs);
        if descriptors.is_empty() {
            return Verdict::Continue;
        }
        let request = wire::RateLimitRequest {
            domain: config.domain.clone(),
            descriptors: descriptors
                .into_iter()
                .map(|entries| wire::RateLimitDescriptor {
                    entries: entries.into_iter().map(|(key, value)| wire::Entry { key, value }).collect(),
                })
                .collect(),
        };
        // The call is a few KiB of future: boxed, so that a stream's future does not carry
        // room for it.
        match Box::pin(self.ask(request)).await {
            Ok(answer) if answer.overall_code == wire::OVER_LIMIT => {
                filter.count(&cluster, "over_limit");
                self.refuse(headers, answer)
            }
            Ok(answer) => {
                filter.count(&cluster, "ok");
                for h in &answer.request_headers_to_add {
                    headers.replace(h.key.as_bytes(), &h.bytes());
                }
                self.response = answer.response_headers_to_add.iter().map(|h| (h.key.clone(), h.text())).collect();
                Verdict::Continue
            }
            Err((status, e)) => {
                tracing::debug!("ratelimit: the service failed: status {status}: {e}");
                filter.count(&cluster, "error");
                if !config.failure_mode_deny {
                    filter.count(&cluster, "failure_mode_allowed");
                    return Verdict::Continue;
                }
                let mut i = self.info.borrow_mut();
                i.response_flags.set(ResponseFlag::RateLimitServiceError);
                i.response_code_details = "rate_limiter_error".into();
                let reply = LocalReply {
                    status: config.status_on_error,
                    body: Vec::new(),
                    headers: Headers::new(),
                    grpc_status: None,
                };
                Verdict::LocalReply(reply)
            }
        }
    }

    /// The response headers: those the service asked for added.
    pub fn response_headers(&mut self, headers: &mut Headers) -> Verdict {
        for (name, value) in self.response.drain(..) {
            headers.add(name.as_bytes(), value.as_bytes());
        }
        Verdict::Continue
    }

    /// Asks the service; under the stream's span, the call is a span tagged with its
    /// status and the answer's (`ratelimit_status`).
    async fn ask(&self, request: wire::RateLimitRequest) -> Result<wire::RateLimitResponse, (u32, String)> {
        let config = &self.filter.config;
        let method = ("envoy.service.ratelimit.v3.RateLimitService", "ShouldRateLimit");
        let span = self.parent.as_ref().map(|p| p.grpc_child(&config.service, method));
        let inject = CallSpan::injector(span.as_ref());
        let clusters = &self.filter.clusters;
        let message = request.encode_to_vec();
        let answer: Result<wire::RateLimitResponse, _> =
            call_service(clusters, &config.service, method, message, Some(config.timeout), inject).await;
        if let Some(mut span) = span {
            span.grpc_status(answer.as_ref().err().map_or(0, |(status, _)| *status));
            if let Ok(answer) = &answer {
                span.tag("ratelimit_status", if answer.overall_code == wire::OVER_LIMIT { "over_limit" } else { "ok" });
            }
            span.finish();
        }
        answer
    }

    /// Over the limit: the refusal, with the service's headers and body.
    fn refuse(&self, request: &Headers, answer: wire::RateLimitResponse) -> Verdict {
        let config = &self.filter.config;
        let mut headers = Headers::new();
        for h in &answer.response_headers_to_add {
            headers.add(h.key.as_bytes(), &h.bytes());
        }
        if !config.disable_x_envoy_ratelimited_header {
            headers.add(b"x-envoy-ratelimited", b"true");
        }
        let mut i = self.info.borrow_mut();
        i.response_flags.set(ResponseFlag::RateLimited);
        i.response_code_details = "request_rate_limited".into();
        // gRPC's RESOURCE_EXHAUSTED if asked, else UNAVAILABLE (from 429).
        let grpc_status = (config.resource_exhausted && is_grpc_request(request)).then_some(8);
        Verdict::LocalReply(LocalReply {
            status: config.rate_limited_status,
            body: answer.raw_body,
            headers,
            grpc_status,
        })
    }
}

/// The messages of `envoy.service.ratelimit.v3` the filter sends and reads.
mod wire {
    pub use crate::filters::ext_authz::wire::HeaderValue;

    /// `RateLimitResponse.Code.OVER_LIMIT`.
    pub const OVER_LIMIT: i32 = 2;

    /// `RateLimitRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitRequest {
        /// The domain.
        #[prost(string, tag = "1")]
        pub domain: String,
        /// The descriptors.
        #[prost(message, repeated, tag = "2")]
        pub descriptors: Vec<RateLimitDescriptor>,
    }

    /// `common.ratelimit.v3.RateLimitDescriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitDescriptor {
        /// Its entries.
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
    }

    /// A descriptor entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        /// The key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// The value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `RateLimitResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitResponse {
        /// `UNKNOWN` (0), `OK` (1) or `OVER_LIMIT` (2).
        #[prost(int32, tag = "1")]
        pub overall_code: i32,
        /// Headers for the response.
        #[prost(message, repeated, tag = "3")]
        pub response_headers_to_add: Vec<HeaderValue>,
        /// Headers for the request.
        #[prost(message, repeated, tag = "4")]
        pub request_headers_to_add: Vec<HeaderValue>,
        /// The refusal's body.
        #[prost(bytes = "vec", tag = "5")]
        pub raw_body: Vec<u8>,
    }
}

//! Clusters, per worker: resolved endpoints, load balancing, and a pooled HTTP client.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmproxy_config::model::{self, LbPolicy};
use wasmproxy_host::Headers;

use crate::body::{ProxyBody, whole};
use crate::convert;
use crate::stream_info::StreamRef;

/// Every cluster of one worker, by name.
pub struct Clusters {
    by_name: HashMap<String, Rc<Cluster>>,
}

/// One cluster on one worker.
pub struct Cluster {
    endpoints: Vec<SocketAddr>,
    next: Cell<usize>,
    lb: LbPolicy,
    client: Client<HttpConnector, ProxyBody>,
}

/// Why an upstream request got no response; each maps to Envoy's local reply.
#[derive(Debug)]
pub enum UpstreamError {
    /// The cluster has no endpoint.
    NoHealthyUpstream,
    /// Connecting, or the connection, failed before a response.
    ConnectionFailure(String),
    /// The route's timeout passed.
    Timeout,
    /// The response body is over the limit of what is read into memory.
    ResponseTooLarge,
}

/// A response from an upstream, read whole.
pub struct UpstreamResponse {
    /// Status and headers, `:status` first.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Headers,
}

impl Clusters {
    /// Resolves every cluster's endpoints (DNS for STRICT_DNS and LOGICAL_DNS).
    pub async fn new(configs: &[model::Cluster]) -> Result<Clusters, String> {
        let mut by_name = HashMap::new();
        for c in configs {
            by_name.insert(c.name.clone(), Rc::new(Cluster::new(c).await?));
        }
        Ok(Clusters { by_name })
    }

    /// The cluster of that name.
    pub fn get(&self, name: &str) -> Option<Rc<Cluster>> {
        self.by_name.get(name).cloned()
    }
}

impl Cluster {
    async fn new(c: &model::Cluster) -> Result<Cluster, String> {
        let mut endpoints = Vec::new();
        for e in &c.endpoints {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((e.address.as_str(), e.port))
                .await
                .map_err(|err| format!("cluster {}: cannot resolve {}:{}: {err}", c.name, e.address, e.port))?
                .collect();
            match c.discovery {
                model::Discovery::LogicalDns => endpoints.extend(found.into_iter().take(1)),
                _ => endpoints.extend(found),
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(c.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(c.http2)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Cluster { endpoints, next: Cell::new(0), lb: c.lb_policy, client })
    }

    fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = match self.lb {
            LbPolicy::Random => random_index(self.endpoints.len()),
            LbPolicy::RoundRobin | LbPolicy::LeastRequest => {
                let i = self.next.get();
                self.next.set(i.wrapping_add(1));
                i
            }
        };
        Some(self.endpoints[i % self.endpoints.len()])
    }

    /// Sends a request (headers with pseudo-headers) with a whole body and reads the whole
    /// response (for plugins' `http_call`).
    pub async fn send(
        &self,
        headers: &Headers,
        body: Bytes,
        timeout: Option<Duration>,
        info: Option<&StreamRef>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let exchange = async {
            let (headers, body) = self.start(headers, whole(body), true, info).await?;
            let collected = http_body_util::Limited::new(body, crate::hcm::MAX_CALLOUT_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        UpstreamError::ResponseTooLarge
                    } else {
                        UpstreamError::ConnectionFailure(e.to_string())
                    }
                })?;
            let trailers = collected.trailers().map(convert::plain_headers).unwrap_or_default();
            Ok(UpstreamResponse { headers, body: collected.to_bytes(), trailers })
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| UpstreamError::Timeout)?,
            None => exchange.await,
        }
    }

    /// Sends a request to one endpoint (noting it in the stream's info) and returns once the
    /// response headers are in; the body streams. `whole_body` sets `content-length` from
    /// the body (a body the proxy holds whole is always sent with its true length).
    pub async fn start(
        &self,
        headers: &Headers,
        body: ProxyBody,
        whole_body: bool,
        info: Option<&StreamRef>,
    ) -> Result<(Headers, Incoming), UpstreamError> {
        let addr = self.pick().ok_or(UpstreamError::NoHealthyUpstream)?;
        if let Some(info) = info {
            info.borrow_mut().upstream = Some(addr);
        }
        let path = convert::text(headers, b":path");
        let uri: http::Uri = format!("http://{addr}{}", if path.is_empty() { "/" } else { &path })
            .parse()
            .map_err(|e| UpstreamError::ConnectionFailure(format!("bad path: {e}")))?;
        let mut request = http::Request::builder().method(convert::method(headers)).uri(uri);
        let mut map = convert::header_map(headers);
        if let Ok(host) = http::HeaderValue::from_bytes(headers.get(b":authority").unwrap_or_default()) {
            map.insert(http::header::HOST, host);
        }
        map.remove(http::header::TRANSFER_ENCODING);
        if whole_body {
            let len = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
            if len > 0 || map.contains_key(http::header::CONTENT_LENGTH) {
                map.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            }
        }
        if let Some(h) = request.headers_mut() {
            *h = map;
        }
        let request = request.body(body).map_err(|e| UpstreamError::ConnectionFailure(e.to_string()))?;
        let response =
            self.client.request(request).await.map_err(|e| UpstreamError::ConnectionFailure(e.to_string()))?;
        let (parts, body) = response.into_parts();
        Ok((convert::response_headers(parts.status, &parts.headers), body))
    }
}

fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(n);
    (h.finish() as usize) % n.max(1)
}

//! The rate limit service the recording upstream plays for `envoy.filters.http.ratelimit`
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`): each request written
//! down (its domain and descriptors), answered by its descriptors' values: one containing
//! `over` is over the limit, `fail` fails (UNAVAILABLE), `slow` answers after 1 s; else OK.

use prost::Message;

use crate::authz::HeaderValue;

/// The gRPC method.
pub const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// A request (its body, framed): what it asks, written down, and the answer's message (or
/// its failure status).
pub async fn should_rate_limit(body: &[u8]) -> (String, Result<Vec<u8>, u32>) {
    let request = RateLimitRequest::decode(body.get(5..).unwrap_or_default()).unwrap_or_default();
    let mut text = format!("ratelimit check: domain {} hits_addend {}\n", request.domain, request.hits_addend);
    let values: Vec<&str> =
        request.descriptors.iter().flat_map(|d| d.entries.iter().map(|e| e.value.as_str())).collect();
    for d in &request.descriptors {
        let entries: Vec<String> = d.entries.iter().map(|e| format!("{}={}", e.key, e.value)).collect();
        text.push_str(&format!("ratelimit descriptor: {}\n", entries.join(", ")));
    }
    let header = |key: &str, value: &str| HeaderValue { key: key.into(), value: value.into() };
    if values.iter().any(|v| v.contains("fail")) {
        return (text, Err(14));
    }
    if values.iter().any(|v| v.contains("slow")) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let response = if values.iter().any(|v| v.contains("over")) {
        RateLimitResponse {
            overall_code: 2,
            response_headers_to_add: vec![header("x-ratelimit-reason", "over")],
            request_headers_to_add: Vec::new(),
            raw_body: b"slow down".to_vec(),
        }
    } else {
        RateLimitResponse {
            overall_code: 1,
            response_headers_to_add: vec![header("x-ratelimit-ok", "yes")],
            request_headers_to_add: vec![header("x-ratelimit-checked", "yes")],
            raw_body: Vec::new(),
        }
    };
    (text, Ok(response.encode_to_vec()))
}

// `envoy.service.ratelimit.v3`'s messages, the fields the service reads and writes.

#[derive(Clone, PartialEq, prost::Message)]
struct RateLimitRequest {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(message, repeated, tag = "2")]
    descriptors: Vec<Descriptor>,
    #[prost(uint32, tag = "3")]
    hits_addend: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Descriptor {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<DescriptorEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DescriptorEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RateLimitResponse {
    #[prost(int32, tag = "1")]
    overall_code: i32,
    #[prost(message, repeated, tag = "3")]
    response_headers_to_add: Vec<HeaderValue>,
    #[prost(message, repeated, tag = "4")]
    request_headers_to_add: Vec<HeaderValue>,
    #[prost(bytes = "vec", tag = "5")]
    raw_body: Vec<u8>,
}

//! The request-head path in front of hyper: finding a head's end, Envoy's checks of its
//! lengths and codings, and telling hyper's own error answers from the proxy's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmproxy_proxy::http::request_head;

fuzz_target!(|data: &[u8]| {
    let end = request_head::head_end(data).unwrap_or(data.len());
    assert!(end <= data.len());
    if let Err(refusal) = request_head::check(&data[..end]) {
        assert!(refusal.status == 400 || refusal.status == 501);
        let answer = request_head::error_response(refusal.status, refusal.reason, "envoy", "date");
        assert!(request_head::hypers_own_error(&answer).is_none(), "the proxy's answers carry server");
    }
    if let Some((status, _)) = request_head::hypers_own_error(data) {
        assert!((400..600).contains(&status));
    }
});

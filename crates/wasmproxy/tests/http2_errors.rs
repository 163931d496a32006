//! HTTP/2 clients that break the protocol: each gets the GOAWAY or RST_STREAM RFC 9113
//! names, a connection error closes only that connection, a stream error only that
//! stream, and the proxy goes on serving. (Envoy 1.40's answers to the same frames are
//! compared in the conformance scenarios `http2_protocol_errors*`, `http2_malformed_*`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use wasmproxy_conformance::h2_frames::{
    CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PADDED, PING, SETTINGS, WINDOW_UPDATE, authority, exchange,
    frame, get, literal, request,
};

fn serve(name: &str) -> (common::Running, String) {
    let routes = "              - match: { prefix: / }\n                direct_response: { status: 200, body: { inline_string: \"hi\" } }\n";
    let config = common::write_config(name, &common::bootstrap("", "ingress", "", routes, "", ""));
    let (running, addr, _) = common::serve_with(&config, &["--concurrency", "1"]);
    (running, addr)
}

#[test]
fn connection_errors_get_goaway_and_close_only_that_connection() {
    let (_running, addr) = serve("http2-connection-errors");
    let cases: [(&str, Vec<u8>, &str); 11] = [
        ("a client stream with an even id", request(2, &get()), "PROTOCOL_ERROR last=0"),
        ("DATA on an idle stream", frame(DATA, END_STREAM, 1, b"x"), "PROTOCOL_ERROR last=0"),
        (
            "a header name in upper case",
            request(1, &[get(), literal("X-Upper", "1")].concat()),
            "PROTOCOL_ERROR last=0",
        ),
        ("a window update of 0 on the connection", frame(WINDOW_UPDATE, 0, 0, &[0; 4]), "PROTOCOL_ERROR last=0"),
        (
            "a window update of 0 on a stream",
            [frame(HEADERS, END_HEADERS, 1, &get()), frame(WINDOW_UPDATE, 0, 1, &[0; 4])].concat(),
            "PROTOCOL_ERROR last=1",
        ),
        ("a frame over the largest frame size", frame(DATA, 0, 1, &[b'x'; 20000]), "FRAME_SIZE_ERROR last=0"),
        ("SETTINGS_ENABLE_PUSH of 2", frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]), "PROTOCOL_ERROR last=0"),
        ("stream ids going down", [request(3, &get()), request(1, &get())].concat(), "PROTOCOL_ERROR last=3"),
        ("CONTINUATION without HEADERS", frame(CONTINUATION, END_HEADERS, 1, &get()), "PROTOCOL_ERROR last=0"),
        ("PING on a stream", frame(PING, 0, 1, b"12345678"), "PROTOCOL_ERROR last=0"),
        (
            "padding longer than the frame",
            frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, &[&[0xff], &get()[..]].concat()),
            "PROTOCOL_ERROR last=0",
        ),
    ];
    for (what, frames, goaway) in cases {
        let seen = exchange(&addr, &frames, "closed").unwrap();
        assert!(seen.contains(&format!("GOAWAY {goaway}")), "{what}: {seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("closed"), "{what}: {seen:?}");
        // Other connections are served.
        let ok = exchange(&addr, &request(1, &get()), "HEADERS 1 200").unwrap();
        assert_eq!(ok, ["HEADERS 1 200"], "after {what}");
    }
}

#[test]
fn malformed_requests_get_rst_stream_and_the_connection_serves_on() {
    let (_running, addr) = serve("http2-stream-errors");
    let content_length = [&[0x83, 0x86, 0x84][..], &authority(), &literal("content-length", "10")].concat();
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "a pseudo-header after a regular one",
            request(1, &[&[0x82, 0x86][..], &literal("x-a", "1"), &[0x84], &authority()].concat()),
        ),
        ("no :path", request(1, &[&[0x82, 0x86][..], &authority()].concat())),
        ("a connection-specific header", request(1, &[get(), literal("connection", "keep-alive")].concat())),
        (
            "a body shorter than its content-length",
            [frame(HEADERS, END_HEADERS, 1, &content_length), frame(DATA, END_STREAM, 1, b"abc")].concat(),
        ),
    ];
    for (what, frames) in cases {
        // The bad stream is reset; the next one on the same connection is answered, and
        // the connection stays open.
        let seen = exchange(&addr, &[frames, request(3, &get())].concat(), "HEADERS 3 200").unwrap();
        assert_eq!(seen, ["RST_STREAM 1 PROTOCOL_ERROR", "HEADERS 3 200"], "{what}");
    }
}

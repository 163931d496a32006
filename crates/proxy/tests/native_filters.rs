//! The native HTTP filters at run time, end to end: a compressed response streams (an
//! endless upstream body is compressed chunk by chunk, never held), the local rate limit's
//! bucket is one for every worker, and a decompression bomb stops at the inflate ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{answering, get, http_listener, start, stat};

/// A listener routing everything to `upstream`, with `filters` (YAML list items) before
/// the router.
fn config(filters: &str, upstream: SocketAddr) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: backend, timeout: 0s }}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        upstream.port()
    )
}

/// The most chunks the endless upstream sends (16 KiB each) before it gives up.
const MOST_CHUNKS: usize = 2000;

/// An upstream whose one answer is a chunked text body of 16 KiB chunks, sent until the
/// client goes away (at most [`MOST_CHUNKS`]); `sent` counts them.
fn endless_upstream(sent: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n");
        let chunk: Vec<u8> =
            b"an endless body, compressed as it streams. ".iter().copied().cycle().take(16 * 1024).collect();
        for _ in 0..MOST_CHUNKS {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if stream.write_all(&framed).is_err() {
                return;
            }
            sent.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = stream.write_all(b"0\r\n\r\n");
    });
    addr
}

/// Reads one HTTP/1.1 chunk of a chunked body (`None` at its end or a failure).
fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    reader.read_line(&mut size).ok()?;
    let size = usize::from_str_radix(size.trim(), 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0u8; size + 2];
    reader.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    Some(chunk)
}

#[test]
fn a_compressed_response_streams_while_its_upstream_is_still_sending() {
    let sent = Arc::new(AtomicUsize::new(0));
    let upstream = endless_upstream(sent.clone());
    let compressor = r#"          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: text
                typed_config: { "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip }
"#;
    let server = start(&config(compressor, upstream), 1);
    let mut stream = TcpStream::connect(http_listener(&server).unwrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /endless HTTP/1.1\r\nhost: test\r\naccept-encoding: gzip\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(reader.read_line(&mut head).unwrap() > 0, "{head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: Accept-Encoding"), "{head}");
    // Each compressed chunk decodes at once (gzip is flushed chunk by chunk): a megabyte of
    // text comes out while the upstream is far from done.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while decoder.get_ref().len() < 1 << 20 {
        let chunk = read_chunk(&mut reader).expect("the body ended early");
        decoder.write_all(&chunk).unwrap();
        decoder.flush().unwrap();
    }
    let decoded = decoder.get_ref();
    assert!(decoded.starts_with(b"an endless body, compressed as it streams. "));
    assert!(sent.load(Ordering::SeqCst) < MOST_CHUNKS / 2, "the upstream sent {} chunks", sent.load(Ordering::SeqCst));
    // Without `response_direction_config`, Envoy's response stats have no `response.`.
    assert_eq!(stat(&server, "http.ingress.compressor.text.gzip.compressed"), 1);
}

#[test]
fn the_local_rate_limit_bucket_is_shared_by_every_worker() {
    let upstream = answering(|_| "ok".into());
    let limit = r#"          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: shared
              token_bucket: { max_tokens: 5, tokens_per_fill: 1, fill_interval: 3600s }
              filter_enabled: { default_value: { numerator: 100 } }
              filter_enforced: { default_value: { numerator: 100 } }
"#;
    let server = start(&config(limit, upstream), 4);
    let listener = http_listener(&server).unwrap();
    // A new connection each: the kernel spreads them over the workers' sockets.
    let statuses: Vec<String> =
        (0..20).map(|_| get(listener, "/x").split(' ').nth(1).unwrap_or("").to_string()).collect();
    assert_eq!(statuses.iter().filter(|s| *s == "200").count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "429").count(), 15, "{statuses:?}");
    assert_eq!(stat(&server, "shared.http_local_rate_limit.rate_limited"), 15);
    assert_eq!(stat(&server, "shared.http_local_rate_limit.ok"), 5);
}

#[test]
fn a_decompression_bomb_stops_at_the_inflate_ratio() {
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    // The upstream reads the decompressed request (chunked) and says how long it was.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && !line.ends_with("\r\n\r\n") {}
        while let Some(chunk) = read_chunk(&mut reader) {
            seen.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        let mut stream = stream;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    });
    let decompressor = r#"          - name: envoy.filters.http.decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              decompressor_library:
                name: upload
                typed_config: { "@type": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip, max_inflate_ratio: 10 }
"#;
    let server = start(&config(decompressor, upstream), 1);
    // 64 MiB of zeros compress to about 64 KiB: far past a ratio of 10.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 64 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    let mut stream = TcpStream::connect(http_listener(&server).unwrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: test\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        bomb.len()
    );
    stream.write_all(&[head.as_bytes(), &bomb].concat()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let inflated = received.load(Ordering::SeqCst);
    assert!(inflated > 0 && inflated <= bomb.len() * 10, "{inflated} bytes from {} compressed", bomb.len());
    assert_eq!(stat(&server, "http.ingress.decompressor.upload.gzip.decompressor_library.zlib_data_error"), 1);
}

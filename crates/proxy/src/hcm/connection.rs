//! One downstream HTTP connection: hyper's HTTP/1.1 or HTTP/2 server over the tracked
//! socket, each request handed to the connection manager, with the connection's idle and
//! request-headers timers and its part in a drain.

use std::future::Future;
use std::rc::Rc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use wasmproxy_config::model::CodecType;

use crate::hcm::Hcm;
use crate::http::downstream::{TrackedIo, answer_header_timeout, headers_late, idle_for};
use crate::http::exec::LocalExec;
use crate::limits::{MAX_REQUEST_HEADERS_BYTES, MAX_REQUEST_HEADERS_COUNT};
use crate::stream_info::ConnectionInfo;

/// Serves one HTTP connection (HTTP/1.1, or HTTP/2 with prior knowledge, as the codec
/// type allows) until it ends.
pub async fn serve_http(
    hcm: Rc<Hcm>,
    stream: tokio::net::TcpStream,
    connection: Rc<ConnectionInfo>,
    stopping: impl Future<Output = ()>,
) {
    let accepted = std::time::Instant::now();
    hcm.stats.connection_opened();
    let mut builder = auto::Builder::new(LocalExec);
    // Envoy's defaults: request headers up to 60 KiB (else 431), at most 100 of them.
    builder.http1().max_buf_size(MAX_REQUEST_HEADERS_BYTES).max_headers(MAX_REQUEST_HEADERS_COUNT);
    builder.http2().max_header_list_size(MAX_REQUEST_HEADERS_BYTES as u32);
    match hcm.config.codec_type {
        CodecType::Http1 => builder = builder.http1_only(),
        CodecType::Http2 => builder = builder.http2_only(),
        CodecType::Auto => {}
    }
    let service = {
        let (hcm, connection) = (hcm.clone(), connection.clone());
        service_fn(move |req| hcm.clone().handle(req, connection.clone()))
    };
    let socket = Rc::new(stream);
    let activity = connection.activity.clone();
    let io = TokioIo::new(TrackedIo::new(socket.clone(), activity.clone(), Rc::from(hcm.config.server_name.as_str())));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // `idle_timeout` (Envoy's default: 1 hour): no stream and no bytes for that long.
    let idle = async {
        match hcm.config.idle_timeout {
            Some(t) => idle_for(t, &activity).await,
            None => std::future::pending().await,
        }
    };
    // `request_headers_timeout` (Envoy's default: none): from a request's first byte to
    // the end of its headers.
    let headers = async {
        match hcm.config.request_headers_timeout {
            Some(t) => headers_late(t, &activity).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopping => {
            // Finish what was accepted, take nothing new.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = idle => {
            hcm.stats.cx_idle_timeout.inc();
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = headers => {
            // No stream exists yet: Envoy's 408 goes straight to the socket, which closes.
            hcm.stats.rq_header_timeout.inc();
            answer_header_timeout(&socket, &hcm.config.server_name);
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
    let http2 = connection.protocol_known.get().then(|| connection.http2.get());
    hcm.stats.connection_closed(accepted.elapsed(), http2);
}

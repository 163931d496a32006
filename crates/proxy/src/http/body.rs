//! Bodies that stream: a channel-fed body hyper reads from, and the body type the proxy
//! sends both ways (whole, or streamed).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Why a streamed body stopped before its end (the peer sees the stream reset).
#[derive(Debug, thiserror::Error)]
#[error("the proxy aborted the body")]
pub struct Aborted;

/// A body whose frames arrive through a channel from the task that filters them.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, Aborted>>,
    /// There is no body at all: HTTP/2 ends the stream on the headers.
    none: bool,
}

/// The sending half: frames, or `Err(Aborted)` to reset the stream.
pub type BodySender = mpsc::Sender<Result<Frame<Bytes>, Aborted>>;

/// A new streamed body and the sender that feeds it (a few frames of buffering: the
/// reader's pace slows the writer).
pub fn channel() -> (BodySender, ChannelBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx, none: false })
}

impl ChannelBody {
    /// The body is known to be empty before it is sent: HTTP/2 ends the stream on the
    /// headers (a gRPC trailers-only answer stays one), not with an empty DATA frame.
    pub fn ended_on_headers(mut self) -> ChannelBody {
        self.none = true;
        self
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        self.rx.poll_recv(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.none
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// What the proxy sends: a whole body, or a streamed one.
pub type ProxyBody = Either<Full<Bytes>, ChannelBody>;

/// A whole body.
pub fn whole(bytes: Bytes) -> ProxyBody {
    Either::Left(Full::new(bytes))
}

/// No body: a gRPC answer that ends on its headers (trailers-only). HTTP/2 ends the stream
/// on the headers, without a length; HTTP/1.1 says `content-length: 0`, as Envoy does.
pub fn ended_on_headers(http2: bool) -> ProxyBody {
    if !http2 {
        return whole(Bytes::new());
    }
    let (_, body) = channel();
    Either::Right(body.ended_on_headers())
}

/// A whole body sent without a length (HTTP/1.1 chunked): what a response whose length
/// header a plugin removed gets.
pub fn whole_without_length(bytes: Bytes) -> ProxyBody {
    let (tx, body) = channel();
    // The channel is new and has room: the frame is there when hyper reads.
    let _ = tx.try_send(Ok(Frame::data(bytes)));
    Either::Right(body)
}

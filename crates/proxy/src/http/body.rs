//! Bodies that stream: a channel-fed body hyper reads from, and the body type the proxy
//! sends both ways (whole, or streamed).

use std::cell::{RefCell, RefMut};
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

/// Why a streamed body stopped before its end (the peer sees the stream reset).
#[derive(Debug, thiserror::Error)]
#[error("the proxy aborted the body")]
pub struct Aborted;

/// A body whose frames arrive through a channel from the task that filters them.
pub struct ChannelBody {
    shared: Rc<RefCell<Shared>>,
    /// There is no body at all: HTTP/2 ends the stream on the headers.
    none: bool,
}

/// The sending half: frames, or `Err(Aborted)` to reset the stream. Clones send into the
/// same body, which ends once every sender is dropped and its frames are read.
pub struct BodySender(Rc<RefCell<Shared>>);

/// The frame was not sent: the body's reader is gone (or, for a `try_send`, the body has
/// no room).
#[derive(Debug)]
pub struct Unsent;

/// What the halves of one body share. A body and its senders stay on their worker's
/// thread, so this is a plain cell: the cell, and room for [`ROOM`] frames once the first
/// is sent.
struct Shared {
    frames: VecDeque<Result<Frame<Bytes>, Aborted>>,
    /// Senders alive.
    senders: usize,
    /// The body was dropped: sends fail.
    dropped: bool,
    /// The reader, waiting for a frame or the end.
    reader: Option<Waker>,
    /// Senders waiting for room.
    writers: Vec<Waker>,
}

/// Frames a body holds before its senders wait: the reader's pace slows the writer.
const ROOM: usize = 4;

/// A new streamed body and the sender that feeds it (a few frames of buffering: the
/// reader's pace slows the writer).
pub fn channel() -> (BodySender, ChannelBody) {
    let shared = Rc::new(RefCell::new(Shared {
        frames: VecDeque::new(),
        senders: 1,
        dropped: false,
        reader: None,
        writers: Vec::new(),
    }));
    (BodySender(shared.clone()), ChannelBody { shared, none: false })
}

impl BodySender {
    /// Sends `frame`, once the body has room for it.
    pub async fn send(&self, frame: Result<Frame<Bytes>, Aborted>) -> Result<(), Unsent> {
        let mut frame = Some(frame);
        std::future::poll_fn(|cx| {
            let mut shared = self.0.borrow_mut();
            if shared.dropped {
                return Poll::Ready(Err(Unsent));
            }
            if shared.frames.len() >= ROOM {
                if !shared.writers.iter().any(|w| w.will_wake(cx.waker())) {
                    shared.writers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            if let Some(frame) = frame.take() {
                push(shared, frame);
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Ends the body with a reset after the frames it holds, without waiting for room (a
    /// reader that takes nothing cannot hold the abort back).
    pub fn abort(&self) {
        let shared = self.0.borrow_mut();
        if !shared.dropped {
            push(shared, Err(Aborted));
        }
    }

    /// Sends `frame` if the body has room for it now.
    pub fn try_send(&self, frame: Result<Frame<Bytes>, Aborted>) -> Result<(), Unsent> {
        let shared = self.0.borrow_mut();
        if shared.dropped || shared.frames.len() >= ROOM {
            return Err(Unsent);
        }
        push(shared, frame);
        Ok(())
    }
}

/// Puts `frame` behind the body's others and wakes its reader.
fn push(mut shared: RefMut<'_, Shared>, frame: Result<Frame<Bytes>, Aborted>) {
    shared.frames.push_back(frame);
    let reader = shared.reader.take();
    drop(shared);
    if let Some(reader) = reader {
        reader.wake();
    }
}

impl Clone for BodySender {
    fn clone(&self) -> BodySender {
        self.0.borrow_mut().senders += 1;
        BodySender(self.0.clone())
    }
}

impl Drop for BodySender {
    fn drop(&mut self) {
        let mut shared = self.0.borrow_mut();
        shared.senders -= 1;
        let reader = if shared.senders == 0 { shared.reader.take() } else { None };
        drop(shared);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
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

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let mut shared = self.shared.borrow_mut();
        let Some(frame) = shared.frames.pop_front() else {
            if shared.senders == 0 {
                return Poll::Ready(None);
            }
            if !shared.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                shared.reader = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        let writers = std::mem::take(&mut shared.writers);
        drop(shared);
        writers.into_iter().for_each(Waker::wake);
        Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.none
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for ChannelBody {
    fn drop(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.dropped = true;
        shared.frames.clear();
        let writers = std::mem::take(&mut shared.writers);
        drop(shared);
        writers.into_iter().for_each(Waker::wake);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::Future;

    use http_body_util::BodyExt;

    use super::*;

    fn data(frame: Frame<Bytes>) -> Bytes {
        frame.into_data().unwrap()
    }

    #[test]
    fn a_body_holds_its_room_then_its_sender_waits_and_it_ends_with_its_senders() {
        let mut cx = Context::from_waker(Waker::noop());
        let (tx, mut body) = channel();
        for i in 0..ROOM {
            tx.try_send(Ok(Frame::data(Bytes::from(vec![i as u8])))).unwrap();
        }
        assert!(tx.try_send(Ok(Frame::data(Bytes::new()))).is_err(), "full");
        let abort = tx.clone();
        let mut waiting = Box::pin(tx.send(Ok(Frame::data(Bytes::from_static(b"last")))));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        // A frame read makes room: the waiting send goes.
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(ref f))) if f.data_ref().unwrap()[..] == [0]));
        assert!(matches!(waiting.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        drop(waiting);
        for i in 1..ROOM {
            let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else { panic!("frame {i}") };
            assert_eq!(data(frame), vec![i as u8]);
        }
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else { panic!("the last") };
        assert_eq!(data(frame), "last");
        // Senders are left: the body waits, then ends once the last is dropped.
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        drop(abort);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        drop(tx);
        assert!(matches!(Pin::new(&mut body).poll_frame(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn sends_fail_once_the_body_is_dropped_and_an_abort_reaches_the_reader() {
        let (tx, body) = channel();
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"held")))).unwrap();
        drop(body);
        assert!(tx.try_send(Ok(Frame::data(Bytes::new()))).is_err());
        let mut cx = Context::from_waker(Waker::noop());
        let mut send = Box::pin(tx.send(Ok(Frame::data(Bytes::new()))));
        assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Err(Unsent))));

        let (tx, body) = channel();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let collected = runtime.block_on(async move {
            let reader = async { body.collect().await.map(|c| c.to_bytes()) };
            let writer = async move {
                tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
                tx.send(Err(Aborted)).await.unwrap();
            };
            tokio::join!(reader, writer).0
        });
        assert!(collected.is_err(), "the reader sees the abort");
    }
}

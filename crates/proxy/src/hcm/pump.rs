//! Bodies through the filters: each chunk as it arrives (requests in filter order,
//! responses in reverse), held while a plugin pauses, then trailers; the stream's idle
//! timer; what a body that cannot be read ends in.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming};
use wasmproxy_host::Headers;

use crate::hcm::{HeldBody, Processed, ResponseBody, StreamFilters, UpstreamBody};
use crate::http::body::BodySender;
use crate::http::convert;
use crate::http::direction::Direction;
use crate::http::reply::{DataVerdict, LocalReply};
use crate::limits::MAX_GATHER_BYTES;
use crate::stream_info::response_flags::ResponseFlag;

/// One piece of a body as the filters get it: a chunk (maybe empty), whether it ends the
/// body, and the trailers that end it, if any.
struct BodyPiece {
    chunk: Bytes,
    eos: bool,
    trailers: Option<http::HeaderMap>,
}

/// A body being read from one side of the stream.
struct BodySource<'a> {
    incoming: &'a mut Incoming,
    /// From an HTTP/1 peer, whose codec ends a body with an empty chunk.
    http1: bool,
    /// A frame read ahead while gathering data, handled next.
    pending: Option<NextFrame>,
}

impl StreamFilters {
    /// Streams a body through the filters chunk by chunk (requests in filter order,
    /// responses in reverse), then trailers, into `tx` (or nowhere). From an `http1` peer
    /// the end comes as an empty last chunk, as Envoy's codec delivers it. `Err` ends the stream;
    /// the body being sent is then aborted, so the peer sees a reset, not a short body.
    pub(super) async fn pump(
        &mut self,
        direction: Direction,
        source: &mut Incoming,
        http1: bool,
        tx: Option<BodySender>,
    ) -> Result<(), Processed> {
        let abort = tx.clone();
        let result = self.pump_frames(direction, source, http1, tx).await;
        if result.is_err()
            && let Some(tx) = abort
        {
            tx.abort();
        }
        result
    }

    async fn pump_frames(
        &mut self,
        direction: Direction,
        incoming: &mut Incoming,
        http1: bool,
        mut tx: Option<BodySender>,
    ) -> Result<(), Processed> {
        if incoming.is_end_stream() {
            return Ok(());
        }
        let filters = self.contexts.len();
        let mut source = BodySource { incoming, http1, pending: None };
        loop {
            let Some(mut piece) = self.next_piece(&mut source, direction).await? else { continue };
            self.info.borrow_mut().count_body(direction, piece.chunk.len());
            let out = self.filter_piece(direction, direction.order(filters), &mut piece).await?;
            let opened = self.opened.take();
            if let Some(bytes) = out.filter(|b| !b.is_empty())
                && let Some(sender) = &tx
                && self.within_idle(sender.send(Ok(Frame::data(bytes))), direction).await?.is_err()
            {
                // The other side went away; keep reading so the filters see the end.
                tx = None;
            }
            // The body's trailers through every filter; or, if a filter ended the body with
            // trailers of its own, those through it and the filters after it.
            let trailers = match (piece.trailers, opened) {
                (Some(trailers), _) => {
                    Some(self.filter_trailers(direction, convert::plain_headers(&trailers), None).await?)
                }
                (None, Some(at)) => Some(self.filter_trailers(direction, Headers::new(), Some(at)).await?),
                (None, None) => None,
            };
            if let (Some(trailers), Some(sender)) = (trailers, &tx) {
                let trailers = Frame::trailers(convert::header_map(&trailers));
                let _ = self.within_idle(sender.send(Ok(trailers)), direction).await?;
            }
            if piece.eos {
                return Ok(());
            }
        }
    }

    /// Waits for `step` (a piece of the body from the peer, or room for one on the other
    /// side) within the stream's idle timeout: nothing moving for that long (a peer that
    /// sends nothing, or a client that stopped reading) leaves the stream idle, as in Envoy.
    async fn within_idle<T>(&self, step: impl Future<Output = T>, direction: Direction) -> Result<T, Processed> {
        match self.hcm.config.stream_idle_timeout {
            Some(t) => tokio::time::timeout(t, step).await.map_err(|_| self.stream_idle(direction)),
            None => Ok(step.await),
        }
    }

    /// The next piece of a body, within the stream's idle timeout; `None` for a frame that
    /// is neither data nor trailers.
    async fn next_piece(
        &self,
        source: &mut BodySource<'_>,
        direction: Direction,
    ) -> Result<Option<BodyPiece>, Processed> {
        let next = match source.pending.take() {
            Some(frame) => frame,
            None => self.within_idle(source.incoming.frame(), direction).await?,
        };
        let piece = |chunk, eos, trailers| Some(BodyPiece { chunk, eos, trailers });
        match next {
            None => Ok(piece(Bytes::new(), true, None)),
            Some(Err(e)) if direction == Direction::Request => Err(self.unreadable_request_body(&e, source.http1)),
            // A response body that breaks resets the stream.
            Some(Err(_)) => Err(Processed::Reset),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    // What has arrived goes to the plugins as one chunk, as Envoy reads it
                    // from the socket.
                    let (data, ahead) = gather_ready(source.incoming, data).await;
                    source.pending = ahead;
                    // Envoy's HTTP/1.1 codec delivers the data, then the end of the stream
                    // as an empty chunk; HTTP/2 ends with the last DATA frame.
                    let eos = !source.http1 && source.pending.is_none() && source.incoming.is_end_stream();
                    Ok(piece(data, eos, None))
                }
                Err(frame) => match frame.into_trailers() {
                    // Data held back by a filter is released at the end, before trailers
                    // (see `filter_piece`).
                    Ok(t) => Ok(piece(Bytes::new(), true, Some(t))),
                    Err(_) => Ok(None),
                },
            },
        }
    }

    /// A request body that cannot be read: a client that went away mid-body is a reset
    /// stream (`DC`); a bad chunk gets 400 from Envoy's codec if it still can.
    fn unreadable_request_body(&self, e: &hyper::Error, http1: bool) -> Processed {
        match body_failure(e, http1) {
            BodyFailure::ClientGone => {
                self.hcm.client_gone(&self.info);
                Processed::Reset
            }
            BodyFailure::Malformed if http1 => {
                let headers = Headers::from_pairs([("connection", "close")]);
                let reply = LocalReply { status: 400, body: b"Bad Request".to_vec(), headers, grpc_status: None };
                self.hcm.reply(reply, self.contexts.len(), Direction::Request)
            }
            // HTTP/2 resets the stream itself (e.g. a body longer than its length).
            BodyFailure::Malformed => Processed::Reset,
        }
    }

    /// A chunk through the first `filters` filters in the direction's order: what the
    /// last one passes on (`None` while one holds it).
    pub(super) async fn filter_chunk(
        &mut self,
        direction: Direction,
        filters: usize,
        chunk: Bytes,
        eos: bool,
    ) -> Result<Option<Bytes>, Processed> {
        self.filter_chunk_through(direction, direction.order(filters), chunk, eos).await
    }

    /// A chunk through the filters `order` lists, in that order.
    async fn filter_chunk_through(
        &mut self,
        direction: Direction,
        order: impl Iterator<Item = usize>,
        chunk: Bytes,
        eos: bool,
    ) -> Result<Option<Bytes>, Processed> {
        let mut out = Some(chunk);
        let mut eos = eos;
        for i in order {
            let Some(chunk) = out.take() else { break };
            let Some(stream) = self.contexts[i].as_mut() else {
                out = Some(chunk);
                continue;
            };
            match stream.data(direction, chunk, eos, self.hcm.buffer_limit).await {
                DataVerdict::Pass(bytes) => out = Some(bytes),
                DataVerdict::PassOpen(bytes) => {
                    out = Some(bytes);
                    eos = false;
                    self.opened = Some(i);
                }
                DataVerdict::Held => {}
                DataVerdict::Done(verdict) => {
                    if let Some(end) = self.apply(verdict, i, direction) {
                        return Err(end);
                    }
                    out = Some(Bytes::new());
                }
            }
        }
        Ok(out)
    }

    /// The end of a body that ends with trailers, through the filters `order` lists: what
    /// earlier filters pass on goes through each filter's body callback (not ending the
    /// body), then the filter's own end (see [`crate::filters::StreamFilter::end_before_trailers`]). What
    /// the last one passes on.
    async fn filter_end_before_trailers(
        &mut self,
        direction: Direction,
        order: impl Iterator<Item = usize>,
    ) -> Result<Bytes, Processed> {
        let mut out = bytes::BytesMut::new();
        for i in order {
            if !out.is_empty() {
                let chunk = std::mem::take(&mut out).freeze();
                out.extend_from_slice(
                    &self.filter_chunk_through(direction, i..i + 1, chunk, false).await?.unwrap_or_default(),
                );
            }
            let Some(stream) = self.contexts[i].as_mut() else { continue };
            match stream.end_before_trailers(direction, self.hcm.buffer_limit).await {
                DataVerdict::Pass(bytes) | DataVerdict::PassOpen(bytes) => out.extend_from_slice(&bytes),
                DataVerdict::Held => {}
                DataVerdict::Done(verdict) => {
                    if let Some(end) = self.apply(verdict, i, direction) {
                        return Err(end);
                    }
                }
            }
        }
        Ok(out.freeze())
    }

    /// A piece of a body through the filters `order` lists: a chunk, or the end before
    /// trailers (see [`StreamFilters::filter_end_before_trailers`]).
    async fn filter_piece(
        &mut self,
        direction: Direction,
        order: impl Iterator<Item = usize>,
        piece: &mut BodyPiece,
    ) -> Result<Option<Bytes>, Processed> {
        let chunk = std::mem::take(&mut piece.chunk);
        if piece.trailers.is_some() && chunk.is_empty() {
            return self.filter_end_before_trailers(direction, order).await.map(Some);
        }
        self.filter_chunk_through(direction, order, chunk, piece.eos).await
    }

    /// Reads the request body for the filter `waiting`, which waits for it: what the filters
    /// before it pass on is added to `held` (which first goes through those it has not been
    /// through), until the body ends; past `limit` bytes the client gets 413.
    pub(super) async fn gather_request_body(
        &mut self,
        held: &mut HeldBody,
        waiting: usize,
        incoming: &mut Incoming,
        http1: bool,
        limit: usize,
    ) -> Result<(), Processed> {
        if held.through < waiting && (held.ended || !held.body.is_empty()) {
            let eos = held.ended && held.trailers.is_none();
            let body = std::mem::take(&mut held.body);
            held.body = self
                .filter_chunk_through(Direction::Request, held.through..waiting, body, eos)
                .await?
                .unwrap_or_default();
        }
        held.through = waiting;
        let mut gathered = bytes::BytesMut::from(std::mem::take(&mut held.body));
        let mut source = BodySource { incoming, http1, pending: None };
        while !held.ended {
            let Some(mut piece) = self.next_piece(&mut source, Direction::Request).await? else { continue };
            self.info.borrow_mut().count_body(Direction::Request, piece.chunk.len());
            let out = self.filter_piece(Direction::Request, 0..waiting, &mut piece).await?;
            gathered.extend_from_slice(&out.unwrap_or_default());
            if let Some(t) = piece.trailers {
                held.trailers = Some(convert::plain_headers(&t));
            }
            held.ended = piece.eos;
            if gathered.len() > limit {
                // Envoy's filter manager, over the buffer limit the waiting filter set.
                self.info.borrow_mut().response_code_details = "request_payload_too_large".into();
                let (status, body) = Direction::Request.over_limit();
                let reply =
                    LocalReply { status, body: body.as_bytes().to_vec(), headers: Headers::new(), grpc_status: None };
                return Err(self.hcm.reply(reply, waiting + 1, Direction::Request));
            }
        }
        held.body = gathered.freeze();
        Ok(())
    }

    /// A held request body through the filters it has not been through (as one chunk), and
    /// its trailers through every filter.
    pub(super) async fn release_held_body(&mut self, held: &mut HeldBody) -> Result<(), Processed> {
        let filters = self.contexts.len();
        if held.through < filters {
            let eos = held.ended && held.trailers.is_none();
            let body = std::mem::take(&mut held.body);
            held.body = self
                .filter_chunk_through(Direction::Request, held.through..filters, body, eos)
                .await?
                .unwrap_or_default();
            held.through = filters;
        }
        if let Some(t) = held.trailers.take() {
            held.trailers = Some(self.filter_trailers(Direction::Request, t, None).await?);
        }
        Ok(())
    }

    /// Trailers through every filter in the direction's order (from the filter `from`, if
    /// given).
    async fn filter_trailers(
        &mut self,
        direction: Direction,
        t: Headers,
        from: Option<usize>,
    ) -> Result<Headers, Processed> {
        let order: Vec<usize> = direction.order(self.contexts.len()).collect();
        let start = from.and_then(|f| order.iter().position(|i| *i == f)).unwrap_or(0);
        self.filter_trailers_through(direction, order[start..].iter().copied(), t).await
    }

    /// Trailers through the filters `order` lists, in that order.
    pub(super) async fn filter_trailers_through(
        &mut self,
        direction: Direction,
        order: impl Iterator<Item = usize>,
        mut t: Headers,
    ) -> Result<Headers, Processed> {
        for i in order {
            let Some(stream) = self.contexts[i].as_mut() else { continue };
            let verdict = stream.trailers(direction, &mut t).await;
            if let Some(end) = self.apply(verdict, i, direction) {
                return Err(end);
            }
        }
        Ok(t)
    }

    /// The filter `waiting` waits for the whole response: the body (streamed, whole, or
    /// held for a filter after it) read through the filters before it (from `from`), given
    /// to it with the trailers and the headers it may change.
    pub(super) async fn wait_for_response(
        &mut self,
        headers: &mut Headers,
        response: ResponseBody,
        (waiting, from): (usize, usize),
        limit: usize,
    ) -> Result<ResponseBody, Processed> {
        let before = || (waiting + 1..from).rev();
        let (body, trailers) = match response {
            ResponseBody::Streaming(upstream) => self.gather_response_body(upstream, (waiting, from), limit).await?,
            ResponseBody::Whole(body) => {
                (self.filter_chunk_through(Direction::Response, before(), body, true).await?.unwrap_or_default(), None)
            }
            ResponseBody::Held(body, trailers) => {
                let eos = trailers.is_none();
                let body = self.filter_chunk_through(Direction::Response, before(), body, eos).await?;
                let trailers = match trailers {
                    Some(t) => Some(self.filter_trailers_through(Direction::Response, before(), t).await?),
                    None => None,
                };
                (body.unwrap_or_default(), trailers)
            }
            // A tunnel has no body to wait for.
            upgraded @ ResponseBody::Upgraded(_) => return Ok(upgraded),
        };
        if let Some(stream) = self.contexts[waiting].as_mut() {
            let verdict = stream.response_body(headers, &body, trailers.as_ref());
            if let Some(end) = self.apply(verdict, waiting, Direction::Response) {
                return Err(end);
            }
        }
        Ok(ResponseBody::Held(body, trailers))
    }

    /// Reads the whole upstream response for the filter `waiting`, which waits for it:
    /// each chunk through the filters before it in the response's order (those after it in
    /// the chain, up to `from`), then the trailers; within the stream's idle timeout and the
    /// route's deadline (past it the stream is reset). Past `limit` bytes the client gets 500,
    /// as from Envoy's filter manager over a filter's buffer.
    pub(super) async fn gather_response_body(
        &mut self,
        upstream: UpstreamBody,
        (waiting, from): (usize, usize),
        limit: usize,
    ) -> Result<(Bytes, Option<Headers>), Processed> {
        let UpstreamBody { body: mut incoming, cluster, sent, external, deadline, http1, place } = upstream;
        let gather = async {
            let mut gathered = bytes::BytesMut::new();
            if incoming.is_end_stream() {
                return Ok((gathered.freeze(), None));
            }
            let mut source = BodySource { incoming: &mut incoming, http1, pending: None };
            loop {
                let Some(mut piece) = self.next_piece(&mut source, Direction::Response).await? else { continue };
                self.info.borrow_mut().count_body(Direction::Response, piece.chunk.len());
                let before = (waiting + 1..from).rev();
                let out = self.filter_piece(Direction::Response, before, &mut piece).await?;
                gathered.extend_from_slice(&out.unwrap_or_default());
                let trailers = match (piece.trailers, self.opened.take()) {
                    (Some(t), _) => {
                        let before = (waiting + 1..from).rev();
                        Some(
                            self.filter_trailers_through(Direction::Response, before, convert::plain_headers(&t))
                                .await?,
                        )
                    }
                    (None, Some(at)) => {
                        let before = (waiting + 1..=at).rev();
                        Some(self.filter_trailers_through(Direction::Response, before, Headers::new()).await?)
                    }
                    (None, None) => None,
                };
                if gathered.len() > limit {
                    self.info.borrow_mut().response_code_details = "response_payload_too_large".into();
                    let (status, body) = Direction::Response.over_limit();
                    let reply = LocalReply {
                        status,
                        body: body.as_bytes().to_vec(),
                        headers: Headers::new(),
                        grpc_status: None,
                    };
                    return Err(self.hcm.reply(reply, 0, Direction::Response));
                }
                if piece.eos || trailers.is_some() {
                    return Ok((gathered.freeze(), trailers));
                }
            }
        };
        let gathered = match deadline {
            Some(d) => tokio::time::timeout_at(d, gather).await.unwrap_or(Err(Processed::Reset)),
            None => gather.await,
        };
        if gathered.is_ok() {
            cluster.stats().response_time(sent.elapsed(), external);
        }
        drop(place);
        gathered
    }

    /// `stream_idle_timeout` passed with no body bytes from the peer: Envoy answers 408
    /// `stream timeout` if the response has not started (flag `SI`), else resets.
    fn stream_idle(&self, direction: Direction) -> Processed {
        self.hcm.stats.rq_idle_timeout.inc();
        let mut i = self.info.borrow_mut();
        i.response_flags.set(ResponseFlag::StreamIdleTimeout);
        i.response_code_details = "stream_idle_timeout".into();
        if direction == Direction::Response {
            i.reset_downstream();
            return Processed::Reset;
        }
        let reply =
            LocalReply { status: 408, body: b"stream timeout".to_vec(), headers: Headers::new(), grpc_status: None };
        self.hcm.reply(reply, self.contexts.len(), Direction::Request)
    }
}

/// Why a request body could not be read.
enum BodyFailure {
    /// The client closed the connection or reset the stream mid-body.
    ClientGone,
    /// The body broke the protocol (a bad chunk, more than its length).
    Malformed,
}

fn body_failure(e: &hyper::Error, http1: bool) -> BodyFailure {
    if e.is_incomplete_message() {
        return BodyFailure::ClientGone;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let broken = matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput);
            return if broken { BodyFailure::Malformed } else { BodyFailure::ClientGone };
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return if h2.is_remote() || h2.is_io() { BodyFailure::ClientGone } else { BodyFailure::Malformed };
        }
        source = s.source();
    }
    if http1 { BodyFailure::Malformed } else { BodyFailure::ClientGone }
}

type NextFrame = Option<Result<Frame<Bytes>, hyper::Error>>;

/// `first` and the data frames that are ready now (up to [`MAX_GATHER_BYTES`]), as one
/// chunk; a frame that is ready but not data (trailers, the end, an error) is returned for
/// the caller to handle next. The connection's task is let run once between reads, so the
/// bytes already in the socket are read.
async fn gather_ready(source: &mut Incoming, first: Bytes) -> (Bytes, Option<NextFrame>) {
    let mut gathered: Option<bytes::BytesMut> = None;
    let mut ahead = None;
    let mut yielded = false;
    while gathered.as_ref().map_or(first.len(), |g| g.len()) < MAX_GATHER_BYTES && !source.is_end_stream() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut *source).poll_frame(&mut cx) {
            std::task::Poll::Pending if yielded => break,
            std::task::Poll::Pending => {
                tokio::task::yield_now().await;
                yielded = true;
            }
            std::task::Poll::Ready(Some(Ok(frame))) => {
                yielded = false;
                match frame.into_data() {
                    Ok(data) => {
                        gathered.get_or_insert_with(|| bytes::BytesMut::from(&first[..])).extend_from_slice(&data)
                    }
                    Err(frame) => {
                        ahead = Some(Some(Ok(frame)));
                        break;
                    }
                }
            }
            std::task::Poll::Ready(other) => {
                ahead = Some(other);
                break;
            }
        }
    }
    (gathered.map_or(first, bytes::BytesMut::freeze), ahead)
}

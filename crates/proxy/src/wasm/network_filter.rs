//! The Wasm network filter (`envoy.filters.network.wasm`): one context per TCP
//! connection, its bytes through `on_downstream_data` and `on_upstream_data`.

use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::mpsc;
use wasmproxy_abi::{FilterStatus, PeerType, StreamType};
use wasmproxy_config::model::FailurePolicy;
use wasmproxy_host::{ContextKind, StreamAction, VmError};

use crate::stream_info::StreamRef;
use crate::wasm::http_filter::FilterSlot;
use crate::wasm::instance::PluginInstance;

impl FilterSlot {
    /// A new TCP connection through this network filter.
    pub fn start_connection(self: &Rc<Self>, info: &StreamRef) -> Result<ConnectionFilter, VmError> {
        self.revive();
        let instance = self.vm();
        let ctx = instance.vm.borrow_mut().create_context(self.root(), ContextKind::Tcp);
        let ctx = ctx.inspect_err(|_| instance.note_failure())?;
        instance.count_stream();
        let (tx, rx) = mpsc::unbounded_channel();
        instance.waiters.borrow_mut().insert(ctx, tx);
        instance.streams.borrow_mut().insert(ctx, info.clone());
        Ok(ConnectionFilter {
            instance,
            ctx,
            rx,
            held: [false; 2],
            held_end: [false; 2],
            fail_open: self.failure_policy == FailurePolicy::FailOpen,
            _slot: self.clone(),
        })
    }
}

/// What a network filter did with a chunk of bytes.
pub enum TcpVerdict {
    /// Pass these bytes on (what it held so far with the chunk, as it left them).
    Pass(Bytes),
    /// It holds the bytes until it continues (or more come).
    Held,
    /// Close the connection.
    Close,
    /// The VM failed.
    Failed,
}

/// One connection's context in one network filter (`envoy.filters.network.wasm`).
pub struct ConnectionFilter {
    instance: Rc<PluginInstance>,
    ctx: u32,
    rx: mpsc::UnboundedReceiver<StreamAction>,
    /// Whether data is held, downstream and upstream, and whether the end of that side
    /// is held with it.
    held: [bool; 2],
    held_end: [bool; 2],
    /// What a failure of the VM does to the connection: skip the filter (FAIL_OPEN, and
    /// FAIL_RELOAD until reloading lands) or close the connection.
    pub fail_open: bool,
    /// The plugin, kept while the connection runs on its root context.
    _slot: Rc<FilterSlot>,
}

/// How `on_new_connection` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The connection goes on.
    Yes,
    /// The plugin closed it.
    Closed,
    /// The VM failed.
    Failed,
}

impl ConnectionFilter {
    /// `on_new_connection`.
    pub fn new_connection(&mut self) -> Opened {
        let ctx = self.ctx;
        let (result, mine) = self.instance.call(Some(ctx), |vm| vm.on_new_connection(ctx));
        match (closes(&mine), result) {
            (true, _) => Opened::Closed,
            (false, Err(_)) => Opened::Failed,
            (false, Ok(_)) => Opened::Yes,
        }
    }

    /// Bytes from the client (`StreamType::Downstream`) or the upstream (`Upstream`)
    /// through `on_downstream_data` / `on_upstream_data`, as DOWNSTREAM_DATA / UPSTREAM_DATA.
    pub fn data(&mut self, direction: StreamType, chunk: &[u8], end_of_stream: bool) -> TcpVerdict {
        let downstream = direction == StreamType::Downstream;
        let i = usize::from(!downstream);
        let (held, ctx) = (self.held[i], self.ctx);
        let (result, mine) = self.instance.call(Some(ctx), |vm| {
            if let Some(s) = vm.stream(ctx) {
                let slot = if downstream { &mut s.downstream_data } else { &mut s.upstream_data };
                match slot {
                    Some(data) if held => data.extend_from_slice(chunk),
                    _ => *slot = Some(chunk.to_vec()),
                }
            }
            if downstream { vm.on_downstream_data(ctx, end_of_stream) } else { vm.on_upstream_data(ctx, end_of_stream) }
        });
        if closes(&mine) {
            return TcpVerdict::Close;
        }
        match result {
            Err(_) => TcpVerdict::Failed,
            // Held (the end too, as Envoy) until the plugin continues.
            Ok(FilterStatus::StopIteration) => {
                self.held[i] = true;
                self.held_end[i] = end_of_stream;
                TcpVerdict::Held
            }
            Ok(_) => TcpVerdict::Pass(self.release(direction).0),
        }
    }

    /// The bytes held in one direction, given up (when the plugin continues), and whether
    /// the end of that side was held with them.
    pub fn release(&mut self, direction: StreamType) -> (Bytes, bool) {
        let downstream = direction == StreamType::Downstream;
        let i = usize::from(!downstream);
        self.held[i] = false;
        let end = std::mem::take(&mut self.held_end[i]);
        let mut vm = self.instance.vm.borrow_mut();
        let taken = vm
            .stream(self.ctx)
            .and_then(|s| if downstream { s.downstream_data.take() } else { s.upstream_data.take() });
        (taken.map(Bytes::from).unwrap_or_default(), end)
    }

    /// Whether bytes are held in this direction.
    pub fn holds(&self, direction: StreamType) -> bool {
        self.held[usize::from(direction != StreamType::Downstream)]
    }

    /// What the plugin asks later (from a callout's answer, a timer...): `continue` or `close`.
    pub fn poll_action(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<StreamAction>> {
        self.rx.poll_recv(cx)
    }

    /// The upstream connection closed (`on_upstream_connection_close`, when it happens).
    pub fn upstream_closed(&mut self, peer: PeerType) {
        let ctx = self.ctx;
        let _ = self.instance.call(Some(ctx), |vm| vm.on_upstream_connection_close(ctx, peer));
    }

    /// The end: the downstream close callback (with who closed it), then done, log,
    /// delete (Envoy's order for TCP).
    pub fn finish(self, downstream: PeerType) {
        self.instance.waiters.borrow_mut().remove(&self.ctx);
        let ctx = self.ctx;
        let _ = self.instance.call(Some(ctx), |vm| {
            let _ = vm.on_downstream_connection_close(ctx, downstream);
            let _ = vm.finish_stream(ctx);
        });
        self.instance.streams.borrow_mut().remove(&self.ctx);
    }
}

/// Whether the plugin asked to close its own connection.
fn closes(mine: &[StreamAction]) -> bool {
    mine.iter().any(|a| matches!(a, StreamAction::Close(_)))
}

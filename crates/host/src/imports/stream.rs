//! Stream control: continue, close, local replies, the route cache (0.2.x and 0.1.0 names).

use wasmproxy_abi::{Status, StreamType};
use wasmtime::{Caller, Linker};

use crate::embedder::StreamAction;
use crate::memory::{HostResult, check_allowed, finish, read, read_pairs};
use crate::state::{ContextKind, VmState};

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_continue_stream", |mut c: Caller<'_, VmState>, kind: i32| {
        finish(continue_stream(&mut c, kind as u32))
    })?;
    linker.func_wrap("env", "proxy_continue_request", |mut c: Caller<'_, VmState>| {
        finish(continue_stream(&mut c, StreamType::HttpRequest as u32))
    })?;
    linker.func_wrap("env", "proxy_continue_response", |mut c: Caller<'_, VmState>| {
        finish(continue_stream(&mut c, StreamType::HttpResponse as u32))
    })?;
    linker.func_wrap("env", "proxy_close_stream", |mut c: Caller<'_, VmState>, kind: i32| {
        finish((|| {
            check_allowed(&c, "proxy_close_stream")?;
            let kind = StreamType::from_u32(kind as u32).ok_or(Status::BadArgument)?;
            push_action(c.data_mut(), StreamAction::Close(kind));
            Ok(())
        })())
    })?;
    linker.func_wrap("env", "proxy_clear_route_cache", |mut c: Caller<'_, VmState>| {
        finish((|| {
            check_allowed(&c, "proxy_clear_route_cache")?;
            push_action(c.data_mut(), StreamAction::ClearRouteCache);
            Ok(())
        })())
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, VmState>,
         status: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32| {
            finish((|| {
                check_allowed(&c, "proxy_send_local_response")?;
                let details = read(&mut c, details_ptr, details_len)?;
                let body = read(&mut c, body_ptr, body_len)?;
                let headers = read_pairs(&mut c, headers_ptr, headers_len)?;
                let details = String::from_utf8_lossy(&details).replace(char::is_whitespace, "_");
                let grpc_status = (0..=16).contains(&grpc_status).then_some(grpc_status as u32);
                let state = c.data_mut();
                let Some(ctx) = state.effective_context() else { return Ok(()) };
                if ctx.kind != ContextKind::Http {
                    return Ok(());
                }
                ctx.local_response_sent = true;
                push_action(
                    state,
                    StreamAction::SendLocalResponse { status: status as u32, details, body, headers, grpc_status },
                );
                Ok(())
            })())
        },
    )?;
    Ok(())
}

/// Envoy: request, response and downstream continue (deferred to after the call);
/// upstream is UNIMPLEMENTED; anything else BAD_ARGUMENT.
fn continue_stream(c: &mut Caller<'_, VmState>, kind: u32) -> HostResult {
    check_allowed(c, "proxy_continue_stream")?;
    let kind = StreamType::from_u32(kind).ok_or(Status::BadArgument)?;
    if kind == StreamType::Upstream {
        return Err(Status::Unimplemented.into());
    }
    push_action(c.data_mut(), StreamAction::Continue(kind));
    Ok(())
}

fn push_action(state: &mut VmState, action: StreamAction) {
    let ctx = state.effective;
    if state.contexts.get(&ctx).is_some_and(|c| c.kind != ContextKind::Root) {
        state.actions.push((ctx, action));
    }
}

//! HTTP and gRPC callouts, and `proxy_get_status` for the one being delivered.

use std::time::Duration;

use wasmproxy_abi::Status;
use wasmtime::{Caller, Linker};

use crate::embedder::{GrpcCallRequest, GrpcStreamRequest, HttpCallRequest};
use crate::memory::{HostResult, check_allowed, copy_to_guest, finish, read, read_pairs, write_u32};
use crate::state::{GRPC_CALL_KIND, GRPC_STREAM_KIND, GrpcStreamState, HTTP_CALL_KIND, VmState};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn timeout(ms: i32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, VmState>,
         up_ptr: i32,
         up_len: i32,
         h_ptr: i32,
         h_len: i32,
         b_ptr: i32,
         b_len: i32,
         t_ptr: i32,
         t_len: i32,
         timeout_ms: i32,
         token_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_http_call")?;
                let cluster = text(read(&mut c, up_ptr, up_len)?);
                let headers = read_pairs(&mut c, h_ptr, h_len)?;
                let body = read(&mut c, b_ptr, b_len)?;
                let trailers = read_pairs(&mut c, t_ptr, t_len)?;
                if timeout_ms < 0 {
                    return Err(Status::BadArgument.into());
                }
                if [&b":path"[..], b":method", b":authority"].iter().any(|h| headers.get(h).is_none()) {
                    return Err(Status::BadArgument.into());
                }
                let state = c.data_mut();
                let root = state.effective_root();
                let token = state.next_callout_token(HTTP_CALL_KIND);
                let request = HttpCallRequest {
                    token,
                    root_context_id: root,
                    cluster,
                    headers,
                    body,
                    trailers,
                    timeout: timeout(timeout_ms),
                };
                if let Err(status) = state.embedder.http_call(request) {
                    state.release_callout_token(HTTP_CALL_KIND, token);
                    return Err(status.into());
                }
                state.http_calls.insert(token, root);
                write_u32(&mut c, token_ptr, token)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Caller<'_, VmState>,
         svc_ptr: i32,
         svc_len: i32,
         service_ptr: i32,
         service_len: i32,
         method_ptr: i32,
         method_len: i32,
         md_ptr: i32,
         md_len: i32,
         msg_ptr: i32,
         msg_len: i32,
         timeout_ms: i32,
         token_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_grpc_call")?;
                let service_config = read(&mut c, svc_ptr, svc_len)?;
                let service = text(read(&mut c, service_ptr, service_len)?);
                let method = text(read(&mut c, method_ptr, method_len)?);
                let initial_metadata = read_pairs(&mut c, md_ptr, md_len)?;
                let message = read(&mut c, msg_ptr, msg_len)?;
                let state = c.data_mut();
                let root = state.effective_root();
                let token = state.next_callout_token(GRPC_CALL_KIND);
                let request = GrpcCallRequest {
                    token,
                    root_context_id: root,
                    service_config,
                    service,
                    method,
                    initial_metadata,
                    message,
                    timeout: timeout(timeout_ms),
                };
                if let Err(status) = state.embedder.grpc_call(request) {
                    state.release_callout_token(GRPC_CALL_KIND, token);
                    return Err(status.into());
                }
                state.grpc_calls.insert(token, root);
                write_u32(&mut c, token_ptr, token)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: Caller<'_, VmState>,
         svc_ptr: i32,
         svc_len: i32,
         service_ptr: i32,
         service_len: i32,
         method_ptr: i32,
         method_len: i32,
         md_ptr: i32,
         md_len: i32,
         token_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_grpc_stream")?;
                let service_config = read(&mut c, svc_ptr, svc_len)?;
                let service = text(read(&mut c, service_ptr, service_len)?);
                let method = text(read(&mut c, method_ptr, method_len)?);
                let initial_metadata = read_pairs(&mut c, md_ptr, md_len)?;
                let state = c.data_mut();
                let root = state.effective_root();
                let token = state.next_callout_token(GRPC_STREAM_KIND);
                let request = GrpcStreamRequest {
                    token,
                    root_context_id: root,
                    service_config,
                    service,
                    method,
                    initial_metadata,
                };
                if let Err(status) = state.embedder.grpc_stream(request) {
                    state.release_callout_token(GRPC_STREAM_KIND, token);
                    return Err(status.into());
                }
                state.grpc_streams.insert(token, GrpcStreamState { root, local_closed: false, remote_closed: false });
                write_u32(&mut c, token_ptr, token)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: Caller<'_, VmState>, token: i32, ptr: i32, len: i32, end: i32| {
            finish((|| {
                check_allowed(&c, "proxy_grpc_send")?;
                let token = token as u32;
                if token & 3 != GRPC_STREAM_KIND {
                    return Err(Status::BadArgument.into());
                }
                let message = read(&mut c, ptr, len)?;
                let state = c.data_mut();
                if !state.grpc_streams.contains_key(&token) {
                    return Err(Status::NotFound.into());
                }
                state.embedder.grpc_send(token, &message, end != 0);
                Ok(())
            })())
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |mut c: Caller<'_, VmState>, token: i32| {
        finish(grpc_end(&mut c, token as u32, true))
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |mut c: Caller<'_, VmState>, token: i32| {
        finish(grpc_end(&mut c, token as u32, false))
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_, VmState>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_get_status")?;
                let (code, message) = c.data().call.status.clone();
                write_u32(&mut c, code_ptr, code)?;
                copy_to_guest(&mut c, message.as_bytes(), ptr_ptr, size_ptr)
            })())
        },
    )?;
    Ok(())
}

/// `proxy_grpc_cancel` (`cancel`) and `proxy_grpc_close`, as Envoy: a call is cancelled
/// either way; a stream is reset, or half-closed and forgotten once both sides closed.
fn grpc_end(c: &mut Caller<'_, VmState>, token: u32, cancel: bool) -> HostResult {
    check_allowed(c, if cancel { "proxy_grpc_cancel" } else { "proxy_grpc_close" })?;
    let state = c.data_mut();
    match token & 3 {
        GRPC_CALL_KIND => {
            state.grpc_calls.remove(&token).ok_or(Status::NotFound)?;
            state.embedder.grpc_cancel(token);
        }
        GRPC_STREAM_KIND => {
            let stream = state.grpc_streams.get_mut(&token).ok_or(Status::NotFound)?;
            if cancel {
                state.grpc_streams.remove(&token);
                state.embedder.grpc_cancel(token);
            } else {
                if stream.remote_closed {
                    state.grpc_streams.remove(&token);
                } else {
                    stream.local_closed = true;
                }
                state.embedder.grpc_close(token);
            }
        }
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

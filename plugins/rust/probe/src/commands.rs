//! The probe's commands: each runs one hostcall (or a WASI / std call) and logs one line
//! `<phase> <words> => status=<n>[ value=<data>]` with what came back.

use crate::raw::{self, Returned};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    /// Metric ids from `define_metric` by name, shared by every context of the VM.
    static METRICS: RefCell<BTreeMap<String, u32>> = const { RefCell::new(BTreeMap::new()) };
}

/// 2020-01-01T00:00:00Z in nanoseconds: clocks past it print as `recent`.
const YEAR_2020_NANOS: u64 = 1_577_836_800_000_000_000;

/// What a command produced.
enum Outcome {
    /// The status the call returned, and the value to print (only when it returned data).
    Status(u32, Option<String>),
    /// Nothing to log (`stdout`, `stderr`).
    Silent,
    Unknown,
}

/// Runs `command` in `phase` and logs its line.
pub fn run(phase: &str, command: &[String]) {
    let words = command.join(" ");
    let line = match execute(command) {
        Ok(Outcome::Status(status, None)) => format!("{phase} {words} => status={status}"),
        Ok(Outcome::Status(status, Some(value))) => {
            format!("{phase} {words} => status={status} value={value}")
        }
        Ok(Outcome::Silent) => return,
        Ok(Outcome::Unknown) => format!("{phase} {words} => unknown command"),
        Err(problem) => format!("{phase} {words} => bad arguments: {problem}"),
    };
    raw::info(&line);
}

fn execute(command: &[String]) -> Result<Outcome, String> {
    let a = Args(command);
    let name = a.opt(0);
    let outcome = match name {
        // === header maps ===
        "get_header" => {
            let (map, key) = (a.num(1)?, a.str(2)?);
            let mut out = Returned::new();
            let s = unsafe {
                raw::proxy_get_header_map_value(
                    map,
                    key.as_ptr(),
                    key.len(),
                    &mut out.ptr,
                    &mut out.len,
                )
            };
            with_value(s, lossy(out.take()))
        }
        "get_headers" => {
            let mut out = Returned::new();
            let s =
                unsafe { raw::proxy_get_header_map_pairs(a.num(1)?, &mut out.ptr, &mut out.len) };
            let value = match out.take() {
                None => "<empty>".to_string(),
                Some(bytes) => match raw::deserialize_pairs(&bytes) {
                    Some(pairs) => join_pairs(&pairs),
                    None => format!("<malformed {}>", hex(Some(bytes))),
                },
            };
            with_value(s, value)
        }
        "set_headers" => {
            let pairs = parse_pairs(a.opt(2));
            let bytes = raw::serialize_pairs(&pairs);
            status(unsafe {
                raw::proxy_set_header_map_pairs(a.num(1)?, bytes.as_ptr(), bytes.len())
            })
        }
        "header_size" => {
            let mut size = 0;
            let s = unsafe { raw::proxy_get_header_map_size(a.num(1)?, &mut size) };
            with_value(s, size.to_string())
        }
        "add_header" | "replace_header" => {
            let (map, key, value) = (a.num(1)?, a.str(2)?, a.opt(3));
            let call = if name == "add_header" {
                raw::proxy_add_header_map_value
            } else {
                raw::proxy_replace_header_map_value
            };
            status(unsafe { call(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
        }
        "remove_header" => {
            let (map, key) = (a.num(1)?, a.str(2)?);
            status(unsafe { raw::proxy_remove_header_map_value(map, key.as_ptr(), key.len()) })
        }

        // === buffers ===
        "get_buffer" => {
            let (buf, start, max) = (a.num(1)?, a.num(2)?, a.num(3)?);
            let mut out = Returned::new();
            let s =
                unsafe { raw::proxy_get_buffer_bytes(buf, start, max, &mut out.ptr, &mut out.len) };
            with_value(s, lossy(out.take()))
        }
        "set_buffer" => {
            let (buf, start, size, data) = (a.num(1)?, a.num(2)?, a.num(3)?, a.opt(4));
            status(unsafe {
                raw::proxy_set_buffer_bytes(buf, start, size, data.as_ptr(), data.len())
            })
        }
        "buffer_status" => {
            let (mut len, mut flags) = (0, 0);
            let s = unsafe { raw::proxy_get_buffer_status(a.num(1)?, &mut len, &mut flags) };
            with_value(s, format!("{len},{flags}"))
        }

        // === properties ===
        "get_property" => {
            let path = property_path(a.str(1)?);
            let mut out = Returned::new();
            let s = unsafe {
                raw::proxy_get_property(path.as_ptr(), path.len(), &mut out.ptr, &mut out.len)
            };
            with_value(s, hex(out.take()))
        }
        "property_header" => {
            // Puts a property where an end-to-end test can see it: header HEADER of map
            // MAP gets `<status>:<hex of the value>`.
            let (path, map, header) = (property_path(a.str(1)?), a.num(2)?, a.str(3)?);
            let mut out = Returned::new();
            let s = unsafe {
                raw::proxy_get_property(path.as_ptr(), path.len(), &mut out.ptr, &mut out.len)
            };
            let value = format!("{s}:{}", hex(out.take()));
            status(unsafe {
                raw::proxy_add_header_map_value(map, header.as_ptr(), header.len(), value.as_ptr(), value.len())
            })
        }
        "vm_counter" => {
            // A counter global to the VM: plugins that share a VM share it.
            thread_local!(static VM_COUNTER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
            let n = VM_COUNTER.with(|c| {
                c.set(c.get() + 1);
                c.get()
            });
            let (map, header, value) = (a.num(1)?, a.str(2)?, n.to_string());
            status(unsafe {
                raw::proxy_add_header_map_value(map, header.as_ptr(), header.len(), value.as_ptr(), value.len())
            })
        }
        "set_property" => {
            let (path, value) = (property_path(a.str(1)?), a.opt(2));
            status(unsafe {
                raw::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
            })
        }

        // === shared data and queues ===
        "get_shared" => {
            let key = a.str(1)?;
            let (mut out, mut cas) = (Returned::new(), 0);
            let s = unsafe {
                raw::proxy_get_shared_data(
                    key.as_ptr(),
                    key.len(),
                    &mut out.ptr,
                    &mut out.len,
                    &mut cas,
                )
            };
            with_value(s, format!("{} cas={cas}", lossy(out.take())))
        }
        "set_shared" => {
            let (key, value, cas) = (a.str(1)?, a.opt(2), a.num(3)?);
            status(unsafe {
                raw::proxy_set_shared_data(
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                    cas,
                )
            })
        }
        "cas_increment" => {
            // The usual shared counter: read the value and its CAS, write value + 1 with
            // that CAS, start again on CAS_MISMATCH. The new value goes into header HEADER
            // of map MAP (for end-to-end tests); the log line says how many tries it took.
            let (key, map, header) = (a.str(1)?, a.num(2)?, a.str(3)?);
            let mut tries = 0;
            loop {
                tries += 1;
                let (mut out, mut cas) = (Returned::new(), 0);
                let got = unsafe {
                    raw::proxy_get_shared_data(key.as_ptr(), key.len(), &mut out.ptr, &mut out.len, &mut cas)
                };
                let current: u64 = match got {
                    0 => lossy(out.take()).parse().map_err(|_| "the value is not a number".to_string())?,
                    1 => 0,
                    other => return Err(format!("get_shared_data: status {other}")),
                };
                let next = (current + 1).to_string();
                let set = unsafe {
                    raw::proxy_set_shared_data(key.as_ptr(), key.len(), next.as_ptr(), next.len(), cas)
                };
                match set {
                    0 => {
                        unsafe {
                            raw::proxy_add_header_map_value(map, header.as_ptr(), header.len(), next.as_ptr(), next.len())
                        };
                        break with_value(0, format!("{next} tries={tries}"));
                    }
                    8 if tries < 1000 => continue,
                    other => return Err(format!("set_shared_data: status {other}")),
                }
            }
        }
        "register_queue" => {
            let name = a.str(1)?;
            let mut id = 0;
            let s = unsafe { raw::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) };
            with_value(s, id.to_string())
        }
        "resolve_queue" => {
            let (vm_id, name) = (a.str(1)?, a.str(2)?);
            let mut id = 0;
            let s = unsafe {
                raw::proxy_resolve_shared_queue(
                    vm_id.as_ptr(),
                    vm_id.len(),
                    name.as_ptr(),
                    name.len(),
                    &mut id,
                )
            };
            with_value(s, id.to_string())
        }
        "enqueue" => {
            let (id, data) = (a.num(1)?, a.opt(2));
            status(unsafe { raw::proxy_enqueue_shared_queue(id, data.as_ptr(), data.len()) })
        }
        "dequeue" => {
            let mut out = Returned::new();
            let s =
                unsafe { raw::proxy_dequeue_shared_queue(a.num(1)?, &mut out.ptr, &mut out.len) };
            with_value(s, lossy(out.take()))
        }
        "enqueue_to" | "dequeue_from" => {
            // By name, for queues whose ids a test cannot know (registered from several
            // threads): resolve VMID NAME, then enqueue DATA or dequeue.
            let (vm_id, name) = (a.str(1)?, a.str(2)?);
            let mut id = 0;
            let s = unsafe {
                raw::proxy_resolve_shared_queue(vm_id.as_ptr(), vm_id.len(), name.as_ptr(), name.len(), &mut id)
            };
            if s != 0 {
                status(s)
            } else if a.opt(0) == "enqueue_to" {
                let data = a.opt(3);
                status(unsafe { raw::proxy_enqueue_shared_queue(id, data.as_ptr(), data.len()) })
            } else {
                let mut out = Returned::new();
                let s = unsafe { raw::proxy_dequeue_shared_queue(id, &mut out.ptr, &mut out.len) };
                with_value(s, lossy(out.take()))
            }
        }

        // === metrics ===
        "define_metric" => {
            let (kind, name) = (metric_type(a.str(1)?)?, a.str(2)?);
            let mut id = 0;
            let s = unsafe { raw::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
            if s == 0 {
                METRICS.with(|m| m.borrow_mut().insert(name.to_string(), id));
            }
            with_value(s, id.to_string())
        }
        "increment_metric" => {
            status(unsafe { raw::proxy_increment_metric(metric_id(a.str(1)?)?, a.num(2)?) })
        }
        "record_metric" => {
            status(unsafe { raw::proxy_record_metric(metric_id(a.str(1)?)?, a.num(2)?) })
        }
        "get_metric" => {
            let mut value = 0;
            let s = unsafe { raw::proxy_get_metric(metric_id(a.str(1)?)?, &mut value) };
            with_value(s, value.to_string())
        }

        // === callouts (dispatch through the SDK so it routes the response back) ===
        "http_call" => {
            let pairs = parse_pairs(a.opt(2));
            let (cluster, body, timeout) = (a.str(1)?, a.opt(3), a.num(4)?);
            let body = (!body.is_empty()).then_some(body.as_bytes());
            token(hostcalls::dispatch_http_call(
                cluster,
                pairs,
                body,
                vec![],
                Duration::from_millis(timeout),
            ))
        }
        "call_response" => {
            let headers =
                hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders).unwrap_or_default();
            let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, usize::MAX)
                .unwrap_or_default();
            let trailers =
                hostcalls::get_map_bytes(MapType::HttpCallResponseTrailers).unwrap_or_default();
            let value = format!(
                "headers={} body={} trailers={}",
                join_byte_pairs(&headers),
                lossy(body),
                join_byte_pairs(&trailers)
            );
            Outcome::Status(0, Some(value))
        }
        "grpc_call" => {
            let (cluster, service, method) = (a.str(1)?, a.str(2)?, a.str(3)?);
            let (message, timeout) = (a.opt(4), a.num(5)?);
            let message = (!message.is_empty()).then_some(message.as_bytes());
            let timeout = Duration::from_millis(timeout);
            token(hostcalls::dispatch_grpc_call(
                cluster,
                service,
                method,
                vec![],
                message,
                timeout,
            ))
        }
        "grpc_stream" => {
            let (cluster, service, method) = (a.str(1)?, a.str(2)?, a.str(3)?);
            token(hostcalls::open_grpc_stream(
                cluster,
                service,
                method,
                vec![],
            ))
        }
        "grpc_send" => {
            let (token, message, end) = (a.num(1)?, a.opt(2), a.num::<bool>(3)?);
            status(unsafe {
                raw::proxy_grpc_send(token, message.as_ptr(), message.len(), end as u32)
            })
        }
        "grpc_cancel" => status(unsafe { raw::proxy_grpc_cancel(a.num(1)?) }),
        "grpc_close" => status(unsafe { raw::proxy_grpc_close(a.num(1)?) }),
        "get_status" => {
            let (mut code, mut out) = (0, Returned::new());
            let s = unsafe { raw::proxy_get_status(&mut code, &mut out.ptr, &mut out.len) };
            with_value(s, format!("{code} {}", lossy(out.take())))
        }

        // === stream control ===
        "send_local_response" => {
            let (code, body) = (a.num(1)?, a.opt(2));
            let headers = raw::serialize_pairs(&parse_pairs(a.opt(3)));
            // An optional gRPC status (none: -1).
            let grpc: i32 = a.opt(4).parse().unwrap_or(-1);
            let details = "probe";
            status(unsafe {
                raw::proxy_send_local_response(
                    code,
                    details.as_ptr(),
                    details.len(),
                    body.as_ptr(),
                    body.len(),
                    headers.as_ptr(),
                    headers.len(),
                    grpc,
                )
            })
        }
        "continue" => status(unsafe { raw::proxy_continue_stream(a.num(1)?) }),
        "close" => status(unsafe { raw::proxy_close_stream(a.num(1)?) }),

        // === misc hostcalls ===
        "set_tick" => status(unsafe { raw::proxy_set_tick_period_milliseconds(a.num(1)?) }),
        "log" => {
            let (level, message) = (a.num(1)?, a.opt(2));
            status(unsafe { raw::proxy_log(level, message.as_ptr(), message.len()) })
        }
        "log_level" => {
            let mut level = 0;
            let s = unsafe { raw::proxy_get_log_level(&mut level) };
            with_value(s, level.to_string())
        }
        "time" => {
            let mut nanos = 0;
            let s = unsafe { raw::proxy_get_current_time_nanoseconds(&mut nanos) };
            with_value(s, recent_or(nanos))
        }
        "foreign" | "foreign_hex" => {
            let name = a.str(1)?;
            let args = match a.0[0].as_str() {
                "foreign_hex" => unhex(a.opt(2)).ok_or_else(|| "ARGS must be hex".to_string())?,
                _ => a.opt(2).as_bytes().to_vec(),
            };
            let mut out = Returned::new();
            let s = unsafe {
                raw::proxy_call_foreign_function(
                    name.as_ptr(),
                    name.len(),
                    args.as_ptr(),
                    args.len(),
                    &mut out.ptr,
                    &mut out.len,
                )
            };
            with_value(s, hex(out.take()))
        }
        "set_effective_context" => status(unsafe { raw::proxy_set_effective_context(a.num(1)?) }),
        "done" => status(unsafe { raw::proxy_done() }),
        "bad_pointer" => {
            // The first byte past the end of linear memory.
            let end = core::arch::wasm32::memory_size(0) * 65536;
            status(unsafe { raw::proxy_log(raw::LOG_INFO, end as *const u8, 16) })
        }

        // === WASI and the guest itself ===
        "env" => {
            let vars: Vec<String> = std::env::vars_os()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect();
            Outcome::Status(0, Some(vars.join(";")))
        }
        "stdout" => {
            println!("{}", a.opt(1));
            Outcome::Silent
        }
        "stderr" => {
            eprintln!("{}", a.opt(1));
            Outcome::Silent
        }
        "wasi_time" => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Outcome::Status(0, Some(recent_or(nanos)))
        }
        "random" => {
            let mut buf = vec![0u8; a.num(1)?];
            let errno = unsafe { raw::random_get(buf.as_mut_ptr(), buf.len()) };
            let value = if errno == 0 {
                "ok".to_string()
            } else {
                errno.to_string()
            };
            Outcome::Status(errno as u32, Some(value))
        }
        // `if_header MAP NAME COMMAND...`: runs the command only when the header is there
        // (so one request of several can panic, loop or allocate without end); silent
        // otherwise.
        "if_header" => {
            let (map, key) = (a.num(1)?, a.str(2)?);
            let mut out = Returned::new();
            let s = unsafe {
                raw::proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut out.ptr, &mut out.len)
            };
            out.take();
            if s != 0 {
                return Ok(Outcome::Silent);
            }
            return execute(command.get(3..).unwrap_or_default());
        }
        "panic" => panic!("{}", a.opt(1)),
        "trap" => {
            // A load past the end of linear memory: a trap, with no panic before it.
            let end = core::arch::wasm32::memory_size(0) * 65536;
            let byte = unsafe { core::ptr::read_volatile((end + 16) as *const u8) };
            Outcome::Status(u32::from(byte), None)
        }
        "loop" => loop {
            std::hint::spin_loop();
        },
        "leak" => {
            // Memory the plugin never gives back, as a Go plugin's heap only grows.
            let block = vec![1u8; a.num::<usize>(1)?];
            std::mem::forget(std::hint::black_box(block));
            Outcome::Silent
        }
        "alloc_bomb" => loop {
            let mut block: Vec<u8> = Vec::with_capacity(1 << 20);
            block.resize(1 << 20, 1);
            std::mem::forget(std::hint::black_box(block));
        },
        _ => Outcome::Unknown,
    };
    Ok(outcome)
}

// === helpers ===

/// Positional command arguments (index 0 is the command name).
struct Args<'a>(&'a [String]);

impl<'a> Args<'a> {
    fn str(&self, i: usize) -> Result<&'a str, String> {
        self.0
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}"))
    }

    /// An optional argument; empty when absent.
    fn opt(&self, i: usize) -> &'a str {
        self.0.get(i).map_or("", String::as_str)
    }

    fn num<T: FromStr>(&self, i: usize) -> Result<T, String> {
        let word = self.str(i)?;
        word.parse()
            .map_err(|_| format!("argument {i} {word:?} is not a valid number/bool"))
    }
}

fn status(s: u32) -> Outcome {
    Outcome::Status(s, None)
}

/// The value is printed only when the call returned OK.
fn with_value(s: u32, value: String) -> Outcome {
    Outcome::Status(s, (s == 0).then_some(value))
}

/// An SDK call that returns a token (or the error status).
fn token(result: Result<u32, proxy_wasm::types::Status>) -> Outcome {
    match result {
        Ok(token) => Outcome::Status(0, Some(token.to_string())),
        Err(s) => status(s as u32),
    }
}

fn lossy(bytes: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
}

/// Bytes from their hex spelling (`0a07...`).
fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A property path as the ABI takes it: segments joined by NUL, split on `/` when the path
/// has one (so a segment may hold dots, as `filter_state/envoy.tcp_proxy.cluster`), else on `.`.
fn property_path(path: &str) -> String {
    let separator = if path.contains('/') { '/' } else { '.' };
    path.replace(separator, "\0")
}

fn hex(bytes: Option<Vec<u8>>) -> String {
    bytes
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn recent_or(nanos: u64) -> String {
    if nanos > YEAR_2020_NANOS {
        "recent".to_string()
    } else {
        nanos.to_string()
    }
}

/// Parses `k=v;k=v` (empty segments skipped, a segment without `=` has an empty value).
fn parse_pairs(text: &str) -> Vec<(&str, &str)> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect()
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn join_byte_pairs(pairs: &[(String, Vec<u8>)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join(";")
}

/// A metric type: its number, or `counter` / `gauge` / `histogram`.
fn metric_type(word: &str) -> Result<u32, String> {
    match word {
        "counter" => Ok(0),
        "gauge" => Ok(1),
        "histogram" => Ok(2),
        _ => word
            .parse()
            .map_err(|_| format!("unknown metric type {word:?}")),
    }
}

/// A metric remembered by `define_metric`, else a raw numeric id.
fn metric_id(name: &str) -> Result<u32, String> {
    METRICS
        .with(|m| m.borrow().get(name).copied())
        .or_else(|| name.parse().ok())
        .ok_or_else(|| format!("unknown metric {name:?}"))
}

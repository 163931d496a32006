//! The `wasm` logger at trace level, in a test process of its own: tracing caches each
//! callsite's interest process-wide, so a subscriber another test's thread sets up at the
//! same moment can hide this one's from the host's check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "all/support.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;

use serde_json::json;

use support::*;

/// With the `wasm` logger at trace level, every call both ways is logged as Envoy logs it.
#[test]
fn trace_level_logs_every_call_between_host_and_vm() {
    use std::sync::Mutex;
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // A callsite another test's thread registered while this subscriber was being set
        // may have cached "never"; asking again makes it see this one.
        tracing::callsite::rebuild_interest_cache();
        let h = Harness::probe(json!({"configure": [["log", "2", "hi"]]}));
        h.take_logs();
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "[host->vm] _initialize()",
        "[host<-vm] _initialize return: void",
        "[host->vm] proxy_on_context_create(1, 0)",
        "[host->vm] proxy_on_vm_start(1, 0)",
        "[host<-vm] proxy_on_vm_start return: 1",
        "[vm->host] env.proxy_log(2, ",
        "[vm<-host] env.proxy_log return: 0",
        "[vm->host] env.proxy_get_buffer_bytes(7, 0, 4294967295, ",
        "[vm<-host] env.proxy_get_buffer_bytes return: 1",
        "[host->vm] proxy_on_memory_allocate(",
        "[host<-vm] proxy_on_configure return: 1",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

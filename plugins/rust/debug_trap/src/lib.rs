//! A plugin that traps in its request headers callback, built with DWARF (see the
//! workspace's profile): the host's test that a trap's backtrace names the function, the
//! file and the line reads it.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Trapper) });
}}

struct Trapper;

impl Context for Trapper {}

impl HttpContext for Trapper {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        trap_here();
        Action::Continue
    }
}

/// Executes `unreachable`: the frame the backtrace starts at.
#[inline(never)]
fn trap_here() {
    core::arch::wasm32::unreachable();
}

//! The config loader on arbitrary text (YAML or JSON): an answer or errors, never a panic.
//! Errors must name where they are.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = wasmproxy_config::load_str(text, std::path::Path::new("/nonexistent")) {
        assert!(!errors.to_string().is_empty());
    }
});

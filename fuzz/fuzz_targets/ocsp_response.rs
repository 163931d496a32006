//! An OCSP response as `ocsp_staple` reads it, on arbitrary bytes: read, or refused with
//! Envoy's words; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((this_update, next_update)) = wasmproxy_proxy::fuzz_ocsp_response(data) {
        // What /certs would show of it.
        let _ = next_update.unwrap_or(this_update).checked_sub(this_update);
    }
});

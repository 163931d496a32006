//! The TLS session's record handling on arbitrary bytes from a client: the first byte is
//! the size of each read (so records and handshake messages split across reads), the rest
//! is the ciphertext. The session accepts, or fails with its alert queued; never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmproxy_proxy::FuzzTlsServer;

/// A throwaway self-signed certificate for `localhost` and its key, made for this target.
static SERVER: OnceLock<FuzzTlsServer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&size, bytes)) = data.split_first() else { return };
    let server = SERVER.get_or_init(|| {
        FuzzTlsServer::new(include_bytes!("../tls/cert.der"), include_bytes!("../tls/key.der"))
            .expect("the target's certificate loads")
    });
    let reads: Vec<&[u8]> = bytes.chunks(usize::from(size.max(1))).collect();
    server.reads(&reads);
});

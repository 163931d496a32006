//! The pairs codec: whatever decodes encodes back to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmproxy_abi::pairs;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = pairs::deserialize(data) {
        let encoded = pairs::serialize(decoded.iter().copied());
        assert_eq!(encoded.len(), pairs::serialized_len(decoded.iter().copied()));
        assert_eq!(pairs::deserialize(&encoded).ok(), Some(decoded));
    }
});

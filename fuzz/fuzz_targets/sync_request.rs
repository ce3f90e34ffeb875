//! The sync request decoder (CBOR inside deflate, with size limits) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = gridlink_core::sync::protocol::decode_request(data) {
        // What decodes must encode again.
        let _ = gridlink_core::sync::protocol::encode(&req);
    }
});

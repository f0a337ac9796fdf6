//! Fuzz target: no input may panic the frame decoders — text frames of both protocol versions
//! (JSON objects for vsn 1.0.0, arrays for 2.0.0), binary pushes (type 3), and the salvage of
//! a target from a malformed frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = locus_protocol::decode_binary(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = locus_protocol::decode_text(text);
        let _ = locus_protocol::salvage_target(text);
    }
});

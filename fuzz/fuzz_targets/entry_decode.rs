//! Entry-file decoding from arbitrary bytes: never panics, never over-reads, and
//! whatever decodes re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fscache::fuzzing::check_entry_bytes(data);
});

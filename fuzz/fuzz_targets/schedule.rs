//! cargo-fuzz target: see `moec_fuzz::schedule`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moec_fuzz::schedule(data));

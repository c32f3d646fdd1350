//! cargo-fuzz target: see `moec_fuzz::front_end`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moec_fuzz::front_end(data));

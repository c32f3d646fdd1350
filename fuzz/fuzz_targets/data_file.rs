//! cargo-fuzz target: see `moec_fuzz::data_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moec_fuzz::data_file(data));

//! Fuzz target: see `microlm_tests::fuzz::gguf_reader` for the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microlm_tests::fuzz::gguf_reader(data));

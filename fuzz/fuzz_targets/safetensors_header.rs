//! Fuzz target: see `microlm_tests::fuzz::safetensors_header` for the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microlm_tests::fuzz::safetensors_header(data));

//! Fuzz target: see `microlm_tests::fuzz::llama2c_import` for the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microlm_tests::fuzz::llama2c_import(data));

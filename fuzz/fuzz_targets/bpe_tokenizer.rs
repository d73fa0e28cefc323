//! Fuzz target: see `microlm_tests::fuzz::bpe_tokenizer` for the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| microlm_tests::fuzz::bpe_tokenizer(data));

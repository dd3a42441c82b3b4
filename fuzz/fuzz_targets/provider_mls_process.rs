#![no_main]
//! libFuzzer entry point; the body is [`pqmls_fuzz::provider_mls_process`] (see `src/provider_mls.rs`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pqmls_fuzz::provider_mls_process(data));

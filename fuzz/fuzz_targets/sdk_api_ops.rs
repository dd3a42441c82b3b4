#![no_main]
//! libFuzzer entry point; the body is [`pqmls_fuzz::sdk_api_ops`] (see `src/sdk_api.rs`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pqmls_fuzz::sdk_api_ops(data));

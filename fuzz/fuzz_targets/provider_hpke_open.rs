#![no_main]
//! libFuzzer entry point; the body is [`pqmls_fuzz::provider_hpke_open`] (see `src/provider_hpke.rs`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pqmls_fuzz::provider_hpke_open(data));

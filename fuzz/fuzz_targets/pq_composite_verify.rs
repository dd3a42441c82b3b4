#![no_main]
//! libFuzzer entry point; the body is [`pqmls_fuzz::pq_composite_verify`] (see `src/lib.rs`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pqmls_fuzz::pq_composite_verify(data));

//! The provider's integration tests, one module per concern, in one test binary.
//!
//! One binary rather than one per file: each file linked on its own instantiated the same
//! OpenMLS code again (25-50 s of compilation each for six of them on the 2-core CI
//! machine); together they share it. Run one file's tests with a filter, e.g.
//! `cargo test -p pqmls-provider --test provider storage::`. The mixed-group tests with
//! Logos's stack are `#[ignore]`d (they need the `pqmls-logos-member` binary,
//! `logos_interop.rs` says how).

// Test code, support modules included: a panic is a test failure (clippy.toml allows
// unwrap only inside #[test] fns; each file used to say this for the modules it included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../pq/tests/support/vector_files.rs"]
mod pq_vector_files;

mod bad_input;
mod encrypted_storage;
mod hpke_pq;
mod hpke_rfc9180;
mod interop;
mod lifecycle;
mod logos_interop;
mod mls_interop_vectors;
mod persistence;
mod randomness;
mod storage;
mod vector_files;

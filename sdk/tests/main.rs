//! The SDK's integration tests, one module per concern, in one test binary.
//!
//! One binary rather than one per file: each file linked on its own instantiated the same
//! OpenMLS, libp2p and tokio code again (45-50 s of compilation each for the three that
//! run real networks, on the 2-core CI machine); together they share it. Run one file's
//! tests with a filter, e.g. `cargo test -p pqmls --test sdk sim_ordering::`.

// Test code, support modules included: a panic is a test failure (clippy.toml allows
// unwrap only inside #[test] fns; each file used to say this for the modules it included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/at_rest_scan.rs"]
mod scan;

mod adversarial;
mod adversarial_libp2p;
mod at_rest;
mod bad_input;
mod crash_restart;
mod e2e_libp2p;
mod finality;
mod invite_many;
mod ordering_attacks;
mod recovery;
mod sim_basic;
mod sim_ordering;
mod sim_replay;
mod waku;

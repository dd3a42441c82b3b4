//! The transport's integration tests, one module per concern, in one test binary.
//!
//! One binary rather than one per file: each file linked on its own instantiated the same
//! libp2p and tokio code again (40-60 s of compilation each, about 640 s of the 2-core CI
//! machine's time for sixteen files); together they share it. Run one file's tests with a
//! filter, e.g. `cargo test -p pqmls-transport --test transport waku_filter::`. The
//! js-waku interop tests are `#[ignore]`d (they need `npm ci`, `js_waku.rs` says how).

// Test code, support modules included: a panic is a test failure (clippy.toml allows
// unwrap only inside #[test] fns; each file used to say this for the modules it included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/bound_tcp.rs"]
mod bound_tcp;
#[path = "support/js.rs"]
mod js;
#[path = "support/scenario.rs"]
mod scenario;
mod support;
#[path = "support/waku.rs"]
mod waku_support;

mod bounds;
mod file_modes;
mod js_waku;
mod listen;
mod network;
mod robustness;
mod waku_enr;
mod waku_filter;
mod waku_lightpush;
mod waku_node;
mod waku_peer_exchange;
mod waku_presets;
mod waku_rate_limits;
mod waku_read_shares;
mod waku_relay;
mod waku_store_bounds;
mod waku_vectors;

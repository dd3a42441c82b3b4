//! Load benchmark: 10 nodes on 127.0.0.1 push 10 000 messages of 1 KiB and 50 of 1 MiB.
//!
//! ```text
//! cargo run --release -p pqmls-transport --example load
//! ```
//!
//! Prints delivery ratio, throughput, latency percentiles and peak memory, and exits with
//! an error if anything was lost or the run exceeded its deadline. Optional arguments:
//! `nodes small_messages large_messages window` (window: most messages in flight, default
//! 500; latency grows with it by Little's law, so a small window measures latency and a
//! large one throughput).

#[path = "../tests/support/scenario.rs"]
mod scenario;

use std::time::Duration;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let params = scenario::Params {
        nodes: arg(1, 10),
        small_messages: arg(2, 10_000),
        small_size: 1024,
        large_messages: arg(3, 50),
        large_size: 1 << 20,
        window: arg(4, 500),
        deadline: Duration::from_secs(300),
        heartbeat: Duration::from_millis(500),
    };
    println!("{params:?}");
    let report = scenario::run(params).await?;
    println!("{report}");
    if report.delivered != report.expected || report.duplicates != 0 {
        return Err("delivery was not exactly once to everyone".into());
    }
    Ok(())
}

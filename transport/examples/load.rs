//! Load benchmark: 10 nodes on 127.0.0.1 push 10 000 messages of 1 KiB and 50 of 1 MiB.
//!
//! ```text
//! cargo run --release -p pqmls-transport --example load
//! cargo run --release -p pqmls-transport --example load -- 10 10000 0 500 waku
//! ```
//!
//! Prints delivery ratio, throughput, latency percentiles and peak memory, and exits with
//! an error if anything was lost or the run exceeded its deadline. Optional arguments:
//! `nodes small_messages large_messages window` (window: most messages in flight, default
//! 500; latency grows with it by Little's law, so a small window measures latency and a
//! large one throughput), and the protocol, `pqmls` (default: pqmls gossip) or `waku`
//! (Waku relay on shard 0 of cluster 3; its large messages are 100 KiB, one segment,
//! since Waku's message limit is 150 KiB), and the deadline in seconds (default 300).

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
    let protocol = match std::env::args().nth(5).as_deref() {
        None | Some("pqmls") => scenario::Protocol::Pqmls,
        Some("waku") => scenario::Protocol::WakuRelay,
        Some(other) => return Err(format!("unknown protocol {other}: pqmls or waku")),
    };
    let large_size = match protocol {
        scenario::Protocol::Pqmls => 1 << 20,
        scenario::Protocol::WakuRelay => 100 * 1024,
    };
    let params = scenario::Params {
        nodes: arg(1, 10),
        small_messages: arg(2, 10_000),
        small_size: 1024,
        large_messages: arg(3, 50),
        large_size,
        window: arg(4, 500),
        deadline: Duration::from_secs(arg(6, 300) as u64),
        heartbeat: Duration::from_millis(500),
        protocol,
    };
    println!("{params:?}");
    let report = scenario::run(params).await?;
    println!("{report}");
    if report.delivered != report.expected || report.duplicates != 0 {
        return Err("delivery was not exactly once to everyone".into());
    }
    Ok(())
}

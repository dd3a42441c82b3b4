//! Throwaway: one sim trial with its report.
#![allow(clippy::unwrap_used, missing_docs)]
use pqmls::sim::{Scenario, run_trial};
fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .with_ansi(false)
        .init();
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let r = rt
        .block_on(run_trial(&Scenario {
            seed,
            ..Scenario::default()
        }))
        .unwrap();
    println!(
        "converged {} deliveries {}/{} failure {:?}",
        r.converged, r.deliveries, r.expected_deliveries, r.failure
    );
    for m in &r.missing {
        println!("missing: {m}");
    }
}

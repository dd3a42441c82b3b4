//! The ordering proof, short version: the simulated-network scenario (members committing
//! concurrently while chatting under message loss, then a sync phase) on a few seeds.
//! The full run (400 trials of 12 members at 20 % loss) is `pqmls sim`, see BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pqmls::sim::{Scenario, run_trial};

fn trial(scenario: Scenario) -> pqmls::sim::TrialReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run_trial(&scenario)).unwrap()
}

#[test]
fn concurrent_commits_under_loss_converge_and_deliver_everything() {
    let seeds: Vec<u64> = std::env::var("PQMLS_SIM_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3]);
    for seed in seeds {
        let r = trial(Scenario {
            members: 8,
            loss: 0.2,
            seed,
            chaos: Duration::from_secs(6),
            ..Scenario::default()
        });
        eprintln!("{r:?}");
        assert!(r.converged, "seed {seed}: {:?}", r.failure);
        assert!(
            r.operations > 0 && r.messages > 0,
            "seed {seed}: nothing happened"
        );
        assert_eq!(
            r.deliveries, r.expected_deliveries,
            "seed {seed}: messages lost"
        );
    }
}

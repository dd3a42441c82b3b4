//! The ordering proof, short version: the simulated-network scenario (members committing
//! concurrently while chatting, then a sync phase) on a few seeds. The full run (400 trials
//! of 12 members at 20 % loss) is `pqmls sim`; its results are in BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pqmls::sim::{Scenario, TrialReport, run_trial};

fn trial(scenario: Scenario) -> TrialReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run_trial(&scenario)).unwrap()
}

/// Without loss, concurrent commits (updates, adds, removes) must always be resolved to
/// one chain, and every message must reach every member it was for.
#[test]
fn concurrent_commits_without_loss_converge_and_deliver_everything() {
    for seed in [1, 2, 3] {
        let r = trial(Scenario {
            members: 8,
            loss: 0.0,
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
            "seed {seed}: {:?}",
            r.missing
        );
    }
}

/// Under 20 % loss per recipient the group must still converge after the sync phase.
/// Delivery under loss is measured, not asserted: it falls short of 100 % (see
/// BENCHMARKS.md and sdk/DESIGN.md), so the numbers are printed.
#[test]
fn concurrent_commits_under_loss_converge() {
    for seed in [1, 2] {
        let r = trial(Scenario {
            members: 8,
            loss: 0.2,
            seed,
            chaos: Duration::from_secs(6),
            ..Scenario::default()
        });
        eprintln!("{r:?}");
        assert!(r.converged, "seed {seed}: {:?}", r.failure);
        assert!(r.dropped > 0, "seed {seed}: the loss was not applied");
    }
}

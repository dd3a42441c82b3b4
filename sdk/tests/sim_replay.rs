//! Exact replay of a simulation seed (issue 11 item 6): with the feature `sim-rng` (on for
//! the SDK's tests), `run_trial` draws every member's cryptographic randomness from a
//! stream of (trial seed, member index) and runs the members on a virtual wall clock, so a
//! seed gives the same bytes on the network, the same commit winners and the same final
//! epoch authenticator every time. `pqmls sim` checks the same over processes
//! (BENCHMARKS.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pqmls::sim::{SEEDED_CRYPTO, Scenario, TrialReport, run_trial};

fn trial(scenario: &Scenario) -> TrialReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run_trial(scenario)).unwrap()
}

/// A short lossy trial with store misses, run twice: the whole reports are equal,
/// including the trace of every payload published (ciphertexts, commits, votes) and the
/// final epoch authenticator, both of which change with any key or nonce. Another seed
/// gives another trace and another authenticator.
#[test]
fn a_seed_replays_exactly_and_another_seed_does_not() {
    const {
        assert!(
            SEEDED_CRYPTO,
            "the SDK's tests run with the feature sim-rng"
        )
    };
    let scenario = Scenario {
        members: 5,
        loss: 0.2,
        seed: 11,
        chaos: Duration::from_secs(4),
        store_miss: 0.1,
        ..Scenario::default()
    };
    let first = trial(&scenario);
    eprintln!("{first:?}");
    assert!(
        first.operations > 0 && first.messages > 0,
        "nothing happened"
    );
    assert!(first.converged, "{:?}", first.failure);
    assert_ne!(first.trace, [0; 32]);
    assert!(!first.epoch_authenticator.is_empty());
    let again = trial(&scenario);
    assert_eq!(first, again);

    let other = trial(&Scenario {
        seed: 12,
        ..scenario
    });
    assert_ne!(first.trace, other.trace);
    assert_ne!(first.epoch_authenticator, other.epoch_authenticator);
}

/// The same with the removed member replaying (its copies of the group state, its
/// commits and votes on them, its replays): its providers are seeded too.
#[test]
fn a_seed_with_the_removed_member_replays_exactly() {
    let scenario = Scenario {
        members: 5,
        loss: 0.2,
        seed: 5,
        chaos: Duration::from_secs(6),
        replay_removed: true,
        ..Scenario::default()
    };
    let first = trial(&scenario);
    eprintln!("{first:?}");
    assert!(first.replay_removed && first.replay_published > 0);
    assert_eq!(first, trial(&scenario));
}

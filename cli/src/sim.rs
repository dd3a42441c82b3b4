//! `pqmls sim`: the ordering scenario of [`pqmls::sim`] (members committing concurrently
//! while chatting under message loss, then a sync phase) for many seeds, on several OS
//! threads, each trial on its own current-thread runtime with paused (virtual) time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use pqmls::Ciphersuite;
use pqmls::sim::{Scenario, TrialReport, run_trial};

use crate::util::{self, quantile};

/// Arguments of `pqmls sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of trials (seeds `seed`, `seed + 1`, …).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    trials: u64,
    /// Users per trial (the group starts with two thirds of them).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(3..=200))]
    members: u16,
    /// Per-recipient gossip loss during the chaos phase (0 to 1).
    #[arg(long, default_value_t = 0.2, value_parser = parse_loss)]
    loss: f64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Length of the chaos phase in virtual seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    chaos_secs: u64,
    /// Cipher suite: hex code, decimal code or name.
    #[arg(long, default_value = util::DEFAULT_SUITE_ARG, value_parser = util::parse_suite)]
    suite: Ciphersuite,
    /// OS threads running trials.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Adversary: member m1 makes each self-update this many times and publishes the
    /// smallest commit hash (1: honest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    grind: u32,
    /// Fault: share of messages the store misses for good (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_loss)]
    store_miss: f64,
    /// Fault: this many members go offline for the middle half of the chaos phase (see
    /// --partition-secs). They keep acting while away.
    #[arg(long, default_value_t = 0)]
    offline: u16,
    /// Fault: the offline members stay away this long from a quarter of the chaos phase
    /// (virtual seconds; longer than --horizon-secs, they must be added again).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    partition_secs: Option<u64>,
    /// Adversary: an outsider re-wraps, forges fork signals, replays, publishes random
    /// sealed payloads and foreign Welcomes (users then join only their contacts'
    /// invitations, the SDK's default).
    #[arg(long)]
    outsider: bool,
    /// Adversary: member m2 is removed during the chaos phase (by m0 at a third of it at
    /// the latest) and never invited back; it keeps the group states it held and keeps
    /// committing for their epochs (smallest hashes, true and false priorities, its votes),
    /// on branches of its own, and replays what it published, to undo its removal and
    /// read on.
    #[arg(long)]
    replay_removed: bool,
    /// The members' fork horizon in virtual seconds (default: the SDK's, 600).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    horizon_secs: u64,
    /// How long members keep the snapshot of the first epoch not final yet, in virtual
    /// seconds (`Config::open_epoch_horizon`; default: the SDK's, 3600).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    open_horizon_secs: u64,
    /// Fault: longest gossip delay in milliseconds (the settle time is 250 ms).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u64).range(5..=60_000))]
    max_delay_ms: u64,
    /// How many past epochs' message secrets each member keeps to read late messages
    /// (`Config::past_epoch_secrets`; default: the SDK's).
    #[arg(long, default_value_t = pqmls::Config::new("-").past_epoch_secrets, value_parser = clap::value_parser!(u64).range(0..=16))]
    past_epochs: u64,
}

fn parse_loss(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("loss must be a number from 0 to 1, not {s:?}")),
    }
}

/// One trial on a fresh current-thread runtime with paused time.
fn one_trial(scenario: &Scenario) -> Result<TrialReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("cannot build a runtime")?;
    Ok(rt.block_on(run_trial(scenario))?)
}

/// Runs the trials and prints one line each and a summary.
pub fn run(args: SimArgs) -> Result<()> {
    let first = args.seed;
    let end = first
        .checked_add(args.trials)
        .context("seed + trials overflows")?;
    println!(
        "pqmls sim: {} trials of {} members, loss {:.0} %, chaos {} s (virtual), suite {}, {} threads",
        args.trials,
        args.members,
        args.loss * 100.0,
        args.chaos_secs,
        util::suite_label(args.suite),
        args.threads
    );
    println!(
        "faults: store misses {:.0} %, {} offline{}, gossip delay up to {} ms, horizon {} s (first open epoch {} s), past epochs kept {}; adversaries: grind {}, outsider {}, removed member replaying {}",
        args.store_miss * 100.0,
        args.offline,
        args.partition_secs
            .map(|p| format!(" for {p} s"))
            .unwrap_or_default(),
        args.max_delay_ms,
        args.horizon_secs,
        args.open_horizon_secs,
        args.past_epochs,
        args.grind,
        if args.outsider { "on" } else { "off" },
        if args.replay_removed { "on" } else { "off" }
    );
    println!(
        "randomness: {}",
        if pqmls::sim::SEEDED_CRYPTO {
            "seeded per member (INSECURE, simulation build): a seed replays exactly"
        } else {
            "crypto from the OS (network and schedule seeded); build with --features sim-rng for exact replay"
        }
    );
    let wall = Instant::now();
    let next = Arc::new(AtomicU64::new(first));
    let (tx, rx) = mpsc::channel::<(u64, Result<TrialReport>)>();
    let mut threads = Vec::new();
    for _ in 0..args.threads {
        let next = next.clone();
        let tx = tx.clone();
        let base = Scenario {
            members: usize::from(args.members),
            loss: args.loss,
            chaos: Duration::from_secs(args.chaos_secs),
            suite: args.suite,
            grind: args.grind,
            store_miss: args.store_miss,
            offline: usize::from(args.offline),
            partition: args.partition_secs.map(Duration::from_secs),
            horizon: Duration::from_secs(args.horizon_secs),
            open_horizon: Duration::from_secs(args.open_horizon_secs),
            outsider: args.outsider,
            replay_removed: args.replay_removed,
            max_delay: Duration::from_millis(args.max_delay_ms),
            past_epochs: args.past_epochs,
            ..Scenario::default()
        };
        threads.push(std::thread::spawn(move || {
            loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let scenario = Scenario {
                    seed,
                    ..base.clone()
                };
                if tx.send((seed, one_trial(&scenario))).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);

    let mut reports: Vec<TrialReport> = Vec::new();
    let mut errors: Vec<(u64, String)> = Vec::new();
    for (seed, r) in rx {
        match r {
            Ok(r) => {
                println!(
                    "seed {:>5}: {} epoch {:>3}, {:>4} messages, deliveries {:>5}/{:<5} forks {:>3}/{:<3} (detected/recovered), final {:>4}, converged in {:>7.3} s, trace {}{}",
                    r.seed,
                    if r.converged {
                        "converged    "
                    } else if r.all_lost {
                        "lost by all  "
                    } else if r.still_lost > 0 {
                        "unrecoverable"
                    } else {
                        "SILENT FORK  "
                    },
                    r.epoch,
                    r.messages,
                    r.deliveries,
                    r.expected_deliveries,
                    r.forks_detected,
                    r.forks_recovered,
                    r.epochs_final,
                    r.converge_time.as_secs_f64(),
                    r.trace[..6]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>(),
                    r.failure
                        .as_deref()
                        .map(|f| format!(": {f}"))
                        .unwrap_or_default()
                );
                if args.replay_removed {
                    println!(
                        "    removed member: removed {}, final {}, undone in {} states, {} payloads, read {} of {} later messages through its branches ({} of its own epochs)",
                        r.replay_removed,
                        r.replay_removal_final,
                        r.replay_undone,
                        r.replay_published,
                        r.replay_read_after,
                        r.replay_tried,
                        r.replay_read_member_epoch
                    );
                }
                for m in r.missing.iter().take(3) {
                    println!("    missing: {m}");
                }
                reports.push(r);
            }
            Err(e) => {
                println!("seed {seed:>5}: ERROR {e:#}");
                errors.push((seed, format!("{e:#}")));
            }
        }
    }
    for t in threads {
        if t.join().is_err() {
            errors.push((0, "a trial thread panicked".into()));
        }
    }
    let wall = wall.elapsed();

    let total = args.trials;
    let converged = reports.iter().filter(|r| r.converged).count();
    let delivered: u64 = reports.iter().map(|r| r.deliveries).sum();
    let expected: u64 = reports.iter().map(|r| r.expected_deliveries).sum();
    let orphaned: u64 = reports.iter().map(|r| r.orphaned).sum();
    let messages: u64 = reports.iter().map(|r| r.messages).sum();
    let lossy: Vec<u64> = reports
        .iter()
        .filter(|r| r.deliveries != r.expected_deliveries)
        .map(|r| r.seed)
        .collect();
    let mut times: Vec<Duration> = reports
        .iter()
        .filter(|r| r.converged)
        .map(|r| r.converge_time)
        .collect();
    times.sort();
    let pct = if expected == 0 {
        100.0
    } else {
        delivered as f64 * 100.0 / expected as f64
    };
    println!();
    println!("trials converged: {converged}/{total}");
    println!("deliveries: {delivered}/{expected} ({pct:.3} %)");
    println!(
        "messages: {messages}, of which {orphaned} orphaned (sent on a losing branch by a member the final chain had removed by then; readable by no member, not counted above)"
    );
    println!(
        "converge time (virtual): median {:.3} s, p95 {:.3} s, max {:.3} s",
        quantile(&times, 0.5).as_secs_f64(),
        quantile(&times, 0.95).as_secs_f64(),
        times.last().copied().unwrap_or_default().as_secs_f64()
    );
    let unrecoverable = reports
        .iter()
        .filter(|r| !r.converged && r.still_lost > 0 && !r.all_lost)
        .count();
    let all_lost = reports
        .iter()
        .filter(|r| !r.converged && r.all_lost)
        .count();
    let silent = reports
        .iter()
        .filter(|r| !r.converged && r.still_lost == 0)
        .count();
    println!(
        "not converged: {unrecoverable} with a member that reported Unrecoverable and is still out, {all_lost} where every holder reported Unrecoverable (the group is lost to all, loudly), {silent} silent forks"
    );
    let twice: u64 = reports.iter().map(|r| r.equivocations_seen).sum();
    let twice_trials: Vec<u64> = reports
        .iter()
        .filter(|r| r.equivocations_seen > 0)
        .map(|r| r.seed)
        .collect();
    println!("votes seen cast twice in one round: {twice} (trials {twice_trials:?})");
    let lost: u64 = reports.iter().map(|r| r.unrecoverable).sum();
    let rejoined: u64 = reports.iter().map(|r| r.rejoined).sum();
    println!(
        "recovery beyond the horizon: {lost} Unrecoverable events, {rejoined} members added again"
    );
    if args.outsider {
        let published: u64 = reports.iter().map(|r| r.outsider_published).sum();
        let states: u64 = reports.iter().map(|r| r.outsider_states).sum();
        let held: u64 = reports.iter().map(|r| r.outsider_invitations).sum();
        println!(
            "outsider: {published} payloads published; member states with it in: {states}; its invitations held for consent, not joined: {held}"
        );
    }
    if args.replay_removed {
        let removed = reports.iter().filter(|r| r.replay_removed).count();
        let final_ = reports.iter().filter(|r| r.replay_removal_final).count();
        let undone = reports.iter().filter(|r| r.replay_undone > 0).count();
        let states: u64 = reports.iter().map(|r| r.replay_undone).sum();
        let published: u64 = reports.iter().map(|r| r.replay_published).sum();
        let tried: u64 = reports.iter().map(|r| r.replay_tried).sum();
        let read: u64 = reports.iter().map(|r| r.replay_read_after).sum();
        let own: u64 = reports.iter().map(|r| r.replay_read_member_epoch).sum();
        println!(
            "removed member replaying: removed in {removed}/{total} trials (final at m0 in {final_}); removals undone: {undone} trials ({states} member states list it again); {published} payloads published or replayed after its removal"
        );
        println!(
            "  messages after its removal read through its own branches: {read} of {tried} tried ({own} more read with a state it held as a member: sent in its last epoch by members that had not merged its removal yet)"
        );
    }
    let contests: u64 = reports.iter().map(|r| r.grinder_contests).sum();
    if args.grind > 1 || contests > 0 {
        let wins: u64 = reports.iter().map(|r| r.grinder_wins).sum();
        let fair: u64 = reports.iter().map(|r| r.grinder_fair_milli).sum();
        let share = |x: u64| {
            if contests == 0 {
                0.0
            } else {
                x as f64 * 100.0 / contests as f64
            }
        };
        println!(
            "member m1 (grind {}): won {wins} of {contests} contests ({:.1} %), fair share {:.1} %",
            args.grind,
            share(wins),
            share(fair) / 1000.0
        );
    }
    println!("wall time: {:.1} s", wall.as_secs_f64());

    let mut failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.converged)
        .map(|r| r.seed)
        .collect();
    failed.sort_unstable();
    if !errors.is_empty() {
        bail!(
            "{} trials failed to run: {}",
            errors.len(),
            errors
                .iter()
                .map(|(s, e)| format!("seed {s}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if !failed.is_empty() || !lossy.is_empty() {
        bail!("trials that did not converge: {failed:?}; trials that lost deliveries: {lossy:?}");
    }
    println!("sim OK");
    Ok(())
}

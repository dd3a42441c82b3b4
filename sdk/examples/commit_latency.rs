//! Commit latency of a large group on the simulated network (issue 11's target: N = 250,
//! from one member's `update` to every member reporting `EpochChanged` to the new epoch,
//! at most 1.5 s). A measurement program, not a test:
//!
//! ```text
//! CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo run -p pqmls --example commit_latency -- 250
//! ```
//!
//! Arguments: N (default 250), settle time in ms (default 250, `Config`'s default),
//! repetitions of the measured update (default 3).
//!
//! All N clients live in this process on one tokio current-thread runtime, on
//! `SimNetwork` (delays 5-80 ms, no loss), suite 0x004F (`pqmls::DEFAULT_SUITE`), no
//! periodic self-updates. The group is built by member 0 with one `invite_many` of the
//! other N - 1 users (commits of at most `MAX_ADDS_PER_COMMIT` adds), on paused tokio
//! time. Then, after the votes of the build have settled, member 1 calls `update`, and
//! for each repetition two clocks are read:
//!
//! - **virtual** (paused time: network delays and timers only; the clock does not move
//!   while anything computes): when each member reported the new epoch, measured from
//!   the `update` call. This is the latency if every member had its own CPU and
//!   processing took no time;
//! - **real** (the machine's clock over the same run): one thread runs all N members one
//!   after another, so this is the sum of everyone's work, not one member's latency;
//! - **per member**: `Stats::last_merge_micros` of each member after the epoch changed,
//!   the real time of its settle step that merged the commit (candidates processed,
//!   snapshot, merge, transaction). With one thread doing nothing else meanwhile this is
//!   that member's CPU time for the commit.
//!
//! Then once more with tokio's clock resumed (`tokio::time::resume`): the same update on
//! real time, where the network delays are real sleeps and the N members share one core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant as RealInstant};

use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Config, Event, GroupId, InvitePolicy, UserId};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(250, |a| a.parse().expect("N"));
    let settle = Duration::from_millis(args.get(1).map_or(250, |a| a.parse().expect("settle ms")));
    let reps: usize = args.get(2).map_or(3, |a| a.parse().expect("repetitions"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run(n.max(2), settle, reps));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The sample's median and maximum.
fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
    (median, v.last().copied().unwrap_or(0.0))
}

async fn run(n: usize, settle: Duration, reps: usize) {
    let net = SimNetwork::new(SimConfig::default());
    net.set_directory_validator(pqmls::directory_validator().unwrap());
    let real = RealInstant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let (t, inbox) = net.attach();
        let mut c = Config::new(format!("m{i}")).with_suite(pqmls::DEFAULT_SUITE);
        c.self_update_interval = None;
        c.invitations = InvitePolicy::Everyone;
        c.settle = settle;
        clients.push(Client::open(c, t, inbox).await.unwrap());
    }
    eprintln!(
        "{n} clients opened: {:.1} s real",
        real.elapsed().as_secs_f64()
    );

    // The group: one invite_many by m0.
    let real = RealInstant::now();
    let virt = tokio::time::Instant::now();
    let g = clients[0].create_group().await.unwrap();
    let users: Vec<UserId> = clients[1..].iter().map(Client::id).collect();
    clients[0].invite_many(&g, &users).await.unwrap();
    let commits = (n - 1).div_ceil(pqmls::MAX_ADDS_PER_COMMIT) as u64;
    converge(&clients, &g, commits).await;
    let built = clients[0].stats().await;
    eprintln!(
        "group of {n} built by {commits} commit(s): {:.1} s virtual, {:.1} s real; \
         last add commit {} B, its Welcome {} B; a key package {} B",
        virt.elapsed().as_secs_f64(),
        real.elapsed().as_secs_f64(),
        built.last_commit_bytes,
        built.last_welcome_bytes,
        clients[1].stats().await.key_package_bytes
    );
    // Let the votes and finality of the build finish.
    quiet(&clients).await;

    let mut epoch = commits;
    for rep in 0..reps {
        epoch += 1;
        measure(&clients, &g, epoch, &format!("paused #{}", rep + 1)).await;
        quiet(&clients).await;
    }
    tokio::time::resume();
    epoch += 1;
    measure(&clients, &g, epoch, "real time").await;
}

/// Waits until the votes of the last epochs are handled: a whole second (virtual) in
/// which no member published anything.
async fn quiet(clients: &[Client]) {
    let real = RealInstant::now();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut published = 0;
        for c in clients {
            published += c.stats().await.published;
        }
        if published == last {
            break;
        }
        last = published;
    }
    eprintln!("  (quiet after {:.1} s real)", real.elapsed().as_secs_f64());
}

/// CPU time of the calling thread (the runtime's only thread), from
/// `/proc/thread-self/schedstat` (Linux; nanoseconds); `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Member 1 updates; every member's time to `EpochChanged { epoch }`.
async fn measure(clients: &[Client], g: &GroupId, epoch: u64, label: &str) {
    let n = clients.len();
    let mut events: Vec<_> = clients.iter().map(Client::events).collect();
    let cpu = thread_cpu();
    let real = RealInstant::now();
    let virt = tokio::time::Instant::now();
    clients[1].update(g).await.unwrap();
    let update_real = real.elapsed();
    let mut at_virtual: Vec<Option<Duration>> = vec![None; n];
    let mut at_real: Vec<Option<Duration>> = vec![None; n];
    while at_virtual.iter().any(Option::is_none) {
        for (i, ev) in events.iter_mut().enumerate() {
            while let Some(e) = ev.try_recv() {
                if let Event::EpochChanged { epoch: e, .. } = e
                    && e == epoch
                    && at_virtual[i].is_none()
                {
                    at_virtual[i] = Some(virt.elapsed());
                    at_real[i] = Some(real.elapsed());
                }
            }
        }
        assert!(
            virt.elapsed() < Duration::from_secs(120),
            "not every member reached epoch {epoch}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let phase_real = real.elapsed();
    let phase_cpu = cpu.zip(thread_cpu()).map(|(a, b)| b.saturating_sub(a));
    let mut merge = Vec::with_capacity(n);
    for c in clients {
        merge.push(c.stats().await.last_merge_micros as f64 / 1e3);
    }
    let merge_sum: f64 = merge.iter().sum();
    let (v_med, v_max) = median_max(at_virtual.iter().flatten().map(|d| ms(*d)).collect());
    let (r_med, r_max) = median_max(at_real.iter().flatten().map(|d| ms(*d)).collect());
    let (m_med, m_max) = median_max(merge);
    let s = clients[1].stats().await;
    println!(
        "N={n} epoch {epoch} [{label}]: update returned after {:.1} ms real; all at the new epoch: \
         virtual median {v_med:.1} ms, last {v_max:.1} ms; real median {r_med:.1} ms, last {r_max:.1} ms; \
         per-member merge step: median {m_med:.1} ms, max {m_max:.1} ms; commit {} B",
        ms(update_real),
        s.last_commit_bytes
    );
    if let Some(cpu) = phase_cpu {
        // Over the phase (update call to the last member's merge) this thread was on a CPU
        // for `cpu`: the share of the real time it got, and the real time of all merge
        // steps against the rest (votes, the commit's arrival, the harness).
        let share = cpu.as_secs_f64() / phase_real.as_secs_f64().max(1e-9);
        println!(
            "  phase: {:.1} ms real, {:.1} ms on CPU (share {:.0} %); merge steps {:.1} ms real in all, the rest {:.1} ms real; merge step x share: median {:.1} ms, max {:.1} ms",
            ms(phase_real),
            ms(cpu),
            share * 100.0,
            merge_sum,
            ms(phase_real) - merge_sum,
            m_med * share,
            m_max * share
        );
    }
}

/// Waits until every member is at `epoch` with the same authenticator, nothing pending
/// (a member found there is not asked again: with no loss nothing moves it back).
async fn converge(clients: &[Client], g: &GroupId, epoch: u64) {
    let start = tokio::time::Instant::now();
    let mut there: Vec<Option<Vec<u8>>> = vec![None; clients.len()];
    while there.iter().any(Option::is_none) {
        for (c, t) in clients.iter().zip(there.iter_mut()) {
            if t.is_none()
                && let Ok(s) = c.status(g).await
                && !s.pending_commit
                && s.epoch == epoch
            {
                *t = Some(s.epoch_authenticator);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the group did not converge at epoch {epoch}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        there.windows(2).all(|w| w[0] == w[1]),
        "members disagree at epoch {epoch}"
    );
}

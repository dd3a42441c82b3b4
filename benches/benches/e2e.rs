//! End-to-end latency of the `pqmls` SDK over real libp2p on 127.0.0.1.
//!
//! One process holds a store node and a *fleet* of N clients (each a [`pqmls::Client`] with
//! its own libp2p node and its own SQLite data directory in a temporary directory), all on a
//! tokio multi-thread runtime. A fleet is started once per (suite, N), on first use (so a
//! criterion filter that skips an N never starts its fleet), and shared by both groups:
//! - `e2e_invite_to_first_message/{suite}/{N}`: member 0 invites a fresh user (a client
//!   started, with its key packages in the store, before the timer starts); as soon as
//!   member 0 reports [`Event::MemberJoined`] it sends a message; the time runs from the
//!   call to `invite` until the invitee reports that message as [`Event::Message`] (it has
//!   joined from the Welcome and decrypted it). Untimed after each iteration: member 0
//!   removes the invitee, every member merges that, the invitee shuts down, so the group is
//!   back to N members.
//! - `e2e_commit_to_epoch/{suite}/{N}`: one member (round robin) calls `update` (a
//!   self-update commit); the time runs until every one of the N members has reported
//!   [`Event::EpochChanged`] to the new epoch.
//!
//! Clients use a settle time of [`SETTLE`] (a member merges a commit that long after the
//! first candidate for its epoch arrived, so it is a floor of both latencies), the default
//! 20 ms tick, and no periodic self-updates. Suites: 0x004F ([`pqmls::DEFAULT_SUITE`]) and
//! 0x0001; N = 5, 20, 50.
//!
//! Topology: every client dials the store node and the [`LINKS`] clients started just before
//! it (a chain, node i to i-1 and i-2 by default; the environment variable
//! `PQMLS_E2E_LINKS` overrides it, 0 gives a pure star around the store). Not a pure star
//! by default because the store's gossipsub mesh for a topic holds at most `mesh_n_high`
//! (12) peers and is pruned to `mesh_n` (6): in a star of 20 or 50 clients most of them
//! would get a group's messages only from IHAVE gossip (a random quarter of the non-mesh
//! peers per 1 s heartbeat, for 3 heartbeats) or the next catch-up from the store.
//! Invitees dial only the store.
//!
//! `PQMLS_E2E_TRANSPORT=waku` runs the same cells over Waku (issue 13 item 6): the store
//! node is a Waku relay node with store v3 (its per-peer store rate limit off, as in
//! `pqmls demo --waku`), the clients are [`Client::start_waku`] on Waku relay nodes of the
//! local preset's cluster (all shards, 1 s heartbeat) asking that store, with the same
//! dials; the benchmark ids get a `waku-` prefix (`e2e_commit_to_epoch/waku-0x004F/5`).
//! Before an invitation the wait is for the invitee's relay mesh instead of the store's
//! mesh on its inbox topic.
//!
//! `PQMLS_E2E_PAST_EPOCHS` sets every client's `Config::past_epoch_secrets` (how many past
//! epochs' message secrets OpenMLS keeps and rewrites on each merge).
//!
//! After each group, the per-phase medians of the iterations (warm-up included) go to
//! stderr, with member 0's and the store's counters (forks, publish failures) and the
//! sums over all members (payloads published, votes, republications, `Need`s sent and
//! answered, duplicates dropped; what their nodes published and delivered), also once
//! the fleet is built.
//!
//! Full run (a few minutes; the N = 50 fleets take most of it to build):
//! `nice -n 10 taskset -c 0 cargo bench -p pqmls-benches --bench e2e`.
//! Subsets by criterion filter, e.g. `-- '0x0001/5$'` or `-- commit`.

// Benchmark setup on a fixed scenario: a failure is a bug to stop at, so unwrap/expect
// and panics are the right tools here (the workspace warns on them for library code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use pqmls::{Ciphersuite, Client, Config, Event, Events, GroupId};
use pqmls_transport::node::Config as NodeConfig;
use pqmls_transport::waku::preset::Preset;
use pqmls_transport::{Multiaddr, Node, PeerId, Topic, store};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::time::Instant;

/// The clients' settle time: a floor of every commit's latency.
const SETTLE: Duration = Duration::from_millis(100);
/// Default number of earlier clients each client dials besides the store.
const LINKS: usize = 2;
/// Group sizes.
const SIZES: [usize; 3] = [5, 20, 50];
/// The suites, with their names in the benchmark ids.
const SUITES: [(&str, Ciphersuite); 2] = [
    ("0x004F", pqmls::DEFAULT_SUITE),
    (
        "0x0001",
        Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
    ),
];
/// Longest wait for one step of an iteration before the run is declared broken.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a fleet to be built.
const SETUP_TIMEOUT: Duration = Duration::from_secs(900);

/// Whether the clients run over Waku (`PQMLS_E2E_TRANSPORT=waku`).
fn on_waku() -> bool {
    std::env::var("PQMLS_E2E_TRANSPORT").is_ok_and(|v| v == "waku")
}

/// The store node's configuration: pqmls's store, or a Waku relay node with store v3.
fn store_config(dir: PathBuf, waku: bool) -> NodeConfig {
    if waku {
        let mut c = NodeConfig::loopback()
            .with_waku(Preset::Local.relay())
            .with_store(dir, store::Config::default());
        // Catch-ups ask more than the 100 queries a minute a Waku node grants one peer by
        // default; the libp2p store has no such limit.
        c.limits.rate_limits.store = None;
        c
    } else {
        pqmls::store_node(NodeConfig::loopback(), dir, store::Config::default()).unwrap()
    }
}

/// Starts a client bootstrapping to the store: on libp2p, or on Waku asking `waku_store`.
async fn start_client(config: Config, bootstrap: &Multiaddr, waku_store: Option<PeerId>) -> Client {
    let node = NodeConfig::loopback().with_bootstrap(bootstrap.clone());
    match waku_store {
        Some(store) => Client::start_waku(
            config,
            node.with_waku(Preset::Local.relay()),
            pqmls::net_waku::Config::default().with_store_peer(store),
        )
        .await
        .unwrap(),
        None => Client::start(config, node).await.unwrap(),
    }
}

fn links() -> usize {
    std::env::var("PQMLS_E2E_LINKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LINKS)
}

async fn within<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A client's configuration in the benchmark.
fn client_config(name: &str, suite: Ciphersuite, dir: &Path) -> Config {
    let mut c = Config::new(name)
        .with_suite(suite)
        .with_data_dir(dir.join(name))
        .with_database_key(pqmls::DatabaseKey::from_bytes([9; 32]));
    c.settle = SETTLE;
    c.self_update_interval = None;
    c.invitations = pqmls::InvitePolicy::Everyone;
    // `PQMLS_E2E_PAST_EPOCHS`: `Config::past_epoch_secrets` (default: the SDK's), to
    // measure what the kept past epochs cost a commit.
    if let Some(n) = std::env::var("PQMLS_E2E_PAST_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.past_epoch_secrets = n;
    }
    c
}

/// The inbox topic of `user`, as `pqmls` computes it (sdk/src/wire.rs), to wait until the
/// store meshes with a fresh invitee before the timer starts.
fn inbox_topic(user: &pqmls::UserId) -> Topic {
    let mut id = b"pqmls/inbox/v2/".to_vec();
    id.extend_from_slice(user.as_bytes());
    Topic::from_group_id(&id)
}

/// Waits until `ev` reports something `done` accepts.
async fn wait_event(ev: &mut Events, mut done: impl FnMut(&Event) -> bool) {
    loop {
        match ev.recv().await {
            Some(e) if done(&e) => return,
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
}

fn reached(e: &Event, group: &GroupId, epoch: u64) -> bool {
    match e {
        Event::EpochChanged { group: g, epoch: e } => g == group && *e >= epoch,
        Event::ForkRecovered {
            group: g, epoch: e, ..
        } => g == group && *e >= epoch,
        _ => false,
    }
}

/// Waits until every stream reported `group` at `epoch` or later; returns when the first
/// and the last did (from `t0`).
async fn all_at_epoch(
    events: &mut [Events],
    group: &GroupId,
    epoch: u64,
    t0: Instant,
) -> (Duration, Duration) {
    let times = futures::future::join_all(events.iter_mut().map(|ev| async move {
        wait_event(ev, |e| reached(e, group, epoch)).await;
        t0.elapsed()
    }))
    .await;
    let first = times.iter().min().copied().unwrap_or_default();
    let last = times.iter().max().copied().unwrap_or_default();
    (first, last)
}

fn drain(ev: &mut Events) {
    while ev.try_recv().is_some() {}
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// One store node, N members in one group, and what the iterations need.
struct Fleet {
    suite_name: String,
    suite: Ciphersuite,
    dir: TempDir,
    store: Node,
    /// The store's peer id when the clients run over Waku.
    waku_store: Option<PeerId>,
    bootstrap: Multiaddr,
    members: Vec<Client>,
    events: Vec<Events>,
    group: GroupId,
    invitees: usize,
    committer: usize,
}

impl Fleet {
    async fn start(suite_name: String, suite: Ciphersuite, n: usize, waku: bool) -> Fleet {
        let t0 = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Node::start(store_config(dir.path().join("store"), waku))
            .await
            .unwrap();
        let waku_store = waku.then(|| store.peer_id());
        let bootstrap = store.listen_addrs().await.unwrap().remove(0);
        let links = links();
        let mut members: Vec<Client> = Vec::with_capacity(n);
        let mut addrs: Vec<Multiaddr> = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("m{i}");
            let c = start_client(
                client_config(&name, suite, dir.path()),
                &bootstrap,
                waku_store,
            )
            .await;
            let node = c.node().unwrap();
            for j in 1..=links.min(i) {
                node.dial(addrs[i - j].clone()).await.unwrap();
            }
            addrs.push(node.listen_addrs().await.unwrap().remove(0));
            members.push(c);
        }
        let events: Vec<Events> = members.iter().map(Client::events).collect();
        let creator = &members[0];
        for m in &members[1..] {
            pqmls::wait_for_key_packages(creator, &m.id())
                .await
                .unwrap();
        }
        let group = creator.create_group().await.unwrap();
        // The adds queue up as intents of member 0 and are committed one per epoch.
        for m in &members[1..] {
            creator.invite(&group, &m.id()).await.unwrap();
        }
        let want = u64::try_from(n - 1).unwrap();
        loop {
            let mut all = true;
            for m in &members {
                all &= m.status(&group).await.is_ok_and(|s| s.epoch == want);
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for m in &members {
            pqmls::wait_for_mesh(m, &group).await.unwrap();
        }
        let mut fleet = Fleet {
            suite_name: suite_name.clone(),
            suite,
            dir,
            store,
            waku_store,
            bootstrap,
            members,
            events,
            group,
            invitees: 0,
            committer: 0,
        };
        fleet.events.iter_mut().for_each(drain);
        fleet.report().await;
        eprintln!(
            "fleet {suite_name}/{n}: {n} clients, links {links}, group at epoch {want}, built in {}",
            ms(t0.elapsed())
        );
        fleet
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Epoch of the group at member 0 (all members agree between iterations).
    async fn epoch(&self) -> u64 {
        self.members[0].status(&self.group).await.unwrap().epoch
    }

    /// One invitation, timed from `invite` to the invitee's first message; the phases
    /// (invite returned, MemberJoined at the inviter, invitee Joined, invitee Message) are
    /// appended to `phases`.
    async fn invite_once(&mut self, phases: &mut Vec<[Duration; 4]>) -> Duration {
        let name = format!("x{}", self.invitees);
        self.invitees += 1;
        let invitee = start_client(
            client_config(&name, self.suite, &self.path()),
            &self.bootstrap,
            self.waku_store,
        )
        .await;
        let mut inv_events = invitee.events();
        let inviter = self.members[0].clone();
        within(
            "invitee key packages",
            STEP_TIMEOUT,
            pqmls::wait_for_key_packages(&inviter, &invitee.id()),
        )
        .await
        .unwrap();
        // The Welcome goes to the invitee's inbox topic through the store: wait (at most
        // 5 s, untimed) until the store is in that topic's mesh. Over Waku it goes on the
        // relay shard every client is on: wait until the invitee has a mesh peer there.
        let inbox = inbox_topic(&invitee.id());
        let node = invitee.node().unwrap().clone();
        let waku = self.waku_store.is_some();
        let group = self.group.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let peers = if waku {
                    invitee.mesh_peers(&group).await.ok().flatten().unwrap_or(0)
                } else {
                    node.mesh_peers(&inbox).await.unwrap_or(0)
                };
                if peers > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let epoch = self.epoch().await;
        let group = self.group.clone();
        self.events.iter_mut().for_each(drain);

        let t0 = Instant::now();
        inviter.invite(&group, &invitee.id()).await.unwrap();
        let invited = t0.elapsed();
        within(
            "MemberJoined at the inviter",
            STEP_TIMEOUT,
            wait_event(&mut self.events[0], |e| {
                matches!(e, Event::MemberJoined { group: g, member } if *g == group && member.id == invitee.id())
            }),
        )
        .await;
        let joined_inviter = t0.elapsed();
        inviter.send(&group, b"first message").await.unwrap();
        within(
            "Joined at the invitee",
            STEP_TIMEOUT,
            wait_event(
                &mut inv_events,
                |e| matches!(e, Event::Joined { group: g, .. } if *g == group),
            ),
        )
        .await;
        let joined_invitee = t0.elapsed();
        within(
            "first message at the invitee",
            STEP_TIMEOUT,
            wait_event(
                &mut inv_events,
                |e| matches!(e, Event::Message(m) if m.group == group && m.sender.id == inviter.id()),
            ),
        )
        .await;
        let total = t0.elapsed();
        phases.push([invited, joined_inviter, joined_invitee, total]);

        // Untimed: back to N members, everyone at the same epoch.
        inviter.remove(&group, &invitee.id()).await.unwrap();
        within(
            "removal of the invitee at every member",
            STEP_TIMEOUT,
            all_at_epoch(&mut self.events, &group, epoch + 2, Instant::now()),
        )
        .await;
        invitee.shutdown().await;
        total
    }

    /// One self-update, timed from `update` to the last member at the new epoch; the
    /// phases (update returned, first member at the new epoch, last member) are appended.
    async fn commit_once(&mut self, phases: &mut Vec<[Duration; 3]>) -> Duration {
        let n = self.members.len();
        let committer = self.members[self.committer % n].clone();
        self.committer += 1;
        let epoch = self.epoch().await;
        self.events.iter_mut().for_each(drain);
        let t0 = Instant::now();
        committer.update(&self.group).await.unwrap();
        let updated = t0.elapsed();
        let (first, last) = within(
            "every member at the new epoch",
            STEP_TIMEOUT,
            all_at_epoch(&mut self.events, &self.group, epoch + 1, t0),
        )
        .await;
        phases.push([updated, first, last]);
        last
    }

    async fn report(&self) {
        // Sums over all members (cumulative since the fleet started): what the SDKs sent
        // and why, and what their nodes put on the wire (gossip or relay) and delivered.
        let mut sdk: Vec<(&str, u64)> = [
            "published",
            "votes",
            "republished",
            "needs sent",
            "needs answered",
            "published again",
            "duplicates",
            "deferred",
            "buffered",
        ]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
        let mut wire: Vec<(&str, u64)> = ["published", "delivered", "slow peers", "dropped"]
            .into_iter()
            .map(|k| (k, 0))
            .collect();
        for m in &self.members {
            let s = m.stats().await;
            let v = [
                s.published,
                s.votes_cast,
                s.republished,
                s.needs_sent,
                s.needs_answered,
                s.published_again,
                s.duplicates,
                s.deferred,
                s.buffered,
            ];
            sdk.iter_mut().zip(v).for_each(|(a, b)| a.1 += b);
            if let Some(n) = m.node() {
                let c = n.counters();
                let v = [
                    c.published + c.relay_published,
                    c.delivered + c.relay_delivered,
                    c.slow_peers,
                    c.inbound_dropped + c.relay_inbound_dropped,
                ];
                wire.iter_mut().zip(v).for_each(|(a, b)| a.1 += b);
            }
        }
        let list = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "  all members: {}; their nodes: {}",
            list(&sdk),
            list(&wire)
        );
        let s = self.members[0].stats().await;
        let c = self.store.counters();
        eprintln!(
            "  member 0: commits merged {}, rejected {}, forks {} (recovered {}), publish failures {}, last commit {} B, last Welcome {} B; store: peers {}, stored {}, requests {}",
            s.commits_merged,
            s.commits_rejected,
            s.forks_detected,
            s.forks_recovered,
            s.publish_failures,
            s.last_commit_bytes,
            s.last_welcome_bytes,
            c.connected_peers,
            c.stored,
            c.requests_served,
        );
    }

    async fn shutdown(self) {
        for m in self.members {
            m.shutdown().await;
        }
        let _ = self.store.shutdown().await;
    }
}

fn phase_medians<const K: usize>(
    label: &str,
    names: [&str; K],
    phases: &[[Duration; K]],
) -> String {
    let mut out = format!("  {label}: {} iterations, medians from t0:", phases.len());
    for (k, name) in names.iter().enumerate() {
        let mut v: Vec<Duration> = phases.iter().map(|p| p[k]).collect();
        out.push_str(&format!(" {name} {}", ms(median(&mut v))));
    }
    out
}

fn e2e(c: &mut Criterion) {
    if std::env::var_os("RUST_LOG").is_some() {
        // Traces to stderr, e.g. `RUST_LOG=pqmls::engine::finality=debug`.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let waku = on_waku();
    for (suite_name, suite) in SUITES {
        let suite_name = if waku {
            format!("waku-{suite_name}")
        } else {
            suite_name.to_owned()
        };
        for n in SIZES {
            let mut fleet: Option<Fleet> = None;
            let start = |fleet: &mut Option<Fleet>| {
                if fleet.is_none() {
                    *fleet = Some(rt.block_on(within(
                        "fleet setup",
                        SETUP_TIMEOUT,
                        Fleet::start(suite_name.clone(), suite, n, waku),
                    )));
                }
            };

            let mut g = c.benchmark_group("e2e_invite_to_first_message");
            g.sampling_mode(SamplingMode::Flat);
            let mut phases = Vec::new();
            g.bench_function(BenchmarkId::new(&suite_name, n), |b| {
                start(&mut fleet);
                let f = fleet.as_mut().unwrap();
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += f.invite_once(&mut phases).await;
                        }
                        total
                    })
                });
            });
            g.finish();
            if let Some(f) = &fleet {
                eprintln!(
                    "{}",
                    phase_medians(
                        &format!("invite {}/{n}", f.suite_name),
                        [
                            "invite returned",
                            "MemberJoined",
                            "invitee Joined",
                            "message"
                        ],
                        &phases,
                    )
                );
                rt.block_on(f.report());
            }

            let mut g = c.benchmark_group("e2e_commit_to_epoch");
            g.sampling_mode(SamplingMode::Flat);
            let mut phases = Vec::new();
            g.bench_function(BenchmarkId::new(&suite_name, n), |b| {
                start(&mut fleet);
                let f = fleet.as_mut().unwrap();
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += f.commit_once(&mut phases).await;
                        }
                        total
                    })
                });
            });
            g.finish();
            if let Some(f) = fleet.take() {
                eprintln!(
                    "{}",
                    phase_medians(
                        &format!("commit {}/{n}", f.suite_name),
                        ["update returned", "first member", "last member"],
                        &phases,
                    )
                );
                rt.block_on(async {
                    f.report().await;
                    f.shutdown().await;
                });
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = e2e
}
criterion_main!(benches);

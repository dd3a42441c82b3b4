//! A deterministic, seeded, in-process network for running real clients in tests and
//! simulations: per-recipient message loss, random delay, a reliable store (history and
//! directory), and members that can go offline.
//!
//! Run it on a current-thread tokio runtime with paused time (`start_paused`), so delays
//! and the clients' timers run on virtual time: a minute of simulated chat takes as long as
//! the CPU work in it. Loss and delay come from a seeded generator; with one runtime thread
//! the same seed gives the same run up to the randomness of the cryptography itself.
//!
//! [`run_trial`] removes that last part too when the feature `sim-rng` is on
//! ([`SEEDED_CRYPTO`]): every member's provider and signer draw from a ChaCha20 stream of
//! (trial seed, member index) instead of the operating system, and the members' wall clock
//! is virtual (it starts at [`VIRTUAL_EPOCH_MS`] and follows tokio's clock), so a seed
//! replays byte for byte; [`TrialReport::trace`] is the check. Without the feature, the
//! network, the schedule and the members' choices are still seeded, but keys, commit
//! hashes, and so which commits win, differ from run to run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use pqmls_transport::store::{Cursor, Page};
use pqmls_transport::{Error, Message, MessageId, Topic};
use tokio::sync::mpsc;

use crate::net::{Inbox, Transport};

mod revenant;

/// Whether [`run_trial`] seeds the members' cryptographic randomness (feature `sim-rng`),
/// so that a seed replays exactly. Insecure by design, simulations only.
pub const SEEDED_CRYPTO: bool = cfg!(feature = "sim-rng");

/// Where the simulated members' wall clock starts (2026-01-01T00:00:00Z, in ms since the
/// Unix epoch): fixed, so that what they derive from the time (key package lifetimes,
/// timestamps inside messages) is the same in every run of a seed.
pub const VIRTUAL_EPOCH_MS: u64 = 1_767_225_600_000;

/// Lifetime of the simulated members' key packages: their clock is fixed at
/// [`VIRTUAL_EPOCH_MS`], and OpenMLS checks key packages against the real clock, so they
/// must be valid from then to well past today (a century).
const SIM_KEY_PACKAGE_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The seed of simulated member `index`'s randomness in the trial of `seed` (`u64::MAX`:
/// the outsider; `u64::MAX - 1`: the removed member's retained state).
#[cfg_attr(not(feature = "sim-rng"), allow(dead_code))]
fn member_seed(seed: u64, index: u64) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"pqmls sim member rng v1");
    h.update(seed.to_be_bytes());
    h.update(index.to_be_bytes());
    h.finalize().into()
}

/// **Insecure, simulations and fuzzing only** (feature `sim-rng`): `config` made to replay
/// exactly, as [`run_trial`] makes its members: every random draw of the client (identity
/// key, MLS's keys, nonces, the SDK's ids, hedged signatures) comes from ChaCha20 streams of
/// `seed`, and its wall clock starts at [`VIRTUAL_EPOCH_MS`] and follows tokio's clock (so
/// that a paused runtime's virtual time is also the client's wall time). Key packages are
/// valid for a century from there, since OpenMLS checks them against the real clock.
#[cfg(feature = "sim-rng")]
pub fn insecure_replayable(mut config: crate::Config, seed: [u8; 32]) -> crate::Config {
    config.insecure_rng_seed = Some(seed);
    config.virtual_wall_clock_ms = Some(VIRTUAL_EPOCH_MS);
    config.key_package_lifetime = SIM_KEY_PACKAGE_LIFETIME;
    config
}

/// The lifetime of a leaf node made by a simulated party that is not a client, as the
/// clients make theirs at the start of the virtual clock: from an hour before
/// [`VIRTUAL_EPOCH_MS`] to a century after it.
pub fn sim_lifetime() -> openmls::prelude::Lifetime {
    let now = VIRTUAL_EPOCH_MS / 1000;
    openmls::prelude::Lifetime::init(
        now.saturating_sub(3600),
        now.saturating_add(SIM_KEY_PACKAGE_LIFETIME.as_secs()),
    )
}

/// A provider for a simulated party that is not a [`crate::Client`] (the outsider, the
/// removed member's copies): seeded like a member's with the feature `sim-rng`, the
/// operating system's otherwise.
fn party_provider(seed: u64, index: u64) -> crate::Result<crate::engine::Prov> {
    #[cfg(feature = "sim-rng")]
    let crypto =
        pqmls_provider::PqCrypto::insecure_deterministic_for_simulation(member_seed(seed, index));
    #[cfg(not(feature = "sim-rng"))]
    let crypto = {
        let _ = (seed, index);
        pqmls_provider::PqCrypto::new().map_err(|e| crate::Error::Crypto(format!("{e:?}")))?
    };
    Ok(pqmls_provider::Provider::from_parts(
        crypto,
        pqmls_provider::SqliteStorage::open_in_memory()?,
    ))
}

/// SplitMix64: a small, seedable, well-distributed generator (not for cryptography).
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in [0, n) (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Settings of a simulated network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of loss and delay.
    pub seed: u64,
    /// Probability that one recipient misses one gossip message.
    pub loss: f64,
    /// Shortest delivery delay.
    pub min_delay: Duration,
    /// Longest delivery delay.
    pub max_delay: Duration,
    /// Probability that the store misses one published message (it is still gossiped).
    pub store_miss: f64,
    /// The endpoints' duplicate window ([`crate::Transport::duplicate_window`]), as
    /// both real transports have one (2 minutes): a publication of bytes published on
    /// the topic within it is refused ([`Error::Duplicate`]), by whoever publishes them.
    /// With `None` (the default) only bytes the store holds are refused.
    pub duplicate_window: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            loss: 0.0,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(80),
            store_miss: 0.0,
            duplicate_window: None,
        }
    }
}

struct Endpoint {
    topics: BTreeSet<Topic>,
    tx: mpsc::UnboundedSender<Message>,
    online: bool,
}

use crate::directory::DirectoryRule as DirectoryValidator;

struct Net {
    config: SimConfig,
    validator: Option<DirectoryValidator>,
    rng: SimRng,
    endpoints: Vec<Endpoint>,
    history: BTreeMap<Topic, Vec<Message>>,
    directory: BTreeMap<Vec<u8>, Vec<u8>>,
    clock_ms: u64,
    sent: u64,
    dropped: u64,
    /// SHA-256 over everything published and replayed, in order.
    trace: sha2::Sha256,
    /// Who published each message (endpoint index).
    authors: BTreeMap<MessageId, usize>,
    /// When each message was last published, while `config.duplicate_window` lasts.
    recent: BTreeMap<MessageId, tokio::time::Instant>,
}

/// The shared network. Clone it to hand it around.
#[derive(Clone)]
pub struct SimNetwork {
    net: Arc<Mutex<Net>>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimNetwork")
    }
}

/// One member's attachment to a [`SimNetwork`].
pub struct SimTransport {
    net: Arc<Mutex<Net>>,
    index: usize,
}

/// History pages of the simulated store hold at most this many messages.
const PAGE: usize = 64;

impl SimNetwork {
    /// A network with these settings and nobody on it.
    pub fn new(config: SimConfig) -> Self {
        let rng = SimRng::new(config.seed);
        SimNetwork {
            net: Arc::new(Mutex::new(Net {
                config,
                validator: None,
                rng,
                endpoints: Vec::new(),
                history: BTreeMap::new(),
                directory: BTreeMap::new(),
                clock_ms: 0,
                sent: 0,
                dropped: 0,
                trace: <sha2::Sha256 as sha2::Digest>::new(),
                authors: BTreeMap::new(),
                recent: BTreeMap::new(),
            })),
        }
    }

    /// Attaches a new member: its transport and its inbound stream.
    pub fn attach(&self) -> (Arc<SimTransport>, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let index = match self.net.lock() {
            Ok(mut n) => {
                n.endpoints.push(Endpoint {
                    topics: BTreeSet::new(),
                    tx,
                    online: true,
                });
                n.endpoints.len() - 1
            }
            Err(_) => 0,
        };
        let inbox =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
                .boxed();
        (
            Arc::new(SimTransport {
                net: self.net.clone(),
                index,
            }),
            inbox,
        )
    }

    /// Makes the simulated store check every directory write with `validator` (as a real
    /// store does with [`crate::directory_validator`]); refused writes fail with
    /// [`Error::EntryRejected`].
    pub fn set_directory_validator(&self, validator: DirectoryValidator) {
        if let Ok(mut n) = self.net.lock() {
            n.validator = Some(validator);
        }
    }

    /// Writes a directory entry as a raw store would accept it from anyone, bypassing the
    /// validator (tests: what a malicious store serves).
    pub fn plant(&self, key: Vec<u8>, blob: Vec<u8>) {
        if let Ok(mut n) = self.net.lock() {
            n.directory.insert(key, blob);
        }
    }

    /// Delivers `msg` again to every subscriber of its topic, as a relay replaying it after
    /// gossip's de-duplication window would (tests). Not stored again.
    pub fn replay(&self, msg: &Message) {
        if let Ok(mut n) = self.net.lock() {
            trace(&mut n.trace, b"replay", &msg.topic, &msg.data);
            for e in n
                .endpoints
                .iter()
                .filter(|e| e.online && e.topics.contains(&msg.topic))
            {
                let _ = e.tx.send(msg.clone());
            }
        }
    }

    /// Every message the simulated store holds on `topic`, in arrival order (tests: what an
    /// observer of the network saw).
    pub fn history_of(&self, topic: &Topic) -> Vec<Message> {
        self.net
            .lock()
            .map(|n| n.history.get(topic).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The messages on `topic` that endpoint `index` (in [`SimNetwork::attach`] order)
    /// published and the store holds, in arrival order.
    pub(crate) fn published_by(&self, topic: &Topic, index: usize) -> Vec<Message> {
        self.net
            .lock()
            .map(|n| {
                n.history
                    .get(topic)
                    .map(|h| {
                        h.iter()
                            .filter(|m| n.authors.get(&m.id) == Some(&index))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Changes the share of messages the store misses.
    pub fn set_store_miss(&self, p: f64) {
        if let Ok(mut n) = self.net.lock() {
            n.config.store_miss = p;
        }
    }

    /// Changes the loss rate (for example to 0 for a final sync phase).
    pub fn set_loss(&self, loss: f64) {
        if let Ok(mut n) = self.net.lock() {
            n.config.loss = loss;
        }
    }

    /// SHA-256 over every payload published or replayed so far (topic and bytes, in
    /// order): equal in two runs exactly when they put the same bytes on the network.
    pub fn trace(&self) -> [u8; 32] {
        self.net
            .lock()
            .map(|n| sha2::Digest::finalize(n.trace.clone()).into())
            .unwrap_or_default()
    }

    /// (gossip deliveries attempted, deliveries dropped by loss).
    pub fn counters(&self) -> (u64, u64) {
        self.net
            .lock()
            .map(|n| (n.sent, n.dropped))
            .unwrap_or((0, 0))
    }
}

impl SimTransport {
    /// Takes this member off the network (nothing delivered, every call fails) or back on.
    pub fn set_online(&self, online: bool) {
        if let Ok(mut n) = self.net.lock()
            && let Some(e) = n.endpoints.get_mut(self.index)
        {
            e.online = online;
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Net, usize) -> pqmls_transport::Result<T>,
    ) -> pqmls_transport::Result<T> {
        let mut n = self.net.lock().map_err(|_| Error::Shutdown)?;
        if !n.endpoints.get(self.index).is_some_and(|e| e.online) {
            return Err(Error::NoStore);
        }
        f(&mut n, self.index)
    }
}

/// Adds one payload to a network trace.
fn trace(h: &mut sha2::Sha256, what: &[u8], topic: &Topic, data: &[u8]) {
    use sha2::Digest as _;
    for part in [what, topic.as_str().as_bytes(), data] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
}

fn position(m: &Message) -> (u64, [u8; 32]) {
    let ms = m
        .received
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    (ms, m.id.0)
}

impl Transport for SimTransport {
    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
        let r = self.with(|n, i| {
            if let Some(e) = n.endpoints.get_mut(i) {
                e.topics.insert(topic.clone());
            }
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
        let r = self.with(|n, i| {
            if let Some(e) = n.endpoints.get_mut(i) {
                e.topics.remove(topic);
            }
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a Topic,
        data: Vec<u8>,
    ) -> BoxFuture<'a, pqmls_transport::Result<MessageId>> {
        let r = self.with(|n, me| {
            let id = MessageId::compute(topic, &data);
            let history = n.history.entry(topic.clone()).or_default();
            if history.iter().any(|m| m.id == id) {
                return Err(Error::Duplicate);
            }
            if let Some(window) = n.config.duplicate_window {
                let now = tokio::time::Instant::now();
                if n.recent.get(&id).is_some_and(|t| now < *t + window) {
                    return Err(Error::Duplicate);
                }
                if n.clock_ms % 1024 == 0 {
                    n.recent.retain(|_, t| now < *t + window);
                }
                n.recent.insert(id, now);
            }
            n.clock_ms += 1;
            trace(&mut n.trace, b"publish", topic, &data);
            // Two runs of a seed diverge at the first payload whose line differs
            // (`RUST_LOG=pqmls::sim=trace`).
            tracing::trace!(
                "publish {} by endpoint {me} on {}: {} bytes, sha256 {}",
                n.clock_ms,
                topic.as_str(),
                data.len(),
                crate::engine::short(&<sha2::Sha256 as sha2::Digest>::digest(&data))
            );
            n.authors.insert(id, me);
            let msg = Message {
                topic: topic.clone(),
                data,
                id,
                received: UNIX_EPOCH + Duration::from_millis(n.clock_ms),
            };
            if n.config.store_miss <= 0.0 || n.rng.unit() >= n.config.store_miss {
                n.history
                    .entry(topic.clone())
                    .or_default()
                    .push(msg.clone());
            }
            let (min, max) = (n.config.min_delay, n.config.max_delay);
            let span = u64::try_from(max.saturating_sub(min).as_micros()).unwrap_or(0);
            let loss = n.config.loss;
            let targets: Vec<(mpsc::UnboundedSender<Message>, bool)> = n
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, e)| *i != me && e.online && e.topics.contains(topic))
                .map(|(_, e)| (e.tx.clone(), true))
                .collect();
            for (tx, _) in targets {
                n.sent += 1;
                if n.rng.unit() < loss {
                    n.dropped += 1;
                    continue;
                }
                let delay = min + Duration::from_micros(n.rng.below(span + 1));
                let m = msg.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(m);
                });
            }
            Ok(id)
        });
        Box::pin(async move { r })
    }

    fn put(&self, key: Vec<u8>, blob: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<()>> {
        let r = self.with(|n, _| {
            if let Some(v) = &n.validator
                && !v(&key, n.directory.get(&key).map(Vec::as_slice), &blob)
            {
                return Err(Error::EntryRejected);
            }
            n.directory.insert(key, blob);
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn get(&self, key: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<Option<Vec<u8>>>> {
        let r = self.with(|n, _| Ok(n.directory.get(&key).cloned()));
        Box::pin(async move { r })
    }

    fn connected(&self) -> bool {
        self.net.lock().is_ok_and(|n| {
            n.endpoints.get(self.index).is_some_and(|e| e.online)
                && n.endpoints
                    .iter()
                    .enumerate()
                    .any(|(i, e)| i != self.index && e.online)
        })
    }

    fn duplicate_window(&self) -> Option<Duration> {
        self.net.lock().ok().and_then(|n| n.config.duplicate_window)
    }

    fn history<'a>(
        &'a self,
        topic: &'a Topic,
        from: Cursor,
    ) -> BoxFuture<'a, pqmls_transport::Result<Page>> {
        let r = self.with(|n, _| {
            let after = (
                from.after_ms(),
                from.after_id().map(|i| i.0).unwrap_or([0; 32]),
            );
            let all = n.history.get(topic).map(Vec::as_slice).unwrap_or(&[]);
            let mut messages: Vec<Message> = all
                .iter()
                .filter(|m| position(m) > after)
                .take(PAGE + 1)
                .cloned()
                .collect();
            let next = if messages.len() > PAGE {
                messages.truncate(PAGE);
                messages.last().map(Cursor::after)
            } else {
                None
            };
            Ok(Page {
                messages,
                next,
                resume: None,
            })
        });
        Box::pin(async move { r })
    }
}

/// The ordering scenario of the simulated-network harness: members committing
/// concurrently (self-updates, adds, removes) while chatting under message loss, then a
/// sync phase against the store's history.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Number of users (the group starts with two thirds of them; adds draw from the rest).
    pub members: usize,
    /// Per-recipient loss during the chaos phase.
    pub loss: f64,
    /// Seed of the network and of the members' choices.
    pub seed: u64,
    /// Length of the chaos phase (virtual time).
    pub chaos: Duration,
    /// Mean time between two actions (virtual time).
    pub action_every: Duration,
    /// Cipher suite.
    pub suite: crate::Ciphersuite,
    /// Settle time of the clients.
    pub settle: Duration,
    /// Longest gossip delivery delay (the shortest is 5 ms).
    pub max_delay: Duration,
    /// Probability that the store misses a message (it stays missing for good).
    pub store_miss: f64,
    /// Member `m1` is a grinding adversary: each of its self-updates is made this many
    /// times and the smallest commit hash published, and a third of all actions are its
    /// self-updates (1: honest).
    pub grind: u32,
    /// This many members (the last ones of the initial group) go offline for the middle
    /// half of the chaos phase (or for [`Scenario::partition`] from a quarter of it), and
    /// come back for the sync phase at the latest. They keep acting while away (sending,
    /// committing on a branch of their own).
    pub offline: usize,
    /// How long the offline members stay away (`None`: the middle half of the chaos
    /// phase). Longer than [`Scenario::horizon`], their branch is past recovery by a
    /// branch move, and they must be added again.
    pub partition: Option<Duration>,
    /// The members' `Config::fork_horizon` (on the virtual clock).
    pub horizon: Duration,
    /// The members' `Config::open_epoch_horizon` (on the virtual clock).
    pub open_horizon: Duration,
    /// An outsider attacks during the chaos phase (see `Outsider`): re-wrapped payloads,
    /// forged fork signals, random sealed payloads, replays and copies published again,
    /// foreign Welcomes. The users
    /// then accept invitations from their contacts only (every other user), the SDK's
    /// default policy.
    pub outsider: bool,
    /// A removed member replays (see `revenant`): member `m2` is removed during the chaos
    /// phase (by `m0` at a third of it, if nobody has removed it by then) and never
    /// invited back; it keeps copies of the group states it held as a member and keeps
    /// committing for their epochs (smallest hashes, true or false priorities, with its
    /// votes), on branches of its own, and replays what it published, trying to undo its
    /// removal and to read on. The group starts with at least three members for it.
    pub replay_removed: bool,
    /// The members' `Config::past_epoch_secrets`.
    pub past_epochs: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            members: 12,
            loss: 0.2,
            seed: 1,
            chaos: Duration::from_secs(20),
            action_every: Duration::from_millis(250),
            suite: crate::DEFAULT_SUITE,
            settle: Duration::from_millis(250),
            max_delay: Duration::from_millis(80),
            store_miss: 0.0,
            grind: 1,
            offline: 0,
            partition: None,
            horizon: crate::Config::new("-").fork_horizon,
            open_horizon: crate::Config::new("-").open_epoch_horizon,
            outsider: false,
            replay_removed: false,
            past_epochs: crate::Config::new("-").past_epoch_secrets,
        }
    }
}

/// What one trial of a [`Scenario`] gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrialReport {
    /// Seed of the trial.
    pub seed: u64,
    /// SHA-256 over everything the trial put on the network, in order
    /// ([`SimNetwork::trace`]): with [`SEEDED_CRYPTO`], the same for every run of a seed.
    pub trace: [u8; 32],
    /// The epoch authenticator the members agreed on at the end (the first member's, if
    /// they did not agree).
    pub epoch_authenticator: Vec<u8>,
    /// Every member ended in the same epoch with the same epoch authenticator, and the
    /// members' own view of who is in the group matches the group's member list.
    pub converged: bool,
    /// Virtual time from the end of the chaos phase until the agreement that then held
    /// for a second (checked every 100 ms).
    pub converge_time: Duration,
    /// The epoch reached.
    pub epoch: u64,
    /// Application messages sent.
    pub messages: u64,
    /// (message, recipient) pairs where the recipient was a member of the group, on the
    /// final chain, at the epoch the message was (last) sent in.
    pub expected_deliveries: u64,
    /// Of those, how many are in the recipient's history at the end.
    pub deliveries: u64,
    /// Messages whose sender, on the final chain, was no longer a member at the epoch its
    /// last copy went out in: sent on a losing branch that had not removed it yet, so no
    /// member of the final chain can read them. Not counted in `expected_deliveries`.
    pub orphaned: u64,
    /// Commits issued by the scenario (updates, adds, removes).
    pub operations: u64,
    /// Sum over members of forks detected and of branch moves.
    pub forks_detected: u64,
    /// Sum over members of branch moves.
    pub forks_recovered: u64,
    /// Gossip deliveries dropped by loss.
    pub dropped: u64,
    /// Why it did not converge, if it did not.
    pub failure: Option<String>,
    /// The first undelivered (message, recipient) pairs, described.
    pub missing: Vec<String>,
    /// Members that reported [`crate::Event::Unrecoverable`] (each once per epoch).
    pub unrecoverable: u64,
    /// Contests the grinding member (`m1`) took part in, as it saw them at settle time.
    pub grinder_contests: u64,
    /// Of those, the ones it won.
    pub grinder_wins: u64,
    /// Its fair share of those contests (sum of 1/authors), in thousandths.
    pub grinder_fair_milli: u64,
    /// Epochs made final, summed over members.
    pub epochs_final: u64,
    /// Members seen voting twice in one round of one epoch, summed over the members that
    /// saw it ([`crate::Stats::equivocations_seen`]): zero unless an adversary votes.
    pub equivocations_seen: u64,
    /// Members that got back into the group after reporting it unrecoverable
    /// ([`crate::Event::Rejoined`]), summed over members.
    pub rejoined: u64,
    /// If the trial did not converge only because of members that hold the group in a
    /// state they reported as unrecoverable (waiting to be added again;
    /// [`crate::GroupStatus::lost_at`]): how many. Zero otherwise (a silent fork).
    pub still_lost: u64,
    /// Every member that holds the group at the end reported it unrecoverable: nobody is
    /// on a chain without knowing it, but the group is lost to all of them (counted in
    /// [`TrialReport::still_lost`] too, and shown apart by `pqmls sim`).
    pub all_lost: bool,
    /// Payloads the outsider published (or replayed).
    pub outsider_published: u64,
    /// Users whose group state has the outsider in it, or came from it, at the end.
    pub outsider_states: u64,
    /// Invitations from the outsider held for consent at the end (not joined).
    pub outsider_invitations: u64,
    /// [`Scenario::replay_removed`]: the group removed the member (the first member's
    /// view stopped listing it) during the trial.
    pub replay_removed: bool,
    /// The removal was final at the first member by the end (its votes made the epoch the
    /// removal ended final).
    pub replay_removal_final: bool,
    /// Members whose state lists the removed member again at the end: removals undone
    /// (it is never invited back).
    pub replay_undone: u64,
    /// Payloads the removed member published or replayed after its removal.
    pub replay_published: u64,
    /// Application messages sent after its removal (received by it afterwards) that it
    /// tried to read.
    pub replay_tried: u64,
    /// Of those, the ones it read with a state its own commits led to, or honest commits
    /// on top of them: messages of members who accepted its branch after removing it.
    pub replay_read_after: u64,
    /// Of those, the ones it read with a state it held as a member: messages sent in an
    /// epoch it was a member of, by members that had not merged its removal yet (MLS
    /// gives those to every member of that epoch).
    pub replay_read_member_epoch: u64,
}

/// Runs one trial on the current runtime, which should be a current-thread runtime with
/// paused time.
///
/// # Errors
/// Any client error that stops the scenario itself (not the ordering failures it measures).
pub async fn run_trial(s: &Scenario) -> crate::Result<TrialReport> {
    use crate::{Client, Config};

    let net = SimNetwork::new(SimConfig {
        seed: s.seed,
        loss: s.loss,
        max_delay: s.max_delay,
        store_miss: s.store_miss,
        // As the real transports refuse republications (gossipsub's duplicate cache).
        duplicate_window: Some(pqmls_transport::node::DUPLICATE_WINDOW),
        ..SimConfig::default()
    });
    net.set_directory_validator(crate::directory_validator()?);
    let mut rng = SimRng::new(s.seed ^ 0x0005_eed0_fac7_10e5);
    let mut clients = Vec::new();
    let mut transports = Vec::new();
    for i in 0..s.members {
        let (t, inbox) = net.attach();
        transports.push(t.clone());
        let mut c = Config::new(format!("m{i}")).with_suite(s.suite);
        c.invitations = if s.outsider {
            crate::InvitePolicy::Contacts
        } else {
            crate::InvitePolicy::Everyone
        };
        c.self_update_interval = None;
        c.settle = s.settle;
        c.sync_interval = Some(Duration::from_secs(2));
        c.sync_backoff = Duration::from_millis(300);
        c.fork_horizon = s.horizon;
        c.open_epoch_horizon = s.open_horizon;
        c.past_epoch_secrets = s.past_epochs;
        if i == 1 {
            c.grind = s.grind.max(1);
        }
        c.virtual_wall_clock_ms = Some(VIRTUAL_EPOCH_MS);
        c.key_package_lifetime = SIM_KEY_PACKAGE_LIFETIME;
        #[cfg(feature = "sim-rng")]
        {
            c.insecure_rng_seed = Some(member_seed(s.seed, i as u64));
        }
        clients.push(Client::open(c, t, inbox).await?);
    }
    let names: Vec<crate::UserId> = clients.iter().map(Client::id).collect();
    if s.outsider {
        for (i, c) in clients.iter().enumerate() {
            for (j, n) in names.iter().enumerate() {
                if i != j {
                    c.add_contact(n, &format!("m{j}")).await?;
                }
            }
        }
    }
    let label = |id: &crate::UserId| {
        names
            .iter()
            .position(|n| n == id)
            .map_or_else(|| id.short(), |i| format!("m{i}"))
    };
    let mut report = TrialReport {
        seed: s.seed,
        ..TrialReport::default()
    };
    let creator = &clients[0];
    let group = creator.create_group().await?;
    let mut initial = (s.members * 2).div_ceil(3).max(2);
    if s.replay_removed {
        // The removed member, m2, starts in the group.
        initial = initial.max(3).min(s.members);
    }
    for name in names.iter().take(initial).skip(1) {
        creator.invite(&group, name).await?;
        let idx = names.iter().position(|n| n == name).unwrap_or(0);
        let joined = wait(Duration::from_secs(30), async || {
            clients[idx]
                .groups()
                .await
                .map(|g| g.contains(&group))
                .unwrap_or(false)
                && clients[0]
                    .members(&group)
                    .await
                    .map(|m| m.iter().any(|m| m.id == *name))
                    .unwrap_or(false)
        })
        .await;
        if !joined {
            tracing::debug!("sim: m{idx} is not in the group 30 s after its invitation");
        }
    }
    let mut outsider = if s.outsider {
        let mut topics = vec![crate::wire::group_topic(&group.0)];
        topics.extend(names.iter().map(crate::wire::inbox_topic));
        Some(Outsider::new(&net, s.suite, &topics, party_provider(s.seed, u64::MAX)?).await?)
    } else {
        None
    };
    let mut outsider_rng = SimRng::new(s.seed ^ 0x0bad_0bad_0bad_0bad);
    let mut revenant = match clients.get(2) {
        Some(c) if s.replay_removed => {
            let mut r = revenant::Revenant::new(&net, c, 2, &group, s.seed).await?;
            r.observe(c).await?;
            Some(r)
        }
        _ => None,
    };
    let mut revenant_rng = SimRng::new(s.seed ^ 0x7e7e_7e7e_7e7e_7e7e);
    let mut removals_asked = 0u32;
    // Chaos: actions at random times by random members.
    let mut sent: Vec<(crate::UserId, Vec<u8>, Vec<crate::UserId>)> = Vec::new();
    let start = tokio::time::Instant::now();
    let mut k = 0u64;
    let offline: Vec<usize> =
        (initial.saturating_sub(s.offline.min(initial / 2))..initial).collect();
    let mut offline_state = 0u8;
    while start.elapsed() < s.chaos {
        // The offline members leave for the middle half of the chaos phase.
        let phase = start.elapsed().as_secs_f64() / s.chaos.as_secs_f64().max(1e-9);
        let back = match s.partition {
            Some(p) => start.elapsed() >= s.chaos.mul_f64(0.25) + p,
            None => phase >= 0.75,
        };
        if offline_state == 0 && phase >= 0.25 {
            for &i in &offline {
                transports[i].set_online(false);
            }
            offline_state = 1;
        } else if offline_state == 1 && back {
            for &i in &offline {
                transports[i].set_online(true);
            }
            offline_state = 2;
        }
        let gap = rng.below(2 * u64::try_from(s.action_every.as_millis()).unwrap_or(250) + 1);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        if let Some(o) = outsider.as_mut() {
            o.act(&mut outsider_rng, &net, &group, &names).await;
        }
        if let Some(r) = revenant.as_mut() {
            if r.removed {
                r.act(&mut revenant_rng, &net).await;
            } else {
                r.observe(&clients[r.index]).await?;
                let listed = clients[0]
                    .members(&group)
                    .await
                    .is_ok_and(|ms| ms.iter().any(|m| m.id == r.id));
                if !listed {
                    r.removed = true;
                } else if (phase >= 1.0 / 3.0 && removals_asked == 0)
                    || (phase >= 2.0 / 3.0 && removals_asked == 1)
                {
                    // m0 removes it (again, if the first removal lost to a branch).
                    if clients[0].remove(&group, &r.id).await.is_ok() {
                        removals_asked += 1;
                    }
                }
            }
        }
        let mut actor = usize::try_from(rng.below(s.members as u64)).unwrap_or(0);
        let mut roll = rng.below(100);
        if s.grind > 1 && rng.below(3) == 0 {
            // The grinder contests as often as it can: a third of all actions are its
            // self-updates.
            actor = 1;
            roll = 70;
        }
        if revenant
            .as_ref()
            .is_some_and(|r| r.removed && r.index == actor)
        {
            // The removed member acts as the revenant only.
            continue;
        }
        let c = &clients[actor];
        let Ok(members) = c.members(&group).await else {
            continue;
        };
        let members: Vec<crate::UserId> = members.into_iter().map(|m| m.id).collect();
        if roll < 70 {
            k += 1;
            let body = format!("{}:m{actor}:{k}", s.seed).into_bytes();
            if c.send(&group, &body).await.is_ok() {
                sent.push((names[actor], body, members));
            }
        } else if roll < 85 {
            if c.update(&group).await.is_ok() {
                report.operations += 1;
            }
        } else if roll < 95 {
            let outside: Vec<&crate::UserId> = names
                .iter()
                .filter(|n| !members.contains(n))
                .filter(|n| revenant.as_ref().is_none_or(|r| r.id != **n))
                .collect();
            if !outside.is_empty() {
                let pick = outside[usize::try_from(rng.below(outside.len() as u64)).unwrap_or(0)];
                if c.invite(&group, pick).await.is_ok() {
                    report.operations += 1;
                }
            }
        } else if members.len() > 4 {
            let others: Vec<&crate::UserId> = members
                .iter()
                .filter(|n| **n != names[actor] && **n != names[0])
                .collect();
            if !others.is_empty() {
                let pick = others[usize::try_from(rng.below(others.len() as u64)).unwrap_or(0)];
                if c.remove(&group, pick).await.is_ok() {
                    report.operations += 1;
                }
            }
        }
    }
    for &i in &offline {
        transports[i].set_online(true);
    }
    // Sync phase: no more loss, everyone catches up until all agree.
    net.set_loss(0.0);
    let chaos_end = tokio::time::Instant::now();
    // Every member syncs every 500 ms; agreement is checked every 100 ms and must hold
    // for a second (the convergence time is when it started to hold).
    let deadline = Duration::from_secs(120);
    let mut agreed_since: Option<Duration> = None;
    let mut tick = 0u32;
    while chaos_end.elapsed() < deadline {
        if tick.is_multiple_of(5) {
            // The removed member keeps at it for the first 20 s of the sync phase.
            if let Some(r) = revenant.as_mut().filter(|r| r.removed)
                && chaos_end.elapsed() < Duration::from_secs(20)
            {
                r.act(&mut revenant_rng, &net).await;
            }
            for c in &clients {
                let _ = c.sync().await;
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        match agreement(&clients, &names, &group, &BTreeSet::new()).await {
            Ok(epoch) => {
                let since = *agreed_since.get_or_insert(chaos_end.elapsed());
                if chaos_end.elapsed() >= since + Duration::from_secs(1) {
                    report.converged = true;
                    report.epoch = epoch;
                    report.converge_time = since;
                    break;
                }
            }
            Err(why) => {
                agreed_since = None;
                report.failure = Some(why);
            }
        }
    }
    if report.converged {
        report.failure = None;
    }
    // Delivery: each message to each member of the sender's view when it was sent.
    report.messages = sent.len() as u64;
    let mut histories = Vec::new();
    for c in &clients {
        let h = c.history(&group, usize::MAX >> 1).await.unwrap_or_default();
        histories.push(
            h.into_iter()
                .map(|m| m.body)
                .collect::<std::collections::BTreeSet<_>>(),
        );
    }
    // The members a message was for: the group on the final chain at the epoch the
    // sender's last copy went out in (a message sent on a losing branch is re-sent on the
    // winning one), as recorded by m0, who is never removed.
    let mut final_epochs = std::collections::BTreeMap::new();
    for c in &clients {
        for m in c.history(&group, usize::MAX >> 1).await.unwrap_or_default() {
            if m.own {
                final_epochs.insert(m.body, m.epoch);
            }
        }
    }
    for (sender, body, at_send) in &sent {
        let members: Vec<crate::UserId> = match final_epochs.get(body) {
            Some(e) => clients[0]
                .members_at(&group, *e)
                .await
                .ok()
                .flatten()
                .map(|ms| ms.into_iter().map(|m| m.id).collect()),
            None => None,
        }
        .unwrap_or_else(|| at_send.clone());
        if !members.contains(sender) {
            report.orphaned += 1;
            continue;
        }
        for m in members.iter().filter(|m| *m != sender) {
            if let Some(i) = names.iter().position(|n| n == m) {
                report.expected_deliveries += 1;
                if histories[i].contains(body) {
                    report.deliveries += 1;
                } else if report.missing.len() < 20 {
                    report.missing.push(format!(
                        "{} (final epoch {:?}) not at {}",
                        String::from_utf8_lossy(body),
                        final_epochs.get(body),
                        label(m)
                    ));
                }
            }
        }
    }
    let mut lost = BTreeSet::new();
    for (c, name) in clients.iter().zip(&names) {
        if c.status(&group).await.is_ok_and(|s| s.lost_at.is_some()) {
            lost.insert(*name);
        }
    }
    // Not converged only because of members that said they cannot follow (and wait to
    // be added again): the target's "reports unrecoverable", not a silent fork.
    let mut others_hold = false;
    for (c, name) in clients.iter().zip(&names) {
        if !lost.contains(name) && c.status(&group).await.is_ok() {
            others_hold = true;
        }
    }
    if !report.converged && !lost.is_empty() && !others_hold {
        // Loud, not silent: each holder was told (`Event::Unrecoverable`), but nobody is
        // left on the final chain to add them again.
        report.still_lost = lost.len() as u64;
        report.all_lost = true;
    } else if !report.converged && !lost.is_empty() {
        match agreement(&clients, &names, &group, &lost).await {
            Ok(_) => report.still_lost = lost.len() as u64,
            Err(why) => {
                let first = report.failure.take().unwrap_or_default();
                report.failure = Some(format!(
                    "{first}; without the {} member(s) that reported Unrecoverable: {why}",
                    lost.len()
                ));
            }
        }
    }
    for c in &clients {
        let st = c.stats().await;
        report.forks_detected += st.forks_detected;
        report.forks_recovered += st.forks_recovered;
        report.unrecoverable += st.unrecoverable;
        report.rejoined += st.rejoined;
        report.epochs_final += st.epochs_final;
        report.equivocations_seen += st.equivocations_seen;
    }
    if let Some(g) = clients.get(1) {
        let st = g.stats().await;
        report.grinder_contests = st.contests;
        report.grinder_wins = st.contests_won;
        report.grinder_fair_milli = st.contests_fair_milli;
    }
    if let Some(r) = revenant.as_mut() {
        r.finish().await;
        report.replay_removed = r.removed;
        report.replay_published = r.published;
        report.replay_tried = r.tried;
        report.replay_read_after = r.read_after;
        report.replay_read_member_epoch = r.read_member_epoch;
        if r.removed {
            for (i, c) in clients.iter().enumerate() {
                if i != r.index
                    && c.members(&group)
                        .await
                        .is_ok_and(|ms| ms.iter().any(|m| m.id == r.id))
                {
                    report.replay_undone += 1;
                }
            }
            // The last epoch of the first member's chain with the member in it is the one
            // its removal ended; final if the first member's final epoch reached it.
            let id = r.id;
            let gid = group.clone();
            report.replay_removal_final = clients[0]
                .with_state(move |st| {
                    let last = st.final_epoch(&gid)?;
                    let now = st.group(&gid)?.mls.epoch().as_u64();
                    for e in (0..=now).rev() {
                        if let Some(ms) = st.members_at(&gid, e)?
                            && ms.iter().any(|m| m.id == id)
                        {
                            return Ok(last.is_some_and(|f| f >= e) && e < now);
                        }
                    }
                    Ok(false)
                })
                .await
                .unwrap_or(false);
        }
    }
    if let Some(o) = &outsider {
        report.outsider_published = o.published;
        let bad = crate::UserId::of_key(s.suite.signature_algorithm(), o.signer.public());
        for c in &clients {
            let has = c
                .members(&group)
                .await
                .is_ok_and(|ms| ms.iter().any(|m| m.id == bad));
            if has {
                report.outsider_states += 1;
            }
            for inv in c.invitations().await.unwrap_or_default() {
                if inv.inviter.id == bad {
                    report.outsider_invitations += 1;
                }
            }
        }
    }
    report.dropped = net.counters().1;
    report.epoch_authenticator = clients[0]
        .status(&group)
        .await
        .map(|st| st.epoch_authenticator)
        .unwrap_or_default();
    report.trace = net.trace();
    for c in clients {
        c.shutdown().await;
    }
    Ok(report)
}

async fn wait<F: AsyncFnMut() -> bool>(limit: Duration, mut f: F) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `Ok(epoch)` if every client that holds the group agrees on epoch, authenticator and
/// members, nothing is pending, and exactly the listed members hold the group.
async fn agreement(
    clients: &[crate::Client],
    names: &[crate::UserId],
    group: &crate::GroupId,
    skip: &BTreeSet<crate::UserId>,
) -> Result<u64, String> {
    let mut view: Option<(u64, Vec<u8>, Vec<crate::UserId>)> = None;
    let mut holders = Vec::new();
    for (c, name) in clients.iter().zip(names) {
        if skip.contains(name) {
            continue;
        }
        let Ok(st) = c.status(group).await else {
            continue;
        };
        if st.pending_commit {
            let i = names.iter().position(|n| n == name).unwrap_or(usize::MAX);
            return Err(format!("m{i} ({}) has commits pending", name.short()));
        }
        holders.push(*name);
        let v = (
            st.epoch,
            st.epoch_authenticator,
            st.members.into_iter().map(|m| m.id).collect(),
        );
        match &view {
            None => view = Some(v),
            Some(first) if *first != v => {
                let i = names.iter().position(|n| n == name).unwrap_or(usize::MAX);
                return Err(format!(
                    "m{i} ({}) at epoch {} differs from the first member's epoch {}",
                    name.short(),
                    v.0,
                    first.0
                ));
            }
            Some(_) => {}
        }
    }
    let Some((epoch, _, mut members)) = view else {
        return Err("nobody holds the group".into());
    };
    members.retain(|m| !skip.contains(m));
    members.sort();
    holders.sort();
    if members != holders {
        // Named as the simulation names its users (m0, m1, ...), with why a listed
        // member does not hold the group.
        let name = |u: &crate::UserId| {
            names
                .iter()
                .position(|n| n == u)
                .map_or_else(|| u.short(), |i| format!("m{i}"))
        };
        let mut why = Vec::new();
        for m in members.iter().filter(|m| !holders.contains(m)) {
            if let Some(i) = names.iter().position(|n| n == m) {
                let e = clients[i].status(group).await.err();
                why.push(format!(
                    "{} ({})",
                    name(m),
                    e.map_or_else(String::new, |e| e.to_string())
                ));
            }
        }
        let list = |v: &[crate::UserId]| v.iter().map(name).collect::<Vec<_>>().join(" ");
        return Err(format!(
            "member list [{}] but held by [{}]; listed, not holding: {}",
            list(&members),
            list(&holders),
            why.join(", ")
        ));
    }
    Ok(epoch)
}

/// The outsider of [`Scenario::outsider`]: an MLS identity and provider of its own, never
/// invited, that reads everything on the group topic and the users' inboxes and publishes
/// what an attacker on the network can: copies of members' payloads re-wrapped (trailing
/// bytes), application messages with a forged epoch-authenticator tag (a fork signal),
/// votes, requests for commits and rejoin requests with random contents, replays and
/// copies published again (`Wire::Again`, fresh nonces), and Welcomes into a group of its own that has the real group's id (for every user, with
/// their published key packages).
struct Outsider {
    provider: crate::engine::Prov,
    signer: pqmls_provider::SignatureKeyPair,
    credential: openmls::prelude::CredentialWithKey,
    transport: Arc<SimTransport>,
    inbox: Inbox,
    seen: Vec<Message>,
    suite: crate::Ciphersuite,
    published: u64,
}

impl Outsider {
    async fn new(
        net: &SimNetwork,
        suite: crate::Ciphersuite,
        topics: &[Topic],
        provider: crate::engine::Prov,
    ) -> crate::Result<Self> {
        use openmls::prelude::{BasicCredential, CredentialWithKey};
        let signer = pqmls_provider::SignatureKeyPair::generate_with_rng(
            suite.signature_algorithm(),
            &mut provider.pq_crypto().rng(),
        )
        .map_err(|e| crate::Error::Crypto(format!("{e:?}")))?;
        #[cfg(feature = "sim-rng")]
        let signer = {
            use openmls_traits::random::OpenMlsRand as _;
            let seed = provider
                .pq_crypto()
                .random_array::<32>()
                .map_err(|e| crate::Error::Crypto(format!("{e:?}")))?;
            signer.insecure_deterministic_signing_for_simulation(seed)
        };
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"outsider".to_vec()).into(),
            signature_key: signer.public().to_vec().into(),
        };
        let (transport, inbox) = net.attach();
        for t in topics {
            transport
                .subscribe(t)
                .await
                .map_err(crate::Error::Transport)?;
        }
        Ok(Self {
            provider,
            signer,
            credential,
            transport,
            inbox,
            seen: Vec::new(),
            suite,
            published: 0,
        })
    }

    /// One attack, drawn with `rng`.
    async fn act(
        &mut self,
        rng: &mut SimRng,
        net: &SimNetwork,
        group: &crate::GroupId,
        users: &[crate::UserId],
    ) {
        use futures::FutureExt as _;
        while let Some(Some(m)) = self.inbox.next().now_or_never() {
            if self.seen.len() >= 256 {
                self.seen.remove(0);
            }
            self.seen.push(m);
        }
        let topic = crate::wire::group_topic(&group.0);
        let on_topic: Vec<&Message> = self.seen.iter().filter(|m| m.topic == topic).collect();
        let pick = |rng: &mut SimRng, n: usize| usize::try_from(rng.below(n as u64)).unwrap_or(0);
        let mut out: Vec<(Topic, Vec<u8>)> = Vec::new();
        match rng.below(6) {
            // A member's payload re-wrapped: not the canonical encoding.
            0 if !on_topic.is_empty() => {
                let mut d = on_topic[pick(rng, on_topic.len())].data.clone();
                d.push(0);
                out.push((topic.clone(), d));
            }
            // A fork signal: a member's application message under a forged tag.
            1 => {
                let apps: Vec<(Vec<u8>,)> = on_topic
                    .iter()
                    .filter_map(|m| match crate::wire::Wire::decode(&m.data) {
                        Some(crate::wire::Wire::Application { mls, .. }) => Some((mls,)),
                        _ => None,
                    })
                    .collect();
                if !apps.is_empty() {
                    let (mls,) = apps[pick(rng, apps.len())].clone();
                    let mut auth = [0u8; crate::wire::AUTH_TAG_LEN];
                    for b in &mut auth {
                        *b = u8::try_from(rng.below(256)).unwrap_or(0);
                    }
                    out.push((
                        topic.clone(),
                        crate::wire::Wire::Application { auth, mls }.encode(),
                    ));
                }
            }
            // Sealed messages with random contents, under a tag seen in a real vote.
            2 => {
                let tag = on_topic
                    .iter()
                    .find_map(|m| match crate::wire::Wire::decode(&m.data) {
                        Some(crate::wire::Wire::Vote { tag, .. }) => Some(tag),
                        _ => None,
                    })
                    .unwrap_or([7; 16]);
                let junk: Vec<u8> = (0..200)
                    .map(|_| u8::try_from(rng.below(256)).unwrap_or(0))
                    .collect();
                let nonce = [u8::try_from(rng.below(256)).unwrap_or(0); 8];
                for w in [
                    crate::wire::Wire::Vote {
                        tag,
                        sealed: junk.clone(),
                    },
                    crate::wire::Wire::Lost {
                        tag,
                        sealed: junk.clone(),
                    },
                    crate::wire::Wire::Need {
                        tag,
                        nonce,
                        votes: true,
                        sent_ms: rng.next_u64(),
                        mac: [u8::try_from(rng.below(256)).unwrap_or(0); 16],
                    },
                ] {
                    out.push((topic.clone(), w.encode()));
                }
            }
            // A replay of anything seen, after gossip's de-duplication, and a copy of it
            // published again with a fresh nonce (`Wire::Again`), which no duplicate
            // window stops (a copy of an application message or a request is no payload).
            3 if !self.seen.is_empty() => {
                let m = self.seen[pick(rng, self.seen.len())].clone();
                net.replay(&m);
                self.published += 1;
                let nonce = [u8::try_from(rng.below(256)).unwrap_or(0); 8];
                out.push((m.topic.clone(), crate::wire::Wire::again(m.data, nonce)));
            }
            // A Welcome into the outsider's group with the real group's id.
            _ => {
                let user = users[pick(rng, users.len())];
                if let Some(w) = self.foreign_welcome(group, &user).await {
                    out.push((crate::wire::inbox_topic(&user), w));
                }
            }
        }
        for (t, d) in out {
            if self.transport.publish(&t, d).await.is_ok() {
                self.published += 1;
            }
        }
    }

    async fn foreign_welcome(
        &self,
        group: &crate::GroupId,
        user: &crate::UserId,
    ) -> Option<Vec<u8>> {
        use openmls::prelude::*;
        let key = crate::directory::key_package_key(user, crate::wire::Slot::LastResort);
        let blob = self.transport.get(key.clone()).await.ok()??;
        let entry =
            crate::directory::verify(self.provider.crypto(), &key, &blob, crate::engine::now_ms())
                .ok()?;
        let MlsMessageBodyIn::KeyPackage(kp) =
            <MlsMessageIn as tls_codec::Deserialize>::tls_deserialize_exact(&entry.value)
                .ok()?
                .extract()
        else {
            return None;
        };
        let kp = kp
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .ok()?;
        let id = openmls::group::GroupId::from_slice(&group.0);
        if let Ok(Some(mut old)) = MlsGroup::load(self.provider.storage(), &id) {
            old.delete(self.provider.storage()).ok()?;
        }
        let mut g = MlsGroup::builder()
            .with_group_id(id)
            .ciphersuite(self.suite)
            .use_ratchet_tree_extension(true)
            .with_capabilities(crate::engine::capabilities(self.suite))
            .lifetime(sim_lifetime())
            .build(&self.provider, &self.signer, self.credential.clone())
            .ok()?;
        let (_, welcome, _) = g.add_members(&self.provider, &self.signer, &[kp]).ok()?;
        let mls = tls_codec::Serialize::tls_serialize_detached(&welcome).ok()?;
        Some(crate::wire::Wire::Welcome { mls }.encode())
    }
}

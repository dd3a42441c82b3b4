//! Client configuration.

use std::path::PathBuf;
use std::time::Duration;

use openmls::prelude::Ciphersuite;

/// The default cipher suite: MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 (0x004F),
/// X-Wing for HPKE, Ed25519 signatures.
pub const DEFAULT_SUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

/// Lifetime of our key packages by default: OpenMLS's default, 84 days.
pub(crate) const KEY_PACKAGE_LIFETIME_SECS: u64 = 84 * 24 * 3600;

/// File name of the client's database in its data directory.
pub const DATABASE_FILE: &str = "pqmls.sqlite3";

/// Configuration of a [`crate::Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The user's display name, carried in their MLS credential: a label others see, not
    /// an identity (a user *is* their identity key, see [`crate::UserId`]). 1 to 64
    /// letters, digits and `-_.@+`.
    pub name: String,
    /// Where the database lives (`pqmls.sqlite3`). `None` keeps everything in memory (for
    /// tests and simulations): nothing survives the client.
    pub data_dir: Option<PathBuf>,
    /// The key of the data directory's database, which is encrypted as a whole (see
    /// [`crate::DatabaseKey`]); required with a [`Config::data_dir`].
    pub database_key: Option<crate::DatabaseKey>,
    /// How long application messages are kept in the history (by the time they were sent);
    /// older ones are deleted when the client opens, then by its timer every tenth of this
    /// time (at least every [`Config::tick`], at most every minute), so a message stays at
    /// most this long plus that period; [`crate::Client::expire_history`] applies it at
    /// once. `None` keeps them until deleted.
    pub history_retention: Option<Duration>,
    /// The cipher suite of the identity and of the groups this client creates.
    pub suite: Ciphersuite,
    /// How many one-time key packages are kept in the directory (besides the last-resort one).
    pub one_time_key_packages: u32,
    /// How long a member collects competing commits for its epoch before it merges the
    /// winner by the ordering rule (`order.rs`: removals first, then a per-epoch priority
    /// no committer can choose). Longer means fewer forks to repair.
    pub settle: Duration,
    /// How often each member refreshes its leaf (post-compromise security); `None` only on demand.
    pub self_update_interval: Option<Duration>,
    /// How often every group catches up from the store nodes even without a sign of a gap;
    /// `None` only when a gap is seen (and at start).
    pub sync_interval: Option<Duration>,
    /// The shortest time between two catch-ups of one group triggered by gaps.
    pub sync_backoff: Duration,
    /// Largest application message body, in bytes.
    pub max_message_size: usize,
    /// How many past epochs are kept to move to another branch after a fork, and to decrypt
    /// late messages. Their key material is deleted once they fall out of the window, so
    /// forward secrecy for an epoch starts this many epochs later.
    pub rollback_window: u64,
    /// How many past epochs' application-message secrets OpenMLS keeps in the current
    /// state to read late messages (its `max_past_epochs`), at most
    /// [`Config::rollback_window`]. Each is kept with the epoch's member list (every
    /// member's signature and encryption key), and OpenMLS rewrites the whole store on
    /// every merge and every message it decrypts, so in large post-quantum groups this is
    /// most of the storage cost of a commit (BENCHMARKS.md); and each is key material
    /// that forward secrecy waits for. Messages of older epochs are read only while a
    /// snapshot of a state that holds their secrets is kept. Default 16. Fewer make
    /// commits in large groups cheaper but lose late messages: at 50 members on 0x004F a
    /// commit reached every member in about half the time with 4 as with 16, while in
    /// the 400-trial simulation (an epoch about every second) 4 lost 47 of 144 140
    /// deliveries against 40 with 16 among honest members, and 8.8 % against 3.6 % of
    /// deliveries with two members partitioned for 10 s, with one more silent fork
    /// (BENCHMARKS.md).
    pub past_epoch_secrets: u64,
    /// How long after entering an epoch its application-message secrets may stay in the
    /// current state once we left it: past it the timer deletes them (OpenMLS
    /// `PastEpochDeletion::older_than_duration`, on the system clock), so forward secrecy
    /// for late messages is bounded in time as well as by [`Config::past_epoch_secrets`].
    /// A message of such an epoch that arrives later is unreadable.
    pub past_epoch_secrets_max_age: Duration,
    /// How long after leaving an epoch its snapshot is kept when the votes have not made
    /// its ending final: the bound in time on how long a state that could still move to
    /// another branch keeps that epoch's key material. Past it, a final commit this client
    /// cannot reach gives [`crate::Event::Unrecoverable`]. Final epochs' snapshots are
    /// deleted at once. The first open epoch's snapshot follows
    /// [`Config::open_epoch_horizon`] instead.
    pub fork_horizon: Duration,
    /// How long after leaving it the snapshot of the *first open* epoch (the oldest whose
    /// ending is not final: finality waits there) is kept, instead of
    /// [`Config::fork_horizon`]. Round 2 of a split vote needs every commit voted for in
    /// round 1 processed, and the last round-1 vote may come with a commit from a member
    /// that was away longer than the fork horizon; with every snapshot of that epoch gone
    /// nobody could choose, the epoch would stay open for good, and no Welcome of a losing
    /// add in it would ever be withdrawn (a silent fork). Kept only for the round-2 choice
    /// and for a move to the final commit, never for a move on priority past the fork
    /// horizon. One snapshot per group at most; the bound on forward secrecy for that
    /// epoch is this duration.
    pub open_epoch_horizon: Duration,
    /// Simulation only (an adversary of the ordering): each self-update commit is made
    /// this many times and the one with the smallest commit hash is published, which is
    /// how a member could steer the smallest-hash rule of earlier versions. 1: honest.
    #[doc(hidden)]
    pub grind: u32,
    /// How long a group is kept after a commit removed us, in case a branch move undoes
    /// the removal. [`crate::Event::Removed`] is reported when it ends.
    pub removal_grace: std::time::Duration,
    /// Which invitations are joined without asking: the others become pending
    /// invitations ([`crate::Event::Invited`]) that the application accepts or declines.
    pub invitations: InvitePolicy,
    /// How long a published key package is used before it is replaced by a fresh one (its
    /// private key is kept for [`Config::key_package_grace`] more, for Welcomes already on
    /// their way). Must be well below the key packages' 84-day lifetime.
    pub key_package_rotation: Duration,
    /// How long the private key of a replaced (rotated or claimed) key package is kept.
    pub key_package_grace: Duration,
    /// Caps on what others can make this client store or compute.
    pub limits: Limits,
    /// Period of the client's timer (commit settling, retries, self-updates).
    pub tick: Duration,
    /// Test hook: stop the client dead at a point, as a crash would.
    #[doc(hidden)]
    pub fail_point: Option<FailPoint>,
    /// How long our key packages are valid from their creation on our wall clock (with an
    /// hour's margin before it, as OpenMLS does). 84 days, OpenMLS's default; the
    /// simulation, whose wall clock is fixed ([`Config::virtual_wall_clock_ms`]), makes
    /// them valid long enough for OpenMLS's own check against the real clock.
    pub(crate) key_package_lifetime: Duration,
    /// Simulation only: the wall clock reads this (ms since the Unix epoch) when the client
    /// opens and then advances with tokio's clock (virtual in the simulation), so that a
    /// seeded run does not depend on when it runs. `None`: the system's clock.
    pub(crate) virtual_wall_clock_ms: Option<u64>,
    /// **Insecure, simulation only** (feature `sim-rng`): every random draw of this client
    /// (its identity key, MLS's keys, encapsulations and nonces, the SDK's ids and nonces,
    /// hedged signatures) comes from ChaCha20 streams of this seed instead of the operating
    /// system, so that a simulated run replays exactly. Set only by [`crate::sim`].
    #[cfg(feature = "sim-rng")]
    pub(crate) insecure_rng_seed: Option<[u8; 32]>,
}

impl Config {
    /// A configuration for `name` with the defaults: in memory, suite 0x004F, 4 one-time
    /// key packages rotated weekly, 250 ms settle time, a self-update every 24 hours,
    /// 64 KiB messages, invitations from contacts joined and the others held for consent.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_dir: None,
            database_key: None,
            history_retention: None,
            suite: DEFAULT_SUITE,
            one_time_key_packages: 4,
            settle: Duration::from_millis(250),
            self_update_interval: Some(Duration::from_secs(24 * 3600)),
            sync_interval: Some(Duration::from_secs(60)),
            sync_backoff: Duration::from_millis(500),
            max_message_size: 64 * 1024,
            rollback_window: 16,
            past_epoch_secrets: 16,
            past_epoch_secrets_max_age: Duration::from_secs(600),
            fork_horizon: Duration::from_secs(600),
            open_epoch_horizon: Duration::from_secs(3600),
            grind: 1,
            removal_grace: Duration::from_secs(30),
            invitations: InvitePolicy::Contacts,
            key_package_rotation: Duration::from_secs(7 * 24 * 3600),
            key_package_grace: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            tick: Duration::from_millis(20),
            fail_point: None,
            key_package_lifetime: Duration::from_secs(KEY_PACKAGE_LIFETIME_SECS),
            virtual_wall_clock_ms: None,
            #[cfg(feature = "sim-rng")]
            insecure_rng_seed: None,
        }
    }

    /// Keeps the database in `dir` (created if missing).
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keys the data directory's database with `key`.
    pub fn with_database_key(mut self, key: crate::DatabaseKey) -> Self {
        self.database_key = Some(key);
        self
    }

    /// Uses `suite` for the identity and new groups.
    pub fn with_suite(mut self, suite: Ciphersuite) -> Self {
        self.suite = suite;
        self
    }
}

/// Which invitations a client joins without asking the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvitePolicy {
    /// Join every invitation at once (simulations, demos, bots).
    Everyone,
    /// Join invitations from contacts ([`crate::Client::add_contact`]) at once; hold the
    /// others as pending invitations.
    Contacts,
    /// Hold every invitation as pending.
    Nobody,
}

/// Caps on what anyone who can publish on a group's topic or a user's inbox (members or
/// not) can make a client store or compute. The defaults fit groups of hundreds; every
/// cap is per group unless it says otherwise.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Commits and messages for epochs further than this beyond ours are not kept yet:
    /// they are left for a later catch-up from the store nodes.
    pub future_epochs: u64,
    /// Commit candidates kept per epoch.
    pub candidates_per_epoch: usize,
    /// Commits kept (all epochs of the rollback window and the future window).
    pub commits: usize,
    /// Bytes of commits kept.
    pub commit_bytes: usize,
    /// Messages kept for a later epoch or another branch.
    pub pending: usize,
    /// Bytes of those messages.
    pub pending_bytes: usize,
    /// Welcomes kept aside for a group we hold (each from a member we know).
    pub kept_welcomes: usize,
    /// Pending invitations, over all groups.
    pub invitations: usize,
    /// Pending invitations from one inviter.
    pub invitations_per_inviter: usize,
    /// Withdrawals (`Void`s) kept for Welcomes that may still arrive, over all groups.
    pub voids: usize,
    /// Transport ids of handled payloads kept for de-duplication, over all topics (the
    /// oldest are forgotten first, in batches of up to 256; catch-up cursors, the epoch
    /// windows and the message uids make a forgotten id harmless).
    pub seen: usize,
    /// Snapshot restores (reading a late message of a past epoch, or trying a competing
    /// commit for a past epoch) per second and group, with a burst of four times as many;
    /// above it the payload is left for a later catch-up.
    pub past_reads_per_sec: u32,
    /// Welcomes processed per minute (each costs a key-package decryption); above it they
    /// are left for a later catch-up.
    pub welcomes_per_min: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            future_epochs: 64,
            candidates_per_epoch: 32,
            commits: 1024,
            commit_bytes: 64 << 20,
            pending: 2048,
            pending_bytes: 16 << 20,
            kept_welcomes: 4,
            invitations: 32,
            invitations_per_inviter: 2,
            voids: 256,
            seen: 200_000,
            past_reads_per_sec: 16,
            welcomes_per_min: 60,
        }
    }
}

/// Where a client can be stopped dead by the test hook [`Config::fail_point`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// `send`: the message is encrypted and in the outbox, not yet published.
    SendBeforePublish,
    /// `send`: published, but not yet removed from the outbox.
    SendAfterPublish,
    /// A commit of ours is in the outbox, not yet published.
    CommitBeforePublish,
    /// While merging the winning commit, before the transaction commits.
    MergeBeforeCommit,
    /// A received application message is being stored, before the transaction commits.
    ReceiveBeforeCommit,
}

//! Client configuration.

use std::path::PathBuf;
use std::time::Duration;

use openmls::prelude::Ciphersuite;

/// The default cipher suite: MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 (0x004F),
/// X-Wing for HPKE, Ed25519 signatures.
pub const DEFAULT_SUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

/// File name of the client's database in its data directory.
pub const DATABASE_FILE: &str = "pqmls.sqlite3";

/// Configuration of a [`crate::Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The user's name: the identity in their MLS credential, how others invite them, and
    /// the name of their directory entries and inbox. 1 to 64 bytes of printable UTF-8.
    pub name: String,
    /// Where the database lives (`pqmls.sqlite3`). `None` keeps everything in memory (for
    /// tests and simulations): nothing survives the client.
    pub data_dir: Option<PathBuf>,
    /// The cipher suite of the identity and of the groups this client creates.
    pub suite: Ciphersuite,
    /// How many one-time key packages are kept in the directory (besides the last-resort one).
    pub one_time_key_packages: u32,
    /// How long a member collects competing commits for its epoch before it merges the
    /// winner (the one with the smallest commit hash). Longer means fewer forks to repair.
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
    /// How long a group is kept after a commit removed us, in case a branch move undoes
    /// the removal. [`crate::Event::Removed`] is reported when it ends.
    pub removal_grace: std::time::Duration,
    /// After how long without progress a member that sees others ahead of it asks to be
    /// removed and invited again (a signed request on the group topic). `None` (the
    /// default) turns the request off: in the simulation it did not improve convergence
    /// (see sdk/DESIGN.md), so it stays experimental.
    pub rejoin_after: Option<Duration>,
    /// Period of the client's timer (commit settling, retries, self-updates).
    pub tick: Duration,
    /// Test hook: stop the client dead at a point, as a crash would.
    #[doc(hidden)]
    pub fail_point: Option<FailPoint>,
}

impl Config {
    /// A configuration for `name` with the defaults: in memory, suite 0x004F, 4 one-time
    /// key packages, 250 ms settle time, a self-update every 24 hours, 64 KiB messages.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_dir: None,
            suite: DEFAULT_SUITE,
            one_time_key_packages: 4,
            settle: Duration::from_millis(250),
            self_update_interval: Some(Duration::from_secs(24 * 3600)),
            sync_interval: Some(Duration::from_secs(60)),
            sync_backoff: Duration::from_millis(500),
            max_message_size: 64 * 1024,
            rollback_window: 16,
            removal_grace: Duration::from_secs(30),
            rejoin_after: None,
            tick: Duration::from_millis(20),
            fail_point: None,
        }
    }

    /// Keeps the database in `dir` (created if missing).
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Uses `suite` for the identity and new groups.
    pub fn with_suite(mut self, suite: Ciphersuite) -> Self {
        self.suite = suite;
        self
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

//! pqmls: end-to-end encrypted, post-quantum group chat over a peer-to-peer network, with
//! no server.
//!
//! A [`Client`] is one user: an MLS identity (a signature key and a credential naming the
//! user, created on first run and kept in a SQLite file), its groups, and a transport
//! (a libp2p [`pqmls_transport::Node`], or the [`sim`] network in tests). Groups use the
//! post-quantum suite MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 (0x004F) unless the
//! [`Config`] names another; every suite of [`pqmls_provider`] works, ML-DSA ones included.
//!
//! # Example
//!
//! ```
//! use pqmls::{Client, Config, DatabaseKey, Event};
//! use pqmls_transport::node::Config as NodeConfig;
//! use pqmls_transport::{Node, store};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # tokio::time::timeout(std::time::Duration::from_secs(60), async {
//! // A store node keeps the key-package directory and history for offline members.
//! // (`store_node` adds the SDK's checks: only canonical payloads, only signed entries.)
//! let (store, _) = Node::start(pqmls::store_node(NodeConfig::loopback(), dir.path().join("store"), store::Config::default())?).await?;
//! let bootstrap = store.listen_addrs().await?.remove(0);
//! let node = || NodeConfig::loopback().with_bootstrap(bootstrap.clone());
//!
//! // Two users, each with a data directory that keeps identity and groups across restarts.
//! // A user is their key: `id()` is what others invite them by (exchanged out of band, and
//! // checked with `safety_number`); the name is only a label.
//! // Each database is encrypted with a key the application keeps (or a passphrase).
//! let config = |name: &str| {
//!     Config::new(name)
//!         .with_data_dir(dir.path().join(name))
//!         .with_database_key(DatabaseKey::from_bytes([7; 32])) // a real key, in real use
//! };
//! let alice = Client::start(config("alice"), node()).await?;
//! let bob = Client::start(config("bob"), node()).await?;
//! bob.add_contact(&alice.id(), "alice").await?; // invitations from contacts join at once
//! let mut bob_events = bob.events();
//! # pqmls::wait_for_key_packages(&alice, &bob.id()).await?;
//!
//! let group = alice.create_group().await?;
//! alice.invite(&group, &bob.id()).await?; // bob joins from the Welcome, automatically
//! loop {
//!     if let Some(Event::Joined { .. }) = bob_events.recv().await { break }
//! }
//! # pqmls::wait_for_mesh(&alice, &group).await?;
//! alice.send(&group, b"hello, post-quantum world").await?;
//! loop {
//!     if let Some(Event::Message(m)) = bob_events.recv().await {
//!         assert_eq!(m.body, b"hello, post-quantum world");
//!         break;
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).await??;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Identity.** A user is identified by their identity signature key ([`UserId`]); the
//!   display name in their credential is a label. Invitations, removals, directory entries
//!   and inboxes are keyed by the id.
//! - **Key packages.** Each client keeps [`Config::one_time_key_packages`] one-time key
//!   packages and one last-resort key package in the directory of the store nodes, under its
//!   id, each entry signed by its identity key (see [`directory_validator`]). An inviter
//!   claims a one-time one and falls back to the last-resort one; the owner replaces
//!   consumed and claimed ones and rotates them weekly.
//! - **Consent.** Invitations are joined at once or held for the application to accept,
//!   per [`Config::invitations`].
//! - **Waku.** [`Client::start_waku`] (or [`Client::open`] on a [`WakuTransport`]) runs the
//!   same client on the wire protocols of the Logos Messaging network: relay (or, for a
//!   light client, lightpush and filter) for traffic, store v3 for history and key
//!   packages, segmentation for payloads above the relay limit (see [`net_waku`]).
//! - **Topics.** Each group has a gossip topic (a hash of its id); each user an inbox topic
//!   (a hash of their id) where Welcomes arrive. Store nodes follow every topic their peers
//!   subscribe to.
//! - **Commit ordering without a server.** See the `engine` module: competing commits for an
//!   epoch are resolved by the smallest commit hash after a settle time, losers are
//!   committed again, future-epoch messages are buffered, and forks (detected by epoch
//!   authenticators carried with application messages) are repaired by moving to the
//!   winning branch from a snapshot.
//! - **Crash safety.** Every step is one SQLite transaction: MLS state, received messages,
//!   and the outbox of what must be published. The outbox is published after the
//!   transaction and re-published after a restart; receivers drop duplicates.
//! - **Catch-up.** At start, every minute, and whenever a gap is seen (a message for a
//!   later epoch), the client reads each topic's history from the store nodes after a saved
//!   cursor.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod at_rest;
mod client;
mod config;
mod db;
mod directory;
mod engine;
mod error;
mod event;
mod identity;
mod net;
pub mod net_waku;
mod offline;
mod order;
pub mod sim;
mod trust;
mod wire;

use std::fmt;

pub use at_rest::{DatabaseKey, SALT_FILE};
pub use client::{Client, gossip_validator, store_node};
pub use config::{Config, DATABASE_FILE, DEFAULT_SUITE, FailPoint, InvitePolicy, Limits};
pub use directory::{DirectoryRule, directory_validator};
pub use engine::intents::MAX_ADDS_PER_COMMIT;
pub use error::{Error, Result};
pub use event::{Event, Events, Invitation, ReceivedMessage};
pub use identity::{Member, UserId, safety_number};
pub use net::{Inbox, Transport};
pub use net_waku::WakuTransport;
pub use offline::{DataDirInfo, GroupInfo, IdentityInfo, fingerprint, init_identity, inspect};
pub use openmls::prelude::Ciphersuite;

/// A group's id: 16 random bytes chosen by its creator. Displayed and parsed as hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub(crate) Vec<u8>);

impl GroupId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An id from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        GroupId(bytes.to_vec())
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

impl std::str::FromStr for GroupId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("not a hex group id: {s:?}"));
        if s.is_empty()
            || !s.len().is_multiple_of(2)
            || s.len() > 128
            || !s.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(GroupId)
            .ok_or_else(bad)
    }
}

/// A snapshot of one group as this client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStatus {
    /// The current epoch.
    pub epoch: u64,
    /// The epoch authenticator (RFC 9420 §8.7): equal for members with the same view.
    pub epoch_authenticator: Vec<u8>,
    /// Members in leaf order.
    pub members: Vec<Member>,
    /// Whether commits are waiting to be ordered and merged.
    pub pending_commit: bool,
    /// The epoch whose final commit this client cannot reach, while it waits to be
    /// added again ([`Event::Unrecoverable`]); `None` when it follows the group.
    pub lost_at: Option<u64>,
}

/// Counters of what a client handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Application messages from others delivered as events.
    pub delivered: u64,
    /// Payloads or application messages seen twice and dropped.
    pub duplicates: u64,
    /// Payloads that are not well-formed pqmls or MLS messages.
    pub malformed: u64,
    /// Payloads for unknown topics or of unused kinds.
    pub ignored: u64,
    /// Payloads left for a later catch-up (a cap or budget was full, or too far ahead).
    pub deferred: u64,
    /// Messages MLS refused (bad signature, wrong epoch secrets, replay).
    pub rejected: u64,
    /// Messages kept for a later epoch or another branch.
    pub buffered: u64,
    /// Commits merged.
    pub commits_merged: u64,
    /// Commit candidates found invalid.
    pub commits_rejected: u64,
    /// Unauthenticated signs of a fork (an envelope's epoch-authenticator tag that is not
    /// ours, commits for our epoch none of which is valid): they only trigger a catch-up.
    pub fork_hints: u64,
    /// Forks proven by a valid commit for an epoch where we merged another one.
    pub forks_detected: u64,
    /// Moves to a winning branch.
    pub forks_recovered: u64,
    /// Votes cast on which commit ends an epoch.
    pub votes_cast: u64,
    /// Epochs whose ending became final here.
    pub epochs_final: u64,
    /// Own commits published again because they were not final after a while.
    pub republished: u64,
    /// Requests sent for a commit we missed (it ended our epoch; the group went on).
    pub needs_sent: u64,
    /// Commits published again for a member that asked for one.
    pub needs_answered: u64,
    /// Requests for a commit not answered because their MAC did not verify under the
    /// epoch's key (not from a member of it) or their clock was too far from ours.
    pub needs_refused: u64,
    /// Payloads published again (answers, own commits not final, Welcomes, withdrawals),
    /// each wrapped with a fresh nonce so that no transport refuses it as a duplicate.
    pub published_again: u64,
    /// Final commits this client could not reach ([`Event::Unrecoverable`]).
    pub unrecoverable: u64,
    /// Rejoin requests we published (we could not follow a group).
    pub rejoins_asked: u64,
    /// Abstentions of other members we forwarded to members who joined after they were
    /// made (`Wire::Lost` sealed again under a later epoch's key).
    pub abstentions_forwarded: u64,
    /// Members seen voting for two commits in one round of one epoch (each member and
    /// epoch counted once): an honest member never does.
    pub equivocations_seen: u64,
    /// Rejoin requests of others that we turned into a re-add.
    pub rejoins_honoured: u64,
    /// Groups we got back into after losing them ([`Event::Rejoined`]).
    pub rejoined: u64,
    /// Epochs where our own commit competed with commits of other members at our
    /// settle time (contests, as this client saw them).
    pub contests: u64,
    /// Of those, the ones our commit won.
    pub contests_won: u64,
    /// The sum over contests of the fair share, 1/(number of authors), in thousandths.
    pub contests_fair_milli: u64,
    /// Own messages re-sent after a branch move or a re-invitation.
    pub resent: u64,
    /// Payloads published.
    pub published: u64,
    /// Publish attempts the transport refused (retried later).
    pub publish_failures: u64,
    /// Size in bytes of the last key package this client generated (as published).
    pub key_package_bytes: u64,
    /// Size in bytes of the last commit this client made (gossip payload).
    pub last_commit_bytes: u64,
    /// Size in bytes of the last Welcome this client sent (gossip payload).
    pub last_welcome_bytes: u64,
    /// Size in bytes of the last application message this client sent (gossip payload).
    pub last_message_bytes: u64,
    /// Real time, in microseconds, of the last settle step that merged a commit: the
    /// candidates of the epoch processed, the pre-merge snapshot, the merge, what follows
    /// it and its SQLite transaction (the machine's wall clock, whatever else ran meanwhile;
    /// for measurements such as `examples/commit_latency.rs`).
    pub last_merge_micros: u64,
}

/// Waits (up to 20 s) until the directory holds a key package for `user`: for examples
/// and tests, where a fresh client's key packages may not have reached the store yet.
///
/// # Errors
/// [`Error::NoKeyPackage`] on timeout.
#[doc(hidden)]
pub async fn wait_for_key_packages(client: &Client, user: &UserId) -> Result<()> {
    client.wait_for_key_packages(user).await
}

/// Waits (up to 20 s) until the group's topic has gossip peers: for examples and tests.
///
/// # Errors
/// [`Error::Transport`] on timeout.
#[doc(hidden)]
pub async fn wait_for_mesh(client: &Client, group: &GroupId) -> Result<()> {
    client.wait_for_mesh(group).await
}

//! The client's state machine: groups, commit ordering, fork repair, message handling.
//!
//! Everything here is synchronous and runs under the client's lock, one SQLite transaction
//! per step ([`State::tx`]). What has to go to the network is written to the outbox inside
//! the same transaction, and what the async side must do next (subscribe, catch up, fetch a
//! key package) is collected in [`Todo`].
//!
//! The modules, by concern:
//! - [`key_packages`]: our key packages in the directory (signed, rotated, replaced);
//! - [`intents`]: operations we want committed (add, remove, update, leave) and our commits;
//! - [`inbound`]: payloads from the network, application messages, buffering, history;
//! - [`joins`]: Welcomes, invitations and consent, withdrawals (`Void`);
//! - [`ordering`]: commit candidates, the merge rule, snapshots and branch moves;
//! - [`finality`]: epoch keys, votes, finality, re-publishing and requests for missing commits;
//! - [`recovery`]: rejoin requests of members that cannot follow the group, and re-adds.
//!
//! The safety decisions are pure functions in [`crate::trust`].

mod finality;
mod inbound;
pub(crate) mod intents;
mod joins;
mod key_packages;
mod ordering;
mod recovery;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::random::OpenMlsRand;
use pqmls_provider::{SignatureKeyPair, SqliteStorage};
use pqmls_transport::store::Cursor;
use pqmls_transport::{MessageId, Topic};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::time::Instant;

use crate::config::{Config, FailPoint};
use crate::db::{to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::Event;
use crate::identity::{Member, UserId};
use crate::order;
use crate::trust::Budget;
use crate::wire;
use crate::{GroupId, Stats};

/// The provider the client runs on.
pub(crate) type Prov = pqmls_provider::Provider<SqliteStorage>;

/// Work for the async side, collected while the lock is held.
#[derive(Debug, Default)]
pub(crate) struct Todo {
    pub subscribe: Vec<Topic>,
    pub unsubscribe: Vec<Topic>,
    /// Groups to catch up from the store nodes.
    pub sync: BTreeSet<GroupId>,
    /// Key packages were consumed: refresh the directory.
    pub key_packages: bool,
    /// Add intents that need a key package: (intent id, user).
    pub fetch: Vec<(i64, UserId)>,
    /// Something was written to the outbox.
    pub flush: bool,
}

/// What handling one inbound payload came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled (used, kept, or dropped as useless): marked as seen.
    Done,
    /// Not kept now because a cap or budget is full, or it is too far ahead: not marked as
    /// seen, so a later catch-up from the store nodes brings it again, and the catch-up
    /// cursor does not move past it.
    Deferred,
}

/// One group this client is in.
pub(crate) struct Group {
    pub mls: MlsGroup,
    pub topic: Topic,
    /// When the current epoch's candidates are merged.
    pub settle_at: Option<Instant>,
    /// The epoch for which a fork was last reported.
    pub fork_reported: Option<u64>,
    /// The epoch in which we last asked to be removed.
    pub leave_sent: Option<u64>,
    /// When a commit removing us was merged (the group is kept for
    /// [`Config::removal_grace`] in case a branch move undoes it).
    pub removed_at: Option<Instant>,
    /// Snapshot restores allowed (see [`crate::config::Limits::past_reads_per_sec`]).
    pub past_reads: Budget,
    /// Buffered messages are waiting for budget to be replayed.
    pub replay_due: bool,
    /// The epoch at which we last reported that we cannot follow the group.
    pub unrecoverable: Option<u64>,
}

/// The client's state, behind its lock.
pub(crate) struct State {
    pub provider: Prov,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
    /// Our display name.
    pub name: String,
    /// Our id (from our identity key).
    pub id: UserId,
    pub config: Config,
    pub groups: BTreeMap<GroupId, Group>,
    /// Group topics to group ids.
    pub topics: BTreeMap<Topic, GroupId>,
    pub inbox: Topic,
    pub events: Vec<Event>,
    pub todo: Todo,
    pub stats: Stats,
    /// Set when a fail point was hit: the client is dead.
    pub crashed: bool,
    /// A fail point reached inside a step, to fire once the step has committed.
    pub armed: Option<FailPoint>,
    /// Inside [`State::batch`]: a step is a savepoint of the batch's transaction.
    pub in_batch: bool,
    /// Test hook: added to the wall clock (key-package rotation and expiry).
    pub clock_skew_ms: u64,
    /// Welcomes processed (see [`crate::config::Limits::welcomes_per_min`]).
    pub welcome_budget: Budget,
    /// (contact label, new id) pairs already reported as a key change.
    pub key_changes: BTreeSet<(String, UserId)>,
    /// Seen ids recorded since the last pruning.
    pub seen_marks: usize,
    /// Own commits merged but not final yet: when each was last published, and how
    /// often (see `finality::republish_own`).
    pub republished: BTreeMap<[u8; 32], (Instant, u32)>,
    /// Add intents of `invite_many` batches whose key package is being fetched: a batch
    /// waits for all of its rows and is driven again after each fetch, which must not
    /// queue the others again (`intents::ready_add`; the client clears each id when its
    /// fetch ended).
    pub fetching: BTreeSet<i64>,
    /// Member records decoded, by group and epoch, with the text they were decoded from:
    /// read for every vote (`finality::epoch_members`), and used only while the stored
    /// text is the same, so a rewrite or a rollback can never leave a stale list.
    pub member_records: MemberRecords,
    /// When the timer last looked for own commits to publish again and for missing
    /// commits (`Inner::tick`): their delays are several settle times, so once per settle
    /// time is enough.
    pub last_followup: Option<Instant>,
    /// Per group, the newest past epoch whose message secrets the timer had OpenMLS
    /// delete for age (`finality::expire_past_secrets`): each deletion rewrites the
    /// group's secrets store, so it runs once per epoch that comes of age.
    pub past_secrets_cleared: BTreeMap<GroupId, u64>,
    /// When this state was opened, on the tokio clock (budgets count from it).
    pub origin: Instant,
    /// The wall clock then (milliseconds since the Unix epoch).
    pub origin_wall_ms: u64,
    /// Our requests for missing commits: (group, epoch) -> when we last asked, and how
    /// often (see `finality::ask_missing`).
    pub needs: BTreeMap<(GroupId, u64), (Instant, u32)>,
    /// When the commit we merged ending (group, epoch) last went by on the topic, as a
    /// copy or as itself, ours or another's, and when we last published that epoch's
    /// votes with it (our own answer only: a copy, which anyone can make, never renews
    /// it): `finality::on_need` does not answer again within a gap what everyone got.
    pub aired: BTreeMap<(GroupId, u64), (Instant, Option<Instant>)>,
    /// When we last asked members for the votes on an epoch of the group: once per gap
    /// (`finality::ask_missing`).
    pub votes_asked: BTreeMap<GroupId, Instant>,
    /// Per group, when the current gap of our answers began and how many requests we
    /// answered in it (`finality::NEED_ANSWERS_PER_GAP`).
    pub answers: BTreeMap<GroupId, (Instant, u32)>,
    /// Welcomes refused or declined lately, by hash, and when (`joins::REFUSED_FOR`):
    /// copies of them take no decryption token.
    pub refused_welcomes: BTreeMap<[u8; 32], Instant>,
    /// When we first asked the stores (a catch-up) for the votes on an undecided epoch:
    /// the members are asked only a gap later (`finality::ask_missing`).
    pub votes_from_stores: BTreeMap<(GroupId, u64), Instant>,
    /// When a vote from a voter (and round) new to us last arrived for an open epoch (see
    /// `finality::ask_missing`: an epoch whose votes still come in is not asked for).
    pub vote_progress: BTreeMap<(GroupId, u64), Instant>,
    /// Our rejoin requests, per group we cannot follow (see `recovery::ask_rejoin`).
    pub lost_asks: BTreeMap<GroupId, recovery::LostAsk>,
    /// Others' rejoin requests we honour at our turn (one per group and requester, so
    /// bounded by the members listed).
    pub rejoins: BTreeMap<(GroupId, UserId), recovery::PendingRejoin>,
}

/// A short hex prefix of a hash, for logs.
pub(crate) fn short(hash: &[u8]) -> String {
    hash.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The display name in a credential (basic credentials carry it as their content).
pub(crate) fn credential_name(c: &Credential) -> String {
    String::from_utf8_lossy(c.serialized_content()).into_owned()
}

pub(crate) fn ser(m: &MlsMessageOut) -> Result<Vec<u8>> {
    m.tls_serialize_detached().map_err(mls)
}

/// Leaf capabilities that name the suite (OpenMLS's defaults list only some suites) and
/// the last-resort extension, which a last-resort key package carries (RFC 9420 §13.4:
/// extensions a key package uses must be listed in its leaf's capabilities; without it
/// inviters refuse it with `UnsupportedExtension`).
pub(crate) fn capabilities(suite: Ciphersuite) -> Capabilities {
    Capabilities::new(
        None,
        Some(&[suite]),
        Some(&[ExtensionType::LastResort]),
        None,
        None,
    )
}

/// How far out of order, and how far ahead, a sender's messages of one epoch may arrive
/// and still be read (RFC 9420 §9.1 leaves this to the application; OpenMLS's default is
/// 5 behind and 1000 ahead). A member re-sends its messages of a dead branch in a burst,
/// and gossip delivers a burst in any order: with 5, the receivers refused most of a burst
/// for good (`TooDistantInThePast`, the lost deliveries of the simulation). Keeping up to
/// 1000 skipped keys per sender costs at most about 50 KB per sender and epoch.
pub(crate) fn ratchet_config() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(1000, 10_000)
}

/// See [`State::member_records`].
pub(crate) type MemberRecords =
    std::cell::RefCell<BTreeMap<(Vec<u8>, u64), (String, EpochMembers)>>;

/// An epoch's members by leaf, decoded from our record of it and shared from the cache.
pub(crate) type EpochMembers = std::sync::Arc<Vec<(u32, Member)>>;

/// At most this many decoded member records are kept (a few epochs of a few groups).
pub(crate) const MEMBER_RECORDS_KEPT: usize = 64;

/// A leaf of an epoch's record for `pqmls_epochs`: index, owner, and the hash of its HPKE
/// key with whether its owner made it (see [`order::RecordedLeaf`]), when known.
pub(crate) type LeafLine = (u32, Member, Option<([u8; 32], bool)>);

/// Encodes a member list for `pqmls_epochs`. One line per leaf: `leaf id name`, then a tab
/// and the hex SHA-256 of the leaf's HPKE key, then a tab and `o` if its owner made the
/// leaf node (commit or update) or `k` (key package). Records made before had no key, or
/// a key and no source (read as `k`).
fn encode_members(members: &[LeafLine]) -> String {
    members
        .iter()
        .map(|(leaf, m, key)| {
            let key = key
                .map(|(key, by_owner)| {
                    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                    format!("{hex}\t{}", if by_owner { 'o' } else { 'k' })
                })
                .unwrap_or_default();
            format!(
                "{leaf} {} {}\t{key}",
                m.id,
                m.name.replace(['\n', '\t'], " ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_line(line: &str) -> Option<LeafLine> {
    let (leaf, rest) = line.split_once(' ')?;
    let (id, rest) = rest.split_once(' ')?;
    let (name, key) = match rest.split_once('\t') {
        Some((name, key)) => {
            let (key, source) = key.split_once('\t').unwrap_or((key, "k"));
            (name, hex32(key).map(|k| (k, source == "o")))
        }
        None => (rest, None),
    };
    Some((
        leaf.parse().ok()?,
        Member {
            id: id.parse().ok()?,
            name: name.to_owned(),
        },
        key,
    ))
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn decode_members(text: &str) -> Vec<(u32, Member)> {
    text.split('\n')
        .filter_map(decode_line)
        .map(|(leaf, m, _)| (leaf, m))
        .collect()
}

/// A leaf of an epoch's member record whose key was recorded, with its owner.
pub(crate) type LeafKey = (UserId, order::RecordedLeaf);

/// The leaves of a member record with the hash of their HPKE key, where recorded.
pub(crate) fn decode_leaf_keys(text: &str) -> Vec<LeafKey> {
    text.split('\n')
        .filter_map(decode_line)
        .filter_map(|(index, m, key)| {
            let (key, by_owner) = key?;
            Some((
                m.id,
                order::RecordedLeaf {
                    index,
                    key,
                    by_owner,
                },
            ))
        })
        .collect()
}

/// [`leaf_key_hash`] of the leaf a key package adds. `encryption_key` is an
/// `HPKEPublicKey`, a variable-length vector (RFC 9420 §7.2); OpenMLS exposes its bytes
/// only through that encoding.
pub(crate) fn key_package_leaf_key(kp: &KeyPackage) -> Option<[u8; 32]> {
    let encoded = kp
        .leaf_node()
        .encryption_key()
        .tls_serialize_detached()
        .ok()?;
    let bytes =
        <VLBytes as openmls::prelude::tls_codec::Deserialize>::tls_deserialize_exact(&encoded)
            .ok()?;
    Some(leaf_key_hash(bytes.as_slice()))
}

/// What identifies a leaf across epochs while its owner does not commit: its HPKE key.
pub(crate) fn leaf_key_hash(encryption_key: &[u8]) -> [u8; 32] {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"pqmls leaf key v1");
    sha2::Digest::update(&mut h, encryption_key);
    sha2::Digest::finalize(h).into()
}

impl State {
    /// Milliseconds since this state was opened, on the tokio clock (virtual in
    /// simulations, where each runtime has its own), for budgets.
    /// Loads the group's OpenMLS state again from storage (after a snapshot was restored
    /// or its pending commit put back).
    pub(crate) fn reload_group(&mut self, gid: &GroupId) -> Result<()> {
        let mls = MlsGroup::load(
            self.provider.storage(),
            &openmls::group::GroupId::from_slice(&gid.0),
        )
        .map_err(mls)?
        .ok_or_else(|| Error::Mls("no group state in storage".into()))?;
        self.group_mut(gid)?.mls = mls;
        // A state restored from a snapshot holds the past secrets it held then.
        self.past_secrets_cleared.remove(gid);
        Ok(())
    }

    pub(crate) fn mono_ms(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.origin)
                .as_millis(),
        )
        .unwrap_or(u64::MAX)
    }

    pub(crate) fn db(&self) -> &Connection {
        self.provider.storage().connection()
    }

    /// The wall clock (plus the test hook's skew).
    pub(crate) fn wall_ms(&self) -> u64 {
        self.clock_ms().saturating_add(self.clock_skew_ms)
    }

    /// The lifetime of a leaf node we make now (key packages, the creator's leaf): on our
    /// clock ([`State::clock_ms`]; OpenMLS's default reads the system's, the simulation's
    /// clock is virtual), from an hour back for skewed clocks as OpenMLS does, for
    /// [`Config::key_package_lifetime`]. The test hook's skew is for rotation and expiry
    /// only, as before.
    pub(crate) fn leaf_lifetime(&self) -> Lifetime {
        let now = self.clock_ms() / 1000;
        Lifetime::init(
            now.saturating_sub(3600),
            now.saturating_add(self.config.key_package_lifetime.as_secs()),
        )
    }

    /// The wall clock without the test hook's skew: the system's, or in the simulation
    /// ([`Config::virtual_wall_clock_ms`]) the virtual one, which started at that value
    /// when we opened and follows tokio's clock.
    pub(crate) fn clock_ms(&self) -> u64 {
        match self.config.virtual_wall_clock_ms {
            Some(_) => self.origin_wall_ms.saturating_add(self.mono_ms()),
            None => now_ms(),
        }
    }

    /// The clock of the fork horizon ([`Config::fork_horizon`]): the wall clock, but never
    /// behind the time elapsed on the tokio clock since we opened, so that a wall clock
    /// set back does not stretch the horizon, and in the simulation (paused tokio time,
    /// far ahead of the wall clock) the horizon follows virtual time.
    pub(crate) fn horizon_ms(&self) -> u64 {
        self.wall_ms()
            .max(self.origin_wall_ms.saturating_add(self.mono_ms()))
    }

    /// The member behind an MLS leaf: id from its signature key, name from its credential.
    pub(crate) fn member_of(&self, credential: &Credential, signature_key: &[u8]) -> Member {
        Member {
            id: UserId::of_key(self.config.suite.signature_algorithm(), signature_key),
            name: credential_name(credential),
        }
    }

    /// The member who sent a processed message: the leaf it names in the tree of the
    /// message's epoch, whose key MLS checked the signature with. For the epoch `mls` is
    /// at, that tree is `mls`'s; for a past epoch (OpenMLS reads messages of recent past
    /// epochs), it is our record of that epoch (`pqmls_epochs`): the current tree may
    /// hold someone else at that leaf by now. The credential OpenMLS reports must match.
    /// `None` for senders that are not members (external senders, which this SDK does not
    /// use) or when the epoch's record is missing.
    pub(crate) fn sender_member(
        &self,
        gid: &GroupId,
        mls: &MlsGroup,
        processed: &ProcessedMessage,
    ) -> Option<Member> {
        let Sender::Member(leaf) = processed.sender() else {
            return None;
        };
        let epoch = processed.epoch().as_u64();
        let member = if epoch == mls.epoch().as_u64() {
            mls.member_at(*leaf)
                .map(|m| self.member_of(&m.credential, &m.signature_key))?
        } else {
            // An epoch before our join is the replaced state's (read with its snapshot);
            // its record is kept apart (`pqmls_replaced_epochs`), but for its last final
            // epoch, which stays in `pqmls_epochs`.
            let before_join = self
                .first_epoch(gid)
                .ok()
                .flatten()
                .is_some_and(|f| epoch < f);
            let record = |table: &str| -> Option<String> {
                self.db()
                    .prepare_cached(&format!(
                        "SELECT members FROM {table} WHERE group_id = ?1 AND epoch = ?2"
                    ))
                    .ok()?
                    .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
                    .ok()
            };
            let text = before_join
                .then(|| record("pqmls_replaced_epochs"))
                .flatten()
                .or_else(|| record("pqmls_epochs"))?;
            decode_members(&text)
                .into_iter()
                .find(|(l, _)| *l == leaf.u32())
                .map(|(_, m)| m)?
        };
        (member.name == credential_name(processed.credential())).then_some(member)
    }

    fn join_config(&self) -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .sender_ratchet_configuration(ratchet_config())
            .use_ratchet_tree_extension(true)
            .max_past_epochs(usize::try_from(self.config.past_epoch_secrets).unwrap_or(16))
            .build()
    }

    /// Runs `f` in one SQLite transaction. On error everything it wrote is rolled back, the
    /// in-memory groups are reloaded from the database and its events are dropped.
    pub(crate) fn tx<T>(&mut self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        if self.crashed {
            return Err(Error::Shutdown);
        }
        if self.in_batch {
            return self.savepoint(f);
        }
        self.db().execute_batch("BEGIN IMMEDIATE")?;
        let events_before = self.events.len();
        self.armed = None;
        let result = f(self).and_then(|v| {
            self.db().execute_batch("COMMIT")?;
            Ok(v)
        });
        // Fail points "after the step is persisted, before it is published" fire here.
        if result.is_ok()
            && let Some(point) = self.armed.take()
        {
            self.fail(point)?;
        }
        if result.is_err() {
            let _ = self.db().execute_batch("ROLLBACK");
            self.events.truncate(events_before);
            if let Err(e) = self.reload_groups() {
                tracing::error!("reloading groups after a rollback failed: {e}");
            }
        }
        result
    }

    /// One step inside [`State::batch`]: a savepoint, rolled back alone on error (with the
    /// in-memory groups reloaded and the step's events dropped, as [`State::tx`] does).
    fn savepoint<T>(&mut self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        self.db().execute_batch("SAVEPOINT pqmls_step")?;
        let events_before = self.events.len();
        let result = f(self).and_then(|v| {
            self.db().execute_batch("RELEASE pqmls_step")?;
            Ok(v)
        });
        if result.is_err() {
            let _ = self
                .db()
                .execute_batch("ROLLBACK TO pqmls_step; RELEASE pqmls_step");
            self.events.truncate(events_before);
            if let Err(e) = self.reload_groups() {
                tracing::error!("reloading groups after a rollback failed: {e}");
            }
        }
        result
    }

    /// Runs `f` as one SQLite transaction in which every [`State::tx`] step is a savepoint:
    /// steps that arrive together (inbound payloads already queued) share one commit, so
    /// one fsync, instead of one each. Each step still succeeds or fails alone. Nothing of
    /// the batch is published or reported before the commit (the outbox is flushed and the
    /// events emitted after it), so a crash before the commit loses only steps nobody saw:
    /// their payloads are not marked seen and are handled again after the restart. After a
    /// fail point stopped the client inside the batch, nothing of it is committed.
    pub(crate) fn batch<T>(&mut self, f: impl FnOnce(&mut State) -> T) -> Result<T> {
        if self.crashed {
            return Err(Error::Shutdown);
        }
        if self.in_batch {
            return Ok(f(self));
        }
        self.db().execute_batch("BEGIN IMMEDIATE")?;
        let events_before = self.events.len();
        self.armed = None;
        self.in_batch = true;
        let out = f(self);
        self.in_batch = false;
        let committed = if self.crashed {
            Err(Error::Shutdown)
        } else {
            self.db().execute_batch("COMMIT").map_err(Error::from)
        };
        if let Err(e) = committed {
            let _ = self.db().execute_batch("ROLLBACK");
            self.events.truncate(events_before);
            if let Err(e) = self.reload_groups() {
                tracing::error!("reloading groups after a rollback failed: {e}");
            }
            return Err(e);
        }
        if let Some(point) = self.armed.take() {
            self.fail(point)?;
        }
        Ok(out)
    }

    /// Stops the client dead if `point` is the configured fail point.
    pub(crate) fn fail(&mut self, point: FailPoint) -> Result<()> {
        if self.config.fail_point == Some(point) {
            self.crashed = true;
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    fn new_group(&self, mls: MlsGroup, topic: Topic) -> Group {
        Group {
            mls,
            topic,
            settle_at: None,
            fork_reported: None,
            leave_sent: None,
            removed_at: None,
            past_reads: Budget::new(self.config.limits.past_reads_per_sec * 4, self.mono_ms()),
            replay_due: false,
            unrecoverable: None,
        }
    }

    /// Loads every active group from the database.
    pub(crate) fn reload_groups(&mut self) -> Result<()> {
        let ids: Vec<Vec<u8>> = self
            .db()
            .prepare("SELECT group_id FROM pqmls_groups WHERE active = 1")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut old = std::mem::take(&mut self.groups);
        self.topics.clear();
        self.past_secrets_cleared.clear();
        for id in ids {
            let gid = GroupId(id);
            let Some(mls) = MlsGroup::load(
                self.provider.storage(),
                &openmls::group::GroupId::from_slice(&gid.0),
            )
            .map_err(mls)?
            else {
                tracing::warn!("group {gid} is in the SDK tables but not in OpenMLS storage");
                continue;
            };
            let topic = wire::group_topic(&gid.0);
            let mut group = self.new_group(mls, topic.clone());
            if let Some(prev) = old.remove(&gid) {
                group.settle_at = prev.settle_at;
                group.fork_reported = prev.fork_reported;
                group.leave_sent = prev.leave_sent;
                group.removed_at = prev.removed_at;
                group.past_reads = prev.past_reads;
            }
            // Kept in the database: a reload (after a Welcome that did not join, or a
            // restart) must not forget that we are to ask to be added again.
            let lost: Option<i64> = self
                .db()
                .query_row(
                    "SELECT lost_epoch FROM pqmls_groups WHERE group_id = ?1",
                    [&gid.0],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            group.unrecoverable = lost.map(to_u64);
            group.removed_at = if group.mls.is_active() {
                None
            } else {
                group.removed_at.or_else(|| Some(Instant::now()))
            };
            self.topics.insert(topic, gid.clone());
            if group.settle_at.is_none() && self.has_candidates(&gid, group.mls.epoch().as_u64())? {
                group.settle_at = Some(Instant::now() + self.config.settle);
            }
            self.groups.insert(gid, group);
        }
        Ok(())
    }

    pub(crate) fn group(&self, gid: &GroupId) -> Result<&Group> {
        match self.groups.get(gid) {
            Some(g) => Ok(g),
            None => Err(self.missing(gid)),
        }
    }

    pub(crate) fn group_mut(&mut self, gid: &GroupId) -> Result<&mut Group> {
        if !self.groups.contains_key(gid) {
            return Err(self.missing(gid));
        }
        self.groups
            .get_mut(gid)
            .ok_or_else(|| Error::UnknownGroup(gid.clone()))
    }

    /// `NotMember` for a group we were in, `UnknownGroup` otherwise.
    fn missing(&self, gid: &GroupId) -> Error {
        if self.ever_member(gid).unwrap_or(false) {
            Error::NotMember(gid.clone())
        } else {
            Error::UnknownGroup(gid.clone())
        }
    }

    /// Whether we were ever a member of a group with this id.
    pub(crate) fn ever_member(&self, gid: &GroupId) -> Result<bool> {
        Ok(self
            .db()
            .query_row(
                "SELECT 1 FROM pqmls_groups WHERE group_id = ?1",
                [&gid.0],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Writes a payload to the outbox (published after the transaction) and remembers its
    /// transport id as seen, so our own messages coming back from a store are skipped.
    /// A payload a store returned in a catch-up: if it carried one of our own messages not
    /// marked yet, the message is marked stored and reported ([`Event::Stored`]).
    pub(crate) fn mark_stored(&mut self, id: &MessageId) -> Result<()> {
        let marked: Option<(Vec<u8>, i64)> = self
            .db()
            .prepare_cached(
                "UPDATE pqmls_messages SET stored = 1
                 WHERE wire_id = ?1 AND own = 1 AND stored = 0
                 RETURNING group_id, seq",
            )?
            .query_row([&id.as_bytes()[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((group, seq)) = marked {
            self.events.push(Event::Stored {
                group: GroupId(group),
                seq,
            });
        }
        Ok(())
    }

    pub(crate) fn enqueue(&mut self, topic: &Topic, payload: Vec<u8>) -> Result<()> {
        let id = MessageId::compute(topic, &payload);
        self.mark_seen(&id)?;
        self.db()
            .prepare_cached("INSERT INTO pqmls_outbox (topic, payload) VALUES (?1, ?2)")?
            .execute(params![topic.as_str(), payload])?;
        self.todo.flush = true;
        Ok(())
    }

    /// Enqueues `payload` (published before, by us or by others) to be published again,
    /// wrapped with a fresh nonce ([`Wire::Again`]): the same bytes would be refused by
    /// our own node, and dropped by every peer that saw them, for the transport's
    /// duplicate window.
    pub(crate) fn enqueue_again(&mut self, topic: &Topic, payload: Vec<u8>) -> Result<()> {
        let nonce = self.random::<8>()?;
        self.stats.published_again += 1;
        self.enqueue(topic, wire::Wire::again(payload, nonce))
    }

    pub(crate) fn random<const N: usize>(&self) -> Result<[u8; N]> {
        let v = self
            .provider
            .rand()
            .random_vec(N)
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(out)
    }

    // ----- de-duplication -----

    pub(crate) fn is_seen(&self, id: &MessageId) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached("SELECT 1 FROM pqmls_seen WHERE id = ?1")?
            .query_row([&id.0[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub(crate) fn mark_seen(&mut self, id: &MessageId) -> Result<()> {
        self.db()
            .prepare_cached("INSERT OR IGNORE INTO pqmls_seen (id, seen_ms) VALUES (?1, ?2)")?
            .execute(params![&id.0[..], to_i64(self.wall_ms())])?;
        // Pruned in batches: the table holds at most `seen` + min(`seen`, 256) ids.
        self.seen_marks += 1;
        if self.seen_marks >= self.config.limits.seen.clamp(1, 256) {
            self.seen_marks = 0;
            self.prune_seen()?;
        }
        Ok(())
    }

    /// Forgets the oldest seen ids beyond [`crate::config::Limits::seen`].
    pub(crate) fn prune_seen(&mut self) -> Result<()> {
        let n: i64 = self
            .db()
            .query_row("SELECT COUNT(*) FROM pqmls_seen", [], |r| r.get(0))?;
        let cap = to_i64(self.config.limits.seen as u64);
        if n > cap {
            self.db().prepare_cached("DELETE FROM pqmls_seen WHERE rowid IN (SELECT rowid FROM pqmls_seen ORDER BY seen_ms, rowid LIMIT ?1)")?.execute(
                [n - cap],
            )?;
        }
        Ok(())
    }

    // ----- groups and members -----

    /// Creates a group with us as the only member.
    pub(crate) fn create_group(&mut self) -> Result<GroupId> {
        let gid = GroupId(self.random::<16>()?.to_vec());
        self.tx(|s| {
            let mls = MlsGroup::builder()
                .with_group_id(openmls::group::GroupId::from_slice(&gid.0))
                .ciphersuite(s.config.suite)
                .use_ratchet_tree_extension(true)
                .max_past_epochs(usize::try_from(s.config.past_epoch_secrets).unwrap_or(16))
                .sender_ratchet_configuration(ratchet_config())
                .with_capabilities(capabilities(s.config.suite))
                .lifetime(s.leaf_lifetime())
                .build(&s.provider, &s.signer, s.credential.clone())
                .map_err(mls)?;
            s.add_group(&gid, mls)?;
            Ok(())
        })?;
        Ok(gid)
    }

    pub(crate) fn add_group(&mut self, gid: &GroupId, mls: MlsGroup) -> Result<()> {
        let now = to_i64(self.wall_ms());
        self.db().prepare_cached("INSERT OR REPLACE INTO pqmls_groups (group_id, active, joined_ms, last_update_ms) VALUES (?1, 1, ?2, ?2)")?.execute(
            params![gid.0, now],
        )?;
        let topic = wire::group_topic(&gid.0);
        self.topics.insert(topic.clone(), gid.clone());
        self.todo.subscribe.push(topic.clone());
        let group = self.new_group(mls, topic);
        self.groups.insert(gid.clone(), group);
        self.record_epoch(gid)
    }

    /// The members of a group we are in, or `NotMember` / `UnknownGroup`.
    pub(crate) fn active_members(&self, gid: &GroupId) -> Result<Vec<(u32, Member)>> {
        if !self.group(gid)?.mls.is_active() {
            return Err(Error::NotMember(gid.clone()));
        }
        self.member_list(gid)
    }

    /// The members of a group with their leaf indices.
    pub(crate) fn member_list(&self, gid: &GroupId) -> Result<Vec<(u32, Member)>> {
        Ok(self
            .group(gid)?
            .mls
            .members()
            .map(|m| {
                (
                    m.index.u32(),
                    self.member_of(&m.credential, &m.signature_key),
                )
            })
            .collect())
    }

    pub(crate) fn is_member(&self, gid: &GroupId, user: &UserId) -> Result<bool> {
        Ok(self.member_list(gid)?.iter().any(|(_, m)| m.id == *user))
    }

    /// Every leaf of the group's current tree: the hash of its HPKE key, and whether its
    /// owner made the leaf node (`LeafNodeSource` commit or update, RFC 9420 section 7.2).
    pub(crate) fn leaf_keys(&self, gid: &GroupId) -> Result<BTreeMap<u32, ([u8; 32], bool)>> {
        let mls = &self.group(gid)?.mls;
        Ok(mls
            .members()
            .map(|m| {
                let by_owner = mls.public_group().leaf(m.index).is_some_and(|l| {
                    !matches!(
                        l.leaf_node_source(),
                        openmls::treesync::LeafNodeSource::KeyPackage(_)
                    )
                });
                (m.index.u32(), (leaf_key_hash(&m.encryption_key), by_owner))
            })
            .collect())
    }

    /// Records who is in the group at its current epoch, and every member's key as known
    /// in this group (see [`crate::trust::welcome_action`]).
    pub(crate) fn record_epoch(&mut self, gid: &GroupId) -> Result<()> {
        let epoch = self.group(gid)?.mls.epoch().as_u64();
        let leaves = self.member_list(gid)?;
        // Every leaf's HPKE key names the leaf that abstains (`add_abstentions`). One from
        // a key package can be in states of other branches too (the same key package
        // added twice, or a last-resort one); its owner, once it abstained with it, never
        // holds or votes in such a state again (`pqmls_abstained_leaves`).
        // Whether the owner made the leaf node (its commit or update) tells a leaf that
        // descends from an abstaining one from a leaf of the owner added again.
        let keys = self.leaf_keys(gid)?;
        let record: Vec<LeafLine> = leaves
            .iter()
            .map(|(l, m)| (*l, m.clone(), keys.get(l).copied()))
            .collect();
        self.db()
            .prepare_cached("INSERT OR REPLACE INTO pqmls_epochs (group_id, epoch, members) VALUES (?1, ?2, ?3)")?
            .execute(params![gid.0, to_i64(epoch), encode_members(&record)])?;
        let members: Vec<Member> = leaves.into_iter().map(|(_, m)| m).collect();
        self.store_epoch_keys(gid)?;
        // Older records than the rollback window are of no use to `members_at` callers
        // beyond history display; a long-lived group must not grow this table forever.
        self.db()
            .prepare_cached("DELETE FROM pqmls_epochs WHERE group_id = ?1 AND epoch < ?2")?
            .execute(params![
                gid.0,
                to_i64(epoch.saturating_sub(self.config.rollback_window.max(256)))
            ])?;
        for m in &members {
            self.db()
                .prepare_cached(
                    "INSERT OR REPLACE INTO pqmls_known_keys (group_id, user_id, name) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![gid.0, &m.id.0[..], m.name])?;
            self.check_contact_key(m);
        }
        Ok(())
    }

    /// Whether `user` was ever a member of the group in a state we held.
    pub(crate) fn known_in_group(&self, gid: &GroupId, user: &UserId) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached("SELECT 1 FROM pqmls_known_keys WHERE group_id = ?1 AND user_id = ?2")?
            .query_row(params![gid.0, &user.0[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Who was in the group at `epoch` of our branch, if we were in it then.
    pub(crate) fn members_at(&self, gid: &GroupId, epoch: u64) -> Result<Option<Vec<Member>>> {
        let row: Option<String> = self
            .db()
            .query_row(
                "SELECT members FROM pqmls_epochs WHERE group_id = ?1 AND epoch = ?2",
                params![gid.0, to_i64(epoch)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(row.map(|m| decode_members(&m).into_iter().map(|(_, m)| m).collect()))
    }

    // ----- contacts -----

    pub(crate) fn is_contact(&self, user: &UserId) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached("SELECT 1 FROM pqmls_contacts WHERE user_id = ?1")?
            .query_row([&user.0[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Reports [`Event::ContactKeyChanged`] if `m` carries the label of a contact under
    /// another id (once per label and id).
    pub(crate) fn check_contact_key(&mut self, m: &Member) {
        let known: Option<Vec<u8>> = self
            .db()
            .prepare_cached("SELECT user_id FROM pqmls_contacts WHERE label = ?1 AND user_id != ?2")
            .and_then(|mut st| {
                st.query_row(params![m.name, &m.id.0[..]], |r| r.get(0))
                    .optional()
            })
            .ok()
            .flatten();
        let Some(known) = known.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok()) else {
            return;
        };
        let exact: bool = self
            .db()
            .prepare_cached("SELECT 1 FROM pqmls_contacts WHERE user_id = ?1")
            .and_then(|mut st| st.query_row([&m.id.0[..]], |_| Ok(())).optional())
            .ok()
            .flatten()
            .is_some();
        if exact || !self.key_changes.insert((m.name.clone(), m.id)) {
            return;
        }
        self.events.push(Event::ContactKeyChanged {
            label: m.name.clone(),
            known: UserId(known),
            seen: m.id,
        });
    }

    // ----- catch-up cursors -----

    /// How far `topic`'s history has been read.
    pub(crate) fn cursor(&self, topic: &Topic) -> Result<Cursor> {
        let row: Option<(i64, Option<Vec<u8>>)> = self
            .db()
            .prepare_cached("SELECT after_ms, after_id FROM pqmls_cursors WHERE topic = ?1")?
            .query_row([topic.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(match row {
            Some((ms, id)) => {
                let id = id
                    .and_then(|i| <[u8; 32]>::try_from(i.as_slice()).ok())
                    .map(MessageId);
                Cursor::from_parts(to_u64(ms), id)
            }
            None => Cursor::beginning(),
        })
    }

    /// Saves how far `topic`'s history has been read.
    pub(crate) fn set_cursor(&mut self, topic: &Topic, c: Cursor) -> Result<()> {
        self.db()
            .prepare_cached("INSERT OR REPLACE INTO pqmls_cursors (topic, after_ms, after_id) VALUES (?1, ?2, ?3)")?
            .execute(params![topic.as_str(), to_i64(c.after_ms()), c.after_id().map(|i| i.0.to_vec())])?;
        Ok(())
    }

    /// Row counts of the tables others can make us fill (tests check the caps with it).
    pub(crate) fn table_sizes(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut out = BTreeMap::new();
        for table in [
            "pqmls_groups",
            "pqmls_seen",
            "pqmls_commits",
            "pqmls_pending",
            "pqmls_welcomes",
            "pqmls_voids",
            "pqmls_invitations",
            "pqmls_outbox",
            "pqmls_key_packages",
            "pqmls_retired_key_packages",
            "pqmls_snap_group_data",
            "pqmls_votes",
            "pqmls_votes_pending",
            "pqmls_epoch_keys",
            "pqmls_rejoins",
            "pqmls_final_votes",
            "pqmls_abstained_leaves",
            "pqmls_add_ancestry",
            "openmls_key_packages",
        ] {
            let n: i64 = self
                .db()
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap_or(-1);
            out.insert(table, to_u64(n));
        }
        Ok(out)
    }
}

//! The client's state machine: groups, commit ordering, fork repair, message handling.
//!
//! Everything here is synchronous and runs under the client's lock, one SQLite transaction
//! per step ([`State::tx`]). What has to go to the network is written to the outbox inside
//! the same transaction, and what the async side must do next (subscribe, catch up, fetch a
//! key package) is collected in [`Todo`].
//!
//! # Commit ordering (DESIGN.md item 9)
//!
//! Every commit is a candidate for the epoch it was made in. A member collects the
//! candidates for its current epoch for [`Config::settle`] after the first one arrives,
//! then merges the *valid candidate with the smallest commit hash* (SHA-256 over the gossip
//! payload, [`crate::wire::commit_hash`]). Its own commit is a candidate like any other: if
//! another wins, the own one is dropped and the operation is proposed again in the next
//! epoch (the intents table keeps it until the group reflects it).
//!
//! Loss and delay can still make two members merge different winners. So before merging,
//! a member snapshots its group state; when a valid commit for a past epoch arrives whose
//! hash is smaller than the one it merged there, it restores that snapshot, merges the
//! better commit and replays the later commits it knows that are valid on the new branch
//! (again smallest hash first), then re-sends its own application messages of the
//! abandoned epochs. Every member thus converges on the same chain once it has seen the
//! same commits: at every epoch, the smallest valid hash. Members notice they diverged when
//! an application message for their epoch number carries another epoch authenticator, and
//! then catch up from the store nodes, which hold every commit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::random::OpenMlsRand;
use openmls_traits::signatures::Signer as _;
use openmls_traits::storage::StorageProvider as _;
use pqmls_provider::storage::Codec;
use pqmls_provider::{BinaryCodec, SignatureKeyPair, SqliteStorage};
use pqmls_transport::store::Cursor;
use pqmls_transport::{Message, MessageId, Topic};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::time::Instant;

use crate::config::{Config, FailPoint};
use crate::db::{self, to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::{Event, ReceivedMessage};
use crate::wire::{self, AppPayload, Content, Slot, Wire};
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
    pub fetch: Vec<(i64, String)>,
    /// Something was written to the outbox.
    pub flush: bool,
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
    /// The most advanced view of the group seen in others' messages that is not ours:
    /// (epoch, epoch-authenticator tag).
    pub foreign: Option<(u64, [u8; wire::AUTH_TAG_LEN])>,
    /// When the group last moved (merge or join).
    pub progress_at: Instant,
    /// When we last asked to be invited again.
    pub rejoin_at: Option<Instant>,
}

/// The client's state, behind its lock.
pub(crate) struct State {
    pub provider: Prov,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
    pub name: String,
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
}

/// A key package to publish: its slot, directory key and bytes.
pub(crate) type KeyPackageEntry = (Slot, Vec<u8>, Vec<u8>);

/// What merging an own commit leaves to do: (Welcome, invitee, intent id).
type OwnCommitEffects = (Option<Vec<u8>>, Option<String>, Option<i64>);

/// What a Welcome gave.
#[derive(Debug)]
enum Join {
    Joined,
    Refused,
    /// Kept aside: (group, epoch).
    Deferred(GroupId, u64),
}

/// What trying one commit candidate gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// Merged: the group is at the next epoch.
    Merged,
    /// Merged, and it removed us: the group is gone.
    Left,
    /// Not valid in our state; nothing changed.
    Invalid,
}

/// A short hex prefix of a hash, for logs.
fn short(hash: &[u8]) -> String {
    hash.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The name in a credential (basic credentials carry it as their content).
pub(crate) fn credential_name(c: &Credential) -> String {
    String::from_utf8_lossy(c.serialized_content()).into_owned()
}

fn ser(m: &MlsMessageOut) -> Result<Vec<u8>> {
    m.tls_serialize_detached().map_err(mls)
}

/// Leaf capabilities that name the suite (OpenMLS's defaults list only some suites).
pub(crate) fn capabilities(suite: Ciphersuite) -> Capabilities {
    Capabilities::new(None, Some(&[suite]), None, None, None)
}

impl State {
    pub(crate) fn db(&self) -> &Connection {
        self.provider.storage().connection()
    }

    fn join_config(&self) -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .max_past_epochs(usize::try_from(self.config.rollback_window).unwrap_or(16))
            .build()
    }

    /// Runs `f` in one SQLite transaction. On error everything it wrote is rolled back, the
    /// in-memory groups are reloaded from the database and its events are dropped.
    pub(crate) fn tx<T>(&mut self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        if self.crashed {
            return Err(Error::Shutdown);
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

    /// Stops the client dead if `point` is the configured fail point.
    pub(crate) fn fail(&mut self, point: FailPoint) -> Result<()> {
        if self.config.fail_point == Some(point) {
            self.crashed = true;
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    /// Loads every active group from the database.
    pub(crate) fn reload_groups(&mut self) -> Result<()> {
        let ids: Vec<Vec<u8>> = self
            .db()
            .prepare("SELECT group_id FROM pqmls_groups WHERE active = 1")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let old = std::mem::take(&mut self.groups);
        self.topics.clear();
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
            let (settle_at, fork_reported, leave_sent, removed_at) = old
                .get(&gid)
                .map(|g| (g.settle_at, g.fork_reported, g.leave_sent, g.removed_at))
                .unwrap_or((None, None, None, None));
            let removed_at = if mls.is_active() {
                None
            } else {
                removed_at.or_else(|| Some(Instant::now()))
            };
            self.topics.insert(topic.clone(), gid.clone());
            let mut group = Group {
                mls,
                topic,
                settle_at,
                fork_reported,
                leave_sent,
                removed_at,
                foreign: None,
                progress_at: Instant::now(),
                rejoin_at: None,
            };
            if group.settle_at.is_none() && self.has_candidates(&gid, group.mls.epoch().as_u64())? {
                group.settle_at = Some(Instant::now() + self.config.settle);
            }
            self.groups.insert(gid, group);
        }
        Ok(())
    }

    fn group(&self, gid: &GroupId) -> Result<&Group> {
        match self.groups.get(gid) {
            Some(g) => Ok(g),
            None => Err(self.missing(gid)),
        }
    }

    fn group_mut(&mut self, gid: &GroupId) -> Result<&mut Group> {
        if !self.groups.contains_key(gid) {
            return Err(self.missing(gid));
        }
        self.groups
            .get_mut(gid)
            .ok_or_else(|| Error::UnknownGroup(gid.clone()))
    }

    /// `NotMember` for a group we were in, `UnknownGroup` otherwise.
    fn missing(&self, gid: &GroupId) -> Error {
        let known = self
            .db()
            .query_row(
                "SELECT 1 FROM pqmls_groups WHERE group_id = ?1",
                [&gid.0],
                |_| Ok(()),
            )
            .optional()
            .ok()
            .flatten()
            .is_some();
        if known {
            Error::NotMember(gid.clone())
        } else {
            Error::UnknownGroup(gid.clone())
        }
    }

    /// Writes a payload to the outbox (published after the transaction) and remembers its
    /// transport id as seen, so our own messages coming back from a store are skipped.
    fn enqueue(&mut self, topic: &Topic, payload: Vec<u8>) -> Result<()> {
        let id = MessageId::compute(topic, &payload);
        self.db()
            .prepare_cached("INSERT OR IGNORE INTO pqmls_seen (id) VALUES (?1)")?
            .execute([&id.0[..]])?;
        self.db()
            .prepare_cached("INSERT INTO pqmls_outbox (topic, payload) VALUES (?1, ?2)")?
            .execute(params![topic.as_str(), payload])?;
        self.todo.flush = true;
        Ok(())
    }

    fn random<const N: usize>(&self) -> Result<[u8; N]> {
        let v = self
            .provider
            .rand()
            .random_vec(N)
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(out)
    }

    // ----- key packages -----

    /// A fresh key package (stored in the provider), serialized as an `MlsMessageOut`.
    pub(crate) fn new_key_package(&mut self, last_resort: bool) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut builder =
            KeyPackage::builder().leaf_node_capabilities(capabilities(self.config.suite));
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                self.config.suite,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(mls)?;
        let kp_ref = bundle
            .key_package()
            .hash_ref(self.provider.crypto())
            .map_err(mls)?;
        let bytes = ser(&MlsMessageOut::from(bundle.key_package().clone()))?;
        self.stats.key_package_bytes = bytes.len() as u64;
        Ok((kp_ref.tls_serialize_detached().map_err(mls)?, bytes))
    }

    /// The slots whose key package must be (re)published: missing, or consumed by a join.
    /// Returns (slot, directory key, key package) with the new key packages already
    /// generated and recorded as unpublished.
    pub(crate) fn key_packages_to_publish(&mut self) -> Result<Vec<KeyPackageEntry>> {
        let mut slots: Vec<Slot> = (0..self.config.one_time_key_packages)
            .map(Slot::OneTime)
            .collect();
        slots.push(Slot::LastResort);
        let mut out = Vec::new();
        self.tx(|s| {
            for slot in slots {
                let row: Option<(Vec<u8>, bool)> = s
                    .db()
                    .query_row(
                        "SELECT kp_ref, published FROM pqmls_key_packages WHERE slot = ?1",
                        [slot.code()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let alive = match &row {
                    Some((kp_ref, _)) => s
                        .provider
                        .storage()
                        .key_package::<KeyPackageRef, KeyPackageBundle>(
                            &KeyPackageRef::tls_deserialize_exact(kp_ref).map_err(mls)?,
                        )
                        .map_err(Error::Database)?
                        .is_some(),
                    None => false,
                };
                if alive && row.as_ref().is_some_and(|r| r.1) {
                    continue;
                }
                let (kp_ref, bytes) = if alive {
                    // Generated before but not yet published: publish a fresh one anyway
                    // (the old one stays usable until it is consumed).
                    s.new_key_package(slot == Slot::LastResort)?
                } else {
                    s.new_key_package(slot == Slot::LastResort)?
                };
                s.db().execute(
                    "INSERT OR REPLACE INTO pqmls_key_packages (slot, kp_ref, published) VALUES (?1, ?2, 0)",
                    params![slot.code(), kp_ref],
                )?;
                out.push((slot, wire::key_package_key(&s.name, slot), bytes));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Records that the key package of `slot` is in the directory.
    pub(crate) fn key_package_published(&mut self, slot: Slot) -> Result<()> {
        self.db().execute(
            "UPDATE pqmls_key_packages SET published = 1 WHERE slot = ?1",
            [slot.code()],
        )?;
        Ok(())
    }

    /// Validates a key package fetched for `user`.
    pub(crate) fn check_key_package(&self, user: &str, bytes: &[u8]) -> Result<KeyPackage> {
        let bad = |reason: String| Error::InvalidKeyPackage {
            user: user.to_owned(),
            reason,
        };
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| bad(format!("{e:?}")))?;
        let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
            return Err(bad("not a key package".into()));
        };
        let kp = kp
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| bad(format!("{e:?}")))?;
        if kp.ciphersuite() != self.config.suite {
            return Err(bad(format!(
                "suite {:#06x}, this client uses {:#06x}",
                u16::from(kp.ciphersuite()),
                u16::from(self.config.suite)
            )));
        }
        let name = credential_name(kp.leaf_node().credential());
        if name != user {
            return Err(bad(format!("credential names {name:?}")));
        }
        Ok(kp)
    }

    // ----- group operations -----

    /// Creates a group with us as the only member.
    pub(crate) fn create_group(&mut self) -> Result<GroupId> {
        let gid = GroupId(self.random::<16>()?.to_vec());
        self.tx(|s| {
            let mls = MlsGroup::builder()
                .with_group_id(openmls::group::GroupId::from_slice(&gid.0))
                .ciphersuite(s.config.suite)
                .use_ratchet_tree_extension(true)
                .max_past_epochs(usize::try_from(s.config.rollback_window).unwrap_or(16))
                .with_capabilities(capabilities(s.config.suite))
                .build(&s.provider, &s.signer, s.credential.clone())
                .map_err(mls)?;
            s.add_group(&gid, mls)?;
            Ok(())
        })?;
        Ok(gid)
    }

    fn add_group(&mut self, gid: &GroupId, mls: MlsGroup) -> Result<()> {
        let now = to_i64(now_ms());
        self.db().execute(
            "INSERT OR REPLACE INTO pqmls_groups (group_id, active, joined_ms, last_update_ms) VALUES (?1, 1, ?2, ?2)",
            params![gid.0, now],
        )?;
        let topic = wire::group_topic(&gid.0);
        self.topics.insert(topic.clone(), gid.clone());
        self.todo.subscribe.push(topic.clone());
        self.groups.insert(
            gid.clone(),
            Group {
                mls,
                topic,
                settle_at: None,
                fork_reported: None,
                leave_sent: None,
                removed_at: None,
                foreign: None,
                progress_at: Instant::now(),
                rejoin_at: None,
            },
        );
        self.record_epoch(gid)
    }

    /// The member names of a group we are in, or `NotMember` / `UnknownGroup`.
    pub(crate) fn active_members(&self, gid: &GroupId) -> Result<Vec<(u32, String)>> {
        if !self.group(gid)?.mls.is_active() {
            return Err(Error::NotMember(gid.clone()));
        }
        self.member_list(gid)
    }

    /// The member names of a group with their leaf indices.
    pub(crate) fn member_list(&self, gid: &GroupId) -> Result<Vec<(u32, String)>> {
        Ok(self
            .group(gid)?
            .mls
            .members()
            .map(|m| (m.index.u32(), credential_name(&m.credential)))
            .collect())
    }

    /// Records who is in the group at its current epoch.
    fn record_epoch(&mut self, gid: &GroupId) -> Result<()> {
        let epoch = self.group(gid)?.mls.epoch().as_u64();
        let members: Vec<String> = self.member_list(gid)?.into_iter().map(|(_, n)| n).collect();
        self.db()
            .prepare_cached("INSERT OR REPLACE INTO pqmls_epochs (group_id, epoch, members) VALUES (?1, ?2, ?3)")?
            .execute(params![gid.0, to_i64(epoch), members.join("\n")])?;
        Ok(())
    }

    /// Who was in the group at `epoch` of our branch, if we were in it then.
    pub(crate) fn members_at(&self, gid: &GroupId, epoch: u64) -> Result<Option<Vec<String>>> {
        let row: Option<String> = self
            .db()
            .query_row(
                "SELECT members FROM pqmls_epochs WHERE group_id = ?1 AND epoch = ?2",
                params![gid.0, to_i64(epoch)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(row.map(|m| m.split('\n').map(str::to_owned).collect()))
    }

    fn is_member(&self, gid: &GroupId, user: &str) -> Result<bool> {
        Ok(self.member_list(gid)?.iter().any(|(_, n)| n == user))
    }

    /// Records an operation to commit and tries to commit it now.
    pub(crate) fn add_intent(
        &mut self,
        gid: &GroupId,
        kind: &str,
        user: &str,
        key_package: Option<Vec<u8>>,
    ) -> Result<()> {
        self.active_members(gid)?;
        self.tx(|s| {
            s.db().execute(
                "INSERT INTO pqmls_intents (group_id, kind, user, key_package) VALUES (?1, ?2, ?3, ?4)",
                params![gid.0, kind, user, key_package],
            )?;
            s.drive_intents(gid)
        })
    }

    /// Commits the first outstanding operation of a group, unless a commit of ours is
    /// already waiting to be ordered; drops operations the group already reflects.
    fn drive_intents(&mut self, gid: &GroupId) -> Result<()> {
        let Some(group) = self.groups.get(gid) else {
            return Ok(());
        };
        if !group.mls.is_active() || group.mls.pending_commit().is_some() {
            return Ok(());
        }
        let epoch = group.mls.epoch().as_u64();
        let own = group.mls.own_leaf_index().u32();
        let intents: Vec<(i64, String, String, Option<Vec<u8>>)> = self
            .db()
            .prepare_cached(
                "SELECT id, kind, user, key_package FROM pqmls_intents WHERE group_id = ?1 AND done_epoch IS NULL ORDER BY id",
            )?
            .query_map([&gid.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        for (id, kind, user, key_package) in intents {
            let members = self.member_list(gid)?;
            let leaf = members.iter().find(|(_, n)| *n == user).map(|(i, _)| *i);
            match kind.as_str() {
                "add" => {
                    if leaf.is_some() {
                        self.drop_intent(id)?;
                        continue;
                    }
                    let Some(kp_bytes) = key_package else {
                        self.todo.fetch.push((id, user));
                        continue;
                    };
                    let kp = match self.check_key_package(&user, &kp_bytes) {
                        Ok(kp) => kp,
                        Err(e) => {
                            tracing::warn!("dropping the invitation of {user}: {e}");
                            self.drop_intent(id)?;
                            continue;
                        }
                    };
                    let (commit, welcome) = {
                        let g = self
                            .groups
                            .get_mut(gid)
                            .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                        match g.mls.add_members(&self.provider, &self.signer, &[kp]) {
                            Ok((commit, welcome, _)) => (commit, Some(welcome)),
                            Err(e) => {
                                self.refused_intent(id, &kind, &user, &e)?;
                                continue;
                            }
                        }
                    };
                    return self.own_commit(gid, epoch, id, &commit, welcome.as_ref(), Some(&user));
                }
                "remove" => {
                    let Some(leaf) = leaf.filter(|l| *l != own) else {
                        // Gone already, or our own leaf (MLS forbids committing our own
                        // removal; `Client::remove` refuses it, older rows may hold it).
                        self.drop_intent(id)?;
                        continue;
                    };
                    let commit = {
                        let g = self
                            .groups
                            .get_mut(gid)
                            .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                        match g.mls.remove_members(
                            &self.provider,
                            &self.signer,
                            &[LeafNodeIndex::new(leaf)],
                        ) {
                            Ok((commit, _, _)) => commit,
                            Err(e) => {
                                self.refused_intent(id, &kind, &user, &e)?;
                                continue;
                            }
                        }
                    };
                    return self.own_commit(gid, epoch, id, &commit, None, None);
                }
                "update" => {
                    let commit = {
                        let g = self
                            .groups
                            .get_mut(gid)
                            .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                        match g.mls.self_update(
                            &self.provider,
                            &self.signer,
                            LeafNodeParameters::default(),
                        ) {
                            Ok(bundle) => bundle.commit().clone(),
                            Err(e) => {
                                self.refused_intent(id, &kind, &user, &e)?;
                                continue;
                            }
                        }
                    };
                    return self.own_commit(gid, epoch, id, &commit, None, None);
                }
                "leave" => {
                    let g = self.group(gid)?;
                    if g.leave_sent != Some(epoch) {
                        self.send_content(gid, Content::Leave)?;
                        self.group_mut(gid)?.leave_sent = Some(epoch);
                    }
                }
                _ => self.drop_intent(id)?,
            }
        }
        Ok(())
    }

    /// Drops an operation OpenMLS refuses to commit. Propagating the error would roll
    /// back the whole step (a merge, say) and leave the refused row to fail every step
    /// after it.
    fn refused_intent(
        &mut self,
        id: i64,
        kind: &str,
        user: &str,
        e: &impl std::fmt::Display,
    ) -> Result<()> {
        tracing::warn!("dropping the {kind} of {user:?}: OpenMLS refused to commit it: {e}");
        self.drop_intent(id)
    }

    fn drop_intent(&mut self, id: i64) -> Result<()> {
        self.db()
            .prepare_cached("DELETE FROM pqmls_intents WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// Gives an add intent the key package fetched for it.
    pub(crate) fn set_intent_key_package(
        &mut self,
        gid: &GroupId,
        id: i64,
        kp: Vec<u8>,
    ) -> Result<()> {
        self.tx(|s| {
            s.db().execute(
                "UPDATE pqmls_intents SET key_package = ?2 WHERE id = ?1",
                params![id, kp],
            )?;
            s.drive_intents(gid)
        })
    }

    /// Drops an add intent whose user has no key package.
    pub(crate) fn abandon_intent(&mut self, id: i64) -> Result<()> {
        self.tx(|s| s.drop_intent(id))
    }

    /// Publishes an own commit as a candidate for `epoch`.
    fn own_commit(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        intent: i64,
        commit: &MlsMessageOut,
        welcome: Option<&MlsMessageOut>,
        invitee: Option<&str>,
    ) -> Result<()> {
        let payload = Wire::Handshake { mls: ser(commit)? }.encode();
        let hash = wire::commit_hash(&payload);
        let welcome = welcome.map(ser).transpose()?;
        // OpenMLS holds one pending commit, this one: an older own candidate still
        // waiting (one made on a branch we have since left) can no longer be merged, and
        // must not stand for this one when `try_merge` merges "the" pending commit.
        self.db()
            .prepare_cached(
                "UPDATE pqmls_commits SET merged = -1 WHERE group_id = ?1 AND own = 1 AND merged = 0",
            )?
            .execute([&gid.0])?;
        self.db().execute(
            "INSERT OR IGNORE INTO pqmls_commits (group_id, epoch, hash, payload, own, welcome, invitee, intent)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)",
            params![gid.0, to_i64(epoch), &hash[..], payload, welcome, invitee, intent],
        )?;
        self.stats.last_commit_bytes = payload.len() as u64;
        let topic = self.group(gid)?.topic.clone();
        self.enqueue(&topic, payload)?;
        self.armed = Some(FailPoint::CommitBeforePublish);
        let settle = self.config.settle;
        let g = self.group_mut(gid)?;
        if g.settle_at.is_none() {
            g.settle_at = Some(Instant::now() + settle);
        }
        Ok(())
    }

    /// Encrypts an application message into the outbox and the history.
    pub(crate) fn send(&mut self, gid: &GroupId, body: &[u8]) -> Result<ReceivedMessage> {
        if body.len() > self.config.max_message_size {
            return Err(Error::MessageTooLarge {
                len: body.len(),
                max: self.config.max_message_size,
            });
        }
        let g = self.group(gid)?;
        if !g.mls.is_active() {
            return Err(Error::NotMember(gid.clone()));
        }
        self.tx(|s| {
            let m = s.send_content(gid, Content::Text(body.to_vec()))?;
            s.armed = Some(FailPoint::SendBeforePublish);
            Ok(m)
        })
    }

    fn send_content(&mut self, gid: &GroupId, content: Content) -> Result<ReceivedMessage> {
        let payload = AppPayload {
            uid: self.random::<16>()?,
            sent_ms: now_ms(),
            content,
        };
        self.encrypt_app(gid, &payload)?;
        let epoch = self.group(gid)?.mls.epoch().as_u64();
        let body = match &payload.content {
            Content::Text(b) => b.clone(),
            Content::Leave => return Ok(self.record_leave(gid, epoch, &payload)),
        };
        let seq = self
            .db()
            .prepare_cached(
                "INSERT INTO pqmls_messages (group_id, uid, sender, epoch, sent_ms, own, body)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
            )?
            .insert(params![
                gid.0,
                &payload.uid[..],
                self.name,
                to_i64(epoch),
                to_i64(payload.sent_ms),
                body
            ])?;
        Ok(ReceivedMessage {
            group: gid.clone(),
            sender: self.name.clone(),
            body,
            epoch,
            sent_ms: payload.sent_ms,
            own: true,
            seq,
        })
    }

    fn record_leave(&self, gid: &GroupId, epoch: u64, payload: &AppPayload) -> ReceivedMessage {
        ReceivedMessage {
            group: gid.clone(),
            sender: self.name.clone(),
            body: Vec::new(),
            epoch,
            sent_ms: payload.sent_ms,
            own: true,
            seq: -1,
        }
    }

    fn encrypt_app(&mut self, gid: &GroupId, payload: &AppPayload) -> Result<()> {
        let plain = payload.encode();
        let (out, auth, topic) = {
            let g = self
                .groups
                .get_mut(gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
            let out = g
                .mls
                .create_message(&self.provider, &self.signer, &plain)
                .map_err(mls)?;
            let auth = wire::auth_tag(g.mls.epoch_authenticator().as_slice());
            (out, auth, g.topic.clone())
        };
        let wire = Wire::Application {
            auth,
            mls: ser(&out)?,
        }
        .encode();
        self.stats.last_message_bytes = wire.len() as u64;
        self.enqueue(&topic, wire)
    }

    // ----- inbound -----

    /// Handles one payload from gossip or history. Never fails on bad input: malformed or
    /// unprocessable payloads are counted and dropped.
    pub(crate) fn handle(&mut self, msg: &Message) -> Result<()> {
        let seen = self
            .db()
            .prepare_cached("SELECT 1 FROM pqmls_seen WHERE id = ?1")?
            .query_row([&msg.id.0[..]], |_| Ok(()))
            .optional()?
            .is_some();
        if seen {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if msg.topic != self.inbox && !self.topics.contains_key(&msg.topic) {
            // A group we do not hold (any more, or yet): not marked as seen, so that the
            // catch-up after a (re)join reads it.
            self.stats.ignored += 1;
            return Ok(());
        }
        self.tx(|s| {
            s.db()
                .prepare_cached("INSERT OR IGNORE INTO pqmls_seen (id) VALUES (?1)")?
                .execute([&msg.id.0[..]])?;
            let Some(wire) = Wire::decode(&msg.data) else {
                s.stats.malformed += 1;
                return Ok(());
            };
            if msg.topic == s.inbox {
                match wire {
                    Wire::Welcome { mls } => s.on_welcome(&mls)?,
                    Wire::Void {
                        group_id,
                        welcome,
                        sig,
                    } => s.on_void(&GroupId(group_id), &welcome, &sig)?,
                    _ => s.stats.malformed += 1,
                }
                return Ok(());
            }
            let Some(gid) = s.topics.get(&msg.topic).cloned() else {
                s.stats.ignored += 1;
                return Ok(());
            };
            match wire {
                Wire::Handshake { mls } => s.on_handshake(&gid, &msg.data, &mls),
                Wire::Application { auth, mls } => {
                    s.on_application(&gid, msg.id, &msg.data, auth, &mls)
                }
                Wire::Welcome { .. } | Wire::Void { .. } => {
                    s.stats.malformed += 1;
                    Ok(())
                }
                Wire::Rejoin {
                    name,
                    epoch,
                    auth,
                    nonce,
                    sig,
                } => s.on_rejoin(&gid, &name, epoch, auth, nonce, &sig),
            }
        })
    }

    fn parse_protocol(&mut self, gid: &GroupId, mls: &[u8]) -> Option<ProtocolMessage> {
        let pm = MlsMessageIn::tls_deserialize_exact(mls)
            .ok()
            .and_then(|m| m.try_into_protocol_message().ok());
        match pm {
            Some(pm) if pm.group_id().as_slice() == gid.0.as_slice() => Some(pm),
            _ => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn on_handshake(&mut self, gid: &GroupId, payload: &[u8], mls: &[u8]) -> Result<()> {
        let Some(pm) = self.parse_protocol(gid, mls) else {
            return Ok(());
        };
        if pm.content_type() != ContentType::Commit {
            // Only commits travel as handshake messages between SDK clients.
            self.stats.ignored += 1;
            return Ok(());
        }
        let epoch = pm.epoch().as_u64();
        let hash = wire::commit_hash(payload);
        self.db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_commits (group_id, epoch, hash, payload, own) VALUES (?1, ?2, ?3, ?4, 0)",
            )?
            .execute(params![gid.0, to_i64(epoch), &hash[..], payload])?;
        let current = self.group(gid)?.mls.epoch().as_u64();
        if epoch == current {
            let settle = self.config.settle;
            let g = self.group_mut(gid)?;
            if g.settle_at.is_none() {
                g.settle_at = Some(Instant::now() + settle);
            }
        } else if epoch > current {
            // We missed at least one commit.
            self.todo.sync.insert(gid.clone());
        } else {
            self.maybe_switch(gid, epoch, &hash)?;
        }
        Ok(())
    }

    fn on_application(
        &mut self,
        gid: &GroupId,
        id: MessageId,
        payload: &[u8],
        auth: [u8; wire::AUTH_TAG_LEN],
        mls: &[u8],
    ) -> Result<()> {
        let Some(pm) = self.parse_protocol(gid, mls) else {
            return Ok(());
        };
        let epoch = pm.epoch().as_u64();
        let g = self.group(gid)?;
        if !g.mls.is_active() {
            // Removed (tentatively): a late message from an epoch we were a member of is
            // still ours, and the snapshot of that epoch can read it.
            if self.decrypt_past(gid, epoch, pm)? {
                return Ok(());
            }
            // Kept: if we are invited back, messages of the epoch we rejoin at are ours.
            return self.buffer(gid, id, epoch, payload);
        }
        let current = g.mls.epoch().as_u64();
        let ours = wire::auth_tag(g.mls.epoch_authenticator().as_slice());
        if epoch > current || (epoch == current && auth != ours) {
            if let Some(g) = self.groups.get_mut(gid)
                && g.foreign.is_none_or(|f| wire::ahead((epoch, auth), f))
            {
                g.foreign = Some((epoch, auth));
            }
            if epoch == current {
                self.report_fork(gid, epoch)?;
            }
            self.todo.sync.insert(gid.clone());
            return self.buffer(gid, id, epoch, payload);
        }
        let before_join = epoch < current && self.first_epoch(gid)?.is_some_and(|f| epoch < f);
        if before_join {
            // From an epoch of a state we held before this one (we were removed and invited
            // back): the current state has no secrets for it, its snapshot may.
            if self.decrypt_past(gid, epoch, pm)? {
                return Ok(());
            }
            return self.buffer(gid, id, epoch, payload);
        }
        if let Err(reason) = self.decrypt_app(gid, pm)? {
            if epoch < current {
                // Perhaps from a branch we have not moved to yet.
                return self.buffer(gid, id, epoch, payload);
            }
            tracing::debug!("dropping an application message: {reason}");
            self.stats.rejected += 1;
        }
        Ok(())
    }

    fn report_fork(&mut self, gid: &GroupId, epoch: u64) -> Result<()> {
        let g = self.group_mut(gid)?;
        if g.fork_reported != Some(epoch) {
            g.fork_reported = Some(epoch);
            self.stats.forks_detected += 1;
            self.events.push(Event::ForkDetected {
                group: gid.clone(),
                epoch,
            });
            self.retry_welcomes(gid)?;
        }
        Ok(())
    }

    fn buffer(&mut self, gid: &GroupId, id: MessageId, epoch: u64, payload: &[u8]) -> Result<()> {
        self.db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_pending (group_id, id, epoch, payload) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![gid.0, &id.0[..], to_i64(epoch), payload])?;
        self.stats.buffered += 1;
        Ok(())
    }

    /// The epoch we joined our current state of a group at (none if we created it).
    fn first_epoch(&self, gid: &GroupId) -> Result<Option<u64>> {
        let first: Option<i64> = self
            .db()
            .prepare_cached("SELECT epoch FROM pqmls_joins WHERE group_id = ?1")?
            .query_row([&gid.0], |r| r.get(0))
            .optional()?;
        Ok(first.map(to_u64))
    }

    /// Reads an application message of a past `epoch` with the snapshot of that epoch (in
    /// a savepoint that is rolled back: the group state does not change) and records it;
    /// `false` if there is no snapshot or MLS refused it there.
    fn decrypt_past(&mut self, gid: &GroupId, epoch: u64, pm: ProtocolMessage) -> Result<bool> {
        if !db::has_snapshot(self.db(), &gid.0, epoch)? {
            return Ok(false);
        }
        let (key, _) = self.storage_keys(gid)?;
        self.db().execute_batch("SAVEPOINT pqmls_past")?;
        let read = (|| -> Result<Option<(String, u64, Vec<u8>)>> {
            db::restore(self.db(), &gid.0, epoch, &key)?;
            let Some(mut past) = MlsGroup::load(
                self.provider.storage(),
                &openmls::group::GroupId::from_slice(&gid.0),
            )
            .map_err(mls)?
            else {
                return Ok(None);
            };
            let Ok(processed) = past.process_message(&self.provider, pm) else {
                return Ok(None);
            };
            let epoch = processed.epoch().as_u64();
            let sender = credential_name(processed.credential());
            Ok(match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(app) => {
                    Some((sender, epoch, app.into_bytes()))
                }
                _ => None,
            })
        })();
        self.db()
            .execute_batch("ROLLBACK TO pqmls_past; RELEASE pqmls_past")?;
        let Some((sender, epoch, bytes)) = read? else {
            return Ok(false);
        };
        match AppPayload::decode(&bytes) {
            Some(AppPayload {
                uid,
                sent_ms,
                content: Content::Text(body),
            }) => self.record_message(gid, &sender, epoch, &uid, sent_ms, body)?,
            // A leave request is for the members; we are not one any more.
            Some(_) => self.stats.ignored += 1,
            None => self.stats.rejected += 1,
        }
        Ok(true)
    }

    /// Stores a received message and reports it, unless its uid was seen before.
    fn record_message(
        &mut self,
        gid: &GroupId,
        sender: &str,
        epoch: u64,
        uid: &[u8; 16],
        sent_ms: u64,
        body: Vec<u8>,
    ) -> Result<()> {
        let inserted = self
            .db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_messages (group_id, uid, sender, epoch, sent_ms, own, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
            )?
            .execute(params![gid.0, &uid[..], sender, to_i64(epoch), to_i64(sent_ms), body])?;
        if inserted == 1 {
            let seq = self.db().last_insert_rowid();
            self.fail(FailPoint::ReceiveBeforeCommit)?;
            self.stats.delivered += 1;
            self.events.push(Event::Message(ReceivedMessage {
                group: gid.clone(),
                sender: sender.to_owned(),
                body,
                epoch,
                sent_ms,
                own: false,
                seq,
            }));
        } else {
            self.stats.duplicates += 1;
        }
        Ok(())
    }

    /// Decrypts and records an application message. `Ok(Err(reason))` if MLS refused it.
    fn decrypt_app(&mut self, gid: &GroupId, pm: ProtocolMessage) -> Result<Result<(), String>> {
        let processed = {
            let g = self
                .groups
                .get_mut(gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
            match g.mls.process_message(&self.provider, pm) {
                Ok(p) => p,
                Err(e) => return Ok(Err(format!("{e:?}"))),
            }
        };
        let epoch = processed.epoch().as_u64();
        let sender = credential_name(processed.credential());
        let ProcessedMessageContent::ApplicationMessage(app) = processed.into_content() else {
            return Ok(Err("not an application message".into()));
        };
        let Some(payload) = AppPayload::decode(&app.into_bytes()) else {
            return Ok(Err("malformed application payload".into()));
        };
        match payload.content {
            Content::Text(body) => {
                self.record_message(gid, &sender, epoch, &payload.uid, payload.sent_ms, body)?;
            }
            Content::Leave => {
                if self.is_member(gid, &sender)? && sender != self.name {
                    let exists = self
                        .db()
                        .query_row(
                            "SELECT 1 FROM pqmls_intents WHERE group_id = ?1 AND kind = 'remove' AND user = ?2",
                            params![gid.0, sender],
                            |_| Ok(()),
                        )
                        .optional()?
                        .is_some();
                    if !exists {
                        self.db().execute(
                            "INSERT INTO pqmls_intents (group_id, kind, user) VALUES (?1, 'remove', ?2)",
                            params![gid.0, sender],
                        )?;
                    }
                    self.drive_intents(gid)?;
                }
            }
        }
        Ok(Ok(()))
    }

    fn on_welcome(&mut self, bytes: &[u8]) -> Result<()> {
        self.welcome(bytes, false).map(|_| ())
    }

    /// Retries the Welcomes kept for a group, newest epoch first, until one joins.
    fn retry_welcomes(&mut self, gid: &GroupId) -> Result<()> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .db()
            .prepare_cached("SELECT id, payload FROM pqmls_welcomes WHERE group_id = ?1 ORDER BY epoch DESC, id DESC")?
            .query_map([&gid.0], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, payload) in rows {
            self.db()
                .execute("DELETE FROM pqmls_welcomes WHERE id = ?1", [id])?;
            if self.welcome(&payload, true)? {
                break;
            }
        }
        Ok(())
    }

    /// Handles a Welcome; `true` if we joined. Without `force`, a Welcome for a group we are
    /// in at a later epoch, with no sign of a fork, is kept aside rather than used.
    fn welcome(&mut self, bytes: &[u8], force: bool) -> Result<bool> {
        let Ok(msg) = MlsMessageIn::tls_deserialize_exact(bytes) else {
            self.stats.malformed += 1;
            return Ok(false);
        };
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            self.stats.malformed += 1;
            return Ok(false);
        };
        // OpenMLS deletes the key package a Welcome names before it has validated the
        // rest, so a forged Welcome would burn a one-time key package: everything below
        // runs in a savepoint that is rolled back unless we join.
        self.db().execute_batch("SAVEPOINT pqmls_welcome")?;
        match self.join(welcome, &wire::welcome_hash(bytes), force) {
            Ok(Join::Joined) => {
                self.db().execute_batch("RELEASE pqmls_welcome")?;
                self.todo.key_packages = true;
                Ok(true)
            }
            Ok(Join::Refused) => {
                self.db()
                    .execute_batch("ROLLBACK TO pqmls_welcome; RELEASE pqmls_welcome")?;
                // `join` may have dropped the state the Welcome was to replace.
                self.reload_groups()?;
                Ok(false)
            }
            Ok(Join::Deferred(gid, epoch)) => {
                self.db()
                    .execute_batch("ROLLBACK TO pqmls_welcome; RELEASE pqmls_welcome")?;
                self.db().execute(
                    "INSERT INTO pqmls_welcomes (group_id, epoch, payload) VALUES (?1, ?2, ?3)",
                    params![gid.0, to_i64(epoch), bytes],
                )?;
                Ok(false)
            }
            Err(e) => {
                self.db()
                    .execute_batch("ROLLBACK TO pqmls_welcome; RELEASE pqmls_welcome")?;
                self.reload_groups()?;
                Err(e)
            }
        }
    }

    /// Joins from a Welcome.
    fn join(&mut self, welcome: Welcome, hash: &[u8; 32], force: bool) -> Result<Join> {
        let processed = match ProcessedWelcome::new_from_welcome(
            &self.provider,
            &self.join_config(),
            welcome,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("{}: dropping a Welcome: {e:?}", self.name);
                self.stats.rejected += 1;
                return Ok(Join::Refused);
            }
        };
        let info = processed.unverified_group_info();
        let gid = GroupId(info.group_id().as_slice().to_vec());
        let epoch = info.epoch().as_u64();
        // A Welcome for a group we are in means its sender is on a branch where we are not
        // a member: we were removed there and invited back, or we are on a branch that lost
        // and the inviter moved and invited us again, or the Welcome itself comes from a
        // branch that lost. Without a sign that our state is the dead one it is kept, and
        // used if we find that it is (a fork), if we are removed, or if the Welcome we
        // joined with is withdrawn. (Using it at once when its epoch was later than ours
        // swapped live states for dead ones.)
        if !force
            && let Some(g) = self.groups.get(&gid)
            && g.mls.is_active()
            && g.fork_reported.is_none()
        {
            return Ok(Join::Deferred(gid, epoch));
        }
        tracing::debug!("{}: joining {gid} at epoch {epoch}", self.name);
        let replaced_epoch = self
            .groups
            .get(&gid)
            .filter(|g| g.mls.is_active())
            .map(|g| g.mls.epoch().as_u64());
        if let Some(mut old) = self.groups.remove(&gid) {
            // Removed and invited again, or re-invited after a fork (the inviter moved
            // branch): the new Welcome replaces the old state, whose snapshots and plans
            // are void.
            self.topics.remove(&old.topic);
            old.mls
                .delete(self.provider.storage())
                .map_err(Error::Database)?;
            // The old state's snapshots of earlier epochs stay: late messages of those
            // epochs (before a removal and re-invitation) can still be read with them.
            db::drop_snapshots_from(self.db(), &gid.0, epoch)?;
            self.db()
                .execute("DELETE FROM pqmls_intents WHERE group_id = ?1", [&gid.0])?;
            self.db()
                .execute("DELETE FROM pqmls_epochs WHERE group_id = ?1", [&gid.0])?;
        }
        // A fresh state: what we merged or found invalid on an earlier state of this group
        // (replaced just now, or dropped before: a withdrawn Welcome, a removal) says
        // nothing about this one, and every commit of others is a candidate again.
        self.db().execute(
            "UPDATE pqmls_commits SET merged = CASE own WHEN 1 THEN -1 ELSE 0 END WHERE group_id = ?1",
            [&gid.0],
        )?;
        let staged = match processed.into_staged_welcome(&self.provider, None) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("{}: dropping a Welcome: {e:?}", self.name);
                self.stats.rejected += 1;
                return Ok(Join::Refused);
            }
        };
        let Ok(sender) = staged.welcome_sender() else {
            self.stats.rejected += 1;
            return Ok(Join::Refused);
        };
        let inviter = credential_name(sender.credential());
        let inviter_key = sender.signature_key().as_slice().to_vec();
        if self.voided(&gid, hash, &inviter_key)? {
            tracing::debug!("{}: dropping a Welcome its sender withdrew", self.name);
            self.stats.ignored += 1;
            return Ok(Join::Refused);
        }
        let group = staged.into_group(&self.provider).map_err(mls)?;
        self.add_group(&gid, group)?;
        self.db().execute(
            "INSERT OR REPLACE INTO pqmls_joins (group_id, welcome_hash, inviter_key, joined_seq, epoch)
             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) FROM pqmls_messages), ?4)",
            params![gid.0, &hash[..], inviter_key, to_i64(epoch)],
        )?;
        self.events.push(Event::Joined {
            group: gid.clone(),
            inviter,
        });
        // Catch up from the start of the topic's history: after a rejoin our cursor may be
        // past commits we skipped while we did not hold the group (seen ids make the
        // messages we did handle cheap to skip).
        let topic = wire::group_topic(&gid.0);
        self.db().execute(
            "DELETE FROM pqmls_cursors WHERE topic = ?1",
            [topic.as_str()],
        )?;
        self.todo.sync.insert(gid.clone());
        self.replay_pending(&gid)?;
        if let Some(old_epoch) = replaced_epoch {
            // Our recent messages may have gone to a branch that lost.
            self.resend_own(
                &gid,
                to_i64(old_epoch.saturating_sub(self.config.rollback_window)),
            )?;
        } else {
            // Those sent on a state whose Welcome was withdrawn.
            self.resend_own(&gid, -1)?;
        }
        Ok(Join::Joined)
    }

    /// Whether a valid [`Wire::Void`] from the Welcome's sender withdrew this Welcome.
    fn voided(&self, gid: &GroupId, hash: &[u8; 32], inviter_key: &[u8]) -> Result<bool> {
        let sig: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT sig FROM pqmls_voids WHERE welcome_hash = ?1 AND group_id = ?2",
                params![&hash[..], gid.0],
                |r| r.get(0),
            )
            .optional()?;
        Ok(sig.is_some_and(|sig| self.void_signed(gid, hash, inviter_key, &sig)))
    }

    fn void_signed(&self, gid: &GroupId, hash: &[u8; 32], key: &[u8], sig: &[u8]) -> bool {
        self.provider
            .crypto()
            .verify_signature(
                self.config.suite.signature_algorithm(),
                &wire::void_tbs(&gid.0, hash),
                key,
                sig,
            )
            .is_ok()
    }

    /// An inviter withdrew a Welcome: if it is the one we joined with (and the signature
    /// is the inviter's), our state is on a dead branch and is dropped; kept-aside Welcomes
    /// are then tried. Kept either way, for a Welcome that arrives after it.
    fn on_void(&mut self, gid: &GroupId, hash: &[u8; 32], sig: &[u8]) -> Result<()> {
        self.db().execute(
            "INSERT OR IGNORE INTO pqmls_voids (welcome_hash, group_id, sig) VALUES (?1, ?2, ?3)",
            params![&hash[..], gid.0, sig],
        )?;
        // A kept-aside copy of that Welcome is of no use any more.
        let kept: Vec<(i64, Vec<u8>)> = self
            .db()
            .prepare_cached("SELECT id, payload FROM pqmls_welcomes WHERE group_id = ?1")?
            .query_map([&gid.0], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, payload) in kept {
            if wire::welcome_hash(&payload) == *hash {
                self.db()
                    .execute("DELETE FROM pqmls_welcomes WHERE id = ?1", [id])?;
            }
        }
        let joined: Option<(Vec<u8>, Vec<u8>, i64)> = self
            .db()
            .query_row(
                "SELECT welcome_hash, inviter_key, joined_seq FROM pqmls_joins WHERE group_id = ?1",
                [&gid.0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((joined_hash, key, joined_seq)) = joined else {
            self.stats.ignored += 1;
            return Ok(());
        };
        if joined_hash != hash[..] || !self.groups.contains_key(gid) {
            self.stats.ignored += 1;
            return Ok(());
        }
        if !self.void_signed(gid, hash, &key, sig) {
            self.stats.rejected += 1;
            return Ok(());
        }
        tracing::debug!(
            "{}: the Welcome we joined {gid} with was withdrawn: leaving its dead branch",
            self.name
        );
        self.db()
            .execute("DELETE FROM pqmls_joins WHERE group_id = ?1", [&gid.0])?;
        // What we sent on that state reached nobody on the live branch: it goes out again
        // (epoch -1 marks it) when we are in the group again.
        self.db().execute(
            "UPDATE pqmls_messages SET epoch = -1 WHERE group_id = ?1 AND own = 1 AND seq > ?2",
            params![gid.0, joined_seq],
        )?;
        // Invitations we made on that state went to the dead branch too.
        self.void_abandoned(gid, 0, &[])?;
        self.deactivate(gid, true)?;
        self.retry_welcomes(gid)
    }

    /// Withdraws the Welcomes of our add commits at `from_epoch` and later on the branch
    /// we are leaving (merged, other than `keep`): their invitees joined a dead branch.
    fn void_abandoned(&mut self, gid: &GroupId, from_epoch: u64, keep: &[u8]) -> Result<()> {
        let rows: Vec<(Vec<u8>, String)> = self
            .db()
            .prepare_cached(
                "SELECT welcome, invitee FROM pqmls_commits WHERE group_id = ?1 AND epoch >= ?2
                 AND merged = 1 AND own = 1 AND hash != ?3 AND welcome IS NOT NULL AND invitee IS NOT NULL",
            )?
            .query_map(params![gid.0, to_i64(from_epoch), keep], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        for (welcome, invitee) in rows {
            let hash = wire::welcome_hash(&welcome);
            let sig = self
                .signer
                .sign(&wire::void_tbs(&gid.0, &hash))
                .map_err(|e| Error::Crypto(format!("{e:?}")))?;
            tracing::debug!(
                "{}: withdrawing the Welcome of {invitee} to {gid}",
                self.name
            );
            let payload = Wire::Void {
                group_id: gid.0.clone(),
                welcome: hash,
                sig,
            }
            .encode();
            self.enqueue(&wire::inbox_topic(&invitee), payload)?;
        }
        Ok(())
    }

    // ----- ordering -----

    fn has_candidates(&self, gid: &GroupId, epoch: u64) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT 1 FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 0 LIMIT 1",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Merges the winner among the candidates of every group whose settle time has passed.
    pub(crate) fn settle_due(&mut self, now: Instant) -> Result<()> {
        // Candidates that arrived while we could not use them (before a join, during a
        // branch move) get their settle time here.
        let idle: Vec<(GroupId, u64)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.settle_at.is_none() && g.mls.is_active())
            .map(|(id, g)| (id.clone(), g.mls.epoch().as_u64()))
            .collect();
        for (gid, epoch) in idle {
            if self.has_candidates(&gid, epoch)? {
                let settle = self.config.settle;
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.settle_at = Some(now + settle);
                }
            }
        }
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.settle_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for gid in due {
            if let Some(g) = self.groups.get_mut(&gid) {
                g.settle_at = None;
            }
            self.tx(|s| s.settle(&gid))?;
        }
        Ok(())
    }

    /// Merges the smallest-hash valid candidate for the current epoch, then keeps going
    /// while later epochs already have candidates.
    fn settle(&mut self, gid: &GroupId) -> Result<()> {
        let mut advanced = false;
        while self.merge_best(gid)? {
            advanced = true;
            // Candidates for the next epoch that arrived early are merged at once: they
            // have had at least the time we spent on this epoch to compete.
        }
        if advanced {
            self.after_epoch_change(gid)?;
        }
        Ok(())
    }

    /// Tries the candidates of the current epoch in hash order; merges the first valid one.
    fn merge_best(&mut self, gid: &GroupId) -> Result<bool> {
        let Some(g) = self.groups.get(gid) else {
            return Ok(false);
        };
        if !g.mls.is_active() {
            return Ok(false);
        }
        let epoch = g.mls.epoch().as_u64();
        let candidates: Vec<(Vec<u8>, Vec<u8>, bool)> = self
            .db()
            .prepare_cached(
                "SELECT hash, payload, own FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 0 ORDER BY hash",
            )?
            .query_map(params![gid.0, to_i64(epoch)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        if candidates.is_empty() {
            return Ok(false);
        }
        self.take_snapshot(gid, epoch)?;
        for (hash, payload, own) in candidates {
            match self.try_merge(gid, &hash, &payload, own)? {
                Merge::Merged => return Ok(true),
                Merge::Left => return Ok(false),
                Merge::Invalid => {}
            }
        }
        // Commits for our epoch that none of us can use: we are on another branch.
        self.report_fork(gid, epoch)?;
        Ok(false)
    }

    fn storage_keys(&self, gid: &GroupId) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let g = self.group(gid)?;
        let key = BinaryCodec::to_vec(g.mls.group_id()).map_err(|e| Error::Mls(e.to_string()))?;
        let leaf = match g.mls.own_leaf_node() {
            Some(l) => Some(
                BinaryCodec::to_vec(l.encryption_key()).map_err(|e| Error::Mls(e.to_string()))?,
            ),
            None => None,
        };
        Ok((key, leaf))
    }

    fn take_snapshot(&mut self, gid: &GroupId, epoch: u64) -> Result<()> {
        let (key, leaf) = self.storage_keys(gid)?;
        db::snapshot(self.db(), &gid.0, epoch, &key, leaf.as_deref())
    }

    /// Processes and merges one candidate; `false` if it is not valid for our state.
    fn try_merge(
        &mut self,
        gid: &GroupId,
        hash: &[u8],
        payload: &[u8],
        own: bool,
    ) -> Result<Merge> {
        let before: BTreeSet<String> = self.member_list(gid)?.into_iter().map(|(_, n)| n).collect();
        let old_epoch = self.group(gid)?.mls.epoch().as_u64();
        let mut removed_self = false;
        if own {
            let g = self
                .groups
                .get_mut(gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
            if g.mls.pending_commit().is_none() {
                return Ok(Merge::Invalid);
            }
            g.mls.merge_pending_commit(&self.provider).map_err(mls)?;
        } else {
            let Some(Wire::Handshake { mls: bytes }) = Wire::decode(payload) else {
                self.invalid_commit(gid, hash)?;
                return Ok(Merge::Invalid);
            };
            let Some(pm) = self.parse_protocol(gid, &bytes) else {
                self.invalid_commit(gid, hash)?;
                return Ok(Merge::Invalid);
            };
            let processed = {
                let g = self
                    .groups
                    .get_mut(gid)
                    .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                g.mls.process_message(&self.provider, pm)
            };
            let staged = match processed.map(|p| p.into_content()) {
                Ok(ProcessedMessageContent::StagedCommitMessage(sc)) => sc,
                Ok(_) => {
                    self.invalid_commit(gid, hash)?;
                    return Ok(Merge::Invalid);
                }
                Err(e) => {
                    tracing::debug!(
                        "{}: group {gid} epoch {old_epoch}: candidate {} invalid: {e:?}",
                        self.name,
                        short(hash)
                    );
                    self.invalid_commit(gid, hash)?;
                    return Ok(Merge::Invalid);
                }
            };
            removed_self = staged.self_removed();
            self.fail(FailPoint::MergeBeforeCommit)?;
            let g = self
                .groups
                .get_mut(gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
            g.mls
                .merge_staged_commit(&self.provider, *staged)
                .map_err(mls)?;
        }
        self.db()
            .prepare_cached(
                "UPDATE pqmls_commits SET merged = 1 WHERE group_id = ?1 AND hash = ?2",
            )?
            .execute(params![gid.0, hash])?;
        self.stats.commits_merged += 1;
        // Effects of our own commit: the Welcome goes out, the intent is done.
        if own {
            let row: Option<OwnCommitEffects> = self
                .db()
                .query_row(
                    "SELECT welcome, invitee, intent FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2",
                    params![gid.0, hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            if let Some((welcome, invitee, intent)) = row {
                if let (Some(welcome), Some(invitee)) = (welcome, invitee) {
                    let payload = Wire::Welcome { mls: welcome }.encode();
                    self.stats.last_welcome_bytes = payload.len() as u64;
                    self.enqueue(&wire::inbox_topic(&invitee), payload)?;
                }
                if let Some(intent) = intent {
                    let kind: Option<String> = self
                        .db()
                        .query_row(
                            "SELECT kind FROM pqmls_intents WHERE id = ?1",
                            [intent],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if kind.as_deref() == Some("update") {
                        self.db().execute(
                            "UPDATE pqmls_groups SET last_update_ms = ?2 WHERE group_id = ?1",
                            params![gid.0, to_i64(now_ms())],
                        )?;
                    }
                    // Done, unless a branch move undoes this commit.
                    self.db()
                        .prepare_cached("UPDATE pqmls_intents SET done_epoch = ?2 WHERE id = ?1")?
                        .execute(params![intent, to_i64(old_epoch)])?;
                }
            }
        }
        let active = self.group(gid)?.mls.is_active() && !removed_self;
        let new_epoch = self.group(gid)?.mls.epoch().as_u64();
        tracing::debug!(
            "{}: group {gid} epoch {old_epoch} -> {new_epoch} by {}{}",
            self.name,
            short(hash),
            if own { " (own)" } else { "" }
        );
        if !active {
            // Tentative until the grace period ends: a better commit for this epoch or an
            // earlier one could still put us back on a branch where we are a member.
            if let Some(g) = self.groups.get_mut(gid) {
                g.removed_at = Some(Instant::now());
            }
            return Ok(Merge::Left);
        }
        let after: BTreeSet<String> = self.member_list(gid)?.into_iter().map(|(_, n)| n).collect();
        for m in after.difference(&before) {
            self.events.push(Event::MemberJoined {
                group: gid.clone(),
                member: m.clone(),
            });
        }
        for m in before.difference(&after) {
            self.events.push(Event::MemberLeft {
                group: gid.clone(),
                member: m.clone(),
            });
        }
        self.events.push(Event::EpochChanged {
            group: gid.clone(),
            epoch: new_epoch,
        });
        self.record_epoch(gid)?;
        Ok(Merge::Merged)
    }

    fn invalid_commit(&mut self, gid: &GroupId, hash: &[u8]) -> Result<()> {
        // Kept (so it is not fetched and tried again) but marked as never mergeable here.
        self.db()
            .prepare_cached("UPDATE pqmls_commits SET merged = -1 WHERE group_id = ?1 AND hash = ?2 AND merged = 0")?
            .execute(params![gid.0, hash])?;
        self.stats.commits_rejected += 1;
        Ok(())
    }

    /// Drops our state of a group. `keep_pending`: the buffered messages stay, for a
    /// state we expect to get soon (after a withdrawn Welcome, the live branch's).
    fn deactivate(&mut self, gid: &GroupId, keep_pending: bool) -> Result<()> {
        self.db().execute(
            "UPDATE pqmls_groups SET active = 0 WHERE group_id = ?1",
            [&gid.0],
        )?;
        self.db()
            .execute("DELETE FROM pqmls_intents WHERE group_id = ?1", [&gid.0])?;
        if !keep_pending {
            self.db()
                .execute("DELETE FROM pqmls_pending WHERE group_id = ?1", [&gid.0])?;
        }
        db::prune_snapshots(self.db(), &gid.0, u64::MAX)?;
        if let Some(mut g) = self.groups.remove(gid) {
            self.topics.remove(&g.topic);
            self.todo.unsubscribe.push(g.topic.clone());
            g.mls
                .delete(self.provider.storage())
                .map_err(Error::Database)?;
        }
        self.events.push(Event::Removed { group: gid.clone() });
        Ok(())
    }

    /// Housekeeping after the epoch moved: prune, replay buffered messages, re-propose.
    fn after_epoch_change(&mut self, gid: &GroupId) -> Result<()> {
        let Some(g) = self.groups.get(gid) else {
            return Ok(());
        };
        let epoch = g.mls.epoch().as_u64();
        let keep_from = epoch.saturating_sub(self.config.rollback_window);
        db::prune_snapshots(self.db(), &gid.0, keep_from)?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_commits WHERE group_id = ?1 AND epoch < ?2")?
            .execute(params![gid.0, to_i64(keep_from)])?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_pending WHERE group_id = ?1 AND epoch < ?2")?
            .execute(params![gid.0, to_i64(keep_from)])?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_intents WHERE group_id = ?1 AND done_epoch < ?2")?
            .execute(params![gid.0, to_i64(keep_from)])?;
        self.replay_pending(gid)?;
        if let Some(g) = self.groups.get_mut(gid) {
            g.fork_reported = None;
            g.foreign = None;
            g.progress_at = Instant::now();
        }
        if self.groups.contains_key(gid) && self.has_candidates(gid, epoch)? {
            let settle = self.config.settle;
            if let Some(g) = self.groups.get_mut(gid) {
                g.settle_at.get_or_insert(Instant::now() + settle);
            }
        }
        self.drive_intents(gid)
    }

    /// Handles the buffered messages that may now be processable.
    fn replay_pending(&mut self, gid: &GroupId) -> Result<()> {
        let Some(g) = self.groups.get(gid) else {
            return Ok(());
        };
        let epoch = g.mls.epoch().as_u64();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT id, payload FROM pqmls_pending WHERE group_id = ?1 AND epoch <= ?2 ORDER BY epoch",
            )?
            .query_map(params![gid.0, to_i64(epoch)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, payload) in rows {
            self.db()
                .prepare_cached("DELETE FROM pqmls_pending WHERE group_id = ?1 AND id = ?2")?
                .execute(params![gid.0, id])?;
            let Some(Wire::Application { auth, mls }) = Wire::decode(&payload) else {
                continue;
            };
            let mut mid = [0u8; 32];
            if id.len() == 32 {
                mid.copy_from_slice(&id);
            }
            if !self.groups.contains_key(gid) {
                break;
            }
            self.on_application(gid, MessageId(mid), &payload, auth, &mls)?;
        }
        Ok(())
    }

    /// A valid-looking commit for a past epoch: if its hash beats the one we merged there,
    /// move to its branch.
    fn maybe_switch(&mut self, gid: &GroupId, epoch: u64, hash: &[u8; 32]) -> Result<()> {
        let merged: Option<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT hash FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 1",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
            .optional()?;
        let Some(merged) = merged else {
            return Ok(());
        };
        if hash[..] >= merged[..] {
            return Ok(());
        }
        if !db::has_snapshot(self.db(), &gid.0, epoch)? {
            tracing::debug!(
                "{}: group {gid}: better commit {} for epoch {epoch} but no snapshot",
                self.name,
                short(hash)
            );
            return Ok(());
        }
        tracing::debug!(
            "{}: group {gid}: trying better commit {} for epoch {epoch}",
            self.name,
            short(hash)
        );
        self.switch_branch(gid, epoch, hash)
    }

    /// Restores the snapshot at `epoch`, merges the commit `hash` and replays what follows.
    /// Nothing changes if the commit is not valid there.
    fn switch_branch(&mut self, gid: &GroupId, epoch: u64, hash: &[u8; 32]) -> Result<()> {
        let current = self.group(gid)?.mls.epoch().as_u64();
        let (key, _) = self.storage_keys(gid)?;
        self.db().execute_batch("SAVEPOINT pqmls_switch")?;
        let attempt = (|| -> Result<bool> {
            db::restore(self.db(), &gid.0, epoch, &key)?;
            let mls = MlsGroup::load(
                self.provider.storage(),
                &openmls::group::GroupId::from_slice(&gid.0),
            )
            .map_err(mls)?
            .ok_or_else(|| Error::Mls("snapshot has no group".into()))?;
            self.group_mut(gid)?.mls = mls;
            let payload: Vec<u8> = self.db().query_row(
                "SELECT payload FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2",
                params![gid.0, &hash[..]],
                |r| r.get(0),
            )?;
            Ok(self.try_merge(gid, hash, &payload, false)? != Merge::Invalid)
        })();
        match attempt {
            Ok(true) => {
                self.db().execute_batch("RELEASE pqmls_switch")?;
            }
            Ok(false) | Err(_) => {
                self.db()
                    .execute_batch("ROLLBACK TO pqmls_switch; RELEASE pqmls_switch")?;
                self.reload_groups()?;
                return match attempt {
                    Err(e) => Err(e),
                    _ => Ok(()),
                };
            }
        }
        // The abandoned branch: its merged commits are candidates again, our own commits in
        // it can no longer be merged, and their invitations must be redone (the Welcomes
        // that went out are withdrawn).
        self.void_abandoned(gid, epoch, &hash[..])?;
        self.db().execute(
            "UPDATE pqmls_commits SET merged = CASE own WHEN 1 THEN -1 ELSE 0 END
             WHERE group_id = ?1 AND epoch >= ?2 AND merged = 1 AND hash != ?3",
            params![gid.0, to_i64(epoch), &hash[..]],
        )?;
        // Operations our abandoned commits did are to do again; an invitation needs a
        // fresh key package, since the Welcome that went out consumed the old one.
        self.db().execute(
            "UPDATE pqmls_intents SET done_epoch = NULL,
                 key_package = CASE kind WHEN 'add' THEN NULL ELSE key_package END
             WHERE group_id = ?1 AND done_epoch >= ?2",
            params![gid.0, to_i64(epoch)],
        )?;
        // Our own candidates of the abandoned branch (and our losing one at `epoch`) can
        // never be merged: OpenMLS's pending commit is now whatever the snapshot held.
        self.db().execute(
            "UPDATE pqmls_commits SET merged = -1 WHERE group_id = ?1 AND epoch >= ?2 AND own = 1 AND merged = 0",
            params![gid.0, to_i64(epoch)],
        )?;
        // Failed candidates of later epochs may be valid on this branch.
        self.db().execute(
            "UPDATE pqmls_commits SET merged = 0 WHERE group_id = ?1 AND epoch > ?2 AND merged = -1 AND own = 0",
            params![gid.0, to_i64(epoch)],
        )?;
        while self.merge_best(gid)? {}
        if !self.groups.contains_key(gid) {
            return Ok(());
        }
        let now_epoch = self.group(gid)?.mls.epoch().as_u64();
        if let Some(g) = self.groups.get_mut(gid)
            && g.mls.is_active()
        {
            g.removed_at = None;
        }
        self.db().execute(
            "DELETE FROM pqmls_epochs WHERE group_id = ?1 AND epoch > ?2",
            params![gid.0, to_i64(now_epoch)],
        )?;
        self.stats.forks_recovered += 1;
        self.events.push(Event::ForkRecovered {
            group: gid.clone(),
            from_epoch: epoch,
            epoch: now_epoch,
        });
        tracing::debug!(
            "{}: group {gid} moved branch at {epoch} ({current} -> {now_epoch})",
            self.name
        );
        if !self.group(gid)?.mls.is_active() {
            // The winning branch removed us: nothing to re-send, nothing to propose.
            return Ok(());
        }
        // Our messages sent in the abandoned epochs did not reach the winning branch.
        self.resend_own(gid, to_i64(epoch + 1))?;
        self.after_epoch_change(gid)
    }

    /// A member asks to be removed and invited again: if it is a member in our view, the
    /// signature is its, and our view is ahead of its, we do it.
    fn on_rejoin(
        &mut self,
        gid: &GroupId,
        name: &str,
        epoch: u64,
        auth: [u8; wire::AUTH_TAG_LEN],
        nonce: [u8; 16],
        sig: &[u8],
    ) -> Result<()> {
        let g = self.group(gid)?;
        if !g.mls.is_active() || name == self.name {
            self.stats.ignored += 1;
            return Ok(());
        }
        let ours = (
            g.mls.epoch().as_u64(),
            wire::auth_tag(g.mls.epoch_authenticator().as_slice()),
        );
        let Some(member) = g
            .mls
            .members()
            .find(|m| credential_name(&m.credential) == name)
        else {
            self.stats.ignored += 1;
            return Ok(());
        };
        let tbs = wire::rejoin_tbs(&gid.0, name, epoch, &auth, &nonce);
        if self
            .provider
            .crypto()
            .verify_signature(
                self.config.suite.signature_algorithm(),
                &tbs,
                &member.signature_key,
                sig,
            )
            .is_err()
        {
            self.stats.rejected += 1;
            return Ok(());
        }
        if !wire::ahead(ours, (epoch, auth)) {
            // Not behind us: not ours to repair.
            self.stats.ignored += 1;
            return Ok(());
        }
        let open: i64 = self.db().query_row(
            "SELECT COUNT(*) FROM pqmls_intents WHERE group_id = ?1 AND user = ?2 AND done_epoch IS NULL",
            params![gid.0, name],
            |r| r.get(0),
        )?;
        if open == 0 {
            tracing::debug!("{}: re-inviting {name} (stuck at epoch {epoch})", self.name);
            for kind in ["remove", "add"] {
                self.db().execute(
                    "INSERT INTO pqmls_intents (group_id, kind, user) VALUES (?1, ?2, ?3)",
                    params![gid.0, kind, name],
                )?;
            }
            self.drive_intents(gid)?;
        }
        Ok(())
    }

    /// Asks to be invited again in groups where we are stuck: others' messages show a view
    /// ahead of ours, and we have not moved for `stall`.
    pub(crate) fn request_rejoins(&mut self, now: Instant) -> Result<()> {
        let Some(stall) = self.config.rejoin_after else {
            return Ok(());
        };
        let stuck: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.mls.is_active()
                    && now >= g.progress_at + stall
                    && g.rejoin_at.is_none_or(|t| now >= t + stall)
                    && g.foreign.is_some_and(|f| {
                        wire::ahead(
                            f,
                            (
                                g.mls.epoch().as_u64(),
                                wire::auth_tag(g.mls.epoch_authenticator().as_slice()),
                            ),
                        )
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for gid in stuck {
            self.tx(|s| {
                s.retry_welcomes(&gid)?;
                let Some(g) = s.groups.get_mut(&gid) else {
                    return Ok(());
                };
                if g.progress_at > now || !g.mls.is_active() {
                    return Ok(());
                }
                g.rejoin_at = Some(now);
                let epoch = g.mls.epoch().as_u64();
                let auth = wire::auth_tag(g.mls.epoch_authenticator().as_slice());
                let topic = g.topic.clone();
                let nonce = s.random::<16>()?;
                let tbs = wire::rejoin_tbs(&gid.0, &s.name, epoch, &auth, &nonce);
                let sig = s
                    .signer
                    .sign(&tbs)
                    .map_err(|e| Error::Crypto(format!("{e:?}")))?;
                tracing::debug!(
                    "{}: stuck at epoch {epoch} in {gid}, asking to be re-invited",
                    s.name
                );
                s.stats.rejoin_requests += 1;
                let payload = Wire::Rejoin {
                    name: s.name.clone(),
                    epoch,
                    auth,
                    nonce,
                    sig,
                }
                .encode();
                s.enqueue(&topic, payload)
            })?;
        }
        Ok(())
    }

    /// Forgets the groups we were removed from longer than the grace period ago.
    pub(crate) fn finalize_removals(&mut self, now: Instant) -> Result<()> {
        // Removed (tentatively): a Welcome we kept aside may be the invitation back.
        let removed: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.removed_at.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for gid in removed {
            let kept: bool = self
                .db()
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM pqmls_welcomes WHERE group_id = ?1)")?
                .query_row([&gid.0], |r| r.get(0))?;
            if kept {
                self.tx(|s| s.retry_welcomes(&gid))?;
            }
        }
        let grace = self.config.removal_grace;
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.removed_at.is_some_and(|t| t + grace <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for gid in due {
            self.tx(|s| s.deactivate(&gid, false))?;
        }
        Ok(())
    }

    /// Re-sends our messages recorded at `from_epoch` or later, or with `from_epoch` -1,
    /// those marked -1 (sent on a state that turned out dead), at the current epoch
    /// (receivers drop the ones they already have, by uid).
    fn resend_own(&mut self, gid: &GroupId, from_epoch: i64) -> Result<()> {
        let now_epoch = self.group(gid)?.mls.epoch().as_u64();
        let (sql, arg) = if from_epoch < 0 {
            (
                "SELECT uid, sent_ms, body FROM pqmls_messages WHERE group_id = ?1 AND own = 1 AND epoch = ?2 ORDER BY seq",
                -1,
            )
        } else {
            (
                "SELECT uid, sent_ms, body FROM pqmls_messages WHERE group_id = ?1 AND own = 1 AND epoch >= ?2 ORDER BY seq",
                from_epoch,
            )
        };
        let resend: Vec<(Vec<u8>, i64, Vec<u8>)> = self
            .db()
            .prepare_cached(sql)?
            .query_map(params![gid.0, arg], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        for (uid, sent_ms, body) in resend {
            let Ok(u) = <[u8; 16]>::try_from(uid.as_slice()) else {
                continue;
            };
            let payload = AppPayload {
                uid: u,
                sent_ms: to_u64(sent_ms),
                content: Content::Text(body),
            };
            self.encrypt_app(gid, &payload)?;
            self.db().execute(
                "UPDATE pqmls_messages SET epoch = ?3 WHERE group_id = ?1 AND uid = ?2",
                params![gid.0, uid, to_i64(now_epoch)],
            )?;
            self.stats.resent += 1;
        }
        Ok(())
    }

    /// Queues self-updates for groups whose last one is older than the interval.
    pub(crate) fn schedule_updates(&mut self) -> Result<()> {
        let Some(interval) = self.config.self_update_interval else {
            return Ok(());
        };
        let due_before = to_i64(
            now_ms().saturating_sub(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)),
        );
        let due: Vec<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT g.group_id FROM pqmls_groups g WHERE g.active = 1 AND g.last_update_ms < ?1
                 AND NOT EXISTS (SELECT 1 FROM pqmls_intents i WHERE i.group_id = g.group_id AND i.kind = 'update')",
            )?
            .query_map([due_before], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in due {
            let gid = GroupId(id);
            if self.groups.contains_key(&gid) {
                self.add_intent(&gid, "update", "", None)?;
            }
        }
        Ok(())
    }

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
}

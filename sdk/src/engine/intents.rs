//! Operations we want committed (add, remove, update, leave), our own commits and
//! application messages.
//!
//! An operation is an *intent* row that stays until a merged commit of ours did it, and is
//! committed again in the next epoch if ours lost the ordering. Adds keep the key package
//! they claimed; a Welcome is sent only when our add commit is merged.

use std::collections::BTreeSet;

use openmls::prelude::*;
use rusqlite::{OptionalExtension, params};
use tokio::time::Instant;

use super::{State, ser};
use crate::GroupId;
use crate::config::FailPoint;
use crate::db::{to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::ReceivedMessage;
use crate::identity::UserId;
use crate::wire::{self, AppPayload, Content, Wire};
use pqmls_transport::MessageId;

/// The kinds of intents.
pub(crate) const ADD: &str = "add";
pub(crate) const REMOVE: &str = "remove";
pub(crate) const UPDATE: &str = "update";
pub(crate) const LEAVE: &str = "leave";
/// A member that could not follow the group asked to be added again
/// (`recovery::on_lost`): its old leaf is removed and its new key package added in one
/// commit.
pub(crate) const READD: &str = "readd";

/// The most members one commit adds (`Client::invite_many`; a longer batch goes into
/// several commits, one per epoch). It keeps a commit far under the smallest transport
/// limit, 4 MiB per libp2p gossip message (`Limits::max_message_size`; Waku segments up
/// to 16 MiB): an Add carries the invitee's key package, about 2.7 KB on 0x004F and
/// about 15 KB on the ML-KEM-1024 + ML-DSA-87 suites, so 64 are at most about 1 MB. The
/// Welcome grows by one encrypted group secret per invitee (1.2-1.7 KB).
pub const MAX_ADDS_PER_COMMIT: usize = 64;

/// An add intent ready to be committed.
struct ReadyAdd {
    id: i64,
    user: UserId,
    key_package: KeyPackage,
    /// SHA-256 of the HPKE key of the leaf it adds.
    added: [u8; 32],
}

/// What an add intent row is ready for.
enum AddRow {
    /// To be committed (boxed: a key package is large beside the other variants).
    Ready(Box<ReadyAdd>),
    /// Its key package is being fetched.
    Waiting,
    /// Dropped (a member already, an unusable key package).
    Dropped,
}

/// The invitees of an own commit as `pqmls_commits.invitee` and `pqmls_sent_voids.invitee`
/// store them: hex user ids separated by commas (one id for an `invite`).
pub(crate) fn encode_invitees<'a>(users: impl IntoIterator<Item = &'a UserId>) -> String {
    super::ordering::encode_list(users)
}

/// The invitees [`encode_invitees`] stored; what does not parse is left out.
pub(crate) fn decode_invitees(text: &str) -> Vec<UserId> {
    super::ordering::decode_list(text)
}

impl State {
    /// Records an operation to commit and tries to commit it now. `user` is the hex id of
    /// the member to add or remove (empty for update and leave).
    pub(crate) fn add_intent(
        &mut self,
        gid: &GroupId,
        kind: &str,
        user: Option<&UserId>,
        key_package: Option<Vec<u8>>,
    ) -> Result<()> {
        self.active_members(gid)?;
        let user = user.map(UserId::to_string).unwrap_or_default();
        self.tx(|s| {
            s.db().execute(
                "INSERT INTO pqmls_intents (group_id, kind, user, key_package) VALUES (?1, ?2, ?3, ?4)",
                params![gid.0, kind, user, key_package],
            )?;
            s.drive_intents(gid)
        })
    }

    /// Records one add intent per (user, key package), in this order, and commits them:
    /// one commit takes up to [`MAX_ADDS_PER_COMMIT`] of them (`Client::invite_many`).
    pub(crate) fn add_intents(
        &mut self,
        gid: &GroupId,
        adds: Vec<(UserId, Vec<u8>)>,
    ) -> Result<()> {
        self.active_members(gid)?;
        self.tx(|s| {
            let mut batch: Option<i64> = None;
            for (user, key_package) in &adds {
                let id = s
                    .db()
                    .prepare_cached(
                        "INSERT INTO pqmls_intents (group_id, kind, user, key_package, batch) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .insert(params![gid.0, ADD, user.to_string(), key_package, batch])?;
                // The batch is numbered by its first row.
                if batch.is_none() {
                    s.db()
                        .prepare_cached("UPDATE pqmls_intents SET batch = ?1 WHERE id = ?1")?
                        .execute([id])?;
                    batch = Some(id);
                }
            }
            s.drive_intents(gid)
        })
    }

    /// Commits the first outstanding operation of a group, unless a commit of ours is
    /// already waiting to be ordered; drops operations the group already reflects.
    pub(crate) fn drive_intents(&mut self, gid: &GroupId) -> Result<()> {
        let Some(group) = self.groups.get(gid) else {
            return Ok(());
        };
        // A state we know is dead (`Event::Unrecoverable`) makes no commits: they would
        // go to a branch nobody else is on (an add there leaves its invitee on it). The
        // operations wait for the way back.
        if !group.mls.is_active()
            || group.mls.pending_commit().is_some()
            || group.unrecoverable.is_some()
        {
            return Ok(());
        }
        let epoch = group.mls.epoch().as_u64();
        let own = group.mls.own_leaf_index().u32();
        type Row = (i64, String, String, Option<Vec<u8>>, Option<i64>);
        let intents: Vec<Row> = self
            .db()
            .prepare_cached(
                "SELECT id, kind, user, key_package, batch FROM pqmls_intents WHERE group_id = ?1 AND done_epoch IS NULL ORDER BY id",
            )?
            .query_map([&gid.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<Result<_, _>>()?;
        // Add intents already looked at in this pass (with their batch).
        let mut handled: BTreeSet<i64> = BTreeSet::new();
        for (pos, (id, kind, user, key_package, batch)) in intents.iter().enumerate() {
            let (id, user) = (*id, user.as_str());
            if handled.contains(&id) {
                continue;
            }
            let target: Option<UserId> = user.parse().ok();
            let members = self.member_list(gid)?;
            let leaf =
                target.and_then(|t| members.iter().find(|(_, m)| m.id == t).map(|(i, _)| *i));
            match kind.as_str() {
                ADD => {
                    // An `invite` is committed alone; the adds of one `invite_many` (one
                    // batch number) together, once each has its key package, at most
                    // `MAX_ADDS_PER_COMMIT` per commit (the rest in the next epoch).
                    let rows: Vec<&Row> = match batch {
                        None => vec![&intents[pos]],
                        Some(b) => intents[pos..]
                            .iter()
                            .filter(|r| r.1 == ADD && r.4 == Some(*b))
                            .collect(),
                    };
                    let mut ready: Vec<ReadyAdd> = Vec::new();
                    let mut waiting = false;
                    for (id, _, user, key_package, _) in rows {
                        handled.insert(*id);
                        match self.ready_add(
                            *id,
                            user,
                            key_package.as_deref(),
                            batch.is_some(),
                            &members,
                        )? {
                            AddRow::Ready(add) => {
                                // A user listed twice waits for the first add to merge
                                // (`invite_many` refuses that; older rows may hold it).
                                if ready.len() < MAX_ADDS_PER_COMMIT
                                    && !ready.iter().any(|r| r.user == add.user)
                                {
                                    ready.push(*add);
                                }
                            }
                            AddRow::Waiting => waiting = true,
                            AddRow::Dropped => {}
                        }
                    }
                    if waiting || ready.is_empty() {
                        continue;
                    }
                    if self.commit_adds(gid, epoch, ready)? {
                        return Ok(());
                    }
                }
                READD => {
                    // Still listed (a removal since is never undone), not us, and not
                    // done by someone else's merged commit.
                    let (Some(target), Some(old), Some(kp_bytes)) =
                        (target, leaf.filter(|l| *l != own), key_package)
                    else {
                        self.drop_intent(id)?;
                        continue;
                    };
                    if self.readd_done(gid, kp_bytes)? {
                        self.drop_intent(id)?;
                        continue;
                    }
                    let Ok(kp) = self.validate_key_package(&target, kp_bytes) else {
                        self.drop_intent(id)?;
                        continue;
                    };
                    let Some(added) = super::key_package_leaf_key(&kp) else {
                        self.drop_intent(id)?;
                        continue;
                    };
                    let bundle = {
                        let g = self
                            .groups
                            .get_mut(gid)
                            .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                        let staged = g
                            .mls
                            .commit_builder()
                            .propose_removals([LeafNodeIndex::new(old)])
                            .propose_adds([kp])
                            .load_psks(self.provider.storage());
                        match staged.and_then(|b| {
                            b.build(
                                self.provider.rand(),
                                self.provider.crypto(),
                                &self.signer,
                                |_| true,
                            )
                        }) {
                            Ok(b) => match b.stage_commit(&self.provider) {
                                Ok(bundle) => bundle,
                                Err(e) => {
                                    self.refused_intent(id, kind, user, &e)?;
                                    continue;
                                }
                            },
                            Err(e) => {
                                self.refused_intent(id, kind, user, &e)?;
                                continue;
                            }
                        }
                    };
                    let (commit, welcome, _) = bundle.into_messages();
                    return self.own_commit(
                        gid,
                        epoch,
                        id,
                        &commit,
                        welcome.as_ref(),
                        &[(target, added)],
                    );
                }
                REMOVE => {
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
                                self.refused_intent(id, kind, user, &e)?;
                                continue;
                            }
                        }
                    };
                    return self.own_commit(gid, epoch, id, &commit, None, &[]);
                }
                UPDATE if self.config.grind > 1 => {
                    let commit = match self.grind_update(gid) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!("grinding failed: {e}");
                            self.drop_intent(id)?;
                            continue;
                        }
                    };
                    return self.own_commit(gid, epoch, id, &commit, None, &[]);
                }
                UPDATE => {
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
                                self.refused_intent(id, kind, user, &e)?;
                                continue;
                            }
                        }
                    };
                    return self.own_commit(gid, epoch, id, &commit, None, &[]);
                }
                LEAVE => {
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

    /// An add intent's key package, checked; drops the row if the user is a member
    /// already or the key package is unusable, and queues a fetch if it has none.
    fn ready_add(
        &mut self,
        id: i64,
        user: &str,
        key_package: Option<&[u8]>,
        batched: bool,
        members: &[(u32, crate::identity::Member)],
    ) -> Result<AddRow> {
        let Ok(target) = user.parse::<UserId>() else {
            self.drop_intent(id)?;
            return Ok(AddRow::Dropped);
        };
        if members.iter().any(|(_, m)| m.id == target) {
            self.drop_intent(id)?;
            return Ok(AddRow::Dropped);
        }
        let Some(kp_bytes) = key_package else {
            // A batched row is fetched once at a time (its batch is driven again after
            // each of its rows' fetches); an `invite` row as always.
            if !batched || self.fetching.insert(id) {
                self.todo.fetch.push((id, target));
            }
            return Ok(AddRow::Waiting);
        };
        let kp = match self.validate_key_package(&target, kp_bytes) {
            Ok(kp) => kp,
            Err(e) => {
                tracing::warn!("dropping the invitation of {}: {e}", target.short());
                self.drop_intent(id)?;
                return Ok(AddRow::Dropped);
            }
        };
        let Some(added) = super::key_package_leaf_key(&kp) else {
            self.drop_intent(id)?;
            return Ok(AddRow::Dropped);
        };
        Ok(AddRow::Ready(Box::new(ReadyAdd {
            id,
            user: target,
            key_package: kp,
            added,
        })))
    }

    /// Commits the adds of `batch` in one commit; `false` if OpenMLS refused every one.
    /// If it refuses the batch, the first add is tried alone (the others wait for the
    /// next epoch); an add refused alone has its intent dropped, and the rest is tried.
    fn commit_adds(&mut self, gid: &GroupId, epoch: u64, mut batch: Vec<ReadyAdd>) -> Result<bool> {
        let mut rest: Vec<ReadyAdd> = Vec::new();
        let (commit, welcome) = loop {
            let Some((first_id, first_user)) = batch.first().map(|a| (a.id, a.user)) else {
                return Ok(false);
            };
            let kps: Vec<KeyPackage> = batch.iter().map(|a| a.key_package.clone()).collect();
            let made = self
                .groups
                .get_mut(gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?
                .mls
                .add_members(&self.provider, &self.signer, &kps);
            match made {
                Ok((commit, welcome, _)) => break (commit, welcome),
                Err(e) if batch.len() > 1 => {
                    tracing::warn!(
                        "OpenMLS refused {} adds in one commit ({e}); trying the first alone",
                        batch.len()
                    );
                    rest = batch.split_off(1);
                }
                Err(e) => {
                    self.refused_intent(first_id, ADD, &first_user.to_string(), &e)?;
                    batch = std::mem::take(&mut rest);
                }
            }
        };
        let Some(first_id) = batch.first().map(|a| a.id) else {
            return Ok(false);
        };
        // One key package per add commit: if this commit loses for now and the add is
        // committed again, the two Welcomes must not share a key package. The invitee's
        // join with one consumes it, and then it cannot open the other, which may be the
        // one that wins (grinding seed 164: the invitee listed on the chain, holding
        // nothing).
        for a in &batch {
            self.db()
                .prepare_cached("UPDATE pqmls_intents SET key_package = NULL WHERE id = ?1")?
                .execute([a.id])?;
        }
        let invitees: Vec<(UserId, [u8; 32])> = batch.iter().map(|a| (a.user, a.added)).collect();
        self.own_commit(gid, epoch, first_id, &commit, Some(&welcome), &invitees)?;
        Ok(true)
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

    pub(crate) fn drop_intent(&mut self, id: i64) -> Result<()> {
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

    /// Drops an add intent whose user has no key package. The rest of its batch, if it
    /// was waiting for this one, is committed now.
    pub(crate) fn abandon_intent(&mut self, id: i64) -> Result<()> {
        self.tx(|s| {
            let batched: Option<Vec<u8>> = s
                .db()
                .query_row(
                    "SELECT group_id FROM pqmls_intents WHERE id = ?1 AND batch IS NOT NULL",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            s.drop_intent(id)?;
            match batched {
                Some(group) => s.drive_intents(&GroupId(group)),
                None => Ok(()),
            }
        })
    }

    /// The grinding adversary of the simulation ([`crate::Config::grind`]): makes that
    /// many self-update commits and keeps the one with the smallest commit hash as
    /// OpenMLS's pending commit.
    fn grind_update(&mut self, gid: &GroupId) -> Result<MlsMessageOut> {
        let (key, _) = self.storage_keys(gid)?;
        let mut best: Option<([u8; 32], MlsMessageOut, Vec<u8>)> = None;
        for _ in 0..self.config.grind {
            let commit = {
                let g = self
                    .groups
                    .get_mut(gid)
                    .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                if g.mls.pending_commit().is_some() {
                    g.mls
                        .clear_pending_commit(self.provider.storage())
                        .map_err(|e| Error::Mls(format!("{e:?}")))?;
                }
                g.mls
                    .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
                    .map_err(mls)?
                    .commit()
                    .clone()
            };
            let hash = wire::commit_hash(&ser(&commit)?);
            let state: Vec<u8> = self.db().prepare_cached("SELECT group_data FROM openmls_group_data WHERE group_id = ?1 AND data_type = 'group_state'")?.query_row(
                [&key],
                |r| r.get(0),
            )?;
            if best.as_ref().is_none_or(|(h, _, _)| hash < *h) {
                best = Some((hash, commit, state));
            }
        }
        let (_, commit, state) = best.ok_or_else(|| Error::Mls("no commit".into()))?;
        self.db().prepare_cached("UPDATE openmls_group_data SET group_data = ?2 WHERE group_id = ?1 AND data_type = 'group_state'")?.execute(
            params![key, state],
        )?;
        self.reload_group(gid)?;
        Ok(commit)
    }

    /// Publishes an own commit as a candidate for `epoch`.
    fn own_commit(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        intent: i64,
        commit: &MlsMessageOut,
        welcome: Option<&MlsMessageOut>,
        invitees: &[(UserId, [u8; 32])],
    ) -> Result<()> {
        let mls = ser(commit)?;
        let hash = wire::commit_hash(&mls);
        // The pending commit is for the epoch the group is at: our priority there.
        let priority = self.own_priority(gid)?;
        let payload = Wire::Handshake { priority, mls }.encode();
        let welcome = welcome.map(ser).transpose()?;
        // OpenMLS holds one pending commit, this one: an older own candidate still
        // waiting (one made on a branch we have since left) can no longer be merged, and
        // must not stand for this one when `try_merge` merges "the" pending commit.
        self.db()
            .prepare_cached(
                "UPDATE pqmls_commits SET merged = -1 WHERE group_id = ?1 AND own = 1 AND merged = 0",
            )?
            .execute([&gid.0])?;
        // What the ordering needs to know of a candidate (its author's leaf and the
        // leaves it removes), known for our own from the start: a round-2 choice that
        // names this commit after a branch move gave it up, before it was ever settled
        // here, must not wait for a processing that never comes (`contender_of`).
        let (author, removes) = {
            let g = self.group(gid)?;
            let removes: BTreeSet<u32> = g
                .mls
                .pending_commit()
                .map(|p| {
                    p.remove_proposals()
                        .map(|r| r.remove_proposal().removed().u32())
                        .collect()
                })
                .unwrap_or_default();
            (g.mls.own_leaf_index().u32(), removes)
        };
        self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_commits (group_id, epoch, hash, payload, own, welcome, invitee, intent, priority, added_key, author, removes)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")?.execute(
            params![
                gid.0,
                to_i64(epoch),
                &hash[..],
                payload,
                welcome,
                (!invitees.is_empty()).then(|| encode_invitees(invitees.iter().map(|(u, _)| u))),
                intent,
                &priority[..],
                (!invitees.is_empty()).then(|| invitees.iter().flat_map(|(_, k)| *k).collect::<Vec<u8>>()),
                i64::from(author),
                super::ordering::encode_leaves(&removes)
            ],
        )?;
        // OpenMLS's state holding this pending commit (see `switch_branch`).
        let (key, _) = self.storage_keys(gid)?;
        self.db().prepare_cached("UPDATE pqmls_commits SET pending_state =
                 (SELECT group_data FROM openmls_group_data WHERE group_id = ?3 AND data_type = 'group_state')
             WHERE group_id = ?1 AND hash = ?2")?.execute(
            params![gid.0, &hash[..], key],
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
            sent_ms: self.wall_ms(),
            content,
        };
        let wire_id = self.encrypt_app(gid, &payload)?;
        let epoch = self.group(gid)?.mls.epoch().as_u64();
        let me = crate::identity::Member {
            id: self.id,
            name: self.name.clone(),
        };
        let body = match &payload.content {
            Content::Text(b) => b.clone(),
            Content::Leave => {
                return Ok(ReceivedMessage {
                    group: gid.clone(),
                    sender: me,
                    body: Vec::new(),
                    epoch,
                    sent_ms: payload.sent_ms,
                    own: true,
                    seq: -1,
                });
            }
        };
        let seq = self
            .db()
            .prepare_cached(
                "INSERT INTO pqmls_messages (group_id, uid, sender, sender_id, epoch, sent_ms, own, body, wire_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8)",
            )?
            .insert(params![
                gid.0,
                &payload.uid[..],
                self.name,
                &self.id.0[..],
                to_i64(epoch),
                to_i64(payload.sent_ms),
                body,
                wire_id.as_bytes().as_slice()
            ])?;
        Ok(ReceivedMessage {
            group: gid.clone(),
            sender: me,
            body,
            epoch,
            sent_ms: payload.sent_ms,
            own: true,
            seq,
        })
    }

    /// Encrypts `payload` for the group into the outbox; returns the transport id of the
    /// payload queued (for the delivery mark, [`crate::Event::Stored`]).
    pub(crate) fn encrypt_app(&mut self, gid: &GroupId, payload: &AppPayload) -> Result<MessageId> {
        let plain = payload.encode();
        let (out, auth, topic) = {
            let g = self
                .groups
                .get_mut(gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
            let out = g
                .mls
                .create_message(&self.provider, &self.signer, &plain)
                .map_err(crate::error::mls)?;
            let auth = wire::auth_tag(g.mls.epoch_authenticator().as_slice());
            (out, auth, g.topic.clone())
        };
        let wire = Wire::Application {
            auth,
            mls: ser(&out)?,
        }
        .encode();
        self.stats.last_message_bytes = wire.len() as u64;
        let id = MessageId::compute(&topic, &wire);
        self.enqueue(&topic, wire)?;
        Ok(id)
    }

    /// Re-sends our messages recorded at `from_epoch` or later, or with `from_epoch` -1,
    /// those marked -1 (sent on a state that turned out dead), at the current epoch
    /// (receivers drop the ones they already have, by uid). Called only when the current
    /// state continues the one they were sent in (a branch move, or a Welcome from a
    /// member we know, see [`crate::trust::welcome_action`]).
    pub(crate) fn resend_own(&mut self, gid: &GroupId, from_epoch: i64) -> Result<()> {
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
            let wire_id = self.encrypt_app(gid, &payload)?;
            self.db().prepare_cached("UPDATE pqmls_messages SET epoch = ?3, wire_id = ?4 WHERE group_id = ?1 AND uid = ?2")?.execute(
                params![gid.0, uid, to_i64(now_epoch), wire_id.as_bytes().as_slice()],
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
            self.wall_ms()
                .saturating_sub(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)),
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
                self.add_intent(&gid, UPDATE, None, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: panics are failures.

    use std::time::Duration;

    use rusqlite::params;

    use crate::db::to_u64;
    use crate::sim::{SimConfig, SimNetwork};
    use crate::{Client, Config, GroupId, InvitePolicy};

    async fn client(net: &SimNetwork, name: &str) -> Client {
        let (t, inbox) = net.attach();
        let mut c = Config::new(name);
        c.self_update_interval = None;
        c.invitations = InvitePolicy::Everyone;
        Client::open(c, t, inbox).await.unwrap()
    }

    /// What the ordering knows of our own commit that waits to settle:
    /// `contender_of`'s author and removals.
    async fn own_waiting(c: &Client, g: &GroupId) -> Option<(u32, Vec<u32>)> {
        c.with_state(|s| {
            let (epoch, hash): (i64, Vec<u8>) = s.db().query_row(
                "SELECT epoch, hash FROM pqmls_commits WHERE group_id = ?1 AND own = 1 AND merged = 0",
                params![g.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let id: [u8; 32] = hash.try_into().unwrap();
            Ok(s.contender_of(g, to_u64(epoch), &id)
                .map(|c| (c.author, c.removes.into_iter().collect())))
        })
        .await
        .unwrap()
    }

    /// A round-2 choice ranks every commit voted for in round 1 by what MLS authenticated
    /// about it (author, removals). An own commit can be voted for by others although we
    /// never settled it here (a branch move gave it up first; the sdk_api_ops regression
    /// `concurrent-updates-given-up-own-commit-voted`): we made it, so we know that from
    /// the start. Before, the ordering learnt it only by processing the commit, which is
    /// never done for an own one, and the epoch could stay open for good.
    #[tokio::test(start_paused = true)]
    async fn an_own_commit_is_ranked_from_the_moment_it_is_made() {
        let net = SimNetwork::new(SimConfig::default());
        let a = client(&net, "a").await;
        let b = client(&net, "b").await;
        let g = a.create_group().await.unwrap();
        a.invite(&g, &b.id()).await.unwrap();
        for _ in 0..500 {
            if b.members(&g).await.is_ok_and(|m| m.len() == 2)
                && a.status(&g).await.is_ok_and(|s| s.epoch == 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(b.members(&g).await.unwrap().len(), 2);
        a.update(&g).await.unwrap();
        assert_eq!(own_waiting(&a, &g).await, Some((0, vec![])));
        // After it settled, a removal: its author and the leaf it removes.
        for _ in 0..500 {
            if a.status(&g).await.is_ok_and(|s| s.epoch == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.remove(&g, &b.id()).await.unwrap();
        assert_eq!(own_waiting(&a, &g).await, Some((0, vec![1])));
    }
}

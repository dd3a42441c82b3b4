//! Commit ordering without a server (DESIGN.md item 9): candidates, the merge rule,
//! snapshots and branch moves, removals.
//!
//! Every commit is a candidate for the epoch it was made in. A member collects the
//! candidates for its current epoch for [`crate::Config::settle`] after the first one
//! arrives, then merges the *valid candidate with the smallest commit hash*
//! ([`crate::wire::commit_hash`], over the canonical MLS message). Its own commit is a
//! candidate like any other: if another wins, the own one is dropped and the operation is
//! proposed again in the next epoch (the intents table keeps it until the group reflects
//! it).
//!
//! Loss and delay can still make two members merge different winners. So before merging,
//! a member snapshots its group state; when a valid commit for a past epoch arrives whose
//! hash is smaller than the one it merged there, it restores that snapshot, merges the
//! better commit and replays the later commits it knows that are valid on the new branch
//! (again smallest hash first), then re-sends its own application messages of the
//! abandoned epochs. Every member thus converges on the same chain once it has seen the
//! same commits: at every epoch, the smallest valid hash. A move happens only for a commit
//! that MLS accepts on the snapshot (signed by a member of that epoch); nothing
//! unauthenticated moves a member.

use std::collections::BTreeSet;

use openmls::prelude::*;
use rusqlite::{OptionalExtension, params};
use tokio::time::Instant;

use super::{Outcome, State, short};
use crate::GroupId;
use crate::config::FailPoint;
use crate::db::{self, to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::Event;
use crate::identity::{Member, UserId};
use crate::trust::EpochSlot;
use crate::wire::{self, Wire};
use pqmls_provider::BinaryCodec;
use pqmls_provider::storage::Codec;

/// What merging an own commit leaves to do: (Welcome, invitee, intent id).
type OwnCommitEffects = (Option<Vec<u8>>, Option<String>, Option<i64>);

/// What trying one commit candidate gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// Merged: the group is at the next epoch.
    Merged,
    /// Merged, and it removed us: the group is gone.
    Left,
    /// Not valid in our state; nothing changed.
    Invalid,
}

impl State {
    pub(crate) fn has_candidates(&self, gid: &GroupId, epoch: u64) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT 1 FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 0 LIMIT 1",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// A commit from the group topic: kept as a candidate of its epoch (within the windows
    /// and caps), merged at settle time if it is for ours, or tried as a better commit for
    /// a past epoch.
    pub(crate) fn on_handshake(&mut self, gid: &GroupId, mls: &[u8]) -> Result<Outcome> {
        let Some(pm) = self.parse_protocol(gid, mls) else {
            return Ok(Outcome::Done);
        };
        if pm.content_type() != ContentType::Commit {
            // Only commits travel as handshake messages between SDK clients.
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        }
        let epoch = pm.epoch().as_u64();
        let slot = self.slot_of(gid, epoch)?;
        match slot {
            EpochSlot::TooOld => {
                self.stats.ignored += 1;
                return Ok(Outcome::Done);
            }
            EpochSlot::TooFar => {
                self.todo.sync.insert(gid.clone());
                return Ok(Outcome::Deferred);
            }
            _ => {}
        }
        let hash = wire::commit_hash(mls);
        let stored: bool = self
            .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2)",
            )?
            .query_row(params![gid.0, &hash[..]], |r| r.get(0))?;
        if stored {
            self.stats.duplicates += 1;
            return Ok(Outcome::Done);
        }
        let payload = Wire::Handshake { mls: mls.to_vec() }.encode();
        if !self.commit_fits(gid, epoch, payload.len())? {
            tracing::debug!(
                "{}: group {gid}: commit for epoch {epoch} deferred (caps)",
                self.name
            );
            self.todo.sync.insert(gid.clone());
            return Ok(Outcome::Deferred);
        }
        let switch = slot == EpochSlot::Past && self.beats_merged(gid, epoch, &hash)?;
        if switch && !self.take_past_read(gid) {
            // Each try costs a snapshot restore: left for a later catch-up.
            return Ok(Outcome::Deferred);
        }
        self.db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_commits (group_id, epoch, hash, payload, own) VALUES (?1, ?2, ?3, ?4, 0)",
            )?
            .execute(params![gid.0, to_i64(epoch), &hash[..], payload])?;
        match slot {
            EpochSlot::Current => {
                let settle = self.config.settle;
                let g = self.group_mut(gid)?;
                if g.settle_at.is_none() {
                    g.settle_at = Some(Instant::now() + settle);
                }
            }
            // We missed at least one commit.
            EpochSlot::Future => {
                self.todo.sync.insert(gid.clone());
            }
            _ if switch => {
                tracing::debug!(
                    "{}: group {gid}: trying better commit {} for epoch {epoch}",
                    self.name,
                    short(&hash)
                );
                self.switch_branch(gid, epoch, &hash)?;
            }
            _ => {}
        }
        Ok(Outcome::Done)
    }

    /// Whether a commit for `epoch` fits the caps (per epoch, per group in rows and bytes).
    /// Others' commits that were tried and found invalid make room first: anyone can fill
    /// the caps with garbage, but garbage is found out at the next settle, and must not
    /// keep an honest commit out after that.
    fn commit_fits(&self, gid: &GroupId, epoch: u64, len: usize) -> Result<bool> {
        let limits = &self.config.limits;
        let usage = |s: &State| -> Result<(u64, u64, u64)> {
            let in_epoch: i64 = s
                .db()
                .prepare_cached(
                    "SELECT COUNT(*) FROM pqmls_commits
                     WHERE group_id = ?1 AND epoch = ?2 AND (merged != -1 OR own = 1)",
                )?
                .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))?;
            let (rows, bytes): (i64, i64) = s
                .db()
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM pqmls_commits WHERE group_id = ?1",
                )?
                .query_row([&gid.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((to_u64(in_epoch), to_u64(rows), to_u64(bytes)))
        };
        let fits = |(in_epoch, rows, bytes): (u64, u64, u64)| {
            in_epoch < limits.candidates_per_epoch as u64
                && rows < limits.commits as u64
                && bytes.saturating_add(len as u64) <= limits.commit_bytes as u64
        };
        if fits(usage(self)?) {
            return Ok(true);
        }
        self.db()
            .prepare_cached(
                "DELETE FROM pqmls_commits WHERE group_id = ?1 AND merged = -1 AND own = 0",
            )?
            .execute([&gid.0])?;
        Ok(fits(usage(self)?))
    }

    /// Whether `hash` is smaller than the commit we merged at `epoch` and we have the
    /// snapshot to try it on.
    fn beats_merged(&self, gid: &GroupId, epoch: u64, hash: &[u8; 32]) -> Result<bool> {
        let merged: Option<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT hash FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 1",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
            .optional()?;
        let Some(merged) = merged else {
            return Ok(false);
        };
        Ok(hash[..] < merged[..] && db::has_snapshot(self.db(), &gid.0, epoch)?)
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
        // Buffered messages whose replay ran out of budget.
        let replay: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.replay_due)
            .map(|(id, _)| id.clone())
            .collect();
        for gid in replay {
            if let Some(g) = self.groups.get_mut(&gid) {
                g.replay_due = false;
            }
            self.tx(|s| s.replay_pending(&gid))?;
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
        // Commits for our epoch that none of us can use: perhaps we are on another branch,
        // perhaps they are garbage (anyone can publish some). Only a hint: catch up.
        self.stats.fork_hints += 1;
        self.todo.sync.insert(gid.clone());
        Ok(false)
    }

    pub(crate) fn storage_keys(&self, gid: &GroupId) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
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

    fn members_now(&self, gid: &GroupId) -> Result<BTreeSet<Member>> {
        Ok(self.member_list(gid)?.into_iter().map(|(_, m)| m).collect())
    }

    /// Processes and merges one candidate; `Invalid` if it is not valid for our state.
    fn try_merge(
        &mut self,
        gid: &GroupId,
        hash: &[u8],
        payload: &[u8],
        own: bool,
    ) -> Result<Merge> {
        let before = self.members_now(gid)?;
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
                if let (Some(welcome), Some(invitee)) =
                    (welcome, invitee.and_then(|i| i.parse::<UserId>().ok()))
                {
                    self.send_welcome(gid, hash, welcome, &invitee)?;
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
                    if kind.as_deref() == Some(super::intents::UPDATE) {
                        self.db().execute(
                            "UPDATE pqmls_groups SET last_update_ms = ?2 WHERE group_id = ?1",
                            params![gid.0, to_i64(self.wall_ms())],
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
        let after = self.members_now(gid)?;
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
    pub(crate) fn deactivate(&mut self, gid: &GroupId, keep_pending: bool) -> Result<()> {
        // The last epoch we were a member at, unless a withdrawal set it already; and
        // whether we had asked to leave.
        let last = self.last_member_epoch(gid)?;
        let left: bool = self.db().query_row(
            "SELECT EXISTS (SELECT 1 FROM pqmls_intents WHERE group_id = ?1 AND kind = 'leave')",
            [&gid.0],
            |r| r.get(0),
        )?;
        self.db().execute(
            "UPDATE pqmls_groups SET active = 0, dead_epoch = COALESCE(dead_epoch, ?2),
                 left_on_purpose = ?3 WHERE group_id = ?1",
            params![gid.0, to_i64(last), left],
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
    pub(crate) fn after_epoch_change(&mut self, gid: &GroupId) -> Result<()> {
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
        }
        if self.groups.contains_key(gid) && self.has_candidates(gid, epoch)? {
            let settle = self.config.settle;
            if let Some(g) = self.groups.get_mut(gid) {
                g.settle_at.get_or_insert(Instant::now() + settle);
            }
        }
        self.drive_intents(gid)
    }

    /// Restores the snapshot at `epoch`, merges the commit `hash` and replays what follows.
    /// Nothing changes if the commit is not valid there.
    fn switch_branch(&mut self, gid: &GroupId, epoch: u64, hash: &[u8; 32]) -> Result<()> {
        let current = self.group(gid)?.mls.epoch().as_u64();
        let (key, _) = self.storage_keys(gid)?;
        self.db().execute_batch("SAVEPOINT pqmls_switch")?;
        let events_before = self.events.len();
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
                self.events.truncate(events_before);
                self.reload_groups()?;
                return match attempt {
                    Err(e) => Err(e),
                    _ => Ok(()),
                };
            }
        }
        // A commit signed by a member of `epoch`, other than ours there and valid: the
        // group forked (authenticated evidence), and we move to the better branch.
        if let Some(g) = self.groups.get_mut(gid)
            && g.fork_reported != Some(epoch)
        {
            g.fork_reported = Some(epoch);
            self.stats.forks_detected += 1;
            self.events.insert(
                events_before,
                Event::ForkDetected {
                    group: gid.clone(),
                    epoch,
                },
            );
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

    /// Forgets the groups we were removed from longer than the grace period ago.
    pub(crate) fn finalize_removals(&mut self, now: Instant) -> Result<()> {
        // Removed (tentatively, by a commit MLS accepted): a Welcome we kept aside, from a
        // member we know, may be the invitation back.
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
}

//! Commit ordering without a server (DESIGN.md item 9): candidates, the merge rule,
//! snapshots and branch moves, removals.
//!
//! Every commit is a candidate for the epoch it was made in. A member collects the
//! candidates for its current epoch for [`crate::Config::settle`] after the first one
//! arrives, processes them all, then merges the winner of [`crate::order::winner`]: the
//! best *priority* (derived from the epoch's secrets and the author's leaf, claimed in the
//! envelope and checked once MLS authenticated the author), a removal before a commit of
//! the member it removes. Its own commit is a candidate like any other: if another wins,
//! the own one is dropped and the operation is proposed again in the next epoch (the
//! intents table keeps it until the group reflects it).
//!
//! Loss and delay can still make two members merge different winners. So before merging,
//! a member snapshots its group state; when a commit for a past, non-final epoch arrives
//! that ranks before the one it merged there ([`crate::order::should_try`]), it restores
//! that snapshot, merges the better commit and replays the later commits it knows that
//! are valid on the new branch, then re-sends its own application messages of the
//! abandoned epochs. Votes make an epoch's ending final (`finality.rs`), after which it
//! never changes. A move happens only for a commit that MLS accepts on the snapshot
//! (signed by a member of that epoch); nothing unauthenticated moves a member.

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
use crate::identity::Member;
use crate::order::{self, CommitId};
use crate::trust::EpochSlot;
use crate::wire::{self, Wire};
use pqmls_provider::BinaryCodec;
use pqmls_provider::storage::Codec;

/// What merging an own commit leaves to do: (Welcome, invitee, intent id).
type OwnCommitEffects = (Option<Vec<u8>>, Option<String>, Option<i64>);

/// A candidate processed against our state, not merged yet.
pub(crate) struct Staged {
    /// `None`: our own (OpenMLS's pending commit).
    commit: Option<Box<StagedCommit>>,
    /// What MLS authenticated about it.
    pub(crate) contender: order::Contender,
}

/// A list as one text column stores it, items separated by commas (leaf indices
/// `"3,7"`, invitees' hex ids).
pub(crate) fn encode_list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`encode_list`]; what does not parse is left out.
pub(crate) fn decode_list<T: std::str::FromStr, C: FromIterator<T>>(text: &str) -> C {
    text.split(',').filter_map(|i| i.parse().ok()).collect()
}

/// Leaf indices as stored (`"3,7"`).
pub(crate) fn encode_leaves(leaves: &BTreeSet<u32>) -> String {
    encode_list(leaves)
}

/// The inverse of [`encode_leaves`].
pub(crate) fn decode_leaves(text: &str) -> BTreeSet<u32> {
    decode_list(text)
}

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
    pub(crate) fn on_handshake(
        &mut self,
        gid: &GroupId,
        priority: &[u8; 32],
        mls: &[u8],
    ) -> Result<Outcome> {
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
        let hash = wire::commit_hash(mls);
        tracing::trace!(
            "{}: group {gid} epoch {epoch}: commit {} ({slot:?})",
            self.name,
            short(&hash)
        );
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
        let merged: Option<i64> = self
            .db()
            .prepare_cached("SELECT merged FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2")?
            .query_row(params![gid.0, &hash[..]], |r| r.get(0))
            .optional()?;
        let stored = merged.is_some();
        // Only a copy of the commit we merged tells us that what we would answer went by:
        // a copy of junk or of a candidate that lost (anyone can store some and copy it
        // every gap) delivers nothing an asker lacks.
        let ours = merged == Some(1);
        if self.is_final(gid, epoch)? {
            // The epoch's ending is final: a late candidate (a removed member's, a replay)
            // can change nothing.
            tracing::debug!(
                "{}: group {gid} epoch {epoch}: late candidate {} ignored (final)",
                self.name,
                short(&hash)
            );
            if stored {
                // A copy of the final commit (an answer to someone's request).
                self.stats.duplicates += 1;
                if ours {
                    self.aired_now(gid, epoch);
                }
            } else {
                self.stats.ignored += 1;
            }
            return Ok(Outcome::Done);
        }
        if stored {
            tracing::trace!(
                "{}: group {gid} epoch {epoch}: candidate {} known",
                self.name,
                short(&hash)
            );
            self.stats.duplicates += 1;
            if ours {
                self.aired_now(gid, epoch);
            }
            return Ok(Outcome::Done);
        }
        let payload = Wire::Handshake {
            priority: *priority,
            mls: mls.to_vec(),
        }
        .encode();
        if !self.commit_fits(gid, epoch, payload.len())? {
            tracing::debug!(
                "{}: group {gid}: commit for epoch {epoch} deferred (caps)",
                self.name
            );
            self.todo.sync.insert(gid.clone());
            return Ok(Outcome::Deferred);
        }
        let switch = slot == EpochSlot::Past && self.beats_merged(gid, epoch, priority, &hash)?;
        if slot == EpochSlot::Past {
            tracing::debug!(
                "{}: group {gid} epoch {epoch}: past candidate {} {}",
                self.name,
                short(&hash),
                if switch { "to try" } else { "kept" }
            );
        }
        if switch && !self.take_past_read(gid) {
            // Each try costs a snapshot restore: left for a later catch-up.
            tracing::debug!("{}: group {gid}: snapshot budget spent", self.name);
            return Ok(Outcome::Deferred);
        }
        self.db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_commits (group_id, epoch, hash, payload, own, priority) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )?
            .execute(params![gid.0, to_i64(epoch), &hash[..], payload, &priority[..]])?;
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
            EpochSlot::Past if self.final_of(gid, epoch)? == Some(hash) => {
                // The votes had decided it and we lacked it (we cannot move: no snapshot):
                // finality says so now (`Unrecoverable`), as no later vote may come.
                self.evaluate_finality(gid)?;
            }
            _ => {}
        }
        Ok(Outcome::Done)
    }

    /// Whether a commit for `epoch` fits the caps (per epoch, per group in rows and bytes).
    /// Others' commits that were tried and found invalid make room first: anyone can fill
    /// the caps with garbage, but garbage is found out at the next settle, and must not
    /// keep an honest commit out after that. Commits for later epochs cannot be tried
    /// before their epoch comes, so they are bounded apart: together at most half of
    /// each cap, and a commit for our epoch or an earlier one that does not fit evicts
    /// the untried ones of the furthest later epoch, then the next ([`future_to_evict`]),
    /// so junk for later epochs can never keep the commit that moves the group out (which
    /// would also keep the junk for good). An honest commit evicted so comes back as a
    /// missing one does (`Wire::Need`, catch-up).
    fn commit_fits(&self, gid: &GroupId, epoch: u64, len: usize) -> Result<bool> {
        let limits = &self.config.limits;
        let current = self.group(gid)?.mls.epoch().as_u64();
        let usage = |s: &State| -> Result<Usage> {
            let in_epoch: i64 = s
                .db()
                .prepare_cached(
                    "SELECT COUNT(*) FROM pqmls_commits
                     WHERE group_id = ?1 AND epoch = ?2 AND (merged != -1 OR own = 1)",
                )?
                .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))?;
            let (rows, bytes, later_rows, later_bytes): (i64, i64, i64, i64) = s
                .db()
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0),
                            COALESCE(SUM(epoch > ?2), 0),
                            COALESCE(SUM(CASE WHEN epoch > ?2 THEN LENGTH(payload) ELSE 0 END), 0)
                     FROM pqmls_commits WHERE group_id = ?1",
                )?
                .query_row(params![gid.0, to_i64(current)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
            Ok(Usage {
                in_epoch: to_u64(in_epoch),
                rows: to_u64(rows),
                bytes: to_u64(bytes),
                later_rows: to_u64(later_rows),
                later_bytes: to_u64(later_bytes),
            })
        };
        let later = epoch > current;
        let fits = |u: &Usage| {
            u.in_epoch < limits.candidates_per_epoch as u64
                && u.rows < limits.commits as u64
                && u.bytes.saturating_add(len as u64) <= limits.commit_bytes as u64
                && (!later
                    || (u.later_rows < (limits.commits / 2) as u64
                        && u.later_bytes.saturating_add(len as u64)
                            <= (limits.commit_bytes / 2) as u64))
        };
        if fits(&usage(self)?) {
            return Ok(true);
        }
        self.db()
            .prepare_cached(
                "DELETE FROM pqmls_commits WHERE group_id = ?1 AND merged = -1 AND own = 0",
            )?
            .execute([&gid.0])?;
        let mut u = usage(self)?;
        // Evicting later epochs' rows frees group rows and bytes, not room in this epoch;
        // and for a commit of our epoch or an earlier one, only if what is not later
        // leaves room (else every later commit would go, for nothing). A commit for a
        // later epoch evicts only epochs further than its own: nearer ones come first.
        let helps = |u: &Usage| {
            u.in_epoch < limits.candidates_per_epoch as u64
                && (later
                    || (u.rows - u.later_rows < limits.commits as u64
                        && (u.bytes - u.later_bytes).saturating_add(len as u64)
                            <= limits.commit_bytes as u64))
        };
        while !fits(&u) && helps(&u) {
            let Some(furthest) = future_to_evict(self, gid, current.max(epoch))? else {
                break;
            };
            let n = self
                .db()
                .prepare_cached(
                    "DELETE FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 0 AND own = 0",
                )?
                .execute(params![gid.0, to_i64(furthest)])?;
            tracing::debug!(
                "{}: group {gid}: {n} untried commit(s) for epoch {furthest} evicted for one for epoch {epoch}",
                self.name
            );
            u = usage(self)?;
        }
        Ok(fits(&u))
    }

    /// Whether a candidate claiming `priority` should be tried against the commit we
    /// merged at `epoch` (see [`order::should_try`]: it ranks before it, and its author is
    /// not one the merged commit removes) and we have the snapshot to try it on. The claim
    /// is checked when the candidate is processed there.
    fn beats_merged(
        &self,
        gid: &GroupId,
        epoch: u64,
        priority: &[u8; 32],
        hash: &[u8; 32],
    ) -> Result<bool> {
        let merged: Option<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT hash FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 1",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
            .optional()?;
        let Some(current) = merged
            .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .and_then(|h| self.contender_of(gid, epoch, &h))
        else {
            return Ok(false);
        };
        let (known, author) = match (
            self.epoch_keys(gid, epoch)?,
            self.epoch_members(gid, epoch)?,
        ) {
            (Some(keys), Some(members)) => (
                true,
                order::author_of(&keys.order_key, members.iter().map(|(l, _)| *l), priority),
            ),
            _ => (false, None),
        };
        let incoming = order::Candidate {
            priority: *priority,
            id: *hash,
        };
        // A commit the votes made final (or decided, past an open epoch:
        // `finality::follow_later_quorums`) is tried whatever its priority: it may arrive
        // after the votes, and then no later vote comes to make us move (seen: a member a
        // losing branch removed had every vote and the commit, and stayed removed).
        let decided = self.final_of(gid, epoch)?;
        if known && author.is_none() && decided != Some(*hash) {
            // Its claimed priority is no member's of the epoch: `stage` would refuse it
            // (the claim is checked against its authenticated sender), so it is not worth
            // a snapshot restore and a reload of every group, which anyone could
            // otherwise make us spend (16 a second) with junk claiming the best rank.
            return Ok(false);
        }
        Ok(order::should_try(&current, &incoming, author, decided)
            && if decided == Some(*hash) {
                db::has_snapshot(self.db(), &gid.0, epoch)?
            } else {
                self.snapshot_for_moves(gid, epoch)?
            })
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
            let (started, merged) = (std::time::Instant::now(), self.stats.commits_merged);
            self.tx(|s| s.settle(&gid))?;
            if self.stats.commits_merged > merged {
                self.stats.last_merge_micros =
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            }
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

    /// Merges the winning candidate for the current epoch, then keeps going
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

    /// Processes the candidates of the current epoch and merges the winner (the final
    /// commit, if the votes made one final).
    fn merge_best(&mut self, gid: &GroupId) -> Result<bool> {
        let Some(g) = self.groups.get(gid) else {
            return Ok(false);
        };
        if !g.mls.is_active() {
            return Ok(false);
        }
        let epoch = g.mls.epoch().as_u64();
        // Best priority first (see `order`); a commit the votes made final is the only one.
        let forced = self.final_of(gid, epoch)?;
        if let Some(f) = forced {
            self.revive_own(gid, epoch, &f)?;
        }
        let mut candidates: Vec<(Vec<u8>, Vec<u8>, bool)> = self
            .db()
            .prepare_cached(
                "SELECT hash, payload, own FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 0
                 ORDER BY priority, hash",
            )?
            .query_map(params![gid.0, to_i64(epoch)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        if let Some(f) = forced {
            candidates.retain(|(h, _, _)| h[..] == f[..]);
            if candidates.is_empty() {
                // Final elsewhere, not here yet: fetch it.
                self.todo.sync.insert(gid.clone());
                return Ok(false);
            }
        }
        if self
            .groups
            .get(gid)
            .is_some_and(|g| g.unrecoverable.is_some())
        {
            // A state known to be dead merges no commit of ours (made before we knew):
            // an add there would leave its invitee on a branch nobody else is on. The
            // operation stays outstanding for the way back (`intents::drive_intents`).
            candidates.retain(|(_, _, own)| !own);
        }
        if candidates.is_empty() {
            return Ok(false);
        }
        tracing::debug!(
            "{}: group {gid} epoch {epoch}: settling {} candidate(s){}",
            self.name,
            candidates.len(),
            if forced.is_some() { " (final one)" } else { "" }
        );
        self.take_snapshot(gid, epoch)?;
        // Every candidate is processed (MLS authenticates its author and what it removes),
        // then the winner (see `order::winner`) is merged.
        let mut staged = Vec::new();
        for (hash, payload, own) in candidates {
            if let Some(s) = self.stage(gid, &hash, &payload, own)? {
                staged.push(s);
            }
        }
        let contenders: Vec<order::Contender> =
            staged.iter().map(|s| s.contender.clone()).collect();
        self.count_contest(&staged, order::winner(&contenders));
        if let Some(w) = order::winner(&contenders)
            && let Some(win) = staged.into_iter().find(|s| s.contender.candidate == w)
        {
            // Our round-1 vote: the winner among the candidates we knew at settle time.
            self.cast_vote(gid, epoch, 1, &w.id)?;
            return Ok(match self.apply(gid, win)? {
                Merge::Merged => true,
                Merge::Left | Merge::Invalid => false,
            });
        }
        // Commits for our epoch that none of us can use: perhaps we are on another branch,
        // perhaps they are garbage (anyone can publish some). Only a hint: catch up.
        self.stats.fork_hints += 1;
        self.todo.sync.insert(gid.clone());
        Ok(false)
    }

    /// Counts a contest our own commit took part in (for the fairness measurement).
    fn count_contest(&mut self, staged: &[Staged], winner: Option<order::Candidate>) {
        let Some(own) = staged.iter().find(|s| s.commit.is_none()) else {
            return;
        };
        let authors: BTreeSet<u32> = staged.iter().map(|s| s.contender.author).collect();
        if authors.len() < 2 {
            return;
        }
        self.stats.contests += 1;
        self.stats.contests_fair_milli += 1000 / authors.len() as u64;
        if winner.is_some_and(|w| {
            staged
                .iter()
                .any(|s| s.contender.candidate == w && s.contender.author == own.contender.author)
        }) {
            self.stats.contests_won += 1;
        }
    }

    /// When the final commit of our current epoch is an own commit we had given up (a
    /// branch move replaced OpenMLS's pending commit), puts back the pending-commit state
    /// saved when we made it, so it can be merged. Only for a final commit: the votes
    /// that made it final were sealed with this epoch's keys on our branch, so it was
    /// made on the state we hold.
    fn revive_own(&mut self, gid: &GroupId, epoch: u64, f: &CommitId) -> Result<()> {
        let (key, _) = self.storage_keys(gid)?;
        let n = self.db().prepare_cached("INSERT OR REPLACE INTO openmls_group_data (provider_version, group_id, data_type, group_data)
             SELECT (SELECT provider_version FROM openmls_group_data WHERE group_id = ?3 LIMIT 1),
                    ?3, 'group_state', pending_state
             FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2 AND epoch = ?4 AND own = 1
                  AND merged = -1 AND pending_state IS NOT NULL")?.execute(
            params![gid.0, &f[..], key, to_i64(epoch)],
        )?;
        if n == 0 {
            return Ok(());
        }
        self.db()
            .prepare_cached(
                "UPDATE pqmls_commits SET merged = 0 WHERE group_id = ?1 AND hash = ?2",
            )?
            .execute(params![gid.0, &f[..]])?;
        self.reload_group(gid)?;
        Ok(())
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

    pub(crate) fn take_snapshot(&mut self, gid: &GroupId, epoch: u64) -> Result<()> {
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
        match self.stage(gid, hash, payload, own)? {
            Some(staged) => self.apply(gid, staged),
            None => Ok(Merge::Invalid),
        }
    }

    /// Processes one candidate against our state without merging it: `None` if it is not
    /// valid here (then it is marked so). What MLS authenticated about it (its author's
    /// leaf, the leaves it removes) is recorded for the ordering.
    pub(crate) fn stage(
        &mut self,
        gid: &GroupId,
        hash: &[u8],
        payload: &[u8],
        own: bool,
    ) -> Result<Option<Staged>> {
        let old_epoch = self.group(gid)?.mls.epoch().as_u64();
        let Ok(id) = <[u8; 32]>::try_from(hash) else {
            return Ok(None);
        };
        let (commit, author, removes, priority) = if own {
            let g = self.group(gid)?;
            let Some(pending) = g.mls.pending_commit() else {
                return Ok(None);
            };
            let removes: BTreeSet<u32> = pending
                .remove_proposals()
                .map(|r| r.remove_proposal().removed().u32())
                .collect();
            let author = g.mls.own_leaf_index().u32();
            let priority = self.own_priority(gid)?;
            (None, author, removes, priority)
        } else {
            let Some(Wire::Handshake {
                priority: claimed,
                mls: bytes,
            }) = Wire::decode(payload)
            else {
                self.invalid_commit(gid, hash)?;
                return Ok(None);
            };
            let Some(pm) = self.parse_protocol(gid, &bytes) else {
                self.invalid_commit(gid, hash)?;
                return Ok(None);
            };
            let processed = {
                let g = self
                    .groups
                    .get_mut(gid)
                    .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                g.mls.process_message(&self.provider, pm)
            };
            let processed = match processed {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(
                        "{}: group {gid} epoch {old_epoch}: candidate {} invalid: {e:?}",
                        self.name,
                        short(hash)
                    );
                    self.invalid_commit(gid, hash)?;
                    return Ok(None);
                }
            };
            // The priority the envelope claims must be the author's (see `order`): a
            // commit that lies about it is not a candidate.
            let author = match processed.sender() {
                Sender::Member(leaf) => leaf.u32(),
                _ => {
                    self.invalid_commit(gid, hash)?;
                    return Ok(None);
                }
            };
            let expected = self
                .epoch_keys(gid, old_epoch)?
                .map(|keys| order::priority(&keys.order_key, author));
            if expected != Some(claimed) {
                tracing::debug!(
                    "{}: group {gid} epoch {old_epoch}: candidate {} claims another priority",
                    self.name,
                    short(hash)
                );
                self.invalid_commit(gid, hash)?;
                return Ok(None);
            }
            let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content()
            else {
                self.invalid_commit(gid, hash)?;
                return Ok(None);
            };
            let removes: BTreeSet<u32> = staged
                .remove_proposals()
                .map(|r| r.remove_proposal().removed().u32())
                .collect();
            (Some(staged), author, removes, claimed)
        };
        self.db()
            .prepare_cached(
                "UPDATE pqmls_commits SET author = ?3, removes = ?4 WHERE group_id = ?1 AND hash = ?2",
            )?
            .execute(params![gid.0, hash, i64::from(author), encode_leaves(&removes)])?;
        Ok(Some(Staged {
            commit,
            contender: order::Contender {
                candidate: order::Candidate { priority, id },
                author,
                removes,
            },
        }))
    }

    /// Merges a candidate [`State::stage`] accepted.
    fn apply(&mut self, gid: &GroupId, staged: Staged) -> Result<Merge> {
        let before = self.members_now(gid)?;
        let old_epoch = self.group(gid)?.mls.epoch().as_u64();
        let hash = staged.contender.candidate.id;
        let own = staged.commit.is_none();
        let mut removed_self = false;
        let added = {
            let commit = match &staged.commit {
                Some(c) => Some(&**c),
                None => self.group(gid)?.mls.pending_commit(),
            };
            commit.map_or_else(Vec::new, |c| self.added_key_packages(c))
        };
        match staged.commit {
            None => {
                let g = self
                    .groups
                    .get_mut(gid)
                    .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                g.mls.merge_pending_commit(&self.provider).map_err(mls)?;
            }
            Some(commit) => {
                removed_self = commit.self_removed();
                self.fail(FailPoint::MergeBeforeCommit)?;
                let g = self
                    .groups
                    .get_mut(gid)
                    .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
                g.mls
                    .merge_staged_commit(&self.provider, *commit)
                    .map_err(mls)?;
            }
        }
        let hash = &hash[..];
        self.db()
            .prepare_cached(
                "UPDATE pqmls_commits SET merged = 1 WHERE group_id = ?1 AND hash = ?2",
            )?
            .execute(params![gid.0, hash])?;
        self.stats.commits_merged += 1;
        // The key packages this commit added are used up: a rejoin request naming one of
        // them is a replay (`recovery::on_lost`).
        for kp_ref in added {
            self.db()
                .prepare_cached(
                    "INSERT OR IGNORE INTO pqmls_rejoins (group_id, kp_ref, epoch) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![gid.0, kp_ref, to_i64(old_epoch)])?;
        }
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
                let invitees = invitee
                    .as_deref()
                    .map(super::intents::decode_invitees)
                    .unwrap_or_default();
                if let Some(welcome) = welcome
                    && !invitees.is_empty()
                {
                    self.send_welcome(gid, hash, welcome, &invitees)?;
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
                        self.db()
                            .prepare_cached(
                                "UPDATE pqmls_groups SET last_update_ms = ?2 WHERE group_id = ?1",
                            )?
                            .execute(params![gid.0, to_i64(self.wall_ms())])?;
                    }
                    // Done, unless a branch move undoes this commit.
                    self.db()
                        .prepare_cached("UPDATE pqmls_intents SET done_epoch = ?2 WHERE id = ?1")?
                        .execute(params![intent, to_i64(old_epoch)])?;
                    // The other adds of an `invite_many` batch this commit made: those
                    // of its batch for the users it added.
                    if kind.as_deref() == Some(super::intents::ADD) && invitees.len() > 1 {
                        for user in &invitees {
                            self.db()
                                .prepare_cached(
                                    "UPDATE pqmls_intents SET done_epoch = ?4
                                     WHERE group_id = ?1 AND kind = 'add' AND user = ?2 AND done_epoch IS NULL
                                     AND batch = (SELECT batch FROM pqmls_intents WHERE id = ?3)",
                                )?
                                .execute(params![gid.0, user.to_string(), intent, to_i64(old_epoch)])?;
                        }
                    }
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
        if own && !after.is_subset(&before) {
            // The members we added cannot open abstentions made before they came.
            self.forward_abstentions_to_newcomers(gid)?;
        }
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
        // Whether we had asked to leave: an invitation back then asks for consent again.
        let left: bool = self.db().prepare_cached("SELECT EXISTS (SELECT 1 FROM pqmls_intents WHERE group_id = ?1 AND kind = 'leave')")?.query_row(
            [&gid.0],
            |r| r.get(0),
        )?;
        self.db()
            .prepare_cached(
                "UPDATE pqmls_groups SET active = 0, left_on_purpose = left_on_purpose OR ?2
             WHERE group_id = ?1",
            )?
            .execute(params![gid.0, left])?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_intents WHERE group_id = ?1")?
            .execute([&gid.0])?;
        if !keep_pending {
            self.db()
                .prepare_cached("DELETE FROM pqmls_pending WHERE group_id = ?1")?
                .execute([&gid.0])?;
        }
        db::prune_snapshots(self.db(), &gid.0, u64::MAX)?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_replaced_epochs WHERE group_id = ?1")?
            .execute([&gid.0])?;
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
        let keep = self.open_epoch_kept(gid)?;
        let floor = self.snapshot_floor(gid)?;
        db::prune_snapshots_but(self.db(), &gid.0, keep_from, keep, floor)?;
        // Merged commits stay longer (`finality::KEEP_FINAL` epochs): they answer a member
        // that missed one (`Wire::Need`), and an own add commit's Welcome is sent again
        // from its row.
        self.db()
            .prepare_cached(
                "DELETE FROM pqmls_commits WHERE group_id = ?1 AND epoch < ?2 AND (merged != 1 OR epoch < ?3)",
            )?
            .execute(params![
                gid.0,
                to_i64(keep_from),
                to_i64(epoch.saturating_sub(super::finality::KEEP_FINAL))
            ])?;
        // The ancestry of add commits whose rows went (`joins::record_add_ancestry`).
        self.db()
            .prepare_cached(
                "DELETE FROM pqmls_add_ancestry WHERE group_id = ?1 AND commit_hash NOT IN
                 (SELECT hash FROM pqmls_commits WHERE group_id = ?1)",
            )?
            .execute(params![gid.0])?;
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
        self.evaluate_finality(gid)?;
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
    pub(crate) fn switch_branch(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        hash: &[u8; 32],
    ) -> Result<()> {
        let current = self.group(gid)?.mls.epoch().as_u64();
        let (key, _) = self.storage_keys(gid)?;
        self.db().execute_batch("SAVEPOINT pqmls_switch")?;
        let events_before = self.events.len();
        let attempt = (|| -> Result<bool> {
            db::restore(self.db(), &gid.0, epoch, &key)?;
            // Our own commit (moving back to it, once final): the snapshot may hold
            // another pending commit of ours (made later in that epoch), so the state
            // that held this one is put back.
            self.db().prepare_cached("INSERT OR REPLACE INTO openmls_group_data (provider_version, group_id, data_type, group_data)
                 SELECT (SELECT provider_version FROM openmls_group_data WHERE group_id = ?3 LIMIT 1),
                        ?3, 'group_state', pending_state
                 FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2 AND own = 1 AND pending_state IS NOT NULL")?.execute(
                params![gid.0, &hash[..], key],
            )?;
            self.reload_group(gid)?;
            let (payload, own): (Vec<u8>, bool) = self
                .db()
                .prepare_cached(
                    "SELECT payload, own FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2",
                )?
                .query_row(params![gid.0, &hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(self.try_merge(gid, hash, &payload, own)? != Merge::Invalid)
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
        // it can no longer be merged (unless the votes make one final), and their
        // invitations must be redone. The Welcomes that went out are withdrawn once their
        // epochs are final with other commits (`finalize`).
        self.db()
            .prepare_cached(
                "UPDATE pqmls_commits SET merged = CASE own WHEN 1 THEN -1 ELSE 0 END
             WHERE group_id = ?1 AND epoch >= ?2 AND merged = 1 AND hash != ?3",
            )?
            .execute(params![gid.0, to_i64(epoch), &hash[..]])?;
        // Operations our abandoned commits did are to do again; an invitation needs a
        // fresh key package, since the Welcome that went out consumed the old one.
        self.db()
            .prepare_cached(
                "UPDATE pqmls_intents SET done_epoch = NULL,
                 key_package = CASE kind WHEN 'add' THEN NULL ELSE key_package END
             WHERE group_id = ?1 AND done_epoch >= ?2",
            )?
            .execute(params![gid.0, to_i64(epoch)])?;
        // Our own candidates of the abandoned branch (and our losing one at `epoch`) can
        // never be merged: OpenMLS's pending commit is now whatever the snapshot held.
        self.db().prepare_cached("UPDATE pqmls_commits SET merged = -1 WHERE group_id = ?1 AND epoch >= ?2 AND own = 1 AND merged = 0")?.execute(
            params![gid.0, to_i64(epoch)],
        )?;
        // Failed candidates of later epochs may be valid on this branch.
        self.db().prepare_cached("UPDATE pqmls_commits SET merged = 0 WHERE group_id = ?1 AND epoch > ?2 AND merged = -1 AND own = 0")?.execute(
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
        self.db()
            .prepare_cached("DELETE FROM pqmls_epochs WHERE group_id = ?1 AND epoch > ?2")?
            .execute(params![gid.0, to_i64(now_epoch)])?;
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
            // The winning branch removed us: nothing to re-send, nothing to propose. But
            // messages of its epochs before the removal are ours, and some may wait
            // here, set aside while we were on the other branch (honest seed 214: one
            // of the epoch the winning branch removed us at, read with its snapshot).
            return self.replay_pending(gid);
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
            // Only a final removal ends the group here: one on a branch that loses leaves
            // us listed on the live one (the votes of its epoch move us there, or say we
            // cannot follow: `Unrecoverable`, and the way back). The votes may have made
            // it final before we merged it (ours is cast first), with nothing read since.
            if !self.removal_final(&gid)? {
                self.tx(|s| s.evaluate_finality(&gid))?;
            }
            if self.groups.contains_key(&gid) && self.removal_final(&gid)? {
                self.tx(|s| s.deactivate(&gid, false))?;
            }
        }
        Ok(())
    }

    /// Whether the commit that removed us (the last one we merged) is final here.
    fn removal_final(&self, gid: &GroupId) -> Result<bool> {
        let epoch: Option<i64> = self
            .db()
            .prepare_cached(
                "SELECT MAX(epoch) FROM pqmls_commits WHERE group_id = ?1 AND merged = 1",
            )?
            .query_row([&gid.0], |r| r.get(0))?;
        match epoch {
            // Merged commits go 64 epochs after finality: none left, final long ago.
            None => Ok(true),
            Some(e) => self.is_final(gid, to_u64(e)),
        }
    }
}

/// A group's commit rows as [`State::commit_fits`] counts them: in the epoch of the
/// commit to store, in all, and in epochs after ours.
struct Usage {
    in_epoch: u64,
    rows: u64,
    bytes: u64,
    later_rows: u64,
    later_bytes: u64,
}

/// The furthest epoch after `floor` with others' commits not tried yet, the first to make
/// room for a commit of an epoch up to `floor`.
fn future_to_evict(s: &State, gid: &GroupId, floor: u64) -> Result<Option<u64>> {
    let e: Option<i64> = s
        .db()
        .prepare_cached(
            "SELECT MAX(epoch) FROM pqmls_commits WHERE group_id = ?1 AND epoch > ?2 AND merged = 0 AND own = 0",
        )?
        .query_row(params![gid.0, to_i64(floor)], |r| r.get(0))?;
    Ok(e.map(to_u64))
}

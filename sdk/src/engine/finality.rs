//! Epoch keys, votes and finality: the engine's side of [`crate::order`].
//!
//! When a member enters an epoch it exports the epoch's [`EpochKeys`] (ordering key, vote
//! key, vote tag) and keeps them until the epoch is final. After merging the winner of an
//! epoch it casts a round-1 vote for it; it reads the votes of others on the group topic,
//! and asks [`crate::order::Tally`] whether an epoch is final (or a round 2 is due). A
//! final epoch is never left again: the member moves to its final commit if it had merged
//! another one, later candidates for it are ignored, and what was kept to move away from
//! it (snapshots, the epoch's keys, its candidates and votes) is deleted.

use std::collections::{BTreeMap, BTreeSet};

use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::signatures::Signer as _;
use rusqlite::{OptionalExtension, params};
use tokio::time::Instant;

use super::short;
use super::{Outcome, State};
use crate::GroupId;
use crate::db::{self, to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::Event;
use crate::identity::UserId;
use crate::order::{self, CommitId, Tally, Voter};
use crate::wire::{self, EpochKeys, ORDER_EXPORTER_LABEL, VOTE_EXPORTER_LABEL, VoteBody, Wire};

/// Most votes kept waiting for an epoch we do not hold yet (over all groups).
const PENDING_VOTES: i64 = 1024;
/// The largest sealed vote a member can make, in bytes: nonce, AEAD tag, and a
/// [`VoteBody`] with the largest signature key and signature of our suites (ML-DSA-87
/// with Ed25519, 2.6 KB and 4.7 KB), with room to spare. So the pending votes take at most
/// 16 MiB, whatever non-members publish.
const MAX_SEALED_VOTE: usize = 16 * 1024;

/// A row of `pqmls_abstentions`: voter, lost epoch, leaf key, voted tags.
type AbstentionRow = (Vec<u8>, i64, Vec<u8>, Vec<u8>);

impl State {
    /// Exports and keeps the [`EpochKeys`] of the epoch the group is at.
    pub(crate) fn store_epoch_keys(&mut self, gid: &GroupId) -> Result<()> {
        let (epoch, keys) = {
            let g = self.group(gid)?;
            let export = |label: &str| -> Result<[u8; 32]> {
                let v = g
                    .mls
                    .export_secret(self.provider.crypto(), label, &[], 32)
                    .map_err(mls)?;
                v.try_into()
                    .map_err(|_| Error::Mls("exporter length".into()))
            };
            (
                g.mls.epoch().as_u64(),
                EpochKeys::new(export(ORDER_EXPORTER_LABEL)?, export(VOTE_EXPORTER_LABEL)?),
            )
        };
        self.db().prepare_cached("INSERT OR REPLACE INTO pqmls_epoch_keys (group_id, epoch, order_key, vote_key, vote_tag, entered_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
            params![
                gid.0,
                to_i64(epoch),
                &keys.order_key[..],
                &keys.vote_key[..],
                &keys.vote_tag[..],
                to_i64(self.horizon_ms())
            ],
        )?;
        // Votes that came before we entered the epoch.
        let waiting: Vec<Vec<u8>> = self
            .db()
            .prepare_cached("SELECT sealed FROM pqmls_votes_pending WHERE vote_tag = ?1")?
            .query_map([&keys.vote_tag[..]], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_votes_pending WHERE vote_tag = ?1")?
            .execute([&keys.vote_tag[..]])?;
        for sealed in waiting {
            let _ = self.read_vote(gid, epoch, &keys, &sealed, false)?;
        }
        Ok(())
    }

    /// The epoch of our branch that `tag` ([`EpochKeys::vote_tag`]) names, if we hold
    /// its keys.
    pub(crate) fn epoch_of_tag(&self, gid: &GroupId, tag: &[u8; 16]) -> Result<Option<u64>> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT epoch FROM pqmls_epoch_keys WHERE group_id = ?1 AND vote_tag = ?2",
            )?
            .query_row(params![gid.0, &tag[..]], |r| r.get(0))
            .optional()?
            .map(to_u64))
    }

    /// Seals `plain` under a key exported from an epoch (votes, rejoin requests): a fresh
    /// nonce, then the suite's AEAD ciphertext, with the epoch's tag as associated data.
    pub(crate) fn seal_for_epoch(
        &self,
        key: &[u8; 32],
        tag: &[u8; 16],
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        let aead = self.config.suite.aead_algorithm();
        let key = key.get(..aead.key_size()).unwrap_or(key);
        let nonce = self.random::<12>()?;
        let mut sealed = nonce.to_vec();
        sealed.extend(
            self.provider
                .crypto()
                .aead_encrypt(aead, key, plain, &nonce, tag)
                .map_err(|e| Error::Crypto(format!("{e:?}")))?,
        );
        Ok(sealed)
    }

    /// Opens what [`State::seal_for_epoch`] sealed; `None` if it does not open.
    pub(crate) fn open_for_epoch(
        &self,
        key: &[u8; 32],
        tag: &[u8; 16],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        let aead = self.config.suite.aead_algorithm();
        let key = key.get(..aead.key_size()).unwrap_or(key);
        let (nonce, ct) = sealed.split_at_checked(12)?;
        self.provider
            .crypto()
            .aead_decrypt(aead, key, ct, nonce, tag)
            .ok()
    }

    /// The keys of `epoch` on our branch.
    pub(crate) fn epoch_keys(&self, gid: &GroupId, epoch: u64) -> Result<Option<EpochKeys>> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT order_key, vote_key FROM pqmls_epoch_keys WHERE group_id = ?1 AND epoch = ?2",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.and_then(|(o, v)| Some(EpochKeys::new(o.try_into().ok()?, v.try_into().ok()?))))
    }

    /// Our priority for the epoch the group is at.
    pub(crate) fn own_priority(&mut self, gid: &GroupId) -> Result<[u8; 32]> {
        let g = self.group(gid)?;
        let epoch = g.mls.epoch().as_u64();
        let leaf = g.mls.own_leaf_index().u32();
        if self.epoch_keys(gid, epoch)?.is_none() {
            // A state from before the ordering kept epoch keys.
            self.store_epoch_keys(gid)?;
        }
        let keys = self
            .epoch_keys(gid, epoch)?
            .ok_or_else(|| Error::Mls(format!("no ordering key for epoch {epoch}")))?;
        Ok(order::priority(&keys.order_key, leaf))
    }

    /// The last epoch whose ending commit is final on our side (`None`: none yet).
    pub(crate) fn final_epoch(&self, gid: &GroupId) -> Result<Option<u64>> {
        let e: Option<i64> = self
            .db()
            .prepare_cached("SELECT final_epoch FROM pqmls_groups WHERE group_id = ?1")?
            .query_row([&gid.0], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(e.and_then(|e| u64::try_from(e).ok()))
    }

    /// Whether the ending of `epoch` is final (no candidate for it is considered again).
    pub(crate) fn is_final(&self, gid: &GroupId, epoch: u64) -> Result<bool> {
        Ok(self.final_epoch(gid)?.is_some_and(|f| epoch <= f))
    }

    pub(crate) fn set_final_epoch(&mut self, gid: &GroupId, epoch: Option<u64>) -> Result<()> {
        self.db()
            .prepare_cached("UPDATE pqmls_groups SET final_epoch = ?2 WHERE group_id = ?1")?
            .execute(params![gid.0, epoch.map(to_i64)])?;
        Ok(())
    }

    /// The members of `epoch` on our branch, by leaf (our record of it).
    pub(crate) fn epoch_members(
        &self,
        gid: &GroupId,
        epoch: u64,
    ) -> Result<Option<super::EpochMembers>> {
        let text: Option<String> = self
            .db()
            .prepare_cached("SELECT members FROM pqmls_epochs WHERE group_id = ?1 AND epoch = ?2")?
            .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
            .optional()?;
        let Some(text) = text else {
            return Ok(None);
        };
        let key = (gid.0.clone(), epoch);
        if let Some((seen, members)) = self.member_records.borrow().get(&key)
            && *seen == text
        {
            // Shared, not copied: this runs for every vote read and every tally.
            return Ok(Some(std::sync::Arc::clone(members)));
        }
        let members = std::sync::Arc::new(super::decode_members(&text));
        let mut cache = self.member_records.borrow_mut();
        if cache.len() >= super::MEMBER_RECORDS_KEPT {
            cache.clear();
        }
        cache.insert(key, (text, members.clone()));
        Ok(Some(members))
    }

    /// The leaves of `epoch` on our branch (our record of it) with the hash of their HPKE
    /// key, for those that came from a commit or an update (`record_epoch`).
    pub(crate) fn epoch_leaf_keys(
        &self,
        gid: &GroupId,
        epoch: u64,
    ) -> Result<Option<Vec<super::LeafKey>>> {
        let text: Option<String> = self
            .db()
            .prepare_cached("SELECT members FROM pqmls_epochs WHERE group_id = ?1 AND epoch = ?2")?
            .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
            .optional()?;
        Ok(text.map(|t| super::decode_leaf_keys(&t)))
    }

    /// The votes read for `epoch` (by its tag on our branch).
    fn tally(&self, gid: &GroupId, tag: &[u8; 16]) -> Result<Tally> {
        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT round, voter, commit_hash FROM pqmls_votes WHERE group_id = ?1 AND vote_tag = ?2",
            )?
            .query_map(params![gid.0, &tag[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut t = Tally::default();
        for (round, voter, commit) in rows {
            if let (Ok(round), Ok(voter), Ok(commit)) = (
                u8::try_from(round),
                <Voter>::try_from(voter.as_slice()),
                <CommitId>::try_from(commit.as_slice()),
            ) {
                t.add(round, voter, commit);
            }
        }
        self.add_abstentions(gid, tag, &mut t)?;
        Ok(t)
    }

    /// The members that said, signed, that they cast no vote in the epoch of `tag`: they
    /// lost the group at an earlier epoch, their leaf of then is still listed here (same
    /// HPKE key: a leaf added for them later has another) or one they made from it by
    /// their own commits or updates on our branch, they are listed once, and they did not
    /// vote under this tag (see `recovery::record_abstention`, `order::abstains`).
    ///
    /// Why this is safe: an honest member that reports `Unrecoverable` at `L` holds no
    /// state of our branch after `L` (it could not move to the commit that ended `L`
    /// here), votes no more, and lists every tag it did vote under after `L`; so for a
    /// tag it does not list it never cast, and never will cast, a round-1 vote. Its
    /// abstention is then exactly the vote round 2 waits for (`order::ABSTAIN`): round 1
    /// can get no quorum from it. A member that abstains and votes under one tag is an
    /// equivocator, as one voting twice.
    fn add_abstentions(&self, gid: &GroupId, tag: &[u8; 16], t: &mut Tally) -> Result<()> {
        // Most groups hold none: one indexed lookup on this path, which every tally takes.
        let any: bool = self
            .db()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM pqmls_abstentions WHERE group_id = ?1)")?
            .query_row([&gid.0], |r| r.get(0))?;
        if !any {
            return Ok(());
        }
        let Some(epoch) = self.epoch_of_tag(gid, tag)? else {
            return Ok(());
        };
        let rows: Vec<AbstentionRow> = self
            .db()
            .prepare_cached(
                "SELECT voter, epoch, leaf_key, voted_tags FROM pqmls_abstentions WHERE group_id = ?1 AND epoch < ?2",
            )?
            .query_map(params![gid.0, to_i64(epoch)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        // Records read once per tally, only as far back as some abstainer's chain of
        // leaves goes (`order::abstains`).
        let mut records: BTreeMap<u64, Option<Vec<super::LeafKey>>> = BTreeMap::new();
        for (voter, lost_at, leaf_key, voted) in rows {
            let (Ok(voter), Ok(leaf_key), Ok(lost_at)) = (
                <Voter>::try_from(voter.as_slice()),
                <[u8; 32]>::try_from(leaf_key.as_slice()),
                u64::try_from(lost_at),
            ) else {
                continue;
            };
            let voted: Vec<[u8; 16]> = voted
                .chunks_exact(16)
                .filter_map(|c| c.try_into().ok())
                .collect();
            let mut failed = None;
            let theirs = |back: usize| -> Option<Vec<order::RecordedLeaf>> {
                let at = epoch.checked_sub(u64::try_from(back).ok()?)?;
                if let std::collections::btree_map::Entry::Vacant(slot) = records.entry(at) {
                    match self.epoch_leaf_keys(gid, at) {
                        Ok(r) => {
                            slot.insert(r);
                        }
                        Err(e) => {
                            failed = Some(e);
                            return None;
                        }
                    }
                }
                let leaves = records.get(&at)?.as_ref()?;
                Some(
                    leaves
                        .iter()
                        .filter(|(id, _)| id.0 == voter)
                        .map(|(_, leaf)| *leaf)
                        .collect(),
                )
            };
            let depth = usize::try_from(epoch - lost_at).unwrap_or(usize::MAX);
            if order::abstains(theirs, depth, &leaf_key, &voted, tag) {
                t.abstain(voter);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether a leaf of ours at `epoch` is one we abstained with (`recovery::lost_request`).
    fn holds_abstained_leaf(&self, gid: &GroupId, epoch: u64) -> Result<bool> {
        let Some(leaves) = self.epoch_leaf_keys(gid, epoch)? else {
            return Ok(false);
        };
        for (id, leaf) in leaves {
            if id == self.id && self.abstained_with(gid, &leaf.key)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether we abstained with the leaf whose HPKE key hashes to `key`.
    pub(crate) fn abstained_with(&self, gid: &GroupId, key: &[u8; 32]) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_abstained_leaves WHERE group_id = ?1 AND leaf_key = ?2)",
            )?
            .query_row(params![gid.0, &key[..]], |r| r.get(0))?)
    }

    fn has_voted(&self, gid: &GroupId, tag: &[u8; 16], round: u8) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT 1 FROM pqmls_votes WHERE group_id = ?1 AND vote_tag = ?2 AND round = ?3 AND voter = ?4",
            )?
            .query_row(
                params![gid.0, &tag[..], i64::from(round), &self.id.0[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Casts our vote for `commit` as the end of `epoch` in `round` (once per epoch and
    /// round), then looks at finality.
    pub(crate) fn cast_vote(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        round: u8,
        commit: &CommitId,
    ) -> Result<()> {
        if self
            .groups
            .get(gid)
            .is_some_and(|g| g.unrecoverable.is_some())
        {
            // A state known to be dead votes no more: its abstention lists the tags it
            // voted under (`recovery::lost_request`), and must stay complete.
            return Ok(());
        }
        let Some(keys) = self.epoch_keys(gid, epoch)? else {
            return Ok(());
        };
        if self.has_voted(gid, &keys.vote_tag, round)? {
            return Ok(());
        }
        if self.holds_abstained_leaf(gid, epoch)? {
            // We said this leaf casts no vote in later epochs (a state we should never
            // hold: `joins::join` refuses it); never a vote from it.
            tracing::warn!(
                "{}: group {gid} epoch {epoch}: no vote from a leaf we abstained with",
                self.name
            );
            return Ok(());
        }
        let Some(leaf) = self
            .epoch_members(gid, epoch)?
            .and_then(|ms| ms.iter().find(|(_, m)| m.id == self.id).map(|(l, _)| *l))
        else {
            return Ok(());
        };
        let sealed = self.seal_vote(gid, epoch, &keys, round, commit, leaf)?;
        let topic = self.group(gid)?.topic.clone();
        self.enqueue(&topic, sealed.clone())?;
        self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_votes (group_id, vote_tag, epoch, round, voter, commit_hash, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(
            params![gid.0, &keys.vote_tag[..], to_i64(epoch), i64::from(round), &self.id.0[..], &commit[..], sealed],
        )?;
        self.stats.votes_cast += 1;
        tracing::debug!(
            "{}: group {gid} epoch {epoch}: round-{round} vote for {}",
            self.name,
            super::short(commit)
        );
        Ok(())
    }

    /// Our vote as it goes on the wire: signed, sealed with the epoch's vote key under a
    /// fresh nonce.
    fn seal_vote(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        keys: &EpochKeys,
        round: u8,
        commit: &CommitId,
        leaf: u32,
    ) -> Result<Vec<u8>> {
        let sig = self
            .signer
            .sign(&wire::vote_tbs(&gid.0, epoch, round, commit, leaf))
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        let body = VoteBody {
            epoch,
            round,
            commit: *commit,
            leaf,
            public_key: self.signer.public().to_vec(),
            sig,
        };
        let sealed = self.seal_for_epoch(&keys.vote_key, &keys.vote_tag, &body.encode())?;
        Ok(Wire::Vote {
            tag: keys.vote_tag,
            sealed,
        }
        .encode())
    }

    /// Publishes our votes on the epochs after the last final one again (fresh nonces):
    /// a vote lost for good would keep an epoch from being final at the others.
    ///
    /// Only a vote cast under the tag of the epoch we hold now: after a move to another
    /// branch, a vote of the same epoch number on the branch we left was cast in another
    /// state, for a commit of that branch. Sealed again under this branch's keys it would
    /// be a second round-1 vote here, an honest member equivocating (seed 71; test
    /// `votes_of_a_branch_left_are_never_published_on_the_winner`).
    fn revote(&mut self, gid: &GroupId) -> Result<()> {
        let after = self.final_epoch(gid)?.map_or(-1, to_i64);
        let ours: Vec<(i64, Vec<u8>, i64, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT epoch, vote_tag, round, commit_hash FROM pqmls_votes WHERE group_id = ?1 AND voter = ?2 AND epoch > ?3",
            )?
            .query_map(params![gid.0, &self.id.0[..], after], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        for (epoch, tag, round, commit) in ours {
            let epoch = to_u64(epoch);
            let (Some(keys), Ok(round), Ok(commit)) = (
                self.epoch_keys(gid, epoch)?,
                u8::try_from(round),
                <CommitId>::try_from(commit.as_slice()),
            ) else {
                continue;
            };
            if keys.vote_tag[..] != tag[..] {
                continue;
            }
            let Some(leaf) = self
                .epoch_members(gid, epoch)?
                .and_then(|ms| ms.iter().find(|(_, m)| m.id == self.id).map(|(l, _)| *l))
            else {
                continue;
            };
            let sealed = self.seal_vote(gid, epoch, &keys, round, &commit, leaf)?;
            let topic = self.group(gid)?.topic.clone();
            self.enqueue(&topic, sealed)?;
        }
        Ok(())
    }

    /// A vote on the group topic: read it if we hold its epoch, keep it (bounded) if we
    /// may enter that epoch later.
    pub(crate) fn on_vote(
        &mut self,
        gid: &GroupId,
        tag: &[u8; 16],
        sealed: &[u8],
        copy: bool,
    ) -> Result<Outcome> {
        if sealed.len() > MAX_SEALED_VOTE {
            // Larger than any member's vote: kept nowhere (anyone can publish one, and
            // the pending table's bound is in rows).
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        }
        let Some(epoch) = self.epoch_of_tag(gid, tag)? else {
            self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_votes_pending (vote_tag, sealed, received_ms) VALUES (?1, ?2, ?3)")?.execute(
                params![&tag[..], sealed, to_i64(self.wall_ms())],
            )?;
            // The oldest beyond the cap, through the index on `received_ms` (schema 13).
            self.db()
                .prepare_cached(db::TRIM_VOTES_PENDING)?
                .execute([PENDING_VOTES])?;
            return Ok(Outcome::Done);
        };
        if self.is_final(gid, epoch)? {
            // Decided already: a late vote changes nothing (a copy included: it is not
            // looked up, which would cost a comparison with each of the epoch's final
            // votes, and it suppresses no answer, since anyone can copy one vote).
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        }
        let Some(keys) = self.epoch_keys(gid, epoch)? else {
            return Ok(Outcome::Done);
        };
        // What is no member's vote changes nothing: anyone can publish junk under a tag
        // seen in clear, and each evaluation tallies every open epoch.
        if self.read_vote(gid, epoch, &keys, sealed, copy)? {
            self.evaluate_finality(gid)?;
        }
        Ok(Outcome::Done)
    }

    /// Opens and checks a vote for `epoch`; records it if it is a member's. Whether it is
    /// a member's vote (new, or known already: a copy, a third vote of one voter in a
    /// round); `false` for what is no member's vote, which can change nothing.
    fn read_vote(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        keys: &EpochKeys,
        sealed: &[u8],
        copy: bool,
    ) -> Result<bool> {
        // As it was on the wire (the canonical encoding is the only one accepted).
        let payload = Wire::Vote {
            tag: keys.vote_tag,
            sealed: sealed.to_vec(),
        }
        .encode();
        // A copy of a vote read already (`Wire::Again`: anyone can make copies of what
        // it saw with fresh nonces) costs a lookup among this epoch's few votes, not a
        // signature verification. Only a copy: an original seen before has the same
        // transport id (`is_seen`), and the lookup compares each of the epoch's votes
        // (5 kB each on 0x004F, read through SQLCipher) for every vote that arrives.
        let known = copy
            && self
                .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_votes WHERE group_id = ?1 AND vote_tag = ?2 AND payload = ?3)",
            )?
            .query_row(params![gid.0, &keys.vote_tag[..], payload], |r| r.get(0))?;
        if known {
            // Not `aired_now` (see `on_vote`).
            self.stats.duplicates += 1;
            return Ok(true);
        }
        let Some(plain) = self.open_for_epoch(&keys.vote_key, &keys.vote_tag, sealed) else {
            self.stats.rejected += 1;
            return Ok(false);
        };
        let Some(vote) = VoteBody::decode(&plain) else {
            self.stats.rejected += 1;
            return Ok(false);
        };
        let voter = self
            .epoch_members(gid, epoch)?
            .and_then(|ms| ms.iter().find(|(l, _)| *l == vote.leaf).map(|(_, m)| m.id));
        let scheme = self.config.suite.signature_algorithm();
        let valid = vote.epoch == epoch
            && matches!(vote.round, 1 | 2)
            && voter == Some(UserId::of_key(scheme, &vote.public_key))
            && self
                .provider
                .crypto()
                .verify_signature(
                    scheme,
                    &wire::vote_tbs(&gid.0, epoch, vote.round, &vote.commit, vote.leaf),
                    &vote.public_key,
                    &vote.sig,
                )
                .is_ok();
        let Some(voter) = voter.filter(|_| valid) else {
            self.stats.rejected += 1;
            return Ok(false);
        };
        // At most two votes of one voter per round are kept: one is the vote, two show
        // an equivocation; more would only cost space.
        let n: i64 = self.db().prepare_cached("SELECT COUNT(*) FROM pqmls_votes WHERE group_id = ?1 AND vote_tag = ?2 AND round = ?3 AND voter = ?4")?.query_row(
            params![gid.0, &keys.vote_tag[..], i64::from(vote.round), &voter.0[..]],
            |r| r.get(0),
        )?;
        if n >= 2 {
            return Ok(true);
        }
        let added = self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_votes (group_id, vote_tag, epoch, round, voter, commit_hash, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(
            params![gid.0, &keys.vote_tag[..], to_i64(epoch), i64::from(vote.round), &voter.0[..], &vote.commit[..], payload],
        )?;
        if n == 1 && added == 1 {
            self.stats.equivocations_seen += 1;
        }
        if n == 0 && added == 1 {
            self.vote_progress
                .insert((gid.clone(), epoch), Instant::now());
        }
        Ok(true)
    }

    /// The final commit of `epoch` on our branch, if the votes read give one.
    pub(crate) fn final_of(&self, gid: &GroupId, epoch: u64) -> Result<Option<CommitId>> {
        let (Some(keys), Some(members)) = (
            self.epoch_keys(gid, epoch)?,
            self.epoch_members(gid, epoch)?,
        ) else {
            return Ok(None);
        };
        let ids: BTreeSet<Voter> = members.iter().map(|(_, m)| m.id.0).collect();
        Ok(self.tally(gid, &keys.vote_tag)?.final_commit(&ids))
    }

    /// The merged commit at `epoch` on our branch and its priority.
    fn merged_at(&self, gid: &GroupId, epoch: u64) -> Result<Option<CommitId>> {
        let h: Option<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT hash FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 1",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
            .optional()?;
        Ok(h.and_then(|h| h.try_into().ok()))
    }

    /// Finalises every epoch in order whose votes allow it, moving to final commits where
    /// we merged others; casts round-2 votes where a split calls for them.
    pub(crate) fn evaluate_finality(&mut self, gid: &GroupId) -> Result<()> {
        loop {
            let Some(g) = self.groups.get(gid) else {
                return Ok(());
            };
            let current = g.mls.epoch().as_u64();
            let next = match self.final_epoch(gid)? {
                Some(f) => f + 1,
                None => 0,
            };
            if next > current {
                return Ok(());
            }
            let (Some(keys), Some(members)) =
                (self.epoch_keys(gid, next)?, self.epoch_members(gid, next)?)
            else {
                return Ok(());
            };
            let ids: BTreeSet<Voter> = members.iter().map(|(_, m)| m.id.0).collect();
            let tally = self.tally(gid, &keys.vote_tag)?;
            if let Some(equivocator) = tally.equivocators().into_iter().next() {
                let votes: Vec<String> = tally
                    .votes_of(&equivocator)
                    .into_iter()
                    .map(|(r, cs)| {
                        let cs: Vec<String> = cs.iter().map(|c| super::short(c)).collect();
                        format!("round {r}: {}", cs.join(" "))
                    })
                    .collect();
                tracing::warn!(
                    "{}: group {gid} epoch {next}: member {} voted twice ({})",
                    self.name,
                    UserId(equivocator).short(),
                    votes.join("; ")
                );
            }
            let Some(f) = tally.final_commit(&ids) else {
                tracing::trace!(
                    "{}: group {gid} epoch {next} open: {} of {} members voted in round 1, {} abstaining, {} commits voted",
                    self.name,
                    tally.voters(&ids, 1),
                    ids.len(),
                    tally.abstainers(&ids),
                    tally.voted(1).len()
                );
                // A split: a round-2 vote once every member's round-1 vote is in.
                if self.has_voted(gid, &keys.vote_tag, 1)?
                    && !self.has_voted(gid, &keys.vote_tag, 2)?
                {
                    let choice = tally.round2_choice(&ids, |id| self.contender_of(gid, next, id));
                    match choice {
                        Some(c) => self.cast_vote(gid, next, 2, &c)?,
                        None if tally.voters(&ids, 1) == ids.len() => {
                            // Every vote in, a voted candidate we have not processed: we
                            // probe it on its snapshot, or fetch it if we lack it.
                            let mut probed = false;
                            for id in tally.voted(1) {
                                if self.contender_of(gid, next, &id).is_none() {
                                    self.probe(gid, next, &id)?;
                                    probed = true;
                                }
                            }
                            let choice =
                                tally.round2_choice(&ids, |id| self.contender_of(gid, next, id));
                            match choice {
                                Some(c) if probed => {
                                    self.cast_vote(gid, next, 2, &c)?;
                                    continue;
                                }
                                _ if !db::has_snapshot(self.db(), &gid.0, next)? => {
                                    // We can no longer process what was voted for (past
                                    // the horizon): we follow the members' round-2 votes
                                    // (`order::Tally::adopted_round2`; seen in simulated
                                    // partitions: a majority that could never choose).
                                    if let Some(c) = tally.adopted_round2(&ids) {
                                        self.cast_vote(gid, next, 2, &c)?;
                                        continue;
                                    }
                                    self.todo.sync.insert(gid.clone());
                                }
                                _ => {
                                    self.todo.sync.insert(gid.clone());
                                }
                            }
                        }
                        None => {}
                    }
                }
                // Later epochs may be decided already: a branch past this one that a
                // quorum of its members left is dead whatever happens here.
                return self.follow_later_quorums(gid, next, current);
            };
            if next == current {
                // Final before we merged anything for it: settle now, on it.
                if let Some(g) = self.groups.get_mut(gid) {
                    g.settle_at = Some(Instant::now());
                }
                return Ok(());
            }
            if self.merged_at(gid, next)? != Some(f) {
                if !self.move_to_final(gid, next, &f)? {
                    return Ok(());
                }
                if self.is_final(gid, next)? {
                    // The move itself went on to finalise it (and maybe more).
                    continue;
                }
            }
            self.finalize(gid, next)?;
        }
    }

    /// Epochs after `first_open` (the first one not final here) that a quorum of their
    /// members decided on our branch: we move to that commit if we merged another, or
    /// report that we cannot.
    ///
    /// Why this is sound before `first_open` is final: the votes of an epoch are sealed
    /// under a key of that epoch's state, so the ones we read for a later epoch `e` come
    /// from members on our branch up to `e` (the same epochs before it). If a quorum of
    /// them voted for `f` in a round, no other commit for `e` can ever be final on this
    /// branch ([`order::Tally::final_commit`]: quorums of one round intersect, and round 2
    /// follows only a round 1 without one); if `first_open` is later decided against our
    /// branch, every member on it moves, those who chose `f` as well. So a branch that
    /// left `f` at `e` is dead in every future, and staying on it would be a fork nobody
    /// reports: seen when `first_open` could never be final (a round-1 split whose
    /// deciding member was away for good) and members on the losing side of a later
    /// split at `e` had no snapshot left to move with. Nothing is finalised here: that
    /// stays in epoch order.
    fn follow_later_quorums(&mut self, gid: &GroupId, first_open: u64, current: u64) -> Result<()> {
        let from = (first_open + 1).max(current.saturating_sub(KEEP_FINAL));
        for epoch in from..=current {
            let Some(f) = self.final_of(gid, epoch)? else {
                continue;
            };
            if epoch == current {
                // Decided before we merged anything for it: settle now, on it.
                if let Some(g) = self.groups.get_mut(gid)
                    && g.settle_at.is_none()
                {
                    g.settle_at = Some(Instant::now());
                }
                return Ok(());
            }
            if self.merged_at(gid, epoch)? == Some(f) {
                continue;
            }
            tracing::debug!(
                "{}: group {gid} epoch {epoch}: a quorum chose {} while epoch {first_open} is open",
                self.name,
                short(&f)
            );
            self.move_to_final(gid, epoch, &f)?;
            return Ok(());
        }
        Ok(())
    }

    /// What MLS authenticated about a candidate of `epoch` we processed (on any branch:
    /// the author and removals are set only when MLS accepted it somewhere).
    pub(crate) fn contender_of(
        &self,
        gid: &GroupId,
        epoch: u64,
        id: &CommitId,
    ) -> Option<order::Contender> {
        let (priority, author, removes): (Option<Vec<u8>>, Option<i64>, Option<String>) = self
            .db()
            .prepare_cached(
                "SELECT priority, author, removes FROM pqmls_commits
                 WHERE group_id = ?1 AND epoch = ?2 AND hash = ?3",
            )
            .ok()?
            .query_row(params![gid.0, to_i64(epoch), &id[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .ok()?;
        Some(order::Contender {
            candidate: order::Candidate {
                priority: priority?.try_into().ok()?,
                id: *id,
            },
            author: u32::try_from(author?).ok()?,
            removes: super::ordering::decode_leaves(&removes?),
        })
    }

    /// Processes a stored candidate of the past `epoch` on its snapshot, to learn what it
    /// is (for a round-2 choice), and changes nothing else.
    fn probe(&mut self, gid: &GroupId, epoch: u64, id: &CommitId) -> Result<()> {
        if !db::has_snapshot(self.db(), &gid.0, epoch)? {
            return Ok(());
        }
        let payload: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT payload FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2 AND own = 0 AND author IS NULL AND merged != -1",
                params![gid.0, &id[..]],
                |r| r.get(0),
            )
            .optional()?;
        let Some(payload) = payload else {
            return Ok(());
        };
        let (key, _) = self.storage_keys(gid)?;
        self.db().execute_batch("SAVEPOINT pqmls_probe")?;
        let events_before = self.events.len();
        let learned = (|| -> Result<Option<order::Contender>> {
            db::restore(self.db(), &gid.0, epoch, &key)?;
            self.reload_group(gid)?;
            Ok(self.stage(gid, id, &payload, false)?.map(|s| s.contender))
        })();
        self.db()
            .execute_batch("ROLLBACK TO pqmls_probe; RELEASE pqmls_probe")?;
        self.events.truncate(events_before);
        self.reload_groups()?;
        match learned? {
            Some(c) => {
                self.db().prepare_cached("UPDATE pqmls_commits SET author = ?3, removes = ?4 WHERE group_id = ?1 AND hash = ?2")?.execute(
                    params![gid.0, &id[..], i64::from(c.author), super::ordering::encode_leaves(&c.removes)],
                )?;
            }
            None => {
                self.db().prepare_cached("UPDATE pqmls_commits SET merged = -1 WHERE group_id = ?1 AND hash = ?2 AND merged = 0")?.execute(
                    params![gid.0, &id[..]],
                )?;
            }
        }
        Ok(())
    }

    /// Moves to the final commit `f` of `epoch`; `false` if we cannot (yet).
    fn move_to_final(&mut self, gid: &GroupId, epoch: u64, f: &CommitId) -> Result<bool> {
        let known: bool = self.db().prepare_cached("SELECT EXISTS (SELECT 1 FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND hash = ?3)")?.query_row(
            params![gid.0, to_i64(epoch), &f[..]],
            |r| r.get(0),
        )?;
        if !known {
            self.todo.sync.insert(gid.clone());
            return Ok(false);
        }
        if !db::has_snapshot(self.db(), &gid.0, epoch)? {
            self.unrecoverable(gid, epoch)?;
            return Ok(false);
        }
        // Tried again even if it failed on this snapshot before, or is our own from a
        // branch we left (marked -1).
        self.db().prepare_cached("UPDATE pqmls_commits SET merged = 0 WHERE group_id = ?1 AND hash = ?2 AND merged = -1")?.execute(
            params![gid.0, &f[..]],
        )?;
        self.switch_branch(gid, epoch, f)?;
        if !self.groups.contains_key(gid) {
            return Ok(false);
        }
        // The move looks at finality again once on the branch, and may have finalised
        // `epoch` already (then its commits are deleted).
        if self.is_final(gid, epoch)? || self.merged_at(gid, epoch)? == Some(*f) {
            Ok(true)
        } else {
            self.unrecoverable(gid, epoch)?;
            Ok(false)
        }
    }

    /// Reports once that we cannot follow the group's final chain at `epoch`.
    pub(crate) fn unrecoverable(&mut self, gid: &GroupId, epoch: u64) -> Result<()> {
        let Some(g) = self.groups.get_mut(gid) else {
            return Ok(());
        };
        if g.unrecoverable == Some(epoch) {
            return Ok(());
        }
        g.unrecoverable = Some(epoch);
        self.db()
            .prepare_cached("UPDATE pqmls_groups SET lost_epoch = ?2 WHERE group_id = ?1")?
            .execute(params![gid.0, to_i64(epoch)])?;
        // Our commits ending `epoch` and later are off the final chain for good: the
        // invitees of our adds among them joined a branch nobody else is on. Withdrawn
        // (`Void`), they drop it, as after any branch move of ours: those on the state we
        // hold, and every other one for `epoch` but its final commit, also those we had
        // moved away from (partition seed 83: an invitee left alone on the branch of an
        // add its inviter had left before it lost the group).
        self.void_abandoned(gid, epoch, &[])?;
        if let Some(last) = self.final_of(gid, epoch)? {
            self.void_lost_to(gid, epoch, &last)?;
        }
        self.stats.unrecoverable += 1;
        tracing::warn!(
            "{}: group {gid}: cannot reach the final commit of epoch {epoch}",
            self.name
        );
        self.events.push(Event::Unrecoverable {
            group: gid.clone(),
            epoch,
        });
        Ok(())
    }

    /// `epoch` is final: never left again; what was kept to leave it is deleted.
    fn finalize(&mut self, gid: &GroupId, epoch: u64) -> Result<()> {
        tracing::debug!("{}: group {gid} epoch {epoch} final", self.name);
        if let Some(f) = self.merged_at(gid, epoch)? {
            self.void_lost_to(gid, epoch, &f)?;
            // The votes for it are what made it final: kept with it, for a member that
            // lost its copies for good and asks (`on_need`).
            self.db()
                .prepare_cached(
                    "INSERT INTO pqmls_final_votes (group_id, epoch, payload)
                 SELECT group_id, epoch, payload FROM pqmls_votes
                 WHERE group_id = ?1 AND epoch = ?2 AND commit_hash = ?3 AND payload IS NOT NULL",
                )?
                .execute(params![gid.0, to_i64(epoch), &f[..]])?;
        }
        // Never backwards (a nested evaluation may have gone further).
        self.db().prepare_cached("UPDATE pqmls_groups SET final_epoch = MAX(COALESCE(final_epoch, -1), ?2) WHERE group_id = ?1")?.execute(
            params![gid.0, to_i64(epoch)],
        )?;
        // A member that this epoch's commit removed keeps the state it was last in until
        // the removal grace ends, to read late messages of its epochs.
        let removed = self.groups.get(gid).is_some_and(|g| !g.mls.is_active());
        let floor = self.snapshot_floor(gid)?;
        db::prune_snapshots_but(
            self.db(),
            &gid.0,
            if removed { epoch } else { epoch + 1 },
            None,
            floor,
        )?;
        let e = to_i64(epoch);
        // The final commit itself is kept (a public ciphertext) for `KEEP_FINAL` epochs, to
        // publish it again for a member that missed it (`on_need`), with the epoch's tag.
        // Nothing to drop before epoch `KEEP_FINAL` (a saturating bound of 0 would drop
        // epoch 0's commit, and the Welcome it would send again, at once).
        let keep = epoch.checked_sub(KEEP_FINAL).map_or(-1, to_i64);
        for (sql, bound) in [
            (
                "DELETE FROM pqmls_commits WHERE group_id = ?1 AND epoch <= ?2 AND merged != 1",
                e,
            ),
            (
                "DELETE FROM pqmls_commits WHERE group_id = ?1 AND epoch <= ?2",
                keep,
            ),
            (
                "DELETE FROM pqmls_votes WHERE group_id = ?1 AND epoch <= ?2",
                e,
            ),
            (
                "DELETE FROM pqmls_epoch_keys WHERE group_id = ?1 AND epoch <= ?2",
                keep,
            ),
            (
                "DELETE FROM pqmls_final_votes WHERE group_id = ?1 AND epoch <= ?2",
                keep,
            ),
            // Honoured rejoin requests are remembered while their epoch's keys can
            // open a replay of them.
            (
                "DELETE FROM pqmls_rejoins WHERE group_id = ?1 AND epoch <= ?2",
                keep,
            ),
        ] {
            self.db()
                .prepare_cached(sql)?
                .execute(params![gid.0, bound])?;
        }
        self.stats.epochs_final += 1;
        Ok(())
    }

    /// Deletes the snapshots of epochs we left longer than [`crate::Config::fork_horizon`]
    /// ago, final or not (final ones are gone already).
    pub(crate) fn expire_snapshots(&mut self) -> Result<()> {
        let horizon = u64::try_from(self.config.fork_horizon.as_millis()).unwrap_or(u64::MAX);
        let cutoff = to_i64(self.horizon_ms().saturating_sub(horizon));
        let gids: Vec<GroupId> = self.groups.keys().cloned().collect();
        for gid in gids {
            // The newest epoch entered before the cutoff: every epoch before it was left
            // before the cutoff.
            let entered: Option<i64> = self
                .db()
                .prepare_cached(
                    "SELECT MAX(epoch) FROM pqmls_epoch_keys WHERE group_id = ?1 AND entered_ms <= ?2",
                )?
                .query_row(params![gid.0, cutoff], |r| r.get(0))?;
            if let Some(e) = entered {
                let keep = self.open_epoch_kept(&gid)?;
                let floor = self.snapshot_floor(&gid)?;
                db::prune_snapshots_but(self.db(), &gid.0, to_u64(e), keep, floor)?;
            }
        }
        Ok(())
    }

    /// Deletes the snapshots and records of the states our joins replaced whose time is
    /// up (`pqmls_joins.replaced_until_ms`, see [`State::snapshot_floor`]). Once per
    /// settle time, from the timer: one indexed read per group when nothing is due.
    pub(crate) fn expire_replaced(&mut self) -> Result<()> {
        let now = to_i64(self.horizon_ms());
        let gids: Vec<GroupId> = self.groups.keys().cloned().collect();
        for gid in gids {
            let expired: Option<i64> = self
                .db()
                .prepare_cached(
                    "SELECT epoch FROM pqmls_joins WHERE group_id = ?1 AND replaced_until_ms <= ?2",
                )?
                .query_row(params![gid.0, now], |r| r.get(0))
                .optional()?;
            if let Some(first) = expired {
                self.db()
                    .prepare_cached(
                        "UPDATE pqmls_joins SET replaced_until_ms = NULL WHERE group_id = ?1",
                    )?
                    .execute([&gid.0])?;
                db::prune_snapshots(self.db(), &gid.0, to_u64(first))?;
                self.db()
                    .prepare_cached("DELETE FROM pqmls_replaced_epochs WHERE group_id = ?1")?
                    .execute([&gid.0])?;
            }
        }
        Ok(())
    }

    /// The epoch below which snapshots are of a state the current one replaced and are
    /// not pruned with the current state's: our first epoch in this state until its
    /// `pqmls_joins.replaced_until_ms`, else 0. A member removed and added again (or
    /// whose state died and that a member added again) may get late messages of the old
    /// state's last epochs after the new state's first finalisation (honest seed 48: a
    /// message of the epoch before the re-add, 170 ms after the join); a removed state is
    /// kept [`crate::Config::removal_grace`] for the same reason, and so are these
    /// snapshots (in the database, so that a reload or restart keeps the bound), then they
    /// go (`expire_snapshots`).
    pub(crate) fn snapshot_floor(&self, gid: &GroupId) -> Result<u64> {
        let first: Option<i64> = self
            .db()
            .prepare_cached(
                "SELECT epoch FROM pqmls_joins WHERE group_id = ?1 AND replaced_until_ms > ?2",
            )?
            .query_row(params![gid.0, to_i64(self.horizon_ms())], |r| r.get(0))
            .optional()?;
        Ok(first.map_or(0, to_u64))
    }

    /// The first open epoch (the oldest not final), if its snapshot is still to be kept
    /// although it may be older than the fork horizon or the rollback window: we left it
    /// less than [`crate::Config::open_epoch_horizon`] ago (see there why).
    pub(crate) fn open_epoch_kept(&self, gid: &GroupId) -> Result<Option<u64>> {
        let first_open = self.final_epoch(gid)?.map_or(0, |f| f + 1);
        Ok(self
            .left_within(gid, first_open, self.config.open_epoch_horizon)?
            .then_some(first_open))
    }

    /// Whether we left `epoch` on the branch we hold (entered the next one) less than
    /// `within` ago, or have not left it.
    fn left_within(&self, gid: &GroupId, epoch: u64, within: std::time::Duration) -> Result<bool> {
        let within = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        Ok(self.since_left_ms(gid, epoch)?.is_none_or(|s| s < within))
    }

    /// How long ago (milliseconds on [`State::horizon_ms`]) we left `epoch` on the branch
    /// we hold, i.e. entered the next one; `None` if we have not.
    fn since_left_ms(&self, gid: &GroupId, epoch: u64) -> Result<Option<u64>> {
        let left: Option<i64> = self
            .db()
            .prepare_cached(
                "SELECT entered_ms FROM pqmls_epoch_keys WHERE group_id = ?1 AND epoch = ?2",
            )?
            .query_row(params![gid.0, to_i64(epoch.saturating_add(1))], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(left.map(|t| self.horizon_ms().saturating_sub(to_u64(t))))
    }

    /// Whether our snapshot of `epoch` may serve a move on priority: held, and not kept
    /// past the fork horizon only for the first open epoch's round 2 and final commit.
    pub(crate) fn snapshot_for_moves(&self, gid: &GroupId, epoch: u64) -> Result<bool> {
        Ok(db::has_snapshot(self.db(), &gid.0, epoch)?
            && self.left_within(gid, epoch, self.config.fork_horizon)?)
    }

    /// Has OpenMLS delete the application-message secrets of past epochs we entered
    /// longer than [`crate::Config::past_epoch_secrets_max_age`] ago (it keeps up to
    /// [`crate::Config::past_epoch_secrets`] of them to read late messages). Called on
    /// every tick; acts once for each past epoch that comes of age, since a deletion
    /// rewrites the group's whole secrets store. OpenMLS compares its own timestamps
    /// (when it derived each epoch's secrets, on the system clock) with the cutoff on
    /// our clock, the one that decided to ask (the same clock outside simulations).
    pub(crate) fn expire_past_secrets(&mut self) -> Result<()> {
        let age = self.config.past_epoch_secrets_max_age;
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = to_i64(self.horizon_ms().saturating_sub(age_ms));
        let gids: Vec<GroupId> = self.groups.keys().cloned().collect();
        for gid in gids {
            let current = self.group(&gid)?.mls.epoch().as_u64();
            let oldest = current.saturating_sub(self.config.past_epoch_secrets);
            let due: Option<i64> = self
                .db()
                .prepare_cached(
                    "SELECT MAX(epoch) FROM pqmls_epoch_keys WHERE group_id = ?1 AND entered_ms <= ?2 AND epoch >= ?3 AND epoch < ?4",
                )?
                .query_row(params![gid.0, cutoff, to_i64(oldest), to_i64(current)], |r| {
                    r.get(0)
                })?;
            let Some(due) = due.map(to_u64) else {
                continue;
            };
            if self
                .past_secrets_cleared
                .get(&gid)
                .is_some_and(|done| *done >= due)
            {
                continue;
            }
            let g = self
                .groups
                .get_mut(&gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
            g.mls
                .delete_past_epoch_secrets(
                    &self.provider,
                    openmls::group::PastEpochDeletion::before_timestamp(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(to_u64(cutoff)),
                    ),
                )
                .map_err(|e| Error::Mls(e.to_string()))?;
            tracing::debug!(
                "{}: group {gid}: message secrets of past epochs up to {due} deleted for age",
                self.name
            );
            self.past_secrets_cleared.insert(gid, due);
        }
        Ok(())
    }

    /// Publishes again our own merged commits that are not final after a while and that
    /// no other member's vote names yet (at most [`REPUBLISH_TIMES`] times,
    /// [`REPUBLISH_AFTER`] settle times apart): a commit that reached no one (gossip
    /// dropped it, the stores missed it) would otherwise leave us on a branch of our own.
    /// A commit that was delivered gets votes and becomes final, or loses to one that
    /// does and we move.
    pub(crate) fn republish_own(&mut self, now: Instant) -> Result<()> {
        let gids: Vec<GroupId> = self.groups.keys().cloned().collect();
        let gap = self.config.settle.saturating_mul(REPUBLISH_AFTER);
        let mut live = BTreeSet::new();
        for gid in gids {
            let after = self.final_epoch(&gid)?.map_or(-1, to_i64);
            // Hashes only: the payload (tens of KB for a PQ commit) is read when due.
            let own: Vec<Vec<u8>> = self
                .db()
                .prepare_cached(
                    "SELECT hash FROM pqmls_commits WHERE group_id = ?1 AND own = 1 AND merged = 1 AND epoch > ?2",
                )?
                .query_map(params![gid.0, after], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            // Our votes too, on the same schedule, while something is not final.
            let pending: bool = self.db().prepare_cached("SELECT EXISTS (SELECT 1 FROM pqmls_votes WHERE group_id = ?1 AND voter = ?2 AND epoch > ?3)")?.query_row(
                params![gid.0, &self.id.0[..], after],
                |r| r.get(0),
            )?;
            if pending {
                let key = vote_marker(&gid);
                live.insert(key);
                let (last, times) = *self.republished.entry(key).or_insert((now, 0));
                if times < REPUBLISH_TIMES && now >= last + gap {
                    self.revote(&gid)?;
                    self.republished.insert(key, (now, times + 1));
                }
            }
            for hash in own {
                let Ok(id) = <[u8; 32]>::try_from(hash.as_slice()) else {
                    continue;
                };
                live.insert(id);
                let (last, times) = *self.republished.entry(id).or_insert((now, 0));
                if times >= REPUBLISH_TIMES || now < last + gap {
                    continue;
                }
                // Evidence that it reached others: another member's vote names it. Those
                // that still lack it ask (`ask_missing`, a vote naming a commit they do
                // not hold); a copy to everyone (67 kB at 50 members on 0x004F, once per
                // commit since copies get through the duplicate window) would only slow
                // the members it is still on its way to.
                let reached: bool = self
                    .db()
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM pqmls_votes WHERE group_id = ?1 AND commit_hash = ?2 AND voter != ?3)",
                    )?
                    .query_row(params![gid.0, hash, &self.id.0[..]], |r| r.get(0))?;
                if reached {
                    self.republished.insert(id, (now, times));
                    continue;
                }
                let payload: Vec<u8> = self
                    .db()
                    .prepare_cached(
                        "SELECT payload FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2",
                    )?
                    .query_row(params![gid.0, hash], |r| r.get(0))?;
                let topic = self.group(&gid)?.topic.clone();
                self.enqueue_again(&topic, payload)?;
                self.republished.insert(id, (now, times + 1));
                self.stats.republished += 1;
            }
        }
        // The Welcomes of our add commits on the chain, for invitees that missed them
        // (a Welcome the stores missed is never fetched again); an invitee that joined
        // refuses a copy by its hash. Named by their commit's hash: a Welcome (tens of KB)
        // is read only when it is due, not on every call.
        let welcomes: Vec<(Vec<u8>, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT group_id, hash FROM pqmls_commits WHERE own = 1 AND merged = 1
                 AND welcome IS NOT NULL AND invitee IS NOT NULL",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (group_id, hash) in welcomes {
            let id = welcome_marker(&hash);
            live.insert(id);
            let (last, times) = *self.republished.entry(id).or_insert((now, 0));
            if times >= REPUBLISH_TIMES || now < last + gap {
                continue;
            }
            let row: Option<(Vec<u8>, String)> = self
                .db()
                .prepare_cached(
                    "SELECT welcome, invitee FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2",
                )?
                .query_row(params![group_id, hash], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((welcome, invitees)) =
                row.map(|(w, i)| (w, super::intents::decode_invitees(&i)))
            else {
                continue;
            };
            tracing::debug!(
                "{}: publishing the Welcome to {} invitee(s) again",
                self.name,
                invitees.len()
            );
            let payload = Wire::Welcome { mls: welcome }.encode();
            for invitee in &invitees {
                self.enqueue_again(&wire::inbox_topic(invitee), payload.clone())?;
            }
            self.republished.insert(id, (now, times + 1));
        }
        // Our withdrawals, as many times; then they are dropped.
        let voids: Vec<(Vec<u8>, String, Vec<u8>)> = self
            .db()
            .prepare_cached("SELECT void_id, invitee, payload FROM pqmls_sent_voids")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (void_id, invitee, payload) in voids {
            let invitees = super::intents::decode_invitees(&invitee);
            let (Ok(id), false) = (
                <[u8; 32]>::try_from(void_id.as_slice()),
                invitees.is_empty(),
            ) else {
                self.db()
                    .prepare_cached("DELETE FROM pqmls_sent_voids WHERE void_id = ?1")?
                    .execute([&void_id])?;
                continue;
            };
            let (last, times) = *self.republished.entry(id).or_insert((now, 0));
            if times >= REPUBLISH_TIMES {
                self.db()
                    .prepare_cached("DELETE FROM pqmls_sent_voids WHERE void_id = ?1")?
                    .execute([&void_id])?;
                continue;
            }
            live.insert(id);
            if now < last + gap {
                continue;
            }
            tracing::debug!(
                "{}: publishing the withdrawal of a Welcome to {} invitee(s) again",
                self.name,
                invitees.len()
            );
            for invitee in &invitees {
                self.enqueue_again(&wire::inbox_topic(invitee), payload.clone())?;
            }
            self.republished.insert(id, (now, times + 1));
        }
        self.republished.retain(|id, _| live.contains(id));
        Ok(())
    }
}

/// The fields of a [`Wire::Need`], for [`State::on_need`].
pub(crate) struct NeedRequest {
    pub tag: [u8; 16],
    pub nonce: [u8; 8],
    pub votes: bool,
    pub sent_ms: u64,
    pub mac: [u8; 16],
}

/// Final commits (and their epochs' tags) kept to answer [`Wire::Need`], in epochs.
pub(crate) const KEEP_FINAL: u64 = 64;
/// Settle times between two requests for a missing commit (and two answers for one).
const NEED_AFTER: u32 = 8;
/// Requests of one group we answer per [`NEED_AFTER`] settle times, whatever their
/// epochs. Each epoch's answers are bounded on their own (`aired`, [`answers_need`]), but
/// a member (or a member removed since) holds the keys of every epoch it was in, 64 of
/// which we keep commits for, and could claim every round of answerers for each: every
/// member publishing 64 commits and their votes each gap. An honest member asks for
/// one epoch's votes per gap and for commits in epoch order, and the stores answer
/// first.
const NEED_ANSWERS_PER_GAP: u32 = 8;
/// Requests for one missing commit in a row, [`NEED_AFTER`] settle times apart; then
/// one every [`NEED_SLOW_AFTER`].
const NEED_TIMES: u32 = 20;
/// Settle times between two requests for a missing commit once [`NEED_TIMES`] went
/// unanswered (a minute at the default settle time).
const NEED_SLOW_AFTER: u32 = 240;
/// Gaps after leaving an epoch that is still open here from which we ask for it even while
/// its votes still come in (see [`State::ask_missing`]).
const NEED_STALL_CAP: u64 = 4;
/// Whether an epoch we left `since_left_ms` ago and that is still open here is to be asked
/// for (see [`State::ask_missing`]): one `gap` after we left it, unless a vote from a
/// voter new to us came for it less than a `gap` ago (`last_new_vote`: how long ago, if
/// ever), and from [`NEED_STALL_CAP`] gaps on in any case.
fn open_epoch_stalled(
    since_left_ms: u64,
    last_new_vote: Option<std::time::Duration>,
    gap: std::time::Duration,
) -> bool {
    let gap_ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
    since_left_ms >= gap_ms
        && (last_new_vote.is_none_or(|ago| ago >= gap)
            || since_left_ms >= gap_ms.saturating_mul(NEED_STALL_CAP))
}

/// Members that answer a first request for a missing commit; each later request of the
/// same member for it adds as many, up to [`NEED_ROUND`] requests ([`answers_need`]).
const NEED_ANSWERERS: usize = 3;
/// Requests that share one ranking of the answerers ([`answers_need`]).
const NEED_ROUND: u8 = 4;

/// Whether one more request of a group may be answered in the gap `budget` counts
/// (`(start, answered)`), counting it if so: at most [`NEED_ANSWERS_PER_GAP`] per gap of
/// `gap`, a new gap starting with the first request after one has passed.
fn answer_budget(budget: &mut (Instant, u32), now: Instant, gap: std::time::Duration) -> bool {
    if now >= budget.0 + gap {
        *budget = (now, 0);
    }
    if budget.1 >= NEED_ANSWERS_PER_GAP {
        return false;
    }
    budget.1 += 1;
    true
}

/// Whether the member at leaf `own` answers a request for a missing commit
/// ([`Wire::Need`]) that counts itself its `attempt`-th, the group's members being at
/// `leaves`.
///
/// Every member that holds the commit could answer, and before a rule every one did: in
/// a 50-member group a request cost 50 republications of the commit and its votes
/// (about 330 kB each on 0x004F), and the members that ask are those already behind,
/// mostly because they are slow. One answer is enough when it is delivered: it goes to
/// the whole topic. So the members are ranked by
/// `SHA-256("pqmls need answerer v2" | tag | round | leaf)`, `round` being
/// `(attempt - 1) / NEED_ROUND`, and the first `k` answer, `k` being [`NEED_ANSWERERS`]
/// times the attempt's place in its round (3, 6, 9, 12, then 3 again with a new ranking).
///
/// The ranking depends on the epoch (its tag) and the round, not on the request: every
/// member asking for one epoch in one round reaches the same members, each of which
/// answers at most once per [`NEED_AFTER`] settle times ([`State::on_need`]). So what
/// answering costs is bounded per epoch, not per asker: at most 12 answers per gap and
/// round, whatever the number of members asking. (Ranked by the request's random nonce,
/// as up to the sixteenth session, every request reached 3 members of its own, and at 50
/// members on two cores, once answers got through the duplicate window, the members
/// that were only slow asked by the hundred and their answers swamped the gossip:
/// BENCHMARKS.md, seventeenth session.) Members that are gone, slow or missing the
/// commit themselves stop no one for long: within a round more members answer each
/// time, and each round ranks the members afresh (if half the members hold the commit, a
/// first request reaches none of them with probability 1/8, a round of 4 with 1/4 096).
///
/// Anyone who sees the group topic can ask (the tag is in clear in every vote) and can
/// claim any attempt: the worst it gets is 12 members answering per round it names,
/// each at most once per gap. Liveness only; no safety decision depends on who answers.
pub(crate) fn answers_need(
    tag: &[u8; 16],
    attempt: u8,
    own: u32,
    leaves: impl IntoIterator<Item = u32>,
) -> bool {
    let attempt = attempt.max(1) - 1;
    let round = attempt / NEED_ROUND;
    let k = NEED_ANSWERERS.saturating_mul(usize::from(attempt % NEED_ROUND) + 1);
    let score = |leaf: u32| -> [u8; 32] {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, b"pqmls need answerer v2");
        sha2::Digest::update(&mut h, tag);
        sha2::Digest::update(&mut h, [round]);
        sha2::Digest::update(&mut h, leaf.to_be_bytes());
        sha2::Digest::finalize(h).into()
    };
    let mine = score(own);
    let before = leaves
        .into_iter()
        .filter(|&l| l != own && score(l) < mine)
        .count();
    before < k
}

/// The attempt a request counts itself (its nonce's first byte, [`answers_need`]) after
/// `times` requests for its epoch: 1, 2, 3, ... while fewer than [`NEED_TIMES`] went
/// unanswered; then a slow request opens a new round each time (its first attempt, 3
/// answerers ranked afresh), so that members that are gone for good do not stand
/// between a slow asker and those that came back.
fn need_attempt(times: u32) -> u8 {
    if times < NEED_TIMES {
        u8::try_from(times + 1).unwrap_or(u8::MAX)
    } else {
        // A round number that fits the byte: 0..=62, cycled.
        let round = u8::try_from(times % u32::from(u8::MAX / NEED_ROUND)).unwrap_or(0);
        round * NEED_ROUND + 1
    }
}

/// Settle times between two publications of an own commit that is not final.
const REPUBLISH_AFTER: u32 = 8;
/// Publications of an own commit after the first, at most.
const REPUBLISH_TIMES: u32 = 3;

/// The key under which [`State::republish_own`] tracks re-sending a group's votes.
/// The key of an own add commit's Welcome in [`State::republished`] (its commit's hash
/// names the commit itself there).
fn welcome_marker(commit: &[u8]) -> [u8; 32] {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"pqmls welcome again");
    sha2::Digest::update(&mut h, commit);
    sha2::Digest::finalize(h).into()
}

fn vote_marker(gid: &GroupId) -> [u8; 32] {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"pqmls revote");
    sha2::Digest::update(&mut h, &gid.0);
    sha2::Digest::finalize(h).into()
}

impl State {
    /// Asks for a commit we lack, for each of these reasons (each epoch on its own budget:
    /// [`NEED_TIMES`] requests, [`NEED_AFTER`] settle times apart, so an old epoch whose
    /// requests are spent hides no newer one; then one every [`NEED_SLOW_AFTER`] settle
    /// times for the oldest such epoch, since a member that stops asking may be left on
    /// its branch, silent, when the members that could answer come back; the votes on the
    /// epoch are asked for only where it is undecided here, `Wire::Need::votes`):
    /// - the votes make a commit final for an epoch from the first one not final here on
    ///   (the one we are in included: the last commit of a quiet group may reach us no
    ///   other way; later ones: see `follow_later_quorums`) and we do not hold it;
    /// - an epoch we left is still undecided here well after we left it, and no vote from
    ///   a voter new to us came for it for a gap either (its votes, or some, are lost to
    ///   us; the members that hold them publish them with the commits). While votes still
    ///   come in, the others are only slower than we are, and asking would make every
    ///   answerer republish the commit and all its votes to members that are already
    ///   busy with them (seen at 50 members on two cores: most requests were of this
    ///   kind, all needless). Each new voter defers the request by at most a gap, and
    ///   [`NEED_STALL_CAP`] gaps after we left we ask anyway, so voters trickling their
    ///   votes cannot hold it off;
    /// - a vote of a member of our epoch names a commit ending it that we do not hold,
    ///   still so one gap after we first saw it (a vote may come before its commit) and
    ///   no vote from a voter new to us came for a gap (or [`NEED_STALL_CAP`] gaps
    ///   passed): the commit is on its way while its votes still come in;
    /// - the group has visibly gone further (commits or messages of later epochs wait
    ///   here) while we are idle.
    pub(crate) fn ask_missing(&mut self, now: Instant) -> Result<()> {
        let gap = self.config.settle.saturating_mul(NEED_AFTER);
        let gids: Vec<GroupId> = self.groups.keys().cloned().collect();
        for gid in gids {
            let Some(g) = self.groups.get(&gid) else {
                continue;
            };
            // A state a commit removed us from asks too: that commit may be on a branch
            // that lost, and the group, on the live one, may still list us.
            if (!g.mls.is_active() && g.removed_at.is_none()) || g.settle_at.is_some() {
                continue;
            }
            let current = g.mls.epoch().as_u64();
            let first_open = self.final_epoch(&gid)?.map_or(0, |f| f + 1);
            // Epoch -> whether its votes are wanted too (it is undecided here).
            let mut wanted = BTreeMap::new();
            // Epochs whose votes we lack: asked for one at a time (below).
            let mut undecided = Vec::new();
            if g.removed_at.is_some_and(|t| now >= t + gap) && first_open < current {
                undecided.push(first_open);
            }
            // From the first open epoch on (later ones too: `follow_later_quorums`).
            let from = first_open.max(current.saturating_sub(KEEP_FINAL));
            for epoch in from..=current {
                let decided = self.final_of(&gid, epoch)?;
                if let Some(f) = decided {
                    if self.holds_commit(&gid, &f)? {
                        continue;
                    }
                    // A quorum's votes (authenticated: sealed under the epoch's keys and
                    // signed) say how the epoch ended, and nobody sent us that commit in
                    // all our requests: we cannot follow the group. Said out loud, and
                    // the recovery asks to be added again (`recovery.rs`).
                    let spent = self
                        .needs
                        .get(&(gid.clone(), epoch))
                        .is_some_and(|(t, n)| *n >= NEED_TIMES && now >= *t + gap);
                    if spent {
                        self.unrecoverable(&gid, epoch)?;
                        break;
                    }
                    // We hold the votes that decided it: the commit is what we lack.
                    wanted.entry(epoch).or_insert(false);
                } else if epoch < current {
                    // An epoch we left that is still open here well after we left it:
                    // its votes, or some, are lost to us (the members that hold them
                    // publish them with the commits they name).
                    let since = self.since_left_ms(&gid, epoch)?;
                    let progress = self
                        .vote_progress
                        .get(&(gid.clone(), epoch))
                        .map(|t| now.saturating_duration_since(*t));
                    if since.is_some_and(|s| open_epoch_stalled(s, progress, gap)) {
                        undecided.push(epoch);
                    }
                }
            }
            if self.voted_unknown(&gid, current)? {
                let key = (gid.clone(), current);
                let progress = self
                    .vote_progress
                    .get(&(gid.clone(), current))
                    .map(|t| now.saturating_duration_since(*t));
                match self.needs.get(&key) {
                    None => {
                        // A first sighting (`times` 0) is not a request: it starts the gap.
                        self.needs.insert(key, (now, 0));
                    }
                    // While votes from voters new to us still come in, the commit they
                    // name is on its way too (at 50 members on two cores the last member
                    // has it a second after the first votes: hundreds of needless
                    // requests, each answered with a 67 kB commit, when it asked a gap
                    // after the first vote); as for an open epoch we left, never longer
                    // than [`NEED_STALL_CAP`] gaps.
                    Some((t, 0))
                        if !open_epoch_stalled(
                            u64::try_from(now.saturating_duration_since(*t).as_millis())
                                .unwrap_or(u64::MAX),
                            progress,
                            gap,
                        ) => {}
                    Some(_) => {
                        // The votes are here: one names the commit we lack.
                        wanted.entry(current).or_insert(false);
                    }
                }
            }
            let ahead: bool = self
                .db()
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM pqmls_commits WHERE group_id = ?1 AND epoch > ?2)
                     OR EXISTS (SELECT 1 FROM pqmls_pending WHERE group_id = ?1 AND epoch > ?2)",
                )?
                .query_row(params![gid.0, to_i64(current)], |r| r.get(0))?;
            if ahead {
                // The group went on: the commit ending our epoch is what we lack first;
                // its votes, if lost too, are asked for once we left it and it stalled.
                wanted.entry(current).or_insert(false);
            }
            // The votes on one undecided epoch per gap, the one asked for least lately: an
            // answer carries all the votes on its epoch (260 kB at 50 members on 0x004F),
            // and a member that lacks those of several epochs is mostly one whose votes
            // are slow, not lost (seen at 50 members on two cores: every member asking for
            // each epoch it had left, the answers swamping the gossip that was slow). The
            // others wait their turn; none is starved, each turn goes to the oldest.
            // First the stores, which hold every vote they did not miss, and whose answer
            // goes to us alone: one catch-up for every epoch newly undecided here, and a
            // gap for it, before a request that makes members publish the votes to
            // everyone. (Votes dropped on the way to a member that was only slow, as at 50
            // members on two cores, come back this way; before, those members asked by the
            // hundred, and the answers swamped the gossip that had dropped them.)
            let mut fresh = false;
            for e in &undecided {
                if let std::collections::btree_map::Entry::Vacant(v) =
                    self.votes_from_stores.entry((gid.clone(), *e))
                {
                    v.insert(now);
                    fresh = true;
                }
            }
            if fresh {
                self.todo.sync.insert(gid.clone());
            }
            let due = |s: &Self, e: u64| {
                s.votes_from_stores
                    .get(&(gid.clone(), e))
                    .is_some_and(|t| now >= *t + gap)
            };
            if self.votes_asked.get(&gid).is_none_or(|t| now >= *t + gap)
                && let Some(epoch) = undecided
                    .into_iter()
                    .filter(|e| due(self, *e))
                    .min_by_key(|e| (self.needs.get(&(gid.clone(), *e)).map(|(t, _)| *t), *e))
            {
                wanted.insert(epoch, true);
            }
            let mut slow_asked = false;
            for (epoch, votes) in wanted {
                let key = (gid.clone(), epoch);
                let (last, times) = self.needs.get(&key).copied().unwrap_or((now, 0));
                if times > 0 && now < last + gap {
                    continue;
                }
                // After [`NEED_TIMES`] requests, one every [`NEED_SLOW_AFTER`] settle
                // times, for the oldest such epoch of the group only: the members that
                // could answer may be away for longer than the first requests last, and
                // a member that stopped asking would stay on its branch, silent, for
                // good (`a_member_whose_requests_went_unanswered_asks_again_later`).
                let slow = times >= NEED_TIMES;
                if slow
                    && (slow_asked
                        || now < last + self.config.settle.saturating_mul(NEED_SLOW_AFTER))
                {
                    continue;
                }
                slow_asked |= slow;
                let Some(keys) = self.epoch_keys(&gid, epoch)? else {
                    continue;
                };
                tracing::debug!(
                    "{}: group {gid}: asking for the commit ending epoch {epoch} (at {current}, {}, request {})",
                    self.name,
                    if votes { "with votes" } else { "commit only" },
                    times + 1
                );
                let mut nonce = self.random::<8>()?;
                // The attempt, for `answers_need`: later requests reach more members.
                nonce[0] = need_attempt(times);
                let topic = self.group(&gid)?.topic.clone();
                let sent_ms = self.wall_ms();
                let mac = wire::need_mac(&keys.vote_key, &keys.vote_tag, &nonce, votes, sent_ms);
                self.enqueue(
                    &topic,
                    Wire::Need {
                        tag: keys.vote_tag,
                        nonce,
                        votes,
                        sent_ms,
                        mac,
                    }
                    .encode(),
                )?;
                self.needs.insert(key, (now, times.saturating_add(1)));
                if votes {
                    self.votes_asked.insert(gid.clone(), now);
                }
                self.stats.needs_sent += 1;
            }
        }
        // Our requests are remembered while their epoch is still open here (so the count
        // and the slow rate bound them); when a commit last went by, for one gap.
        let mut open = std::collections::BTreeMap::new();
        for (id, g) in &self.groups {
            let first = self.final_epoch(id)?.map_or(0, |f| f + 1);
            open.insert(id.clone(), (first, g.mls.epoch().as_u64()));
        }
        self.vote_progress.retain(|(g, e), _| {
            open.get(g)
                .is_some_and(|(first, cur)| (*first..=*cur).contains(e))
        });
        self.needs.retain(|(g, e), _| {
            open.get(g)
                .is_some_and(|(first, cur)| (*first..=*cur).contains(e))
        });
        self.aired
            .retain(|_, (t, v)| now < *t + gap || v.is_some_and(|v| now < v + gap));
        self.votes_asked.retain(|g, _| open.contains_key(g));
        self.answers
            .retain(|g, (t, _)| open.contains_key(g) && now < *t + gap);
        self.votes_from_stores.retain(|(g, e), _| {
            open.get(g)
                .is_some_and(|(first, cur)| (*first..=*cur).contains(e))
        });
        Ok(())
    }

    /// The commit we merged ending `epoch` went by again (a copy: an answer, a
    /// republication, which delivers the commit to everyone as our answer would, whoever
    /// made it): a request for it alone within a gap is not answered again by us
    /// ([`State::on_need`]). Only our own answer says that the votes went too, and a copy
    /// does not renew that: anyone can copy the commit every gap, and before, that kept a
    /// member that had answered once with the votes from ever answering a request for
    /// them again.
    pub(crate) fn aired_now(&mut self, gid: &GroupId, epoch: u64) {
        let now = Instant::now();
        let key = (gid.clone(), epoch);
        let votes = self.aired.get(&key).and_then(|(_, v)| *v);
        self.aired.insert(key, (now, votes));
    }

    fn holds_commit(&self, gid: &GroupId, id: &CommitId) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2)",
            )?
            .query_row(params![gid.0, &id[..]], |r| r.get(0))?)
    }

    /// Whether a vote read for `epoch` (on our branch) names a commit we do not hold.
    fn voted_unknown(&self, gid: &GroupId, epoch: u64) -> Result<bool> {
        let Some(keys) = self.epoch_keys(gid, epoch)? else {
            return Ok(false);
        };
        Ok(self.db().prepare_cached("SELECT EXISTS (SELECT 1 FROM pqmls_votes v WHERE v.group_id = ?1 AND v.vote_tag = ?2
             AND NOT EXISTS (SELECT 1 FROM pqmls_commits c WHERE c.group_id = ?1 AND c.hash = v.commit_hash))")?.query_row(
            params![gid.0, &keys.vote_tag[..]],
            |r| r.get(0),
        )?)
    }

    /// A member asks for the commit ending an epoch: if we merged one for it (final or
    /// not), we publish it again, at most once per [`NEED_AFTER`] settle times. The tag
    /// is in clear in every vote, so the request must carry a MAC under the epoch's vote
    /// key ([`wire::need_mac`]): only the epoch's members can ask (an outsider could
    /// otherwise make every member publish a commit and its votes, hundreds of kB, per
    /// request of a few bytes), and only within [`wire::NEED_FRESH_MS`] of our clock, so
    /// a request a store recorded is not answered when replayed later. The answer is a
    /// ciphertext that was on the topic already, and the rate limit bounds what asking
    /// costs us.
    pub(crate) fn on_need(&mut self, gid: &GroupId, need: NeedRequest) -> Result<Outcome> {
        let NeedRequest {
            tag,
            nonce,
            votes: want_votes,
            sent_ms,
            mac,
        } = need;
        let (tag, nonce) = (&tag, &nonce);
        let Some(epoch) = self.epoch_of_tag(gid, tag)? else {
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        };
        let Some(keys) = self.epoch_keys(gid, epoch)? else {
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        };
        if !wire::need_mac_ok(&keys.vote_key, tag, nonce, want_votes, sent_ms, &mac)
            || self.wall_ms().abs_diff(sent_ms) > wire::NEED_FRESH_MS
        {
            tracing::debug!(
                "{}: group {gid}: a request for epoch {epoch}'s commit with a bad MAC or clock: not answered",
                self.name
            );
            self.stats.needs_refused += 1;
            return Ok(Outcome::Done);
        }
        // A few members answer each request (`answers_need`).
        let chosen = self.groups.get(gid).is_some_and(|g| {
            answers_need(
                tag,
                nonce[0],
                g.mls.own_leaf_index().u32(),
                g.mls.members().map(|m| m.index.u32()),
            )
        });
        if !chosen {
            return Ok(Outcome::Done);
        }
        let now = Instant::now();
        let gap = self.config.settle.saturating_mul(NEED_AFTER);
        // What went by less than a gap ago reached the asker as it reached us, or was
        // lost to it; then it asks again, after a gap.
        let key = (gid.clone(), epoch);
        if self.aired.get(&key).is_some_and(|(t, votes)| {
            if want_votes {
                votes.is_some_and(|v| now < v + gap)
            } else {
                now < *t + gap
            }
        }) {
            tracing::trace!(
                "{}: group {gid}: epoch {epoch}'s commit went by lately: not sent again",
                self.name
            );
            return Ok(Outcome::Done);
        }
        let payload: Option<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT payload FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged = 1",
            )?
            .query_row(params![gid.0, to_i64(epoch)], |r| r.get(0))
            .optional()?;
        let mut commits: Vec<Vec<u8>> = payload.into_iter().collect();
        let mut votes: Vec<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT payload FROM pqmls_final_votes WHERE group_id = ?1 AND epoch = ?2",
            )?
            .query_map(params![gid.0, to_i64(epoch)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if !self.is_final(gid, epoch)? {
            // Not final here: the votes we read for it, one per voter and round (a member
            // voting for many commits gets one republished), so that a stalled epoch gets
            // the evidence its members lost.
            votes = self
                .db()
                .prepare_cached(
                    "SELECT payload FROM pqmls_votes WHERE group_id = ?1 AND vote_tag = ?2
                     AND payload IS NOT NULL GROUP BY voter, round",
                )?
                .query_map(params![gid.0, &tag[..]], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            // And the other commits those votes name that we hold: a member choosing its
            // round-2 vote must have processed every commit voted for in round 1, and the
            // authors may have moved on or be gone (seen: a 4-4 split that four members
            // could never resolve because one side's commit had reached none of them).
            let others: Vec<Vec<u8>> = self
                .db()
                .prepare_cached(
                    "SELECT payload FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2 AND merged != 1
                     AND hash IN (SELECT commit_hash FROM pqmls_votes WHERE group_id = ?1 AND vote_tag = ?3)",
                )?
                .query_map(params![gid.0, to_i64(epoch), &tag[..]], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            commits.extend(others);
        }
        if commits.is_empty() {
            return Ok(Outcome::Done);
        }
        // Charged only for what we would publish: a request for what we do not hold
        // costs no answer.
        let budget = self.answers.entry(gid.clone()).or_insert((now, 0));
        if !answer_budget(budget, now, gap) {
            tracing::debug!(
                "{}: group {gid}: {NEED_ANSWERS_PER_GAP} requests answered in this gap: epoch {epoch}'s not",
                self.name
            );
            return Ok(Outcome::Done);
        }
        if !want_votes {
            // The asker holds votes naming the commit it lacks (or the group went on
            // without it): the commits alone, a fifth of the bytes at 50 members.
            votes.clear();
        }
        tracing::debug!(
            "{}: group {gid}: publishing {} commit(s) ending epoch {epoch} again, with {} vote(s)",
            self.name,
            commits.len(),
            votes.len()
        );
        let topic = self.group(gid)?.topic.clone();
        for c in commits {
            self.enqueue_again(&topic, c)?;
        }
        for v in votes {
            self.enqueue_again(&topic, v)?;
        }
        let votes_aired = self.aired.get(&key).and_then(|(_, v)| *v);
        self.aired
            .insert(key, (now, if want_votes { Some(now) } else { votes_aired }));
        self.stats.needs_answered += 1;
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        NEED_ANSWERERS, NEED_ANSWERS_PER_GAP, NEED_ROUND, NEED_STALL_CAP, NEED_TIMES,
        answer_budget, answers_need, need_attempt, open_epoch_stalled,
    };
    use tokio::time::Instant;

    #[test]
    fn an_open_epoch_is_asked_for_once_its_votes_stop_coming() {
        let gap = Duration::from_millis(800);
        let ms = |n: u64| Duration::from_millis(n);
        // Not before a gap after we left it, whatever the votes.
        assert!(!open_epoch_stalled(799, None, gap));
        // A gap after, with no vote since (or none ever): asked for.
        assert!(open_epoch_stalled(800, None, gap));
        assert!(open_epoch_stalled(2_000, Some(ms(800)), gap));
        // Votes of voters new to us still came within the gap: the others are slower.
        assert!(!open_epoch_stalled(800, Some(ms(0)), gap));
        assert!(!open_epoch_stalled(3_199, Some(ms(799)), gap));
        // But not for ever: from NEED_STALL_CAP gaps on, trickled votes hold nothing off.
        let cap = 800 * NEED_STALL_CAP;
        assert!(!open_epoch_stalled(cap - 1, Some(ms(10)), gap));
        assert!(open_epoch_stalled(cap, Some(ms(0)), gap));
    }

    fn answerers(tag: &[u8; 16], attempt: u8, leaves: &[u32]) -> Vec<u32> {
        leaves
            .iter()
            .copied()
            .filter(|&own| answers_need(tag, attempt, own, leaves.iter().copied()))
            .collect()
    }

    #[test]
    fn a_first_request_is_answered_by_a_few_members_and_each_later_one_by_a_few_more() {
        let leaves: Vec<u32> = (0..50).collect();
        for attempt in 1u8..=20 {
            for t in 0u8..20 {
                let tag = [t; 16];
                let place = usize::from((attempt - 1) % NEED_ROUND) + 1;
                let want = (NEED_ANSWERERS * place).min(leaves.len());
                assert_eq!(
                    answerers(&tag, attempt, &leaves).len(),
                    want,
                    "attempt {attempt}"
                );
            }
        }
        let tag = [7u8; 16];
        // Whatever an asker claims: never more than a round's last attempt reaches.
        let most = (1..=u8::MAX)
            .map(|a| answerers(&tag, a, &leaves).len())
            .max();
        assert_eq!(most, Some(NEED_ANSWERERS * usize::from(NEED_ROUND)));
        // An attempt byte of 0 (a peer that does not count) is a first attempt.
        assert_eq!(answerers(&tag, 0, &leaves), answerers(&tag, 1, &leaves));
        // Small groups: everyone.
        assert_eq!(answerers(&tag, 1, &[4, 9]), vec![4, 9]);
        // A member not (yet) in the list still ranks itself among it.
        let outside = (0..40u8)
            .filter(|&t| answers_need(&[t; 16], 1, 99, leaves.iter().copied()))
            .count();
        assert!(outside > 0 && outside < 40, "{outside}");
    }

    /// Every member asking for one epoch in one round reaches the same members (so the
    /// answers are bounded per epoch, not per asker), more of them at each attempt of
    /// the round; each round and each epoch ranks them afresh.
    #[test]
    fn the_answerers_are_the_epochs_and_change_with_every_round() {
        let leaves: Vec<u32> = (0..50).collect();
        let tag = [3u8; 16];
        for round in 0..(u8::MAX / NEED_ROUND) {
            let first = round * NEED_ROUND + 1;
            for a in first..first + NEED_ROUND - 1 {
                let now = answerers(&tag, a, &leaves);
                let next = answerers(&tag, a + 1, &leaves);
                assert!(now.iter().all(|l| next.contains(l)), "attempt {a}");
            }
        }
        let mut chosen = std::collections::BTreeSet::new();
        for round in 0..(u8::MAX / NEED_ROUND) {
            chosen.extend(answerers(&tag, round * NEED_ROUND + 1, &leaves));
        }
        // 189 picks over 50 members, 3 per round.
        assert_eq!(chosen.len(), leaves.len());
        assert_ne!(answerers(&tag, 1, &leaves), answerers(&tag, 5, &leaves));
        // And they depend on the tag too (one epoch's slow members are not the next one's).
        assert_ne!(
            answerers(&[4u8; 16], 1, &leaves),
            answerers(&tag, 1, &leaves)
        );
    }

    /// At most NEED_ANSWERS_PER_GAP answers per gap and group, whatever the epochs; a
    /// new gap starts with the first request after the last one ended.
    #[test]
    fn answers_per_gap_are_bounded() {
        let gap = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut b = (t0, 0);
        let first: Vec<bool> = (0..20).map(|_| answer_budget(&mut b, t0, gap)).collect();
        assert_eq!(
            first.iter().filter(|a| **a).count(),
            NEED_ANSWERS_PER_GAP as usize
        );
        assert!(first[..NEED_ANSWERS_PER_GAP as usize].iter().all(|a| *a));
        let late = t0 + gap - Duration::from_millis(1);
        assert!(!answer_budget(&mut b, late, gap));
        let next = t0 + gap + Duration::from_millis(500);
        assert!(answer_budget(&mut b, next, gap));
        assert_eq!(b, (next, 1));
        // The new gap runs from its first request.
        for _ in 1..NEED_ANSWERS_PER_GAP {
            assert!(answer_budget(
                &mut b,
                next + gap - Duration::from_millis(1),
                gap
            ));
        }
        assert!(!answer_budget(
            &mut b,
            next + gap - Duration::from_millis(1),
            gap
        ));
    }

    #[test]
    fn slow_requests_open_a_new_round_each() {
        let attempts: Vec<u8> = (0..NEED_TIMES).map(need_attempt).collect();
        assert_eq!(attempts, (1..=20).collect::<Vec<u8>>());
        let slow: Vec<u8> = (NEED_TIMES..NEED_TIMES + 200).map(need_attempt).collect();
        assert!(slow.iter().all(|a| a % NEED_ROUND == 1));
        // Consecutive slow requests are in different rounds, and the rounds cycle.
        assert!(slow.windows(2).all(|w| w[0] != w[1]));
        let rounds: std::collections::BTreeSet<u8> = slow.iter().map(|a| a / NEED_ROUND).collect();
        assert_eq!(rounds.len(), usize::from(u8::MAX / NEED_ROUND));
    }
}

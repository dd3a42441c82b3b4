//! Welcomes: new invitations and consent, Welcomes kept aside for a group we hold,
//! re-invitations that continue a dead state, and withdrawals (`Void`).
//!
//! What a Welcome may do is decided by [`crate::trust::welcome_action`]; this module
//! gathers the facts (what we hold of the group, whether the sender's key is one we know
//! in it) and carries the decision out. Every Welcome is processed inside a SQLite
//! savepoint that is rolled back unless we join: OpenMLS deletes the key package a Welcome
//! names before it has validated the rest of it, so a forged Welcome, one kept aside or
//! one waiting for consent must not burn a key package.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::signatures::Signer as _;
use openmls_traits::storage::StorageProvider as _;
use openmls_traits::types::AeadType;
use rusqlite::{OptionalExtension, params};
use tokio::time::Instant;

use super::{Outcome, State};
use crate::GroupId;
use crate::db::{self, to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::{Event, Invitation};
use crate::identity::{Member, UserId};
use crate::order;
use crate::trust::{Held, WelcomeAction, join_without_asking, welcome_action};
use crate::wire::{self, VOID_EXPORTER_LABEL, VoidKeys, Wire};

/// Where a Welcome comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Just arrived on our inbox.
    Inbox,
    /// Kept aside earlier, tried again now that our state is dead.
    Kept,
    /// A pending invitation the application accepted.
    Accepted,
}

/// What a Welcome gave.
#[derive(Debug)]
enum Join {
    Joined,
    Refused,
    /// Kept aside: (group, epoch, sender, whether the sender is known in the group).
    KeptAside(GroupId, u64, UserId, bool),
    /// Held for consent.
    Invitation(GroupId, u64, Member),
}

/// The AEAD of a suite, with its key length (the nonce is 12 bytes for all three).
fn void_aead(suite: Ciphersuite) -> (AeadType, usize) {
    let aead = suite.aead_algorithm();
    (aead, aead.key_size())
}

/// (Welcome, invitee, void id, void key) of an own add commit.
type VoidRow = (Vec<u8>, String, Vec<u8>, Vec<u8>);

/// The most open epochs recorded as the branch of one add commit of ours
/// (`State::record_add_ancestry`): 32 bytes of hash and a row each.
const MAX_ANCESTRY: i64 = 256;

/// The largest sealed withdrawal a member can make, in bytes: the AEAD tag and the
/// largest signature of our suites (ML-DSA-87 with Ed25519, 4.7 KB), with room to spare.
/// Anyone can publish a `Wire::Void` on an inbox, and up to `Limits::voids` of them are
/// kept: without a size bound that was 256 rows of up to 4 MiB each.
const MAX_SEALED_VOID: usize = 8 * 1024;

/// How long a Welcome refused or declined is remembered, so that copies of it (anyone
/// can copy one from an inbox with a fresh nonce) take no decryption token; and the most
/// remembered. A refusal may not hold for ever (a cap that frees, a sender that becomes
/// known), so it is remembered for a while, not for good.
const REFUSED_FOR: std::time::Duration = std::time::Duration::from_secs(600);
const REFUSED_MAX: usize = 1024;

/// The most encrypted group secrets (one per member added) a Welcome on our inbox may
/// carry to be looked at: well above what any commit adds (`MAX_ADDS_PER_COMMIT` for
/// ours), and a bound on the key-package lookups a Welcome can make us do.
const MAX_WELCOME_SECRETS: usize = 1024;

impl State {
    /// A Welcome on our inbox.
    pub(crate) fn on_welcome(&mut self, bytes: &[u8]) -> Result<Outcome> {
        // What costs no decryption is checked before the budget: junk and copies (anyone
        // can publish on an inbox, and copy any Welcome it saw with a fresh nonce) took
        // a token each, and a flood of them kept honest invitations out.
        if !self.welcome_worth_trying(bytes)? {
            return Ok(Outcome::Done);
        }
        let rate = f64::from(self.config.limits.welcomes_per_min) / 60.0;
        let burst = self.config.limits.welcomes_per_min.max(1);
        let now_ms = self.mono_ms();
        if !self.welcome_budget.take(rate, burst, now_ms) {
            return Ok(Outcome::Deferred);
        }
        self.welcome(bytes, Source::Inbox)?;
        Ok(Outcome::Done)
    }

    /// `bytes` as a Welcome, if they are one; counted as malformed if not.
    fn decode_welcome(&mut self, bytes: &[u8]) -> Option<Welcome> {
        let welcome = MlsMessageIn::tls_deserialize_exact(bytes)
            .ok()
            .and_then(|msg| match msg.extract() {
                MlsMessageBodyIn::Welcome(welcome) => Some(welcome),
                _ => None,
            });
        if welcome.is_none() {
            self.stats.malformed += 1;
        }
        welcome
    }

    /// Whether a Welcome on our inbox is worth a key-package decryption: it is one, we
    /// have not joined with it, hold it as an invitation or kept it aside already, and
    /// it names a key package of ours (RFC 9420 §12.4.3.1: `new_member` is the reference
    /// of the key package each secret is encrypted to). The rest is counted and dropped.
    fn welcome_worth_trying(&mut self, bytes: &[u8]) -> Result<bool> {
        let Some(welcome) = self.decode_welcome(bytes) else {
            return Ok(false);
        };
        let hash = wire::welcome_hash(bytes);
        let refused = self
            .refused_welcomes
            .get(&hash)
            .is_some_and(|t| Instant::now().saturating_duration_since(*t) < REFUSED_FOR);
        if refused || self.used_welcome(&hash)? {
            self.stats.duplicates += 1;
            return Ok(false);
        }
        // Each secret costs a lookup: a Welcome carries one per member added, and no
        // commit of ours adds more than a few hundred; junk with more is not ours.
        if welcome.secrets().len() > MAX_WELCOME_SECRETS {
            self.stats.ignored += 1;
            return Ok(false);
        }
        let mut ours = false;
        for secret in welcome.secrets() {
            if self
                .provider
                .storage()
                .key_package::<KeyPackageRef, KeyPackageBundle>(&secret.new_member())
                .map_err(Error::Database)?
                .is_some()
            {
                ours = true;
                break;
            }
        }
        if !ours {
            self.stats.ignored += 1;
            return Ok(false);
        }
        // Held already (as an invitation, or aside): the kept ones are compared only
        // where the lengths match (the length is in each row's header; the bytes are not
        // read for the others).
        let held: bool = self
            .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_invitations WHERE welcome_hash = ?1)
                 OR EXISTS (SELECT 1 FROM pqmls_welcomes WHERE length(payload) = ?3 AND payload = ?2)",
            )?
            .query_row(params![&hash[..], bytes, to_i64(bytes.len() as u64)], |r| r.get(0))?;
        if held {
            self.stats.duplicates += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// Retries the Welcomes kept for a group whose state is dead, newest epoch first,
    /// until one joins.
    pub(crate) fn retry_welcomes(&mut self, gid: &GroupId) -> Result<()> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .db()
            .prepare_cached("SELECT id, payload FROM pqmls_welcomes WHERE group_id = ?1 ORDER BY sender_known DESC, epoch DESC, id DESC")?
            .query_map([&gid.0], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, payload) in rows {
            self.db()
                .prepare_cached("DELETE FROM pqmls_welcomes WHERE id = ?1")?
                .execute([id])?;
            if self.welcome(&payload, Source::Kept)? {
                break;
            }
        }
        Ok(())
    }

    /// Handles a Welcome; `true` if we joined.
    pub(crate) fn welcome(&mut self, bytes: &[u8], source: Source) -> Result<bool> {
        let Some(welcome) = self.decode_welcome(bytes) else {
            return Ok(false);
        };
        let hash = wire::welcome_hash(bytes);
        tracing::trace!("{}: a Welcome ({source:?})", self.name);
        if self.used_welcome(&hash)? {
            // One we joined with: refused whatever else holds (`trust::welcome_action`),
            // here before any processing. Its inviter publishes it again a few times
            // (`finality::republish_own`), and anyone can make copies.
            self.stats.duplicates += 1;
            return Ok(false);
        }
        self.db().execute_batch("SAVEPOINT pqmls_welcome")?;
        let outcome = self.join(welcome, &hash, source);
        if !matches!(outcome, Ok(Join::Joined)) {
            self.db()
                .execute_batch("ROLLBACK TO pqmls_welcome; RELEASE pqmls_welcome")?;
            // `join` may have dropped the state the Welcome was to replace.
            self.reload_groups()?;
        }
        match outcome? {
            Join::Joined => {
                self.db().execute_batch("RELEASE pqmls_welcome")?;
                self.todo.key_packages = true;
                Ok(true)
            }
            Join::Refused => {
                self.remember_refused(hash);
                Ok(false)
            }
            Join::KeptAside(gid, epoch, sender, known) => {
                self.keep_aside(&gid, epoch, &sender, known, bytes)?;
                // A Welcome to an epoch before our join, from a member: the messages of
                // that epoch we hold unread may be ours (`read_with_kept_welcome`).
                if known && self.first_epoch(&gid)?.is_some_and(|f| epoch < f) {
                    self.replay_pending(&gid)?;
                }
                Ok(false)
            }
            Join::Invitation(gid, epoch, inviter) => {
                self.hold_invitation(&gid, epoch, &inviter, &hash, bytes)?;
                Ok(false)
            }
        }
    }

    /// Keeps a Welcome for a group we hold, within the per-group cap: strangers' Welcomes
    /// are dropped before known members', then the oldest.
    fn keep_aside(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        sender: &UserId,
        known: bool,
        bytes: &[u8],
    ) -> Result<()> {
        let exists: bool = self
            .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_welcomes WHERE group_id = ?1 AND payload = ?2)",
            )?
            .query_row(params![gid.0, bytes], |r| r.get(0))?;
        if exists {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let received = to_i64(self.horizon_ms());
        self.db().prepare_cached("INSERT INTO pqmls_welcomes (group_id, epoch, payload, inviter_id, sender_known, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
            params![gid.0, to_i64(epoch), bytes, &sender.0[..], known, received],
        )?;
        let cap = to_i64(self.config.limits.kept_welcomes as u64);
        self.db().prepare_cached("DELETE FROM pqmls_welcomes WHERE group_id = ?1 AND id NOT IN
             (SELECT id FROM pqmls_welcomes WHERE group_id = ?1 ORDER BY sender_known DESC, id DESC LIMIT ?2)")?.execute(
            params![gid.0, cap],
        )?;
        Ok(())
    }

    /// Holds an invitation for the application's consent (caps: per inviter, then over
    /// all, oldest dropped first).
    fn hold_invitation(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        inviter: &Member,
        hash: &[u8; 32],
        bytes: &[u8],
    ) -> Result<()> {
        let exists: bool = self
            .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_invitations WHERE welcome_hash = ?1)",
            )?
            .query_row([&hash[..]], |r| r.get(0))?;
        if exists {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let from_inviter: i64 = self
            .db()
            .prepare_cached("SELECT COUNT(*) FROM pqmls_invitations WHERE inviter_id = ?1")?
            .query_row([&inviter.id.0[..]], |r| r.get(0))?;
        if to_u64(from_inviter) >= self.config.limits.invitations_per_inviter as u64 {
            self.stats.ignored += 1;
            return Ok(());
        }
        let received_ms = self.wall_ms();
        let id = self
            .db()
            .prepare_cached(
                "INSERT INTO pqmls_invitations (group_id, inviter_id, inviter_name, epoch, received_ms, welcome_hash, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .insert(params![
                gid.0,
                &inviter.id.0[..],
                inviter.name,
                to_i64(epoch),
                to_i64(received_ms),
                &hash[..],
                bytes
            ])?;
        let cap = to_i64(self.config.limits.invitations as u64);
        self.db()
            .prepare_cached(
                "DELETE FROM pqmls_invitations WHERE id NOT IN
             (SELECT id FROM pqmls_invitations ORDER BY id DESC LIMIT ?1)",
            )?
            .execute([cap])?;
        self.check_contact_key(inviter);
        self.events.push(Event::Invited(Invitation {
            id: to_u64(id),
            group: gid.clone(),
            inviter: inviter.clone(),
            received_ms,
        }));
        Ok(())
    }

    /// The pending invitations, oldest first.
    pub(crate) fn invitations(&self) -> Result<Vec<Invitation>> {
        type Row = (i64, Vec<u8>, Vec<u8>, String, i64);
        let rows: Vec<Row> = self
            .db()
            .prepare(
                "SELECT id, group_id, inviter_id, inviter_name, received_ms FROM pqmls_invitations ORDER BY id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, group, inviter, name, at)| {
                Some(Invitation {
                    id: to_u64(id),
                    group: GroupId(group),
                    inviter: Member {
                        id: UserId(inviter.try_into().ok()?),
                        name,
                    },
                    received_ms: to_u64(at),
                })
            })
            .collect())
    }

    /// Accepts a pending invitation: joins from its Welcome. `Ok(false)` if the Welcome can
    /// no longer be used (its key package is gone, the group was joined meanwhile).
    pub(crate) fn accept_invitation(&mut self, id: u64) -> Result<bool> {
        self.tx(|s| {
            let payload: Option<Vec<u8>> = s
                .db()
                .query_row(
                    "SELECT payload FROM pqmls_invitations WHERE id = ?1",
                    [to_i64(id)],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(payload) = payload else {
                return Err(Error::UnknownInvitation(id));
            };
            s.db()
                .execute("DELETE FROM pqmls_invitations WHERE id = ?1", [to_i64(id)])?;
            s.welcome(&payload, Source::Accepted)
        })
    }

    /// Declines (forgets) a pending invitation.
    pub(crate) fn decline_invitation(&mut self, id: u64) -> Result<()> {
        self.tx(|s| {
            let hash: Option<Vec<u8>> = s
                .db()
                .query_row(
                    "SELECT welcome_hash FROM pqmls_invitations WHERE id = ?1",
                    [to_i64(id)],
                    |r| r.get(0),
                )
                .optional()?;
            let n = s
                .db()
                .execute("DELETE FROM pqmls_invitations WHERE id = ?1", [to_i64(id)])?;
            if n == 0 {
                return Err(Error::UnknownInvitation(id));
            }
            if let Some(h) = hash.and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                s.remember_refused(h);
            }
            Ok(())
        })
    }

    /// Remembers a Welcome refused or declined, for [`REFUSED_FOR`], the oldest
    /// forgotten first beyond [`REFUSED_MAX`].
    fn remember_refused(&mut self, hash: [u8; 32]) {
        let now = Instant::now();
        self.refused_welcomes
            .retain(|_, t| now.saturating_duration_since(*t) < REFUSED_FOR);
        if self.refused_welcomes.len() >= REFUSED_MAX
            && let Some(oldest) = self
                .refused_welcomes
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(h, _)| *h)
        {
            self.refused_welcomes.remove(&oldest);
        }
        self.refused_welcomes.insert(hash, now);
    }

    /// What we hold of a group, for [`welcome_action`].
    fn held(&self, gid: &GroupId) -> Result<Held> {
        if let Some(g) = self.groups.get(gid) {
            if g.mls.is_active() {
                // A state whose group finalised a commit it cannot reach is dead, on the
                // authenticated evidence of a majority's votes (`finality::move_to_final`);
                // the way back is a Welcome made after that commit.
                return Ok(match g.unrecoverable {
                    Some(e) => Held::Dead {
                        left: false,
                        ended_at: Some(e),
                    },
                    None => Held::Live,
                });
            }
            // Removed by a merged commit, in the grace period. The removal may be on a
            // branch whose epoch numbers ran ahead of the live chain's, so its epoch
            // bounds nothing; the last final epoch does: epochs up to it are the live
            // chain's, we were a member through them, and an add of us ending one of them
            // is from a branch that lost.
            let left = self.left_group(gid)?;
            let final_epoch = self.final_epoch(gid)?;
            return Ok(Held::Dead {
                left,
                ended_at: final_epoch,
            });
        }
        if !self.ever_member(gid)? {
            return Ok(Held::Unknown);
        }
        // Removed and forgotten after the grace period, left, or dropped after a withdrawal.
        Ok(Held::Dead {
            left: self.left_group(gid)?,
            ended_at: None,
        })
    }

    /// Whether we left the group on purpose (or asked to).
    fn left_group(&self, gid: &GroupId) -> Result<bool> {
        Ok(self
            .db()
            .query_row(
                "SELECT left_on_purpose OR EXISTS
                     (SELECT 1 FROM pqmls_intents WHERE group_id = ?1 AND kind = 'leave')
                 FROM pqmls_groups WHERE group_id = ?1",
                [&gid.0],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Whether we joined with this Welcome before.
    fn used_welcome(&self, hash: &[u8; 32]) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached("SELECT 1 FROM pqmls_used_welcomes WHERE welcome_hash = ?1")?
            .query_row([&hash[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Joins from a Welcome, or decides not to.
    fn join(&mut self, welcome: Welcome, hash: &[u8; 32], source: Source) -> Result<Join> {
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
        // Staging verifies the GroupInfo signature and the tree (RFC 9420 §12.4.3.1), so
        // the sender below is the member whose key signed it.
        // A state of ours with this id may exist in storage (one removed in the grace
        // period): staging must not fail on it. Whether it is replaced is decided below by
        // the trust rule; a Welcome that does not join is rolled back.
        let staged = match JoinBuilder::new(&self.provider, processed)
            .replace_old_group()
            .build()
        {
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
        // Never a state with a leaf we abstained with: we said it casts no vote after the
        // epoch we lost, and members count it so (`recovery::lost_request`).
        let own = staged.own_leaf_index();
        if let Some(leaf) = staged.members().find(|m| m.index == own) {
            let key = super::leaf_key_hash(&leaf.encryption_key);
            if self.abstained_with(&gid, &key)? {
                tracing::debug!(
                    "{}: refusing a Welcome to {gid} at epoch {epoch}: its leaf for us is one we abstained with",
                    self.name
                );
                self.stats.rejected += 1;
                return Ok(Join::Refused);
            }
        }
        let inviter = self.member_of(sender.credential(), sender.signature_key().as_slice());
        let inviter_key = sender.signature_key().as_slice().to_vec();
        let held = self.held(&gid)?;
        let known = self.known_in_group(&gid, &inviter.id)?;
        let action = welcome_action(held, epoch, known, self.used_welcome(hash)?);
        match action {
            WelcomeAction::Refuse => {
                tracing::debug!(
                    "{}: refusing a Welcome to {gid} at epoch {epoch} from {} (replayed, or from before our state ended)",
                    self.name,
                    inviter.id.short()
                );
                self.stats.rejected += 1;
                return Ok(Join::Refused);
            }
            WelcomeAction::KeepAside => {
                return Ok(Join::KeptAside(gid, epoch, inviter.id, known));
            }
            WelcomeAction::Invitation => {
                let ask = source != Source::Accepted
                    && !join_without_asking(self.config.invitations, self.is_contact(&inviter.id)?);
                if ask {
                    return Ok(Join::Invitation(gid, epoch, inviter));
                }
            }
            WelcomeAction::Continue => {}
        }
        let exported = staged
            .export_secret(self.provider.crypto(), VOID_EXPORTER_LABEL, hash, 32)
            .map_err(mls)?;
        let void = VoidKeys::derive(&exported);
        if self.voided(&gid, hash, &void, &inviter_key)? {
            tracing::debug!("{}: dropping a Welcome its sender withdrew", self.name);
            self.stats.ignored += 1;
            return Ok(Join::Refused);
        }
        tracing::debug!(
            "{}: joining {gid} at epoch {epoch} ({action:?}), invited by {} (withdrawal {})",
            self.name,
            inviter.name,
            super::short(&void.id)
        );
        let lost_epoch = self.groups.get(&gid).and_then(|g| g.unrecoverable);
        // The epochs of the state we had that we never finalised and that this join makes
        // history: where the votes we hold show how one ended, the Welcomes of our other
        // commits for it are withdrawn, as `finalize` does (partition seed 83); the adds
        // among them that the joined tree shows off the chain, once we hold it
        // (`void_adds_off_the_tree`: honest seed 46, where we joined again before we held
        // those votes).
        let mut open_from = None;
        if self.groups.contains_key(&gid) {
            let first = self.final_epoch(&gid)?.map_or(0, |f| f + 1);
            let last = self.group(&gid)?.mls.epoch().as_u64();
            for e in first.max(last.saturating_sub(super::finality::KEEP_FINAL))..=last {
                if let Some(f) = self.final_of(&gid, e)? {
                    self.void_lost_to(&gid, e, &f)?;
                }
            }
            open_from = Some(first);
        }
        // The last final epoch of the state this join replaces, for the way back if the
        // Welcome is withdrawn (`on_void`); none if a final commit removed us from it: no
        // chain lists us then, and nobody would answer (honest seed 151: a member removed
        // for good, invited again on a branch that lost, asked in vain).
        let prior_final = match self.groups.get(&gid) {
            Some(g)
                if g.mls.is_active()
                    || !self.is_final(&gid, g.mls.epoch().as_u64().saturating_sub(1))? =>
            {
                open_from.and_then(|f: u64| f.checked_sub(1)).map(to_i64)
            }
            _ => None,
        };
        // The replaced state's last epoch, if it could still read it: snapshotted, so that
        // its late messages can be read after the join (a state that a commit removed us
        // from has its snapshot of that commit's epoch already).
        let replaced = if let Some(old) = self.groups.get(&gid) {
            let at = old.mls.epoch().as_u64();
            if old.mls.is_active() && at < epoch && !db::has_snapshot(self.db(), &gid.0, at)? {
                self.take_snapshot(&gid, at)?;
            }
            true
        } else {
            false
        };
        if let Some(mut old) = self.groups.remove(&gid) {
            // Removed (in the grace period) and invited again: the new Welcome replaces the
            // dead state, whose snapshots and plans are void.
            self.topics.remove(&old.topic);
            old.mls
                .delete(self.provider.storage())
                .map_err(Error::Database)?;
            // The old state's snapshots of earlier epochs stay: late messages of those
            // epochs (before a removal and re-invitation) can still be read with them.
            db::drop_snapshots_from(self.db(), &gid.0, epoch)?;
            // Operations we asked for on the dead state and that never made it into the
            // group carry over when the group continues with us (a state past the
            // horizon makes no commits while it waits: `drive_intents`); they are
            // checked against the new state before any commit. Re-adds named leaves of
            // the old tree, and a fresh invitation starts with nothing of ours.
            if action == WelcomeAction::Continue {
                self.db().prepare_cached("DELETE FROM pqmls_intents WHERE group_id = ?1 AND (kind = ?2 OR done_epoch IS NOT NULL)")?.execute(
                    params![gid.0, super::intents::READD],
                )?;
            } else {
                self.db()
                    .prepare_cached("DELETE FROM pqmls_intents WHERE group_id = ?1")?
                    .execute([&gid.0])?;
            }
            // The old state's records and epoch keys too: what they name (votes,
            // requests for commits or for a re-add) is decided by those who were there.
            // But for its last final epoch: on the chain of every member, so if this
            // Welcome is withdrawn we ask to be added again under its keys (`on_void`).
            // Kept apart while the old state's snapshots are (`State::snapshot_floor`):
            // the senders of its late messages.
            self.db()
                .prepare_cached("DELETE FROM pqmls_replaced_epochs WHERE group_id = ?1")?
                .execute([&gid.0])?;
            self.db()
                .prepare_cached(
                    "INSERT INTO pqmls_replaced_epochs (group_id, epoch, members)
                     SELECT group_id, epoch, members FROM pqmls_epochs WHERE group_id = ?1 AND epoch < ?2",
                )?
                .execute(params![gid.0, to_i64(epoch)])?;
            self.db()
                .prepare_cached("DELETE FROM pqmls_epochs WHERE group_id = ?1 AND epoch IS NOT ?2")?
                .execute(params![gid.0, prior_final])?;
            self.db().prepare_cached("DELETE FROM pqmls_epoch_keys WHERE group_id = ?1 AND epoch < ?2 AND epoch IS NOT ?3")?.execute(
                params![gid.0, to_i64(epoch), prior_final],
            )?;
        }
        // A fresh state: what we merged or found invalid on an earlier state of this group
        // says nothing about this one, and every commit of others is a candidate again.
        self.db().prepare_cached("UPDATE pqmls_commits SET merged = CASE own WHEN 1 THEN -1 ELSE 0 END WHERE group_id = ?1")?.execute(
            [&gid.0],
        )?;
        let group = staged.into_group(&self.provider).map_err(mls)?;
        self.add_group(&gid, group)?;

        if let Some(first) = open_from {
            self.void_adds_off_the_tree(&gid, first, epoch)?;
        }
        self.db()
            .prepare_cached("UPDATE pqmls_groups SET left_on_purpose = 0 WHERE group_id = ?1")?
            .execute([&gid.0])?;
        // What came before the epoch we join at is history to us: final.
        self.set_final_epoch(&gid, epoch.checked_sub(1))?;
        self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_used_welcomes (welcome_hash, group_id, used_ms) VALUES (?1, ?2, ?3)")?.execute(
            params![&hash[..], gid.0, to_i64(self.wall_ms())],
        )?;
        self.db().prepare_cached("DELETE FROM pqmls_used_welcomes WHERE group_id = ?1 AND welcome_hash NOT IN
             (SELECT welcome_hash FROM pqmls_used_welcomes WHERE group_id = ?1 ORDER BY used_ms DESC, rowid DESC LIMIT 64)")?.execute(
            [&gid.0],
        )?;
        // The replaced state's snapshots and records are kept `removal_grace`, as a
        // removed state is (`State::snapshot_floor`).
        let grace = u64::try_from(self.config.removal_grace.as_millis()).unwrap_or(u64::MAX);
        let replaced_until = replaced.then(|| to_i64(self.horizon_ms().saturating_add(grace)));
        self.db().prepare_cached("INSERT OR REPLACE INTO pqmls_joins (group_id, welcome_hash, inviter_key, joined_seq, epoch, void_id, void_key, prior_final, replaced_until_ms)
             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) FROM pqmls_messages), ?4, ?5, ?6, ?7, ?8)")?.execute(
            params![
                gid.0,
                &hash[..],
                inviter_key,
                to_i64(epoch),
                &void.id[..],
                &void.key[..],
                prior_final,
                replaced_until
            ],
        )?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_invitations WHERE group_id = ?1")?
            .execute([&gid.0])?;
        self.check_contact_key(&inviter);
        if let Some(lost_epoch) = lost_epoch {
            tracing::info!(
                "{}: back in {gid} at epoch {epoch} (lost at epoch {lost_epoch})",
                self.name
            );
            self.lost_asks.remove(&gid);
            self.stats.rejoined += 1;
            self.events.push(Event::Rejoined {
                group: gid.clone(),
                lost_epoch,
                epoch,
            });
        } else {
            self.events.push(Event::Joined {
                group: gid.clone(),
                inviter,
            });
        }
        // Catch up from the start of the topic's history: after a rejoin our cursor may be
        // past commits we skipped while we did not hold the group (seen ids make the
        // messages we did handle cheap to skip).
        let topic = wire::group_topic(&gid.0);
        self.db()
            .prepare_cached("DELETE FROM pqmls_cursors WHERE topic = ?1")?
            .execute([topic.as_str()])?;
        self.todo.sync.insert(gid.clone());
        self.replay_pending(&gid)?;
        if action == WelcomeAction::Continue {
            // A member we know continues the group: what we sent on a state whose Welcome
            // was withdrawn goes out again (receivers drop what they have, by uid). Never
            // into an invitation from a stranger.
            self.resend_own(&gid, -1)?;
            // Back after a lost branch: what we sent from the last epoch we shared with
            // the group on (on the dead branch) goes out again.
            if let Some(e) = lost_epoch {
                self.resend_own(&gid, to_i64(e))?;
            }
            // And the operations we asked for meanwhile go ahead on the live group.
            self.drive_intents(&gid)?;
        }
        Ok(Join::Joined)
    }

    /// Opens a sealed Void with `keys` and checks the signature in it: the inviter's
    /// (`inviter_key`) over [`wire::void_tbs`] of this group and Welcome.
    fn void_valid(
        &self,
        gid: &GroupId,
        hash: &[u8; 32],
        keys: &VoidKeys,
        inviter_key: &[u8],
        sealed: &[u8],
    ) -> bool {
        let (aead, key_len) = void_aead(self.config.suite);
        let Some(key) = keys.key.get(..key_len) else {
            return false;
        };
        let Ok(sig) = self
            .provider
            .crypto()
            .aead_decrypt(aead, key, sealed, &[0u8; 12], &keys.id)
        else {
            return false;
        };
        self.provider
            .crypto()
            .verify_signature(
                self.config.suite.signature_algorithm(),
                &wire::void_tbs(&gid.0, hash),
                inviter_key,
                &sig,
            )
            .is_ok()
    }

    /// Whether a Void received earlier withdraws this Welcome.
    pub(crate) fn voided(
        &self,
        gid: &GroupId,
        hash: &[u8; 32],
        keys: &VoidKeys,
        inviter_key: &[u8],
    ) -> Result<bool> {
        let sealed: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT sealed FROM pqmls_voids WHERE void_id = ?1",
                [&keys.id[..]],
                |r| r.get(0),
            )
            .optional()?;
        Ok(sealed.is_some_and(|s| self.void_valid(gid, hash, keys, inviter_key, &s)))
    }

    /// A withdrawal on our inbox. If it names the Welcome we joined a group with and the
    /// signature inside is that Welcome's sender's, our state is on a dead branch: it is
    /// dropped, and Welcomes kept aside are tried. Otherwise it is kept (within a cap), for
    /// a Welcome that may still arrive.
    pub(crate) fn on_void(&mut self, id: &[u8; 32], sealed: &[u8]) -> Result<Outcome> {
        if sealed.len() > MAX_SEALED_VOID {
            // Larger than any signature of our suites sealed: kept nowhere, tried never.
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        }
        type JoinRow = (Vec<u8>, Vec<u8>, Vec<u8>, i64, Vec<u8>, Option<i64>, i64);
        let joined: Option<JoinRow> = self
            .db()
            .query_row(
                "SELECT group_id, welcome_hash, inviter_key, joined_seq, void_key, prior_final, epoch FROM pqmls_joins WHERE void_id = ?1",
                [&id[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .optional()?;
        let Some((group, hash, inviter_key, joined_seq, key, prior_final, joined_epoch)) = joined
        else {
            tracing::debug!(
                "{}: a withdrawal {} for no Welcome we joined with: kept for one we may join",
                self.name,
                super::short(id)
            );
            self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_voids (void_id, sealed, received_ms) VALUES (?1, ?2, ?3)")?.execute(
                params![&id[..], sealed, to_i64(self.wall_ms())],
            )?;
            let cap = to_i64(self.config.limits.voids as u64);
            self.db().prepare_cached(db::TRIM_VOIDS)?.execute([cap])?;
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        };
        let gid = GroupId(group);
        let (Ok(hash), Ok(key)) = (<[u8; 32]>::try_from(hash), <[u8; 32]>::try_from(key)) else {
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        };
        let keys = VoidKeys { id: *id, key };
        if !self.groups.contains_key(&gid) {
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        }
        if !self.void_valid(&gid, &hash, &keys, &inviter_key, sealed) {
            tracing::debug!(
                "{}: a withdrawal of the Welcome we joined {gid} with does not verify",
                self.name
            );
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        }
        tracing::debug!(
            "{}: the Welcome we joined {gid} with was withdrawn: leaving its dead branch",
            self.name
        );
        self.db()
            .prepare_cached("DELETE FROM pqmls_joins WHERE group_id = ?1")?
            .execute([&gid.0])?;
        // What we sent on that state reached nobody on the live branch: it goes out again
        // (epoch -1 marks it) when we are in the group again.
        self.db()
            .prepare_cached(
                "UPDATE pqmls_messages SET epoch = -1 WHERE group_id = ?1 AND own = 1 AND seq > ?2",
            )?
            .execute(params![gid.0, joined_seq])?;
        // Invitations we made on that state went to the dead branch too: every add commit
        // of ours made on it, merged or not. One we moved away from (merged 0) is as dead
        // as the state it was made on, and once we leave that state no finality of ours
        // will ever withdraw it (offline seed 46: an add made on such a state, then a
        // branch move at its epoch, then the withdrawal; its invitee stayed on the dead
        // branch for good, silently).
        self.void_made_on_state(&gid, to_u64(joined_epoch))?;
        // The join replaced a state of ours (we had been removed or lost, and were
        // invited again): the group's chain may list us still, with the leaf of that
        // earlier state, which no member will ever remove or re-add unless we ask. We ask
        // as a member that lost the group at that state's last final epoch, under its keys
        // (kept by the join): listed members re-add us (partition seed 6: a member
        // re-added on a branch that then lost, its Welcome withdrawn, stayed listed on
        // the live chain without a state, silently). If no member lists us, nobody
        // answers, and `Event::Unrecoverable` has said so.
        if let Some(lost) = prior_final.map(to_u64)
            && self.epoch_keys(&gid, lost)?.is_some()
        {
            self.unrecoverable(&gid, lost)?;
            self.retry_welcomes(&gid)?;
            return Ok(Outcome::Done);
        }
        self.deactivate(&gid, true)?;
        self.retry_welcomes(&gid)?;
        Ok(Outcome::Done)
    }

    /// Withdraws the Welcomes of our add commits at `from_epoch` and later on the branch
    /// we are leaving (merged, other than `keep`): their invitees joined a dead branch.
    pub(crate) fn void_abandoned(
        &mut self,
        gid: &GroupId,
        from_epoch: u64,
        keep: &[u8],
    ) -> Result<()> {
        self.void_rows_of(
            gid,
            "SELECT welcome, invitee, void_id, void_key FROM pqmls_commits WHERE group_id = ?1 AND epoch >= ?2
                 AND merged = 1 AND own = 1 AND hash != ?3 AND welcome IS NOT NULL AND invitee IS NOT NULL
                 AND void_id IS NOT NULL AND void_key IS NOT NULL",
            params![gid.0, to_i64(from_epoch), keep],
        )
    }

    /// Withdraws the Welcomes of every add commit of ours for an epoch from `joined_epoch`
    /// on, merged or not, for when our state of `gid`, joined at `joined_epoch`, is dead as
    /// a whole: the Welcome we joined it with was withdrawn, so none of its epochs is on
    /// the group's chain, and no commit made on one of them can ever be merged by a member
    /// of the chain (MLS binds a commit to its epoch's secrets). The `merged` mark does not
    /// tell this state's commits apart: a join marks an earlier state's own commits -1, and
    /// so does a new own commit mark an older one we had moved away from (offline seed
    /// 46). An add of an earlier state of ours for such an epoch (we were invited again at
    /// an epoch below one we had reached) is withdrawn too: its invitee, if it is on the
    /// chain, leaves, reports `Unrecoverable` and is added again, loudly; a Welcome left
    /// standing on a dead branch keeps its invitee there silently.
    fn void_made_on_state(&mut self, gid: &GroupId, joined_epoch: u64) -> Result<()> {
        self.void_rows_of(
            gid,
            "SELECT welcome, invitee, void_id, void_key FROM pqmls_commits WHERE group_id = ?1
                 AND own = 1 AND epoch >= ?2 AND welcome IS NOT NULL AND invitee IS NOT NULL
                 AND void_id IS NOT NULL AND void_key IS NOT NULL",
            params![gid.0, to_i64(joined_epoch)],
        )
    }

    /// After we joined `gid` again at `epoch`: withdraws the Welcomes of our add commits
    /// for the epochs `from..epoch` that we never finalised and that the joined tree shows
    /// off the chain ([`order::add_off_chain`]). Rows from before schema 7 name no leaf
    /// and are left alone.
    fn void_adds_off_the_tree(&mut self, gid: &GroupId, from: u64, epoch: u64) -> Result<()> {
        type Row = (Vec<u8>, String, Vec<u8>, Vec<u8>, Vec<u8>);
        let rows: Vec<Row> = self
            .db()
            .prepare_cached(
                "SELECT welcome, invitee, void_id, void_key, added_key FROM pqmls_commits
                 WHERE group_id = ?1 AND epoch >= ?2 AND epoch < ?3 AND own = 1
                 AND welcome IS NOT NULL AND invitee IS NOT NULL AND void_id IS NOT NULL
                 AND void_key IS NOT NULL AND added_key IS NOT NULL",
            )?
            .query_map(params![gid.0, to_i64(from), to_i64(epoch)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        let keys = self.leaf_keys(gid)?;
        let members = self.member_list(gid)?;
        let mut off = Vec::new();
        for (welcome, invitee, id, key, added) in rows {
            // One commit may add several invitees (`intents::commit_adds`): their added
            // leaves in the same order, 32 bytes each. Each is judged on its own; the
            // withdrawal goes to those off the chain.
            let users = super::intents::decode_invitees(&invitee);
            if added.len() != 32 * users.len() {
                continue;
            }
            let mut gone = Vec::new();
            for (user, added) in users.iter().zip(added.chunks_exact(32)) {
                let Ok(added) = <[u8; 32]>::try_from(added) else {
                    continue;
                };
                let theirs: Vec<order::RecordedLeaf> = members
                    .iter()
                    .filter(|(_, m)| m.id == *user)
                    .filter_map(|(index, _)| {
                        keys.get(index).map(|(key, by_owner)| order::RecordedLeaf {
                            index: *index,
                            key: *key,
                            by_owner: *by_owner,
                        })
                    })
                    .collect();
                if order::add_off_chain(&added, &theirs) {
                    gone.push(*user);
                }
            }
            if !gone.is_empty() {
                off.push((welcome, super::intents::encode_invitees(&gone), id, key));
            }
        }
        self.send_voids(gid, off)
    }

    /// Withdraws the Welcomes of our add commits for `epoch` other than its final commit
    /// `keep`: once an epoch is final, no other commit for it can ever be merged, so
    /// their invitees hold dead states. (Withdrawing earlier, at a branch move, would
    /// withdraw a Welcome whose commit could still become final.)
    fn void_dead(&mut self, gid: &GroupId, epoch: u64, keep: &[u8]) -> Result<()> {
        self.void_rows_of(
            gid,
            "SELECT welcome, invitee, void_id, void_key FROM pqmls_commits WHERE group_id = ?1 AND epoch = ?2
                 AND own = 1 AND hash != ?3 AND welcome IS NOT NULL AND invitee IS NOT NULL
                 AND void_id IS NOT NULL AND void_key IS NOT NULL",
            params![gid.0, to_i64(epoch), keep],
        )
    }

    /// `epoch` is final with `keep`: withdraws the Welcomes of our add commits that can
    /// never be merged now. Those for `epoch` itself other than `keep` ([`Self::void_dead`]),
    /// and those for later epochs made on a branch through another commit for `epoch`
    /// (their recorded ancestry, [`Self::record_add_ancestry`]).
    ///
    /// Why the later ones may go at once: an add commit for epoch `e' > epoch` is valid
    /// only on the state it was made on, which descends from the commit we had merged for
    /// `epoch`; finality makes `keep` the only commit for `epoch` on the group's chain
    /// (`order::Tally::final_commit`), so no member following it can ever merge the add.
    /// Waiting for `e'` to be final instead can wait for good: the invitee is a member of
    /// `e'` on the live chain (another add of it, or a re-add, put it there), and its vote
    /// for `e'` never comes while the Welcome holds it on the dead branch (partition seeds
    /// 6 and 185: a finality/withdrawal cycle, a silent fork).
    pub(crate) fn void_lost_to(&mut self, gid: &GroupId, epoch: u64, keep: &[u8]) -> Result<()> {
        self.void_dead(gid, epoch, keep)?;
        let rows: Vec<VoidRow> = self
            .db()
            .prepare_cached(
                "SELECT c.welcome, c.invitee, c.void_id, c.void_key
                 FROM pqmls_add_ancestry a JOIN pqmls_commits c
                   ON c.group_id = a.group_id AND c.hash = a.commit_hash
                 WHERE a.group_id = ?1 AND a.epoch = ?2 AND a.merged_hash != ?3
                 AND c.own = 1 AND c.welcome IS NOT NULL AND c.invitee IS NOT NULL
                 AND c.void_id IS NOT NULL AND c.void_key IS NOT NULL",
            )?
            .query_map(params![gid.0, to_i64(epoch), keep], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        if !rows.is_empty() {
            tracing::debug!(
                "{}: group {gid}: epoch {epoch} final with {}: {} later add(s) of ours on another branch",
                self.name,
                super::short(keep),
                rows.len()
            );
        }
        self.send_voids(gid, rows)?;
        self.db()
            .prepare_cached("DELETE FROM pqmls_add_ancestry WHERE group_id = ?1 AND epoch <= ?2")?
            .execute(params![gid.0, to_i64(epoch)])?;
        Ok(())
    }

    /// Records the branch our add commit `commit_hash` (just merged) was made on: the
    /// commits we had merged for the epochs before it that are not final yet, the oldest
    /// [`MAX_ANCESTRY`] of them (a branch dies at its first open epoch, so the oldest ones
    /// count most). Read by [`Self::void_lost_to`].
    fn record_add_ancestry(&mut self, gid: &GroupId, commit_hash: &[u8]) -> Result<()> {
        let final_epoch = self.final_epoch(gid)?.map_or(-1, to_i64);
        self.db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_add_ancestry (group_id, commit_hash, epoch, merged_hash)
                 SELECT group_id, ?2, epoch, hash FROM pqmls_commits
                 WHERE group_id = ?1 AND merged = 1 AND epoch > ?3
                 AND epoch < (SELECT epoch FROM pqmls_commits WHERE group_id = ?1 AND hash = ?2)
                 ORDER BY epoch LIMIT ?4",
            )?
            .execute(params![gid.0, commit_hash, final_epoch, MAX_ANCESTRY])?;
        Ok(())
    }

    /// Withdraws the Welcomes of the `pqmls_commits` rows `sql` selects (welcome,
    /// invitee, void id, void key), bound to `params`.
    fn void_rows_of(
        &mut self,
        gid: &GroupId,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<()> {
        let rows: Vec<VoidRow> = self
            .db()
            .prepare_cached(sql)?
            .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        self.send_voids(gid, rows)
    }

    fn send_voids(&mut self, gid: &GroupId, rows: Vec<VoidRow>) -> Result<()> {
        let (aead, key_len) = void_aead(self.config.suite);
        for (welcome, invitee, id, key) in rows {
            let invitees = super::intents::decode_invitees(&invitee);
            let (false, Ok(id)) = (invitees.is_empty(), <[u8; 32]>::try_from(id)) else {
                continue;
            };
            let hash = wire::welcome_hash(&welcome);
            let sig = self
                .signer
                .sign(&wire::void_tbs(&gid.0, &hash))
                .map_err(|e| Error::Crypto(format!("{e:?}")))?;
            let sealed = self
                .provider
                .crypto()
                .aead_encrypt(
                    aead,
                    key.get(..key_len).unwrap_or(&key),
                    &sig,
                    &[0u8; 12],
                    &id,
                )
                .map_err(|e| Error::Crypto(format!("{e:?}")))?;
            tracing::debug!(
                "{}: withdrawing the Welcome of {} invitee(s) to {gid} ({})",
                self.name,
                invitees.len(),
                super::short(&id)
            );
            let payload = Wire::Void { id, sealed }.encode();
            for invitee in &invitees {
                self.enqueue(&wire::inbox_topic(invitee), payload.clone())?;
            }
            // Published again a few times (`finality::republish_own`): a Welcome whose
            // withdrawal is lost leaves its invitee on a dead branch for good.
            self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_sent_voids (void_id, invitee, payload) VALUES (?1, ?2, ?3)")?.execute(
                params![&id[..], invitee, payload],
            )?;
        }
        Ok(())
    }

    /// After our add commit merged: the Welcome goes out to each invitee's inbox (one
    /// Welcome for all the members a batch added), and the keys of a possible withdrawal
    /// of it are derived from the new epoch (the invitees derive the same when they join).
    pub(crate) fn send_welcome(
        &mut self,
        gid: &GroupId,
        commit_hash: &[u8],
        welcome: Vec<u8>,
        invitees: &[UserId],
    ) -> Result<()> {
        self.record_add_ancestry(gid, commit_hash)?;
        let hash = wire::welcome_hash(&welcome);
        let exported = self
            .group(gid)?
            .mls
            .export_secret(self.provider.crypto(), VOID_EXPORTER_LABEL, &hash, 32)
            .map_err(mls)?;
        let void = VoidKeys::derive(&exported);
        tracing::trace!(
            "{}: Welcome of {} invitee(s) to {gid} by {}: withdrawal {}",
            self.name,
            invitees.len(),
            super::short(commit_hash),
            super::short(&void.id)
        );
        self.db().prepare_cached("UPDATE pqmls_commits SET void_id = ?3, void_key = ?4 WHERE group_id = ?1 AND hash = ?2")?.execute(
            params![gid.0, commit_hash, &void.id[..], &void.key[..]],
        )?;
        let payload = Wire::Welcome { mls: welcome }.encode();
        self.stats.last_welcome_bytes = payload.len() as u64;
        for invitee in invitees {
            self.enqueue(&wire::inbox_topic(invitee), payload.clone())?;
        }
        Ok(())
    }
}

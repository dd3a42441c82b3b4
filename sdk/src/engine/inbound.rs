//! Payloads from the network: decoding, windows and caps, application messages, buffering
//! for later epochs, and reading late messages of past epochs.
//!
//! Every payload is hostile until MLS has authenticated it. Before that, what a payload
//! claims (its kind, group, epoch, epoch-authenticator tag) decides only where it may be
//! kept, within caps ([`crate::config::Limits`]) and windows
//! ([`crate::trust::epoch_slot`]); what does not fit now is *deferred*: not marked as seen,
//! so a later catch-up from the store nodes brings it again.

use std::collections::BTreeMap;

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use pqmls_transport::{Message, MessageId};
use rusqlite::{OptionalExtension, params};
use tokio::time::Instant;

use super::{Outcome, State, decode_members};
use crate::GroupId;
use crate::config::FailPoint;
use crate::db::{self, to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::{Event, ReceivedMessage};
use crate::identity::{Member, UserId};
use crate::trust::{EpochSlot, epoch_slot};
use crate::wire::{self, AppPayload, Content, VOID_EXPORTER_LABEL, VoidKeys, Wire};

/// What reading a message with a past epoch's snapshot gave.
enum PastRead {
    /// Read (and recorded, or found to be a duplicate).
    Read,
    /// No snapshot of that epoch, or MLS refused it there.
    Unreadable,
    /// The snapshot-restore budget is spent: try again later.
    NoBudget,
}

impl State {
    /// Handles one payload from gossip or history. Never fails on bad input: malformed or
    /// unprocessable payloads are counted and dropped.
    pub(crate) fn handle(&mut self, msg: &Message) -> Result<Outcome> {
        self.handle_new(msg).map(|(o, _)| o)
    }

    /// [`State::handle`], and whether the payload was new to us (not marked seen before:
    /// never one of our own, which are marked when enqueued).
    pub(crate) fn handle_new(&mut self, msg: &Message) -> Result<(Outcome, bool)> {
        if self.is_seen(&msg.id)? {
            tracing::trace!("{}: payload {} seen before", self.name, msg.id);
            self.stats.duplicates += 1;
            return Ok((Outcome::Done, false));
        }
        if msg.topic != self.inbox && !self.topics.contains_key(&msg.topic) {
            // A group we do not hold (any more, or yet): not marked as seen, so that the
            // catch-up after a (re)join reads it.
            self.stats.ignored += 1;
            return Ok((Outcome::Done, true));
        }
        self.tx(|s| {
            let outcome = s.dispatch(msg)?;
            match outcome {
                Outcome::Done => s.mark_seen(&msg.id)?,
                Outcome::Deferred => s.stats.deferred += 1,
            }
            Ok((outcome, true))
        })
    }

    fn dispatch(&mut self, msg: &Message) -> Result<Outcome> {
        let Some(wire) = Wire::decode(&msg.data) else {
            // Not the canonical encoding of a pqmls payload (a re-wrapped copy, garbage).
            self.stats.malformed += 1;
            return Ok(Outcome::Done);
        };
        if msg.topic == self.inbox {
            return match wire {
                Wire::Welcome { mls } => self.on_welcome(&mls),
                Wire::Void { id, sealed } => self.on_void(&id, &sealed),
                _ => {
                    self.stats.malformed += 1;
                    Ok(Outcome::Done)
                }
            };
        }
        let Some(gid) = self.topics.get(&msg.topic).cloned() else {
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        };
        match wire {
            Wire::Handshake { priority, mls } => self.on_handshake(&gid, &priority, &mls),
            Wire::Vote { tag, sealed } => {
                self.on_vote(&gid, &tag, &sealed, wire::is_again(&msg.data))
            }
            Wire::Need {
                tag,
                nonce,
                votes,
                sent_ms,
                mac,
            } => self.on_need(
                &gid,
                super::finality::NeedRequest {
                    tag,
                    nonce,
                    votes,
                    sent_ms,
                    mac,
                },
            ),
            Wire::Lost { tag, sealed } => self.on_lost(&gid, &tag, &sealed, Instant::now()),
            Wire::Application { auth, mls } => {
                self.on_application(&gid, msg.id, &msg.data, auth, &mls)
            }
            // `Wire::decode` reads a copy as what it carries: never seen here.
            Wire::Welcome { .. } | Wire::Void { .. } | Wire::Again { .. } => {
                self.stats.malformed += 1;
                Ok(Outcome::Done)
            }
        }
    }

    pub(crate) fn parse_protocol(&mut self, gid: &GroupId, mls: &[u8]) -> Option<ProtocolMessage> {
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

    /// The slot of `epoch` relative to the group's current epoch.
    pub(crate) fn slot_of(&self, gid: &GroupId, epoch: u64) -> Result<EpochSlot> {
        let current = self.group(gid)?.mls.epoch().as_u64();
        Ok(epoch_slot(
            current,
            epoch,
            self.config.rollback_window,
            self.config.limits.future_epochs,
        ))
    }

    /// Takes one snapshot restore from the group's budget.
    pub(crate) fn take_past_read(&mut self, gid: &GroupId) -> bool {
        let rate = f64::from(self.config.limits.past_reads_per_sec);
        let burst = self.config.limits.past_reads_per_sec.saturating_mul(4);
        let now_ms = self.mono_ms();
        self.groups
            .get_mut(gid)
            .is_some_and(|g| g.past_reads.take(rate, burst, now_ms))
    }

    fn on_application(
        &mut self,
        gid: &GroupId,
        id: MessageId,
        payload: &[u8],
        auth: [u8; wire::AUTH_TAG_LEN],
        mls: &[u8],
    ) -> Result<Outcome> {
        let Some(pm) = self.parse_protocol(gid, mls) else {
            return Ok(Outcome::Done);
        };
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
        let g = self.group(gid)?;
        if !g.mls.is_active() {
            // Removed (tentatively): a late message from an epoch we were a member of is
            // still ours, and the snapshot of that epoch can read it.
            return match self.decrypt_past(gid, epoch, pm)? {
                PastRead::Read => Ok(Outcome::Done),
                PastRead::NoBudget => Ok(Outcome::Deferred),
                // Kept: if we are invited back, messages of the epoch we rejoin at are ours.
                PastRead::Unreadable => self.buffer(gid, id, epoch, payload),
            };
        }
        if slot == EpochSlot::Future {
            self.todo.sync.insert(gid.clone());
            return self.buffer(gid, id, epoch, payload);
        }
        let before_join =
            slot == EpochSlot::Past && self.first_epoch(gid)?.is_some_and(|f| epoch < f);
        if before_join {
            // From an epoch of a state we held before this one (we were removed and invited
            // back): the current state has no secrets for it, its snapshot may.
            return match self.decrypt_past(gid, epoch, pm)? {
                PastRead::Read => Ok(Outcome::Done),
                PastRead::NoBudget => Ok(Outcome::Deferred),
                PastRead::Unreadable => self.buffer(gid, id, epoch, payload),
            };
        }
        // Decryption is tried whatever the envelope's tag says: the tag is not
        // authenticated, and a relay that changed it must not get a message set aside.
        if let Err(reason) = self.decrypt_app(gid, pm)? {
            let ours = wire::auth_tag(self.group(gid)?.mls.epoch_authenticator().as_slice());
            if slot == EpochSlot::Past || auth != ours {
                // Perhaps from a branch we have not moved to yet: a hint (never evidence)
                // that we should catch up.
                if slot == EpochSlot::Current {
                    self.stats.fork_hints += 1;
                }
                self.todo.sync.insert(gid.clone());
                return self.buffer(gid, id, epoch, payload);
            }
            tracing::debug!("dropping an application message: {reason}");
            self.stats.rejected += 1;
        }
        Ok(Outcome::Done)
    }

    /// Keeps a message for a later epoch or another branch, within the group's caps.
    pub(crate) fn buffer(
        &mut self,
        gid: &GroupId,
        id: MessageId,
        epoch: u64,
        payload: &[u8],
    ) -> Result<Outcome> {
        let (n, bytes): (i64, i64) = self
            .db()
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM pqmls_pending WHERE group_id = ?1",
            )?
            .query_row([&gid.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let limits = &self.config.limits;
        if to_u64(n) >= limits.pending as u64
            || to_u64(bytes).saturating_add(payload.len() as u64) > limits.pending_bytes as u64
        {
            self.todo.sync.insert(gid.clone());
            return Ok(Outcome::Deferred);
        }
        self.db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_pending (group_id, id, epoch, payload) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![gid.0, &id.0[..], to_i64(epoch), payload])?;
        self.stats.buffered += 1;
        Ok(Outcome::Done)
    }

    /// The epoch we joined our current state of a group at (none if we created it).
    pub(crate) fn first_epoch(&self, gid: &GroupId) -> Result<Option<u64>> {
        let first: Option<i64> = self
            .db()
            .prepare_cached("SELECT epoch FROM pqmls_joins WHERE group_id = ?1")?
            .query_row([&gid.0], |r| r.get(0))
            .optional()?;
        Ok(first.map(to_u64))
    }

    /// Reads an application message of a past `epoch` with a snapshot (in a savepoint
    /// that is rolled back: the group state does not change) and records it.
    fn decrypt_past(&mut self, gid: &GroupId, epoch: u64, pm: ProtocolMessage) -> Result<PastRead> {
        // That epoch's snapshot, or a later one (its state keeps the secrets of the
        // epochs before it that OpenMLS keeps for late messages): once an epoch is final
        // its own snapshot is gone.
        // Only a snapshot of the state the message's epoch belongs to: of an earlier
        // state for an epoch before our join, of this one otherwise. (Any other cannot read
        // it, and each try costs a restore from the budget.)
        // A later state keeps the secrets of `past_epoch_secrets` epochs before it.
        let mut last = epoch.saturating_add(self.config.past_epoch_secrets);
        let before_join = self.first_epoch(gid)?.filter(|f| epoch < *f);
        if let Some(first) = before_join {
            last = last.min(first - 1);
        }
        let kept = before_join.is_some() && self.kept_welcome_at(gid, epoch)?;
        let read = match db::snapshot_between(self.db(), &gid.0, epoch, last)? {
            Some(at) => {
                // Anyone can name an old epoch in the framing: each try costs a restore.
                if !self.take_past_read(gid) {
                    return Ok(PastRead::NoBudget);
                }
                match self.read_with_snapshot(gid, at, pm.clone())? {
                    // A snapshot that cannot read it (one of a dead branch of the replaced
                    // state) does not hide a Welcome kept aside that may.
                    None if kept => self.read_with_kept_welcome(gid, epoch, pm)?,
                    read => read,
                }
            }
            None if kept => {
                // As costly as a restore (a Welcome staged): the same budget.
                if !self.take_past_read(gid) {
                    return Ok(PastRead::NoBudget);
                }
                self.read_with_kept_welcome(gid, epoch, pm)?
            }
            None => {
                tracing::debug!(
                    "{}: group {gid}: no snapshot to read a message of epoch {epoch} (first epoch of this state {before_join:?})",
                    self.name
                );
                return Ok(PastRead::Unreadable);
            }
        };
        let Some((sender, epoch, bytes)) = read else {
            tracing::debug!(
                "{}: group {gid}: a message of epoch {epoch} unreadable with the snapshot or Welcome that should read it",
                self.name
            );
            return Ok(PastRead::Unreadable);
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
        Ok(PastRead::Read)
    }

    /// Reads an application message with the snapshot of epoch `at` (restored in a
    /// savepoint that is rolled back): its sender and epoch, and the plaintext.
    fn read_with_snapshot(
        &mut self,
        gid: &GroupId,
        at: u64,
        pm: ProtocolMessage,
    ) -> Result<Option<(Member, u64, Vec<u8>)>> {
        let (key, _) = self.storage_keys(gid)?;
        self.db().execute_batch("SAVEPOINT pqmls_past")?;
        let read = (|| -> Result<Option<(Member, u64, Vec<u8>)>> {
            db::restore(self.db(), &gid.0, at, &key)?;
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
            let Some(sender) = self.sender_member(gid, &past, &processed) else {
                return Ok(None);
            };
            Ok(match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(app) => {
                    Some((sender, epoch, app.into_bytes()))
                }
                _ => None,
            })
        })();
        self.db()
            .execute_batch("ROLLBACK TO pqmls_past; RELEASE pqmls_past")?;
        read
    }

    /// Whether a Welcome to `epoch` of the group from a known member is kept aside and
    /// still young enough to read that epoch's messages with
    /// ([`State::read_with_kept_welcome`]).
    fn kept_welcome_at(&self, gid: &GroupId, epoch: u64) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pqmls_welcomes WHERE group_id = ?1 AND epoch = ?2 AND sender_known AND received_ms >= ?3)",
            )?
            .query_row(
                params![gid.0, to_i64(epoch), self.kept_welcome_since()],
                |r| r.get(0),
            )?)
    }

    /// The oldest arrival (`pqmls_welcomes.received_ms`) of a Welcome kept aside that
    /// still reads messages: [`crate::Config::past_epoch_secrets_max_age`] ago, the age
    /// at which our own state forgets a past epoch's secrets.
    fn kept_welcome_since(&self) -> i64 {
        let age =
            u64::try_from(self.config.past_epoch_secrets_max_age.as_millis()).unwrap_or(u64::MAX);
        to_i64(self.horizon_ms().saturating_sub(age))
    }

    /// Reads an application message of an `epoch` before our join with a Welcome to that
    /// epoch kept aside: we were added at `epoch`, removed before that Welcome reached us
    /// and added again (honest simulation seed 104: the messages of that epoch were for
    /// us, and no state of ours could read them). The Welcome is staged and joined in a
    /// savepoint that is rolled back, as a snapshot is restored: nothing of it stays, it
    /// never votes, commits or sends, and the Welcome stays kept aside as before.
    ///
    /// Why it lets nobody in. The state such a Welcome gives is not checked against our
    /// chain (that would need the commits from its epoch to our join), so it is trusted
    /// only as far as its signatures are, and only for a while:
    /// - the Welcome's sender (whose key signed its GroupInfo, RFC 9420 §12.4.3.1) must be
    ///   a member of our live state now, so a removed member cannot make us read
    ///   anything; and the Welcome must not be withdrawn (`Void`: its add lost);
    /// - the message's signer (the leaf whose key MLS checked its signature with) must be
    ///   a user our chain lists (the live tree or the record of an epoch of ours), shown
    ///   under the name our chain knows, and not the Welcome's sender: a member that made
    ///   up a state can sign in it only as itself, and its own messages are not read this
    ///   way, so a made-up state reads nothing without a second member's key. A real
    ///   member's message cannot be replayed into a made-up state: the key schedule binds
    ///   the group context, tree hash included (RFC 9420 §8), so a made-up tree has other
    ///   epoch secrets;
    /// - the Welcome reads for [`crate::Config::past_epoch_secrets_max_age`] after it
    ///   arrived, as our own state keeps a past epoch's secrets: a member removed since,
    ///   who still holds that epoch's secrets, cannot write into it for longer.
    fn read_with_kept_welcome(
        &mut self,
        gid: &GroupId,
        epoch: u64,
        pm: ProtocolMessage,
    ) -> Result<Option<(Member, u64, Vec<u8>)>> {
        let live: BTreeMap<UserId, String> = self
            .group(gid)?
            .mls
            .members()
            .map(|m| {
                let m = self.member_of(&m.credential, &m.signature_key);
                (m.id, m.name)
            })
            .collect();
        // Only those of live members, before any is staged (at most the cap of kept
        // Welcomes, `Limits::kept_welcomes`).
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT payload, inviter_id FROM pqmls_welcomes
                 WHERE group_id = ?1 AND epoch = ?2 AND sender_known AND received_ms >= ?3
                 ORDER BY id DESC",
            )?
            .query_map(
                params![gid.0, to_i64(epoch), self.kept_welcome_since()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<Result<_, _>>()?;
        for (bytes, inviter_id) in rows {
            let from_live = <[u8; 32]>::try_from(inviter_id.as_slice())
                .is_ok_and(|id| live.contains_key(&UserId(id)));
            if !from_live {
                continue;
            }
            let hash = wire::welcome_hash(&bytes);
            self.db().execute_batch("SAVEPOINT pqmls_late_welcome")?;
            let read = (|| -> Option<(Member, u64, Vec<u8>)> {
                let msg = MlsMessageIn::tls_deserialize_exact(bytes.as_slice()).ok()?;
                let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
                    return None;
                };
                let processed = ProcessedWelcome::new_from_welcome(
                    &self.provider,
                    &self.join_config(),
                    welcome,
                )
                .ok()?;
                let info = processed.unverified_group_info();
                if info.group_id().as_slice() != gid.0.as_slice() || info.epoch().as_u64() != epoch
                {
                    return None;
                }
                let staged = JoinBuilder::new(&self.provider, processed)
                    .replace_old_group()
                    .build()
                    .ok()?;
                let context = staged.group_context();
                if context.group_id().as_slice() != gid.0.as_slice()
                    || context.epoch().as_u64() != epoch
                {
                    return None;
                }
                let inviter = staged.welcome_sender().ok()?;
                let inviter_key = inviter.signature_key().as_slice().to_vec();
                let inviter = self.member_of(inviter.credential(), &inviter_key);
                if !live.contains_key(&inviter.id) {
                    return None;
                }
                let exported = staged
                    .export_secret(self.provider.crypto(), VOID_EXPORTER_LABEL, &hash, 32)
                    .ok()?;
                if self
                    .voided(gid, &hash, &VoidKeys::derive(&exported), &inviter_key)
                    .unwrap_or(true)
                {
                    return None;
                }
                let mut past = staged.into_group(&self.provider).ok()?;
                let processed = past.process_message(&self.provider, pm.clone()).ok()?;
                let sender = self.sender_member(gid, &past, &processed)?;
                if sender.id == inviter.id {
                    return None;
                }
                let epoch = processed.epoch().as_u64();
                match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(app) => {
                        Some((sender, epoch, app.into_bytes()))
                    }
                    _ => None,
                }
            })();
            self.db()
                .execute_batch("ROLLBACK TO pqmls_late_welcome; RELEASE pqmls_late_welcome")?;
            let Some((mut sender, epoch, bytes)) = read else {
                continue;
            };
            let Some(name) = self.chain_name(gid, &sender.id, &live)? else {
                continue;
            };
            sender.name = name;
            tracing::debug!(
                "{}: group {gid}: read a message of epoch {epoch} (before our join) with a Welcome kept aside",
                self.name
            );
            return Ok(Some((sender, epoch, bytes)));
        }
        Ok(None)
    }

    /// The name our chain knows `user` by (the live tree, then the records of our
    /// epochs, newest first); `None` if it lists no such user.
    fn chain_name(
        &self,
        gid: &GroupId,
        user: &UserId,
        live: &BTreeMap<UserId, String>,
    ) -> Result<Option<String>> {
        if let Some(name) = live.get(user) {
            return Ok(Some(name.clone()));
        }
        let first = self.first_epoch(gid)?.unwrap_or(0);
        let records: Vec<String> = self
            .db()
            .prepare_cached(
                "SELECT members FROM pqmls_epochs WHERE group_id = ?1 AND epoch >= ?2 ORDER BY epoch DESC",
            )?
            .query_map(params![gid.0, to_i64(first)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(records.iter().find_map(|text| {
            decode_members(text)
                .into_iter()
                .find(|(_, m)| m.id == *user)
                .map(|(_, m)| m.name)
        }))
    }

    /// Stores a received message and reports it, unless its uid was seen before.
    fn record_message(
        &mut self,
        gid: &GroupId,
        sender: &Member,
        epoch: u64,
        uid: &[u8; 16],
        sent_ms: u64,
        body: Vec<u8>,
    ) -> Result<()> {
        let inserted = self
            .db()
            .prepare_cached(
                "INSERT OR IGNORE INTO pqmls_messages (group_id, uid, sender, sender_id, epoch, sent_ms, own, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
            )?
            .execute(params![
                gid.0,
                &uid[..],
                sender.name,
                &sender.id.0[..],
                to_i64(epoch),
                to_i64(sent_ms),
                body
            ])?;
        if inserted == 1 {
            let seq = self.db().last_insert_rowid();
            self.fail(FailPoint::ReceiveBeforeCommit)?;
            self.stats.delivered += 1;
            self.events.push(Event::Message(ReceivedMessage {
                group: gid.clone(),
                sender: sender.clone(),
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
        let (processed, sender) = {
            let g = self
                .groups
                .get_mut(gid)
                .ok_or_else(|| Error::UnknownGroup(gid.clone()))?;
            let processed = match g.mls.process_message(&self.provider, pm) {
                Ok(p) => p,
                Err(e) => return Ok(Err(format!("{e:?}"))),
            };
            let g = self.group(gid)?;
            let Some(sender) = self.sender_member(gid, &g.mls, &processed) else {
                return Ok(Err("not sent by a member".into()));
            };
            (processed, sender)
        };
        let epoch = processed.epoch().as_u64();
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
                if self.is_member(gid, &sender.id)? && sender.id != self.id {
                    let user = sender.id.to_string();
                    let exists = self
                        .db()
                        .query_row(
                            "SELECT 1 FROM pqmls_intents WHERE group_id = ?1 AND kind = 'remove' AND user = ?2",
                            params![gid.0, user],
                            |_| Ok(()),
                        )
                        .optional()?
                        .is_some();
                    if !exists {
                        self.db().prepare_cached("INSERT INTO pqmls_intents (group_id, kind, user) VALUES (?1, 'remove', ?2)")?.execute(
                            params![gid.0, user],
                        )?;
                    }
                    self.drive_intents(gid)?;
                }
            }
        }
        Ok(Ok(()))
    }

    /// Handles the buffered messages that may now be processable. Those that need a
    /// snapshot restore once the budget is spent are kept; the tick tries again.
    pub(crate) fn replay_pending(&mut self, gid: &GroupId) -> Result<()> {
        let Some(g) = self.groups.get(gid) else {
            return Ok(());
        };
        let epoch = g.mls.epoch().as_u64();
        // Which rows need a snapshot restore (or a kept Welcome staged) to be read: all
        // of a state a commit removed us from, those before our join otherwise.
        let active = g.mls.is_active();
        let first = self.first_epoch(gid)?;
        let mut out_of_budget = false;
        let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT id, epoch, payload FROM pqmls_pending WHERE group_id = ?1 AND epoch <= ?2 ORDER BY epoch",
            )?
            .query_map(params![gid.0, to_i64(epoch)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (id, row_epoch, payload) in rows {
            if !self.groups.contains_key(gid) {
                break;
            }
            if out_of_budget && (!active || first.is_some_and(|f| to_u64(row_epoch) < f)) {
                // Needs the budget that is spent: left where it is, untouched.
                continue;
            }
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
            if self.on_application(gid, MessageId(mid), &payload, auth, &mls)? == Outcome::Deferred
            {
                // Out of budget: back where it was, for the tick to try again, and so are
                // the other rows that need a restore (skipped above: a flood of old
                // epochs' junk costs one try per budget token, not a pass over every row
                // per tick). The rest goes on: a message of an epoch our state reads
                // costs no restore, and must not wait behind old ones that do (honest
                // seed 97: messages of an epoch before a re-add, unreadable with the old
                // state's snapshots, took the budget at every replay ahead of the last
                // two epochs' messages).
                out_of_budget = true;
                self.db()
                    .prepare_cached(
                        "INSERT OR IGNORE INTO pqmls_pending (group_id, id, epoch, payload) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![gid.0, id, row_epoch, payload])?;
                if let Some(g) = self.groups.get_mut(gid) {
                    g.replay_due = true;
                }
            }
        }
        Ok(())
    }
}

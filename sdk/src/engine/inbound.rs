//! Payloads from the network: decoding, windows and caps, application messages, buffering
//! for later epochs, and reading late messages of past epochs.
//!
//! Every payload is hostile until MLS has authenticated it. Before that, what a payload
//! claims (its kind, group, epoch, epoch-authenticator tag) decides only where it may be
//! kept, within caps ([`crate::config::Limits`]) and windows
//! ([`crate::trust::epoch_slot`]); what does not fit now is *deferred*: not marked as seen,
//! so a later catch-up from the store nodes brings it again.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use pqmls_transport::{Message, MessageId};
use rusqlite::{OptionalExtension, params};
use tokio::time::Instant;

use super::{Outcome, State};
use crate::GroupId;
use crate::config::FailPoint;
use crate::db::{self, to_i64, to_u64};
use crate::error::{Error, Result, mls};
use crate::event::{Event, ReceivedMessage};
use crate::identity::Member;
use crate::trust::{EpochSlot, epoch_slot};
use crate::wire::{self, AppPayload, Content, Wire};

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
        if self.is_seen(&msg.id)? {
            self.stats.duplicates += 1;
            return Ok(Outcome::Done);
        }
        if msg.topic != self.inbox && !self.topics.contains_key(&msg.topic) {
            // A group we do not hold (any more, or yet): not marked as seen, so that the
            // catch-up after a (re)join reads it.
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        }
        self.tx(|s| {
            let outcome = s.dispatch(msg)?;
            match outcome {
                Outcome::Done => s.mark_seen(&msg.id)?,
                Outcome::Deferred => s.stats.deferred += 1,
            }
            Ok(outcome)
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
            Wire::Vote { tag, sealed } => self.on_vote(&gid, &tag, &sealed),
            Wire::Need { tag, nonce } => self.on_need(&gid, &tag, &nonce),
            Wire::Lost { tag, sealed } => self.on_lost(&gid, &tag, &sealed, Instant::now()),
            Wire::Application { auth, mls } => {
                self.on_application(&gid, msg.id, &msg.data, auth, &mls)
            }
            Wire::Welcome { .. } | Wire::Void { .. } => {
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
        if let Some(first) = self.first_epoch(gid)?
            && epoch < first
        {
            last = last.min(first - 1);
        }
        let Some(at) = db::snapshot_between(self.db(), &gid.0, epoch, last)? else {
            return Ok(PastRead::Unreadable);
        };
        // Anyone can name an old epoch in the framing: each try costs a restore.
        if !self.take_past_read(gid) {
            return Ok(PastRead::NoBudget);
        }
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
        let Some((sender, epoch, bytes)) = read? else {
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

    /// Handles the buffered messages that may now be processable. Stops (and keeps the
    /// rest) when the snapshot-restore budget runs out; the tick tries again.
    pub(crate) fn replay_pending(&mut self, gid: &GroupId) -> Result<()> {
        let Some(g) = self.groups.get(gid) else {
            return Ok(());
        };
        let epoch = g.mls.epoch().as_u64();
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
                // Out of budget: back where it was, and stop for now.
                self.db()
                    .prepare_cached(
                        "INSERT OR IGNORE INTO pqmls_pending (group_id, id, epoch, payload) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![gid.0, id, row_epoch, payload])?;
                if let Some(g) = self.groups.get_mut(gid) {
                    g.replay_due = true;
                }
                break;
            }
        }
        Ok(())
    }
}

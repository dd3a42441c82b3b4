//! The removed member of [`super::Scenario::replay_removed`] (issue 11 item 6): a member
//! that the group removes, and that keeps copies of the group states it held before, as
//! an attacker who saved its database would. From them it keeps trying to undo its
//! removal and to read on:
//!
//! - it commits for the epochs it held (the removal's above all), each time the commit
//!   with the smallest hash of a few (they tie-break between one author's commits), under
//!   its true priority or, one time in four, the best priority of any leaf (a false claim),
//!   and votes for it in both rounds, as a member of that epoch may;
//! - it merges its own commits and commits again on that branch of its own;
//! - it publishes again (after gossip's de-duplication) what it published as a member;
//! - it follows any honest commit that builds on its branch, and tries every application
//!   message it receives on every state it holds.
//!
//! What it reads is counted two ways: with a state its own commits led to (or honest
//! commits on top of them), which would mean members accepted its branch after removing
//! it; and with a state it held as a member, which are messages members sent in the
//! removal epoch before they merged the removal (MLS gives those to every member of that
//! epoch; not a leak of anything after the removal).

use std::sync::Arc;

use futures::StreamExt as _;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::signatures::Signer as _;
use pqmls_provider::storage::Codec as _;
use pqmls_provider::{BinaryCodec, SignatureKeyPair};
use pqmls_transport::Topic;
use rusqlite::Connection;
use rusqlite::types::Value;

use super::{SimNetwork, SimRng, SimTransport, party_provider};
use crate::engine::{Prov, State};
use crate::identity::UserId;
use crate::net::{Inbox, Transport as _};
use crate::wire::{self, EpochKeys, VoteBody, Wire};
use crate::{Client, Error, GroupId, Result};

/// States kept from the member's time in the group (the newest ones).
const HELD: usize = 3;
/// States of its own branches kept (the newest ones).
const BRANCHES: usize = 8;
/// Commits made per attempt; the one with the smallest hash is published.
const GRIND: usize = 4;
/// OpenMLS tables that hold one group's state (`group_id` column), copied in this order.
const GROUP_TABLES: [&str; 4] = [
    "openmls_group_data",
    "openmls_epoch_keys_pairs",
    "openmls_own_leaf_nodes",
    "openmls_proposals",
];

/// Rows of OpenMLS tables: (table, rows).
type Rows = Vec<(&'static str, Vec<Vec<Value>>)>;

/// One group state of the revenant's, in a provider of its own.
struct Held {
    provider: Prov,
    mls: MlsGroup,
    /// Made after the removal (its own commits, or honest commits on top of them).
    after: bool,
}

/// The removed member (see the module docs).
pub(super) struct Revenant {
    /// Its index among the simulated users.
    pub index: usize,
    /// Its user id.
    pub id: UserId,
    signer: SignatureKeyPair,
    suite: Ciphersuite,
    gid: GroupId,
    topic: Topic,
    transport: Arc<SimTransport>,
    inbox: Inbox,
    seed: u64,
    /// Providers made so far (each draws from a stream of its own).
    providers: u64,
    held: Vec<Held>,
    branches: Vec<Held>,
    /// Application messages (MLS bytes) received since the removal, not tried yet.
    unread: Vec<Vec<u8>>,
    /// The group removed it (the first member's view no longer lists it).
    pub removed: bool,
    /// Payloads it published or replayed since its removal.
    pub published: u64,
    /// Application messages since its removal that it read with a state of its branches.
    pub read_after: u64,
    /// Application messages since its removal that it read with a state it held as a
    /// member (sent in an epoch it was a member of).
    pub read_member_epoch: u64,
    /// Application messages since its removal that it tried.
    pub tried: u64,
}

impl Revenant {
    /// The revenant of `client` (user `index`) for group `gid`, attached to `net`.
    pub(super) async fn new(
        net: &SimNetwork,
        client: &Client,
        index: usize,
        gid: &GroupId,
        seed: u64,
    ) -> Result<Self> {
        let bytes = client.with_state(|s| Ok(s.signer.to_bytes())).await?;
        let signer =
            SignatureKeyPair::from_bytes(&bytes).map_err(|e| Error::Crypto(format!("{e:?}")))?;
        #[cfg(feature = "sim-rng")]
        let signer = {
            let seed = party_provider(seed, u64::MAX - 1)?
                .pq_crypto()
                .random_array::<32>()
                .map_err(|e| Error::Crypto(format!("{e:?}")))?;
            signer.insecure_deterministic_signing_for_simulation(seed)
        };
        let (transport, inbox) = net.attach();
        let topic = wire::group_topic(&gid.0);
        transport
            .subscribe(&topic)
            .await
            .map_err(Error::Transport)?;
        Ok(Revenant {
            index,
            id: client.id(),
            signer,
            suite: client.suite(),
            gid: gid.clone(),
            topic,
            transport,
            inbox,
            seed,
            providers: 0,
            held: Vec::new(),
            branches: Vec::new(),
            unread: Vec::new(),
            removed: false,
            published: 0,
            read_after: 0,
            read_member_epoch: 0,
            tried: 0,
        })
    }

    /// A fresh provider with a stream of its own.
    fn provider(&mut self) -> Result<Prov> {
        self.providers += 1;
        party_provider(self.seed, u64::MAX - 1 - self.providers)
    }

    /// Keeps a copy of the member's group state if it is still a member and at an epoch
    /// (or on a branch) not copied yet.
    pub(super) async fn observe(&mut self, client: &Client) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let gid = self.gid.clone();
        let Some((epoch, auth, rows)) = client
            .with_state(|s| copy_out(s, &gid))
            .await
            .ok()
            .flatten()
        else {
            return Ok(());
        };
        let known = self.held.iter().any(|h| {
            h.mls.epoch().as_u64() == epoch
                && h.mls.epoch_authenticator().as_slice() == auth.as_slice()
        });
        if known {
            return Ok(());
        }
        let provider = self.provider()?;
        let held = load(provider, &rows, &self.gid, false)?;
        self.held.push(held);
        if self.held.len() > HELD {
            self.held.remove(0);
        }
        Ok(())
    }

    /// One step of the attack (after the removal): read what came, then commit, commit on
    /// a branch of its own, or replay.
    pub(super) async fn act(&mut self, rng: &mut SimRng, net: &SimNetwork) {
        self.receive().await;
        self.read();
        let result = match rng.below(4) {
            0 | 1 if !self.held.is_empty() => {
                let i = self.held.len() - 1 - pick(rng, self.held.len().min(2));
                self.commit(rng, false, i).await
            }
            2 if !self.branches.is_empty() => {
                let i = pick(rng, self.branches.len());
                self.commit(rng, true, i).await
            }
            _ => {
                self.replay(rng, net);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::debug!("sim: the removed member's step failed: {e}");
        }
    }

    /// Takes in what arrived: application messages to read, commits to follow.
    async fn receive(&mut self) {
        use futures::FutureExt as _;
        while let Some(Some(m)) = self.inbox.next().now_or_never() {
            if m.topic != self.topic || !self.removed {
                continue;
            }
            match Wire::decode(&m.data) {
                Some(Wire::Application { mls, .. }) => self.unread.push(mls),
                Some(Wire::Handshake { mls, .. }) => {
                    if let Err(e) = self.follow(&mls) {
                        tracing::debug!("sim: the removed member could not follow: {e}");
                    }
                }
                _ => {}
            }
        }
    }

    /// Tries every unread application message on every state; each message is counted
    /// once: under a state it held as a member if one reads it, else under a branch state.
    ///
    /// The states it held first: a branch state made from a held state of epoch `e` keeps
    /// the message secrets of `e` among its past epochs (as OpenMLS keeps them for late
    /// messages), so it also reads what members sent in `e`, the epoch it was a member
    /// of. Tried first, such a message counted as read through a branch (seeds 53 and 165
    /// of `pqmls sim --replay-removed`, nineteenth session: one message each, sent in the
    /// removal epoch by a member that had not merged the removal yet).
    fn read(&mut self) {
        for mls in std::mem::take(&mut self.unread) {
            self.tried += 1;
            let mut by_branch = false;
            let mut by_member_state = false;
            for h in self.held.iter_mut().chain(self.branches.iter_mut()) {
                if decrypts(h, &mls) {
                    tracing::debug!(
                        "sim: the removed member read it with its state of epoch {}, {}",
                        h.mls.epoch().as_u64(),
                        if h.after {
                            "of its branches"
                        } else {
                            "held as a member"
                        }
                    );
                    if h.after {
                        by_branch = true;
                    } else {
                        by_member_state = true;
                    }
                    break;
                }
            }
            if by_branch {
                self.read_after += 1;
            } else if by_member_state {
                self.read_member_epoch += 1;
            }
        }
    }

    /// A commit that builds on one of its branches: merged into a copy, kept as a branch
    /// state (members accepted its branch).
    fn follow(&mut self, mls: &[u8]) -> Result<()> {
        let mut found = Vec::new();
        for (i, h) in self.branches.iter_mut().enumerate() {
            if let Some(staged) = stage(h, mls)
                && !staged.self_removed()
            {
                found.push(i);
            }
        }
        for i in found {
            let rows = rows_of(&self.branches[i])?;
            let provider = self.provider()?;
            let mut copy = load(provider, &rows, &self.gid, true)?;
            if let Some(staged) = stage(&mut copy, mls) {
                tracing::debug!(
                    "sim: the removed member follows {} on its branch at epoch {}",
                    crate::engine::short(&wire::commit_hash(mls)),
                    copy.mls.epoch().as_u64()
                );
                copy.mls
                    .merge_staged_commit(&copy.provider, *staged)
                    .map_err(|e| Error::Mls(format!("{e:?}")))?;
                self.keep_branch(copy);
            }
        }
        Ok(())
    }

    fn keep_branch(&mut self, h: Held) {
        self.branches.push(h);
        if self.branches.len() > BRANCHES {
            self.branches.remove(0);
        }
    }

    /// Commits for the epoch of a state it holds (`branch`: of its own branches): the
    /// smallest hash of [`GRIND`] self-updates, its vote for it in both rounds, then the
    /// commit merged into a new branch state.
    async fn commit(&mut self, rng: &mut SimRng, branch: bool, i: usize) -> Result<()> {
        let rows = rows_of(if branch {
            &self.branches[i]
        } else {
            &self.held[i]
        })?;
        let mut best: Option<(Held, Vec<u8>, [u8; 32])> = None;
        for _ in 0..GRIND {
            let provider = self.provider()?;
            let mut h = load(provider, &rows, &self.gid, true)?;
            let _ = h.mls.clear_pending_commit(h.provider.storage());
            let bundle = h
                .mls
                .self_update(&h.provider, &self.signer, LeafNodeParameters::default())
                .map_err(|e| Error::Mls(format!("{e:?}")))?;
            let bytes = bundle
                .commit()
                .tls_serialize_detached()
                .map_err(|e| Error::Mls(format!("{e:?}")))?;
            let hash = wire::commit_hash(&bytes);
            if best.as_ref().is_none_or(|(_, _, b)| hash < *b) {
                best = Some((h, bytes, hash));
            }
        }
        let Some((mut h, bytes, hash)) = best else {
            return Ok(());
        };
        let epoch = h.mls.epoch().as_u64();
        tracing::debug!(
            "sim: the removed member commits {} for epoch {epoch} (on {})",
            crate::engine::short(&hash),
            if branch {
                "a branch of its own"
            } else {
                "a state it held"
            }
        );
        let keys = epoch_keys(&h)?;
        let own = h.mls.own_leaf_index().u32();
        let priority = if rng.below(4) == 0 {
            // A false claim: the best priority of any leaf.
            h.mls
                .members()
                .map(|m| crate::order::priority(&keys.order_key, m.index.u32()))
                .min()
                .unwrap_or_else(|| crate::order::priority(&keys.order_key, own))
        } else {
            crate::order::priority(&keys.order_key, own)
        };
        let mut out = vec![
            Wire::Handshake {
                priority,
                mls: bytes,
            }
            .encode(),
        ];
        for round in [1u8, 2] {
            out.push(self.vote(&h, &keys, epoch, round, &hash, own)?);
        }
        for p in out {
            if self.transport.publish(&self.topic, p).await.is_ok() {
                self.published += 1;
            }
        }
        h.mls
            .merge_pending_commit(&h.provider)
            .map_err(|e| Error::Mls(format!("{e:?}")))?;
        self.keep_branch(h);
        Ok(())
    }

    /// Its vote for `commit` as the end of `epoch`, as a member casts it.
    fn vote(
        &self,
        h: &Held,
        keys: &EpochKeys,
        epoch: u64,
        round: u8,
        commit: &[u8; 32],
        leaf: u32,
    ) -> Result<Vec<u8>> {
        let sig = self
            .signer
            .sign(&wire::vote_tbs(&self.gid.0, epoch, round, commit, leaf))
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        let body = VoteBody {
            epoch,
            round,
            commit: *commit,
            leaf,
            public_key: self.signer.public().to_vec(),
            sig,
        };
        let aead = self.suite.aead_algorithm();
        let key = keys
            .vote_key
            .get(..aead.key_size())
            .unwrap_or(&keys.vote_key);
        let nonce = h
            .provider
            .rand()
            .random_array::<12>()
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        let mut sealed = nonce.to_vec();
        sealed.extend(
            h.provider
                .crypto()
                .aead_encrypt(aead, key, &body.encode(), &nonce, &keys.vote_tag)
                .map_err(|e| Error::Crypto(format!("{e:?}")))?,
        );
        Ok(Wire::Vote {
            tag: keys.vote_tag,
            sealed,
        }
        .encode())
    }

    /// Publishes again, past gossip's de-duplication, one of the payloads it published on
    /// the group topic as a member.
    fn replay(&mut self, rng: &mut SimRng, net: &SimNetwork) {
        let own = net.published_by(&self.topic, self.index);
        if !own.is_empty() {
            net.replay(&own[pick(rng, own.len())]);
            self.published += 1;
        }
    }

    /// Reads what is left at the end.
    pub(super) async fn finish(&mut self) {
        self.receive().await;
        self.read();
    }
}

fn pick(rng: &mut SimRng, n: usize) -> usize {
    usize::try_from(rng.below(n as u64)).unwrap_or(0)
}

/// The epoch keys of the ordering for `h`'s epoch.
fn epoch_keys(h: &Held) -> Result<EpochKeys> {
    let export = |label: &str| -> Result<[u8; 32]> {
        h.mls
            .export_secret(h.provider.crypto(), label, &[], 32)
            .map_err(|e| Error::Mls(format!("{e:?}")))?
            .try_into()
            .map_err(|_| Error::Mls("exporter length".into()))
    };
    Ok(EpochKeys::new(
        export(wire::ORDER_EXPORTER_LABEL)?,
        export(wire::VOTE_EXPORTER_LABEL)?,
    ))
}

/// A protocol message from MLS bytes.
fn protocol(mls: &[u8]) -> Option<ProtocolMessage> {
    MlsMessageIn::tls_deserialize_exact(mls)
        .ok()?
        .try_into_protocol_message()
        .ok()
}

/// Whether `h` decrypts the application message `mls`.
fn decrypts(h: &mut Held, mls: &[u8]) -> bool {
    let Some(pm) = protocol(mls) else {
        return false;
    };
    let sent_in = pm.epoch().as_u64();
    match h.mls.process_message(&h.provider, pm) {
        Ok(p) => {
            let sender = format!("{:?} in epoch {sent_in}", p.sender());
            let read = matches!(
                p.into_content(),
                ProcessedMessageContent::ApplicationMessage(_)
            );
            if read {
                tracing::debug!("sim: the removed member read a message from {sender}");
            }
            read
        }
        Err(_) => false,
    }
}

/// The commit `mls` staged on `h`, if it is a valid commit for `h`'s epoch.
fn stage(h: &mut Held, mls: &[u8]) -> Option<Box<StagedCommit>> {
    let pm = protocol(mls)?;
    if pm.epoch() != h.mls.epoch() {
        return None;
    }
    match h.mls.process_message(&h.provider, pm).ok()?.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => Some(staged),
        _ => None,
    }
}

/// The member's state of `gid` as rows of its storage, with its epoch and authenticator,
/// if it is still a member.
fn copy_out(s: &mut State, gid: &GroupId) -> Result<Option<(u64, Vec<u8>, Rows)>> {
    let Ok(g) = s.group(gid) else {
        return Ok(None);
    };
    if g.removed_at.is_some() || !g.mls.is_active() {
        return Ok(None);
    }
    let epoch = g.mls.epoch().as_u64();
    let auth = g.mls.epoch_authenticator().as_slice().to_vec();
    let (key, _) = s.storage_keys(gid)?;
    Ok(Some((epoch, auth, read_rows(s.db(), &key)?)))
}

/// The rows of one group (`key`, as the storage encodes the group id) and every
/// encryption key pair (a member's storage holds its own only).
fn read_rows(db: &Connection, key: &[u8]) -> Result<Rows> {
    let mut out = Vec::new();
    for table in GROUP_TABLES {
        out.push((
            table,
            select(
                db,
                &format!("SELECT * FROM {table} WHERE group_id = ?1"),
                Some(key),
            )?,
        ));
    }
    out.push((
        "openmls_encryption_keys",
        select(db, "SELECT * FROM openmls_encryption_keys", None)?,
    ));
    Ok(out)
}

fn select(db: &Connection, sql: &str, key: Option<&[u8]>) -> Result<Vec<Vec<Value>>> {
    let mut stmt = db.prepare(sql)?;
    let n = stmt.column_count();
    let map = |r: &rusqlite::Row<'_>| (0..n).map(|i| r.get::<_, Value>(i)).collect();
    let rows = match key {
        Some(k) => stmt.query_map([k], map)?.collect::<rusqlite::Result<_>>()?,
        None => stmt.query_map([], map)?.collect::<rusqlite::Result<_>>()?,
    };
    Ok(rows)
}

/// The rows of a state the revenant holds.
fn rows_of(h: &Held) -> Result<Rows> {
    let key = BinaryCodec::to_vec(h.mls.group_id()).map_err(|e| Error::Mls(e.to_string()))?;
    read_rows(h.provider.storage().connection(), &key)
}

/// A state from `rows`, in `provider` (a fresh one).
fn load(provider: Prov, rows: &Rows, gid: &GroupId, after: bool) -> Result<Held> {
    {
        let db = provider.storage().connection();
        for (table, rows) in rows {
            for row in rows {
                let marks = vec!["?"; row.len()].join(", ");
                db.execute(
                    &format!("INSERT OR REPLACE INTO {table} VALUES ({marks})"),
                    rusqlite::params_from_iter(row.iter()),
                )?;
            }
        }
    }
    let mls = MlsGroup::load(
        provider.storage(),
        &openmls::group::GroupId::from_slice(&gid.0),
    )
    .map_err(|e| Error::Mls(format!("{e:?}")))?
    .ok_or_else(|| Error::Mls("no group state in the copied rows".into()))?;
    Ok(Held {
        provider,
        mls,
        after,
    })
}

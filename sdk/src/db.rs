//! The SDK's own tables, in the same SQLite file as the provider's OpenMLS tables, and the
//! group snapshots that let a member move to another branch after a fork.
//!
//! Every state change of the client (an MLS operation, the messages it produced, what it
//! received) happens inside one SQLite transaction, so a crash leaves either all of it or
//! none of it.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Version of the SDK schema, in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 13;

/// Deletes the oldest rows of `pqmls_votes_pending` beyond the cap `?1`, through the
/// index on `received_ms` (schema 13; test `tables_anyone_fills_are_trimmed_through_an_index`).
pub(crate) const TRIM_VOTES_PENDING: &str = "DELETE FROM pqmls_votes_pending WHERE rowid IN
     (SELECT rowid FROM pqmls_votes_pending ORDER BY received_ms, rowid
      LIMIT max(0, (SELECT COUNT(*) FROM pqmls_votes_pending) - ?1))";

/// The same for `pqmls_voids`.
pub(crate) const TRIM_VOIDS: &str = "DELETE FROM pqmls_voids WHERE rowid IN
     (SELECT rowid FROM pqmls_voids ORDER BY received_ms, rowid
      LIMIT max(0, (SELECT COUNT(*) FROM pqmls_voids) - ?1))";

/// Creates the SDK's tables if they do not exist yet, and brings an older schema up to date.
pub(crate) fn migrate(db: &Connection) -> Result<()> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    if version < 1 {
        create_v1(db)?;
    }
    if version < 2 {
        migrate_v2(db)?;
    }
    if version < 3 {
        migrate_v3(db)?;
    }
    if version < 4 {
        migrate_v4(db)?;
    }
    if version < 5 {
        migrate_v5(db)?;
    }
    if version < 6 {
        migrate_v6(db)?;
    }
    if version < 7 {
        migrate_v7(db)?;
    }
    if version < 8 {
        migrate_v8(db)?;
    }
    if version < 9 {
        migrate_v9(db)?;
    }
    if version < 10 {
        migrate_v10(db)?;
    }
    if version < 11 {
        migrate_v11(db)?;
    }
    if version < 12 {
        migrate_v12(db)?;
    }
    migrate_v13(db)
}

/// Version 13: the tables anyone can fill (votes for epochs we do not hold yet,
/// withdrawals for Welcomes not seen yet) are trimmed to their caps oldest first, and
/// `received_ms` sits after a blob of up to 16 kB (votes) or 8 kB (withdrawals): sorting
/// on it read every row's overflow pages, through SQLCipher, for every row that arrived.
/// An index on it makes the trim a walk of the index.
fn migrate_v13(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         CREATE INDEX IF NOT EXISTS pqmls_votes_pending_received
             ON pqmls_votes_pending (received_ms);
         CREATE INDEX IF NOT EXISTS pqmls_voids_received ON pqmls_voids (received_ms);
         PRAGMA user_version = 13;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 12: late messages of the epochs before a join (`inbound::decrypt_past`). The
/// member records of the state a join replaced, kept apart as long as its snapshots
/// (until `replaced_until_ms`), and when each Welcome kept aside arrived (one to an epoch
/// before our join reads that epoch's messages for a bounded time only).
fn migrate_v12(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         -- The records of `pqmls_epochs` of the state the current one replaced (a re-add
         -- after a removal or a lost state): the senders of its late messages. Apart, so
         -- that nothing that decides (finality, abstentions) reads them as records of
         -- our branch.
         CREATE TABLE IF NOT EXISTS pqmls_replaced_epochs (
             group_id BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             members TEXT NOT NULL,
             PRIMARY KEY (group_id, epoch)
         );
         -- Until when (`State::horizon_ms`) the replaced state's snapshots and records
         -- are kept; NULL once they are gone.
         ALTER TABLE pqmls_joins ADD COLUMN replaced_until_ms INTEGER;
         -- When a kept Welcome arrived (`State::horizon_ms`; 0: before this version).
         ALTER TABLE pqmls_welcomes ADD COLUMN received_ms INTEGER NOT NULL DEFAULT 0;
         PRAGMA user_version = 12;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 11: the branch each of our add commits was made on, as the commits we had
/// merged for the epochs not final then (`joins::record_add_ancestry`). When one of
/// those epochs becomes final with another commit, the add can never be merged by
/// anyone, and its Welcome is withdrawn at once (`joins::void_lost_to`), not only once
/// the add's own epoch is final: that epoch may wait for the vote of the invitee itself,
/// held on the dead branch by the Welcome (partition seeds 6 and 185). And the last final
/// epoch of a state a join replaced, for the way back if that join's Welcome is withdrawn.
fn migrate_v11(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS pqmls_add_ancestry (
             group_id BLOB NOT NULL,
             -- An own add commit (pqmls_commits.hash).
             commit_hash BLOB NOT NULL,
             -- An epoch before the commit's, not final when it was made, and the commit
             -- we had merged for it then.
             epoch INTEGER NOT NULL,
             merged_hash BLOB NOT NULL,
             PRIMARY KEY (group_id, commit_hash, epoch)
         );
         -- The last final epoch of the state a join replaced (a member removed or lost,
         -- invited again): if that join's Welcome is withdrawn, the member asks to be
         -- added again under that epoch's keys, kept for it (`joins::on_void`).
         ALTER TABLE pqmls_joins ADD COLUMN prior_final INTEGER;
         PRAGMA user_version = 11;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 10: add intents queued together by `Client::invite_many` share a `batch`
/// number (the id of the first one) and are committed together
/// (`intents::MAX_ADDS_PER_COMMIT` at most per commit); NULL for every other intent.
fn migrate_v10(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         ALTER TABLE pqmls_intents ADD COLUMN batch INTEGER;
         PRAGMA user_version = 10;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 9: delivery evidence for our own messages. `wire_id` is the transport id of the
/// payload that last carried one (`MessageId::compute(topic, payload)`); `stored` is set
/// once a store returned that payload in a catch-up (`Event::Stored`).
fn migrate_v9(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         ALTER TABLE pqmls_messages ADD COLUMN wire_id BLOB;
         ALTER TABLE pqmls_messages ADD COLUMN stored INTEGER NOT NULL DEFAULT 0;
         CREATE INDEX IF NOT EXISTS pqmls_messages_wire ON pqmls_messages (wire_id)
             WHERE wire_id IS NOT NULL;
         PRAGMA user_version = 9;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 8: each abstention's request as its owner signed it, so that we can forward
/// it to members who join later (`recovery::forward_abstentions_to_newcomers`).
fn migrate_v8(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         ALTER TABLE pqmls_abstentions ADD COLUMN body BLOB;
         PRAGMA user_version = 8;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 7: the leaf each of our add commits adds (SHA-256 of its HPKE key, as in the
/// member records), so that after we join a group again an add of ours that the joined
/// tree shows off the chain has its Welcome withdrawn (`joins::void_adds_off_the_tree`).
fn migrate_v7(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         ALTER TABLE pqmls_commits ADD COLUMN added_key BLOB;
         PRAGMA user_version = 7;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 6: the leaves we abstained with, and the withdrawals we sent. A leaf from a key package can be in states of
/// other branches too (the same key package added twice, or a last-resort one); once we
/// said that our leaf of an epoch casts no vote later, we never join a state with that
/// leaf again, nor vote with one (`recovery::lost_request`, `joins::join`).
fn migrate_v6(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS pqmls_abstained_leaves (
             group_id BLOB NOT NULL,
             -- SHA-256 of the leaf's HPKE key, as in pqmls_abstentions.
             leaf_key BLOB NOT NULL,
             PRIMARY KEY (group_id, leaf_key)
         );
         -- Withdrawals we sent, published again on the schedule of our commits (one
         -- lost for good left its invitee on a dead branch: store-miss seed 78); a row
         -- goes once it was published that many times.
         CREATE TABLE IF NOT EXISTS pqmls_sent_voids (
             void_id BLOB PRIMARY KEY,
             invitee TEXT NOT NULL,
             payload BLOB NOT NULL
         );
         PRAGMA user_version = 6;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 5: abstentions. A member that lost the group at an epoch says, with its rejoin
/// request, under which vote tags of later epochs it voted (none after it knew): in every
/// other later epoch where its leaf of then is still listed, it casts no vote, which lets
/// a split round 1 go to round 2 without it (`order::ABSTAIN`).
fn migrate_v5(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS pqmls_abstentions (
             group_id BLOB NOT NULL,
             voter BLOB NOT NULL,
             -- The epoch it lost the group at: it abstains in later ones.
             epoch INTEGER NOT NULL,
             -- SHA-256 of its leaf's HPKE key at that epoch: the leaf that abstains (a
             -- leaf added for it later has another key, and votes).
             leaf_key BLOB NOT NULL,
             -- The vote tags it did vote under after that epoch, 16 bytes each.
             voted_tags BLOB NOT NULL,
             PRIMARY KEY (group_id, voter, epoch)
         );
         PRAGMA user_version = 5;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 4: recovery beyond the horizon. The key packages of rejoin requests
/// (`Wire::Lost`) that we honoured or saw added, so that a replayed request is not
/// honoured again, kept as long as the keys of the epoch that opens them; and the epoch
/// at which we lost a group, so that we go on asking after a restart.
fn migrate_v4(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS pqmls_rejoins (
             group_id BLOB NOT NULL,
             kp_ref BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             PRIMARY KEY (group_id, kp_ref)
         );
         -- The epoch whose final commit we cannot reach (Event::Unrecoverable), until a
         -- Welcome brings us back.
         ALTER TABLE pqmls_groups ADD COLUMN lost_epoch INTEGER;
         -- Each vote as it went on the wire, and the votes that made an epoch final, kept
         -- with its final commit: a member whose copies were lost for good gets them
         -- again when it asks (`Wire::Need`).
         ALTER TABLE pqmls_votes ADD COLUMN payload BLOB;
         CREATE TABLE IF NOT EXISTS pqmls_final_votes (
             group_id BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             payload BLOB NOT NULL
         );
         CREATE INDEX IF NOT EXISTS pqmls_final_votes_epoch ON pqmls_final_votes (group_id, epoch);
         PRAGMA user_version = 4;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 3: the ordering (see `order.rs`): the priority each candidate commit claims
/// and, once MLS authenticated it, its author's leaf and the leaves it removes; the keys
/// of each epoch of our branch, the votes read, and the last final epoch.
fn migrate_v3(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         ALTER TABLE pqmls_commits ADD COLUMN priority BLOB;
         ALTER TABLE pqmls_commits ADD COLUMN author INTEGER;
         ALTER TABLE pqmls_commits ADD COLUMN removes TEXT;
         -- For our own commits: OpenMLS's pending-commit state right after making it, so
         -- we can move back to it from a snapshot that holds another one.
         ALTER TABLE pqmls_commits ADD COLUMN pending_state BLOB;
         ALTER TABLE pqmls_groups ADD COLUMN final_epoch INTEGER;
         CREATE TABLE IF NOT EXISTS pqmls_epoch_keys (
             group_id BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             order_key BLOB NOT NULL,
             vote_key BLOB NOT NULL,
             vote_tag BLOB NOT NULL,
             entered_ms INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (group_id, epoch)
         );
         CREATE INDEX IF NOT EXISTS pqmls_epoch_keys_tag ON pqmls_epoch_keys (vote_tag);
         CREATE TABLE IF NOT EXISTS pqmls_votes (
             group_id BLOB NOT NULL,
             vote_tag BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             round INTEGER NOT NULL,
             voter BLOB NOT NULL,
             commit_hash BLOB NOT NULL,
             PRIMARY KEY (group_id, vote_tag, round, voter, commit_hash)
         );
         -- Votes for epochs we do not hold (yet): tried again when we enter them.
         CREATE TABLE IF NOT EXISTS pqmls_votes_pending (
             vote_tag BLOB NOT NULL,
             sealed BLOB NOT NULL,
             received_ms INTEGER NOT NULL,
             PRIMARY KEY (vote_tag, sealed)
         );
         PRAGMA user_version = 3;
         COMMIT;",
    )?;
    Ok(())
}

/// Version 2: users are identified by key (ids beside names), signed and rotated key
/// packages, withdrawals that name nothing in clear, consent to invitations, contacts, and
/// bounded de-duplication.
fn migrate_v2(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         ALTER TABLE pqmls_messages ADD COLUMN sender_id BLOB;
         ALTER TABLE pqmls_seen ADD COLUMN seen_ms INTEGER NOT NULL DEFAULT 0;
         CREATE INDEX IF NOT EXISTS pqmls_seen_age ON pqmls_seen (seen_ms);
         ALTER TABLE pqmls_commits ADD COLUMN void_id BLOB;
         ALTER TABLE pqmls_commits ADD COLUMN void_key BLOB;
         ALTER TABLE pqmls_joins ADD COLUMN void_id BLOB;
         ALTER TABLE pqmls_joins ADD COLUMN void_key BLOB;
         ALTER TABLE pqmls_welcomes ADD COLUMN inviter_id BLOB;
         ALTER TABLE pqmls_welcomes ADD COLUMN sender_known INTEGER NOT NULL DEFAULT 0;
         -- Welcomes we joined with (replays are refused), the newest 64 per group.
         CREATE TABLE IF NOT EXISTS pqmls_used_welcomes (
             welcome_hash BLOB PRIMARY KEY,
             group_id BLOB NOT NULL,
             used_ms INTEGER NOT NULL
         );
         -- For a group whose state ended: whether we left on purpose.
         ALTER TABLE pqmls_groups ADD COLUMN left_on_purpose INTEGER NOT NULL DEFAULT 0;
         -- Withdrawals whose Welcome has not arrived (or that name nothing of ours).
         DROP TABLE IF EXISTS pqmls_voids;
         CREATE TABLE pqmls_voids (
             void_id BLOB PRIMARY KEY,
             sealed BLOB NOT NULL,
             received_ms INTEGER NOT NULL
         );
         -- Key packages: the bytes as published (re-published as they are while the
         -- directory is unreachable), the entry's sequence number, when it was made and
         -- when it was last replaced, and whether an inviter claimed it.
         ALTER TABLE pqmls_key_packages ADD COLUMN bytes BLOB;
         ALTER TABLE pqmls_key_packages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE pqmls_key_packages ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE pqmls_key_packages ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
         -- Replaced key packages, whose private keys are deleted after a grace period.
         CREATE TABLE IF NOT EXISTS pqmls_retired_key_packages (
             kp_ref BLOB PRIMARY KEY,
             delete_after_ms INTEGER NOT NULL
         );
         -- Every (user id, name) seen as a member of a group: a Welcome may continue a
         -- group only if its sender is one of them.
         CREATE TABLE IF NOT EXISTS pqmls_known_keys (
             group_id BLOB NOT NULL,
             user_id BLOB NOT NULL,
             name TEXT NOT NULL,
             PRIMARY KEY (group_id, user_id)
         );
         -- Invitations waiting for the application's consent.
         CREATE TABLE IF NOT EXISTS pqmls_invitations (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             group_id BLOB NOT NULL,
             inviter_id BLOB NOT NULL,
             inviter_name TEXT NOT NULL,
             epoch INTEGER NOT NULL,
             received_ms INTEGER NOT NULL,
             welcome_hash BLOB NOT NULL UNIQUE,
             payload BLOB NOT NULL
         );
         -- The application's contacts: user ids with a label of its choosing.
         CREATE TABLE IF NOT EXISTS pqmls_contacts (
             user_id BLOB PRIMARY KEY,
             label TEXT NOT NULL,
             added_ms INTEGER NOT NULL
         );
         PRAGMA user_version = 2;
         COMMIT;",
    )?;
    Ok(())
}

/// The schema of version 1.
fn create_v1(db: &Connection) -> Result<()> {
    db.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS pqmls_identity (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             name TEXT NOT NULL,
             suite INTEGER NOT NULL,
             signer BLOB NOT NULL
         );
         -- Groups this client is or was in.
         CREATE TABLE IF NOT EXISTS pqmls_groups (
             group_id BLOB PRIMARY KEY,
             active INTEGER NOT NULL,
             joined_ms INTEGER NOT NULL,
             last_update_ms INTEGER NOT NULL
         );
         -- How far each topic's history has been read from the store nodes.
         CREATE TABLE IF NOT EXISTS pqmls_cursors (
             topic TEXT PRIMARY KEY,
             after_ms INTEGER NOT NULL,
             after_id BLOB
         );
         -- Application messages, sent and received, de-duplicated on the sender's uid.
         CREATE TABLE IF NOT EXISTS pqmls_messages (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             group_id BLOB NOT NULL,
             uid BLOB NOT NULL,
             sender TEXT NOT NULL,
             epoch INTEGER NOT NULL,
             sent_ms INTEGER NOT NULL,
             own INTEGER NOT NULL,
             body BLOB NOT NULL,
             UNIQUE (group_id, uid)
         );
         -- Payloads written but not yet accepted by the transport.
         CREATE TABLE IF NOT EXISTS pqmls_outbox (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             topic TEXT NOT NULL,
             payload BLOB NOT NULL
         );
         -- Transport ids of the payloads already handled.
         CREATE TABLE IF NOT EXISTS pqmls_seen (
             id BLOB PRIMARY KEY
         );
         -- Every commit seen for a group, by epoch; `merged` marks the one on our branch.
         CREATE TABLE IF NOT EXISTS pqmls_commits (
             group_id BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             hash BLOB NOT NULL,
             payload BLOB NOT NULL,
             own INTEGER NOT NULL,
             merged INTEGER NOT NULL DEFAULT 0,
             welcome BLOB,
             invitee TEXT,
             intent INTEGER,
             PRIMARY KEY (group_id, hash)
         );
         CREATE INDEX IF NOT EXISTS pqmls_commits_epoch ON pqmls_commits (group_id, epoch);
         -- Messages that cannot be handled yet (future epoch, or another branch).
         CREATE TABLE IF NOT EXISTS pqmls_pending (
             group_id BLOB NOT NULL,
             id BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             payload BLOB NOT NULL,
             PRIMARY KEY (group_id, id)
         );
         -- Operations this client wants committed, kept until the group reflects them.
         CREATE TABLE IF NOT EXISTS pqmls_intents (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             group_id BLOB NOT NULL,
             kind TEXT NOT NULL,
             user TEXT NOT NULL,
             key_package BLOB,
             -- The epoch whose commit did it, while that commit could still be undone by
             -- a branch move; NULL while still to do.
             done_epoch INTEGER
         );
         -- Welcomes for groups we were already in, kept in case our branch turns out dead.
         CREATE TABLE IF NOT EXISTS pqmls_welcomes (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             group_id BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             payload BLOB NOT NULL
         );
         -- How we joined each group: the Welcome's hash and the inviter's signature key,
         -- so the inviter can void that Welcome if its add commit loses (`Wire::Void`).
         -- `joined_seq`: the last message row before the join (our messages after it were
         -- sent on this state); `epoch`: the epoch joined at.
         CREATE TABLE IF NOT EXISTS pqmls_joins (
             group_id BLOB PRIMARY KEY,
             welcome_hash BLOB NOT NULL,
             inviter_key BLOB NOT NULL,
             joined_seq INTEGER NOT NULL,
             epoch INTEGER NOT NULL
         );
         -- Voids received, checked again when the Welcome they name arrives after them.
         CREATE TABLE IF NOT EXISTS pqmls_voids (
             welcome_hash BLOB PRIMARY KEY,
             group_id BLOB NOT NULL,
             sig BLOB NOT NULL
         );
         -- Who was in the group at each epoch of our branch.
         CREATE TABLE IF NOT EXISTS pqmls_epochs (
             group_id BLOB NOT NULL,
             epoch INTEGER NOT NULL,
             members TEXT NOT NULL,
             PRIMARY KEY (group_id, epoch)
         );
         -- Our key packages in the directory, by slot (-1 is the last-resort one).
         CREATE TABLE IF NOT EXISTS pqmls_key_packages (
             slot INTEGER PRIMARY KEY,
             kp_ref BLOB NOT NULL,
             published INTEGER NOT NULL
         );
         -- Snapshots of a group's OpenMLS rows at the start of an epoch.
         CREATE TABLE IF NOT EXISTS pqmls_snap_group_data (
             snap_group BLOB NOT NULL, snap_epoch INTEGER NOT NULL,
             provider_version INTEGER NOT NULL, group_id BLOB NOT NULL,
             data_type TEXT NOT NULL, group_data BLOB NOT NULL
         );
         CREATE TABLE IF NOT EXISTS pqmls_snap_epoch_keys (
             snap_group BLOB NOT NULL, snap_epoch INTEGER NOT NULL,
             provider_version INTEGER NOT NULL, group_id BLOB NOT NULL,
             epoch_id BLOB NOT NULL, leaf_index INTEGER NOT NULL, key_pairs BLOB NOT NULL
         );
         CREATE TABLE IF NOT EXISTS pqmls_snap_own_leaf_nodes (
             snap_group BLOB NOT NULL, snap_epoch INTEGER NOT NULL, ord INTEGER NOT NULL,
             provider_version INTEGER NOT NULL, group_id BLOB NOT NULL, leaf_node BLOB NOT NULL
         );
         CREATE TABLE IF NOT EXISTS pqmls_snap_proposals (
             snap_group BLOB NOT NULL, snap_epoch INTEGER NOT NULL,
             provider_version INTEGER NOT NULL, group_id BLOB NOT NULL,
             proposal_ref BLOB NOT NULL, proposal BLOB NOT NULL
         );
         CREATE TABLE IF NOT EXISTS pqmls_snap_enc_keys (
             snap_group BLOB NOT NULL, snap_epoch INTEGER NOT NULL,
             provider_version INTEGER NOT NULL, public_key BLOB NOT NULL, key_pair BLOB NOT NULL
         );
         PRAGMA user_version = 1;
         COMMIT;",
    )?;
    Ok(())
}

/// Copies the OpenMLS rows of one group (`key` is its id as the storage encodes it) and
/// the key pair of our own leaf (`leaf_key`, encoded the same way) into the snapshot
/// tables, as the state at the start of `epoch`.
pub(crate) fn snapshot(
    db: &Connection,
    group: &[u8],
    epoch: u64,
    key: &[u8],
    leaf_key: Option<&[u8]>,
) -> Result<()> {
    let e = to_i64(epoch);
    drop_snapshot(db, group, epoch)?;
    db.prepare_cached(
        "INSERT INTO pqmls_snap_group_data
         SELECT ?1, ?2, provider_version, group_id, data_type, group_data
         FROM openmls_group_data WHERE group_id = ?3",
    )?
    .execute(params![group, e, key])?;
    db.prepare_cached(
        "INSERT INTO pqmls_snap_epoch_keys
         SELECT ?1, ?2, provider_version, group_id, epoch_id, leaf_index, key_pairs
         FROM openmls_epoch_keys_pairs WHERE group_id = ?3",
    )?
    .execute(params![group, e, key])?;
    db.prepare_cached(
        "INSERT INTO pqmls_snap_own_leaf_nodes
         SELECT ?1, ?2, id, provider_version, group_id, leaf_node
         FROM openmls_own_leaf_nodes WHERE group_id = ?3",
    )?
    .execute(params![group, e, key])?;
    db.prepare_cached(
        "INSERT INTO pqmls_snap_proposals
         SELECT ?1, ?2, provider_version, group_id, proposal_ref, proposal
         FROM openmls_proposals WHERE group_id = ?3",
    )?
    .execute(params![group, e, key])?;
    if let Some(leaf_key) = leaf_key {
        db.prepare_cached(
            "INSERT INTO pqmls_snap_enc_keys
             SELECT ?1, ?2, provider_version, public_key, key_pair
             FROM openmls_encryption_keys WHERE public_key = ?3",
        )?
        .execute(params![group, e, leaf_key])?;
    }
    Ok(())
}

/// The earliest snapshot of `group` from `epoch` to `last`: its OpenMLS state keeps the
/// secrets of the epochs before it that OpenMLS keeps for late messages.
pub(crate) fn snapshot_between(
    db: &Connection,
    group: &[u8],
    epoch: u64,
    last: u64,
) -> Result<Option<u64>> {
    let e: Option<i64> = db
        .prepare_cached(
            "SELECT MIN(snap_epoch) FROM pqmls_snap_group_data WHERE snap_group = ?1 AND snap_epoch >= ?2 AND snap_epoch <= ?3",
        )?
        .query_row(params![group, to_i64(epoch), to_i64(last)], |r| r.get(0))?;
    Ok(e.map(to_u64))
}

/// Whether a snapshot of `group` at `epoch` exists.
pub(crate) fn has_snapshot(db: &Connection, group: &[u8], epoch: u64) -> Result<bool> {
    Ok(db
        .prepare_cached(
            "SELECT 1 FROM pqmls_snap_group_data WHERE snap_group = ?1 AND snap_epoch = ?2 LIMIT 1",
        )?
        .query_row(params![group, to_i64(epoch)], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Replaces the OpenMLS rows of the group by its snapshot at `epoch`. Encryption keys are
/// added back if they were deleted since (never removed: keys of later epochs stay until
/// the snapshots that could need them are pruned).
pub(crate) fn restore(db: &Connection, group: &[u8], epoch: u64, key: &[u8]) -> Result<()> {
    let e = to_i64(epoch);
    for table in [
        "openmls_group_data",
        "openmls_epoch_keys_pairs",
        "openmls_own_leaf_nodes",
        "openmls_proposals",
    ] {
        db.execute(&format!("DELETE FROM {table} WHERE group_id = ?1"), [key])?;
    }
    db.execute(
        "INSERT INTO openmls_group_data (provider_version, group_id, data_type, group_data)
         SELECT provider_version, group_id, data_type, group_data FROM pqmls_snap_group_data
         WHERE snap_group = ?1 AND snap_epoch = ?2",
        params![group, e],
    )?;
    db.execute(
        "INSERT INTO openmls_epoch_keys_pairs (provider_version, group_id, epoch_id, leaf_index, key_pairs)
         SELECT provider_version, group_id, epoch_id, leaf_index, key_pairs FROM pqmls_snap_epoch_keys
         WHERE snap_group = ?1 AND snap_epoch = ?2",
        params![group, e],
    )?;
    db.execute(
        "INSERT INTO openmls_own_leaf_nodes (provider_version, group_id, leaf_node)
         SELECT provider_version, group_id, leaf_node FROM pqmls_snap_own_leaf_nodes
         WHERE snap_group = ?1 AND snap_epoch = ?2 ORDER BY ord",
        params![group, e],
    )?;
    db.execute(
        "INSERT INTO openmls_proposals (provider_version, group_id, proposal_ref, proposal)
         SELECT provider_version, group_id, proposal_ref, proposal FROM pqmls_snap_proposals
         WHERE snap_group = ?1 AND snap_epoch = ?2",
        params![group, e],
    )?;
    db.execute(
        "INSERT OR IGNORE INTO openmls_encryption_keys (provider_version, public_key, key_pair)
         SELECT provider_version, public_key, key_pair FROM pqmls_snap_enc_keys
         WHERE snap_group = ?1 AND snap_epoch = ?2",
        params![group, e],
    )?;
    Ok(())
}

fn drop_snapshot(db: &Connection, group: &[u8], epoch: u64) -> Result<()> {
    for table in SNAP_TABLES {
        db.prepare_cached(&format!(
            "DELETE FROM {table} WHERE snap_group = ?1 AND snap_epoch = ?2"
        ))?
        .execute(params![group, to_i64(epoch)])?;
    }
    Ok(())
}

const SNAP_TABLES: [&str; 5] = [
    "pqmls_snap_group_data",
    "pqmls_snap_epoch_keys",
    "pqmls_snap_own_leaf_nodes",
    "pqmls_snap_proposals",
    "pqmls_snap_enc_keys",
];

/// Deletes the snapshots of `group` older than `keep_from` (all of them for `u64::MAX`).
pub(crate) fn prune_snapshots(db: &Connection, group: &[u8], keep_from: u64) -> Result<()> {
    delete_snapshots(db, group, "<", keep_from)
}

/// Deletes a group's snapshots of epochs from `floor` to before `keep_from`, but `keep`
/// (the first open epoch's, kept longer: `Config::open_epoch_horizon`). Those before
/// `floor` are of a state the current one replaced, kept for a while on their own terms
/// (`State::snapshot_floor`); a `floor` of 0 leaves none out.
pub(crate) fn prune_snapshots_but(
    db: &Connection,
    group: &[u8],
    keep_from: u64,
    keep: Option<u64>,
    floor: u64,
) -> Result<()> {
    let keep = keep.filter(|k| *k < keep_from).map_or(-1, to_i64);
    for table in SNAP_TABLES {
        db.prepare_cached(&format!(
            "DELETE FROM {table} WHERE snap_group = ?1 AND snap_epoch < ?2 AND snap_epoch >= ?3 AND snap_epoch != ?4"
        ))?
        .execute(params![group, to_i64(keep_from), to_i64(floor), keep])?;
    }
    Ok(())
}

/// Deletes a group's snapshots of `from` and later (those of a state being replaced that
/// a new state's epochs would collide with).
pub(crate) fn drop_snapshots_from(db: &Connection, group: &[u8], from: u64) -> Result<()> {
    delete_snapshots(db, group, ">=", from)
}

/// Deletes the snapshots of `group` whose epoch compares with `op` (a fixed SQL
/// comparison operator) to `epoch`.
fn delete_snapshots(db: &Connection, group: &[u8], op: &str, epoch: u64) -> Result<()> {
    for table in SNAP_TABLES {
        db.prepare_cached(&format!(
            "DELETE FROM {table} WHERE snap_group = ?1 AND snap_epoch {op} ?2"
        ))?
        .execute(params![group, to_i64(epoch)])?;
    }
    Ok(())
}

/// An epoch or count as SQLite's integer (saturating; epochs never get near 2^63).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Back from SQLite's integer (negative values, which we never write, read as 0).
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(db: &Connection) -> i64 {
        db.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    /// A database of version 11 (the release before the replaced state's records and the
    /// kept Welcomes' arrival times) gets both, its rows intact; before, the new table
    /// existed only in databases created from scratch, and every join over a state failed
    /// on the others.
    #[test]
    fn a_version_11_database_is_brought_up_to_date() {
        let db = Connection::open_in_memory().unwrap();
        create_v1(&db).unwrap();
        for step in [
            migrate_v2,
            migrate_v3,
            migrate_v4,
            migrate_v5,
            migrate_v6,
            migrate_v7,
            migrate_v8,
            migrate_v9,
            migrate_v10,
            migrate_v11,
        ] {
            step(&db).unwrap();
        }
        assert_eq!(version(&db), 11);
        db.execute(
            "INSERT INTO pqmls_welcomes (group_id, epoch, payload) VALUES (x'01', 3, x'02')",
            [],
        )
        .unwrap();
        assert!(
            db.prepare("SELECT * FROM pqmls_replaced_epochs").is_err(),
            "version 11 has no such table"
        );

        migrate(&db).unwrap();
        assert_eq!(version(&db), SCHEMA_VERSION);
        let received: i64 = db
            .query_row(
                "SELECT received_ms FROM pqmls_welcomes WHERE epoch = 3",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(received, 0, "an old kept Welcome reads nothing (too old)");
        db.execute(
            "INSERT INTO pqmls_replaced_epochs (group_id, epoch, members) VALUES (x'01', 2, '')",
            [],
        )
        .unwrap();
        db.prepare("SELECT replaced_until_ms FROM pqmls_joins")
            .unwrap();
        // Opening it again changes nothing.
        migrate(&db).unwrap();
        assert_eq!(version(&db), SCHEMA_VERSION);
    }

    /// The trims of the tables anyone can fill walk the index on `received_ms`, never the
    /// rows (whose `received_ms` sits after a blob, in overflow pages), and keep the
    /// newest rows up to the cap.
    #[test]
    fn tables_anyone_fills_are_trimmed_through_an_index() {
        let db = Connection::open_in_memory().unwrap();
        migrate(&db).unwrap();
        for (table, trim) in [
            ("pqmls_votes_pending", TRIM_VOTES_PENDING),
            ("pqmls_voids", TRIM_VOIDS),
        ] {
            let plan: Vec<String> = db
                .prepare(&format!("EXPLAIN QUERY PLAN {trim}"))
                .unwrap()
                .query_map([4], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter()
                    .all(|p| !p.starts_with("SCAN") || p.contains("INDEX"))
                    && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
                "{table}: {plan:?}"
            );
            let insert = match table {
                "pqmls_votes_pending" => {
                    "INSERT INTO pqmls_votes_pending (vote_tag, sealed, received_ms) VALUES (?1, x'00', ?2)"
                }
                _ => {
                    "INSERT INTO pqmls_voids (void_id, sealed, received_ms) VALUES (?1, x'00', ?2)"
                }
            };
            // Arrival times out of order; the four newest stay.
            for (k, ms) in [5i64, 1, 9, 3, 7, 2, 8].iter().enumerate() {
                db.execute(insert, params![vec![k as u8], ms]).unwrap();
            }
            db.execute(trim, [4]).unwrap();
            let kept: Vec<i64> = db
                .prepare(&format!(
                    "SELECT received_ms FROM {table} ORDER BY received_ms"
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(kept, [5, 7, 8, 9], "{table}");
            db.execute(trim, [4]).unwrap();
            let n: i64 = db
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 4, "{table}: nothing more under the cap");
        }
    }
}

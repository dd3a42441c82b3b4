//! The store role: SQLite persistence of topic history and of the key-package directory.
//!
//! A store node writes every accepted gossip message of the topics it subscribes to (and the
//! messages it publishes itself) into `store.sqlite3` in the node's data directory, prunes
//! rows older than the retention period, and answers history and directory requests. By
//! default it also subscribes to the topics its peers subscribe to
//! ([`Config::follow_subscriptions`]). The topics it serves are remembered too, so a
//! restarted store resubscribes by itself.
//!
//! History is ordered by the store's arrival time, ties broken by message id; a [`Cursor`]
//! is a position in that order, which makes paging stable while new messages arrive.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;
use crate::message::{Message, MessageId, Topic, from_unix_ms, unix_ms};

/// The store's database file in the data directory.
pub(crate) const FILE: &str = "store.sqlite3";

/// Configuration of the store role.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// How long messages are kept (default 30 days).
    pub retention: Duration,
    /// How often expired messages are deleted (default one hour; also done at start).
    pub prune_interval: Duration,
    /// Follow the subscriptions of connected peers (default true): when a peer subscribes to
    /// a topic (or is already subscribed when it connects), the store subscribes to it too,
    /// keeps its history and resubscribes after a restart, exactly as if
    /// [`Node::subscribe`](crate::Node::subscribe) had been called. A store cannot compute a
    /// group's topic (it is a hash of the group id), so this is how it learns which topics
    /// to keep. With `false` the store keeps only the topics it is told to subscribe to.
    pub follow_subscriptions: bool,
    /// Most topics a store serves before it stops following further subscriptions (default
    /// 100 000). Topics subscribed to explicitly are not refused, but count towards the
    /// limit. Bounds what peers subscribing to many topics can make a store keep.
    pub max_topics: usize,
    /// How long a directory entry lives after it was last written (default 30 days). An
    /// expired entry is not served, not passed to the validator as the old entry, does not
    /// count towards quotas, and is deleted at the next prune. Writers refresh their entries
    /// by putting them again.
    pub directory_ttl: Duration,
    /// Most live directory entries one remote peer id may have written (default 1024). An
    /// entry counts for the peer that wrote it last. Puts by the store itself are exempt.
    pub max_entries_per_peer: usize,
    /// Most bytes (keys plus blobs) of live directory entries one remote peer id may have
    /// written (default 16 MiB).
    pub max_bytes_per_peer: usize,
    /// Most directory entries, live or expired but not yet pruned, over all writers
    /// (default 1 000 000). Peer ids cost nothing to make, so this is what bounds the disk.
    pub max_directory_entries: usize,
    /// Most bytes (keys plus blobs) of directory entries over all writers (default 1 GiB).
    pub max_directory_bytes: usize,
    /// The application's check of directory writes, see [`DirectoryValidator`]. Without
    /// one every put within the quotas is stored (last writer wins).
    pub directory_validator: Option<Arc<dyn DirectoryValidator>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("retention", &self.retention)
            .field("prune_interval", &self.prune_interval)
            .field("follow_subscriptions", &self.follow_subscriptions)
            .field("max_topics", &self.max_topics)
            .field("directory_ttl", &self.directory_ttl)
            .field("max_entries_per_peer", &self.max_entries_per_peer)
            .field("max_bytes_per_peer", &self.max_bytes_per_peer)
            .field("max_directory_entries", &self.max_directory_entries)
            .field("max_directory_bytes", &self.max_directory_bytes)
            .field("directory_validator", &self.directory_validator.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
            follow_subscriptions: true,
            max_topics: 100_000,
            directory_ttl: Duration::from_secs(30 * 24 * 3600),
            max_entries_per_peer: 1024,
            max_bytes_per_peer: 16 * 1024 * 1024,
            max_directory_entries: 1_000_000,
            max_directory_bytes: 1024 * 1024 * 1024,
            directory_validator: None,
        }
    }
}

/// Decides whether a directory write may be stored. A store node calls it for every put,
/// from a remote peer or from the node itself, before anything is written, with the key,
/// the live entry it would replace (`None` if there is none or it expired) and the new
/// blob. Returning `false` refuses the put: the old entry stays and the writer gets
/// [`Error::EntryRejected`](crate::Error::EntryRejected).
///
/// The transport knows nothing of what entries mean; this hook is where the application
/// makes them mean something, for example "the blob is signed by the identity key named in
/// the key, and an existing entry is replaced only by a newer one signed by that same key".
/// It runs on the node's event loop, so it must be quick and must not block.
///
/// Any `Fn(&[u8], Option<&[u8]>, &[u8]) -> bool + Send + Sync + 'static` is a validator.
pub trait DirectoryValidator: Send + Sync + 'static {
    /// Whether `new` may be stored under `key`, replacing `old`.
    fn allows(&self, key: &[u8], old: Option<&[u8]>, new: &[u8]) -> bool;
}

impl<F> DirectoryValidator for F
where
    F: Fn(&[u8], Option<&[u8]>, &[u8]) -> bool + Send + Sync + 'static,
{
    fn allows(&self, key: &[u8], old: Option<&[u8]>, new: &[u8]) -> bool {
        self(key, old, new)
    }
}

/// Who writes a directory entry: quotas are kept per remote writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer<'a> {
    /// The store node itself (exempt from the per-peer quotas).
    Local,
    /// A remote peer, by the bytes of its peer id.
    Remote(&'a [u8]),
}

/// What became of a directory put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    /// Stored (or replaced the old entry).
    Stored,
    /// The [`DirectoryValidator`] refused it.
    Rejected,
    /// The writer's quota ([`Config::max_entries_per_peer`], [`Config::max_bytes_per_peer`])
    /// or the directory's ([`Config::max_directory_entries`],
    /// [`Config::max_directory_bytes`]) would be exceeded.
    OverQuota,
}

/// Entries and bytes (keys plus blobs) of directory entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub entries: usize,
    pub bytes: usize,
}

/// Whether replacing an entry of `old` bytes (`None`: a new key for this usage) by one of
/// `new` bytes keeps `usage` within `max`. Pure, so the quota rule is tested on its own.
pub(crate) fn within_quota(usage: Usage, old: Option<usize>, new: usize, max: Usage) -> bool {
    let entries = match old {
        Some(_) => usage.entries,
        None => usage.entries.saturating_add(1),
    };
    let bytes = usage
        .bytes
        .saturating_sub(old.unwrap_or(0))
        .saturating_add(new);
    entries <= max.entries && bytes <= max.bytes
}

impl Config {
    /// Sets the retention period.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Sets whether the store follows the subscriptions of connected peers, see
    /// [`Config::follow_subscriptions`].
    pub fn with_follow_subscriptions(mut self, follow: bool) -> Self {
        self.follow_subscriptions = follow;
        self
    }

    /// Sets the most topics the store serves before it stops following subscriptions, see
    /// [`Config::max_topics`].
    pub fn with_max_topics(mut self, max_topics: usize) -> Self {
        self.max_topics = max_topics;
        self
    }

    /// Sets how long a directory entry lives after its last write, see
    /// [`Config::directory_ttl`].
    pub fn with_directory_ttl(mut self, ttl: Duration) -> Self {
        self.directory_ttl = ttl;
        self
    }

    /// Sets the per-peer directory quotas, see [`Config::max_entries_per_peer`] and
    /// [`Config::max_bytes_per_peer`].
    pub fn with_peer_quota(mut self, entries: usize, bytes: usize) -> Self {
        self.max_entries_per_peer = entries;
        self.max_bytes_per_peer = bytes;
        self
    }

    /// Sets the directory's total size, see [`Config::max_directory_entries`] and
    /// [`Config::max_directory_bytes`].
    pub fn with_directory_size(mut self, entries: usize, bytes: usize) -> Self {
        self.max_directory_entries = entries;
        self.max_directory_bytes = bytes;
        self
    }

    /// Sets the directory validator, see [`DirectoryValidator`].
    pub fn with_directory_validator(mut self, validator: impl DirectoryValidator) -> Self {
        self.directory_validator = Some(Arc::new(validator));
        self
    }
}

/// A position in a topic's history. Pass [`Cursor::beginning`] or [`Cursor::since`] for the
/// first request, then the `next` cursor of each [`Page`].
///
/// A store orders a topic's history by `(arrival time at the store in Unix milliseconds,
/// message id)`, ids compared as bytes. A cursor `(after_ms, after_id)` asks for the messages
/// strictly after that position:
///
/// - `after_id == Some(id)`: messages that arrived in a later millisecond than `after_ms`,
///   or in millisecond `after_ms` with an id greater than `id`;
/// - `after_id == None`: every message that arrived in millisecond `after_ms` or later (the
///   position just before the first id of `after_ms`). [`Cursor::beginning`] is
///   `(0, None)`.
///
/// Cursors are plain data: [`Cursor::from_parts`], [`Cursor::after_ms`] and
/// [`Cursor::after_id`] let an application persist one and a simulated network interpret
/// one. Arrival times are the store's, so a cursor is only meaningful for the store it came
/// from (or one with the same arrival times, such as the same store after a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub(crate) after_ms: u64,
    pub(crate) after_id: Option<MessageId>,
}

impl Cursor {
    /// The cursor at position `(after_ms, after_id)`, for example one read back from
    /// [`Cursor::after_ms`] and [`Cursor::after_id`]. See [`Cursor`] for what it selects.
    pub fn from_parts(after_ms: u64, after_id: Option<MessageId>) -> Self {
        Self { after_ms, after_id }
    }

    /// The arrival time, in milliseconds since the Unix epoch at the store, that the cursor
    /// points into.
    pub fn after_ms(&self) -> u64 {
        self.after_ms
    }

    /// The id after which the cursor points within millisecond [`Cursor::after_ms`]; `None`
    /// means before every message of that millisecond.
    pub fn after_id(&self) -> Option<MessageId> {
        self.after_id
    }

    /// Everything the store still holds.
    pub fn beginning() -> Self {
        Self::default()
    }

    /// Messages that arrived at the store at or after `time` (millisecond precision).
    pub fn since(time: SystemTime) -> Self {
        Self {
            after_ms: unix_ms(time).saturating_sub(1),
            after_id: Some(MessageId([0xff; 32])),
        }
    }

    /// Messages after `message` (which must come from a history [`Page`], whose arrival
    /// time is the store's).
    pub fn after(message: &Message) -> Self {
        Self {
            after_ms: unix_ms(message.received),
            after_id: Some(message.id),
        }
    }
}

/// One page of a topic's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Messages in arrival order at the store.
    pub messages: Vec<Message>,
    /// Where the next page starts, or `None` if this was the last one.
    pub next: Option<Cursor>,
    /// On the last page: where a later read should start, when it is past the last of
    /// `messages` (a transport that leaves out what its client already handled says so
    /// here, or its client's cursor would stay before them); `None`: after the last
    /// message.
    pub resume: Option<Cursor>,
}

/// A stored message as it travels in a history response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: MessageId,
    pub received_ms: u64,
    pub data: Vec<u8>,
}

/// How large a history page may grow, see [`Store::history`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageLimits {
    /// Most entries.
    pub messages: usize,
    /// Payload bytes after which the page is cut (a page holds at least one entry).
    pub bytes: usize,
    /// Hard cap on the page's encoded size: payloads plus `entry_overhead` per entry.
    pub budget: usize,
    /// Encoded bytes per entry besides its payload.
    pub entry_overhead: usize,
}

impl PageLimits {
    /// No budget beyond the count and the soft byte limit (for local reads).
    pub(crate) fn unbudgeted(messages: usize, bytes: usize) -> Self {
        Self {
            messages,
            bytes,
            budget: usize::MAX,
            entry_overhead: 0,
        }
    }
}

/// The SQLite database of a store node.
pub(crate) struct Store {
    db: Connection,
    retention: Duration,
    directory_ttl: Duration,
    peer_quota: Usage,
    directory_quota: Usage,
    validator: Option<Arc<dyn DirectoryValidator>>,
    /// Size of the whole directory table (expired rows included until pruned), kept in
    /// memory so a put need not scan the table.
    directory_usage: Cell<Usage>,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub(crate) fn open(dir: &Path, config: &Config) -> Result<Self> {
        let db = Connection::open(dir.join(FILE))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                 topic TEXT NOT NULL,
                 id BLOB NOT NULL,
                 received_ms INTEGER NOT NULL,
                 data BLOB NOT NULL,
                 PRIMARY KEY (topic, id)
             );
             CREATE INDEX IF NOT EXISTS messages_by_arrival
                 ON messages (topic, received_ms, id);
             CREATE TABLE IF NOT EXISTS directory (
                 key BLOB PRIMARY KEY,
                 blob BLOB NOT NULL,
                 updated_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY);",
        )?;
        migrate(&db, config.directory_ttl)?;
        let store = Self {
            db,
            retention: config.retention,
            directory_ttl: config.directory_ttl,
            peer_quota: Usage {
                entries: config.max_entries_per_peer,
                bytes: config.max_bytes_per_peer,
            },
            directory_quota: Usage {
                entries: config.max_directory_entries,
                bytes: config.max_directory_bytes,
            },
            validator: config.directory_validator.clone(),
            directory_usage: Cell::new(Usage::default()),
        };
        store.prune(SystemTime::now())?;
        Ok(store)
    }

    /// Stores a message; returns false if it was already stored.
    pub(crate) fn insert(
        &self,
        topic: &Topic,
        id: &MessageId,
        at: SystemTime,
        data: &[u8],
    ) -> Result<bool> {
        let n = self.db.execute(
            "INSERT OR IGNORE INTO messages (topic, id, received_ms, data) VALUES (?1, ?2, ?3, ?4)",
            params![
                topic.as_str(),
                id.as_bytes().as_slice(),
                to_sql_ms(unix_ms(at)),
                data
            ],
        )?;
        Ok(n == 1)
    }

    /// Up to `limits.messages` entries after `after`, stopping once `limits.bytes` of payload
    /// are collected (but always at least one entry, so paging advances), and never holding
    /// more than `limits.budget` encoded bytes (payload plus `limits.entry_overhead` per
    /// entry): if even the first entry does not fit the budget the page is empty. The flag
    /// says whether more entries follow.
    pub(crate) fn history(
        &self,
        topic: &Topic,
        after: &Cursor,
        limits: PageLimits,
    ) -> Result<(Vec<Entry>, bool)> {
        let mut stmt = self.db.prepare_cached(
            "SELECT id, received_ms, data FROM messages
             WHERE topic = ?1 AND (received_ms > ?2 OR (received_ms = ?2 AND id > ?3))
             ORDER BY received_ms, id LIMIT ?4",
        )?;
        let after_id: &[u8] = match &after.after_id {
            Some(id) => id.as_bytes(),
            None => &[],
        };
        let fetch = i64::try_from(limits.messages.saturating_add(1)).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![
            topic.as_str(),
            to_sql_ms(after.after_ms),
            after_id,
            fetch
        ])?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut held = 0usize;
        let mut more = false;
        while let Some(row) = rows.next()? {
            // The payload's length is read before the payload itself, so a row that does
            // not fit is never loaded.
            let len = row
                .get_ref(2)?
                .as_blob()
                .map_err(rusqlite::Error::from)?
                .len();
            let cost = len.saturating_add(limits.entry_overhead);
            if entries.len() >= limits.messages
                || (!entries.is_empty() && bytes.saturating_add(len) > limits.bytes)
                || held.saturating_add(cost) > limits.budget
            {
                more = true;
                break;
            }
            let id: Vec<u8> = row.get(0)?;
            let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) else {
                // Only this module writes the table; a wrong length means a corrupted row.
                continue;
            };
            let ms: i64 = row.get(1)?;
            let data: Vec<u8> = row.get(2)?;
            bytes = bytes.saturating_add(len);
            held = held.saturating_add(cost);
            entries.push(Entry {
                id: MessageId(id),
                received_ms: u64::try_from(ms).unwrap_or(0),
                data,
            });
        }
        Ok((entries, more))
    }

    /// Deletes messages older than the retention period and expired directory entries;
    /// returns how many rows went.
    pub(crate) fn prune(&self, now: SystemTime) -> Result<usize> {
        let cutoff = now
            .checked_sub(self.retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        let messages = self.db.execute(
            "DELETE FROM messages WHERE received_ms < ?1",
            params![to_sql_ms(unix_ms(cutoff))],
        )?;
        let entries = self.db.execute(
            "DELETE FROM directory WHERE expires_ms <= ?1",
            params![to_sql_ms(unix_ms(now))],
        )?;
        let usage = self.db.query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(key) + LENGTH(blob)), 0) FROM directory",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )?;
        self.directory_usage.set(usage_from_sql(usage));
        Ok(messages.saturating_add(entries))
    }

    /// Stores or replaces a directory entry written by `writer` at `now`, if the
    /// [`DirectoryValidator`] allows it and the quotas hold. The entry then lives until
    /// `now` plus [`Config::directory_ttl`].
    pub(crate) fn put(
        &self,
        key: &[u8],
        blob: &[u8],
        writer: Writer<'_>,
        now: SystemTime,
    ) -> Result<PutOutcome> {
        let now_ms = to_sql_ms(unix_ms(now));
        // The row under `key`, expired or not: its size is in the table's usage until it is
        // replaced or pruned.
        let existing: Option<(Vec<u8>, Vec<u8>, i64)> = self
            .db
            .query_row(
                "SELECT blob, writer, expires_ms FROM directory WHERE key = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let row_size = existing
            .as_ref()
            .map(|(old, _, _)| key.len().saturating_add(old.len()));
        let live = existing
            .as_ref()
            .filter(|(_, _, expires)| *expires > now_ms);
        if let Some(v) = &self.validator
            && !v.allows(key, live.map(|(old, _, _)| old.as_slice()), blob)
        {
            return Ok(PutOutcome::Rejected);
        }
        let new_size = key.len().saturating_add(blob.len());
        if !within_quota(
            self.directory_usage.get(),
            row_size,
            new_size,
            self.directory_quota,
        ) {
            return Ok(PutOutcome::OverQuota);
        }
        let writer_bytes: &[u8] = match writer {
            Writer::Local => &[],
            Writer::Remote(peer) => {
                let usage = self.db.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(key) + LENGTH(blob)), 0)
                     FROM directory WHERE writer = ?1 AND expires_ms > ?2",
                    params![peer, now_ms],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?;
                // The live entry counts for this writer only if it wrote it.
                let own = live
                    .filter(|(_, w, _)| w.as_slice() == peer)
                    .map(|(old, _, _)| key.len().saturating_add(old.len()));
                if !within_quota(usage_from_sql(usage), own, new_size, self.peer_quota) {
                    return Ok(PutOutcome::OverQuota);
                }
                peer
            }
        };
        let expires = unix_ms(now)
            .saturating_add(u64::try_from(self.directory_ttl.as_millis()).unwrap_or(u64::MAX));
        self.db.execute(
            "INSERT INTO directory (key, blob, updated_ms, writer, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key) DO UPDATE SET blob = excluded.blob,
                 updated_ms = excluded.updated_ms, writer = excluded.writer,
                 expires_ms = excluded.expires_ms",
            params![key, blob, now_ms, writer_bytes, to_sql_ms(expires)],
        )?;
        let mut usage = self.directory_usage.get();
        if row_size.is_none() {
            usage.entries = usage.entries.saturating_add(1);
        }
        usage.bytes = usage
            .bytes
            .saturating_sub(row_size.unwrap_or(0))
            .saturating_add(new_size);
        self.directory_usage.set(usage);
        Ok(PutOutcome::Stored)
    }

    /// Looks up a live directory entry at `now`.
    pub(crate) fn get(&self, key: &[u8], now: SystemTime) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .query_row(
                "SELECT blob FROM directory WHERE key = ?1 AND expires_ms > ?2",
                params![key, to_sql_ms(unix_ms(now))],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Remembers that this store serves `topic`.
    pub(crate) fn add_topic(&self, topic: &Topic) -> Result<()> {
        self.db.execute(
            "INSERT OR IGNORE INTO topics (name) VALUES (?1)",
            params![topic.as_str()],
        )?;
        Ok(())
    }

    /// Forgets `topic` (its stored history stays until it expires).
    pub(crate) fn remove_topic(&self, topic: &Topic) -> Result<()> {
        self.db.execute(
            "DELETE FROM topics WHERE name = ?1",
            params![topic.as_str()],
        )?;
        Ok(())
    }

    /// The topics this store serves.
    pub(crate) fn topics(&self) -> Result<Vec<Topic>> {
        let mut stmt = self.db.prepare("SELECT name FROM topics")?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(names.iter().filter_map(|n| Topic::parse(n)).collect())
    }
}

/// Brings a database written by an older version to the current schema
/// (`PRAGMA user_version`): version 1 adds the writer and expiry of directory entries;
/// entries from before get the writer "local" and expire one TTL after their last write.
fn migrate(db: &Connection, ttl: Duration) -> Result<()> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 1 {
        let ttl_ms = to_sql_ms(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        db.execute_batch(
            "BEGIN;
             ALTER TABLE directory ADD COLUMN writer BLOB NOT NULL DEFAULT x'';
             ALTER TABLE directory ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;",
        )?;
        db.execute(
            "UPDATE directory SET expires_ms = updated_ms + ?1",
            params![ttl_ms],
        )?;
        db.execute_batch(
            "CREATE INDEX directory_by_writer ON directory (writer, expires_ms);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn usage_from_sql((entries, bytes): (i64, i64)) -> Usage {
    Usage {
        entries: usize::try_from(entries).unwrap_or(usize::MAX),
        bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
    }
}

/// Converts an entry to a message of `topic`.
pub(crate) fn entry_to_message(topic: &Topic, e: Entry) -> Message {
    Message {
        topic: topic.clone(),
        id: e.id,
        received: from_unix_ms(e.received_ms),
        data: e.data,
    }
}

fn to_sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pqmls-store-unit-{name}-{}-{}",
            std::process::id(),
            unix_ms(SystemTime::now())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn history_pages_in_arrival_order_and_survives_reopen() {
        let dir = tmpdir("pages");
        let t = Topic::from_group_id(b"g");
        let other = Topic::from_group_id(b"h");
        let base = SystemTime::now();
        {
            let s = Store::open(&dir, &Config::default()).unwrap();
            for i in 0u8..10 {
                let data = vec![i; 10];
                let id = MessageId::compute(&t, &data);
                assert!(
                    s.insert(
                        &t,
                        &id,
                        base + Duration::from_millis(u64::from(i / 2)),
                        &data
                    )
                    .unwrap()
                );
                assert!(
                    !s.insert(&t, &id, base, &data).unwrap(),
                    "duplicate ignored"
                );
            }
            s.insert(&other, &MessageId([0; 32]), base, b"x").unwrap();
        }
        let s = Store::open(&dir, &Config::default()).unwrap();
        let mut cursor = Cursor::beginning();
        let mut seen = Vec::new();
        loop {
            let (entries, more) = s
                .history(&t, &cursor, PageLimits::unbudgeted(3, 1 << 20))
                .unwrap();
            assert!(entries.len() <= 3);
            for e in &entries {
                seen.push(e.data[0]);
            }
            let Some(last) = entries.last() else { break };
            cursor = Cursor::after(&entry_to_message(&t, last.clone()));
            if !more {
                break;
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0u8..10).collect::<Vec<_>>());
        // Byte budget: at least one entry, then stop.
        let (entries, more) = s
            .history(&t, &Cursor::beginning(), PageLimits::unbudgeted(100, 1))
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert!(more);
        // Since: only the later ones.
        let (entries, _) = s
            .history(
                &t,
                &Cursor::since(base + Duration::from_millis(4)),
                PageLimits::unbudgeted(100, 1 << 20),
            )
            .unwrap();
        assert_eq!(entries.len(), 2);
        // Budget: payload plus overhead per entry never exceeds it; an entry that does not
        // fit at all gives an empty page with more to come.
        let budgeted = |budget| PageLimits {
            messages: 100,
            bytes: 1 << 20,
            budget,
            entry_overhead: 5,
        };
        let (entries, more) = s.history(&t, &Cursor::beginning(), budgeted(45)).unwrap();
        assert_eq!((entries.len(), more), (3, true));
        let (entries, more) = s.history(&t, &Cursor::beginning(), budgeted(14)).unwrap();
        assert_eq!((entries.len(), more), (0, true));
        let (entries, more) = s.history(&t, &Cursor::beginning(), budgeted(150)).unwrap();
        assert_eq!((entries.len(), more), (10, false));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn cursor_round_trips_through_parts_and_selects_strictly_after() {
        let id = MessageId([7; 32]);
        for c in [
            Cursor::beginning(),
            Cursor::from_parts(42, None),
            Cursor::from_parts(42, Some(id)),
            Cursor::from_parts(u64::MAX, Some(MessageId([0xff; 32]))),
            Cursor::since(SystemTime::now()),
        ] {
            assert_eq!(Cursor::from_parts(c.after_ms(), c.after_id()), c);
        }
        assert_eq!(Cursor::beginning(), Cursor::from_parts(0, None));
        assert_eq!(Cursor::from_parts(42, Some(id)).after_ms(), 42);
        assert_eq!(Cursor::from_parts(42, Some(id)).after_id(), Some(id));

        // The documented semantics, checked against the store's query: three messages in
        // one millisecond, one in the next.
        let dir = tmpdir("cursor");
        let t = Topic::from_group_id(b"g");
        let s = Store::open(&dir, &Config::default()).unwrap();
        let ms = unix_ms(SystemTime::now());
        let at = from_unix_ms(ms);
        let ids = [MessageId([1; 32]), MessageId([2; 32]), MessageId([3; 32])];
        for id in &ids {
            s.insert(&t, id, at, b"x").unwrap();
        }
        let later = MessageId([0; 32]);
        s.insert(&t, &later, from_unix_ms(ms + 1), b"y").unwrap();
        let select = |c: Cursor| -> Vec<MessageId> {
            let (entries, _) = s
                .history(&t, &c, PageLimits::unbudgeted(100, 1 << 20))
                .unwrap();
            entries.iter().map(|e| e.id).collect()
        };
        let all = vec![ids[0], ids[1], ids[2], later];
        assert_eq!(select(Cursor::beginning()), all);
        // `None`: everything from that millisecond on, inclusive.
        assert_eq!(select(Cursor::from_parts(ms, None)), all);
        assert_eq!(select(Cursor::from_parts(ms + 1, None)), vec![later]);
        // `Some(id)`: strictly after (ms, id).
        assert_eq!(
            select(Cursor::from_parts(ms, Some(ids[1]))),
            vec![ids[2], later]
        );
        assert_eq!(select(Cursor::from_parts(ms, Some(ids[2]))), vec![later]);
        assert_eq!(select(Cursor::from_parts(ms + 1, Some(later))), vec![]);
        // A cursor taken from a message and rebuilt from its parts continues after it.
        let m = entry_to_message(
            &t,
            s.history(&t, &Cursor::beginning(), PageLimits::unbudgeted(1, 1 << 20))
                .unwrap()
                .0[0]
                .clone(),
        );
        let c = Cursor::after(&m);
        assert_eq!(
            select(Cursor::from_parts(c.after_ms(), c.after_id())),
            vec![ids[1], ids[2], later]
        );
        // `since` is the position just before the first message of that millisecond.
        assert_eq!(select(Cursor::since(from_unix_ms(ms + 1))), vec![later]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn retention_prunes_old_messages() {
        let dir = tmpdir("prune");
        let t = Topic::from_group_id(b"g");
        let s = Store::open(
            &dir,
            &Config::default().with_retention(Duration::from_secs(60)),
        )
        .unwrap();
        let now = SystemTime::now();
        s.insert(
            &t,
            &MessageId([1; 32]),
            now - Duration::from_secs(120),
            b"old",
        )
        .unwrap();
        s.insert(&t, &MessageId([2; 32]), now, b"new").unwrap();
        assert_eq!(s.prune(now).unwrap(), 1);
        let (entries, _) = s
            .history(
                &t,
                &Cursor::beginning(),
                PageLimits::unbudgeted(10, 1 << 20),
            )
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].data, b"new");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn directory_and_topics_persist() {
        let dir = tmpdir("dir");
        let t = Topic::from_group_id(b"g");
        let now = SystemTime::now();
        {
            let s = Store::open(&dir, &Config::default()).unwrap();
            assert_eq!(
                s.put(b"alice", b"kp1", Writer::Local, now).unwrap(),
                PutOutcome::Stored
            );
            s.put(b"alice", b"kp2", Writer::Local, now).unwrap();
            s.add_topic(&t).unwrap();
        }
        let s = Store::open(&dir, &Config::default()).unwrap();
        assert_eq!(s.get(b"alice", now).unwrap(), Some(b"kp2".to_vec()));
        assert_eq!(s.get(b"bob", now).unwrap(), None);
        assert_eq!(s.topics().unwrap(), vec![t.clone()]);
        s.remove_topic(&t).unwrap();
        assert!(s.topics().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn quota_rule() {
        let max = Usage {
            entries: 2,
            bytes: 100,
        };
        let used = Usage {
            entries: 1,
            bytes: 60,
        };
        assert!(
            within_quota(used, None, 40, max),
            "a second entry fits exactly"
        );
        assert!(!within_quota(used, None, 41, max), "one byte too many");
        assert!(
            within_quota(used, Some(60), 100, max),
            "replacing an own entry counts only the difference"
        );
        let full = Usage {
            entries: 2,
            bytes: 10,
        };
        assert!(!within_quota(full, None, 1, max), "a third entry does not");
        assert!(within_quota(full, Some(5), 5, max), "a replacement does");
    }

    #[test]
    fn per_peer_quotas_count_live_entries_by_their_last_writer() {
        let dir = tmpdir("quota");
        let s = Store::open(&dir, &Config::default().with_peer_quota(2, 40)).unwrap();
        let now = SystemTime::now();
        let (mallory, bob) = (Writer::Remote(b"mallory"), Writer::Remote(b"bob"));
        assert_eq!(
            s.put(b"m1", b"x", mallory, now).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(b"m2", b"x", mallory, now).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(b"m3", b"x", mallory, now).unwrap(),
            PutOutcome::OverQuota,
            "a third entry"
        );
        // Replacing an own entry counts only the difference: m2 (3 bytes) + m1 (2 + 35).
        assert_eq!(
            s.put(b"m1", &[0; 35], mallory, now).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(b"m1", &[0; 36], mallory, now).unwrap(),
            PutOutcome::OverQuota,
            "41 bytes over a 40-byte quota"
        );
        assert_eq!(s.get(b"m3", now).unwrap(), None);
        // Others are not affected by mallory's quota, nor is the store itself.
        assert_eq!(s.put(b"b1", b"y", bob, now).unwrap(), PutOutcome::Stored);
        for i in 0..10u8 {
            assert_eq!(
                s.put(&[b'l', i], b"z", Writer::Local, now).unwrap(),
                PutOutcome::Stored
            );
        }
        // An entry bob overwrites counts for bob from then on, freeing mallory's slot.
        assert_eq!(s.put(b"m2", b"y", bob, now).unwrap(), PutOutcome::Stored);
        assert_eq!(
            s.put(b"m3", b"x", mallory, now).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(b"m4", b"x", mallory, now).unwrap(),
            PutOutcome::OverQuota
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn byte_quota_and_directory_size_hold() {
        let dir = tmpdir("bytes");
        let s = Store::open(
            &dir,
            &Config::default()
                .with_peer_quota(100, 20)
                .with_directory_size(4, 1000),
        )
        .unwrap();
        let now = SystemTime::now();
        let p = Writer::Remote(b"p");
        assert_eq!(s.put(b"k", &[0; 19], p, now).unwrap(), PutOutcome::Stored);
        assert_eq!(
            s.put(b"k", &[0; 20], p, now).unwrap(),
            PutOutcome::OverQuota,
            "21 bytes over a 20-byte quota, even as a replacement"
        );
        assert_eq!(
            s.get(b"k", now).unwrap(),
            Some(vec![0; 19]),
            "old entry kept"
        );
        // The directory as a whole: four entries, whoever writes them.
        for (i, w) in [b"a", b"b", b"c"].iter().enumerate() {
            assert_eq!(
                s.put(
                    &[b'x', u8::try_from(i).unwrap()],
                    b"v",
                    Writer::Remote(*w),
                    now
                )
                .unwrap(),
                PutOutcome::Stored
            );
        }
        assert_eq!(
            s.put(b"full", b"v", Writer::Local, now).unwrap(),
            PutOutcome::OverQuota
        );
        assert_eq!(
            s.put(b"k", b"v", p, now).unwrap(),
            PutOutcome::Stored,
            "replacing fits"
        );
        // The in-memory usage matches the table after a reopen.
        let usage = s.directory_usage.get();
        drop(s);
        let s = Store::open(&dir, &Config::default()).unwrap();
        assert_eq!(s.directory_usage.get(), usage);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn expired_entries_are_not_served_not_counted_and_pruned() {
        let dir = tmpdir("expiry");
        let s = Store::open(
            &dir,
            &Config::default()
                .with_directory_ttl(Duration::from_secs(60))
                .with_peer_quota(1, 1000),
        )
        .unwrap();
        let t0 = SystemTime::now();
        let later = t0 + Duration::from_secs(61);
        let p = Writer::Remote(b"p");
        assert_eq!(s.put(b"k", b"v", p, t0).unwrap(), PutOutcome::Stored);
        assert_eq!(
            s.get(b"k", t0 + Duration::from_secs(59)).unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(s.get(b"k", later).unwrap(), None, "expired: not served");
        assert_eq!(
            s.put(b"k2", b"v", p, later).unwrap(),
            PutOutcome::Stored,
            "the expired entry no longer counts towards the quota"
        );
        // A put refreshes the expiry.
        assert_eq!(
            s.get(b"k2", later + Duration::from_secs(59)).unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(s.prune(later).unwrap(), 1, "the expired entry is deleted");
        assert_eq!(
            s.directory_usage.get(),
            Usage {
                entries: 1,
                bytes: 3
            }
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_validator_sees_every_put_with_the_live_old_entry_and_can_refuse_it() {
        use std::sync::Mutex;
        let dir = tmpdir("validator");
        type Call = (Vec<u8>, Option<Vec<u8>>, Vec<u8>);
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let seen = calls.clone();
        // "Signed by the owner": a blob must start with the owner named before the first
        // '/' of its key; an existing entry can only be replaced by its owner's.
        let config = Config::default()
            .with_directory_ttl(Duration::from_secs(60))
            .with_directory_validator(move |key: &[u8], old: Option<&[u8]>, new: &[u8]| {
                seen.lock()
                    .unwrap()
                    .push((key.to_vec(), old.map(<[u8]>::to_vec), new.to_vec()));
                let owner = key.split(|b| *b == b'/').next().unwrap_or_default();
                new.starts_with(owner)
            });
        let s = Store::open(&dir, &config).unwrap();
        let now = SystemTime::now();
        let m = Writer::Remote(b"mallory");
        assert_eq!(
            s.put(b"alice/kp", b"alice:1", Writer::Remote(b"a"), now)
                .unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(b"alice/kp", b"mallory:1", m, now).unwrap(),
            PutOutcome::Rejected
        );
        assert_eq!(
            s.put(b"alice/kp", b"mallory:1", Writer::Local, now)
                .unwrap(),
            PutOutcome::Rejected,
            "local puts are checked too"
        );
        assert_eq!(s.get(b"alice/kp", now).unwrap(), Some(b"alice:1".to_vec()));
        assert_eq!(
            s.put(b"alice/kp", b"alice:2", Writer::Remote(b"a"), now)
                .unwrap(),
            PutOutcome::Stored
        );
        // After expiry the validator sees no old entry.
        let later = now + Duration::from_secs(61);
        assert_eq!(
            s.put(b"alice/kp", b"alice:3", Writer::Remote(b"a"), later)
                .unwrap(),
            PutOutcome::Stored
        );
        let calls = calls.lock().unwrap();
        let olds: Vec<Option<&[u8]>> = calls.iter().map(|c| c.1.as_deref()).collect();
        assert_eq!(
            olds,
            vec![
                None,
                Some(&b"alice:1"[..]),
                Some(&b"alice:1"[..]),
                Some(&b"alice:1"[..]),
                None
            ]
        );
        assert!(calls.iter().all(|c| c.0 == b"alice/kp"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_database_of_the_previous_schema_is_migrated() {
        let dir = tmpdir("migrate");
        {
            let db = Connection::open(dir.join("store.sqlite3")).unwrap();
            db.execute_batch(
                "CREATE TABLE directory (key BLOB PRIMARY KEY, blob BLOB NOT NULL,
                     updated_ms INTEGER NOT NULL);",
            )
            .unwrap();
            let ms = to_sql_ms(unix_ms(SystemTime::now()));
            db.execute(
                "INSERT INTO directory VALUES (x'6b', x'76', ?1)",
                params![ms],
            )
            .unwrap();
        }
        let s = Store::open(&dir, &Config::default()).unwrap();
        let now = SystemTime::now();
        assert_eq!(s.get(b"k", now).unwrap(), Some(b"v".to_vec()));
        assert_eq!(
            s.directory_usage.get(),
            Usage {
                entries: 1,
                bytes: 2
            }
        );
        assert_eq!(
            s.get(b"k", now + Duration::from_secs(31 * 24 * 3600))
                .unwrap(),
            None,
            "old entries expire one TTL after their last write"
        );
        drop(s);
        Store::open(&dir, &Config::default()).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}

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

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;
use crate::message::{Message, MessageId, Topic, from_unix_ms, unix_ms};

/// Configuration of the store role.
#[derive(Debug, Clone)]
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
            follow_subscriptions: true,
            max_topics: 100_000,
        }
    }
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
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub(crate) fn open(dir: &Path, config: &Config) -> Result<Self> {
        let db = Connection::open(dir.join("store.sqlite3"))?;
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
        let store = Self {
            db,
            retention: config.retention,
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

    /// Deletes messages older than the retention period; returns how many.
    pub(crate) fn prune(&self, now: SystemTime) -> Result<usize> {
        let cutoff = now
            .checked_sub(self.retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        Ok(self.db.execute(
            "DELETE FROM messages WHERE received_ms < ?1",
            params![to_sql_ms(unix_ms(cutoff))],
        )?)
    }

    /// Stores or replaces a directory entry.
    pub(crate) fn put(&self, key: &[u8], blob: &[u8]) -> Result<()> {
        self.db.execute(
            "INSERT INTO directory (key, blob, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET blob = excluded.blob, updated_ms = excluded.updated_ms",
            params![key, blob, to_sql_ms(unix_ms(SystemTime::now()))],
        )?;
        Ok(())
    }

    /// Looks up a directory entry.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .query_row(
                "SELECT blob FROM directory WHERE key = ?1",
                params![key],
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
        {
            let s = Store::open(&dir, &Config::default()).unwrap();
            s.put(b"alice", b"kp1").unwrap();
            s.put(b"alice", b"kp2").unwrap();
            s.add_topic(&t).unwrap();
        }
        let s = Store::open(&dir, &Config::default()).unwrap();
        assert_eq!(s.get(b"alice").unwrap(), Some(b"kp2".to_vec()));
        assert_eq!(s.get(b"bob").unwrap(), None);
        assert_eq!(s.topics().unwrap(), vec![t.clone()]);
        s.remove_topic(&t).unwrap();
        assert!(s.topics().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! Waku store v3, 13/WAKU2-STORE (`docs/messaging/core/draft/13/store.md` in
//! logos-co/logos-lips): the query messages (section "Payloads"), their request-response
//! codec, and the archive a store node keeps in SQLite and answers queries from.
//!
//! - Keys are deterministic message hashes ([`message_hash`](super::message_hash), the
//!   Nim node's form), values the message and its pubsub topic (section "Waku Message
//!   Key-Value Pairs").
//! - Eligibility (section "Waku Message Store Eligibility"): a message is archived only if
//!   it has a timestamp and is not ephemeral. The optional 20 s clock-skew check is not
//!   made.
//! - Order (section "Waku message sorting"): by timestamp, then hash. Pages are always
//!   returned in forward order; a backward query pages from the newest (section
//!   "Paginating the response"), and the cursor is the hash of the last entry included
//!   going forward, the first going backward.
//! - Filters (section "Filter matching"): pubsub topic and content topics together, time
//!   start inclusive, end exclusive; or a list of hashes. Both kinds together, or only one
//!   of pubsub topic and content topics, is a bad request (status 400), with one exception
//!   for js-waku: a pubsub topic alone beside hashes restricts the lookup to that shard.
//! - Bounds, ours: a request frame of at most [`MAX_REQUEST`] bytes, at most
//!   [`MAX_CONTENT_TOPICS`] content topics and [`MAX_HASHES`] hashes; a page of at most
//!   [`MAX_PAGE`] entries ([`DEFAULT_PAGE`] when the client sets none, as the Nim node) and
//!   at most [`MAX_PAGE_BYTES`] encoded bytes, counted while the page is built; a response
//!   frame read by a client of at most [`MAX_RESPONSE`] bytes (js-waku reads no frame over
//!   4 MiB). The end of the results is a page without a cursor and status 200.
//! - Frames being read at once, over all peers, are bounded in bytes by two shared
//!   [`ReadBudget`]s, one for the requests a server reads and one for the responses a client
//!   reads ([`DEFAULT_REQUEST_READ_BYTES`], [`DEFAULT_RESPONSE_READ_BYTES`]): the length a
//!   frame announces is reserved before its body is allocated. A request that does not fit
//!   is answered 503 without its body being read; a response that does not fit fails the
//!   query (the stream is closed unread). A node also bounds the request bytes of each
//!   connection (`Limits::store_request_read_bytes_per_connection`,
//!   [`ReadBudget::per_connection`]), so one peer cannot hold the whole request budget
//!   with streams it opens and stalls in.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, params};

#[cfg(doc)]
use super::framing::Framed;
use super::framing::{ProtoCodec, ReadBudget};
use super::message::{MessageHash, WakuMessage};

/// Protocol id.
pub const PROTOCOL: &str = "/vac/waku/store-query/3.0.0";

/// Largest request frame read.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest response frame read.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// Default bytes of request frames a server reads at once, over all peers (16 requests of
/// the largest size; real queries are a few hundred bytes).
pub const DEFAULT_REQUEST_READ_BYTES: usize = 16 * MAX_REQUEST;
/// Default bytes of response frames a client reads at once, over all the stores it asks
/// (4 responses of the largest size; our pages are at most [`MAX_PAGE_BYTES`]).
pub const DEFAULT_RESPONSE_READ_BYTES: usize = 4 * MAX_RESPONSE;
/// Request id answered when the request was not read (as the Nim node's lightpush).
pub const UNKNOWN_REQUEST_ID: &str = "N/A";
/// Most content topics in one query.
pub const MAX_CONTENT_TOPICS: usize = 10;
/// Most hashes in one lookup query.
pub const MAX_HASHES: usize = 100;
/// Page size when the client sets none.
pub const DEFAULT_PAGE: usize = 20;
/// Largest page, in entries.
pub const MAX_PAGE: usize = 100;
/// Largest page, in encoded bytes of its entries (a page always holds at least one entry,
/// and one entry of a 150 KiB message fits).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// The archive's database file in the data directory.
pub const ARCHIVE_FILE: &str = "waku_store.sqlite3";

/// Status: success.
pub const STATUS_OK: u32 = 200;
/// Status: a malformed or contradictory request.
pub const STATUS_BAD_REQUEST: u32 = 400;
/// Status: the store failed or is over its response budget; retry later.
pub const STATUS_UNAVAILABLE: u32 = 503;
/// Status: the requester is over its rate limit (the Nim node's `TOO_MANY_REQUESTS`,
/// `waku_store/common.nim`; the spec lists no code for it).
pub const STATUS_TOO_MANY_REQUESTS: u32 = 429;

/// `WakuMessageKeyValue`: a hash, and the message with its pubsub topic when data was asked.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KeyValue {
    /// The deterministic message hash.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub message_hash: Option<Vec<u8>>,
    /// The message (with `include_data`).
    #[prost(message, optional, tag = "2")]
    pub message: Option<WakuMessage>,
    /// The pubsub topic it was published on (with `include_data`).
    #[prost(string, optional, tag = "3")]
    pub pubsub_topic: Option<String>,
}

/// `StoreQueryRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct QueryRequest {
    /// Chosen by the client, echoed in the response.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// Whether to return messages, not only hashes.
    #[prost(bool, tag = "2")]
    pub include_data: bool,
    /// Content filter: the shard.
    #[prost(string, optional, tag = "10")]
    pub pubsub_topic: Option<String>,
    /// Content filter: content topics on that shard.
    #[prost(string, repeated, tag = "11")]
    pub content_topics: Vec<String>,
    /// Time filter, inclusive, Unix nanoseconds.
    #[prost(sint64, optional, tag = "12")]
    pub time_start: Option<i64>,
    /// Time filter, exclusive, Unix nanoseconds.
    #[prost(sint64, optional, tag = "13")]
    pub time_end: Option<i64>,
    /// Lookup: the hashes wanted.
    #[prost(bytes = "vec", repeated, tag = "20")]
    pub message_hashes: Vec<Vec<u8>>,
    /// The hash after (forward) or before (backward) which to continue, exclusive.
    #[prost(bytes = "vec", optional, tag = "51")]
    pub pagination_cursor: Option<Vec<u8>>,
    /// Forward (oldest first) rather than backward (newest first).
    #[prost(bool, tag = "52")]
    pub pagination_forward: bool,
    /// Most entries wanted.
    #[prost(uint64, optional, tag = "53")]
    pub pagination_limit: Option<u64>,
}

/// `StoreQueryResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct QueryResponse {
    /// The request's id.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// HTTP-like status; 2xx is success.
    #[prost(uint32, optional, tag = "10")]
    pub status_code: Option<u32>,
    /// Why, for an error.
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
    /// The page, in forward order.
    #[prost(message, repeated, tag = "20")]
    pub messages: Vec<KeyValue>,
    /// Present when more entries match.
    #[prost(bytes = "vec", optional, tag = "51")]
    pub pagination_cursor: Option<Vec<u8>>,
}

impl QueryResponse {
    /// The answer to a request over its peer's rate limit (429).
    pub fn too_many_requests(request_id: String) -> Self {
        Self::status(request_id, STATUS_TOO_MANY_REQUESTS, "too many requests")
    }

    /// The answer to a request not read because the store's request read budget was
    /// exhausted (503, request id [`UNKNOWN_REQUEST_ID`]).
    pub fn busy() -> Self {
        Self::status(
            UNKNOWN_REQUEST_ID.to_owned(),
            STATUS_UNAVAILABLE,
            "store busy, retry later",
        )
    }

    /// The answer to a request that is not a `StoreQueryRequest` (400, request id
    /// [`UNKNOWN_REQUEST_ID`], as the Nim node).
    pub fn malformed() -> Self {
        Self::status(
            UNKNOWN_REQUEST_ID.to_owned(),
            STATUS_BAD_REQUEST,
            "malformed store request",
        )
    }

    fn status(request_id: String, code: u32, desc: &str) -> Self {
        Self {
            request_id,
            status_code: Some(code),
            status_desc: Some(desc.to_owned()),
            messages: Vec::new(),
            pagination_cursor: None,
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// The request-response codec ([`ProtoCodec`]): one unsigned-varint length-prefixed
/// protobuf each way, the length checked against [`MAX_REQUEST`] or [`MAX_RESPONSE`] and
/// reserved in the request or response [`ReadBudget`] before anything is allocated. A
/// request that does not fit its budget is [`Framed::Busy`] (answered 503), one that is
/// not a `StoreQueryRequest` [`Framed::Malformed`] (answered 400, as the Nim node); a
/// response that does not fit is an error. Malformed and unreadable requests (oversized,
/// truncated) are counted, since libp2p does not report them.
pub type Codec = ProtoCodec<QueryRequest, QueryResponse>;

/// The codec, counting malformed and unreadable requests in `malformed` and reading
/// requests within `requests` and responses within `responses`.
pub fn codec(malformed: Arc<AtomicU64>, requests: ReadBudget, responses: ReadBudget) -> Codec {
    ProtoCodec::new("store", MAX_REQUEST, MAX_RESPONSE)
        .with_request_budget(requests)
        .with_response_budget(responses)
        .counting(malformed)
}

/// The codec with budgets of [`DEFAULT_REQUEST_READ_BYTES`] and
/// [`DEFAULT_RESPONSE_READ_BYTES`] and counters of its own.
pub fn default_codec() -> Codec {
    codec(
        Arc::default(),
        ReadBudget::with_cap(DEFAULT_REQUEST_READ_BYTES),
        ReadBudget::with_cap(DEFAULT_RESPONSE_READ_BYTES),
    )
}

/// The messages a store node keeps: SQLite, `waku_store.sqlite3` in its data directory.
pub struct Archive {
    db: Connection,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").finish_non_exhaustive()
    }
}

/// A row: (timestamp, hash, pubsub topic, encoded message).
type Row = (i64, Vec<u8>, String, Vec<u8>);

impl Archive {
    /// Opens (or creates) the archive in `dir`.
    ///
    /// # Errors
    ///
    /// The database error.
    pub fn open(dir: &Path) -> rusqlite::Result<Self> {
        let db = Connection::open(dir.join(ARCHIVE_FILE))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS waku_messages (
                 hash BLOB PRIMARY KEY,
                 pubsub_topic TEXT NOT NULL,
                 content_topic TEXT NOT NULL,
                 timestamp INTEGER NOT NULL,
                 message BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS waku_messages_by_time
                 ON waku_messages (timestamp, hash);",
        )?;
        Ok(Self { db })
    }

    /// Archives `message` received on `pubsub_topic` if it is eligible (a timestamp, not
    /// ephemeral). Returns whether a new row was written.
    ///
    /// # Errors
    ///
    /// The database error.
    pub fn insert(
        &self,
        pubsub_topic: &str,
        hash: &MessageHash,
        message: &WakuMessage,
    ) -> rusqlite::Result<bool> {
        let Some(timestamp) = message.timestamp else {
            return Ok(false);
        };
        if message.is_ephemeral() {
            return Ok(false);
        }
        let n = self.db.execute(
            "INSERT OR IGNORE INTO waku_messages
                 (hash, pubsub_topic, content_topic, timestamp, message)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                hash.as_bytes().as_slice(),
                pubsub_topic,
                message.content_topic,
                timestamp,
                message.to_bytes()
            ],
        )?;
        Ok(n > 0)
    }

    /// Deletes messages with a timestamp before `cutoff_nanos`; returns how many.
    ///
    /// # Errors
    ///
    /// The database error.
    pub fn prune(&self, cutoff_nanos: i64) -> rusqlite::Result<usize> {
        self.db.execute(
            "DELETE FROM waku_messages WHERE timestamp < ?1",
            params![cutoff_nanos],
        )
    }

    /// Answers a query with at most `budget` bytes of entries (and never more than
    /// [`MAX_PAGE_BYTES`]): entries are counted as they are added, and the page stops
    /// before the one that would cross the bound (the first entry is always included if
    /// it fits the budget). A budget too small for even one entry is status 503.
    pub fn query(&self, request: QueryRequest, budget: usize) -> QueryResponse {
        let id = request.request_id.clone();
        match self.try_query(request, budget) {
            Ok(r) => r,
            Err(QueryError::Bad(why)) => QueryResponse::status(id, STATUS_BAD_REQUEST, why),
            Err(QueryError::Busy) => {
                QueryResponse::status(id, STATUS_UNAVAILABLE, "store busy, retry later")
            }
            Err(QueryError::Db(e)) => {
                tracing::warn!("store query failed: {e}");
                QueryResponse::status(id, STATUS_UNAVAILABLE, "store failure")
            }
        }
    }

    fn try_query(&self, r: QueryRequest, budget: usize) -> Result<QueryResponse, QueryError> {
        let lookup = !r.message_hashes.is_empty();
        // Section "Message hash lookup queries": a lookup client MUST NOT set the content
        // filter fields. js-waku (@waku/sdk 0.0.36) sends the pubsub topic of its decoder,
        // with no content topics or time, beside the hashes; the Nim node ANDs every
        // criterion it gets. So a pubsub topic alone is accepted with hashes and restricts
        // the lookup to that shard; content topics or a time range with hashes stay a bad
        // request.
        let by_content = (r.pubsub_topic.is_some() && !lookup)
            || !r.content_topics.is_empty()
            || r.time_start.is_some()
            || r.time_end.is_some();
        if by_content && lookup {
            return Err(QueryError::Bad("content filter and hashes together"));
        }
        if !lookup && r.pubsub_topic.is_some() == r.content_topics.is_empty() {
            return Err(QueryError::Bad(
                "pubsub_topic and content_topics must be set together",
            ));
        }
        if r.content_topics.len() > MAX_CONTENT_TOPICS || r.message_hashes.len() > MAX_HASHES {
            return Err(QueryError::Bad("too many content topics or hashes"));
        }
        if r.message_hashes.iter().any(|h| h.len() != 32) {
            return Err(QueryError::Bad("a message hash is not 32 bytes"));
        }
        let limit = r
            .pagination_limit
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l > 0)
            .unwrap_or(DEFAULT_PAGE)
            .min(MAX_PAGE);
        // The cursor's position in the order; an unknown cursor is a bad request.
        let cursor = match &r.pagination_cursor {
            Some(c) => Some(
                self.db
                    .query_row(
                        "SELECT timestamp FROM waku_messages WHERE hash = ?1",
                        params![c],
                        |row| row.get::<_, i64>(0),
                    )
                    .optional()?
                    .map(|t| (t, c.clone()))
                    .ok_or(QueryError::Bad("unknown pagination cursor"))?,
            ),
            None => None,
        };

        let mut sql = String::from(
            "SELECT timestamp, hash, pubsub_topic, message FROM waku_messages WHERE 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(t) = &r.pubsub_topic {
            arg(&mut sql, " AND pubsub_topic = ?", t.clone().into());
        }
        // Empty only in a lookup (checked above), where the pubsub topic may come alone.
        if !r.content_topics.is_empty() {
            sql.push_str(" AND content_topic IN (");
            for (i, c) in r.content_topics.iter().enumerate() {
                arg(&mut sql, if i == 0 { "?" } else { ", ?" }, c.clone().into());
            }
            sql.push(')');
        }
        if let Some(t) = r.time_start {
            arg(&mut sql, " AND timestamp >= ?", t.into());
        }
        if let Some(t) = r.time_end {
            arg(&mut sql, " AND timestamp < ?", t.into());
        }
        if !r.message_hashes.is_empty() {
            sql.push_str(" AND hash IN (");
            for (i, h) in r.message_hashes.iter().enumerate() {
                arg(&mut sql, if i == 0 { "?" } else { ", ?" }, h.clone().into());
            }
            sql.push(')');
        }
        let forward = r.pagination_forward;
        if let Some((t, h)) = cursor {
            let op = if forward { ">" } else { "<" };
            arg(
                &mut sql,
                &format!(" AND (timestamp, hash) {op} (?"),
                t.into(),
            );
            arg(&mut sql, ", ?)", h.into());
        }
        let dir = if forward { "ASC" } else { "DESC" };
        sql.push_str(&format!(
            " ORDER BY timestamp {dir}, hash {dir} LIMIT {}",
            limit + 1
        ));

        let mut stmt = self.db.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
        let budget = budget.min(MAX_PAGE_BYTES);
        let mut page: Vec<KeyValue> = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        for row in rows {
            let (_, hash, topic, data): Row = row?;
            if page.len() == limit {
                more = true;
                break;
            }
            let kv = KeyValue {
                message_hash: Some(hash),
                message: if r.include_data {
                    // Archived by `insert`, so it decodes; a row that does not is skipped.
                    match WakuMessage::decode(data.as_slice()) {
                        Ok(m) => Some(m),
                        Err(_) => continue,
                    }
                } else {
                    None
                },
                pubsub_topic: r.include_data.then_some(topic),
            };
            let len = kv.encoded_len() + 8;
            if bytes + len > budget {
                if page.is_empty() {
                    return Err(QueryError::Busy);
                }
                more = true;
                break;
            }
            bytes += len;
            page.push(kv);
        }
        // The cursor: the last entry included in the direction of travel.
        let pagination_cursor = if more {
            page.last().and_then(|kv| kv.message_hash.clone())
        } else {
            None
        };
        if !forward {
            page.reverse();
        }
        Ok(QueryResponse {
            request_id: r.request_id,
            status_code: Some(STATUS_OK),
            status_desc: Some("OK".into()),
            messages: page,
            pagination_cursor,
        })
    }
}

enum QueryError {
    Bad(&'static str),
    Busy,
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waku::framing::Framed;
    use crate::waku::message_hash;

    const SHARD: &str = "/waku/2/rs/3/0";

    fn archive_with(n: i64) -> (Archive, Vec<MessageHash>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pqmls-waku-store-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Archive::open(&dir).unwrap();
        let mut hashes = Vec::new();
        for i in 0..n {
            let topic = if i % 2 == 0 {
                "/a/1/even/proto"
            } else {
                "/a/1/odd/proto"
            };
            let m = WakuMessage::new(topic, vec![i as u8; 10]).with_timestamp(1000 + i);
            let h = message_hash(SHARD, &m);
            assert!(a.insert(SHARD, &h, &m).unwrap());
            assert!(!a.insert(SHARD, &h, &m).unwrap(), "once");
            hashes.push(h);
        }
        // Not eligible: no timestamp, ephemeral.
        let m = WakuMessage::new("/a/1/even/proto", vec![1]);
        assert!(!a.insert(SHARD, &message_hash(SHARD, &m), &m).unwrap());
        let m = m.with_timestamp(5).with_ephemeral(true);
        assert!(!a.insert(SHARD, &message_hash(SHARD, &m), &m).unwrap());
        (a, hashes, dir)
    }

    fn hashes_of(r: &QueryResponse) -> Vec<Vec<u8>> {
        r.messages
            .iter()
            .map(|kv| kv.message_hash.clone().unwrap())
            .collect()
    }

    #[test]
    fn pages_forward_and_backward_in_forward_order() {
        let (a, h, _dir) = archive_with(5);
        let all: Vec<Vec<u8>> = h.iter().map(|h| h.0.to_vec()).collect();
        let mut req = QueryRequest {
            pagination_forward: true,
            pagination_limit: Some(2),
            include_data: true,
            ..Default::default()
        };
        let mut got = Vec::new();
        loop {
            let r = a.query(req.clone(), usize::MAX);
            assert_eq!(r.status_code, Some(STATUS_OK));
            assert!(
                r.messages
                    .iter()
                    .all(|kv| kv.pubsub_topic.as_deref() == Some(SHARD))
            );
            got.extend(hashes_of(&r));
            match r.pagination_cursor {
                Some(c) => req.pagination_cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, all);

        // Backward: newest page first, each page in forward order.
        let req = QueryRequest {
            pagination_limit: Some(2),
            ..Default::default()
        };
        let r = a.query(req.clone(), usize::MAX);
        assert_eq!(hashes_of(&r), all[3..5].to_vec());
        assert!(
            r.messages.iter().all(|kv| kv.message.is_none()),
            "hashes only"
        );
        assert_eq!(r.pagination_cursor.as_deref(), Some(&all[3][..]));
        let r = a.query(
            QueryRequest {
                pagination_cursor: r.pagination_cursor,
                ..req
            },
            usize::MAX,
        );
        assert_eq!(hashes_of(&r), all[1..3].to_vec());
    }

    #[test]
    fn filters_by_content_topic_time_and_hash() {
        let (a, h, _dir) = archive_with(6);
        let r = a.query(
            QueryRequest {
                pubsub_topic: Some(SHARD.into()),
                content_topics: vec!["/a/1/odd/proto".into()],
                time_start: Some(1001),
                time_end: Some(1005),
                pagination_forward: true,
                ..Default::default()
            },
            usize::MAX,
        );
        assert_eq!(hashes_of(&r), vec![h[1].0.to_vec(), h[3].0.to_vec()]);
        let r = a.query(
            QueryRequest {
                message_hashes: vec![h[4].0.to_vec(), [9u8; 32].to_vec()],
                ..Default::default()
            },
            usize::MAX,
        );
        assert_eq!(hashes_of(&r), vec![h[4].0.to_vec()], "presence query");
    }

    #[test]
    fn a_lookup_with_a_pubsub_topic_alone_is_restricted_to_it() {
        // What js-waku 0.0.36 sends: the hashes and its decoder's pubsub topic.
        let (a, h, _dir) = archive_with(3);
        let lookup = |topic: &str| QueryRequest {
            pubsub_topic: Some(topic.into()),
            message_hashes: vec![h[1].0.to_vec()],
            include_data: true,
            ..Default::default()
        };
        let r = a.query(lookup(SHARD), usize::MAX);
        assert_eq!(r.status_code, Some(STATUS_OK));
        assert_eq!(hashes_of(&r), vec![h[1].0.to_vec()]);
        let r = a.query(lookup("/waku/2/rs/3/1"), usize::MAX);
        assert_eq!(r.status_code, Some(STATUS_OK));
        assert!(r.messages.is_empty(), "another shard holds no such message");
        // Content topics beside hashes are still a bad request.
        let mixed = QueryRequest {
            content_topics: vec!["/a/1/odd/proto".into()],
            ..lookup(SHARD)
        };
        assert_eq!(
            a.query(mixed, usize::MAX).status_code,
            Some(STATUS_BAD_REQUEST)
        );
    }

    #[test]
    fn bad_requests_and_budgets() {
        let (a, h, _dir) = archive_with(3);
        for bad in [
            QueryRequest {
                pubsub_topic: Some(SHARD.into()),
                ..Default::default()
            },
            QueryRequest {
                time_start: Some(0),
                message_hashes: vec![h[0].0.to_vec()],
                ..Default::default()
            },
            QueryRequest {
                message_hashes: vec![vec![1; 31]],
                ..Default::default()
            },
            QueryRequest {
                message_hashes: vec![[0; 32].to_vec(); MAX_HASHES + 1],
                ..Default::default()
            },
            QueryRequest {
                pagination_cursor: Some([7; 32].to_vec()),
                ..Default::default()
            },
        ] {
            assert_eq!(
                a.query(bad, usize::MAX).status_code,
                Some(STATUS_BAD_REQUEST)
            );
        }
        // A budget for about two entries cuts the page and sets the cursor; none is busy.
        let req = QueryRequest {
            include_data: true,
            pagination_forward: true,
            ..Default::default()
        };
        let one = a.query(req.clone(), usize::MAX).messages[0].encoded_len() + 8;
        let r = a.query(req.clone(), 2 * one + 1);
        assert_eq!(r.messages.len(), 2);
        assert!(r.pagination_cursor.is_some());
        assert_eq!(a.query(req, one - 1).status_code, Some(STATUS_UNAVAILABLE));
        assert_eq!(a.prune(1002).unwrap(), 2);
    }

    #[test]
    fn the_codec_bounds_frames() {
        use libp2p::StreamProtocol;
        use libp2p::request_response::Codec as _;
        let p = StreamProtocol::new(PROTOCOL);
        futures::executor::block_on(async {
            let req = QueryRequest {
                request_id: "x".into(),
                message_hashes: vec![vec![1; 32]],
                ..Default::default()
            };
            let mut buf = Vec::new();
            default_codec()
                .write_request(&p, &mut buf, Framed::Message(req.clone()))
                .await
                .unwrap();
            let mut r = futures::io::Cursor::new(buf);
            assert_eq!(
                default_codec().read_request(&p, &mut r).await.unwrap(),
                Framed::Message(req)
            );
            // 64 KiB + 1 announced: refused before reading.
            let mut over = Vec::new();
            prost::encoding::encode_varint(MAX_REQUEST as u64 + 1, &mut over);
            let mut r = futures::io::Cursor::new(over);
            let mut codec = default_codec();
            assert!(codec.read_request(&p, &mut r).await.is_err());
            assert_eq!(codec.unreadable(), 1);
            let mut r = futures::io::Cursor::new(vec![3, 0xff, 0xff, 0xff]);
            assert_eq!(
                codec.read_request(&p, &mut r).await.unwrap(),
                Framed::Malformed
            );
            assert_eq!(codec.unreadable(), 2);
            let mut r = futures::io::Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 0x7f]);
            assert!(default_codec().read_response(&p, &mut r).await.is_err());
            let mut r = futures::io::Cursor::new(vec![3, 0xff, 0xff, 0xff]);
            assert!(
                default_codec().read_response(&p, &mut r).await.is_err(),
                "malformed"
            );
        });
    }

    #[test]
    fn the_codec_reads_within_its_budgets_and_gives_them_back() {
        use crate::waku::framing::write_frame;
        use libp2p::StreamProtocol;
        use libp2p::request_response::Codec as _;
        let p = StreamProtocol::new(PROTOCOL);
        futures::executor::block_on(async {
            let requests = ReadBudget::with_cap(MAX_REQUEST);
            let responses = ReadBudget::with_cap(MAX_RESPONSE);
            let mut codec = codec(Arc::default(), requests.clone(), responses.clone());
            let big = QueryRequest {
                request_id: "big".into(),
                message_hashes: vec![vec![1; 32]; 1000],
                ..Default::default()
            };
            let mut frame = Vec::new();
            write_frame(&mut frame, &big.encode_to_vec()).await.unwrap();
            // A read holding most of the budget leaves no room for a second frame.
            let held = requests.try_reserve(MAX_REQUEST - 100).unwrap();
            let mut r = futures::io::Cursor::new(frame.clone());
            assert_eq!(codec.read_request(&p, &mut r).await.unwrap(), Framed::Busy);
            assert_eq!((requests.refused(), codec.unreadable()), (1, 0));
            drop(held);
            let mut r = futures::io::Cursor::new(frame);
            assert_eq!(
                codec.read_request(&p, &mut r).await.unwrap(),
                Framed::Message(big)
            );
            assert_eq!(requests.held(), 0, "given back after decoding");

            let page = QueryResponse::busy();
            let mut frame = Vec::new();
            write_frame(&mut frame, &page.encode_to_vec())
                .await
                .unwrap();
            let held = responses.try_reserve(MAX_RESPONSE).unwrap();
            let mut r = futures::io::Cursor::new(frame.clone());
            assert!(codec.read_response(&p, &mut r).await.is_err(), "no room");
            drop(held);
            let mut r = futures::io::Cursor::new(frame);
            assert_eq!(codec.read_response(&p, &mut r).await.unwrap(), page);
            assert_eq!((responses.held(), responses.refused()), (0, 1));
        });
    }
}

//! The client over Waku, the wire protocols of the Logos Messaging network: a
//! [`Transport`] on a [`pqmls_transport::Node`] started with Waku relay
//! (`node::Config::with_waku`), using only Waku protocols (relay, store v3) and none of
//! the transport's own (`/pqmls/group/1/..` gossip, the home-made store and directory).
//!
//! - **Topics.** A pqmls [`Topic`] `/pqmls/group/1/<hex>` is the content topic
//!   `/pqmls/1/<hex>/proto`, autosharded on the node's cluster. Payloads too large for one
//!   relay message (150 KiB by default) are cut by the Logos segmentation
//!   ([`pqmls_transport::waku::segmentation`]: 100 KiB segments, Keccak-256 of the whole,
//!   Reed-Solomon parity) and published on the twin content topic `/pqmls/1/<hex>/seg`,
//!   all with the same timestamp; nothing above the relay limit is ever sent. Receivers
//!   reassemble within the segmentation module's bounds (messages, bytes and time in
//!   reassembly), on relay and in history alike.
//! - **Inbound.** Relay messages of subscribed content topics only, mapped to
//!   [`Message`]s whose id is [`MessageId::compute`] of the pqmls topic and the whole
//!   payload, so the SDK's de-duplication works as on the pqmls transport. Payloads that
//!   are not pqmls wire messages are dropped here (relay is shared with other
//!   applications, so they are not penalised).
//! - **Duplicates.** Relay's message id is the SHA-256 of the encoded `WakuMessage`, whose
//!   timestamp is the sender's: the same pqmls payload published by two members, or twice
//!   by one, is two relay messages, each forwarded to every node and archived by every
//!   store. The pqmls gossip names a message by its topic and payload, so there the copies
//!   die at the first hop. This transport does the same with a bounded cache of the
//!   [`MessageId`]s it published or received on relay in the last [`Config::duplicate_window`]
//!   (gossipsub's duplicate cache time): such a payload is not published again
//!   ([`Error::Duplicate`], as the pqmls transport answers) and a copy received is not
//!   delivered again.
//! - **History** is Waku store v3: content-topic queries with a time range, all pages, see
//!   [`Config`] for the bounds. The stores asked, in turn until one answers, are those
//!   the application names ([`Config::store_peers`]) and then connected peers that
//!   announce store v3 over identify ([`Config::discovered_stores`]; with peer exchange
//!   on, a client that knows only an entry node finds them). Waku stores order by the *sender's* timestamp, not by
//!   arrival, so a [`Cursor`] is read as a sender time: `(after_ms, None)` asks for every
//!   message stamped at `after_ms` or later; `(after_ms, Some(_))` (a cursor after a
//!   message) asks for those stamped at `after_ms - lookback` or later, because an
//!   honest sender with a slow clock, or a message relayed late, lands before the cursor
//!   of a member that already caught up: such messages come again, and what the SDK
//!   handled is skipped by its id. Messages stamped more than `max_future` ahead of our
//!   clock are not asked for, so a stranger cannot move a member's cursor into the future.
//! - **Catch-up by hash.** A history read asks the store for the *hashes* of the range
//!   first (store v3 without data), then fetches by hash only what it does not hold: a
//!   whole message that reached the client on relay, filter or an earlier read and that
//!   the client reported handled ([`Transport::handled`]) is left out (and the cursor
//!   goes past it, [`Page::resume`]); our own publications are answered from memory while
//!   their payloads fit 4 MiB (the client reads them back as delivery evidence); the rest
//!   is fetched, and a store's answer is kept only where the message hashes to a hash
//!   asked for. A member online when a commit went out no longer downloads it again with
//!   every catch-up (a 0x004F commit of 50 members is 66 KB), and a member that misses
//!   commits fetches exactly those. Messages the client deferred, and payloads of groups
//!   it does not hold, are never reported handled, so they come again. What we remember
//!   counts only for the topic and time range it was seen in, and the cursor moves past
//!   left-out messages only forward, on a last page where everything listed came (a
//!   remembered hash under another topic or a far-off timestamp cannot move it); a page
//!   cut by its bounds ends before the first hash it could not fetch; one cut inside the
//!   first millisecond it read (a flood stamped with one instant: timestamps are the
//!   sender's) is followed by a page that goes on from the store's own cursor within
//!   that millisecond, up to 16 pages ([`Continuations`]). A hash a store
//!   lists and then does not return is passed by a later page's start or by a message
//!   after it, like any message a store loses; the lookback reads it again for two
//!   minutes. Everything read counts against the page's bounds, a lookup that brings
//!   nothing asked for ends the lookups, and a store that answers none is left for the
//!   next one. Segmented payloads are remembered by all the segments relay brought
//!   (parity after completion included). When the ordering knows it misses a commit
//!   (the members' votes name one it does not hold, or messages of a later epoch
//!   arrive), the client catches that group's topic up at once, and the read fetches by
//!   hash only what the member does not hold, the commit among it (test
//!   `a_member_that_missed_a_commit_on_relay_fetches_it_from_the_store_by_hash`). The
//!   ordering cannot name the commit's Waku hash itself (it covers the sender's
//!   timestamp), so the listing of the range comes first: one more query of hashes only.
//! - **Light clients.** With [`Config::light_service`] the node relays nothing: it
//!   publishes through a lightpush v3 service and receives through a filter v2
//!   subscription with that service (both content topics of every subscribed topic);
//!   history and the directory are store v3 as above. Filter pushes are mapped exactly as
//!   relay messages are. When the service fails, pushes and subscriptions go to another
//!   connected service (module `light`).
//! - **Directory.** `put(key, blob)` publishes a message on a content topic of the key's
//!   owner (`/pqmls/1/kp-<user hex>/proto` for key packages, `/pqmls/1/claim-<user
//!   hex>/proto` for claims, `/pqmls/1/dir-<sha-256 of key>/proto` for other keys) holding
//!   the key and the blob; `get_all(key)` asks the store for that topic, newest first, and
//!   returns every blob stored under the key. No Waku store can check who writes, so
//!   the readers do (see `sdk/DESIGN.md`, "The directory over Waku").

mod light;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use pqmls_transport::node::Config as NodeConfig;
use pqmls_transport::store::{Cursor, Page};
use pqmls_transport::waku::segmentation::{self, MAX_TOTAL_SEGMENTS, Reassembler, SegmentMessage};
use pqmls_transport::waku::store::{MAX_HASHES, QueryRequest};
use pqmls_transport::waku::{ContentTopic, PubsubTopic, WakuMessage, message_hash};
use pqmls_transport::{Error, Message, MessageId, Node, PeerId, Topic, WakuService};
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::net::{Inbox, Transport};
use crate::wire::Wire;

/// The prefix of every pqmls topic name, see [`Topic::from_group_id`].
const TOPIC_PREFIX: &str = "/pqmls/group/1/";
/// Content topics of pqmls: `/pqmls/1/<name>/<encoding>`.
const CT_PREFIX: &str = "/pqmls/1/";
/// Encoding of a whole payload.
const WHOLE: &str = "proto";
/// Encoding of a segment of a payload.
const SEGMENT: &str = "seg";
/// Magic of a directory message: `"PQDW" | key len u32 | key | blob`.
const DIR_MAGIC: &[u8; 4] = b"PQDW";
/// Largest store page asked for (the spec's maximum).
const PAGE: u64 = 100;

/// Settings of a [`WakuTransport`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Store nodes to ask for history and the directory, in order of preference (the
    /// next one is asked when one fails). After them come up to
    /// [`Config::discovered_stores`] connected peers that announce store v3. Without any
    /// store, `history` and `get` fail with [`Error::NoStore`].
    pub store_peers: Vec<PeerId>,
    /// Most stores found among connected peers (by the protocols they announce over
    /// identify and the shards their metadata names, [`Node::service_peers_on`]) that are
    /// asked after [`Config::store_peers`]
    /// (default 2; 0 asks only the named ones). Such a store is a stranger like any
    /// peer: its answers are checked as every store's are, and one that answers with
    /// nothing hides history only when every named store failed first.
    pub discovered_stores: usize,
    /// Longest one history or directory read may spend with one store, all its pages
    /// and lookups together (default 60 s); past it that store counts as failed and the
    /// next one is asked. Each request has the node's own timeout as well; this bounds
    /// a store that answers every one of many requests just in time.
    pub store_deadline: Duration,
    /// Segmentation of large payloads, and the bounds of reassembly.
    pub segmentation: segmentation::Config,
    /// Most Waku messages read from stores for one `history` call (default 2048). When a
    /// topic holds more, the page ends at the last whole millisecond and the next page
    /// starts there.
    pub history_messages: usize,
    /// Most payload bytes read from stores for one `history` call (default 32 MiB).
    pub history_bytes: usize,
    /// How far before a cursor after a message history looks again (default 2 minutes),
    /// see the module documentation.
    pub lookback: Duration,
    /// How far ahead of our clock a sender's timestamp may be for history to ask for it
    /// (default 1 minute).
    pub max_future: Duration,
    /// Most directory entries returned for one key (default 256; newest first), among
    /// those that pass the directory's rule; up to [`Config::history_messages`] (or four
    /// times this, if more) are read.
    pub directory_candidates: usize,
    /// Light-client mode: publish through this peer's lightpush service and receive
    /// through its filter service, instead of relaying (default `None`: relay). The node
    /// then needs no relay shards of its own (`relay::Config::with_shards([])`); history
    /// and the directory still come from [`Config::store_peers`].
    pub light_service: Option<PeerId>,
    /// Light-client mode: how many other connected peers that announce lightpush or
    /// filter (and relay our shard) to use when [`Config::light_service`] fails (default
    /// 2; module `light`).
    pub discovered_light_services: usize,
    /// Light-client mode: how often the filter service holding our subscriptions is
    /// pinged; one that does not answer loses them to the next service (default 30 s).
    pub filter_ping_interval: Duration,
    /// Light-client mode: how long a lightpush or filter service that failed is asked
    /// after the others (default 1 minute); the named service is taken back after it.
    pub light_service_retry: Duration,
    /// How long a payload published or received on relay (or filter) counts as a
    /// duplicate (default 2 minutes, the relay's seen cache time): within it the payload
    /// is not published again and copies are not delivered again. See the module
    /// documentation, "Duplicates".
    pub duplicate_window: Duration,
    /// Most message ids remembered for [`Config::duplicate_window`] (default 16 384); past
    /// it the oldest are forgotten first, so a flood costs at most that much memory and
    /// only lets copies through again.
    pub duplicate_ids: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store_peers: Vec::new(),
            discovered_stores: 2,
            store_deadline: Duration::from_secs(60),
            segmentation: segmentation::Config::default(),
            history_messages: 2048,
            history_bytes: 32 * 1024 * 1024,
            lookback: Duration::from_secs(120),
            max_future: Duration::from_secs(60),
            directory_candidates: 256,
            light_service: None,
            discovered_light_services: 2,
            filter_ping_interval: Duration::from_secs(30),
            light_service_retry: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(120),
            duplicate_ids: 16 * 1024,
        }
    }
}

impl Config {
    /// Adds a store node to ask.
    pub fn with_store_peer(mut self, peer: PeerId) -> Self {
        self.store_peers.push(peer);
        self
    }

    /// Light-client mode through `service` (lightpush and filter), see
    /// [`Config::light_service`].
    pub fn with_light_service(mut self, service: PeerId) -> Self {
        self.light_service = Some(service);
        self
    }
}

/// Counts of what a [`WakuTransport`] dropped or reassembled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Payloads published as segments.
    pub segmented: u64,
    /// Segmented payloads reassembled from relay.
    pub reassembled: u64,
    /// Relay messages dropped: another application's content topic, a topic not
    /// subscribed, a refused segment, or not a pqmls payload.
    pub dropped: u64,
    /// Relay messages not delivered because their payload was published or received
    /// within [`Config::duplicate_window`].
    pub duplicates: u64,
    /// Publications refused as [`Error::Duplicate`] for the same reason.
    pub duplicates_not_published: u64,
    /// Waku messages history reads fetched from stores by hash.
    pub history_fetched: u64,
    /// Messages history reads found listed but did not fetch: handled by the client, or
    /// our own publications still in memory (module documentation, "Catch-up by hash").
    pub history_left_out: u64,
    /// Light-client mode: times the filter subscriptions moved to another service.
    pub filter_service_moves: u64,
}

/// The pqmls message ids seen on relay (published or received), each for a time window,
/// at most `cap` of them: gossipsub's duplicate cache, keyed by topic and payload instead
/// of by the Waku message (whose timestamp differs between copies).
#[derive(Debug)]
struct Recent {
    window: Duration,
    cap: usize,
    first_seen: HashMap<MessageId, Instant>,
    order: VecDeque<(Instant, MessageId)>,
}

impl Recent {
    fn new(window: Duration, cap: usize) -> Self {
        Self {
            window,
            cap: cap.max(1),
            first_seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Forgets ids older than the window.
    fn expire(&mut self, now: Instant) {
        while let Some((t, id)) = self.order.front().copied() {
            if now.saturating_duration_since(t) < self.window {
                break;
            }
            self.order.pop_front();
            self.first_seen.remove(&id);
        }
    }

    /// Whether `id` was seen within the window.
    fn contains(&mut self, id: &MessageId, now: Instant) -> bool {
        self.expire(now);
        self.first_seen.contains_key(id)
    }

    /// Records `id` as seen at `now` (a first sighting only: the window runs from it);
    /// returns whether it was new.
    fn insert(&mut self, id: MessageId, now: Instant) -> bool {
        self.expire(now);
        if self.first_seen.contains_key(&id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some((_, old)) = self.order.pop_front()
        {
            self.first_seen.remove(&old);
        }
        self.first_seen.insert(id, now);
        self.order.push_back((now, id));
        true
    }
}

/// Most Waku hashes remembered for one pqmls message (copies republished by others).
const MAX_HASHES_PER_ID: usize = 4;
/// Most bytes of our own whole payloads kept to stand for their stored copies.
const OWN_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// What a history read may leave out (module documentation, "Catch-up by hash"): the Waku
/// hashes of the whole messages delivered to the client, with the pqmls id and sender
/// timestamp of each, and whether the client reported that id handled; and our own
/// publications, with their payloads while they fit [`OWN_PAYLOAD_BYTES`], which stand
/// for their stored copies (the client reads its own messages back as delivery evidence).
/// At most `cap` ids, each for `window`; the oldest go first.
struct Known {
    window: Duration,
    cap: usize,
    ids: HashMap<MessageId, KnownId>,
    hashes: HashMap<[u8; 32], (MessageId, i64)>,
    order: VecDeque<(Instant, MessageId)>,
    own_bytes: usize,
}

struct KnownId {
    topic: Topic,
    hashes: Vec<[u8; 32]>,
    handled: bool,
    /// Our own publication: its topic and payload (`None` over the byte budget).
    own: Option<(Topic, Option<Arc<Vec<u8>>>)>,
}

/// What a history read does with a hash its store listed.
#[derive(Debug, Clone)]
enum Listed {
    /// Handled by the client: left out; its pqmls id and sender timestamp.
    Handled(MessageId, i64),
    /// Our own publication, payload kept: returned from memory, with its timestamp.
    Own(Message, i64),
    /// Fetched from the store by hash.
    Fetch,
}

impl Known {
    fn new(window: Duration, cap: usize) -> Self {
        Self {
            window,
            cap: cap.max(1),
            ids: HashMap::new(),
            hashes: HashMap::new(),
            order: VecDeque::new(),
            own_bytes: 0,
        }
    }

    fn forget(&mut self, id: &MessageId) {
        if let Some(k) = self.ids.remove(id) {
            for h in &k.hashes {
                self.hashes.remove(h);
            }
            if let Some((_, Some(p))) = &k.own {
                self.own_bytes = self.own_bytes.saturating_sub(p.len());
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, id)) = self.order.front().copied() {
            if now.saturating_duration_since(t) < self.window
                && self.ids.len() <= self.cap
                && self.hashes.len() <= self.cap.saturating_mul(MAX_HASHES_PER_ID)
            {
                break;
            }
            self.order.pop_front();
            self.forget(&id);
        }
    }

    /// Makes an entry for `id` of `topic` if it has none (at the cap the oldest id goes
    /// first).
    fn admit(&mut self, id: MessageId, topic: &Topic, now: Instant) {
        if !self.ids.contains_key(&id) {
            if self.ids.len() >= self.cap
                && let Some((_, old)) = self.order.pop_front()
            {
                self.forget(&old);
            }
            self.ids.insert(
                id,
                KnownId {
                    topic: topic.clone(),
                    hashes: Vec::new(),
                    handled: false,
                    own: None,
                },
            );
            self.order.push_back((now, id));
        }
    }

    /// Records that the Waku message `hash`, sent at `timestamp`, carried the pqmls
    /// message `id` of `topic`.
    fn note(&mut self, id: MessageId, topic: &Topic, hash: [u8; 32], timestamp: i64, now: Instant) {
        self.note_up_to(id, topic, hash, timestamp, now, MAX_HASHES_PER_ID);
    }

    /// Records that the Waku messages `segments` carried segments of the pqmls message
    /// `id` of `topic`.
    fn note_segments(
        &mut self,
        id: MessageId,
        topic: &Topic,
        segments: &[([u8; 32], i64)],
        now: Instant,
    ) {
        for (hash, timestamp) in segments {
            self.note_up_to(
                id,
                topic,
                *hash,
                *timestamp,
                now,
                MAX_HASHES_PER_ID + MAX_TOTAL_SEGMENTS,
            );
        }
    }

    /// As [`Known::note`], with at most `per_id` hashes for `id`. Over all ids at most
    /// `cap * MAX_HASHES_PER_ID` hashes are kept: past it the oldest ids go first.
    fn note_up_to(
        &mut self,
        id: MessageId,
        topic: &Topic,
        hash: [u8; 32],
        timestamp: i64,
        now: Instant,
        per_id: usize,
    ) {
        self.expire(now);
        if self.hashes.contains_key(&hash) {
            return;
        }
        self.admit(id, topic, now);
        if let Some(k) = self.ids.get_mut(&id)
            && k.hashes.len() < per_id
        {
            k.hashes.push(hash);
            self.hashes.insert(hash, (id, timestamp));
        }
        // The total bound (the id just noted is the newest, so it stays unless alone).
        self.expire(now);
    }

    /// Records our own publication of `data` on `topic` as `hash`.
    fn note_own(
        &mut self,
        topic: &Topic,
        data: &[u8],
        hash: [u8; 32],
        timestamp: i64,
        now: Instant,
    ) {
        let id = MessageId::compute(topic, data);
        self.note(id, topic, hash, timestamp, now);
        let fits = self.own_bytes.saturating_add(data.len()) <= OWN_PAYLOAD_BYTES;
        if let Some(k) = self.ids.get_mut(&id)
            && k.own.is_none()
        {
            let kept = fits.then(|| Arc::new(data.to_vec()));
            if kept.is_some() {
                self.own_bytes += data.len();
            }
            k.own = Some((topic.clone(), kept));
        }
    }

    /// Records our own publication of `data` on `topic` in segments: their stored
    /// copies are always fetched (the client reads them back as delivery evidence), also
    /// when relay or filter brought them back first and the client reported them handled.
    fn note_own_segmented(&mut self, topic: &Topic, data: &[u8], now: Instant) {
        let id = MessageId::compute(topic, data);
        self.expire(now);
        self.admit(id, topic, now);
        if let Some(k) = self.ids.get_mut(&id) {
            if let Some((_, Some(p))) = &k.own {
                self.own_bytes = self.own_bytes.saturating_sub(p.len());
            }
            k.own = Some((topic.clone(), None));
        }
    }

    fn handled(&mut self, id: &MessageId) {
        if let Some(k) = self.ids.get_mut(id) {
            k.handled = true;
        }
    }

    /// What to do with `hash`, listed by a store for `topic` within `range` (sender
    /// timestamps, start inclusive, end exclusive). What we know of it counts only for
    /// that topic and range: a store listing a hash elsewhere, or one we noted with a
    /// timestamp outside the range, gets it fetched (and checked) instead, so that what
    /// we remember never moves a cursor where a read could not.
    fn listed(
        &mut self,
        hash: &[u8; 32],
        topic: &Topic,
        range: (Option<i64>, i64),
        now: Instant,
    ) -> Listed {
        self.expire(now);
        let Some((id, timestamp)) = self.hashes.get(hash).copied() else {
            return Listed::Fetch;
        };
        if timestamp >= range.1 || range.0.is_some_and(|s| timestamp < s) {
            return Listed::Fetch;
        }
        match self.ids.get(&id) {
            Some(k) if k.topic != *topic => Listed::Fetch,
            // Own publications first: the client reads them back as delivery evidence,
            // handled or not (a light client's own message comes back through filter).
            Some(KnownId {
                own: Some((_, None)),
                ..
            }) => Listed::Fetch,
            Some(KnownId {
                own: Some((topic, Some(data))),
                ..
            }) => Listed::Own(
                Message {
                    id,
                    topic: topic.clone(),
                    data: data.as_ref().clone(),
                    received: ms_time(nanos_to_ms(timestamp)),
                },
                timestamp,
            ),
            Some(k) if k.handled => Listed::Handled(id, timestamp),
            _ => Listed::Fetch,
        }
    }
}

/// Pages of one millisecond of one topic that a history read goes on with from the
/// store's own position (see [`Continuations`]); past them the rest of that millisecond is
/// skipped, as a flood's.
const MAX_CONTINUATIONS: u32 = 16;
/// Topics with a continuation remembered at once.
const MAX_CONTINUED_TOPICS: usize = 1024;

/// Where a history page cut inside one millisecond stopped in the store's order, per
/// topic: the hash of the last message the page took, for the next page to go on after
/// (store v3's pagination cursor is a message hash) instead of passing the rest of that
/// millisecond. Timestamps are the sender's, so anyone can stamp thousands of messages
/// with an honest message's millisecond; a cursor of milliseconds alone then had to skip
/// what the page could not hold, the honest message among it (DESIGN, "Over Waku", flood
/// finding 1). A millisecond is continued at most [`MAX_CONTINUATIONS`] pages, so a
/// store that pages in circles cannot hold a catch-up there; state is kept in memory
/// for at most [`MAX_CONTINUED_TOPICS`] topics (after a restart, or past that, the page
/// falls back to skipping the rest of the millisecond).
#[derive(Debug, Default)]
struct Continuations {
    by_topic: HashMap<Topic, Continuation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Continuation {
    ms: u64,
    /// The store whose order `after` is a position in (another store may not hold it).
    store: PeerId,
    after: [u8; 32],
    /// Pages of `ms` read so far, from whichever store.
    pages: u32,
}

impl Continuations {
    /// The continuation of a read of `topic` from `from`: only for a read from the start
    /// of the millisecond where the last page stopped. Any read of the topic takes what
    /// was remembered, so a continuation serves only the page right after the one that
    /// recorded it (one left by a catch-up that failed half-way would otherwise skip, in
    /// a later catch-up, messages the client never got).
    fn take(&mut self, topic: &Topic, from: Cursor) -> Option<Continuation> {
        let c = self.by_topic.remove(topic)?;
        (from.after_id().is_none() && c.ms == from.after_ms()).then_some(c)
    }

    /// Records that a page of `topic` read from `store` stopped inside `ms` after the
    /// message with hash `after`, following `prev` (the continuation the read started
    /// from, if any, whichever store it named: pages of one millisecond count together);
    /// `false` if the next page must not continue there (too many pages in that
    /// millisecond, or too many topics remembered).
    fn record(
        &mut self,
        topic: &Topic,
        ms: u64,
        store: PeerId,
        after: [u8; 32],
        prev: Option<Continuation>,
    ) -> bool {
        let pages = prev.filter(|p| p.ms == ms).map_or(1, |p| p.pages + 1);
        if pages > MAX_CONTINUATIONS {
            self.by_topic.remove(topic);
            return false;
        }
        if !self.by_topic.contains_key(topic) && self.by_topic.len() >= MAX_CONTINUED_TOPICS {
            return false;
        }
        self.by_topic.insert(
            topic.clone(),
            Continuation {
                ms,
                store,
                after,
                pages,
            },
        );
        true
    }
}

/// How long a store that failed a read (an error, or [`Config::store_deadline`] passed) is
/// asked after the others.
const STORE_COOL_DOWN: Duration = Duration::from_secs(60);
/// Stores remembered as failed at once.
const MAX_FAILED_STORES: usize = 64;

/// Stores that failed a read lately: every read asks them after the others for
/// [`STORE_COOL_DOWN`] (still asked, never dropped), so that a slow or broken store first
/// in line does not cost every read of every topic its deadline (DESIGN, "Over Waku",
/// flood finding 4). At most [`MAX_FAILED_STORES`] remembered.
#[derive(Debug, Default)]
struct Failures {
    until: HashMap<PeerId, Instant>,
}

impl Failures {
    fn failed(&mut self, peer: PeerId, now: Instant) {
        self.failed_for(peer, now, STORE_COOL_DOWN);
    }

    /// As [`Failures::failed`], asked last for `cool_down`.
    fn failed_for(&mut self, peer: PeerId, now: Instant, cool_down: Duration) {
        self.until.retain(|_, t| *t > now);
        if !self.until.contains_key(&peer)
            && self.until.len() >= MAX_FAILED_STORES
            && let Some(soonest) = self.until.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
        {
            self.until.remove(&soonest);
        }
        self.until.insert(peer, now + cool_down);
    }

    /// Whether `peer` failed less than its cool-down ago.
    fn cooling(&self, peer: &PeerId, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|t| *t > now)
    }

    fn succeeded(&mut self, peer: &PeerId) {
        self.until.remove(peer);
    }

    /// `stores` in order, those cooling down after the others (each part keeps its order).
    fn order(&self, stores: Vec<PeerId>, now: Instant) -> Vec<PeerId> {
        let (mut ready, late): (Vec<PeerId>, Vec<PeerId>) =
            stores.into_iter().partition(|p| !self.cooling(p, now));
        ready.extend(late);
        ready
    }
}

/// The Waku hashes of the segments relay brought, by the hash of the payload they carry,
/// so that a payload that completes is remembered with all its segments ([`Known`]):
/// at most `cap` payloads in reassembly (the reassembler's own bound) and as many
/// completed ones (for segments that come after completion, parity typically), each
/// with at most [`MAX_TOTAL_SEGMENTS`] hashes; the oldest go first.
struct SegmentHashes {
    cap: usize,
    pending: HashMap<[u8; 32], Vec<([u8; 32], i64)>>,
    order: VecDeque<[u8; 32]>,
    completed: HashMap<[u8; 32], (MessageId, Topic)>,
    completed_order: VecDeque<[u8; 32]>,
}

impl SegmentHashes {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            pending: HashMap::new(),
            order: VecDeque::new(),
            completed: HashMap::new(),
            completed_order: VecDeque::new(),
        }
    }

    /// A segment of the payload `entire`: its id if that payload completed already, else
    /// the segment is kept for when it does.
    fn push(
        &mut self,
        entire: &[u8; 32],
        hash: [u8; 32],
        timestamp: i64,
    ) -> Option<(MessageId, Topic)> {
        if let Some(done) = self.completed.get(entire) {
            return Some(done.clone());
        }
        if !self.pending.contains_key(entire) {
            if self.order.len() >= self.cap
                && let Some(old) = self.order.pop_front()
            {
                self.pending.remove(&old);
            }
            self.pending.insert(*entire, Vec::new());
            self.order.push_back(*entire);
        }
        if let Some(v) = self.pending.get_mut(entire)
            && v.len() < MAX_TOTAL_SEGMENTS
            && !v.iter().any(|(h, _)| *h == hash)
        {
            v.push((hash, timestamp));
        }
        None
    }

    /// The payload `entire` completed as `id`: its segments so far.
    fn complete(
        &mut self,
        entire: &[u8; 32],
        id: MessageId,
        topic: &Topic,
    ) -> Vec<([u8; 32], i64)> {
        self.order.retain(|e| e != entire);
        if !self.completed.contains_key(entire) {
            if self.completed_order.len() >= self.cap
                && let Some(old) = self.completed_order.pop_front()
            {
                self.completed.remove(&old);
            }
            self.completed.insert(*entire, (id, topic.clone()));
            self.completed_order.push_back(*entire);
        }
        self.pending.remove(entire).unwrap_or_default()
    }
}

struct Shared {
    /// The shard, as the pubsub topic of message hashes.
    shard: String,
    segment_hashes: Mutex<SegmentHashes>,
    known: Mutex<Known>,
    subscribed: Mutex<HashSet<Topic>>,
    reassembler: Mutex<Reassembler>,
    recent: Mutex<Recent>,
    segmented: AtomicU64,
    reassembled: AtomicU64,
    dropped: AtomicU64,
    duplicates: AtomicU64,
    duplicates_not_published: AtomicU64,
    fetched: AtomicU64,
    left_out: AtomicU64,
    continuations: Mutex<Continuations>,
}

/// A [`Transport`] over Waku relay and store v3, see the module documentation.
pub struct WakuTransport {
    node: Node,
    shard: PubsubTopic,
    max_message_size: usize,
    config: Config,
    shared: Arc<Shared>,
    requests: AtomicU64,
    /// Stores that failed a read lately ([`Failures`]).
    failures: Mutex<Failures>,
    /// The directory's write rule ([`crate::directory_validator`]), applied to the
    /// entries of a key before the newest [`Config::directory_candidates`] are kept.
    directory_rule: crate::directory::DirectoryRule,
    /// Light-client mode's services ([`Config::light_service`]).
    light: Option<Arc<light::Light>>,
}

impl std::fmt::Debug for WakuTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakuTransport")
            .field("node", &self.node)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// A logical content topic of pqmls: `name` is the part between `/pqmls/1/` and the
/// encoding.
fn content_topic(name: &str, encoding: &str) -> String {
    format!("{CT_PREFIX}{name}/{encoding}")
}

/// The content-topic name of a pqmls topic: the hex part of its name.
fn topic_name(topic: &Topic) -> &str {
    topic
        .as_str()
        .strip_prefix(TOPIC_PREFIX)
        .unwrap_or(topic.as_str())
}

/// The pqmls topic and whether it is a segment, for a content topic of ours; `None` for
/// anything else.
fn parse_content_topic(ct: &str) -> Option<(Topic, bool)> {
    let rest = ct.strip_prefix(CT_PREFIX)?;
    let (name, encoding) = rest.split_once('/')?;
    let seg = match encoding {
        WHOLE => false,
        SEGMENT => true,
        _ => return None,
    };
    Some((Topic::parse(&format!("{TOPIC_PREFIX}{name}"))?, seg))
}

/// The content-topic name of a directory key: per owner for key packages and claims.
fn directory_name(key: &[u8]) -> String {
    let owner_part = |prefix: &str| -> Option<String> {
        let text = std::str::from_utf8(key).ok()?;
        let rest = text.strip_prefix(prefix)?;
        let (hex, _) = rest.split_once('/')?;
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| hex.to_owned())
    };
    if let Some(hex) = owner_part(crate::directory::KP_PREFIX) {
        return format!("kp-{hex}");
    }
    if let Some(hex) = owner_part(crate::directory::CLAIM_PREFIX) {
        return format!("claim-{hex}");
    }
    let digest = Sha256::digest(key);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("dir-{hex}")
}

fn encode_directory(key: &[u8], blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len() + blob.len());
    out.extend_from_slice(DIR_MAGIC);
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(blob);
    out
}

/// The blob of a directory message if it is stored under `key`.
fn decode_directory<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let rest = bytes.strip_prefix(DIR_MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (k, blob) = rest.split_at(len);
    (k == key).then_some(blob)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn nanos_to_ms(ns: i64) -> u64 {
    u64::try_from(ns / 1_000_000).unwrap_or(0)
}

fn ms_to_nanos(ms: u64) -> i64 {
    i64::try_from(ms)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

fn ms_time(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

fn duration_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A Waku message read from a store, of one of the two content topics asked for.
struct Stored {
    timestamp: i64,
    segment: bool,
    payload: Vec<u8>,
}

impl WakuTransport {
    /// A transport on `node`, which must have been started with Waku relay
    /// (`node::Config::with_waku`); takes the node's relay stream and returns the
    /// client's inbox.
    ///
    /// # Errors
    /// [`Error::Config`] if Waku is off on `node`, its relay stream was already taken, or
    /// the segmentation settings cannot work with the relay's message limit.
    pub fn new(
        node: Node,
        relay: &pqmls_transport::waku::relay::Config,
        config: Config,
    ) -> pqmls_transport::Result<(Self, Inbox)> {
        config
            .segmentation
            .check()
            .map_err(|e| Error::Config(e.to_string()))?;
        // A segment is its payload plus at most a few hundred bytes of framing.
        if config.segmentation.segment_size.saturating_add(4096) > relay.max_message_size {
            return Err(Error::Config(
                "segment size too close to the relay's message limit".into(),
            ));
        }
        let shard = ContentTopic::parse(&content_topic("x", WHOLE))
            .and_then(|t| t.pubsub_topic(relay.cluster, relay.shard_count))
            .ok_or_else(|| Error::Config("pqmls content topics cannot be autosharded".into()))?;
        let shared = Arc::new(Shared {
            shard: shard.to_string(),
            segment_hashes: Mutex::new(SegmentHashes::new(config.segmentation.max_pending)),
            known: Mutex::new(Known::new(
                config
                    .lookback
                    .saturating_mul(2)
                    .max(config.duplicate_window),
                config.duplicate_ids,
            )),
            subscribed: Mutex::new(HashSet::new()),
            reassembler: Mutex::new(Reassembler::new(config.segmentation.clone())),
            recent: Mutex::new(Recent::new(config.duplicate_window, config.duplicate_ids)),
            segmented: AtomicU64::new(0),
            reassembled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            duplicates_not_published: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
            continuations: Mutex::new(Continuations::default()),
        });
        let directory_rule =
            crate::directory::directory_validator().map_err(|e| Error::Config(e.to_string()))?;
        let s = shared.clone();
        let inbox = if config.light_service.is_some() {
            node.filter_inbound()
                .ok_or_else(|| Error::Config("Waku is off or the filter stream was taken".into()))?
                .filter_map(move |r| futures::future::ready(s.accept(r.message, SystemTime::now())))
                .boxed()
        } else {
            node.relay_inbound()
                .ok_or_else(|| Error::Config("Waku relay is off or its stream was taken".into()))?
                .filter_map(move |r| futures::future::ready(s.accept(r.message, r.received)))
                .boxed()
        };
        if config.light_service.is_some() && config.filter_ping_interval.is_zero() {
            return Err(Error::Config(
                "filter_ping_interval must be non-zero".into(),
            ));
        }
        let light = config.light_service.map(|named| {
            light::start(light::Light::new(
                node.clone(),
                shard,
                light::Settings {
                    named,
                    discovered: config.discovered_light_services,
                    retry: config.light_service_retry,
                    watch_every: config.filter_ping_interval,
                },
            ))
        });
        Ok((
            Self {
                node,
                shard,
                max_message_size: relay.max_message_size,
                config,
                shared,
                requests: AtomicU64::new(0),
                failures: Mutex::new(Failures::default()),
                directory_rule,
                light,
            },
            inbox,
        ))
    }

    /// Starts a Waku node with `node` (which must have Waku relay on) and a transport on
    /// it.
    ///
    /// # Errors
    /// The node's start errors, and as [`WakuTransport::new`].
    pub async fn start(node: NodeConfig, config: Config) -> pqmls_transport::Result<(Self, Inbox)> {
        let relay = node
            .waku
            .clone()
            .ok_or_else(|| Error::Config("Waku relay is off (see Config::with_waku)".into()))?;
        let (node, _) = Node::start(node).await?;
        if config.light_service.is_some() {
            // The first filter subscriptions are made as soon as a client opens, and one
            // that fails waits for the next full catch-up: give the bootstrap dial a moment
            // (at most 5 s) to pass the metadata gate first.
            for _ in 0..50 {
                if node.counters().metadata_admitted > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Self::new(node, &relay, config)
    }

    /// The node underneath.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The shard every pqmls content topic is on.
    pub fn shard(&self) -> PubsubTopic {
        self.shard
    }

    /// Light-client mode: the filter service holding our subscriptions now.
    pub async fn filter_service(&self) -> Option<PeerId> {
        match &self.light {
            Some(light) => light.filter_service().await,
            None => None,
        }
    }

    /// What was segmented, reassembled and dropped so far.
    pub fn counters(&self) -> Counters {
        Counters {
            segmented: self.shared.segmented.load(Ordering::Relaxed),
            reassembled: self.shared.reassembled.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            duplicates: self.shared.duplicates.load(Ordering::Relaxed),
            duplicates_not_published: self.shared.duplicates_not_published.load(Ordering::Relaxed),
            history_fetched: self.shared.fetched.load(Ordering::Relaxed),
            history_left_out: self.shared.left_out.load(Ordering::Relaxed),
            filter_service_moves: self.light.as_ref().map_or(0, |l| l.moves()),
        }
    }

    /// Sends one message: on relay, or through a lightpush service.
    async fn send(&self, m: WakuMessage) -> pqmls_transport::Result<()> {
        match &self.light {
            Some(light) => light.push(m).await,
            None => self.node.relay_publish_on(self.shard, m).await.map(|_| ()),
        }
    }

    /// Publishes `payload` under the content-topic name `name`: whole if it fits one
    /// relay message, else as segments. Every message gets the same timestamp. Returns the
    /// Waku hash and timestamp of a whole message.
    async fn publish_named(
        &self,
        name: &str,
        payload: &[u8],
    ) -> pqmls_transport::Result<Option<([u8; 32], i64)>> {
        let now = now_nanos();
        let whole =
            WakuMessage::new(content_topic(name, WHOLE), payload.to_vec()).with_timestamp(now);
        if whole.to_bytes().len() <= self.max_message_size {
            let hash = message_hash(&self.shared.shard, &whole).0;
            self.send(whole).await?;
            return Ok(Some((hash, now)));
        }
        let segments = segmentation::segment(payload, &self.config.segmentation)
            .map_err(|e| Error::Publish(e.to_string()))?;
        let topic = content_topic(name, SEGMENT);
        for s in segments {
            let m = WakuMessage::new(topic.clone(), s).with_timestamp(now);
            // `new` checked that segments stay well below the limit; checked again here
            // because a lightpush service might take more than its relay forwards.
            let len = m.to_bytes().len();
            if len > self.max_message_size {
                return Err(Error::MessageTooLarge {
                    len,
                    max: self.max_message_size,
                });
            }
            self.send(m).await?;
        }
        self.shared.segmented.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    /// Reads the Waku messages of `name` (both encodings) from the first store that
    /// answers, within the bounds: `(messages in store order, whether cut short)`.
    async fn query(
        &self,
        name: &str,
        time_start: Option<i64>,
        forward: bool,
        max_messages: usize,
        max_bytes: usize,
    ) -> pqmls_transport::Result<(Vec<Stored>, bool)> {
        self.first_store(|peer| {
            self.query_peer(peer, name, time_start, forward, max_messages, max_bytes)
        })
        .await
    }

    /// The stores to ask, in order: [`Config::store_peers`], then up to
    /// [`Config::discovered_stores`] connected peers that announce store v3 (the longest
    /// connected first), none twice.
    async fn stores(&self) -> Vec<PeerId> {
        let mut stores = self.config.store_peers.clone();
        if self.config.discovered_stores == 0 {
            return stores;
        }
        // Only stores that relay (and so archive) our shard.
        let found = self
            .node
            .service_peers_on(WakuService::Store, self.shard.shard)
            .await
            .unwrap_or_default();
        let named = stores.len();
        for peer in found {
            if stores.len() - named >= self.config.discovered_stores {
                break;
            }
            if !stores.contains(&peer) {
                stores.push(peer);
            }
        }
        stores
    }

    /// `ask` of each store of [`Self::stores`] in turn, each within
    /// [`Config::store_deadline`]: the first answer, or the last error
    /// ([`Error::NoStore`] without any store).
    async fn first_store<T, F>(&self, ask: impl Fn(PeerId) -> F) -> pqmls_transport::Result<T>
    where
        F: std::future::Future<Output = pqmls_transport::Result<T>>,
    {
        let mut last = Error::NoStore;
        let deadline = self.config.store_deadline;
        let stores = self.stores().await;
        let stores = match self.failures.lock() {
            Ok(f) => f.order(stores, Instant::now()),
            Err(_) => stores,
        };
        for peer in &stores {
            let answer = tokio::time::timeout(deadline, ask(*peer))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Request(format!(
                        "store {peer} passed the deadline of {deadline:?}"
                    )))
                });
            match answer {
                Ok(r) => {
                    if let Ok(mut f) = self.failures.lock() {
                        f.succeeded(peer);
                    }
                    return Ok(r);
                }
                Err(e) => {
                    tracing::debug!("store {peer} failed: {e}");
                    if let Ok(mut f) = self.failures.lock() {
                        f.failed(*peer, Instant::now());
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn query_peer(
        &self,
        peer: PeerId,
        name: &str,
        time_start: Option<i64>,
        forward: bool,
        max_messages: usize,
        max_bytes: usize,
    ) -> pqmls_transport::Result<(Vec<Stored>, bool)> {
        let whole = content_topic(name, WHOLE);
        let seg = content_topic(name, SEGMENT);
        let time_end = now_nanos().saturating_add(duration_nanos(self.config.max_future));
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = QueryRequest {
            request_id: format!("pqmls-{n}"),
            include_data: true,
            pubsub_topic: Some(self.shard.to_string()),
            content_topics: vec![whole.clone(), seg.clone()],
            time_start,
            time_end: Some(time_end),
            pagination_forward: forward,
            pagination_limit: Some(PAGE),
            ..QueryRequest::default()
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Entries read, kept or not: a store that keeps answering with a cursor (empty
        // pages, entries of other topics) is not followed for ever.
        let mut read = 0usize;
        let max_read = max_messages.saturating_mul(2).saturating_add(PAGE as usize);
        loop {
            let response = self.node.store_query(peer, request.clone()).await?;
            if response.messages.is_empty() {
                return Ok((out, false));
            }
            read = read.saturating_add(response.messages.len());
            for kv in response.messages {
                // A store may answer anything: keep only what was asked for.
                let Some(m) = kv.message else { continue };
                let segment = if m.content_topic == whole {
                    false
                } else if m.content_topic == seg {
                    true
                } else {
                    continue;
                };
                let Some(timestamp) = m.timestamp else {
                    continue;
                };
                if timestamp >= time_end || time_start.is_some_and(|s| timestamp < s) {
                    continue;
                }
                if out.len() >= max_messages || bytes.saturating_add(m.payload.len()) > max_bytes {
                    return Ok((out, true));
                }
                bytes += m.payload.len();
                out.push(Stored {
                    timestamp,
                    segment,
                    payload: m.payload,
                });
            }
            match response.pagination_cursor {
                Some(_) if read >= max_read => return Ok((out, true)),
                Some(c) => request.pagination_cursor = Some(c),
                None => return Ok((out, false)),
            }
        }
    }

    /// Whole payloads of stored messages, with the timestamp of the message (or of the
    /// segment that completed it); segments that do not complete a payload within the
    /// segmentation bounds are dropped.
    ///
    /// Anyone can publish a segment that claims to belong to someone else's message, with
    /// the same timestamp, and the store may order it first: the first reassembly then
    /// fails its hash. Such messages are tried again ([`retry`]) from the segments the
    /// store holds for them.
    ///
    /// Segments are grouped by the hash of the message they claim to belong
    /// to, in order of first appearance, and each group is reassembled on its own, so
    /// that segments of other messages (a stranger's fake first segments by the hundred)
    /// cannot evict a genuine message's segments from the reassembler's bounded state, as
    /// they could when all went through one (DESIGN, "Over Waku", flood finding 2). The
    /// page is bounded in bytes already; a group costs no more than its segments.
    fn assemble(&self, stored: Vec<Stored>) -> Vec<(i64, Vec<u8>)> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_of: HashMap<Vec<u8>, usize> = HashMap::new();
        for (i, s) in stored.iter().enumerate() {
            if !s.segment {
                out.push((s.timestamp, s.payload.clone()));
                continue;
            }
            let Ok(m) = SegmentMessage::decode(s.payload.as_slice()) else {
                continue;
            };
            let next = groups.len();
            let g = *group_of.entry(m.entire_message_hash).or_insert(next);
            if g == next {
                groups.push(Vec::new());
            }
            if let Some(members) = groups.get_mut(g) {
                members.push(i);
            }
        }
        // Messages whose reassembly failed its hash, with the bytes their segments hold.
        let mut failed: Vec<(usize, Vec<u8>)> = Vec::new();
        for members in &groups {
            let mut reassembler = Reassembler::new(self.config.segmentation.clone());
            let mut mismatch: Option<Vec<u8>> = None;
            let mut completed = false;
            for s in members.iter().filter_map(|i| stored.get(*i)) {
                match reassembler.push(&s.payload, now) {
                    Ok(Some(whole)) => {
                        out.push((s.timestamp, whole));
                        completed = true;
                        break;
                    }
                    // Later segments of a failed reassembly can still complete it.
                    Err(segmentation::SegmentError::HashMismatch) => {
                        mismatch = SegmentMessage::decode(s.payload.as_slice())
                            .ok()
                            .map(|m| m.entire_message_hash);
                    }
                    _ => {}
                }
            }
            if !completed && let Some(hash) = mismatch {
                let bytes = members
                    .iter()
                    .filter_map(|i| stored.get(*i))
                    .map(|s| s.payload.len())
                    .sum();
                failed.push((bytes, hash));
            }
        }
        // The largest first (stable: then in order of appearance): a stranger's cheap
        // failing messages (single tiny segments) cannot use up the retries ahead of a
        // real payload whose segment was forged; outranking it costs the stranger as many
        // bytes per message as the payload has.
        failed.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        failed.truncate(MAX_RETRIED_MESSAGES);
        for (_, hash) in &failed {
            if let Some(r) = retry(&self.config.segmentation, &stored, hash) {
                out.push(r);
            }
        }
        out
    }

    async fn history_impl(&self, topic: &Topic, from: Cursor) -> pqmls_transport::Result<Page> {
        let lookback = if from.after_id().is_some() {
            u64::try_from(self.config.lookback.as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        let start_ms = from.after_ms().saturating_sub(lookback);
        let time_start = (start_ms > 0).then(|| ms_to_nanos(start_ms));
        // Taken once for the whole read, whichever store answers ([`Continuations`]).
        let continued = self
            .shared
            .continuations
            .lock()
            .ok()
            .and_then(|mut c| c.take(topic, from));
        self.first_store(|peer| self.history_peer(peer, topic, from, time_start, continued))
            .await
    }

    /// One page of `topic`'s history from `peer`: the hashes of the messages stamped from
    /// `time_start` on, then by hash the messages among them that the client has not
    /// handled (module documentation, "Catch-up by hash").
    async fn history_peer(
        &self,
        peer: PeerId,
        topic: &Topic,
        from: Cursor,
        time_start: Option<i64>,
        continued: Option<Continuation>,
    ) -> pqmls_transport::Result<Page> {
        let name = topic_name(topic);
        let whole = content_topic(name, WHOLE);
        let seg = content_topic(name, SEGMENT);
        let time_end = now_nanos().saturating_add(duration_nanos(self.config.max_future));
        let max_messages = self.config.history_messages;
        let max_bytes = self.config.history_bytes;

        // 1. The hashes, oldest first, at most `max_read` of them (a store that keeps
        // answering with a cursor, or one page of thousands, is not followed): past the
        // bound the page is cut and the next one starts at the last whole millisecond.
        let max_read = max_messages.saturating_mul(2).saturating_add(PAGE as usize);
        let mut request = QueryRequest {
            request_id: self.request_id(),
            include_data: false,
            pubsub_topic: Some(self.shard.to_string()),
            content_topics: vec![whole.clone(), seg.clone()],
            time_start,
            time_end: Some(time_end),
            pagination_forward: true,
            pagination_limit: Some(PAGE),
            ..QueryRequest::default()
        };
        // A page that stopped inside this millisecond goes on where it stopped, in the
        // order of the store it read (another store reads the millisecond from its start).
        if let Some(c) = continued.filter(|c| c.store == peer) {
            request.pagination_cursor = Some(c.after.to_vec());
        }
        let mut listed: Vec<[u8; 32]> = Vec::new();
        let mut unique: HashSet<[u8; 32]> = HashSet::new();
        let mut read = 0usize;
        let mut cut = false;
        'listing: loop {
            let response = self.node.store_query(peer, request.clone()).await?;
            if response.messages.is_empty() {
                break;
            }
            for kv in &response.messages {
                read += 1;
                if read > max_read {
                    cut = true;
                    break 'listing;
                }
                if let Some(h) = kv
                    .message_hash
                    .as_deref()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    && unique.insert(h)
                {
                    listed.push(h);
                }
            }
            match response.pagination_cursor {
                Some(_) if read >= max_read => {
                    cut = true;
                    break;
                }
                Some(c) => request.pagination_cursor = Some(c),
                None => break,
            }
        }

        // 2. What we hold already: handled by the client, or our own publication.
        let now = Instant::now();
        let range = (time_start, time_end);
        let classes: Vec<Listed> = match self.shared.known.lock() {
            Ok(mut k) => listed
                .iter()
                .map(|h| k.listed(h, topic, range, now))
                .collect(),
            Err(_) => vec![Listed::Fetch; listed.len()],
        };

        // 3. The rest by hash, in listed order, MAX_HASHES a request, at most
        // `max_messages` of them and within the page's bounds. A store may answer
        // anything: only messages that hash to a hash asked for, of this topic's two
        // content topics and within the time range, are kept; everything read, kept or
        // not, counts against the bounds, and a lookup that brings nothing asked for
        // ends the lookups.
        let mut wanted: Vec<usize> = (0..listed.len())
            .filter(|i| matches!(classes.get(*i), Some(Listed::Fetch)))
            .collect();
        // The first listed position this page leaves for the next one.
        let mut end = listed.len();
        if wanted.len() > max_messages {
            end = wanted[max_messages];
            wanted.truncate(max_messages);
            cut = true;
        }
        let mut fetched: HashMap<[u8; 32], Stored> = HashMap::new();
        let mut bytes = 0usize;
        let mut entries_read = 0usize;
        // The position in `wanted` of the lookup the bounds or the store interrupted.
        let mut stopped: Option<usize> = None;
        // Whether the store, not the page's bounds, interrupted the lookups.
        let mut refused = false;
        'batches: for (b, batch) in wanted.chunks(MAX_HASHES).enumerate() {
            let batch_start = b * MAX_HASHES;
            let order: Vec<[u8; 32]> = batch
                .iter()
                .filter_map(|i| listed.get(*i).copied())
                .collect();
            let asked: HashSet<[u8; 32]> = order.iter().copied().collect();
            let mut request = QueryRequest {
                request_id: self.request_id(),
                include_data: true,
                message_hashes: order.iter().map(|h| h.to_vec()).collect(),
                pagination_forward: true,
                pagination_limit: Some(PAGE),
                ..QueryRequest::default()
            };
            let mut got = 0usize;
            loop {
                let response = self.node.store_query(peer, request.clone()).await?;
                let got_before = got;
                for kv in response.messages {
                    let Some(m) = kv.message else { continue };
                    entries_read += 1;
                    if entries_read > max_read || bytes.saturating_add(m.payload.len()) > max_bytes
                    {
                        stopped = Some(batch_start);
                        break 'batches;
                    }
                    let hash = message_hash(&self.shared.shard, &m).0;
                    let segment = if m.content_topic == whole {
                        false
                    } else if m.content_topic == seg {
                        true
                    } else {
                        continue;
                    };
                    let Some(timestamp) = m.timestamp else {
                        continue;
                    };
                    if !asked.contains(&hash)
                        || fetched.contains_key(&hash)
                        || timestamp >= time_end
                        || time_start.is_some_and(|s| timestamp < s)
                    {
                        continue;
                    }
                    bytes += m.payload.len();
                    got += 1;
                    fetched.insert(
                        hash,
                        Stored {
                            timestamp,
                            segment,
                            payload: m.payload,
                        },
                    );
                }
                if got == got_before {
                    // Nothing asked for on this page: a store that will not answer
                    // lookups (or pages for ever) is not asked again in this read.
                    if got == 0 {
                        stopped = Some(batch_start);
                        refused = true;
                        break 'batches;
                    }
                    break;
                }
                match response.pagination_cursor {
                    // The store split its answer (bytes): follow it while something is
                    // still missing.
                    Some(c) if got < asked.len() => request.pagination_cursor = Some(c),
                    _ => break,
                }
            }
        }
        // Bounds hit, or lookups refused: the page ends before the first hash of the
        // interrupted lookup not fetched (earlier gaps stay missing, see below), and the
        // next page starts there.
        if let Some(from_batch) = stopped {
            if fetched.is_empty() && !wanted.is_empty() {
                // A store that lists but will not look up: ask the next one.
                return Err(Error::Request(
                    "the store answered no lookup by hash".into(),
                ));
            }
            if let Some(first) = wanted
                .iter()
                .skip(from_batch)
                .copied()
                .find(|i| listed.get(*i).is_none_or(|h| !fetched.contains_key(h)))
            {
                end = end.min(first);
                cut = true;
            }
        }
        self.shared
            .fetched
            .fetch_add(fetched.len() as u64, Ordering::Relaxed);

        // 4. The page, in the store's (time) order: what was left out is skipped, what
        // we hold comes from memory, the rest as read.
        enum Entry {
            Skipped(MessageId),
            Held(Message),
            Read(Stored),
            /// Listed, asked for, not returned (a store pruning, or lying).
            Missing,
        }
        let mut entries: Vec<(i64, Entry, Option<[u8; 32]>)> = Vec::new();
        // The listed hash of the last entry this page takes (not one that did not come).
        let mut last_taken: Option<[u8; 32]> = None;
        for (hash, class) in listed.iter().zip(classes).take(end) {
            if !matches!(class, Listed::Fetch) || fetched.contains_key(hash) {
                last_taken = Some(*hash);
            }
            match class {
                Listed::Handled(id, ts) => entries.push((ts, Entry::Skipped(id), None)),
                Listed::Own(m, ts) => entries.push((ts, Entry::Held(m), None)),
                Listed::Fetch => match fetched.remove(hash) {
                    Some(s) => entries.push((s.timestamp, Entry::Read(s), Some(*hash))),
                    // No timestamp to order it by: it only holds the cursor back.
                    None => entries.push((i64::MAX, Entry::Missing, None)),
                },
            }
        }
        let incomplete = entries.iter().any(|(_, e, _)| matches!(e, Entry::Missing));
        entries.retain(|(_, e, _)| !matches!(e, Entry::Missing));
        let mut next = None;
        let mut stalled = false;
        let start_ms = time_start.map_or(0, nanos_to_ms);
        if cut && let Some(last) = entries.last().map(|(ts, _, _)| nanos_to_ms(*ts)) {
            if last > start_ms {
                // Keep whole milliseconds only (all segments of a payload share one
                // timestamp, so none is split); the next page starts at `last`, and
                // whatever this page left out at or after it is listed again.
                entries.retain(|(ts, _, _)| nanos_to_ms(*ts) < last);
                next = Some(Cursor::from_parts(last, None));
            } else if !refused {
                // More than the page's bounds within the first millisecond read: a flood
                // (or a busy instant). Take what was read; the next page goes on within
                // the millisecond from the store's position after the last message this
                // page took ([`Continuations`]), or, past their bound, after it.
                let go_on = last_taken.is_some_and(|after| {
                    self.shared
                        .continuations
                        .lock()
                        .is_ok_and(|mut c| c.record(topic, last, peer, after, continued))
                });
                next = Some(if go_on {
                    Cursor::from_parts(last, None)
                } else {
                    Cursor::from_parts(last.saturating_add(1), None)
                });
            } else {
                // The store stopped answering lookups before a hash within the first
                // millisecond read: no way forward without passing it. Return what
                // came; the cursor stays (no `next`, no `resume`) and a later read lists
                // it again (from this store: a store that keeps refusing it holds this
                // topic's catch-up there, as one that withholds a message does).
                stalled = true;
            }
        }
        let mut skipped: Option<(i64, MessageId)> = None;
        let mut left_out = 0u64;
        let mut held = Vec::new();
        let mut stored = Vec::new();
        let mut read_whole = Vec::new();
        let mut read_segments = Vec::new();
        let mut segments = false;
        for (ts, e, hash) in entries {
            match e {
                Entry::Skipped(id) => {
                    left_out += 1;
                    if skipped.is_none_or(|(t, _)| ts >= t) {
                        skipped = Some((ts, id));
                    }
                }
                Entry::Held(m) => {
                    left_out += 1;
                    held.push(m);
                }
                Entry::Read(s) => {
                    segments |= s.segment;
                    if let Some(h) =
                        hash.filter(|_| !s.segment && Wire::decode(&s.payload).is_some())
                    {
                        read_whole.push((h, s.timestamp, MessageId::compute(topic, &s.payload)));
                    } else if let Some(h) = hash.filter(|_| s.segment)
                        && let Ok(m) = SegmentMessage::decode(s.payload.as_slice())
                    {
                        read_segments.push((h, s.timestamp, m.entire_message_hash));
                    }
                    stored.push(s);
                }
                Entry::Missing => {}
            }
        }
        self.shared.left_out.fetch_add(left_out, Ordering::Relaxed);
        // Whole pqmls messages read are remembered like relay's, so that once the client
        // has handled them the next read leaves them out too.
        if let Ok(mut k) = self.shared.known.lock() {
            for (h, ts, id) in read_whole {
                k.note(id, topic, h, ts, now);
            }
        }
        // Segments of payloads relay completed (those relay did not bring, parity
        // typically), likewise.
        if !read_segments.is_empty()
            && let Ok(s) = self.shared.segment_hashes.lock()
            && let Ok(mut k) = self.shared.known.lock()
        {
            for (h, ts, entire) in read_segments {
                if let Some((id, t)) = s.completed.get(entire.as_slice())
                    && t == topic
                {
                    k.note_segments(*id, t, &[(h, ts)], now);
                }
            }
        }
        let mut messages: Vec<Message> = self
            .assemble(stored)
            .into_iter()
            .filter(|(_, data)| Wire::decode(data).is_some())
            .map(|(ts, data)| Message {
                id: MessageId::compute(topic, &data),
                topic: topic.clone(),
                data,
                received: ms_time(nanos_to_ms(ts)),
            })
            .chain(held)
            .collect();
        messages.sort_by_key(|a| (a.received, a.id));
        // On the last page, left-out messages after the last one returned: the cursor
        // goes past them, forward only, and not past anything listed that did not come
        // (missing, or segments that may not have assembled).
        let resume = skipped
            .filter(|(ts, _)| {
                next.is_none()
                    && !stalled
                    && !incomplete
                    && !segments
                    && nanos_to_ms(*ts) > from.after_ms()
                    && messages
                        .last()
                        .is_none_or(|m| ms_time(nanos_to_ms(*ts)) >= m.received)
            })
            .map(|(ts, id)| Cursor::from_parts(nanos_to_ms(ts), Some(id)));
        // The last page of a millisecond read in several (a flood at one instant): the
        // cursor goes past that millisecond unless a message returned is later, so that
        // the next catch-up does not read the flood again from its start.
        let resume = match continued {
            Some(c)
                if next.is_none()
                    && !stalled
                    && !incomplete
                    && messages.last().is_none_or(|m| m.received <= ms_time(c.ms))
                    && resume.is_none_or(|r| r.after_ms() <= c.ms) =>
            {
                Some(Cursor::from_parts(c.ms.saturating_add(1), None))
            }
            _ => resume,
        };
        Ok(Page {
            messages,
            next,
            resume,
        })
    }

    fn request_id(&self) -> String {
        format!("pqmls-{}", self.requests.fetch_add(1, Ordering::Relaxed))
    }

    async fn get_all_impl(&self, key: &[u8]) -> pqmls_transport::Result<Vec<Vec<u8>>> {
        let max = self.config.directory_candidates;
        let (stored, _) = self
            .query(
                &directory_name(key),
                None,
                false,
                // Plants are dropped below, before the cut: read as far as a history
                // call may, so that they must outnumber that, not `max`, to hide anything.
                max.saturating_mul(4).max(self.config.history_messages),
                self.config.history_bytes,
            )
            .await?;
        // The query went backwards (newest pages first), but each page is in time order:
        // sort, newest first.
        let mut found: Vec<(i64, Vec<u8>)> = self
            .assemble(stored)
            .into_iter()
            .filter_map(|(ts, m)| decode_directory(&m, key).map(|b| (ts, b.to_vec())))
            .collect();
        found.sort_by_key(|(ts, _)| std::cmp::Reverse(*ts));
        // Anyone can publish on a key's content topic and no Waku store checks writers:
        // entries that do not pass the directory's rule (signed by the key's owner, not
        // expired) go before the cut, or newer plants would push the owner's entries out
        // (flood finding 6 of sdk/DESIGN.md "Over Waku"). The readers check again.
        let rule = &self.directory_rule;
        let mut out: Vec<Vec<u8>> = found
            .into_iter()
            .map(|(_, b)| b)
            .filter(|b| rule(key, None, b))
            .collect();
        out.truncate(max);
        Ok(out)
    }
}

/// Segmented messages of one history read whose reassembly is tried again.
const MAX_RETRIED_MESSAGES: usize = 16;
/// Distinct candidates kept for one segment slot (data or parity index) in a retry.
const MAX_CANDIDATES: usize = 4;
/// Combinations of conflicting candidates tried for one message.
const MAX_TRIES: usize = 16;

/// Reassembles the message `hash` from every stored segment claiming it, when more than
/// one distinct segment claims a slot: first from the slots with a single candidate only
/// (parity recovers up to its count of disputed slots), then from combinations of the
/// candidates, at most [`MAX_TRIES`]. Only a payload matching `hash` comes out.
fn retry(config: &segmentation::Config, stored: &[Stored], hash: &[u8]) -> Option<(i64, Vec<u8>)> {
    let mut slots: std::collections::BTreeMap<(bool, u32), Vec<&[u8]>> = Default::default();
    let mut timestamp = i64::MIN;
    for s in stored.iter().filter(|s| s.segment) {
        let Ok(m) = SegmentMessage::decode(s.payload.as_slice()) else {
            continue;
        };
        if m.entire_message_hash != hash {
            continue;
        }
        timestamp = timestamp.max(s.timestamp);
        let index = if m.is_parity {
            m.parity_segment_index
        } else {
            m.data_segment_index
        };
        let c = slots.entry((m.is_parity, index)).or_default();
        if c.len() < MAX_CANDIDATES && !c.contains(&s.payload.as_slice()) {
            c.push(&s.payload);
        }
    }
    let now = Instant::now();
    let attempt = |choose: &dyn Fn(usize, usize) -> Option<usize>| -> Option<Vec<u8>> {
        let mut r = Reassembler::new(config.clone());
        for (slot, candidates) in slots.values().enumerate() {
            let Some(i) = choose(slot, candidates.len()) else {
                continue;
            };
            match candidates.get(i).map(|c| r.push(c, now)) {
                Some(Ok(Some(whole))) => return Some(whole),
                Some(Err(segmentation::SegmentError::HashMismatch)) => return None,
                _ => {}
            }
        }
        None
    };
    if let Some(whole) = attempt(&|_, n| (n == 1).then_some(0)) {
        return Some((timestamp, whole));
    }
    let radices: Vec<usize> = slots.values().map(Vec::len).collect();
    for t in 0..MAX_TRIES {
        // The t-th combination, in mixed radix over the slots' candidate counts.
        let mut digits = vec![0usize; radices.len()];
        let mut rest = t;
        for (d, n) in digits.iter_mut().zip(&radices) {
            *d = rest % n.max(&1);
            rest /= n.max(&1);
        }
        if rest > 0 {
            break;
        }
        if let Some(whole) = attempt(&|slot, _| digits.get(slot).copied()) {
            return Some((timestamp, whole));
        }
    }
    None
}

impl Shared {
    /// Maps an accepted relay message to a pqmls message, or drops it.
    fn accept(&self, m: WakuMessage, received: SystemTime) -> Option<Message> {
        // The Waku hash of a message of a subscribed topic, so that history reads can
        // leave it out once the client has handled its payload ("Catch-up by hash"); a
        // segment's, with the hash of the payload it carries.
        let noted = parse_content_topic(&m.content_topic)
            .filter(|(topic, _)| self.subscribed.lock().is_ok_and(|s| s.contains(topic)))
            .map(|(topic, segment)| {
                let entire = segment
                    .then(|| SegmentMessage::decode(m.payload.as_slice()).ok())
                    .flatten()
                    // A payload hash of another length is refused by the reassembler.
                    .and_then(|s| <[u8; 32]>::try_from(s.entire_message_hash.as_slice()).ok());
                (
                    topic,
                    entire,
                    message_hash(&self.shard, &m).0,
                    m.timestamp.unwrap_or(0),
                )
            });
        let now = Instant::now();
        if let Some((topic, Some(entire), hash, timestamp)) = &noted {
            let done = self
                .segment_hashes
                .lock()
                .ok()
                .and_then(|mut s| s.push(entire, *hash, *timestamp));
            // A segment of a payload already delivered (parity after completion).
            if let Some((id, t)) = done
                && t == *topic
                && let Ok(mut k) = self.known.lock()
            {
                k.note_segments(id, &t, &[(*hash, *timestamp)], now);
            }
        }
        let Some(out) = self.map(m, received) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        match noted {
            Some((_, None, hash, timestamp)) => {
                if let Ok(mut k) = self.known.lock() {
                    k.note(out.id, &out.topic, hash, timestamp, now);
                }
            }
            Some((_, Some(entire), _, _)) => {
                let segments = self
                    .segment_hashes
                    .lock()
                    .map(|mut s| s.complete(&entire, out.id, &out.topic))
                    .unwrap_or_default();
                if let Ok(mut k) = self.known.lock() {
                    k.note_segments(out.id, &out.topic, &segments, now);
                }
            }
            None => {}
        }
        // A copy of a payload seen within the window (another member's republication of
        // it, or our own coming back): not delivered again.
        let new = self
            .recent
            .lock()
            .map(|mut r| r.insert(out.id, Instant::now()))
            .unwrap_or(true);
        if !new {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(out)
    }

    fn map(&self, m: WakuMessage, received: SystemTime) -> Option<Message> {
        let (topic, segment) = parse_content_topic(&m.content_topic)?;
        if !self.subscribed.lock().ok()?.contains(&topic) {
            return None;
        }
        let data = if segment {
            // Reassembled per content topic: a segment replayed, or forged, under another
            // topic cannot fill a slot of this one's message (DESIGN, "Over Waku", flood
            // finding 3).
            let scope: [u8; 32] = Sha256::digest(m.content_topic.as_bytes()).into();
            let whole = self
                .reassembler
                .lock()
                .ok()?
                .push_in(scope, &m.payload, Instant::now())
                .ok()??;
            self.reassembled.fetch_add(1, Ordering::Relaxed);
            whole
        } else {
            m.payload
        };
        Wire::decode(&data)?;
        Some(Message {
            id: MessageId::compute(&topic, &data),
            topic,
            data,
            received,
        })
    }
}

impl Transport for WakuTransport {
    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
        Box::pin(async move {
            let insert = || {
                if let Ok(mut s) = self.shared.subscribed.lock() {
                    s.insert(topic.clone());
                }
            };
            match &self.light {
                // Wanted from now on, even if this subscription failed: the light watcher
                // makes it later, and what filter then pushes must be taken.
                Some(light) => {
                    insert();
                    light.subscribe(topic).await
                }
                // Relay is per shard; the node keeps the shard after the last unsubscribe.
                None => {
                    self.node.relay_subscribe(self.shard.shard).await?;
                    insert();
                    Ok(())
                }
            }
        })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
        Box::pin(async move {
            if let Ok(mut s) = self.shared.subscribed.lock() {
                s.remove(topic);
            }
            if let Some(light) = &self.light {
                light.unsubscribe(topic).await?;
            }
            Ok(())
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a Topic,
        data: Vec<u8>,
    ) -> BoxFuture<'a, pqmls_transport::Result<MessageId>> {
        Box::pin(async move {
            let id = MessageId::compute(topic, &data);
            let seen = self
                .shared
                .recent
                .lock()
                .map(|mut r| r.contains(&id, Instant::now()))
                .unwrap_or(false);
            if seen {
                self.shared
                    .duplicates_not_published
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Error::Duplicate);
            }
            let whole = self.publish_named(topic_name(topic), &data).await?;
            if let Ok(mut r) = self.shared.recent.lock() {
                r.insert(id, Instant::now());
            }
            if let Ok(mut k) = self.shared.known.lock() {
                match whole {
                    Some((hash, timestamp)) => {
                        k.note_own(topic, &data, hash, timestamp, Instant::now());
                    }
                    None => k.note_own_segmented(topic, &data, Instant::now()),
                }
            }
            Ok(id)
        })
    }

    fn put(&self, key: Vec<u8>, blob: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<()>> {
        Box::pin(async move {
            let payload = encode_directory(&key, &blob);
            self.publish_named(&directory_name(&key), &payload)
                .await
                .map(|_| ())
        })
    }

    fn get(&self, key: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<Option<Vec<u8>>>> {
        Box::pin(async move { Ok(self.get_all_impl(&key).await?.into_iter().next()) })
    }

    fn get_all(&self, key: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<Vec<Vec<u8>>>> {
        Box::pin(async move { self.get_all_impl(&key).await })
    }

    fn history<'a>(
        &'a self,
        topic: &'a Topic,
        from: Cursor,
    ) -> BoxFuture<'a, pqmls_transport::Result<Page>> {
        Box::pin(self.history_impl(topic, from))
    }

    fn handled(&self, id: &MessageId) {
        if let Ok(mut k) = self.shared.known.lock() {
            k.handled(id);
        }
    }

    fn connected(&self) -> bool {
        self.node.counters().connected_peers > 0
    }

    fn duplicate_window(&self) -> Option<std::time::Duration> {
        // Within it a payload we published or received is not published again (while
        // the bounded cache holds its id; a flood that evicts it only lets a copy out).
        Some(self.config.duplicate_window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_that_failed_are_asked_last_for_a_while_and_stay_bounded() {
        let now = Instant::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut f = Failures::default();
        assert_eq!(f.order(vec![a, b, c], now), vec![a, b, c]);
        f.failed(a, now);
        f.failed(b, now);
        assert_eq!(f.order(vec![a, b, c], now), vec![c, a, b]);
        // Success clears it; the cool-down ends by itself.
        f.succeeded(&b);
        assert_eq!(f.order(vec![a, b, c], now), vec![b, c, a]);
        assert_eq!(f.order(vec![a, b, c], now + STORE_COOL_DOWN), vec![a, b, c]);
        // Bounded: the one that recovers soonest makes room.
        let mut f = Failures::default();
        for i in 0..MAX_FAILED_STORES + 10 {
            f.failed(PeerId::random(), now + Duration::from_millis(i as u64));
        }
        assert_eq!(f.until.len(), MAX_FAILED_STORES);
    }

    #[test]
    fn a_millisecond_is_continued_by_the_next_page_only_and_a_bounded_number_of_times() {
        let t = Topic::from_group_id(b"g");
        let u = Topic::from_group_id(b"u");
        let mut c = Continuations::default();
        let at = |ms| Cursor::from_parts(ms, None);
        let (a, b) = (PeerId::random(), PeerId::random());
        // A page stopped inside ms 7: the next read from ms 7 goes on after its hash.
        assert!(c.record(&t, 7, a, [1; 32], None));
        let first = c.take(&t, at(7)).expect("continued");
        assert_eq!((first.ms, first.after, first.pages), (7, [1; 32], 1));
        assert_eq!(first.store, a);
        // Taken: a second read from ms 7 starts the millisecond again.
        assert!(c.take(&t, at(7)).is_none());
        // Any other read of the topic drops it: another millisecond, or a cursor after a
        // message (a later catch-up after one that failed half-way).
        assert!(c.record(&t, 7, a, [2; 32], Some(first)));
        assert!(c.take(&t, at(8)).is_none());
        assert!(c.take(&t, at(7)).is_none());
        assert!(c.record(&t, 7, a, [2; 32], Some(first)));
        let m = Message {
            id: MessageId::compute(&t, b"x"),
            topic: t.clone(),
            data: b"x".to_vec(),
            received: std::time::UNIX_EPOCH + Duration::from_millis(7),
        };
        assert!(c.take(&t, Cursor::after(&m)).is_none());
        // Topics are apart.
        assert!(c.record(&u, 7, a, [3; 32], None));
        assert!(c.take(&t, at(7)).is_none());
        assert_eq!(c.take(&u, at(7)).map(|c| c.after), Some([3; 32]));
        // Pages of one millisecond count together whichever store read them.
        assert!(c.record(&t, 8, b, [5; 32], Some(first)));
        let from_b = c.take(&t, at(8)).unwrap();
        assert_eq!((from_b.store, from_b.pages), (b, 1));
        assert!(c.record(&t, 8, a, [6; 32], Some(from_b)));
        assert_eq!(c.take(&t, at(8)).map(|p| (p.store, p.pages)), Some((a, 2)));
        // At most MAX_CONTINUATIONS pages in one millisecond; a new millisecond counts anew.
        let mut prev = None;
        for page in 1..=MAX_CONTINUATIONS {
            assert!(c.record(&t, 9, a, [4; 32], prev), "page {page}");
            prev = c.take(&t, at(9));
            assert_eq!(prev.map(|p| p.pages), Some(page));
        }
        assert!(!c.record(&t, 9, a, [4; 32], prev));
        assert!(c.take(&t, at(9)).is_none());
        assert!(c.record(&t, 10, a, [4; 32], prev));
        assert_eq!(c.take(&t, at(10)).map(|p| p.pages), Some(1));
        // At most MAX_CONTINUED_TOPICS topics at once.
        let mut c = Continuations::default();
        for i in 0..MAX_CONTINUED_TOPICS {
            let topic = Topic::from_group_id(&i.to_be_bytes());
            assert!(c.record(&topic, 1, a, [0; 32], None));
        }
        assert!(!c.record(&t, 1, a, [0; 32], None));
        assert_eq!(c.by_topic.len(), MAX_CONTINUED_TOPICS);
    }

    #[test]
    fn content_topics_round_trip_and_reject_others() {
        let t = Topic::from_group_id(b"g");
        let ct = content_topic(topic_name(&t), WHOLE);
        assert!(ct.starts_with("/pqmls/1/") && ct.ends_with("/proto"));
        assert!(ContentTopic::parse(&ct).is_some());
        assert_eq!(parse_content_topic(&ct), Some((t.clone(), false)));
        let seg = content_topic(topic_name(&t), SEGMENT);
        assert_eq!(parse_content_topic(&seg), Some((t, true)));
        for bad in [
            "/pqmls/1/xyz/proto",
            "/other/1/abc/proto",
            "/pqmls/1/kp-00/proto",
        ] {
            assert_eq!(parse_content_topic(bad), None, "{bad}");
        }
    }

    #[test]
    fn recent_ids_expire_after_the_window_and_stay_bounded() {
        let id = |b: u8| MessageId([b; 32]);
        let t0 = Instant::now();
        let w = Duration::from_secs(120);
        let mut r = Recent::new(w, 3);
        assert!(r.insert(id(1), t0));
        assert!(!r.insert(id(1), t0 + Duration::from_secs(60)));
        // The window runs from the first sighting, not the last.
        assert!(r.contains(&id(1), t0 + Duration::from_secs(119)));
        assert!(!r.contains(&id(1), t0 + w));
        assert!(r.insert(id(1), t0 + w));
        // At most `cap` ids: the oldest goes first.
        for b in 2..=4 {
            assert!(r.insert(id(b), t0 + w));
        }
        assert_eq!((r.first_seen.len(), r.order.len()), (3, 3));
        assert!(!r.contains(&id(1), t0 + w));
        assert!(r.contains(&id(4), t0 + w));
    }

    #[test]
    fn what_history_leaves_out_is_handled_or_own_and_stays_bounded() {
        let id = |b: u8| MessageId([b; 32]);
        let h = |b: u8, i: u8| [b ^ i.wrapping_mul(101); 32];
        let t0 = Instant::now();
        let w = Duration::from_secs(240);
        let topic = Topic::from_group_id(b"g");
        let other = Topic::from_group_id(b"another");
        let all = (None, i64::MAX);
        let mut k = Known::new(w, 3);
        k.note(id(1), &topic, h(1, 0), 5, t0);
        // Delivered but not handled (the client may have deferred it): fetched.
        assert!(matches!(k.listed(&h(1, 0), &topic, all, t0), Listed::Fetch));
        k.handled(&id(1));
        assert!(matches!(k.listed(&h(1, 0), &topic, all, t0), Listed::Handled(i, 5) if i == id(1)));
        // Only where it was seen: listed under another topic, or with its timestamp
        // outside the range read, it is fetched (and checked) instead.
        assert!(matches!(k.listed(&h(1, 0), &other, all, t0), Listed::Fetch));
        assert!(matches!(
            k.listed(&h(1, 0), &topic, (Some(6), i64::MAX), t0),
            Listed::Fetch
        ));
        assert!(matches!(
            k.listed(&h(1, 0), &topic, (None, 5), t0),
            Listed::Fetch
        ));
        // A copy under another Waku hash noted after the report is left out too; at most
        // MAX_HASHES_PER_ID hashes per id.
        for i in 1..10 {
            k.note(id(1), &topic, h(1, i), 6, t0);
        }
        assert!(matches!(
            k.listed(&h(1, 1), &topic, all, t0),
            Listed::Handled(..)
        ));
        assert_eq!(k.hashes.len(), MAX_HASHES_PER_ID);
        // Unknown hashes are fetched; an expired id is forgotten.
        assert!(matches!(k.listed(&h(9, 0), &topic, all, t0), Listed::Fetch));
        assert!(matches!(
            k.listed(&h(1, 0), &topic, all, t0 + w),
            Listed::Fetch
        ));
        assert!(k.ids.is_empty() && k.hashes.is_empty());
        // Own publications: from memory within the byte budget, fetched beyond it, and
        // returned even when reported handled (they are the delivery evidence).
        let big = vec![7u8; OWN_PAYLOAD_BYTES / 2 + 1];
        k.note_own(&topic, &big, h(2, 0), 1, t0);
        k.handled(&MessageId::compute(&topic, &big));
        k.note_own(&topic, &[8u8; 16], h(3, 0), 2, t0);
        let mut big2 = big.clone();
        big2[0] = 1;
        k.note_own(&topic, &big2, h(4, 0), 3, t0);
        k.handled(&MessageId::compute(&topic, &big2));
        assert!(
            matches!(k.listed(&h(2, 0), &topic, all, t0), Listed::Own(ref m, 1) if m.data == big)
        );
        assert!(matches!(
            k.listed(&h(3, 0), &topic, all, t0),
            Listed::Own(..)
        ));
        assert!(matches!(k.listed(&h(4, 0), &topic, all, t0), Listed::Fetch));
        assert!(k.own_bytes <= OWN_PAYLOAD_BYTES);
        // At most `cap` ids: the oldest goes first, and its bytes with it.
        k.note(id(5), &topic, h(5, 0), 4, t0);
        assert_eq!(k.ids.len(), 3);
        assert!(matches!(k.listed(&h(2, 0), &topic, all, t0), Listed::Fetch));
        assert_eq!(k.own_bytes, 16);
        // An own payload sent in segments: its segments are fetched even when handled
        // (a light client's own publication comes back through filter first).
        let mut k2 = Known::new(w, 3);
        let seg_id = MessageId::compute(&topic, b"segmented");
        k2.note_segments(seg_id, &topic, &[(h(6, 0), 7)], t0);
        k2.handled(&seg_id);
        assert!(matches!(
            k2.listed(&h(6, 0), &topic, all, t0),
            Listed::Handled(..)
        ));
        k2.note_own_segmented(&topic, b"segmented", t0);
        assert!(matches!(
            k2.listed(&h(6, 0), &topic, all, t0),
            Listed::Fetch
        ));
    }

    #[test]
    fn segment_hashes_stay_bounded_and_follow_completion() {
        let topic = Topic::from_group_id(b"g");
        let mut s = SegmentHashes::new(2);
        // At most MAX_TOTAL_SEGMENTS hashes for one payload, duplicates once.
        for i in 0..(MAX_TOTAL_SEGMENTS + 10) {
            let h = [u8::try_from(i % 251).unwrap_or(0); 32];
            let mut h2 = h;
            h2[1] = u8::try_from(i / 251).unwrap_or(0);
            assert!(s.push(&[1u8; 32], h2, 1).is_none());
        }
        assert_eq!(s.pending[&[1u8; 32]].len(), MAX_TOTAL_SEGMENTS);
        // At most `cap` payloads in reassembly: the oldest goes first.
        s.push(&[2u8; 32], [1; 32], 1);
        s.push(&[3u8; 32], [2; 32], 1);
        assert_eq!(s.pending.len(), 2);
        assert!(!s.pending.contains_key(&[1u8; 32]));
        // Completion hands the segments over; a later segment names the payload's id.
        let id = MessageId([5; 32]);
        assert_eq!(s.complete(&[2u8; 32], id, &topic), vec![([1; 32], 1)]);
        assert!(matches!(s.push(&[2u8; 32], [3; 32], 2), Some((i, _)) if i == id));
        assert_eq!(s.pending.len(), 1);
        // Completed payloads are bounded the same way.
        s.complete(&[3u8; 32], MessageId([6; 32]), &topic);
        s.complete(&[4u8; 32], MessageId([7; 32]), &topic);
        assert_eq!(s.completed.len(), 2);
        assert!(s.push(&[2u8; 32], [4; 32], 3).is_none());
    }

    #[test]
    fn directory_messages_name_their_key() {
        let m = encode_directory(b"k1", b"blob");
        assert_eq!(decode_directory(&m, b"k1"), Some(&b"blob"[..]));
        assert_eq!(decode_directory(&m, b"k2"), None);
        assert_eq!(decode_directory(&m[..7], b"k1"), None);
        assert_eq!(decode_directory(b"XXXX\0\0\0\x02k1", b"k1"), None);
        let owner = "ab".repeat(32);
        let kp = format!("pqmls/kp/v2/{owner}/0");
        let kp2 = format!("pqmls/kp/v2/{owner}/last-resort");
        assert_eq!(directory_name(kp.as_bytes()), format!("kp-{owner}"));
        assert_eq!(directory_name(kp2.as_bytes()), format!("kp-{owner}"));
        let claim = format!("pqmls/claim/v2/{owner}/{owner}");
        assert_eq!(directory_name(claim.as_bytes()), format!("claim-{owner}"));
        assert!(directory_name(b"other").starts_with("dir-"));
        for k in [kp.as_bytes(), claim.as_bytes(), b"other"] {
            assert!(ContentTopic::parse(&content_topic(&directory_name(k), WHOLE)).is_some());
        }
    }
}

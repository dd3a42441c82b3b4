//! The node: a libp2p swarm on its own tokio task, driven through a cloneable [`Node`] handle.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, identity, kad, mdns, noise,
    ping, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::message::{self, Message, MessageId, Topic, Validator, Verdict};
use crate::rate_limit::{self, Rate};
use crate::rpc::{self, Refusal, Request, Response};
use crate::slots;
use crate::store::{self, Cursor, Page, PageLimits, Store};
use crate::waku::framing::{Framed, ReadBudget, ReadSlots};
use crate::waku::{
    self, ContentTopic, MessageHash, PubsubTopic, WakuMessage, enr::Enr, filter, lightpush,
    metadata, peer_exchange, relay,
};

mod fresh_ports;
mod waku_filter;
mod waku_filter_push;
mod waku_lightpush;
mod waku_px;

pub use waku_filter::FilterInbound;

/// Identify protocol version: nodes of other networks are not confused with ours.
const IDENTIFY_PROTOCOL: &str = "/pqmls/0.1.0";
/// Kademlia protocol name, separate from the public IPFS DHT.
const KAD_PROTOCOL: &str = "/pqmls/kad/1.0.0";
/// Bytes gossipsub adds around a message (protobuf framing, topic name, control data).
const GOSSIP_OVERHEAD: usize = 16 * 1024;
/// Messages larger than this trigger gossipsub 1.2 IDONTWANT to mesh peers.
const IDONTWANT_THRESHOLD: usize = 16 * 1024;
/// How long [`Node::start`] waits for its listeners to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// File name of the persisted identity key in the data directory.
const IDENTITY_FILE: &str = "identity.key";
/// First wait before a bootstrap peer that went away (or could not be reached) is dialed
/// again; doubled after each failure up to [`REDIAL_MAX`].
const REDIAL_MIN: Duration = Duration::from_millis(500);
/// Longest wait between two dials of a bootstrap peer.
const REDIAL_MAX: Duration = Duration::from_secs(60);
/// A bootstrap connection that lasted this long resets the backoff when it closes; one
/// closed sooner (a peer that refuses us, a flapping link) doubles it.
const REDIAL_STABLE: Duration = Duration::from_secs(10);
/// How often due redials are looked for.
const REDIAL_TICK: Duration = Duration::from_millis(250);
/// Yamux streams allowed per connection, chosen so that no stream's receive window grows
/// past yamux's initial 256 KiB (see [`yamux_config`]).
const YAMUX_MAX_STREAMS: usize = 4096;
/// How often peer exchange looks whether to ask for more peers or dial known ones.
const PX_TICK: Duration = Duration::from_millis(500);
/// How long a peer has to answer the Waku metadata request before it is disconnected.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Every bound the node enforces. The defaults suit a phone or a small server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload that can be published or received (default 4 MiB).
    pub max_message_size: usize,
    /// Capacity of the inbound message stream; messages that find it full are dropped and
    /// counted in [`Counters::inbound_dropped`] (default 4096).
    pub inbound_queue: usize,
    /// Capacity of the command queue from handles to the node task (default 256).
    pub command_queue: usize,
    /// Maximum number of connected peers (default 64). When full, a new peer is let in only
    /// by evicting a peer of the address with the most inbound peers, if that address has
    /// at least two more than the newcomer's (see the crate's design notes, "Bounds");
    /// otherwise it is refused and counted in [`Counters::connections_refused`].
    pub max_peers: usize,
    /// Maximum connections one peer id may hold (default 4).
    pub max_connections_per_peer: usize,
    /// Maximum inbound connections from one address, an IPv4 address or an IPv6 /64
    /// (default 8; not applied to loopback addresses with
    /// [`Limits::loopback_exempt`]). Outbound connections are not counted per address.
    pub max_connections_per_ip: usize,
    /// Maximum inbound connections still in their handshake (TCP or QUIC accepted, Noise and
    /// the muxer not yet done), over all addresses (default 64; 256 in
    /// [`Config::loopback`]).
    pub max_pending_incoming: usize,
    /// Maximum inbound connections in their handshake from one address (default 8; not
    /// applied to loopback addresses with [`Limits::loopback_exempt`]).
    pub max_pending_per_ip: usize,
    /// The two per-address limits do not apply to connections from loopback addresses
    /// (default `false`; `true` in [`Config::loopback`], where tests, benchmarks and the
    /// demo put every node on 127.0.0.1). Only loopback is exempt: a node so configured
    /// that listens on a public address too keeps the limits for everyone else.
    pub loopback_exempt: bool,
    /// Maximum concurrent request-response streams per connection (default 32).
    pub max_concurrent_streams: usize,
    /// Maximum outstanding outbound requests (default 256).
    pub max_pending_requests: usize,
    /// Timeout of one directory or history request (default 30 s).
    pub request_timeout: Duration,
    /// Gossipsub send queue per connection, in messages (default 5000).
    pub gossip_queue: usize,
    /// How long a gossip message may wait in a send queue before it is abandoned (default
    /// 30 s; gossipsub's own 1 s forward default is too short for multi-megabyte messages on
    /// slow links).
    pub gossip_queue_timeout: Duration,
    /// Largest directory key (default 256 bytes).
    pub max_directory_key: usize,
    /// Largest directory blob (default 256 KiB; a PQ key package is about 10 KiB).
    pub max_directory_blob: usize,
    /// Most messages in one history page (default 256).
    pub history_page_messages: usize,
    /// Payload bytes after which a history page is cut (default 8 MiB; a page always holds at
    /// least one message).
    pub history_page_bytes: usize,
    /// How many recent message ids the inbound stream remembers to suppress duplicates
    /// (default 65 536).
    pub dedupe_window: usize,
    /// Store side: bytes of history pages and directory blobs that may be held at once in
    /// responses not yet fully written, over all peers (default 64 MiB). A response is held
    /// from the moment it is built until the requester has read it (or the request times
    /// out or its connection closes), so a reader that does not read keeps it in memory;
    /// over the budget the store cuts pages short or answers "busy", see
    /// [`Counters::requests_busy`].
    pub response_bytes_in_flight: usize,
    /// Store side: the same budget for the responses to one peer (default 16 MiB; at least
    /// one maximum-size message plus framing, so any stored message can be served).
    pub response_bytes_per_peer: usize,
    /// Waku store server: bytes of store v3 request frames read at once, over all peers
    /// (default [`waku::store::DEFAULT_REQUEST_READ_BYTES`], 1 MiB). The length a frame
    /// announces is reserved before its body is allocated; a request that does not fit is
    /// answered 503 unread and counted in [`Counters::requests_busy`] and
    /// [`Counters::store_reads_refused`]. Below [`waku::store::MAX_REQUEST`] the largest
    /// requests are never read.
    pub store_request_read_bytes: usize,
    /// Waku store server: bytes of [`Limits::store_request_read_bytes`] the request frames
    /// of one connection may hold at once (default 32 KiB, half of
    /// [`waku::store::MAX_REQUEST`]: many times the few kilobytes an honest query takes,
    /// 100 hashes and 10 content topics being under 5 KB), so one address holds at most
    /// this times [`Limits::max_connections_per_ip`] (a quarter of the default budget)
    /// however many streams and peer ids it uses; beyond it a request is answered 503
    /// unread, as over the budget, and a request frame longer than this is never read.
    pub store_request_read_bytes_per_connection: usize,
    /// Waku store client: bytes of store v3 response frames read at once, over all the
    /// stores queried (default [`waku::store::DEFAULT_RESPONSE_READ_BYTES`], 16 MiB); a
    /// response that does not fit fails its query ([`Error::Request`]) unread.
    pub store_response_read_bytes: usize,
    /// pqmls store node: bytes of request frames (puts, gets, history requests) read at
    /// once, over all peers (default 4 MiB); one connection may hold one frame of the
    /// largest size (a directory put: [`Limits::max_directory_key`] plus
    /// [`Limits::max_directory_blob`] plus 1 KiB), so one address at most 8 such frames.
    /// A request that does not fit is not read (its stream is closed) and counted in
    /// [`Counters::rpc_reads_refused`]. At least one frame of the largest size.
    pub rpc_request_read_bytes: usize,
    /// pqmls client: bytes of response frames (history pages, blobs) read at once, over
    /// all the store nodes asked (default 32 MiB); a response that does not fit fails its
    /// request unread. At least one page of the largest size
    /// ([`Limits::history_page_bytes`] plus one message and a blob).
    pub rpc_response_read_bytes: usize,
    /// Per-peer request rates of the Waku services this node answers, see [`RateLimits`].
    pub rate_limits: RateLimits,
    /// Filter client: pushes read from one push stream before it is closed (default
    /// 100 000). A backstop, not a working limit: a Nim service writes every push to a
    /// subscriber on one stream it keeps open, and one it writes while we close the stream
    /// is lost (a store query finds it).
    pub filter_pushes_per_stream: usize,
    /// Filter client: push streams one peer may hold open at once, over its connections
    /// (default 16: a service of ours opens one per push in flight, up to
    /// [`filter::Config::max_pushes_in_flight`]; the Nim service one). Another is closed
    /// unread and counted in [`Counters::filter_rejected`].
    pub filter_push_streams_per_peer: usize,
    /// Filter client: a push stream on which no push begins for this long is closed
    /// (default 5 minutes); the service opens a new one for its next push. Once a push has
    /// begun, the rest must come within [`Limits::request_timeout`].
    pub filter_push_idle: Duration,
}

/// Per-peer request rates of the Waku request-response services a node answers: a token
/// bucket per peer and service ([`rate_limit`]). A request over its peer's rate is answered
/// "too many requests" (429) without being served: lightpush v3 (the spec's code), store v3,
/// filter and peer exchange (the Nim node's codes); a metadata request over the rate is
/// not answered (the protocol has no status). `None` turns a service's limit off.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RateLimits {
    /// Store v3 queries (default 100 a minute, in bursts of up to 100).
    pub store: Option<Rate>,
    /// Lightpush requests (default 100 a minute).
    pub lightpush: Option<Rate>,
    /// Filter subscription requests (default 30 a minute, the Nim node's default).
    pub filter: Option<Rate>,
    /// Peer exchange requests (default 10 a minute).
    pub peer_exchange: Option<Rate>,
    /// Metadata requests (default 10 a minute; a peer asks once per connection).
    pub metadata: Option<Rate>,
    /// Peers tracked per service (default 1024); see [`rate_limit`] for what happens
    /// beyond.
    pub max_peers: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            store: Some(Rate::new(100, minute)),
            lightpush: Some(Rate::new(100, minute)),
            filter: Some(Rate::new(30, minute)),
            peer_exchange: Some(Rate::new(10, minute)),
            metadata: Some(Rate::new(10, minute)),
            max_peers: 1024,
        }
    }
}

impl RateLimits {
    /// No limits at all.
    pub fn unlimited() -> Self {
        Self {
            store: None,
            lightpush: None,
            filter: None,
            peer_exchange: None,
            metadata: None,
            max_peers: 1024,
        }
    }
}

/// The services [`RateLimits`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Store,
    Lightpush,
    Filter,
    PeerExchange,
    Metadata,
}

/// The node task's buckets, one set per limited service.
struct Limiters {
    store: Option<rate_limit::Buckets<PeerId>>,
    lightpush: Option<rate_limit::Buckets<PeerId>>,
    filter: Option<rate_limit::Buckets<PeerId>>,
    peer_exchange: Option<rate_limit::Buckets<PeerId>>,
    metadata: Option<rate_limit::Buckets<PeerId>>,
}

impl Limiters {
    fn new(r: &RateLimits) -> Self {
        let b = |rate: Option<Rate>| rate.map(|rate| rate_limit::Buckets::new(rate, r.max_peers));
        Self {
            store: b(r.store),
            lightpush: b(r.lightpush),
            filter: b(r.filter),
            peer_exchange: b(r.peer_exchange),
            metadata: b(r.metadata),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 4 * 1024 * 1024,
            inbound_queue: 4096,
            command_queue: 256,
            max_peers: 64,
            max_connections_per_peer: 4,
            max_connections_per_ip: 8,
            max_pending_incoming: 64,
            max_pending_per_ip: 8,
            loopback_exempt: false,
            max_concurrent_streams: 32,
            max_pending_requests: 256,
            request_timeout: Duration::from_secs(30),
            gossip_queue: 5000,
            gossip_queue_timeout: Duration::from_secs(30),
            max_directory_key: 256,
            max_directory_blob: 256 * 1024,
            history_page_messages: 256,
            history_page_bytes: 8 * 1024 * 1024,
            dedupe_window: 65_536,
            response_bytes_in_flight: 64 * 1024 * 1024,
            response_bytes_per_peer: 16 * 1024 * 1024,
            store_request_read_bytes: waku::store::DEFAULT_REQUEST_READ_BYTES,
            store_request_read_bytes_per_connection: waku::store::MAX_REQUEST / 2,
            store_response_read_bytes: waku::store::DEFAULT_RESPONSE_READ_BYTES,
            rpc_request_read_bytes: 4 * 1024 * 1024,
            rpc_response_read_bytes: 32 * 1024 * 1024,
            rate_limits: RateLimits::default(),
            filter_pushes_per_stream: 100_000,
            filter_push_streams_per_peer: 16,
            filter_push_idle: Duration::from_secs(5 * 60),
        }
    }
}

/// Configuration of a [`Node`].
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Addresses to listen on (TCP `/ip4/…/tcp/…` and QUIC `/ip4/…/udp/…/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start. With a `/p2p/<peer id>` suffix they also seed Kademlia.
    /// A bootstrap peer that cannot be reached, or whose last connection closes, is dialed
    /// again after a backoff: 0.5 s, doubled after each failure up to 60 s, and back to
    /// 0.5 s once a connection has lasted 10 s (so a peer that keeps refusing us, such as
    /// a Waku node of another cluster, is not dialed in a tight loop).
    pub bootstrap: Vec<Multiaddr>,
    /// The store role: `Some` makes this node keep history and serve the directory.
    /// Requires [`Config::data_dir`].
    pub store: Option<store::Config>,
    /// Where the identity key (and, for a store, the database) live. Without it the node
    /// gets a fresh identity on every start.
    pub data_dir: Option<PathBuf>,
    /// Local network discovery with mDNS (turn off in tests).
    pub mdns: bool,
    /// Kademlia discovery: periodic random walks that dial the peers they find. Turn off
    /// for a fixed topology.
    pub kademlia: bool,
    /// Gossipsub heartbeat (mesh maintenance and gossip emission; default 1 s).
    pub gossip_heartbeat: Duration,
    /// The application's validation hook, see [`Validator`]. Without one, every well-formed
    /// message is accepted.
    pub validator: Option<Arc<dyn Validator>>,
    /// Bounds on queues, sizes and requests.
    pub limits: Limits,
    /// Waku: `Some` runs Waku relay (`/vac/waku/relay/2.0.0`) on the shards of a cluster
    /// and the metadata protocol's cluster gate beside this crate's own protocols. See
    /// [`Config::with_waku`].
    pub waku: Option<relay::Config>,
    /// Waku lightpush service: `Some` answers `/vac/waku/lightpush/3.0.0` and publishes
    /// what light clients push on relay. Needs [`Config::waku`]. See
    /// [`Config::with_lightpush_service`].
    pub lightpush: Option<lightpush::Config>,
    /// Waku filter service: `Some` answers `/vac/waku/filter-subscribe/2.0.0-beta1` and
    /// pushes matching relay messages to subscribers. Needs [`Config::waku`]. See
    /// [`Config::with_filter_service`].
    pub filter: Option<filter::Config>,
    /// Waku peer exchange: `Some` asks peers for node records, dials the peers they name
    /// while below [`peer_exchange::Config::target_peers`], and (if
    /// [`peer_exchange::Config::serve`]) answers `/vac/waku/peer-exchange/2.0.0-alpha1`.
    /// Needs [`Config::waku`]. See [`Config::with_peer_exchange`].
    pub peer_exchange: Option<peer_exchange::Config>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("store", &self.store)
            .field("data_dir", &self.data_dir)
            .field("mdns", &self.mdns)
            .field("kademlia", &self.kademlia)
            .field("gossip_heartbeat", &self.gossip_heartbeat)
            .field("validator", &self.validator.is_some())
            .field("limits", &self.limits)
            .field("waku", &self.waku)
            .field("lightpush", &self.lightpush)
            .field("filter", &self.filter)
            .field("peer_exchange", &self.peer_exchange)
            .finish()
    }
}

impl Default for Config {
    /// Listens on all interfaces on random TCP and QUIC ports, with mDNS and Kademlia on.
    fn default() -> Self {
        Self {
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Tcp(0)),
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Udp(0))
                    .with(Protocol::QuicV1),
            ],
            bootstrap: Vec::new(),
            store: None,
            data_dir: None,
            mdns: true,
            kademlia: true,
            gossip_heartbeat: Duration::from_secs(1),
            validator: None,
            limits: Limits::default(),
            waku: None,
            lightpush: None,
            filter: None,
            peer_exchange: None,
        }
    }
}

impl Config {
    /// Listens on 127.0.0.1 only (random TCP and QUIC ports), with mDNS and Kademlia off:
    /// the configuration for tests, local benchmarks and the demo. As all their nodes share
    /// 127.0.0.1, the per-address limits ([`Limits::max_connections_per_ip`],
    /// [`Limits::max_pending_per_ip`]) are lifted for loopback addresses
    /// ([`Limits::loopback_exempt`]) and [`Limits::max_pending_incoming`] is 256, so 50 or
    /// more clients can dial one node at once; set them back to test the limits
    /// themselves.
    pub fn loopback() -> Self {
        let limits = Limits {
            loopback_exempt: true,
            max_pending_incoming: 256,
            ..Limits::default()
        };
        Self {
            listen: vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([127, 0, 0, 1].into()))
                    .with(Protocol::Tcp(0)),
                Multiaddr::empty()
                    .with(Protocol::Ip4([127, 0, 0, 1].into()))
                    .with(Protocol::Udp(0))
                    .with(Protocol::QuicV1),
            ],
            mdns: false,
            kademlia: false,
            limits,
            ..Self::default()
        }
    }

    /// Adds a bootstrap peer.
    pub fn with_bootstrap(mut self, addr: Multiaddr) -> Self {
        self.bootstrap.push(addr);
        self
    }

    /// Makes this node a store, keeping its files in `data_dir`.
    pub fn with_store(mut self, data_dir: impl Into<PathBuf>, store: store::Config) -> Self {
        self.data_dir = Some(data_dir.into());
        self.store = Some(store);
        self
    }

    /// Sets the validation hook.
    pub fn with_validator(mut self, validator: impl Validator) -> Self {
        self.validator = Some(Arc::new(validator));
        self
    }

    /// Makes this node a Waku relay node of `relay.cluster`, subscribed to `relay.shards`:
    /// it relays `WakuMessage`s on `/vac/waku/relay/2.0.0` ([`Node::relay_publish`],
    /// [`Node::relay_inbound`]), answers `/vac/waku/metadata/1.0.0`, asks it of every new
    /// peer, and disconnects a peer that does not answer within 10 s, answers no cluster or
    /// another cluster (as the Nim node does; so every peer of a Waku node must speak the
    /// metadata protocol, pqmls nodes included). A node that also has the store role
    /// ([`Config::with_store`]) archives every eligible relay message it accepts or
    /// publishes (`waku_store.sqlite3` in its data directory, pruned after
    /// [`store::Config::retention`]) and answers Waku store v3 queries
    /// ([`waku::store`]); every Waku node can ask them ([`Node::store_query`]).
    pub fn with_waku(mut self, relay: relay::Config) -> Self {
        self.waku = Some(relay);
        self
    }

    /// Makes this Waku node a lightpush v3 service ([`waku::lightpush`]): it checks each
    /// pushed message, publishes it on relay and answers with the spec's status and the
    /// relay peer count. Every Waku node can push through a service
    /// ([`Node::lightpush`]). Needs [`Config::with_waku`].
    pub fn with_lightpush_service(mut self, lightpush: lightpush::Config) -> Self {
        self.lightpush = Some(lightpush);
        self
    }

    /// Makes this Waku node a filter v2 service ([`waku::filter`]): it keeps clients'
    /// subscriptions within [`filter::Config`]'s bounds and pushes each relay message it
    /// accepts or publishes (lightpushed ones included) to the subscribers it matches.
    /// Every Waku node can subscribe with a service ([`Node::filter_subscribe`]) and
    /// receive its pushes ([`Node::filter_inbound`]). Needs [`Config::with_waku`].
    pub fn with_filter_service(mut self, filter: filter::Config) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Turns on Waku peer exchange ([`waku::peer_exchange`]): the node keeps a signed node
    /// record of its own ([`Node::enr`]; a Waku node's key is secp256k1 for that), asks
    /// each new peer that announces the protocol for records and, while below the target,
    /// a random one every [`peer_exchange::Config::interval`]; it dials the peers they name
    /// while below [`peer_exchange::Config::target_peers`], and answers requests with its
    /// own record and records it learnt. Needs [`Config::with_waku`].
    pub fn with_peer_exchange(mut self, px: peer_exchange::Config) -> Self {
        self.peer_exchange = Some(px);
        self
    }
}

/// A snapshot of the node's peer and traffic counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Peers with at least one open connection.
    pub connected_peers: u64,
    /// Connected peers that announced the store protocol.
    pub store_peers: u64,
    /// Messages this node published.
    pub published: u64,
    /// Payload bytes this node published.
    pub published_bytes: u64,
    /// Messages delivered to the inbound stream.
    pub delivered: u64,
    /// Payload bytes delivered to the inbound stream.
    pub delivered_bytes: u64,
    /// Accepted messages not delivered again because their id was seen recently.
    pub duplicates: u64,
    /// Gossip messages rejected as malformed (bad envelope or topic name).
    pub malformed: u64,
    /// Gossip messages rejected for exceeding [`Limits::max_message_size`].
    pub oversized: u64,
    /// Gossip messages the validator rejected.
    pub rejected: u64,
    /// Gossip messages the validator ignored.
    pub ignored: u64,
    /// Accepted messages dropped because the inbound stream was full.
    pub inbound_dropped: u64,
    /// Messages written to this node's store (the pqmls history and, on a Waku store, the
    /// Waku archive).
    pub stored: u64,
    /// Store requests answered successfully (pqmls store and Waku store v3).
    pub requests_served: u64,
    /// Store requests refused (invalid topic, database error, not a store).
    pub requests_refused: u64,
    /// Inbound store requests (pqmls store and Waku store v3) that could not be read:
    /// unknown, malformed, truncated or oversized frames.
    pub requests_malformed: u64,
    /// Inbound store requests that failed after being read (timeout, closed stream).
    pub requests_failed: u64,
    /// Times gossipsub reported a peer too slow to take its messages.
    pub slow_peers: u64,
    /// Topics this store followed because a peer subscribed to them, see
    /// [`store::Config::follow_subscriptions`].
    pub topics_followed: u64,
    /// Peer subscriptions this store did not follow because it already served
    /// [`store::Config::max_topics`] topics.
    pub topics_not_followed: u64,
    /// Inbound connections refused during their handshake
    /// ([`Limits::max_pending_incoming`], [`Limits::max_pending_per_ip`]).
    pub handshakes_refused: u64,
    /// Established connections refused ([`Limits::max_peers`],
    /// [`Limits::max_connections_per_peer`], [`Limits::max_connections_per_ip`]).
    pub connections_refused: u64,
    /// Peers disconnected to make room for a peer from a less crowded address.
    pub peers_evicted: u64,
    /// Store requests answered "busy" because the response would have exceeded
    /// [`Limits::response_bytes_in_flight`] or [`Limits::response_bytes_per_peer`], or
    /// (Waku store v3) the request did not fit [`Limits::store_request_read_bytes`].
    pub requests_busy: u64,
    /// Bytes of responses built but not yet fully written (history pages and directory
    /// blobs), over all peers: never above [`Limits::response_bytes_in_flight`].
    pub response_bytes_in_flight: u64,
    /// The highest [`Counters::response_bytes_in_flight`] since the node started.
    pub response_bytes_in_flight_peak: u64,
    /// Bytes of Waku store v3 request frames being read now, over all peers: never above
    /// [`Limits::store_request_read_bytes`].
    pub store_request_read_bytes: u64,
    /// The highest [`Counters::store_request_read_bytes`] since the node started.
    pub store_request_read_bytes_peak: u64,
    /// Bytes of Waku store v3 response frames being read now (answers to this node's
    /// queries): never above [`Limits::store_response_read_bytes`].
    pub store_response_read_bytes: u64,
    /// The highest [`Counters::store_response_read_bytes`] since the node started.
    pub store_response_read_bytes_peak: u64,
    /// Waku store v3 frames (requests and responses) not read because they did not fit
    /// their read budget.
    pub store_reads_refused: u64,
    /// Bytes of pqmls request frames being read now: never above
    /// [`Limits::rpc_request_read_bytes`].
    pub rpc_request_read_bytes: u64,
    /// Bytes of pqmls response frames being read now: never above
    /// [`Limits::rpc_response_read_bytes`].
    pub rpc_response_read_bytes: u64,
    /// pqmls frames (requests and responses) not read because they did not fit their
    /// read budget (or, for a request, its connection's share of it).
    pub rpc_reads_refused: u64,
    /// Directory puts (remote or local) the [`store::DirectoryValidator`] refused.
    pub puts_rejected: u64,
    /// Directory puts (remote or local) refused for exceeding a quota
    /// ([`store::Config::max_entries_per_peer`] and the others).
    pub puts_over_quota: u64,
    /// Waku messages this node published on relay.
    pub relay_published: u64,
    /// Waku relay messages delivered to the [`RelayInbound`] stream.
    pub relay_delivered: u64,
    /// Waku relay messages rejected: not a shard of this cluster, over the size limit, or
    /// not a well-formed `WakuMessage` (see [`relay::check`]).
    pub relay_rejected: u64,
    /// Accepted relay messages dropped because the [`RelayInbound`] stream was full (or
    /// nobody took it).
    pub relay_inbound_dropped: u64,
    /// Peers whose metadata named this node's cluster.
    pub metadata_admitted: u64,
    /// Peers disconnected by the metadata gate: another cluster, no cluster, or no answer.
    pub metadata_refused: u64,
    /// Lightpush requests this service is reading now (at most
    /// [`lightpush::Config::max_concurrent_requests`]).
    pub lightpush_reading: u64,
    /// Lightpush requests this service relayed (status 200).
    pub lightpush_served: u64,
    /// Lightpush requests this service refused with an error status (including 429), or
    /// could not read at all (too long, closed early, timed out while being read).
    pub lightpush_refused: u64,
    /// Filter subscription requests this service is reading now (at most
    /// [`filter::Config::max_concurrent_requests`]).
    pub filter_reading: u64,
    /// Clients with an active subscription at this filter service (updated on each
    /// request and every few seconds).
    pub filter_subscribers: u64,
    /// Filter subscription requests this service answered with a 2xx status.
    pub filter_requests_served: u64,
    /// Filter subscription requests refused with an error status (including the N+1th
    /// subscriber's 503 and 429s), or that could not be read at all.
    pub filter_requests_refused: u64,
    /// Pushes this filter service sent, one per message and matching subscriber (counted
    /// when sent; those that fail are also counted in [`Counters::filter_pushes_failed`]).
    pub filter_pushed: u64,
    /// Pushes not made because the subscriber already had
    /// [`filter::Config::max_pushes_in_flight`] pushes in flight.
    pub filter_pushes_dropped: u64,
    /// Pushes that failed (no connection, protocol not supported, timeout).
    pub filter_pushes_failed: u64,
    /// Pushed messages this node accepted as a filter client and delivered to the
    /// [`FilterInbound`] stream.
    pub filter_delivered: u64,
    /// Pushes this node refused as a filter client: from a peer it has no subscription
    /// with, for criteria it did not subscribe to, malformed, over the size limit, or
    /// unreadable.
    pub filter_rejected: u64,
    /// Accepted pushes dropped because the [`FilterInbound`] stream was full (or nobody
    /// took it).
    pub filter_inbound_dropped: u64,
    /// Peer exchange requests this node answered with records (status 200).
    pub px_served: u64,
    /// Peer exchange requests refused (429 over the rate limit, 400 without a query).
    pub px_refused: u64,
    /// Node records this node learnt through peer exchange (new peers or newer records).
    pub px_records_learnt: u64,
    /// Node records in answers this node dropped: not verifying, of another cluster, this
    /// node itself, repeated, or more than asked.
    pub px_records_dropped: u64,
    /// Dials of peers that peer exchange found.
    pub px_dials: u64,
    /// Requests refused for exceeding their peer's rate ([`RateLimits`]), all services.
    pub rate_limited: u64,
}

#[derive(Default)]
struct Stats {
    connected_peers: AtomicU64,
    store_peers: AtomicU64,
    published: AtomicU64,
    published_bytes: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    oversized: AtomicU64,
    rejected: AtomicU64,
    ignored: AtomicU64,
    inbound_dropped: AtomicU64,
    stored: AtomicU64,
    requests_served: AtomicU64,
    requests_refused: AtomicU64,
    requests_malformed: Arc<AtomicU64>,
    requests_failed: AtomicU64,
    slow_peers: AtomicU64,
    topics_followed: AtomicU64,
    topics_not_followed: AtomicU64,
    slots: Arc<slots::Tally>,
    requests_busy: AtomicU64,
    response_bytes_in_flight: AtomicU64,
    response_bytes_in_flight_peak: AtomicU64,
    store_request_read_bytes: Arc<AtomicU64>,
    store_request_read_bytes_peak: Arc<AtomicU64>,
    store_response_read_bytes: Arc<AtomicU64>,
    store_response_read_bytes_peak: Arc<AtomicU64>,
    store_reads_refused: Arc<AtomicU64>,
    rpc_request_read_bytes: Arc<AtomicU64>,
    rpc_response_read_bytes: Arc<AtomicU64>,
    rpc_reads_refused: Arc<AtomicU64>,
    puts_rejected: AtomicU64,
    puts_over_quota: AtomicU64,
    relay_published: AtomicU64,
    relay_delivered: AtomicU64,
    relay_rejected: AtomicU64,
    relay_inbound_dropped: AtomicU64,
    metadata_admitted: AtomicU64,
    metadata_refused: AtomicU64,
    lightpush_reading: Arc<AtomicU64>,
    lightpush_served: AtomicU64,
    lightpush_refused: Arc<AtomicU64>,
    filter_reading: Arc<AtomicU64>,
    filter_subscribers: AtomicU64,
    filter_requests_served: AtomicU64,
    filter_requests_refused: Arc<AtomicU64>,
    filter_pushed: AtomicU64,
    filter_pushes_dropped: AtomicU64,
    filter_pushes_failed: AtomicU64,
    filter_push_reading: Arc<AtomicU64>,
    filter_delivered: AtomicU64,
    filter_rejected: Arc<AtomicU64>,
    filter_inbound_dropped: AtomicU64,
    px_served: AtomicU64,
    px_refused: AtomicU64,
    px_records_learnt: AtomicU64,
    px_records_dropped: AtomicU64,
    px_dials: AtomicU64,
    rate_limited: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Stats {
    fn snapshot(&self) -> Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            connected_peers: g(&self.connected_peers),
            store_peers: g(&self.store_peers),
            published: g(&self.published),
            published_bytes: g(&self.published_bytes),
            delivered: g(&self.delivered),
            delivered_bytes: g(&self.delivered_bytes),
            duplicates: g(&self.duplicates),
            malformed: g(&self.malformed),
            oversized: g(&self.oversized),
            rejected: g(&self.rejected),
            ignored: g(&self.ignored),
            inbound_dropped: g(&self.inbound_dropped),
            stored: g(&self.stored),
            requests_served: g(&self.requests_served),
            requests_refused: g(&self.requests_refused),
            requests_malformed: g(&self.requests_malformed),
            requests_failed: g(&self.requests_failed),
            slow_peers: g(&self.slow_peers),
            topics_followed: g(&self.topics_followed),
            topics_not_followed: g(&self.topics_not_followed),
            handshakes_refused: g(&self.slots.pending_refused),
            connections_refused: g(&self.slots.refused),
            peers_evicted: g(&self.slots.evicted),
            requests_busy: g(&self.requests_busy),
            response_bytes_in_flight: g(&self.response_bytes_in_flight),
            response_bytes_in_flight_peak: g(&self.response_bytes_in_flight_peak),
            store_request_read_bytes: g(&self.store_request_read_bytes),
            store_request_read_bytes_peak: g(&self.store_request_read_bytes_peak),
            store_response_read_bytes: g(&self.store_response_read_bytes),
            store_response_read_bytes_peak: g(&self.store_response_read_bytes_peak),
            store_reads_refused: g(&self.store_reads_refused),
            rpc_request_read_bytes: g(&self.rpc_request_read_bytes),
            rpc_response_read_bytes: g(&self.rpc_response_read_bytes),
            rpc_reads_refused: g(&self.rpc_reads_refused),
            puts_rejected: g(&self.puts_rejected),
            puts_over_quota: g(&self.puts_over_quota),
            relay_published: g(&self.relay_published),
            relay_delivered: g(&self.relay_delivered),
            relay_rejected: g(&self.relay_rejected),
            relay_inbound_dropped: g(&self.relay_inbound_dropped),
            metadata_admitted: g(&self.metadata_admitted),
            metadata_refused: g(&self.metadata_refused),
            lightpush_reading: g(&self.lightpush_reading),
            lightpush_served: g(&self.lightpush_served),
            lightpush_refused: g(&self.lightpush_refused),
            filter_reading: g(&self.filter_reading),
            filter_subscribers: g(&self.filter_subscribers),
            filter_requests_served: g(&self.filter_requests_served),
            filter_requests_refused: g(&self.filter_requests_refused),
            filter_pushed: g(&self.filter_pushed),
            filter_pushes_dropped: g(&self.filter_pushes_dropped),
            filter_pushes_failed: g(&self.filter_pushes_failed),
            filter_delivered: g(&self.filter_delivered),
            filter_rejected: g(&self.filter_rejected),
            filter_inbound_dropped: g(&self.filter_inbound_dropped),
            px_served: g(&self.px_served),
            px_refused: g(&self.px_refused),
            px_records_learnt: g(&self.px_records_learnt),
            px_records_dropped: g(&self.px_records_dropped),
            px_dials: g(&self.px_dials),
            rate_limited: g(&self.rate_limited),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Subscribe(Topic, Reply<bool>),
    Unsubscribe(Topic, Reply<bool>),
    Publish(Topic, Vec<u8>, Reply<MessageId>),
    Put(Vec<u8>, Vec<u8>, Reply<()>),
    Get(Vec<u8>, Reply<Option<Vec<u8>>>),
    History(Topic, Cursor, Reply<Page>),
    Dial(Multiaddr, Reply<()>),
    ListenAddrs(Reply<Vec<Multiaddr>>),
    MeshPeers(Topic, Reply<usize>),
    ServicePeers(WakuService, Option<u16>, Reply<Vec<PeerId>>),
    RelayPublish(PubsubTopic, WakuMessage, Reply<MessageHash>),
    RelaySubscribe(u16, Reply<bool>),
    RelayUnsubscribe(u16, Reply<bool>),
    RelayMeshPeers(PubsubTopic, Reply<usize>),
    StoreQuery(
        PeerId,
        waku::store::QueryRequest,
        Reply<waku::store::QueryResponse>,
    ),
    LightPush(PeerId, Option<PubsubTopic>, WakuMessage, Reply<u32>),
    Filter(PeerId, waku_filter::Op, Reply<()>),
    PeerExchange(PeerId, u64, Reply<Vec<Enr>>),
    Shutdown(oneshot::Sender<()>),
}

/// A Waku service a connected peer offers, as the protocols it announces over identify
/// show it ([`Node::service_peers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WakuService {
    /// Store v3 queries ([`waku::store::PROTOCOL`]).
    Store,
    /// Lightpush v3 ([`waku::lightpush::PROTOCOL`]).
    Lightpush,
    /// Filter v2 subscriptions ([`waku::filter::SUBSCRIBE_PROTOCOL`]).
    Filter,
}

impl WakuService {
    const ALL: [WakuService; 3] = [
        WakuService::Store,
        WakuService::Lightpush,
        WakuService::Filter,
    ];

    /// The protocol id a peer announces for the service.
    pub fn protocol(self) -> &'static str {
        match self {
            WakuService::Store => waku::store::PROTOCOL,
            WakuService::Lightpush => waku::lightpush::PROTOCOL,
            WakuService::Filter => waku::filter::SUBSCRIBE_PROTOCOL,
        }
    }

    fn bit(self) -> u8 {
        match self {
            WakuService::Store => 1,
            WakuService::Lightpush => 2,
            WakuService::Filter => 4,
        }
    }

    /// The services among `protocols`, as a set of bits.
    fn announced(protocols: &[StreamProtocol]) -> u8 {
        WakuService::ALL
            .iter()
            .filter(|svc| protocols.iter().any(|p| p.as_ref() == svc.protocol()))
            .fold(0, |bits, svc| bits | svc.bit())
    }
}

/// A connected peer's Waku services, as [`Node::service_peers`] ranks them.
#[derive(Debug, Clone, Default)]
struct ServiceEntry {
    /// When the peer was first connected (a sequence number).
    seq: u64,
    /// Whether this node dialed the peer (a bootstrap peer, one found through peer
    /// exchange) rather than the peer this node.
    dialed: bool,
    /// The services announced over identify, bits of [`WakuService`].
    bits: u8,
    /// Whether the metadata gate admitted the peer (always, on a node without it).
    admitted: bool,
    /// The relay shards the peer's metadata named (a store archives what it relays), at
    /// most [`MAX_NOTED_SHARDS`]; `None` on a node without the gate.
    shards: Option<Vec<u16>>,
}

/// Most shards of a peer's metadata remembered for [`Node::service_peers_on`].
const MAX_NOTED_SHARDS: usize = 1024;

/// How long gossipsub remembers a message id it published or received: publishing the
/// same bytes on a topic within it is refused as [`Error::Duplicate`] (see the crate
/// documentation, "Ids and topics").
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A handle to a running node. Cheap to clone; the node stops when [`Node::shutdown`] is
/// called or every handle is dropped.
#[derive(Clone)]
pub struct Node {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    stats: Arc<Stats>,
    limits: Limits,
    waku: Option<relay::Config>,
    relay_inbound: Arc<Mutex<Option<RelayInbound>>>,
    filter_inbound: Arc<Mutex<Option<FilterInbound>>>,
    enr: Option<Enr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

/// The stream of accepted inbound gossip messages, each delivered once.
#[derive(Debug)]
pub struct Inbound {
    rx: mpsc::Receiver<Message>,
}

impl Inbound {
    /// The next message, or `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Inbound {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

/// The stream of accepted Waku relay messages of a node started with
/// [`Config::with_waku`], taken once with [`Node::relay_inbound`]. Bounded by
/// [`Limits::inbound_queue`]; messages that find it full are dropped and counted in
/// [`Counters::relay_inbound_dropped`]. Gossipsub's seen cache (two minutes, ids are
/// SHA-256 of the encoded message) keeps a message from being delivered twice.
#[derive(Debug)]
pub struct RelayInbound {
    rx: mpsc::Receiver<relay::Received>,
}

impl RelayInbound {
    /// The next message, or `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<relay::Received> {
        self.rx.recv().await
    }

    /// The next message if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<relay::Received> {
        self.rx.try_recv().ok()
    }
}

impl Stream for RelayInbound {
    type Item = relay::Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<relay::Received>> {
        self.rx.poll_recv(cx)
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// First, so connections it refuses never reach the other behaviours.
    slots: slots::Behaviour,
    gossipsub: gossipsub::Behaviour,
    rpc: request_response::Behaviour<rpc::Codec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    /// Waku relay: a second gossipsub on its own protocol id and topics.
    relay: Toggle<gossipsub::Behaviour>,
    /// Waku metadata, the cluster gate.
    metadata: Toggle<request_response::Behaviour<metadata::Codec>>,
    /// Waku store v3: served by store nodes, asked by every Waku node.
    waku_store: Toggle<request_response::Behaviour<waku::store::Codec>>,
    /// Waku lightpush v3: served by lightpush services, used by every Waku node.
    lightpush: Toggle<request_response::Behaviour<lightpush::Codec>>,
    /// Waku filter v2 subscriptions: served by filter services, asked by every Waku node.
    filter_subscribe: Toggle<request_response::Behaviour<filter::SubscribeCodec>>,
    /// Waku filter v2 pushes sent by a filter service, one per stream.
    filter_push: Toggle<request_response::Behaviour<filter::PushCodec>>,
    /// Waku filter v2 pushes received by every Waku node: each stream read until it ends.
    filter_push_in: Toggle<waku_filter_push::Behaviour>,
    /// Waku peer exchange: asked by nodes with it on, answered by those that serve it.
    peer_exchange: Toggle<request_response::Behaviour<peer_exchange::Codec>>,
}

impl Node {
    /// Starts a node: loads or creates its identity, opens the store, listens, dials the
    /// bootstrap peers, and returns once every listener has an address.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an inconsistent configuration, [`Error::Io`] or [`Error::Store`]
    /// when the data directory cannot be used, [`Error::AddressInUse`] for a TCP listen
    /// port another socket listens on, [`Error::Address`] for a listen address that cannot
    /// be bound otherwise, [`Error::Setup`] if libp2p cannot be built.
    pub async fn start(config: Config) -> Result<(Node, Inbound)> {
        let limits = config.limits.clone();
        if limits.max_message_size == 0
            || limits.inbound_queue == 0
            || limits.command_queue == 0
            || limits.history_page_messages == 0
            || limits.max_pending_requests == 0
            || limits.dedupe_window == 0
            || limits.gossip_queue == 0
            || limits.max_concurrent_streams == 0
            || limits.max_peers == 0
            || limits.max_connections_per_peer == 0
            || limits.max_connections_per_ip == 0
            || limits.max_pending_incoming == 0
            || limits.max_pending_per_ip == 0
            || limits.store_request_read_bytes_per_connection == 0
        {
            return Err(Error::Config("limits must be non-zero".into()));
        }
        if limits.max_message_size > u32::MAX as usize / 4 {
            return Err(Error::Config("max_message_size is too large".into()));
        }
        let rpc = rpc_limits(&limits);
        if limits.rpc_request_read_bytes < rpc::max_request_frame(&rpc)
            || limits.rpc_response_read_bytes < rpc::max_response_frame(&rpc)
        {
            return Err(Error::Config(format!(
                "rpc_request_read_bytes must hold a request of {} bytes and \
                 rpc_response_read_bytes a response of {}",
                rpc::max_request_frame(&rpc),
                rpc::max_response_frame(&rpc)
            )));
        }
        let largest_response = (limits.max_message_size + rpc::ENTRY_OVERHEAD)
            .max(limits.max_directory_blob)
            + rpc::PAGE_OVERHEAD;
        if limits.response_bytes_per_peer < largest_response
            || limits.response_bytes_in_flight < limits.response_bytes_per_peer
        {
            return Err(Error::Config(format!(
                "response_bytes_per_peer must hold the largest response ({largest_response} \
                 bytes) and response_bytes_in_flight at least that"
            )));
        }
        if let Some(w) = &config.waku {
            if w.shard_count == 0 || w.shard_count > waku::sharding::MAX_SHARDS {
                return Err(Error::Config("waku shard_count must be in 1..=1024".into()));
            }
            if w.shards.iter().any(|s| *s >= waku::sharding::MAX_SHARDS) {
                return Err(Error::Config("waku shards must be below 1024".into()));
            }
            if w.max_message_size == 0 || w.max_message_size > u32::MAX as usize / 4 {
                return Err(Error::Config(
                    "waku max_message_size is out of range".into(),
                ));
            }
        }
        if let Some(lp) = &config.lightpush {
            if config.waku.is_none() {
                return Err(Error::Config(
                    "the lightpush service needs Waku relay (Config::with_waku)".into(),
                ));
            }
            if lp.max_concurrent_requests == 0 || lp.max_concurrent_requests_per_connection == 0 {
                return Err(Error::Config(
                    "lightpush max_concurrent_requests (and per connection) must be non-zero"
                        .into(),
                ));
            }
        }
        if let Some(f) = &config.filter {
            if config.waku.is_none() {
                return Err(Error::Config(
                    "the filter service needs Waku relay (Config::with_waku)".into(),
                ));
            }
            if f.max_subscribers == 0
                || f.max_criteria_per_subscriber == 0
                || f.max_pushes_in_flight == 0
                || f.max_concurrent_requests == 0
                || f.max_concurrent_requests_per_connection == 0
            {
                return Err(Error::Config("filter limits must be non-zero".into()));
            }
        }
        if config.peer_exchange.is_some() && config.waku.is_none() {
            return Err(Error::Config(
                "peer exchange needs Waku relay (Config::with_waku)".into(),
            ));
        }
        // Waku nodes get secp256k1 keys, as the Nim node has: a node record (peer
        // exchange) must be signed by the key its peer id comes from.
        let kind = if config.waku.is_some() {
            KeyKind::Secp256k1
        } else {
            KeyKind::Ed25519
        };
        let keypair = match &config.data_dir {
            Some(dir) => {
                create_private_dir(dir)?;
                load_or_create_identity(dir, kind)?
            }
            None => kind.generate(),
        };
        let store = match (&config.store, &config.data_dir) {
            (Some(sc), Some(dir)) => {
                ensure_private_file(&dir.join(store::FILE))?;
                Some(Store::open(dir, sc)?)
            }
            (Some(_), None) => {
                return Err(Error::Config(
                    "the store role needs a data directory".into(),
                ));
            }
            (None, _) => None,
        };
        let archive = match (&config.waku, &config.store, &config.data_dir) {
            (Some(_), Some(_), Some(dir)) => {
                ensure_private_file(&dir.join(waku::store::ARCHIVE_FILE))?;
                Some(waku::store::Archive::open(dir)?)
            }
            _ => None,
        };
        let peer_id = keypair.public().to_peer_id();
        let stats = Arc::new(Stats::default());
        let behaviour = build_behaviour(&config, &keypair, store.is_some(), &stats)?;
        let key_for_record = keypair.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_quic()
            .with_other_transport(tcp_transport)
            .map_err(|e| Error::Setup(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| Error::Setup(e.to_string()))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(Duration::from_secs(60))
                    .with_max_negotiating_inbound_streams(128)
            })
            .build();

        let mut listeners: HashSet<ListenerId> = HashSet::new();
        for addr in &config.listen {
            check_tcp_port_free(addr)?;
            let id = swarm.listen_on(addr.clone()).map_err(|e| Error::Address {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
            listeners.insert(id);
        }
        let wait = async {
            while !listeners.is_empty() {
                match swarm.select_next_some().await {
                    SwarmEvent::NewListenAddr { listener_id, .. } => {
                        listeners.remove(&listener_id);
                    }
                    SwarmEvent::ListenerClosed {
                        listener_id,
                        reason: Err(e),
                        ..
                    }
                    | SwarmEvent::ListenerError {
                        listener_id,
                        error: e,
                    } => {
                        return Err(Error::Address {
                            addr: format!("listener {listener_id:?}"),
                            reason: e.to_string(),
                        });
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        tokio::time::timeout(LISTEN_TIMEOUT, wait)
            .await
            .map_err(|_| Error::Setup("listeners did not come up in time".into()))??;

        let (cmd_tx, cmd_rx) = mpsc::channel(limits.command_queue);
        let (in_tx, in_rx) = mpsc::channel(limits.inbound_queue);
        let (waku, relay_inbound, filter_inbound) = match &config.waku {
            Some(w) => {
                let (tx, rx) = mpsc::channel(limits.inbound_queue);
                let (filter_tx, filter_rx) = mpsc::channel(limits.inbound_queue);
                let state = WakuState {
                    config: w.clone(),
                    inbound: tx,
                    shards: HashSet::new(),
                    filter: waku_filter::State::new(config.filter.clone(), filter_tx),
                };
                (
                    Some(state),
                    Some(RelayInbound { rx }),
                    Some(FilterInbound::new(filter_rx)),
                )
            }
            None => (None, None, None),
        };
        let px = match (&config.peer_exchange, &config.waku) {
            (Some(pc), Some(w)) => {
                let addrs: Vec<Multiaddr> = if pc.announce.is_empty() {
                    swarm.listeners().cloned().collect()
                } else {
                    pc.announce.clone()
                };
                let mut flags = 0;
                if !w.shards.is_empty() {
                    flags |= waku::enr::WAKU2_RELAY;
                }
                if archive.is_some() {
                    flags |= waku::enr::WAKU2_STORE;
                }
                if config.filter.is_some() {
                    flags |= waku::enr::WAKU2_FILTER;
                }
                if config.lightpush.is_some() {
                    flags |= waku::enr::WAKU2_LIGHTPUSH;
                }
                let own = waku_px::own_record(&key_for_record, &addrs, flags, w.cluster, &w.shards);
                if own.is_none() {
                    tracing::warn!(
                        "no node record of this node (its key is not secp256k1, or it has \
                         no address to announce): peer exchange will not name it"
                    );
                }
                let seed = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
                    ^ peer_id
                        .to_bytes()
                        .iter()
                        .fold(0u64, |h, b| h.rotate_left(8) ^ u64::from(*b));
                Some(waku_px::State::new(pc.clone(), own, seed))
            }
            _ => None,
        };
        let own_enr = px.as_ref().and_then(|p| p.own.clone());
        let mut task = Task {
            swarm,
            store,
            store_config: config.store.clone(),
            validator: config.validator.clone(),
            limits: limits.clone(),
            stats: stats.clone(),
            inbound: in_tx,
            seen: Seen::new(limits.dedupe_window),
            subscribed: HashSet::new(),
            store_peers: HashSet::new(),
            services: HashMap::new(),
            services_seq: 0,
            pending: HashMap::new(),
            puts: HashMap::new(),
            next_put: 0,
            topic_limit_warned: false,
            responses: Budget::new(
                limits.response_bytes_in_flight,
                limits.response_bytes_per_peer,
            ),
            waku,
            bootstrap: Vec::new(),
            archive,
            store_queries: HashMap::new(),
            lightpush_service: config.lightpush.clone(),
            lightpushes: HashMap::new(),
            next_request_id: 0,
            px,
            limiters: Limiters::new(&limits.rate_limits),
        };
        task.resubscribe_served_topics();
        for shard in config.waku.iter().flat_map(|w| w.shards.iter()) {
            task.relay_subscribe(*shard)?;
        }
        for addr in &config.bootstrap {
            task.bootstrap.push(Bootstrap {
                addr: addr.clone(),
                peer: None,
                dialing: None,
                connected_at: None,
                backoff: REDIAL_MIN,
                next: None,
            });
        }
        for i in 0..task.bootstrap.len() {
            task.dial_bootstrap(i);
        }
        tokio::spawn(task.run(cmd_rx));
        Ok((
            Node {
                commands: cmd_tx,
                peer_id,
                stats,
                limits,
                waku: config.waku.clone(),
                relay_inbound: Arc::new(Mutex::new(relay_inbound)),
                filter_inbound: Arc::new(Mutex::new(filter_inbound)),
                enr: own_enr,
            },
            Inbound { rx: in_rx },
        ))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A snapshot of the peer and traffic counters.
    pub fn counters(&self) -> Counters {
        self.stats.snapshot()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// The addresses the node listens on, each with a `/p2p/<peer id>` suffix so it can be
    /// given to another node as a bootstrap address.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] if the node has stopped.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.call(Command::ListenAddrs).await
    }

    /// Dials a peer.
    ///
    /// # Errors
    ///
    /// [`Error::Address`] if the dial cannot be started, [`Error::Shutdown`] if the node has
    /// stopped. A dial that starts but fails later is only visible in the counters.
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.call(|r| Command::Dial(addr, r)).await
    }

    /// Subscribes to a topic; returns false if already subscribed. A store node also starts
    /// keeping the topic's history, and remembers the topic across restarts.
    ///
    /// # Errors
    ///
    /// [`Error::Subscription`] if gossipsub refuses, [`Error::Store`] if the store cannot
    /// record the topic, [`Error::Shutdown`] if the node has stopped.
    pub async fn subscribe(&self, topic: &Topic) -> Result<bool> {
        let t = topic.clone();
        self.call(|r| Command::Subscribe(t, r)).await
    }

    /// Unsubscribes from a topic; returns false if not subscribed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store cannot forget the topic, [`Error::Shutdown`] if the node
    /// has stopped.
    pub async fn unsubscribe(&self, topic: &Topic) -> Result<bool> {
        let t = topic.clone();
        self.call(|r| Command::Unsubscribe(t, r)).await
    }

    /// Publishes `data` on `topic` and returns its id. The node need not be subscribed.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] above [`Limits::max_message_size`], [`Error::Duplicate`]
    /// for a payload published on this topic recently, [`Error::NoPeers`] if no connected
    /// peer subscribes to the topic, [`Error::QueueFull`] if every peer's send queue is full,
    /// [`Error::Publish`] for other gossipsub failures, [`Error::Shutdown`] if the node has
    /// stopped.
    pub async fn publish(&self, topic: &Topic, data: Vec<u8>) -> Result<MessageId> {
        if data.len() > self.limits.max_message_size {
            return Err(Error::MessageTooLarge {
                len: data.len(),
                max: self.limits.max_message_size,
            });
        }
        let t = topic.clone();
        self.call(|r| Command::Publish(t, data, r)).await
    }

    /// Stores `blob` under `key` in the directory: on this node if it is a store, and on every
    /// connected store node. Last write wins.
    ///
    /// # Errors
    ///
    /// [`Error::EntryTooLarge`] for a key or blob over its limit, [`Error::NoStore`] if this
    /// node is not a store and none is connected, [`Error::Request`] or [`Error::Refused`] if
    /// no store accepted it, [`Error::Busy`] with too many requests outstanding,
    /// [`Error::Store`] for a local database failure, [`Error::Shutdown`] if the node has
    /// stopped.
    pub async fn put(&self, key: Vec<u8>, blob: Vec<u8>) -> Result<()> {
        self.check_key(&key)?;
        if blob.len() > self.limits.max_directory_blob {
            return Err(Error::EntryTooLarge {
                what: "blob",
                len: blob.len(),
                max: self.limits.max_directory_blob,
            });
        }
        self.call(|r| Command::Put(key, blob, r)).await
    }

    /// Looks `key` up in the directory: locally on a store, then on connected store nodes
    /// one after the other until one has it.
    ///
    /// # Errors
    ///
    /// As for [`Node::put`]; a key that no store has is `Ok(None)`.
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        self.check_key(&key)?;
        self.call(|r| Command::Get(key, r)).await
    }

    /// One page of `topic`'s history starting after `from`: from this node's own store if it
    /// serves the topic, otherwise from a connected store node (the next one is tried if a
    /// request fails). Continue with [`Page::next`].
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] if no store is available, [`Error::Request`] or [`Error::Refused`]
    /// if every store failed, [`Error::Busy`] with too many requests outstanding,
    /// [`Error::Store`] for a local database failure, [`Error::Shutdown`] if the node has
    /// stopped.
    pub async fn history(&self, topic: &Topic, from: Cursor) -> Result<Page> {
        let t = topic.clone();
        self.call(|r| Command::History(t, from, r)).await
    }

    /// Number of peers in this node's gossip mesh for `topic` (useful to wait for a mesh to
    /// form before publishing).
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] if the node has stopped.
    pub async fn mesh_peers(&self, topic: &Topic) -> Result<usize> {
        let t = topic.clone();
        self.call(|r| Command::MeshPeers(t, r)).await
    }

    /// Connected peers that offer `service`, by the protocols they announced over identify
    /// and, on a Waku node, once the metadata gate admitted them: first the peers this
    /// node dialed (its bootstrap peers, peers found through peer exchange), then those
    /// that dialed it, each in the order they connected. Nothing here is vouched for: a
    /// peer announces what it likes, and callers treat a service's answers as they treat
    /// any peer's; the order only keeps a stranger that connects to us from coming before
    /// the peers we chose.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] if the node has stopped.
    pub async fn service_peers(&self, service: WakuService) -> Result<Vec<PeerId>> {
        self.call(|r| Command::ServicePeers(service, None, r)).await
    }

    /// As [`Node::service_peers`], only peers whose metadata names `shard` among the
    /// relay shards they subscribe to (a store archives what it relays: one of other
    /// shards answers a query for ours with nothing). On a node without the metadata gate
    /// (no Waku), every peer [`Node::service_peers`] lists.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] if the node has stopped.
    pub async fn service_peers_on(&self, service: WakuService, shard: u16) -> Result<Vec<PeerId>> {
        self.call(|r| Command::ServicePeers(service, Some(shard), r))
            .await
    }

    /// The stream of received Waku relay messages. Returns it on the first call only (every
    /// later call, and a node without [`Config::with_waku`], gets `None`); until it is
    /// taken, accepted messages are counted in [`Counters::relay_inbound_dropped`] once
    /// the queue is full.
    pub fn relay_inbound(&self) -> Option<RelayInbound> {
        // A poisoned lock only means another thread panicked while taking the stream.
        match self.relay_inbound.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    fn relay_config(&self) -> Result<&relay::Config> {
        self.waku
            .as_ref()
            .ok_or_else(|| Error::Config("Waku relay is off (see Config::with_waku)".into()))
    }

    /// Publishes `payload` on Waku relay as a `WakuMessage` on `content_topic`, stamped
    /// with the current time, on the topic's shard (autosharding over
    /// [`relay::Config::shard_count`] shards). Returns the message's deterministic hash.
    ///
    /// # Errors
    ///
    /// As for [`Node::relay_publish_message`].
    pub async fn relay_publish(
        &self,
        content_topic: &ContentTopic,
        payload: Vec<u8>,
    ) -> Result<MessageHash> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let message = WakuMessage::new(content_topic.to_string(), payload).with_timestamp(now);
        Ok(self.relay_publish_message(message).await?.1)
    }

    /// Publishes `message` on Waku relay on the shard of its content topic (autosharding).
    /// Returns the shard and the message's deterministic hash.
    ///
    /// # Errors
    ///
    /// [`Error::ContentTopic`] if the content topic cannot be autosharded, and the errors of
    /// [`Node::relay_publish_on`].
    pub async fn relay_publish_message(
        &self,
        message: WakuMessage,
    ) -> Result<(PubsubTopic, MessageHash)> {
        let config = self.relay_config()?;
        let shard = ContentTopic::parse(&message.content_topic)
            .and_then(|t| t.pubsub_topic(config.cluster, config.shard_count))
            .ok_or_else(|| Error::ContentTopic(message.content_topic.chars().take(64).collect()))?;
        Ok((shard, self.relay_publish_on(shard, message).await?))
    }

    /// Publishes `message` on Waku relay on `shard` (static sharding; the node need not
    /// subscribe to it). Returns the message's deterministic hash. A store node archives
    /// it once gossipsub has taken it: published, or refused with [`Error::NoPeers`] (as
    /// the Nim node does) or [`Error::QueueFull`]; never when it is refused as a duplicate
    /// or as too large.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if Waku is off, [`Error::Shard`] for a shard of another cluster,
    /// [`Error::WakuMessage`] for a message the spec forbids (`meta` over 64 bytes),
    /// [`Error::MessageTooLarge`] if its encoding exceeds
    /// [`relay::Config::max_message_size`], and as for [`Node::publish`]:
    /// [`Error::Duplicate`], [`Error::NoPeers`], [`Error::QueueFull`], [`Error::Publish`],
    /// [`Error::Shutdown`].
    pub async fn relay_publish_on(
        &self,
        shard: PubsubTopic,
        message: WakuMessage,
    ) -> Result<MessageHash> {
        let config = self.relay_config()?;
        if shard.cluster != config.cluster {
            return Err(Error::Shard(shard.to_string()));
        }
        message.check()?;
        let len = prost::Message::encoded_len(&message);
        if len > config.max_message_size {
            return Err(Error::MessageTooLarge {
                len,
                max: config.max_message_size,
            });
        }
        self.call(|r| Command::RelayPublish(shard, message, r))
            .await
    }

    /// Subscribes to `shard` of this node's cluster on Waku relay; false if already
    /// subscribed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if Waku is off, [`Error::Shard`] for a shard number not below
    /// 1024, [`Error::Subscription`] if gossipsub refuses, [`Error::Shutdown`].
    pub async fn relay_subscribe(&self, shard: u16) -> Result<bool> {
        self.relay_config()?;
        self.call(|r| Command::RelaySubscribe(shard, r)).await
    }

    /// Unsubscribes from `shard`; false if not subscribed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if Waku is off, [`Error::Shutdown`].
    pub async fn relay_unsubscribe(&self, shard: u16) -> Result<bool> {
        self.relay_config()?;
        self.call(|r| Command::RelayUnsubscribe(shard, r)).await
    }

    /// Number of peers in this node's relay mesh for `shard`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if Waku is off, [`Error::Shutdown`].
    pub async fn relay_mesh_peers(&self, shard: PubsubTopic) -> Result<usize> {
        self.relay_config()?;
        self.call(|r| Command::RelayMeshPeers(shard, r)).await
    }

    /// Asks `peer` a Waku store v3 query (`/vac/waku/store-query/3.0.0`). The answer's
    /// entries are checked: an entry whose message does not hash to its key is dropped.
    /// Continue a paginated query by sending the same request with
    /// `pagination_cursor` set to the response's.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if Waku is off, [`Error::StoreBusy`] for status 503,
    /// [`Error::Refused`] for any other non-2xx status, [`Error::Request`] if the request
    /// failed (timeout, closed connection, a peer without the protocol, a response frame
    /// over 4 MiB, or one that does not fit [`Limits::store_response_read_bytes`]),
    /// [`Error::Busy`] with too many requests outstanding,
    /// [`Error::Shutdown`].
    pub async fn store_query(
        &self,
        peer: PeerId,
        request: waku::store::QueryRequest,
    ) -> Result<waku::store::QueryResponse> {
        self.relay_config()?;
        self.call(|r| Command::StoreQuery(peer, request, r)).await
    }

    /// Stops the node and waits until its connections, listeners and store are closed.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] if it had already stopped.
    pub async fn shutdown(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(tx))
            .await
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.len() > self.limits.max_directory_key {
            return Err(Error::EntryTooLarge {
                what: "key",
                len: key.len(),
                max: self.limits.max_directory_key,
            });
        }
        Ok(())
    }
}

/// TCP with noise and yamux, as `SwarmBuilder::with_tcp` builds it, but dialing from fresh
/// ports ([`fresh_ports`]).
fn tcp_transport(
    keypair: &identity::Keypair,
) -> std::result::Result<
    libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use libp2p::core::Transport as _;
    use libp2p::core::muxing::StreamMuxerBox;
    use libp2p::core::upgrade::Version;
    Ok(
        fresh_ports::FreshPorts(tcp::tokio::Transport::new(tcp::Config::default()))
            .upgrade(Version::V1Lazy)
            .authenticate(noise::Config::new(keypair)?)
            .multiplex(yamux_config())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    )
}

/// The yamux muxer's settings. yamux 0.14 grows a busy stream's receive window (doubling
/// it when the sender used half of it within two round trips) up to the connection's
/// budget, 1 GiB less 256 KiB for each allowed stream, yet its frame decoder refuses any
/// data frame over 1 MiB and closes the whole connection. js-yamux sends a data frame as
/// large as the window it was granted when its frame cap (`maxMessageSize`, 64 KiB by
/// default) is raised, so a js-libp2p peer sending a few MiB on one stream over a real
/// link lost its connection to us (issue 13, item 3). With 4096 streams the budget is used
/// up by the initial windows (4096 x 256 KiB = 1 GiB), so no window grows beyond the
/// 256 KiB of the yamux spec ("Flow Control": initial window 256 KiB) and no peer is
/// allowed a frame we refuse. The cost: one stream moves at most 256 KiB per round trip
/// (2.5 MB/s at 100 ms), ample for relay's 150 KiB messages.
fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(YAMUX_MAX_STREAMS);
    c
}

fn build_behaviour(
    config: &Config,
    keypair: &identity::Keypair,
    is_store: bool,
    stats: &Stats,
) -> Result<Behaviour> {
    let limits = &config.limits;
    let peer_id = keypair.public().to_peer_id();
    let gossip_config = gossipsub::ConfigBuilder::default()
        // Strict anonymous mode: messages carrying an author, sequence number or signature
        // are rejected. MLS authenticates content; the transport reveals no author.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(gossip_message_id)
        .max_transmit_size(limits.max_message_size + 1 + GOSSIP_OVERHEAD)
        .heartbeat_interval(config.gossip_heartbeat)
        .heartbeat_initial_delay(config.gossip_heartbeat)
        .connection_handler_queue_len(limits.gossip_queue)
        .publish_queue_duration(limits.gossip_queue_timeout)
        .forward_queue_duration(limits.gossip_queue_timeout)
        .duplicate_cache_time(DUPLICATE_WINDOW)
        // IDONTWANT only pays off when the message it suppresses is much larger than the
        // control message itself.
        .idontwant_message_size_threshold(IDONTWANT_THRESHOLD)
        .build()
        .map_err(|e| Error::Setup(e.to_string()))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
            .map_err(|e| Error::Setup(e.to_string()))?;
    gossipsub
        .with_peer_score(
            peer_score_params(),
            gossipsub::PeerScoreThresholds::default(),
        )
        .map_err(Error::Setup)?;

    let support = if is_store {
        ProtocolSupport::Full
    } else {
        ProtocolSupport::Outbound
    };
    let rpc = request_response::Behaviour::with_codec(
        rpc::Codec::new(
            rpc_limits(limits),
            stats.requests_malformed.clone(),
            ReadBudget::new(
                limits.rpc_request_read_bytes,
                stats.rpc_request_read_bytes.clone(),
                Arc::default(),
                stats.rpc_reads_refused.clone(),
            )
            .per_connection(rpc::max_request_frame(&rpc_limits(limits))),
            ReadBudget::new(
                limits.rpc_response_read_bytes,
                stats.rpc_response_read_bytes.clone(),
                Arc::default(),
                stats.rpc_reads_refused.clone(),
            ),
        ),
        [(StreamProtocol::new(rpc::PROTOCOL), support)],
        request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(limits.max_concurrent_streams),
    );

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), keypair.public())
            .with_agent_version(format!("pqmls-transport/{}", env!("CARGO_PKG_VERSION"))),
    );
    let ping = ping::Behaviour::new(ping::Config::new());

    let kad = config.kademlia.then(|| {
        let mut kc = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        // The DHT is for discovery only: records others push are not stored.
        kc.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut k = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kc);
        k.set_mode(Some(kad::Mode::Server));
        k
    });
    let mdns = if config.mdns {
        Some(mdns::tokio::Behaviour::new(
            mdns::Config::default(),
            peer_id,
        )?)
    } else {
        None
    };
    let slots = slots::Behaviour::new(
        slots::SlotLimits {
            max_peers: limits.max_peers,
            max_connections_per_peer: limits.max_connections_per_peer,
            max_connections_per_ip: limits.max_connections_per_ip,
            max_pending_incoming: limits.max_pending_incoming,
            max_pending_per_ip: limits.max_pending_per_ip,
            loopback_exempt: limits.loopback_exempt,
        },
        stats.slots.clone(),
    );
    let (relay, metadata, waku_store, lightpush, filters) = match &config.waku {
        Some(w) => {
            let mut relay = relay::behaviour(w).map_err(Error::Setup)?;
            relay
                .with_peer_score(
                    peer_score_params(),
                    gossipsub::PeerScoreThresholds::default(),
                )
                .map_err(Error::Setup)?;
            let metadata = request_response::Behaviour::with_codec(
                metadata::Codec,
                [(
                    StreamProtocol::new(metadata::PROTOCOL),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default()
                    .with_request_timeout(METADATA_TIMEOUT)
                    .with_max_concurrent_streams(limits.max_concurrent_streams),
            );
            let support = if is_store {
                ProtocolSupport::Full
            } else {
                ProtocolSupport::Outbound
            };
            let waku_store = request_response::Behaviour::with_codec(
                waku::store::codec(
                    stats.requests_malformed.clone(),
                    ReadBudget::new(
                        limits.store_request_read_bytes,
                        stats.store_request_read_bytes.clone(),
                        stats.store_request_read_bytes_peak.clone(),
                        stats.store_reads_refused.clone(),
                    )
                    .per_connection(limits.store_request_read_bytes_per_connection),
                    ReadBudget::new(
                        limits.store_response_read_bytes,
                        stats.store_response_read_bytes.clone(),
                        stats.store_response_read_bytes_peak.clone(),
                        stats.store_reads_refused.clone(),
                    ),
                ),
                [(StreamProtocol::new(waku::store::PROTOCOL), support)],
                request_response::Config::default()
                    .with_request_timeout(limits.request_timeout)
                    .with_max_concurrent_streams(limits.max_concurrent_streams),
            );
            let support = if config.lightpush.is_some() {
                ProtocolSupport::Full
            } else {
                ProtocolSupport::Outbound
            };
            let lightpush = request_response::Behaviour::with_codec(
                lightpush::Codec::new(
                    w.max_message_size,
                    ReadSlots::new(
                        stats.lightpush_reading.clone(),
                        stats.lightpush_refused.clone(),
                        config
                            .lightpush
                            .as_ref()
                            .map_or(1, |c| c.max_concurrent_requests),
                    )
                    .per_connection(
                        config
                            .lightpush
                            .as_ref()
                            .map_or(1, |c| c.max_concurrent_requests_per_connection),
                    ),
                ),
                [(StreamProtocol::new(lightpush::PROTOCOL), support)],
                request_response::Config::default()
                    .with_request_timeout(limits.request_timeout)
                    .with_max_concurrent_streams(limits.max_concurrent_streams),
            );
            let filters = waku_filter::behaviours(config, w, limits, stats);
            (
                Some(relay),
                Some(metadata),
                Some(waku_store),
                Some(lightpush),
                Some(filters),
            )
        }
        None => (None, None, None, None, None),
    };
    let (filter_subscribe, filter_push) = filters.unzip();
    let filter_push_in = config
        .waku
        .as_ref()
        .map(|w| waku_filter::push_reader(w, limits, stats));
    let peer_exchange = match (&config.waku, &config.peer_exchange) {
        (Some(_), Some(px)) => {
            let support = if px.serve {
                ProtocolSupport::Full
            } else {
                ProtocolSupport::Outbound
            };
            Some(request_response::Behaviour::with_codec(
                peer_exchange::codec(),
                [(StreamProtocol::new(peer_exchange::PROTOCOL), support)],
                request_response::Config::default()
                    .with_request_timeout(limits.request_timeout)
                    .with_max_concurrent_streams(limits.max_concurrent_streams),
            ))
        }
        _ => None,
    };
    Ok(Behaviour {
        slots,
        gossipsub,
        rpc,
        identify,
        ping,
        kad: Toggle::from(kad),
        mdns: Toggle::from(mdns),
        relay: Toggle::from(relay),
        metadata: Toggle::from(metadata),
        waku_store: Toggle::from(waku_store),
        lightpush: Toggle::from(lightpush),
        filter_subscribe: Toggle::from(filter_subscribe),
        filter_push: Toggle::from(filter_push),
        filter_push_in: Toggle::from(filter_push_in),
        peer_exchange: Toggle::from(peer_exchange),
    })
}

/// Peer scoring is used for one thing only: penalising peers that send invalid messages
/// (gossipsub's P4). With the default thresholds a peer is graylisted (everything it sends is
/// ignored) once `-10 * invalid²` drops below -80, i.e. after three invalid messages, and
/// recovers as the count decays by 1 % per second (about 6 s after three, two minutes after
/// ten). The other score components are off: groups are quiet, so mesh delivery rates say
/// nothing, and many honest peers can share one IP address.
fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    }
}

/// Per-topic score parameters: only invalid messages count, see [`peer_score_params`].
fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    }
}

fn rpc_limits(l: &Limits) -> rpc::Limits {
    rpc::Limits {
        max_message_size: l.max_message_size,
        max_directory_key: l.max_directory_key,
        max_directory_blob: l.max_directory_blob,
        history_page_messages: l.history_page_messages,
        history_page_bytes: l.history_page_bytes,
    }
}

/// Gossipsub message ids are the content hash of topic and payload; a message without a
/// valid envelope gets the hash of its raw bytes (it is rejected anyway).
fn gossip_message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let topic = m.topic.as_str();
    let id = match message::open(&m.data) {
        Some(payload) => MessageId::compute_raw(topic, payload),
        None => MessageId::compute_raw(topic, &m.data),
    };
    gossipsub::MessageId::new(id.as_bytes())
}

/// Refuses a TCP listen address with a fixed port that another socket listens on.
///
/// libp2p-tcp sets `SO_REUSEPORT` on its listening sockets (so that dials can reuse the
/// port), and Linux lets any number of such sockets of one user listen on one port, handing
/// each incoming connection to one of them: a second node started on a port in use would
/// start without error and silently split the network. A plain socket (`SO_REUSEADDR`
/// only, which still allows a port whose previous owner left connections in `TIME_WAIT`)
/// cannot bind where any socket listens, so binding one for a moment tells whether the
/// port is free. Two nodes starting at the same instant on one port can still both pass
/// this check; a node started after another one is listening cannot.
fn check_tcp_port_free(addr: &Multiaddr) -> Result<()> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    let (Some(ip), Some(port)) = (ip, port) else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, port)) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(Error::AddressInUse(addr.to_string()))
        }
        // Anything else (an address not on this host, no permission) is left to libp2p,
        // which reports it as `Error::Address`.
        Err(_) => Ok(()),
    }
}

/// The kind of key a new identity gets.
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    Ed25519,
    Secp256k1,
}

impl KeyKind {
    fn generate(self) -> identity::Keypair {
        match self {
            KeyKind::Ed25519 => identity::Keypair::generate_ed25519(),
            KeyKind::Secp256k1 => identity::Keypair::generate_secp256k1(),
        }
    }
}

/// Creates the data directory (and missing parents) with mode 0700 on Unix; an existing
/// directory keeps its mode. Issue 12 item 3: the identity key and the databases live
/// here.
#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `path` empty with mode 0600 if it does not exist, and takes group and other
/// permissions away from an existing one (issue 12 item 3: a database made by an earlier
/// version was 0644). SQLite gives its `-wal` and `-shm` files the mode of the database.
#[cfg(unix)]
fn ensure_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn ensure_private_file(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Loads the identity key of `dir`, or creates one of `kind` (an existing key is used
/// whatever its kind: a store keeps its peer id across versions).
fn load_or_create_identity(dir: &Path, kind: KeyKind) -> Result<identity::Keypair> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = kind.generate();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| Error::Setup(e.to_string()))?;
            write_private(&path, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Recently delivered message ids, bounded: the oldest are forgotten first.
struct Seen {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    cap: usize,
}

impl Seen {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// What an outbound request is for.
enum Pending {
    /// Part of a directory put fanned out to every store.
    Put(u64),
    /// A directory get; `rest` are stores still to ask.
    Get {
        key: Vec<u8>,
        rest: Vec<PeerId>,
        reply: Reply<Option<Vec<u8>>>,
    },
    /// A history page; `rest` are stores still to ask.
    History {
        topic: Topic,
        from: Cursor,
        rest: Vec<PeerId>,
        reply: Reply<Page>,
    },
}

/// A directory put waiting for its stores.
struct PutOp {
    outstanding: usize,
    stored: bool,
    last_error: Option<Error>,
    reply: Reply<()>,
}

/// The node task: owns the swarm and the store.
struct Task {
    swarm: Swarm<Behaviour>,
    store: Option<Store>,
    store_config: Option<store::Config>,
    validator: Option<Arc<dyn Validator>>,
    limits: Limits,
    stats: Arc<Stats>,
    inbound: mpsc::Sender<Message>,
    seen: Seen,
    subscribed: HashSet<Topic>,
    store_peers: HashSet<PeerId>,
    /// What connected peers announce of the Waku services ([`Node::service_peers`]). At
    /// most one entry per connected peer, dropped with its last connection.
    services: HashMap<PeerId, ServiceEntry>,
    services_seq: u64,
    pending: HashMap<OutboundRequestId, Pending>,
    puts: HashMap<u64, PutOp>,
    next_put: u64,
    /// Whether the store already warned that it serves `max_topics` topics.
    topic_limit_warned: bool,
    /// Bytes held in responses not yet written, see [`Limits::response_bytes_in_flight`].
    responses: Budget<PeerId, Held>,
    /// A store node's Waku archive (store v3), when Waku and the store role are both on.
    archive: Option<waku::store::Archive>,
    /// Outstanding Waku store queries of this node.
    store_queries: HashMap<OutboundRequestId, Reply<waku::store::QueryResponse>>,
    /// The lightpush service's settings, when this node is one.
    lightpush_service: Option<lightpush::Config>,
    /// Outstanding lightpush requests of this node (as a client).
    lightpushes: HashMap<OutboundRequestId, Reply<u32>>,
    /// Numbers the request ids of this node's lightpush and filter requests.
    next_request_id: u64,
    /// Waku relay and metadata, when on.
    waku: Option<WakuState>,
    /// The bootstrap peers, dialed again with backoff when they go away.
    bootstrap: Vec<Bootstrap>,
    /// Peer exchange, when on.
    px: Option<waku_px::State>,
    /// Per-peer request rates of the Waku services.
    limiters: Limiters,
}

/// A bootstrap peer and its redial state.
struct Bootstrap {
    addr: Multiaddr,
    /// Learnt from the first connection (or the address's `/p2p/` suffix).
    peer: Option<PeerId>,
    /// The dial in progress.
    dialing: Option<ConnectionId>,
    /// When the current connection was established.
    connected_at: Option<tokio::time::Instant>,
    /// Wait before the next dial after a failure.
    backoff: Duration,
    /// When to dial next; `None` while connected or dialing.
    next: Option<tokio::time::Instant>,
}

impl Bootstrap {
    /// Schedules the next dial after the current backoff, and doubles the backoff.
    fn schedule(&mut self, now: tokio::time::Instant) {
        self.dialing = None;
        self.next = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(REDIAL_MAX);
    }
}

/// A response charged to the response budget: request ids are counted per protocol, so
/// the protocol is part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Held {
    Rpc(InboundRequestId),
    WakuStore(InboundRequestId),
}

/// The node task's Waku state.
struct WakuState {
    config: relay::Config,
    inbound: mpsc::Sender<relay::Received>,
    /// Shards subscribed to on relay (announced in metadata).
    shards: HashSet<u16>,
    /// Filter service and client state.
    filter: waku_filter::State,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let prune_every = self
            .store_config
            .as_ref()
            .map_or(Duration::from_secs(3600), |c| c.prune_interval)
            .max(Duration::from_secs(1));
        let mut prune = tokio::time::interval(prune_every);
        let mut redial = tokio::time::interval(REDIAL_TICK);
        let mut filter_tick = tokio::time::interval(waku_filter::TICK);
        let mut px_tick = tokio::time::interval(PX_TICK);
        let mut done = None;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        done = Some(reply);
                        break;
                    }
                    Some(command) => self.on_command(command),
                },
                _ = prune.tick() => self.prune(),
                _ = redial.tick() => self.redial_due(),
                _ = filter_tick.tick() => self.filter_tick(),
                _ = px_tick.tick() => self.px_tick(),
            }
        }
        // Close connections, listeners and the database before reporting completion.
        drop(self);
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }

    fn prune(&mut self) {
        if let (Some(archive), Some(config)) = (&self.archive, &self.store_config) {
            let cutoff = SystemTime::now()
                .checked_sub(config.retention)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            if let Err(e) = archive.prune(cutoff) {
                tracing::warn!("pruning the Waku archive failed: {e}");
            }
        }
        if let Some(store) = &self.store
            && let Err(e) = store.prune(SystemTime::now())
        {
            tracing::warn!("pruning the store failed: {e}");
        }
    }

    fn resubscribe_served_topics(&mut self) {
        let topics = match &self.store {
            Some(store) => match store.topics() {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("cannot read served topics: {e}");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        for topic in topics {
            let _ = self.subscribe(topic);
        }
    }

    fn dial_bootstrap(&mut self, i: usize) {
        let Some(b) = self.bootstrap.get_mut(i) else {
            return;
        };
        let addr = b.addr.clone();
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            b.peer = Some(peer);
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(&peer, addr.clone());
            }
        }
        let opts = DialOpts::from(addr.clone());
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                b.dialing = Some(id);
                b.next = None;
            }
            Err(e) => {
                tracing::warn!("cannot dial bootstrap peer {addr}: {e}");
                b.schedule(tokio::time::Instant::now());
            }
        }
    }

    /// Dials the bootstrap peers whose backoff has run out and that are not connected.
    fn redial_due(&mut self) {
        let now = tokio::time::Instant::now();
        for i in 0..self.bootstrap.len() {
            let Some(b) = self.bootstrap.get_mut(i) else {
                continue;
            };
            if b.next.is_none_or(|t| t > now) {
                continue;
            }
            if b.peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                b.next = None;
                continue;
            }
            tracing::debug!("dialing bootstrap peer {} again", b.addr);
            self.dial_bootstrap(i);
        }
    }

    fn bootstrap_connected(&mut self, peer: PeerId, connection: ConnectionId) {
        for b in &mut self.bootstrap {
            if b.dialing == Some(connection) || b.peer == Some(peer) {
                b.peer = Some(peer);
                b.dialing = None;
                b.next = None;
                b.connected_at.get_or_insert_with(tokio::time::Instant::now);
            }
        }
    }

    fn bootstrap_dial_failed(&mut self, connection: ConnectionId) {
        let now = tokio::time::Instant::now();
        for b in &mut self.bootstrap {
            if b.dialing == Some(connection) {
                b.schedule(now);
            }
        }
    }

    fn bootstrap_gone(&mut self, peer: PeerId) {
        let now = tokio::time::Instant::now();
        for b in &mut self.bootstrap {
            if b.peer == Some(peer) && b.dialing.is_none() {
                if b.connected_at
                    .take()
                    .is_some_and(|t| now - t >= REDIAL_STABLE)
                {
                    b.backoff = REDIAL_MIN;
                }
                b.schedule(now);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe(topic, reply) => {
                let _ = reply.send(self.subscribe(topic));
            }
            Command::Unsubscribe(topic, reply) => {
                let _ = reply.send(self.unsubscribe(&topic));
            }
            Command::Publish(topic, data, reply) => {
                let _ = reply.send(self.publish(&topic, data));
            }
            Command::Put(key, blob, reply) => self.put(key, blob, reply),
            Command::Get(key, reply) => self.get(key, reply),
            Command::History(topic, from, reply) => self.history(topic, from, reply),
            Command::Dial(addr, reply) => {
                let r = self.swarm.dial(addr.clone()).map_err(|e| Error::Address {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
                let _ = reply.send(r);
            }
            Command::ListenAddrs(reply) => {
                let me = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with(Protocol::P2p(me)))
                    .collect();
                let _ = reply.send(Ok(addrs));
            }
            Command::ServicePeers(service, shard, reply) => {
                let on_shard = |e: &ServiceEntry| match (shard, &e.shards) {
                    (Some(s), Some(theirs)) => theirs.contains(&s),
                    _ => true,
                };
                let mut peers: Vec<(bool, u64, PeerId)> = self
                    .services
                    .iter()
                    .filter(|(_, e)| e.admitted && e.bits & service.bit() != 0 && on_shard(e))
                    .map(|(peer, e)| (!e.dialed, e.seq, *peer))
                    .collect();
                peers.sort_unstable();
                let _ = reply.send(Ok(peers.into_iter().map(|(_, _, p)| p).collect()));
            }
            Command::MeshPeers(topic, reply) => {
                let hash = gossipsub::TopicHash::from_raw(topic.as_str());
                let n = self.swarm.behaviour().gossipsub.mesh_peers(&hash).count();
                let _ = reply.send(Ok(n));
            }
            Command::RelayPublish(shard, message, reply) => {
                let _ = reply.send(self.relay_publish(shard, &message));
            }
            Command::RelaySubscribe(shard, reply) => {
                let _ = reply.send(self.relay_subscribe(shard));
            }
            Command::RelayUnsubscribe(shard, reply) => {
                let _ = reply.send(self.relay_unsubscribe(shard));
            }
            Command::RelayMeshPeers(shard, reply) => {
                let hash = gossipsub::TopicHash::from_raw(shard.to_string());
                let n = self
                    .swarm
                    .behaviour()
                    .relay
                    .as_ref()
                    .map_or(0, |r| r.mesh_peers(&hash).count());
                let _ = reply.send(Ok(n));
            }
            Command::StoreQuery(peer, request, reply) => self.store_query(peer, request, reply),
            Command::LightPush(peer, shard, message, reply) => {
                self.lightpush(peer, shard, message, reply);
            }
            Command::Filter(peer, op, reply) => self.filter_request(peer, op, reply),
            Command::PeerExchange(peer, n, reply) => self.px_request(peer, n, Some(reply)),
            Command::Shutdown(_) => {
                // Handled by the loop in `run`.
            }
        }
    }

    fn subscribe(&mut self, topic: Topic) -> Result<bool> {
        let t = gossipsub::IdentTopic::new(topic.as_str());
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        gossip
            .set_topic_params(t.clone(), topic_score_params())
            .map_err(|e| Error::Subscription(e.to_string()))?;
        let new = gossip
            .subscribe(&t)
            .map_err(|e| Error::Subscription(e.to_string()))?;
        if let Some(store) = &self.store {
            store.add_topic(&topic)?;
        }
        self.subscribed.insert(topic);
        Ok(new)
    }

    fn unsubscribe(&mut self, topic: &Topic) -> Result<bool> {
        let t = gossipsub::IdentTopic::new(topic.as_str());
        let was = self.swarm.behaviour_mut().gossipsub.unsubscribe(&t);
        self.subscribed.remove(topic);
        if let Some(store) = &self.store {
            store.remove_topic(topic)?;
        }
        Ok(was)
    }

    fn publish(&mut self, topic: &Topic, data: Vec<u8>) -> Result<MessageId> {
        let id = MessageId::compute(topic, &data);
        let len = data.len();
        let envelope = message::seal(&data);
        let result = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(gossipsub::TopicHash::from_raw(topic.as_str()), envelope);
        // A store keeps its own messages too, even if no peer was reachable right now.
        if self.subscribed.contains(topic) {
            self.seen.insert(id);
            self.store_message(topic, &id, SystemTime::now(), &data);
        }
        match result {
            Ok(_) => {
                bump(&self.stats.published);
                add(&self.stats.published_bytes, len);
                Ok(id)
            }
            Err(gossipsub::PublishError::Duplicate) => Err(Error::Duplicate),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(Error::NoPeers),
            Err(gossipsub::PublishError::MessageTooLarge) => Err(Error::MessageTooLarge {
                len,
                max: self.limits.max_message_size,
            }),
            Err(gossipsub::PublishError::AllQueuesFull(_)) => Err(Error::QueueFull),
            Err(e) => Err(Error::Publish(e.to_string())),
        }
    }

    fn relay_subscribe(&mut self, shard: u16) -> Result<bool> {
        let Some(waku) = &mut self.waku else {
            return Err(Error::Config("Waku relay is off".into()));
        };
        let topic = PubsubTopic::new(waku.config.cluster, shard)
            .ok_or_else(|| Error::Shard(format!("shard {shard}")))?;
        let t = gossipsub::IdentTopic::new(topic.to_string());
        let Some(relay) = self.swarm.behaviour_mut().relay.as_mut() else {
            return Err(Error::Config("Waku relay is off".into()));
        };
        relay
            .set_topic_params(t.clone(), topic_score_params())
            .map_err(|e| Error::Subscription(e.to_string()))?;
        let new = relay
            .subscribe(&t)
            .map_err(|e| Error::Subscription(e.to_string()))?;
        waku.shards.insert(shard);
        Ok(new)
    }

    fn relay_unsubscribe(&mut self, shard: u16) -> Result<bool> {
        let Some(waku) = &mut self.waku else {
            return Err(Error::Config("Waku relay is off".into()));
        };
        let Some(topic) = PubsubTopic::new(waku.config.cluster, shard) else {
            return Ok(false);
        };
        waku.shards.remove(&shard);
        let t = gossipsub::IdentTopic::new(topic.to_string());
        Ok(self
            .swarm
            .behaviour_mut()
            .relay
            .as_mut()
            .is_some_and(|r| r.unsubscribe(&t)))
    }

    fn relay_publish(&mut self, shard: PubsubTopic, message: &WakuMessage) -> Result<MessageHash> {
        self.relay_publish_counted(shard, message)
            .map(|(hash, _)| hash)
    }

    /// Publishes on relay; returns the message's hash and the number of relay peers known
    /// on the shard when it was published (flood publishing sends it to each of them, less
    /// any gossipsub scores below its publish threshold).
    ///
    /// A store archives the message only once gossipsub has taken it, so that it never
    /// serves a message that was not published (before, it archived first: a message
    /// gossipsub refused was still served). Taken means:
    /// - published (`Ok`);
    /// - `AllQueuesFull`: gossipsub has put it in its seen and message caches, so it
    ///   advertises it to peers (IHAVE) and a retry is refused as a duplicate;
    /// - `NoPeersSubscribedToTopic` (older rust-libp2p's `InsufficientPeers`): archived as
    ///   the Nim node does. Its relay runs with `triggerSelf = true`
    ///   (logos-delivery `waku_relay/protocol.nim`), and nim-libp2p's gossipsub `publish`
    ///   calls the local handlers, the archive among them
    ///   (logos-delivery `node/subscription_manager.nim`), before it looks for peers
    ///   ("No peers for topic, skipping publish"). 13/WAKU2-STORE ("Waku Message Store
    ///   Eligibility") asks only for a valid message with a timestamp that is not
    ///   ephemeral, and the store then serves the message to the peers that query it
    ///   later. The caller still gets [`Error::NoPeers`] (lightpush 503); a retry is
    ///   not a duplicate for gossipsub (rust-libp2p records a message as seen only after
    ///   finding peers) and the archive keeps one row per hash.
    ///
    /// Filter subscribers of this service get the message in the same cases (the Nim
    /// node's filter handler is one of those local handlers, run before the archive); a
    /// retry after `NoPeers` pushes it again, as there; receivers drop copies by message id
    /// (the SDK's Waku transport does).
    ///
    /// Not archived: `MessageTooLarge` (64/WAKU2-NETWORK: a message "published to the
    /// network MUST NOT exceed" the limit), `Duplicate` (a message with the same data was
    /// published or received recently, and was archived then under its own shard: the same
    /// bytes on another shard hash differently and were never relayed there), and
    /// transform or signing failures. Here the Nim node differs: it archives a duplicate
    /// too, since its local handlers run before the seen check.
    fn relay_publish_counted(
        &mut self,
        shard: PubsubTopic,
        message: &WakuMessage,
    ) -> Result<(MessageHash, usize)> {
        let topic = shard.to_string();
        let hash = waku::message_hash(&topic, message);
        let data = message.to_bytes();
        let len = data.len();
        let Some(relay) = self.swarm.behaviour_mut().relay.as_mut() else {
            return Err(Error::Config("Waku relay is off".into()));
        };
        let topic = gossipsub::TopicHash::from_raw(topic);
        let peers = relay
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&topic))
            .count();
        let published = relay.publish(topic, data);
        if matches!(
            published,
            Ok(_)
                | Err(gossipsub::PublishError::NoPeersSubscribedToTopic
                    | gossipsub::PublishError::AllQueuesFull(_))
        ) {
            // The Nim node's local handlers, filter before archive
            // (logos-delivery `waku/node/subscription_manager.nim`): a light client's
            // subscriber on this service gets the message even with no relay peer.
            self.filter_push(shard, message);
            self.archive_message(&shard, &hash, message);
        }
        match published {
            Ok(_) => {
                bump(&self.stats.relay_published);
                Ok((hash, peers))
            }
            Err(gossipsub::PublishError::Duplicate) => Err(Error::Duplicate),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(Error::NoPeers),
            Err(gossipsub::PublishError::MessageTooLarge) => Err(Error::MessageTooLarge {
                len,
                max: self.waku.as_ref().map_or(0, |w| w.config.max_message_size),
            }),
            Err(gossipsub::PublishError::AllQueuesFull(_)) => Err(Error::QueueFull),
            Err(e) => Err(Error::Publish(e.to_string())),
        }
    }

    /// A relay message: [`relay::check`], verdict to gossipsub, delivery if accepted.
    fn on_relay(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            if let gossipsub::Event::SlowPeer { .. } = event {
                bump(&self.stats.slow_peers);
            }
            return;
        };
        let Some(waku) = &self.waku else {
            return;
        };
        let checked = relay::check(&waku.config, message.topic.as_str(), &message.data);
        let acceptance = if checked.is_ok() {
            gossipsub::MessageAcceptance::Accept
        } else {
            bump(&self.stats.relay_rejected);
            gossipsub::MessageAcceptance::Reject
        };
        if let Some(relay) = self.swarm.behaviour_mut().relay.as_mut() {
            relay.report_message_validation_result(&message_id, &propagation_source, acceptance);
        }
        let Ok((shard, message)) = checked else {
            return;
        };
        let hash = waku::message_hash(&shard.to_string(), &message);
        self.archive_message(&shard, &hash, &message);
        self.filter_push(shard, &message);
        let Some(waku) = &self.waku else {
            return;
        };
        let received = relay::Received {
            hash,
            shard,
            message,
            received: SystemTime::now(),
        };
        // Count before sending, so a reader never sees a message before its count.
        bump(&self.stats.relay_delivered);
        if waku.inbound.try_send(received).is_err() {
            self.stats.relay_delivered.fetch_sub(1, Ordering::Relaxed);
            bump(&self.stats.relay_inbound_dropped);
        }
    }

    /// A store node archives every relay message it accepts or publishes (if eligible).
    fn archive_message(&self, shard: &PubsubTopic, hash: &MessageHash, message: &WakuMessage) {
        if let Some(archive) = &self.archive {
            match archive.insert(&shard.to_string(), hash, message) {
                Ok(true) => bump(&self.stats.stored),
                Ok(false) => {}
                Err(e) => tracing::warn!("archiving a Waku message failed: {e}"),
            }
        }
    }

    fn store_query(
        &mut self,
        peer: PeerId,
        request: waku::store::QueryRequest,
        reply: Reply<waku::store::QueryResponse>,
    ) {
        if !self.has_room(1 + self.waku_requests()) {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let Some(b) = self.swarm.behaviour_mut().waku_store.as_mut() else {
            let _ = reply.send(Err(Error::Config("Waku is off".into())));
            return;
        };
        let id = b.send_request(&peer, Framed::Message(request));
        self.store_queries.insert(id, reply);
    }

    fn on_waku_store(
        &mut self,
        event: request_response::Event<
            Framed<waku::store::QueryRequest>,
            waku::store::QueryResponse,
        >,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                if self.archive.is_none() {
                    return;
                }
                let refusal = match request {
                    Framed::Message(r) => Ok(r),
                    // Not read: the request read budget was exhausted.
                    Framed::Busy => {
                        bump(&self.stats.requests_busy);
                        Err(waku::store::QueryResponse::busy())
                    }
                    // Counted by the codec; oversized requests are read errors there.
                    Framed::Malformed | Framed::TooLarge(_) => {
                        Err(waku::store::QueryResponse::malformed())
                    }
                };
                let request = match refusal {
                    Ok(r) => r,
                    Err(response) => {
                        if let Some(b) = self.swarm.behaviour_mut().waku_store.as_mut() {
                            let _ = b.send_response(channel, response);
                        }
                        return;
                    }
                };
                if !self.rate_allows(Service::Store, peer) {
                    bump(&self.stats.requests_refused);
                    let response =
                        waku::store::QueryResponse::too_many_requests(request.request_id);
                    if let Some(b) = self.swarm.behaviour_mut().waku_store.as_mut() {
                        let _ = b.send_response(channel, response);
                    }
                    return;
                }
                let Some(archive) = &self.archive else {
                    return;
                };
                // Framing of the response around its entries: ids, status, cursor.
                let budget = self.responses.available(&peer).saturating_sub(1024);
                let response = archive.query(request, budget);
                if response.status_code == Some(waku::store::STATUS_UNAVAILABLE) {
                    bump(&self.stats.requests_busy);
                } else if response.is_success() {
                    bump(&self.stats.requests_served);
                } else {
                    bump(&self.stats.requests_refused);
                }
                let held = Held::WakuStore(request_id);
                self.responses
                    .charge(held, peer, prost::Message::encoded_len(&response));
                let sent = self
                    .swarm
                    .behaviour_mut()
                    .waku_store
                    .as_mut()
                    .map(|b| b.send_response(channel, response).is_ok());
                if sent != Some(true) {
                    self.responses.release(&held);
                }
                self.update_response_bytes();
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.store_queries.remove(&request_id) {
                    let _ = reply.send(check_store_response(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.store_queries.remove(&request_id) {
                    let _ = reply.send(Err(Error::Request(error.to_string())));
                }
            }
            request_response::Event::InboundFailure { request_id, .. } => {
                bump(&self.stats.requests_failed);
                self.responses.release(&Held::WakuStore(request_id));
                self.update_response_bytes();
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.responses.release(&Held::WakuStore(request_id));
                self.update_response_bytes();
            }
        }
    }

    /// This node's metadata: its cluster and the relay shards it subscribes to.
    fn own_metadata(&self) -> Option<metadata::Metadata> {
        let waku = self.waku.as_ref()?;
        let mut shards: Vec<u32> = waku.shards.iter().map(|s| u32::from(*s)).collect();
        shards.sort_unstable();
        Some(metadata::Metadata {
            cluster_id: Some(u32::from(waku.config.cluster)),
            shards,
        })
    }

    /// The metadata gate: a new peer is asked its cluster.
    fn ask_metadata(&mut self, peer: PeerId) {
        let Some(mine) = self.own_metadata() else {
            return;
        };
        if let Some(m) = self.swarm.behaviour_mut().metadata.as_mut() {
            m.send_request(&peer, mine);
        }
    }

    fn on_metadata(
        &mut self,
        event: request_response::Event<metadata::Metadata, metadata::Metadata>,
    ) {
        let Some(cluster) = self.metadata_gate() else {
            return;
        };
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { channel, .. },
                ..
            } => {
                // Metadata has no status to refuse with: a request over the rate is not
                // answered (the channel is dropped, which resets the stream).
                if !self.rate_allows(Service::Metadata, peer) {
                    return;
                }
                if let Some(mine) = self.own_metadata()
                    && let Some(m) = self.swarm.behaviour_mut().metadata.as_mut()
                {
                    // An error means the stream is already gone; nothing to do.
                    let _ = m.send_response(channel, mine);
                }
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                if metadata::admits(cluster, &response) {
                    bump(&self.stats.metadata_admitted);
                    if let Some(e) = self.services.get_mut(&peer) {
                        e.admitted = true;
                        e.shards = Some(
                            response
                                .shards
                                .iter()
                                .filter_map(|s| u16::try_from(*s).ok())
                                .take(MAX_NOTED_SHARDS)
                                .collect(),
                        );
                    }
                } else {
                    tracing::debug!(
                        "disconnecting {peer}: cluster {:?}, ours {cluster}",
                        response.cluster_id
                    );
                    bump(&self.stats.metadata_refused);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if self.swarm.is_connected(&peer) {
                    tracing::debug!("disconnecting {peer}: no metadata ({error})");
                    bump(&self.stats.metadata_refused);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn store_message(&mut self, topic: &Topic, id: &MessageId, at: SystemTime, data: &[u8]) {
        if let Some(store) = &self.store {
            match store.insert(topic, id, at, data) {
                Ok(true) => bump(&self.stats.stored),
                Ok(false) => {}
                Err(e) => tracing::warn!("storing message {id} failed: {e}"),
            }
        }
    }

    /// Connected store peers in a stable order.
    fn store_candidates(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self.store_peers.iter().copied().collect();
        peers.sort();
        peers
    }

    fn has_room(&self, n: usize) -> bool {
        self.pending.len().saturating_add(n) <= self.limits.max_pending_requests
    }

    /// Outstanding Waku requests of this node as a client (store, lightpush, filter, peer
    /// exchange).
    fn waku_requests(&self) -> usize {
        self.store_queries.len()
            + self.lightpushes.len()
            + self.waku.as_ref().map_or(0, |w| w.filter.requests())
            + self.px.as_ref().map_or(0, |p| p.requests())
    }

    /// Takes a token of `peer`'s bucket for `service`; false (and counted) when the peer is
    /// over its rate ([`RateLimits`]).
    fn rate_allows(&mut self, service: Service, peer: PeerId) -> bool {
        let buckets = match service {
            Service::Store => &mut self.limiters.store,
            Service::Lightpush => &mut self.limiters.lightpush,
            Service::Filter => &mut self.limiters.filter,
            Service::PeerExchange => &mut self.limiters.peer_exchange,
            Service::Metadata => &mut self.limiters.metadata,
        };
        let allowed = buckets
            .as_mut()
            .is_none_or(|b| b.allow(&peer, std::time::Instant::now()));
        if !allowed {
            bump(&self.stats.rate_limited);
        }
        allowed
    }

    /// A request id unique to this node: its peer id and a counter.
    fn request_id(&mut self) -> String {
        self.next_request_id += 1;
        format!("{}-{}", self.swarm.local_peer_id(), self.next_request_id)
    }

    fn put(&mut self, key: Vec<u8>, blob: Vec<u8>, reply: Reply<()>) {
        let mut stored_locally = false;
        if let Some(store) = &self.store {
            match store.put(&key, &blob, store::Writer::Local, SystemTime::now()) {
                Ok(store::PutOutcome::Stored) => stored_locally = true,
                Ok(store::PutOutcome::Rejected) => {
                    bump(&self.stats.puts_rejected);
                    let _ = reply.send(Err(Error::EntryRejected));
                    return;
                }
                Ok(store::PutOutcome::OverQuota) => {
                    bump(&self.stats.puts_over_quota);
                    let _ = reply.send(Err(Error::QuotaExceeded));
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let peers = self.store_candidates();
        if peers.is_empty() {
            let _ = reply.send(if stored_locally {
                Ok(())
            } else {
                Err(Error::NoStore)
            });
            return;
        }
        if !self.has_room(peers.len()) {
            let _ = reply.send(if stored_locally {
                Ok(())
            } else {
                Err(Error::Busy)
            });
            return;
        }
        let op = self.next_put;
        self.next_put = self.next_put.wrapping_add(1);
        for peer in &peers {
            let id = self.swarm.behaviour_mut().rpc.send_request(
                peer,
                Request::Put {
                    key: key.clone(),
                    blob: blob.clone(),
                },
            );
            self.pending.insert(id, Pending::Put(op));
        }
        self.puts.insert(
            op,
            PutOp {
                outstanding: peers.len(),
                stored: stored_locally,
                last_error: None,
                reply,
            },
        );
    }

    fn put_answered(&mut self, op: u64, outcome: Result<()>) {
        let finished = match self.puts.get_mut(&op) {
            Some(p) => {
                p.outstanding = p.outstanding.saturating_sub(1);
                match outcome {
                    Ok(()) => p.stored = true,
                    Err(e) => p.last_error = Some(e),
                }
                p.outstanding == 0
            }
            None => false,
        };
        if finished && let Some(p) = self.puts.remove(&op) {
            let r = if p.stored {
                Ok(())
            } else {
                Err(p.last_error.unwrap_or(Error::NoStore))
            };
            let _ = p.reply.send(r);
        }
    }

    fn get(&mut self, key: Vec<u8>, reply: Reply<Option<Vec<u8>>>) {
        let local = self.store.is_some();
        if let Some(store) = &self.store {
            match store.get(&key, SystemTime::now()) {
                Ok(Some(blob)) => {
                    let _ = reply.send(Ok(Some(blob)));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let rest = self.store_candidates();
        if rest.is_empty() {
            let _ = reply.send(if local { Ok(None) } else { Err(Error::NoStore) });
            return;
        }
        self.send_get(key, rest, reply);
    }

    fn send_get(&mut self, key: Vec<u8>, mut rest: Vec<PeerId>, reply: Reply<Option<Vec<u8>>>) {
        if !self.has_room(1) {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let Some(peer) = rest.pop() else {
            let _ = reply.send(Ok(None));
            return;
        };
        let id = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_request(&peer, Request::Get { key: key.clone() });
        self.pending.insert(id, Pending::Get { key, rest, reply });
    }

    fn history(&mut self, topic: Topic, from: Cursor, reply: Reply<Page>) {
        if self.subscribed.contains(&topic)
            && let Some(store) = &self.store
        {
            let limits = PageLimits::unbudgeted(
                self.limits.history_page_messages,
                self.limits.history_page_bytes,
            );
            let r = store
                .history(&topic, &from, limits)
                .map(|(entries, more)| make_page(&topic, entries, more));
            let _ = reply.send(r);
            return;
        }
        let rest = self.store_candidates();
        if rest.is_empty() {
            let _ = reply.send(Err(Error::NoStore));
            return;
        }
        self.send_history(topic, from, rest, reply);
    }

    fn send_history(
        &mut self,
        topic: Topic,
        from: Cursor,
        mut rest: Vec<PeerId>,
        reply: Reply<Page>,
    ) {
        if !self.has_room(1) {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let Some(peer) = rest.pop() else {
            let _ = reply.send(Err(Error::NoStore));
            return;
        };
        let request = Request::History {
            topic: topic.as_str().to_owned(),
            after: from,
            limit: u32::try_from(self.limits.history_page_messages).unwrap_or(u32::MAX),
        };
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
        self.pending.insert(
            id,
            Pending::History {
                topic,
                from,
                rest,
                reply,
            },
        );
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.on_relay(e),
            SwarmEvent::Behaviour(BehaviourEvent::Metadata(e)) => self.on_metadata(e),
            SwarmEvent::Behaviour(BehaviourEvent::WakuStore(e)) => self.on_waku_store(e),
            SwarmEvent::Behaviour(BehaviourEvent::Lightpush(e)) => self.on_lightpush(e),
            SwarmEvent::Behaviour(BehaviourEvent::FilterSubscribe(e)) => {
                self.on_filter_subscribe(e);
            }
            SwarmEvent::Behaviour(BehaviourEvent::FilterPush(e)) => self.on_filter_push(e),
            SwarmEvent::Behaviour(BehaviourEvent::FilterPushIn(p)) => {
                self.receive_push(p.peer, p.push);
            }
            SwarmEvent::Behaviour(BehaviourEvent::PeerExchange(e)) => self.on_peer_exchange(e),
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(e)) => self.on_rpc(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Only peers that speak our Kademlia protocol belong in the routing table.
                let speaks_kad = info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL);
                if speaks_kad && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for addr in &info.listen_addrs {
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                if self.swarm.is_connected(&peer_id) {
                    self.px_identified(peer_id, &info.protocols);
                    self.note_services(peer_id, &info.protocols);
                }
                let is_store = info.protocols.iter().any(|p| p.as_ref() == rpc::PROTOCOL);
                if is_store && self.swarm.is_connected(&peer_id) {
                    self.store_peers.insert(peer_id);
                } else if !is_store {
                    self.store_peers.remove(&peer_id);
                }
                self.update_peer_counts();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.add_address(&peer, addr.clone());
                    }
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                if num_established.get() == 1 {
                    self.ask_metadata(peer_id);
                    self.services_seq += 1;
                    self.services.insert(
                        peer_id,
                        ServiceEntry {
                            seq: self.services_seq,
                            dialed: endpoint.is_dialer(),
                            bits: 0,
                            admitted: self.metadata_gate().is_none(),
                            shards: None,
                        },
                    );
                }
                self.bootstrap_connected(peer_id, connection_id);
                self.update_peer_counts();
            }
            SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                self.bootstrap_dial_failed(connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.store_peers.remove(&peer_id);
                    self.services.remove(&peer_id);
                    self.bootstrap_gone(peer_id);
                    self.px_disconnected(&peer_id);
                }
                self.update_peer_counts();
            }
            _ => {}
        }
    }

    /// Records the Waku services a connected peer announced (identify may come again, with
    /// other protocols: the last announcement counts).
    fn note_services(&mut self, peer: PeerId, protocols: &[StreamProtocol]) {
        if let Some(e) = self.services.get_mut(&peer) {
            e.bits = WakuService::announced(protocols);
        }
    }

    /// The cluster the metadata gate admits, on a Waku node.
    fn metadata_gate(&self) -> Option<u16> {
        self.waku.as_ref().map(|w| w.config.cluster)
    }

    fn update_peer_counts(&self) {
        let peers = self.swarm.connected_peers().count();
        self.stats
            .connected_peers
            .store(u64::try_from(peers).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.stats.store_peers.store(
            u64::try_from(self.store_peers.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let verdict = self.check_gossip(&message);
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                if verdict == Verdict::Accept {
                    self.deliver(message);
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic, .. } => self.follow(peer_id, &topic),
            gossipsub::Event::SlowPeer { .. } => bump(&self.stats.slow_peers),
            _ => {}
        }
    }

    /// On a store that follows subscriptions, subscribes to a topic `peer` subscribed to
    /// (gossipsub reports a peer's existing subscriptions when it connects, too).
    fn follow(&mut self, peer: PeerId, topic: &gossipsub::TopicHash) {
        let (Some(_), Some(config)) = (&self.store, &self.store_config) else {
            return;
        };
        if !config.follow_subscriptions {
            return;
        }
        let max_topics = config.max_topics;
        let Some(topic) = Topic::parse(topic.as_str()) else {
            return;
        };
        if self.subscribed.contains(&topic) {
            return;
        }
        let served = self.subscribed.len();
        if served >= max_topics {
            bump(&self.stats.topics_not_followed);
            if !self.topic_limit_warned {
                self.topic_limit_warned = true;
                tracing::warn!(
                    "store serves {served} topics (max_topics {max_topics}): no longer \
                     following peers' subscriptions, further ones are counted in \
                     topics_not_followed"
                );
            }
            return;
        }
        match self.subscribe(topic.clone()) {
            Ok(_) => {
                bump(&self.stats.topics_followed);
                tracing::debug!("following {peer}'s subscription to {topic}");
            }
            Err(e) => tracing::warn!("cannot follow {peer}'s subscription to {topic}: {e}"),
        }
    }

    /// The transport's own checks, then the application's validator.
    fn check_gossip(&self, message: &gossipsub::Message) -> Verdict {
        let Some(topic) = Topic::parse(message.topic.as_str()) else {
            bump(&self.stats.malformed);
            return Verdict::Reject;
        };
        let Some(payload) = message::open(&message.data) else {
            bump(&self.stats.malformed);
            return Verdict::Reject;
        };
        if payload.len() > self.limits.max_message_size {
            bump(&self.stats.oversized);
            return Verdict::Reject;
        }
        let verdict = match &self.validator {
            Some(v) => v.validate(&topic, payload),
            None => Verdict::Accept,
        };
        match verdict {
            Verdict::Reject => bump(&self.stats.rejected),
            Verdict::Ignore => bump(&self.stats.ignored),
            Verdict::Accept => {}
        }
        verdict
    }

    fn deliver(&mut self, message: gossipsub::Message) {
        // `check_gossip` accepted it, so topic and envelope are valid; re-checked cheaply
        // rather than unwrapped.
        let Some(topic) = Topic::parse(message.topic.as_str()) else {
            return;
        };
        let mut data = message.data;
        if message::open(&data).is_none() {
            return;
        }
        data.remove(0);
        let id = MessageId::compute(&topic, &data);
        if !self.seen.insert(id) {
            bump(&self.stats.duplicates);
            return;
        }
        let now = SystemTime::now();
        self.store_message(&topic, &id, now, &data);
        let len = data.len();
        let msg = Message {
            topic,
            data,
            id,
            received: now,
        };
        // Count before sending, so a reader never sees a message before its count.
        bump(&self.stats.delivered);
        add(&self.stats.delivered_bytes, len);
        if self.inbound.try_send(msg).is_err() {
            self.stats.delivered.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .delivered_bytes
                .fetch_sub(u64::try_from(len).unwrap_or(0), Ordering::Relaxed);
            bump(&self.stats.inbound_dropped);
        }
    }

    fn on_rpc(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                let response = self.serve(peer, request);
                match response {
                    Response::Refused(Refusal::Busy) => bump(&self.stats.requests_busy),
                    Response::Refused(Refusal::Rejected) => {
                        bump(&self.stats.requests_refused);
                        bump(&self.stats.puts_rejected);
                    }
                    Response::Refused(Refusal::OverQuota) => {
                        bump(&self.stats.requests_refused);
                        bump(&self.stats.puts_over_quota);
                    }
                    Response::Refused(_) => bump(&self.stats.requests_refused),
                    _ => bump(&self.stats.requests_served),
                }
                // Charged before it is handed over: from here until libp2p reports the
                // response sent (or the request failed) the connection task holds it.
                self.responses
                    .charge(Held::Rpc(request_id), peer, rpc::response_len(&response));
                if self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response)
                    .is_err()
                {
                    // The stream is already gone: the response was dropped.
                    self.responses.release(&Held::Rpc(request_id));
                }
                self.update_response_bytes();
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_response(request_id, Ok(response)),
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => self.on_response(request_id, Err(Error::Request(error.to_string()))),
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!("inbound store request from {peer} failed: {error}");
                bump(&self.stats.requests_failed);
                self.responses.release(&Held::Rpc(request_id));
                self.update_response_bytes();
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.responses.release(&Held::Rpc(request_id));
                self.update_response_bytes();
            }
        }
    }

    fn update_response_bytes(&self) {
        let now = u64::try_from(self.responses.total()).unwrap_or(u64::MAX);
        self.stats
            .response_bytes_in_flight
            .store(now, Ordering::Relaxed);
        self.stats
            .response_bytes_in_flight_peak
            .fetch_max(now, Ordering::Relaxed);
    }

    /// Answers a store request from `peer`, within what the response budget still allows
    /// for that peer: a shorter page, or "busy", rather than more bytes held.
    fn serve(&mut self, peer: PeerId, request: Request) -> Response {
        let Some(store) = &self.store else {
            return Response::Refused(Refusal::BadRequest);
        };
        let budget = self.responses.available(&peer);
        let now = SystemTime::now();
        let result = match request {
            Request::Put { key, blob } => {
                let writer = peer.to_bytes();
                store
                    .put(&key, &blob, store::Writer::Remote(&writer), now)
                    .map(|outcome| match outcome {
                        store::PutOutcome::Stored => Response::Stored,
                        store::PutOutcome::Rejected => Response::Refused(Refusal::Rejected),
                        store::PutOutcome::OverQuota => Response::Refused(Refusal::OverQuota),
                    })
            }
            Request::Get { key } => store.get(&key, now).map(|b| match b {
                Some(blob) => {
                    let response = Response::Found(blob);
                    if rpc::response_len(&response) > budget {
                        Response::Refused(Refusal::Busy)
                    } else {
                        response
                    }
                }
                None => Response::NotFound,
            }),
            Request::History {
                topic,
                after,
                limit,
            } => {
                let Some(topic) = Topic::parse(&topic) else {
                    return Response::Refused(Refusal::BadRequest);
                };
                let messages = usize::try_from(limit)
                    .unwrap_or(usize::MAX)
                    .clamp(1, self.limits.history_page_messages);
                let limits = PageLimits {
                    messages,
                    bytes: self.limits.history_page_bytes,
                    budget: budget.saturating_sub(rpc::PAGE_OVERHEAD),
                    entry_overhead: rpc::ENTRY_OVERHEAD,
                };
                store
                    .history(&topic, &after, limits)
                    .map(|(entries, more)| {
                        if entries.is_empty() && more {
                            Response::Refused(Refusal::Busy)
                        } else {
                            Response::Page { entries, more }
                        }
                    })
            }
        };
        result.unwrap_or_else(|e| {
            tracing::warn!("store request failed: {e}");
            Response::Refused(Refusal::Internal)
        })
    }

    fn on_response(&mut self, id: OutboundRequestId, outcome: Result<Response>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::Put(op) => {
                let r = match outcome {
                    Ok(Response::Stored) => Ok(()),
                    Ok(Response::Refused(why)) => Err(refusal_error(why)),
                    Ok(_) => Err(Error::Request("unexpected response to put".into())),
                    Err(e) => Err(e),
                };
                self.put_answered(op, r);
            }
            Pending::Get { key, rest, reply } => match outcome {
                Ok(Response::Found(blob)) => {
                    let _ = reply.send(Ok(Some(blob)));
                }
                Ok(Response::NotFound) if rest.is_empty() => {
                    let _ = reply.send(Ok(None));
                }
                Ok(_) | Err(_) if !rest.is_empty() => self.send_get(key, rest, reply),
                Ok(Response::Refused(why)) => {
                    let _ = reply.send(Err(refusal_error(why)));
                }
                Ok(_) => {
                    let _ = reply.send(Err(Error::Request("unexpected response to get".into())));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Pending::History {
                topic,
                from,
                rest,
                reply,
            } => match outcome {
                Ok(Response::Page { entries, more }) => {
                    let _ = reply.send(Ok(make_page(&topic, entries, more)));
                }
                Ok(_) | Err(_) if !rest.is_empty() => self.send_history(topic, from, rest, reply),
                Ok(Response::Refused(why)) => {
                    let _ = reply.send(Err(refusal_error(why)));
                }
                Ok(_) => {
                    let _ =
                        reply.send(Err(Error::Request("unexpected response to history".into())));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }
}

/// A Waku store's answer as the client sees it: an error for a non-2xx status, and
/// entries whose message does not match their hash dropped (a store can withhold
/// messages, not alter them).
fn check_store_response(mut r: waku::store::QueryResponse) -> Result<waku::store::QueryResponse> {
    if r.status_code == Some(waku::store::STATUS_UNAVAILABLE) {
        return Err(Error::StoreBusy);
    }
    if !r.is_success() {
        return Err(Error::Refused(format!(
            "status {:?}: {}",
            r.status_code,
            r.status_desc
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(128)
                .collect::<String>()
        )));
    }
    r.messages.retain(
        |kv| match (&kv.message_hash, &kv.message, &kv.pubsub_topic) {
            (Some(h), Some(m), Some(t)) => waku::message_hash(t, m).as_bytes().as_slice() == h,
            (Some(h), None, None) => h.len() == 32,
            _ => false,
        },
    );
    Ok(r)
}

/// The error a client reports for a store's refusal.
fn refusal_error(why: Refusal) -> Error {
    match why {
        Refusal::Busy => Error::StoreBusy,
        Refusal::Rejected => Error::EntryRejected,
        Refusal::OverQuota => Error::QuotaExceeded,
        Refusal::BadRequest | Refusal::Internal => Error::Refused(format!("{why:?}")),
    }
}

fn make_page(topic: &Topic, entries: Vec<store::Entry>, more: bool) -> Page {
    let messages: Vec<Message> = entries
        .into_iter()
        .filter(|e| MessageId::compute(topic, &e.data) == e.id)
        .map(|e| store::entry_to_message(topic, e))
        .collect();
    let next = match messages.last() {
        Some(last) if more => Some(Cursor::after(last)),
        _ => None,
    };
    Page {
        messages,
        next,
        resume: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_window_forgets_oldest_first() {
        let mut seen = Seen::new(2);
        let id = |b| MessageId([b; 32]);
        assert!(seen.insert(id(1)));
        assert!(!seen.insert(id(1)));
        assert!(seen.insert(id(2)));
        assert!(seen.insert(id(3)));
        assert!(seen.insert(id(1)), "oldest id was evicted");
        assert!(!seen.insert(id(3)));
    }

    #[test]
    fn redial_backoff_doubles_up_to_the_cap() {
        let mut b = Bootstrap {
            addr: Multiaddr::empty(),
            peer: None,
            dialing: None,
            connected_at: None,
            backoff: REDIAL_MIN,
            next: None,
        };
        let now = tokio::time::Instant::now();
        let mut waits = Vec::new();
        for _ in 0..10 {
            b.schedule(now);
            waits.push(b.next.map(|t| t - now));
        }
        assert_eq!(waits[0], Some(REDIAL_MIN));
        assert_eq!(waits[1], Some(REDIAL_MIN * 2));
        assert_eq!(waits[9], Some(REDIAL_MAX));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    }

    #[tokio::test]
    async fn inconsistent_configs_are_refused() {
        let mut c = Config::loopback();
        c.store = Some(store::Config::default());
        assert!(matches!(Node::start(c).await, Err(Error::Config(_))));
        let mut c = Config::loopback();
        c.limits.inbound_queue = 0;
        assert!(matches!(Node::start(c).await, Err(Error::Config(_))));
        let mut c = Config::loopback();
        c.limits.response_bytes_per_peer = c.limits.max_message_size;
        assert!(matches!(Node::start(c).await, Err(Error::Config(_))));
        let mut c = Config::loopback();
        c.limits.response_bytes_in_flight = c.limits.response_bytes_per_peer - 1;
        assert!(matches!(Node::start(c).await, Err(Error::Config(_))));
        let mut c = Config::loopback();
        c.listen = vec![
            Multiaddr::empty()
                .with(Protocol::Ip4([127, 0, 0, 1].into()))
                .with(Protocol::Udp(0)),
        ];
        assert!(matches!(Node::start(c).await, Err(Error::Address { .. })));
    }
}

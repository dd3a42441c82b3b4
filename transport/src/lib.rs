//! The pqmls transport: a libp2p node that moves opaque bytes on group topics, carries
//! post-quantum-sized payloads, keeps a key-package directory, and lets store nodes keep
//! history for members who were offline. It knows nothing of MLS.
//!
//! # A node in a few lines
//!
//! ```
//! use pqmls_transport::{Node, Topic, node::Config};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), pqmls_transport::Error> {
//! # tokio::time::timeout(std::time::Duration::from_secs(30), async {
//! let (alice, _) = Node::start(Config::loopback()).await?;
//! let bootstrap = alice.listen_addrs().await?.remove(0);
//! let (bob, mut bob_inbox) = Node::start(Config::loopback().with_bootstrap(bootstrap)).await?;
//!
//! let topic = Topic::from_group_id(b"my MLS group id");
//! alice.subscribe(&topic).await?;
//! bob.subscribe(&topic).await?;
//! # for _ in 0..500 {
//! #     if alice.mesh_peers(&topic).await? > 0 { break }
//! #     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! # }
//! alice.publish(&topic, b"an MLS commit".to_vec()).await?;
//! let message = bob_inbox.recv().await.ok_or(pqmls_transport::Error::Shutdown)?;
//! assert_eq!(message.data, b"an MLS commit");
//! # Ok::<(), pqmls_transport::Error>(())
//! # })
//! # .await
//! # .map_err(|_| pqmls_transport::Error::Shutdown)?
//! # }
//! ```
//!
//! A store node is a node started with
//! [`Config::with_store`](node::Config::with_store): it keeps the history of every topic it
//! subscribes to, and by default subscribes to every topic a connected peer subscribes to,
//! so group members only need to connect to it. It serves [`Node::history`] and the
//! directory ([`Node::put`], [`Node::get`]), and keeps both across restarts.
//!
//! # Design
//!
//! **Stack.** rust-libp2p 0.57 on tokio: TCP and QUIC, Noise, Yamux, identify, ping,
//! gossipsub for group topics, request-response for the directory and history (one protocol,
//! [`STORE_PROTOCOL`]), Kademlia and mDNS for discovery (both can be switched off; tests run
//! with a fixed topology and no mDNS). The swarm lives on its own task; a [`Node`] handle
//! sends it commands over a bounded queue and accepted messages come out of a bounded
//! [`Inbound`] stream.
//!
//! **Anonymous gossip.** Messages are published with gossipsub's
//! `MessageAuthenticity::Anonymous` and checked with `ValidationMode::Anonymous`, which
//! rejects any message carrying an author, sequence number or signature. MLS authenticates
//! the content; the transport adds no identity to it. (The neighbour a message came from
//! still sees the connection it arrived on: this is not a mixnet.)
//!
//! **Ids and topics.** A message id is SHA-256 over a domain separator, the topic name and
//! the payload ([`MessageId::compute`]), so every node computes the same id for the same
//! bytes and duplicates are recognised by gossipsub, by the inbound stream (a bounded window
//! of recent ids) and by the store (primary key). The flip side: publishing byte-identical
//! payloads twice on a topic within two minutes is refused as [`Error::Duplicate`]. A
//! topic name is `/pqmls/group/1/` followed by the hex SHA-256 of a domain separator and the
//! group id ([`Topic::from_group_id`]), so the group id never appears on the wire.
//!
//! **Strict validation.** Every gossip payload is wrapped in a one-byte envelope (a version).
//! An inbound message is accepted only if its topic name has the form above, its envelope is
//! known, its payload is within [`node::Limits::max_message_size`], and the application's
//! [`Validator`] accepts it; only then is it delivered, stored and forwarded (gossipsub's
//! `validate_messages` mode holds it until the verdict). Everything else is dropped and
//! counted in [`node::Counters`].
//!
//! **Large payloads: one gossip message, raised limit.** Gossipsub's default 64 KiB limit is
//! far below PQ MLS sizes (a 128-member X-Wing add commit is about 350 KB, 1.1 MB with
//! ML-DSA). This crate raises gossipsub's transmit limit to the configured maximum message
//! size (default 4 MiB) plus 16 KiB of framing, and sends every payload as a single gossip
//! message. Chosen over the alternatives because:
//! - the receiver gets the payload in one piece, and validation sees the whole payload
//!   *before* it is forwarded. With chunking, chunks would have to be forwarded before the
//!   whole could be validated, so a spammer's garbage would be amplified; with
//!   publish-a-reference-and-fetch, every hop adds a request round trip and the fetch needs a
//!   peer that still has the blob;
//! - ids, de-duplication and the store all work on whole payloads with no reassembly state.
//!
//! Its costs, measured or bounded:
//! - store-and-forward: each hop receives the whole message before validating and
//!   forwarding it, so latency grows by roughly size / bandwidth per hop;
//! - bandwidth: a node forwards each message to its mesh peers (up to 12, target 6); gossipsub
//!   1.2 IDONTWANT (sent here for messages over 16 KiB: below that the control message costs
//!   about as much as the duplicate it saves) suppresses most, not all, duplicate transfers
//!   of large messages;
//! - head-of-line blocking: a 4 MiB message on a connection delays the small ones queued
//!   behind it;
//! - memory: each connection may buffer one frame of up to the limit while decoding, and
//!   gossipsub's message cache keeps recent messages for five heartbeats;
//! - every node of a network must use this crate's configuration: a stock gossipsub peer
//!   with the 64 KiB limit drops large messages.
//!
//! **Store nodes.** A store cannot compute a group's topic (it is a hash of the group id),
//! so by default it follows its peers ([`store::Config::follow_subscriptions`]): when a
//! connected peer subscribes to a well-formed topic, or is already subscribed when it
//! connects, the store subscribes to that topic too, until it serves
//! [`store::Config::max_topics`] topics (further subscriptions are not followed, counted in
//! [`node::Counters::topics_not_followed`], and logged once). A followed topic is served like
//! one subscribed to explicitly, also after a restart, until [`Node::unsubscribe`] is called
//! on the store. A store writes each accepted message of the topics it subscribes to (and its
//! own publications) to SQLite (`store.sqlite3` in the data directory, WAL mode) with its
//! arrival time, prunes rows older than the retention (default 30 days) at start and every
//! hour, and remembers the topics it serves so a restarted store resubscribes. Database
//! calls run synchronously on the node task (one small transaction per message), which keeps
//! ordering simple but puts disk latency on the event loop. History is
//! ordered by arrival time at the store, ties broken by id; a [`store::Cursor`] is a
//! position in that order, and pages are bounded in count and bytes. A client checks that
//! every returned id matches its payload, so a store cannot alter messages, but it can
//! withhold them: the application must detect gaps (MLS epochs do). The node's identity key
//! is kept in the data directory too, so a store keeps its peer id across restarts.
//!
//! **Directory.** `put(key, blob)` writes to the local store (on a store node) and to every
//! connected store; `get(key)` reads the local store, then asks connected stores one after
//! another. Stores are recognised by identify: only they accept [`STORE_PROTOCOL`] inbound.
//! A store checks every put, remote or its own, before writing it:
//! - the application's [`store::DirectoryValidator`] (any `Fn(key, old, new) -> bool`, set
//!   with [`store::Config::with_directory_validator`]) sees the key, the live entry it would
//!   replace and the new blob, and may refuse ([`Error::EntryRejected`]). The transport stays
//!   agnostic of what entries mean; the SDK uses the hook to require entries signed by the
//!   identity key named in the key and replaceable only by their owner. Without a validator
//!   entries are last-writer-wins and unauthenticated;
//! - quotas: each remote peer id may have written at most
//!   [`store::Config::max_entries_per_peer`] live entries and
//!   [`store::Config::max_bytes_per_peer`] bytes (an entry counts for its last writer), and
//!   the whole table holds at most [`store::Config::max_directory_entries`] entries and
//!   [`store::Config::max_directory_bytes`] bytes, since peer ids cost nothing to make
//!   ([`Error::QuotaExceeded`]);
//! - expiry: an entry lives [`store::Config::directory_ttl`] (default 30 days) after its
//!   last write; expired entries are not served, not shown to the validator, not counted
//!   against quotas, and deleted at the next prune. Writers refresh by putting again.
//!
//! **Bounds.** Every queue and size is in [`node::Limits`]: message size, inbound stream and
//! command queue capacity, gossip send queue and its timeout, connection slots, concurrent
//! request streams, outstanding requests, request timeout, directory key and blob size,
//! history page count and bytes, response bytes in flight, de-duplication window. The store
//! protocol's codec checks every length against these limits before allocating, and counts
//! unreadable requests. When the inbound stream is full, messages are dropped and counted
//! rather than blocking the node (a store still has them). Nodes of one network should share
//! their size limits: a peer with a larger message limit forwards messages this node counts
//! as oversized, and a store whose history pages exceed a client's response limit fails that
//! client's request.
//!
//! *Response memory.* A request-response stream holds its response until the requester has
//! read it, so a requester that never reads made a store hold whole history pages (1.8 GiB
//! from 128 requests). Every history page and directory blob is charged its encoded size
//! from the moment it is built until libp2p reports it sent or the request failed (timeout
//! [`node::Limits::request_timeout`], closed connection), against a budget per peer
//! ([`node::Limits::response_bytes_per_peer`], 16 MiB) and in total
//! ([`node::Limits::response_bytes_in_flight`], 64 MiB). A page is cut to what the budget
//! still allows; if not even one message fits the store answers "busy"
//! ([`Error::StoreBusy`]; the client tries its next store). Counters:
//! [`node::Counters::response_bytes_in_flight`], `..._peak`, `requests_busy`.
//!
//! *Connection slots.* Pending inbound connections (in their Noise/muxer handshake) are
//! bounded in total and per IP address (an IPv6 /64 counts as one address); established
//! inbound connections per address (default 8; the Nim Waku node has the like,
//! `--ip-colocation-limit`), connections per peer id
//! (4), and peers ([`node::Limits::max_peers`], 64). When the peer table is full a newcomer
//! is let in by evicting the newest peer of the address with the most inbound peers, if
//! that address has at least two more than the newcomer's: one address (or a few) cannot
//! keep newcomers out, and honest peers on distinct addresses are never evicted for one
//! another. [`node::Config::loopback`] lifts the per-address limits for loopback addresses
//! only ([`node::Limits::loopback_exempt`]: all its nodes share 127.0.0.1); the tests set
//! that back and attack from 127.0.0.2 and up. What the request-response services read at
//! once is bounded over all peers and per connection (`waku::framing::ConnectionShare`),
//! so one address holds at most a part of it.
//!
//! **Penalties.** Gossipsub peer scoring is on for one component only, invalid messages
//! (P4): every message rejected by the transport's checks or by the [`Validator`] counts
//! against the neighbour that sent it, and after three in quick succession that neighbour is
//! graylisted (everything it sends is ignored) until the count decays (1 % per second: about
//! 6 s after three invalid messages, two minutes after ten). So the validator should answer [`Verdict::Ignore`], not [`Verdict::Reject`], for
//! messages that are merely stale or unexpected in the local state, which honest neighbours
//! may forward. Time-in-mesh, delivery-rate and IP-colocation components are off: groups
//! are quiet and many honest peers share an address.
//!
//! **Not yet done.** Traffic counters count payload bytes, not bytes on the wire; a store
//! has a topic's history only from the moment it subscribed to it (for a followed topic:
//! shortly after the first connected peer subscribed), earlier messages are missing, and a
//! store with following off has only the topics it was told to subscribe to; followed topics
//! are never dropped by themselves, so any peer can make a store serve up to `max_topics`
//! topics, after which it follows no new group; graylisted peers stay connected (they are
//! ignored, not disconnected); connection slots are limited per address, not per subnet, and
//! peers are not ranked by behaviour, so an attacker with many addresses can still fill most
//! slots; per-peer directory quotas bind a peer id, which costs nothing to make: the
//! table-wide caps and the validator are what bound a determined writer.
//!
//! **Waku (in progress).** [`waku`] holds the pieces of a pure-Rust Waku node: the
//! `WakuMessage` envelope and its deterministic hash, shards and autosharding, relay's
//! gossipsub settings and message checks, the metadata protocol, and segmentation with
//! Reed-Solomon parity. A [`Node`] started with
//! [`Config::with_waku`](node::Config::with_waku) runs Waku relay
//! (`/vac/waku/relay/2.0.0` on `/waku/2/rs/<cluster>/<shard>`, [`Node::relay_publish`],
//! [`Node::relay_inbound`]) beside this crate's own protocols, answers the metadata
//! protocol, asks it of every new peer and disconnects peers of another cluster (or none),
//! as the Nim node does. A Waku node with the store role also archives relay messages in
//! SQLite and serves store v3 (`/vac/waku/store-query/3.0.0`: content topic, time range
//! and hash queries, both directions of pagination, pages bounded in entries and in bytes
//! while they are built, responses charged to the response budget until written), and
//! [`Node::store_query`] is its client. All of it is tested between our own nodes and raw
//! rust-libp2p peers, and against js-waku (`tests/js_waku.rs`; the interop matrix and the
//! js-waku versions are in `tests/js/README.md`): relay both ways, metadata's cluster gate,
//! store, lightpush and filter with js-waku as the client. Not yet against the Nim node.
//! Every node refuses a TCP listen port already in use ([`Error::AddressInUse`]) and dials
//! its bootstrap peers again, with backoff, when they go away. TCP dials leave from a fresh
//! ephemeral port, never from the listening port as libp2p-tcp does by default: a socket of
//! that port lingering in `TIME_WAIT` made every redial within a minute fail with
//! `EADDRINUSE` (`node/fresh_ports.rs`). A client of the SDK whose store went down
//! catches up by itself once the store is back (the redial here, the SDK's retried
//! catch-up: `sdk/tests/waku.rs`, `a_catch_up_resumes_when_the_store_comes_back`). Not
//! yet done: mplex and WebSockets (js-waku's default muxer and transport; the interop
//! tests give js-waku TCP and yamux). [`Node::service_peers`] lists the
//! connected peers that announce store, lightpush or filter over identify (the SDK asks
//! such stores after the ones it was given); [`Node::store_query`] and the light-client
//! calls still take the peer to ask. Segmentation is wired into publishing one layer up, in the SDK's
//! `pqmls::net_waku::WakuTransport` (segments above the relay limit, reassembly on relay,
//! filter and store reads); [`Node::relay_publish`] itself still refuses what exceeds the
//! limit.
//!
//! *Lightpush and filter* (issue 13 item 1: a light client publishes and receives without
//! relaying). A Waku node can be a lightpush v3 service
//! ([`Config::with_lightpush_service`](node::Config::with_lightpush_service),
//! [`waku::lightpush`]) and a filter v2 service
//! ([`Config::with_filter_service`](node::Config::with_filter_service), [`waku::filter`]);
//! every Waku node is a client of both ([`Node::lightpush`]; [`Node::filter_subscribe`] and
//! [`Node::filter_inbound`]), so a light client is a Waku node that relays no shard. A
//! lightpushed message is checked (well-formed, content topic set, 150 KiB, a shard of the
//! cluster or an autoshardable content topic), published on relay and answered with the
//! spec's status and the relay peer count (the peers gossipsub knows on the shard at
//! publication, not confirmed deliveries). A filter service pushes every relay message it
//! accepts or publishes, lightpushed ones included, to each matching subscriber; a client
//! accepts a push only from a service it subscribed with and for criteria it subscribed
//! to there. The service's decisions are a sans-IO core ([`waku::filter::Subscriptions`]).
//! Bounds, and why:
//! - frames: lightpush requests and filter pushes of at most the message limit plus 64 KiB
//!   (the Nim node's margin), subscription requests of at most 100 topics of 1 KiB,
//!   responses 64 KiB; a lightpush frame announced longer, up to 1 MiB (the most js-waku
//!   sends), is read in 4 KiB pieces and discarded so the client gets 413 instead of a
//!   reset, with memory still bounded by the frame limit;
//! - requests read at once, over all peers: 32 per service (beyond it 429 without reading)
//!   and 64 pushes on a client. Request-response bounds streams per connection only: 64
//!   peers with 4 connections of 32 streams, each announcing a 214 KiB frame, could make a
//!   service allocate 1.7 GiB; with the slots it holds at most 7 MiB. Reads that never
//!   finish (too long, closed early, timed out) are counted, as libp2p reports nothing for a
//!   request it never read;
//! - every stream times out after [`node::Limits::request_timeout`], which frees the read slot
//!   of a sender that stalls;
//! - filter: the Nim node's defaults (100 subscribers, the 101st refused with 503; 1000
//!   criteria each; 100 content topics per request; a subscription lives 5 minutes after its
//!   last subscribe, unsubscribe or ping), a subscriber whose pushes have failed for 1 minute
//!   is dropped (the spec's recommendation), at most 16 pushes in flight to one subscriber
//!   (below the 32 streams a connection allows; beyond it messages are not pushed to that
//!   subscriber, which the spec allows of a best-effort service). A client subscribes again
//!   to all its criteria every minute, well within the TTL, which also restores them at a
//!   service that restarted.
//!
//! Status codes: lightpush uses the spec's table (400, 413, 421, 429, 500, 503 for no relay
//! peers), not the Nim node's 420 and 505, which are outside it; filter uses the Nim node's
//! (400, 404, 429, 503), as the spec fixes only "2xx is success". Push streams: the Nim
//! service keeps the push stream to a subscriber open and writes each further push on it
//! until the client closes it, so our client reads every frame of a push stream until it
//! ends, with a behaviour of its own (`node/waku_filter_push.rs`; request-response reads
//! one request per stream and closes it after its timeout, which lost the pushes of a
//! burst). Each frame is bounded (message limit plus 64 KiB) and read in one of the 64
//! push read slots; a stream carries at most
//! [`node::Limits::filter_pushes_per_stream`] pushes, a peer holds at most
//! [`node::Limits::filter_push_streams_per_peer`] push streams, and a stream idle for
//! [`node::Limits::filter_push_idle`] is closed; a bad frame ends its own stream only. No
//! dependency was added: `libp2p-stream` 0.5.0-alpha was tried and dropped, as it drops
//! inbound streams that find its one-slot accept channel full, which lost pushes sent on
//! several streams at once. Our service still writes one push per stream (with
//! request-response): each push gets its own outcome, which drives the in-flight bound and
//! the dropping of unreachable subscribers, and every client that reads frames until the
//! stream ends (ours, the Nim node's, js-waku's) reads it. So pushes of two messages from
//! our service may arrive in either order (one stream each), and a client subscribed with
//! two services gets a message twice. None of it is tested against the Nim node yet
//! (a raw peer writing pushes as it does stands in); against js-waku as a client, see
//! above.
//!
//! *Peer exchange and discovery* (issue 13 items 1 and 4). A Waku node started with
//! [`Config::with_peer_exchange`](node::Config::with_peer_exchange) speaks
//! `/vac/waku/peer-exchange/2.0.0-alpha1` ([`waku::peer_exchange`]) with node records of
//! EIP-778 and 31/WAKU2-ENR ([`waku::enr`]). Waku nodes now get secp256k1 node keys (as the
//! Nim node has; other nodes keep Ed25519), because a record must be signed by the key its
//! peer id comes from; an identity file made earlier keeps its key, and such a node has no
//! record of its own. Each node asks every new peer that announces the protocol, and a
//! random one every 30 s while below its target of peers, and dials (a few at a time, each
//! peer at most once a minute) the peers the records name until it has 8. It answers with
//! its own record and up to 59 it learnt, sampled at random: the spec wants records found
//! by "ambient discovery" (discv5), which pqmls nodes do not run, and without its own
//! record no pqmls node would ever be named. Every record received is verified (300 bytes,
//! canonical RLP, sorted keys, v4 low-S signature), records of another cluster or naming
//! the requester are dropped, no more than asked are kept, and answers are read only up to
//! 60 records' worth of bytes. What a responder can still do: name peers it controls (the
//! spec's "controlled neighbourhood"); the node asks several peers over time and the metadata
//! gate drops peers of other clusters, but nothing ranks peers by behaviour yet.
//!
//! *Presets* ([`waku::preset`]): `local` (127.0.0.1, cluster 0, 8 shards, 150 KiB: tests
//! and the demo) and `logos.dev` (cluster 3, 8 shards, 150 KiB, TCP 60000, entry nodes
//! given by the user), each a full node configuration; `pqmls node --preset` uses them.
//!
//! *Rate limits.* Every Waku service a node answers (store, lightpush, filter subscribe,
//! peer exchange, metadata) keeps a token bucket per peer ([`rate_limit`],
//! [`node::RateLimits`]): by default 100 store queries and 100 lightpushes a minute, 30
//! filter requests (the Nim node's default), 10 peer exchange and 10 metadata requests. A
//! request over its peer's rate is answered 429 (lightpush's spec code; the Nim node's code
//! for store, filter and peer exchange); a metadata request is then not answered. At most
//! 1024 peers are tracked per service, the quietest forgotten first.
//!
//! **Simulation-friendly.** [`Message`], [`Topic`], [`MessageId`], [`Validator`],
//! [`Error`], [`store::Cursor`] and [`store::Page`] hold no libp2p types, so an in-process
//! simulated network can offer the same interface.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod error;
mod message;
pub mod node;
pub mod rate_limit;
mod rpc;
mod slots;
pub mod store;
pub mod waku;

pub use error::{Error, Result};
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use message::{Message, MessageId, Topic, Validator, Verdict};
pub use node::{Inbound, Node, WakuService};
pub use rpc::PROTOCOL as STORE_PROTOCOL;

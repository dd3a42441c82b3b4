//! Waku peer exchange, 34/WAKU2-PEER-EXCHANGE
//! (`docs/messaging/core/draft/34/peer-exchange.md` in logos-co/logos-lips): a node asks a
//! peer for up to `num_peers` node records ([`super::enr`]) and dials the peers they name.
//!
//! - Wire (section "Wire Format Specification"): one length-prefixed [`Rpc`] each way, the
//!   request with `query`, the answer with `response`. The Nim node adds `status_code` (10)
//!   and `status_desc` (11) to the response (`waku_peer_exchange/rpc.nim`: 200, 400, 429,
//!   503) and *requires* field 1 in every RPC it decodes, answers included, so answers
//!   carry an empty `query`. A response without a status is read as the Nim node reads it:
//!   success if it holds records, 503 if not.
//! - Responder (section "Theory and Protocol Semantics"): answers from a cache of records
//!   it learnt through discovery, sampled at random, at most [`MAX_RESPONSE_PEERS`] (60, the
//!   Nim node's `MaxPeersCacheSize`) and never more than asked. Without discv5 the only
//!   records a pqmls node learns are those peer exchange gives it, so a pqmls responder
//!   also lists its own record: otherwise no record of a pqmls node would ever enter any
//!   cache. (The Nim node lists only records it found through discv5.)
//! - Requester: every record is checked ([`Enr::decode`]: size, canonical RLP, v4
//!   signature), at most as many as asked are kept, records of another cluster (`rs` /
//!   `rsv`) or naming the requester itself are dropped, as the Nim node's `poolFilter`
//!   drops other clusters. The section "Security Considerations" warns that a responder
//!   picks the requester's neighbours: the node asks several peers and dials only while it
//!   has fewer peers than its target, a few at a time.
//! - Bounds: requests of at most [`MAX_REQUEST`] bytes, responses of at most
//!   [`MAX_RESPONSE`] (60 records of 300 bytes and framing), the cache at most
//!   [`Config::cache_size`] records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::enr::{self, Enr};
use super::framing::ProtoCodec;

/// Protocol id.
pub const PROTOCOL: &str = "/vac/waku/peer-exchange/2.0.0-alpha1";
/// Most records in one response (the Nim node's `MaxPeersCacheSize`).
pub const MAX_RESPONSE_PEERS: usize = 60;
/// Largest request frame read (a query is a dozen bytes).
pub const MAX_REQUEST: usize = 1024;
/// Largest response frame read: [`MAX_RESPONSE_PEERS`] records of [`enr::MAX_SIZE`] bytes,
/// their framing, a status and a description.
pub const MAX_RESPONSE: usize = MAX_RESPONSE_PEERS * (enr::MAX_SIZE + 8) + 1024;
/// Longest `status_desc` kept.
const MAX_DESC: usize = 256;

/// Status: success.
pub const STATUS_OK: u32 = 200;
/// Status: the request could not be decoded.
pub const STATUS_BAD_REQUEST: u32 = 400;
/// Status: the requester is over its rate limit.
pub const STATUS_TOO_MANY_REQUESTS: u32 = 429;
/// Status: the service cannot answer now.
pub const STATUS_UNAVAILABLE: u32 = 503;

/// `PeerInfo`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PeerInfo {
    /// An encoded node record.
    #[prost(bytes = "vec", tag = "1")]
    pub enr: Vec<u8>,
}

/// `PeerExchangeQuery`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Query {
    /// How many records the requester wants.
    #[prost(uint64, tag = "1")]
    pub num_peers: u64,
}

/// `PeerExchangeResponse`, with the Nim node's status fields.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Response {
    /// The records.
    #[prost(message, repeated, tag = "1")]
    pub peer_infos: Vec<PeerInfo>,
    /// 200 on success (the Nim node's field).
    #[prost(uint32, optional, tag = "10")]
    pub status_code: Option<u32>,
    /// Why, for an error (the Nim node's field).
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
}

/// `PeerExchangeRPC`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Rpc {
    /// Set in a request; present but empty in an answer (the Nim node requires it).
    #[prost(message, optional, tag = "1")]
    pub query: Option<Query>,
    /// Set in an answer.
    #[prost(message, optional, tag = "2")]
    pub response: Option<Response>,
}

impl Rpc {
    /// A request for `num_peers` records.
    pub fn request(num_peers: u64) -> Self {
        Self {
            query: Some(Query { num_peers }),
            response: None,
        }
    }

    /// An answer holding `records` with status 200.
    pub fn answer(records: &[Enr]) -> Self {
        Self {
            query: Some(Query::default()),
            response: Some(Response {
                peer_infos: records
                    .iter()
                    .map(|r| PeerInfo {
                        enr: r.as_bytes().to_vec(),
                    })
                    .collect(),
                status_code: Some(STATUS_OK),
                status_desc: None,
            }),
        }
    }

    /// An error answer.
    pub fn error(status: u32, desc: &str) -> Self {
        Self {
            query: Some(Query::default()),
            response: Some(Response {
                peer_infos: Vec::new(),
                status_code: Some(status),
                status_desc: Some(desc.chars().take(MAX_DESC).collect()),
            }),
        }
    }
}

/// Why an answer brought no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// No `response` in the answer.
    #[error("no response in the answer")]
    NoResponse,
    /// A status other than 200.
    #[error("status {status}: {desc}")]
    Status {
        /// The status.
        status: u32,
        /// Its description, cut to 256 characters.
        desc: String,
    },
}

/// What a requester keeps of an answer: the records that verify, are of `cluster` (or
/// name no cluster), and do not name `me`, at most `asked` of them, each once. Returns them
/// and the number of records dropped.
///
/// # Errors
///
/// [`Refused`] for an answer without a response or with an error status.
pub fn check_answer(
    rpc: Rpc,
    asked: usize,
    cluster: u16,
    me: &PeerId,
) -> Result<(Vec<Enr>, usize), Refused> {
    let response = rpc.response.ok_or(Refused::NoResponse)?;
    // The Nim node's reading of an answer without a status.
    let status = response
        .status_code
        .unwrap_or(if response.peer_infos.is_empty() {
            STATUS_UNAVAILABLE
        } else {
            STATUS_OK
        });
    if status != STATUS_OK {
        return Err(Refused::Status {
            status,
            desc: response
                .status_desc
                .unwrap_or_default()
                .chars()
                .take(MAX_DESC)
                .collect(),
        });
    }
    let total = response.peer_infos.len();
    let mut kept: Vec<Enr> = Vec::new();
    for info in response.peer_infos {
        if kept.len() >= asked.min(MAX_RESPONSE_PEERS) {
            break;
        }
        let Ok(record) = Enr::decode(&info.enr) else {
            continue;
        };
        let Some(peer) = record.peer_id() else {
            continue;
        };
        let other_cluster = record.relay_shards().is_some_and(|(c, _)| c != cluster);
        if other_cluster || peer == *me || kept.iter().any(|k| k.peer_id() == Some(peer)) {
            continue;
        }
        kept.push(record);
    }
    let dropped = total - kept.len();
    Ok((kept, dropped))
}

/// Peer exchange settings of a node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Answer peer exchange requests (default true): a node that relays should; a light
    /// client may only ask.
    pub serve: bool,
    /// Records asked of a peer (default 8).
    pub num_peers: u64,
    /// Records kept (default 60, the spec's recommended cache size: ten times the mesh
    /// degree); the oldest is replaced when full.
    pub cache_size: usize,
    /// The node dials discovered peers while it has fewer connected peers than this
    /// (default 8).
    pub target_peers: usize,
    /// Most discovered peers dialed at once (default 4).
    pub max_dials: usize,
    /// How long before a discovered peer that could not be dialed is tried again
    /// (default 60 s).
    pub redial_after: Duration,
    /// How often the node asks a connected peer for more, while below
    /// [`Config::target_peers`] (default 30 s). It also asks each new peer that announces
    /// the protocol, once per connection.
    pub interval: Duration,
    /// Addresses put in this node's own record; empty: its listen addresses that are not
    /// unspecified (`0.0.0.0`, `::`).
    pub announce: Vec<libp2p::Multiaddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            serve: true,
            num_peers: 8,
            cache_size: MAX_RESPONSE_PEERS,
            target_peers: 8,
            max_dials: 4,
            redial_after: Duration::from_secs(60),
            interval: Duration::from_secs(30),
            announce: Vec::new(),
        }
    }
}

/// A record in the cache, and when it was learnt and last dialed.
#[derive(Debug, Clone)]
struct Cached {
    record: Enr,
    learnt: Instant,
    dialed: Option<Instant>,
}

/// The records a node learnt, bounded; sans-IO (the caller passes the time and the
/// randomness).
#[derive(Debug, Clone)]
pub struct Cache {
    capacity: usize,
    peers: HashMap<PeerId, Cached>,
}

impl Cache {
    /// A cache of at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            peers: HashMap::new(),
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Adds `record` (a newer sequence number replaces an older record of the same peer;
    /// an older or equal one is ignored). When full, the record learnt longest ago makes
    /// room. Returns whether the cache changed.
    pub fn insert(&mut self, record: Enr, now: Instant) -> bool {
        let Some(peer) = record.peer_id() else {
            return false;
        };
        if let Some(c) = self.peers.get_mut(&peer) {
            if record.seq() <= c.record.seq() {
                return false;
            }
            c.record = record;
            c.learnt = now;
            return true;
        }
        if self.capacity == 0 {
            return false;
        }
        if self.peers.len() >= self.capacity
            && let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, c)| c.learnt)
                .map(|(p, _)| *p)
        {
            self.peers.remove(&oldest);
        }
        self.peers.insert(
            peer,
            Cached {
                record,
                learnt: now,
                dialed: None,
            },
        );
        true
    }

    /// Up to `n` records, not `except`, chosen at random by `pick(len)` (a uniform index
    /// below `len`); a partial Fisher-Yates shuffle, so each record is given at most once.
    pub fn sample(
        &self,
        n: usize,
        except: &PeerId,
        mut pick: impl FnMut(usize) -> usize,
    ) -> Vec<Enr> {
        let mut all: Vec<&Cached> = self
            .peers
            .iter()
            .filter(|(p, _)| *p != except)
            .map(|(_, c)| c)
            .collect();
        // A stable order first, so that the sample depends on `pick` only.
        all.sort_by_key(|c| c.record.public_key());
        let n = n.min(all.len());
        for i in 0..n {
            let j = i + pick(all.len() - i).min(all.len() - i - 1);
            all.swap(i, j);
        }
        all.into_iter().take(n).map(|c| c.record.clone()).collect()
    }

    /// Peers to dial now: not `connected`, not dialed within `redial_after`, at most `n`.
    /// They are marked dialed.
    pub fn due_dials(
        &mut self,
        n: usize,
        connected: impl Fn(&PeerId) -> bool,
        redial_after: Duration,
        now: Instant,
    ) -> Vec<(PeerId, Enr)> {
        let mut due: Vec<(&PeerId, &mut Cached)> = self
            .peers
            .iter_mut()
            .filter(|(p, c)| {
                !connected(p)
                    && c.dialed
                        .is_none_or(|t| now.saturating_duration_since(t) >= redial_after)
            })
            .collect();
        due.sort_by_key(|(_, c)| std::cmp::Reverse(c.learnt));
        due.into_iter()
            .take(n)
            .map(|(p, c)| {
                c.dialed = Some(now);
                (*p, c.record.clone())
            })
            .collect()
    }
}

/// The request-response codec ([`ProtoCodec`]): one [`Rpc`] frame each way, requests of
/// at most [`MAX_REQUEST`] bytes and responses of at most [`MAX_RESPONSE`], both refused
/// before they are read when announced longer. An undecodable request is
/// [`Framed::Malformed`](super::framing::Framed::Malformed), which still gets an answer
/// (400), as at the Nim node.
pub type Codec = ProtoCodec<Rpc, Rpc>;

/// The codec.
pub fn codec() -> Codec {
    ProtoCodec::new("peer exchange", MAX_REQUEST, MAX_RESPONSE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::secp256k1;
    use prost::Message as _;

    fn record(seed: u8, seq: u64, cluster: u16) -> Enr {
        let secret = secp256k1::SecretKey::try_from_bytes([seed; 32]).unwrap();
        enr::Builder::new(seq)
            .ip4_tcp([127, 0, 0, 1].into(), 9000 + u16::from(seed))
            .relay_shards(cluster, &[0])
            .sign(&secret)
            .unwrap()
    }

    #[test]
    fn answers_carry_the_empty_query_the_nim_node_requires() {
        // query: field 1, length 0; response: field 2 with status 10 = 200.
        assert_eq!(
            Rpc::answer(&[]).encode_to_vec(),
            vec![0x0a, 0x00, 0x12, 0x03, 0x50, 0xc8, 0x01]
        );
        assert_eq!(
            Rpc::request(5).encode_to_vec(),
            vec![0x0a, 0x02, 0x08, 0x05]
        );
    }

    #[test]
    fn answers_are_checked_record_by_record() {
        let me = record(9, 1, 3).peer_id().unwrap();
        let good = record(1, 1, 3);
        let mut answer = Rpc::answer(&[
            good.clone(),
            good.clone(),    // twice
            record(2, 1, 1), // another cluster
            record(9, 1, 3), // the requester itself
            record(4, 1, 3),
            record(5, 1, 3), // over the number asked
        ]);
        let infos = &mut answer.response.as_mut().unwrap().peer_infos;
        let mut forged = record(6, 1, 3).as_bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        infos.insert(1, PeerInfo { enr: forged });
        infos.insert(
            1,
            PeerInfo {
                enr: vec![0xff; 400],
            },
        );
        let (kept, dropped) = check_answer(answer, 2, 3, &me).unwrap();
        let peers: Vec<_> = kept.iter().map(|r| r.peer_id()).collect();
        assert_eq!(peers, vec![good.peer_id(), record(4, 1, 3).peer_id()]);
        assert_eq!(dropped, 6);
        // Status handling, with the Nim node's reading of a missing status.
        let err = check_answer(Rpc::error(429, "slow down"), 5, 3, &me).unwrap_err();
        assert_eq!(
            err,
            Refused::Status {
                status: 429,
                desc: "slow down".into()
            }
        );
        let mut bare = Rpc::answer(&[]);
        bare.response.as_mut().unwrap().status_code = None;
        assert!(matches!(
            check_answer(bare, 5, 3, &me),
            Err(Refused::Status { status: 503, .. })
        ));
        let mut bare = Rpc::answer(std::slice::from_ref(&good));
        bare.response.as_mut().unwrap().status_code = None;
        assert_eq!(check_answer(bare, 5, 3, &me).unwrap().0.len(), 1);
        assert_eq!(
            check_answer(Rpc::request(1), 5, 3, &me),
            Err(Refused::NoResponse)
        );
    }

    #[test]
    fn the_cache_is_bounded_prefers_new_records_and_samples_each_once() {
        let t0 = Instant::now();
        let mut cache = Cache::new(3);
        for seed in 1..=3 {
            assert!(cache.insert(
                record(seed, 1, 3),
                t0 + Duration::from_secs(u64::from(seed))
            ));
        }
        assert!(!cache.insert(record(2, 1, 3), t0), "same seq ignored");
        assert!(
            cache.insert(record(2, 2, 3), t0 + Duration::from_secs(10)),
            "newer seq"
        );
        // Full: the record learnt longest ago (seed 1) makes room.
        assert!(cache.insert(record(4, 1, 3), t0 + Duration::from_secs(11)));
        assert_eq!(cache.len(), 3);
        let p1 = record(1, 1, 3).peer_id().unwrap();
        let all = cache.sample(10, &p1, |_| 0);
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|r| r.peer_id() != Some(p1)));
        let p4 = record(4, 1, 3).peer_id().unwrap();
        let some = cache.sample(2, &p4, |n| n - 1);
        assert_eq!(some.len(), 2);
        assert!(some.iter().all(|r| r.peer_id() != Some(p4)));
        assert_ne!(some[0].peer_id(), some[1].peer_id());
        // Dials: not twice within the wait, not connected peers.
        let d = cache.due_dials(2, |p| *p == p4, Duration::from_secs(60), t0);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|(p, _)| *p != p4));
        assert!(
            cache
                .due_dials(5, |p| *p == p4, Duration::from_secs(60), t0)
                .is_empty()
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            cache
                .due_dials(5, |p| *p == p4, Duration::from_secs(60), later)
                .len(),
            2
        );
        assert!(Cache::new(0).sample(3, &p1, |_| 0).is_empty());
    }

    #[test]
    fn the_codec_bounds_frames_before_reading_them() {
        use crate::waku::framing::Framed;
        use libp2p::StreamProtocol;
        use libp2p::request_response::Codec as _;
        let p = StreamProtocol::new(PROTOCOL);
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            codec()
                .write_request(&p, &mut buf, Framed::Message(Rpc::request(3)))
                .await
                .unwrap();
            let mut r = futures::io::Cursor::new(buf);
            assert_eq!(
                codec().read_request(&p, &mut r).await.unwrap(),
                Framed::Message(Rpc::request(3))
            );
            // Garbage within the bound is malformed (answered 400).
            let mut r = futures::io::Cursor::new(vec![2, 0xff, 0xff]);
            assert_eq!(
                codec().read_request(&p, &mut r).await.unwrap(),
                Framed::Malformed
            );
            let mut long = Vec::new();
            prost::encoding::encode_varint((MAX_REQUEST + 1) as u64, &mut long);
            let mut r = futures::io::Cursor::new(long);
            assert!(codec().read_request(&p, &mut r).await.is_err());
            let mut long = Vec::new();
            prost::encoding::encode_varint((MAX_RESPONSE + 1) as u64, &mut long);
            let mut r = futures::io::Cursor::new(long);
            assert!(codec().read_response(&p, &mut r).await.is_err());
            let mut r = futures::io::Cursor::new(vec![2, 0xff, 0xff]);
            assert!(codec().read_response(&p, &mut r).await.is_err());
        });
    }
}

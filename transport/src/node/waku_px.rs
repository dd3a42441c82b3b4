//! The node's side of Waku peer exchange ([`crate::waku::peer_exchange`]): its own node
//! record, the responder, the requester, and discovery (dialing the peers records name).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, identity};

use super::{Command, Error, Node, Reply, Result, Task, bump};
use crate::waku::enr::{self, Enr};
use crate::waku::framing::Framed;
use crate::waku::peer_exchange::{self, Cache, Rpc};

/// An outstanding request: the peer, how many records were asked, the caller if any.
type Asked = (PeerId, usize, Option<Reply<Vec<Enr>>>);

/// The node task's peer exchange state.
pub(super) struct State {
    pub(super) config: peer_exchange::Config,
    cache: Cache,
    /// This node's own record, when its key is secp256k1.
    pub(super) own: Option<Enr>,
    /// Outstanding requests.
    asked: HashMap<OutboundRequestId, Asked>,
    /// Connected peers that announce the protocol (identify).
    servers: HashSet<PeerId>,
    /// Peers asked on their current connection.
    asked_on_connection: HashSet<PeerId>,
    /// Last periodic round.
    last_round: Instant,
    /// Random state of the responder's sampling (xorshift, seeded from the clock and the
    /// node's peer id; the sample needs to be unpredictable to peers, not secret).
    rng: u64,
}

impl State {
    pub(super) fn new(config: peer_exchange::Config, own: Option<Enr>, seed: u64) -> Self {
        Self {
            cache: Cache::new(config.cache_size),
            config,
            own,
            asked: HashMap::new(),
            servers: HashSet::new(),
            asked_on_connection: HashSet::new(),
            last_round: Instant::now(),
            rng: seed | 1,
        }
    }

    fn next_random(&mut self, below: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if below == 0 {
            0
        } else {
            (self.rng % below as u64) as usize
        }
    }

    /// Outstanding requests of this node.
    pub(super) fn requests(&self) -> usize {
        self.asked.len()
    }
}

/// Whether this transport can dial `addr`: IPv4 or IPv6 with TCP, or UDP with QUIC v1,
/// nothing after (no `/ws`, no `/p2p`: a relay circuit).
fn dialable(addr: &Multiaddr) -> bool {
    let mut it = addr.iter();
    let ip = matches!(it.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)));
    let rest: Vec<Protocol<'_>> = it.collect();
    ip && matches!(
        rest.as_slice(),
        [Protocol::Tcp(p)] | [Protocol::Udp(p), Protocol::QuicV1] if *p != 0
    )
}

/// This node's record: its listen (or announced) addresses, `waku2` flags and relay
/// shards, signed with its key. `None` for a key that is not secp256k1, or when no address
/// fits (a record holds 300 bytes).
pub(super) fn own_record(
    keypair: &identity::Keypair,
    addrs: &[Multiaddr],
    flags: u8,
    cluster: u16,
    shards: &[u16],
) -> Option<Enr> {
    let secret = keypair.clone().try_into_secp256k1().ok()?.secret().clone();
    let seq = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let mut addrs: Vec<Multiaddr> = addrs
        .iter()
        .filter(|a| dialable(a))
        .filter(|a| {
            !a.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            })
        })
        .cloned()
        .collect();
    // The first IPv4 TCP address goes in `ip` / `tcp` (31/WAKU2-ENR: pre-defined keys
    // first), the rest in `multiaddrs`; addresses are dropped from the end until the
    // record fits.
    let first_tcp = addrs.iter().position(|a| {
        let v: Vec<_> = a.iter().collect();
        matches!(v.as_slice(), [Protocol::Ip4(_), Protocol::Tcp(_)])
    });
    let main = first_tcp.map(|i| addrs.remove(i));
    loop {
        let mut b = enr::Builder::new(seq)
            .waku2(flags)
            .relay_shards(cluster, shards);
        if let Some(main) = &main {
            let mut it = main.iter();
            if let (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) = (it.next(), it.next()) {
                b = b.ip4_tcp(ip, port);
            }
        }
        if !addrs.is_empty() {
            b = b.multiaddrs(&addrs);
        }
        match b.sign(&secret) {
            Ok(r) => return (main.is_some() || !addrs.is_empty()).then_some(r),
            Err(enr::EnrError::TooLarge) if !addrs.is_empty() => {
                addrs.pop();
            }
            Err(e) => {
                tracing::warn!("cannot make this node's record: {e}");
                return None;
            }
        }
    }
}

impl Node {
    /// This node's own node record (EIP-778 with the Waku keys), which its peer exchange
    /// answers include; `None` without peer exchange, or when the node's key is not
    /// secp256k1 (an identity file made before Waku nodes got secp256k1 keys).
    pub fn enr(&self) -> Option<Enr> {
        self.enr.clone()
    }

    /// Asks `peer` for up to `num_peers` node records (`/vac/waku/peer-exchange/2.0.0-alpha1`)
    /// and returns those that verify, are of this node's cluster and are not this node
    /// (they also enter the cache that discovery dials from and this node answers from).
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for an error status (429 when over the peer's rate limit),
    /// [`Error::Request`] if the request failed (timeout, closed connection, a peer
    /// without the protocol, an answer over the size bound), [`Error::Config`] without
    /// peer exchange, [`Error::Busy`] with too many requests outstanding,
    /// [`Error::Shutdown`].
    pub async fn peer_exchange(&self, peer: PeerId, num_peers: u64) -> Result<Vec<Enr>> {
        self.relay_config()?;
        self.call(|r| Command::PeerExchange(peer, num_peers, r))
            .await
    }
}

impl Task {
    fn cluster(&self) -> u16 {
        self.waku.as_ref().map_or(0, |w| w.config.cluster)
    }

    /// Sends a request; `reply` is `None` for the node's own discovery.
    pub(super) fn px_request(
        &mut self,
        peer: PeerId,
        num_peers: u64,
        reply: Option<Reply<Vec<Enr>>>,
    ) {
        let room = self.has_room(1 + self.waku_requests());
        let Some(px) = self.px.as_mut() else {
            if let Some(r) = reply {
                let _ = r.send(Err(Error::Config("peer exchange is off".into())));
            }
            return;
        };
        if !room {
            if let Some(r) = reply {
                let _ = r.send(Err(Error::Busy));
            }
            return;
        }
        let Some(b) = self.swarm.behaviour_mut().peer_exchange.as_mut() else {
            return;
        };
        let asked = usize::try_from(num_peers)
            .unwrap_or(usize::MAX)
            .min(peer_exchange::MAX_RESPONSE_PEERS);
        let id = b.send_request(&peer, Framed::Message(Rpc::request(num_peers)));
        px.asked.insert(id, (peer, asked, reply));
    }

    /// A peer announced its protocols: ask a peer exchange server once per connection.
    pub(super) fn px_identified(&mut self, peer: PeerId, protocols: &[libp2p::StreamProtocol]) {
        let Some(px) = self.px.as_mut() else {
            return;
        };
        if !protocols
            .iter()
            .any(|p| p.as_ref() == peer_exchange::PROTOCOL)
        {
            px.servers.remove(&peer);
            return;
        }
        px.servers.insert(peer);
        if px.asked_on_connection.insert(peer) {
            let n = px.config.num_peers;
            self.px_request(peer, n, None);
        }
    }

    /// A peer's last connection closed.
    pub(super) fn px_disconnected(&mut self, peer: &PeerId) {
        if let Some(px) = self.px.as_mut() {
            px.servers.remove(peer);
            px.asked_on_connection.remove(peer);
        }
    }

    /// Below the target: ask a random connected server for more, and dial what is known.
    pub(super) fn px_tick(&mut self) {
        let connected = self.swarm.connected_peers().count();
        let Some(px) = self.px.as_mut() else {
            return;
        };
        if connected >= px.config.target_peers {
            return;
        }
        let now = Instant::now();
        if now.saturating_duration_since(px.last_round) >= px.config.interval {
            px.last_round = now;
            let mut servers: Vec<PeerId> = px.servers.iter().copied().collect();
            servers.sort();
            let i = px.next_random(servers.len());
            if let Some(peer) = servers.get(i).copied() {
                let n = px.config.num_peers;
                self.px_request(peer, n, None);
            }
        }
        self.px_dial();
    }

    /// Dials cached peers while below the target, a few at a time.
    fn px_dial(&mut self) {
        let connected = self.swarm.connected_peers().count();
        let me = *self.swarm.local_peer_id();
        let Some(px) = self.px.as_mut() else {
            return;
        };
        let want = px
            .config
            .target_peers
            .saturating_sub(connected)
            .min(px.config.max_dials);
        if want == 0 {
            return;
        }
        let swarm = &self.swarm;
        let due = px.cache.due_dials(
            want,
            |p| *p == me || swarm.is_connected(p),
            px.config.redial_after,
            Instant::now(),
        );
        for (peer, record) in due {
            let addrs: Vec<Multiaddr> = record
                .addresses()
                .into_iter()
                .filter(dialable)
                .map(|a| a.with(Protocol::P2p(peer)))
                .collect();
            if addrs.is_empty() {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if self.swarm.dial(opts).is_ok() {
                bump(&self.stats.px_dials);
            }
        }
    }

    /// The responder's answer to `peer`: up to `num_peers` records of the cache (never the
    /// requester's own) and this node's own record, at most
    /// [`peer_exchange::MAX_RESPONSE_PEERS`].
    fn px_answer(&mut self, peer: &PeerId, request: &Rpc) -> Rpc {
        let Some(px) = self.px.as_mut() else {
            return Rpc::error(peer_exchange::STATUS_UNAVAILABLE, "peer exchange is off");
        };
        let Some(query) = &request.query else {
            return Rpc::error(peer_exchange::STATUS_BAD_REQUEST, "no query");
        };
        let n = usize::try_from(query.num_peers)
            .unwrap_or(usize::MAX)
            .min(peer_exchange::MAX_RESPONSE_PEERS);
        let mut records = Vec::with_capacity(n);
        if n > 0
            && let Some(own) = &px.own
        {
            records.push(own.clone());
        }
        let more = n.saturating_sub(records.len());
        let mut rng = px.rng;
        let sample = px.cache.sample(more, peer, |below| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % below.max(1) as u64) as usize
        });
        px.rng = rng;
        records.extend(sample);
        Rpc::answer(&records)
    }

    pub(super) fn on_peer_exchange(&mut self, event: request_response::Event<Framed<Rpc>, Rpc>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // An undecodable request is answered as one without a query (400).
                let request = match request {
                    Framed::Message(r) => r,
                    _ => Rpc::default(),
                };
                let answer = if !self.rate_allows(super::Service::PeerExchange, peer) {
                    Rpc::error(peer_exchange::STATUS_TOO_MANY_REQUESTS, "too many requests")
                } else {
                    self.px_answer(&peer, &request)
                };
                let ok = answer
                    .response
                    .as_ref()
                    .is_some_and(|r| r.status_code == Some(peer_exchange::STATUS_OK));
                bump(if ok {
                    &self.stats.px_served
                } else {
                    &self.stats.px_refused
                });
                if let Some(b) = self.swarm.behaviour_mut().peer_exchange.as_mut() {
                    let _ = b.send_response(channel, answer);
                }
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let me = *self.swarm.local_peer_id();
                let cluster = self.cluster();
                let Some(px) = self.px.as_mut() else {
                    return;
                };
                let Some((_, asked, reply)) = px.asked.remove(&request_id) else {
                    return;
                };
                match peer_exchange::check_answer(response, asked, cluster, &me) {
                    Ok((records, dropped)) => {
                        self.stats
                            .px_records_dropped
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                        let now = Instant::now();
                        for r in &records {
                            if px.cache.insert(r.clone(), now) {
                                bump(&self.stats.px_records_learnt);
                            }
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(records));
                        }
                        self.px_dial();
                    }
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(Error::Refused(e.to_string())));
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(px) = self.px.as_mut()
                    && let Some((_, _, Some(reply))) = px.asked.remove(&request_id)
                {
                    let _ = reply.send(Err(Error::Request(error.to_string())));
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_and_quic_addresses_are_dialable() {
        let ok = [
            "/ip4/1.2.3.4/tcp/5",
            "/ip6/::1/tcp/5",
            "/ip4/1.2.3.4/udp/5/quic-v1",
        ];
        for a in ok {
            assert!(dialable(&a.parse().unwrap()), "{a}");
        }
        let bad = [
            "/dns4/example.com/tcp/443/wss",
            "/ip4/1.2.3.4/tcp/443/wss",
            "/ip4/1.2.3.4/tcp/0",
            "/ip4/1.2.3.4/udp/5",
            "/ip4/1.2.3.4/tcp/5/p2p/12D3KooWGzh9qmBDTt2e6zTYqz1z4B3hKL9S5n8YxUrVKL4kDK7A",
        ];
        for a in bad {
            assert!(!dialable(&a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn the_own_record_names_the_node_and_fits() {
        let kp = identity::Keypair::generate_secp256k1();
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/0.0.0.0/tcp/1".parse().unwrap(),
            "/ip4/127.0.0.1/tcp/60000".parse().unwrap(),
            "/ip4/127.0.0.1/udp/60001/quic-v1".parse().unwrap(),
        ];
        let r = own_record(&kp, &addrs, enr::WAKU2_RELAY, 3, &[0, 1]).unwrap();
        assert_eq!(r.peer_id(), Some(kp.public().to_peer_id()));
        assert_eq!(r.tcp(), Some(60000));
        assert_eq!(r.addresses().len(), 2, "{:?}", r.addresses());
        assert_eq!(r.relay_shards(), Some((3, vec![0, 1])));
        // Many addresses: cut until the record fits.
        let many: Vec<Multiaddr> = (0..40)
            .map(|i| {
                format!("/ip6/2001:db8::{i}/tcp/{}", 1000 + i)
                    .parse()
                    .unwrap()
            })
            .collect();
        let r = own_record(&kp, &many, 1, 3, &[0]).unwrap();
        assert!(r.as_bytes().len() <= enr::MAX_SIZE);
        assert!(!r.addresses().is_empty());
        // No record for an Ed25519 key or with nothing to announce.
        assert!(own_record(&identity::Keypair::generate_ed25519(), &addrs, 1, 3, &[0]).is_none());
        assert!(own_record(&kp, &addrs[..1], 1, 3, &[0]).is_none());
    }
}

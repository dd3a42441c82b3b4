//! Connection slots: how many peers, connections per peer, connections per IP address and
//! connections still negotiating a node accepts, and who gives way when it is full.
//!
//! Before these limits, 62 connections from one attacker filled a node's 64 peer slots and
//! honest peers were refused. The rules, all in [`Slots`] (plain bookkeeping, no I/O):
//!
//! - **Pending inbound connections** (accepted by TCP or QUIC, not yet through Noise and the
//!   muxer) are bounded in total ([`SlotLimits::max_pending_incoming`]) and per remote IP
//!   address ([`SlotLimits::max_pending_per_ip`]), so a flood of half-open handshakes from
//!   one address neither grows memory nor takes every handshake slot.
//! - **Per IP address**: at most [`SlotLimits::max_connections_per_ip`] established inbound
//!   connections from one address (the Nim Waku node has a similar "IP colocation" limit).
//!   Outbound connections are this node's own choice and are not counted per IP.
//! - **Per peer id**: at most [`SlotLimits::max_connections_per_peer`] connections.
//! - **Peers**: at most [`SlotLimits::max_peers`] distinct peers. When full, a new peer is
//!   let in by evicting the most recently connected peer of the address that has the most
//!   inbound peers, provided that address has at least two more than the new
//!   peer's address would: an address with many peers gives way to one with few, so
//!   an attacker on one address (or a few) cannot keep newcomers out, and honest peers
//!   spread over many addresses are never evicted for one another.
//!
//! An address is an IPv4 address or an IPv6 /64 ([`ip_of`]). Loopback is an address like
//! any other here, unless [`SlotLimits::loopback_exempt`]: [`Config::loopback`](crate::node::Config::loopback)
//! lifts the per-address limits for loopback addresses only, because tests, benchmarks
//! and the demo put every node on 127.0.0.1; a node so configured that also listens on
//! another address keeps them for every other address.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

/// The limits [`Slots`] enforces; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotLimits {
    pub max_peers: usize,
    pub max_connections_per_peer: usize,
    pub max_connections_per_ip: usize,
    pub max_pending_incoming: usize,
    pub max_pending_per_ip: usize,
    /// The two per-address limits do not apply to loopback addresses.
    pub loopback_exempt: bool,
}

impl SlotLimits {
    /// Whether the per-address limits apply to `ip`.
    fn per_address(&self, ip: Option<IpAddr>) -> bool {
        !(self.loopback_exempt && ip.is_some_and(|ip| ip.is_loopback()))
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`SlotLimits::max_pending_incoming`] handshakes are already running.
    PendingFull,
    /// [`SlotLimits::max_pending_per_ip`] handshakes from this address are already running.
    PendingPerIp,
    /// This address already holds [`SlotLimits::max_connections_per_ip`] connections.
    PerIp,
    /// This peer already holds [`SlotLimits::max_connections_per_peer`] connections.
    PerPeer,
    /// [`SlotLimits::max_peers`] peers are connected and none may be evicted for this one.
    Full,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::PendingFull => "too many connections in handshake",
            Refused::PendingPerIp => "too many connections in handshake from this address",
            Refused::PerIp => "too many connections from this address",
            Refused::PerPeer => "too many connections from this peer",
            Refused::Full => "no peer slot left",
        })
    }
}

impl std::error::Error for Refused {}

#[derive(Debug, Clone, Copy)]
struct Conn {
    peer: PeerId,
    /// The remote address of an inbound connection; `None` for outbound ones (not counted
    /// per IP) and for addresses without an IP.
    inbound_ip: Option<IpAddr>,
}

/// The bookkeeping behind the slot rules.
#[derive(Debug)]
pub(crate) struct Slots {
    limits: SlotLimits,
    pending: HashMap<ConnectionId, Option<IpAddr>>,
    pending_per_ip: HashMap<IpAddr, usize>,
    conns: HashMap<ConnectionId, Conn>,
    per_peer: HashMap<PeerId, usize>,
    per_ip: HashMap<IpAddr, usize>,
    /// Inbound peers per address, oldest first: eviction takes the newest.
    peers_by_ip: HashMap<IpAddr, VecDeque<PeerId>>,
    /// Peers being evicted: their connections are closing, their slots already reused.
    evicting: HashSet<PeerId>,
}

/// The address a multiaddr counts against for the per-address limits, if it starts with
/// an IP address: the IPv4 address (also when written IPv4-mapped in IPv6), or the /64
/// of an IPv6 address, since one host is commonly given a whole /64 and could otherwise
/// take a new address for every connection.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => Some(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) if ip.is_loopback() => Some(IpAddr::V6(ip)),
        Some(Protocol::Ip6(ip)) => Some(match ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(ip) & !u128::from(u64::MAX),
            )),
        }),
        _ => None,
    }
}

fn count(map: &HashMap<IpAddr, usize>, ip: Option<IpAddr>) -> usize {
    ip.and_then(|ip| map.get(&ip).copied()).unwrap_or(0)
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Slots {
    pub(crate) fn new(limits: SlotLimits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            pending_per_ip: HashMap::new(),
            conns: HashMap::new(),
            per_peer: HashMap::new(),
            per_ip: HashMap::new(),
            peers_by_ip: HashMap::new(),
            evicting: HashSet::new(),
        }
    }

    /// An inbound connection starts its handshake.
    pub(crate) fn pending_inbound(
        &mut self,
        id: ConnectionId,
        ip: Option<IpAddr>,
    ) -> Result<(), Refused> {
        if self.pending.len() >= self.limits.max_pending_incoming {
            return Err(Refused::PendingFull);
        }
        if self.limits.per_address(ip)
            && count(&self.pending_per_ip, ip) >= self.limits.max_pending_per_ip
        {
            return Err(Refused::PendingPerIp);
        }
        self.pending.insert(id, ip);
        if let Some(ip) = ip {
            *self.pending_per_ip.entry(ip).or_insert(0) += 1;
        }
        Ok(())
    }

    /// A pending inbound connection finished its handshake or failed.
    pub(crate) fn pending_done(&mut self, id: ConnectionId) {
        if let Some(Some(ip)) = self.pending.remove(&id) {
            decrement(&mut self.pending_per_ip, ip);
        }
    }

    /// Peers connected and not being evicted.
    fn peers(&self) -> usize {
        self.per_peer.len().saturating_sub(self.evicting.len())
    }

    /// Decides on an established connection from `peer` (inbound from `inbound_ip` if
    /// `inbound`). On success returns the peer to evict to make room, if any; the caller
    /// closes its connections, and [`Slots::established`] records the new one.
    pub(crate) fn admit(
        &mut self,
        peer: PeerId,
        inbound: bool,
        ip: Option<IpAddr>,
    ) -> Result<Option<PeerId>, Refused> {
        let ip = ip.filter(|_| inbound);
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.max_connections_per_peer {
            return Err(Refused::PerPeer);
        }
        if ip.is_some()
            && self.limits.per_address(ip)
            && count(&self.per_ip, ip) >= self.limits.max_connections_per_ip
        {
            return Err(Refused::PerIp);
        }
        if self.per_peer.contains_key(&peer) && !self.evicting.contains(&peer) {
            return Ok(None);
        }
        if self.peers() < self.limits.max_peers {
            return Ok(None);
        }
        // Full: the address with the most inbound peers (not counting those already being
        // evicted) gives way if it has at least two more than the newcomer's address would.
        let live =
            |peers: &VecDeque<PeerId>| peers.iter().filter(|p| !self.evicting.contains(*p)).count();
        let newcomer_ip_peers = ip.and_then(|ip| self.peers_by_ip.get(&ip)).map_or(0, live);
        let victim = self
            .peers_by_ip
            .iter()
            .filter(|(other, _)| Some(**other) != ip)
            .map(|(other, peers)| (live(peers), *other, peers))
            .max_by_key(|(n, other, _)| (*n, *other))
            .filter(|(n, _, _)| *n >= newcomer_ip_peers.saturating_add(2))
            .and_then(|(_, _, peers)| {
                peers
                    .iter()
                    .rev()
                    .find(|p| !self.evicting.contains(*p) && **p != peer)
                    .copied()
            });
        match victim {
            Some(v) => {
                self.evicting.insert(v);
                Ok(Some(v))
            }
            None => Err(Refused::Full),
        }
    }

    /// Records an established connection (after [`Slots::admit`] let it in).
    pub(crate) fn established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        inbound: bool,
        ip: Option<IpAddr>,
    ) {
        self.pending_done(id);
        let inbound_ip = ip.filter(|_| inbound);
        self.conns.insert(id, Conn { peer, inbound_ip });
        *self.per_peer.entry(peer).or_insert(0) += 1;
        if let Some(ip) = inbound_ip {
            *self.per_ip.entry(ip).or_insert(0) += 1;
            let peers = self.peers_by_ip.entry(ip).or_default();
            if !peers.contains(&peer) {
                peers.push_back(peer);
            }
        }
    }

    /// Records a closed connection.
    pub(crate) fn closed(&mut self, id: ConnectionId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        decrement(&mut self.per_peer, conn.peer);
        let gone = !self.per_peer.contains_key(&conn.peer);
        if gone {
            self.evicting.remove(&conn.peer);
        }
        if let Some(ip) = conn.inbound_ip {
            decrement(&mut self.per_ip, ip);
            let still_there = self
                .conns
                .values()
                .any(|c| c.peer == conn.peer && c.inbound_ip == Some(ip));
            if !still_there && let Some(peers) = self.peers_by_ip.get_mut(&ip) {
                peers.retain(|p| *p != conn.peer);
                if peers.is_empty() {
                    self.peers_by_ip.remove(&ip);
                }
            }
        }
    }
}

/// Counts of refused and evicted connections, shared with the node's counters.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub pending_refused: AtomicU64,
    pub refused: AtomicU64,
    pub evicted: AtomicU64,
}

/// The swarm side of [`Slots`]: denies connections and closes evicted peers.
pub(crate) struct Behaviour {
    slots: Slots,
    tally: Arc<Tally>,
    to_close: VecDeque<PeerId>,
}

impl Behaviour {
    pub(crate) fn new(limits: SlotLimits, tally: Arc<Tally>) -> Self {
        Self {
            slots: Slots::new(limits),
            tally,
            to_close: VecDeque::new(),
        }
    }

    fn admit(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        inbound: bool,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if inbound {
            self.slots.pending_done(id);
        }
        match self.slots.admit(peer, inbound, ip_of(remote)) {
            Ok(evict) => {
                if let Some(victim) = evict {
                    tracing::debug!("peer slots full: evicting {victim} for {peer}");
                    self.tally.evicted.fetch_add(1, Ordering::Relaxed);
                    self.to_close.push_back(victim);
                }
                Ok(dummy::ConnectionHandler)
            }
            Err(why) => {
                tracing::debug!("refusing connection from {peer} at {remote}: {why}");
                self.tally.refused.fetch_add(1, Ordering::Relaxed);
                Err(ConnectionDenied::new(why))
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.slots
            .pending_inbound(id, ip_of(remote))
            .map_err(|why| {
                tracing::debug!("refusing handshake from {remote}: {why}");
                self.tally.pending_refused.fetch_add(1, Ordering::Relaxed);
                ConnectionDenied::new(why)
            })
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(id, peer, true, remote)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(id, peer, false, addr)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => self.slots.established(
                connection_id,
                peer_id,
                endpoint.is_listener(),
                ip_of(endpoint.get_remote_address()),
            ),
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.slots.closed(connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.slots.pending_done(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.to_close.pop_front() {
            Some(peer_id) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::All,
            }),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SlotLimits {
        SlotLimits {
            max_peers: 4,
            max_connections_per_peer: 2,
            max_connections_per_ip: 3,
            max_pending_incoming: 3,
            max_pending_per_ip: 2,
            loopback_exempt: false,
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    struct Ids(usize);
    impl Ids {
        fn next(&mut self) -> ConnectionId {
            self.0 += 1;
            ConnectionId::new_unchecked(self.0)
        }
    }

    /// Admits and records an inbound connection; returns the evicted peer.
    fn connect(s: &mut Slots, ids: &mut Ids, peer: PeerId, from: Option<IpAddr>) -> Option<PeerId> {
        let id = ids.next();
        let evict = s.admit(peer, true, from).expect("admitted");
        s.established(id, peer, true, from);
        evict
    }

    #[test]
    fn loopback_exempt_lifts_the_per_address_limits_for_loopback_only() {
        let mut s = Slots::new(SlotLimits {
            max_peers: 16,
            max_pending_incoming: 8,
            loopback_exempt: true,
            ..limits()
        });
        let mut ids = Ids(0);
        let lo = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..2 {
            assert_eq!(s.pending_inbound(ids.next(), lo), Ok(()));
        }
        for _ in 0..5 {
            connect(&mut s, &mut ids, PeerId::random(), lo);
        }
        // A public address of the same node's peers keeps both limits.
        assert_eq!(s.pending_inbound(ids.next(), ip(1)), Ok(()));
        assert_eq!(s.pending_inbound(ids.next(), ip(1)), Ok(()));
        assert_eq!(
            s.pending_inbound(ids.next(), ip(1)),
            Err(Refused::PendingPerIp)
        );
        for _ in 0..3 {
            connect(&mut s, &mut ids, PeerId::random(), ip(1));
        }
        assert_eq!(s.admit(PeerId::random(), true, ip(1)), Err(Refused::PerIp));
    }

    #[test]
    fn pending_handshakes_are_bounded_in_total_and_per_address() {
        let mut s = Slots::new(limits());
        let mut ids = Ids(0);
        let (a, b) = (ids.next(), ids.next());
        assert_eq!(s.pending_inbound(a, ip(1)), Ok(()));
        assert_eq!(s.pending_inbound(b, ip(1)), Ok(()));
        assert_eq!(
            s.pending_inbound(ids.next(), ip(1)),
            Err(Refused::PendingPerIp)
        );
        assert_eq!(s.pending_inbound(ids.next(), ip(2)), Ok(()));
        assert_eq!(
            s.pending_inbound(ids.next(), ip(3)),
            Err(Refused::PendingFull)
        );
        s.pending_done(a);
        assert_eq!(s.pending_inbound(ids.next(), ip(1)), Ok(()));
        // A connection that completes its handshake frees its pending slot too.
        s.established(b, PeerId::random(), true, ip(1));
        assert_eq!(s.pending_inbound(ids.next(), ip(4)), Ok(()));
    }

    #[test]
    fn one_address_and_one_peer_are_capped() {
        let mut s = Slots::new(SlotLimits {
            max_peers: 100,
            ..limits()
        });
        let mut ids = Ids(0);
        for _ in 0..3 {
            connect(&mut s, &mut ids, PeerId::random(), ip(1));
        }
        assert_eq!(s.admit(PeerId::random(), true, ip(1)), Err(Refused::PerIp));
        assert_eq!(
            s.admit(PeerId::random(), false, ip(1)),
            Ok(None),
            "outbound connections are not counted per address"
        );
        let p = PeerId::random();
        connect(&mut s, &mut ids, p, ip(2));
        connect(&mut s, &mut ids, p, ip(3));
        assert_eq!(s.admit(p, true, ip(4)), Err(Refused::PerPeer));
    }

    #[test]
    fn when_full_the_most_crowded_address_gives_way_to_a_new_one() {
        let mut s = Slots::new(limits());
        let mut ids = Ids(0);
        let crowd: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for p in &crowd {
            assert_eq!(connect(&mut s, &mut ids, *p, ip(1)), None);
        }
        let other = PeerId::random();
        assert_eq!(connect(&mut s, &mut ids, other, ip(2)), None);
        // Full (4 peers). A newcomer from a third address evicts the newest of address 1.
        let newcomer = PeerId::random();
        assert_eq!(connect(&mut s, &mut ids, newcomer, ip(3)), Some(crowd[2]));
        // Until that connection closes its slot is already taken: the next newcomer evicts
        // the next one from address 1 (2 connections left there, 0 from address 4).
        let second = PeerId::random();
        assert_eq!(connect(&mut s, &mut ids, second, ip(4)), Some(crowd[1]));
        // Addresses 1..4 now hold 1 live connection each (plus two closing): nobody holds
        // two more than a newcomer, so the next one is refused.
        assert_eq!(s.admit(PeerId::random(), true, ip(5)), Err(Refused::Full));
        // Closing the evicted connections frees nothing more (their slots were reused).
        s.closed(ConnectionId::new_unchecked(3));
        s.closed(ConnectionId::new_unchecked(2));
        assert_eq!(s.peers(), 4);
        assert_eq!(s.admit(PeerId::random(), true, ip(5)), Err(Refused::Full));
        // A connected peer may add a connection even when full.
        assert_eq!(s.admit(newcomer, true, ip(3)), Ok(None));
    }

    #[test]
    fn honest_peers_on_distinct_addresses_are_never_evicted_for_each_other() {
        let mut s = Slots::new(limits());
        let mut ids = Ids(0);
        for i in 1..=4 {
            connect(&mut s, &mut ids, PeerId::random(), ip(i));
        }
        assert_eq!(s.admit(PeerId::random(), true, ip(9)), Err(Refused::Full));
        assert_eq!(
            s.admit(PeerId::random(), false, ip(9)),
            Err(Refused::Full),
            "an outbound newcomer counts as an address with no connection"
        );
    }

    #[test]
    fn ip_of_reads_the_first_component() {
        let a: Multiaddr = "/ip4/127.0.0.2/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&a), Some(IpAddr::from([127, 0, 0, 2])));
        let b: Multiaddr = "/dns4/example.invalid/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&b), None);
        // One /64 is one address; the next /64 is another.
        let c: Multiaddr = "/ip6/2001:db8:1:2:aaaa:bbbb:cccc:dddd/tcp/1"
            .parse()
            .unwrap();
        let d: Multiaddr = "/ip6/2001:db8:1:2::7/tcp/1".parse().unwrap();
        let e: Multiaddr = "/ip6/2001:db8:1:3::7/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&c), Some("2001:db8:1:2::".parse().unwrap()));
        assert_eq!(ip_of(&c), ip_of(&d));
        assert_ne!(ip_of(&c), ip_of(&e));
        let mapped: Multiaddr = "/ip6/::ffff:192.0.2.7/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&mapped), Some(IpAddr::from([192, 0, 2, 7])));
        let loopback: Multiaddr = "/ip6/::1/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&loopback), Some("::1".parse().unwrap()));
    }
}

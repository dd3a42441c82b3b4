//! The client's side of `/vac/waku/filter-push/2.0.0-beta1`: every push frame of every
//! inbound push stream, read until the service closes the stream.
//!
//! The spec (12/WAKU2-FILTER, "Message Push") does not say how many pushes a stream carries.
//! The Nim service keeps the push stream to a subscriber open and writes each further push
//! on it as a length-prefixed `MessagePush` frame; the Nim client reads frames until the
//! stream ends. Request-response reads one request per stream, and closes every inbound
//! stream after its request timeout, so it cannot be the reader: the pushes of a burst
//! after the first were lost. This is a small behaviour of our own instead, inbound only
//! (a filter service still sends with request-response, one push per stream, which every
//! reader of frames until the end handles). No crate is added for it: `libp2p-stream`
//! 0.5.0-alpha was tried and dropped, because it hands inbound streams to its acceptor
//! through a channel of one slot and drops the streams that find it full, without a word,
//! so the pushes of a burst on several streams were lost too.
//!
//! Bounds, all on the client:
//! - a frame is at most the message limit plus [`filter::FRAME_OVERHEAD`]; a longer one,
//!   or one that is no `MessagePush`, ends its stream and counts as rejected;
//! - a frame holds one of the node's push read slots ([`ReadSlots`], shared over all
//!   connections and peers) from its first byte to its last, and must arrive within the
//!   request timeout once begun; a frame that finds every slot taken ends its stream;
//! - [`Limits::filter_pushes_per_stream`] pushes per stream, then the stream is closed
//!   (the service opens another for the next one);
//! - push streams are read only from the services the node holds criteria with (the node
//!   tells the behaviour, [`Behaviour::set_services`]); a stream of another peer is closed
//!   unread and counts as rejected, so strangers cannot take the read slots the real
//!   service's pushes need;
//! - [`Limits::filter_push_streams_per_peer`] push streams open at once per peer, over its
//!   connections; another is closed unread and counts as rejected;
//! - a stream on which no frame begins for [`Limits::filter_push_idle`] is closed.
//!
//! Nothing beyond reading happens here: the node checks every push against its
//! subscriptions (pushes from a peer it has none with are dropped there).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, Stream, StreamProtocol};
use prost::Message as _;

use super::Limits;
use crate::waku::filter::{self, MessagePush};
use crate::waku::framing::{self, ReadSlots, Slot};

/// The limits of the reader.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// The longest push frame read.
    pub max_frame: usize,
    /// How long a frame may take from its first byte to its last.
    pub frame_timeout: Duration,
    /// [`Limits::filter_pushes_per_stream`].
    pub pushes_per_stream: usize,
    /// [`Limits::filter_push_streams_per_peer`].
    pub streams_per_peer: usize,
    /// [`Limits::filter_push_idle`].
    pub idle: Duration,
}

impl Bounds {
    /// The bounds for a relay message limit of `max_message_size` bytes.
    pub(super) fn new(max_message_size: usize, limits: &Limits) -> Self {
        Self {
            max_frame: max_message_size.saturating_add(filter::FRAME_OVERHEAD),
            frame_timeout: limits.request_timeout,
            pushes_per_stream: limits.filter_pushes_per_stream,
            streams_per_peer: limits.filter_push_streams_per_peer,
            idle: limits.filter_push_idle,
        }
    }
}

/// A push read from `peer`, not yet checked against the node's subscriptions.
#[derive(Debug)]
pub(super) struct Push {
    pub peer: PeerId,
    pub push: MessagePush,
}

/// The behaviour: one [`Handler`] per connection, with the per-peer stream counts.
pub(super) struct Behaviour {
    bounds: Bounds,
    slots: ReadSlots,
    rejected: Arc<AtomicU64>,
    /// Open push streams per peer, shared by the handlers of its connections.
    open: HashMap<PeerId, Arc<AtomicUsize>>,
    /// The peers whose push streams are read, shared with every handler.
    services: Arc<RwLock<HashSet<PeerId>>>,
    events: VecDeque<Push>,
}

impl Behaviour {
    /// Reads frames in `slots`; counts what it refuses in `rejected`.
    pub(super) fn new(bounds: Bounds, slots: ReadSlots, rejected: Arc<AtomicU64>) -> Self {
        Self {
            bounds,
            slots,
            rejected,
            open: HashMap::new(),
            services: Arc::default(),
            events: VecDeque::new(),
        }
    }

    /// Reads push streams from `services` only (from now on, and before each frame of a
    /// stream already open).
    pub(super) fn set_services(&mut self, services: HashSet<PeerId>) {
        if let Ok(mut s) = self.services.write() {
            *s = services;
        }
    }

    fn handler(&mut self, peer: PeerId) -> Handler {
        // Forget the counts of peers no handler holds any more.
        self.open.retain(|_, n| Arc::strong_count(n) > 1);
        let open = self.open.entry(peer).or_default().clone();
        Handler {
            peer,
            bounds: self.bounds,
            slots: self.slots.clone(),
            rejected: self.rejected.clone(),
            open,
            services: self.services.clone(),
            streams: SelectAll::new(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Push;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        push: THandlerOutEvent<Self>,
    ) {
        self.events.push_back(Push { peer, push });
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Push, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(push) => Poll::Ready(ToSwarm::GenerateEvent(push)),
            None => Poll::Pending,
        }
    }
}

/// Reads the push streams of one connection.
pub(super) struct Handler {
    peer: PeerId,
    bounds: Bounds,
    slots: ReadSlots,
    rejected: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    services: Arc<RwLock<HashSet<PeerId>>>,
    streams: SelectAll<BoxStream<'static, MessagePush>>,
}

/// Whether `peer` is one of `services`.
fn serves(services: &RwLock<HashSet<PeerId>>, peer: &PeerId) -> bool {
    services.read().is_ok_and(|s| s.contains(peer))
}

/// One open push stream of a peer, given back when its reader ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The state of one stream's reader.
struct Reader {
    stream: Stream,
    peer: PeerId,
    services: Arc<RwLock<HashSet<PeerId>>>,
    bounds: Bounds,
    slots: ReadSlots,
    rejected: Arc<AtomicU64>,
    read: usize,
    _open: Open,
}

impl Reader {
    /// The next push, or `None` when the stream ends: closed by the service, idle, at the
    /// bound, or refused (a frame too large, cut short, slow, no `MessagePush`, no slot).
    async fn next(&mut self) -> Option<MessagePush> {
        if self.read >= self.bounds.pushes_per_stream {
            return None;
        }
        let first = tokio::time::timeout(
            self.bounds.idle,
            framing::read_frame_start(&mut self.stream),
        )
        .await;
        let first = match first {
            Ok(Ok(Some(first))) => first,
            // Idle, closed between frames, or gone: nothing was lost here.
            Err(_) | Ok(Ok(None) | Err(_)) => return None,
        };
        if !serves(&self.services, &self.peer) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let Some(slot) = self.slots.try_take() else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let push = self.frame(first, slot).await?;
        self.read += 1;
        Some(push)
    }

    /// The rest of a frame; the slot counts the frame as unreadable unless it decodes.
    async fn frame(&mut self, first: u8, slot: Slot) -> Option<MessagePush> {
        let body = framing::read_frame_after(&mut self.stream, first, self.bounds.max_frame);
        let body = tokio::time::timeout(self.bounds.frame_timeout, body)
            .await
            .ok()?
            .ok()?;
        let push = MessagePush::decode(body.as_slice()).ok()?;
        slot.finish();
        Some(push)
    }
}

impl Handler {
    fn read(&mut self, stream: Stream) {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let open = Open(self.open.clone());
        if before >= self.bounds.streams_per_peer || !serves(&self.services, &self.peer) {
            // Dropping the stream (and `open`) closes it unread.
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let reader = Reader {
            stream,
            peer: self.peer,
            services: self.services.clone(),
            bounds: self.bounds,
            slots: self.slots.clone(),
            rejected: self.rejected.clone(),
            read: 0,
            _open: open,
        };
        let pushes = futures::stream::unfold(reader, |mut r| async move {
            let push = r.next().await?;
            Some((push, r))
        });
        self.streams.push(pushes.boxed());
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = MessagePush;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(
            ReadyUpgrade::new(StreamProtocol::new(filter::PUSH_PROTOCOL)),
            (),
        )
    }

    fn connection_keep_alive(&self) -> bool {
        // A service's open push stream keeps the connection to it.
        !self.streams.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, Infallible, MessagePush>> {
        match self.streams.poll_next_unpin(cx) {
            Poll::Ready(Some(push)) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(push)),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            self.read(stream);
        }
    }
}

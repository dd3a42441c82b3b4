//! The node's side of Waku filter v2 ([`crate::waku::filter`]): the client calls
//! ([`Node::filter_subscribe`] and the others), the stream of accepted pushes
//! ([`FilterInbound`]), and the service that keeps subscriptions and pushes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::mpsc;

use super::{Command, Config, Error, Limits, Node, Reply, Result, Service, Stats, Task, bump};
use crate::waku::filter::{
    self, ClientSubscriptions, MessagePush, PushCodec, Received, Refused, Status, SubscribeCodec,
    SubscribeRequest, SubscribeResponse, SubscribeType, Subscriptions, UNKNOWN_REQUEST_ID,
};
use crate::waku::framing::{Framed, ReadSlots};
use crate::waku::{ContentTopic, PubsubTopic, WakuMessage, message_hash, relay};

/// How often the node expires subscriptions (service) and refreshes its own (client).
pub(super) const TICK: Duration = Duration::from_secs(5);
/// How often a client subscribes again to everything it subscribed to, which refreshes its
/// subscriptions well within the service's TTL (5 minutes at the Nim node; js-waku pings
/// every minute) and restores them at a service that restarted or dropped them.
const REFRESH: Duration = Duration::from_secs(60);
/// Push frames a client reads at once, over all services and streams (a service of ours
/// sends at most [`filter::Config::max_pushes_in_flight`] at once, on as many streams).
const MAX_PUSH_READS: usize = 64;

/// A filter request of the client.
#[derive(Debug)]
pub(super) enum Op {
    Ping,
    Subscribe(PubsubTopic, Vec<String>),
    Unsubscribe(PubsubTopic, Vec<String>),
    UnsubscribeAll,
}

/// What to take back when a request of the client fails.
enum Undo {
    Nothing,
    /// The content topics this subscribe request added to the client's criteria.
    Added(String, Vec<String>),
    /// A ping: a 404 means the service holds nothing for us any more.
    ForgetOnNotFound,
}

/// An outstanding request of the client; a refresh has no caller waiting.
struct Pending {
    peer: PeerId,
    undo: Undo,
    reply: Option<Reply<()>>,
}

/// The filter state of a Waku node.
pub(super) struct State {
    /// The service's subscriptions, when this node is a filter service.
    service: Option<Subscriptions<PeerId>>,
    /// Pushes in flight, and to whom.
    pushes: HashMap<OutboundRequestId, PeerId>,
    /// Pushes in flight per subscriber.
    in_flight: HashMap<PeerId, usize>,
    /// What this node subscribed to, per service.
    client: ClientSubscriptions<PeerId>,
    /// Outstanding requests of the client.
    requests: HashMap<OutboundRequestId, Pending>,
    inbound: mpsc::Sender<Received>,
    last_refresh: Instant,
}

impl State {
    pub(super) fn new(service: Option<filter::Config>, inbound: mpsc::Sender<Received>) -> Self {
        Self {
            service: service.map(Subscriptions::new),
            pushes: HashMap::new(),
            in_flight: HashMap::new(),
            client: ClientSubscriptions::default(),
            requests: HashMap::new(),
            inbound,
            last_refresh: Instant::now(),
        }
    }

    /// Outstanding requests of the client.
    pub(super) fn requests(&self) -> usize {
        self.requests.len()
    }
}

/// The reader of the pushes sent to a Waku node with relay `w`
/// ([`waku_filter_push`](super::waku_filter_push)).
pub(super) fn push_reader(
    w: &relay::Config,
    limits: &Limits,
    stats: &Stats,
) -> super::waku_filter_push::Behaviour {
    super::waku_filter_push::Behaviour::new(
        super::waku_filter_push::Bounds::new(w.max_message_size, limits),
        push_slots(stats),
        stats.filter_rejected.clone(),
    )
}

fn push_slots(stats: &Stats) -> ReadSlots {
    ReadSlots::new(
        stats.filter_push_reading.clone(),
        stats.filter_rejected.clone(),
        MAX_PUSH_READS,
    )
}

/// The two request-response behaviours of filter for a Waku node with relay `w`: the
/// push one only sends (a service's pushes, one per stream); pushes are received by
/// [`push_reader`], which reads every frame of a stream.
pub(super) fn behaviours(
    config: &Config,
    w: &relay::Config,
    limits: &Limits,
    stats: &Stats,
) -> (
    request_response::Behaviour<SubscribeCodec>,
    request_response::Behaviour<PushCodec>,
) {
    let subscribe = match &config.filter {
        Some(_) => ProtocolSupport::Full,
        None => ProtocolSupport::Outbound,
    };
    // Never inbound: two behaviours offering the push protocol would each take some streams.
    let push = ProtocolSupport::Outbound;
    let rr = || {
        request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(limits.max_concurrent_streams)
    };
    let (requests, per_connection) = config.filter.as_ref().map_or((1, 1), |c| {
        (
            c.max_concurrent_requests,
            c.max_concurrent_requests_per_connection,
        )
    });
    (
        request_response::Behaviour::with_codec(
            SubscribeCodec::new(
                ReadSlots::new(
                    stats.filter_reading.clone(),
                    stats.filter_requests_refused.clone(),
                    requests,
                )
                .per_connection(per_connection),
            ),
            [(StreamProtocol::new(filter::SUBSCRIBE_PROTOCOL), subscribe)],
            rr(),
        ),
        request_response::Behaviour::with_codec(
            PushCodec::new(w.max_message_size, push_slots(stats)),
            [(StreamProtocol::new(filter::PUSH_PROTOCOL), push)],
            rr(),
        ),
    )
}

/// The stream of messages pushed to this node by the filter services it subscribed with,
/// taken once with [`Node::filter_inbound`]. Only pushes from a service this node has a
/// subscription with, matching criteria it subscribed to there, arrive. Bounded by
/// [`Limits::inbound_queue`]; pushes that find it full are dropped and counted in
/// [`super::Counters::filter_inbound_dropped`]. Pushes on one stream arrive in the order
/// the service wrote them; a service of ours writes each on its own stream, so from it two
/// messages may arrive in another order than it received them.
#[derive(Debug)]
pub struct FilterInbound {
    rx: mpsc::Receiver<Received>,
}

impl FilterInbound {
    pub(super) fn new(rx: mpsc::Receiver<Received>) -> Self {
        Self { rx }
    }

    /// The next message, or `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }

    /// The next message if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }
}

impl Stream for FilterInbound {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        self.rx.poll_recv(cx)
    }
}

fn topics(content_topics: &[ContentTopic]) -> Vec<String> {
    content_topics.iter().map(ToString::to_string).collect()
}

impl Node {
    /// The stream of messages filter services push to this node. Returns it on the first
    /// call only (later calls, and a node without Waku, get `None`).
    pub fn filter_inbound(&self) -> Option<FilterInbound> {
        // A poisoned lock only means another thread panicked while taking the stream.
        match self.filter_inbound.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// Subscribes with the filter service `peer` to the messages on `shard` whose content
    /// topic is one of `content_topics` (at most 100 per request); subscribing again adds
    /// topics or refreshes. From the moment of the call, pushes from `peer` matching these
    /// criteria are accepted ([`Node::filter_inbound`]); they are taken back if the service
    /// refuses. The node subscribes again to all its criteria every minute, which keeps
    /// them alive at the service.
    ///
    /// # Errors
    ///
    /// [`Error::Filter`] with the service's [`Status`] when it refuses (400 for bad
    /// criteria or a shard it does not relay, 503 when its subscriber or criteria limit is
    /// reached), and as for [`Node::filter_ping`].
    pub async fn filter_subscribe(
        &self,
        peer: PeerId,
        shard: PubsubTopic,
        content_topics: &[ContentTopic],
    ) -> Result<()> {
        self.relay_config()?;
        let op = Op::Subscribe(shard, topics(content_topics));
        self.call(|r| Command::Filter(peer, op, r)).await
    }

    /// Unsubscribes from some criteria at `peer`. Pushes matching them are refused from
    /// the moment of the call.
    ///
    /// # Errors
    ///
    /// [`Error::Filter`] with [`Status::NotFound`] if the service held none of them, and as
    /// for [`Node::filter_ping`].
    pub async fn filter_unsubscribe(
        &self,
        peer: PeerId,
        shard: PubsubTopic,
        content_topics: &[ContentTopic],
    ) -> Result<()> {
        self.relay_config()?;
        let op = Op::Unsubscribe(shard, topics(content_topics));
        self.call(|r| Command::Filter(peer, op, r)).await
    }

    /// Unsubscribes from everything at `peer`.
    ///
    /// # Errors
    ///
    /// [`Error::Filter`] with [`Status::NotFound`] if the service held nothing, and as for
    /// [`Node::filter_ping`].
    pub async fn filter_unsubscribe_all(&self, peer: PeerId) -> Result<()> {
        self.relay_config()?;
        self.call(|r| Command::Filter(peer, Op::UnsubscribeAll, r))
            .await
    }

    /// Asks `peer` whether it holds a subscription of this node (and refreshes it). On
    /// [`Status::NotFound`] the node forgets its criteria with `peer` too.
    ///
    /// # Errors
    ///
    /// [`Error::Filter`] with the service's [`Status`] ([`Status::NotFound`]: no
    /// subscription), [`Error::Request`] if the request failed (timeout, closed
    /// connection, a peer that is no filter service), [`Error::Config`] if Waku is off,
    /// [`Error::Busy`] with too many requests outstanding, [`Error::Shutdown`].
    pub async fn filter_ping(&self, peer: PeerId) -> Result<()> {
        self.relay_config()?;
        self.call(|r| Command::Filter(peer, Op::Ping, r)).await
    }
}

impl Task {
    pub(super) fn filter_request(&mut self, peer: PeerId, op: Op, reply: Reply<()>) {
        if !self.has_room(1 + self.waku_requests()) {
            // Forgetting needs no room: what an unsubscription takes back locally (the
            // criteria renewed every minute, the pushes taken) is taken back even when the
            // request to the service cannot be sent.
            if let Some(waku) = self.waku.as_mut() {
                match &op {
                    Op::Unsubscribe(shard, topics) => {
                        waku.filter.client.remove(&peer, &shard.to_string(), topics);
                    }
                    Op::UnsubscribeAll => waku.filter.client.remove_peer(&peer),
                    Op::Ping | Op::Subscribe(..) => {}
                }
                self.share_push_services();
            }
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let request_id = self.request_id();
        let Some(waku) = self.waku.as_mut() else {
            let _ = reply.send(Err(Error::Config("Waku is off".into())));
            return;
        };
        let client = &mut waku.filter.client;
        let (kind, criteria, undo) = match op {
            Op::Ping => (SubscribeType::SubscriberPing, None, Undo::ForgetOnNotFound),
            Op::Subscribe(shard, topics) => {
                let shard = shard.to_string();
                let added = client.add(&peer, &shard, &topics);
                (
                    SubscribeType::Subscribe,
                    Some((shard.clone(), topics)),
                    Undo::Added(shard, added),
                )
            }
            Op::Unsubscribe(shard, topics) => {
                let shard = shard.to_string();
                client.remove(&peer, &shard, &topics);
                (
                    SubscribeType::Unsubscribe,
                    Some((shard, topics)),
                    Undo::Nothing,
                )
            }
            Op::UnsubscribeAll => {
                client.remove_peer(&peer);
                (SubscribeType::UnsubscribeAll, None, Undo::Nothing)
            }
        };
        self.share_push_services();
        let (pubsub_topic, content_topics) = criteria.unzip();
        let request = SubscribeRequest {
            request_id,
            filter_subscribe_type: kind as i32,
            pubsub_topic,
            content_topics: content_topics.unwrap_or_default(),
        };
        self.send_filter(peer, request, undo, Some(reply));
    }

    fn send_filter(
        &mut self,
        peer: PeerId,
        request: SubscribeRequest,
        undo: Undo,
        reply: Option<Reply<()>>,
    ) {
        let Some(b) = self.swarm.behaviour_mut().filter_subscribe.as_mut() else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::Config("Waku is off".into())));
            }
            return;
        };
        let id = b.send_request(&peer, Framed::Message(request));
        if let Some(waku) = self.waku.as_mut() {
            waku.filter
                .requests
                .insert(id, Pending { peer, undo, reply });
        }
    }

    /// Tells the push reader which peers this node holds criteria with: only their push
    /// streams are read.
    fn share_push_services(&mut self) {
        let services: std::collections::HashSet<PeerId> = self
            .waku
            .as_ref()
            .map(|w| w.filter.client.services().copied().collect())
            .unwrap_or_default();
        if let Some(b) = self.swarm.behaviour_mut().filter_push_in.as_mut() {
            b.set_services(services);
        }
    }

    /// A client's request failed or was refused: take back what it changed.
    fn filter_failed(&mut self, pending: Pending, error: Error) {
        if let Some(waku) = self.waku.as_mut() {
            match (&pending.undo, &error) {
                (Undo::Added(shard, added), _) => {
                    waku.filter.client.remove(&pending.peer, shard, added);
                }
                (Undo::ForgetOnNotFound, Error::Filter(r)) if r.status == Status::NotFound => {
                    waku.filter.client.remove_peer(&pending.peer);
                }
                _ => {}
            }
        }
        self.share_push_services();
        match pending.reply {
            Some(reply) => {
                let _ = reply.send(Err(error));
            }
            None => tracing::debug!("refreshing a filter subscription failed: {error}"),
        }
    }

    /// The service's answer to one request.
    fn serve_filter(
        &mut self,
        peer: PeerId,
        request: Framed<SubscribeRequest>,
    ) -> SubscribeResponse {
        let request = match request {
            Framed::Message(r) => r,
            Framed::Malformed => {
                return SubscribeResponse::new(
                    UNKNOWN_REQUEST_ID,
                    Status::BadRequest,
                    "not a FilterSubscribeRequest",
                );
            }
            Framed::TooLarge(_) => {
                return SubscribeResponse::new(
                    UNKNOWN_REQUEST_ID,
                    Status::BadRequest,
                    "request too large",
                );
            }
            Framed::Busy => {
                return SubscribeResponse::new(
                    UNKNOWN_REQUEST_ID,
                    Status::TooManyRequests,
                    "too many filter requests at once",
                );
            }
        };
        let Some(waku) = self.waku.as_mut() else {
            return SubscribeResponse::new(request.request_id, Status::Other(500), "no service");
        };
        let Some(service) = waku.filter.service.as_mut() else {
            return SubscribeResponse::new(request.request_id, Status::Other(500), "no service");
        };
        let (cluster, shards) = (waku.config.cluster, &waku.shards);
        let serves = |t: &str| {
            PubsubTopic::parse(t).is_some_and(|s| s.cluster == cluster && shards.contains(&s.shard))
        };
        let now = Instant::now();
        let response = service.handle(&peer, &request, serves, now);
        self.stats
            .filter_subscribers
            .store(service.len(now) as u64, Ordering::Relaxed);
        response
    }

    pub(super) fn on_filter_subscribe(
        &mut self,
        event: request_response::Event<Framed<SubscribeRequest>, SubscribeResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = if self.rate_allows(Service::Filter, peer) {
                    self.serve_filter(peer, request)
                } else {
                    let id = match &request {
                        Framed::Message(r) => r.request_id.clone(),
                        _ => UNKNOWN_REQUEST_ID.to_owned(),
                    };
                    SubscribeResponse::new(id, Status::TooManyRequests, "too many requests")
                };
                if response.status().is_success() {
                    bump(&self.stats.filter_requests_served);
                } else {
                    bump(&self.stats.filter_requests_refused);
                }
                if let Some(b) = self.swarm.behaviour_mut().filter_subscribe.as_mut() {
                    // An error means the stream is already gone; nothing to do.
                    let _ = b.send_response(channel, response);
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
                let Some(pending) = self
                    .waku
                    .as_mut()
                    .and_then(|w| w.filter.requests.remove(&request_id))
                else {
                    return;
                };
                match Refused::of(&response) {
                    None => {
                        if let Some(reply) = pending.reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Some(refused) => self.filter_failed(pending, Error::Filter(refused)),
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(pending) = self
                    .waku
                    .as_mut()
                    .and_then(|w| w.filter.requests.remove(&request_id))
                {
                    self.filter_failed(pending, Error::Request(error.to_string()));
                }
            }
            // Requests that could not be read are counted by the codec.
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A service pushes a relay message (received or published here) to the subscribers
    /// it matches.
    pub(super) fn filter_push(&mut self, shard: PubsubTopic, message: &WakuMessage) {
        let Some(waku) = self.waku.as_mut() else {
            return;
        };
        let Some(service) = &waku.filter.service else {
            return;
        };
        let topic = shard.to_string();
        let max = service.config().max_pushes_in_flight;
        let peers = service.matching(&topic, &message.content_topic, Instant::now());
        for peer in peers {
            let in_flight = waku.filter.in_flight.entry(peer).or_default();
            if *in_flight >= max {
                bump(&self.stats.filter_pushes_dropped);
                continue;
            }
            let Some(b) = self.swarm.behaviour_mut().filter_push.as_mut() else {
                return;
            };
            *in_flight += 1;
            bump(&self.stats.filter_pushed);
            let push = MessagePush {
                waku_message: Some(message.clone()),
                pubsub_topic: Some(topic.clone()),
            };
            let id = b.send_request(&peer, push);
            waku.filter.pushes.insert(id, peer);
        }
    }

    /// A push of this service has an outcome.
    fn push_done(&mut self, id: OutboundRequestId, delivered: bool) {
        let Some(waku) = self.waku.as_mut() else {
            return;
        };
        let Some(peer) = waku.filter.pushes.remove(&id) else {
            return;
        };
        if let Some(n) = waku.filter.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waku.filter.in_flight.remove(&peer);
            }
        }
        if !delivered {
            bump(&self.stats.filter_pushes_failed);
        }
        if let Some(service) = waku.filter.service.as_mut()
            && service.push_outcome(&peer, delivered, Instant::now())
        {
            tracing::debug!("dropping the filter subscription of unreachable {peer}");
        }
    }

    /// A push received as a client: accepted only from a service this node subscribed
    /// with, for criteria it subscribed to there.
    pub(super) fn receive_push(&mut self, peer: PeerId, push: MessagePush) {
        let Some(waku) = self.waku.as_ref() else {
            return;
        };
        let accepted = match (push.waku_message, push.pubsub_topic) {
            (Some(message), Some(topic))
                if message.check().is_ok()
                    && prost::Message::encoded_len(&message) <= waku.config.max_message_size
                    && waku
                        .filter
                        .client
                        .accepts(&peer, &topic, &message.content_topic) =>
            {
                PubsubTopic::parse(&topic).map(|shard| Received {
                    peer,
                    shard,
                    hash: message_hash(&topic, &message),
                    message,
                })
            }
            _ => None,
        };
        let Some(received) = accepted else {
            bump(&self.stats.filter_rejected);
            return;
        };
        // Count before sending, so a reader never sees a message before its count.
        bump(&self.stats.filter_delivered);
        if waku.filter.inbound.try_send(received).is_err() {
            self.stats.filter_delivered.fetch_sub(1, Ordering::Relaxed);
            bump(&self.stats.filter_inbound_dropped);
        }
    }

    pub(super) fn on_filter_push(&mut self, event: request_response::Event<MessagePush, ()>) {
        match event {
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => self.push_done(request_id, true),
            request_response::Event::OutboundFailure { request_id, .. } => {
                self.push_done(request_id, false);
            }
            // Pushes are never received here (outbound only).
            request_response::Event::Message {
                message: request_response::Message::Request { .. },
                ..
            }
            | request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Expires the service's subscriptions; refreshes the client's every [`REFRESH`].
    pub(super) fn filter_tick(&mut self) {
        let now = Instant::now();
        let Some(waku) = self.waku.as_mut() else {
            return;
        };
        if let Some(service) = waku.filter.service.as_mut() {
            service.expire(now);
            self.stats
                .filter_subscribers
                .store(service.len(now) as u64, Ordering::Relaxed);
        }
        if now.saturating_duration_since(waku.filter.last_refresh) < REFRESH {
            return;
        }
        waku.filter.last_refresh = now;
        let all = waku.filter.client.all();
        for (peer, shard, topics) in all {
            for chunk in topics.chunks(filter::MAX_CONTENT_TOPICS_PER_REQUEST) {
                if !self.has_room(1 + self.waku_requests()) {
                    return;
                }
                let request = SubscribeRequest {
                    request_id: self.request_id(),
                    filter_subscribe_type: SubscribeType::Subscribe as i32,
                    pubsub_topic: Some(shard.clone()),
                    content_topics: chunk.to_vec(),
                };
                self.send_filter(peer, request, Undo::Nothing, None);
            }
        }
    }
}

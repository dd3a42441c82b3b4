//! Waku filter v2, 12/WAKU2-FILTER (`docs/messaging/core/draft/12/filter.md` in
//! logos-co/logos-lips): a light client asks a service node to push it the relay messages
//! of some content topics, instead of relaying.
//!
//! - Two protocols (section "Protobuf"): on `/vac/waku/filter-subscribe/2.0.0-beta1` the
//!   client sends a [`SubscribeRequest`] (ping, subscribe, unsubscribe, unsubscribe all) and
//!   the service answers a [`SubscribeResponse`]; on `/vac/waku/filter-push/2.0.0-beta1` the
//!   service sends [`MessagePush`]es and the client does not answer (section "Message
//!   Push"). Each message is one length-prefixed frame ([`super::framing`]); this service
//!   opens a stream per push (the Nim node keeps one open and writes many; see the crate's
//!   design notes, "Lightpush and filter", for what that means for our client).
//! - Filter criteria (section "Filter matching"): a pubsub topic and a non-empty set of
//!   content topics; a message matches when it was published on that pubsub topic and its
//!   content topic is in the set. A request with criteria missing or partial is refused
//!   with 400 (sections "SUBSCRIBE", "UNSUBSCRIBE").
//! - The service's decisions live in [`Subscriptions`], which does no I/O and reads no
//!   clock: the node passes the time in. Ping answers 200 when the client has an active
//!   subscription and 404 when not (section "SUBSCRIBER_PING"); subscribe adds criteria and
//!   refreshes; unsubscribe removes some, unsubscribe-all all (404 when there was nothing).
//! - Status codes: the spec fixes only "2xx is success"; the codes are the Nim node's
//!   (`waku_filter_v2/common.nim`): 400 bad request, 404 not found, 429 too many requests,
//!   503 service unavailable (subscriber or criteria limit reached), [`Status`].
//! - Bounds, the Nim node's defaults (`waku_filter_v2/subscriptions.nim`, `protocol.nim`):
//!   at most [`Config::max_subscribers`] (100) subscribers, the next one refused with 503;
//!   at most [`Config::max_criteria_per_subscriber`] (1000) criteria each, 503 beyond; at
//!   most [`MAX_CONTENT_TOPICS_PER_REQUEST`] (100) content topics in one request, 400
//!   beyond; a subscription expires [`Config::subscription_ttl`] (5 minutes) after it was
//!   last refreshed by a subscribe, unsubscribe or ping. A subscriber whose pushes have
//!   failed for [`Config::unreachable_after`] (1 minute, the spec's recommendation in section
//!   "Filter-Push") is dropped. Ours: request frames of at most [`MAX_SUBSCRIBE_REQUEST`],
//!   push frames of the message limit plus [`FRAME_OVERHEAD`], at most
//!   [`Config::max_pushes_in_flight`] pushes to one subscriber at once (further matching
//!   messages are not pushed to it: the spec calls the service best effort), requests and
//!   pushes read at once bounded by read slots.
//! - The client accepts a push only from a peer it subscribed with, for criteria it
//!   subscribed to ([`ClientSubscriptions`]; section "Message Push": a client "SHOULD
//!   verify" both).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::io;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::{PeerId, StreamProtocol};
use prost::Message as _;

use super::framing::{Framed, ReadSlots, invalid, read_frame, read_service_frame, write_frame};
use super::message::{MessageHash, WakuMessage};
use super::sharding::{MAX_CONTENT_TOPIC, PubsubTopic};

/// Protocol id of subscription requests.
pub const SUBSCRIBE_PROTOCOL: &str = "/vac/waku/filter-subscribe/2.0.0-beta1";
/// Protocol id of message pushes.
pub const PUSH_PROTOCOL: &str = "/vac/waku/filter-push/2.0.0-beta1";

/// Most content topics in one request (the Nim node's `MaxContentTopicsPerRequest`).
pub const MAX_CONTENT_TOPICS_PER_REQUEST: usize = 100;
/// Largest subscription request frame: the most content topics of the longest length, a
/// pubsub topic and framing.
pub const MAX_SUBSCRIBE_REQUEST: usize =
    MAX_CONTENT_TOPICS_PER_REQUEST * (MAX_CONTENT_TOPIC + 4) + 4 * 1024;
/// Largest subscription response frame (the Nim node's bound).
pub const MAX_SUBSCRIBE_RESPONSE: usize = 64 * 1024;
/// Bytes a push frame may have beyond the largest message (pubsub topic and framing).
pub const FRAME_OVERHEAD: usize = 64 * 1024;
/// Longest subscription frame a service drains to answer it; longer ones close the stream.
const MAX_DRAINED: usize = 1024 * 1024;
/// Longest `status_desc` a service writes and a client keeps.
const MAX_DESC: usize = 256;
/// Request id a service answers with when it could not read the request.
pub const UNKNOWN_REQUEST_ID: &str = "N/A";

/// `FilterSubscribeRequest.FilterSubscribeType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SubscribeType {
    /// Does the service hold a subscription of this client?
    SubscriberPing = 0,
    /// Add (or refresh) criteria.
    Subscribe = 1,
    /// Remove criteria.
    Unsubscribe = 2,
    /// Remove every criterion of this client.
    UnsubscribeAll = 3,
}

/// `FilterSubscribeRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SubscribeRequest {
    /// Unique, chosen by the client, echoed in the response.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// A [`SubscribeType`].
    #[prost(enumeration = "SubscribeType", tag = "2")]
    pub filter_subscribe_type: i32,
    /// Criteria: the pubsub topic.
    #[prost(string, optional, tag = "10")]
    pub pubsub_topic: Option<String>,
    /// Criteria: content topics on that pubsub topic.
    #[prost(string, repeated, tag = "11")]
    pub content_topics: Vec<String>,
}

/// `FilterSubscribeResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SubscribeResponse {
    /// The request's id.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// 2xx on success, see [`Status`].
    #[prost(uint32, tag = "10")]
    pub status_code: u32,
    /// Why, for an error.
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
}

impl SubscribeResponse {
    /// A response with `status` and, for an error, `desc`.
    pub fn new(request_id: impl Into<String>, status: Status, desc: &str) -> Self {
        Self {
            request_id: request_id.into(),
            status_code: status.code(),
            status_desc: (status != Status::Success).then(|| desc.chars().take(MAX_DESC).collect()),
        }
    }

    /// The status.
    pub fn status(&self) -> Status {
        Status::from_code(self.status_code)
    }
}

/// `MessagePush`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MessagePush {
    /// The message.
    #[prost(message, optional, tag = "1")]
    pub waku_message: Option<WakuMessage>,
    /// The pubsub topic it was published on.
    #[prost(string, optional, tag = "2")]
    pub pubsub_topic: Option<String>,
}

/// Filter status codes (the Nim node's, see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 200: done.
    Success,
    /// 400: missing or partial criteria, too many content topics, unknown request type, a
    /// pubsub topic this service does not relay, or an unreadable request.
    BadRequest,
    /// 404: the client has no (such) subscription.
    NotFound,
    /// 429: too many requests at once.
    TooManyRequests,
    /// 503: the subscriber or criteria limit is reached.
    ServiceUnavailable,
    /// Any other code; 2xx codes other than 200 are successes too.
    Other(u32),
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            Self::Success => 200,
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::TooManyRequests => 429,
            Self::ServiceUnavailable => 503,
            Self::Other(c) => c,
        }
    }

    /// The status of a numeric code.
    pub fn from_code(code: u32) -> Self {
        match code {
            200 => Self::Success,
            400 => Self::BadRequest,
            404 => Self::NotFound,
            429 => Self::TooManyRequests,
            503 => Self::ServiceUnavailable,
            c => Self::Other(c),
        }
    }

    /// Whether the code is 2xx (section "Filter Subscribe Response").
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.code())
    }
}

/// A filter service's refusal of a request, as its client reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter request refused with status {} ({status:?}): {desc}", status.code())]
#[non_exhaustive]
pub struct Refused {
    /// The status the service answered.
    pub status: Status,
    /// Its description (at most 256 characters are kept).
    pub desc: String,
}

impl Refused {
    /// The refusal a response means, or `None` for a 2xx status.
    pub fn of(response: &SubscribeResponse) -> Option<Self> {
        let status = response.status();
        (!status.is_success()).then(|| Self {
            status,
            desc: response
                .status_desc
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(MAX_DESC)
                .collect(),
        })
    }
}

/// Filter service settings; the defaults are the Nim node's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Most clients with a subscription; the next one is refused with 503 (default 100).
    pub max_subscribers: usize,
    /// Most criteria (pubsub topic, content topic) of one client; a subscription that would
    /// exceed it is refused with 503 (default 1000).
    pub max_criteria_per_subscriber: usize,
    /// How long a subscription lasts after it was last refreshed (default 5 minutes).
    pub subscription_ttl: Duration,
    /// A subscriber whose pushes have failed for this long is dropped (default 1 minute).
    pub unreachable_after: Duration,
    /// Pushes to one subscriber not yet written; further matching messages are not pushed
    /// to it (default 16, below the 32 streams per connection a node allows by default).
    pub max_pushes_in_flight: usize,
    /// Subscription requests being read at once, over all peers; beyond it a request is
    /// answered 429 without being read (default 32).
    pub max_concurrent_requests: usize,
    /// Of those, requests of one connection being read at once (default 2), so one
    /// address holds at most this times the node's `Limits::max_connections_per_ip` (8 by
    /// default: half of the default total) however many streams and peer ids it uses;
    /// beyond it a request is answered 429 unread, as over the total.
    pub max_concurrent_requests_per_connection: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_subscribers: 100,
            max_criteria_per_subscriber: 1000,
            subscription_ttl: Duration::from_secs(5 * 60),
            unreachable_after: Duration::from_secs(60),
            max_pushes_in_flight: 16,
            max_concurrent_requests: 32,
            max_concurrent_requests_per_connection: 2,
        }
    }
}

/// Criteria: pubsub topic to content topics.
type Criteria = HashMap<String, HashSet<String>>;

/// One client's subscription at a service.
#[derive(Debug, Clone)]
struct Subscriber {
    criteria: Criteria,
    count: usize,
    refreshed: Instant,
    failing_since: Option<Instant>,
}

/// The service's subscriptions: every decision of the filter service, without I/O and
/// without a clock (`now` is an argument). Generic over the peer type so it can be tested
/// on its own.
#[derive(Debug, Clone)]
pub struct Subscriptions<P> {
    config: Config,
    subscribers: HashMap<P, Subscriber>,
}

/// A request's criteria, checked: the pubsub topic and content topics.
fn criteria(request: &SubscribeRequest) -> Result<(&str, HashSet<&str>), &'static str> {
    let Some(pubsub_topic) = request.pubsub_topic.as_deref() else {
        return Err("a pubsub topic and content topics are required");
    };
    if pubsub_topic.is_empty() || request.content_topics.is_empty() {
        return Err("a pubsub topic and content topics are required");
    }
    if request.content_topics.len() > MAX_CONTENT_TOPICS_PER_REQUEST {
        return Err("more than 100 content topics");
    }
    if request
        .content_topics
        .iter()
        .any(|t| t.is_empty() || t.len() > MAX_CONTENT_TOPIC)
    {
        return Err("an empty or over-long content topic");
    }
    Ok((
        pubsub_topic,
        request.content_topics.iter().map(String::as_str).collect(),
    ))
}

impl<P: Clone + Eq + Hash> Subscriptions<P> {
    /// No subscriptions yet.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            subscribers: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn active(&self, peer: &P, now: Instant) -> bool {
        self.subscribers.get(peer).is_some_and(|s| {
            now.saturating_duration_since(s.refreshed) <= self.config.subscription_ttl
        })
    }

    /// Drops subscriptions not refreshed within the TTL; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ttl = self.config.subscription_ttl;
        let before = self.subscribers.len();
        self.subscribers
            .retain(|_, s| now.saturating_duration_since(s.refreshed) <= ttl);
        before - self.subscribers.len()
    }

    /// Clients with an active subscription.
    pub fn len(&self, now: Instant) -> usize {
        let ttl = self.config.subscription_ttl;
        self.subscribers
            .values()
            .filter(|s| now.saturating_duration_since(s.refreshed) <= ttl)
            .count()
    }

    /// Whether nobody is subscribed.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }

    /// Answers `peer`'s request at `now`. `serves` tells whether this service relays a
    /// pubsub topic (a subscription to another is refused with 400: nothing would come).
    pub fn handle(
        &mut self,
        peer: &P,
        request: &SubscribeRequest,
        serves: impl Fn(&str) -> bool,
        now: Instant,
    ) -> SubscribeResponse {
        let id = request.request_id.clone();
        let (status, desc) = match SubscribeType::try_from(request.filter_subscribe_type) {
            Err(_) => (Status::BadRequest, "unknown request type"),
            Ok(SubscribeType::SubscriberPing) => self.ping(peer, now),
            Ok(SubscribeType::Subscribe) => self.subscribe(peer, request, serves, now),
            Ok(SubscribeType::Unsubscribe) => self.unsubscribe(peer, request, now),
            Ok(SubscribeType::UnsubscribeAll) => {
                let was = self.active(peer, now);
                self.subscribers.remove(peer);
                if was {
                    (Status::Success, "")
                } else {
                    (Status::NotFound, "no subscription")
                }
            }
        };
        SubscribeResponse::new(id, status, desc)
    }

    fn ping(&mut self, peer: &P, now: Instant) -> (Status, &'static str) {
        if !self.active(peer, now) {
            return (Status::NotFound, "no subscription");
        }
        if let Some(s) = self.subscribers.get_mut(peer) {
            s.refreshed = now;
        }
        (Status::Success, "")
    }

    fn subscribe(
        &mut self,
        peer: &P,
        request: &SubscribeRequest,
        serves: impl Fn(&str) -> bool,
        now: Instant,
    ) -> (Status, &'static str) {
        let (pubsub_topic, content_topics) = match criteria(request) {
            Ok(c) => c,
            Err(why) => return (Status::BadRequest, why),
        };
        if !serves(pubsub_topic) {
            return (
                Status::BadRequest,
                "this service does not relay that pubsub topic",
            );
        }
        if !self.active(peer, now) {
            self.subscribers.remove(peer);
            self.expire(now);
            if self.subscribers.len() >= self.config.max_subscribers {
                return (Status::ServiceUnavailable, "subscriber limit reached");
            }
        }
        let max = self.config.max_criteria_per_subscriber;
        let s = self.subscribers.entry(peer.clone()).or_insert(Subscriber {
            criteria: HashMap::new(),
            count: 0,
            refreshed: now,
            failing_since: None,
        });
        let known = s.criteria.get(pubsub_topic);
        let new = content_topics
            .iter()
            .filter(|t| !known.is_some_and(|k| k.contains(**t)))
            .count();
        if s.count + new > max {
            if s.count == 0 {
                self.subscribers.remove(peer);
            }
            return (Status::ServiceUnavailable, "criteria limit reached");
        }
        let set = s.criteria.entry(pubsub_topic.to_owned()).or_default();
        set.extend(content_topics.into_iter().map(str::to_owned));
        s.count += new;
        s.refreshed = now;
        (Status::Success, "")
    }

    fn unsubscribe(
        &mut self,
        peer: &P,
        request: &SubscribeRequest,
        now: Instant,
    ) -> (Status, &'static str) {
        let (pubsub_topic, content_topics) = match criteria(request) {
            Ok(c) => c,
            Err(why) => return (Status::BadRequest, why),
        };
        if !self.active(peer, now) {
            self.subscribers.remove(peer);
            return (Status::NotFound, "no subscription");
        }
        let Some(s) = self.subscribers.get_mut(peer) else {
            return (Status::NotFound, "no subscription");
        };
        s.refreshed = now;
        let mut removed = 0;
        if let Some(set) = s.criteria.get_mut(pubsub_topic) {
            for t in content_topics {
                removed += usize::from(set.remove(t));
            }
            if set.is_empty() {
                s.criteria.remove(pubsub_topic);
            }
        }
        s.count -= removed;
        if s.count == 0 {
            self.subscribers.remove(peer);
        }
        if removed == 0 {
            (Status::NotFound, "not subscribed to these criteria")
        } else {
            (Status::Success, "")
        }
    }

    /// The clients with an active subscription matching a message on `pubsub_topic` with
    /// `content_topic`.
    pub fn matching(&self, pubsub_topic: &str, content_topic: &str, now: Instant) -> Vec<P> {
        let ttl = self.config.subscription_ttl;
        self.subscribers
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.refreshed) <= ttl)
            .filter(|(_, s)| {
                s.criteria
                    .get(pubsub_topic)
                    .is_some_and(|set| set.contains(content_topic))
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Records the outcome of a push to `peer` at `now`; returns true if the subscriber was
    /// dropped because its pushes have failed for [`Config::unreachable_after`].
    pub fn push_outcome(&mut self, peer: &P, delivered: bool, now: Instant) -> bool {
        let Some(s) = self.subscribers.get_mut(peer) else {
            return false;
        };
        if delivered {
            s.failing_since = None;
            return false;
        }
        let since = *s.failing_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.config.unreachable_after {
            self.subscribers.remove(peer);
            return true;
        }
        false
    }
}

/// A client's subscriptions: what it asked each service for, to check pushes against.
#[derive(Debug, Clone)]
pub struct ClientSubscriptions<P> {
    peers: HashMap<P, Criteria>,
}

impl<P> Default for ClientSubscriptions<P> {
    fn default() -> Self {
        Self {
            peers: HashMap::new(),
        }
    }
}

impl<P: Clone + Eq + Hash> ClientSubscriptions<P> {
    /// Records criteria asked of `peer`; returns the content topics that were not recorded
    /// yet (to take back if the service refuses).
    pub fn add(&mut self, peer: &P, pubsub_topic: &str, content_topics: &[String]) -> Vec<String> {
        let set = self
            .peers
            .entry(peer.clone())
            .or_default()
            .entry(pubsub_topic.to_owned())
            .or_default();
        content_topics
            .iter()
            .filter(|t| set.insert((*t).clone()))
            .cloned()
            .collect()
    }

    /// Forgets criteria of `peer`.
    pub fn remove(&mut self, peer: &P, pubsub_topic: &str, content_topics: &[String]) {
        let Some(criteria) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some(set) = criteria.get_mut(pubsub_topic) {
            for t in content_topics {
                set.remove(t);
            }
            if set.is_empty() {
                criteria.remove(pubsub_topic);
            }
        }
        if criteria.is_empty() {
            self.peers.remove(peer);
        }
    }

    /// Forgets every criterion of `peer`.
    pub fn remove_peer(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// The services some criteria are held with.
    pub fn services(&self) -> impl Iterator<Item = &P> {
        self.peers.keys()
    }

    /// Whether a push from `peer` of a message on `pubsub_topic` with `content_topic`
    /// matches a subscription made with that peer.
    pub fn accepts(&self, peer: &P, pubsub_topic: &str, content_topic: &str) -> bool {
        self.peers
            .get(peer)
            .and_then(|c| c.get(pubsub_topic))
            .is_some_and(|set| set.contains(content_topic))
    }

    /// Every (peer, pubsub topic, content topics) subscribed, content topics sorted.
    pub fn all(&self) -> Vec<(P, String, Vec<String>)> {
        let mut out = Vec::new();
        for (peer, criteria) in &self.peers {
            for (topic, set) in criteria {
                let mut topics: Vec<String> = set.iter().cloned().collect();
                topics.sort();
                out.push((peer.clone(), topic.clone(), topics));
            }
        }
        out
    }
}

/// A pushed message a client accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// The service that pushed it.
    pub peer: PeerId,
    /// The shard it was published on.
    pub shard: PubsubTopic,
    /// Its deterministic hash on that shard ([`super::message_hash`]).
    pub hash: MessageHash,
    /// The message.
    pub message: WakuMessage,
}

/// The codec of `/vac/waku/filter-subscribe/2.0.0-beta1`: a service reads request frames of
/// at most [`MAX_SUBSCRIBE_REQUEST`] while a read slot is free (longer frames up to 1 MiB
/// are drained and answered 400, [`Framed::Busy`] beyond the slots); a client reads
/// responses of at most [`MAX_SUBSCRIBE_RESPONSE`].
#[derive(Debug, Clone)]
pub struct SubscribeCodec {
    slots: ReadSlots,
}

impl SubscribeCodec {
    /// A codec reading requests in `slots`.
    pub fn new(slots: ReadSlots) -> Self {
        Self { slots }
    }
}

impl libp2p::request_response::Codec for SubscribeCodec {
    type Protocol = StreamProtocol;
    type Request = Framed<SubscribeRequest>;
    type Response = SubscribeResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let Some(slot) = self.slots.try_take() else {
            return Ok(Framed::Busy);
        };
        let framed = read_service_frame(io, MAX_SUBSCRIBE_REQUEST, MAX_DRAINED, |b| {
            SubscribeRequest::decode(b).ok()
        })
        .await?;
        slot.finish();
        Ok(framed)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<SubscribeResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_SUBSCRIBE_RESPONSE).await?;
        SubscribeResponse::decode(body.as_slice())
            .map_err(|_| invalid("malformed filter subscribe response"))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Framed::Message(r) => write_frame(io, &r.encode_to_vec()).await,
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only a request can be sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SubscribeResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode_to_vec()).await
    }
}

/// The codec of `/vac/waku/filter-push/2.0.0-beta1` for a sender that writes one
/// [`MessagePush`] frame per stream, with no answer (the "response" is read as nothing).
/// Reading with it takes one push per stream, while a Nim service writes many on one: the
/// node reads pushes with a reader of every frame instead (`node/waku_filter_push.rs`);
/// reading here (push frames of at most the message limit plus [`FRAME_OVERHEAD`] while a
/// read slot is free) is kept for tests and peers that send one push per stream.
#[derive(Debug, Clone)]
pub struct PushCodec {
    max_push: usize,
    slots: ReadSlots,
}

impl PushCodec {
    /// A codec for a relay limit of `max_message_size` bytes, reading pushes in `slots`.
    pub fn new(max_message_size: usize, slots: ReadSlots) -> Self {
        Self {
            max_push: max_message_size.saturating_add(FRAME_OVERHEAD),
            slots,
        }
    }
}

impl libp2p::request_response::Codec for PushCodec {
    type Protocol = StreamProtocol;
    type Request = MessagePush;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<MessagePush>
    where
        T: AsyncRead + Unpin + Send,
    {
        let Some(slot) = self.slots.try_take() else {
            return Err(io::Error::other("too many pushes being read"));
        };
        let body = read_frame(io, self.max_push).await?;
        let push = MessagePush::decode(body.as_slice()).map_err(|_| invalid("malformed push"))?;
        slot.finish();
        Ok(push)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        // A client does not answer a push (section "Message Push").
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: MessagePush,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.encode_to_vec()).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD: &str = "/waku/2/rs/3/0";

    fn req(kind: SubscribeType, topic: Option<&str>, topics: &[&str]) -> SubscribeRequest {
        SubscribeRequest {
            request_id: "r".into(),
            filter_subscribe_type: kind as i32,
            pubsub_topic: topic.map(str::to_owned),
            content_topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn small() -> Config {
        Config {
            max_subscribers: 2,
            max_criteria_per_subscriber: 3,
            ..Config::default()
        }
    }

    fn status(s: &mut Subscriptions<u8>, peer: u8, r: &SubscribeRequest, now: Instant) -> Status {
        s.handle(&peer, r, |t| t == SHARD, now).status()
    }

    #[test]
    fn subscribe_match_unsubscribe_and_the_codes_of_each_request() {
        use SubscribeType::*;
        let now = Instant::now();
        let mut s = Subscriptions::new(small());
        assert_eq!(
            status(&mut s, 1, &req(SubscriberPing, None, &[]), now),
            Status::NotFound
        );
        assert_eq!(
            status(&mut s, 1, &req(UnsubscribeAll, None, &[]), now),
            Status::NotFound
        );
        assert_eq!(
            status(
                &mut s,
                1,
                &req(Subscribe, Some(SHARD), &["/a/1/x/p", "/a/1/y/p"]),
                now
            ),
            Status::Success
        );
        assert_eq!(s.matching(SHARD, "/a/1/x/p", now), vec![1]);
        assert!(s.matching(SHARD, "/a/1/z/p", now).is_empty());
        assert!(s.matching("/waku/2/rs/3/1", "/a/1/x/p", now).is_empty());
        assert_eq!(
            status(&mut s, 1, &req(SubscriberPing, None, &[]), now),
            Status::Success
        );
        // Criteria missing or partial, too many topics, a topic not relayed, a bad type.
        for bad in [
            req(Subscribe, None, &["/a/1/x/p"]),
            req(Subscribe, Some(SHARD), &[]),
            req(Subscribe, Some(""), &["/a/1/x/p"]),
            req(Subscribe, Some(SHARD), &[""]),
            req(Subscribe, Some("/waku/2/rs/3/1"), &["/a/1/x/p"]),
            req(Unsubscribe, None, &["/a/1/x/p"]),
        ] {
            assert_eq!(status(&mut s, 1, &bad, now), Status::BadRequest, "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_CONTENT_TOPICS_PER_REQUEST)
            .map(|i| format!("/a/1/{i}/p"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            status(&mut s, 1, &req(Subscribe, Some(SHARD), &many), now),
            Status::BadRequest
        );
        let mut unknown = req(Subscribe, Some(SHARD), &["/a/1/x/p"]);
        unknown.filter_subscribe_type = 7;
        assert_eq!(status(&mut s, 1, &unknown, now), Status::BadRequest);

        assert_eq!(
            status(
                &mut s,
                1,
                &req(Unsubscribe, Some(SHARD), &["/a/1/q/p"]),
                now
            ),
            Status::NotFound,
            "not subscribed to that"
        );
        assert_eq!(
            status(
                &mut s,
                1,
                &req(Unsubscribe, Some(SHARD), &["/a/1/x/p"]),
                now
            ),
            Status::Success
        );
        assert!(s.matching(SHARD, "/a/1/x/p", now).is_empty());
        assert_eq!(s.matching(SHARD, "/a/1/y/p", now), vec![1]);
        assert_eq!(
            status(&mut s, 1, &req(UnsubscribeAll, None, &[]), now),
            Status::Success
        );
        assert!(s.is_empty(now));
        assert_eq!(
            status(&mut s, 1, &req(SubscriberPing, None, &[]), now),
            Status::NotFound
        );
    }

    #[test]
    fn subscriber_and_criteria_limits_hold() {
        use SubscribeType::*;
        let now = Instant::now();
        let mut s = Subscriptions::new(small());
        let sub = |topics: &[&str]| req(Subscribe, Some(SHARD), topics);
        assert_eq!(status(&mut s, 1, &sub(&["/a/1/x/p"]), now), Status::Success);
        assert_eq!(status(&mut s, 2, &sub(&["/a/1/x/p"]), now), Status::Success);
        assert_eq!(
            status(&mut s, 3, &sub(&["/a/1/x/p"]), now),
            Status::ServiceUnavailable
        );
        assert_eq!(s.matching(SHARD, "/a/1/x/p", now).len(), 2);
        // Subscriber 1 may grow to 3 criteria; re-subscribing known ones costs nothing.
        assert_eq!(
            status(&mut s, 1, &sub(&["/a/1/x/p", "/a/1/y/p", "/a/1/z/p"]), now),
            Status::Success
        );
        assert_eq!(
            status(&mut s, 1, &sub(&["/a/1/x/p", "/a/1/y/p"]), now),
            Status::Success
        );
        assert_eq!(
            status(&mut s, 1, &sub(&["/a/1/w/p"]), now),
            Status::ServiceUnavailable
        );
        // A newcomer asking for too many criteria at once takes no place.
        assert_eq!(
            status(&mut s, 2, &req(UnsubscribeAll, None, &[]), now),
            Status::Success
        );
        assert_eq!(
            status(
                &mut s,
                3,
                &sub(&["/a/1/1/p", "/a/1/2/p", "/a/1/3/p", "/a/1/4/p"]),
                now
            ),
            Status::ServiceUnavailable
        );
        assert_eq!(s.len(now), 1);
        assert_eq!(status(&mut s, 3, &sub(&["/a/1/1/p"]), now), Status::Success);
    }

    #[test]
    fn subscriptions_expire_unless_refreshed_and_unreachable_subscribers_are_dropped() {
        use SubscribeType::*;
        let t0 = Instant::now();
        let mut s = Subscriptions::new(small());
        let ttl = s.config().subscription_ttl;
        let sub = req(Subscribe, Some(SHARD), &["/a/1/x/p"]);
        assert_eq!(status(&mut s, 1, &sub, t0), Status::Success);
        assert_eq!(status(&mut s, 2, &sub, t0), Status::Success);
        // A ping refreshes 1; 2 expires.
        let t1 = t0 + ttl / 2;
        assert_eq!(
            status(&mut s, 1, &req(SubscriberPing, None, &[]), t1),
            Status::Success
        );
        let t2 = t0 + ttl + Duration::from_secs(1);
        assert_eq!(s.matching(SHARD, "/a/1/x/p", t2), vec![1]);
        assert_eq!(
            status(&mut s, 2, &req(SubscriberPing, None, &[]), t2),
            Status::NotFound
        );
        // Expiry drops it, and its place is free again.
        assert_eq!(s.expire(t2), 1);
        assert_eq!(status(&mut s, 3, &sub, t2), Status::Success);
        assert_eq!(s.len(t2), 2);

        // Pushes failing for a minute drop the subscriber; a success in between resets.
        let unreachable = s.config().unreachable_after;
        assert!(!s.push_outcome(&1, false, t2));
        assert!(!s.push_outcome(&1, true, t2 + unreachable));
        assert!(!s.push_outcome(&1, false, t2 + unreachable));
        assert!(!s.push_outcome(&1, false, t2 + unreachable + unreachable / 2));
        assert!(s.push_outcome(&1, false, t2 + unreachable * 2));
        assert!(s.matching(SHARD, "/a/1/x/p", t2 + unreachable * 2) == vec![3]);
    }

    #[test]
    fn a_client_accepts_only_what_it_subscribed_to_with_that_peer() {
        let mut c = ClientSubscriptions::default();
        let x = vec!["/a/1/x/p".to_owned()];
        assert_eq!(c.add(&1u8, SHARD, &x), x);
        assert!(c.add(&1u8, SHARD, &x).is_empty(), "already recorded");
        assert!(c.accepts(&1, SHARD, "/a/1/x/p"));
        assert!(!c.accepts(&2, SHARD, "/a/1/x/p"), "another peer");
        assert!(!c.accepts(&1, SHARD, "/a/1/y/p"), "another content topic");
        assert!(
            !c.accepts(&1, "/waku/2/rs/3/1", "/a/1/x/p"),
            "another shard"
        );
        c.remove(&1, SHARD, &x);
        assert!(!c.accepts(&1, SHARD, "/a/1/x/p"));
        assert!(c.all().is_empty());
    }

    #[test]
    fn the_push_codec_writes_one_frame_and_expects_no_answer() {
        use libp2p::request_response::Codec as _;
        let p = StreamProtocol::new(PUSH_PROTOCOL);
        futures::executor::block_on(async {
            let slots = ReadSlots::new(Default::default(), Default::default(), 1);
            let mut codec = PushCodec::new(100, slots.clone());
            let push = MessagePush {
                waku_message: Some(WakuMessage::new("/a/1/b/c", vec![1])),
                pubsub_topic: Some(SHARD.into()),
            };
            let mut buf = Vec::new();
            codec
                .write_request(&p, &mut buf, push.clone())
                .await
                .unwrap();
            let mut r = futures::io::Cursor::new(buf);
            assert_eq!(codec.read_request(&p, &mut r).await.unwrap(), push);
            let mut empty = futures::io::Cursor::new(Vec::new());
            codec.read_response(&p, &mut empty).await.unwrap();
            let mut big = Vec::new();
            write_frame(&mut big, &vec![0; 100 + FRAME_OVERHEAD + 1])
                .await
                .unwrap();
            let mut r = futures::io::Cursor::new(big);
            assert!(codec.read_request(&p, &mut r).await.is_err());
            assert_eq!((slots.reading(), slots.unreadable()), (0, 1));
        });
    }
}

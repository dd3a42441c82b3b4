//! Waku lightpush v3, WAKU-LIGHTPUSH (`docs/messaging/core/raw/lightpush.md` in
//! logos-co/logos-lips, protocol id `/vac/waku/lightpush/3.0.0`): a light client hands one
//! `WakuMessage` to a service node, which publishes it on relay and answers with a status.
//!
//! - Payloads (section "Payloads"): [`LightPushRequest`] and [`LightPushResponse`], each one
//!   length-prefixed protobuf frame ([`super::framing`]).
//! - Relaying (section "Message Relaying"): the message goes out on the request's
//!   `pubsub_topic`, or, when the client gives none, on the shard of its content topic by
//!   autosharding (WAKU2-RELAY-SHARDING, [`ContentTopic::pubsub_topic`]). On success the
//!   response carries `relay_peer_count`, here the number of relay peers gossipsub knows
//!   on that shard when the message is published (flood publishing sends it to each).
//! - Status codes: the table of section "Examples of possible error codes", [`Status`].
//!   Where the Nim node and js-waku extend it differently the spec wins: a message that
//!   fails validation is 400 (they send 420 `INVALID_MESSAGE`, not in the table) and "no
//!   relay peers" is 503 (they send 505 `NO_PEERS_TO_RELAY` and use 503 for "service
//!   unavailable"). Their clients treat every non-200 code as a failure, so either reads
//!   ours correctly. Codes we do not know are kept as [`Status::Other`].
//! - Checks, in [`check`], the decisions of the service without any I/O: a message present
//!   and well-formed (14/WAKU2-MESSAGE, `meta` at most 64 bytes), a non-empty content topic,
//!   an encoded size within the relay limit (150 KiB by default, 64/WAKU2-NETWORK "Message
//!   size"; 413), a non-empty pubsub topic (400, as the Nim node) that is a shard of the
//!   node's cluster (421), or a content topic that autoshards (400).
//! - Bounds, ours: a request frame of at most the message limit plus [`FRAME_OVERHEAD`]
//!   (64 KiB, the Nim node's safety margin for protocol overhead); a frame announced longer
//!   but at most [`MAX_DRAINED`] is read and discarded so the client still gets 413; longer
//!   than that, or garbage, and the stream is closed (garbage within the bound gets 400). A
//!   response frame read by a client of at most [`MAX_RESPONSE`]. Streams time out and their
//!   number per connection is bounded by the node's request-response settings; requests
//!   being read at once, over all peers, by [`Config::max_concurrent_requests`] (beyond it
//!   a request is answered 429, the spec's "DOS protection" code, without being read), so
//!   request frames hold at most that many times the frame bound in memory; and per
//!   connection by [`Config::max_concurrent_requests_per_connection`], so one peer that
//!   opens streams and stalls in them cannot take every read.

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use prost::Message as _;

use super::framing::{Framed, ReadSlots, invalid, read_frame, read_service_frame, write_frame};
use super::message::WakuMessage;
use super::relay;
use super::sharding::{ContentTopic, PubsubTopic};

/// Protocol id.
pub const PROTOCOL: &str = "/vac/waku/lightpush/3.0.0";

/// Bytes a request frame may have beyond the largest message: request id, pubsub topic and
/// protobuf framing (64 KiB, the margin the Nim node adds to its message limit).
pub const FRAME_OVERHEAD: usize = 64 * 1024;

/// Longest request frame a service reads and discards to answer 413 (1 MiB, the most
/// js-waku ever sends); a longer one closes the stream.
pub const MAX_DRAINED: usize = 1024 * 1024;

/// Largest response frame a client reads (responses are a status and a short text).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Longest `status_desc` a service writes.
const MAX_DESC: usize = 256;

/// Request id a service answers with when the request could not be read (as the Nim node).
pub const UNKNOWN_REQUEST_ID: &str = "N/A";

/// `LightPushRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LightPushRequest {
    /// Unique, chosen by the client, echoed in the response.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The shard to publish on; absent: the shard of the content topic (autosharding).
    #[prost(string, optional, tag = "20")]
    pub pubsub_topic: Option<String>,
    /// The message to relay.
    #[prost(message, optional, tag = "21")]
    pub message: Option<WakuMessage>,
}

/// `LightPushResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LightPushResponse {
    /// The request's id.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// 200 on success, see [`Status`].
    #[prost(uint32, tag = "10")]
    pub status_code: u32,
    /// Why, for an error.
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
    /// On success, the relay peers the message was sent to.
    #[prost(uint32, optional, tag = "12")]
    pub relay_peer_count: Option<u32>,
}

impl LightPushResponse {
    /// An error response (no peer count).
    pub fn error(request_id: impl Into<String>, status: Status, desc: &str) -> Self {
        Self {
            request_id: request_id.into(),
            status_code: status.code(),
            status_desc: Some(desc.chars().take(MAX_DESC).collect()),
            relay_peer_count: None,
        }
    }

    /// A success response: the message went to `relay_peer_count` relay peers.
    pub fn success(request_id: impl Into<String>, relay_peer_count: u32) -> Self {
        Self {
            request_id: request_id.into(),
            status_code: Status::Success.code(),
            status_desc: None,
            relay_peer_count: Some(relay_peer_count),
        }
    }

    /// The status.
    pub fn status(&self) -> Status {
        Status::from_code(self.status_code)
    }
}

/// The status codes of the spec's table (section "Examples of possible error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 200 `SUCCESS`: relayed; the response holds the relay peer count.
    Success,
    /// 400 `BAD_REQUEST`: wrong request payload.
    BadRequest,
    /// 413 `PAYLOAD_TOO_LARGE`: the message exceeds the service's size limit.
    PayloadTooLarge,
    /// 421 `UNSUPPORTED_PUBSUB_TOPIC`: the service cannot publish on that pubsub topic.
    UnsupportedPubsubTopic,
    /// 429 `TOO_MANY_REQUESTS`: refused by DOS protection.
    TooManyRequests,
    /// 500 `INTERNAL_SERVER_ERROR`.
    InternalServerError,
    /// 503 `NO_PEERS_TO_RELAY`: the service has no relay peers on the shard.
    NoPeersToRelay,
    /// Any other code (the spec's list "is not complete").
    Other(u32),
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            Self::Success => 200,
            Self::BadRequest => 400,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedPubsubTopic => 421,
            Self::TooManyRequests => 429,
            Self::InternalServerError => 500,
            Self::NoPeersToRelay => 503,
            Self::Other(c) => c,
        }
    }

    /// The status of a numeric code.
    pub fn from_code(code: u32) -> Self {
        match code {
            200 => Self::Success,
            400 => Self::BadRequest,
            413 => Self::PayloadTooLarge,
            421 => Self::UnsupportedPubsubTopic,
            429 => Self::TooManyRequests,
            500 => Self::InternalServerError,
            503 => Self::NoPeersToRelay,
            c => Self::Other(c),
        }
    }
}

/// A lightpush service's refusal, as its client reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lightpush refused with status {} ({status:?}): {desc}", status.code())]
#[non_exhaustive]
pub struct Refused {
    /// The status the service answered.
    pub status: Status,
    /// Its description (at most 256 characters are kept).
    pub desc: String,
}

impl Refused {
    /// The refusal a response means, or `None` for success with at least one relay peer.
    /// A success naming no relay peers is refused as [`Status::NoPeersToRelay`], as the
    /// Nim client does: the message reached nobody.
    pub fn of(response: &LightPushResponse) -> Option<Self> {
        let status = response.status();
        let desc: String = response
            .status_desc
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(MAX_DESC)
            .collect();
        match status {
            Status::Success if response.relay_peer_count.unwrap_or(0) > 0 => None,
            Status::Success => Some(Self {
                status: Status::NoPeersToRelay,
                desc: "success with no relay peers".into(),
            }),
            status => Some(Self { status, desc }),
        }
    }
}

/// Lightpush service settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Requests being read at once, over all peers; a request beyond it is answered 429
    /// without being read (default 32: with 150 KiB messages, at most about 7 MiB of
    /// request frames).
    pub max_concurrent_requests: usize,
    /// Of those, requests of one connection being read at once (default 2; a light
    /// client pushes a segmented payload one segment after another), so one address holds
    /// at most this times the node's `Limits::max_connections_per_ip` (8 by default: half
    /// of the default total) however many streams and peer ids it uses; beyond it a
    /// request is answered 429 unread, as over the total.
    pub max_concurrent_requests_per_connection: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_requests: 32,
            max_concurrent_requests_per_connection: 2,
        }
    }
}

/// A service's refusal of a request: status and description.
pub type Rejection = (Status, String);

/// The service's checks of a request (see the module documentation): the shard to publish
/// on and the message, or the status to answer.
///
/// # Errors
///
/// The status and description to answer with.
pub fn check(
    relay: &relay::Config,
    request: &LightPushRequest,
) -> Result<(PubsubTopic, WakuMessage), Rejection> {
    let bad = |s: Status, d: &str| (s, d.to_owned());
    let Some(message) = &request.message else {
        return Err(bad(Status::BadRequest, "no message"));
    };
    if let Err(e) = message.check() {
        return Err(bad(Status::BadRequest, &e.to_string()));
    }
    let len = message.encoded_len();
    if len > relay.max_message_size {
        return Err((
            Status::PayloadTooLarge,
            format!(
                "message of {len} bytes exceeds the limit of {} bytes",
                relay.max_message_size
            ),
        ));
    }
    if message.content_topic.is_empty() {
        return Err(bad(Status::BadRequest, "empty content topic"));
    }
    let shard = match request.pubsub_topic.as_deref() {
        Some(t) if t.trim().is_empty() => {
            return Err(bad(Status::BadRequest, "pubsub topic must not be empty"));
        }
        Some(t) => PubsubTopic::parse(t)
            .filter(|s| s.cluster == relay.cluster)
            .ok_or_else(|| {
                bad(
                    Status::UnsupportedPubsubTopic,
                    &format!("not a shard of cluster {}", relay.cluster),
                )
            })?,
        None => ContentTopic::parse(&message.content_topic)
            .and_then(|c| c.pubsub_topic(relay.cluster, relay.shard_count))
            .ok_or_else(|| {
                bad(
                    Status::BadRequest,
                    "no pubsub topic and the content topic cannot be autosharded",
                )
            })?,
    };
    Ok((shard, message.clone()))
}

/// The request-response codec of lightpush. A service reads a request frame of at most
/// `max_message_size` + [`FRAME_OVERHEAD`] bytes (longer ones up to [`MAX_DRAINED`] are
/// drained and reported as [`Framed::TooLarge`]), while a slot of its [`ReadSlots`] is
/// free ([`Framed::Busy`] otherwise); a client reads a response of at most
/// [`MAX_RESPONSE`].
#[derive(Debug, Clone)]
pub struct Codec {
    max_request: usize,
    slots: ReadSlots,
}

impl Codec {
    /// A codec for a relay limit of `max_message_size` bytes, reading requests in `slots`.
    pub fn new(max_message_size: usize, slots: ReadSlots) -> Self {
        Self {
            max_request: max_message_size.saturating_add(FRAME_OVERHEAD),
            slots,
        }
    }
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Framed<LightPushRequest>;
    type Response = LightPushResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let Some(slot) = self.slots.try_take() else {
            return Ok(Framed::Busy);
        };
        let framed = read_service_frame(io, self.max_request, MAX_DRAINED, |b| {
            LightPushRequest::decode(b).ok()
        })
        .await?;
        slot.finish();
        Ok(framed)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<LightPushResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_RESPONSE).await?;
        LightPushResponse::decode(body.as_slice())
            .map_err(|_| invalid("malformed lightpush response"))
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
        res: LightPushResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode_to_vec()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(topic: Option<&str>, m: WakuMessage) -> LightPushRequest {
        LightPushRequest {
            request_id: "1".into(),
            pubsub_topic: topic.map(str::to_owned),
            message: Some(m),
        }
    }

    #[test]
    fn check_derives_or_checks_the_shard_and_refuses_with_the_spec_codes() {
        let c = relay::Config::new(3);
        let m = WakuMessage::new("/myapp/1/chat/proto", vec![1; 10]);
        // "myapp" version 1 in 8 shards is shard 0 (the spec's example).
        let (shard, got) = check(&c, &request(None, m.clone())).unwrap();
        assert_eq!((shard.cluster, shard.shard, &got), (3, 0, &m));
        let (shard, _) = check(&c, &request(Some("/waku/2/rs/3/5"), m.clone())).unwrap();
        assert_eq!(shard.shard, 5);

        let status = |r: &LightPushRequest| check(&c, r).unwrap_err().0;
        assert_eq!(
            status(&request(Some("/waku/2/rs/4/0"), m.clone())),
            Status::UnsupportedPubsubTopic
        );
        assert_eq!(
            status(&request(Some("/waku/2/default-waku/proto"), m.clone())),
            Status::UnsupportedPubsubTopic
        );
        assert_eq!(status(&request(Some(" "), m.clone())), Status::BadRequest);
        let unsharded = WakuMessage::new("chat", vec![1]);
        assert_eq!(status(&request(None, unsharded)), Status::BadRequest);
        let no_topic = WakuMessage::new("", vec![1]);
        assert_eq!(
            status(&request(Some("/waku/2/rs/3/0"), no_topic)),
            Status::BadRequest
        );
        let long_meta = m.clone().with_meta(vec![0; 65]);
        assert_eq!(status(&request(None, long_meta)), Status::BadRequest);
        let big = WakuMessage::new(
            "/myapp/1/chat/proto",
            vec![0; relay::DEFAULT_MAX_MESSAGE_SIZE],
        );
        assert_eq!(status(&request(None, big)), Status::PayloadTooLarge);
        let mut none = request(None, m);
        none.message = None;
        assert_eq!(status(&none), Status::BadRequest);
    }

    #[test]
    fn statuses_round_trip_and_a_success_without_peers_is_refused() {
        for code in [200, 400, 413, 421, 429, 500, 503, 505, 0] {
            assert_eq!(Status::from_code(code).code(), code);
        }
        assert_eq!(Status::from_code(505), Status::Other(505));
        assert_eq!(Refused::of(&LightPushResponse::success("x", 2)), None);
        assert_eq!(
            Refused::of(&LightPushResponse::success("x", 0)).map(|r| r.status),
            Some(Status::NoPeersToRelay)
        );
        let r = Refused::of(&LightPushResponse::error(
            "x",
            Status::PayloadTooLarge,
            "big",
        ));
        assert_eq!(
            r,
            Some(Refused {
                status: Status::PayloadTooLarge,
                desc: "big".into()
            })
        );
    }

    #[test]
    fn the_codec_answers_oversized_and_garbage_frames_and_drops_huge_ones() {
        use libp2p::request_response::Codec as _;
        let p = StreamProtocol::new(PROTOCOL);
        futures::executor::block_on(async {
            let slots = ReadSlots::new(Default::default(), Default::default(), 1);
            let mut codec = Codec::new(1000, slots.clone());
            let req = request(None, WakuMessage::new("/a/1/b/c", vec![1; 10]));
            let mut buf = Vec::new();
            codec
                .write_request(&p, &mut buf, Framed::Message(req.clone()))
                .await
                .unwrap();
            let mut r = futures::io::Cursor::new(buf);
            assert_eq!(
                codec.read_request(&p, &mut r).await.unwrap(),
                Framed::Message(req)
            );
            let mut big = Vec::new();
            write_frame(&mut big, &vec![0; 1000 + FRAME_OVERHEAD + 1])
                .await
                .unwrap();
            let mut r = futures::io::Cursor::new(big);
            assert_eq!(
                codec.read_request(&p, &mut r).await.unwrap(),
                Framed::TooLarge(1000 + FRAME_OVERHEAD + 1)
            );
            let mut r = futures::io::Cursor::new(vec![3, 0xff, 0xff, 0xff]);
            assert_eq!(
                codec.read_request(&p, &mut r).await.unwrap(),
                Framed::Malformed
            );
            let mut huge = Vec::new();
            prost::encoding::encode_varint(MAX_DRAINED as u64 + 1, &mut huge);
            let mut r = futures::io::Cursor::new(huge);
            assert!(codec.read_request(&p, &mut r).await.is_err());
            assert_eq!(slots.unreadable(), 1, "only the huge frame was not read");
            // Every slot taken: busy without reading; the slot is back after each read.
            let taken = slots.try_take().unwrap();
            let mut r = futures::io::Cursor::new(vec![3, 0xff, 0xff, 0xff]);
            assert_eq!(codec.read_request(&p, &mut r).await.unwrap(), Framed::Busy);
            assert_eq!(r.position(), 0, "nothing read");
            drop(taken);
            assert_eq!(slots.reading(), 0);
            let mut r = futures::io::Cursor::new(vec![0x80, 0x80, 0x08]);
            assert!(codec.read_response(&p, &mut r).await.is_err(), "128 KiB");
        });
    }
}

//! The Waku message envelope and its deterministic hash, 14/WAKU2-MESSAGE
//! (`docs/messaging/core/stable/14/message.md` in logos-co/logos-lips).
//!
//! Wire format (section "Wire Format", proto3):
//!
//! ```protobuf
//! message WakuMessage {
//!   bytes payload = 1;
//!   string content_topic = 2;
//!   optional uint32 version = 3;
//!   optional sint64 timestamp = 10;
//!   optional bytes meta = 11;
//!   optional bytes rate_limit_proof = 21;
//!   optional bool ephemeral = 31;
//! }
//! ```
//!
//! Hash (section "Deterministic message hashing"):
//! `sha256(pubsub_topic || payload || content_topic || meta || timestamp)`, the timestamp as
//! 8 bytes big-endian. An absent `meta` contributes nothing. For an absent (or zero)
//! timestamp the implementations differ: the Nim node always appends the 8 bytes (zero when
//! absent), js-waku (`@waku/message-hash`) appends nothing. [`message_hash`] follows the Nim
//! node, which is what stores on the network index by; [`message_hash_js`] is js-waku's
//! variant, kept so the difference is tested and a store can also answer a js client that
//! asks by its own hash of a message without a timestamp.

use prost::Message as _;
use sha2::{Digest, Sha256};

/// Largest `meta` field the spec allows (section "Message Attributes").
pub const MAX_META: usize = 64;

/// A Waku message as it travels in relay, store, lightpush and filter.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct WakuMessage {
    /// The application payload.
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    /// The content topic, `/{application}/{version}/{name}/{encoding}` (see
    /// [`ContentTopic`](super::sharding::ContentTopic)).
    #[prost(string, tag = "2")]
    pub content_topic: String,
    /// Payload encryption version (0 or absent: none at the Waku layer).
    #[prost(uint32, optional, tag = "3")]
    pub version: Option<u32>,
    /// Sender's time, Unix nanoseconds.
    #[prost(sint64, optional, tag = "10")]
    pub timestamp: Option<i64>,
    /// Application metadata, at most [`MAX_META`] bytes.
    #[prost(bytes = "vec", optional, tag = "11")]
    pub meta: Option<Vec<u8>>,
    /// RLN proof (17/WAKU2-RLN-RELAY); carried, not checked here.
    #[prost(bytes = "vec", optional, tag = "21")]
    pub rate_limit_proof: Option<Vec<u8>>,
    /// A message stores should not keep.
    #[prost(bool, optional, tag = "31")]
    pub ephemeral: Option<bool>,
}

/// Why bytes are not an acceptable [`WakuMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Not a well-formed protobuf `WakuMessage`.
    #[error("malformed WakuMessage")]
    Malformed,
    /// `meta` is longer than [`MAX_META`] bytes.
    #[error("meta field of {0} bytes exceeds {MAX_META}")]
    MetaTooLong(usize),
}

impl WakuMessage {
    /// A message with `payload` on `content_topic` and nothing else set.
    pub fn new(content_topic: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            payload,
            content_topic: content_topic.into(),
            ..Self::default()
        }
    }

    /// Sets the timestamp (Unix nanoseconds).
    pub fn with_timestamp(mut self, nanos: i64) -> Self {
        self.timestamp = Some(nanos);
        self
    }

    /// Sets the `meta` field.
    pub fn with_meta(mut self, meta: Vec<u8>) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Marks the message ephemeral (stores do not keep it).
    pub fn with_ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = Some(ephemeral);
        self
    }

    /// Whether the message is marked ephemeral.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral == Some(true)
    }

    /// The protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes and checks the spec's limits. Callers bound `bytes` before (gossip and
    /// request frames are size-limited), so decoding allocates at most that much.
    ///
    /// # Errors
    ///
    /// [`MessageError::Malformed`] if it is not a `WakuMessage`,
    /// [`MessageError::MetaTooLong`] for a `meta` over [`MAX_META`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        let m = Self::decode(bytes).map_err(|_| MessageError::Malformed)?;
        m.check()?;
        Ok(m)
    }

    /// Checks the spec's limits on a decoded message.
    ///
    /// # Errors
    ///
    /// [`MessageError::MetaTooLong`] for a `meta` over [`MAX_META`] bytes.
    pub fn check(&self) -> Result<(), MessageError> {
        match &self.meta {
            Some(meta) if meta.len() > MAX_META => Err(MessageError::MetaTooLong(meta.len())),
            _ => Ok(()),
        }
    }
}

/// A deterministic message hash (14/WAKU2-MESSAGE), the key of store queries by hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageHash(pub [u8; 32]);

impl MessageHash {
    /// The hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for MessageHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageHash(0x")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

fn hash_with(pubsub_topic: &str, m: &WakuMessage, timestamp: Option<i64>) -> MessageHash {
    let mut h = Sha256::new();
    h.update(pubsub_topic.as_bytes());
    h.update(&m.payload);
    h.update(m.content_topic.as_bytes());
    if let Some(meta) = &m.meta {
        h.update(meta);
    }
    if let Some(t) = timestamp {
        h.update(t.to_be_bytes());
    }
    MessageHash(h.finalize().into())
}

/// The deterministic hash of `m` published on `pubsub_topic`, as the Nim node computes it
/// (an absent timestamp hashes as 0).
pub fn message_hash(pubsub_topic: &str, m: &WakuMessage) -> MessageHash {
    hash_with(pubsub_topic, m, Some(m.timestamp.unwrap_or(0)))
}

/// js-waku's variant of [`message_hash`]: the timestamp bytes are left out when the
/// timestamp is absent or 0. Equal to [`message_hash`] for every other message.
pub fn message_hash_js(pubsub_topic: &str, m: &WakuMessage) -> MessageHash {
    hash_with(pubsub_topic, m, m.timestamp.filter(|t| *t != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_timestamp_hashes_as_zero_for_nim_and_not_at_all_for_js() {
        let topic = "/waku/2/rs/1/0";
        let m = WakuMessage::new("/app/1/chat/proto", b"hi".to_vec());
        let mut nim = Sha256::new();
        nim.update(topic);
        nim.update(b"hi");
        nim.update("/app/1/chat/proto");
        let js = nim.clone();
        nim.update([0u8; 8]);
        let nim: [u8; 32] = nim.finalize().into();
        let js: [u8; 32] = js.finalize().into();
        assert_eq!(message_hash(topic, &m).0, nim);
        assert_eq!(message_hash_js(topic, &m).0, js);
        assert_eq!(message_hash(topic, &m.clone().with_timestamp(0)).0, nim);
        assert_eq!(message_hash_js(topic, &m.clone().with_timestamp(0)).0, js);
        assert_ne!(nim, js);
    }

    #[test]
    fn wire_encoding_matches_the_proto_and_limits_are_checked() {
        let m = WakuMessage::new("/a/1/b/c", vec![7])
            .with_timestamp(-1)
            .with_meta(vec![1, 2])
            .with_ephemeral(true);
        // Field 1 bytes, field 2 string, field 10 sint64 (zigzag: -1 -> 1), field 11 bytes,
        // field 31 bool (tag 31 << 3 = 248 -> varint f8 01).
        let want = [
            &[0x0a, 1, 7][..],
            &[0x12, 8],
            b"/a/1/b/c",
            &[0x50, 1],
            &[0x5a, 2, 1, 2],
            &[0xf8, 0x01, 1],
        ]
        .concat();
        assert_eq!(m.to_bytes(), want);
        assert!(m.is_ephemeral());
        let long = m.clone().with_meta(vec![0; 65]);
        assert_eq!(
            WakuMessage::from_bytes(&long.to_bytes()),
            Err(MessageError::MetaTooLong(65))
        );
        assert_eq!(
            WakuMessage::from_bytes(&[0x0a, 5, 1]),
            Err(MessageError::Malformed)
        );
        assert_eq!(
            WakuMessage::from_bytes(&[0xff]),
            Err(MessageError::Malformed)
        );
    }
}

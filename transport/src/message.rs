//! Topics, message ids, inbound messages and the gossip envelope.
//!
//! Nothing here depends on libp2p types, so an in-process simulated network can reuse these
//! types behind the same interface.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Prefix of every topic name. The suffix is the hex SHA-256 of the group id (see
/// [`Topic::from_group_id`]).
const TOPIC_PREFIX: &str = "/pqmls/group/1/";

/// Domain separator for hashing a group id into a topic name.
const TOPIC_DOMAIN: &[u8] = b"pqmls-transport topic v1";

/// Domain separator for content-hash message ids.
const MESSAGE_ID_DOMAIN: &[u8] = b"pqmls-transport message-id v1";

/// Version byte that starts every gossip envelope.
pub(crate) const ENVELOPE_VERSION: u8 = 1;

/// A gossip topic. Its name is derived from a hash of the application's group id, so the
/// group id itself never appears on the wire.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// The topic of a group: `/pqmls/group/1/` followed by the hex SHA-256 of a domain
    /// separator and `group_id`.
    pub fn from_group_id(group_id: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(TOPIC_DOMAIN);
        h.update((group_id.len() as u64).to_be_bytes());
        h.update(group_id);
        let digest = h.finalize();
        let mut name = String::with_capacity(TOPIC_PREFIX.len() + 64);
        name.push_str(TOPIC_PREFIX);
        push_hex(&mut name, &digest);
        Topic(name)
    }

    /// Parses a topic name as produced by [`Topic::from_group_id`]; `None` for any other string.
    /// Used to reject gossip and history requests for names this crate never produces.
    pub fn parse(name: &str) -> Option<Self> {
        let suffix = name.strip_prefix(TOPIC_PREFIX)?;
        let ok = suffix.len() == 64
            && suffix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Topic(name.to_owned()))
    }

    /// The topic name as used on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message id: the SHA-256 of the topic name and the payload. Identical payloads on one
/// topic have the same id, which is how duplicates are recognised everywhere (gossip,
/// inbound stream, store).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    /// Computes the content-hash id of `data` published on `topic`.
    pub fn compute(topic: &Topic, data: &[u8]) -> Self {
        Self::compute_raw(topic.as_str(), data)
    }

    /// Same as [`MessageId::compute`] but on a raw topic name and the payload (not the
    /// envelope).
    pub(crate) fn compute_raw(topic: &str, data: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(MESSAGE_ID_DOMAIN);
        h.update((topic.len() as u64).to_be_bytes());
        h.update(topic.as_bytes());
        h.update(data);
        MessageId(h.finalize().into())
    }

    /// The id as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        push_hex(&mut s, &self.0);
        f.write_str(&s)
    }
}

/// A message delivered to the application, from gossip or from a store's history.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: Topic,
    /// The opaque payload, exactly as published.
    pub data: Vec<u8>,
    /// Its content-hash id.
    pub id: MessageId,
    /// When it arrived: at this node for gossip, at the store for history.
    pub received: SystemTime,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("id", &self.id)
            .field("len", &self.data.len())
            .field("received", &self.received)
            .finish()
    }
}

/// The application's verdict on an inbound gossip message, see [`Validator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Deliver, store and forward the message.
    Accept,
    /// Drop it as invalid: counted in `rejected`, and the neighbour that sent it is penalised
    /// (three such messages in quick succession get it ignored for a while). Use only for
    /// messages no honest node would forward.
    Reject,
    /// Drop it without penalty (for example valid but stale, or not yet processable):
    /// counted in `ignored`.
    Ignore,
}

/// The validation hook: called for every inbound gossip message that passed the transport's
/// own checks, before it is delivered, stored or forwarded to other peers.
///
/// It runs on the node's event loop, so it must be quick and must not block (a signature
/// check is fine; network or disk I/O is not).
pub trait Validator: Send + Sync + 'static {
    /// Decides what happens to `data` received on `topic`.
    fn validate(&self, topic: &Topic, data: &[u8]) -> Verdict;
}

impl<F> Validator for F
where
    F: Fn(&Topic, &[u8]) -> Verdict + Send + Sync + 'static,
{
    fn validate(&self, topic: &Topic, data: &[u8]) -> Verdict {
        self(topic, data)
    }
}

/// Wraps a payload in the gossip envelope: one version byte, then the payload.
pub(crate) fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(data);
    out
}

/// Removes the gossip envelope; `None` if it is empty or has an unknown version.
pub(crate) fn open(envelope: &[u8]) -> Option<&[u8]> {
    match envelope.split_first() {
        Some((&ENVELOPE_VERSION, payload)) => Some(payload),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch (0 for times before it, saturating far in the future).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Inverse of [`unix_ms`].
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Indexing cannot fail: both nibbles are below 16.
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_from_group_id_is_stable_and_parses() {
        let a = Topic::from_group_id(b"group-a");
        assert_eq!(a, Topic::from_group_id(b"group-a"));
        assert_ne!(a, Topic::from_group_id(b"group-b"));
        assert!(!a.as_str().contains("group-a"));
        assert_eq!(Topic::parse(a.as_str()), Some(a));
        assert_eq!(Topic::parse("/pqmls/group/1/xyz"), None);
        assert_eq!(Topic::parse("other"), None);
        let upper = format!("/pqmls/group/1/{}", "A".repeat(64));
        assert_eq!(Topic::parse(&upper), None);
    }

    #[test]
    fn message_id_depends_on_topic_and_data() {
        let t1 = Topic::from_group_id(b"1");
        let t2 = Topic::from_group_id(b"2");
        assert_eq!(MessageId::compute(&t1, b"x"), MessageId::compute(&t1, b"x"));
        assert_ne!(MessageId::compute(&t1, b"x"), MessageId::compute(&t2, b"x"));
        assert_ne!(MessageId::compute(&t1, b"x"), MessageId::compute(&t1, b"y"));
    }

    #[test]
    fn envelope_round_trip_and_rejects_garbage() {
        assert_eq!(open(&seal(b"hello")), Some(&b"hello"[..]));
        assert_eq!(open(&seal(b"")), Some(&b""[..]));
        assert_eq!(open(&[]), None);
        assert_eq!(open(&[2, 1, 2]), None);
    }

    #[test]
    fn unix_ms_round_trip() {
        let t = from_unix_ms(1_700_000_000_123);
        assert_eq!(unix_ms(t), 1_700_000_000_123);
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
    }
}

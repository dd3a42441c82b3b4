//! Waku relay: gossipsub as the Nim node runs it, 11/WAKU2-RELAY
//! (`docs/messaging/core/stable/11/relay.md` in logos-co/logos-lips) with the settings read
//! in the Nim node (logos-delivery, `waku/waku_relay`):
//!
//! - protocol id `/vac/waku/relay/2.0.0` only (no `/meshsub/...` ids);
//! - `StrictNoSign`: no author, sequence number or signature; rust-libp2p's
//!   `MessageAuthenticity::Anonymous` with `ValidationMode::Anonymous`, which also rejects
//!   messages that carry any of them;
//! - message id = SHA-256 of the message data (the encoded `WakuMessage`), not the
//!   deterministic message hash;
//! - topics are the shard names as they are (`IdentTopic`, no hashing);
//! - mesh degree 6 (4..8), heartbeat 1 s, seen cache 2 minutes, flood publishing;
//! - 150 KiB default maximum message size (64/WAKU2-NETWORK, section "Message size").
//!
//! The transport's checks, [`check`], run on every message before it is forwarded
//! (gossipsub's `validate_messages` mode): the topic must be a shard of this node's cluster,
//! the data a well-formed `WakuMessage` within the size limit.

use std::time::{Duration, SystemTime};

use libp2p::gossipsub;
use sha2::{Digest, Sha256};

use super::message::{MessageError, MessageHash, WakuMessage};
use super::sharding::PubsubTopic;

/// Gossipsub protocol id of Waku relay.
pub const PROTOCOL: &str = "/vac/waku/relay/2.0.0";

/// Default largest relay message (encoded `WakuMessage`), 150 KiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 150 * 1024;

/// Bytes gossipsub adds around a message in a frame (topic, control, protobuf framing).
const FRAME_OVERHEAD: usize = 16 * 1024;

/// Shards per cluster on every Waku network (The Waku Network, logos.test, logos.dev), the
/// default shard count for autosharding.
pub const DEFAULT_SHARD_COUNT: u16 = 8;

/// Relay settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The cluster whose shards this node relays; messages on other topics are rejected.
    pub cluster: u16,
    /// Largest encoded `WakuMessage` (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_message_size: usize,
    /// Gossipsub heartbeat (default 1 s, as the Nim node).
    pub heartbeat: Duration,
    /// Shards of the cluster, the modulus of autosharding (default
    /// [`DEFAULT_SHARD_COUNT`]).
    pub shard_count: u16,
    /// The shards a node subscribes to when it starts (default: all of
    /// `0..shard_count`). More can be added and removed while it runs.
    pub shards: Vec<u16>,
    /// Gossipsub send queue per connection, in messages (default 5000, gossipsub's).
    pub send_queue: usize,
    /// How long a message may wait in a send queue before gossipsub abandons it (default
    /// 30 s, as the node's own gossip, `Limits::gossip_queue_timeout`). Gossipsub's
    /// defaults, 5 s for publications and 1 s for forwards, dropped forwards under load:
    /// the 10-node load run with 100 KiB messages lost 0.6 % of its deliveries with them.
    pub send_queue_timeout: Duration,
}

impl Config {
    /// Relay on `cluster` with the Nim node's defaults, subscribed to all
    /// [`DEFAULT_SHARD_COUNT`] shards.
    pub fn new(cluster: u16) -> Self {
        Self {
            cluster,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            heartbeat: Duration::from_secs(1),
            shard_count: DEFAULT_SHARD_COUNT,
            shards: (0..DEFAULT_SHARD_COUNT).collect(),
            send_queue: 5000,
            send_queue_timeout: Duration::from_secs(30),
        }
    }

    /// Subscribes to `shards` only, at start.
    pub fn with_shards(mut self, shards: impl IntoIterator<Item = u16>) -> Self {
        self.shards = shards.into_iter().collect();
        self
    }

    /// The pubsub topic of `shard` in this cluster; `None` above the static sharding range.
    pub fn shard(&self, shard: u16) -> Option<PubsubTopic> {
        PubsubTopic::new(self.cluster, shard)
    }
}

/// A relay message delivered to the application: checked by [`check`], accepted, and
/// forwarded to the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// The shard it arrived on.
    pub shard: PubsubTopic,
    /// Its deterministic hash on that shard ([`message_hash`](super::message_hash), the Nim
    /// node's form), the key stores index it by.
    pub hash: MessageHash,
    /// The message.
    pub message: WakuMessage,
    /// When this node received it.
    pub received: SystemTime,
}

/// The gossipsub message id of Waku relay: SHA-256 of the data.
pub fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::new(&Sha256::digest(&m.data))
}

/// The gossipsub behaviour configured as Waku relay. Messages must be validated with
/// [`check`] and reported (`report_message_validation_result`) before they are forwarded.
///
/// # Errors
///
/// A description of the configuration gossipsub refused.
pub fn behaviour(config: &Config) -> Result<gossipsub::Behaviour, String> {
    let gossip = gossipsub::ConfigBuilder::default()
        .protocol_id(PROTOCOL, gossipsub::Version::V1_1)
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(message_id)
        .mesh_n(6)
        .mesh_n_low(4)
        .mesh_n_high(8)
        .mesh_outbound_min(2)
        .heartbeat_interval(config.heartbeat)
        .duplicate_cache_time(Duration::from_secs(120))
        .flood_publish(true)
        .max_transmit_size(config.max_message_size.saturating_add(FRAME_OVERHEAD))
        .connection_handler_queue_len(config.send_queue.max(1))
        .publish_queue_duration(config.send_queue_timeout)
        .forward_queue_duration(config.send_queue_timeout)
        .build()
        .map_err(|e| e.to_string())?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip)
        .map_err(str::to_owned)
}

/// Why a relay message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The topic is not `/waku/2/rs/<cluster>/<shard>` of this node's cluster.
    #[error("not a shard of this cluster: {0}")]
    Topic(String),
    /// The message exceeds the relay's size limit.
    #[error("message of {0} bytes exceeds the relay limit")]
    TooLarge(usize),
    /// The data is not an acceptable `WakuMessage`.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// The transport's checks of a relay message on `topic`: returns the shard and message.
///
/// # Errors
///
/// See [`RelayError`].
pub fn check(
    config: &Config,
    topic: &str,
    data: &[u8],
) -> Result<(PubsubTopic, WakuMessage), RelayError> {
    let shard = PubsubTopic::parse(topic)
        .filter(|t| t.cluster == config.cluster)
        .ok_or_else(|| RelayError::Topic(topic.chars().take(64).collect()))?;
    if data.len() > config.max_message_size {
        return Err(RelayError::TooLarge(data.len()));
    }
    Ok((shard, WakuMessage::from_bytes(data)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_topic_size_and_message() {
        let c = Config::new(3);
        let m = WakuMessage::new("/app/1/t/proto", vec![1; 10]).to_bytes();
        let (shard, msg) = check(&c, "/waku/2/rs/3/5", &m).unwrap();
        assert_eq!((shard.cluster, shard.shard, msg.payload.len()), (3, 5, 10));
        assert!(matches!(
            check(&c, "/waku/2/rs/1/5", &m),
            Err(RelayError::Topic(_))
        ));
        assert!(matches!(
            check(&c, "/pqmls/group/1/x", &m),
            Err(RelayError::Topic(_))
        ));
        let big = WakuMessage::new("/a/1/b/c", vec![0; DEFAULT_MAX_MESSAGE_SIZE]).to_bytes();
        assert!(matches!(
            check(&c, "/waku/2/rs/3/0", &big),
            Err(RelayError::TooLarge(_))
        ));
        assert!(matches!(
            check(&c, "/waku/2/rs/3/0", &[0xff]),
            Err(RelayError::Message(_))
        ));
    }

    #[test]
    fn message_id_is_sha256_of_the_data() {
        let m = gossipsub::Message {
            source: None,
            data: b"abc".to_vec(),
            sequence_number: None,
            topic: gossipsub::TopicHash::from_raw("/waku/2/rs/3/0"),
        };
        assert_eq!(message_id(&m).0, Sha256::digest(b"abc").to_vec());
        assert!(behaviour(&Config::new(3)).is_ok());
    }
}

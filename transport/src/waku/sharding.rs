//! Pubsub topics as shards, and content topics mapped to shards: WAKU2-RELAY-SHARDING
//! (`docs/messaging/core/raw/relay-sharding.md` in logos-co/logos-lips).
//!
//! - Static sharding (section "Static Sharding"): a pubsub topic names a shard of a cluster,
//!   `/waku/2/rs/<cluster_id>/<shard_number>` ([`PubsubTopic`]), cluster below 2^16, shard
//!   below 1024.
//! - Autosharding (section "Automatic Sharding"): a content topic
//!   `/{application}/{version}/{name}/{encoding}`, or with a generation prefix
//!   `/{generation}/{application}/{version}/{name}/{encoding}` ([`ContentTopic`]), goes to
//!   shard `sha256(application || version) mod shard_count` of the network's cluster. The
//!   spec says "the modulo of the hash"; the Nim node and js-waku both take the last 8 bytes
//!   of the hash as a big-endian u64 and reduce that, which [`ContentTopic::shard`] does too
//!   (the same number whenever `shard_count` is a power of two, as on every Waku network).
//!   Only generation 0 is defined.

use std::fmt;

use sha2::{Digest, Sha256};

/// Shards per cluster in static sharding.
pub const MAX_SHARDS: u16 = 1024;

/// A relay shard: the pubsub topic `/waku/2/rs/<cluster>/<shard>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PubsubTopic {
    /// Cluster id.
    pub cluster: u16,
    /// Shard number within the cluster, below [`MAX_SHARDS`].
    pub shard: u16,
}

const RS_PREFIX: &str = "/waku/2/rs/";

impl PubsubTopic {
    /// The shard `shard` of `cluster`; `None` if `shard` is not below [`MAX_SHARDS`].
    pub fn new(cluster: u16, shard: u16) -> Option<Self> {
        (shard < MAX_SHARDS).then_some(Self { cluster, shard })
    }

    /// Parses `/waku/2/rs/<cluster>/<shard>` (decimal, no sign, no leading zeros).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(RS_PREFIX)?;
        let (cluster, shard) = rest.split_once('/')?;
        Self::new(decimal(cluster)?, decimal(shard)?)
    }
}

/// A canonical decimal u16: digits only, no leading zero except "0" itself.
fn decimal(s: &str) -> Option<u16> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

impl fmt::Display for PubsubTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{RS_PREFIX}{}/{}", self.cluster, self.shard)
    }
}

impl fmt::Debug for PubsubTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PubsubTopic({self})")
    }
}

/// A content topic in the autosharding format of 23/WAKU2-TOPICS.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContentTopic {
    generation: u32,
    application: String,
    version: String,
    name: String,
    encoding: String,
}

/// Longest content topic accepted (a bound on what peers can make us parse and hash).
pub const MAX_CONTENT_TOPIC: usize = 1024;

impl ContentTopic {
    /// Parses `/{application}/{version}/{name}/{encoding}` or
    /// `/{generation}/{application}/{version}/{name}/{encoding}`; every part non-empty.
    /// `None` for anything else (such a topic cannot be autosharded).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_CONTENT_TOPIC {
            return None;
        }
        let parts: Vec<&str> = s.strip_prefix('/')?.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let (generation, rest) = match parts.as_slice() {
            [_, _, _, _] => (0, &parts[..]),
            [g, rest @ ..] if rest.len() == 4 => (g.parse().ok()?, rest),
            _ => return None,
        };
        let [application, version, name, encoding] = rest else {
            return None;
        };
        Some(Self {
            generation,
            application: (*application).to_owned(),
            version: (*version).to_owned(),
            name: (*name).to_owned(),
            encoding: (*encoding).to_owned(),
        })
    }

    /// The generation (0 when the short form was used).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The application part.
    pub fn application(&self) -> &str {
        &self.application
    }

    /// The application version part.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The shard of this topic in a network of `shard_count` shards (spec section
    /// "Algorithm"); `None` for a shard count of 0 or above [`MAX_SHARDS`], or a generation
    /// other than 0 (no later generation is defined).
    pub fn shard(&self, shard_count: u16) -> Option<u16> {
        if shard_count == 0 || shard_count > MAX_SHARDS || self.generation != 0 {
            return None;
        }
        let mut h = Sha256::new();
        h.update(self.application.as_bytes());
        h.update(self.version.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&digest[24..]);
        let shard = u64::from_be_bytes(tail) % u64::from(shard_count);
        u16::try_from(shard).ok()
    }

    /// The pubsub topic of this content topic in `cluster` with `shard_count` shards.
    pub fn pubsub_topic(&self, cluster: u16, shard_count: u16) -> Option<PubsubTopic> {
        PubsubTopic::new(cluster, self.shard(shard_count)?)
    }
}

impl fmt::Display for ContentTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.generation != 0 {
            write!(f, "/{}", self.generation)?;
        }
        write!(
            f,
            "/{}/{}/{}/{}",
            self.application, self.version, self.name, self.encoding
        )
    }
}

impl fmt::Debug for ContentTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentTopic({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_topics_parse_canonically() {
        let t = PubsubTopic::parse("/waku/2/rs/3/7").unwrap();
        assert_eq!((t.cluster, t.shard), (3, 7));
        assert_eq!(t.to_string(), "/waku/2/rs/3/7");
        assert_eq!(
            PubsubTopic::parse("/waku/2/rs/0/1023").map(|t| t.shard),
            Some(1023)
        );
        for bad in [
            "/waku/2/rs/3/1024",
            "/waku/2/rs/65536/0",
            "/waku/2/rs/03/1",
            "/waku/2/rs/3/+1",
            "/waku/2/rs/3",
            "/waku/2/rs/3/1/",
            "/waku/2/default-waku/proto",
            "",
        ] {
            assert_eq!(PubsubTopic::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_topics_short_and_full_forms() {
        let short = ContentTopic::parse("/myapp/1/mytopic/cbor").unwrap();
        let full = ContentTopic::parse("/0/myapp/1/mytopic/cbor").unwrap();
        assert_eq!(short, full);
        assert_eq!(short.to_string(), "/myapp/1/mytopic/cbor");
        let g1 = ContentTopic::parse("/1/myapp/1/mytopic/cbor").unwrap();
        assert_eq!(g1.generation(), 1);
        assert_eq!(g1.shard(8), None, "generation 1 is not defined");
        for bad in [
            "myapp/1/t/p",
            "/myapp/1/t",
            "/myapp//t/p",
            "/x/myapp/1/t/p",
            "/a/b/c/d/e/f",
        ] {
            assert_eq!(ContentTopic::parse(bad), None, "{bad}");
        }
        assert_eq!(
            ContentTopic::parse(&format!("/{}/1/t/p", "a".repeat(2000))),
            None
        );
        assert_eq!(short.shard(0), None);
    }
}

//! The Waku metadata protocol, 66/WAKU2-METADATA
//! (`docs/messaging/core/draft/66/metadata.md` in logos-co/logos-lips): on a new connection
//! a node asks `/vac/waku/metadata/1.0.0` for the peer's cluster id and relay shards, sending
//! its own in the request, and answers the same. The Nim node uses it as a gate: it
//! disconnects a peer that does not answer, answers without a cluster id, or is in another
//! cluster ([`admits`]).
//!
//! Messages are protobuf, each framed by an unsigned-varint length, as in the Nim node and
//! js-waku. `shards` is written unpacked (one tag per value, proto2 style): js-waku decodes
//! the packed proto3 default wrongly (`[0]` fails to decode, `[0, 3]` reads as `[2]`) and
//! drops the peer. Both forms are accepted on input.

use prost::Message as _;

/// Protocol id.
pub const PROTOCOL: &str = "/vac/waku/metadata/1.0.0";

/// Largest metadata message accepted (a cluster id and up to 1024 shards fit easily).
pub const MAX_MESSAGE: usize = 8 * 1024;

/// `WakuMetadataRequest` and `WakuMetadataResponse` (same fields).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Metadata {
    /// The sender's cluster.
    #[prost(uint32, optional, tag = "1")]
    pub cluster_id: Option<u32>,
    /// The relay shards the sender subscribes to.
    #[prost(uint32, repeated, packed = "false", tag = "2")]
    pub shards: Vec<u32>,
}

/// Whether a peer's metadata lets it stay connected to a node of `cluster`: it must name
/// that cluster (the Nim node's rule).
pub fn admits(cluster: u16, theirs: &Metadata) -> bool {
    theirs.cluster_id == Some(u32::from(cluster))
}

/// Appends the unsigned-varint length prefix and the protobuf body.
pub fn encode_framed(m: &Metadata) -> Vec<u8> {
    m.encode_length_delimited_to_vec()
}

/// Decodes one framed message, refusing a length above [`MAX_MESSAGE`] before reading it.
///
/// # Errors
///
/// A description of the problem: over-long, truncated, trailing bytes or malformed.
pub fn decode_framed(bytes: &[u8]) -> Result<Metadata, &'static str> {
    let mut buf = bytes;
    let len = prost::encoding::decode_varint(&mut buf).map_err(|_| "bad length prefix")?;
    let len = usize::try_from(len).map_err(|_| "length too large")?;
    if len > MAX_MESSAGE {
        return Err("metadata message too large");
    }
    if buf.len() != len {
        return Err("length prefix does not match the message");
    }
    Metadata::decode(buf).map_err(|_| "malformed metadata")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_written_unpacked_and_read_either_way() {
        let m = Metadata {
            cluster_id: Some(3),
            shards: vec![0, 3],
        };
        // cluster_id: tag 1 varint 3; shards: tag 2 varint 0, tag 2 varint 3 (unpacked).
        assert_eq!(m.encode_to_vec(), vec![0x08, 3, 0x10, 0, 0x10, 3]);
        assert_eq!(encode_framed(&m), vec![6, 0x08, 3, 0x10, 0, 0x10, 3]);
        assert_eq!(decode_framed(&encode_framed(&m)).unwrap(), m);
        // The packed form (tag 2, length 2, values) decodes to the same.
        assert_eq!(
            decode_framed(&[6, 0x08, 3, 0x12, 2, 0, 3]).unwrap(),
            m,
            "packed input accepted"
        );
    }

    #[test]
    fn framing_is_checked_and_the_cluster_gate_holds() {
        assert!(decode_framed(&[5, 0x08]).is_err(), "truncated");
        assert!(decode_framed(&[1, 0x08, 3]).is_err(), "trailing bytes");
        assert!(decode_framed(&[0xff, 0xff, 0x03]).is_err(), "too long");
        assert!(decode_framed(&[2, 0xff, 0xff]).is_err(), "malformed");
        let none = Metadata::default();
        assert!(!admits(3, &none), "no cluster id");
        assert!(!admits(
            3,
            &Metadata {
                cluster_id: Some(1),
                shards: vec![]
            }
        ));
        assert!(admits(
            3,
            &Metadata {
                cluster_id: Some(3),
                shards: vec![]
            }
        ));
        assert!(!admits(
            3,
            &Metadata {
                cluster_id: Some(3 + 65536),
                shards: vec![]
            }
        ));
    }
}

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

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
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

/// The request-response codec of the protocol: one framed [`Metadata`] each way. Reads
/// stop at the end of the frame (the Nim node does not close its side before reading the
/// answer), and a length above [`MAX_MESSAGE`] is refused before anything is allocated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codec;

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one unsigned-varint length prefix and that many bytes, at most [`MAX_MESSAGE`].
async fn read_framed<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Metadata> {
    let mut len: u64 = 0;
    // MAX_MESSAGE needs two varint bytes; a third means the length is too large.
    for i in 0..3 {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            let len = usize::try_from(len).map_err(|_| invalid("length too large"))?;
            if len > MAX_MESSAGE {
                return Err(invalid("metadata message too large"));
            }
            let mut body = vec![0u8; len];
            io.read_exact(&mut body).await?;
            return Metadata::decode(body.as_slice()).map_err(|_| invalid("malformed metadata"));
        }
    }
    Err(invalid("metadata message too large"))
}

async fn write_framed<T: AsyncWrite + Unpin + Send>(io: &mut T, m: &Metadata) -> io::Result<()> {
    io.write_all(&encode_framed(m)).await?;
    io.flush().await
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Metadata;
    type Response = Metadata;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Metadata>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_framed(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Metadata>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_framed(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Metadata,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Metadata,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &res).await
    }
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

    #[test]
    fn the_codec_reads_one_frame_and_refuses_long_or_bad_ones() {
        use libp2p::request_response::Codec as _;
        let p = StreamProtocol::new(PROTOCOL);
        let m = Metadata {
            cluster_id: Some(3),
            shards: vec![0, 7],
        };
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            Codec.write_request(&p, &mut buf, m.clone()).await.unwrap();
            assert_eq!(buf, encode_framed(&m));
            // Bytes after the frame are left unread.
            buf.extend_from_slice(&[0xde, 0xad]);
            let mut r = futures::io::Cursor::new(buf);
            assert_eq!(Codec.read_response(&p, &mut r).await.unwrap(), m);
            assert_eq!(r.position(), 7);
            for bad in [
                &[0x80, 0x80, 0x01][..], // three-byte length: over MAX_MESSAGE
                &[0x81, 0x40],           // 8193 bytes
                &[5, 0x08, 3],           // truncated
                &[2, 0xff, 0xff],        // malformed
                &[],                     // nothing
            ] {
                let mut r = futures::io::Cursor::new(bad.to_vec());
                assert!(Codec.read_request(&p, &mut r).await.is_err(), "{bad:?}");
            }
        });
    }
}

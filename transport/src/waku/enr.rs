//! Ethereum Node Records as Waku uses them: EIP-778 (the record, RLP, the "v4" identity
//! scheme) with the Waku keys of 31/WAKU2-ENR (`docs/messaging/core/draft/31/enr.md` in
//! logos-co/logos-lips): `multiaddrs`, `waku2`, and the relay sharding keys `rs` / `rsv`
//! of 51/WAKU2-RELAY-SHARDING (section "Discovery"), read as the Nim node writes them
//! (logos-delivery `waku/waku_enr/`).
//!
//! Legend (EIP-778, section "Record Structure"):
//! - `record = [signature, seq, k, v, ...]`, RLP list, at most [`MAX_SIZE`] (300) bytes;
//! - `content = [seq, k, v, ...]`, the pairs sorted by key, keys unique;
//! - "v4" scheme (section "v4" identity scheme): `signature` is the 64-byte `r || s` of an
//!   ECDSA secp256k1 signature over `keccak256(rlp(content))`, by the key whose 33-byte
//!   compressed form is the value of `secp256k1`; `id` is `"v4"`.
//!
//! Every record comes from the network (peer exchange answers), so [`Enr::decode`] trusts
//! nothing: the size is checked before parsing, the RLP must be canonical and cover the
//! input exactly, keys sorted and unique, the identity scheme "v4", the key a valid point,
//! and the signature low-S and valid (as libsecp256k1 and go-ethereum verify). Accessors of
//! individual keys return `None` for a value that is not what the spec says, instead of
//! failing the record: a record may carry keys of other networks.
//!
//! A node's peer id is the libp2p identity of the record's `secp256k1` key (31/WAKU2-ENR,
//! "The node's peer id SHOULD be deduced from the `secp256k1` value"), so only a node
//! whose libp2p key is secp256k1 can make a record that names its own peer id.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, identity};
use sha3::{Digest, Keccak256};

/// Largest encoded record (EIP-778, section "Record Structure": "The maximum encoded size of
/// a node record is 300 bytes").
pub const MAX_SIZE: usize = 300;
/// The text form's prefix (EIP-778, section "Text Encoding").
pub const TEXT_PREFIX: &str = "enr:";

/// `waku2` flag: relay (31/WAKU2-ENR, section "`waku2` ENR key", bit 0).
pub const WAKU2_RELAY: u8 = 1;
/// `waku2` flag: store (bit 1).
pub const WAKU2_STORE: u8 = 1 << 1;
/// `waku2` flag: filter (bit 2).
pub const WAKU2_FILTER: u8 = 1 << 2;
/// `waku2` flag: lightpush (bit 3).
pub const WAKU2_LIGHTPUSH: u8 = 1 << 3;

/// Why a record is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrError {
    /// Over [`MAX_SIZE`] bytes (or, when built, the pairs do not fit).
    #[error("record larger than 300 bytes")]
    TooLarge,
    /// Not a canonical RLP list of the record's shape.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// Keys not in strictly ascending order (so unsorted or repeated).
    #[error("record keys not sorted and unique")]
    Keys,
    /// No `id`, or an identity scheme other than "v4".
    #[error("identity scheme is not v4")]
    Scheme,
    /// No `secp256k1` key, or not a valid compressed point.
    #[error("invalid public key")]
    PublicKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    Signature,
    /// The text form is not `enr:` and unpadded base64url.
    #[error("not the text form of a record")]
    Text,
}

/// A verified node record.
#[derive(Clone, PartialEq, Eq)]
pub struct Enr {
    raw: Vec<u8>,
    seq: u64,
    /// Key bytes, then the value's RLP item as it was encoded.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    public_key: [u8; 33],
}

impl std::fmt::Debug for Enr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enr")
            .field("seq", &self.seq)
            .field("peer_id", &self.peer_id())
            .field("addresses", &self.addresses())
            .finish()
    }
}

// --- RLP (the Ethereum Yellow Paper, appendix B), canonical forms only -------------------

/// One RLP item: whether it is a list, its payload, and the whole encoding.
struct Item<'a> {
    list: bool,
    payload: &'a [u8],
    raw: &'a [u8],
}

/// Reads a big-endian length of `n` bytes, canonical (no leading zero).
fn be_len(bytes: &[u8]) -> Result<usize, EnrError> {
    if bytes.first() == Some(&0) {
        return Err(EnrError::Malformed("length with a leading zero"));
    }
    let mut n: usize = 0;
    for b in bytes {
        n = n
            .checked_mul(256)
            .and_then(|n| n.checked_add(usize::from(*b)))
            .ok_or(EnrError::Malformed("length overflow"))?;
    }
    Ok(n)
}

/// Splits the first RLP item off `buf`.
fn next_item(buf: &[u8]) -> Result<(Item<'_>, &[u8]), EnrError> {
    let truncated = EnrError::Malformed("truncated");
    let (&first, rest) = buf.split_first().ok_or(truncated)?;
    let (list, header, len) = match first {
        0x00..=0x7f => (false, 0, 1),
        0x80..=0xb7 => (false, 1, usize::from(first - 0x80)),
        0xb8..=0xbf => {
            let n = usize::from(first - 0xb7);
            let len = be_len(rest.get(..n).ok_or(truncated)?)?;
            if len < 56 {
                return Err(EnrError::Malformed("long form for a short string"));
            }
            (false, 1 + n, len)
        }
        0xc0..=0xf7 => (true, 1, usize::from(first - 0xc0)),
        0xf8..=0xff => {
            let n = usize::from(first - 0xf7);
            let len = be_len(rest.get(..n).ok_or(truncated)?)?;
            if len < 56 {
                return Err(EnrError::Malformed("long form for a short list"));
            }
            (true, 1 + n, len)
        }
    };
    let end = header.checked_add(len).ok_or(truncated)?;
    let raw = buf.get(..end).ok_or(truncated)?;
    let payload = if first < 0x80 {
        raw
    } else {
        raw.get(header..).ok_or(truncated)?
    };
    if first == 0x81 && payload.first().is_some_and(|b| *b < 0x80) {
        return Err(EnrError::Malformed("single byte not encoded as itself"));
    }
    let rest = buf.get(end..).ok_or(truncated)?;
    Ok((Item { list, payload, raw }, rest))
}

fn encode_header(out: &mut Vec<u8>, len: usize, short: u8) {
    if len < 56 {
        // len < 56, so the sum stays below 0xf8.
        out.push(short + len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let n = bytes.len() - skip;
        out.push(short + 55 + n as u8);
        out.extend_from_slice(bytes.get(skip..).unwrap_or_default());
    }
}

/// The RLP encoding of a byte string.
fn rlp_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 3);
    match bytes {
        [b] if *b < 0x80 => out.push(*b),
        _ => {
            encode_header(&mut out, bytes.len(), 0x80);
            out.extend_from_slice(bytes);
        }
    }
    out
}

/// The RLP encoding of an unsigned integer (big-endian, no leading zeros; 0 is empty).
fn rlp_uint(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    rlp_bytes(bytes.get(skip..).unwrap_or_default())
}

/// The RLP list of already encoded items.
fn rlp_list(items: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() + 3);
    encode_header(&mut out, items.len(), 0xc0);
    out.extend_from_slice(items);
    out
}

/// A canonical big-endian unsigned integer of at most `max` bytes.
fn be_uint(bytes: &[u8], max: usize) -> Option<u64> {
    if bytes.len() > max || bytes.first() == Some(&0) {
        return None;
    }
    Some(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

// --- Base64url without padding (EIP-778, "Text Encoding"; RFC 4648 section 5) ------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(B64[idx]));
        }
    }
    out
}

fn b64_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = B64.iter().position(|x| *x == c)?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero (a canonical encoding).
    (acc == 0).then_some(out)
}

// --- Records -------------------------------------------------------------------------------

fn content(seq: u64, pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut items = rlp_uint(seq);
    for (k, v) in pairs {
        items.extend(rlp_bytes(k));
        items.extend_from_slice(v);
    }
    rlp_list(&items)
}

impl Enr {
    /// Decodes and verifies a record (EIP-778; "v4" scheme only).
    ///
    /// # Errors
    ///
    /// See [`EnrError`]: every check is made before the record is returned.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnrError> {
        if bytes.len() > MAX_SIZE {
            return Err(EnrError::TooLarge);
        }
        let (record, rest) = next_item(bytes)?;
        if !record.list || !rest.is_empty() {
            return Err(EnrError::Malformed("not exactly one list"));
        }
        let (sig, body) = next_item(record.payload)?;
        let (seq, mut body) = next_item(body)?;
        if sig.list || sig.payload.len() != 64 {
            return Err(EnrError::Malformed("signature is not 64 bytes"));
        }
        let seq = if seq.list {
            None
        } else {
            be_uint(seq.payload, 8)
        }
        .ok_or(EnrError::Malformed("bad seq"))?;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while !body.is_empty() {
            let (k, rest) = next_item(body)?;
            let (v, rest) = next_item(rest)?;
            body = rest;
            if k.list {
                return Err(EnrError::Malformed("key is a list"));
            }
            if pairs
                .last()
                .is_some_and(|(last, _)| last.as_slice() >= k.payload)
            {
                return Err(EnrError::Keys);
            }
            pairs.push((k.payload.to_vec(), v.raw.to_vec()));
        }
        let value = |key: &[u8]| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| next_item(v).ok())
                .filter(|(i, _)| !i.list)
                .map(|(i, _)| i.payload)
        };
        if value(b"id") != Some(b"v4") {
            return Err(EnrError::Scheme);
        }
        let public_key: [u8; 33] = value(b"secp256k1")
            .and_then(|k| k.try_into().ok())
            .ok_or(EnrError::PublicKey)?;
        let key = VerifyingKey::from_sec1_bytes(&public_key).map_err(|_| EnrError::PublicKey)?;
        let signature = Signature::from_slice(sig.payload).map_err(|_| EnrError::Signature)?;
        let hash = Keccak256::digest(content(seq, &pairs));
        // k256 refuses high-S signatures for secp256k1, as libsecp256k1 does.
        key.verify_prehash(&hash, &signature)
            .map_err(|_| EnrError::Signature)?;
        Ok(Self {
            raw: bytes.to_vec(),
            seq,
            pairs,
            public_key,
        })
    }

    /// Decodes the text form `enr:<base64url>` (EIP-778, section "Text Encoding").
    ///
    /// # Errors
    ///
    /// [`EnrError::Text`] for text that is not the form, or as [`Enr::decode`].
    pub fn from_text(text: &str) -> Result<Self, EnrError> {
        let body = text.strip_prefix(TEXT_PREFIX).ok_or(EnrError::Text)?;
        // 300 bytes are 400 characters: refuse longer text before decoding it.
        if body.len() > MAX_SIZE.div_ceil(3) * 4 {
            return Err(EnrError::TooLarge);
        }
        Self::decode(&b64_decode(body).ok_or(EnrError::Text)?)
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        format!("{TEXT_PREFIX}{}", b64_encode(&self.raw))
    }

    /// The encoded record.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The sequence number (higher is newer).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The compressed secp256k1 public key.
    pub fn public_key(&self) -> [u8; 33] {
        self.public_key
    }

    /// The libp2p peer id of the record's key. `None` cannot happen for a decoded record
    /// (the key was checked), but is not unwrapped.
    pub fn peer_id(&self) -> Option<PeerId> {
        let key = identity::secp256k1::PublicKey::try_from_bytes(&self.public_key).ok()?;
        Some(identity::PublicKey::from(key).to_peer_id())
    }

    /// The value of `key` as a byte string, if it is one.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let (_, v) = self.pairs.iter().find(|(k, _)| k == key.as_bytes())?;
        let (item, _) = next_item(v).ok()?;
        (!item.list).then_some(item.payload)
    }

    /// Whether the record has `key` (whatever its value).
    pub fn contains(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key.as_bytes())
    }

    fn port(&self, key: &str) -> Option<u16> {
        be_uint(self.get(key)?, 2).and_then(|p| u16::try_from(p).ok())
    }

    /// `ip` (EIP-778: 4 bytes).
    pub fn ip4(&self) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(self.get("ip")?)
            .ok()
            .map(Ipv4Addr::from)
    }

    /// `ip6` (16 bytes).
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        <[u8; 16]>::try_from(self.get("ip6")?)
            .ok()
            .map(Ipv6Addr::from)
    }

    /// `tcp` port.
    pub fn tcp(&self) -> Option<u16> {
        self.port("tcp")
    }

    /// `tcp6` port.
    pub fn tcp6(&self) -> Option<u16> {
        self.port("tcp6")
    }

    /// `udp` port.
    pub fn udp(&self) -> Option<u16> {
        self.port("udp")
    }

    /// `multiaddrs` (31/WAKU2-ENR, "`multiaddrs` ENR key": each a big-endian u16 length
    /// and a binary multiaddr). Entries that do not parse are skipped, as the Nim node does;
    /// a zero or overlong length ends the field (`None`).
    pub fn multiaddrs(&self) -> Option<Vec<Multiaddr>> {
        let mut field = self.get("multiaddrs")?;
        let mut out = Vec::new();
        while !field.is_empty() {
            let len_bytes: [u8; 2] = field.get(..2)?.try_into().ok()?;
            let len = usize::from(u16::from_be_bytes(len_bytes));
            if len == 0 {
                return None;
            }
            let addr = field.get(2..2 + len)?;
            if let Ok(a) = Multiaddr::try_from(addr.to_vec()) {
                out.push(a);
            }
            field = field.get(2 + len..)?;
        }
        Some(out)
    }

    /// `waku2` capability flags (one byte, [`WAKU2_RELAY`] and the others).
    pub fn waku2(&self) -> Option<u8> {
        match self.get("waku2")? {
            [flags] => Some(*flags),
            _ => None,
        }
    }

    /// The relay shards: `rs` (cluster, count, shard ids, all big-endian u16 but the u8
    /// count) or `rsv` (cluster and a 1024-bit vector, shard 0 the lowest bit of the first
    /// vector byte, as the Nim node writes it). `rs` wins when both are present.
    pub fn relay_shards(&self) -> Option<(u16, Vec<u16>)> {
        if let Some(rs) = self.get("rs") {
            let cluster = u16::from_be_bytes(rs.get(..2)?.try_into().ok()?);
            let n = usize::from(*rs.get(2)?);
            if rs.len() != 3 + 2 * n {
                return None;
            }
            let shards = rs
                .get(3..)?
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            return Some((cluster, shards));
        }
        let rsv = self.get("rsv")?;
        if rsv.len() != 130 {
            return None;
        }
        let cluster = u16::from_be_bytes(rsv.get(..2)?.try_into().ok()?);
        let mut shards = Vec::new();
        for (i, byte) in rsv.get(2..)?.iter().enumerate() {
            for bit in 0..8u16 {
                if byte & (1 << bit) != 0 {
                    // i < 128, so the shard is below 1024.
                    shards.push(i as u16 * 8 + bit);
                }
            }
        }
        Some((cluster, shards))
    }

    /// The addresses the record gives for the node, without `/p2p`: `ip` + `tcp`,
    /// `ip6` + `tcp6`, then `multiaddrs` less those with a `/p2p` part (circuit relay
    /// addresses, 31/WAKU2-ENR: this transport does not use relays).
    pub fn addresses(&self) -> Vec<Multiaddr> {
        let mut out = Vec::new();
        if let (Some(ip), Some(port)) = (self.ip4(), self.tcp()) {
            out.push(
                Multiaddr::empty()
                    .with(Protocol::Ip4(ip))
                    .with(Protocol::Tcp(port)),
            );
        }
        if let (Some(ip), Some(port)) = (self.ip6(), self.tcp6()) {
            out.push(
                Multiaddr::empty()
                    .with(Protocol::Ip6(ip))
                    .with(Protocol::Tcp(port)),
            );
        }
        for a in self.multiaddrs().unwrap_or_default() {
            if !a.iter().any(|p| matches!(p, Protocol::P2p(_))) && !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

/// Builds and signs a record.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    seq: u64,
    pairs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Builder {
    /// A record with sequence number `seq`.
    pub fn new(seq: u64) -> Self {
        Self {
            seq,
            pairs: BTreeMap::new(),
        }
    }

    /// Sets `key` to the byte string `value` (replacing an earlier value).
    pub fn bytes(mut self, key: &str, value: &[u8]) -> Self {
        self.pairs.insert(key.as_bytes().to_vec(), rlp_bytes(value));
        self
    }

    /// Sets `key` to an unsigned integer.
    pub fn uint(mut self, key: &str, value: u64) -> Self {
        self.pairs.insert(key.as_bytes().to_vec(), rlp_uint(value));
        self
    }

    /// `ip` and `tcp`.
    pub fn ip4_tcp(self, ip: Ipv4Addr, port: u16) -> Self {
        self.bytes("ip", &ip.octets()).uint("tcp", u64::from(port))
    }

    /// `ip6` and `tcp6`.
    pub fn ip6_tcp(self, ip: Ipv6Addr, port: u16) -> Self {
        self.bytes("ip6", &ip.octets())
            .uint("tcp6", u64::from(port))
    }

    /// `multiaddrs`: each address as a big-endian u16 length and its bytes.
    pub fn multiaddrs(self, addrs: &[Multiaddr]) -> Self {
        let mut value = Vec::new();
        for a in addrs {
            let bytes = a.to_vec();
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            value.extend_from_slice(&len.to_be_bytes());
            value.extend_from_slice(&bytes);
        }
        self.bytes("multiaddrs", &value)
    }

    /// `waku2` capability flags.
    pub fn waku2(self, flags: u8) -> Self {
        self.bytes("waku2", &[flags])
    }

    /// `rs`: the relay shards of `cluster` (at most 255 shards; the Nim node switches to the
    /// bit vector `rsv` from 64 on, which this builder does not write).
    pub fn relay_shards(self, cluster: u16, shards: &[u16]) -> Self {
        let shards = shards.get(..shards.len().min(255)).unwrap_or_default();
        let mut value = cluster.to_be_bytes().to_vec();
        // At most 255, see above.
        value.push(shards.len() as u8);
        for s in shards {
            value.extend_from_slice(&s.to_be_bytes());
        }
        self.bytes("rs", &value)
    }

    /// Adds `id` = "v4" and the key's `secp256k1`, and signs with `secret`.
    ///
    /// # Errors
    ///
    /// [`EnrError::TooLarge`] if the record would exceed [`MAX_SIZE`],
    /// [`EnrError::PublicKey`] for a secret that is not a valid scalar,
    /// [`EnrError::Signature`] if signing fails.
    pub fn sign(self, secret: &identity::secp256k1::SecretKey) -> Result<Enr, EnrError> {
        let key = SigningKey::from_slice(&secret.to_bytes()).map_err(|_| EnrError::PublicKey)?;
        let public = identity::secp256k1::Keypair::from(secret.clone())
            .public()
            .to_bytes();
        let this = self.bytes("id", b"v4").bytes("secp256k1", &public);
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = this.pairs.into_iter().collect();
        let hash = Keccak256::digest(content(this.seq, &pairs));
        let signature: Signature = key.sign_prehash(&hash).map_err(|_| EnrError::Signature)?;
        let mut items = rlp_bytes(&signature.to_bytes());
        items.extend(rlp_uint(this.seq));
        for (k, v) in &pairs {
            items.extend(rlp_bytes(k));
            items.extend_from_slice(v);
        }
        let raw = rlp_list(&items);
        if raw.len() > MAX_SIZE {
            return Err(EnrError::TooLarge);
        }
        Enr::decode(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlp_forms_are_canonical() {
        assert_eq!(rlp_bytes(b""), [0x80]);
        assert_eq!(rlp_bytes(&[0x7f]), [0x7f]);
        assert_eq!(rlp_bytes(&[0x80]), [0x81, 0x80]);
        assert_eq!(rlp_uint(0), [0x80]);
        assert_eq!(rlp_uint(1024), [0x82, 0x04, 0x00]);
        let long = [7u8; 60];
        let enc = rlp_bytes(&long);
        assert_eq!(&enc[..2], &[0xb8, 60]);
        let (item, rest) = next_item(&enc).unwrap();
        assert!(!item.list && item.payload == long && rest.is_empty());
        // Non-canonical forms are refused.
        assert!(next_item(&[0x81, 0x05]).is_err(), "single byte wrapped");
        assert!(
            next_item(&[0xb8, 0x05, 1, 2, 3, 4, 5]).is_err(),
            "long form, short"
        );
        assert!(
            next_item(&[0xb9, 0x00, 0x40]).is_err(),
            "leading zero length"
        );
        assert!(next_item(&[0x83, 1, 2]).is_err(), "truncated");
        assert!(next_item(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn base64url_round_trips_and_refuses_junk() {
        for n in 0..10 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            assert_eq!(b64_decode(&b64_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(b64_encode(b"\xfb\xff"), "-_8");
        assert!(b64_decode("a").is_none());
        assert!(b64_decode("ab=c").is_none());
        assert!(b64_decode("-_9").is_none(), "non-zero leftover bits");
    }
}

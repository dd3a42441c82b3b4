//! Segmentation of payloads larger than a relay message, with optional Reed-Solomon parity:
//! the Logos spec "Message Segmentation and Reconstruction"
//! (`docs/messaging/application/raw/segmentation.md` in logos-co/logos-lips).
//!
//! Sending (section "Sending"): the payload is cut into data segments of `segment_size`
//! bytes (default 100 KiB, the last one shorter), each wrapped in a `SegmentMessageProto`
//! carrying the Keccak-256 of the whole payload, its index and the counts. Every payload is
//! wrapped, also one that fits in one segment. With parity on, `ceil(count * parity_rate)`
//! parity segments (default rate 0.125, at least one for two or more data segments, none for
//! a single segment) are computed over the data segments, the last one zero-padded to
//! `segment_size`; the data segments go out unpadded.
//!
//! Receiving (sections "Receiving", "Validation", "Denial of Service"): every segment is
//! validated, then cached under its message hash. Once all data segments are there they are
//! concatenated; once any `data_segment_count` segments are there and some data segment is
//! missing, Reed-Solomon recovers it. The result is delivered only if its Keccak-256 matches;
//! on a mismatch the whole message is dropped (spec: "MUST be discarded"). Bounds, all in
//! [`Config`]: largest reassembled message, messages in reassembly at once, bytes buffered,
//! time a message may stay incomplete, and a window of completed hashes whose late segments
//! are dropped rather than starting a new reassembly. Segments carry no sender identity here
//! (relay is anonymous), so the spec's per-sender quotas cannot be applied at this layer.
//!
//! The spec's message has no field for the payload length. When the last data segment is
//! itself recovered from parity its length is unknown: the recovered shard is cut back to
//! its last non-zero byte and then extended one zero at a time until the hash matches (each
//! try finalises a clone of the running Keccak state, so this costs at most `segment_size`
//! permutations).
//!
//! Reed-Solomon: 8-bit Leopard (`leopard-codec`), the algorithm of the reference
//! implementation (nim-leopard), which needs equal shards of a multiple of 64 bytes and at
//! most as many parity as data shards; [`Config::check`] enforces what the sender needs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use prost::Message as _;
use sha3::{Digest, Keccak256};

/// `SegmentMessageProto` of the spec, section "Wire Format".
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SegmentMessage {
    /// Keccak-256 of the whole original payload.
    #[prost(bytes = "vec", tag = "1")]
    pub entire_message_hash: Vec<u8>,
    /// Index of a data segment.
    #[prost(uint32, tag = "2")]
    pub data_segment_index: u32,
    /// Number of data segments (at least 1), on every segment.
    #[prost(uint32, tag = "3")]
    pub data_segment_count: u32,
    /// The data chunk or the parity shard.
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
    /// Index of a parity segment.
    #[prost(uint32, tag = "5")]
    pub parity_segment_index: u32,
    /// Number of parity segments (0 without parity), on every segment.
    #[prost(uint32, tag = "6")]
    pub parity_segment_count: u32,
    /// Whether this is a parity segment.
    #[prost(bool, tag = "7")]
    pub is_parity: bool,
}

/// The spec's `maxTotalSegments` (the reference's Leopard limit): data plus parity
/// segments of one message must stay below it.
pub const MAX_TOTAL_SEGMENTS: usize = 256;

/// Sender and receiver settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest data segment payload (default 100 KiB; with parity a multiple of 64).
    pub segment_size: usize,
    /// Parity segments per data segment (default 0.125; 0 turns parity off).
    pub parity_rate: f64,
    /// Largest payload that is segmented or reassembled (default 16 MiB).
    pub max_message_size: usize,
    /// Largest segment payload accepted from the network (default 150 KiB, the relay
    /// limit; senders with another segment size interoperate up to this).
    pub max_segment_payload: usize,
    /// Messages in reassembly at once; the oldest is dropped for a new one (default 64).
    pub max_pending: usize,
    /// Segment bytes buffered over all messages in reassembly (default 64 MiB).
    pub max_buffered_bytes: usize,
    /// How long a message may stay incomplete (default 2 minutes).
    pub timeout: Duration,
    /// How many completed message hashes are remembered, so late or duplicated segments of
    /// a delivered message are dropped (default 4096).
    pub completed_window: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            segment_size: 100 * 1024,
            parity_rate: 0.125,
            max_message_size: 16 * 1024 * 1024,
            max_segment_payload: 150 * 1024,
            max_pending: 64,
            max_buffered_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(120),
            completed_window: 4096,
        }
    }
}

impl Config {
    /// Whether a sender with this configuration can segment: a non-zero segment size, a
    /// multiple of 64 when parity is on, a parity rate in `[0, 1]`, and every message up to
    /// `max_message_size` within [`MAX_TOTAL_SEGMENTS`].
    ///
    /// # Errors
    ///
    /// [`SegmentError::Config`] naming the problem.
    pub fn check(&self) -> Result<(), SegmentError> {
        if self.segment_size == 0 || self.segment_size > self.max_segment_payload {
            return Err(SegmentError::Config(
                "segment_size must be in 1..=max_segment_payload",
            ));
        }
        if !(0.0..=1.0).contains(&self.parity_rate) {
            return Err(SegmentError::Config("parity_rate must be within 0..=1"));
        }
        if self.parity_rate > 0.0 && !self.segment_size.is_multiple_of(64) {
            return Err(SegmentError::Config(
                "with parity, segment_size must be a multiple of 64",
            ));
        }
        let data = self.max_message_size.div_ceil(self.segment_size);
        if data.saturating_add(self.parity_count(data)) >= MAX_TOTAL_SEGMENTS {
            return Err(SegmentError::Config(
                "max_message_size needs too many segments",
            ));
        }
        Ok(())
    }

    fn parity_count(&self, data: usize) -> usize {
        if data < 2 || self.parity_rate <= 0.0 {
            return 0;
        }
        // Parity counts are small (below 256): the float product is exact enough, and the
        // result is capped at `data` (Leopard needs parity <= data).
        let p = (data as f64 * self.parity_rate).ceil();
        (p as usize).clamp(1, data)
    }
}

/// Why segmenting or reassembling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The configuration cannot work, see [`Config::check`].
    #[error("invalid segmentation config: {0}")]
    Config(&'static str),
    /// The payload exceeds [`Config::max_message_size`].
    #[error("payload of {0} bytes exceeds the segmentation limit")]
    TooLarge(usize),
    /// Not a well-formed `SegmentMessageProto`.
    #[error("malformed segment")]
    Malformed,
    /// The segment breaks a rule of the spec's "Validation" or of this receiver's bounds.
    #[error("invalid segment: {0}")]
    Invalid(&'static str),
    /// The segment contradicts earlier segments of the same message (counts or lengths).
    #[error("segment inconsistent with earlier segments of its message")]
    Inconsistent,
    /// The reassembled payload does not match its hash; the message was dropped.
    #[error("reassembled payload does not match its hash")]
    HashMismatch,
}

/// Splits `payload` into encoded segment messages to publish, data segments first.
///
/// # Errors
///
/// [`SegmentError::Config`] for a config that fails [`Config::check`],
/// [`SegmentError::TooLarge`] above [`Config::max_message_size`].
pub fn segment(payload: &[u8], config: &Config) -> Result<Vec<Vec<u8>>, SegmentError> {
    config.check()?;
    if payload.len() > config.max_message_size {
        return Err(SegmentError::TooLarge(payload.len()));
    }
    let hash: [u8; 32] = Keccak256::digest(payload).into();
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(config.segment_size).collect()
    };
    let data_count = chunks.len();
    let parity_count = config.parity_count(data_count);
    // Counts are below MAX_TOTAL_SEGMENTS (checked above), so they fit in u32.
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(data_count + parity_count);
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(
            SegmentMessage {
                entire_message_hash: hash.to_vec(),
                data_segment_index: as_u32(i),
                data_segment_count: as_u32(data_count),
                payload: chunk.to_vec(),
                parity_segment_count: as_u32(parity_count),
                ..SegmentMessage::default()
            }
            .encode_to_vec(),
        );
    }
    if parity_count > 0 {
        let mut shards: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| {
                let mut s = c.to_vec();
                s.resize(config.segment_size, 0);
                s
            })
            .collect();
        shards.extend((0..parity_count).map(|_| vec![0u8; config.segment_size]));
        match leopard_codec::encode(&mut shards, data_count) {
            Ok(()) => {
                for (j, shard) in shards.into_iter().skip(data_count).enumerate() {
                    out.push(
                        SegmentMessage {
                            entire_message_hash: hash.to_vec(),
                            data_segment_count: as_u32(data_count),
                            payload: shard,
                            parity_segment_index: as_u32(j),
                            parity_segment_count: as_u32(parity_count),
                            is_parity: true,
                            ..SegmentMessage::default()
                        }
                        .encode_to_vec(),
                    );
                }
            }
            Err(e) => {
                // Some (data, parity) combinations are unsupported by Leopard's encoder; the
                // message then goes without parity rather than not at all.
                tracing::debug!("no parity for a {data_count}-segment message: {e}");
                for s in &mut out {
                    if let Ok(mut m) = SegmentMessage::decode(s.as_slice()) {
                        m.parity_segment_count = 0;
                        *s = m.encode_to_vec();
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Counts kept by a [`Reassembler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages reassembled and verified.
    pub completed: u64,
    /// Of those, messages that needed Reed-Solomon recovery.
    pub recovered: u64,
    /// Segments dropped as duplicates or as late segments of a completed message.
    pub duplicates: u64,
    /// Segments refused: malformed, invalid or inconsistent.
    pub refused: u64,
    /// Reassemblies dropped because their hash did not match.
    pub hash_mismatches: u64,
    /// Incomplete messages dropped to make room (count or bytes).
    pub evicted: u64,
    /// Incomplete messages dropped after [`Config::timeout`].
    pub expired: u64,
}

struct Pending {
    started: Instant,
    data_count: usize,
    parity_count: usize,
    data: Vec<Option<Vec<u8>>>,
    parity: Vec<Option<Vec<u8>>>,
    /// Length every full shard has: parity shards, and data segments but the last.
    shard_len: Option<usize>,
    bytes: usize,
    received: usize,
}

/// A message in reassembly: the caller's scope ([`Reassembler::push_in`]) and the hash of
/// the whole payload.
type Key = ([u8; 32], [u8; 32]);

/// Reassembles segmented messages, bounded in memory, time and count.
pub struct Reassembler {
    config: Config,
    pending: HashMap<Key, Pending>,
    order: VecDeque<Key>,
    buffered: usize,
    completed: HashSet<Key>,
    completed_order: VecDeque<Key>,
    stats: Stats,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("pending", &self.pending.len())
            .field("buffered", &self.buffered)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Reassembler {
    /// A reassembler with these bounds.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            pending: HashMap::new(),
            order: VecDeque::new(),
            buffered: 0,
            completed: HashSet::new(),
            completed_order: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Messages in reassembly and the bytes they hold.
    pub fn pending(&self) -> (usize, usize) {
        (self.pending.len(), self.buffered)
    }

    /// Takes one received segment (the payload of a relay message) at time `now`; returns
    /// the whole payload once its message is complete and verified.
    ///
    /// # Errors
    ///
    /// [`SegmentError::Malformed`], [`SegmentError::Invalid`] or
    /// [`SegmentError::Inconsistent`] for a segment that is refused (nothing is kept), and
    /// [`SegmentError::HashMismatch`] when the message it completed failed verification (its
    /// segments are dropped).
    pub fn push(&mut self, bytes: &[u8], now: Instant) -> Result<Option<Vec<u8>>, SegmentError> {
        self.push_in([0; 32], bytes, now)
    }

    /// As [`Reassembler::push`], within `scope`: segments of one payload hash pushed in
    /// different scopes are reassembled apart (one message each, under the same bounds).
    /// A receiver that scopes by where a segment came from (its content topic) keeps a
    /// segment replayed elsewhere from filling a slot of the genuine message, and a payload
    /// from completing under another scope than its own segments'.
    ///
    /// # Errors
    ///
    /// As for [`Reassembler::push`].
    pub fn push_in(
        &mut self,
        scope: [u8; 32],
        bytes: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, SegmentError> {
        self.expire(now);
        let result = self.accept(scope, bytes, now);
        if matches!(
            result,
            Err(SegmentError::Malformed | SegmentError::Invalid(_) | SegmentError::Inconsistent)
        ) {
            self.stats.refused += 1;
        }
        result
    }

    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front().copied() {
            let stale = self
                .pending
                .get(&oldest)
                .is_none_or(|p| now.saturating_duration_since(p.started) >= self.config.timeout);
            if !stale {
                break;
            }
            if self.drop_pending(&oldest) {
                self.stats.expired += 1;
            }
        }
    }

    /// Forgets a pending message; true if there was one.
    fn drop_pending(&mut self, key: &Key) -> bool {
        self.order.retain(|k| k != key);
        match self.pending.remove(key) {
            Some(p) => {
                self.buffered = self.buffered.saturating_sub(p.bytes);
                true
            }
            None => false,
        }
    }

    fn validate(&self, m: &SegmentMessage) -> Result<[u8; 32], SegmentError> {
        let hash: [u8; 32] = m
            .entire_message_hash
            .as_slice()
            .try_into()
            .map_err(|_| SegmentError::Invalid("hash is not 32 bytes"))?;
        let data = usize::try_from(m.data_segment_count).unwrap_or(usize::MAX);
        let parity = usize::try_from(m.parity_segment_count).unwrap_or(usize::MAX);
        if data == 0 {
            return Err(SegmentError::Invalid("no data segments"));
        }
        if data.saturating_add(parity) >= MAX_TOTAL_SEGMENTS {
            return Err(SegmentError::Invalid("too many segments"));
        }
        if m.is_parity {
            if parity == 0 || m.parity_segment_index >= m.parity_segment_count {
                return Err(SegmentError::Invalid("parity index out of range"));
            }
        } else if m.data_segment_index >= m.data_segment_count {
            return Err(SegmentError::Invalid("data index out of range"));
        }
        if parity > data {
            return Err(SegmentError::Invalid("more parity than data segments"));
        }
        if m.payload.len() > self.config.max_segment_payload {
            return Err(SegmentError::Invalid("segment payload too large"));
        }
        if data.saturating_mul(m.payload.len().max(1))
            > self
                .config
                .max_message_size
                .saturating_add(self.config.max_segment_payload)
        {
            return Err(SegmentError::Invalid("message too large"));
        }
        Ok(hash)
    }

    fn accept(
        &mut self,
        scope: [u8; 32],
        bytes: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, SegmentError> {
        let m = SegmentMessage::decode(bytes).map_err(|_| SegmentError::Malformed)?;
        let hash = (scope, self.validate(&m)?);
        if self.completed.contains(&hash) {
            self.stats.duplicates += 1;
            return Ok(None);
        }
        let data_count = usize::try_from(m.data_segment_count).unwrap_or(usize::MAX);
        let parity_count = usize::try_from(m.parity_segment_count).unwrap_or(usize::MAX);
        if let Some(p) = self.pending.get(&hash)
            && (p.data_count != data_count || p.parity_count != parity_count)
        {
            return Err(SegmentError::Inconsistent);
        }
        // A single segment is the whole message: no state needed.
        if data_count == 1 && !m.is_parity {
            return self.finish_single(hash, m.payload);
        }
        let len = m.payload.len();
        self.make_room(&hash, len)?;
        let p = self.pending.entry(hash).or_insert_with(|| Pending {
            started: now,
            data_count,
            parity_count,
            data: vec![None; data_count],
            parity: vec![None; parity_count],
            shard_len: None,
            bytes: 0,
            received: 0,
        });
        if !self.order.contains(&hash) {
            self.order.push_back(hash);
        }
        // Lengths: parity shards and every data segment but the last have the full shard
        // length; the last data segment is at most that.
        let is_last_data = !m.is_parity && m.data_segment_index as usize == data_count - 1;
        if !is_last_data {
            match p.shard_len {
                Some(l) if l != len => return Err(SegmentError::Inconsistent),
                _ => p.shard_len = Some(len),
            }
        }
        let slot = if m.is_parity {
            p.parity.get_mut(m.parity_segment_index as usize)
        } else {
            p.data.get_mut(m.data_segment_index as usize)
        };
        let Some(slot) = slot else {
            return Err(SegmentError::Invalid("index out of range"));
        };
        if slot.is_some() {
            self.stats.duplicates += 1;
            return Ok(None);
        }
        *slot = Some(m.payload);
        p.bytes = p.bytes.saturating_add(len);
        p.received += 1;
        self.buffered = self.buffered.saturating_add(len);
        if let (Some(l), Some(Some(last))) = (p.shard_len, p.data.last())
            && last.len() > l
        {
            self.drop_pending(&hash);
            return Err(SegmentError::Inconsistent);
        }
        let p_ready = p.received >= p.data_count;
        if !p_ready {
            return Ok(None);
        }
        self.try_complete(hash)
    }

    /// Frees room for `len` more bytes of message `hash`: drops the oldest other pending
    /// messages while over the count or byte bound.
    fn make_room(&mut self, hash: &Key, len: usize) -> Result<(), SegmentError> {
        if len > self.config.max_buffered_bytes {
            return Err(SegmentError::Invalid(
                "segment larger than the reassembly buffer",
            ));
        }
        let is_new = !self.pending.contains_key(hash);
        loop {
            let over_count = is_new && self.pending.len() >= self.config.max_pending;
            let over_bytes = self.buffered.saturating_add(len) > self.config.max_buffered_bytes;
            if !over_count && !over_bytes {
                return Ok(());
            }
            let Some(victim) = self.order.iter().find(|h| *h != hash).copied() else {
                // Only this message holds bytes: it alone is over the budget.
                self.drop_pending(hash);
                self.stats.evicted += 1;
                return Err(SegmentError::Invalid(
                    "message larger than the reassembly buffer",
                ));
            };
            self.drop_pending(&victim);
            self.stats.evicted += 1;
        }
    }

    fn finish_single(
        &mut self,
        hash: Key,
        payload: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, SegmentError> {
        if <[u8; 32]>::from(Keccak256::digest(&payload)) != hash.1 {
            self.stats.hash_mismatches += 1;
            return Err(SegmentError::HashMismatch);
        }
        self.complete(hash);
        Ok(Some(payload))
    }

    fn complete(&mut self, hash: Key) {
        self.stats.completed += 1;
        if self.completed.insert(hash) {
            self.completed_order.push_back(hash);
        }
        while self.completed_order.len() > self.config.completed_window {
            if let Some(old) = self.completed_order.pop_front() {
                self.completed.remove(&old);
            }
        }
    }

    fn try_complete(&mut self, hash: Key) -> Result<Option<Vec<u8>>, SegmentError> {
        let Some(p) = self.pending.get(&hash) else {
            return Ok(None);
        };
        let all_data = p.data.iter().all(Option::is_some);
        let outcome = if all_data {
            let payload: Vec<u8> = p.data.iter().flatten().flatten().copied().collect();
            (<[u8; 32]>::from(Keccak256::digest(&payload)) == hash.1).then_some(payload)
        } else {
            recover(p, &hash.1)
        };
        self.drop_pending(&hash);
        match outcome {
            Some(payload) => {
                if !all_data {
                    self.stats.recovered += 1;
                }
                self.complete(hash);
                Ok(Some(payload))
            }
            None => {
                self.stats.hash_mismatches += 1;
                Err(SegmentError::HashMismatch)
            }
        }
    }
}

/// Recovers the missing data segments of `p` from parity and checks the hash.
fn recover(p: &Pending, hash: &[u8; 32]) -> Option<Vec<u8>> {
    let shard_len = p.shard_len?;
    if shard_len == 0 || !shard_len.is_multiple_of(64) {
        return None;
    }
    let last_len = p.data.last().and_then(|d| d.as_ref().map(Vec::len));
    let mut shards: Vec<Vec<u8>> = p
        .data
        .iter()
        .map(|d| match d {
            Some(d) => {
                let mut s = d.clone();
                s.resize(shard_len, 0);
                s
            }
            None => Vec::new(),
        })
        .chain(p.parity.iter().map(|d| d.clone().unwrap_or_default()))
        .collect();
    leopard_codec::reconstruct(&mut shards, p.data_count).ok()?;
    let (data, _) = shards.split_at(p.data_count);
    let (last, full) = data.split_last()?;
    let mut h = Keccak256::new();
    let mut payload = Vec::with_capacity(shard_len.saturating_mul(p.data_count));
    for s in full {
        h.update(s);
        payload.extend_from_slice(s);
    }
    match last_len {
        Some(n) => {
            let tail = last.get(..n)?;
            h.update(tail);
            payload.extend_from_slice(tail);
            (<[u8; 32]>::from(h.finalize()) == *hash).then_some(payload)
        }
        None => {
            // The last segment's length is unknown: from its last non-zero byte, try each
            // number of trailing zeros.
            let trimmed = last.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            h.update(&last[..trimmed]);
            for zeros in 0..=(shard_len - trimmed) {
                if <[u8; 32]>::from(h.clone().finalize()) == *hash {
                    payload.extend_from_slice(&last[..trimmed]);
                    payload.resize(payload.len() + zeros, 0);
                    return Some(payload);
                }
                h.update([0u8]);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Config {
        Config {
            segment_size: 1024,
            max_segment_payload: 1024,
            max_message_size: 64 * 1024,
            ..Config::default()
        }
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    fn decode(b: &[u8]) -> SegmentMessage {
        SegmentMessage::decode(b).unwrap()
    }

    fn deliver(r: &mut Reassembler, segs: &[Vec<u8>]) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut out = None;
        for s in segs {
            if let Some(p) = r.push(s, now).unwrap() {
                assert!(out.is_none(), "delivered twice");
                out = Some(p);
            }
        }
        out
    }

    #[test]
    fn segments_carry_the_spec_fields() {
        let p = payload(2500, 1);
        let segs = segment(&p, &small()).unwrap();
        // 3 data segments (1024, 1024, 452) and ceil(3 * 0.125) = 1 parity segment.
        assert_eq!(segs.len(), 4);
        let hash: [u8; 32] = Keccak256::digest(&p).into();
        for (i, s) in segs.iter().take(3).enumerate() {
            let m = decode(s);
            assert_eq!(m.entire_message_hash, hash.to_vec());
            assert_eq!((m.data_segment_index, m.data_segment_count), (i as u32, 3));
            assert_eq!((m.parity_segment_count, m.is_parity), (1, false));
        }
        assert_eq!(
            decode(&segs[2]).payload.len(),
            452,
            "data segments are not padded"
        );
        let parity = decode(&segs[3]);
        assert!(parity.is_parity);
        assert_eq!(
            (parity.parity_segment_index, parity.payload.len()),
            (0, 1024)
        );
        // A payload that fits is still wrapped, with no parity; so is an empty one.
        let one = segment(b"hi", &small()).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(decode(&one[0]).data_segment_count, 1);
        assert_eq!(segment(&[], &small()).unwrap().len(), 1);
        let no_parity = Config {
            parity_rate: 0.0,
            ..small()
        };
        assert_eq!(segment(&p, &no_parity).unwrap().len(), 3);
        assert_eq!(
            segment(&vec![0; 64 * 1024 + 1], &small()),
            Err(SegmentError::TooLarge(64 * 1024 + 1))
        );
    }

    #[test]
    fn reordered_and_duplicated_segments_deliver_once() {
        let p = payload(5000, 2);
        let mut segs = segment(&p, &small()).unwrap();
        segs.reverse();
        let dup = segs.clone();
        segs.extend(dup);
        let mut r = Reassembler::new(small());
        assert_eq!(deliver(&mut r, &segs), Some(p.clone()));
        let s = r.stats();
        assert_eq!(s.completed, 1);
        assert!(s.duplicates >= 5, "{s:?}");
        assert_eq!(r.pending(), (0, 0));
        // Single segments too.
        let one = segment(b"small", &small()).unwrap();
        assert_eq!(
            deliver(&mut r, &[one[0].clone(), one[0].clone()]),
            Some(b"small".to_vec())
        );
    }

    #[test]
    fn scopes_reassemble_apart() {
        let p = payload(5000, 4);
        let segs = segment(&p, &small()).unwrap();
        let now = Instant::now();
        let (a, b) = ([1; 32], [2; 32]);
        let mut r = Reassembler::new(small());
        // A forged copy of segment 0 pushed first in scope B, the genuine segments in
        // scope A: A completes, B's slot was not A's.
        let mut forged = decode(&segs[0]);
        forged.payload[0] ^= 1;
        assert_eq!(r.push_in(b, &forged.encode_to_vec(), now), Ok(None));
        let mut got = None;
        for s in &segs {
            if let Some(whole) = r.push_in(a, s, now).unwrap() {
                got = Some(whole);
            }
        }
        assert_eq!(got, Some(p.clone()));
        // The same segments replayed in scope B complete there on their own (scope A's
        // completion does not swallow them, and B's forged slot makes B's fail).
        let mut b_result = Ok(None);
        for s in &segs[1..] {
            b_result = r.push_in(b, s, now);
            if !matches!(b_result, Ok(None)) {
                break;
            }
        }
        assert!(
            matches!(b_result, Ok(Some(_)) | Err(SegmentError::HashMismatch)),
            "{b_result:?}"
        );
        // Late segments of A after completion are duplicates in A only.
        assert_eq!(r.push_in(a, &segs[0], now), Ok(None));
        assert!(r.stats().duplicates >= 1);
        // Unscoped pushes are one more scope.
        assert_eq!(deliver(&mut r, &segs), Some(p));
    }

    #[test]
    fn lost_segments_are_recovered_from_parity() {
        let config = Config {
            parity_rate: 0.5,
            ..small()
        };
        for (len, lose) in [
            (5000usize, vec![0usize]),
            (5000, vec![4]),
            (5000, vec![1, 4]),
            (4096, vec![3]),
            (4096 - 3, vec![3]),
        ] {
            let mut p = payload(len, 3);
            // A payload ending in zero bytes, to exercise the unknown-length search.
            let n = p.len();
            p[n - 3..].fill(0);
            let segs = segment(&p, &config).unwrap();
            let kept: Vec<Vec<u8>> = segs
                .iter()
                .enumerate()
                .filter(|(i, _)| !lose.contains(i))
                .map(|(_, s)| s.clone())
                .collect();
            let mut r = Reassembler::new(config.clone());
            assert_eq!(
                deliver(&mut r, &kept),
                Some(p.clone()),
                "len {len} lose {lose:?}"
            );
            assert_eq!(r.stats().recovered, 1);
        }
    }

    #[test]
    fn too_many_losses_deliver_nothing_and_expire() {
        let p = payload(5000, 4);
        let segs = segment(&p, &small()).unwrap();
        // 5 data + 1 parity; lose two data segments.
        let mut r = Reassembler::new(small());
        let t0 = Instant::now();
        for s in segs.iter().skip(2) {
            assert_eq!(r.push(s, t0).unwrap(), None);
        }
        assert_eq!(r.pending().0, 1);
        let later = t0 + small().timeout;
        let other = segment(b"x", &small()).unwrap();
        r.push(&other[0], later).unwrap();
        assert_eq!(r.pending(), (0, 0));
        assert_eq!(r.stats().expired, 1);
    }

    #[test]
    fn forged_segments_are_refused_or_make_the_message_fail() {
        let p = payload(3000, 5);
        let segs = segment(&p, &small()).unwrap();
        let mut r = Reassembler::new(small());
        let now = Instant::now();
        r.push(&segs[0], now).unwrap();
        // Other counts for the same hash.
        let mut m = decode(&segs[1]);
        m.data_segment_count = 4;
        assert_eq!(
            r.push(&m.encode_to_vec(), now),
            Err(SegmentError::Inconsistent)
        );
        // Spec validation rules.
        let mut bad = decode(&segs[1]);
        bad.entire_message_hash.pop();
        assert!(matches!(
            r.push(&bad.encode_to_vec(), now),
            Err(SegmentError::Invalid(_))
        ));
        let mut bad = decode(&segs[1]);
        bad.data_segment_index = 9;
        assert!(matches!(
            r.push(&bad.encode_to_vec(), now),
            Err(SegmentError::Invalid(_))
        ));
        let mut bad = decode(&segs[1]);
        bad.data_segment_count = 0;
        assert!(matches!(
            r.push(&bad.encode_to_vec(), now),
            Err(SegmentError::Invalid(_))
        ));
        let mut bad = decode(&segs[3]);
        bad.parity_segment_index = 1;
        assert!(matches!(
            r.push(&bad.encode_to_vec(), now),
            Err(SegmentError::Invalid(_))
        ));
        let mut bad = decode(&segs[1]);
        bad.data_segment_count = 200;
        bad.parity_segment_count = 56;
        assert!(matches!(
            r.push(&bad.encode_to_vec(), now),
            Err(SegmentError::Invalid(_))
        ));
        assert_eq!(r.push(&[0xff, 0xff], now), Err(SegmentError::Malformed));
        // A forged payload with the right fields: the message fails verification and is
        // dropped, never delivered wrong.
        let mut forged = decode(&segs[1]);
        forged.payload[0] ^= 1;
        r.push(&forged.encode_to_vec(), now).unwrap();
        assert_eq!(r.push(&segs[2], now), Err(SegmentError::HashMismatch));
        assert_eq!(r.pending(), (0, 0));
        assert!(r.stats().refused >= 6);
        // A forged single segment.
        let mut single = decode(&segment(b"abc", &small()).unwrap()[0]);
        single.payload = b"abd".to_vec();
        assert_eq!(
            r.push(&single.encode_to_vec(), now),
            Err(SegmentError::HashMismatch)
        );
    }

    #[test]
    fn reassembly_is_bounded_in_count_and_bytes() {
        let config = Config {
            max_pending: 3,
            max_buffered_bytes: 5 * 1024,
            ..small()
        };
        let mut r = Reassembler::new(config.clone());
        let now = Instant::now();
        // Ten incomplete messages (first segment of each): at most 3 kept, under 5 KiB.
        for i in 0..10u8 {
            let segs = segment(&payload(4000, i), &config).unwrap();
            r.push(&segs[0], now).unwrap();
            let (n, bytes) = r.pending();
            assert!(n <= 3 && bytes <= 5 * 1024, "{n} {bytes}");
        }
        assert_eq!(r.stats().evicted, 7);
        // The newest one can still complete.
        let segs = segment(&payload(4000, 9), &config).unwrap();
        let mut got = None;
        for s in &segs[1..] {
            if let Some(p) = r.push(s, now).unwrap() {
                got = Some(p);
            }
        }
        assert_eq!(got, Some(payload(4000, 9)));
    }

    #[test]
    fn config_checks() {
        assert!(Config::default().check().is_ok());
        assert!(
            Config {
                segment_size: 1000,
                ..small()
            }
            .check()
            .is_err(),
            "not a multiple of 64 with parity"
        );
        assert!(
            Config {
                segment_size: 1000,
                parity_rate: 0.0,
                max_segment_payload: 1000,
                ..small()
            }
            .check()
            .is_ok()
        );
        assert!(
            Config {
                parity_rate: 1.5,
                ..small()
            }
            .check()
            .is_err()
        );
        assert!(
            Config {
                max_message_size: 1 << 30,
                ..Config::default()
            }
            .check()
            .is_err()
        );
    }
}

//! Per-peer request rate limits: a token bucket per peer and service, in bounded state.
//! Sans-IO: the caller passes the time.
//!
//! The Nim Waku node limits the request-response services it runs per peer
//! (logos-delivery `waku/common/rate_limit/`: `per_peer_limiter.nim` for filter, 30
//! requests a minute by default; `request_limiter.nim` for store, lightpush and peer
//! exchange, off by default) and answers a request over the limit with the protocol's
//! "too many requests" code where it has one (429 in lightpush v3, the spec's table; 429
//! in store v3, filter and peer exchange, the Nim node's codes).
//!
//! Bounded state: at most [`Buckets::new`]'s `max_peers` buckets. A newcomer when full
//! takes the place of the bucket that holds the most tokens, that is the peer that has been
//! quiet longest: a full bucket is the same as no bucket, so forgetting it changes no
//! verdict. Only when every bucket is partly used can a newcomer make a peer's bucket be
//! forgotten early, which needs as many peer ids connected within one refill period as
//! there are buckets; the node's connection slots (64 peers by default) keep that far
//! below the default 1024.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A rate: up to `burst` requests at once, refilled continuously at `burst` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bucket capacity, in requests.
    pub burst: u32,
    /// Time to refill an empty bucket.
    pub per: Duration,
}

impl Rate {
    /// `burst` requests per `per`.
    pub const fn new(burst: u32, per: Duration) -> Self {
        Self { burst, per }
    }

    fn refill(&self, tokens: f64, elapsed: Duration) -> f64 {
        let cap = f64::from(self.burst);
        if self.per.is_zero() {
            return cap;
        }
        (tokens + cap * elapsed.as_secs_f64() / self.per.as_secs_f64()).min(cap)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One service's buckets, one per peer, at most `max_peers`.
#[derive(Debug, Clone)]
pub struct Buckets<K> {
    rate: Rate,
    max_peers: usize,
    peers: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    /// Buckets of `rate`, at most `max_peers` of them (at least 1).
    pub fn new(rate: Rate, max_peers: usize) -> Self {
        Self {
            rate,
            max_peers: max_peers.max(1),
            peers: HashMap::new(),
        }
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Takes a token of `peer`'s bucket if it has one; false means "too many requests".
    pub fn allow(&mut self, peer: &K, now: Instant) -> bool {
        if self.rate.burst == 0 {
            return false;
        }
        if !self.peers.contains_key(peer) {
            if self.peers.len() >= self.max_peers {
                let rate = self.rate;
                let fullest = self
                    .peers
                    .iter()
                    .map(|(k, b)| {
                        (
                            k,
                            rate.refill(b.tokens, now.saturating_duration_since(b.at)),
                        )
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(k, _)| k.clone());
                if let Some(k) = fullest {
                    self.peers.remove(&k);
                }
            }
            self.peers.insert(
                peer.clone(),
                Bucket {
                    tokens: f64::from(self.rate.burst),
                    at: now,
                },
            );
        }
        let rate = self.rate;
        let Some(b) = self.peers.get_mut(peer) else {
            return false;
        };
        b.tokens = rate.refill(b.tokens, now.saturating_duration_since(b.at));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let t = Instant::now();
        let mut b = Buckets::new(Rate::new(3, Duration::from_secs(3)), 10);
        assert!((0..3).all(|_| b.allow(&1, t)));
        assert!(!b.allow(&1, t), "burst spent");
        assert!(b.allow(&2, t), "other peers have their own bucket");
        assert!(!b.allow(&1, t + Duration::from_millis(900)));
        assert!(
            b.allow(&1, t + Duration::from_millis(1000)),
            "one token a second"
        );
        assert!(!b.allow(&1, t + Duration::from_millis(1500)));
        // Refill stops at the burst.
        let later = t + Duration::from_secs(3600);
        assert!((0..3).all(|_| b.allow(&1, later)));
        assert!(!b.allow(&1, later));
        let mut none = Buckets::new(Rate::new(0, Duration::from_secs(1)), 10);
        assert!(!none.allow(&1, t), "a zero rate refuses everything");
    }

    #[test]
    fn state_is_bounded_and_the_quietest_peer_is_forgotten_first() {
        let t = Instant::now();
        let mut b = Buckets::new(Rate::new(2, Duration::from_secs(60)), 3);
        // Peer 1 spends its burst; peers 2 and 3 use one token each, later.
        assert!(b.allow(&1, t) && b.allow(&1, t));
        assert!(b.allow(&2, t + Duration::from_secs(1)));
        assert!(b.allow(&3, t + Duration::from_secs(50)));
        // A fourth peer: the fullest bucket (peer 2's, refilled the most) makes room.
        assert!(b.allow(&4, t + Duration::from_secs(51)));
        assert_eq!(b.len(), 3);
        // Peer 1 is still limited: its empty bucket was kept.
        assert!(
            b.allow(&1, t + Duration::from_secs(51)),
            "refilled 1.7 tokens"
        );
        assert!(!b.allow(&1, t + Duration::from_secs(51)));
        for peer in 10..1000 {
            b.allow(&peer, t + Duration::from_secs(52));
        }
        assert_eq!(b.len(), 3, "never more than max_peers");
    }
}

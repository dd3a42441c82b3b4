//! The store's response byte budget: how many bytes of responses may be held at once, over
//! all peers and per peer.
//!
//! A request-response stream holds its response from the moment the store builds it until
//! the requester has read all of it (or the request times out, or the connection closes).
//! A requester that sends requests and never reads the answers therefore makes the store
//! hold whole history pages: before this budget, 128 history requests of 101 bytes raised a
//! store to 1.8 GiB. The budget charges every variable-size response (history pages and
//! directory blobs) its encoded size when it is handed to libp2p, and releases it when
//! libp2p reports the response sent or the inbound request failed. Before building a
//! response the store asks [`Budget::available`] how much it may still hold for that peer,
//! and builds a shorter page, or answers "busy", rather than exceed it.
//!
//! Plain bookkeeping with no I/O and no libp2p types, so it is tested on its own.

use std::collections::HashMap;
use std::hash::Hash;

/// Bytes held in responses not yet written, per peer and in total.
#[derive(Debug)]
pub(crate) struct Budget<P, R> {
    total_cap: usize,
    peer_cap: usize,
    total: usize,
    per_peer: HashMap<P, usize>,
    in_flight: HashMap<R, (P, usize)>,
}

impl<P: Hash + Eq + Copy, R: Hash + Eq> Budget<P, R> {
    /// A budget of `total_cap` bytes over all peers and `peer_cap` bytes per peer.
    pub(crate) fn new(total_cap: usize, peer_cap: usize) -> Self {
        Self {
            total_cap,
            peer_cap,
            total: 0,
            per_peer: HashMap::new(),
            in_flight: HashMap::new(),
        }
    }

    /// How many more bytes may be held for `peer` right now.
    pub(crate) fn available(&self, peer: &P) -> usize {
        let held = self.per_peer.get(peer).copied().unwrap_or(0);
        self.peer_cap
            .saturating_sub(held)
            .min(self.total_cap.saturating_sub(self.total))
    }

    /// Records that the response to `request` holds `bytes` for `peer` until
    /// [`Budget::release`]. Callers check [`Budget::available`] first; a charge that does not
    /// fit is still recorded (the counters then show it) rather than lost.
    pub(crate) fn charge(&mut self, request: R, peer: P, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.total = self.total.saturating_add(bytes);
        let held = self.per_peer.entry(peer).or_insert(0);
        *held = held.saturating_add(bytes);
        if let Some((old_peer, old)) = self.in_flight.insert(request, (peer, bytes)) {
            // Request ids are unique, so this does not happen; if it did, the older charge
            // is released rather than leaked.
            self.unhold(old_peer, old);
        }
    }

    /// Releases what the response to `request` held (nothing if it held nothing).
    pub(crate) fn release(&mut self, request: &R) {
        if let Some((peer, bytes)) = self.in_flight.remove(request) {
            self.unhold(peer, bytes);
        }
    }

    fn unhold(&mut self, peer: P, bytes: usize) {
        self.total = self.total.saturating_sub(bytes);
        if let Some(held) = self.per_peer.get_mut(&peer) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// Bytes held over all peers.
    pub(crate) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_bounded_alone_and_together_and_releases_restore() {
        let mut b: Budget<u8, u32> = Budget::new(100, 60);
        assert_eq!(b.available(&1), 60);
        b.charge(1, 1, 50);
        assert_eq!(b.available(&1), 10);
        assert_eq!(b.available(&2), 50, "total cap left: 100 - 50");
        b.charge(2, 2, 45);
        assert_eq!(b.available(&2), 5);
        assert_eq!(b.available(&3), 5);
        assert_eq!(b.total(), 95);
        b.release(&1);
        assert_eq!(b.available(&1), 55);
        b.release(&1);
        assert_eq!(b.total(), 45, "releasing twice changes nothing");
        b.release(&2);
        assert_eq!(b.total(), 0);
        assert!(b.per_peer.is_empty() && b.in_flight.is_empty());
        b.charge(3, 1, 0);
        assert!(b.in_flight.is_empty(), "empty responses are not tracked");
    }
}

//! Bounds on expensive inbound requests, so that a few peers sending 40-byte requests cannot make the node
//! read, encode and buffer megabytes for each (issue 11 finding 3):
//!
//! - [`Limit`]: manifest reads (up to 64 MiB read and encoded each) in progress, at most [`PER_PEER`] per
//!   peer and [`TOTAL`] in all;
//! - [`Buffered`]: bytes of answers (manifests, catalogue entries) handed to libp2p and not yet sent, at
//!   most [`ByteLimits::per_peer`] per peer and [`ByteLimits::total`] in all: a peer that asks and does
//!   not read its answers holds them in this node until they are sent or fail (up to the request timeout).
//!
//! A request beyond either bound is refused at once (`Refused`, "ask again later") rather than queued.
//! Chunk answers are not counted here: the upload slots bound them.

use std::collections::HashMap;
use std::hash::Hash;

use crate::net::protocol::MAX_RESPONSE_BYTES;

/// Manifest reads one peer may have in progress.
pub const PER_PEER: u32 = 2;
/// Manifest reads in progress in all.
pub const TOTAL: u32 = 16;

/// Counts requests in progress per peer against [`PER_PEER`] and [`TOTAL`].
#[derive(Debug)]
pub struct Limit<P> {
    per_peer: u32,
    total: u32,
    active: HashMap<P, u32>,
    in_progress: u32,
}

impl<P: Eq + Hash + Clone> Default for Limit<P> {
    fn default() -> Self {
        Self::new(PER_PEER, TOTAL)
    }
}

impl<P: Eq + Hash + Clone> Limit<P> {
    /// At most `per_peer` per peer and `total` in all.
    pub fn new(per_peer: u32, total: u32) -> Self {
        Self { per_peer, total, active: HashMap::new(), in_progress: 0 }
    }

    /// Takes a place for `peer`; `false` when it has none left (the request is to be refused).
    pub fn acquire(&mut self, peer: &P) -> bool {
        let n = self.active.get(peer).copied().unwrap_or(0);
        if n >= self.per_peer || self.in_progress >= self.total {
            return false;
        }
        self.active.insert(peer.clone(), n + 1);
        self.in_progress += 1;
        true
    }

    /// Gives back a place `peer` took.
    pub fn release(&mut self, peer: &P) {
        if let Some(n) = self.active.get_mut(peer) {
            *n -= 1;
            self.in_progress -= 1;
            if *n == 0 {
                self.active.remove(peer);
            }
        }
    }

    /// Requests in progress.
    pub fn in_progress(&self) -> u32 {
        self.in_progress
    }
}

/// Bounds of [`Buffered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteLimits {
    /// Bytes of answers waiting to be sent to one peer, at most. At least one largest answer
    /// ([`MAX_RESPONSE_BYTES`]) always fits when nothing else waits.
    pub per_peer: u64,
    /// Bytes of answers waiting to be sent, in all.
    pub total: u64,
}

impl Default for ByteLimits {
    /// One largest answer per peer; 256 MiB in all.
    fn default() -> Self {
        Self { per_peer: MAX_RESPONSE_BYTES as u64, total: 256 * 1024 * 1024 }
    }
}

/// Bytes of answers handed to libp2p and not yet sent, per peer and in all, keyed by request `R`.
#[derive(Debug)]
pub struct Buffered<P, R> {
    limits: ByteLimits,
    requests: HashMap<R, (P, u64)>,
    peers: HashMap<P, u64>,
    total: u64,
}

impl<P: Eq + Hash + Clone, R: Eq + Hash> Buffered<P, R> {
    /// Empty, with these bounds.
    pub fn new(limits: ByteLimits) -> Self {
        Self { limits, requests: HashMap::new(), peers: HashMap::new(), total: 0 }
    }

    /// Counts `bytes` of the answer to `peer`'s `request` until [`sent`](Self::sent); `false` (nothing
    /// counted) when that would pass a bound: the answer is to be refused.
    pub fn admit(&mut self, peer: &P, request: R, bytes: u64) -> bool {
        let held = self.peers.get(peer).copied().unwrap_or(0);
        if held.saturating_add(bytes) > self.limits.per_peer
            || self.total.saturating_add(bytes) > self.limits.total
        {
            return false;
        }
        if let Some((p, old)) = self.requests.insert(request, (peer.clone(), bytes)) {
            // A request id is never answered twice; if it were, its first count goes.
            self.forget(&p, old);
        }
        *self.peers.entry(peer.clone()).or_default() += bytes;
        self.total += bytes;
        true
    }

    /// The answer to `request` was sent, or failed (closed connection, timeout): its bytes are free.
    pub fn sent(&mut self, request: &R) {
        if let Some((peer, bytes)) = self.requests.remove(request) {
            self.forget(&peer, bytes);
        }
    }

    fn forget(&mut self, peer: &P, bytes: u64) {
        self.total -= bytes;
        if let Some(n) = self.peers.get_mut(peer) {
            *n -= bytes;
            if *n == 0 {
                self.peers.remove(peer);
            }
        }
    }

    /// Bytes waiting to be sent, in all.
    pub fn buffered(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_peer_and_in_all() {
        let mut l = Limit::new(2, 3);
        assert!(l.acquire(&1) && l.acquire(&1));
        assert!(!l.acquire(&1), "a third for the same peer is refused");
        assert!(l.acquire(&2));
        assert!(!l.acquire(&3), "the total is reached");
        l.release(&1);
        assert!(l.acquire(&3));
        assert_eq!(l.in_progress(), 3);
        l.release(&9);
        assert_eq!(l.in_progress(), 3, "releasing for an unknown peer changes nothing");
        for p in [1, 2, 3] {
            l.release(&p);
        }
        assert_eq!(l.in_progress(), 0);
        assert!(l.active.is_empty());
    }

    #[test]
    fn buffered_bytes_bounded_per_peer_and_in_all_until_sent() {
        let mut b = Buffered::new(ByteLimits { per_peer: 100, total: 150 });
        assert!(b.admit(&1, 10, 60) && b.admit(&1, 11, 40));
        assert!(!b.admit(&1, 12, 1), "peer 1 has 100 bytes waiting");
        assert!(b.admit(&2, 20, 50));
        assert!(!b.admit(&3, 30, 1), "150 bytes wait in all");
        b.sent(&10);
        assert!(b.admit(&3, 30, 60), "the bytes sent are free again");
        assert!(!b.admit(&2, 21, 51), "an answer alone over the per-peer bound");
        b.sent(&99);
        assert_eq!(b.buffered(), 150, "an unknown request frees nothing");
        for r in [11, 20, 30] {
            b.sent(&r);
        }
        assert_eq!(b.buffered(), 0);
        assert!(b.requests.is_empty() && b.peers.is_empty());
    }

    #[test]
    fn one_largest_answer_always_fits_by_default() {
        let mut b = Buffered::new(ByteLimits::default());
        assert!(b.admit(&1, 1, MAX_RESPONSE_BYTES as u64));
        assert!(!b.admit(&1, 2, 1));
    }
}

//! Bounds on expensive inbound requests (manifest reads: up to 64 MiB read and encoded each): at most
//! [`PER_PEER`] at once per peer and [`TOTAL`] in all. A request beyond is refused at once rather than
//! queued, so a few peers cannot pile reads onto the blocking pool or buffers into memory.

use std::collections::HashMap;
use std::hash::Hash;

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
}

//! Upload slots: a bounded number of concurrent uploads; a request beyond them gets a busy answer carrying
//! this node's load, which the asking peer's scheduler uses to back off and to score us.

use std::collections::BTreeMap;

use super::PeerKey;

/// What to answer to a chunk request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UploadDecision {
    /// Serve it now (a slot is taken until [`UploadSlots::finished`]).
    Serve,
    /// All slots are taken; `load` is this node's load (>= 1.0 means saturated).
    Busy {
        /// Active uploads / slots.
        load: f32,
    },
}

/// Tracks active uploads per peer against a fixed number of slots.
#[derive(Debug, Clone)]
pub struct UploadSlots<P: PeerKey> {
    slots: u32,
    active: u32,
    per_peer: BTreeMap<P, u32>,
}

impl<P: PeerKey> UploadSlots<P> {
    /// `slots` concurrent uploads at most (at least 1).
    pub fn new(slots: u32) -> Self {
        Self { slots: slots.max(1), active: 0, per_peer: BTreeMap::new() }
    }

    /// Decides whether to serve a request from `peer`.
    pub fn request(&mut self, peer: &P) -> UploadDecision {
        if self.active >= self.slots {
            return UploadDecision::Busy { load: self.load() };
        }
        self.active += 1;
        *self.per_peer.entry(peer.clone()).or_insert(0) += 1;
        UploadDecision::Serve
    }

    /// An upload to `peer` ended (served, failed or cancelled). Unknown peers are ignored.
    pub fn finished(&mut self, peer: &P) {
        if let Some(n) = self.per_peer.get_mut(peer) {
            *n -= 1;
            self.active -= 1;
            if *n == 0 {
                self.per_peer.remove(peer);
            }
        }
    }

    /// A peer went away: free all its slots.
    pub fn peer_left(&mut self, peer: &P) {
        if let Some(n) = self.per_peer.remove(peer) {
            self.active -= n;
        }
    }

    /// The number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Active uploads / slots (0.0 idle, 1.0 saturated).
    pub fn load(&self) -> f32 {
        self.active as f32 / self.slots as f32
    }

    /// Uploads in progress.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Change the number of slots (e.g. a bandwidth schedule); active uploads are not cut.
    pub fn set_slots(&mut self, slots: u32) {
        self.slots = slots.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_beyond_slots_with_load() {
        let mut u = UploadSlots::new(2);
        assert_eq!(u.request(&1u32), UploadDecision::Serve);
        assert_eq!(u.request(&2u32), UploadDecision::Serve);
        assert_eq!(u.request(&3u32), UploadDecision::Busy { load: 1.0 });
        u.finished(&1);
        assert_eq!(u.load(), 0.5);
        assert_eq!(u.request(&3u32), UploadDecision::Serve);
        u.peer_left(&2);
        u.peer_left(&3);
        assert_eq!(u.active(), 0);
        u.finished(&9);
        assert_eq!(u.active(), 0);
    }
}

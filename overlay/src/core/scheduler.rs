//! The chunk scheduler: which chunk to ask of which peer.
//!
//! API fixed; implementation in progress (see the foundation issue).

use std::fmt::Debug;
use std::hash::Hash;

use crate::config::{PolicyConfig, TransferConfig};
use crate::core::{Bitfield, Locality};
use crate::{ContentId, Time};

/// What identifies a peer to the core: libp2p's `PeerId` in the node, a `u32` in the simulator.
pub trait PeerKey: Clone + Eq + Hash + Ord + Debug {}
impl<T: Clone + Eq + Hash + Ord + Debug> PeerKey for T {}

/// A content this node wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSpec {
    /// The content.
    pub id: ContentId,
    /// Number of chunks.
    pub chunks: u32,
    /// Must be complete by then; earlier deadlines are fetched first. `None` = no deadline (last).
    pub deadline: Option<Time>,
}

/// Why a request did not yield a verified chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// The bytes did not match the chunk's hash: the peer is penalised.
    Corrupt,
    /// The peer answered busy with its load (0..=1, >= 1 saturated): back off from it.
    Busy {
        /// The peer's load.
        load: f32,
    },
    /// The peer said it does not have the chunk (its bitfield was stale).
    Missing,
    /// The stream or connection failed.
    Io,
}

/// A decision for the caller to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<P> {
    /// Ask `peer` for chunk `chunk` of `content`.
    Request {
        /// Whom to ask.
        peer: P,
        /// Which content.
        content: ContentId,
        /// Which chunk.
        chunk: u32,
    },
    /// Cancel an outstanding request (end-game duplicate that another peer already served).
    Cancel {
        /// Whom to tell.
        peer: P,
        /// Which content.
        content: ContentId,
        /// Which chunk.
        chunk: u32,
    },
    /// This peer misbehaved (e.g. served a corrupt chunk); the caller records it and may disconnect.
    Penalise {
        /// The culprit.
        peer: P,
    },
    /// Every chunk of `content` is held.
    Complete {
        /// The content.
        content: ContentId,
    },
}

/// Progress of one content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Chunks held.
    pub have: u32,
    /// Chunks in all.
    pub total: u32,
    /// Requests in flight for it.
    pub in_flight: u32,
}

/// The scheduler. Generic over the peer key; deterministic for a seed.
#[derive(Debug)]
pub struct Scheduler<P: PeerKey> {
    _p: std::marker::PhantomData<P>,
}

#[allow(unused_variables, clippy::todo)]
impl<P: PeerKey> Scheduler<P> {
    /// A scheduler for a node at `local`, with the given limits and weights and RNG seed.
    pub fn new(transfer: &TransferConfig, policy: &PolicyConfig, local: Locality, seed: u64) -> Self {
        todo!()
    }
    /// Start fetching a content; `have` is what is already held (verified) locally.
    pub fn add_content(&mut self, now: Time, spec: ContentSpec, have: Bitfield) {
        todo!()
    }
    /// Stop fetching a content (withdrawn); its requests in flight are forgotten.
    pub fn remove_content(&mut self, content: &ContentId) {
        todo!()
    }
    /// A peer connected.
    pub fn peer_joined(&mut self, now: Time, peer: P, locality: Locality) {
        todo!()
    }
    /// A peer disconnected: its requests in flight are re-queued.
    pub fn peer_left(&mut self, now: Time, peer: &P) {
        todo!()
    }
    /// A peer's full bitfield for a content.
    pub fn peer_bitfield(&mut self, now: Time, peer: &P, content: &ContentId, have: Bitfield) {
        todo!()
    }
    /// A peer now has one more chunk.
    pub fn peer_has(&mut self, now: Time, peer: &P, content: &ContentId, chunk: u32) {
        todo!()
    }
    /// A peer reported its load (0..=1).
    pub fn peer_load(&mut self, now: Time, peer: &P, load: f32) {
        todo!()
    }
    /// A chunk arrived from `peer`, verified and durable; `bytes` is its length (for throughput).
    pub fn chunk_received(&mut self, now: Time, peer: &P, content: &ContentId, chunk: u32, bytes: u64) {
        todo!()
    }
    /// A request failed.
    pub fn chunk_failed(&mut self, now: Time, peer: &P, content: &ContentId, chunk: u32, failure: Failure) {
        todo!()
    }
    /// Time passed: expire requests older than `transfer.request_timeout`, end back-offs.
    pub fn handle_timeout(&mut self, now: Time) {
        todo!()
    }
    /// When [`handle_timeout`](Self::handle_timeout) next needs calling, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }
    /// The next decision, if any. Call until `None` after every input.
    pub fn poll_output(&mut self, now: Time) -> Option<Output<P>> {
        todo!()
    }
    /// Progress of a content being fetched.
    pub fn progress(&self, content: &ContentId) -> Option<Progress> {
        todo!()
    }
}

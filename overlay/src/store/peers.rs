//! Per-peer statistics kept across restarts (bincode in sled).

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// What this node has exchanged with one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerStats {
    /// Bytes uploaded to the peer.
    pub bytes_up: u64,
    /// Bytes downloaded from the peer.
    pub bytes_down: u64,
    /// Requests to the peer that failed (timeouts, corrupt chunks).
    pub failures: u64,
}

impl Store {
    /// Stores `stats` for `peer` (a peer id string).
    pub fn put_peer_stats(&self, peer: &str, stats: &PeerStats) -> Result<(), StoreError> {
        let bytes = bincode::serialize(stats).map_err(|e| StoreError::record("peer stats", e))?;
        self.peers.insert(peer.as_bytes(), bytes)?;
        Ok(())
    }

    /// The stats stored for `peer`, if any.
    pub fn peer_stats(&self, peer: &str) -> Result<Option<PeerStats>, StoreError> {
        match self.peers.get(peer.as_bytes())? {
            None => Ok(None),
            Some(b) => bincode::deserialize(&b).map(Some).map_err(|e| StoreError::record("peer stats", e)),
        }
    }
}

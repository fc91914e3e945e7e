//! Persistence of the catalogue log as opaque bytes: the catalogue module owns the entry types, the
//! store only keeps them in (distributor key, seq) order.

use super::{Store, StoreError};

impl Store {
    /// Stores the entry `seq` of distributor `key` (replacing any entry with the same key and seq), without
    /// waiting for the disk: [`catalogue_flush`](Self::catalogue_flush) makes it durable off the caller's
    /// thread. An entry lost to a crash before that is fetched again from the mesh by anti-entropy.
    pub fn put_catalogue_entry(&self, key: &[u8; 32], seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let mut k = [0u8; 40];
        k[..32].copy_from_slice(key);
        k[32..].copy_from_slice(&seq.to_be_bytes());
        self.catalogue.insert(k, bytes)?;
        Ok(())
    }

    /// A flush of what was stored, to run on an async task (one fsync for a whole catch-up of entries, not
    /// one per entry on the event loop). `None` while an earlier one has not started yet: that one will
    /// carry these writes too.
    pub fn catalogue_flush(
        &self,
    ) -> Option<impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static> {
        use std::sync::atomic::Ordering;
        if self.flush_pending.swap(true, Ordering::AcqRel) {
            return None;
        }
        let (db, pending) = (self.db.clone(), self.flush_pending.clone());
        Some(async move {
            // Cleared before the flush starts: a write after this point schedules another flush.
            pending.store(false, Ordering::Release);
            db.flush_async().await?;
            Ok(())
        })
    }

    /// Every stored entry, in (key, seq) order.
    pub fn catalogue_entries(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.catalogue.iter().values().map(|v| Ok(v?.to_vec())).collect()
    }
}

//! Persistence of the catalogue log as opaque bytes: the catalogue module owns the entry types, the
//! store only keeps them in (distributor key, seq) order.

use super::{Store, StoreError};

impl Store {
    /// Stores the entry `seq` of distributor `key` (replacing any entry with the same key and seq) and
    /// flushes it to disk.
    pub fn put_catalogue_entry(&self, key: &[u8; 32], seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let mut k = [0u8; 40];
        k[..32].copy_from_slice(key);
        k[32..].copy_from_slice(&seq.to_be_bytes());
        self.catalogue.insert(k, bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every stored entry, in (key, seq) order.
    pub fn catalogue_entries(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.catalogue.iter().values().map(|v| Ok(v?.to_vec())).collect()
    }
}

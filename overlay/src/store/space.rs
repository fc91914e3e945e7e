//! Free disk space: a download that would not fit in the free space minus a reserve is refused.

use std::path::Path;

use super::{Store, StoreError};

impl Store {
    /// Succeeds when `bytes_needed + reserve` bytes are free on the data directory's file system;
    /// otherwise [`StoreError::NoSpace`] with the figures.
    pub fn check_space(&self, bytes_needed: u64, reserve: u64) -> Result<(), StoreError> {
        self.check_space_at(&self.dir, bytes_needed, reserve)
    }

    pub(crate) fn check_space_at(&self, dir: &Path, needed: u64, reserve: u64) -> Result<(), StoreError> {
        let free = fs2::available_space(dir).map_err(|e| StoreError::io(dir, e))?;
        if needed.saturating_add(reserve) > free {
            return Err(StoreError::NoSpace { dir: dir.to_path_buf(), needed, free, reserve });
        }
        Ok(())
    }

    /// Free bytes on the data directory's file system.
    pub fn free_space(&self) -> Result<u64, StoreError> {
        fs2::available_space(&self.dir).map_err(|e| StoreError::io(&self.dir, e))
    }
}

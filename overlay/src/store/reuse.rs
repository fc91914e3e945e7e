//! Reusing what is already on disk (ciruela's hardlinks): identical whole files are hard-linked (or
//! copied chunk by chunk when the file system refuses), identical chunks are copied, all before anything
//! is downloaded.
//!
//! Identical chunks are found through the sled `chunk_index` (chunk hash ++ content id -> chunk index),
//! which holds only chunks that are present, so its size is bounded by what the store holds. Copies go
//! through [`Store::write_chunk`]: verified and durable like a download.

use std::fs;
use std::sync::Arc;

use super::{chunks, content_id, Loaded, Store, StoreError};
use crate::id::{ContentId, HASH_LEN};

/// Candidates looked at per chunk hash.
const CANDIDATES: usize = 8;

impl Store {
    /// Fills missing chunks of `id` from identical ones held by this store (in other contents or
    /// elsewhere in the same one). Returns how many chunks were filled.
    pub fn reuse_local(&self, id: &ContentId) -> Result<u32, StoreError> {
        let c = self.load(id)?;
        let mut reused = 0u32;
        for (file, e) in c.manifest.files() {
            let bits = self.bitfield(id)?.ok_or(StoreError::UnknownContent(*id))?;
            if e.chunks().is_empty() || e.chunks().any(|i| bits.get(i)) {
                continue;
            }
            if self.link_file(&c, file)? {
                reused += e.chunks().len() as u32;
            }
        }
        let bits = self.bitfield(id)?.ok_or(StoreError::UnknownContent(*id))?;
        for idx in bits.iter_zeros() {
            if self.copy_chunk(&c, idx)? {
                reused += 1;
            }
        }
        if reused > 0 {
            tracing::info!(content = %id.short(), chunks = reused, "reused chunks already on disk");
        }
        Ok(reused)
    }

    /// Holders of a chunk hash: `(content, chunk index)`, at most [`CANDIDATES`].
    fn holders(&self, hash: &[u8; HASH_LEN]) -> Result<Vec<(ContentId, u32)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.index.scan_prefix(hash).take(CANDIDATES) {
            let (k, v) = kv?;
            let holder = content_id(&k[HASH_LEN..])?;
            let idx: [u8; 4] =
                v.as_ref().try_into().map_err(|_| StoreError::record("chunk index", "bad value"))?;
            out.push((holder, u32::from_be_bytes(idx)));
        }
        Ok(out)
    }

    /// Hard-links file `file` of `c` to an identical, complete file of another content. False when there
    /// is none or the file system refuses (the chunks are then copied one by one).
    fn link_file(&self, c: &Loaded, file: usize) -> Result<bool, StoreError> {
        let e = &c.manifest.entries()[file];
        let hashes = &c.manifest.hashes()[e.chunks().start as usize..e.chunks().end as usize];
        for (holder, idx) in self.holders(&hashes[0].0)? {
            if holder == c.id {
                continue;
            }
            let Ok(other) = self.load(&holder) else { continue };
            let Some(r) = other.manifest.chunk(idx) else { continue };
            let oe = &other.manifest.entries()[r.file];
            let ohashes = &other.manifest.hashes()[oe.chunks().start as usize..oe.chunks().end as usize];
            let Some(obits) = self.bitfield(&holder)? else { continue };
            if r.offset != 0
                || oe.size() != e.size()
                || ohashes != hashes
                || !oe.chunks().all(|i| obits.get(i))
            {
                continue;
            }
            if self.try_link(&other, r.file, c, file)? {
                self.mark(c, &e.chunks().collect::<Vec<_>>())?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn try_link(
        &self,
        from: &Arc<Loaded>,
        from_file: usize,
        to: &Loaded,
        to_file: usize,
    ) -> Result<bool, StoreError> {
        let src = from.file(from_file);
        let dst = to.file(to_file);
        let size = to.manifest.entries()[to_file].size();
        // The destination holds no marked chunk: it is at most a sparse placeholder, safe to replace.
        match fs::remove_file(&dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&dst, e)),
        }
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        }
        match fs::hard_link(&src, &dst) {
            Ok(()) => {
                if let Some(parent) = dst.parent() {
                    chunks::sync_dir(parent)?;
                }
                Ok(true)
            }
            Err(err) => {
                tracing::debug!(src = %src.display(), dst = %dst.display(), %err, "hard link refused; copying chunks");
                // Put the placeholder back so chunk copies and the size check at open find it.
                let f = fs::File::create(&dst).map_err(|e| StoreError::io(&dst, e))?;
                f.set_len(size).map_err(|e| StoreError::io(&dst, e))?;
                Ok(false)
            }
        }
    }

    /// Copies chunk `idx` of `c` from a holder of the same hash; false when no holder could give it.
    fn copy_chunk(&self, c: &Loaded, idx: u32) -> Result<bool, StoreError> {
        let hash = c.manifest.hashes()[idx as usize];
        for (holder, hidx) in self.holders(&hash.0)? {
            if holder == c.id && hidx == idx {
                continue;
            }
            let Ok(bytes) = self.read_chunk(&holder, hidx) else { continue };
            match self.write_chunk(&c.id, idx, &bytes) {
                Ok(()) => return Ok(true),
                Err(StoreError::Corrupt { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

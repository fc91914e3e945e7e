//! Chunks: verified, durable writes; reads of held chunks; on-demand verification.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use super::commit::{Settled, Written};
use super::{Loaded, Store, StoreError};
use crate::content::scan::{hash_range, READ_BUF};
use crate::content::ChunkRef;
use crate::core::Bitfield;
use crate::id::{ChunkHash, ContentId};

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Chunks that were marked held and were rechecked.
    pub checked: u32,
    /// Of those, chunks whose bytes did not match (now unmarked, to be fetched again).
    pub bad: u32,
    /// Chunks held after the check.
    pub present: u32,
    /// Chunks in the content.
    pub total: u32,
}

/// Where a crash is simulated in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// No crash.
    Never,
    /// Stop after the bytes are written and synced, before the chunk is marked.
    BeforeMark,
}

impl Store {
    /// Stores chunk `idx` of content `id`: checks its length and hash first (a mismatch is
    /// [`StoreError::Corrupt`] and nothing is written), writes it at its offset in the real file, syncs
    /// the file, then marks it held in sled and flushes sled; returns once the mark is durable. Writers at
    /// the same time share the syncs and the flush (`commit`). A chunk already held is
    /// left as it is.
    pub fn write_chunk(&self, id: &ContentId, idx: u32, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_chunk_with(id, idx, bytes, Crash::Never)
    }

    pub(crate) fn write_chunk_with(
        &self,
        id: &ContentId,
        idx: u32,
        bytes: &[u8],
        crash: Crash,
    ) -> Result<(), StoreError> {
        let Some(w) = self.write_unsynced(id, idx, bytes)? else { return Ok(()) };
        if crash == Crash::BeforeMark {
            return sync_file(&w.file, &w.path, w.created);
        }
        let (path, created) = (w.path.clone(), w.created);
        match self.settle(self.commits.enqueue(w)) {
            Settled::Marked => Ok(()),
            // Its batch failed: this chunk alone, for its own verdict.
            Settled::Failed => {
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| StoreError::io(&path, e))?;
                sync_file(&f, &path, created)?;
                let c = self.load(id)?;
                self.mark(&c, &[idx])
            }
        }
    }

    /// Checks chunk `idx` of `id` against the manifest and writes it at its offset, without a sync: what
    /// [`write_chunk`](Self::write_chunk) then commits. `None` if the chunk is already held.
    pub(crate) fn write_unsynced(
        &self,
        id: &ContentId,
        idx: u32,
        bytes: &[u8],
    ) -> Result<Option<Written>, StoreError> {
        let c = self.load(id)?;
        let chunk = chunk_ref(&c, idx)?;
        let corrupt = |reason: String| StoreError::Corrupt { content: *id, chunk: idx, reason };
        if bytes.len() != chunk.len as usize {
            return Err(corrupt(format!("{} bytes, expected {}", bytes.len(), chunk.len)));
        }
        if ChunkHash::of(bytes) != chunk.hash {
            return Err(corrupt("hash does not match the manifest".into()));
        }
        if self.bitfield(id)?.is_some_and(|b| b.get(idx)) {
            return Ok(None);
        }
        let path = c.file(chunk.file);
        let size = c.manifest.entries()[chunk.file].size();
        let existed = path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        if file.metadata().map_err(|e| StoreError::io(&path, e))?.len() != size {
            file.set_len(size).map_err(|e| StoreError::io(&path, e))?;
        }
        file.write_all_at(bytes, chunk.offset).map_err(|e| StoreError::io(&path, e))?;
        Ok(Some(Written { content: *id, index: idx, file, path, created: !existed }))
    }

    /// The bytes of chunk `idx`, only if it is held. Not rehashed here: the receiver verifies, and
    /// [`verify`](Self::verify) rechecks on demand.
    pub fn read_chunk(&self, id: &ContentId, idx: u32) -> Result<Vec<u8>, StoreError> {
        let (path, chunk) = self.held_chunk(id, idx)?;
        let mut buf = vec![0u8; chunk.len as usize];
        read_at(&path, chunk.offset, &mut buf)?;
        Ok(buf)
    }

    /// Opens held chunk `idx` of `id` for an upload that streams it: the file, the chunk's offset in it and
    /// its length. The open file stays readable if the content is removed meanwhile.
    pub fn open_chunk(&self, id: &ContentId, idx: u32) -> Result<(File, u64, u64), StoreError> {
        let (path, chunk) = self.held_chunk(id, idx)?;
        let f = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
        Ok((f, chunk.offset, u64::from(chunk.len)))
    }

    /// The file and place of chunk `idx` of `id`, only if it is held.
    fn held_chunk(&self, id: &ContentId, idx: u32) -> Result<(std::path::PathBuf, ChunkRef), StoreError> {
        let c = self.load(id)?;
        let chunk = chunk_ref(&c, idx)?;
        if !self.bitfield(id)?.is_some_and(|b| b.get(idx)) {
            return Err(StoreError::NotPresent { content: *id, chunk: idx });
        }
        Ok((c.file(chunk.file), chunk))
    }

    /// Rehashes every held chunk of `id` (on every core) and unmarks those whose bytes on disk no longer
    /// match, so they are fetched again.
    pub fn verify(&self, id: &ContentId) -> Result<VerifyReport, StoreError> {
        let c = self.load(id)?;
        let bits = self.bitfield(id)?.ok_or(StoreError::UnknownContent(*id))?;
        let held: Vec<u32> = bits.iter_ones().collect();
        let (good, _) = hash_present(&c, held.clone())?;
        let bad: Vec<u32> = held.iter().copied().filter(|&i| !good.get(i)).collect();
        self.unmark(&c, &bad)?;
        let present = self.bitfield(id)?.map_or(0, |b| b.count());
        Ok(VerifyReport { checked: held.len() as u32, bad: bad.len() as u32, present, total: bits.len() })
    }
}

fn chunk_ref(c: &Loaded, idx: u32) -> Result<ChunkRef, StoreError> {
    c.manifest.chunk(idx).ok_or(StoreError::ChunkOutOfRange {
        content: c.id,
        chunk: idx,
        count: c.manifest.chunk_count(),
    })
}

/// Hashes chunks `which` as found on disk, in parallel; returns the bitfield of those that match and
/// how many were read. Unreadable or short files count as not matching.
pub(crate) fn hash_present(c: &Loaded, which: Vec<u32>) -> Result<(Bitfield, u32), StoreError> {
    let ok: Vec<u32> = which
        .par_iter()
        .map_init(
            || vec![0u8; READ_BUF.min(c.manifest.chunk_size() as usize)],
            |buf, &i| {
                let chunk = c.manifest.chunk(i)?;
                let file = File::open(c.file(chunk.file)).ok()?;
                let hash = hash_range(&file, chunk.offset, u64::from(chunk.len), buf).ok()?;
                (hash == chunk.hash).then_some(i)
            },
        )
        .flatten()
        .collect();
    let mut bits = Bitfield::new(c.manifest.chunk_count());
    for &i in &ok {
        bits.set(i);
    }
    Ok((bits, which.len() as u32))
}

pub(crate) fn read_at(path: &Path, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
    let f = File::open(path).map_err(|e| StoreError::io(path, e))?;
    f.read_exact_at(buf, offset).map_err(|e| StoreError::io(path, e))
}

/// Syncs a file's data and, if the file was just created, its directory entry.
fn sync_file(f: &File, path: &Path, created: bool) -> Result<(), StoreError> {
    f.sync_data().map_err(|e| StoreError::io(path, e))?;
    if created {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Makes a directory's entries (new files, links) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

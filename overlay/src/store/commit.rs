//! Group commit: chunks written at the same time share one `fsync` per file and one sled flush.
//!
//! A chunk is marked only after its bytes are durable, and its writer returns only after the mark is
//! durable, exactly as with a sync per chunk; what changes is who pays. A writer that finds no sync under
//! way becomes the leader: it takes every chunk queued so far (its own included), syncs each distinct file
//! once, syncs the directories of new files, marks the chunks in sled and flushes sled once, then wakes
//! the others. Writers arriving while it syncs queue up and are carried by the next leader, so under load
//! the syncs per chunk fall towards one per batch (databases commit their logs this way), and a lone
//! writer pays what it paid before. The queue holds only chunks whose writers are waiting on it, so it is
//! bounded by the writers at once (the node's request window).
//!
//! If a batch fails (a full disk, a content removed meanwhile), each of its writers then syncs and marks
//! its own chunk alone and returns its own verdict, so one bad chunk never fails another's write. Marks
//! the failed batch may already have set (contents before the failing one) are of synced bytes, and
//! marking again is harmless.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::chunks::sync_dir;
use super::{Store, StoreError};
use crate::id::ContentId;

/// A chunk written, waiting for its sync and mark.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) content: ContentId,
    pub(crate) index: u32,
    /// The file it was written to, still open.
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    /// The file was created by this write (its directory entry needs a sync too).
    pub(crate) created: bool,
}

/// The commit queue of a [`Store`].
#[derive(Debug, Default)]
pub(crate) struct Commits {
    state: Mutex<State>,
    settled: Condvar,
    /// Batches synced and marked so far (the metric `cinemesh_store_commits_total`).
    batches: AtomicU64,
    /// Chunks they carried.
    chunks: AtomicU64,
    /// Tests: the next batch fails as a whole.
    #[cfg(test)]
    pub(crate) fail_next: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Written and waiting, in ticket order.
    queue: Vec<(u64, Written)>,
    /// The last ticket handed out.
    issued: u64,
    /// Every ticket up to this one has been carried by a batch.
    settled: u64,
    /// Tickets whose batch failed; their writers retry alone (each removes its own).
    failed: BTreeSet<u64>,
    /// A leader is syncing.
    syncing: bool,
}

/// How a ticket ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Synced and marked by a batch.
    Marked,
    /// Its batch failed: sync and mark it alone.
    Failed,
}

impl Commits {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every change is one assignment).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a written chunk; the ticket is what [`Store::settle`] waits for.
    pub(crate) fn enqueue(&self, w: Written) -> u64 {
        let mut st = self.lock();
        st.issued += 1;
        let ticket = st.issued;
        st.queue.push((ticket, w));
        ticket
    }
}

/// Clears `syncing` and wakes the waiters even if the leader unwinds.
struct Leading<'a> {
    commits: &'a Commits,
    last: u64,
    tickets: Vec<u64>,
    ok: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut st = self.commits.lock();
        st.syncing = false;
        st.settled = st.settled.max(self.last);
        if !self.ok {
            st.failed.extend(self.tickets.iter().copied());
        }
        drop(st);
        self.commits.settled.notify_all();
    }
}

impl Store {
    /// Chunk-write commits so far and the chunks they carried: each commit synced its files once and
    /// flushed the metadata once.
    pub fn commit_counts(&self) -> (u64, u64) {
        (self.commits.batches.load(Ordering::Relaxed), self.commits.chunks.load(Ordering::Relaxed))
    }

    /// Waits until `ticket`'s chunk is synced and marked, leading a batch when no other writer is.
    pub(crate) fn settle(&self, ticket: u64) -> Settled {
        let commits = &self.commits;
        let mut st = commits.lock();
        loop {
            if st.settled >= ticket {
                return if st.failed.remove(&ticket) { Settled::Failed } else { Settled::Marked };
            }
            if !st.syncing {
                st.syncing = true;
                let batch = std::mem::take(&mut st.queue);
                drop(st);
                let last = batch.last().map_or(0, |(t, _)| *t);
                let tickets = batch.iter().map(|(t, _)| *t).collect();
                let mut lead = Leading { commits, last, tickets, ok: false };
                lead.ok = self.commit_batch(batch.into_iter().map(|(_, w)| w).collect()).is_ok();
                drop(lead);
                st = commits.lock();
                continue;
            }
            st = commits.settled.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Syncs every file of `batch` once and the directories of new files, then marks its chunks and
    /// flushes sled once.
    fn commit_batch(&self, batch: Vec<Written>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self.commits.fail_next.swap(false, Ordering::Relaxed) {
            return Err(StoreError::record("commit", "failure injected by a test"));
        }
        let mut files = HashSet::new();
        let mut dirs = HashSet::new();
        let mut by_content: BTreeMap<ContentId, Vec<u32>> = BTreeMap::new();
        for w in &batch {
            if files.insert(&w.path) {
                w.file.sync_data().map_err(|e| StoreError::io(&w.path, e))?;
            }
            if w.created {
                if let Some(dir) = w.path.parent() {
                    dirs.insert(dir);
                }
            }
            by_content.entry(w.content).or_default().push(w.index);
        }
        for dir in dirs {
            sync_dir(dir)?;
        }
        for (id, chunks) in &by_content {
            let c = self.load(id)?;
            self.mark_unflushed(&c, chunks)?;
        }
        self.db.flush()?;
        self.commits.batches.fetch_add(1, Ordering::Relaxed);
        self.commits.chunks.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

//! The store: sled for metadata, content written in place as the real files.
//!
//! # Layout of the data directory
//!
//! ```text
//! <data_dir>/meta/                      sled database
//! <data_dir>/content/<content-id-hex>/  managed content, as the real files (relative paths of the manifest)
//! ```
//!
//! sled trees: `manifests` (id -> canonical manifest), `roots` (id -> managed or external path),
//! `bitfields` (id -> chunk count, packed [`Bitfield`]), `chunk_index` (chunk hash ++ id -> chunk index,
//! only for chunks present: used to reuse identical chunks), `catalogue` (key ++ seq -> entry bytes),
//! `peers` (peer id -> bincode [`PeerStats`]), `quarantine` (tree name ++ `/` ++ key -> the record moved
//! there because it did not decode at [`Store::open`]).
//!
//! # Start-up repairs
//!
//! [`Store::open`] never refuses to start over one bad record: a content whose manifest, root or bitfield
//! record does not decode (or lacks one of them) is moved to `quarantine` with a warning, and the node
//! goes on without it (a targeted content is fetched again). Directories under `content/` named like a
//! content id that no stored managed content owns are left-overs of a crash during removal or during
//! adding: they are deleted.
//!
//! # Durability
//!
//! A chunk is marked present only after its bytes matched the manifest's hash and were written and
//! `fsync`ed in the real file; then the bit is set in sled and sled is flushed (chunks written at the same
//! time share the syncs and the flush: `commit` is a group commit). A crash between the two
//! loses only the chunks in flight: their bytes may be on disk but they are not marked, and they are
//! fetched again. The bitfield in sled is the truth on restart: nothing is rehashed wholesale, only the
//! files' sizes are checked at [`Store::open`] (a file missing or of the wrong size loses its marks).
//! [`Store::verify`] rehashes on demand.
//!
//! Files: [`chunks`] (write, read, verify), [`reuse`] (identical chunks and
//! files from other contents), [`space`] (free space), [`catalogue`] and
//! [`peers`] (opaque catalogue log, peer stats), [`error`].

pub mod catalogue;
pub mod chunks;
mod commit;
pub mod error;
pub mod peers;
pub mod reuse;
pub mod space;

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sled::transaction::{TransactionError, Transactional};

use crate::content::Manifest;
use crate::core::Bitfield;
use crate::id::{ContentId, HASH_LEN};

pub use chunks::VerifyReport;
pub use error::StoreError;
pub use peers::PeerStats;

/// Free space kept in any case unless [`Store::set_reserve`] says otherwise: 1 GiB.
pub const DEFAULT_RESERVE: u64 = 1 << 30;
/// Decoded manifests kept in memory (the most recently used ones).
const MANIFEST_CACHE: usize = 8;

/// Where a content's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentRoot {
    /// Under the data directory: `<data_dir>/content/<id-hex>/`. Removing the content deletes the files.
    Managed,
    /// Where the content already lies (a publisher seeding its own files): the directory against which the
    /// manifest's paths resolve (see [`content::base_dir`](crate::content::base_dir)). Never deleted.
    External(PathBuf),
}

/// What is already held when a content is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Have {
    /// Nothing: every chunk is to be downloaded (files are created at full size, sparse).
    Nothing,
    /// Hash every chunk found on disk and mark those that match (a full read).
    Verify,
    /// Every chunk, without reading: the manifest was just built from these very files. Sizes are checked.
    Trusted,
}

/// A manifest with where its files are.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) id: ContentId,
    pub(crate) manifest: Manifest,
    pub(crate) base: PathBuf,
    pub(crate) managed: bool,
}

impl Loaded {
    /// The real path of entry `file`.
    pub(crate) fn file(&self, file: usize) -> PathBuf {
        self.manifest.file_path(file).under(&self.base)
    }
}

/// The store (see the module doc). Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    manifests: sled::Tree,
    roots: sled::Tree,
    bitfields: sled::Tree,
    index: sled::Tree,
    catalogue: sled::Tree,
    peers: sled::Tree,
    quarantine: sled::Tree,
    reserve: u64,
    cache: Mutex<VecDeque<Arc<Loaded>>>,
    /// A background flush of the catalogue is on its way (see `catalogue_flush`).
    flush_pending: Arc<std::sync::atomic::AtomicBool>,
    /// Chunk writes waiting for their sync and mark ([`commit`]).
    commits: commit::Commits,
}

/// How long [`Store::open`] waits for sled's lock: a store closed an instant ago releases it from sled's
/// flusher thread, a moment later.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled, waiting (bounded) for a lock still held by a store being closed in this process; another
/// process holding it is reported as such.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let start = std::time::Instant::now();
    loop {
        match sled::open(path) {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if start.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked { path: path.to_owned() });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

impl Store {
    /// Opens (or creates) the store under `data_dir`, then checks the size of every file holding marked
    /// chunks; a file missing or of the wrong size loses its marks (nothing is rehashed).
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let content = data_dir.join("content");
        fs::create_dir_all(&content).map_err(|e| StoreError::io(&content, e))?;
        let db = open_db(&data_dir.join("meta"))?;
        let store = Store {
            dir: data_dir.to_path_buf(),
            manifests: db.open_tree("manifests")?,
            roots: db.open_tree("roots")?,
            bitfields: db.open_tree("bitfields")?,
            index: db.open_tree("chunk_index")?,
            catalogue: db.open_tree("catalogue")?,
            peers: db.open_tree("peers")?,
            quarantine: db.open_tree("quarantine")?,
            db,
            reserve: DEFAULT_RESERVE,
            cache: Mutex::new(VecDeque::new()),
            flush_pending: Arc::default(),
            commits: commit::Commits::default(),
        };
        store.quarantine_broken()?;
        store.collect_orphans()?;
        for id in store.contents()? {
            store.check_sizes(&id)?;
        }
        Ok(store)
    }

    /// Moves the records of every content whose manifest, root or bitfield does not decode (or is
    /// missing) to the `quarantine` tree. Returns how many contents were quarantined.
    fn quarantine_broken(&self) -> Result<usize, StoreError> {
        let trees = [("manifests", &self.manifests), ("roots", &self.roots), ("bitfields", &self.bitfields)];
        let mut keys = BTreeSet::new();
        for (_, tree) in trees {
            for k in tree.iter().keys() {
                keys.insert(k?.to_vec());
            }
        }
        let mut moved = 0;
        for key in keys {
            let Err(why) = self.check_records(&key) else { continue };
            tracing::warn!(
                key = %hex::encode(&key),
                "stored content record unreadable ({why}): moved to the quarantine tree; the content is fetched \
                 again if it is still targeted here"
            );
            for (name, tree) in trees {
                if let Some(v) = tree.remove(&key)? {
                    self.quarantine.insert([name.as_bytes(), b"/", &key].concat(), v)?;
                }
            }
            moved += 1;
        }
        if moved > 0 {
            self.db.flush()?;
        }
        Ok(moved)
    }

    /// Whether a content's three records are present and decode, consistently.
    fn check_records(&self, key: &[u8]) -> Result<(), StoreError> {
        let id = content_id(key)?;
        let missing = |what| StoreError::record(what, "missing");
        let manifest = self.manifest(&id)?.ok_or_else(|| missing("manifest"))?;
        self.content_path(&id)?.ok_or_else(|| missing("content root"))?;
        let bits = self.bitfield(&id)?.ok_or_else(|| missing("bitfield"))?;
        if bits.len() != manifest.chunk_count() {
            return Err(StoreError::record("bitfield", "length differs from the manifest's chunk count"));
        }
        Ok(())
    }

    /// Deletes directories under `content/` named like a content id that no stored managed content owns.
    /// Returns how many were deleted.
    fn collect_orphans(&self) -> Result<usize, StoreError> {
        let content = self.dir.join("content");
        let listing = fs::read_dir(&content).map_err(|e| StoreError::io(&content, e))?;
        let mut removed = 0;
        for entry in listing {
            let entry = entry.map_err(|e| StoreError::io(&content, e))?;
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<ContentId>().ok()) else {
                continue;
            };
            if self.content_path(&id)?.is_some_and(|p| p == self.managed_dir(&id)) {
                continue;
            }
            let path = entry.path();
            tracing::warn!(path = %path.display(), "content files without metadata (left by a crash during removal): deleting");
            fs::remove_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Sets the free space kept in any case (see [`check_space`](Self::check_space)).
    pub fn set_reserve(&mut self, reserve: u64) {
        self.reserve = reserve;
    }

    /// The free space kept in any case.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn managed_dir(&self, id: &ContentId) -> PathBuf {
        self.dir.join("content").join(id.to_hex())
    }

    /// Adds a content: its manifest, where its files are, and what is already held (see [`Have`]).
    /// For a managed root (or when nothing is held) the files are created at full size after checking
    /// that they fit in the free space minus the reserve. Adding a content already stored at the same root
    /// does nothing.
    pub fn add_content(&self, manifest: &Manifest, root: ContentRoot, have: Have) -> Result<(), StoreError> {
        let id = manifest.id();
        let (base, managed) = match &root {
            ContentRoot::Managed => (self.managed_dir(&id), true),
            ContentRoot::External(p) => (p.clone(), false),
        };
        if let Some(existing) = self.content_path(&id)? {
            return if existing == base {
                Ok(())
            } else {
                Err(StoreError::RootConflict { content: id, existing })
            };
        }
        let loaded = Loaded { id, manifest: manifest.clone(), base, managed };
        if managed || have == Have::Nothing {
            self.prepare_files(&loaded)?;
        }
        let bits = match have {
            Have::Nothing => Bitfield::new(manifest.chunk_count()),
            Have::Trusted => {
                for (i, e) in manifest.files() {
                    let path = loaded.file(i);
                    let actual = fs::metadata(&path).map_err(|e| StoreError::io(&path, e))?.len();
                    if actual != e.size() {
                        return Err(StoreError::SizeMismatch { path, expected: e.size(), actual });
                    }
                }
                Bitfield::full(manifest.chunk_count())
            }
            Have::Verify => chunks::hash_present(&loaded, (0..manifest.chunk_count()).collect())?.0,
        };
        let root_rec = match &root {
            ContentRoot::Managed => vec![b'M'],
            ContentRoot::External(p) => [b"E".as_slice(), p.as_os_str().as_bytes()].concat(),
        };
        (&self.manifests, &self.roots, &self.bitfields)
            .transaction(|(m, r, b)| {
                b.insert(&id.0, encode_bits(&bits))?;
                r.insert(&id.0, root_rec.as_slice())?;
                m.insert(&id.0, manifest.encode())?;
                Ok(())
            })
            .map_err(tx_err)?;
        for i in bits.iter_ones() {
            self.index.insert(index_key(&manifest.hashes()[i as usize].0, &id), &i.to_be_bytes())?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Creates directories and files at full size (sparse), after checking the space they need.
    fn prepare_files(&self, c: &Loaded) -> Result<(), StoreError> {
        let mut needed = 0u64;
        for (i, e) in c.manifest.files() {
            let have = fs::metadata(c.file(i)).map(|m| m.len()).unwrap_or(0);
            needed += e.size().saturating_sub(have);
        }
        fs::create_dir_all(&c.base).map_err(|e| StoreError::io(&c.base, e))?;
        self.check_space_at(&c.base, needed, self.reserve)?;
        let mut dirs = BTreeSet::new();
        for (i, e) in c.manifest.entries().iter().enumerate() {
            let path = c.file(i);
            if e.is_dir() {
                fs::create_dir_all(&path).map_err(|err| StoreError::io(&path, err))?;
                continue;
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|err| StoreError::io(parent, err))?;
                dirs.insert(parent.to_path_buf());
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|err| StoreError::io(&path, err))?;
            let len = f.metadata().map_err(|err| StoreError::io(&path, err))?.len();
            if len != e.size() {
                f.set_len(e.size()).map_err(|err| StoreError::io(&path, err))?;
            }
        }
        for d in dirs {
            chunks::sync_dir(&d)?;
        }
        Ok(())
    }

    /// The manifest of a stored content.
    pub fn manifest(&self, id: &ContentId) -> Result<Option<Manifest>, StoreError> {
        match self.manifests.get(id.0)? {
            Some(bytes) => Ok(Some(Manifest::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every stored content, ordered by id.
    pub fn contents(&self) -> Result<Vec<ContentId>, StoreError> {
        self.manifests.iter().keys().map(|k| content_id(&k?)).collect()
    }

    /// The directory against which a stored content's paths resolve.
    pub fn content_path(&self, id: &ContentId) -> Result<Option<PathBuf>, StoreError> {
        match self.roots.get(id.0)? {
            None => Ok(None),
            Some(rec) => match rec.split_first() {
                Some((b'M', _)) => Ok(Some(self.managed_dir(id))),
                Some((b'E', p)) => Ok(Some(PathBuf::from(OsStr::from_bytes(p)))),
                _ => Err(StoreError::record("content root", "unknown kind")),
            },
        }
    }

    /// Which chunks of a content are held (verified and durable).
    pub fn bitfield(&self, id: &ContentId) -> Result<Option<Bitfield>, StoreError> {
        self.bitfields.get(id.0)?.map(|b| decode_bits(&b)).transpose()
    }

    /// Forgets a content: metadata first (so nothing stays marked), then its files if managed.
    pub fn remove_content(&self, id: &ContentId) -> Result<(), StoreError> {
        let Ok(c) = self.load(id) else { return Ok(()) };
        (&self.manifests, &self.roots, &self.bitfields)
            .transaction(|(m, r, b)| {
                b.remove(&id.0)?;
                m.remove(&id.0)?;
                r.remove(&id.0)?;
                Ok(())
            })
            .map_err(tx_err)?;
        for h in c.manifest.hashes() {
            self.index.remove(index_key(&h.0, id))?;
        }
        self.db.flush()?;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).retain(|l| l.id != *id);
        if c.managed {
            match fs::remove_dir_all(&c.base) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&c.base, e)),
            }
        }
        Ok(())
    }

    /// The manifest and root of a content, from a small most-recently-used cache.
    pub(crate) fn load(&self, id: &ContentId) -> Result<Arc<Loaded>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = cache.iter().position(|l| l.id == *id) {
            let l = cache.remove(pos).ok_or(StoreError::UnknownContent(*id))?;
            cache.push_front(l.clone());
            return Ok(l);
        }
        drop(cache);
        let manifest = self.manifest(id)?.ok_or(StoreError::UnknownContent(*id))?;
        let base = self.content_path(id)?.ok_or(StoreError::UnknownContent(*id))?;
        let managed = base == self.managed_dir(id);
        let l = Arc::new(Loaded { id: *id, manifest, base, managed });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.push_front(l.clone());
        cache.truncate(MANIFEST_CACHE);
        Ok(l)
    }

    /// Clears the marks of chunks whose file is missing or has the wrong size.
    fn check_sizes(&self, id: &ContentId) -> Result<(), StoreError> {
        let c = self.load(id)?;
        let Some(bits) = self.bitfield(id)? else { return Ok(()) };
        let mut lost = Vec::new();
        for (i, e) in c.manifest.files() {
            if e.chunks().all(|k| !bits.get(k)) {
                continue;
            }
            let ok = fs::metadata(c.file(i)).is_ok_and(|m| m.is_file() && m.len() == e.size());
            if !ok {
                tracing::warn!(content = %id.short(), file = %c.manifest.file_path(i), "file missing or resized: its chunks will be fetched again");
                lost.extend(e.chunks());
            }
        }
        self.unmark(&c, &lost)
    }

    /// Sets the bits of `chunks`, indexes them, and flushes sled.
    pub(crate) fn mark(&self, c: &Loaded, chunks: &[u32]) -> Result<(), StoreError> {
        self.mark_unflushed(c, chunks)?;
        self.db.flush()?;
        Ok(())
    }

    /// [`mark`](Self::mark) without the flush: the caller flushes (a commit batch, once for all).
    pub(crate) fn mark_unflushed(&self, c: &Loaded, chunks: &[u32]) -> Result<(), StoreError> {
        self.update_bits(&c.id, |b| {
            for &i in chunks {
                b.set(i);
            }
        })?;
        for &i in chunks {
            self.index.insert(index_key(&c.manifest.hashes()[i as usize].0, &c.id), &i.to_be_bytes())?;
        }
        Ok(())
    }

    /// Clears the bits of `chunks`, drops them from the index, and flushes sled.
    pub(crate) fn unmark(&self, c: &Loaded, chunks: &[u32]) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        for &i in chunks {
            self.index.remove(index_key(&c.manifest.hashes()[i as usize].0, &c.id))?;
        }
        self.update_bits(&c.id, |b| {
            for &i in chunks {
                b.clear(i);
            }
        })?;
        self.db.flush()?;
        Ok(())
    }

    /// Atomic read-modify-write of a content's bitfield (safe under concurrent writers).
    fn update_bits(&self, id: &ContentId, f: impl Fn(&mut Bitfield)) -> Result<(), StoreError> {
        let mut bad = None;
        self.bitfields.update_and_fetch(id.0, |old| {
            let old = old?;
            match decode_bits(old) {
                Ok(mut b) => {
                    f(&mut b);
                    Some(encode_bits(&b))
                }
                Err(e) => {
                    bad = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }
}

fn tx_err(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Db(e),
        TransactionError::Abort(()) => StoreError::record("transaction", "aborted"),
    }
}

pub(crate) fn content_id(k: &[u8]) -> Result<ContentId, StoreError> {
    let a: [u8; HASH_LEN] = k.try_into().map_err(|_| StoreError::record("content id", "not 32 bytes"))?;
    Ok(ContentId(a))
}

pub(crate) fn index_key(hash: &[u8; HASH_LEN], id: &ContentId) -> [u8; 2 * HASH_LEN] {
    let mut k = [0u8; 2 * HASH_LEN];
    k[..HASH_LEN].copy_from_slice(hash);
    k[HASH_LEN..].copy_from_slice(&id.0);
    k
}

fn encode_bits(b: &Bitfield) -> Vec<u8> {
    [b.len().to_be_bytes().as_slice(), &b.to_bytes()].concat()
}

fn decode_bits(bytes: &[u8]) -> Result<Bitfield, StoreError> {
    let (len, rest) =
        bytes.split_first_chunk::<4>().ok_or_else(|| StoreError::record("bitfield", "truncated"))?;
    Bitfield::from_bytes(u32::from_be_bytes(*len), rest).map_err(|e| StoreError::record("bitfield", e))
}

#[cfg(test)]
mod tests;

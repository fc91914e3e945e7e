//! [`Manifest`]: the paths, sizes and chunk hashes of one content, and its canonical encoding.
//!
//! # Chunking
//!
//! Each file is cut into pieces of `chunk_size` bytes (its last piece may be short; an empty file has no
//! chunk). Chunks are numbered globally across the manifest, file after file in path order, so chunk `i` is
//! one `(file, offset, len)` and one BLAKE3 [`ChunkHash`]. Empty directories are kept as entries of their own.
//!
//! # Canonical encoding (version 1)
//!
//! All integers are big-endian. The [`ContentId`] is the BLAKE3 hash of these bytes.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "CMMF"
//! 4       2     version = 1
//! 6       4     chunk size in bytes (a power of two, 64KiB..=64MiB)
//! 10      4     entry count N
//! 14      ...   N entries, sorted by path bytes, strictly increasing (no duplicates):
//!                 1   kind: 0 = file, 1 = empty directory
//!                 2   path length L (1..=4096)
//!                 L   path: UTF-8, `/`-separated, relative (see RelPath)
//!               and for a file only:
//!                 8   size in bytes
//!                 4   chunk count C, which must equal ceil(size / chunk size)
//!                 32C the BLAKE3 hash of each chunk, in order
//! ```
//!
//! Nothing may follow the last entry. An entry may not lie below a file or below an (empty) directory
//! entry. The whole encoding is at most [`MAX_MANIFEST_BYTES`] and holds at most [`MAX_ENTRIES`] entries.
//! Decoding checks every rule above and names what is wrong; it never panics on any input.

use std::collections::HashSet;
use std::ops::Range;

use super::error::ContentError;
use super::path::RelPath;
use crate::config::CHUNK_SIZE_RANGE;
use crate::id::{ChunkHash, ContentId, HASH_LEN};

/// The four bytes every encoded manifest starts with.
pub const MAGIC: &[u8; 4] = b"CMMF";
/// The encoding version written by [`Manifest::encode`].
pub const VERSION: u16 = 1;
/// Largest encoded manifest accepted (64 MiB: about two million chunks, 8 PB at 4 MiB chunks).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;
/// Most entries (files and empty directories) in one manifest.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// A file `(size, chunk hashes)` or, when `None`, an empty directory, at a path.
type Item = (RelPath, Option<(u64, Vec<ChunkHash>)>);

const KIND_FILE: u8 = 0;
const KIND_DIR: u8 = 1;

/// Checks that `chunk_size` is a power of two within [`CHUNK_SIZE_RANGE`].
pub fn check_chunk_size(chunk_size: u64) -> Result<u32, ContentError> {
    if CHUNK_SIZE_RANGE.contains(&chunk_size) && chunk_size.is_power_of_two() {
        u32::try_from(chunk_size).map_err(|_| ContentError::ChunkSize(chunk_size))
    } else {
        Err(ContentError::ChunkSize(chunk_size))
    }
}

/// One entry of a manifest: a file or an empty directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    path: RelPath,
    dir: bool,
    size: u64,
    first_chunk: u32,
    chunk_count: u32,
}

impl Entry {
    /// Its path inside the content.
    pub fn path(&self) -> &RelPath {
        &self.path
    }

    /// True for an empty directory, false for a file.
    pub fn is_dir(&self) -> bool {
        self.dir
    }

    /// Size in bytes (0 for a directory).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Global indices of its chunks (empty for a directory or an empty file).
    pub fn chunks(&self) -> Range<u32> {
        self.first_chunk..self.first_chunk + self.chunk_count
    }
}

/// Where one chunk lives: entry index in [`Manifest::entries`], byte offset in that file, length, hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// Index of the file in [`Manifest::entries`].
    pub file: usize,
    /// Byte offset of the chunk in the file.
    pub offset: u64,
    /// Length in bytes (`chunk_size`, or less for a file's last chunk).
    pub len: u32,
    /// BLAKE3 of the chunk's bytes.
    pub hash: ChunkHash,
}

/// The paths, sizes and chunk hashes of one content (see the module doc). Always valid: every constructor
/// checks the rules of the encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    chunk_size: u32,
    entries: Vec<Entry>,
    hashes: Vec<ChunkHash>,
    total_size: u64,
}

fn chunks_for(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size))
}

impl Manifest {
    /// Builds a manifest from files `(path, size, chunk hashes)` and empty directories, in any order.
    /// Checks the chunk size, the chunk count of every file, duplicates, nesting and the limits.
    pub fn new(
        chunk_size: u32,
        files: Vec<(RelPath, u64, Vec<ChunkHash>)>,
        empty_dirs: Vec<RelPath>,
    ) -> Result<Self, ContentError> {
        let mut items: Vec<Item> = files.into_iter().map(|(p, s, h)| (p, Some((s, h)))).collect();
        items.extend(empty_dirs.into_iter().map(|p| (p, None)));
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Self::from_sorted(chunk_size, items)
    }

    /// Builds a manifest of in-memory files `(path, bytes)`: for tests, examples and the simulator.
    pub fn from_memory(chunk_size: u32, files: &[(&str, &[u8])]) -> Result<Self, ContentError> {
        check_chunk_size(u64::from(chunk_size))?;
        let mut out = Vec::with_capacity(files.len());
        for (path, bytes) in files {
            let hashes = bytes.chunks(chunk_size as usize).map(ChunkHash::of).collect();
            out.push((RelPath::new(path)?, bytes.len() as u64, hashes));
        }
        Self::new(chunk_size, out, Vec::new())
    }

    /// `items` sorted by path; `None` is an empty directory.
    fn from_sorted(chunk_size: u32, items: Vec<Item>) -> Result<Self, ContentError> {
        check_chunk_size(u64::from(chunk_size))?;
        if items.len() > MAX_ENTRIES {
            return Err(ContentError::TooLarge { what: "entry count", limit: MAX_ENTRIES as u64 });
        }
        let mut entries = Vec::with_capacity(items.len());
        let mut hashes = Vec::new();
        let mut total_size: u64 = 0;
        for (path, file) in items {
            if entries.last().is_some_and(|e: &Entry| e.path == path) {
                return Err(ContentError::Duplicate(path.to_string()));
            }
            let first_chunk = u32::try_from(hashes.len())
                .map_err(|_| ContentError::TooLarge { what: "chunk count", limit: u64::from(u32::MAX) })?;
            let entry = match file {
                None => Entry { path, dir: true, size: 0, first_chunk, chunk_count: 0 },
                Some((size, file_hashes)) => {
                    let expected = chunks_for(size, chunk_size);
                    if expected != file_hashes.len() as u64 {
                        return Err(ContentError::ChunkCount {
                            path: path.to_string(),
                            size,
                            chunk_size,
                            expected,
                            got: file_hashes.len() as u64,
                        });
                    }
                    total_size = total_size
                        .checked_add(size)
                        .ok_or(ContentError::TooLarge { what: "total size", limit: u64::MAX })?;
                    let chunk_count = u32::try_from(expected)
                        .ok()
                        .filter(|c| first_chunk.checked_add(*c).is_some())
                        .ok_or(ContentError::TooLarge { what: "chunk count", limit: u64::from(u32::MAX) })?;
                    hashes.extend(file_hashes);
                    Entry { path, dir: false, size, first_chunk, chunk_count }
                }
            };
            entries.push(entry);
        }
        check_nesting(&entries)?;
        let m = Self { chunk_size, entries, hashes, total_size };
        if m.encoded_len() > MAX_MANIFEST_BYTES {
            return Err(ContentError::TooLarge { what: "encoded size", limit: MAX_MANIFEST_BYTES as u64 });
        }
        Ok(m)
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks across all files.
    pub fn chunk_count(&self) -> u32 {
        // Bounded by construction (`from_sorted` checks it fits).
        self.hashes.len() as u32
    }

    /// Sum of the file sizes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Every entry (files and empty directories), sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The files only, with their index in [`entries`](Self::entries).
    pub fn files(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries.iter().enumerate().filter(|(_, e)| !e.dir)
    }

    /// The path of entry `file`. Panics if `file` is not an index into [`entries`](Self::entries), as slice
    /// indexing does; indices from [`ChunkRef::file`] are always valid.
    pub fn file_path(&self, file: usize) -> &RelPath {
        &self.entries[file].path
    }

    /// The hash of every chunk, in order.
    pub fn hashes(&self) -> &[ChunkHash] {
        &self.hashes
    }

    /// Where chunk `i` lives, or `None` if out of range.
    pub fn chunk(&self, i: u32) -> Option<ChunkRef> {
        let hash = *self.hashes.get(i as usize)?;
        // Entries hold consecutive chunk ranges in order: the first whose range ends after `i` holds it.
        let file = self.entries.partition_point(|e| e.first_chunk + e.chunk_count <= i);
        let e = self.entries.get(file)?;
        let offset = u64::from(i - e.first_chunk) * u64::from(self.chunk_size);
        let len = (e.size - offset).min(u64::from(self.chunk_size)) as u32;
        Some(ChunkRef { file, offset, len, hash })
    }

    /// The content id: BLAKE3 of [`encode`](Self::encode).
    pub fn id(&self) -> ContentId {
        ContentId(*blake3::hash(&self.encode()).as_bytes())
    }

    fn encoded_len(&self) -> usize {
        14 + self
            .entries
            .iter()
            .map(|e| {
                3 + e.path.as_str().len() + if e.dir { 0 } else { 12 + HASH_LEN * e.chunk_count as usize }
            })
            .sum::<usize>()
    }

    /// The canonical encoding (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.push(if e.dir { KIND_DIR } else { KIND_FILE });
            let p = e.path.as_str().as_bytes();
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p);
            if !e.dir {
                out.extend_from_slice(&e.size.to_be_bytes());
                out.extend_from_slice(&e.chunk_count.to_be_bytes());
                for h in &self.hashes[e.chunks().start as usize..e.chunks().end as usize] {
                    out.extend_from_slice(&h.0);
                }
            }
        }
        out
    }

    /// Decodes and checks a canonical encoding (see the module doc).
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ContentError::TooLarge { what: "encoded size", limit: MAX_MANIFEST_BYTES as u64 });
        }
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4, "the magic \"CMMF\"")? != MAGIC {
            return Err(r.err(0, "does not start with the magic \"CMMF\"; not a cinemesh manifest"));
        }
        let version = r.u16("the version")?;
        if version != VERSION {
            return Err(r.err(4, &format!("version {version} is not supported (this build reads {VERSION})")));
        }
        let chunk_size = r.u32("the chunk size")?;
        check_chunk_size(u64::from(chunk_size))?;
        let count = r.u32("the entry count")? as usize;
        if count > MAX_ENTRIES {
            return Err(ContentError::TooLarge { what: "entry count", limit: MAX_ENTRIES as u64 });
        }
        // Every entry takes at least 4 bytes: do not trust `count` for the allocation.
        let mut items = Vec::with_capacity(count.min(bytes.len() / 4));
        let mut prev: Option<RelPath> = None;
        for _ in 0..count {
            let start = r.pos;
            let kind = r.u8("an entry kind")?;
            let len = r.u16("a path length")? as usize;
            let raw = r.take(len, "a path")?;
            let s = std::str::from_utf8(raw).map_err(|_| r.err(start + 3, "path is not UTF-8"))?;
            let path = RelPath::new(s)?;
            if let Some(p) = &prev {
                if *p == path {
                    return Err(ContentError::Duplicate(path.to_string()));
                }
                if *p > path {
                    return Err(r.err(start, &format!("entries not sorted: {path:?} after {:?}", p.as_str())));
                }
            }
            prev = Some(path.clone());
            let file = match kind {
                KIND_DIR => None,
                KIND_FILE => {
                    let size = r.u64("a file size")?;
                    let listed = r.u32("a chunk count")?;
                    let expected = chunks_for(size, chunk_size);
                    if u64::from(listed) != expected {
                        return Err(ContentError::ChunkCount {
                            path: path.to_string(),
                            size,
                            chunk_size,
                            expected,
                            got: u64::from(listed),
                        });
                    }
                    let raw = r.take(listed as usize * HASH_LEN, "chunk hashes")?;
                    let hashes = raw
                        .chunks_exact(HASH_LEN)
                        .map(|c| {
                            let mut h = [0u8; HASH_LEN];
                            h.copy_from_slice(c);
                            ChunkHash(h)
                        })
                        .collect();
                    Some((size, hashes))
                }
                other => {
                    return Err(r.err(start, &format!("unknown entry kind {other} (0 = file, 1 = directory)")))
                }
            };
            items.push((path, file));
        }
        if r.pos != bytes.len() {
            return Err(r.err(r.pos, &format!("{} trailing bytes after the last entry", bytes.len() - r.pos)));
        }
        Self::from_sorted(chunk_size, items)
    }
}

/// No entry may lie below a file or below an empty-directory entry.
fn check_nesting(entries: &[Entry]) -> Result<(), ContentError> {
    let all: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for e in entries {
        let p = e.path.as_str();
        for (i, _) in p.match_indices('/') {
            if all.contains(&p[..i]) {
                return Err(ContentError::Nested { path: p.to_owned(), parent: p[..i].to_owned() });
            }
        }
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, offset: usize, reason: &str) -> ContentError {
        ContentError::Decode { offset, reason: reason.to_owned() }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ContentError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(self.pos, &format!("truncated: expected {what} ({n} bytes)"))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ContentError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ContentError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ContentError> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, ContentError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, ContentError> {
        self.array(what).map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CS: u32 = 64 * 1024;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn sample() -> Manifest {
        let big = vec![7u8; CS as usize * 2 + 10];
        Manifest::new(
            CS,
            vec![
                (p("b/big.mxf"), big.len() as u64, big.chunks(CS as usize).map(ChunkHash::of).collect()),
                (p("a.xml"), 3, vec![ChunkHash::of(b"abc")]),
                (p("empty"), 0, vec![]),
            ],
            vec![p("c/d")],
        )
        .unwrap()
    }

    #[test]
    fn chunks_are_global_in_path_order() {
        let m = sample();
        let names: Vec<_> = m.entries().iter().map(|e| e.path().as_str()).collect();
        assert_eq!(names, ["a.xml", "b/big.mxf", "c/d", "empty"]);
        assert_eq!(m.chunk_count(), 4);
        assert_eq!(m.total_size(), 3 + 2 * u64::from(CS) + 10);
        assert_eq!(m.files().count(), 3);
        let c0 = m.chunk(0).unwrap();
        assert_eq!((c0.file, c0.offset, c0.len, c0.hash), (0, 0, 3, ChunkHash::of(b"abc")));
        let c3 = m.chunk(3).unwrap();
        assert_eq!((c3.file, c3.offset, c3.len), (1, 2 * u64::from(CS), 10));
        assert_eq!(m.file_path(c3.file).as_str(), "b/big.mxf");
        assert!(m.chunk(4).is_none());
        assert!(m.entries()[2].is_dir() && m.entries()[2].chunks().is_empty());
    }

    #[test]
    fn decode_rejects_what_new_rejects() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(Manifest::decode(&trailing), Err(ContentError::Decode { .. })));
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
        // A file of 3 bytes claiming 2 chunks: sizes and chunk counts disagree.
        let mut wrong = bytes.clone();
        let at = 14 + 3 + "a.xml".len() + 8;
        wrong[at..at + 4].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(Manifest::decode(&wrong), Err(ContentError::ChunkCount { .. })));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(Manifest::decode(&magic).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn decode_rejects_unsorted_bad_paths_and_nesting() {
        let enc = |entries: &[(&str, u8)]| {
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&VERSION.to_be_bytes());
            out.extend_from_slice(&CS.to_be_bytes());
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (path, kind) in entries {
                out.push(*kind);
                out.extend_from_slice(&(path.len() as u16).to_be_bytes());
                out.extend_from_slice(path.as_bytes());
                if *kind == KIND_FILE {
                    out.extend_from_slice(&[0; 12]);
                }
            }
            out
        };
        assert!(Manifest::decode(&enc(&[("a", 0), ("b", 1)])).is_ok());
        assert!(matches!(Manifest::decode(&enc(&[("b", 0), ("a", 0)])), Err(ContentError::Decode { .. })));
        assert!(matches!(Manifest::decode(&enc(&[("a", 0), ("a", 1)])), Err(ContentError::Duplicate(_))));
        assert!(matches!(Manifest::decode(&enc(&[("../x", 0)])), Err(ContentError::Path(_))));
        assert!(matches!(Manifest::decode(&enc(&[("/x", 0)])), Err(ContentError::Path(_))));
        assert!(matches!(Manifest::decode(&enc(&[("a", 0), ("a/b", 0)])), Err(ContentError::Nested { .. })));
        assert!(matches!(Manifest::decode(&enc(&[("d", 1), ("d/f", 0)])), Err(ContentError::Nested { .. })));
        assert!(matches!(Manifest::decode(&enc(&[("a", 7)])), Err(ContentError::Decode { .. })));
        let mut huge = enc(&[]);
        huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Manifest::decode(&huge), Err(ContentError::TooLarge { .. })));
        assert!(matches!(
            Manifest::decode(&vec![0; MAX_MANIFEST_BYTES + 1]),
            Err(ContentError::TooLarge { what: "encoded size", .. })
        ));
    }

    #[test]
    fn bad_chunk_size_is_rejected() {
        assert!(Manifest::from_memory(1000, &[]).is_err());
        assert!(Manifest::from_memory(CS / 2, &[]).is_err());
        assert!(Manifest::from_memory(DEFAULT_CHUNK_SIZE, &[]).is_ok());
    }

    fn tree() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        prop::collection::btree_map(
            "[a-c]{1,3}(/[a-c]{1,3})?",
            prop::collection::vec(any::<u8>(), 0..200),
            0..6,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    fn build(files: &[(String, Vec<u8>)]) -> Option<Manifest> {
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
        // Generated trees may nest a file below another file: those are rightly rejected.
        Manifest::from_memory(CS, &refs).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn encode_decode_round_trip(files in tree(), dirs in prop::collection::vec("[x-z]{1,4}", 0..3)) {
            if let Some(m) = build(&files) {
                let fs: Vec<_> = m.files().map(|(_, e)| {
                    let h = m.hashes()[e.chunks().start as usize..e.chunks().end as usize].to_vec();
                    (e.path().clone(), e.size(), h)
                }).collect();
                let dirs: Vec<_> = dirs.iter().map(|d| p(d)).collect::<HashSet<_>>().into_iter().collect();
                let m = Manifest::new(CS, fs, dirs).unwrap();
                let back = Manifest::decode(&m.encode()).unwrap();
                prop_assert_eq!(back.id(), m.id());
                prop_assert_eq!(back, m);
            }
        }

        #[test]
        fn any_byte_change_changes_chunk_hash_and_id(
            files in tree(), pick in any::<prop::sample::Index>(), flip in 1u8..=255,
        ) {
            let Some(m) = build(&files) else { return Ok(()) };
            let total: usize = files.iter().map(|f| f.1.len()).sum();
            prop_assume!(total > 0);
            // Pick the n-th byte over all files, flip it.
            let mut n = pick.index(total);
            let mut changed = files.clone();
            let (fi, bi) = changed.iter().enumerate().find_map(|(i, f)| {
                if n < f.1.len() { Some((i, n)) } else { n -= f.1.len(); None }
            }).unwrap();
            changed[fi].1[bi] ^= flip;
            let m2 = build(&changed).unwrap();
            prop_assert_ne!(m2.id(), m.id());
            let diff: Vec<u32> = (0..m.chunk_count()).filter(|&i| m.chunk(i) != m2.chunk(i)).collect();
            prop_assert_eq!(diff.len(), 1);
            let c = m.chunk(diff[0]).unwrap();
            prop_assert_eq!(m.file_path(c.file).as_str(), changed[fi].0.as_str());
            prop_assert!(c.offset <= bi as u64 && (bi as u64) < c.offset + u64::from(c.len));
        }

        #[test]
        fn decode_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_manifests(
            files in tree(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let Some(m) = build(&files) else { return Ok(()) };
            let mut bytes = m.encode();
            for (at, v) in edits {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            let _ = Manifest::decode(&bytes);
            let _ = Manifest::decode(&bytes[..cut.index(bytes.len())]);
        }
    }
}

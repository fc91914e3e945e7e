//! Building a [`Manifest`] from a directory tree or a single file on disk.
//!
//! Rules:
//! - A directory's entries are named relative to it (the directory's own name is not part of the
//!   content); a single file is one entry named by its file name.
//! - Empty directories are kept; empty files are kept (zero chunks).
//! - A symbolic link whose resolved target is a regular file inside the tree is **followed**: the receiver
//!   gets a regular file with the target's bytes under the link's path. Any other link (leading out of the
//!   tree, dangling, or pointing at a directory, which could loop) is rejected with its path named.
//! - Fifos, sockets and device nodes are rejected with their path named; so are names that are not UTF-8.
//!
//! Hashing uses every core: each chunk is one rayon task that reads its bytes with a positional read
//! (`pread`, no shared file cursor) into a per-task buffer and hashes them with BLAKE3 (SIMD).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::error::ContentError;
use super::manifest::{check_chunk_size, Manifest, MAX_ENTRIES};
use super::path::RelPath;
use crate::config::{ByteSize, ChunkSize};
use crate::id::ChunkHash;

/// A file found by the walk: its path in the content, where its bytes are read from, its size.
struct Found {
    rel: RelPath,
    source: PathBuf,
    size: u64,
}

impl Manifest {
    /// Scans and hashes `path` (a directory tree or a single file) into a manifest with chunks of
    /// `chunk_size` bytes (a power of two in [`CHUNK_SIZE_RANGE`](crate::config::CHUNK_SIZE_RANGE)).
    /// See the [module doc](self) for what is followed and what is rejected.
    pub fn from_path(path: &Path, chunk_size: u32) -> Result<Manifest, ContentError> {
        Self::scan(path, ChunkSize::Fixed(ByteSize(u64::from(chunk_size))))
    }

    /// As [`from_path`](Self::from_path), the chunk size given by `chunk` for the content's total size
    /// (`auto` picks it from the size: [`auto_chunk_size`](crate::config::auto_chunk_size)).
    pub fn scan(path: &Path, chunk: ChunkSize) -> Result<Manifest, ContentError> {
        let root = fs::canonicalize(path).map_err(|e| ContentError::io(path, e))?;
        let meta = fs::metadata(&root).map_err(|e| ContentError::io(&root, e))?;
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        if meta.is_dir() {
            walk(&root, &mut files, &mut dirs)?;
        } else if meta.is_file() {
            let name = root.file_name().and_then(|n| n.to_str()).ok_or_else(|| not_utf8(&root))?;
            files.push(Found { rel: RelPath::new(name)?, source: root.clone(), size: meta.len() });
        } else {
            return Err(special(&root, &meta.file_type()));
        }
        let total: u64 = files.iter().map(|f| f.size).sum();
        let chunk_size = check_chunk_size(chunk.for_size(total))?;
        let hashes = hash_files(&files, chunk_size)?;
        let mut hashes = hashes.into_iter();
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let n = f.size.div_ceil(u64::from(chunk_size)) as usize;
            out.push((f.rel, f.size, hashes.by_ref().take(n).collect()));
        }
        Manifest::new(chunk_size, out, dirs)
    }
}

/// The directory against which a manifest built by [`Manifest::from_path`] resolves its paths: `path`
/// itself for a directory, its parent for a single file.
pub fn base_dir(path: &Path) -> Result<PathBuf, ContentError> {
    let root = fs::canonicalize(path).map_err(|e| ContentError::io(path, e))?;
    if root.is_dir() {
        Ok(root)
    } else {
        Ok(root.parent().map(Path::to_path_buf).unwrap_or(root))
    }
}

fn not_utf8(p: &Path) -> ContentError {
    ContentError::NotUtf8 { path: p.to_path_buf() }
}

fn special(p: &Path, ft: &fs::FileType) -> ContentError {
    let kind = if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    };
    ContentError::SpecialFile { path: p.to_path_buf(), kind }
}

/// Depth-first walk with an explicit stack (no recursion limit), bounded by [`MAX_ENTRIES`].
fn walk(root: &Path, files: &mut Vec<Found>, dirs: &mut Vec<RelPath>) -> Result<(), ContentError> {
    let mut stack: Vec<(PathBuf, Option<RelPath>)> = vec![(root.to_path_buf(), None)];
    while let Some((dir, rel)) = stack.pop() {
        let mut children = 0usize;
        for entry in fs::read_dir(&dir).map_err(|e| ContentError::io(&dir, e))? {
            let entry = entry.map_err(|e| ContentError::io(&dir, e))?;
            children += 1;
            if files.len() + dirs.len() + stack.len() >= MAX_ENTRIES {
                return Err(ContentError::TooLarge { what: "entry count", limit: MAX_ENTRIES as u64 });
            }
            let abs = entry.path();
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| not_utf8(&abs))?;
            let child = match &rel {
                Some(r) => RelPath::new(&format!("{r}/{name}"))?,
                None => RelPath::new(name)?,
            };
            let ft = entry.file_type().map_err(|e| ContentError::io(&abs, e))?;
            if ft.is_dir() {
                stack.push((abs, Some(child)));
            } else if ft.is_file() {
                let size = entry.metadata().map_err(|e| ContentError::io(&abs, e))?.len();
                files.push(Found { rel: child, source: abs, size });
            } else if ft.is_symlink() {
                let target = fs::canonicalize(&abs).map_err(|_| ContentError::Symlink {
                    path: abs.clone(),
                    reason: "dangles (its target does not exist)",
                })?;
                if !target.starts_with(root) {
                    return Err(ContentError::Symlink { path: abs, reason: "leads out of the tree" });
                }
                let meta = fs::metadata(&target).map_err(|e| ContentError::io(&target, e))?;
                if meta.is_dir() {
                    return Err(ContentError::Symlink { path: abs, reason: "points at a directory" });
                }
                if !meta.is_file() {
                    return Err(special(&target, &meta.file_type()));
                }
                files.push(Found { rel: child, source: target, size: meta.len() });
            } else {
                return Err(special(&abs, &ft));
            }
        }
        if children == 0 {
            if let Some(r) = rel {
                dirs.push(r);
            }
        }
    }
    Ok(())
}

/// Hashes every chunk of every file, in order, in parallel over chunks.
fn hash_files(files: &[Found], chunk_size: u32) -> Result<Vec<ChunkHash>, ContentError> {
    let cs = u64::from(chunk_size);
    let jobs: Vec<(usize, u64)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| (0..f.size.div_ceil(cs)).map(move |c| (i, c * cs)))
        .collect();
    let hashes = jobs
        .par_iter()
        .map_init(
            || vec![0u8; READ_BUF.min(chunk_size as usize)],
            |buf, &(i, offset)| {
                let f = &files[i];
                let len = (f.size - offset).min(cs);
                let file = File::open(&f.source).map_err(|e| ContentError::io(&f.source, e))?;
                hash_range(&file, offset, len, buf).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => ContentError::Changed { path: f.source.clone() },
                    _ => ContentError::io(&f.source, e),
                })
            },
        )
        .collect::<Result<Vec<_>, ContentError>>()?;
    // A file that grew or shrank while hashed would give a manifest matching no state of it.
    for f in files {
        let now = fs::metadata(&f.source).map_err(|e| ContentError::io(&f.source, e))?.len();
        if now != f.size {
            return Err(ContentError::Changed { path: f.source.clone() });
        }
    }
    Ok(hashes)
}

/// Bytes read at a time while hashing: small enough to stay in the CPU cache between the copy from the
/// page cache and the hash, large enough for BLAKE3's SIMD to work on many 1 KiB blocks at once.
pub(crate) const READ_BUF: usize = 256 * 1024;

/// BLAKE3 of `len` bytes at `offset` of `file`, read with positional reads through `buf`.
pub(crate) fn hash_range(file: &File, offset: u64, len: u64, buf: &mut [u8]) -> io::Result<ChunkHash> {
    let mut hasher = blake3::Hasher::new();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(ChunkHash(*hasher.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::error::ContentError;
    use std::os::unix::fs::symlink;

    const CS: u32 = 64 * 1024;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn tree_matches_in_memory_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..CS * 3 + 17).map(|i| (i * 31 % 251) as u8).collect();
        write(dir.path(), "DCP/video.mxf", &big);
        write(dir.path(), "DCP/ASSETMAP.xml", b"<xml/>");
        write(dir.path(), "empty.txt", b"");
        fs::create_dir_all(dir.path().join("extras/none")).unwrap();
        symlink("DCP/ASSETMAP.xml", dir.path().join("link.xml")).unwrap();
        let m = Manifest::from_path(dir.path(), CS).unwrap();
        let names: Vec<_> = m.entries().iter().map(|e| e.path().as_str()).collect();
        assert_eq!(names, ["DCP/ASSETMAP.xml", "DCP/video.mxf", "empty.txt", "extras/none", "link.xml"]);
        let mem = Manifest::from_memory(
            CS,
            &[
                ("DCP/ASSETMAP.xml", b"<xml/>"),
                ("DCP/video.mxf", &big),
                ("empty.txt", b""),
                ("link.xml", b"<xml/>"),
            ],
        )
        .unwrap();
        assert_eq!(m.hashes(), mem.hashes());
        assert_eq!(m.chunk_count(), 1 + 4 + 1);
        assert!(m.entries()[3].is_dir());
        assert_eq!(base_dir(dir.path()).unwrap(), fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn single_file_is_named_by_its_file_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "film.mxf", b"frames");
        let m = Manifest::from_path(&dir.path().join("film.mxf"), CS).unwrap();
        assert_eq!(m.entries().len(), 1);
        assert_eq!(m.file_path(0).as_str(), "film.mxf");
        assert_eq!(m.id(), Manifest::from_memory(CS, &[("film.mxf", b"frames")]).unwrap().id());
        assert_eq!(base_dir(&dir.path().join("film.mxf")).unwrap(), fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn links_out_of_the_tree_and_to_dirs_are_rejected() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret", b"x");
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a/f", b"x");
        symlink(outside.path().join("secret"), dir.path().join("a/out")).unwrap();
        let e = Manifest::from_path(dir.path(), CS).unwrap_err();
        assert!(matches!(&e, ContentError::Symlink { path, .. } if path.ends_with("a/out")), "{e}");
        assert!(e.to_string().contains("leads out of the tree"));
        fs::remove_file(dir.path().join("a/out")).unwrap();
        symlink("../a", dir.path().join("a/loop")).unwrap();
        let e = Manifest::from_path(dir.path(), CS).unwrap_err();
        assert!(e.to_string().contains("points at a directory"), "{e}");
        fs::remove_file(dir.path().join("a/loop")).unwrap();
        symlink("nowhere", dir.path().join("dangling")).unwrap();
        assert!(Manifest::from_path(dir.path(), CS).unwrap_err().to_string().contains("dangles"));
    }

    #[test]
    fn fifos_are_rejected_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let e = Manifest::from_path(dir.path(), CS).unwrap_err();
        assert!(matches!(&e, ContentError::SpecialFile { kind: "fifo", .. }), "{e}");
        assert!(e.to_string().contains("pipe"));
    }

    #[test]
    fn bad_chunk_size_and_missing_path_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Manifest::from_path(dir.path(), 1000), Err(ContentError::ChunkSize(1000))));
        let e = Manifest::from_path(&dir.path().join("missing"), CS).unwrap_err();
        assert!(e.to_string().contains("missing"));
    }
}

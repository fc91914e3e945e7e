//! Errors of the content module: bad paths, unreadable trees, malformed manifests.

use std::io;
use std::path::PathBuf;

/// A path that is not a valid [`RelPath`](super::RelPath).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {path:?} in content: it {reason}; paths must be relative, `/`-separated, without `.` or `..`")]
pub struct PathError {
    /// The offending path.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Building, encoding or decoding a manifest failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Reading the tree failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A path in the tree or in a manifest is invalid.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A file name that is not UTF-8.
    #[error("{path}: file name is not valid UTF-8; rename it before publishing")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A symbolic link that leaves the tree, dangles, or points at a directory.
    #[error("{path}: symbolic link {reason}; only links to regular files inside the tree are allowed")]
    Symlink {
        /// The link.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A fifo, socket or device node.
    #[error("{path}: is a {kind}, not a regular file or directory; remove it from the tree")]
    SpecialFile {
        /// The file.
        path: PathBuf,
        /// fifo, socket, block device, character device.
        kind: &'static str,
    },
    /// A file changed size while it was being hashed.
    #[error("{path}: file changed while being hashed; publish it once it is no longer written to")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The chunk size is not a power of two in range.
    #[error("chunk size {0} is invalid: must be a power of two between 64KiB and 64MiB")]
    ChunkSize(u64),
    /// A limit of the manifest was exceeded.
    #[error("manifest too large: {what} exceeds the limit of {limit}")]
    TooLarge {
        /// What was counted (bytes, entries, chunks, total size).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Two entries with the same path.
    #[error("path {0:?} appears twice in the manifest")]
    Duplicate(String),
    /// An entry lies below a file or below an "empty" directory.
    #[error("path {path:?} lies below {parent:?}, which is a file or an empty directory")]
    Nested {
        /// The inner entry.
        path: String,
        /// The entry that cannot have children.
        parent: String,
    },
    /// A file's chunk hashes do not match its size.
    #[error(
        "file {path:?} of {size} bytes needs {expected} chunks of {chunk_size} bytes, manifest has {got}"
    )]
    ChunkCount {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The chunk size.
        chunk_size: u32,
        /// Chunks its size needs.
        expected: u64,
        /// Chunks listed.
        got: u64,
    },
    /// The bytes are not a valid manifest encoding.
    #[error("malformed manifest at byte {offset}: {reason}")]
    Decode {
        /// Byte offset where decoding stopped.
        offset: usize,
        /// What was expected.
        reason: String,
    },
}

impl ContentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

//! Errors of the store.

use std::io;
use std::path::PathBuf;

use crate::config::ByteSize;
use crate::content::ContentError;
use crate::ContentId;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The sled metadata database failed.
    #[error(
        "metadata database failed: {0}; check the data directory's disk and permissions, and that no other \
         cinemesh process uses it"
    )]
    Db(#[from] sled::Error),
    /// Another process (a second daemon on the same data directory?) holds the store.
    #[error("the store at {path} is in use by another process (is another cinemesh node running on this data directory?)")]
    Locked {
        /// The sled directory.
        path: PathBuf,
    },
    /// A content file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No content with this id is in the store.
    #[error("content {0} is not in the store")]
    UnknownContent(ContentId),
    /// The content is already in the store at another root.
    #[error("content {content} is already stored at {existing}; remove it first to store it elsewhere")]
    RootConflict {
        /// The content.
        content: ContentId,
        /// Where it is stored now.
        existing: PathBuf,
    },
    /// A chunk index beyond the manifest.
    #[error("chunk {chunk} of content {content} does not exist (it has {count} chunks)")]
    ChunkOutOfRange {
        /// The content.
        content: ContentId,
        /// The index asked for.
        chunk: u32,
        /// Chunks in the content.
        count: u32,
    },
    /// Bytes offered for a chunk do not match the manifest; nothing was written or marked.
    #[error("chunk {chunk} of content {content} rejected: {reason}")]
    Corrupt {
        /// The content.
        content: ContentId,
        /// The chunk.
        chunk: u32,
        /// What did not match.
        reason: String,
    },
    /// A chunk that is not (yet) held was asked for.
    #[error("chunk {chunk} of content {content} is not held")]
    NotPresent {
        /// The content.
        content: ContentId,
        /// The chunk.
        chunk: u32,
    },
    /// A file of external content does not have the size its manifest says.
    #[error(
        "{path} has {actual} bytes, its manifest says {expected}: the content changed since it was scanned"
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size in the manifest.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// Not enough free disk space.
    #[error(
        "not enough disk space in {dir}: {needed} needed, {free} free, {reserve} kept in reserve; free some \
         space, remove old content, or lower storage.reserve",
        needed = ByteSize(*needed), free = ByteSize(*free), reserve = ByteSize(*reserve)
    )]
    NoSpace {
        /// Directory checked.
        dir: PathBuf,
        /// Bytes the operation needs.
        needed: u64,
        /// Bytes free on that file system.
        free: u64,
        /// Bytes kept free in any case.
        reserve: u64,
    },
    /// A metadata record could not be decoded (database damaged or from an incompatible version).
    #[error("damaged metadata record ({what}): {reason}; run `cinemesh verify` or remove the content")]
    Record {
        /// Which record.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A stored manifest failed to decode.
    #[error(transparent)]
    Manifest(#[from] ContentError),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn record(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Record { what, reason: reason.to_string() }
    }
}

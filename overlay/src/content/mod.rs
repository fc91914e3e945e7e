//! Content: a directory tree (or a single file) -> [`Manifest`]: relative paths, sizes, fixed-size chunks
//! and one BLAKE3 hash per chunk. The [`ContentId`](crate::ContentId) is BLAKE3 of the manifest's
//! canonical encoding.
//!
//! - [`path`] holds [`RelPath`], a validated relative path (no `..`, not absolute).
//! - [`manifest`] holds [`Manifest`], chunking rules and the canonical binary encoding (documented there).
//! - [`scan`] holds [`Manifest::from_path`], walking and hashing a tree on every core; what links and special
//!   files do.
//! - [`error`] holds [`ContentError`].

pub mod error;
pub mod manifest;
pub mod path;
pub mod scan;

pub use error::{ContentError, PathError};
pub use manifest::{
    check_chunk_size, ChunkRef, Entry, Manifest, DEFAULT_CHUNK_SIZE, MAX_ENTRIES, MAX_MANIFEST_BYTES,
};
pub use path::RelPath;
pub use scan::base_dir;

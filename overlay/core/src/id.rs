//! Identifiers: content ids and chunk hashes, both BLAKE3.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length in bytes of every hash used by cinemesh (BLAKE3, 256 bits).
pub const HASH_LEN: usize = 32;

/// The BLAKE3 hash of one chunk's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkHash(pub [u8; HASH_LEN]);

impl ChunkHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

/// A content id: the BLAKE3 hash of a manifest's canonical encoding (see `content::Manifest::encode`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentId(pub [u8; HASH_LEN]);

impl ContentId {
    /// Lower-case hex, 64 characters: the form shown to users and used in paths and URLs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short prefix for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

/// Error parsing a hex content id or hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a content id: expected 64 hex characters, got {0:?}")]
pub struct ParseIdError(pub String);

fn parse_hash(s: &str) -> Result<[u8; HASH_LEN], ParseIdError> {
    let mut out = [0u8; HASH_LEN];
    hex::decode_to_slice(s.trim(), &mut out).map_err(|_| ParseIdError(s.to_owned()))?;
    Ok(out)
}

impl FromStr for ContentId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hash(s).map(Self)
    }
}

impl FromStr for ChunkHash {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hash(s).map(Self)
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.short())
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", hex::encode(&self.0[..6]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_id_hex_round_trip() {
        let id = ContentId(*blake3::hash(b"film").as_bytes());
        assert_eq!(id.to_hex().parse::<ContentId>().unwrap(), id);
        assert!("zz".parse::<ContentId>().is_err());
        assert!(id.to_hex()[..62].parse::<ContentId>().is_err());
    }
}

//! Distributor keys: the ed25519 public key that signs catalogue entries, the keypair behind it, and the key
//! file written by `cinemesh keygen`.
//!
//! ## Text form of a public key
//!
//! `cmpk1` followed by the 32 key bytes in lower-case hex (69 characters in all), e.g.
//! `cmpk1d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a`. The prefix reads "cinemesh
//! public key, form 1"; it keeps a key from being mistaken for a content id (64 bare hex characters), and
//! parsing rejects a bare hex string with a message that says so.
//!
//! ## Key file
//!
//! A text file, mode 0600, created with `create_new` so that an existing file is never overwritten:
//!
//! ```text
//! cinemesh-distributor-key-v1
//! secret <64 hex characters: the ed25519 secret seed>
//! public cmpk1<64 hex characters>
//! ```
//!
//! The `public` line is for the operator's eyes (and a check against corruption): on reading, it must match
//! the key derived from the secret. Lines end with `\n`; a trailing `\r` is tolerated.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length in bytes of a distributor public key.
pub const KEY_LEN: usize = 32;
/// Length in bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;
/// Prefix of a public key's text form.
pub const KEY_PREFIX: &str = "cmpk1";
/// First line of a key file.
pub const KEY_FILE_HEADER: &str = "cinemesh-distributor-key-v1";
/// A key file larger than this is not a key file (the real one is about 170 bytes).
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A distributor's ed25519 public key: the identity that signs catalogue entries.
///
/// Ordered and hashed by its bytes. Serialized as its text form in human-readable formats (JSON, TOML) and
/// as 32 raw bytes in bincode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DistributorKey([u8; KEY_LEN]);

impl DistributorKey {
    /// From raw bytes, checking that they are a valid ed25519 point.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, ParseKeyError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| ParseKeyError::NotAKey(hex::encode(bytes)))?;
        Ok(Self(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A short form for logs: the prefix and the first 12 hex characters.
    pub fn short(&self) -> String {
        format!("{KEY_PREFIX}{}", hex::encode(&self.0[..6]))
    }

    /// Checks `signature` over `message` (strict ed25519: rejects small-order keys and malleable
    /// signatures). `false` if the key bytes are not a valid point.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Display for DistributorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for DistributorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DistributorKey({})", self.short())
    }
}

/// Error parsing a distributor public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseKeyError {
    /// Not of the form `cmpk1` + 64 hex characters.
    #[error(
        "not a distributor key: {0:?}; expected `{KEY_PREFIX}` followed by 64 hex characters \
         (as printed by `cinemesh keygen`)"
    )]
    Format(String),
    /// Well formed, but the bytes are not an ed25519 public key.
    #[error("not a valid ed25519 public key: {0}")]
    NotAKey(String),
}

impl FromStr for DistributorKey {
    type Err = ParseKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let hex_part = t.strip_prefix(KEY_PREFIX).ok_or_else(|| ParseKeyError::Format(s.to_owned()))?;
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| ParseKeyError::Format(s.to_owned()))?;
        Self::from_bytes(bytes)
    }
}

impl Serialize for DistributorKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for DistributorKey {
    /// The binary form is not checked to be a valid point here (an invalid key simply never verifies);
    /// the text form is.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; KEY_LEN]>::deserialize(deserializer).map(Self)
        }
    }
}

/// A distributor's signing keypair. Its `Debug` shows only the public key.
#[derive(Clone)]
pub struct Keypair {
    secret: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("public", &self.public()).finish_non_exhaustive()
    }
}

impl Keypair {
    /// A new random keypair.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        Self { secret: SigningKey::generate(rng) }
    }

    /// From a 32-byte secret seed (deterministic: for tests and the simulator).
    pub fn from_secret(secret: [u8; KEY_LEN]) -> Self {
        Self { secret: SigningKey::from_bytes(&secret) }
    }

    /// The public key.
    pub fn public(&self) -> DistributorKey {
        DistributorKey(self.secret.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.secret.sign(message).to_bytes()
    }

    /// Writes this keypair to a new file at `path` (format in the module doc), mode 0600 on Unix.
    ///
    /// Refuses to overwrite: if `path` exists, returns [`KeyFileError::Exists`] and leaves it untouched. If
    /// writing fails after the file was created, the partial file is removed.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == ErrorKind::AlreadyExists {
                KeyFileError::Exists { path: path.to_owned() }
            } else {
                KeyFileError::Create { path: path.to_owned(), source }
            }
        })?;
        let text = format!(
            "{KEY_FILE_HEADER}\nsecret {}\npublic {}\n",
            hex::encode(self.secret.to_bytes()),
            self.public()
        );
        let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
        if let Err(source) = written {
            drop(file);
            // Best effort: the error that matters is the write error.
            let _ = std::fs::remove_file(path);
            return Err(KeyFileError::Write { path: path.to_owned(), source });
        }
        Ok(())
    }

    /// Reads a key file written by [`Keypair::write_new`].
    ///
    /// Logs a warning (not an error) if the file is readable by group or others on Unix.
    pub fn read(path: &Path) -> Result<Self, KeyFileError> {
        let file = File::open(path).map_err(|source| {
            if source.kind() == ErrorKind::NotFound {
                KeyFileError::Missing { path: path.to_owned() }
            } else {
                KeyFileError::Read { path: path.to_owned(), source }
            }
        })?;
        #[cfg(unix)]
        if let Ok(meta) = file.metadata() {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "distributor key file is readable by others; run `chmod 600` on it"
                );
            }
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|source| KeyFileError::Read { path: path.to_owned(), source })?;
        if text.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(bad(path, 0, format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
        }
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, KeyFileError> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        match lines.next() {
            Some(KEY_FILE_HEADER) => {}
            other => {
                return Err(bad(
                    path,
                    1,
                    format!("expected `{KEY_FILE_HEADER}`, found {:?}", other.unwrap_or("")),
                ))
            }
        }
        let secret_hex = lines
            .next()
            .and_then(|l| l.strip_prefix("secret "))
            .ok_or_else(|| bad(path, 2, "expected `secret ` followed by 64 hex characters".into()))?;
        let mut secret = [0u8; KEY_LEN];
        hex::decode_to_slice(secret_hex.trim(), &mut secret)
            .map_err(|_| bad(path, 2, "the secret is not 64 hex characters".into()))?;
        let keypair = Self::from_secret(secret);
        if let Some(line) = lines.next().filter(|l| !l.trim().is_empty()) {
            let public: DistributorKey = line
                .strip_prefix("public ")
                .ok_or_else(|| bad(path, 3, "expected `public cmpk1...`".into()))?
                .parse()
                .map_err(|e: ParseKeyError| bad(path, 3, e.to_string()))?;
            if public != keypair.public() {
                return Err(bad(
                    path,
                    3,
                    format!(
                        "the public key {public} does not match the secret (which gives {}); the file is corrupt",
                        keypair.public()
                    ),
                ));
            }
        }
        if let Some((n, _)) = lines.enumerate().find(|(_, l)| !l.trim().is_empty()) {
            return Err(bad(path, n + 4, "unexpected extra line".into()));
        }
        Ok(keypair)
    }
}

fn bad(path: &Path, line: usize, reason: String) -> KeyFileError {
    KeyFileError::Format { path: path.to_owned(), line, reason }
}

/// Error writing or reading a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// `write_new` found a file already there.
    #[error(
        "key file {} already exists; refusing to overwrite it (move it away or choose another --out)",
        path.display()
    )]
    Exists {
        /// The path given.
        path: PathBuf,
    },
    /// The file could not be created.
    #[error("cannot create key file {}: {source}", path.display())]
    Create {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was created but writing it failed (it has been removed).
    #[error("cannot write key file {}: {source} (the partial file was removed)", path.display())]
    Write {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No file at the path.
    #[error("key file {} does not exist; create one with `cinemesh keygen --out FILE`", path.display())]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid key file.
    #[error("{} is not a cinemesh key file (line {line}): {reason}", path.display())]
    Format {
        /// The path given.
        path: PathBuf,
        /// 1-based line number (0: the whole file).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn keypair(seed: u8) -> Keypair {
        Keypair::generate(&mut rand_chacha::ChaCha20Rng::from_seed([seed; 32]))
    }

    #[test]
    fn text_form_round_trips_and_rejects_bare_hex() {
        let key = keypair(1).public();
        let text = key.to_string();
        assert!(text.starts_with(KEY_PREFIX));
        assert_eq!(text.len(), KEY_PREFIX.len() + 64);
        assert_eq!(text.parse::<DistributorKey>().unwrap(), key);
        assert!(matches!(text[KEY_PREFIX.len()..].parse::<DistributorKey>(), Err(ParseKeyError::Format(_))));
        assert!(text[..60].parse::<DistributorKey>().is_err());
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{key}\""));
        assert_eq!(serde_json::from_str::<DistributorKey>(&json).unwrap(), key);
    }

    #[test]
    fn signature_verifies_only_for_its_message_and_key() {
        let (a, b) = (keypair(1), keypair(2));
        let sig = a.sign(b"hello");
        assert!(a.public().verify(b"hello", &sig));
        assert!(!a.public().verify(b"hellO", &sig));
        assert!(!b.public().verify(b"hello", &sig));
        let mut bent = sig;
        bent[10] ^= 1;
        assert!(!a.public().verify(b"hello", &bent));
    }

    #[test]
    fn key_file_round_trip_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("distributor.key");
        let kp = keypair(3);
        kp.write_new(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let read = Keypair::read(&path).unwrap();
        assert_eq!(read.public(), kp.public());
        assert_eq!(read.sign(b"x"), kp.sign(b"x"));

        let before = std::fs::read(&path).unwrap();
        let err = keypair(4).write_new(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("refusing to overwrite"));
        assert_eq!(std::fs::read(&path).unwrap(), before, "existing key file must be untouched");
    }

    #[test]
    fn key_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        assert!(matches!(Keypair::read(&missing), Err(KeyFileError::Missing { .. })));

        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let p = write("a", "hello\n");
        assert!(matches!(Keypair::read(&p), Err(KeyFileError::Format { line: 1, .. })));
        let p = write("b", &format!("{KEY_FILE_HEADER}\nsecret zz\n"));
        assert!(matches!(Keypair::read(&p), Err(KeyFileError::Format { line: 2, .. })));
        let other = keypair(6).public();
        let p =
            write("c", &format!("{KEY_FILE_HEADER}\nsecret {}\npublic {other}\n", hex::encode([5u8; 32])));
        let err = Keypair::read(&p).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        // Without the public line, the secret alone is enough.
        let p = write("d", &format!("{KEY_FILE_HEADER}\r\nsecret {}\r\n", hex::encode([5u8; 32])));
        assert_eq!(Keypair::read(&p).unwrap().public(), Keypair::from_secret([5u8; 32]).public());
        let p = write("e", &format!("{KEY_FILE_HEADER}\nsecret {}\n\nextra\n", hex::encode([5u8; 32])));
        assert!(matches!(Keypair::read(&p), Err(KeyFileError::Format { .. })));
    }
}

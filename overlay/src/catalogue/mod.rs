//! The catalogue: an append-only log of entries signed with a distributor's ed25519 key, and the
//! [`Catalogue`] state that applies them. This module doc is the protocol reference for catalogue entries.
//!
//! - [`key`]: [`DistributorKey`] (text form `cmpk1` + 64 hex), [`Keypair`] and its key file.
//! - [`entry`]: [`Entry`], [`Body`], [`SignedEntry`], their bounds and canonical encoding.
//! - [`state`]: [`Catalogue`]: apply in seq order per key, hold out-of-order entries, answer queries.
//! - [`error`]: [`Rejection`], why an entry was refused.
//!
//! # Entry
//!
//! ```text
//! Entry     { key: DistributorKey, seq: u64, issued_at: u64 (unix seconds), body: Body }
//! Body      = Publish { content: ContentId, title, size: u64, chunk_size: u32, chunks: u32,
//!                       targets: Targets, deadline: Option<u64 unix seconds> }
//!           | Withdraw { content: ContentId }
//!           | Admit { peer (libp2p peer id text), name, isp, site, groups: [String] }
//!           | Revoke { peer }
//!           | Policy { group: Option<String>, schedule: [RateWindow] }
//! Targets   = All | Groups([String]) | Nodes([peer id])
//! RateWindow{ days: [u8] (0 = Monday .. 6 = Sunday), start_minute: u16, end_minute: u16 (exclusive,
//!             <= 1440, UTC), upload: Option<u64 bytes/s>, download: Option<u64 bytes/s> }
//! ```
//!
//! # Encoding
//!
//! The canonical encoding of an [`Entry`] is bincode 1.3 with fixed-width **big-endian** integers
//! (`DefaultOptions::new().with_fixint_encoding().with_big_endian()`), fields in declaration order:
//! a `u64` is 8 bytes, a `u32` 4, a `u16` 2, a `u8` 1; a key or content id is its 32 raw bytes; a string or
//! a list is a `u64` length followed by its items (UTF-8 bytes for a string); an `Option` is a byte 0
//! (None) or 1 (Some) then the value; an enum is its variant index as a `u32` (in the order listed above,
//! from 0) then its fields. There is one encoding per entry: decoding refuses trailing bytes, invalid
//! UTF-8, and tags out of range.
//!
//! - **Signed bytes**: `b"cinemesh/catalogue/v1\0"` ([`entry::SIGNING_DOMAIN`]) followed by the
//!   canonical encoding. The domain prefix keeps a catalogue signature from being valid for anything else
//!   the key might sign.
//! - **Wire and storage form** of a [`SignedEntry`]: the canonical encoding followed by the 64-byte ed25519
//!   signature. At most [`MAX_ENTRY_BYTES`] (64 KiB, also the gossipsub `max_transmit_size`); decoding
//!   reads through a bincode limit of that size, so a hostile length prefix cannot make it allocate more.
//! - Signatures are checked with strict ed25519 (`verify_strict`: no small-order keys, no malleable
//!   signatures).
//!
//! # Bounds (checked when signing, decoding and applying; the error names the field)
//!
//! | field | bound |
//! |---|---|
//! | `seq` | at least 1 |
//! | `title` | 1 to 256 bytes of UTF-8, not blank, no control characters |
//! | `name`, `isp`, `site` | at most 128 bytes, no control characters (may be empty) |
//! | group names (`groups`, `targets.groups`, policy `group`) | 1 to 64 characters of `A-Z a-z 0-9 . _ -` |
//! | peer ids (`peer`, `targets.nodes`) | a valid libp2p peer id, at most 128 bytes |
//! | `groups` of a member | at most 64 |
//! | `targets.groups` / `targets.nodes` | 1 to 256 / 1 to 1000 (an empty list would target no one) |
//! | `chunk_size` / `chunks` | `chunk_size >= 1`, `chunks * chunk_size >= size` |
//! | `deadline` | not before `issued_at` |
//! | `schedule` | at most 64 windows; each names 1 to 7 distinct days in 0..=6 and `start < end <= 1440` |
//!
//! # Applying (see [`Catalogue::apply`])
//!
//! Checks, in order; the first that fails is the [`Rejection`]:
//!
//! 1. the key is trusted (several keys may be) — else `UntrustedKey`; an entry byte-identical (signature
//!    included) to one already applied or held is then a `Duplicate` at once, without verifying again;
//! 2. the fields are within bounds — else `Invalid`;
//! 3. the signature is valid for the key — else `BadSignature` (forged or tampered);
//! 4. `issued_at` is at most `max_skew` (default [`state::MAX_CLOCK_SKEW`] = 1 h) after the receiver's
//!    `now`, which the caller passes in — else `FromTheFuture` (not the sender's fault: the entry comes
//!    again by anti-entropy and applies once the clocks agree). Without this bound one entry dated years
//!    ahead would win every cross-key comparison until then and wedge its key, since every later entry
//!    of it would go "backwards". [`Catalogue::restore`] does not check it again;
//! 5. per key, with `head` the highest applied seq (0 at first):
//!    - `seq <= head`: the same entry as the applied one is a harmless replay, `Duplicate`; a *different*
//!      validly signed entry at an applied seq is an `Equivocation` (the key signed two entries for one
//!      position: used from two machines, or stolen), rejected and to be reported loudly. The first entry
//!      known at a seq is the one kept, everywhere.
//!    - `seq > head + 1`: held in a per-key buffer until the gap fills, if `seq - head <= max_gap`
//!      (default [`state::MAX_GAP`] = 1024, so at most 1023 held per key; only a trusted key can fill it
//!      since the signature is checked first) — else `TooFarAhead` (the node fetches the gap by
//!      anti-entropy instead). A second, different entry for a held seq is an `Equivocation` too.
//!    - `seq == head + 1`: applied if `issued_at` is not earlier than the previous entry's of that key
//!      (equal is fine; else `TimeWentBackwards`: the distributor's clock must not go backwards) and the key
//!      has fewer than `max_log` entries (default [`state::MAX_LOG_PER_KEY`] = 1,000,000, else `LogFull`;
//!      300 films a year is a few thousand entries). Then held entries `head + 1, head + 2, ...` are
//!      applied in turn; one that fails now is dropped and reported in [`Applied::dropped`].
//!
//! [`Rejection::blames_sender`] tells the network layer whether to penalise the peer that sent it.
//!
//! # State
//!
//! When entries speak of the same content, peer or group, the one with the larger [`state::Stamp`]
//! `(issued_at, key, seq)` wins, so all nodes that hold the same logs agree whatever the arrival order:
//! - a content is published ([`Catalogue::films`]) if its latest Publish/Withdraw is a Publish; a later
//!   Publish updates title, targets or deadline; a Publish after a Withdraw publishes again;
//! - a peer is admitted ([`Catalogue::members`]) if its latest Admit/Revoke is an Admit;
//! - each group (or `None`, the default) has the policy of its latest Policy entry.
//!
//! # Anti-entropy
//!
//! A node advertises [`Catalogue::heads`] (every trusted key's head); a peer answers with
//! [`Catalogue::entries_after`]`(key, their_head, limit)` in bounded batches. Only applied entries are
//! persisted ([`Applied::entries`], in order) and [`Catalogue::restore`] rebuilds the state from them;
//! held entries are not persisted: they come again by anti-entropy.
//!
//! The catalogue does no I/O (except the key file functions) and reads no clock: `issued_at` comes from the
//! caller that builds an entry, and the receiver's `now` from the caller of [`Catalogue::apply`].

pub mod entry;
pub mod error;
pub mod key;
pub mod state;

pub use entry::{Body, Entry, Member, Policy, Publish, RateWindow, SignedEntry, Targets, MAX_ENTRY_BYTES};
pub use error::Rejection;
pub use key::{DistributorKey, KeyFileError, Keypair, ParseKeyError};
pub use state::{Applied, Catalogue, Film, Limits, Stamp};

#[cfg(test)]
mod tests;

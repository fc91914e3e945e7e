//! Why an entry was not applied.

use super::key::DistributorKey;

/// Why a catalogue entry was refused (by decoding, signing or [`Catalogue::apply`](super::Catalogue::apply)).
///
/// [`Rejection::blames_sender`] separates entries no trusted distributor produced (the peer that sent them
/// forged or corrupted them: penalise it, gossipsub `Reject`) from valid entries that are merely stale,
/// early, or a sign of trouble at the distributor (gossipsub `Ignore`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bytes do not decode as an entry.
    #[error("malformed catalogue entry: {reason}")]
    Malformed {
        /// The decoder's message.
        reason: String,
    },
    /// The encoded entry is larger than allowed.
    #[error("catalogue entry of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field is out of bounds.
    #[error("invalid catalogue entry: field `{field}`: {reason}")]
    Invalid {
        /// The field, e.g. `title` or `targets.nodes`.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// Signed by a key this node does not trust.
    #[error(
        "catalogue entry signed by untrusted key {key}; add it to the trusted distributor keys if it is \
         yours"
    )]
    UntrustedKey {
        /// The key.
        key: DistributorKey,
    },
    /// The signature does not match the entry and its key: forged or tampered with.
    #[error("catalogue entry seq {seq} claiming key {} has a bad signature: forged or tampered with", key.short())]
    BadSignature {
        /// The key it claims.
        key: DistributorKey,
        /// The seq it claims.
        seq: u64,
    },
    /// The very same entry was already applied or is already held: a harmless replay.
    #[error("catalogue entry seq {seq} of key {} is already known (duplicate), ignored", key.short())]
    Duplicate {
        /// The key.
        key: DistributorKey,
        /// Its seq.
        seq: u64,
    },
    /// A validly signed entry that differs from the one already applied or held at the same seq: the key
    /// signed two different entries for one position. This is a fault at the distributor (a key used from
    /// two machines, or a stolen key) and must be reported; the first one known is kept.
    #[error(
        "EQUIVOCATION: key {} signed two different entries with seq {seq} (head {head}); the first one is kept. \
         The distributor key is used from two places or is compromised",
        key.short()
    )]
    Equivocation {
        /// The key.
        key: DistributorKey,
        /// The seq used twice.
        seq: u64,
        /// That key's head when it was detected.
        head: u64,
    },
    /// Too far ahead of the applied head to be held: fetch the gap by anti-entropy first.
    #[error(
        "catalogue entry seq {seq} of key {} is too far ahead of head {head} (at most {max_gap} ahead are held); \
         dropped until the gap is synced",
        key.short()
    )]
    TooFarAhead {
        /// The key.
        key: DistributorKey,
        /// Its seq.
        seq: u64,
        /// The key's head.
        head: u64,
        /// The limit.
        max_gap: u64,
    },
    /// `issued_at` is earlier than that of the key's previous entry.
    #[error(
        "catalogue entry seq {seq} of key {} was issued at {issued_at}, before the previous entry ({previous}); \
         the distributor's clock went backwards",
        key.short()
    )]
    TimeWentBackwards {
        /// The key.
        key: DistributorKey,
        /// Its seq.
        seq: u64,
        /// Its issued_at.
        issued_at: u64,
        /// The previous entry's issued_at.
        previous: u64,
    },
    /// `issued_at` is further ahead of the receiver's clock than the skew bound allows. Either the
    /// distributor's clock runs ahead or this node's runs behind; the entry comes again by anti-entropy,
    /// so it is applied once the clocks agree.
    #[error(
        "catalogue entry seq {seq} of key {} was issued at {issued_at}, {} s after this node's clock ({now}; \
         at most {max_skew} s of skew are accepted): check the clocks (NTP) of the distributor's host and \
         of this node",
        key.short(), issued_at.saturating_sub(*now)
    )]
    FromTheFuture {
        /// The key.
        key: DistributorKey,
        /// Its seq.
        seq: u64,
        /// Its issued_at.
        issued_at: u64,
        /// The receiver's clock when it was refused.
        now: u64,
        /// The bound.
        max_skew: u64,
    },
    /// The key's log reached its size limit.
    #[error("the catalogue log of key {} is full ({max} entries); start a new distributor key", key.short())]
    LogFull {
        /// The key.
        key: DistributorKey,
        /// The limit.
        max: u64,
    },
}

impl Rejection {
    /// Whether no trusted distributor could have produced this entry: the sender forged or corrupted it.
    pub fn blames_sender(&self) -> bool {
        matches!(
            self,
            Rejection::Malformed { .. }
                | Rejection::TooLarge { .. }
                | Rejection::Invalid { .. }
                | Rejection::UntrustedKey { .. }
                | Rejection::BadSignature { .. }
        )
    }

    /// Whether this is a harmless repeat of something already known.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Rejection::Duplicate { .. })
    }
}

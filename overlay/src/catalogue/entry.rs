//! Catalogue entries, their bounds, canonical encoding and signature.
//!
//! See the [module doc](super) for the wire format and the limits.

use std::collections::BTreeSet;

use bincode::Options;
use serde::{Deserialize, Serialize};

use super::error::Rejection;
use super::key::{DistributorKey, Keypair, SIGNATURE_LEN};
pub use crate::core::schedule::RateWindow;
use crate::ContentId;

/// Largest encoded [`SignedEntry`] in bytes (also the gossipsub `max_transmit_size` for the catalogue).
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Domain-separation prefix of the signed bytes.
pub const SIGNING_DOMAIN: &[u8] = b"cinemesh/catalogue/v1\0";
/// Longest title, in bytes of UTF-8.
pub const MAX_TITLE_LEN: usize = 256;
/// Longest member name, ISP or site, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 128;
/// Longest group name, in bytes (`[A-Za-z0-9._-]`).
pub const MAX_GROUP_LEN: usize = 64;
/// Longest peer id text, in bytes.
pub const MAX_PEER_LEN: usize = 128;
/// Most groups a member can be in.
pub const MAX_MEMBER_GROUPS: usize = 64;
/// Most groups named by [`Targets::Groups`].
pub const MAX_TARGET_GROUPS: usize = 256;
/// Most peers named by [`Targets::Nodes`].
pub const MAX_TARGET_NODES: usize = 1000;
/// Most windows in a [`Policy`] schedule.
pub const MAX_WINDOWS: usize = 64;
/// Minutes in a day: the exclusive upper bound of a window's `end_minute`.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// One catalogue entry, as signed by a distributor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The distributor key that signs it.
    pub key: DistributorKey,
    /// Position in that key's log, from 1, without gaps.
    pub seq: u64,
    /// When the distributor issued it, unix seconds (given by the caller; never decreases per key).
    pub issued_at: u64,
    /// What it says.
    pub body: Body,
}

/// What an entry says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Make a content available to the targeted nodes (or update its targets, title or deadline).
    Publish(Publish),
    /// Withdraw a content: nodes stop fetching and serving it.
    Withdraw {
        /// The content withdrawn.
        content: ContentId,
    },
    /// Admit a node to the mesh (or update its attributes).
    Admit(Member),
    /// Revoke a node.
    Revoke {
        /// libp2p peer id, text form.
        peer: String,
    },
    /// Set the bandwidth schedule for a group (or the default one).
    Policy(Policy),
}

/// A content made available.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// The content id (BLAKE3 of its manifest).
    pub content: ContentId,
    /// Human-readable title.
    pub title: String,
    /// Total size in bytes (from the manifest; for planning and progress before the manifest is fetched).
    pub size: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Number of chunks.
    pub chunks: u32,
    /// Which nodes must hold it.
    pub targets: Targets,
    /// When they must hold it by, unix seconds.
    pub deadline: Option<u64>,
}

/// Which nodes a publication is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Targets {
    /// Every admitted node.
    All,
    /// Nodes in any of these groups.
    Groups(Vec<String>),
    /// These peers (libp2p peer id text).
    Nodes(Vec<String>),
}

impl Targets {
    /// Whether a node with peer id `peer`, in `groups`, is targeted.
    pub fn matches(&self, peer: &str, groups: &[String]) -> bool {
        match self {
            Targets::All => true,
            Targets::Groups(wanted) => wanted.iter().any(|g| groups.contains(g)),
            Targets::Nodes(peers) => peers.iter().any(|p| p == peer),
        }
    }
}

/// An admitted node and its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// libp2p peer id, text form.
    pub peer: String,
    /// Human-readable name (e.g. the cinema).
    pub name: String,
    /// ISP name, used for locality (may be empty: unknown).
    pub isp: String,
    /// Site (LAN) name, used for locality (may be empty: unknown).
    pub site: String,
    /// Groups the node belongs to, for targets and policies.
    pub groups: Vec<String>,
}

/// A bandwidth schedule for one group of nodes, or for all nodes without a group-specific policy.
///
/// A later policy for the same `group` replaces the earlier one; an empty schedule removes all limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The group it applies to; `None`: the default for every node.
    pub group: Option<String>,
    /// Weekly windows; the first one that contains a moment applies; outside all windows: no limit.
    pub schedule: Vec<RateWindow>,
}

impl Policy {
    /// The window in force on `day` (0 = Monday .. 6 = Sunday) at `minute` after midnight, UTC.
    pub fn window_at(&self, day: u8, minute: u16) -> Option<&RateWindow> {
        self.schedule.iter().find(|w| w.contains(day, minute))
    }
}

/// An entry with its distributor's signature over [`Entry::signed_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedEntry {
    /// The entry.
    pub entry: Entry,
    /// ed25519 signature by `entry.key`.
    pub signature: [u8; SIGNATURE_LEN],
}

/// bincode 1.3, fixed-width big-endian integers, no trailing bytes.
fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_big_endian().reject_trailing_bytes()
}

/// [`codec`] with reads bounded by [`MAX_ENTRY_BYTES`], for untrusted input.
fn read_codec() -> impl Options {
    codec().with_limit(MAX_ENTRY_BYTES as u64)
}

impl Entry {
    /// The canonical encoding of this entry (bincode, see the module doc), without the domain prefix.
    pub fn encode(&self) -> Vec<u8> {
        // bincode fails only on sequences of unknown length and on a size limit; an Entry has neither
        // (the write codec has no limit), so this cannot fail.
        codec().serialize(self).expect("bincode serialization of an Entry cannot fail")
    }

    /// The bytes the signature covers: [`SIGNING_DOMAIN`] followed by [`Entry::encode`].
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        out.extend_from_slice(&self.encode());
        out
    }

    /// Checks the bounds of every field (see the module doc); the error names the field.
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.seq == 0 {
            return Err(invalid("seq", "must be at least 1"));
        }
        match &self.body {
            Body::Publish(p) => {
                text("title", &p.title, MAX_TITLE_LEN, false)?;
                if p.chunk_size == 0 {
                    return Err(invalid("chunk_size", "must be at least 1"));
                }
                if u64::from(p.chunks) * u64::from(p.chunk_size) < p.size {
                    return Err(invalid(
                        "chunks",
                        format!("{} chunks of {} bytes cannot hold {} bytes", p.chunks, p.chunk_size, p.size),
                    ));
                }
                if let Some(deadline) = p.deadline {
                    if deadline < self.issued_at {
                        return Err(invalid(
                            "deadline",
                            format!("{deadline} is before the entry's issued_at {}", self.issued_at),
                        ));
                    }
                }
                match &p.targets {
                    Targets::All => {}
                    Targets::Groups(groups) => {
                        list("targets.groups", groups.len(), MAX_TARGET_GROUPS)?;
                        groups.iter().try_for_each(|g| group("targets.groups", g))?;
                    }
                    Targets::Nodes(peers) => {
                        list("targets.nodes", peers.len(), MAX_TARGET_NODES)?;
                        peers.iter().try_for_each(|p| peer_id("targets.nodes", p))?;
                    }
                }
            }
            Body::Withdraw { .. } => {}
            Body::Admit(m) => {
                peer_id("peer", &m.peer)?;
                text("name", &m.name, MAX_NAME_LEN, true)?;
                text("isp", &m.isp, MAX_NAME_LEN, true)?;
                text("site", &m.site, MAX_NAME_LEN, true)?;
                if m.groups.len() > MAX_MEMBER_GROUPS {
                    return Err(invalid("groups", format!("more than {MAX_MEMBER_GROUPS} groups")));
                }
                m.groups.iter().try_for_each(|g| group("groups", g))?;
            }
            Body::Revoke { peer } => peer_id("peer", peer)?,
            Body::Policy(p) => {
                if let Some(g) = &p.group {
                    group("group", g)?;
                }
                if p.schedule.len() > MAX_WINDOWS {
                    return Err(invalid("schedule", format!("more than {MAX_WINDOWS} windows")));
                }
                for w in &p.schedule {
                    if w.days.is_empty() {
                        return Err(invalid("schedule.days", "names no day"));
                    }
                    let mut seen = BTreeSet::new();
                    for &d in &w.days {
                        if d > 6 || !seen.insert(d) {
                            return Err(invalid(
                                "schedule.days",
                                format!("day {d} is out of 0 (Monday)..=6 (Sunday) or repeated"),
                            ));
                        }
                    }
                    if w.start_minute >= w.end_minute || w.end_minute > MINUTES_PER_DAY {
                        return Err(invalid(
                            "schedule.start_minute",
                            format!(
                                "window {}..{} must satisfy start < end <= {MINUTES_PER_DAY}",
                                w.start_minute, w.end_minute
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates this entry and signs it with `keypair`, which must be the entry's key.
    pub fn sign(self, keypair: &Keypair) -> Result<SignedEntry, Rejection> {
        if keypair.public() != self.key {
            return Err(invalid(
                "key",
                format!("the entry names key {} but is being signed with {}", self.key, keypair.public()),
            ));
        }
        self.validate()?;
        let signed_bytes = self.signed_bytes();
        let len = signed_bytes.len() - SIGNING_DOMAIN.len() + SIGNATURE_LEN;
        if len > MAX_ENTRY_BYTES {
            return Err(Rejection::TooLarge { len, max: MAX_ENTRY_BYTES });
        }
        let signature = keypair.sign(&signed_bytes);
        Ok(SignedEntry { entry: self, signature })
    }
}

impl SignedEntry {
    /// Checks the signature against `entry.key` (strict ed25519). Does not check that the key is trusted:
    /// that is the [`Catalogue`](super::Catalogue)'s job.
    pub fn verify(&self) -> Result<(), Rejection> {
        if self.entry.key.verify(&self.entry.signed_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(Rejection::BadSignature { key: self.entry.key, seq: self.entry.seq })
        }
    }

    /// Wire and storage form: [`Entry::encode`] followed by the 64 signature bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.entry.encode();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the wire form and checks every field's bounds; does not verify the signature.
    pub fn decode(bytes: &[u8]) -> Result<SignedEntry, Rejection> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(Rejection::TooLarge { len: bytes.len(), max: MAX_ENTRY_BYTES });
        }
        let split = bytes.len().checked_sub(SIGNATURE_LEN).ok_or_else(|| Rejection::Malformed {
            reason: format!("{} bytes is shorter than a signature ({SIGNATURE_LEN} bytes)", bytes.len()),
        })?;
        let (body, sig) = bytes.split_at(split);
        let entry: Entry =
            read_codec().deserialize(body).map_err(|e| Rejection::Malformed { reason: e.to_string() })?;
        entry.validate()?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(sig);
        Ok(SignedEntry { entry, signature })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Rejection {
    Rejection::Invalid { field, reason: reason.into() }
}

fn text(field: &'static str, s: &str, max: usize, may_be_empty: bool) -> Result<(), Rejection> {
    if s.len() > max {
        return Err(invalid(field, format!("{} bytes is longer than {max}", s.len())));
    }
    if !may_be_empty && s.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(field, "contains a control character"));
    }
    Ok(())
}

fn list(field: &'static str, len: usize, max: usize) -> Result<(), Rejection> {
    if len == 0 {
        return Err(invalid(field, "is empty: it would target no node (use `All` or name some)"));
    }
    if len > max {
        return Err(invalid(field, format!("{len} items is more than {max}")));
    }
    Ok(())
}

fn group(field: &'static str, g: &str) -> Result<(), Rejection> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if g.is_empty() || g.len() > MAX_GROUP_LEN || !g.chars().all(ok_char) {
        return Err(invalid(
            field,
            format!("group {g:?} must be 1 to {MAX_GROUP_LEN} characters of A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

fn peer_id(field: &'static str, p: &str) -> Result<(), Rejection> {
    if p.len() > MAX_PEER_LEN || p.parse::<libp2p::PeerId>().is_err() {
        let shown: String = p.chars().take(MAX_PEER_LEN).collect();
        return Err(invalid(field, format!("{shown:?} is not a libp2p peer id")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn peer(n: u8) -> String {
        libp2p::identity::Keypair::ed25519_from_bytes([n; 32]).unwrap().public().to_peer_id().to_string()
    }

    fn publish(kp: &Keypair, seq: u64) -> Entry {
        Entry {
            key: kp.public(),
            seq,
            issued_at: 1_700_000_000,
            body: Body::Publish(Publish {
                content: ContentId([7; 32]),
                title: "Film".into(),
                size: 10,
                chunk_size: 4,
                chunks: 3,
                targets: Targets::Groups(vec!["paris".into()]),
                deadline: Some(1_700_086_400),
            }),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let kp = Keypair::from_secret([1; 32]);
        let signed = publish(&kp, 1).sign(&kp).unwrap();
        let bytes = signed.encode();
        // Key (32 raw bytes) first, then seq as 8 big-endian bytes: fixed-int big-endian bincode.
        assert_eq!(&bytes[..32], kp.public().as_bytes());
        assert_eq!(&bytes[32..40], &1u64.to_be_bytes());
        assert_eq!(&bytes[bytes.len() - 64..], &signed.signature);
        let back = SignedEntry::decode(&bytes).unwrap();
        assert_eq!(back, signed);
        back.verify().unwrap();
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let kp = Keypair::from_secret([1; 32]);
        let mut signed = publish(&kp, 1).sign(&kp).unwrap();
        if let Body::Publish(p) = &mut signed.entry.body {
            p.title = "Other".into();
        }
        assert!(matches!(signed.verify(), Err(Rejection::BadSignature { seq: 1, .. })));
    }

    #[test]
    fn signing_with_the_wrong_key_is_refused() {
        let (a, b) = (Keypair::from_secret([1; 32]), Keypair::from_secret([2; 32]));
        let err = publish(&a, 1).sign(&b).unwrap_err();
        assert!(matches!(err, Rejection::Invalid { field: "key", .. }), "{err}");
    }

    #[test]
    fn bounds_name_the_field() {
        let kp = Keypair::from_secret([1; 32]);
        let field = |e: Entry| match e.validate() {
            Err(Rejection::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let with = |f: &dyn Fn(&mut Publish)| {
            let mut e = publish(&kp, 1);
            if let Body::Publish(p) = &mut e.body {
                f(p);
            }
            e
        };
        assert_eq!(field(with(&|p| p.title = "x".repeat(MAX_TITLE_LEN + 1))), "title");
        assert_eq!(field(with(&|p| p.title = " ".into())), "title");
        assert_eq!(field(with(&|p| p.title = "a\nb".into())), "title");
        assert_eq!(field(with(&|p| p.chunk_size = 0)), "chunk_size");
        assert_eq!(field(with(&|p| p.chunks = 2)), "chunks");
        assert_eq!(field(with(&|p| p.deadline = Some(5))), "deadline");
        assert_eq!(field(with(&|p| p.targets = Targets::Groups(vec![]))), "targets.groups");
        assert_eq!(field(with(&|p| p.targets = Targets::Groups(vec!["a b".into()]))), "targets.groups");
        assert_eq!(field(with(&|p| p.targets = Targets::Nodes(vec!["not-a-peer".into()]))), "targets.nodes");
        let many = (0..=MAX_TARGET_NODES).map(|_| peer(1)).collect();
        assert_eq!(field(with(&|p| p.targets = Targets::Nodes(Vec::clone(&many)))), "targets.nodes");
        let mut zero = publish(&kp, 1);
        zero.seq = 0;
        assert_eq!(field(zero), "seq");

        let admit = |m: Member| Entry { body: Body::Admit(m), ..publish(&kp, 1) };
        let good =
            Member { peer: peer(1), name: "Rex".into(), isp: "".into(), site: "".into(), groups: vec![] };
        admit(good.clone()).validate().unwrap();
        assert_eq!(field(admit(Member { peer: "x".into(), ..good.clone() })), "peer");
        assert_eq!(field(admit(Member { isp: "i".repeat(MAX_NAME_LEN + 1), ..good.clone() })), "isp");
        let groups = (0..=MAX_MEMBER_GROUPS).map(|i| format!("g{i}")).collect();
        assert_eq!(field(admit(Member { groups, ..good })), "groups");

        let policy = |w: RateWindow| Entry {
            body: Body::Policy(Policy { group: None, schedule: vec![w] }),
            ..publish(&kp, 1)
        };
        let w = RateWindow {
            days: vec![0, 4],
            start_minute: 600,
            end_minute: 1200,
            upload: Some(0),
            download: None,
        };
        policy(w.clone()).validate().unwrap();
        assert_eq!(field(policy(RateWindow { days: vec![7], ..w.clone() })), "schedule.days");
        assert_eq!(field(policy(RateWindow { days: vec![1, 1], ..w.clone() })), "schedule.days");
        assert_eq!(field(policy(RateWindow { days: vec![], ..w.clone() })), "schedule.days");
        assert_eq!(field(policy(RateWindow { end_minute: 600, ..w.clone() })), "schedule.start_minute");
        assert_eq!(field(policy(RateWindow { end_minute: 1441, ..w })), "schedule.start_minute");
    }

    #[test]
    fn decode_rejects_oversize_short_and_trailing_input() {
        assert!(matches!(
            SignedEntry::decode(&vec![0; MAX_ENTRY_BYTES + 1]),
            Err(Rejection::TooLarge { max: MAX_ENTRY_BYTES, .. })
        ));
        assert!(matches!(SignedEntry::decode(&[0; 10]), Err(Rejection::Malformed { .. })));
        let kp = Keypair::from_secret([1; 32]);
        let mut bytes = publish(&kp, 1).sign(&kp).unwrap().encode();
        bytes.insert(40, 0);
        assert!(SignedEntry::decode(&bytes).is_err());
    }

    #[test]
    fn oversize_entries_cannot_be_signed() {
        let kp = Keypair::from_secret([1; 32]);
        let long_peer = peer(1);
        let mut e = publish(&kp, 1);
        // Valid field by field, but past MAX_ENTRY_BYTES in total? Nodes are bounded so that this fits.
        if let Body::Publish(p) = &mut e.body {
            p.targets = Targets::Nodes(vec![long_peer; MAX_TARGET_NODES]);
        }
        let signed = e.sign(&kp).unwrap();
        assert!(signed.encode().len() <= MAX_ENTRY_BYTES);
    }

    #[test]
    fn targets_match() {
        let groups = vec!["paris".to_string(), "imax".to_string()];
        assert!(Targets::All.matches("p", &[]));
        assert!(Targets::Groups(vec!["imax".into()]).matches("p", &groups));
        assert!(!Targets::Groups(vec!["lyon".into()]).matches("p", &groups));
        assert!(Targets::Nodes(vec!["p".into()]).matches("p", &[]));
        assert!(!Targets::Nodes(vec!["q".into()]).matches("p", &groups));
    }

    #[test]
    fn policy_windows() {
        let p = Policy {
            group: Some("paris".into()),
            schedule: vec![RateWindow {
                days: vec![5, 6],
                start_minute: 14 * 60,
                end_minute: 23 * 60,
                upload: Some(1_000_000),
                download: None,
            }],
        };
        assert!(p.window_at(5, 14 * 60).is_some());
        assert!(p.window_at(5, 23 * 60).is_none());
        assert!(p.window_at(0, 15 * 60).is_none());
    }
}

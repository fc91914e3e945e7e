//! The catalogue state: applies signed entries in seq order per key and answers what is published, who is
//! admitted and which policies hold. No I/O, no clock.
//!
//! See the [module doc](super) for the rules.

use std::collections::{BTreeMap, BTreeSet};

use super::entry::{Body, Member, Policy, Publish, SignedEntry};
use super::error::Rejection;
use super::key::DistributorKey;
use crate::ContentId;

/// Bounds of a [`Catalogue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// An entry more than this many seqs ahead of its key's head is refused ([`Rejection::TooFarAhead`]);
    /// so at most `max_gap - 1` entries are held per key.
    pub max_gap: u64,
    /// Most entries applied per key ([`Rejection::LogFull`] beyond).
    pub max_log: u64,
    /// An entry issued more than this many seconds after the receiver's `now` is refused
    /// ([`Rejection::FromTheFuture`]): one entry dated far ahead would otherwise win every cross-key
    /// comparison until then and wedge its own key (every later entry would go "backwards").
    pub max_skew: u64,
}

/// Default [`Limits::max_gap`].
pub const MAX_GAP: u64 = 1024;
/// Default [`Limits::max_log`].
pub const MAX_LOG_PER_KEY: u64 = 1_000_000;
/// Default [`Limits::max_skew`]: one hour, seconds. Hosts keep their clocks with NTP; an hour covers a
/// badly set time zone offset of the signing host's hardware clock, not a clock a day off.
pub const MAX_CLOCK_SKEW: u64 = 3600;

impl Default for Limits {
    fn default() -> Self {
        Self { max_gap: MAX_GAP, max_log: MAX_LOG_PER_KEY, max_skew: MAX_CLOCK_SKEW }
    }
}

/// Which entry wins when two entries speak of the same content, peer or group: the larger stamp.
///
/// Within one key, stamps grow with seq (issued_at never decreases); across keys, the later `issued_at`
/// wins, then the larger key, so every node reaches the same state whatever the arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The entry's issued_at.
    pub issued_at: u64,
    /// Its key.
    pub key: DistributorKey,
    /// Its seq.
    pub seq: u64,
}

/// A published content: the latest Publish of it, not withdrawn since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Film {
    /// Which entry published it.
    pub stamp: Stamp,
    /// What it says.
    pub publish: Publish,
}

/// What one [`Catalogue::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries applied, in order: the given one first, then held entries its arrival released. Persist
    /// these (in this order) and gossip them on. Empty when the entry was held.
    pub entries: Vec<SignedEntry>,
    /// The entry is valid but ahead of its key's head + 1; it is held until the gap fills (ask the sender
    /// for the entries after [`Catalogue::head`]).
    pub held: bool,
    /// Held entries released by this call that could not be applied after all (their reasons); dropped.
    pub dropped: Vec<Rejection>,
}

#[derive(Clone, Debug, Default)]
struct KeyLog {
    /// Applied entries; `log[i]` has seq `i + 1`.
    log: Vec<SignedEntry>,
    /// Valid entries waiting for a gap to fill, by seq; all in `head + 2 ..= head + max_gap`.
    pending: BTreeMap<u64, SignedEntry>,
}

impl KeyLog {
    fn head(&self) -> u64 {
        self.log.len() as u64
    }
}

#[derive(Clone, Debug)]
struct Record<T> {
    stamp: Stamp,
    /// `None`: withdrawn / revoked.
    value: Option<T>,
}

/// Last writer wins by stamp.
fn put<K: Ord, T>(map: &mut BTreeMap<K, Record<T>>, key: K, stamp: Stamp, value: Option<T>) {
    match map.get(&key) {
        Some(old) if old.stamp > stamp => {}
        _ => {
            map.insert(key, Record { stamp, value });
        }
    }
}

/// The catalogue: trusted keys, each key's applied log, and the state the logs say.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    limits: Limits,
    trusted: BTreeSet<DistributorKey>,
    logs: BTreeMap<DistributorKey, KeyLog>,
    films: BTreeMap<ContentId, Record<Film>>,
    members: BTreeMap<String, Record<Member>>,
    policies: BTreeMap<Option<String>, Record<Policy>>,
    /// Per key, the highest seq of a validly signed entry seen (applied, held, or refused as too far
    /// ahead, from the future or an equivocation): evidence that the mesh is ahead of this node.
    seen: BTreeMap<DistributorKey, u64>,
}

impl Catalogue {
    /// An empty catalogue trusting `trusted`, with default [`Limits`].
    pub fn new(trusted: impl IntoIterator<Item = DistributorKey>) -> Self {
        Self::with_limits(trusted, Limits::default())
    }

    /// An empty catalogue with the given limits.
    pub fn with_limits(trusted: impl IntoIterator<Item = DistributorKey>, limits: Limits) -> Self {
        Self { limits, trusted: trusted.into_iter().collect(), ..Self::default() }
    }

    /// Rebuilds a catalogue from stored entries (each key's in seq order, as [`Applied::entries`] gave
    /// them), re-verifying each. Entries that no longer apply (e.g. their key is no longer trusted) are
    /// returned with their reasons beside the catalogue. The clock-skew bound is not applied again: it
    /// was checked when each entry was first applied, and a restart with a clock set back must not drop
    /// the log.
    pub fn restore(
        trusted: impl IntoIterator<Item = DistributorKey>,
        entries: impl IntoIterator<Item = SignedEntry>,
    ) -> (Self, Vec<Rejection>) {
        let mut catalogue = Self::new(trusted);
        let mut rejected = Vec::new();
        for entry in entries {
            match catalogue.apply(entry, u64::MAX) {
                Ok(applied) => rejected.extend(applied.dropped),
                Err(e) => rejected.push(e),
            }
        }
        (catalogue, rejected)
    }

    /// Trusts one more key; `false` if it was already trusted.
    pub fn trust(&mut self, key: DistributorKey) -> bool {
        self.trusted.insert(key)
    }

    /// The trusted keys.
    pub fn trusted(&self) -> impl Iterator<Item = &DistributorKey> {
        self.trusted.iter()
    }

    /// Applies `entry` (or holds it until its predecessors arrive) at `now` (the receiver's unix seconds,
    /// used only to bound the entry's `issued_at`). See the module doc for the rules.
    pub fn apply(&mut self, signed: SignedEntry, now: u64) -> Result<Applied, Rejection> {
        let key = signed.entry.key;
        let seq = signed.entry.seq;
        if !self.trusted.contains(&key) {
            return Err(Rejection::UntrustedKey { key });
        }
        if self.is_known(&signed) {
            // Byte-identical to an entry already verified: no need to verify again (cheap replays).
            return Err(Rejection::Duplicate { key, seq });
        }
        signed.entry.validate()?;
        signed.verify()?;
        if self.trusted.contains(&key) {
            let seen = self.seen.entry(key).or_default();
            *seen = (*seen).max(seq);
        }
        let max_skew = self.limits.max_skew;
        if signed.entry.issued_at > now.saturating_add(max_skew) {
            let issued_at = signed.entry.issued_at;
            return Err(Rejection::FromTheFuture { key, seq, issued_at, now, max_skew });
        }

        let max_gap = self.limits.max_gap;
        let log = self.logs.entry(key).or_default();
        let head = log.head();
        if seq <= head {
            let index = usize::try_from(seq - 1).unwrap_or(usize::MAX);
            return Err(match log.log.get(index) {
                Some(known) if known.entry == signed.entry => Rejection::Duplicate { key, seq },
                _ => Rejection::Equivocation { key, seq, head },
            });
        }
        if seq > head + 1 {
            if seq - head > max_gap {
                return Err(Rejection::TooFarAhead { key, seq, head, max_gap });
            }
            return match log.pending.get(&seq) {
                Some(known) if known.entry == signed.entry => Err(Rejection::Duplicate { key, seq }),
                Some(_) => Err(Rejection::Equivocation { key, seq, head }),
                None => {
                    log.pending.insert(seq, signed);
                    Ok(Applied { held: true, ..Applied::default() })
                }
            };
        }

        let mut applied = Applied::default();
        self.apply_next(signed.clone())?;
        applied.entries.push(signed);
        loop {
            let log = self.logs.entry(key).or_default();
            let Some(next) = log.pending.remove(&(log.head() + 1)) else { break };
            match self.apply_next(next.clone()) {
                Ok(()) => applied.entries.push(next),
                Err(e) => applied.dropped.push(e),
            }
        }
        Ok(applied)
    }

    /// Whether this very entry, signature included, is applied or held.
    fn is_known(&self, signed: &SignedEntry) -> bool {
        let Some(log) = self.logs.get(&signed.entry.key) else { return false };
        let seq = signed.entry.seq;
        let applied = seq.checked_sub(1).and_then(|i| usize::try_from(i).ok()).and_then(|i| log.log.get(i));
        applied.or_else(|| log.pending.get(&seq)) == Some(signed)
    }

    /// Applies a verified entry whose seq is its key's head + 1.
    fn apply_next(&mut self, signed: SignedEntry) -> Result<(), Rejection> {
        let entry = &signed.entry;
        let key = entry.key;
        let log = self.logs.entry(key).or_default();
        if log.head() >= self.limits.max_log {
            return Err(Rejection::LogFull { key, max: self.limits.max_log });
        }
        if let Some(previous) = log.log.last().map(|p| p.entry.issued_at) {
            if entry.issued_at < previous {
                return Err(Rejection::TimeWentBackwards {
                    key,
                    seq: entry.seq,
                    issued_at: entry.issued_at,
                    previous,
                });
            }
        }
        let stamp = Stamp { issued_at: entry.issued_at, key, seq: entry.seq };
        match &entry.body {
            Body::Publish(p) => {
                let film = Film { stamp, publish: p.clone() };
                put(&mut self.films, p.content, stamp, Some(film));
            }
            Body::Withdraw { content } => put(&mut self.films, *content, stamp, None),
            Body::Admit(m) => put(&mut self.members, m.peer.clone(), stamp, Some(m.clone())),
            Body::Revoke { peer } => put(&mut self.members, peer.clone(), stamp, None),
            Body::Policy(p) => put(&mut self.policies, p.group.clone(), stamp, Some(p.clone())),
        }
        log.log.push(signed);
        Ok(())
    }

    /// The highest applied seq of `key` (0: none).
    pub fn head(&self, key: &DistributorKey) -> u64 {
        self.logs.get(key).map_or(0, KeyLog::head)
    }

    /// The highest seq of `key` this node has seen validly signed, applied or not (at least
    /// [`Catalogue::head`]). Above the head, the mesh holds entries this node has not applied yet: signing
    /// `head + 1` now would equivocate.
    pub fn seen_head(&self, key: &DistributorKey) -> u64 {
        self.seen.get(key).copied().unwrap_or(0).max(self.head(key))
    }

    /// The `issued_at` of `key`'s last applied entry (0: none). The next entry of the key must not be
    /// issued earlier ([`Rejection::TimeWentBackwards`]), so a signer takes the later of this and its clock.
    pub fn head_issued_at(&self, key: &DistributorKey) -> u64 {
        self.logs.get(key).and_then(|l| l.log.last()).map_or(0, |e| e.entry.issued_at)
    }

    /// The head of every trusted key (0 for a key with no entry yet): what a node advertises for
    /// anti-entropy.
    pub fn heads(&self) -> BTreeMap<DistributorKey, u64> {
        self.trusted.iter().map(|k| (*k, self.head(k))).collect()
    }

    /// Up to `limit` applied entries of `key` with seq greater than `after`, in seq order: what a peer
    /// whose head is `after` is missing.
    pub fn entries_after(&self, key: &DistributorKey, after: u64, limit: usize) -> &[SignedEntry] {
        let Some(log) = self.logs.get(key) else { return &[] };
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(log.log.len());
        let end = start.saturating_add(limit).min(log.log.len());
        &log.log[start..end]
    }

    /// How many entries of `key` are held waiting for a gap to fill.
    pub fn held(&self, key: &DistributorKey) -> usize {
        self.logs.get(key).map_or(0, |l| l.pending.len())
    }

    /// Published contents not withdrawn, by content id.
    pub fn films(&self) -> impl Iterator<Item = &Film> {
        self.films.values().filter_map(|r| r.value.as_ref())
    }

    /// A published content, if not withdrawn.
    pub fn film(&self, content: &ContentId) -> Option<&Film> {
        self.films.get(content).and_then(|r| r.value.as_ref())
    }

    /// Whether the latest word on `content` is a Withdraw.
    pub fn withdrawn(&self, content: &ContentId) -> bool {
        self.films.get(content).is_some_and(|r| r.value.is_none())
    }

    /// Whether `publish` targets `peer`: by its id, by one of the groups of its Admit entry (a node not
    /// admitted has none), or `Targets::All`. The one catalogue side of the targeting rule; the engine's
    /// `core::engine::wants` adds the role.
    pub fn targets(&self, publish: &Publish, peer: &str) -> bool {
        let groups = self.member(peer).map(|m| m.groups.as_slice()).unwrap_or_default();
        publish.targets.matches(peer, groups)
    }

    /// The published contents that target `peer` ([`targets`](Self::targets)).
    pub fn films_for<'a>(&'a self, peer: &'a str) -> impl Iterator<Item = &'a Film> + 'a {
        self.films().filter(move |f| self.targets(&f.publish, peer))
    }

    /// Admitted members, not revoked, by peer id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter_map(|r| r.value.as_ref())
    }

    /// Whether the latest word on `peer` is a Revoke: it gets no catalogue and no content.
    pub fn is_revoked(&self, peer: &str) -> bool {
        self.members.get(peer).is_some_and(|r| r.value.is_none())
    }

    /// The peers whose latest word is a Revoke.
    pub fn revoked(&self) -> impl Iterator<Item = &str> {
        self.members.iter().filter(|(_, r)| r.value.is_none()).map(|(p, _)| p.as_str())
    }

    /// Whether any node has been admitted (a private mesh enforces admission only once it has a list).
    pub fn has_members(&self) -> bool {
        self.members().next().is_some()
    }

    /// An admitted member.
    pub fn member(&self, peer: &str) -> Option<&Member> {
        self.members.get(peer).and_then(|r| r.value.as_ref())
    }

    /// Whether `peer` is admitted and not revoked.
    pub fn is_admitted(&self, peer: &str) -> bool {
        self.member(peer).is_some()
    }

    /// The policy in force per group (`None` first: the default policy).
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values().filter_map(|r| r.value.as_ref())
    }

    /// The policy for `group` (`None`: the default policy).
    pub fn policy(&self, group: Option<&str>) -> Option<&Policy> {
        self.policies.get(&group.map(str::to_owned)).and_then(|r| r.value.as_ref())
    }

    /// Number of applied entries, all keys together.
    pub fn len(&self) -> usize {
        self.logs.values().map(|l| l.log.len()).sum()
    }

    /// Whether no entry was applied.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

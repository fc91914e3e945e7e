//! Cached encodings of the answers to peers' `Manifest` and `Sync` requests, so that the same 40-byte
//! request asked again (by many peers after a publish, or by one peer again and again) costs a copy, not a
//! read from the store, a decode and an encode each time (issue 11 finding 3).
//!
//! Bounded: at most [`MANIFESTS`] manifests of [`MANIFEST_BYTES`] in all, and [`SYNCS`] sync answers, the
//! oldest dropped first. A content's manifest never changes (the id is its hash), so it is forgotten only
//! when the content is removed; sync answers are all forgotten whenever the catalogue changes.

use std::collections::VecDeque;

use crate::ContentId;

/// Manifests kept at most.
pub const MANIFESTS: usize = 16;
/// Bytes of manifests kept at most (one largest manifest fits).
pub const MANIFEST_BYTES: usize = 64 * 1024 * 1024;
/// Sync answers kept at most.
pub const SYNCS: usize = 32;

/// What a `Sync` asks: `(distributor key, the asker's head)` for each key both sides trust.
pub type SyncAsk = Vec<([u8; 32], u64)>;

/// The cache; see the module doc.
#[derive(Debug, Default)]
pub struct Answers {
    manifests: VecDeque<(ContentId, Vec<u8>)>,
    manifest_bytes: usize,
    syncs: VecDeque<(SyncAsk, Vec<Vec<u8>>)>,
}

impl Answers {
    /// The encoded manifest of `content`, if cached.
    pub fn manifest(&self, content: &ContentId) -> Option<Vec<u8>> {
        self.manifests.iter().find(|(c, _)| c == content).map(|(_, b)| b.clone())
    }

    /// Keeps the encoded manifest of `content`, dropping the oldest beyond the bounds.
    pub fn put_manifest(&mut self, content: ContentId, bytes: Vec<u8>) {
        if bytes.len() > MANIFEST_BYTES || self.manifest(&content).is_some() {
            return;
        }
        self.manifest_bytes += bytes.len();
        self.manifests.push_back((content, bytes));
        while self.manifests.len() > MANIFESTS || self.manifest_bytes > MANIFEST_BYTES {
            if let Some((_, old)) = self.manifests.pop_front() {
                self.manifest_bytes -= old.len();
            }
        }
    }

    /// Forgets the manifest of a content being removed.
    pub fn forget_manifest(&mut self, content: &ContentId) {
        if let Some(i) = self.manifests.iter().position(|(c, _)| c == content) {
            if let Some((_, old)) = self.manifests.remove(i) {
                self.manifest_bytes -= old.len();
            }
        }
    }

    /// The encoded entries answering `ask`, if cached since the catalogue last changed.
    pub fn sync(&self, ask: &SyncAsk) -> Option<Vec<Vec<u8>>> {
        self.syncs.iter().find(|(a, _)| a == ask).map(|(_, e)| e.clone())
    }

    /// Keeps the answer to `ask`, dropping the oldest beyond [`SYNCS`].
    pub fn put_sync(&mut self, ask: SyncAsk, entries: Vec<Vec<u8>>) {
        if self.sync(&ask).is_some() {
            return;
        }
        self.syncs.push_back((ask, entries));
        if self.syncs.len() > SYNCS {
            self.syncs.pop_front();
        }
    }

    /// The catalogue changed: every sync answer may be out of date.
    pub fn catalogue_changed(&mut self) {
        self.syncs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> ContentId {
        ContentId([i; 32])
    }

    #[test]
    fn manifests_bounded_and_forgotten_on_removal() {
        let mut a = Answers::default();
        for i in 0..=MANIFESTS as u8 {
            a.put_manifest(id(i), vec![i; 10]);
        }
        assert_eq!(a.manifest(&id(0)), None, "the oldest went beyond {MANIFESTS}");
        assert_eq!(a.manifest(&id(1)), Some(vec![1; 10]));
        a.forget_manifest(&id(1));
        assert_eq!(a.manifest(&id(1)), None);
        assert_eq!(a.manifest_bytes, 10 * (MANIFESTS - 1));
        a.put_manifest(id(99), vec![0; MANIFEST_BYTES]);
        assert_eq!(a.manifests.len(), 1, "one largest manifest pushes out the rest");
        assert_eq!(a.manifest_bytes, MANIFEST_BYTES);
        a.put_manifest(id(98), vec![0; MANIFEST_BYTES + 1]);
        assert_eq!(a.manifest(&id(98)), None, "larger than the bound: not kept");
    }

    #[test]
    fn sync_answers_bounded_and_dropped_when_the_catalogue_changes() {
        let mut a = Answers::default();
        let ask = |h: u64| vec![([7; 32], h)];
        for h in 0..=SYNCS as u64 {
            a.put_sync(ask(h), vec![h.to_be_bytes().to_vec()]);
        }
        assert_eq!(a.sync(&ask(0)), None);
        assert_eq!(a.sync(&ask(1)), Some(vec![1u64.to_be_bytes().to_vec()]));
        assert_eq!(a.sync(&vec![([8; 32], 1)]), None, "another key is another question");
        a.catalogue_changed();
        assert_eq!(a.sync(&ask(1)), None);
    }
}

//! Rarity index of one content: how many connected peers hold each missing chunk, and the chunks still to
//! request grouped by that count, so "the rarest chunk this peer has" is found without scanning every chunk.
//!
//! - `avail[c]`: peers holding chunk `c` (u16, saturating). Kept for chunks not held locally; once a chunk is
//!   held its count is no longer read (held chunks are never lost while the content is fetched).
//! - `buckets[a]`: the *candidates* (missing and not in flight) whose availability is `a`, in no particular
//!   order; `pos[c]` is `c`'s index in its bucket (or [`NONE`]). Moving a chunk between buckets, adding or
//!   removing a candidate are O(1) (swap-remove + push).
//! - `cand`: the candidates as a bitfield, for the word-parallel fallback.
//!
//! [`Rarity::pick`] walks the buckets from availability 1 upward, each from a random offset (the random
//! tie-break among equally rare chunks), and returns the first chunk the peer has. A peer that holds few of
//! the rare chunks would make that walk long, so it is bounded by a budget of about one check per 64 chunks;
//! past it the pick falls back to one word-parallel pass over `peer & cand`, which costs `chunks / 64` word
//! operations plus one lookup per chunk the peer could serve. Memory: about 6.25 bytes per chunk for a content
//! of fewer than 65,535 chunks (chunk numbers and positions as `u16`, [`Rarity::Narrow`]), 10.25 above;
//! dropped when the content completes.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Bitfield;

/// A bucket with room for more than this many chunks gives room back when half full.
const SHRINK_ABOVE: usize = 64;

/// The integer a chunk number or a position within a bucket is stored as: `u16` for contents of fewer than
/// [`u16::MAX`] chunks, `u32` above. `NONE` ("not a candidate") is the type's largest value.
pub(crate) trait Ix: Copy + Eq + std::fmt::Debug {
    /// "Not a candidate" marker in `pos`.
    const NONE: Self;
    /// `v`, which the caller keeps below `NONE`.
    fn of(v: u32) -> Self;
    /// Back to `u32`.
    fn get(self) -> u32;
}

impl Ix for u16 {
    const NONE: Self = u16::MAX;
    fn of(v: u32) -> Self {
        v as u16
    }
    fn get(self) -> u32 {
        u32::from(self)
    }
}

impl Ix for u32 {
    const NONE: Self = u32::MAX;
    fn of(v: u32) -> Self {
        v
    }
    fn get(self) -> u32 {
        self
    }
}

/// Per-content availability counts and candidate buckets, of the width the content's size needs.
#[derive(Debug, Clone)]
pub(crate) enum Rarity {
    /// Fewer than [`u16::MAX`] chunks.
    Narrow(Index<u16>),
    /// Any size.
    Wide(Index<u32>),
}

macro_rules! each {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            Rarity::Narrow($r) => $e,
            Rarity::Wide($r) => $e,
        }
    };
}

impl Rarity {
    /// Every chunk missing from `have` is a candidate with availability 0.
    pub(crate) fn new(have: &Bitfield) -> Self {
        if have.len() < u32::from(u16::MAX) {
            Rarity::Narrow(Index::new(have))
        } else {
            Rarity::Wide(Index::new(have))
        }
    }

    /// Chunks missing and not in flight (including those no peer has).
    pub(crate) fn candidates(&self) -> u32 {
        each!(self, r => r.candidates)
    }

    /// Whether `c` is a candidate.
    pub(crate) fn is_candidate(&self, c: u32) -> bool {
        each!(self, r => r.is_candidate(c))
    }

    /// Makes `c` a candidate (no-op if it is one).
    pub(crate) fn insert(&mut self, c: u32) {
        each!(self, r => r.insert(c))
    }

    /// `c` is no longer a candidate (requested or held); no-op if it was not one.
    pub(crate) fn remove(&mut self, c: u32) {
        each!(self, r => r.remove(c))
    }

    /// One more peer holds `c`.
    pub(crate) fn inc(&mut self, c: u32) {
        each!(self, r => r.shift(c, true))
    }

    /// One peer fewer holds `c`.
    pub(crate) fn dec(&mut self, c: u32) {
        each!(self, r => r.shift(c, false))
    }

    /// Availability of `c` (peers holding it), 0 when out of range.
    #[cfg(test)]
    pub(crate) fn avail(&self, c: u32) -> u16 {
        each!(self, r => r.avail.get(c as usize).copied().unwrap_or(0))
    }

    /// The rarest candidate that `peer` holds, equally rare ones chosen at random; `None` if it holds none.
    pub(crate) fn pick(&self, peer: &Bitfield, rng: &mut ChaCha8Rng) -> Option<u32> {
        each!(self, r => r.pick(peer, rng))
    }

    #[cfg(test)]
    fn pick_words(&self, peer: &Bitfield, rng: &mut ChaCha8Rng) -> Option<u32> {
        each!(self, r => r.pick_words(peer, rng))
    }

    #[cfg(test)]
    fn room(&self) -> (usize, usize) {
        each!(self, r => (r.buckets.iter().map(Vec::capacity).sum(), r.buckets.iter().map(Vec::len).sum()))
    }
}

/// The index itself, chunk numbers and positions stored as `I`.
#[derive(Debug, Clone)]
pub(crate) struct Index<I> {
    avail: Vec<u16>,
    pos: Vec<I>,
    buckets: Vec<Vec<I>>,
    cand: Bitfield,
    candidates: u32,
}

impl<I: Ix> Index<I> {
    fn new(have: &Bitfield) -> Self {
        let n = have.len();
        let mut r = Self {
            avail: vec![0; n as usize],
            pos: vec![I::NONE; n as usize],
            buckets: vec![Vec::new()],
            cand: Bitfield::new(n),
            candidates: 0,
        };
        for (wi, &w) in have.words().iter().enumerate() {
            let mut missing = !w;
            while missing != 0 {
                let c = wi as u32 * 64 + missing.trailing_zeros();
                missing &= missing - 1;
                if c < n {
                    r.insert(c);
                }
            }
        }
        r
    }

    fn is_candidate(&self, c: u32) -> bool {
        self.pos.get(c as usize).is_some_and(|&p| p != I::NONE)
    }

    fn insert(&mut self, c: u32) {
        let Some(&p) = self.pos.get(c as usize) else { return };
        if p != I::NONE {
            return;
        }
        let a = self.avail[c as usize] as usize;
        if self.buckets.len() <= a {
            self.buckets.resize_with(a + 1, Vec::new);
        }
        self.pos[c as usize] = I::of(self.buckets[a].len() as u32);
        self.buckets[a].push(I::of(c));
        self.cand.set(c);
        self.candidates += 1;
    }

    fn remove(&mut self, c: u32) {
        let Some(&p) = self.pos.get(c as usize) else { return };
        if p == I::NONE {
            return;
        }
        self.unlink(c, p.get());
        self.pos[c as usize] = I::NONE;
        self.cand.clear(c);
        self.candidates -= 1;
    }

    fn unlink(&mut self, c: u32, p: u32) {
        let bucket = &mut self.buckets[self.avail[c as usize] as usize];
        bucket.swap_remove(p as usize);
        if let Some(&moved) = bucket.get(p as usize) {
            self.pos[moved.get() as usize] = I::of(p);
        }
        // Chunks climb through the availability levels as the swarm fills, so every bucket once held many
        // of them: once a bucket is half full, shrink its room to 1.5 times what it holds (amortised O(1), the
        // order within the bucket unchanged). Without it a 37,500-chunk film kept megabytes per node in buckets
        // long emptied.
        if bucket.capacity() > SHRINK_ABOVE && bucket.len() < bucket.capacity() / 2 {
            bucket.shrink_to(bucket.len() + bucket.len() / 2);
        }
    }

    fn shift(&mut self, c: u32, up: bool) {
        let Some(&a) = self.avail.get(c as usize) else { return };
        let b = if up { a.saturating_add(1) } else { a.saturating_sub(1) };
        if a == b {
            return;
        }
        let p = self.pos[c as usize];
        if p != I::NONE {
            self.unlink(c, p.get());
        }
        self.avail[c as usize] = b;
        if p != I::NONE {
            let b = b as usize;
            if self.buckets.len() <= b {
                self.buckets.resize_with(b + 1, Vec::new);
            }
            self.pos[c as usize] = I::of(self.buckets[b].len() as u32);
            self.buckets[b].push(I::of(c));
        }
    }

    fn pick(&self, peer: &Bitfield, rng: &mut ChaCha8Rng) -> Option<u32> {
        if self.candidates == 0 || peer.len() != self.cand.len() {
            return None;
        }
        let mut budget = peer.words().len() + 64;
        for bucket in self.buckets.iter().skip(1) {
            if bucket.is_empty() {
                continue;
            }
            let start = rng.gen_range(0..bucket.len());
            let (tail, head) = bucket.split_at(start);
            for &c in head.iter().chain(tail) {
                if peer.get(c.get()) {
                    return Some(c.get());
                }
                budget -= 1;
                if budget == 0 {
                    return self.pick_words(peer, rng);
                }
            }
        }
        None
    }

    /// Word-parallel fallback: one pass over `peer & cand`, keeping the least available (reservoir tie-break).
    fn pick_words(&self, peer: &Bitfield, rng: &mut ChaCha8Rng) -> Option<u32> {
        let mut best: Option<(u16, u32)> = None;
        let mut ties = 0u32;
        for (wi, (&p, &c)) in peer.words().iter().zip(self.cand.words()).enumerate() {
            let mut x = p & c;
            while x != 0 {
                let chunk = wi as u32 * 64 + x.trailing_zeros();
                x &= x - 1;
                let a = self.avail[chunk as usize];
                match best {
                    Some((b, _)) if a > b => {}
                    Some((b, _)) if a == b => {
                        ties += 1;
                        if rng.gen_range(0..ties) == 0 {
                            best = Some((a, chunk));
                        }
                    }
                    _ => {
                        best = Some((a, chunk));
                        ties = 1;
                    }
                }
            }
        }
        best.map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn bits(n: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in ones {
            b.set(i);
        }
        b
    }

    #[test]
    fn buckets_follow_availability() {
        let have = bits(10, &[0]);
        let mut r = Rarity::new(&have);
        assert_eq!(r.candidates(), 9);
        for c in 1..10 {
            for _ in 0..c {
                r.inc(c);
            }
        }
        r.dec(9);
        assert_eq!(r.avail(9), 8);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let all = Bitfield::full(10);
        assert_eq!(r.pick(&all, &mut rng), Some(1));
        r.remove(1);
        assert_eq!(r.pick(&all, &mut rng), Some(2));
        assert_eq!(r.pick(&bits(10, &[7, 9]), &mut rng), Some(7));
        r.insert(1);
        assert_eq!(r.pick(&all, &mut rng), Some(1));
        assert_eq!(r.pick(&bits(10, &[0]), &mut rng), None);
    }

    #[test]
    fn emptied_buckets_give_their_room_back() {
        // Every chunk climbs 20 levels, the whole film at a time: each bucket once holds all 10,000.
        let n = 10_000;
        let mut r = Rarity::new(&Bitfield::new(n));
        for _ in 0..20 {
            for c in 0..n {
                r.inc(c);
            }
        }
        let (room, held) = r.room();
        assert_eq!(held, n as usize);
        assert!(room < 2 * n as usize + 21 * 2 * SHRINK_ABOVE, "room for {room} chunks in the buckets");
        // The picks still find the chunks, all now at availability 20.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(r.pick(&bits(n, &[4321]), &mut rng), Some(4321));
        assert_eq!(r.avail(4321), 20);
    }

    #[test]
    fn fallback_agrees_with_bucket_walk() {
        // 4096 chunks, 4000 of them rare (held by one other peer); the asking peer holds only chunk 4095,
        // which is common, so the walk runs out of budget and the word pass must find it.
        let n = 4096;
        let mut r = Rarity::new(&Bitfield::new(n));
        for c in 0..n {
            r.inc(c);
        }
        for c in 4000..n {
            r.inc(c);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        assert_eq!(r.pick(&bits(n, &[4095]), &mut rng), Some(4095));
        assert_eq!(r.pick(&bits(n, &[4095, 17]), &mut rng), Some(17));
        assert_eq!(r.pick_words(&bits(n, &[4095, 17]), &mut rng), Some(17));
    }

    #[test]
    fn both_widths_decide_alike_and_the_width_follows_the_size() {
        assert!(matches!(Rarity::new(&Bitfield::new(65_534)), Rarity::Narrow(_)));
        assert!(matches!(Rarity::new(&Bitfield::new(65_535)), Rarity::Wide(_)));
        // The same random walk of incs, decs, inserts, removes and picks through both: same answers.
        let n = 3_000;
        let have = bits(n, &[5, 17, 2_999]);
        let mut narrow = Rarity::Narrow(Index::new(&have));
        let mut wide = Rarity::Wide(Index::new(&have));
        let mut ops = ChaCha8Rng::seed_from_u64(9);
        let (mut ra, mut rb) = (ChaCha8Rng::seed_from_u64(4), ChaCha8Rng::seed_from_u64(4));
        let mut peer = Bitfield::new(n);
        for step in 0..20_000 {
            let c = ops.gen_range(0..n);
            match ops.gen_range(0..5) {
                0 | 1 => {
                    narrow.inc(c);
                    wide.inc(c);
                    peer.set(c);
                }
                2 => {
                    narrow.dec(c);
                    wide.dec(c);
                }
                3 => {
                    narrow.remove(c);
                    wide.remove(c);
                }
                _ => {
                    narrow.insert(c);
                    wide.insert(c);
                }
            }
            assert_eq!(narrow.candidates(), wide.candidates(), "step {step}");
            assert_eq!(narrow.avail(c), wide.avail(c), "step {step}");
            if step % 50 == 0 {
                assert_eq!(narrow.pick(&peer, &mut ra), wide.pick(&peer, &mut rb), "step {step}");
            }
        }
    }
}

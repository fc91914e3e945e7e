//! A fixed-length set of chunk indices: which chunks of one content a node holds.

use serde::{Deserialize, Serialize};

/// Which chunks of one content are held. Length is fixed at creation.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bitfield {
    len: u32,
    ones: u32,
    words: Vec<u64>,
}

/// A bitfield's bytes did not match its declared length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bitfield of {len} chunks needs {expected} bytes, got {got}")]
pub struct BitfieldLenError {
    len: u32,
    expected: usize,
    got: usize,
}

impl Bitfield {
    /// All clear.
    pub fn new(len: u32) -> Self {
        Self { len, ones: 0, words: vec![0; (len as usize).div_ceil(64)] }
    }

    /// All set.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for w in &mut b.words {
            *w = u64::MAX;
        }
        if len % 64 != 0 {
            if let Some(last) = b.words.last_mut() {
                *last = (1u64 << (len % 64)) - 1;
            }
        }
        b.ones = len;
        b
    }

    /// The chunks set in both (the length of `self`; `other`'s bits beyond it are ignored).
    pub fn and(&self, other: &Bitfield) -> Bitfield {
        let words: Vec<u64> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, &w)| w & other.words.get(i).copied().unwrap_or(0))
            .collect();
        let ones = words.iter().map(|w| w.count_ones()).sum();
        Bitfield { len: self.len, ones, words }
    }

    /// Number of chunks (set or not).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the content has no chunks at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of chunks held.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// True when every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.ones == self.len
    }

    /// Whether chunk `i` is held; false when out of range.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Marks chunk `i` held; returns true if it was not. Out of range is ignored (returns false).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let bit = 1 << (i % 64);
        let was = *w & bit != 0;
        *w |= bit;
        if !was {
            self.ones += 1;
        }
        !was
    }

    /// Marks chunk `i` missing; returns true if it was held.
    pub fn clear(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let bit = 1 << (i % 64);
        let was = *w & bit != 0;
        *w &= !bit;
        if was {
            self.ones -= 1;
        }
        was
    }

    /// The packed 64-bit words, chunk `i` = bit `i % 64` of word `i / 64`; bits beyond `len` are zero.
    /// For word-parallel set operations (the scheduler ANDs a peer's bits with its candidates).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Indices held, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(wi as u32 * 64 + b)
            })
        })
    }

    /// Indices missing, ascending.
    pub fn iter_zeros(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(move |&i| !self.get(i))
    }

    /// Packed bytes, little-endian bit order within each byte (chunk 0 = bit 0 of byte 0).
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = (self.len as usize).div_ceil(8);
        self.words.iter().flat_map(|w| w.to_le_bytes()).take(n).collect()
    }

    /// From packed bytes as produced by [`to_bytes`](Self::to_bytes). Bits beyond `len` must be zero.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self, BitfieldLenError> {
        let expected = (len as usize).div_ceil(8);
        let err = BitfieldLenError { len, expected, got: bytes.len() };
        if bytes.len() != expected {
            return Err(err);
        }
        let mut b = Self::new(len);
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            b.words[i] = u64::from_le_bytes(buf);
        }
        if len % 64 != 0 {
            if let Some(&last) = b.words.last() {
                if last >> (len % 64) != 0 {
                    return Err(err);
                }
            }
        }
        b.ones = b.words.iter().map(|w| w.count_ones()).sum();
        Ok(b)
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::new(130);
        assert!(b.set(0) && b.set(129) && !b.set(129));
        assert!(!b.set(130));
        assert_eq!(b.count(), 2);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 129]);
        assert!(b.clear(0));
        assert_eq!(b.count(), 1);
        assert_eq!(b.iter_zeros().count(), 129);
    }

    #[test]
    fn bytes_round_trip_and_reject_stray_bits() {
        let mut b = Bitfield::new(70);
        for i in [1, 7, 64, 69] {
            b.set(i);
        }
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), 9);
        assert_eq!(Bitfield::from_bytes(70, &bytes).unwrap(), b);
        assert!(Bitfield::from_bytes(80, &bytes).is_err());
        let mut stray = bytes.clone();
        stray[8] |= 0x80;
        assert!(Bitfield::from_bytes(70, &stray).is_err());
        assert!(Bitfield::full(70).is_complete());
        assert_eq!(Bitfield::full(64).count(), 64);
    }
}

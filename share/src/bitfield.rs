//! A fixed-length bit set in BitTorrent's wire order (bit 0 is the high bit of byte 0).

/// Piece bitfield: one bit per piece, MSB first, as sent in the `bitfield` message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: usize,
    ones: usize,
}

impl Bitfield {
    /// An all-zero bitfield of `len` bits.
    pub fn new(len: usize) -> Self {
        Bitfield {
            bytes: vec![0; len.div_ceil(8)],
            len,
            ones: 0,
        }
    }

    /// An all-one bitfield of `len` bits.
    pub fn full(len: usize) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Parse wire bytes for `len` pieces. Spare bits in the last byte must be zero (BEP 3).
    pub fn from_bytes(bytes: &[u8], len: usize) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let spare = bytes.len() * 8 - len;
        if spare > 0 {
            let last = *bytes.last()?;
            if last & ((1u8 << spare) - 1) != 0 {
                return None;
            }
        }
        let ones = bytes.iter().map(|b| b.count_ones() as usize).sum();
        Some(Bitfield {
            bytes: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// Like [`Bitfield::from_bytes`] but clears set spare bits instead of refusing them (some
    /// clients set them); the length must still match.
    pub fn from_bytes_lenient(bytes: &[u8], len: usize) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let mut b = Bitfield::new(len);
        for i in 0..len {
            if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                b.set(i);
            }
        }
        Some(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Set bit `i`; returns true if it was newly set. Out-of-range indices are ignored.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[i / 8] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Clear bit `i`; returns true if it was set.
    pub fn clear(&mut self, i: usize) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bytes[i / 8] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.ones
    }

    pub fn all(&self) -> bool {
        self.ones == self.len
    }

    /// Indices of set bits.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.count_ones(), 2);
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert!(b.clear(0));
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![9]);
        assert!(Bitfield::full(10).all());
    }

    #[test]
    fn from_bytes_checks_spare_bits_and_length() {
        assert!(Bitfield::from_bytes(&[0xff, 0xc0], 10).is_some());
        assert!(Bitfield::from_bytes(&[0xff, 0xe0], 10).is_none());
        assert!(Bitfield::from_bytes(&[0xff], 10).is_none());
        assert_eq!(
            Bitfield::from_bytes(&[0xff, 0xc0], 10)
                .unwrap()
                .count_ones(),
            10
        );
    }
}

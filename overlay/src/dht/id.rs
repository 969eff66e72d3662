//! 256-bit keys and XOR distance.

use std::fmt;

/// A node id or a record key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// XOR distance between two keys; compares as a big-endian 256-bit integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; 32]);

impl Key {
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// Index of the k-bucket `other` falls into in a table owned by `self`: 255 for the farthest half
    /// of the key space, 0 for keys that differ only in the last bit. `None` for `self`.
    pub fn bucket_index(&self, other: &Key) -> Option<usize> {
        let d = self.distance(other);
        let lz = d.leading_zeros();
        if lz == 256 {
            None
        } else {
            Some(255 - lz as usize)
        }
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl Distance {
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                n += b.leading_zeros();
                break;
            }
        }
        n
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", hex::encode(self.0))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_symmetric_and_zero_to_self() {
        let a = Key([7; 32]);
        let mut bb = [7; 32];
        bb[31] = 6;
        let b = Key(bb);
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a), Distance([0; 32]));
        assert_eq!(a.bucket_index(&b), Some(0));
        assert_eq!(a.bucket_index(&a), None);
        let mut cc = [7; 32];
        cc[0] ^= 0x80;
        assert_eq!(a.bucket_index(&Key(cc)), Some(255));
    }

    #[test]
    fn distance_orders_as_integer() {
        let z = Key([0; 32]);
        let mut one = [0; 32];
        one[31] = 1;
        let mut big = [0; 32];
        big[0] = 1;
        assert!(z.distance(&Key(one)) < z.distance(&Key(big)));
    }
}

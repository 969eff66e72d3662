//! A piece buffer whose first byte sits on a 4 KiB boundary, so that whole-piece writes can go
//! to the disk with `O_DIRECT` (which needs the memory, the file offset and the length aligned
//! to the device's block size). Safe code only: the buffer is a `Vec` with 4 KiB of slack and
//! the aligned window inside it.

use std::ops::{Deref, DerefMut};

/// Alignment of piece buffers (covers devices with 512-byte and 4 KiB logical blocks).
pub const ALIGN: usize = 4096;

/// An aligned, reusable byte buffer of a piece.
#[derive(Default)]
pub struct PieceBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl PieceBuf {
    /// A zeroed buffer of `len` bytes starting on an [`ALIGN`] boundary.
    pub fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        let off = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        PieceBuf { raw, off, len }
    }

    /// Change the length, reusing the allocation when it is large enough. Bytes that were in
    /// the buffer keep whatever value they had (callers overwrite every byte before use).
    pub fn resize(&mut self, len: usize) {
        if self.off + len <= self.raw.len() {
            self.len = len;
        } else {
            *self = PieceBuf::new(len);
        }
    }

    /// Bytes this buffer can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.raw.len().saturating_sub(self.off)
    }
}

impl Deref for PieceBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }
}

impl DerefMut for PieceBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

impl std::fmt::Debug for PieceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceBuf({} bytes)", self.len)
    }
}

impl PartialEq for PieceBuf {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for PieceBuf {}

impl From<&[u8]> for PieceBuf {
    fn from(data: &[u8]) -> Self {
        let mut b = PieceBuf::new(data.len());
        b.copy_from_slice(data);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_reused() {
        for len in [0, 1, 4095, 4096, 1 << 20] {
            let mut b = PieceBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0, "len {len}");
            b.resize(len / 2);
            assert_eq!(b.len(), len / 2);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        }
        let mut b = PieceBuf::new(100);
        b[99] = 7;
        let p = b.as_ptr();
        b.resize(50);
        b.resize(100);
        assert_eq!(
            b.as_ptr(),
            p,
            "shrinking and growing within capacity reuses"
        );
        assert_eq!(b[99], 7);
        b.resize(100_000);
        assert_eq!(b.len(), 100_000);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert!(b.capacity() >= 100_000);
        let c = PieceBuf::from(&[1u8, 2, 3][..]);
        assert_eq!(&c[..], &[1, 2, 3]);
    }
}

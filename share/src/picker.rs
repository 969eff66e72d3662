//! Piece picker, sans-IO: rarest-first selection of pieces, 16 KiB block requests, assembly of
//! received blocks into whole pieces (into reused, 4 KiB-aligned buffers), SHA-1 of each piece
//! computed block by block as the in-order prefix grows (while the bytes are hot in cache:
//! half the CPU of hashing the finished piece later on another thread), and endgame mode (the
//! last blocks are asked from several peers at once). It holds no sockets and no files; the
//! session feeds it events.

use std::collections::{HashMap, HashSet};

use sha1::{Digest, Sha1};

use crate::bitfield::Bitfield;
use crate::piecebuf::PieceBuf;
use crate::wire::{BlockRef, BLOCK_SIZE};

/// Opaque peer key used to remember who contributed to a piece (for bans on hash failure).
pub type PeerKey = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockState {
    Free,
    Requested(u16),
    Received,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<BlockState>,
    received: usize,
    buf: PieceBuf,
    /// SHA-1 of the blocks `0..hashed`, fed as soon as a block extends the in-order prefix
    /// (while its bytes are still in this CPU's cache); the piece's hash is ready when its
    /// last block arrives.
    hasher: Sha1,
    hashed: usize,
    contributors: Vec<PeerKey>,
    /// All blocks are in; the piece is with the hasher.
    hashing: bool,
}

/// What became of a received block.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Not something we asked for (or a bad range): the peer may be misbehaving.
    Unexpected,
    /// Already had it (endgame duplicate, or the piece is done).
    Duplicate,
    /// Stored; the piece still misses blocks.
    Stored,
    /// The piece is complete: check `digest` against the piece hash and write it, then call
    /// `piece_verified` / `piece_failed`.
    PieceComplete {
        index: u32,
        data: PieceBuf,
        /// SHA-1 of `data`.
        digest: [u8; 20],
        contributors: Vec<PeerKey>,
    },
}

/// The picker for one torrent.
#[derive(Debug)]
pub struct Picker {
    piece_length: u64,
    total_length: u64,
    have: Bitfield,
    availability: Vec<u32>,
    partial: HashMap<u32, Partial>,
    order: Vec<u32>,
    order_dirty: bool,
    seed: u64,
    /// Complete pieces waiting for hash + write.
    hashing: usize,
    /// Do not open new pieces while this many wait for the disk (bounds memory).
    pub max_hashing: usize,
    /// Piece buffers handed back after writing, reused to avoid page faults.
    pool: Vec<PieceBuf>,
}

impl Picker {
    pub fn new(piece_length: u64, total_length: u64, have: Bitfield) -> Self {
        let n = have.len();
        Picker {
            piece_length,
            total_length,
            availability: vec![0; n],
            have,
            partial: HashMap::new(),
            order: Vec::new(),
            order_dirty: true,
            seed: rand::random(),
            hashing: 0,
            max_hashing: ((64 << 20) / piece_length.max(1)).clamp(4, 256) as usize,
            pool: Vec::new(),
        }
    }

    pub fn num_pieces(&self) -> usize {
        self.have.len()
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.have.all()
    }

    /// Length of piece `i` (the last one may be shorter).
    pub fn piece_len(&self, i: u32) -> u32 {
        let start = i as u64 * self.piece_length;
        (self.total_length.saturating_sub(start)).min(self.piece_length) as u32
    }

    fn blocks_in(&self, i: u32) -> usize {
        (self.piece_len(i) as usize).div_ceil(BLOCK_SIZE as usize)
    }

    fn block_ref(&self, i: u32, b: usize) -> BlockRef {
        let begin = b as u32 * BLOCK_SIZE;
        BlockRef {
            index: i,
            begin,
            length: (self.piece_len(i) - begin).min(BLOCK_SIZE),
        }
    }

    /// Bytes of verified pieces.
    pub fn have_bytes(&self) -> u64 {
        let n = self.num_pieces();
        if n == 0 {
            return 0;
        }
        let last = (n - 1) as u32;
        let mut bytes = self.have.count_ones() as u64 * self.piece_length;
        if self.have.get(last as usize) {
            bytes = bytes - self.piece_length + self.piece_len(last) as u64;
        }
        bytes
    }

    // --- availability ---

    pub fn add_peer_bitfield(&mut self, bf: &Bitfield) {
        for i in bf.ones() {
            self.availability[i] += 1;
        }
        self.order_dirty = true;
    }

    pub fn remove_peer_bitfield(&mut self, bf: &Bitfield) {
        for i in bf.ones() {
            self.availability[i] = self.availability[i].saturating_sub(1);
        }
        self.order_dirty = true;
    }

    pub fn add_peer_have(&mut self, i: u32) {
        if let Some(a) = self.availability.get_mut(i as usize) {
            *a += 1;
            self.order_dirty = true;
        }
    }

    /// Whether a peer with this bitfield has anything we lack.
    pub fn interesting(&self, bf: &Bitfield) -> bool {
        bf.ones().any(|i| !self.have.get(i))
    }

    pub fn wants(&self, i: u32) -> bool {
        (i as usize) < self.num_pieces() && !self.have.get(i as usize)
    }

    fn rebuild_order(&mut self) {
        let seed = self.seed;
        let mut order: Vec<u32> = (0..self.num_pieces() as u32)
            .filter(|&i| !self.have.get(i as usize) && !self.partial.contains_key(&i))
            .collect();
        let avail = &self.availability;
        order.sort_by_key(|&i| (avail[i as usize], mix(seed, i)));
        self.order = order;
        self.order_dirty = false;
    }

    /// Whether endgame applies: every missing block is requested or received.
    pub fn in_endgame(&self) -> bool {
        // have and partial are disjoint: fewer than all pieces between them means some piece
        // was never opened.
        if self.have.count_ones() + self.partial.len() < self.num_pieces() {
            return false;
        }
        !self
            .partial
            .values()
            .any(|p| p.blocks.contains(&BlockState::Free))
    }

    /// Pick up to `max` blocks for a peer with bitfield `peer_has` that already has `pending`
    /// requests outstanding. Appends to `out` and marks the blocks requested.
    pub fn pick(
        &mut self,
        peer_has: &Bitfield,
        pending: &HashSet<BlockRef>,
        max: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let start = out.len();
        // 1. Continue partial pieces (fewer pieces in flight, pieces finish sooner).
        let mut keys: Vec<u32> = self
            .partial
            .iter()
            .filter(|(i, p)| !p.hashing && peer_has.get(**i as usize))
            .map(|(i, _)| *i)
            .collect();
        keys.sort_unstable();
        for i in keys {
            if out.len() - start >= max {
                return;
            }
            self.take_free_blocks(i, max - (out.len() - start), out);
        }
        // 2. New pieces, rarest first (unless the disk is behind).
        if out.len() - start < max && self.hashing < self.max_hashing {
            if self.order_dirty {
                self.rebuild_order();
            }
            let mut k = 0;
            while k < self.order.len() && out.len() - start < max {
                let i = self.order[k];
                if self.have.get(i as usize) || self.partial.contains_key(&i) {
                    self.order.remove(k);
                    continue;
                }
                if peer_has.get(i as usize) {
                    self.order.remove(k);
                    self.open_piece(i);
                    self.take_free_blocks(i, max - (out.len() - start), out);
                    continue;
                }
                k += 1;
            }
        }
        // 3. Endgame: duplicate blocks others have in flight, a few at a time.
        if out.len() == start && self.hashing < self.max_hashing && self.in_endgame() {
            let limit = max.min(8);
            let mut keys: Vec<u32> = self
                .partial
                .iter()
                .filter(|(i, p)| !p.hashing && peer_has.get(**i as usize))
                .map(|(i, _)| *i)
                .collect();
            keys.sort_unstable();
            for i in keys {
                let nblocks = self.blocks_in(i);
                for b in 0..nblocks {
                    if out.len() - start >= limit {
                        return;
                    }
                    let r = self.block_ref(i, b);
                    let Some(p) = self.partial.get_mut(&i) else {
                        break;
                    };
                    if let BlockState::Requested(n) = p.blocks[b] {
                        if !pending.contains(&r) {
                            p.blocks[b] = BlockState::Requested(n.saturating_add(1));
                            out.push(r);
                        }
                    }
                }
            }
        }
    }

    fn open_piece(&mut self, i: u32) {
        let n = self.blocks_in(i);
        let len = self.piece_len(i) as usize;
        // Every block overwrites its range before the piece completes, so a reused buffer
        // needs no clearing.
        let buf = match self.pool.pop() {
            Some(mut b) => {
                b.resize(len);
                b
            }
            None => PieceBuf::new(len),
        };
        self.partial.insert(
            i,
            Partial {
                blocks: vec![BlockState::Free; n],
                received: 0,
                buf,
                contributors: Vec::new(),
                hashing: false,
                hasher: Sha1::new(),
                hashed: 0,
            },
        );
    }

    fn take_free_blocks(&mut self, i: u32, max: usize, out: &mut Vec<BlockRef>) {
        let nblocks = self.blocks_in(i);
        let mut taken = 0;
        for b in 0..nblocks {
            if taken >= max {
                break;
            }
            let r = self.block_ref(i, b);
            let Some(p) = self.partial.get_mut(&i) else {
                return;
            };
            if p.blocks[b] == BlockState::Free {
                p.blocks[b] = BlockState::Requested(1);
                out.push(r);
                taken += 1;
            }
        }
    }

    /// A request we sent was cancelled, rejected or lost with its peer.
    pub fn cancel_request(&mut self, r: &BlockRef) {
        let b = (r.begin / BLOCK_SIZE) as usize;
        if let Some(p) = self.partial.get_mut(&r.index) {
            if let Some(st) = p.blocks.get_mut(b) {
                if let BlockState::Requested(n) = *st {
                    *st = if n <= 1 {
                        BlockState::Free
                    } else {
                        BlockState::Requested(n - 1)
                    };
                }
            }
        }
    }

    /// A block arrived from `peer`.
    pub fn on_block(&mut self, peer: PeerKey, index: u32, begin: u32, data: &[u8]) -> BlockOutcome {
        if !self.wants(index) {
            return if (index as usize) < self.num_pieces() {
                BlockOutcome::Duplicate
            } else {
                BlockOutcome::Unexpected
            };
        }
        let plen = self.piece_len(index);
        if !begin.is_multiple_of(BLOCK_SIZE)
            || begin >= plen
            || data.len() as u32 != (plen - begin).min(BLOCK_SIZE)
        {
            return BlockOutcome::Unexpected;
        }
        let Some(p) = self.partial.get_mut(&index) else {
            return BlockOutcome::Unexpected;
        };
        let b = (begin / BLOCK_SIZE) as usize;
        match p.blocks[b] {
            BlockState::Received => return BlockOutcome::Duplicate,
            // a block we cancelled (choke) or never asked for: data is data, the hash decides.
            BlockState::Free | BlockState::Requested(_) => {}
        }
        p.blocks[b] = BlockState::Received;
        p.received += 1;
        p.buf[begin as usize..begin as usize + data.len()].copy_from_slice(data);
        if !p.contributors.contains(&peer) {
            p.contributors.push(peer);
        }
        while p.blocks.get(p.hashed) == Some(&BlockState::Received) {
            let s = p.hashed * BLOCK_SIZE as usize;
            let e = (s + BLOCK_SIZE as usize).min(plen as usize);
            p.hasher.update(&p.buf[s..e]);
            p.hashed += 1;
        }
        if p.received == p.blocks.len() {
            p.hashing = true;
            self.hashing += 1;
            BlockOutcome::PieceComplete {
                index,
                data: std::mem::take(&mut p.buf),
                digest: std::mem::take(&mut p.hasher).finalize().into(),
                contributors: p.contributors.clone(),
            }
        } else {
            BlockOutcome::Stored
        }
    }

    /// Give a piece buffer back for reuse (after it was written or failed).
    pub fn recycle(&mut self, buf: PieceBuf) {
        // Keep enough for every piece that can be in flight: a fresh buffer costs page faults
        // (and on some VMs a host round trip per page), a reused one nothing. Dropped when
        // the torrent completes.
        if !self.is_complete()
            && self.pool.len() < self.max_hashing + 16
            && buf.capacity() as u64 >= self.piece_length
        {
            self.pool.push(buf);
        }
    }

    /// The piece hashed correctly and is written.
    pub fn piece_verified(&mut self, i: u32) -> bool {
        if self.partial.remove(&i).is_some_and(|p| p.hashing) {
            self.hashing -= 1;
        }
        let new = self.have.set(i as usize);
        if self.is_complete() {
            self.pool = Vec::new();
        }
        new
    }

    /// The piece failed its hash check: forget all its blocks so they are asked again.
    pub fn piece_failed(&mut self, i: u32) {
        if self.partial.remove(&i).is_some_and(|p| p.hashing) {
            self.hashing -= 1;
        }
        self.order_dirty = true;
    }

    /// Number of pieces in flight (partially downloaded or being hashed).
    pub fn pieces_in_flight(&self) -> usize {
        self.partial.len()
    }
}

fn mix(seed: u64, i: u32) -> u64 {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: u64 = 2 * BLOCK_SIZE as u64;

    fn picker(n: usize) -> Picker {
        Picker::new(PL, PL * n as u64 - 100, Bitfield::new(n))
    }

    #[test]
    fn rarest_first() {
        let mut p = picker(4);
        let all = Bitfield::full(4);
        let mut one = Bitfield::new(4);
        one.set(2);
        p.add_peer_bitfield(&all);
        p.add_peer_bitfield(&all);
        p.add_peer_bitfield(&one);
        // piece 2 has availability 3, the others 2; a peer with 2 and 3 gets 3 first.
        let mut peer = Bitfield::new(4);
        peer.set(2);
        peer.set(3);
        let mut out = vec![];
        p.pick(&peer, &HashSet::new(), 2, &mut out);
        assert!(out.iter().all(|r| r.index == 3), "{out:?}");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn last_block_is_short_and_piece_completes() {
        let mut p = picker(2);
        let all = Bitfield::full(2);
        p.add_peer_bitfield(&all);
        let mut out = vec![];
        p.pick(&all, &HashSet::new(), 100, &mut out);
        assert_eq!(out.len(), 4);
        let last = out.iter().find(|r| r.index == 1 && r.begin > 0).unwrap();
        assert_eq!(last.length, BLOCK_SIZE - 100);
        let data = vec![7u8; BLOCK_SIZE as usize];
        assert_eq!(p.on_block(1, 0, 0, &data), BlockOutcome::Stored);
        assert_eq!(p.on_block(1, 0, 0, &data), BlockOutcome::Duplicate);
        match p.on_block(2, 0, BLOCK_SIZE, &data) {
            BlockOutcome::PieceComplete {
                index,
                data,
                digest,
                contributors,
            } => {
                assert_eq!(index, 0);
                assert_eq!(data.len(), PL as usize);
                assert_eq!(digest, <[u8; 20]>::from(Sha1::digest(&data[..])));
                assert_eq!(contributors, vec![1, 2]);
            }
            o => panic!("{o:?}"),
        }
        assert!(p.piece_verified(0));
        assert_eq!(p.have_bytes(), PL);
        // wrong length for the short last block is unexpected
        assert_eq!(
            p.on_block(1, 1, BLOCK_SIZE, &data),
            BlockOutcome::Unexpected
        );
    }

    #[test]
    fn failed_piece_is_requested_again_and_cancel_frees() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let mut out = vec![];
        p.pick(&all, &HashSet::new(), 1, &mut out);
        assert_eq!(out.len(), 1);
        p.cancel_request(&out[0]);
        let mut again = vec![];
        p.pick(&all, &HashSet::new(), 10, &mut again);
        assert_eq!(again.len(), 2);
        let d0 = vec![0u8; BLOCK_SIZE as usize];
        let d1 = vec![0u8; (BLOCK_SIZE - 100) as usize];
        p.on_block(1, 0, 0, &d0);
        assert!(matches!(
            p.on_block(1, 0, BLOCK_SIZE, &d1),
            BlockOutcome::PieceComplete { .. }
        ));
        p.piece_failed(0);
        let mut third = vec![];
        p.pick(&all, &HashSet::new(), 10, &mut third);
        assert_eq!(third.len(), 2);
    }

    #[test]
    fn endgame_duplicates_requests_to_other_peers_only() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let mut a = vec![];
        p.pick(&all, &HashSet::new(), 10, &mut a);
        assert_eq!(a.len(), 2);
        assert!(p.in_endgame());
        let pending_a: HashSet<BlockRef> = a.iter().copied().collect();
        let mut again = vec![];
        p.pick(&all, &pending_a, 10, &mut again);
        assert!(again.is_empty(), "same peer must not get duplicates");
        let mut b = vec![];
        p.pick(&all, &HashSet::new(), 10, &mut b);
        assert_eq!(b.len(), 2);
        // after one cancel the block is still requested by the other peer
        p.cancel_request(&a[0]);
        let d0 = vec![0u8; BLOCK_SIZE as usize];
        assert_eq!(p.on_block(2, 0, 0, &d0), BlockOutcome::Stored);
    }

    #[test]
    fn digest_is_right_for_any_block_order() {
        // 5 blocks, the last one short; blocks arrive out of order, one twice.
        let plen = 4 * BLOCK_SIZE as u64 + 1000;
        let data: Vec<u8> = (0..plen as u32).map(|i| (i * 17 + i / 300) as u8).collect();
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]] {
            let mut p = Picker::new(plen, plen, Bitfield::new(1));
            let all = Bitfield::full(1);
            let mut out = vec![];
            p.pick(&all, &HashSet::new(), 10, &mut out);
            assert_eq!(out.len(), 5);
            let block = |b: u32| {
                let s = (b * BLOCK_SIZE) as usize;
                &data[s..(s + BLOCK_SIZE as usize).min(data.len())]
            };
            let mut done = None;
            for (k, b) in order.iter().enumerate() {
                match p.on_block(1, 0, b * BLOCK_SIZE, block(*b)) {
                    BlockOutcome::Stored => assert!(k < 4),
                    BlockOutcome::PieceComplete { data, digest, .. } => done = Some((data, digest)),
                    o => panic!("{o:?}"),
                }
                if k == 1 {
                    assert_eq!(
                        p.on_block(2, 0, b * BLOCK_SIZE, block(*b)),
                        BlockOutcome::Duplicate
                    );
                }
            }
            let (buf, digest) = done.unwrap();
            assert!(buf[..] == data[..]);
            assert_eq!(digest, <[u8; 20]>::from(Sha1::digest(&data)), "{order:?}");
        }
    }

    #[test]
    fn peer_without_pieces_gets_nothing() {
        let mut p = picker(3);
        let none = Bitfield::new(3);
        let mut out = vec![];
        p.pick(&none, &HashSet::new(), 10, &mut out);
        assert!(out.is_empty());
        assert!(!p.interesting(&none));
    }
}

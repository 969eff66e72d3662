//! Per-peer protocol state, sans-IO: choke/interest flags, the peer's pieces, our outstanding
//! requests and the request-queue sizing (by rate, like libtorrent's request queue time). The
//! tokio task that moves bytes lives in `torrent.rs`; this module only keeps state and checks
//! what the peer says.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use crate::bitfield::Bitfield;
use crate::metadata::ExtHandshake;
use crate::wire::{BlockRef, BLOCK_SIZE, MAX_REQUEST_LEN};

/// A protocol violation: the peer is dropped (and banned for the torrent).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("second bitfield message")]
    BadBitfield,
    #[error("bitfield of {got} bytes for {pieces} pieces")]
    BadBitfieldLen { got: usize, pieces: usize },
    #[error("have for piece {0} which does not exist")]
    BadHave(u32),
    #[error("request {0:?} is out of range or too large")]
    BadRequest(BlockRef),
    #[error("piece data for an unknown or malformed block ({index}, {begin}, {len} bytes)")]
    BadBlock { index: u32, begin: u32, len: usize },
    #[error("wire error: {0}")]
    Wire(#[from] crate::wire::WireError),
    #[error("bad extension message: {0}")]
    Extension(String),
    #[error("sent bogus metadata")]
    BogusMetadata,
    #[error("sent pieces that failed verification")]
    BadData,
}

/// Request-queue sizing knobs.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// Keep this much time worth of data requested from a peer.
    pub queue_time: Duration,
    pub min: usize,
    pub max: usize,
    pub initial: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_time: Duration::from_secs(3),
            min: 4,
            max: 500,
            initial: 64,
        }
    }
}

/// Exponential moving average of a byte rate, sampled once per tick.
#[derive(Clone, Debug, Default)]
pub struct Rate {
    acc: u64,
    rate: f64,
    total: u64,
}

impl Rate {
    pub fn add(&mut self, n: u64) {
        self.acc += n;
        self.total += n;
    }

    /// Fold the bytes counted since the last tick, `dt` ago.
    pub fn tick(&mut self, dt: Duration) {
        let secs = dt.as_secs_f64().max(1e-3);
        let inst = self.acc as f64 / secs;
        self.rate = if self.rate == 0.0 {
            inst
        } else {
            0.6 * self.rate + 0.4 * inst
        };
        self.acc = 0;
    }

    pub fn bytes_per_sec(&self) -> f64 {
        self.rate
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// State of one connection as seen by the protocol.
#[derive(Debug)]
pub struct PeerState {
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// The peer's pieces, once the piece count is known.
    pub have: Option<Bitfield>,
    /// Bitfield / have messages that arrived before we had the metadata.
    pub early_bitfield: Option<Bytes>,
    pub early_haves: Vec<u32>,
    pub early_have_all: bool,
    pub ext: Option<ExtHandshake>,
    /// Requests we sent and are waiting for.
    pub pending: HashSet<BlockRef>,
    pub queue_target: usize,
    pub down: Rate,
    pub up: Rate,
    pub last_block: Instant,
    pub metadata_requests: usize,
}

impl PeerState {
    pub fn new(q: &QueueConfig, now: Instant) -> Self {
        PeerState {
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            have: None,
            early_bitfield: None,
            early_haves: Vec::new(),
            early_have_all: false,
            ext: None,
            pending: HashSet::new(),
            queue_target: q.initial,
            down: Rate::default(),
            up: Rate::default(),
            last_block: now,
            metadata_requests: 0,
        }
    }

    /// The piece count became known: turn early messages into a bitfield.
    pub fn resolve_bitfield(&mut self, num_pieces: usize) -> Result<&Bitfield, ProtocolError> {
        if self.have.is_none() {
            let mut bf = if self.early_have_all {
                Bitfield::full(num_pieces)
            } else if let Some(b) = self.early_bitfield.take() {
                Bitfield::from_bytes_lenient(&b, num_pieces).ok_or(
                    ProtocolError::BadBitfieldLen {
                        got: b.len(),
                        pieces: num_pieces,
                    },
                )?
            } else {
                Bitfield::new(num_pieces)
            };
            for i in self.early_haves.drain(..) {
                if i as usize >= num_pieces {
                    return Err(ProtocolError::BadHave(i));
                }
                bf.set(i as usize);
            }
            self.have = Some(bf);
        }
        // ok: set just above when it was None
        Ok(self.have.as_ref().expect("bitfield set above"))
    }

    /// Validate a request against the piece lengths.
    pub fn check_request(r: &BlockRef, piece_len: Option<u32>) -> Result<(), ProtocolError> {
        match piece_len {
            Some(pl)
                if r.length > 0
                    && r.length <= MAX_REQUEST_LEN
                    && r.begin.checked_add(r.length).is_some_and(|e| e <= pl) =>
            {
                Ok(())
            }
            _ => Err(ProtocolError::BadRequest(*r)),
        }
    }

    /// Recompute the request queue length from the download rate (once per tick).
    pub fn update_queue(&mut self, q: &QueueConfig) {
        let want = if self.down.total() < 1024 * 1024 {
            q.initial
        } else {
            (self.down.bytes_per_sec() * q.queue_time.as_secs_f64() / BLOCK_SIZE as f64) as usize
        };
        let mut max = q.max;
        if let Some(r) = self.ext.as_ref().and_then(|e| e.reqq) {
            max = max.min(r as usize);
        }
        self.queue_target = want.clamp(q.min, max.max(q.min));
    }

    /// How many more requests to send now.
    pub fn request_room(&self) -> usize {
        if self.peer_choking || !self.am_interested {
            return 0;
        }
        self.queue_target.saturating_sub(self.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_bitfield_resolves() {
        let q = QueueConfig::default();
        let mut p = PeerState::new(&q, Instant::now());
        p.early_bitfield = Some(Bytes::from_static(&[0b1010_0000]));
        p.early_haves.push(1);
        let bf = p.resolve_bitfield(3).unwrap();
        assert_eq!(bf.ones().collect::<Vec<_>>(), vec![0, 1, 2]);
        let mut bad = PeerState::new(&q, Instant::now());
        bad.early_bitfield = Some(Bytes::from_static(&[0xff, 0]));
        assert!(matches!(
            bad.resolve_bitfield(3),
            Err(ProtocolError::BadBitfieldLen { .. })
        ));
        let mut hv = PeerState::new(&q, Instant::now());
        hv.early_haves.push(5);
        assert_eq!(hv.resolve_bitfield(3), Err(ProtocolError::BadHave(5)));
    }

    #[test]
    fn requests_checked() {
        let r = |begin, length| BlockRef {
            index: 0,
            begin,
            length,
        };
        assert!(PeerState::check_request(&r(0, 16384), Some(32768)).is_ok());
        assert!(PeerState::check_request(&r(16384, 16385), Some(32768)).is_err());
        assert!(PeerState::check_request(&r(0, 0), Some(32768)).is_err());
        assert!(PeerState::check_request(&r(0, 16384), None).is_err());
        assert!(PeerState::check_request(&r(u32::MAX, 2), Some(32768)).is_err());
    }

    #[test]
    fn queue_follows_rate() {
        let q = QueueConfig::default();
        let mut p = PeerState::new(&q, Instant::now());
        p.down.add(100 * 1024 * 1024);
        p.down.tick(Duration::from_secs(1));
        p.update_queue(&q);
        assert_eq!(p.queue_target, 500);
        p.ext = Some(ExtHandshake {
            reqq: Some(250),
            ..Default::default()
        });
        p.queue_target = 0;
        p.update_queue(&q);
        assert_eq!(p.queue_target, 250);
        let mut slow = PeerState::new(&q, Instant::now());
        slow.down.add(2 * 1024 * 1024);
        slow.down.tick(Duration::from_secs(1000));
        slow.update_queue(&q);
        assert_eq!(slow.queue_target, 4);
        assert_eq!(slow.request_room(), 0, "choked: no requests");
    }
}

//! Sans-IO link: handshake framing, per-cell AEAD, keepalive and idle timers.
//!
//! Wire format: `len:u16 | noise msg1` (initiator), `len:u16 | noise msg2` (responder), then a
//! stream of frames of exactly `WIRE_CELL` bytes, each one Noise transport message (the cell
//! sealed with the pattern's AEAD, nonce = 64-bit per-direction counter); no length prefix needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::StatelessTransportState;

use crate::cell::{CellBuf, CELL_SIZE, WIRE_CELL};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("frame failed authentication (garbage, tampering or desynchronised stream)")]
    BadFrame,
    #[error("frame has {0} bytes, expected {WIRE_CELL}")]
    FrameSize(usize),
    #[error("handshake message length {0} out of range")]
    HandshakeLength(usize),
}

/// One direction of link encryption: a Noise transport state with an explicit counter nonce.
/// (`snow`'s stateless transport: the send and receive halves live in different tasks.)
pub struct LinkDir {
    ts: Arc<StatelessTransportState>,
    counter: u64,
}

impl LinkDir {
    /// Seals `cell` (CELL_SIZE bytes) and appends `WIRE_CELL` bytes to `out`.
    pub fn seal_into(&mut self, cell: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(cell.len(), CELL_SIZE);
        let start = out.len();
        out.resize(start + WIRE_CELL, 0);
        // ok: a CELL_SIZE payload always fits the WIRE_CELL output and snow's 65535-byte limit.
        let n = self.ts.write_message(self.counter, cell, &mut out[start..]).expect("cell-sized Noise transport message");
        debug_assert_eq!(n, WIRE_CELL);
        self.counter += 1;
    }

    /// Opens one frame into a fresh cell buffer.
    pub fn open(&mut self, frame: &[u8]) -> Result<CellBuf, LinkError> {
        if frame.len() != WIRE_CELL {
            return Err(LinkError::FrameSize(frame.len()));
        }
        let mut c = vec![0u8; CELL_SIZE];
        match self.ts.read_message(self.counter, frame, &mut c) {
            Ok(n) if n == CELL_SIZE => {
                self.counter += 1;
                Ok(c)
            }
            _ => Err(LinkError::BadFrame),
        }
    }
}

/// Both directions of an established link.
pub struct LinkCipher {
    pub send: LinkDir,
    pub recv: LinkDir,
}

impl LinkCipher {
    pub fn from_transport(ts: StatelessTransportState) -> LinkCipher {
        let ts = Arc::new(ts);
        LinkCipher { send: LinkDir { ts: ts.clone(), counter: 0 }, recv: LinkDir { ts, counter: 0 } }
    }
}

/// Keepalive and idle-timeout bookkeeping driven by explicit `now` instants.
#[derive(Debug, Clone)]
pub struct LinkTimers {
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    last_send: Instant,
    last_recv: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Nothing to do before the returned deadline.
    Wait(Instant),
    SendKeepalive,
    Close,
}

impl LinkTimers {
    pub fn new(now: Instant, keepalive: Duration, idle_timeout: Duration) -> LinkTimers {
        LinkTimers { keepalive, idle_timeout, last_send: now, last_recv: now }
    }
    pub fn on_send(&mut self, now: Instant) {
        self.last_send = now;
    }
    pub fn on_recv(&mut self, now: Instant) {
        self.last_recv = now;
    }
    pub fn poll(&self, now: Instant) -> TimerAction {
        let idle_at = self.last_recv + self.idle_timeout;
        if now >= idle_at {
            return TimerAction::Close;
        }
        let ka_at = self.last_send + self.keepalive;
        if now >= ka_at {
            return TimerAction::SendKeepalive;
        }
        TimerAction::Wait(idle_at.min(ka_at))
    }
}

/// Checks a handshake length prefix.
pub fn handshake_len(prefix: [u8; 2]) -> Result<usize, LinkError> {
    let n = u16::from_be_bytes(prefix) as usize;
    if !(32..=1024).contains(&n) {
        return Err(LinkError::HandshakeLength(n));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{cmd, new_cell};
    use crate::handshake::{link_respond, LinkInitiator};
    use crate::identity::Identity;

    fn pair() -> (LinkCipher, LinkCipher) {
        let a = Identity::generate();
        let b = Identity::generate();
        let (init, m1) = LinkInitiator::start(&a.x25519_secret_bytes(), &b.x25519_public()).unwrap();
        let (m2, tb, _) = link_respond(&b.x25519_secret_bytes(), &m1).unwrap();
        let ta = init.finish(&m2).unwrap();
        (LinkCipher::from_transport(ta), LinkCipher::from_transport(tb))
    }

    #[test]
    fn seal_open_in_order() {
        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        for i in 0..3u32 {
            a.send.seal_into(&new_cell(i, cmd::PADDING), &mut wire);
        }
        assert_eq!(wire.len(), 3 * WIRE_CELL);
        for (i, f) in wire.chunks(WIRE_CELL).enumerate() {
            let c = b.recv.open(f).unwrap();
            assert_eq!(crate::cell::circ_id(&c), i as u32);
        }
        let mut w2 = Vec::new();
        b.send.seal_into(&new_cell(9, cmd::PADDING), &mut w2);
        assert_eq!(crate::cell::circ_id(&a.recv.open(&w2).unwrap()), 9);
    }

    #[test]
    fn garbage_replay_and_tamper_rejected() {
        let (mut a, mut b) = pair();
        let mut w = Vec::new();
        a.send.seal_into(&new_cell(1, cmd::PADDING), &mut w);
        let mut t = w.clone();
        t[10] ^= 1;
        assert_eq!(b.recv.open(&t), Err(LinkError::BadFrame));
        b.recv.open(&w).unwrap();
        assert_eq!(b.recv.open(&w), Err(LinkError::BadFrame));
        assert_eq!(b.recv.open(&vec![0x55u8; WIRE_CELL]), Err(LinkError::BadFrame));
        assert_eq!(b.recv.open(&[0u8; 10]), Err(LinkError::FrameSize(10)));
    }

    #[test]
    fn timers() {
        let t0 = Instant::now();
        let mut t = LinkTimers::new(t0, Duration::from_secs(10), Duration::from_secs(30));
        assert_eq!(t.poll(t0), TimerAction::Wait(t0 + Duration::from_secs(10)));
        assert_eq!(t.poll(t0 + Duration::from_secs(11)), TimerAction::SendKeepalive);
        t.on_send(t0 + Duration::from_secs(11));
        t.on_recv(t0 + Duration::from_secs(20));
        assert_eq!(t.poll(t0 + Duration::from_secs(21)), TimerAction::SendKeepalive);
        assert_eq!(t.poll(t0 + Duration::from_secs(50)), TimerAction::Close);
        assert!(handshake_len([0, 5]).is_err());
        assert_eq!(handshake_len([0, 96]), Ok(96));
    }
}

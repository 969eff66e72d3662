//! Sans-IO link: handshake framing, per-cell AEAD, keepalive and idle timers.
//!
//! Wire format: `len:u16 | noise msg1` (initiator), `len:u16 | noise msg2` (responder), then a
//! stream of frames of exactly `WIRE_CELL` bytes, each one Noise transport message (the cell
//! sealed with the pattern's AEAD, nonce = 64-bit per-direction counter); no length prefix needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::StatelessTransportState;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::cell::{CellBuf, CELL_SIZE, LINK_TAG, WIRE_CELL};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("frame failed authentication (garbage, tampering or desynchronised stream)")]
    BadFrame,
    #[error("frame has {0} bytes, expected {WIRE_CELL}")]
    FrameSize(usize),
    #[error("handshake message length {0} out of range")]
    HandshakeLength(usize),
}

/// How cells are sealed on links (chosen by measurement, docs/PROTOCOL.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkAead {
    /// One Noise transport message per cell (the pattern's AEAD: AESGCM or ChaChaPoly).
    NoiseTransport,
    /// Encrypt-then-MAC with keys from the Noise split: keystream = BLAKE3-XOF(k_enc, counter),
    /// tag = BLAKE3-keyed(k_mac, ciphertext || counter)[..16].
    Blake3Etm,
}

pub const LINK_AEAD: LinkAead = LinkAead::Blake3Etm;

enum Sealer {
    Noise(Arc<StatelessTransportState>),
    Etm { enc: [u8; 32], mac: [u8; 32] },
}

/// One direction of link encryption with an explicit per-direction counter nonce.
pub struct LinkDir {
    sealer: Sealer,
    counter: u64,
}

impl Drop for LinkDir {
    fn drop(&mut self) {
        if let Sealer::Etm { enc, mac } = &mut self.sealer {
            enc.zeroize();
            mac.zeroize();
        }
    }
}

fn etm_keystream(key: &[u8; 32], counter: u64, data: &mut [u8]) {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"warren-link-ks");
    h.update(&counter.to_be_bytes());
    let mut xof = h.finalize_xof();
    let mut ks = [0u8; 4096];
    for chunk in data.chunks_mut(ks.len()) {
        let k = &mut ks[..chunk.len()];
        xof.fill(k);
        crate::relay_crypto::xor_into(chunk, k);
    }
}

fn etm_tag(key: &[u8; 32], counter: u64, ct: &[u8]) -> [u8; LINK_TAG] {
    // counter last: the ciphertext stays chunk-aligned for BLAKE3's SIMD path
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(ct);
    h.update(&counter.to_be_bytes());
    let mut t = [0u8; LINK_TAG];
    h.finalize_xof().fill(&mut t);
    t
}

impl LinkDir {
    /// Seals `cell` (CELL_SIZE bytes) and appends `WIRE_CELL` bytes to `out`.
    pub fn seal_into(&mut self, cell: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        match &self.sealer {
            Sealer::Noise(ts) => {
                out.resize(start + cell.len() + LINK_TAG, 0);
                // ok: a CELL_SIZE payload always fits the WIRE_CELL output and snow's 65535-byte limit.
                let n = ts
                    .write_message(self.counter, cell, &mut out[start..])
                    .expect("cell-sized Noise transport message");
                debug_assert_eq!(n, cell.len() + LINK_TAG);
            }
            Sealer::Etm { enc, mac } => {
                out.extend_from_slice(cell);
                etm_keystream(enc, self.counter, &mut out[start..]);
                let t = etm_tag(mac, self.counter, &out[start..]);
                out.extend_from_slice(&t);
            }
        }
        self.counter += 1;
    }

    /// Opens one frame into a fresh cell buffer.
    pub fn open(&mut self, frame: &[u8]) -> Result<CellBuf, LinkError> {
        if frame.len() != WIRE_CELL {
            return Err(LinkError::FrameSize(frame.len()));
        }
        let c = match &self.sealer {
            Sealer::Noise(ts) => {
                let mut c = vec![0u8; CELL_SIZE];
                match ts.read_message(self.counter, frame, &mut c) {
                    Ok(n) if n == CELL_SIZE => c,
                    _ => return Err(LinkError::BadFrame),
                }
            }
            Sealer::Etm { enc, mac } => {
                let (ct, tag) = frame.split_at(CELL_SIZE);
                let want = etm_tag(mac, self.counter, ct);
                if !bool::from(want.ct_eq(tag)) {
                    return Err(LinkError::BadFrame);
                }
                let mut c = ct.to_vec();
                etm_keystream(enc, self.counter, &mut c);
                c
            }
        };
        self.counter += 1;
        Ok(c)
    }
}

/// Both directions of an established link.
pub struct LinkCipher {
    pub send: LinkDir,
    pub recv: LinkDir,
}

impl LinkCipher {
    /// Noise transport messages (LinkAead::NoiseTransport).
    pub fn from_transport(ts: StatelessTransportState) -> LinkCipher {
        let ts = Arc::new(ts);
        LinkCipher {
            send: LinkDir {
                sealer: Sealer::Noise(ts.clone()),
                counter: 0,
            },
            recv: LinkDir {
                sealer: Sealer::Noise(ts),
                counter: 0,
            },
        }
    }

    /// Encrypt-then-MAC keys from the Noise split: HKDF-SHA256(salt "warren-link-etm-v1",
    /// ikm = k_i2r || k_r2i) → enc_i2r, mac_i2r, enc_r2i, mac_r2i (32 bytes each).
    pub fn from_split(split: &crate::handshake::Split, initiator: bool) -> LinkCipher {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(&split.0);
        ikm[32..].copy_from_slice(&split.1);
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"warren-link-etm-v1"), &ikm);
        ikm.zeroize();
        let mut okm = [0u8; 128];
        // ok: 128 bytes is within HKDF-SHA256's output limit.
        hk.expand(b"enc+mac", &mut okm).expect("hkdf length");
        let part = |i: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&okm[i * 32..i * 32 + 32]);
            k
        };
        let i2r = Sealer::Etm {
            enc: part(0),
            mac: part(1),
        };
        let r2i = Sealer::Etm {
            enc: part(2),
            mac: part(3),
        };
        okm.zeroize();
        let (s, r) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
        LinkCipher {
            send: LinkDir {
                sealer: s,
                counter: 0,
            },
            recv: LinkDir {
                sealer: r,
                counter: 0,
            },
        }
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
        LinkTimers {
            keepalive,
            idle_timeout,
            last_send: now,
            last_recv: now,
        }
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

    fn pair_kind(kind: LinkAead) -> (LinkCipher, LinkCipher) {
        let a = Identity::generate();
        let b = Identity::generate();
        let (init, m1) =
            LinkInitiator::start(&a.x25519_secret_bytes(), &b.x25519_public()).unwrap();
        let (m2, mut hb, _) = link_respond(&b.x25519_secret_bytes(), &m1).unwrap();
        let mut ha = init.finish(&m2).unwrap();
        match kind {
            LinkAead::NoiseTransport => (
                LinkCipher::from_transport(ha.into_stateless_transport_mode().unwrap()),
                LinkCipher::from_transport(hb.into_stateless_transport_mode().unwrap()),
            ),
            LinkAead::Blake3Etm => (
                LinkCipher::from_split(&ha.dangerously_get_raw_split(), true),
                LinkCipher::from_split(&hb.dangerously_get_raw_split(), false),
            ),
        }
    }

    fn pair() -> (LinkCipher, LinkCipher) {
        pair_kind(LINK_AEAD)
    }

    #[test]
    fn seal_open_in_order() {
        for kind in [LinkAead::NoiseTransport, LinkAead::Blake3Etm] {
            seal_open_kind(kind);
        }
    }

    fn seal_open_kind(kind: LinkAead) {
        let (mut a, mut b) = pair_kind(kind);
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
        assert_eq!(
            b.recv.open(&vec![0x55u8; WIRE_CELL]),
            Err(LinkError::BadFrame)
        );
        assert_eq!(b.recv.open(&[0u8; 10]), Err(LinkError::FrameSize(10)));
    }

    #[test]
    fn timers() {
        let t0 = Instant::now();
        let mut t = LinkTimers::new(t0, Duration::from_secs(10), Duration::from_secs(30));
        assert_eq!(t.poll(t0), TimerAction::Wait(t0 + Duration::from_secs(10)));
        assert_eq!(
            t.poll(t0 + Duration::from_secs(11)),
            TimerAction::SendKeepalive
        );
        t.on_send(t0 + Duration::from_secs(11));
        t.on_recv(t0 + Duration::from_secs(20));
        assert_eq!(
            t.poll(t0 + Duration::from_secs(21)),
            TimerAction::SendKeepalive
        );
        assert_eq!(t.poll(t0 + Duration::from_secs(50)), TimerAction::Close);
        assert!(handshake_len([0, 5]).is_err());
        assert_eq!(handshake_len([0, 96]), Ok(96));
    }
}

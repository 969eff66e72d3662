//! Sans-IO link: handshake framing, per-cell AEAD, keepalive and idle timers.
//!
//! Wire format: `len:u16 | noise msg1` (initiator), `len:u16 | noise msg2` (responder), then a
//! stream of frames of exactly `WIRE_CELL` bytes, each one cell sealed with [`LINK_AEAD`] under a
//! 64-bit per-direction frame counter (the nonce); no length prefix needed. docs/PROTOCOL.md "Link"
//! has the byte layout, the key derivation and the measurements behind the choice.

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use snow::StatelessTransportState;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::cell::{CellBuf, CELL_SIZE, LINK_TAG, WIRE_CELL};
use crate::handshake::Split;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("frame failed authentication (garbage, tampering or desynchronised stream)")]
    BadFrame,
    #[error("frame has {0} bytes, expected {WIRE_CELL}")]
    FrameSize(usize),
    #[error("handshake message length {0} out of range")]
    HandshakeLength(usize),
    #[error("frame counter exhausted (2^64 - 1 frames in one direction)")]
    CounterExhausted,
}

/// How cells are sealed on links (chosen by measurement, docs/PROTOCOL.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkAead {
    /// One Noise transport message per cell (snow's AEAD for the pattern; measured, not used).
    NoiseTransport,
    /// A frame AEAD keyed from the Noise split.
    Split(FrameAead),
}

/// Frame AEADs keyed from the raw Noise split (per-direction keys, counter nonces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FrameAead {
    /// RFC 8439 ChaCha20-Poly1305 (`ring`).
    ChaCha20Poly1305,
    /// AES-256-GCM (`ring`).
    Aes256Gcm,
    /// Encrypt-then-MAC: keystream = BLAKE3-XOF(k_enc, counter), tag = BLAKE3-keyed(k_mac,
    /// ciphertext || counter)[..16]. The previous link construction, kept for comparison (bench).
    Blake3Etm,
}

/// The frame AEAD on the wire (measured against the others in `benches/cell_crypto.rs`).
pub const LINK_FRAME_AEAD: FrameAead = FrameAead::Aes256Gcm;
pub const LINK_AEAD: LinkAead = LinkAead::Split(LINK_FRAME_AEAD);

/// The one nonce never used (as in Noise): a direction seals or opens with nonces 0 ..= 2^64 - 2
/// only, then refuses, so its counter can never wrap.
const RESERVED_NONCE: u64 = u64::MAX;

enum Sealer {
    Noise(Arc<StatelessTransportState>),
    Etm(EtmKeys),
    Ring(RingKey),
}

/// BLAKE3 encrypt-then-MAC keys, wiped on drop.
struct EtmKeys {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl Drop for EtmKeys {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.mac.zeroize();
    }
}

/// A `ring` AEAD key in its own allocation, so its expanded key schedule can be wiped on drop
/// (`ring` does not zeroize its keys).
struct RingKey(Box<ManuallyDrop<LessSafeKey>>);

impl RingKey {
    fn new(alg: &'static ring::aead::Algorithm, key: &[u8; 32]) -> RingKey {
        // ok: both algorithms used here take 32-byte keys, the only way `new` fails.
        let key = UnboundKey::new(alg, key).expect("32-byte AEAD key");
        RingKey(Box::new(ManuallyDrop::new(LessSafeKey::new(key))))
    }
}

impl Drop for RingKey {
    fn drop(&mut self) {
        let key: *mut ManuallyDrop<LessSafeKey> = &mut *self.0;
        // SAFETY: `key` points to a live, exclusively owned heap value of exactly that type. After
        // the wipe it is never read, used or dropped: `ManuallyDrop` makes the Box's drop glue only
        // free the memory, so the all-zero bytes are never treated as a `LessSafeKey`. `ring` 0.17
        // keeps the key schedule inline (no pointers to other key material), so this wipes all of it.
        unsafe { zeroize::zeroize_flat_type(key) }
    }
}

/// 96-bit nonce: 32 zero bits, then the frame counter (big-endian).
fn ring_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
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

impl Sealer {
    /// Appends `cell` sealed under nonce `n` (`cell.len() + LINK_TAG` bytes) to `out`.
    fn seal(&self, n: u64, cell: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Sealer::Noise(ts) => {
                out.resize(start + cell.len() + LINK_TAG, 0);
                // ok: a CELL_SIZE payload always fits the WIRE_CELL output and snow's 65535-byte
                // limit, and `n` is below snow's reserved nonce (RESERVED_NONCE).
                let len = ts
                    .write_message(n, cell, &mut out[start..])
                    .expect("cell-sized Noise transport message");
                debug_assert_eq!(len, cell.len() + LINK_TAG);
            }
            Sealer::Etm(k) => {
                out.extend_from_slice(cell);
                etm_keystream(&k.enc, n, &mut out[start..]);
                let t = etm_tag(&k.mac, n, &out[start..]);
                out.extend_from_slice(&t);
            }
            Sealer::Ring(k) => {
                out.extend_from_slice(cell);
                // ok: ring refuses only inputs longer than the algorithm's limit (>= 64 GB).
                let tag =
                    k.0.seal_in_place_separate_tag(ring_nonce(n), Aad::empty(), &mut out[start..])
                        .expect("cell-sized AEAD input");
                out.extend_from_slice(tag.as_ref());
            }
        }
    }

    /// Opens a `WIRE_CELL`-byte frame sealed under nonce `n`.
    fn open(&self, n: u64, frame: &[u8]) -> Result<CellBuf, LinkError> {
        let (ct, tag) = frame.split_at(CELL_SIZE);
        match self {
            Sealer::Noise(ts) => {
                let mut c = vec![0u8; CELL_SIZE];
                match ts.read_message(n, frame, &mut c) {
                    Ok(len) if len == CELL_SIZE => Ok(c),
                    _ => Err(LinkError::BadFrame),
                }
            }
            Sealer::Etm(k) => {
                let want = etm_tag(&k.mac, n, ct);
                if !bool::from(want.ct_eq(tag)) {
                    return Err(LinkError::BadFrame);
                }
                let mut c = ct.to_vec();
                etm_keystream(&k.enc, n, &mut c);
                Ok(c)
            }
            Sealer::Ring(k) => {
                let tag = Tag::try_from(tag).map_err(|_| LinkError::BadFrame)?;
                let mut c = ct.to_vec();
                k.0.open_in_place_separate_tag(ring_nonce(n), Aad::empty(), tag, &mut c, 0..)
                    .map_err(|_| LinkError::BadFrame)?;
                Ok(c)
            }
        }
    }
}

/// One direction of link encryption with an explicit per-direction counter nonce.
pub struct LinkDir {
    sealer: Sealer,
    /// Nonce of the next frame; frames are refused once it reaches [`RESERVED_NONCE`].
    counter: u64,
}

impl LinkDir {
    fn new(sealer: Sealer) -> LinkDir {
        LinkDir { sealer, counter: 0 }
    }

    fn nonce(&self) -> Result<u64, LinkError> {
        if self.counter == RESERVED_NONCE {
            return Err(LinkError::CounterExhausted);
        }
        Ok(self.counter)
    }

    /// Seals `cell` (CELL_SIZE bytes) and appends `WIRE_CELL` bytes to `out`; refuses (appending
    /// nothing) once this direction has sealed 2^64 - 1 frames.
    pub fn try_seal_into(&mut self, cell: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let n = self.nonce()?;
        self.sealer.seal(n, cell, out);
        self.counter = n + 1;
        Ok(())
    }

    /// [`LinkDir::try_seal_into`] for callers that cannot handle the (after 2^64 - 1 frames, in
    /// practice unreachable) exhaustion: it is logged and nothing is appended, so the link carries
    /// no more cells and the peer's idle timeout closes it. No nonce is ever reused.
    pub fn seal_into(&mut self, cell: &[u8], out: &mut Vec<u8>) {
        if let Err(e) = self.try_seal_into(cell, out) {
            tracing::error!("link: cell not sent: {e}");
        }
    }

    /// Opens one frame into a fresh cell buffer. A frame that fails does not advance the counter
    /// (the caller closes the link).
    pub fn open(&mut self, frame: &[u8]) -> Result<CellBuf, LinkError> {
        if frame.len() != WIRE_CELL {
            return Err(LinkError::FrameSize(frame.len()));
        }
        let n = self.nonce()?;
        let c = self.sealer.open(n, frame)?;
        self.counter = n + 1;
        Ok(c)
    }
}

/// Both directions of an established link.
pub struct LinkCipher {
    pub send: LinkDir,
    pub recv: LinkDir,
}

/// `okm.len()` bytes of HKDF-SHA256(salt, ikm = k_i2r || k_r2i, info).
fn split_hkdf(split: &Split, salt: &[u8], info: &[u8], okm: &mut [u8]) {
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(&split.0);
    ikm[32..].copy_from_slice(&split.1);
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &ikm);
    ikm.zeroize();
    // ok: callers ask for at most 128 bytes, well within HKDF-SHA256's 8160-byte limit.
    hk.expand(info, okm).expect("hkdf length");
}

/// (i2r, r2i) BLAKE3 EtM keys: enc_i2r | mac_i2r | enc_r2i | mac_r2i = HKDF-SHA256(salt
/// "warren-link-etm-v1", ikm = k_i2r || k_r2i, info "enc+mac", 128 bytes).
fn etm_sealers(split: &Split) -> (Sealer, Sealer) {
    let mut okm = [0u8; 128];
    split_hkdf(split, b"warren-link-etm-v1", b"enc+mac", &mut okm);
    let part = |i: usize| {
        let mut k = [0u8; 32];
        k.copy_from_slice(&okm[i * 32..i * 32 + 32]);
        k
    };
    let keys = (
        EtmKeys {
            enc: part(0),
            mac: part(1),
        },
        EtmKeys {
            enc: part(2),
            mac: part(3),
        },
    );
    okm.zeroize();
    (Sealer::Etm(keys.0), Sealer::Etm(keys.1))
}

/// (i2r, r2i) keys: k_dir = HKDF-SHA256(salt, ikm = k_i2r || k_r2i, info "i2r" | "r2i", 32 bytes).
fn ring_sealers(
    split: &Split,
    salt: &[u8],
    alg: &'static ring::aead::Algorithm,
) -> (Sealer, Sealer) {
    let mut key = [0u8; 32];
    split_hkdf(split, salt, b"i2r", &mut key);
    let i2r = RingKey::new(alg, &key);
    split_hkdf(split, salt, b"r2i", &mut key);
    let r2i = RingKey::new(alg, &key);
    key.zeroize();
    (Sealer::Ring(i2r), Sealer::Ring(r2i))
}

impl LinkCipher {
    /// Noise transport messages (LinkAead::NoiseTransport).
    pub fn from_transport(ts: StatelessTransportState) -> LinkCipher {
        let ts = Arc::new(ts);
        LinkCipher {
            send: LinkDir::new(Sealer::Noise(ts.clone())),
            recv: LinkDir::new(Sealer::Noise(ts)),
        }
    }

    /// [`LINK_FRAME_AEAD`] keyed from the raw Noise split.
    pub fn from_split(split: &Split, initiator: bool) -> LinkCipher {
        LinkCipher::from_split_with(LINK_FRAME_AEAD, split, initiator)
    }

    /// `aead` keyed from the raw Noise split (key derivation in docs/PROTOCOL.md "Link").
    pub fn from_split_with(aead: FrameAead, split: &Split, initiator: bool) -> LinkCipher {
        // one HKDF salt per algorithm, so no two constructions ever share a key
        let (i2r, r2i) = match aead {
            FrameAead::ChaCha20Poly1305 => ring_sealers(
                split,
                b"warren-link-chacha20poly1305-v1",
                &ring::aead::CHACHA20_POLY1305,
            ),
            FrameAead::Aes256Gcm => {
                ring_sealers(split, b"warren-link-aes256gcm-v1", &ring::aead::AES_256_GCM)
            }
            FrameAead::Blake3Etm => etm_sealers(split),
        };
        let (send, recv) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
        LinkCipher {
            send: LinkDir::new(send),
            recv: LinkDir::new(recv),
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

    const SPLIT_KINDS: [FrameAead; 3] = [
        FrameAead::ChaCha20Poly1305,
        FrameAead::Aes256Gcm,
        FrameAead::Blake3Etm,
    ];

    fn all_kinds() -> Vec<LinkAead> {
        let mut v = vec![LinkAead::NoiseTransport];
        v.extend(SPLIT_KINDS.map(LinkAead::Split));
        v
    }

    /// Both ends of a real link handshake, keyed for `kind`.
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
            LinkAead::Split(aead) => (
                LinkCipher::from_split_with(aead, &ha.dangerously_get_raw_split(), true),
                LinkCipher::from_split_with(aead, &hb.dangerously_get_raw_split(), false),
            ),
        }
    }

    fn sealed(dir: &mut LinkDir, circ: u32) -> Vec<u8> {
        let mut w = Vec::new();
        dir.try_seal_into(&new_cell(circ, cmd::PADDING), &mut w)
            .unwrap();
        w
    }

    #[test]
    fn wire_choice_is_a_split_aead() {
        assert_eq!(LINK_AEAD, LinkAead::Split(LINK_FRAME_AEAD));
        assert_ne!(LINK_FRAME_AEAD, FrameAead::Blake3Etm);
    }

    #[test]
    fn round_trip_in_order() {
        for kind in all_kinds() {
            let (mut a, mut b) = pair_kind(kind);
            let mut wire = Vec::new();
            for i in 0..3u32 {
                a.send.seal_into(&new_cell(i, cmd::PADDING), &mut wire);
            }
            assert_eq!(wire.len(), 3 * WIRE_CELL, "{kind:?}");
            for (i, f) in wire.chunks(WIRE_CELL).enumerate() {
                let c = b.recv.open(f).unwrap();
                assert_eq!(c.len(), CELL_SIZE);
                assert_eq!(crate::cell::circ_id(&c), i as u32, "{kind:?}");
            }
            let w2 = sealed(&mut b.send, 9);
            assert_eq!(crate::cell::circ_id(&a.recv.open(&w2).unwrap()), 9);
        }
    }

    #[test]
    fn tampered_ciphertext_or_tag_refused() {
        for kind in all_kinds() {
            let (mut a, mut b) = pair_kind(kind);
            let w = sealed(&mut a.send, 1);
            for at in [0, 10, CELL_SIZE - 1, CELL_SIZE, WIRE_CELL - 1] {
                let mut t = w.clone();
                t[at] ^= 1;
                assert_eq!(
                    b.recv.open(&t),
                    Err(LinkError::BadFrame),
                    "{kind:?} byte {at}"
                );
            }
            assert_eq!(
                b.recv.open(&vec![0x55u8; WIRE_CELL]),
                Err(LinkError::BadFrame)
            );
            assert_eq!(b.recv.open(&w[..10]), Err(LinkError::FrameSize(10)));
            assert_eq!(
                b.recv.open(&w[..WIRE_CELL - 1]),
                Err(LinkError::FrameSize(WIRE_CELL - 1))
            );
            // failures did not advance the counter: the genuine frame still opens
            b.recv.open(&w).unwrap();
        }
    }

    #[test]
    fn replayed_or_reordered_frame_refused() {
        for kind in all_kinds() {
            let (mut a, mut b) = pair_kind(kind);
            let f0 = sealed(&mut a.send, 0);
            let f1 = sealed(&mut a.send, 1);
            assert_eq!(
                b.recv.open(&f1),
                Err(LinkError::BadFrame),
                "{kind:?} reorder"
            );
            b.recv.open(&f0).unwrap();
            assert_eq!(
                b.recv.open(&f0),
                Err(LinkError::BadFrame),
                "{kind:?} replay"
            );
            b.recv.open(&f1).unwrap();
            assert_eq!(b.recv.open(&f1), Err(LinkError::BadFrame));
        }
    }

    #[test]
    fn wrong_key_refused() {
        for kind in all_kinds() {
            let (mut a, _) = pair_kind(kind);
            let (_, mut other) = pair_kind(kind);
            let w = sealed(&mut a.send, 1);
            assert_eq!(other.recv.open(&w), Err(LinkError::BadFrame), "{kind:?}");
        }
        // the same split under another algorithm gives other keys
        let split = ([3u8; 32], [4u8; 32]);
        for x in SPLIT_KINDS {
            for y in SPLIT_KINDS.into_iter().filter(|y| *y != x) {
                let mut tx = LinkCipher::from_split_with(x, &split, true);
                let mut rx = LinkCipher::from_split_with(y, &split, false);
                let w = sealed(&mut tx.send, 1);
                assert_eq!(rx.recv.open(&w), Err(LinkError::BadFrame), "{x:?} -> {y:?}");
            }
        }
    }

    #[test]
    fn directions_are_independent() {
        for kind in all_kinds() {
            let (mut a, mut b) = pair_kind(kind);
            let ab = sealed(&mut a.send, 7);
            let ba = sealed(&mut b.send, 7);
            // same cell, same counter, other direction: other key, so other bytes
            assert_ne!(ab, ba, "{kind:?}");
            // a frame reflected back to its sender does not open
            assert_eq!(a.recv.open(&ab), Err(LinkError::BadFrame), "{kind:?}");
            // one direction's traffic does not move the other's counter
            let more: Vec<_> = (0..3).map(|i| sealed(&mut a.send, i)).collect();
            assert_eq!(crate::cell::circ_id(&a.recv.open(&ba).unwrap()), 7);
            b.recv.open(&ab).unwrap();
            for (i, f) in more.iter().enumerate() {
                assert_eq!(crate::cell::circ_id(&b.recv.open(f).unwrap()), i as u32);
            }
        }
    }

    #[test]
    fn counter_never_wraps() {
        for kind in all_kinds() {
            let (mut a, mut b) = pair_kind(kind);
            a.send.counter = RESERVED_NONCE - 1;
            b.recv.counter = RESERVED_NONCE - 1;
            let last = sealed(&mut a.send, 5);
            assert_eq!(crate::cell::circ_id(&b.recv.open(&last).unwrap()), 5);
            let mut out = vec![1, 2, 3];
            let cell = new_cell(6, cmd::PADDING);
            assert_eq!(
                a.send.try_seal_into(&cell, &mut out),
                Err(LinkError::CounterExhausted),
                "{kind:?}"
            );
            a.send.seal_into(&cell, &mut out);
            assert_eq!(out, [1, 2, 3], "nothing appended once exhausted");
            assert_eq!(a.send.counter, RESERVED_NONCE);
            assert_eq!(b.recv.open(&last), Err(LinkError::CounterExhausted));
        }
    }

    /// The frame format of docs/PROTOCOL.md, checked against RustCrypto's independent AES-GCM
    /// and ChaCha20-Poly1305 implementations.
    #[test]
    fn frames_match_the_documented_format() {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let split = ([0x11u8; 32], [0x22u8; 32]);
        let derive = |salt: &[u8], info: &[u8]| {
            let mut ikm = [0u8; 64];
            ikm[..32].copy_from_slice(&split.0);
            ikm[32..].copy_from_slice(&split.1);
            let mut k = [0u8; 32];
            hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &ikm)
                .expand(info, &mut k)
                .unwrap();
            k
        };
        let cell = new_cell(0x0102_0304, cmd::PADDING);
        for (aead, salt) in [
            (FrameAead::Aes256Gcm, &b"warren-link-aes256gcm-v1"[..]),
            (
                FrameAead::ChaCha20Poly1305,
                &b"warren-link-chacha20poly1305-v1"[..],
            ),
        ] {
            for (initiator, info) in [(true, b"i2r"), (false, b"r2i")] {
                let key = derive(salt, info);
                let mut lc = LinkCipher::from_split_with(aead, &split, initiator);
                lc.send.counter = 0x0a0b_0c0d_0e0f_1011;
                let got = sealed(&mut lc.send, 0x0102_0304);
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&0x0a0b_0c0d_0e0f_1011u64.to_be_bytes());
                let mut want = cell.clone();
                let tag = match aead {
                    FrameAead::Aes256Gcm => aes_gcm::Aes256Gcm::new_from_slice(&key)
                        .unwrap()
                        .encrypt_in_place_detached(&nonce.into(), b"", &mut want)
                        .unwrap(),
                    _ => chacha20poly1305::ChaCha20Poly1305::new_from_slice(&key)
                        .unwrap()
                        .encrypt_in_place_detached(&nonce.into(), b"", &mut want)
                        .unwrap(),
                };
                want.extend_from_slice(&tag);
                assert!(got == want, "{aead:?} initiator={initiator}");
            }
        }
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

//! Onion layers for relay cells.
//!
//! Each hop has, per direction, a layer key (a BLAKE3 keyed-XOF keystream by default; AES-128-CTR
//! and ChaCha20 are the measured alternatives) and a MAC key. The IV/nonce of a layer is that direction's cell sequence number at
//! that hop, so every hop encrypts or decrypts the whole fixed-size relay body (same size on every
//! link; no position signal). The originator writes `recognized = 0` and a 16-byte BLAKE3-keyed MAC
//! over `body[20..] || seq` addressed to the
//! destination hop. A hop that peels its layer and sees `recognized == 0` with a valid MAC handles
//! the cell; otherwise it forwards it. The last hop tears the circuit down on an unrecognised cell:
//! tampered (MAC fails) or replayed/reordered (the sequence number moved on, so keystream and MAC
//! differ).

use aes::Aes128;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::cell::{RELAY_COVERED_OFF, RELAY_MAC_OFF};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// Which stream cipher forms the onion layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LayerCipher {
    Aes128Ctr,
    ChaCha20,
    /// Keystream = BLAKE3 keyed XOF(key, seq): a PRF in counter mode.
    Blake3Xof,
}

/// The cipher used by circuits (chosen by measurement, docs/PROTOCOL.md).
pub const LAYER_CIPHER: LayerCipher = LayerCipher::Blake3Xof;

/// One direction of one hop: layer key, MAC key, sequence number.
pub struct DirKeys {
    cipher: LayerCipher,
    key: [u8; 32],
    mac_key: [u8; 32],
    pub seq: u64,
}

impl Drop for DirKeys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.mac_key.zeroize();
    }
}

impl DirKeys {
    pub fn new(cipher: LayerCipher, key: [u8; 32], mac_key: [u8; 32]) -> DirKeys {
        DirKeys {
            cipher,
            key,
            mac_key,
            seq: 0,
        }
    }

    fn keystream(&self, seq: u64, body: &mut [u8]) {
        match self.cipher {
            LayerCipher::Aes128Ctr => {
                let mut iv = [0u8; 16];
                iv[..8].copy_from_slice(&seq.to_be_bytes());
                let mut c = Aes128Ctr::new(self.key[..16].into(), &iv.into());
                c.apply_keystream(body);
            }
            LayerCipher::ChaCha20 => {
                let mut n = [0u8; 12];
                n[4..].copy_from_slice(&seq.to_be_bytes());
                let mut c = ChaCha20::new(&self.key.into(), &n.into());
                c.apply_keystream(body);
            }
            LayerCipher::Blake3Xof => {
                let mut h = blake3::Hasher::new_keyed(&self.key);
                h.update(b"warren-layer");
                h.update(&seq.to_be_bytes());
                let mut xof = h.finalize_xof();
                let mut ks = [0u8; 4096];
                for chunk in body.chunks_mut(ks.len()) {
                    let k = &mut ks[..chunk.len()];
                    xof.fill(k);
                    xor_into(chunk, k);
                }
            }
        }
    }

    /// BLAKE3 keyed hash (a PRF) with the MAC key over `body[20..] || seq`,
    /// truncated to 16 bytes.
    fn mac(&self, seq: u64, body: &[u8]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(&body[RELAY_COVERED_OFF..]);
        h.update(&seq.to_be_bytes());
        let mut tag = [0u8; 16];
        h.finalize_xof().fill(&mut tag);
        tag
    }

    /// Adds (or removes: XOR) this layer and advances the sequence number.
    pub fn apply(&mut self, body: &mut [u8]) {
        self.keystream(self.seq, body);
        self.seq = self.seq.wrapping_add(1);
    }

    /// Originates a cell for this hop/direction: recognized = 0, MAC, then the layer. Returns
    /// the MAC (what an authenticated SENDME for this cell must echo, `stream::SendmeAuth`).
    pub fn seal(&mut self, body: &mut [u8]) -> [u8; 16] {
        body[..RELAY_MAC_OFF].fill(0);
        let tag = self.mac(self.seq, body);
        body[RELAY_MAC_OFF..RELAY_COVERED_OFF].copy_from_slice(&tag);
        self.apply(body);
        tag
    }

    /// Removes this layer; true if the cell is addressed here (recognized and MAC valid).
    pub fn open(&mut self, body: &mut [u8]) -> bool {
        let seq = self.seq;
        self.apply(body);
        if body[..RELAY_MAC_OFF] != [0, 0, 0, 0] {
            return false;
        }
        let tag = self.mac(seq, body);
        bool::from(tag.ct_eq(&body[RELAY_MAC_OFF..RELAY_COVERED_OFF]))
    }
}

/// XORs `ks` into `data` (8 bytes at a time; vectorised in optimised builds).
pub(crate) fn xor_into(data: &mut [u8], ks: &[u8]) {
    let mut d = data.chunks_exact_mut(8);
    let mut k = ks.chunks_exact(8);
    for (a, b) in (&mut d).zip(&mut k) {
        let mut x = [0u8; 8];
        x.copy_from_slice(a);
        let mut y = [0u8; 8];
        y.copy_from_slice(b);
        a.copy_from_slice(&(u64::from_ne_bytes(x) ^ u64::from_ne_bytes(y)).to_ne_bytes());
    }
    for (a, b) in d.into_remainder().iter_mut().zip(k.remainder()) {
        *a ^= b;
    }
}

/// Keys of one hop derived from the hop handshake, from the client's point of view:
/// `fwd` = client→hop, `bwd` = hop→client.
pub struct HopKeys {
    pub fwd: DirKeys,
    pub bwd: DirKeys,
}

impl HopKeys {
    /// HKDF-SHA256(salt "warren-hop-keys-v1", ikm = k_i2r || k_r2i) → fwd key, bwd key, fwd mac, bwd mac.
    pub fn derive(cipher: LayerCipher, k_i2r: &[u8; 32], k_r2i: &[u8; 32]) -> HopKeys {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(k_i2r);
        ikm[32..].copy_from_slice(k_r2i);
        let hk = Hkdf::<Sha256>::new(Some(b"warren-hop-keys-v1"), &ikm);
        ikm.zeroize();
        let mut okm = [0u8; 128];
        // ok: 128 bytes is far below HKDF-SHA256's 8160-byte limit.
        hk.expand(b"layers+macs", &mut okm).expect("hkdf length");
        let part = |i: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&okm[i * 32..i * 32 + 32]);
            k
        };
        let keys = HopKeys {
            fwd: DirKeys::new(cipher, part(0), part(2)),
            bwd: DirKeys::new(cipher, part(1), part(3)),
        };
        okm.zeroize();
        keys
    }

    /// The same hop seen from the other end: what this side seals forward, the other opens as
    /// backward and vice versa. The two ends of a rendezvous each put the other end's keys, so
    /// swapped, as a virtual last hop on their circuits.
    pub fn swapped(self) -> HopKeys {
        let HopKeys { fwd, bwd } = self;
        HopKeys { fwd: bwd, bwd: fwd }
    }

    /// A value both ends of this hop know and nobody else does (a hash of its MAC keys): the
    /// binding an ESTABLISH_INTRO signature covers, so it cannot be replayed on another circuit.
    pub fn binding(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("warren 2026 intro binding v1");
        h.update(&self.fwd.mac_key);
        h.update(&self.bwd.mac_key);
        *h.finalize().as_bytes()
    }
}

/// Client side: encrypts a relay body for hop `dest` (0-based) through hops `0..dest`; returns
/// the MAC hop `dest` will verify.
pub fn client_seal(hops: &mut [HopKeys], dest: usize, body: &mut [u8]) -> [u8; 16] {
    let tag = hops[dest].fwd.seal(body);
    for h in hops[..dest].iter_mut().rev() {
        h.fwd.apply(body);
    }
    tag
}

/// The MAC of a relay body that was opened (recognised) by its destination: what an
/// authenticated SENDME for it echoes.
pub fn body_tag(body: &[u8]) -> [u8; 16] {
    let mut t = [0u8; 16];
    t.copy_from_slice(&body[RELAY_MAC_OFF..RELAY_COVERED_OFF]);
    t
}

/// Client side: peels backward layers; returns the index of the hop that originated the cell.
pub fn client_open(hops: &mut [HopKeys], body: &mut [u8]) -> Option<usize> {
    for (i, h) in hops.iter_mut().enumerate() {
        if h.bwd.open(body) {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::RELAY_BODY;

    fn pair(c: LayerCipher, n: usize) -> (Vec<HopKeys>, Vec<HopKeys>) {
        let mut client = Vec::new();
        let mut relays = Vec::new();
        for i in 0..n {
            let a = [i as u8 + 1; 32];
            let b = [i as u8 + 100; 32];
            client.push(HopKeys::derive(c, &a, &b));
            relays.push(HopKeys::derive(c, &a, &b));
        }
        (client, relays)
    }

    fn body_with(msg: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; RELAY_BODY];
        b[27..27 + msg.len()].copy_from_slice(msg);
        b
    }

    /// Relay side forward processing: which hop recognises the cell.
    fn forward(relays: &mut [HopKeys], body: &mut [u8]) -> Option<usize> {
        relays
            .iter_mut()
            .enumerate()
            .find_map(|(i, r)| r.fwd.open(body).then_some(i))
    }

    #[test]
    fn three_hops_both_directions_both_ciphers() {
        for c in [
            LayerCipher::Aes128Ctr,
            LayerCipher::ChaCha20,
            LayerCipher::Blake3Xof,
        ] {
            let (mut cl, mut rl) = pair(c, 3);
            for round in 0..5u8 {
                for dest in 0..3 {
                    let mut b = body_with(&[round, dest as u8]);
                    client_seal(&mut cl, dest, &mut b);
                    assert_eq!(forward(&mut rl, &mut b), Some(dest));
                    assert_eq!(&b[27..29], &[round, dest as u8]);
                    // backward from hop `dest`
                    let mut b = body_with(&[9, round]);
                    rl[dest].bwd.seal(&mut b);
                    for r in rl[..dest].iter_mut().rev() {
                        r.bwd.apply(&mut b);
                    }
                    assert_eq!(client_open(&mut cl, &mut b), Some(dest));
                    assert_eq!(&b[27..29], &[9, round]);
                }
            }
        }
    }

    #[test]
    fn tampered_cell_not_recognised_anywhere() {
        let (mut cl, mut rl) = pair(LAYER_CIPHER, 3);
        let mut b = body_with(b"data");
        client_seal(&mut cl, 2, &mut b);
        b[100] ^= 0x01;
        assert_eq!(forward(&mut rl, &mut b), None);
    }

    #[test]
    fn replayed_cell_not_recognised() {
        let (mut cl, mut rl) = pair(LAYER_CIPHER, 2);
        let mut b = body_with(b"once");
        client_seal(&mut cl, 1, &mut b);
        let copy = b.clone();
        assert_eq!(forward(&mut rl, &mut b), Some(1));
        let mut replay = copy;
        assert_eq!(forward(&mut rl, &mut replay), None);
    }

    #[test]
    fn intermediate_hop_sees_pseudorandom_body() {
        let (mut cl, mut rl) = pair(LAYER_CIPHER, 3);
        let mut b = body_with(b"x");
        client_seal(&mut cl, 2, &mut b);
        assert!(!rl[0].fwd.open(&mut b));
        // after one layer the plaintext padding is still hidden
        assert!(b[27..].iter().filter(|&&x| x == 0).count() < RELAY_BODY / 64);
    }
}

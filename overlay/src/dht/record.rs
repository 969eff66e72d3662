//! Signed, expiring DHT records, and the blinded keys and encryption of swarm records.
//!
//! ```text
//! record = key:[32] kind:u8 seq:u64 expires:u64 publisher:[32] len:u16 value:[len] sig:[64]
//! sig    = Ed25519(publisher, "warren-dht-record-v1" || key || kind || seq || expires || len || value)
//! ```
//! `expires` is in Unix seconds. A publisher replaces its own record under a key by publishing a
//! higher `seq`. Several publishers may hold records under one key (several seeders of a torrent).
//!
//! Swarm records: for a torrent with infohash `ih` and the period `p = unix_time / PERIOD_SECS`,
//! ```text
//! location = BLAKE2b-256("warren-swarm-location-v1" || ih || p:u64)
//! enc_key  = BLAKE2b-256("warren-swarm-content-v1"  || ih || p:u64)
//! value    = nonce:[12] || ChaCha20-Poly1305(enc_key, nonce, aad = location || publisher, entry)
//! entry    = version:u8(=1) service_key:[32] n:u8 (intro_node:[32] intro_auth:[32])*n
//! ```
//! The publisher key of a swarm record is a fresh Ed25519 key per (seeder, infohash, period), so
//! records of one seeder in different periods or for different torrents cannot be linked by it.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;

use super::id::Key;
use super::message::{DhtError, Reader};

/// Largest record value.
pub const MAX_VALUE: usize = 2048;
/// Length of a swarm period.
pub const PERIOD_SECS: u64 = 6 * 3600;
/// Longest lifetime a node accepts for a record (a little more than two periods).
pub const MAX_TTL_SECS: u64 = 2 * PERIOD_SECS + 600;
/// Most introduction points in one swarm entry.
pub const MAX_INTRO_POINTS: usize = 8;

const SIG_CONTEXT: &[u8] = b"warren-dht-record-v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A node's signed descriptor, stored under its node id.
    Descriptor = 1,
    /// A swarm record under a blinded key.
    Swarm = 2,
}

impl RecordKind {
    fn from_u8(b: u8) -> Result<Self, DhtError> {
        match b {
            1 => Ok(RecordKind::Descriptor),
            2 => Ok(RecordKind::Swarm),
            k => Err(DhtError::RecordKind(k)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub kind: RecordKind,
    pub seq: u64,
    pub expires: u64,
    pub publisher: [u8; 32],
    pub value: Vec<u8>,
    pub signature: [u8; 64],
}

fn signed_bytes(key: &Key, kind: RecordKind, seq: u64, expires: u64, value: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIG_CONTEXT.len() + 32 + 1 + 16 + 2 + value.len());
    m.extend_from_slice(SIG_CONTEXT);
    m.extend_from_slice(&key.0);
    m.push(kind as u8);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&expires.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(value);
    m
}

impl Record {
    /// Signs a record. `value` longer than [`MAX_VALUE`] is the caller's bug and is truncated.
    pub fn sign(
        sk: &SigningKey,
        key: Key,
        kind: RecordKind,
        seq: u64,
        expires: u64,
        mut value: Vec<u8>,
    ) -> Record {
        value.truncate(MAX_VALUE);
        let sig = sk.sign(&signed_bytes(&key, kind, seq, expires, &value));
        Record {
            key,
            kind,
            seq,
            expires,
            publisher: sk.verifying_key().to_bytes(),
            value,
            signature: sig.to_bytes(),
        }
    }

    /// Checks the signature and the lifetime against `now` (Unix seconds).
    pub fn verify(&self, now: u64) -> Result<(), DhtError> {
        if self.expires <= now {
            return Err(DhtError::Expired);
        }
        if self.expires > now.saturating_add(MAX_TTL_SECS) {
            return Err(DhtError::TooFarInFuture);
        }
        let vk = VerifyingKey::from_bytes(&self.publisher).map_err(|_| DhtError::BadPublicKey)?;
        let sig = Signature::from_bytes(&self.signature);
        vk.verify(
            &signed_bytes(&self.key, self.kind, self.seq, self.expires, &self.value),
            &sig,
        )
        .map_err(|_| DhtError::BadSignature)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.0);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        out.extend_from_slice(&self.publisher);
        out.extend_from_slice(&(self.value.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.value);
        out.extend_from_slice(&self.signature);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Record, DhtError> {
        let key = Key(r.array32("record key")?);
        let kind = RecordKind::from_u8(r.u8("record kind")?)?;
        let seq = r.u64("record seq")?;
        let expires = r.u64("record expiry")?;
        let publisher = r.array32("record publisher")?;
        let len = r.u16("record value length")? as usize;
        if len > MAX_VALUE {
            return Err(DhtError::Limit {
                what: "record value",
                got: len,
                max: MAX_VALUE,
            });
        }
        let value = r.take(len, "record value")?.to_vec();
        let sig = r.take(64, "record signature")?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig);
        Ok(Record {
            key,
            kind,
            seq,
            expires,
            publisher,
            value,
            signature,
        })
    }
}

/// The blinded location and the content key of a torrent's swarm records in one period.
#[derive(Clone)]
pub struct SwarmKeys {
    pub location: Key,
    enc_key: [u8; 32],
    pub period: u64,
}

fn blake(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

impl SwarmKeys {
    pub fn period_of(unix_secs: u64) -> u64 {
        unix_secs / PERIOD_SECS
    }

    pub fn derive(infohash: &[u8; 20], period: u64) -> SwarmKeys {
        let p = period.to_be_bytes();
        SwarmKeys {
            location: Key(blake(&[b"warren-swarm-location-v1", infohash, &p])),
            enc_key: blake(&[b"warren-swarm-content-v1", infohash, &p]),
            period,
        }
    }

    /// The keys a downloader should look up at `now`: this period's, and the previous one's near a
    /// period boundary (seeders republish at the start of each period).
    pub fn lookup_set(infohash: &[u8; 20], now: u64) -> Vec<SwarmKeys> {
        let p = Self::period_of(now);
        let mut v = vec![Self::derive(infohash, p)];
        if p > 0 && now % PERIOD_SECS < 600 {
            v.push(Self::derive(infohash, p - 1));
        }
        v
    }

    /// Encrypts `entry` and signs it into a record that expires at the end of the next period.
    pub fn seal(&self, sk: &SigningKey, seq: u64, entry: &SwarmEntry) -> Record {
        let publisher = sk.verifying_key().to_bytes();
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut aad = Vec::with_capacity(64);
        aad.extend_from_slice(&self.location.0);
        aad.extend_from_slice(&publisher);
        let cipher = ChaCha20Poly1305::new(&self.enc_key.into());
        let pt = entry.encode();
        // ok: encryption with a valid key and a bounded plaintext cannot fail
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &pt,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut value = nonce.to_vec();
        value.extend_from_slice(&ct);
        let expires = (self.period + 2) * PERIOD_SECS;
        Record::sign(sk, self.location, RecordKind::Swarm, seq, expires, value)
    }

    /// Decrypts a swarm record found under this location.
    pub fn open(&self, rec: &Record) -> Result<SwarmEntry, DhtError> {
        if rec.kind != RecordKind::Swarm || rec.key != self.location || rec.value.len() < 12 {
            return Err(DhtError::Decrypt);
        }
        let (nonce, ct) = rec.value.split_at(12);
        let mut aad = Vec::with_capacity(64);
        aad.extend_from_slice(&self.location.0);
        aad.extend_from_slice(&rec.publisher);
        let cipher = ChaCha20Poly1305::new(&self.enc_key.into());
        let pt = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| DhtError::Decrypt)?;
        SwarmEntry::decode(&pt)
    }
}

/// How to reach one hidden seeder: the static key of its service (for the end-to-end handshake) and
/// its introduction points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmEntry {
    pub service_key: [u8; 32],
    pub intro_points: Vec<IntroPoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntroPoint {
    /// Node id of the introduction point.
    pub node: Key,
    /// The key the seeder registered at that point; INTRODUCE cells name it.
    pub auth_key: [u8; 32],
}

impl SwarmEntry {
    pub fn encode(&self) -> Vec<u8> {
        let ips = &self.intro_points[..self.intro_points.len().min(MAX_INTRO_POINTS)];
        let mut out = Vec::with_capacity(34 + 64 * ips.len());
        out.push(1);
        out.extend_from_slice(&self.service_key);
        out.push(ips.len() as u8);
        for ip in ips {
            out.extend_from_slice(&ip.node.0);
            out.extend_from_slice(&ip.auth_key);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<SwarmEntry, DhtError> {
        let mut r = Reader::new(b);
        let v = r.u8("swarm entry version")?;
        if v != 1 {
            return Err(DhtError::Version(v));
        }
        let service_key = r.array32("service key")?;
        let n = r.u8("intro point count")? as usize;
        if n > MAX_INTRO_POINTS {
            return Err(DhtError::Limit {
                what: "intro points",
                got: n,
                max: MAX_INTRO_POINTS,
            });
        }
        let mut intro_points = Vec::with_capacity(n);
        for _ in 0..n {
            intro_points.push(IntroPoint {
                node: Key(r.array32("intro node")?),
                auth_key: r.array32("intro auth key")?,
            });
        }
        r.finish()?;
        Ok(SwarmEntry {
            service_key,
            intro_points,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> SwarmEntry {
        SwarmEntry {
            service_key: [4; 32],
            intro_points: vec![
                IntroPoint {
                    node: Key([1; 32]),
                    auth_key: [2; 32],
                },
                IntroPoint {
                    node: Key([3; 32]),
                    auth_key: [5; 32],
                },
            ],
        }
    }

    #[test]
    fn signed_record_verifies_and_tampering_is_caught() {
        let sk = SigningKey::from_bytes(&[1; 32]);
        let r = Record::sign(
            &sk,
            Key([2; 32]),
            RecordKind::Descriptor,
            1,
            5_000,
            b"hello".to_vec(),
        );
        r.verify(1_000).unwrap();
        let mut t = r.clone();
        t.value[0] ^= 1;
        assert_eq!(t.verify(1_000), Err(DhtError::BadSignature));
        let mut t = r.clone();
        t.seq += 1;
        assert_eq!(t.verify(1_000), Err(DhtError::BadSignature));
        let mut t = r.clone();
        t.key.0[0] ^= 1;
        assert_eq!(t.verify(1_000), Err(DhtError::BadSignature));
        assert_eq!(r.verify(5_000), Err(DhtError::Expired));
        let far = Record::sign(
            &sk,
            Key([2; 32]),
            RecordKind::Descriptor,
            1,
            10_000_000,
            vec![],
        );
        assert_eq!(far.verify(1_000), Err(DhtError::TooFarInFuture));
    }

    #[test]
    fn swarm_record_location_hides_the_infohash_and_content() {
        let ih = [0xab; 20];
        let now = 1_800_000_000;
        let keys = SwarmKeys::derive(&ih, SwarmKeys::period_of(now));
        let sk = SigningKey::from_bytes(&[7; 32]);
        let rec = keys.seal(&sk, 1, &entry());
        rec.verify(now).unwrap();
        // neither the infohash nor the intro points appear in what the storing node holds
        let mut stored = Vec::new();
        rec.encode(&mut stored);
        assert!(!stored.windows(20).any(|w| w == ih));
        assert!(!stored.windows(32).any(|w| w == [1; 32] || w == [4; 32]));
        assert_eq!(keys.open(&rec).unwrap(), entry());
        // a different infohash cannot open it, and the location differs
        let other = SwarmKeys::derive(&[0xac; 20], keys.period);
        assert_ne!(other.location, keys.location);
        assert_eq!(other.open(&rec), Err(DhtError::Decrypt));
        // another period gives an unlinkable location
        assert_ne!(
            SwarmKeys::derive(&ih, keys.period + 1).location,
            keys.location
        );
    }

    #[test]
    fn swarm_record_content_bound_to_publisher() {
        let ih = [1; 20];
        let keys = SwarmKeys::derive(&ih, 100);
        let rec = keys.seal(&SigningKey::from_bytes(&[7; 32]), 1, &entry());
        // someone re-signing the same ciphertext under their own key cannot make it decrypt
        let thief = SigningKey::from_bytes(&[8; 32]);
        let stolen = Record::sign(
            &thief,
            rec.key,
            rec.kind,
            rec.seq,
            rec.expires,
            rec.value.clone(),
        );
        assert_eq!(keys.open(&stolen), Err(DhtError::Decrypt));
    }

    #[test]
    fn lookup_set_spans_the_period_boundary() {
        let ih = [9; 20];
        assert_eq!(SwarmKeys::lookup_set(&ih, 10 * PERIOD_SECS + 5).len(), 2);
        assert_eq!(SwarmKeys::lookup_set(&ih, 10 * PERIOD_SECS + 5000).len(), 1);
    }

    #[test]
    fn swarm_entry_rejects_garbage() {
        assert!(SwarmEntry::decode(&[]).is_err());
        let mut b = entry().encode();
        b.push(0);
        assert_eq!(SwarmEntry::decode(&b), Err(DhtError::Trailing(1)));
        let mut b = vec![1];
        b.extend_from_slice(&[0; 32]);
        b.push(200);
        assert!(matches!(
            SwarmEntry::decode(&b),
            Err(DhtError::Limit { .. })
        ));
    }
}

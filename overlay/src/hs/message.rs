//! Hidden-service messages, carried as relay payloads addressed to the hop that handles them.
//!
//! ```text
//! msg = kind:u8 body
//! ESTABLISH_INTRO      1  auth_key:[32] sig:[64]      sig = Ed25519(auth_key, "warren-intro-v1" || binding:[32])
//! INTRO_ESTABLISHED    2  (empty)
//! INTRODUCE1           3  auth_key:[32] len:u16 handshake:[len]
//! INTRODUCE2           4  len:u16 handshake:[len]
//! INTRODUCE_ACK        5  status:u8 (0 ok, 1 unknown auth key, 2 malformed)
//! ESTABLISH_RENDEZVOUS 6  cookie:[20]
//! RENDEZVOUS_ESTABLISHED 7 (empty)
//! RENDEZVOUS1          8  cookie:[20] len:u16 handshake:[len]
//! RENDEZVOUS2          9  len:u16 handshake:[len]
//! ```
//! `binding` is a value both ends of the intro circuit know and nobody else does (the circuit's
//! handshake hash at that hop), so an ESTABLISH_INTRO cannot be replayed on another circuit.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

pub const COOKIE_LEN: usize = 20;
/// Largest handshake blob carried (Noise NK message 1 with its payload).
pub const MAX_HANDSHAKE: usize = 4096;

const INTRO_CONTEXT: &[u8] = b"warren-intro-v1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HsMessage {
    EstablishIntro {
        auth_key: [u8; 32],
        sig: [u8; 64],
    },
    IntroEstablished,
    Introduce1 {
        auth_key: [u8; 32],
        handshake: Vec<u8>,
    },
    Introduce2 {
        handshake: Vec<u8>,
    },
    IntroduceAck {
        status: u8,
    },
    EstablishRendezvous {
        cookie: [u8; COOKIE_LEN],
    },
    RendezvousEstablished,
    Rendezvous1 {
        cookie: [u8; COOKIE_LEN],
        handshake: Vec<u8>,
    },
    Rendezvous2 {
        handshake: Vec<u8>,
    },
}

pub mod ack {
    pub const OK: u8 = 0;
    pub const UNKNOWN_SERVICE: u8 = 1;
    pub const MALFORMED: u8 = 2;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HsError {
    #[error("hidden-service message truncated ({0})")]
    Truncated(&'static str),
    #[error("unknown hidden-service message kind {0}")]
    Kind(u8),
    #[error("hidden-service message has {0} trailing bytes")]
    Trailing(usize),
    #[error("handshake blob of {0} bytes is over the limit of {MAX_HANDSHAKE}")]
    TooLarge(usize),
    #[error("ESTABLISH_INTRO signature does not verify for this circuit")]
    BadIntroSignature,
    #[error("end-to-end handshake failed: {0}")]
    Handshake(String),
    #[error("introduction payload malformed: {0}")]
    Payload(&'static str),
    #[error("end-to-end decryption failed (tampered or out of order)")]
    Decrypt,
}

struct R<'a>(&'a [u8], usize);

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HsError> {
        if self.0.len() - self.1 < n {
            return Err(HsError::Truncated(what));
        }
        let s = &self.0[self.1..self.1 + n];
        self.1 += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], HsError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn blob(&mut self, what: &'static str) -> Result<Vec<u8>, HsError> {
        let l = self.take(2, what)?;
        let len = u16::from_be_bytes([l[0], l[1]]) as usize;
        if len > MAX_HANDSHAKE {
            return Err(HsError::TooLarge(len));
        }
        Ok(self.take(len, what)?.to_vec())
    }
    fn finish(&self) -> Result<(), HsError> {
        match self.0.len() - self.1 {
            0 => Ok(()),
            n => Err(HsError::Trailing(n)),
        }
    }
}

fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(MAX_HANDSHAKE)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

impl HsMessage {
    /// Signs an ESTABLISH_INTRO for the circuit identified by `binding`.
    pub fn establish_intro(key: &SigningKey, binding: &[u8; 32]) -> HsMessage {
        let mut m = INTRO_CONTEXT.to_vec();
        m.extend_from_slice(binding);
        HsMessage::EstablishIntro {
            auth_key: key.verifying_key().to_bytes(),
            sig: key.sign(&m).to_bytes(),
        }
    }

    /// Verifies an ESTABLISH_INTRO received on the circuit identified by `binding`.
    pub fn verify_intro(
        auth_key: &[u8; 32],
        sig: &[u8; 64],
        binding: &[u8; 32],
    ) -> Result<(), HsError> {
        let vk = VerifyingKey::from_bytes(auth_key).map_err(|_| HsError::BadIntroSignature)?;
        let mut m = INTRO_CONTEXT.to_vec();
        m.extend_from_slice(binding);
        vk.verify(&m, &Signature::from_bytes(sig))
            .map_err(|_| HsError::BadIntroSignature)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(64);
        match self {
            HsMessage::EstablishIntro { auth_key, sig } => {
                o.push(1);
                o.extend_from_slice(auth_key);
                o.extend_from_slice(sig);
            }
            HsMessage::IntroEstablished => o.push(2),
            HsMessage::Introduce1 {
                auth_key,
                handshake,
            } => {
                o.push(3);
                o.extend_from_slice(auth_key);
                put_blob(&mut o, handshake);
            }
            HsMessage::Introduce2 { handshake } => {
                o.push(4);
                put_blob(&mut o, handshake);
            }
            HsMessage::IntroduceAck { status } => {
                o.push(5);
                o.push(*status);
            }
            HsMessage::EstablishRendezvous { cookie } => {
                o.push(6);
                o.extend_from_slice(cookie);
            }
            HsMessage::RendezvousEstablished => o.push(7),
            HsMessage::Rendezvous1 { cookie, handshake } => {
                o.push(8);
                o.extend_from_slice(cookie);
                put_blob(&mut o, handshake);
            }
            HsMessage::Rendezvous2 { handshake } => {
                o.push(9);
                put_blob(&mut o, handshake);
            }
        }
        o
    }

    pub fn decode(b: &[u8]) -> Result<HsMessage, HsError> {
        let mut r = R(b, 0);
        let kind = r.take(1, "kind")?[0];
        let m = match kind {
            1 => HsMessage::EstablishIntro {
                auth_key: r.arr("auth key")?,
                sig: r.arr("signature")?,
            },
            2 => HsMessage::IntroEstablished,
            3 => HsMessage::Introduce1 {
                auth_key: r.arr("auth key")?,
                handshake: r.blob("handshake")?,
            },
            4 => HsMessage::Introduce2 {
                handshake: r.blob("handshake")?,
            },
            5 => HsMessage::IntroduceAck {
                status: r.take(1, "status")?[0],
            },
            6 => HsMessage::EstablishRendezvous {
                cookie: r.arr("cookie")?,
            },
            7 => HsMessage::RendezvousEstablished,
            8 => HsMessage::Rendezvous1 {
                cookie: r.arr("cookie")?,
                handshake: r.blob("handshake")?,
            },
            9 => HsMessage::Rendezvous2 {
                handshake: r.blob("handshake")?,
            },
            k => return Err(HsError::Kind(k)),
        };
        r.finish()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let sk = SigningKey::from_bytes(&[3; 32]);
        let all = vec![
            HsMessage::establish_intro(&sk, &[7; 32]),
            HsMessage::IntroEstablished,
            HsMessage::Introduce1 {
                auth_key: [1; 32],
                handshake: vec![9; 100],
            },
            HsMessage::Introduce2 {
                handshake: vec![8; 10],
            },
            HsMessage::IntroduceAck {
                status: ack::UNKNOWN_SERVICE,
            },
            HsMessage::EstablishRendezvous { cookie: [4; 20] },
            HsMessage::RendezvousEstablished,
            HsMessage::Rendezvous1 {
                cookie: [5; 20],
                handshake: vec![1, 2, 3],
            },
            HsMessage::Rendezvous2 { handshake: vec![] },
        ];
        for m in all {
            let b = m.encode();
            assert_eq!(HsMessage::decode(&b).unwrap(), m);
            for cut in 0..b.len() {
                assert!(HsMessage::decode(&b[..cut]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(HsMessage::decode(&long), Err(HsError::Trailing(1)));
        }
        assert_eq!(HsMessage::decode(&[77]), Err(HsError::Kind(77)));
        let mut big = vec![4];
        big.extend_from_slice(&5000u16.to_be_bytes());
        assert_eq!(HsMessage::decode(&big), Err(HsError::TooLarge(5000)));
    }

    #[test]
    fn intro_signature_is_bound_to_the_circuit() {
        let sk = SigningKey::from_bytes(&[3; 32]);
        let HsMessage::EstablishIntro { auth_key, sig } = HsMessage::establish_intro(&sk, &[7; 32])
        else {
            unreachable!()
        };
        HsMessage::verify_intro(&auth_key, &sig, &[7; 32]).unwrap();
        assert_eq!(
            HsMessage::verify_intro(&auth_key, &sig, &[8; 32]),
            Err(HsError::BadIntroSignature)
        );
    }
}

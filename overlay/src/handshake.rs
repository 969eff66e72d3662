//! Noise handshakes (sans-IO): `Noise_IK` for links, `Noise_NK` for each hop of a circuit.
//!
//! For links, the raw split keys are fed through HKDF into the per-direction frame AEAD keys
//! (`link::LINK_AEAD`); for hops, into the onion-layer and MAC keys, see docs/PROTOCOL.md.

use snow::{Builder, HandshakeState};

use crate::relay_crypto::{HopKeys, LAYER_CIPHER};

/// Link pattern (its AEAD seals only the two handshake messages; cells use `link::LINK_AEAD`).
pub const LINK_PATTERN: &str = "Noise_IK_25519_AESGCM_BLAKE2s";
pub const HOP_PATTERN: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
pub const LINK_PROLOGUE: &[u8] = b"warren-link-v1";
pub const HOP_PROLOGUE: &[u8] = b"warren-hop-v1";
/// Handshake type carried in CREATE / EXTEND.
pub const HTYPE_NK: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error("handshake message too long ({0} bytes)")]
    TooLong(usize),
    #[error("peer static key is not the expected one")]
    WrongPeer,
    #[error("unsupported handshake type {0}")]
    Htype(u16),
}

fn params(p: &str) -> snow::params::NoiseParams {
    // ok: the pattern strings are constants known to parse.
    p.parse().expect("valid noise pattern")
}

/// Raw split (initiator→responder, responder→initiator).
pub type Split = ([u8; 32], [u8; 32]);

/// Client side of the hop handshake (one message each way).
pub struct HopInitiator {
    hs: HandshakeState,
}

impl HopInitiator {
    /// Starts a handshake with a hop whose static key came from a verified descriptor.
    pub fn start(hop_static: &[u8; 32]) -> Result<(HopInitiator, Vec<u8>), HandshakeError> {
        let mut hs = Builder::new(params(HOP_PATTERN))
            .remote_public_key(hop_static)
            .prologue(HOP_PROLOGUE)
            .build_initiator()?;
        let mut msg = vec![0u8; 128];
        let n = hs.write_message(&[], &mut msg)?;
        msg.truncate(n);
        Ok((HopInitiator { hs }, msg))
    }

    pub fn finish(mut self, reply: &[u8]) -> Result<HopKeys, HandshakeError> {
        let mut buf = vec![0u8; reply.len().max(64)];
        self.hs.read_message(reply, &mut buf)?;
        if !self.hs.is_handshake_finished() {
            return Err(HandshakeError::Noise(snow::Error::State(
                snow::error::StateProblem::HandshakeNotFinished,
            )));
        }
        let (a, b) = self.hs.dangerously_get_raw_split();
        Ok(HopKeys::derive(LAYER_CIPHER, &a, &b))
    }
}

/// Relay side of the hop handshake: returns the reply and the keys (client point of view: the relay
/// opens `fwd` and seals `bwd`).
pub fn hop_respond(
    local_static: &[u8; 32],
    msg: &[u8],
) -> Result<(Vec<u8>, HopKeys), HandshakeError> {
    if msg.len() > 1024 {
        return Err(HandshakeError::TooLong(msg.len()));
    }
    let mut hs = Builder::new(params(HOP_PATTERN))
        .local_private_key(local_static)
        .prologue(HOP_PROLOGUE)
        .build_responder()?;
    let mut buf = vec![0u8; 1024];
    hs.read_message(msg, &mut buf)?;
    let mut reply = vec![0u8; 128];
    let n = hs.write_message(&[], &mut reply)?;
    reply.truncate(n);
    let (a, b) = hs.dangerously_get_raw_split();
    Ok((reply, HopKeys::derive(LAYER_CIPHER, &a, &b)))
}

/// Link keys from a finished link handshake, per [`crate::link::LINK_AEAD`].
pub fn link_cipher(
    mut hs: HandshakeState,
    initiator: bool,
) -> Result<crate::link::LinkCipher, HandshakeError> {
    use crate::link::{LinkAead, LinkCipher, LINK_AEAD};
    Ok(match LINK_AEAD {
        LinkAead::NoiseTransport => LinkCipher::from_transport(hs.into_stateless_transport_mode()?),
        LinkAead::Split(aead) => {
            LinkCipher::from_split_with(aead, &hs.dangerously_get_raw_split(), initiator)
        }
    })
}

/// Link initiator (the dialer knows the listener's static key from its descriptor).
pub struct LinkInitiator {
    hs: HandshakeState,
}

impl LinkInitiator {
    pub fn start(
        local_static: &[u8; 32],
        remote_static: &[u8; 32],
    ) -> Result<(LinkInitiator, Vec<u8>), HandshakeError> {
        let mut hs = Builder::new(params(LINK_PATTERN))
            .local_private_key(local_static)
            .remote_public_key(remote_static)
            .prologue(LINK_PROLOGUE)
            .build_initiator()?;
        let mut msg = vec![0u8; 256];
        let n = hs.write_message(&[], &mut msg)?;
        msg.truncate(n);
        Ok((LinkInitiator { hs }, msg))
    }

    /// Returns the finished handshake state (turn it into link keys with [`link_cipher`]).
    pub fn finish(mut self, reply: &[u8]) -> Result<HandshakeState, HandshakeError> {
        let mut buf = vec![0u8; reply.len().max(64)];
        self.hs.read_message(reply, &mut buf)?;
        if !self.hs.is_handshake_finished() {
            return Err(HandshakeError::Noise(snow::Error::State(
                snow::error::StateProblem::HandshakeNotFinished,
            )));
        }
        Ok(self.hs)
    }
}

/// Link responder: returns (reply, transport, initiator's static key).
pub fn link_respond(
    local_static: &[u8; 32],
    msg: &[u8],
) -> Result<(Vec<u8>, HandshakeState, [u8; 32]), HandshakeError> {
    if msg.len() > 1024 {
        return Err(HandshakeError::TooLong(msg.len()));
    }
    let mut hs = Builder::new(params(LINK_PATTERN))
        .local_private_key(local_static)
        .prologue(LINK_PROLOGUE)
        .build_responder()?;
    let mut buf = vec![0u8; 1024];
    hs.read_message(msg, &mut buf)?;
    let mut remote = [0u8; 32];
    match hs.get_remote_static() {
        Some(r) if r.len() == 32 => remote.copy_from_slice(r),
        _ => return Err(HandshakeError::WrongPeer),
    }
    let mut reply = vec![0u8; 256];
    let n = hs.write_message(&[], &mut reply)?;
    reply.truncate(n);
    Ok((reply, hs, remote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::RELAY_BODY;
    use crate::identity::Identity;

    #[test]
    fn hop_handshake_agrees() {
        let relay = Identity::generate();
        let (init, m1) = HopInitiator::start(&relay.x25519_public()).unwrap();
        let (m2, mut rk) = hop_respond(&relay.x25519_secret_bytes(), &m1).unwrap();
        let mut ck = init.finish(&m2).unwrap();
        let mut b = vec![0u8; RELAY_BODY];
        b[30] = 7;
        ck.fwd.seal(&mut b);
        assert!(rk.fwd.open(&mut b));
        assert_eq!(b[30], 7);
    }

    #[test]
    fn hop_handshake_wrong_key_fails() {
        let relay = Identity::generate();
        let other = Identity::generate();
        let (_init, m1) = HopInitiator::start(&relay.x25519_public()).unwrap();
        assert!(hop_respond(&other.x25519_secret_bytes(), &m1).is_err());
    }

    #[test]
    fn link_handshake_agrees_and_reveals_initiator() {
        let a = Identity::generate();
        let b = Identity::generate();
        let (init, m1) =
            LinkInitiator::start(&a.x25519_secret_bytes(), &b.x25519_public()).unwrap();
        let (m2, tr, remote) = link_respond(&b.x25519_secret_bytes(), &m1).unwrap();
        assert_eq!(remote, a.x25519_public());
        let ti = init
            .finish(&m2)
            .unwrap()
            .into_stateless_transport_mode()
            .unwrap();
        let tr = tr.into_stateless_transport_mode().unwrap();
        let mut m = vec![0u8; 64];
        let n = ti.write_message(0, b"hi", &mut m).unwrap();
        let mut o = vec![0u8; 64];
        let k = tr.read_message(0, &m[..n], &mut o).unwrap();
        assert_eq!(&o[..k], b"hi");
        assert!(link_respond(&b.x25519_secret_bytes(), &m1[..m1.len() - 3]).is_err());
    }
}

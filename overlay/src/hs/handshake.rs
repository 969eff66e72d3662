//! The end-to-end handshake between a downloader and a hidden seeder.
//!
//! `Noise_NK_25519_ChaChaPoly_BLAKE2s`: the client knows the service's static key from the swarm
//! record; the service learns nothing about the client (no client static key). Message 1 travels in
//! INTRODUCE1/INTRODUCE2 and its encrypted payload is
//! ```text
//! payload1 = version:u8(=1) cookie:[20] rp_id:[32] len:u16 rp_descriptor:[len]
//! ```
//! (where to meet, readable only by the service). Message 2 travels in RENDEZVOUS1/RENDEZVOUS2 with an
//! empty payload. Both sides then derive, from the Noise split, the keys of a *virtual hop*: onion-layer
//! keys like those of a relay ([`HopKeys`]) that each end appends to its own circuit as a last hop
//! standing for the other end. Every relay cell between them is then sealed end to end with the
//! circuit's usual layer + MAC + per-direction sequence number, so the rendezvous point sees only
//! unrecognisable cells (not even stream ids or commands), and a replayed, dropped, reordered or
//! tampered cell fails the MAC and tears the circuit down.

use snow::{Builder, HandshakeState};

use crate::relay_crypto::{HopKeys, LAYER_CIPHER};

use super::message::{HsError, COOKIE_LEN};

const PATTERN: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"warren-hs-v1";

fn params() -> snow::params::NoiseParams {
    // ok: a constant, valid pattern string
    PATTERN.parse().expect("valid noise pattern")
}

fn hs_err(e: snow::Error) -> HsError {
    HsError::Handshake(e.to_string())
}

/// A hidden seeder's long-term service key (X25519), one per seeded torrent.
#[derive(Clone)]
pub struct ServiceKeys {
    pub private: [u8; 32],
    pub public: [u8; 32],
}

impl ServiceKeys {
    pub fn generate() -> Result<ServiceKeys, HsError> {
        let kp = Builder::new(params()).generate_keypair().map_err(hs_err)?;
        let mut private = [0u8; 32];
        let mut public = [0u8; 32];
        private.copy_from_slice(&kp.private);
        public.copy_from_slice(&kp.public);
        Ok(ServiceKeys { private, public })
    }
}

/// What the service learns from an introduction: where to meet and the cookie to present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntroRequest {
    pub cookie: [u8; COOKIE_LEN],
    pub rendezvous_id: [u8; 32],
    pub rendezvous_descriptor: Vec<u8>,
}

impl IntroRequest {
    fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(55 + self.rendezvous_descriptor.len());
        o.push(1);
        o.extend_from_slice(&self.cookie);
        o.extend_from_slice(&self.rendezvous_id);
        o.extend_from_slice(&(self.rendezvous_descriptor.len() as u16).to_be_bytes());
        o.extend_from_slice(&self.rendezvous_descriptor);
        o
    }

    fn decode(b: &[u8]) -> Result<IntroRequest, HsError> {
        if b.len() < 55 {
            return Err(HsError::Payload("introduction payload too short"));
        }
        if b[0] != 1 {
            return Err(HsError::Payload("unknown introduction payload version"));
        }
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&b[1..21]);
        let mut rendezvous_id = [0u8; 32];
        rendezvous_id.copy_from_slice(&b[21..53]);
        let len = u16::from_be_bytes([b[53], b[54]]) as usize;
        if b.len() != 55 + len {
            return Err(HsError::Payload(
                "rendezvous descriptor length does not match",
            ));
        }
        Ok(IntroRequest {
            cookie,
            rendezvous_id,
            rendezvous_descriptor: b[55..].to_vec(),
        })
    }
}

/// The client's side between INTRODUCE1 and RENDEZVOUS2.
pub struct ClientIntro {
    hs: HandshakeState,
}

impl ClientIntro {
    /// Starts a handshake to `service_key`; returns the state and the blob for INTRODUCE1.
    pub fn start(
        service_key: &[u8; 32],
        req: &IntroRequest,
    ) -> Result<(ClientIntro, Vec<u8>), HsError> {
        let mut hs = Builder::new(params())
            .prologue(PROLOGUE)
            .remote_public_key(service_key)
            .build_initiator()
            .map_err(hs_err)?;
        let payload = req.encode();
        let mut buf = vec![0u8; payload.len() + 128];
        let n = hs.write_message(&payload, &mut buf).map_err(hs_err)?;
        buf.truncate(n);
        Ok((ClientIntro { hs }, buf))
    }

    /// Completes the handshake with the blob from RENDEZVOUS2; returns the virtual hop standing for
    /// the service (append it to the rendezvous circuit).
    pub fn finish(mut self, reply: &[u8]) -> Result<HopKeys, HsError> {
        let mut buf = vec![0u8; reply.len()];
        self.hs.read_message(reply, &mut buf).map_err(hs_err)?;
        if !self.hs.is_handshake_finished() {
            return Err(HsError::Handshake("handshake not finished".into()));
        }
        let (a, b) = self.hs.dangerously_get_raw_split();
        Ok(HopKeys::derive(LAYER_CIPHER, &a, &b))
    }
}

/// The service's side: reads INTRODUCE2, returns the meeting point, the RENDEZVOUS1 blob and the
/// virtual hop standing for the client (append it to the service's rendezvous circuit).
pub fn service_accept(
    keys: &ServiceKeys,
    intro: &[u8],
) -> Result<(IntroRequest, Vec<u8>, HopKeys), HsError> {
    let mut hs = Builder::new(params())
        .prologue(PROLOGUE)
        .local_private_key(&keys.private)
        .build_responder()
        .map_err(hs_err)?;
    let mut payload = vec![0u8; intro.len()];
    let n = hs.read_message(intro, &mut payload).map_err(hs_err)?;
    let req = IntroRequest::decode(&payload[..n])?;
    let mut reply = vec![0u8; 128];
    let n = hs.write_message(&[], &mut reply).map_err(hs_err)?;
    reply.truncate(n);
    let (a, b) = hs.dangerously_get_raw_split();
    Ok((req, reply, HopKeys::derive(LAYER_CIPHER, &a, &b).swapped()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> IntroRequest {
        IntroRequest {
            cookie: [6; 20],
            rendezvous_id: [7; 32],
            rendezvous_descriptor: vec![1, 2, 3, 4],
        }
    }

    /// A relay body with `msg` as relay data.
    fn body(msg: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; crate::cell::RELAY_BODY];
        b[crate::cell::RELAY_HEADER..crate::cell::RELAY_HEADER + msg.len()].copy_from_slice(msg);
        b
    }

    #[test]
    fn handshake_gives_matching_virtual_hops_and_hides_the_meeting_point() {
        let keys = ServiceKeys::generate().unwrap();
        let (client, intro) = ClientIntro::start(&keys.public, &req()).unwrap();
        // the introduction point relays `intro`: the cookie and rendezvous id are not in it
        assert!(!intro.windows(20).any(|w| w == [6; 20]));
        assert!(!intro.windows(32).any(|w| w == [7; 32]));
        let (got, reply, mut svc) = service_accept(&keys, &intro).unwrap();
        assert_eq!(got, req());
        let mut cli = client.finish(&reply).unwrap();
        // client -> service
        let mut b = body(b"bittorrent handshake");
        cli.fwd.seal(&mut b);
        assert!(!b.windows(10).any(|w| w == b"bittorrent"));
        assert!(svc.bwd.open(&mut b));
        assert_eq!(
            &b[crate::cell::RELAY_HEADER..][..20],
            b"bittorrent handshake"
        );
        // service -> client
        let mut b = body(b"pieces");
        svc.fwd.seal(&mut b);
        assert!(cli.bwd.open(&mut b));
    }

    #[test]
    fn wrong_service_key_tampering_and_replay_fail() {
        let keys = ServiceKeys::generate().unwrap();
        let other = ServiceKeys::generate().unwrap();
        let (_, intro) = ClientIntro::start(&keys.public, &req()).unwrap();
        assert!(service_accept(&other, &intro).is_err());
        let mut bad = intro.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(service_accept(&keys, &bad).is_err());

        let (client, intro) = ClientIntro::start(&keys.public, &req()).unwrap();
        let (_, reply, mut svc) = service_accept(&keys, &intro).unwrap();
        let mut cli = client.finish(&reply).unwrap();
        let mut m1 = body(b"one");
        cli.fwd.seal(&mut m1);
        let replay = m1.clone();
        assert!(svc.bwd.open(&mut m1));
        // a replayed cell fails: the receiver's sequence number has moved on
        let mut r = replay;
        assert!(!svc.bwd.open(&mut r));
        // a tampered cell fails
        let (client, intro) = ClientIntro::start(&keys.public, &req()).unwrap();
        let (_, reply, mut svc) = service_accept(&keys, &intro).unwrap();
        let mut cli = client.finish(&reply).unwrap();
        let mut t = body(b"two");
        cli.fwd.seal(&mut t);
        t[100] ^= 1;
        assert!(!svc.bwd.open(&mut t));
    }

    #[test]
    fn malformed_payload_is_rejected_with_a_reason() {
        assert!(matches!(
            IntroRequest::decode(&[1; 10]),
            Err(HsError::Payload(_))
        ));
        let mut b = req().encode();
        b.push(0);
        assert!(matches!(IntroRequest::decode(&b), Err(HsError::Payload(_))));
    }
}

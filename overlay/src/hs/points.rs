//! The tables an introduction point and a rendezvous point keep, generic over the runtime's circuit
//! handle `C`.
//!
//! Both are bounded: a relay under a flood of registrations refuses new ones instead of growing.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::message::{ack, HsError, HsMessage, COOKIE_LEN};

/// What the runtime should do after a hidden-service message arrived on circuit `from`.
#[derive(Debug, PartialEq, Eq)]
pub enum PointAction<C> {
    /// Send `msg` back on the circuit it came from.
    Reply(HsMessage),
    /// Send `msg` on another circuit.
    Forward { to: C, msg: HsMessage },
    /// Send `reply` back and `msg` on another circuit.
    ForwardAndReply {
        to: C,
        msg: HsMessage,
        reply: HsMessage,
    },
    /// Join circuit `from` with circuit `to` (a rendezvous) after sending `msg` on `to`: from now on
    /// every relay payload arriving on one is passed to the other.
    Join { to: C, msg: HsMessage },
    /// Tear down circuit `from`: it broke the protocol.
    Close(HsError),
}

/// Registrations at an introduction point: auth key → the service's intro circuit.
pub struct IntroPointTable<C> {
    by_key: HashMap<[u8; 32], C>,
    max: usize,
}

impl<C: Clone + Eq + Hash> IntroPointTable<C> {
    pub fn new(max: usize) -> Self {
        IntroPointTable {
            by_key: HashMap::new(),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Handles a message arriving on circuit `from`, whose binding value is `binding`.
    pub fn handle(&mut self, from: C, binding: &[u8; 32], msg: HsMessage) -> PointAction<C> {
        match msg {
            HsMessage::EstablishIntro { auth_key, sig } => {
                if let Err(e) = HsMessage::verify_intro(&auth_key, &sig, binding) {
                    return PointAction::Close(e);
                }
                if !self.by_key.contains_key(&auth_key) && self.by_key.len() >= self.max {
                    return PointAction::Close(HsError::Handshake(
                        "introduction point full".into(),
                    ));
                }
                self.by_key.insert(auth_key, from);
                PointAction::Reply(HsMessage::IntroEstablished)
            }
            HsMessage::Introduce1 {
                auth_key,
                handshake,
            } => match self.by_key.get(&auth_key) {
                Some(svc) => PointAction::ForwardAndReply {
                    to: svc.clone(),
                    msg: HsMessage::Introduce2 { handshake },
                    reply: HsMessage::IntroduceAck { status: ack::OK },
                },
                None => PointAction::Reply(HsMessage::IntroduceAck {
                    status: ack::UNKNOWN_SERVICE,
                }),
            },
            other => PointAction::Close(HsError::Handshake(format!(
                "unexpected {} at an introduction point",
                name(&other)
            ))),
        }
    }

    /// Forgets registrations made on a circuit that closed.
    pub fn circuit_closed(&mut self, c: &C) {
        self.by_key.retain(|_, v| v != c);
    }
}

/// Waiting clients at a rendezvous point: cookie → the client's circuit, with an expiry.
pub struct RendezvousTable<C> {
    waiting: HashMap<[u8; COOKIE_LEN], (C, Instant)>,
    max: usize,
    ttl: Duration,
}

impl<C: Clone + Eq + Hash> RendezvousTable<C> {
    pub fn new(max: usize, ttl: Duration) -> Self {
        RendezvousTable {
            waiting: HashMap::new(),
            max,
            ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn handle(&mut self, from: C, msg: HsMessage, now: Instant) -> PointAction<C> {
        self.expire(now);
        match msg {
            HsMessage::EstablishRendezvous { cookie } => {
                if self.waiting.contains_key(&cookie) {
                    return PointAction::Close(HsError::Handshake(
                        "rendezvous cookie already in use".into(),
                    ));
                }
                if self.waiting.len() >= self.max {
                    return PointAction::Close(HsError::Handshake("rendezvous point full".into()));
                }
                self.waiting.insert(cookie, (from, now));
                PointAction::Reply(HsMessage::RendezvousEstablished)
            }
            HsMessage::Rendezvous1 { cookie, handshake } => match self.waiting.remove(&cookie) {
                Some((client, _)) => PointAction::Join {
                    to: client,
                    msg: HsMessage::Rendezvous2 { handshake },
                },
                None => PointAction::Close(HsError::Handshake(
                    "no client waits with this cookie".into(),
                )),
            },
            other => PointAction::Close(HsError::Handshake(format!(
                "unexpected {} at a rendezvous point",
                name(&other)
            ))),
        }
    }

    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.waiting
            .retain(|_, (_, t)| now.duration_since(*t) < ttl);
    }

    pub fn circuit_closed(&mut self, c: &C) {
        self.waiting.retain(|_, (v, _)| v != c);
    }
}

fn name(m: &HsMessage) -> &'static str {
    match m {
        HsMessage::EstablishIntro { .. } => "ESTABLISH_INTRO",
        HsMessage::IntroEstablished => "INTRO_ESTABLISHED",
        HsMessage::Introduce1 { .. } => "INTRODUCE1",
        HsMessage::Introduce2 { .. } => "INTRODUCE2",
        HsMessage::IntroduceAck { .. } => "INTRODUCE_ACK",
        HsMessage::EstablishRendezvous { .. } => "ESTABLISH_RENDEZVOUS",
        HsMessage::RendezvousEstablished => "RENDEZVOUS_ESTABLISHED",
        HsMessage::Rendezvous1 { .. } => "RENDEZVOUS1",
        HsMessage::Rendezvous2 { .. } => "RENDEZVOUS2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hs::handshake::{service_accept, ClientIntro, IntroRequest, ServiceKeys};
    use ed25519_dalek::SigningKey;

    /// The whole introduction and rendezvous, with circuits as numbers.
    #[test]
    fn full_rendezvous_flow() {
        const SVC_INTRO: u32 = 1;
        const CLI_INTRO: u32 = 2;
        const CLI_RP: u32 = 3;
        const SVC_RP: u32 = 4;
        let binding = [9u8; 32];
        let auth = SigningKey::from_bytes(&[5; 32]);
        let keys = ServiceKeys::generate().unwrap();
        let mut ip = IntroPointTable::new(16);
        let mut rp = RendezvousTable::new(16, Duration::from_secs(60));
        let now = Instant::now();

        assert_eq!(
            ip.handle(
                SVC_INTRO,
                &binding,
                HsMessage::establish_intro(&auth, &binding)
            ),
            PointAction::Reply(HsMessage::IntroEstablished)
        );
        let cookie = [3u8; 20];
        assert_eq!(
            rp.handle(CLI_RP, HsMessage::EstablishRendezvous { cookie }, now),
            PointAction::Reply(HsMessage::RendezvousEstablished)
        );
        let req = IntroRequest {
            cookie,
            rendezvous_id: [8; 32],
            rendezvous_descriptor: vec![],
        };
        let (client, blob) = ClientIntro::start(&keys.public, &req).unwrap();
        let act = ip.handle(
            CLI_INTRO,
            &[0; 32],
            HsMessage::Introduce1 {
                auth_key: auth.verifying_key().to_bytes(),
                handshake: blob,
            },
        );
        let PointAction::ForwardAndReply {
            to,
            msg: HsMessage::Introduce2 { handshake },
            reply,
        } = act
        else {
            panic!("{act:?}")
        };
        assert_eq!(to, SVC_INTRO);
        assert_eq!(reply, HsMessage::IntroduceAck { status: ack::OK });
        let (got, reply, mut svc) = service_accept(&keys, &handshake).unwrap();
        assert_eq!(got.cookie, cookie);
        let act = rp.handle(
            SVC_RP,
            HsMessage::Rendezvous1 {
                cookie: got.cookie,
                handshake: reply,
            },
            now,
        );
        let PointAction::Join {
            to,
            msg: HsMessage::Rendezvous2 { handshake },
        } = act
        else {
            panic!("{act:?}")
        };
        assert_eq!(to, CLI_RP);
        let mut cli = client.finish(&handshake).unwrap();
        let mut b = vec![0u8; crate::cell::RELAY_BODY];
        cli.fwd.seal(&mut b);
        assert!(svc.bwd.open(&mut b));
        assert!(rp.is_empty());
    }

    #[test]
    fn bad_registrations_and_unknown_cookies() {
        let auth = SigningKey::from_bytes(&[5; 32]);
        let mut ip: IntroPointTable<u32> = IntroPointTable::new(1);
        // signed for another circuit
        let m = HsMessage::establish_intro(&auth, &[1; 32]);
        assert!(matches!(
            ip.handle(1, &[2; 32], m),
            PointAction::Close(HsError::BadIntroSignature)
        ));
        // full
        ip.handle(1, &[1; 32], HsMessage::establish_intro(&auth, &[1; 32]));
        let other = SigningKey::from_bytes(&[6; 32]);
        assert!(matches!(
            ip.handle(2, &[2; 32], HsMessage::establish_intro(&other, &[2; 32])),
            PointAction::Close(_)
        ));
        ip.circuit_closed(&1);
        assert!(ip.is_empty());
        // unknown service
        assert_eq!(
            ip.handle(
                3,
                &[0; 32],
                HsMessage::Introduce1 {
                    auth_key: [0; 32],
                    handshake: vec![]
                }
            ),
            PointAction::Reply(HsMessage::IntroduceAck {
                status: ack::UNKNOWN_SERVICE
            })
        );

        let mut rp: RendezvousTable<u32> = RendezvousTable::new(4, Duration::from_secs(1));
        let now = Instant::now();
        assert!(matches!(
            rp.handle(
                1,
                HsMessage::Rendezvous1 {
                    cookie: [1; 20],
                    handshake: vec![]
                },
                now
            ),
            PointAction::Close(_)
        ));
        rp.handle(1, HsMessage::EstablishRendezvous { cookie: [1; 20] }, now);
        assert!(matches!(
            rp.handle(2, HsMessage::EstablishRendezvous { cookie: [1; 20] }, now),
            PointAction::Close(_)
        ));
        // cookies expire
        rp.expire(now + Duration::from_secs(2));
        assert!(rp.is_empty());
    }
}

//! Relay-side per-circuit crypto and decisions.

use crate::cell::{self, CellBuf, CellError};
use crate::relay_crypto::HopKeys;

/// What a relay does with a forward (client→exit) RELAY cell after peeling its layer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Addressed to this hop: handle the relay message.
    Deliver,
    /// Not for us: pass it to the next hop.
    Forward,
    /// Not for us and there is no next hop: tampered or replayed. Destroy the circuit both ways.
    Destroy,
}

pub struct RelayCrypto {
    keys: HopKeys,
}

impl RelayCrypto {
    pub fn new(keys: HopKeys) -> RelayCrypto {
        RelayCrypto { keys }
    }

    /// Processes the relay body of a forward cell in place.
    pub fn on_forward(&mut self, body: &mut [u8], has_next: bool) -> Verdict {
        if self.keys.fwd.open(body) {
            Verdict::Deliver
        } else if has_next {
            Verdict::Forward
        } else {
            Verdict::Destroy
        }
    }

    /// The binding value of this hop (see [`HopKeys::binding`]).
    pub fn binding(&self) -> [u8; 32] {
        self.keys.binding()
    }

    /// Adds this hop's backward layer to a cell coming from further hops.
    pub fn add_backward(&mut self, body: &mut [u8]) {
        self.keys.bwd.apply(body);
    }

    /// Builds a backward cell originated by this hop.
    pub fn originate(
        &mut self,
        circ_id: u32,
        rc: u8,
        stream: u32,
        data: &[u8],
    ) -> Result<CellBuf, CellError> {
        self.originate_tagged(circ_id, rc, stream, data)
            .map(|(c, _)| c)
    }

    /// [`RelayCrypto::originate`], also returning the cell's MAC (for authenticated SENDMEs).
    pub fn originate_tagged(
        &mut self,
        circ_id: u32,
        rc: u8,
        stream: u32,
        data: &[u8],
    ) -> Result<(CellBuf, [u8; 16]), CellError> {
        let mut c = cell::new_cell(circ_id, cell::cmd::RELAY);
        cell::write_relay(cell::body_mut(&mut c), rc, stream, data)?;
        let tag = self.keys.bwd.seal(cell::body_mut(&mut c));
        Ok((c, tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{body, body_mut, rcmd, read_relay};
    use crate::circuit::client::ClientCrypto;
    use crate::handshake::{hop_respond, HopInitiator};
    use crate::identity::Identity;

    /// A whole 3-hop circuit simulated without IO.
    fn setup(n: usize) -> (ClientCrypto, Vec<RelayCrypto>) {
        let mut client = ClientCrypto::default();
        let mut relays = Vec::new();
        for _ in 0..n {
            let id = Identity::generate();
            let (init, m1) = HopInitiator::start(&id.x25519_public()).unwrap();
            let (m2, rk) = hop_respond(&id.x25519_secret_bytes(), &m1).unwrap();
            client.add_hop(init.finish(&m2).unwrap());
            relays.push(RelayCrypto::new(rk));
        }
        (client, relays)
    }

    fn run_forward(relays: &mut [RelayCrypto], c: &mut CellBuf) -> (usize, Verdict) {
        for i in 0..relays.len() {
            let has_next = i + 1 < relays.len();
            match relays[i].on_forward(body_mut(c), has_next) {
                Verdict::Forward => continue,
                v => return (i, v),
            }
        }
        unreachable!()
    }

    #[test]
    fn deliver_to_each_hop_and_back() {
        let (mut client, mut relays) = setup(3);
        for dest in 0..3 {
            let mut c = client.seal(1, dest, rcmd::DATA, 5, b"ping").unwrap();
            assert_eq!(run_forward(&mut relays, &mut c), (dest, Verdict::Deliver));
            assert_eq!(read_relay(body(&c)).unwrap().data, b"ping");
            let mut back = relays[dest].originate(1, rcmd::DATA, 5, b"pong").unwrap();
            for r in relays[..dest].iter_mut().rev() {
                r.add_backward(body_mut(&mut back));
            }
            let hop = client.open(&mut back).unwrap();
            assert_eq!(hop, dest);
            assert_eq!(read_relay(body(&back)).unwrap().data, b"pong");
        }
    }

    #[test]
    fn tampered_cell_destroys_at_last_hop() {
        let (mut client, mut relays) = setup(3);
        let mut c = client.seal(1, 2, rcmd::DATA, 5, b"secret").unwrap();
        c[200] ^= 0x80;
        assert_eq!(run_forward(&mut relays, &mut c), (2, Verdict::Destroy));
    }

    #[test]
    fn replayed_cell_destroys() {
        let (mut client, mut relays) = setup(2);
        let c = client.seal(1, 1, rcmd::DATA, 5, b"x").unwrap();
        let mut first = c.clone();
        assert_eq!(run_forward(&mut relays, &mut first), (1, Verdict::Deliver));
        let mut replay = c;
        assert_eq!(run_forward(&mut relays, &mut replay), (1, Verdict::Destroy));
    }

    #[test]
    fn tampered_backward_cell_unrecognised_by_client() {
        let (mut client, mut relays) = setup(2);
        let mut back = relays[1].originate(1, rcmd::DATA, 5, b"pong").unwrap();
        back[300] ^= 1;
        relays[0].add_backward(body_mut(&mut back));
        assert!(client.open(&mut back).is_err());
    }
}

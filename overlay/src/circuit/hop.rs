//! One circuit at one relay, as a sans-IO state machine: which cells it accepts from which side,
//! what it does with them, and what it may originate. The node (`node.rs`) keeps only the edges
//! around it: the links and their queues, the exit's sockets and tasks, the tables of the
//! introduction and rendezvous points. Every rule that a dishonest peer could test lives here
//! and is unit-tested without sockets (below).
//!
//! Shape (boringtun's `TunnResult`): each input returns what to do, and the node routes it.

use crate::cell::{self, cmd, rcmd, reason, CellBuf, CellError, MAX_RELAY_EARLY};
use crate::circuit::relay::{RelayCrypto, Verdict};
use crate::relay_crypto::HopKeys;
use crate::stream::{RecvWindow, SendmeAuth, SendmeError, CIRC_SENDME_INC, CIRC_WINDOW};

/// Where a circuit goes after this hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Onward {
    /// This hop is the last one.
    None,
    /// An EXTEND is under way (CREATE sent to the next hop, CREATED awaited).
    Extending,
    /// The circuit continues to a next hop.
    Next,
    /// A rendezvous point: joined to another client's circuit.
    Joined,
}

/// What to do with a cell that came from the client's side.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    /// Pass it to the next hop (this hop's layer is peeled).
    Next(CellBuf),
    /// Pass it to the joined circuit (a rendezvous): the node adds that circuit's backward layer
    /// and sends it as a plain RELAY.
    Joined(CellBuf),
    /// A relay message for this hop (`early`: it came in a RELAY_EARLY cell).
    Deliver { cell: CellBuf, early: bool },
}

/// Why this hop refuses a cell or a request; each destroys the circuit with [`HopError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    #[error("RELAY_EARLY towards the client (it only travels away from the client)")]
    EarlyTowardsClient,
    #[error("more than {MAX_RELAY_EARLY} RELAY_EARLY cells (a circuit too long, or a loop)")]
    TooManyEarly,
    #[error("unrecognised relay cell at the last hop (tampered or replayed)")]
    Unrecognized,
    #[error("EXTEND in a plain RELAY cell (must be RELAY_EARLY)")]
    ExtendNotEarly,
    #[error("EXTEND whose keys do not derive its node id")]
    ExtendIdentity,
    #[error("EXTEND to this node itself")]
    ExtendToSelf,
    #[error("EXTEND to a private, loopback or link-local address from a relay on a public one")]
    ExtendToPrivate,
    #[error("EXTEND on a circuit that already goes on (or is being extended)")]
    AlreadyExtended,
    #[error("CREATED without an EXTEND under way")]
    UnexpectedCreated,
    #[error("a rendezvous join on a circuit that already goes on")]
    AlreadyJoined,
    #[error("the client exceeded the circuit window")]
    WindowExceeded,
    #[error("circuit SENDME refused: {0}")]
    Sendme(#[from] SendmeError),
    #[error("relay message too long: {0}")]
    Cell(#[from] CellError),
}

impl HopError {
    /// The DESTROY reason sent for it.
    pub fn reason(&self) -> u8 {
        match self {
            HopError::Unrecognized => reason::UNRECOGNIZED,
            _ => reason::PROTOCOL,
        }
    }

    /// Whether it is evidence of tampering (counted in `NodeStatus::circuits_destroyed_tamper`).
    pub fn is_tampering(&self) -> bool {
        matches!(self, HopError::Unrecognized | HopError::ExtendIdentity)
    }
}

/// A relay's state for one circuit.
pub struct RelayHop {
    crypto: RelayCrypto,
    onward: Onward,
    /// RELAY_EARLY cells seen from the client's side.
    early: u8,
    /// DATA cells the client may send this hop before a SENDME from it.
    fwd_window: RecvWindow,
    /// MACs of the DATA cells this hop originated that circuit SENDMEs must echo.
    sendme_auth: SendmeAuth,
}

impl RelayHop {
    pub fn new(keys: HopKeys) -> RelayHop {
        RelayHop {
            crypto: RelayCrypto::new(keys),
            onward: Onward::None,
            early: 0,
            fwd_window: RecvWindow::new(CIRC_WINDOW, CIRC_SENDME_INC),
            sendme_auth: SendmeAuth::new(CIRC_SENDME_INC),
        }
    }

    pub fn onward(&self) -> Onward {
        self.onward
    }

    /// The binding value of this hop (introduction points bind registrations to it).
    pub fn binding(&self) -> [u8; 32] {
        self.crypto.binding()
    }

    /// A RELAY or RELAY_EARLY cell from the client's side.
    pub fn on_forward(&mut self, mut c: CellBuf) -> Result<Forward, HopError> {
        let early = cell::command(&c) == cmd::RELAY_EARLY;
        if early {
            self.early = self.early.saturating_add(1);
            if self.early > MAX_RELAY_EARLY {
                return Err(HopError::TooManyEarly);
            }
        }
        let goes_on = matches!(self.onward, Onward::Next | Onward::Joined);
        match self.crypto.on_forward(cell::body_mut(&mut c), goes_on) {
            Verdict::Deliver => Ok(Forward::Deliver { cell: c, early }),
            Verdict::Destroy => Err(HopError::Unrecognized),
            Verdict::Forward if self.onward == Onward::Joined => {
                cell::set_command(&mut c, cmd::RELAY);
                Ok(Forward::Joined(c))
            }
            Verdict::Forward => Ok(Forward::Next(c)),
        }
    }

    /// A RELAY cell from the next hop: adds this hop's layer; the node passes it back.
    pub fn on_backward(&mut self, mut c: CellBuf) -> Result<CellBuf, HopError> {
        if cell::command(&c) == cmd::RELAY_EARLY {
            return Err(HopError::EarlyTowardsClient);
        }
        self.crypto.add_backward(cell::body_mut(&mut c));
        Ok(c)
    }

    /// A cell from the joined circuit of a rendezvous: add this circuit's backward layer.
    pub fn add_joined_layer(&mut self, mut c: CellBuf) -> CellBuf {
        self.crypto.add_backward(cell::body_mut(&mut c));
        c
    }

    /// An EXTEND for this hop: checks it may extend (`early` cell, keys that derive the id, not
    /// to itself, not already going on) and marks it as extending.
    /// `allow_private`: whether targets on private, loopback or link-local addresses may be
    /// dialled (a relay on a public address refuses them: it is not a way into its own network).
    pub fn start_extend(
        &mut self,
        early: bool,
        ext: &cell::Extend,
        own_id: &[u8; 32],
        allow_private: bool,
    ) -> Result<(), HopError> {
        if !early {
            return Err(HopError::ExtendNotEarly);
        }
        if !allow_private && crate::exit::is_non_public(&ext.addr.ip()) {
            return Err(HopError::ExtendToPrivate);
        }
        if !ext.identity_matches() {
            return Err(HopError::ExtendIdentity);
        }
        if &ext.node_id == own_id {
            return Err(HopError::ExtendToSelf);
        }
        if self.onward != Onward::None {
            return Err(HopError::AlreadyExtended);
        }
        self.onward = Onward::Extending;
        Ok(())
    }

    /// CREATED from the next hop: the circuit now goes on. The node sends EXTENDED back.
    pub fn on_created(&mut self) -> Result<(), HopError> {
        if self.onward != Onward::Extending {
            return Err(HopError::UnexpectedCreated);
        }
        self.onward = Onward::Next;
        Ok(())
    }

    /// Joins this circuit to another at a rendezvous point.
    pub fn join(&mut self) -> Result<(), HopError> {
        if self.onward != Onward::None {
            return Err(HopError::AlreadyJoined);
        }
        self.onward = Onward::Joined;
        Ok(())
    }

    /// A DATA cell for this hop arrived and was taken: `true` when a circuit SENDME is due (the
    /// node sends [`crate::stream::sendme_payload`] of the cell's MAC).
    pub fn on_data(&mut self) -> Result<bool, HopError> {
        self.fwd_window
            .on_receive()
            .map_err(|_| HopError::WindowExceeded)?;
        Ok(self.fwd_window.on_consume())
    }

    /// A circuit SENDME for this hop: it must echo the MAC of the DATA cell it acknowledges
    /// (proposal 289). `Ok` = the node may send another `CIRC_SENDME_INC` DATA cells.
    pub fn on_circuit_sendme(&mut self, payload: &[u8]) -> Result<(), HopError> {
        Ok(self.sendme_auth.on_sendme(payload)?)
    }

    /// A backward relay message originated by this hop, sealed with its layer (DATA cells'
    /// MACs are remembered for the SENDMEs that acknowledge them).
    pub fn originate(
        &mut self,
        circ_id: u32,
        rc: u8,
        stream: u32,
        data: &[u8],
    ) -> Result<CellBuf, HopError> {
        let (c, tag) = self.crypto.originate_tagged(circ_id, rc, stream, data)?;
        if rc == rcmd::DATA {
            self.sendme_auth.on_data_sent(tag);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    //! A client and relays wired in memory (no sockets, no tasks): cells go through each hop's
    //! machine as they would through the links.
    use super::*;
    use crate::cell::{body, read_relay};
    use crate::circuit::client::ClientCrypto;
    use crate::handshake::{hop_respond, HopInitiator};
    use crate::identity::Identity;
    use crate::stream::sendme_payload;

    struct Wire {
        client: ClientCrypto,
        hops: Vec<RelayHop>,
        ids: Vec<Identity>,
    }

    /// Builds an `n`-hop circuit: CREATE at hop 0, then EXTEND/CREATED through each last hop.
    fn build(n: usize) -> Wire {
        let mut w = Wire {
            client: ClientCrypto::default(),
            hops: Vec::new(),
            ids: Vec::new(),
        };
        for i in 0..n {
            let id = Identity::generate();
            let (init, m1) = HopInitiator::start(&id.x25519_public()).unwrap();
            if i > 0 {
                let ext = extend_to(&id, m1.clone());
                let mut c = w
                    .client
                    .seal(1, i - 1, rcmd::EXTEND, 0, &ext.encode())
                    .unwrap();
                cell::set_command(&mut c, cmd::RELAY_EARLY);
                let (at, got) = forward(&mut w.hops, c).unwrap();
                assert_eq!(at, i - 1);
                let Forward::Deliver { early, .. } = got else {
                    panic!("EXTEND not delivered")
                };
                let own = w.ids[i - 1].node_id().0;
                w.hops[i - 1].start_extend(early, &ext, &own, true).unwrap();
                assert_eq!(w.hops[i - 1].onward(), Onward::Extending);
            }
            let (m2, keys) = hop_respond(&id.x25519_secret_bytes(), &m1).unwrap();
            if i > 0 {
                w.hops[i - 1].on_created().unwrap();
            }
            w.client.add_hop(init.finish(&m2).unwrap());
            w.hops.push(RelayHop::new(keys));
            w.ids.push(id);
        }
        w
    }

    fn extend_to(id: &Identity, handshake: Vec<u8>) -> cell::Extend {
        cell::Extend {
            node_id: id.node_id().0,
            x25519: id.x25519_public(),
            ed25519: id.ed25519_public(),
            addr: "127.0.0.1:7700".parse().unwrap(),
            handshake,
        }
    }

    /// Passes a forward cell through the hops until one delivers it or refuses it.
    fn forward(
        hops: &mut [RelayHop],
        mut c: CellBuf,
    ) -> Result<(usize, Forward), (usize, HopError)> {
        for (i, h) in hops.iter_mut().enumerate() {
            match h.on_forward(c).map_err(|e| (i, e))? {
                Forward::Next(next) => c = next,
                other => return Ok((i, other)),
            }
        }
        panic!("forwarded past the last hop")
    }

    /// Passes a cell originated at hop `from` back to the client; the hop the client says sent it.
    fn backward(w: &mut Wire, from: usize, mut c: CellBuf) -> usize {
        for h in w.hops[..from].iter_mut().rev() {
            c = h.on_backward(c).unwrap();
        }
        w.client.open(&mut c).unwrap()
    }

    #[test]
    fn build_extend_and_deliver_at_every_hop() {
        let mut w = build(3);
        for dest in 0..3 {
            let c = w.client.seal(1, dest, rcmd::DATA, 7, b"to you").unwrap();
            let (at, got) = forward(&mut w.hops, c).unwrap();
            assert_eq!(at, dest);
            let Forward::Deliver { cell, early } = got else {
                panic!()
            };
            assert!(!early);
            let m = read_relay(body(&cell)).unwrap();
            assert_eq!((m.cmd, m.stream, m.data), (rcmd::DATA, 7, &b"to you"[..]));
            let back = w.hops[dest].originate(1, rcmd::DATA, 7, b"back").unwrap();
            assert_eq!(backward(&mut w, dest, back), dest);
        }
    }

    #[test]
    fn extend_rules() {
        let mut w = build(1);
        let other = Identity::generate();
        let own = w.ids[0].node_id().0;
        let good = extend_to(&other, vec![1, 2, 3]);
        let h = &mut w.hops[0];
        assert_eq!(
            h.start_extend(false, &good, &own, true),
            Err(HopError::ExtendNotEarly)
        );
        let mut forged = good.clone();
        forged.x25519 = Identity::generate().x25519_public();
        assert_eq!(
            h.start_extend(true, &forged, &own, true),
            Err(HopError::ExtendIdentity)
        );
        assert!(HopError::ExtendIdentity.is_tampering());
        // the test address is loopback: refused unless private targets are allowed
        assert_eq!(
            h.start_extend(true, &good, &own, false),
            Err(HopError::ExtendToPrivate)
        );
        let me = extend_to(&w.ids[0], vec![1]);
        assert_eq!(
            h.start_extend(true, &me, &own, true),
            Err(HopError::ExtendToSelf)
        );
        assert_eq!(h.on_created(), Err(HopError::UnexpectedCreated));
        h.start_extend(true, &good, &own, true).unwrap();
        assert_eq!(
            h.start_extend(true, &good, &own, true),
            Err(HopError::AlreadyExtended)
        );
        h.on_created().unwrap();
        assert_eq!(h.on_created(), Err(HopError::UnexpectedCreated));
        assert_eq!(h.join(), Err(HopError::AlreadyJoined));
    }

    #[test]
    fn at_most_eight_relay_early_cells_pass_a_hop() {
        let mut w = build(2);
        // hop 0 has seen one already: the EXTEND to hop 1
        for i in 1..MAX_RELAY_EARLY {
            let mut c = w.client.seal(1, 1, rcmd::DROP, 0, b"").unwrap();
            cell::set_command(&mut c, cmd::RELAY_EARLY);
            assert!(forward(&mut w.hops, c).is_ok(), "early cell {i}");
        }
        let mut c = w.client.seal(1, 1, rcmd::DROP, 0, b"").unwrap();
        cell::set_command(&mut c, cmd::RELAY_EARLY);
        let (at, e) = forward(&mut w.hops, c).unwrap_err();
        assert_eq!((at, e), (0, HopError::TooManyEarly));
    }

    #[test]
    fn relay_early_towards_the_client_is_refused() {
        let mut w = build(2);
        let mut c = w.hops[1].originate(1, rcmd::DATA, 1, b"x").unwrap();
        cell::set_command(&mut c, cmd::RELAY_EARLY);
        assert_eq!(w.hops[0].on_backward(c), Err(HopError::EarlyTowardsClient));
    }

    #[test]
    fn tampered_or_replayed_cells_are_refused_at_the_last_hop() {
        let mut w = build(3);
        let mut c = w.client.seal(1, 2, rcmd::DATA, 1, b"secret").unwrap();
        c[300] ^= 0x20;
        let (at, e) = forward(&mut w.hops, c).unwrap_err();
        assert_eq!((at, e.clone()), (2, HopError::Unrecognized));
        assert_eq!(e.reason(), reason::UNRECOGNIZED);

        let mut w = build(2);
        let c = w.client.seal(1, 1, rcmd::DATA, 1, b"once").unwrap();
        assert!(forward(&mut w.hops, c.clone()).is_ok());
        assert_eq!(
            forward(&mut w.hops, c).unwrap_err(),
            (1, HopError::Unrecognized)
        );
    }

    #[test]
    fn a_joined_circuit_passes_cells_to_the_other_end_as_plain_relay() {
        let mut a = build(1);
        a.hops[0].join().unwrap();
        assert_eq!(a.hops[0].onward(), Onward::Joined);
        // a cell for a hop beyond the rendezvous point (the virtual end-to-end hop)
        let mut b = build(2);
        let mut c = b.client.seal(1, 1, rcmd::DATA, 1, b"e2e").unwrap();
        cell::set_command(&mut c, cmd::RELAY_EARLY);
        match a.hops[0].on_forward(c).unwrap() {
            Forward::Joined(j) => assert_eq!(cell::command(&j), cmd::RELAY),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_window_and_authenticated_sendmes() {
        let mut w = build(1);
        let h = &mut w.hops[0];
        let mut due = 0;
        for _ in 0..CIRC_WINDOW {
            if h.on_data().unwrap() {
                due += 1;
            }
        }
        assert_eq!(due, CIRC_WINDOW / CIRC_SENDME_INC);
        // the SENDMEs it sent freed the window: the client may send again
        assert!(h.on_data().is_ok());

        // backward: a SENDME must echo the MAC of the 64th DATA cell this hop sent (the
        // client reads it off the cell it opened)
        let mut w = build(1);
        assert!(w.hops[0]
            .on_circuit_sendme(&sendme_payload(&[0; 16]))
            .is_err());
        let mut tags = Vec::new();
        for _ in 0..2 * CIRC_SENDME_INC {
            let mut c = w.hops[0].originate(1, rcmd::DATA, 1, b"d").unwrap();
            w.client.open(&mut c).unwrap();
            tags.push(crate::relay_crypto::body_tag(body(&c)));
        }
        let inc = CIRC_SENDME_INC as usize;
        assert!(
            matches!(
                w.hops[0].on_circuit_sendme(&sendme_payload(&tags[inc])),
                Err(HopError::Sendme(_))
            ),
            "the second increment's MAC before the first"
        );
        w.hops[0]
            .on_circuit_sendme(&sendme_payload(&tags[inc - 1]))
            .unwrap();
        w.hops[0]
            .on_circuit_sendme(&sendme_payload(&tags[2 * inc - 1]))
            .unwrap();
        assert!(
            w.hops[0]
                .on_circuit_sendme(&sendme_payload(&tags[2 * inc - 1]))
                .is_err(),
            "nothing outstanding"
        );
    }

    #[test]
    fn the_client_past_its_window_is_refused() {
        let mut w = build(1);
        let h = &mut w.hops[0];
        // the hop sends SENDMEs as it takes cells, so a window fills only when cells arrive
        // faster than they are taken: a small window whose increment is never reached shows it
        h.fwd_window = RecvWindow::new(2, 64);
        assert!(h.on_data().is_ok());
        assert!(h.on_data().is_ok());
        assert_eq!(h.on_data(), Err(HopError::WindowExceeded));
    }
}

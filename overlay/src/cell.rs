//! Fixed-size cells and the relay messages carried inside RELAY cells.
//!
//! Link cell (plaintext, `CELL_SIZE` bytes; sealed on the link as `CELL_SIZE + 16` bytes):
//! `circ_id:u32 | cmd:u8 | body[CELL_SIZE-5]`.
//!
//! Relay body (`RELAY_BODY` bytes, onion-encrypted as a whole):
//! `recognized:u32=0 | mac[16] | rcmd:u8 | stream_id:u32 | len:u16 | data[len] | zero padding`.

use std::net::SocketAddr;

use crate::descriptor::{decode_addr, encode_addr, DescriptorError, Reader};

/// Plaintext cell size on every link (chosen by measurement, see docs/PROTOCOL.md).
pub const CELL_SIZE: usize = 16384;
/// AEAD tag appended to each cell on the link.
pub const LINK_TAG: usize = 16;
/// Bytes of one sealed cell on the wire.
pub const WIRE_CELL: usize = CELL_SIZE + LINK_TAG;
pub const CELL_HEADER: usize = 5;
pub const CELL_BODY: usize = CELL_SIZE - CELL_HEADER;
pub const RELAY_BODY: usize = CELL_BODY;
/// Offset of the relay MAC inside the relay body.
pub const RELAY_MAC_OFF: usize = 4;
/// Start of the MAC-covered part of the relay body.
pub const RELAY_COVERED_OFF: usize = 20;
pub const RELAY_HEADER: usize = 27;
/// Maximum application bytes in one relay message.
pub const RELAY_DATA_MAX: usize = RELAY_BODY - RELAY_HEADER;

/// Link-level commands.
pub mod cmd {
    pub const PADDING: u8 = 0;
    pub const CREATE: u8 = 1;
    pub const CREATED: u8 = 2;
    pub const RELAY: u8 = 3;
    pub const DESTROY: u8 = 4;
    /// A RELAY cell that may carry an EXTEND (Tor's RELAY_EARLY, tor-spec §5.6): each relay
    /// counts the ones it passes forward on a circuit and destroys the circuit past
    /// [`super::MAX_RELAY_EARLY`], which bounds the length of any circuit (no A→B→A→… loops).
    /// An EXTEND that arrives in a plain RELAY cell is refused; RELAY_EARLY towards the client
    /// is a protocol violation.
    pub const RELAY_EARLY: u8 = 5;
}

/// RELAY_EARLY cells a relay passes forward on one circuit at most (Tor's limit, tor-spec
/// §5.6): a client needs hops - 1 of them (one per EXTEND), so circuits are at most 9 hops long.
pub const MAX_RELAY_EARLY: u8 = 8;

/// Circuit ids are split between the two ends of a link (tor-spec §5.1.1): the side that dialed
/// the link creates circuits with the high bit set, so the two sides never pick the same id. A
/// CREATE on a link with the wrong half's id, or with an id in use, is refused.
pub const CIRC_ID_DIALER_BIT: u32 = 0x8000_0000;

/// Whether `id` is an id the dialer of a link may create circuits with.
pub fn is_dialer_circ_id(id: u32) -> bool {
    id & CIRC_ID_DIALER_BIT != 0 && id != CIRC_ID_DIALER_BIT
}

/// Relay commands (inside RELAY cells).
pub mod rcmd {
    pub const BEGIN: u8 = 1;
    pub const DATA: u8 = 2;
    pub const END: u8 = 3;
    pub const CONNECTED: u8 = 4;
    pub const SENDME: u8 = 5;
    pub const EXTEND: u8 = 6;
    pub const EXTENDED: u8 = 7;
    /// Reserved: truncate the circuit after this hop.
    pub const TRUNCATE: u8 = 8;
    pub const DATAGRAM: u8 = 9;
    pub const RESOLVE: u8 = 10;
    pub const RESOLVED: u8 = 11;
    /// Long-range padding, dropped by the hop it is addressed to.
    pub const DROP: u8 = 12;
    // Reserved for issue 4 (hidden services, DHT through circuits). Not implemented yet; a hop that
    // receives one replies END(UNSUPPORTED) on stream 0.
    pub const ESTABLISH_INTRO: u8 = 32;
    pub const INTRO_ESTABLISHED: u8 = 33;
    pub const INTRODUCE1: u8 = 34;
    pub const INTRODUCE2: u8 = 35;
    pub const INTRODUCE_ACK: u8 = 36;
    pub const ESTABLISH_RENDEZVOUS: u8 = 37;
    pub const RENDEZVOUS_ESTABLISHED: u8 = 38;
    pub const RENDEZVOUS1: u8 = 39;
    pub const RENDEZVOUS2: u8 = 40;
    pub const DHT_REQUEST: u8 = 48;
    pub const DHT_RESPONSE: u8 = 49;
    /// c→hop: "which nodes do you know?" (bootstrap from an address and a key).
    pub const DIRECTORY_REQUEST: u8 = 50;
    /// hop→c: count:u16, then count × (len:u16, descriptor); the hop's own descriptor first.
    pub const DIRECTORY: u8 = 51;
}

/// END and DESTROY reasons.
pub mod reason {
    pub const MISC: u8 = 1;
    pub const RESOLVE_FAILED: u8 = 2;
    pub const CONNECT_REFUSED: u8 = 3;
    pub const EXIT_POLICY: u8 = 4;
    pub const DESTROYED: u8 = 5;
    pub const DONE: u8 = 6;
    pub const TIMEOUT: u8 = 7;
    pub const NOT_EXIT: u8 = 8;
    pub const PROTOCOL: u8 = 9;
    pub const UNRECOGNIZED: u8 = 10;
    pub const LINK_CLOSED: u8 = 11;
    pub const UNSUPPORTED: u8 = 12;
    pub const EXTEND_FAILED: u8 = 13;
    /// A flood limit refused the circuit (too many circuits or CREATEs); try another relay.
    pub const RESOURCE_LIMIT: u8 = 14;

    pub fn name(r: u8) -> &'static str {
        match r {
            MISC => "misc",
            RESOLVE_FAILED => "resolve failed",
            CONNECT_REFUSED => "connection refused",
            EXIT_POLICY => "exit policy",
            DESTROYED => "circuit destroyed",
            DONE => "done",
            TIMEOUT => "timeout",
            NOT_EXIT => "not an exit",
            PROTOCOL => "protocol violation",
            UNRECOGNIZED => "unrecognized cell (tampered or replayed)",
            LINK_CLOSED => "link closed",
            UNSUPPORTED => "unsupported",
            EXTEND_FAILED => "extend failed",
            RESOURCE_LIMIT => "resource limit",
            _ => "unknown",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CellError {
    #[error("relay data too long: {0} > {RELAY_DATA_MAX}")]
    TooLong(usize),
    #[error("relay length field {0} exceeds the body")]
    BadLength(usize),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

fn malformed(what: &'static str, e: impl std::fmt::Display) -> CellError {
    CellError::Malformed {
        what,
        why: e.to_string(),
    }
}

/// A plaintext cell buffer.
pub type CellBuf = Vec<u8>;

pub fn new_cell(circ_id: u32, command: u8) -> CellBuf {
    let mut c = vec![0u8; CELL_SIZE];
    c[..4].copy_from_slice(&circ_id.to_be_bytes());
    c[4] = command;
    c
}

pub fn circ_id(cell: &[u8]) -> u32 {
    u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]])
}

pub fn set_circ_id(cell: &mut [u8], id: u32) {
    cell[..4].copy_from_slice(&id.to_be_bytes());
}

pub fn command(cell: &[u8]) -> u8 {
    cell[4]
}

pub fn set_command(cell: &mut [u8], command: u8) {
    cell[4] = command;
}

pub fn body(cell: &[u8]) -> &[u8] {
    &cell[CELL_HEADER..]
}

pub fn body_mut(cell: &mut [u8]) -> &mut [u8] {
    &mut cell[CELL_HEADER..]
}

/// A cell whose body is `len:u16 | bytes` (CREATE, CREATED).
pub fn lp_cell(circ: u32, command: u8, payload: &[u8]) -> Result<CellBuf, CellError> {
    if payload.len() > CELL_BODY - 2 {
        return Err(CellError::TooLong(payload.len()));
    }
    let mut c = new_cell(circ, command);
    c[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    c[7..7 + payload.len()].copy_from_slice(payload);
    Ok(c)
}

pub fn lp_payload(cell: &[u8]) -> Result<&[u8], CellError> {
    let b = body(cell);
    let n = u16::from_be_bytes([b[0], b[1]]) as usize;
    if n > b.len() - 2 {
        return Err(CellError::BadLength(n));
    }
    Ok(&b[2..2 + n])
}

pub fn destroy_cell(circ: u32, why: u8) -> CellBuf {
    let mut c = new_cell(circ, cmd::DESTROY);
    c[5] = why;
    c
}

/// Writes a relay message into a relay body (recognized=0, MAC left zero for the crypto layer).
pub fn write_relay(body: &mut [u8], rc: u8, stream: u32, data: &[u8]) -> Result<(), CellError> {
    if data.len() > RELAY_DATA_MAX {
        return Err(CellError::TooLong(data.len()));
    }
    body[..RELAY_HEADER].fill(0);
    body[20] = rc;
    body[21..25].copy_from_slice(&stream.to_be_bytes());
    body[25..27].copy_from_slice(&(data.len() as u16).to_be_bytes());
    body[27..27 + data.len()].copy_from_slice(data);
    body[27 + data.len()..].fill(0);
    Ok(())
}

/// A decoded relay message header; `data` borrows the body.
#[derive(Debug, PartialEq, Eq)]
pub struct RelayMsg<'a> {
    pub cmd: u8,
    pub stream: u32,
    pub data: &'a [u8],
}

pub fn read_relay(body: &[u8]) -> Result<RelayMsg<'_>, CellError> {
    let n = u16::from_be_bytes([body[25], body[26]]) as usize;
    if n > RELAY_DATA_MAX {
        return Err(CellError::BadLength(n));
    }
    Ok(RelayMsg {
        cmd: body[20],
        stream: u32::from_be_bytes([body[21], body[22], body[23], body[24]]),
        data: &body[27..27 + n],
    })
}

/// EXTEND: `node_id[32] | x25519[32] | ed25519[32] | addr | hs_len:u16 | hs`.
///
/// The target's whole identity: the relay recomputes the node id from the two keys
/// ([`Extend::identity_matches`]) and refuses an EXTEND whose keys do not give its id, so nobody
/// can have a link stored under another node's id with a key of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    pub node_id: [u8; 32],
    pub x25519: [u8; 32],
    pub ed25519: [u8; 32],
    pub addr: SocketAddr,
    pub handshake: Vec<u8>,
}

impl Extend {
    /// Whether `node_id` is the id that `x25519` and `ed25519` derive.
    pub fn identity_matches(&self) -> bool {
        crate::identity::NodeId::derive(&self.x25519, &self.ed25519).0 == self.node_id
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(160);
        v.extend_from_slice(&self.node_id);
        v.extend_from_slice(&self.x25519);
        v.extend_from_slice(&self.ed25519);
        encode_addr(&self.addr, &mut v);
        v.extend_from_slice(&(self.handshake.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.handshake);
        v
    }
    pub fn decode(b: &[u8]) -> Result<Extend, CellError> {
        let mut r = Reader(b);
        let f = |e: DescriptorError| malformed("EXTEND", e);
        let node_id = r.arr().map_err(f)?;
        let x25519 = r.arr().map_err(f)?;
        let ed25519 = r.arr().map_err(f)?;
        let addr = decode_addr(&mut r).map_err(f)?;
        let n = r.u16().map_err(f)? as usize;
        let handshake = r.take(n).map_err(f)?.to_vec();
        Ok(Extend {
            node_id,
            x25519,
            ed25519,
            addr,
            handshake,
        })
    }
}

/// BEGIN / RESOLVE / END payloads are UTF-8 text ("host:port", "name", reason text after a code byte).
pub fn encode_end(why: u8, text: &str) -> Vec<u8> {
    let mut v = vec![why];
    let t = text.as_bytes();
    v.extend_from_slice(&t[..t.len().min(RELAY_DATA_MAX - 1)]);
    v
}

pub fn decode_end(b: &[u8]) -> (u8, String) {
    match b.split_first() {
        Some((r, t)) => (*r, String::from_utf8_lossy(t).into_owned()),
        None => (reason::MISC, String::new()),
    }
}

/// DATAGRAM: `addr | payload` (addr as in descriptors). Client→exit addr is the destination,
/// exit→client addr is the source.
pub fn encode_datagram(addr: &SocketAddr, payload: &[u8]) -> Result<Vec<u8>, CellError> {
    let mut v = Vec::with_capacity(payload.len() + 19);
    encode_addr(addr, &mut v);
    v.extend_from_slice(payload);
    if v.len() > RELAY_DATA_MAX {
        return Err(CellError::TooLong(v.len()));
    }
    Ok(v)
}

pub fn decode_datagram(b: &[u8]) -> Result<(SocketAddr, &[u8]), CellError> {
    let mut r = Reader(b);
    let a = decode_addr(&mut r).map_err(|e| malformed("DATAGRAM", e))?;
    Ok((a, r.0))
}

/// RESOLVED: `status:u8 (0 ok) | n:u8 | n * addr(port 0)` or `status != 0 | text`.
pub fn encode_resolved(ips: &[std::net::IpAddr]) -> Vec<u8> {
    let mut v = vec![0u8, ips.len().min(64) as u8];
    for ip in ips.iter().take(64) {
        encode_addr(&SocketAddr::new(*ip, 0), &mut v);
    }
    v
}

pub fn decode_resolved(b: &[u8]) -> Result<Result<Vec<std::net::IpAddr>, String>, CellError> {
    let mut r = Reader(b);
    let st = r.u8().map_err(|e| malformed("RESOLVED", e))?;
    if st != 0 {
        return Ok(Err(String::from_utf8_lossy(r.0).into_owned()));
    }
    let n = r.u8().map_err(|e| malformed("RESOLVED", e))?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(
            decode_addr(&mut r)
                .map_err(|e| malformed("RESOLVED", e))?
                .ip(),
        );
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_roundtrip_and_bounds() {
        let mut c = new_cell(7, cmd::RELAY);
        write_relay(body_mut(&mut c), rcmd::DATA, 9, b"hello").unwrap();
        let m = read_relay(body(&c)).unwrap();
        assert_eq!(
            m,
            RelayMsg {
                cmd: rcmd::DATA,
                stream: 9,
                data: b"hello"
            }
        );
        assert_eq!(circ_id(&c), 7);
        assert_eq!(
            write_relay(
                body_mut(&mut c),
                rcmd::DATA,
                9,
                &vec![0; RELAY_DATA_MAX + 1]
            ),
            Err(CellError::TooLong(RELAY_DATA_MAX + 1))
        );
        body_mut(&mut c)[25..27].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(read_relay(body(&c)), Err(CellError::BadLength(_))));
    }

    #[test]
    fn extend_and_datagram_roundtrip() {
        let e = Extend {
            node_id: [1; 32],
            x25519: [2; 32],
            ed25519: [4; 32],
            addr: "127.0.0.1:9".parse().unwrap(),
            handshake: vec![3; 48],
        };
        assert_eq!(Extend::decode(&e.encode()).unwrap(), e);
        assert!(Extend::decode(&e.encode()[..100]).is_err());
        // the id is not the one the keys derive
        assert!(!e.identity_matches());
        let a: SocketAddr = "[::1]:53".parse().unwrap();
        let d = encode_datagram(&a, b"q").unwrap();
        assert_eq!(decode_datagram(&d).unwrap(), (a, &b"q"[..]));
        let r = encode_resolved(&["1.2.3.4".parse().unwrap()]);
        assert_eq!(
            decode_resolved(&r).unwrap().unwrap(),
            vec!["1.2.3.4".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn extend_identity_is_checked_against_both_keys() {
        let id = crate::identity::Identity::generate();
        let good = Extend {
            node_id: id.node_id().0,
            x25519: id.x25519_public(),
            ed25519: id.ed25519_public(),
            addr: "127.0.0.1:9".parse().unwrap(),
            handshake: vec![],
        };
        assert!(good.identity_matches());
        let other = crate::identity::Identity::generate();
        // someone else's onion key under this id (the "invisible extra hop" attack)
        let swapped_x = Extend {
            x25519: other.x25519_public(),
            ..good.clone()
        };
        assert!(!swapped_x.identity_matches());
        let swapped_ed = Extend {
            ed25519: other.ed25519_public(),
            ..good
        };
        assert!(!swapped_ed.identity_matches());
    }

    #[test]
    fn circuit_ids_are_split_by_who_dialed() {
        assert!(is_dialer_circ_id(CIRC_ID_DIALER_BIT | 1));
        assert!(is_dialer_circ_id(u32::MAX));
        assert!(!is_dialer_circ_id(1));
        assert!(!is_dialer_circ_id(0));
        assert!(!is_dialer_circ_id(CIRC_ID_DIALER_BIT));
    }

    #[test]
    fn lp_cell_checks_length() {
        let c = lp_cell(1, cmd::CREATE, b"abc").unwrap();
        assert_eq!(lp_payload(&c).unwrap(), b"abc");
        let mut bad = c.clone();
        bad[5..7].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(lp_payload(&bad).is_err());
    }
}

//! DHT messages and their strict, bounded binary encoding.
//!
//! ```text
//! message  = version:u8(=1) kind:u8 txid:u64 body
//! PING        kind 1  (empty)
//! PONG        kind 2  (empty)
//! FIND_NODE   kind 3  target:[32]
//! NODES       kind 4  count:u8 contact*count
//! FIND_VALUE  kind 5  key:[32]
//! VALUES      kind 6  count:u8 record*count  closer:u8 contact*closer
//! STORE       kind 7  record
//! STORED      kind 8  (empty)
//! ERROR       kind 9  code:u16 len:u16 reason:[len] (UTF-8)
//! contact  = id:[32] len:u16 descriptor:[len]
//! record   = see record.rs
//! ```
//! Every length is checked against the remaining input and against the limits below before anything
//! is allocated; trailing bytes are an error.

use super::id::Key;
use super::record::Record;

pub const VERSION: u8 = 1;
/// Largest encoded message accepted.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Largest descriptor carried in a contact.
pub const MAX_DESCRIPTOR: usize = 2048;
/// Most contacts in one reply.
pub const MAX_CONTACTS: usize = 20;
/// Most records in one reply.
pub const MAX_RECORDS: usize = 16;
/// Longest error reason.
pub const MAX_REASON: usize = 256;

/// A DHT node as other nodes learn it: its id and its signed descriptor (opaque here; the runtime
/// verifies it and checks that it names this id before it trusts the contact).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub id: Key,
    pub descriptor: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Ping,
    FindNode(Key),
    FindValue(Key),
    Store(Record),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Pong,
    Nodes(Vec<Contact>),
    Values {
        records: Vec<Record>,
        closer: Vec<Contact>,
    },
    Stored,
    Error {
        code: u16,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request { txid: u64, req: Request },
    Response { txid: u64, resp: Response },
}

/// Error codes carried in ERROR replies.
pub mod code {
    pub const MALFORMED: u16 = 1;
    pub const REJECTED: u16 = 2;
    pub const FULL: u16 = 3;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhtError {
    #[error("DHT message truncated: needed {needed} more bytes for {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("DHT message too large: {0} bytes (limit {MAX_MESSAGE})")]
    TooLarge(usize),
    #[error("unsupported DHT message version {0}")]
    Version(u8),
    #[error("unknown DHT message kind {0}")]
    Kind(u8),
    #[error("DHT message has {0} trailing bytes")]
    Trailing(usize),
    #[error("DHT {what} over limit: {got} > {max}")]
    Limit {
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("DHT error reason is not UTF-8")]
    Utf8,
    #[error("unknown record kind {0}")]
    RecordKind(u8),
    #[error("record signature does not verify")]
    BadSignature,
    #[error("record public key is not a valid Ed25519 key")]
    BadPublicKey,
    #[error("record expired")]
    Expired,
    #[error("record expiry is too far in the future")]
    TooFarInFuture,
    #[error("swarm entry could not be decrypted (wrong infohash or tampered)")]
    Decrypt,
    #[error("record rejected: {0}")]
    Rejected(String),
}

/// A cursor that reads with bounds checks and never panics.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DhtError> {
        let rest = self.buf.len() - self.pos;
        if n > rest {
            return Err(DhtError::Truncated {
                what,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DhtError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DhtError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DhtError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn array32(&mut self, what: &'static str) -> Result<[u8; 32], DhtError> {
        let b = self.take(32, what)?;
        let mut a = [0u8; 32];
        a.copy_from_slice(b);
        Ok(a)
    }
    pub(crate) fn finish(&self) -> Result<(), DhtError> {
        let rest = self.buf.len() - self.pos;
        if rest != 0 {
            return Err(DhtError::Trailing(rest));
        }
        Ok(())
    }
}

fn limit(what: &'static str, got: usize, max: usize) -> Result<(), DhtError> {
    if got > max {
        return Err(DhtError::Limit { what, got, max });
    }
    Ok(())
}

impl Contact {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        let d = &self.descriptor[..self.descriptor.len().min(MAX_DESCRIPTOR)];
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Contact, DhtError> {
        let id = Key(r.array32("contact id")?);
        let len = r.u16("descriptor length")? as usize;
        limit("descriptor", len, MAX_DESCRIPTOR)?;
        let descriptor = r.take(len, "descriptor")?.to_vec();
        Ok(Contact { id, descriptor })
    }
}

fn decode_contacts(r: &mut Reader<'_>) -> Result<Vec<Contact>, DhtError> {
    let n = r.u8("contact count")? as usize;
    limit("contacts", n, MAX_CONTACTS)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Contact::decode(r)?);
    }
    Ok(v)
}

fn encode_contacts(cs: &[Contact], out: &mut Vec<u8>) {
    let cs = &cs[..cs.len().min(MAX_CONTACTS)];
    out.push(cs.len() as u8);
    for c in cs {
        c.encode(out);
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        match self {
            Message::Request { txid, req } => match req {
                Request::Ping => header(&mut out, 1, *txid),
                Request::FindNode(k) => {
                    header(&mut out, 3, *txid);
                    out.extend_from_slice(&k.0);
                }
                Request::FindValue(k) => {
                    header(&mut out, 5, *txid);
                    out.extend_from_slice(&k.0);
                }
                Request::Store(rec) => {
                    header(&mut out, 7, *txid);
                    rec.encode(&mut out);
                }
            },
            Message::Response { txid, resp } => match resp {
                Response::Pong => header(&mut out, 2, *txid),
                Response::Nodes(cs) => {
                    header(&mut out, 4, *txid);
                    encode_contacts(cs, &mut out);
                }
                Response::Values { records, closer } => {
                    header(&mut out, 6, *txid);
                    let rs = &records[..records.len().min(MAX_RECORDS)];
                    out.push(rs.len() as u8);
                    for rec in rs {
                        rec.encode(&mut out);
                    }
                    encode_contacts(closer, &mut out);
                }
                Response::Stored => header(&mut out, 8, *txid),
                Response::Error { code, reason } => {
                    header(&mut out, 9, *txid);
                    out.extend_from_slice(&code.to_be_bytes());
                    let mut end = reason.len().min(MAX_REASON);
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    out.extend_from_slice(&(end as u16).to_be_bytes());
                    out.extend_from_slice(&reason.as_bytes()[..end]);
                }
            },
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Message, DhtError> {
        if buf.len() > MAX_MESSAGE {
            return Err(DhtError::TooLarge(buf.len()));
        }
        let mut r = Reader::new(buf);
        let v = r.u8("version")?;
        if v != VERSION {
            return Err(DhtError::Version(v));
        }
        let kind = r.u8("kind")?;
        let txid = r.u64("transaction id")?;
        let m = match kind {
            1 => Message::Request {
                txid,
                req: Request::Ping,
            },
            2 => Message::Response {
                txid,
                resp: Response::Pong,
            },
            3 => Message::Request {
                txid,
                req: Request::FindNode(Key(r.array32("target")?)),
            },
            4 => Message::Response {
                txid,
                resp: Response::Nodes(decode_contacts(&mut r)?),
            },
            5 => Message::Request {
                txid,
                req: Request::FindValue(Key(r.array32("key")?)),
            },
            6 => {
                let n = r.u8("record count")? as usize;
                limit("records", n, MAX_RECORDS)?;
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    records.push(Record::decode(&mut r)?);
                }
                let closer = decode_contacts(&mut r)?;
                Message::Response {
                    txid,
                    resp: Response::Values { records, closer },
                }
            }
            7 => Message::Request {
                txid,
                req: Request::Store(Record::decode(&mut r)?),
            },
            8 => Message::Response {
                txid,
                resp: Response::Stored,
            },
            9 => {
                let code = r.u16("error code")?;
                let len = r.u16("reason length")? as usize;
                limit("reason", len, MAX_REASON)?;
                let reason = std::str::from_utf8(r.take(len, "reason")?)
                    .map_err(|_| DhtError::Utf8)?
                    .to_string();
                Message::Response {
                    txid,
                    resp: Response::Error { code, reason },
                }
            }
            k => return Err(DhtError::Kind(k)),
        };
        r.finish()?;
        Ok(m)
    }
}

fn header(out: &mut Vec<u8>, kind: u8, txid: u64) {
    out.push(kind);
    out.extend_from_slice(&txid.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::record::RecordKind;

    fn contact(b: u8) -> Contact {
        Contact {
            id: Key([b; 32]),
            descriptor: vec![b; 40],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let rec = Record::sign(&sk, Key([1; 32]), RecordKind::Swarm, 3, 1_000, vec![5; 100]);
        let msgs = vec![
            Message::Request {
                txid: 1,
                req: Request::Ping,
            },
            Message::Request {
                txid: 2,
                req: Request::FindNode(Key([3; 32])),
            },
            Message::Request {
                txid: 3,
                req: Request::FindValue(Key([4; 32])),
            },
            Message::Request {
                txid: 4,
                req: Request::Store(rec.clone()),
            },
            Message::Response {
                txid: 5,
                resp: Response::Pong,
            },
            Message::Response {
                txid: 6,
                resp: Response::Nodes(vec![contact(1), contact(2)]),
            },
            Message::Response {
                txid: 7,
                resp: Response::Values {
                    records: vec![rec],
                    closer: vec![contact(3)],
                },
            },
            Message::Response {
                txid: 8,
                resp: Response::Stored,
            },
            Message::Response {
                txid: 9,
                resp: Response::Error {
                    code: code::FULL,
                    reason: "store full".into(),
                },
            },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(Message::decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        assert!(matches!(
            Message::decode(&[]),
            Err(DhtError::Truncated { .. })
        ));
        assert_eq!(
            Message::decode(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DhtError::Version(2))
        );
        assert_eq!(
            Message::decode(&[1, 99, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DhtError::Kind(99))
        );
        let mut ping = Message::Request {
            txid: 1,
            req: Request::Ping,
        }
        .encode();
        ping.push(0);
        assert_eq!(Message::decode(&ping), Err(DhtError::Trailing(1)));
        // a NODES reply claiming 200 contacts is refused before allocating
        let mut b = vec![1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 200];
        b.extend_from_slice(&[0; 10]);
        assert!(matches!(
            Message::decode(&b),
            Err(DhtError::Limit {
                what: "contacts",
                ..
            })
        ));
        // a descriptor length beyond the remaining bytes
        let mut b = vec![1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        b.extend_from_slice(&[0; 32]);
        b.extend_from_slice(&100u16.to_be_bytes());
        assert!(matches!(
            Message::decode(&b),
            Err(DhtError::Truncated { .. })
        ));
        assert!(matches!(
            Message::decode(&vec![1; MAX_MESSAGE + 1]),
            Err(DhtError::TooLarge(_))
        ));
    }

    #[test]
    fn truncation_anywhere_is_an_error_not_a_panic() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let rec = Record::sign(&sk, Key([1; 32]), RecordKind::Swarm, 3, 1_000, vec![5; 50]);
        let m = Message::Response {
            txid: 7,
            resp: Response::Values {
                records: vec![rec],
                closer: vec![contact(3)],
            },
        };
        let b = m.encode();
        for cut in 0..b.len() {
            assert!(Message::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
    }
}

//! BitTorrent peer wire protocol (BEP 3) codec, sans-IO: the handshake and length-prefixed
//! messages, with a hard cap on message length. Also the BEP 10 extended-message envelope and
//! the BEP 6 message ids (decoded so that a peer sending them is not dropped).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// Standard block size requested from peers.
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest block we accept a request for (BEP 3 says 16 KiB; some clients ask 32 KiB or more).
pub const MAX_REQUEST_LEN: u32 = 128 * 1024;
/// Default cap on one message (a 1M-piece bitfield is 128 KiB; a piece message is 16 KiB + 9).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 256 * 1024 + 16;

/// Reserved-bit masks.
pub const RESERVED_EXTENSION_PROTOCOL: (usize, u8) = (5, 0x10); // BEP 10
pub const RESERVED_FAST: (usize, u8) = (7, 0x04); // BEP 6

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("handshake does not start with \\x13BitTorrent protocol")]
    BadProtocol,
    #[error("message of {len} bytes exceeds the limit of {max}")]
    Oversize { len: usize, max: usize },
    #[error("message id {id} with a payload of {len} bytes has the wrong length")]
    BadLength { id: u8, len: usize },
}

/// The 68-byte opening of every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[RESERVED_EXTENSION_PROTOCOL.0] |= RESERVED_EXTENSION_PROTOCOL.1;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[RESERVED_EXTENSION_PROTOCOL.0] & RESERVED_EXTENSION_PROTOCOL.1 != 0
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Decode the first 48 bytes (everything up to and including the infohash); the receiver of a
    /// connection needs the infohash before it answers, and the peer id may follow later.
    pub fn decode_prefix(buf: &[u8; 48]) -> Result<([u8; 8], [u8; 20]), WireError> {
        if buf[0] != 19 || &buf[1..20] != PROTOCOL {
            return Err(WireError::BadProtocol);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&buf[20..28]);
        let mut ih = [0u8; 20];
        ih.copy_from_slice(&buf[28..48]);
        Ok((reserved, ih))
    }

    pub fn decode(buf: &[u8; HANDSHAKE_LEN]) -> Result<Self, WireError> {
        let mut prefix = [0u8; 48];
        prefix.copy_from_slice(&buf[..48]);
        let (reserved, info_hash) = Self::decode_prefix(&prefix)?;
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&buf[48..68]);
        Ok(Handshake {
            reserved,
            info_hash,
            peer_id,
        })
    }
}

/// One peer wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bytes),
    Request(BlockRef),
    Piece {
        index: u32,
        begin: u32,
        data: Bytes,
    },
    Cancel(BlockRef),
    Port(u16),
    // BEP 6
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    AllowedFast(u32),
    /// BEP 10: extended message id and its payload.
    Extended {
        id: u8,
        payload: Bytes,
    },
    Unknown {
        id: u8,
        payload: Bytes,
    },
}

/// A block: piece index, offset inside the piece, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

impl Message {
    /// Append the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Message::KeepAlive => out.put_u32(0),
            Message::Choke => simple(out, 0),
            Message::Unchoke => simple(out, 1),
            Message::Interested => simple(out, 2),
            Message::NotInterested => simple(out, 3),
            Message::Have(i) => {
                out.put_u32(5);
                out.put_u8(4);
                out.put_u32(*i);
            }
            Message::Bitfield(b) => {
                out.put_u32(1 + b.len() as u32);
                out.put_u8(5);
                out.put_slice(b);
            }
            Message::Request(r) => block(out, 6, r),
            Message::Piece { index, begin, data } => {
                out.put_slice(&piece_header(*index, *begin, data.len()));
                out.put_slice(data);
            }
            Message::Cancel(r) => block(out, 8, r),
            Message::Port(p) => {
                out.put_u32(3);
                out.put_u8(9);
                out.put_u16(*p);
            }
            Message::Suggest(i) => {
                out.put_u32(5);
                out.put_u8(0x0d);
                out.put_u32(*i);
            }
            Message::HaveAll => simple(out, 0x0e),
            Message::HaveNone => simple(out, 0x0f),
            Message::Reject(r) => block(out, 0x10, r),
            Message::AllowedFast(i) => {
                out.put_u32(5);
                out.put_u8(0x11);
                out.put_u32(*i);
            }
            Message::Extended { id, payload } => {
                out.put_u32(2 + payload.len() as u32);
                out.put_u8(20);
                out.put_u8(*id);
                out.put_slice(payload);
            }
            Message::Unknown { id, payload } => {
                out.put_u32(1 + payload.len() as u32);
                out.put_u8(*id);
                out.put_slice(payload);
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Try to decode one message from the front of `buf`. Returns `Ok(None)` if more bytes are
    /// needed; a declared length over `max_len` is an error before any of it is buffered.
    pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Message>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > max_len {
            return Err(WireError::Oversize { len, max: max_len });
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        if len == 0 {
            return Ok(Some(Message::KeepAlive));
        }
        let mut body = buf.split_to(len);
        let id = body.get_u8();
        let plen = len - 1;
        let need = |n: usize| -> Result<(), WireError> {
            if plen == n {
                Ok(())
            } else {
                Err(WireError::BadLength { id, len: plen })
            }
        };
        let msg = match id {
            0 => need(0).map(|_| Message::Choke)?,
            1 => need(0).map(|_| Message::Unchoke)?,
            2 => need(0).map(|_| Message::Interested)?,
            3 => need(0).map(|_| Message::NotInterested)?,
            4 => {
                need(4)?;
                Message::Have(body.get_u32())
            }
            5 => Message::Bitfield(body.freeze()),
            6 | 8 | 0x10 => {
                need(12)?;
                let r = BlockRef {
                    index: body.get_u32(),
                    begin: body.get_u32(),
                    length: body.get_u32(),
                };
                match id {
                    6 => Message::Request(r),
                    8 => Message::Cancel(r),
                    _ => Message::Reject(r),
                }
            }
            7 => {
                if plen < 8 {
                    return Err(WireError::BadLength { id, len: plen });
                }
                let index = body.get_u32();
                let begin = body.get_u32();
                Message::Piece {
                    index,
                    begin,
                    data: body.freeze(),
                }
            }
            9 => {
                need(2)?;
                Message::Port(body.get_u16())
            }
            0x0d => {
                need(4)?;
                Message::Suggest(body.get_u32())
            }
            0x0e => need(0).map(|_| Message::HaveAll)?,
            0x0f => need(0).map(|_| Message::HaveNone)?,
            0x11 => {
                need(4)?;
                Message::AllowedFast(body.get_u32())
            }
            20 => {
                if plen < 1 {
                    return Err(WireError::BadLength { id, len: plen });
                }
                let eid = body.get_u8();
                Message::Extended {
                    id: eid,
                    payload: body.freeze(),
                }
            }
            _ => Message::Unknown {
                id,
                payload: body.freeze(),
            },
        };
        Ok(Some(msg))
    }
}

/// The 13-byte header of a `piece` message carrying `data_len` bytes.
pub fn piece_header(index: u32, begin: u32, data_len: usize) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[..4].copy_from_slice(&(9 + data_len as u32).to_be_bytes());
    h[4] = 7;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..13].copy_from_slice(&begin.to_be_bytes());
    h
}

fn simple(out: &mut BytesMut, id: u8) {
    out.put_u32(1);
    out.put_u8(id);
}

fn block(out: &mut BytesMut, id: u8, r: &BlockRef) {
    out.put_u32(13);
    out.put_u8(id);
    out.put_u32(r.index);
    out.put_u32(r.begin);
    out.put_u32(r.length);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Message) {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        let got = Message::decode(&mut b, DEFAULT_MAX_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(got, m);
        assert!(b.is_empty());
    }

    #[test]
    fn messages_roundtrip() {
        let r = BlockRef {
            index: 3,
            begin: 16384,
            length: 16384,
        };
        for m in [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(7),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Request(r),
            Message::Cancel(r),
            Message::Reject(r),
            Message::Piece {
                index: 1,
                begin: 0,
                data: Bytes::from_static(b"hello"),
            },
            Message::Port(6881),
            Message::HaveAll,
            Message::HaveNone,
            Message::AllowedFast(2),
            Message::Suggest(9),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"d1:md11:ut_metadatai1eee"),
            },
            Message::Unknown {
                id: 99,
                payload: Bytes::from_static(b"x"),
            },
        ] {
            roundtrip(m);
        }
    }

    #[test]
    fn partial_input_waits_and_oversize_fails() {
        let mut b = BytesMut::new();
        Message::Have(1).encode(&mut b);
        let mut part = BytesMut::from(&b[..6]);
        assert_eq!(Message::decode(&mut part, 100).unwrap(), None);
        part.extend_from_slice(&b[6..]);
        assert_eq!(
            Message::decode(&mut part, 100).unwrap(),
            Some(Message::Have(1))
        );
        let mut big = BytesMut::from(&[0u8, 0x10, 0, 0, 7][..]);
        assert_eq!(
            Message::decode(&mut big, 1000),
            Err(WireError::Oversize {
                len: 0x100000,
                max: 1000
            })
        );
        let mut bad = BytesMut::from(&[0u8, 0, 0, 2, 4, 1][..]);
        assert!(matches!(
            Message::decode(&mut bad, 1000),
            Err(WireError::BadLength { id: 4, .. })
        ));
    }

    #[test]
    fn handshake_roundtrip() {
        let h = Handshake::new([1; 20], [2; 20]);
        let e = h.encode();
        assert_eq!(Handshake::decode(&e).unwrap(), h);
        assert!(h.supports_extensions());
        let mut bad = e;
        bad[3] = b'x';
        assert_eq!(Handshake::decode(&bad), Err(WireError::BadProtocol));
    }
}

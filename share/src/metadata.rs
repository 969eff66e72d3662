//! Extension protocol handshake (BEP 10) and metadata exchange (BEP 9, `ut_metadata`), sans-IO.
//!
//! [`MetadataFetcher`] assembles the info dict from 16 KiB pieces sent by peers and only hands it
//! out once its SHA-1 equals the infohash; a mismatch names the peers that sent pieces so that
//! the session can ban them. [`serve_piece`] answers requests when we have the metadata.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::bencode::{self, Limits, Value};
use crate::picker::PeerKey;

/// BEP 9 metadata piece size.
pub const METADATA_PIECE: usize = 16 * 1024;
/// Largest metadata we accept (an info dict with 16 MiB of piece hashes is already absurd).
pub const MAX_METADATA_SIZE: usize = 16 * 1024 * 1024;
/// Our extended-message ids (what we put in `m`).
pub const OUR_UT_METADATA: u8 = 1;
pub const OUR_UT_PEX: u8 = 2;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("extension message is not valid bencode: {0}")]
    Bencode(#[from] bencode::BencodeError),
    #[error("extension message is missing or has a bad field {0:?}")]
    BadField(&'static str),
    #[error("metadata size {0} is out of bounds")]
    BadSize(i64),
    #[error("metadata piece {piece} has {got} bytes, expected {expected}")]
    BadPieceLength {
        piece: u32,
        got: usize,
        expected: usize,
    },
    #[error("metadata does not hash to the infohash; sent by peers {0:?}")]
    HashMismatch(Vec<PeerKey>),
}

/// The peer's BEP 10 handshake, the parts we use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Peer's id for `ut_metadata` (0 or absent: unsupported).
    pub ut_metadata: Option<u8>,
    pub ut_pex: Option<u8>,
    pub metadata_size: Option<usize>,
    /// Peer's request queue size (`reqq`).
    pub reqq: Option<u32>,
    pub client: Option<String>,
}

impl ExtHandshake {
    pub fn encode(metadata_size: Option<usize>, client: &str, reqq: u32) -> Vec<u8> {
        let mut m = BTreeMap::new();
        m.insert(b"ut_metadata".to_vec(), Value::Int(OUR_UT_METADATA as i64));
        let mut d = BTreeMap::new();
        d.insert(b"m".to_vec(), Value::Dict(m));
        if let Some(s) = metadata_size {
            d.insert(b"metadata_size".to_vec(), Value::Int(s as i64));
        }
        d.insert(b"reqq".to_vec(), Value::Int(reqq as i64));
        d.insert(b"v".to_vec(), Value::Bytes(client.as_bytes().to_vec()));
        bencode::encode(&Value::Dict(d))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, MetadataError> {
        let v = bencode::decode_with(payload, &Limits::wire())?;
        if v.as_dict().is_none() {
            return Err(MetadataError::BadField("handshake dict"));
        }
        let id = |name: &[u8]| {
            v.get(b"m")
                .and_then(|m| m.get(name))
                .and_then(Value::as_int)
                .filter(|&i| (1..=255).contains(&i))
                .map(|i| i as u8)
        };
        let metadata_size = match v.get(b"metadata_size").and_then(Value::as_int) {
            Some(s) if s > 0 && (s as usize) <= MAX_METADATA_SIZE => Some(s as usize),
            Some(s) => return Err(MetadataError::BadSize(s)),
            None => None,
        };
        Ok(ExtHandshake {
            ut_metadata: id(b"ut_metadata"),
            ut_pex: id(b"ut_pex"),
            metadata_size,
            reqq: v
                .get(b"reqq")
                .and_then(Value::as_int)
                .filter(|&r| r > 0)
                .map(|r| r.min(100_000) as u32),
            client: v.get(b"v").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// A decoded `ut_metadata` message.
#[derive(Debug, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    Request(u32),
    Data {
        piece: u32,
        total_size: usize,
        data: &'a [u8],
    },
    Reject(u32),
}

impl<'a> MetadataMsg<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, MetadataError> {
        let (v, used) = bencode::decode_prefix_with(payload, &Limits::wire())?;
        let msg_type = v
            .get(b"msg_type")
            .and_then(Value::as_int)
            .ok_or(MetadataError::BadField("msg_type"))?;
        let piece = v
            .get(b"piece")
            .and_then(Value::as_int)
            .filter(|&p| (0..=(MAX_METADATA_SIZE / METADATA_PIECE) as i64).contains(&p))
            .ok_or(MetadataError::BadField("piece"))? as u32;
        match msg_type {
            0 => Ok(MetadataMsg::Request(piece)),
            1 => {
                let total = v
                    .get(b"total_size")
                    .and_then(Value::as_int)
                    .ok_or(MetadataError::BadField("total_size"))?;
                if total <= 0 || total as usize > MAX_METADATA_SIZE {
                    return Err(MetadataError::BadSize(total));
                }
                Ok(MetadataMsg::Data {
                    piece,
                    total_size: total as usize,
                    data: &payload[used..],
                })
            }
            2 => Ok(MetadataMsg::Reject(piece)),
            _ => Err(MetadataError::BadField("msg_type")),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = BTreeMap::new();
        let (t, piece) = match self {
            MetadataMsg::Request(p) => (0, *p),
            MetadataMsg::Data { piece, .. } => (1, *piece),
            MetadataMsg::Reject(p) => (2, *p),
        };
        d.insert(b"msg_type".to_vec(), Value::Int(t));
        d.insert(b"piece".to_vec(), Value::Int(piece as i64));
        if let MetadataMsg::Data { total_size, .. } = self {
            d.insert(b"total_size".to_vec(), Value::Int(*total_size as i64));
        }
        let mut out = bencode::encode(&Value::Dict(d));
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }
}

/// Answer a request for metadata piece `piece` from the full info dict `raw`.
pub fn serve_piece(raw: &[u8], piece: u32) -> Vec<u8> {
    let start = piece as usize * METADATA_PIECE;
    if start >= raw.len() {
        return MetadataMsg::Reject(piece).encode();
    }
    let end = (start + METADATA_PIECE).min(raw.len());
    MetadataMsg::Data {
        piece,
        total_size: raw.len(),
        data: &raw[start..end],
    }
    .encode()
}

/// Collects metadata pieces from peers until the info dict hashes to the infohash.
#[derive(Debug)]
pub struct MetadataFetcher {
    info_hash: [u8; 20],
    size: Option<usize>,
    buf: Vec<u8>,
    /// Per piece: None = missing, Some((peer, received)).
    pieces: Vec<PieceState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PieceState {
    Missing,
    Requested(PeerKey),
    Have(PeerKey),
}

impl MetadataFetcher {
    pub fn new(info_hash: [u8; 20]) -> Self {
        MetadataFetcher {
            info_hash,
            size: None,
            buf: Vec::new(),
            pieces: Vec::new(),
        }
    }

    pub fn size(&self) -> Option<usize> {
        self.size
    }

    /// A peer announced `metadata_size`. The first plausible size is adopted; a peer announcing
    /// another size is not asked (returns false).
    pub fn offer_size(&mut self, size: usize) -> bool {
        if size == 0 || size > MAX_METADATA_SIZE {
            return false;
        }
        match self.size {
            Some(s) => s == size,
            None => {
                self.size = Some(size);
                self.buf = vec![0; size];
                self.pieces = vec![PieceState::Missing; size.div_ceil(METADATA_PIECE)];
                true
            }
        }
    }

    /// Next piece to ask `peer` for: a missing one, else one requested from another peer.
    pub fn next_request(&mut self, peer: PeerKey) -> Option<u32> {
        let i = self
            .pieces
            .iter()
            .position(|p| *p == PieceState::Missing)
            .or_else(|| {
                self.pieces
                    .iter()
                    .position(|p| matches!(p, PieceState::Requested(q) if *q != peer))
            })?;
        self.pieces[i] = PieceState::Requested(peer);
        Some(i as u32)
    }

    /// The peer rejected or vanished: make its pieces missing again.
    pub fn peer_gone(&mut self, peer: PeerKey) {
        for p in &mut self.pieces {
            if *p == PieceState::Requested(peer) {
                *p = PieceState::Missing;
            }
        }
    }

    /// A data message arrived. Returns the verified info dict once complete.
    pub fn on_data(
        &mut self,
        peer: PeerKey,
        piece: u32,
        total_size: usize,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, MetadataError> {
        let Some(size) = self.size else {
            return Err(MetadataError::BadSize(total_size as i64));
        };
        if total_size != size {
            return Err(MetadataError::BadSize(total_size as i64));
        }
        let idx = piece as usize;
        let Some(state) = self.pieces.get(idx).copied() else {
            return Err(MetadataError::BadField("piece"));
        };
        let start = idx * METADATA_PIECE;
        let expected = (size - start).min(METADATA_PIECE);
        if data.len() != expected {
            return Err(MetadataError::BadPieceLength {
                piece,
                got: data.len(),
                expected,
            });
        }
        if matches!(state, PieceState::Have(_)) {
            return Ok(None);
        }
        self.buf[start..start + expected].copy_from_slice(data);
        self.pieces[idx] = PieceState::Have(peer);
        if self.pieces.iter().all(|p| matches!(p, PieceState::Have(_))) {
            if Sha1::digest(&self.buf)[..] == self.info_hash[..] {
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            let mut senders: Vec<PeerKey> = self
                .pieces
                .iter()
                .filter_map(|p| match p {
                    PieceState::Have(k) => Some(*k),
                    _ => None,
                })
                .collect();
            senders.sort_unstable();
            senders.dedup();
            // start over: the size may have been a lie as well.
            self.size = None;
            self.buf.clear();
            self.pieces.clear();
            return Err(MetadataError::HashMismatch(senders));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_of(len: usize) -> (Vec<u8>, [u8; 20]) {
        let raw: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let h: [u8; 20] = Sha1::digest(&raw).into();
        (raw, h)
    }

    #[test]
    fn handshake_roundtrip() {
        let e = ExtHandshake::encode(Some(1234), "warren/0.1", 500);
        let d = ExtHandshake::decode(&e).unwrap();
        assert_eq!(d.ut_metadata, Some(OUR_UT_METADATA));
        assert_eq!(d.metadata_size, Some(1234));
        assert_eq!(d.reqq, Some(500));
        assert_eq!(d.client.as_deref(), Some("warren/0.1"));
        assert!(ExtHandshake::decode(b"d13:metadata_sizei-5ee").is_err());
        assert!(ExtHandshake::decode(b"i3e").is_err());
    }

    #[test]
    fn fetch_from_two_peers_and_verify() {
        let (raw, h) = info_of(40_000);
        let mut f = MetadataFetcher::new(h);
        assert!(f.offer_size(raw.len()));
        assert!(!f.offer_size(5));
        let a = f.next_request(1).unwrap();
        let b = f.next_request(2).unwrap();
        let c = f.next_request(1).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        for (peer, p) in [(1, a), (2, b), (1, c)] {
            let msg = serve_piece(&raw, p);
            let MetadataMsg::Data {
                piece,
                total_size,
                data,
            } = MetadataMsg::decode(&msg).unwrap()
            else {
                panic!()
            };
            let r = f.on_data(peer, piece, total_size, data).unwrap();
            if p == c {
                assert_eq!(r.unwrap(), raw);
            } else {
                assert!(r.is_none());
            }
        }
    }

    #[test]
    fn bogus_metadata_names_senders() {
        let (raw, h) = info_of(20_000);
        let mut f = MetadataFetcher::new(h);
        f.offer_size(raw.len());
        f.next_request(7);
        f.next_request(8);
        let mut bad = raw.clone();
        bad[5] ^= 1;
        assert!(f.on_data(7, 0, raw.len(), &bad[..16384]).unwrap().is_none());
        assert_eq!(
            f.on_data(8, 1, raw.len(), &bad[16384..]),
            Err(MetadataError::HashMismatch(vec![7, 8]))
        );
        assert!(f.size().is_none());
        assert!(matches!(
            f.on_data(8, 1, raw.len(), &bad[16384..]),
            Err(MetadataError::BadSize(_))
        ));
    }

    #[test]
    fn reject_and_short_piece() {
        let (raw, h) = info_of(100);
        assert_eq!(
            MetadataMsg::decode(&serve_piece(&raw, 3)).unwrap(),
            MetadataMsg::Reject(3)
        );
        let mut f = MetadataFetcher::new(h);
        f.offer_size(100);
        assert!(matches!(
            f.on_data(1, 0, 100, &raw[..50]),
            Err(MetadataError::BadPieceLength { .. })
        ));
        assert_eq!(
            MetadataMsg::decode(&MetadataMsg::Request(2).encode()).unwrap(),
            MetadataMsg::Request(2)
        );
    }
}

//! `InfoHash`: the 20-byte SHA-1 of a torrent's bencoded info dictionary (BitTorrent v1).

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

/// A v1 info-hash (SHA-1 of the exact bencoded `info` dictionary bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

/// Why a textual info-hash could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoHashError {
    /// Hex form must be exactly 40 characters; base32 form exactly 32.
    #[error("info-hash has {0} characters; expected 40 (hex) or 32 (base32)")]
    BadLength(usize),
    /// Contains a character that is not valid hex.
    #[error("info-hash is not valid hex: {0:?}")]
    BadHex(String),
    /// Contains a character that is not valid RFC 4648 base32.
    #[error("info-hash is not valid base32: {0:?}")]
    BadBase32(String),
}

impl InfoHash {
    /// SHA-1 of `raw_info` (the exact bencoded info dictionary).
    pub fn of_info_bytes(raw_info: &[u8]) -> InfoHash {
        let digest = Sha1::digest(raw_info);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest);
        InfoHash(out)
    }

    /// Parse 40 hex characters (either case).
    pub fn from_hex(s: &str) -> Result<InfoHash, InfoHashError> {
        if s.len() != 40 {
            return Err(InfoHashError::BadLength(s.chars().count()));
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).map_err(|_| InfoHashError::BadHex(s.to_string()))?;
        Ok(InfoHash(out))
    }

    /// Parse 32 RFC 4648 base32 characters (either case, no padding).
    pub fn from_base32(s: &str) -> Result<InfoHash, InfoHashError> {
        if s.len() != 32 {
            return Err(InfoHashError::BadLength(s.chars().count()));
        }
        let upper = s.to_ascii_uppercase();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(upper.as_bytes())
            .map_err(|_| InfoHashError::BadBase32(s.to_string()))?;
        let arr: [u8; 20] = bytes
            .try_into()
            .map_err(|_| InfoHashError::BadBase32(s.to_string()))?;
        Ok(InfoHash(arr))
    }

    /// Parse either form, chosen by length (40 = hex, 32 = base32).
    pub fn parse(s: &str) -> Result<InfoHash, InfoHashError> {
        match s.len() {
            40 => Self::from_hex(s),
            32 => Self::from_base32(s),
            _ => Err(InfoHashError::BadLength(s.chars().count())),
        }
    }

    /// Lower-case hex (40 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Upper-case base32 (32 characters).
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }

    /// The raw 20 bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

impl FromStr for InfoHash {
    type Err = InfoHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InfoHash::parse(s)
    }
}

impl From<[u8; 20]> for InfoHash {
    fn from(b: [u8; 20]) -> Self {
        InfoHash(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SHA-1("abc") = a9993e364706816aba3e25717850c26c9cd0d89d
    const ABC_HEX: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

    #[test]
    fn sha1_and_hex() {
        let h = InfoHash::of_info_bytes(b"abc");
        assert_eq!(h.to_hex(), ABC_HEX);
        assert_eq!(h.to_string(), ABC_HEX);
        assert_eq!(InfoHash::from_hex(ABC_HEX).unwrap(), h);
        assert_eq!(InfoHash::from_hex(&ABC_HEX.to_uppercase()).unwrap(), h);
    }

    #[test]
    fn base32_round_trip() {
        let h = InfoHash::from_hex(ABC_HEX).unwrap();
        let b = h.to_base32();
        assert_eq!(b.len(), 32);
        assert_eq!(b, "VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5");
        assert_eq!(InfoHash::from_base32(&b).unwrap(), h);
        assert_eq!(InfoHash::from_base32(&b.to_lowercase()).unwrap(), h);
        assert_eq!(InfoHash::parse(&b).unwrap(), h);
    }

    #[test]
    fn rejects() {
        assert_eq!(InfoHash::parse("abcd"), Err(InfoHashError::BadLength(4)));
        assert!(matches!(
            InfoHash::from_hex(&"g".repeat(40)),
            Err(InfoHashError::BadHex(_))
        ));
        assert!(matches!(
            InfoHash::from_base32(&"1".repeat(32)),
            Err(InfoHashError::BadBase32(_))
        ));
    }
}

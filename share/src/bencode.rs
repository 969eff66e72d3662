//! Bencode: a small, strict and bounded decoder plus an encoder with sorted keys.
//!
//! The decoder never allocates more than the input justifies: a string's length prefix is
//! checked against [`Limits::max_len`] and against the bytes actually left in the buffer before
//! anything is allocated; nesting is bounded by [`Limits::max_depth`] and the number of values by
//! [`Limits::max_items`]. Non-canonical input is rejected: leading zeros (`i03e`, `03:abc`),
//! negative zero (`i-0e`), duplicate dict keys, unsorted dict keys (unless
//! [`Limits::require_sorted_keys`] is off, for lenient wire messages) and trailing bytes (use
//! [`decode_prefix`] when a bencoded value is followed by a raw payload, as in ut_metadata).
//!
//! [`dict_value_span`] / [`decode_with_spans`] give the exact byte range of a top-level dict's
//! values: the info-hash is the SHA-1 of the exact `info` bytes, never of a re-encoding.

use std::collections::BTreeMap;
use std::ops::Range;

/// A decoded bencode value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`; keys are raw byte strings, kept in sorted (raw byte) order.
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum nesting of lists/dicts (the top-level container is depth 1).
    pub max_depth: usize,
    /// Maximum length of one byte string.
    pub max_len: usize,
    /// Maximum total number of values (ints, strings, lists, dicts, dict keys excluded).
    pub max_items: usize,
    /// Maximum input size in bytes.
    pub max_total: usize,
    /// Reject dicts whose keys are not in strictly ascending raw-byte order. Duplicate keys are
    /// always rejected.
    pub require_sorted_keys: bool,
}

impl Default for Limits {
    /// Sane limits for .torrent files: depth 64, 32 MiB strings, 1 M values, 64 MiB total, sorted keys.
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_len: 32 << 20,
            max_items: 1_000_000,
            max_total: 64 << 20,
            require_sorted_keys: true,
        }
    }
}

impl Limits {
    /// Limits for peer wire messages (extension handshake, ut_metadata, pex): 1 MiB total,
    /// depth 16, unsorted keys tolerated (duplicates are still rejected).
    pub fn wire() -> Self {
        Limits {
            max_depth: 16,
            max_len: 1 << 20,
            max_items: 100_000,
            max_total: 1 << 20,
            require_sorted_keys: false,
        }
    }
}

/// Why bencode input was rejected. `at` is the byte offset of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    /// Input ended inside a value.
    #[error("bencode: unexpected end of input at byte {at}")]
    UnexpectedEof { at: usize },
    /// A byte that cannot start or continue a value here.
    #[error("bencode: unexpected byte {byte:#04x} at byte {at}")]
    UnexpectedByte { at: usize, byte: u8 },
    /// Integer not in canonical form (empty, leading zero, `-0`, non-digit).
    #[error("bencode: invalid integer at byte {at} ({why})")]
    BadInt { at: usize, why: &'static str },
    /// Integer does not fit in i64.
    #[error("bencode: integer overflows i64 at byte {at}")]
    IntOverflow { at: usize },
    /// String length prefix not canonical (leading zero, too many digits, missing ':').
    #[error("bencode: invalid string length at byte {at} ({why})")]
    BadLength { at: usize, why: &'static str },
    /// String longer than `Limits::max_len`.
    #[error("bencode: string of {len} bytes at byte {at} exceeds limit {max}")]
    StringTooLong { at: usize, len: u64, max: usize },
    /// String length prefix points past the end of the input.
    #[error("bencode: string of {len} bytes at byte {at} runs past end of input")]
    StringPastEnd { at: usize, len: u64 },
    /// Nesting deeper than `Limits::max_depth`.
    #[error("bencode: nesting deeper than {max} at byte {at}")]
    TooDeep { at: usize, max: usize },
    /// More values than `Limits::max_items`.
    #[error("bencode: more than {max} values (at byte {at})")]
    TooManyItems { at: usize, max: usize },
    /// Input larger than `Limits::max_total`.
    #[error("bencode: input of {len} bytes exceeds limit {max}")]
    TooLarge { len: usize, max: usize },
    /// Dict key is not a byte string.
    #[error("bencode: dict key at byte {at} is not a byte string")]
    KeyNotString { at: usize },
    /// Dict key repeated.
    #[error("bencode: duplicate dict key {key:?} at byte {at}")]
    DuplicateKey { at: usize, key: String },
    /// Dict keys not in ascending raw-byte order.
    #[error("bencode: dict key {key:?} at byte {at} is out of order")]
    UnsortedKey { at: usize, key: String },
    /// Bytes after a complete value (use `decode_prefix` to allow them).
    #[error("bencode: {extra} trailing bytes after value ending at byte {at}")]
    TrailingBytes { at: usize, extra: usize },
    /// `dict_value_span` / `decode_with_spans` need a dict at the top level.
    #[error("bencode: top-level value is not a dict")]
    NotADict,
}

impl Value {
    /// Byte string from anything byte-like.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }
    /// Byte string from UTF-8 text.
    pub fn string(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }
    /// Dict from (key, value) pairs; later duplicates replace earlier ones.
    pub fn dict<K: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_vec(), v))
                .collect(),
        )
    }
    /// Look up `key` if this is a dict.
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key))
    }
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// The byte string as UTF-8 text, if it is one and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    /// The dict, if this is one.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Encode (keys sorted).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::string(s)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

/// Decode the whole buffer as one value with default (strict) limits.
pub fn decode(buf: &[u8]) -> Result<Value, BencodeError> {
    decode_with(buf, &Limits::default())
}

/// Decode the whole buffer as one value with the given limits.
pub fn decode_with(buf: &[u8], limits: &Limits) -> Result<Value, BencodeError> {
    let (v, end) = decode_prefix_with(buf, limits)?;
    if end != buf.len() {
        return Err(BencodeError::TrailingBytes {
            at: end,
            extra: buf.len() - end,
        });
    }
    Ok(v)
}

/// Decode one value at the start of `buf`; return it and the number of bytes it used. What
/// follows is left alone (ut_metadata `data` messages carry the raw piece after the dict).
pub fn decode_prefix(buf: &[u8]) -> Result<(Value, usize), BencodeError> {
    decode_prefix_with(buf, &Limits::default())
}

/// [`decode_prefix`] with the given limits. `max_total` applies to the value, not the payload.
pub fn decode_prefix_with(buf: &[u8], limits: &Limits) -> Result<(Value, usize), BencodeError> {
    let mut p = Parser::new(buf, limits);
    let v = p.value(0, None)?;
    Ok((v, p.pos))
}

/// A top-level dict key and the byte range of its value.
pub type KeySpan = (Vec<u8>, Range<usize>);

/// Decode the whole buffer, which must be a dict, and also return the exact byte range of each
/// top-level value (in key order).
pub fn decode_with_spans(
    buf: &[u8],
    limits: &Limits,
) -> Result<(Value, Vec<KeySpan>), BencodeError> {
    if buf.first() != Some(&b'd') {
        return Err(BencodeError::NotADict);
    }
    let mut p = Parser::new(buf, limits);
    let mut spans = Vec::new();
    let v = p.value(0, Some(&mut spans))?;
    if p.pos != buf.len() {
        return Err(BencodeError::TrailingBytes {
            at: p.pos,
            extra: buf.len() - p.pos,
        });
    }
    Ok((v, spans))
}

/// The exact byte range, within `buf`, of the value of `key` in the top-level dict. The whole
/// buffer is validated with default limits. `Ok(None)` if the key is absent.
pub fn dict_value_span(buf: &[u8], key: &[u8]) -> Result<Option<Range<usize>>, BencodeError> {
    let (_, spans) = decode_with_spans(buf, &Limits::default())?;
    Ok(spans.into_iter().find(|(k, _)| k == key).map(|(_, r)| r))
}

/// Encode with dict keys in sorted raw-byte order (the `BTreeMap` order).
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

/// Append the encoding of `v` to `out`.
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(l) => {
            out.push(b'l');
            for item in l {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(d) => {
            out.push(b'd');
            for (k, item) in d {
                encode_bytes(k, out);
                encode_into(item, out);
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

type Spans<'a> = Option<&'a mut Vec<KeySpan>>;

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    items: usize,
}

impl<'a> Parser<'a> {
    fn new(buf: &'a [u8], limits: &'a Limits) -> Self {
        Parser {
            buf,
            pos: 0,
            limits,
            items: 0,
        }
    }

    fn peek(&self) -> Result<u8, BencodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::UnexpectedEof { at: self.pos })
    }

    fn check_total(&self) -> Result<(), BencodeError> {
        if self.pos > self.limits.max_total {
            return Err(BencodeError::TooLarge {
                len: self.pos,
                max: self.limits.max_total,
            });
        }
        Ok(())
    }

    fn count_item(&mut self) -> Result<(), BencodeError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(BencodeError::TooManyItems {
                at: self.pos,
                max: self.limits.max_items,
            });
        }
        Ok(())
    }

    /// `depth` = number of enclosing containers.
    fn value(&mut self, depth: usize, spans: Spans<'_>) -> Result<Value, BencodeError> {
        self.count_item()?;
        let v = match self.peek()? {
            b'i' => Value::Int(self.int()?),
            b'0'..=b'9' => Value::Bytes(self.bytes()?.to_vec()),
            b'l' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1, None)?);
                }
                self.pos += 1;
                Value::List(items)
            }
            b'd' => {
                self.enter(depth)?;
                self.pos += 1;
                Value::Dict(self.dict_body(depth, spans)?)
            }
            byte => return Err(BencodeError::UnexpectedByte { at: self.pos, byte }),
        };
        self.check_total()?;
        Ok(v)
    }

    fn enter(&self, depth: usize) -> Result<(), BencodeError> {
        if depth + 1 > self.limits.max_depth {
            return Err(BencodeError::TooDeep {
                at: self.pos,
                max: self.limits.max_depth,
            });
        }
        Ok(())
    }

    fn dict_body(
        &mut self,
        depth: usize,
        mut spans: Spans<'_>,
    ) -> Result<BTreeMap<Vec<u8>, Value>, BencodeError> {
        let mut map: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        let mut last: Option<Vec<u8>> = None;
        while self.peek()? != b'e' {
            let key_at = self.pos;
            if !self.peek()?.is_ascii_digit() {
                return Err(BencodeError::KeyNotString { at: key_at });
            }
            let key = self.bytes()?.to_vec();
            if let Some(prev) = &last {
                if key == *prev || map.contains_key(&key) {
                    return Err(BencodeError::DuplicateKey {
                        at: key_at,
                        key: String::from_utf8_lossy(&key).into_owned(),
                    });
                }
                if self.limits.require_sorted_keys && key < *prev {
                    return Err(BencodeError::UnsortedKey {
                        at: key_at,
                        key: String::from_utf8_lossy(&key).into_owned(),
                    });
                }
            }
            let start = self.pos;
            let v = self.value(depth + 1, None)?;
            if let Some(s) = spans.as_deref_mut() {
                s.push((key.clone(), start..self.pos));
            }
            last = Some(key.clone());
            map.insert(key, v);
        }
        self.pos += 1;
        Ok(map)
    }

    fn int(&mut self) -> Result<i64, BencodeError> {
        let at = self.pos;
        self.pos += 1; // 'i'
        let start = self.pos;
        let end = match self.buf[start..].iter().position(|&b| b == b'e') {
            Some(n) => start + n,
            None => {
                // Report EOF if everything so far looks like an integer, else the bad byte.
                if let Some((i, &b)) = self.buf[start..]
                    .iter()
                    .enumerate()
                    .find(|(i, b)| !(b.is_ascii_digit() || (*i == 0 && **b == b'-')))
                {
                    return Err(BencodeError::UnexpectedByte {
                        at: start + i,
                        byte: b,
                    });
                }
                return Err(BencodeError::UnexpectedEof { at: self.buf.len() });
            }
        };
        let digits = &self.buf[start..end];
        let (neg, mag) = match digits.first() {
            Some(b'-') => (true, &digits[1..]),
            _ => (false, digits),
        };
        if mag.is_empty() {
            return Err(BencodeError::BadInt {
                at,
                why: "no digits",
            });
        }
        if !mag.iter().all(u8::is_ascii_digit) {
            return Err(BencodeError::BadInt {
                at,
                why: "non-digit character",
            });
        }
        if mag[0] == b'0' && mag.len() > 1 {
            return Err(BencodeError::BadInt {
                at,
                why: "leading zero",
            });
        }
        if neg && mag == b"0" {
            return Err(BencodeError::BadInt {
                at,
                why: "negative zero",
            });
        }
        let mut v: i64 = 0;
        for &d in mag {
            let d = i64::from(d - b'0');
            v = v
                .checked_mul(10)
                .and_then(|v| {
                    if neg {
                        v.checked_sub(d)
                    } else {
                        v.checked_add(d)
                    }
                })
                .ok_or(BencodeError::IntOverflow { at })?;
        }
        self.pos = end + 1;
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let at = self.pos;
        let mut len: u64 = 0;
        let mut ndigits = 0usize;
        loop {
            let b = self.peek()?;
            match b {
                b'0'..=b'9' => {
                    if ndigits == 1 && len == 0 {
                        return Err(BencodeError::BadLength {
                            at,
                            why: "leading zero",
                        });
                    }
                    ndigits += 1;
                    if ndigits > 18 {
                        return Err(BencodeError::BadLength {
                            at,
                            why: "too many digits",
                        });
                    }
                    len = len * 10 + u64::from(b - b'0');
                    self.pos += 1;
                }
                b':' => {
                    self.pos += 1;
                    break;
                }
                byte => {
                    return Err(BencodeError::UnexpectedByte { at: self.pos, byte });
                }
            }
        }
        if len > self.limits.max_len as u64 {
            return Err(BencodeError::StringTooLong {
                at,
                len,
                max: self.limits.max_len,
            });
        }
        let remaining = (self.buf.len() - self.pos) as u64;
        if len > remaining {
            return Err(BencodeError::StringPastEnd { at, len });
        }
        let start = self.pos;
        self.pos += len as usize; // ok: len <= remaining, which is a usize
        self.check_total()?;
        Ok(&self.buf[start..self.pos])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(buf: &[u8]) -> BencodeError {
        decode(buf).unwrap_err()
    }

    #[test]
    fn decodes_basic_values() {
        assert_eq!(decode(b"i42e").unwrap(), Value::Int(42));
        assert_eq!(decode(b"i-42e").unwrap(), Value::Int(-42));
        assert_eq!(decode(b"i0e").unwrap(), Value::Int(0));
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap(),
            Value::Int(i64::MAX)
        );
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(decode(b"0:").unwrap(), Value::bytes(b"".to_vec()));
        assert_eq!(decode(b"4:spam").unwrap(), Value::string("spam"));
        assert_eq!(
            decode(b"l4:spami3ee").unwrap(),
            Value::List(vec![Value::string("spam"), Value::Int(3)])
        );
        let d = decode(b"d3:bar4:spam3:fooi42ee").unwrap();
        assert_eq!(d.get(b"bar").and_then(Value::as_str), Some("spam"));
        assert_eq!(d.get(b"foo").and_then(Value::as_int), Some(42));
        assert_eq!(decode(b"de").unwrap(), Value::Dict(BTreeMap::new()));
    }

    #[test]
    fn encode_round_trip_sorted() {
        let v = Value::dict([
            ("zz", Value::Int(-1)),
            (
                "a",
                Value::List(vec![
                    Value::string("x"),
                    Value::dict([("k", Value::Int(0))]),
                ]),
            ),
            ("m", Value::bytes(vec![0u8, 255])),
        ]);
        let enc = encode(&v);
        assert_eq!(enc, b"d1:al1:xd1:ki0eee1:m2:\x00\xff2:zzi-1ee".to_vec());
        assert_eq!(decode(&enc).unwrap(), v);
    }

    #[test]
    fn rejects_bad_ints() {
        assert!(matches!(
            err(b"i03e"),
            BencodeError::BadInt {
                why: "leading zero",
                ..
            }
        ));
        assert!(matches!(
            err(b"i-0e"),
            BencodeError::BadInt {
                why: "negative zero",
                ..
            }
        ));
        assert!(matches!(
            err(b"i-03e"),
            BencodeError::BadInt {
                why: "leading zero",
                ..
            }
        ));
        assert!(matches!(
            err(b"ie"),
            BencodeError::BadInt {
                why: "no digits",
                ..
            }
        ));
        assert!(matches!(
            err(b"i-e"),
            BencodeError::BadInt {
                why: "no digits",
                ..
            }
        ));
        assert!(matches!(err(b"i1.5e"), BencodeError::BadInt { .. }));
        assert!(matches!(err(b"i+5e"), BencodeError::BadInt { .. }));
        assert!(matches!(
            err(b"i9223372036854775808e"),
            BencodeError::IntOverflow { .. }
        ));
        assert!(matches!(err(b"i12"), BencodeError::UnexpectedEof { .. }));
        assert!(matches!(
            err(b"i1x"),
            BencodeError::UnexpectedByte { byte: b'x', .. }
        ));
    }

    #[test]
    fn rejects_bad_strings() {
        assert!(matches!(
            err(b"03:abc"),
            BencodeError::BadLength {
                why: "leading zero",
                ..
            }
        ));
        assert!(matches!(
            err(b"4:abc"),
            BencodeError::StringPastEnd { len: 4, .. }
        ));
        assert!(matches!(
            err(b"3abc"),
            BencodeError::UnexpectedByte { byte: b'a', .. }
        ));
        assert!(matches!(err(b"3"), BencodeError::UnexpectedEof { .. }));
        assert!(matches!(
            err(b"-3:abc"),
            BencodeError::UnexpectedByte { byte: b'-', .. }
        ));
    }

    #[test]
    fn huge_length_prefix_is_rejected_without_allocating() {
        // 2^60-ish bytes claimed; only the prefix is present.
        assert!(matches!(
            err(b"999999999999999999:x"),
            BencodeError::StringTooLong { .. }
        ));
        assert!(matches!(
            err(b"9999999999999999999:x"),
            BencodeError::BadLength {
                why: "too many digits",
                ..
            }
        ));
        // Below max_len but past the end: rejected before any allocation.
        assert!(matches!(
            err(b"1000000:x"),
            BencodeError::StringPastEnd { .. }
        ));
        let small = Limits {
            max_len: 3,
            ..Limits::default()
        };
        assert!(matches!(
            decode_with(b"4:spam", &small),
            Err(BencodeError::StringTooLong { len: 4, max: 3, .. })
        ));
    }

    #[test]
    fn rejects_bad_dicts() {
        assert!(matches!(
            err(b"d1:bi1e1:ai2ee"),
            BencodeError::UnsortedKey { .. }
        ));
        assert!(matches!(
            err(b"d1:ai1e1:ai2ee"),
            BencodeError::DuplicateKey { .. }
        ));
        assert!(matches!(
            err(b"di1ei2ee"),
            BencodeError::KeyNotString { .. }
        ));
        assert!(matches!(
            err(b"d1:ae"),
            BencodeError::UnexpectedByte { byte: b'e', .. }
        ));
        assert!(matches!(
            err(b"d1:ai1e"),
            BencodeError::UnexpectedEof { .. }
        ));
        // Lenient wire mode: unsorted allowed, duplicates still not.
        let wire = Limits::wire();
        assert!(decode_with(b"d1:bi1e1:ai2ee", &wire).is_ok());
        assert!(matches!(
            decode_with(b"d1:bi1e1:ai2e1:bi3ee", &wire),
            Err(BencodeError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn rejects_structure_errors() {
        assert!(matches!(err(b""), BencodeError::UnexpectedEof { at: 0 }));
        assert!(matches!(
            err(b"x"),
            BencodeError::UnexpectedByte { byte: b'x', .. }
        ));
        assert!(matches!(err(b"l"), BencodeError::UnexpectedEof { .. }));
        assert!(matches!(err(b"li1e"), BencodeError::UnexpectedEof { .. }));
        assert!(matches!(
            err(b"e"),
            BencodeError::UnexpectedByte { byte: b'e', .. }
        ));
        assert!(matches!(
            err(b"i1ei2e"),
            BencodeError::TrailingBytes { at: 3, extra: 3 }
        ));
    }

    #[test]
    fn depth_bomb() {
        let mut bomb = vec![b'l'; 100_000];
        bomb.extend(vec![b'e'; 100_000]);
        assert!(matches!(err(&bomb), BencodeError::TooDeep { max: 64, .. }));
        let ok = [vec![b'l'; 64], vec![b'e'; 64]].concat();
        assert!(decode(&ok).is_ok());
        let too = [vec![b'l'; 65], vec![b'e'; 65]].concat();
        assert!(matches!(err(&too), BencodeError::TooDeep { .. }));
        let mut dbomb = b"d1:a".repeat(1000);
        dbomb.extend(b"i0e");
        dbomb.extend(vec![b'e'; 1000]);
        assert!(matches!(err(&dbomb), BencodeError::TooDeep { .. }));
    }

    #[test]
    fn item_and_total_limits() {
        let lim = Limits {
            max_items: 3,
            ..Limits::default()
        };
        assert!(decode_with(b"li1ei2ee", &lim).is_ok());
        assert!(matches!(
            decode_with(b"li1ei2ei3ee", &lim),
            Err(BencodeError::TooManyItems { max: 3, .. })
        ));
        let lim = Limits {
            max_total: 5,
            ..Limits::default()
        };
        assert!(decode_with(b"3:abc", &lim).is_ok());
        assert!(matches!(
            decode_with(b"4:abcd", &lim),
            Err(BencodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn prefix_split() {
        let mut msg = b"d8:msg_typei1e5:piecei0e10:total_sizei5ee".to_vec();
        let dict_len = msg.len();
        msg.extend_from_slice(b"HELLO");
        let (v, used) = decode_prefix(&msg).unwrap();
        assert_eq!(used, dict_len);
        assert_eq!(&msg[used..], b"HELLO");
        assert_eq!(v.get(b"total_size").and_then(Value::as_int), Some(5));
        assert!(matches!(
            decode(&msg),
            Err(BencodeError::TrailingBytes { extra: 5, .. })
        ));
        // Raw payload that itself looks like bencode is not touched.
        let (_, used) = decode_prefix(b"dei1e").unwrap();
        assert_eq!(used, 2);
    }

    #[test]
    fn spans_are_exact() {
        let buf = b"d8:announce3:url4:infod4:name1:xe5:zzzzzi1ee";
        let span = dict_value_span(buf, b"info").unwrap().unwrap();
        assert_eq!(&buf[span], b"d4:name1:xe");
        let span = dict_value_span(buf, b"zzzzz").unwrap().unwrap();
        assert_eq!(&buf[span], b"i1e");
        assert_eq!(dict_value_span(buf, b"nope").unwrap(), None);
        assert_eq!(
            dict_value_span(b"li1ee", b"info"),
            Err(BencodeError::NotADict)
        );
    }

    #[test]
    fn garbage_and_mutations_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"ilde0123456789:-x";
        for _ in 0..20_000 {
            let len = (rnd() % 24) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(rnd() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(v) = decode(&buf) {
                // Whatever is accepted is canonical: it re-encodes to the same bytes.
                assert_eq!(encode(&v), buf);
            }
            let _ = decode_prefix_with(&buf, &Limits::wire());
        }
        let valid =
            b"d8:announce3:url4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces0:ee";
        for i in 0..valid.len() {
            for b in [0u8, b'e', b'9', b'd', b':'] {
                let mut m = valid.to_vec();
                m[i] = b;
                if let Ok(v) = decode(&m) {
                    assert_eq!(encode(&v), m);
                }
                let _ = dict_value_span(&m, b"info");
            }
        }
    }
}

//! A small, strict DNS message codec for the tunnel's local resolver (sans-IO).
//!
//! Only what a stub resolver sends is accepted: a standard query (opcode 0) with exactly one
//! question, no answers or authority records and at most one additional record (an EDNS OPT,
//! which is ignored). Names are limited to 255 bytes, labels to 63 bytes of `[A-Za-z0-9_-]`,
//! and compression pointers are refused in the question. Anything else is rejected with a
//! [`DnsError`] and the caller drops the datagram.

use std::net::Ipv4Addr;

/// Largest DNS message we read or write (classic UDP limit).
pub const MAX_MESSAGE: usize = 512;
const HEADER_LEN: usize = 12;
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SVCB: u16 = 64;
pub const TYPE_HTTPS: u16 = 65;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_NOTIMP: u8 = 4;

/// Why a datagram is not an acceptable DNS query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("DNS message of {0} bytes is outside 12..=512")]
    Length(usize),
    #[error("DNS message is a response, not a query")]
    NotQuery,
    #[error("DNS message has {0} questions, expected exactly 1")]
    QuestionCount(u16),
    #[error("DNS query carries answer/authority records or more than one additional record")]
    ExtraRecords,
    #[error("DNS name is truncated or malformed")]
    BadName,
    #[error("DNS name uses a character outside [A-Za-z0-9_-]")]
    BadCharacter,
    #[error("DNS name is longer than 255 bytes or a label longer than 63")]
    TooLong,
    #[error("DNS question is truncated")]
    Truncated,
}

/// A parsed query: what the caller needs to build an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion-desired bit, echoed in the response.
    pub rd: bool,
    pub opcode: u8,
    /// Lower-case, dot-separated, without the trailing dot ("" for the root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The raw question section (name + type + class), echoed in the response.
    question: Vec<u8>,
}

/// What the resolver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// One A record.
    A(Ipv4Addr, u32),
    /// NOERROR with no records (e.g. AAAA when the tunnel has no IPv6).
    Empty,
    /// An error response code (NOTIMP, FORMERR, ...).
    Rcode(u8),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses one DNS query datagram.
pub fn parse_query(msg: &[u8]) -> Result<Query, DnsError> {
    if msg.len() < HEADER_LEN || msg.len() > MAX_MESSAGE {
        return Err(DnsError::Length(msg.len()));
    }
    let id = be16(msg, 0).ok_or(DnsError::Truncated)?;
    let flags = be16(msg, 2).ok_or(DnsError::Truncated)?;
    if flags & 0x8000 != 0 {
        return Err(DnsError::NotQuery);
    }
    let opcode = ((flags >> 11) & 0x0f) as u8;
    let rd = flags & 0x0100 != 0;
    let qd = be16(msg, 4).ok_or(DnsError::Truncated)?;
    let an = be16(msg, 6).ok_or(DnsError::Truncated)?;
    let ns = be16(msg, 8).ok_or(DnsError::Truncated)?;
    let ar = be16(msg, 10).ok_or(DnsError::Truncated)?;
    if qd != 1 {
        return Err(DnsError::QuestionCount(qd));
    }
    if an != 0 || ns != 0 || ar > 1 {
        return Err(DnsError::ExtraRecords);
    }
    let mut pos = HEADER_LEN;
    let mut name = String::new();
    let mut wire_len = 0usize;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::BadName)? as usize;
        pos += 1;
        wire_len += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            // Compression pointers (and the reserved label types) have no place in a question.
            return Err(DnsError::BadName);
        }
        if len > MAX_LABEL {
            return Err(DnsError::TooLong);
        }
        wire_len += len;
        if wire_len > MAX_NAME {
            return Err(DnsError::TooLong);
        }
        let label = msg.get(pos..pos + len).ok_or(DnsError::BadName)?;
        if !name.is_empty() {
            name.push('.');
        }
        for &c in label {
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                name.push(c.to_ascii_lowercase() as char);
            } else {
                return Err(DnsError::BadCharacter);
            }
        }
        pos += len;
    }
    let qtype = be16(msg, pos).ok_or(DnsError::Truncated)?;
    let qclass = be16(msg, pos + 2).ok_or(DnsError::Truncated)?;
    let question = msg[HEADER_LEN..pos + 4].to_vec();
    Ok(Query {
        id,
        rd,
        opcode,
        name,
        qtype,
        qclass,
        question,
    })
}

/// Encodes the response to `query`. Never longer than [`MAX_MESSAGE`] (the question is at most
/// 259 bytes and the answer 16).
pub fn encode_response(query: &Query, answer: &Answer) -> Vec<u8> {
    let rcode = match answer {
        Answer::Rcode(r) => *r & 0x0f,
        _ => RCODE_NOERROR,
    };
    let mut flags: u16 = 0x8000 | 0x0080; // QR, RA
    flags |= u16::from(query.opcode & 0x0f) << 11;
    if query.rd {
        flags |= 0x0100;
    }
    flags |= u16::from(rcode);
    let ancount: u16 = matches!(answer, Answer::A(..)).into();
    let mut out = Vec::with_capacity(HEADER_LEN + query.question.len() + 16);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&query.question);
    if let Answer::A(ip, ttl) = answer {
        out.extend_from_slice(&[0xc0, 0x0c]); // pointer to the question name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// The tunnel's local policy: A queries get a fake address from `assign`, AAAA/SVCB/HTTPS an
/// empty NOERROR (the tunnel carries IPv4 only, names travel to the exit), everything else
/// NOTIMP.
pub fn answer_locally(query: &Query, ttl: u32, assign: impl FnOnce(&str) -> Ipv4Addr) -> Answer {
    if query.opcode != 0 || query.qclass != CLASS_IN || query.name.is_empty() {
        return Answer::Rcode(RCODE_NOTIMP);
    }
    match query.qtype {
        TYPE_A => Answer::A(assign(&query.name), ttl),
        TYPE_AAAA | TYPE_SVCB | TYPE_HTTPS => Answer::Empty,
        _ => Answer::Rcode(RCODE_NOTIMP),
    }
}

/// Encodes a query (used by tests and the benchmark's own resolver checks).
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    let mut total = 1;
    for label in name.split('.').filter(|l| !l.is_empty()) {
        if label.len() > MAX_LABEL {
            return Err(DnsError::TooLong);
        }
        total += label.len() + 1;
        if total > MAX_NAME {
            return Err(DnsError::TooLong);
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// Reads the rcode and the A records of a response (tests only need this much).
pub fn parse_response_a(msg: &[u8]) -> Option<(u16, u8, Vec<Ipv4Addr>)> {
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    let an = be16(msg, 6)?;
    let mut pos = HEADER_LEN;
    // skip the question name (uncompressed in our responses)
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            pos += 1;
            break;
        }
        pos += len;
    }
    pos += 4;
    let mut ips = Vec::new();
    for _ in 0..an {
        let first = *msg.get(pos)?;
        if first & 0xc0 == 0xc0 {
            pos += 2;
        } else {
            return None;
        }
        let rtype = be16(msg, pos)?;
        let rdlen = be16(msg, pos + 8)? as usize;
        let rdata = msg.get(pos + 10..pos + 10 + rdlen)?;
        if rtype == TYPE_A && rdlen == 4 {
            ips.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        pos += 10 + rdlen;
    }
    Some((id, (flags & 0x0f) as u8, ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_roundtrip_and_a_answer() {
        let q = encode_query(0x1234, "Example.COM", TYPE_A).unwrap();
        let parsed = parse_query(&q).unwrap();
        assert_eq!(parsed.id, 0x1234);
        assert_eq!(parsed.name, "example.com");
        assert_eq!(parsed.qtype, TYPE_A);
        assert_eq!(parsed.qclass, CLASS_IN);
        assert!(parsed.rd);
        let ip = Ipv4Addr::new(198, 18, 0, 20);
        let resp = encode_response(&parsed, &Answer::A(ip, 30));
        assert!(resp.len() <= MAX_MESSAGE);
        let (id, rcode, ips) = parse_response_a(&resp).unwrap();
        assert_eq!((id, rcode, ips), (0x1234, 0, vec![ip]));
        // the response is not accepted as a query
        assert_eq!(parse_query(&resp), Err(DnsError::NotQuery));
    }

    #[test]
    fn empty_and_notimp_answers() {
        let q = parse_query(&encode_query(7, "a.b", TYPE_AAAA).unwrap()).unwrap();
        let (_, rcode, ips) = parse_response_a(&encode_response(&q, &Answer::Empty)).unwrap();
        assert_eq!((rcode, ips.len()), (RCODE_NOERROR, 0));
        let (_, rcode, _) =
            parse_response_a(&encode_response(&q, &Answer::Rcode(RCODE_NOTIMP))).unwrap();
        assert_eq!(rcode, RCODE_NOTIMP);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_query(&[0; 5]), Err(DnsError::Length(5)));
        assert_eq!(parse_query(&[0; 600]), Err(DnsError::Length(600)));
        let good = encode_query(1, "x.y", TYPE_A).unwrap();
        // two questions
        let mut m = good.clone();
        m[5] = 2;
        assert_eq!(parse_query(&m), Err(DnsError::QuestionCount(2)));
        // an answer record in a query
        let mut m = good.clone();
        m[7] = 1;
        assert_eq!(parse_query(&m), Err(DnsError::ExtraRecords));
        // truncated name / type
        assert_eq!(parse_query(&good[..14]), Err(DnsError::BadName));
        assert_eq!(
            parse_query(&good[..good.len() - 1]),
            Err(DnsError::Truncated)
        );
        // compression pointer in the question
        let mut m = good[..12].to_vec();
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(parse_query(&m), Err(DnsError::BadName));
        // bad character
        let mut m = good[..12].to_vec();
        m.extend_from_slice(&[3, b'a', b'/', b'b', 0, 0, 1, 0, 1]);
        assert_eq!(parse_query(&m), Err(DnsError::BadCharacter));
        // a length byte of 64 or more is a reserved label type, not a long label
        let mut m = good[..12].to_vec();
        m.push(64);
        m.extend_from_slice(&[b'a'; 64]);
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse_query(&m), Err(DnsError::BadName));
        // name too long: 5 labels of 63
        let mut m = good[..12].to_vec();
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse_query(&m), Err(DnsError::TooLong));
    }

    #[test]
    fn local_policy() {
        let ip = Ipv4Addr::new(198, 18, 0, 30);
        let q = |name: &str, t: u16| parse_query(&encode_query(1, name, t).unwrap()).unwrap();
        assert_eq!(
            answer_locally(&q("a.example", TYPE_A), 9, |_| ip),
            Answer::A(ip, 9)
        );
        assert_eq!(
            answer_locally(&q("a.example", TYPE_AAAA), 9, |_| ip),
            Answer::Empty
        );
        assert_eq!(
            answer_locally(&q("a.example", TYPE_HTTPS), 9, |_| ip),
            Answer::Empty
        );
        assert_eq!(
            answer_locally(&q("a.example", 15), 9, |_| ip),
            Answer::Rcode(RCODE_NOTIMP)
        );
        assert_eq!(
            answer_locally(&q("", TYPE_A), 9, |_| ip),
            Answer::Rcode(RCODE_NOTIMP)
        );
        let mut m = encode_query(1, "a.example", TYPE_A).unwrap();
        m[2] |= 0x10; // opcode 2 (STATUS)
        let st = parse_query(&m).unwrap();
        assert_eq!(answer_locally(&st, 9, |_| ip), Answer::Rcode(RCODE_NOTIMP));
        let resp = encode_response(&st, &Answer::Rcode(RCODE_NOTIMP));
        assert_eq!(resp[2] & 0x78, 0x10, "opcode echoed");
    }

    #[test]
    fn edns_opt_is_tolerated() {
        let mut m = encode_query(9, "peer.example", TYPE_A).unwrap();
        m[11] = 1;
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let q = parse_query(&m).unwrap();
        assert_eq!(q.name, "peer.example");
        let resp = encode_response(&q, &Answer::A(Ipv4Addr::new(198, 18, 1, 1), 5));
        assert_eq!(parse_response_a(&resp).unwrap().2.len(), 1);
    }

    #[test]
    fn fuzz_like_inputs_never_panic() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..600 {
            let mut m = vec![0u8; len];
            for b in m.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if len > 5 {
                m[2] &= 0x7f; // mostly queries
                m[4] = 0;
                m[5] = 1;
            }
            let _ = parse_query(&m);
            let _ = parse_response_a(&m);
        }
    }
}

//! Signed node descriptors: what a client needs to choose a node and handshake with it.
//!
//! Encoding (all integers big-endian):
//! `version:u8=1 | id:32 | x25519:32 | ed25519:32 | addr | roles:u8 | policy | expires:u64 | sig:64`
//! where `addr = family:u8 (4|6) | ip (4|16) | port:u16`,
//! `policy = n:u8 | n * (lo:u16, hi:u16) | udp:u8`, and `sig` is Ed25519 over
//! `"warren-descriptor-v1" || everything before sig`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::exit::ExitPolicy;
use crate::identity::{Identity, NodeId};

pub const ROLE_RELAY: u8 = 1;
pub const ROLE_EXIT: u8 = 2;
/// Reserved for issue 4.
pub const ROLE_DHT: u8 = 4;
/// Reserved for issue 4.
pub const ROLE_INTRO: u8 = 8;

const SIG_CONTEXT: &[u8] = b"warren-descriptor-v1";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    pub id: NodeId,
    pub x25519: [u8; 32],
    pub ed25519: [u8; 32],
    pub addr: SocketAddr,
    pub roles: u8,
    pub exit_policy: ExitPolicy,
    /// Unix seconds after which the descriptor is not valid.
    pub expires: u64,
    #[serde(with = "sig_serde")]
    pub signature: [u8; 64],
}

mod sig_serde {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("signature must be 64 bytes"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescriptorError {
    #[error("descriptor truncated")]
    Truncated,
    #[error("descriptor has {0} trailing bytes")]
    Trailing(usize),
    #[error("unknown descriptor version {0}")]
    Version(u8),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("node id does not match the keys")]
    IdMismatch,
    #[error("bad signature")]
    BadSignature,
    #[error("descriptor expired at {expires} (now {now})")]
    Expired { expires: u64, now: u64 },
    #[error("invalid exit policy range {0}-{1}")]
    Policy(u16, u16),
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Descriptor {
    /// Builds and signs a descriptor for `identity`.
    pub fn new_signed(
        identity: &Identity,
        addr: SocketAddr,
        roles: u8,
        exit_policy: ExitPolicy,
        expires: u64,
    ) -> Descriptor {
        let mut d = Descriptor {
            id: identity.node_id(),
            x25519: identity.x25519_public(),
            ed25519: identity.ed25519_public(),
            addr,
            roles,
            exit_policy,
            expires,
            signature: [0; 64],
        };
        let mut msg = SIG_CONTEXT.to_vec();
        d.encode_unsigned(&mut msg);
        d.signature = identity.sign(&msg);
        d
    }

    pub fn is_exit(&self) -> bool {
        self.roles & ROLE_EXIT != 0
    }

    pub fn is_relay(&self) -> bool {
        self.roles & ROLE_RELAY != 0
    }

    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        out.push(1);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.x25519);
        out.extend_from_slice(&self.ed25519);
        encode_addr(&self.addr, out);
        out.push(self.roles);
        let ranges = &self.exit_policy.accept_ports[..self.exit_policy.accept_ports.len().min(255)];
        out.push(ranges.len() as u8);
        for (lo, hi) in ranges {
            out.extend_from_slice(&lo.to_be_bytes());
            out.extend_from_slice(&hi.to_be_bytes());
        }
        out.push(self.exit_policy.allow_udp as u8);
        out.extend_from_slice(&self.expires.to_be_bytes());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200);
        self.encode_unsigned(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes without verifying; use [`Descriptor::decode_verified`] for anything from the network.
    pub fn decode(b: &[u8]) -> Result<Descriptor, DescriptorError> {
        let mut r = Reader(b);
        let v = r.u8()?;
        if v != 1 {
            return Err(DescriptorError::Version(v));
        }
        let id = NodeId(r.arr()?);
        let x25519 = r.arr()?;
        let ed25519 = r.arr()?;
        let addr = decode_addr(&mut r)?;
        let roles = r.u8()?;
        let n = r.u8()? as usize;
        let mut accept_ports = Vec::with_capacity(n);
        for _ in 0..n {
            let lo = r.u16()?;
            let hi = r.u16()?;
            if lo > hi {
                return Err(DescriptorError::Policy(lo, hi));
            }
            accept_ports.push((lo, hi));
        }
        let allow_udp = r.u8()? != 0;
        let expires = r.u64()?;
        let signature = r.arr::<64>()?;
        if !r.0.is_empty() {
            return Err(DescriptorError::Trailing(r.0.len()));
        }
        Ok(Descriptor {
            id,
            x25519,
            ed25519,
            addr,
            roles,
            exit_policy: ExitPolicy {
                accept_ports,
                allow_udp,
            },
            expires,
            signature,
        })
    }

    /// Checks the id binding, the signature and the expiry.
    pub fn verify(&self, now: u64) -> Result<(), DescriptorError> {
        if NodeId::derive(&self.x25519, &self.ed25519) != self.id {
            return Err(DescriptorError::IdMismatch);
        }
        let key =
            VerifyingKey::from_bytes(&self.ed25519).map_err(|_| DescriptorError::BadSignature)?;
        let mut msg = SIG_CONTEXT.to_vec();
        self.encode_unsigned(&mut msg);
        key.verify(&msg, &Signature::from_bytes(&self.signature))
            .map_err(|_| DescriptorError::BadSignature)?;
        if now >= self.expires {
            return Err(DescriptorError::Expired {
                expires: self.expires,
                now,
            });
        }
        Ok(())
    }

    pub fn decode_verified(b: &[u8], now: u64) -> Result<Descriptor, DescriptorError> {
        let d = Descriptor::decode(b)?;
        d.verify(now)?;
        Ok(d)
    }
}

/// A directory message: `count:u16` then `count` × (`len:u16`, descriptor).
pub fn encode_directory(ds: &[Descriptor], max: usize) -> Vec<u8> {
    let mut out = vec![0, 0];
    let mut n: u16 = 0;
    for d in ds {
        let b = d.encode();
        if out.len() + 2 + b.len() > max || n == u16::MAX {
            break;
        }
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(&b);
        n += 1;
    }
    out[..2].copy_from_slice(&n.to_be_bytes());
    out
}

/// Decodes a directory message; every descriptor must verify at `now`.
pub fn decode_directory(b: &[u8], now: u64) -> Result<Vec<Descriptor>, DescriptorError> {
    let mut r = Reader(b);
    let n = r.u16()?;
    let mut out = Vec::with_capacity(usize::from(n).min(256));
    for _ in 0..n {
        let len = usize::from(r.u16()?);
        out.push(Descriptor::decode_verified(r.take(len)?, now)?);
    }
    if !r.0.is_empty() {
        return Err(DescriptorError::Trailing(r.0.len()));
    }
    Ok(out)
}

pub(crate) fn encode_addr(a: &SocketAddr, out: &mut Vec<u8>) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

pub(crate) fn decode_addr(r: &mut Reader<'_>) -> Result<SocketAddr, DescriptorError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.arr::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.arr::<16>()?)),
        f => return Err(DescriptorError::Family(f)),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

/// A strict little reader over a byte slice.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DescriptorError> {
        if self.0.len() < n {
            return Err(DescriptorError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, DescriptorError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DescriptorError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64, DescriptorError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    pub fn arr<const N: usize>(&mut self) -> Result<[u8; N], DescriptorError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Identity, Descriptor) {
        let id = Identity::generate();
        let d = Descriptor::new_signed(
            &id,
            "127.0.0.1:4000".parse().unwrap(),
            ROLE_RELAY | ROLE_EXIT,
            ExitPolicy::default(),
            unix_now() + 3600,
        );
        (id, d)
    }

    #[test]
    fn roundtrip_and_verify() {
        let (_, d) = sample();
        let b = d.encode();
        let back = Descriptor::decode_verified(&b, unix_now()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn tampered_descriptor_rejected() {
        let (_, d) = sample();
        let mut b = d.encode();
        let i = 1 + 96 + 2; // inside the address
        b[i] ^= 1;
        assert_eq!(
            Descriptor::decode_verified(&b, unix_now()),
            Err(DescriptorError::BadSignature)
        );
    }

    #[test]
    fn expired_and_mismatched_rejected() {
        let (_, d) = sample();
        assert!(matches!(
            d.verify(d.expires),
            Err(DescriptorError::Expired { .. })
        ));
        let mut d2 = d.clone();
        d2.x25519 = Identity::generate().x25519_public();
        assert_eq!(d2.verify(unix_now()), Err(DescriptorError::IdMismatch));
    }

    #[test]
    fn truncated_and_trailing_rejected() {
        let (_, d) = sample();
        let b = d.encode();
        assert_eq!(
            Descriptor::decode(&b[..b.len() - 1]),
            Err(DescriptorError::Truncated)
        );
        let mut b2 = b.clone();
        b2.push(0);
        assert_eq!(Descriptor::decode(&b2), Err(DescriptorError::Trailing(1)));
    }
}

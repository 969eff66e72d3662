//! Message Stream Encryption / Protocol Encryption (MSE/PE), receiver side: the 768-bit
//! Diffie-Hellman exchange, the SKEY (infohash) lookup, RC4-drop1024, and plaintext or RC4
//! crypto selection. aria2c (and others) open every connection with it. This is obfuscation,
//! not security: the payload keeps BitTorrent's own integrity checks.
//!
//! The key schedule ([`Keys`]), RC4 ([`Rc4`]) and the message parsing are plain functions with
//! tests; [`accept`] drives them over a stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use num_bigint::BigUint;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::connector::BoxedStream;

/// The MSE prime (768 bits).
const P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
pub const CRYPTO_PLAINTEXT: u32 = 1;
pub const CRYPTO_RC4: u32 = 2;
const MAX_PAD: usize = 512;

fn prime() -> BigUint {
    // ok: constant, valid hex
    BigUint::parse_bytes(P_HEX.as_bytes(), 16).expect("valid prime constant")
}

fn to96(n: &BigUint) -> [u8; 96] {
    let b = n.to_bytes_be();
    let mut out = [0u8; 96];
    out[96 - b.len()..].copy_from_slice(&b);
    out
}

/// A DH key pair.
pub struct DhKey {
    private: BigUint,
    pub public: [u8; 96],
}

impl DhKey {
    pub fn generate() -> Self {
        let x: [u8; 20] = rand::random();
        let private = BigUint::from_bytes_be(&x);
        let public = to96(&BigUint::from(2u32).modpow(&private, &prime()));
        DhKey { private, public }
    }

    /// Shared secret S from the other side's public key.
    pub fn shared(&self, other: &[u8; 96]) -> [u8; 96] {
        to96(&BigUint::from_bytes_be(other).modpow(&self.private, &prime()))
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RC4 stream cipher.
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    pub fn new(key: &[u8]) -> Self {
        let mut s = [0u8; 256];
        for (i, v) in s.iter_mut().enumerate() {
            *v = i as u8;
        }
        let mut j: u8 = 0;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        Rc4 { s, i: 0, j: 0 }
    }

    /// RC4 with the first 1024 bytes of keystream discarded (as MSE requires).
    pub fn new_drop1024(key: &[u8]) -> Self {
        let mut r = Self::new(key);
        let mut junk = [0u8; 1024];
        r.apply(&mut junk);
        r
    }

    pub fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            self.i = self.i.wrapping_add(1);
            self.j = self.j.wrapping_add(self.s[self.i as usize]);
            self.s.swap(self.i as usize, self.j as usize);
            let k =
                self.s[(self.s[self.i as usize].wrapping_add(self.s[self.j as usize])) as usize];
            *b ^= k;
        }
    }
}

/// Values derived from S and SKEY.
pub struct Keys {
    pub req1: [u8; 20],
    pub s: [u8; 96],
}

impl Keys {
    pub fn new(s: [u8; 96]) -> Self {
        Keys {
            req1: sha1(&[b"req1", &s]),
            s,
        }
    }

    /// HASH('req2', SKEY) xor HASH('req3', S) for a candidate infohash.
    pub fn obfuscated_skey(&self, skey: &[u8; 20]) -> [u8; 20] {
        let a = sha1(&[b"req2", skey]);
        let b = sha1(&[b"req3", &self.s]);
        let mut out = [0u8; 20];
        for i in 0..20 {
            out[i] = a[i] ^ b[i];
        }
        out
    }

    /// (cipher for what A sends, cipher for what B sends).
    pub fn ciphers(&self, skey: &[u8; 20]) -> (Rc4, Rc4) {
        (
            Rc4::new_drop1024(&sha1(&[b"keyA", &self.s, skey])),
            Rc4::new_drop1024(&sha1(&[b"keyB", &self.s, skey])),
        )
    }
}

/// A stream after MSE: decrypted initial payload first, then (optionally RC4) the rest.
pub struct MseStream {
    inner: BoxedStream,
    prefix: BytesMut,
    dec: Option<Rc4>,
    enc: Option<Rc4>,
    wbuf: Vec<u8>,
}

impl AsyncRead for MseStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(d) = this.dec.as_mut() {
                    d.apply(&mut buf.filled_mut()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl MseStream {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MseStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.enc.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        // Keep at most one chunk buffered: drain first, then take new data.
        if this.wbuf.len() >= 256 * 1024 {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let start = this.wbuf.len();
        this.wbuf.extend_from_slice(data);
        if let Some(e) = this.enc.as_mut() {
            e.apply(&mut this.wbuf[start..]);
        }
        // opportunistic drain; errors surface on the next call or flush
        let _ = this.poll_drain(cx);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("MSE: {msg}"))
}

/// Run the receiver side of MSE. `first` holds bytes already read from the stream (the start
/// of Ya). `skeys` are the infohashes we serve. Returns the infohash chosen by the initiator and
/// the stream to run BitTorrent over.
pub async fn accept(
    mut s: BoxedStream,
    first: &[u8],
    skeys: &[[u8; 20]],
    allow_plaintext: bool,
) -> io::Result<([u8; 20], BoxedStream)> {
    if first.len() > 96 {
        return Err(bad("too much read ahead"));
    }
    let mut ya = [0u8; 96];
    ya[..first.len()].copy_from_slice(first);
    s.read_exact(&mut ya[first.len()..]).await?;
    let key = DhKey::generate();
    let pad_len = rand::random::<usize>() % MAX_PAD;
    let mut out = key.public.to_vec();
    out.extend((0..pad_len).map(|_| rand::random::<u8>()));
    s.write_all(&out).await?;
    s.flush().await?;
    let keys = Keys::new(key.shared(&ya));
    // Find HASH('req1', S) after PadA (at most 512 bytes).
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_PAD + 20);
    loop {
        if buf.len() >= 20 {
            if let Some(pos) = buf.windows(20).position(|w| w == keys.req1) {
                buf.drain(..pos + 20);
                break;
            }
        }
        if buf.len() >= MAX_PAD + 20 {
            return Err(bad("no req1 hash within 512 bytes of padding"));
        }
        let mut chunk = [0u8; 64];
        let want = (MAX_PAD + 20 - buf.len()).min(64);
        let n = s.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // buf now holds whatever followed req1. Need 20 bytes of obfuscated SKEY.
    let mut rest = BytesMut::from(&buf[..]);
    async fn need(s: &mut BoxedStream, rest: &mut BytesMut, n: usize) -> io::Result<()> {
        while rest.len() < n {
            let mut chunk = [0u8; 1024];
            let k = s.read(&mut chunk).await?;
            if k == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            rest.extend_from_slice(&chunk[..k]);
        }
        Ok(())
    }
    need(&mut s, &mut rest, 20).await?;
    let obf: [u8; 20] = rest[..20].try_into().map_err(|_| bad("short skey"))?;
    rest.advance(20);
    let skey = *skeys
        .iter()
        .find(|k| keys.obfuscated_skey(k) == obf)
        .ok_or_else(|| bad("unknown torrent"))?;
    let (mut dec, mut enc) = keys.ciphers(&skey);
    // ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
    need(&mut s, &mut rest, 14).await?;
    let mut head = [0u8; 14];
    head.copy_from_slice(&rest[..14]);
    rest.advance(14);
    dec.apply(&mut head);
    if head[..8] != [0u8; 8] {
        return Err(bad("bad verification constant"));
    }
    let provide = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let pad_c = u16::from_be_bytes([head[12], head[13]]) as usize;
    if pad_c > MAX_PAD {
        return Err(bad("PadC too long"));
    }
    need(&mut s, &mut rest, pad_c + 2).await?;
    let mut pc = rest.split_to(pad_c + 2);
    dec.apply(&mut pc);
    let ia_len = u16::from_be_bytes([pc[pad_c], pc[pad_c + 1]]) as usize;
    if ia_len > 68 * 4 {
        return Err(bad("initial payload too long"));
    }
    need(&mut s, &mut rest, ia_len).await?;
    let mut ia = rest.split_to(ia_len);
    dec.apply(&mut ia);
    let select = if allow_plaintext && provide & CRYPTO_PLAINTEXT != 0 {
        CRYPTO_PLAINTEXT
    } else if provide & CRYPTO_RC4 != 0 {
        CRYPTO_RC4
    } else {
        return Err(bad("no common crypto method"));
    };
    // ENCRYPT(VC, crypto_select, len(PadD)=0)
    let mut reply = [0u8; 14];
    reply[8..12].copy_from_slice(&select.to_be_bytes());
    enc.apply(&mut reply);
    s.write_all(&reply).await?;
    s.flush().await?;
    // Anything already read past IA is payload stream data.
    let mut prefix = ia;
    if select == CRYPTO_RC4 {
        let mut tail = rest;
        dec.apply(&mut tail);
        prefix.extend_from_slice(&tail);
    } else {
        prefix.extend_from_slice(&rest);
    }
    let rc4 = select == CRYPTO_RC4;
    Ok((
        skey,
        Box::new(MseStream {
            inner: s,
            prefix,
            dec: rc4.then_some(dec),
            enc: rc4.then_some(enc),
            wbuf: Vec::new(),
        }),
    ))
}

/// Initiator side (used by tests to exercise [`accept`]; warren itself connects in plaintext).
pub async fn initiate(
    mut s: BoxedStream,
    skey: [u8; 20],
    provide: u32,
    ia: &[u8],
) -> io::Result<(u32, BoxedStream)> {
    let key = DhKey::generate();
    s.write_all(&key.public).await?;
    s.write_all(&[7u8; 33]).await?; // PadA
    let mut yb = [0u8; 96];
    s.read_exact(&mut yb).await?;
    let keys = Keys::new(key.shared(&yb));
    let (mut enc, mut dec) = keys.ciphers(&skey);
    let mut msg = keys.req1.to_vec();
    msg.extend_from_slice(&keys.obfuscated_skey(&skey));
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&provide.to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&(ia.len() as u16).to_be_bytes());
    body.extend_from_slice(ia);
    enc.apply(&mut body);
    msg.extend_from_slice(&body);
    s.write_all(&msg).await?;
    s.flush().await?;
    // find ENCRYPT(VC) after PadB: decrypting 8 zero bytes gives the keystream start
    let mut vc = [0u8; 8];
    dec.clone().apply(&mut vc);
    let mut buf = Vec::new();
    let pos = loop {
        if let Some(p) = buf.windows(8).position(|w| w == vc) {
            break p;
        }
        if buf.len() > MAX_PAD + 8 {
            return Err(bad("no VC from receiver"));
        }
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        buf.push(b[0]);
    };
    let _ = pos;
    let mut rest = [0u8; 6];
    s.read_exact(&mut rest).await?;
    let mut vc_dummy = [0u8; 8];
    dec.apply(&mut vc_dummy);
    dec.apply(&mut rest);
    let select = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let rc4 = select == CRYPTO_RC4;
    Ok((
        select,
        Box::new(MseStream {
            inner: s,
            prefix: BytesMut::new(),
            dec: rc4.then_some(dec),
            enc: rc4.then_some(enc),
            wbuf: Vec::new(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc4_known_vector() {
        // RFC 6229-style check: key "Key", plaintext "Plaintext" -> BBF316E8D940AF0AD3
        let mut d = *b"Plaintext";
        Rc4::new(b"Key").apply(&mut d);
        assert_eq!(hex::encode(d), "bbf316e8d940af0ad3");
    }

    #[test]
    fn dh_agrees() {
        let a = DhKey::generate();
        let b = DhKey::generate();
        assert_eq!(a.shared(&b.public), b.shared(&a.public));
    }

    async fn pair(provide: u32, plaintext_ok: bool) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ih = [9u8; 20];
        let recv = tokio::spawn(async move {
            let mut b: BoxedStream = Box::new(b);
            let mut first = [0u8; 48];
            b.read_exact(&mut first).await.unwrap();
            let (k, mut s) = accept(b, &first, &[[1u8; 20], ih], plaintext_ok)
                .await
                .unwrap();
            assert_eq!(k, ih);
            let mut hello = [0u8; 5];
            s.read_exact(&mut hello).await.unwrap();
            assert_eq!(&hello, b"hello");
            let mut more = [0u8; 5];
            s.read_exact(&mut more).await.unwrap();
            assert_eq!(&more, b"world");
            s.write_all(b"reply").await.unwrap();
            s.flush().await.unwrap();
        });
        let (sel, mut s) = initiate(Box::new(a), ih, provide, b"hello").await.unwrap();
        s.write_all(b"world").await.unwrap();
        s.flush().await.unwrap();
        let mut r = [0u8; 5];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(&r, b"reply");
        recv.await.unwrap();
        let expect = if plaintext_ok && provide & 1 != 0 {
            1
        } else {
            2
        };
        assert_eq!(sel, expect);
    }

    #[tokio::test]
    async fn handshake_rc4_and_plaintext() {
        pair(CRYPTO_RC4, true).await;
        pair(CRYPTO_RC4 | CRYPTO_PLAINTEXT, true).await;
        pair(CRYPTO_RC4 | CRYPTO_PLAINTEXT, false).await;
    }
}

//! HTTP tracker announce (BEP 3, compact peer lists BEP 23, IPv6 `peers6` BEP 7), spoken as
//! HTTP/1.0 over any stream from a [`Connector`], so that it can run through an overlay exit.
//! Request building and response parsing are plain functions with unit tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bencode::{self, Value};
use crate::connector::{Connector, PeerAddr};

/// Largest tracker response we read.
pub const MAX_RESPONSE: usize = 1024 * 1024;

#[derive(Debug, Error)]
pub enum TrackerError {
    #[error("tracker URL {0:?} is not an http:// or udp:// URL we can use")]
    BadUrl(String),
    #[error("UDP tracker: {0}")]
    Udp(#[from] crate::udp_tracker::UdpTrackerError),
    #[error("tracker I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("tracker answered HTTP status {0}")]
    Status(u16),
    #[error("tracker response is malformed: {0}")]
    Malformed(&'static str),
    #[error("tracker response is not valid bencode: {0}")]
    Bencode(#[from] bencode::BencodeError),
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("tracker timed out")]
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    None,
    Started,
    Completed,
    Stopped,
}

/// Announce parameters.
#[derive(Clone, Debug)]
pub struct Announce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    pub numwant: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceResponse {
    pub interval: u32,
    pub peers: Vec<SocketAddr>,
    pub warning: Option<String>,
}

/// A parsed http:// URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<Self, TrackerError> {
        let bad = || TrackerError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let end = h.find(']').ok_or_else(bad)?;
            let port = match &h[end + 1..] {
                "" => 80,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad)?,
            };
            (h[..end].to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (hostport.to_string(), 80),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad());
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        Ok(HttpUrl {
            host,
            port,
            path: path.to_string(),
        })
    }

    pub fn peer_addr(&self) -> PeerAddr {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => PeerAddr::Ip(SocketAddr::new(ip, self.port)),
            Err(_) => PeerAddr::Host {
                host: self.host.clone(),
                port: self.port,
            },
        }
    }
}

const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The HTTP/1.0 request for an announce.
pub fn build_request(url: &HttpUrl, a: &Announce) -> Vec<u8> {
    let sep = if url.path.contains('?') { '&' } else { '?' };
    let event = match a.event {
        Event::None => "",
        Event::Started => "&event=started",
        Event::Completed => "&event=completed",
        Event::Stopped => "&event=stopped",
    };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    format!(
        "GET {}{}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}{} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: warren\r\nConnection: close\r\n\r\n",
        url.path,
        sep,
        percent_encode(&a.info_hash, QUERY),
        percent_encode(&a.peer_id, QUERY),
        a.port,
        a.uploaded,
        a.downloaded,
        a.left,
        a.numwant,
        event,
        host,
        url.port
    )
    .into_bytes()
}

/// Parse a full HTTP response (status line, headers, bencoded body).
pub fn parse_response(resp: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(TrackerError::Malformed("no end of HTTP headers"))?;
    let head = std::str::from_utf8(&resp[..head_end])
        .map_err(|_| TrackerError::Malformed("headers not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or("");
    if !proto.starts_with("HTTP/") {
        return Err(TrackerError::Malformed("no HTTP status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(TrackerError::Malformed("bad HTTP status"))?;
    if status != 200 {
        return Err(TrackerError::Status(status));
    }
    parse_body(&resp[head_end + 4..])
}

/// Parse the bencoded announce body.
pub fn parse_body(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let v = bencode::decode_with(body, &bencode::Limits::wire())?;
    if let Some(f) = v.get(b"failure reason") {
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(f.as_bytes().unwrap_or(b"?")).into_owned(),
        ));
    }
    let interval = v
        .get(b"interval")
        .and_then(Value::as_int)
        .unwrap_or(1800)
        .clamp(1, 86_400) as u32;
    let mut peers = Vec::new();
    match v.get(b"peers") {
        Some(Value::Bytes(b)) => {
            if b.len() % 6 != 0 {
                return Err(TrackerError::Malformed("compact peers not a multiple of 6"));
            }
            for c in b.chunks(6) {
                let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                peers.push(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([c[4], c[5]]),
                ));
            }
        }
        Some(Value::List(l)) => {
            for p in l {
                let ip = p
                    .get(b"ip")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<IpAddr>().ok());
                let port = p.get(b"port").and_then(Value::as_int);
                if let (Some(ip), Some(port)) = (ip, port) {
                    if let Ok(port) = u16::try_from(port) {
                        peers.push(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Bytes(b)) = v.get(b"peers6") {
        for c in b.chunks_exact(18) {
            let mut o = [0u8; 16];
            o.copy_from_slice(&c[..16]);
            peers.push(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(o)),
                u16::from_be_bytes([c[16], c[17]]),
            ));
        }
    }
    peers.retain(|p| p.port() != 0);
    Ok(AnnounceResponse {
        interval,
        peers,
        warning: v
            .get(b"warning message")
            .and_then(Value::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    })
}

/// Announce to an http:// tracker over a stream from `connector`.
pub async fn announce(
    connector: &dyn Connector,
    url: &str,
    a: &Announce,
    timeout: Duration,
) -> Result<AnnounceResponse, TrackerError> {
    if url.starts_with("udp://") {
        return crate::udp_tracker::announce(connector, url, a, timeout).await;
    }
    let url = HttpUrl::parse(url)?;
    let fut = async {
        let mut s = connector.connect(&url.peer_addr()).await?;
        s.write_all(&build_request(&url, a)).await?;
        s.flush().await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            if buf.len() + n > MAX_RESPONSE {
                return Err(TrackerError::Malformed("response too large"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        parse_response(&buf)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| TrackerError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let u = HttpUrl::parse("http://127.0.0.1:6969/announce").unwrap();
        assert_eq!(u.port, 6969);
        assert_eq!(u.path, "/announce");
        let u = HttpUrl::parse("http://tracker.example/a?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("tracker.example", 80));
        let u = HttpUrl::parse("http://[::1]:80/ann").unwrap();
        assert_eq!(u.host, "::1");
        assert!(HttpUrl::parse("https://x/").is_err());
        assert!(HttpUrl::parse("http://x:99999/").is_err());
    }

    #[test]
    fn request_escapes_binary() {
        let u = HttpUrl::parse("http://127.0.0.1:6969/announce?k=v").unwrap();
        let a = Announce {
            info_hash: [0xff; 20],
            peer_id: *b"-WR0001-abcdefghijkl",
            port: 1,
            uploaded: 2,
            downloaded: 3,
            left: 4,
            event: Event::Started,
            numwant: 50,
        };
        let r = String::from_utf8(build_request(&u, &a)).unwrap();
        assert!(r.starts_with("GET /announce?k=v&info_hash=%FF%FF"), "{r}");
        assert!(r.contains("&peer_id=-WR0001-abcdefghijkl&port=1&uploaded=2"));
        assert!(r.contains("event=started HTTP/1.0\r\n"));
    }

    #[test]
    fn responses() {
        let body = b"d8:intervali900e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x00\x50e";
        let mut resp = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        resp.extend_from_slice(body);
        let r = parse_response(&resp).unwrap();
        assert_eq!(r.interval, 900);
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "127.0.0.2:80".parse().unwrap()
            ]
        );
        let fail = b"HTTP/1.0 200 OK\r\n\r\nd14:failure reason9:not founde";
        assert!(matches!(parse_response(fail), Err(TrackerError::Failure(s)) if s == "not found"));
        assert!(matches!(
            parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(TrackerError::Status(404))
        ));
        let dict = b"d5:peersld2:ip9:127.0.0.14:porti80eeee";
        assert_eq!(parse_body(dict).unwrap().peers.len(), 1);
        assert!(parse_body(b"d5:peers5:abcdee").is_err());
    }
}

//! UDP tracker protocol (BEP 15) as a sans-IO codec: build connect/announce datagrams, parse the
//! answers, check transaction ids and connection-id expiry. The datagram transport is someone
//! else's (overlay datagrams later); nothing here touches a socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::tracker::{Announce, AnnounceResponse, Event};

const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;
/// A connection id is valid for one minute (BEP 15).
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UdpTrackerError {
    #[error("datagram too short ({0} bytes)")]
    Short(usize),
    #[error("unexpected transaction id")]
    WrongTransaction,
    #[error("unexpected action {0}")]
    WrongAction(u32),
    #[error("tracker error: {0}")]
    Tracker(String),
    #[error("no request outstanding")]
    Idle,
}

/// What the client should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send this datagram to the tracker.
    Send(Vec<u8>),
    /// The announce finished.
    Done(AnnounceResponse),
}

#[derive(Debug)]
enum State {
    Idle,
    Connecting { tid: u32 },
    Announcing { tid: u32 },
}

/// One UDP tracker conversation: connect (if needed), then announce.
#[derive(Debug)]
pub struct UdpTracker {
    state: State,
    conn: Option<(u64, Instant)>,
    pending: Option<Announce>,
    key: u32,
}

impl Default for UdpTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpTracker {
    pub fn new() -> Self {
        UdpTracker {
            state: State::Idle,
            conn: None,
            pending: None,
            key: rand::random(),
        }
    }

    /// Start an announce at time `now`; returns the first datagram to send.
    pub fn announce(&mut self, a: Announce, now: Instant) -> Vec<u8> {
        self.pending = Some(a);
        match self.conn {
            Some((cid, t)) if now.duration_since(t) < CONNECTION_ID_LIFETIME => {
                self.announce_packet(cid)
            }
            _ => {
                let tid = rand::random();
                self.state = State::Connecting { tid };
                let mut p = Vec::with_capacity(16);
                p.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                p.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                p.extend_from_slice(&tid.to_be_bytes());
                p
            }
        }
    }

    fn announce_packet(&mut self, cid: u64) -> Vec<u8> {
        let tid: u32 = rand::random();
        self.state = State::Announcing { tid };
        let Some(a) = &self.pending else {
            return Vec::new();
        };
        let mut p = Vec::with_capacity(98);
        p.extend_from_slice(&cid.to_be_bytes());
        p.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        p.extend_from_slice(&tid.to_be_bytes());
        p.extend_from_slice(&a.info_hash);
        p.extend_from_slice(&a.peer_id);
        p.extend_from_slice(&a.downloaded.to_be_bytes());
        p.extend_from_slice(&a.left.to_be_bytes());
        p.extend_from_slice(&a.uploaded.to_be_bytes());
        let ev: u32 = match a.event {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        };
        p.extend_from_slice(&ev.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes()); // IP: default
        p.extend_from_slice(&self.key.to_be_bytes());
        p.extend_from_slice(&(a.numwant as i32).to_be_bytes());
        p.extend_from_slice(&a.port.to_be_bytes());
        p
    }

    /// Feed a datagram from the tracker.
    pub fn on_datagram(&mut self, d: &[u8], now: Instant) -> Result<Next, UdpTrackerError> {
        if d.len() < 8 {
            return Err(UdpTrackerError::Short(d.len()));
        }
        let action = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let tid = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        let expected = match self.state {
            State::Idle => return Err(UdpTrackerError::Idle),
            State::Connecting { tid } | State::Announcing { tid } => tid,
        };
        if tid != expected {
            return Err(UdpTrackerError::WrongTransaction);
        }
        if action == ACTION_ERROR {
            self.state = State::Idle;
            return Err(UdpTrackerError::Tracker(
                String::from_utf8_lossy(&d[8..]).into_owned(),
            ));
        }
        match self.state {
            State::Connecting { .. } => {
                if action != ACTION_CONNECT {
                    return Err(UdpTrackerError::WrongAction(action));
                }
                if d.len() < 16 {
                    return Err(UdpTrackerError::Short(d.len()));
                }
                let mut c = [0u8; 8];
                c.copy_from_slice(&d[8..16]);
                let cid = u64::from_be_bytes(c);
                self.conn = Some((cid, now));
                Ok(Next::Send(self.announce_packet(cid)))
            }
            State::Announcing { .. } => {
                if action != ACTION_ANNOUNCE {
                    return Err(UdpTrackerError::WrongAction(action));
                }
                if d.len() < 20 {
                    return Err(UdpTrackerError::Short(d.len()));
                }
                let interval = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                let peers = d[20..]
                    .chunks_exact(6)
                    .map(|c| {
                        SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
                            u16::from_be_bytes([c[4], c[5]]),
                        )
                    })
                    .filter(|p| p.port() != 0)
                    .collect();
                self.state = State::Idle;
                self.pending = None;
                Ok(Next::Done(AnnounceResponse {
                    interval: interval.max(1),
                    peers,
                    warning: None,
                }))
            }
            State::Idle => Err(UdpTrackerError::Idle),
        }
    }
}

/// Where a `udp://host:port[/...]` tracker is.
pub fn parse_url(url: &str) -> Result<crate::connector::PeerAddr, crate::tracker::TrackerError> {
    use crate::connector::PeerAddr;
    let bad = || crate::tracker::TrackerError::BadUrl(url.to_string());
    let rest = url.strip_prefix("udp://").ok_or_else(bad)?;
    let hostport = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        hostport.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => PeerAddr::Ip(SocketAddr::new(ip, port)),
        Err(_) => PeerAddr::Host {
            host: host.to_string(),
            port,
        },
    })
}

/// One announce to a UDP tracker over the connector's datagram association (through an exit in
/// anonymous mode): connect, then announce, each datagram sent up to 3 times.
pub async fn announce(
    connector: &dyn crate::connector::Connector,
    url: &str,
    a: &Announce,
    timeout: Duration,
) -> Result<AnnounceResponse, crate::tracker::TrackerError> {
    use crate::tracker::TrackerError;
    let to = parse_url(url)?;
    let fut = async {
        let sock = connector.datagram().await?;
        let mut t = UdpTracker::new();
        let mut out = t.announce(a.clone(), Instant::now());
        let mut buf = vec![0u8; 2048];
        let mut tries = 0;
        loop {
            sock.send_to(&out, &to).await?;
            let per_try = (timeout / 3).max(Duration::from_millis(200));
            match tokio::time::timeout(per_try, sock.recv(&mut buf)).await {
                Err(_) => {
                    tries += 1;
                    if tries >= 3 {
                        return Err(TrackerError::Timeout);
                    }
                }
                Ok(r) => {
                    let n = r?;
                    match t.on_datagram(&buf[..n], Instant::now()) {
                        Ok(Next::Send(p)) => {
                            out = p;
                            tries = 0;
                        }
                        Ok(Next::Done(resp)) => return Ok(resp),
                        // a stray or late answer to an earlier try: keep waiting
                        Err(UdpTrackerError::WrongTransaction) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(TrackerError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann() -> Announce {
        Announce {
            info_hash: [1; 20],
            peer_id: [2; 20],
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 100,
            event: Event::Started,
            numwant: 50,
        }
    }

    #[test]
    fn udp_urls() {
        use crate::connector::PeerAddr;
        assert_eq!(
            parse_url("udp://10.0.0.1:6969/announce").unwrap(),
            PeerAddr::Ip("10.0.0.1:6969".parse().unwrap())
        );
        assert_eq!(
            parse_url("udp://tracker.example:1337").unwrap(),
            PeerAddr::Host {
                host: "tracker.example".into(),
                port: 1337
            }
        );
        assert!(parse_url("udp://[::1]:80/x").is_ok());
        for bad in [
            "udp://host",
            "udp://:80",
            "http://x:1",
            "udp://h:0",
            "udp://h:99999",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_then_announce() {
        let now = Instant::now();
        let mut t = UdpTracker::new();
        let c = t.announce(ann(), now);
        assert_eq!(c.len(), 16);
        assert_eq!(&c[..8], &PROTOCOL_ID.to_be_bytes());
        let mut resp = vec![0, 0, 0, 0];
        resp.extend_from_slice(&c[12..16]);
        resp.extend_from_slice(&42u64.to_be_bytes());
        let Next::Send(a) = t.on_datagram(&resp, now).unwrap() else {
            panic!()
        };
        assert_eq!(a.len(), 98);
        assert_eq!(&a[..8], &42u64.to_be_bytes());
        assert_eq!(u16::from_be_bytes([a[96], a[97]]), 6881);
        // wrong transaction id
        let mut bad = vec![0, 0, 0, 1, 9, 9, 9, 9];
        bad.extend_from_slice(&[0; 12]);
        assert_eq!(
            t.on_datagram(&bad, now),
            Err(UdpTrackerError::WrongTransaction)
        );
        let mut r = vec![0, 0, 0, 1];
        r.extend_from_slice(&a[12..16]);
        r.extend_from_slice(&1800u32.to_be_bytes());
        r.extend_from_slice(&[0; 8]);
        r.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        let Next::Done(d) = t.on_datagram(&r, now).unwrap() else {
            panic!()
        };
        assert_eq!(d.interval, 1800);
        assert_eq!(d.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        // connection id reused within a minute
        let again = t.announce(ann(), now + Duration::from_secs(10));
        assert_eq!(again.len(), 98);
        let fresh = t.announce(ann(), now + Duration::from_secs(61));
        assert_eq!(fresh.len(), 16);
    }

    #[test]
    fn error_action() {
        let now = Instant::now();
        let mut t = UdpTracker::new();
        let c = t.announce(ann(), now);
        let mut e = vec![0, 0, 0, 3];
        e.extend_from_slice(&c[12..16]);
        e.extend_from_slice(b"denied");
        assert_eq!(
            t.on_datagram(&e, now),
            Err(UdpTrackerError::Tracker("denied".into()))
        );
        assert_eq!(t.on_datagram(&[0; 4], now), Err(UdpTrackerError::Short(4)));
    }
}

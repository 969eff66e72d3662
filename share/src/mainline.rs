//! Mainline DHT (BEP 5) peer lookups, as a client only, over the connector's datagrams (through
//! an exit in anonymous mode).
//!
//! [`Lookup`] is a sans-IO iterative `get_peers`: it says which KRPC queries to send where, takes
//! the answers, and collects peers; [`get_peers`] drives it over a [`DatagramAssoc`]. warren never
//! answers DHT queries, never joins routing tables and never announces: nothing in the DHT points
//! back at the user, and every query leaves from an exit. A fresh random node id per lookup keeps
//! lookups unlinkable by id.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::bencode::{self, Value};
use crate::connector::{Connector, DatagramAssoc, PeerAddr};

/// Queries in flight at once.
pub const ALPHA: usize = 4;
/// The lookup ends when this many of the closest nodes seen have answered (or failed).
pub const K: usize = 8;
/// No lookup sends more queries than this.
pub const MAX_QUERIES: usize = 64;
/// A node that has not answered in this long counts as failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers longer than this are refused (a KRPC answer fits in one UDP datagram).
pub const MAX_DATAGRAM: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KrpcError {
    #[error("DHT message is not valid bencode: {0}")]
    Bencode(String),
    #[error("DHT message lacks `{0}` or has the wrong type")]
    Missing(&'static str),
    #[error("DHT node answered with error {code}: {msg}")]
    Remote { code: i64, msg: String },
    #[error("DHT answer to a query we did not send (transaction {0:02x?})")]
    UnknownTransaction(Vec<u8>),
    #[error("`nodes` is {0} bytes, not a multiple of 26")]
    BadNodes(usize),
    #[error("DHT datagram of {0} bytes is larger than {MAX_DATAGRAM}")]
    TooLarge(usize),
}

/// Builds a `get_peers` query.
pub fn get_peers_query(tid: &[u8], own_id: &[u8; 20], info_hash: &[u8; 20]) -> Vec<u8> {
    Value::dict([
        (
            "a",
            Value::dict([
                ("id", Value::bytes(own_id.to_vec())),
                ("info_hash", Value::bytes(info_hash.to_vec())),
            ]),
        ),
        ("q", Value::string("get_peers")),
        ("t", Value::bytes(tid.to_vec())),
        ("y", Value::string("q")),
    ])
    .to_bytes()
}

/// A `get_peers` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetPeersReply {
    pub tid: Vec<u8>,
    pub id: [u8; 20],
    /// Closer nodes (compact IPv4 node info).
    pub nodes: Vec<([u8; 20], SocketAddrV4)>,
    /// Peers of the torrent (compact IPv4 peer info).
    pub values: Vec<SocketAddrV4>,
}

/// Parses a KRPC answer to `get_peers` (an `r` message), or the node's error (`e`).
pub fn parse_reply(d: &[u8]) -> Result<GetPeersReply, KrpcError> {
    if d.len() > MAX_DATAGRAM {
        return Err(KrpcError::TooLarge(d.len()));
    }
    let v = bencode::decode(d).map_err(|e| KrpcError::Bencode(e.to_string()))?;
    let tid = v
        .get(b"t")
        .and_then(Value::as_bytes)
        .ok_or(KrpcError::Missing("t"))?
        .to_vec();
    match v.get(b"y").and_then(Value::as_bytes) {
        Some(b"r") => {}
        Some(b"e") => {
            let e = v.get(b"e").and_then(Value::as_list).unwrap_or(&[]);
            return Err(KrpcError::Remote {
                code: e.first().and_then(Value::as_int).unwrap_or(0),
                msg: e
                    .get(1)
                    .and_then(Value::as_bytes)
                    .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
                    .unwrap_or_default(),
            });
        }
        _ => return Err(KrpcError::Missing("y")),
    }
    let r = v.get(b"r").ok_or(KrpcError::Missing("r"))?;
    let id: [u8; 20] = r
        .get(b"id")
        .and_then(Value::as_bytes)
        .and_then(|b| b.try_into().ok())
        .ok_or(KrpcError::Missing("id"))?;
    let mut nodes = Vec::new();
    if let Some(n) = r.get(b"nodes") {
        let n = n.as_bytes().ok_or(KrpcError::Missing("nodes"))?;
        if n.len() % 26 != 0 {
            return Err(KrpcError::BadNodes(n.len()));
        }
        for c in n.chunks_exact(26) {
            let mut nid = [0u8; 20];
            nid.copy_from_slice(&c[..20]);
            nodes.push((nid, compact_v4(&c[20..])));
        }
    }
    let mut values = Vec::new();
    if let Some(vals) = r.get(b"values") {
        // entries of another length (IPv6 peers) are skipped, not an error
        for p in vals.as_list().ok_or(KrpcError::Missing("values"))? {
            if let Some(b) = p.as_bytes().filter(|b| b.len() == 6) {
                values.push(compact_v4(b));
            }
        }
    }
    Ok(GetPeersReply {
        tid,
        id,
        nodes,
        values,
    })
}

fn compact_v4(b: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        u16::from_be_bytes([b[4], b[5]]),
    )
}

fn distance(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    let mut d = [0u8; 20];
    for i in 0..20 {
        d[i] = a[i] ^ b[i];
    }
    d
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Fresh,
    Asked { tid: u16, at: Instant },
    Answered,
    Failed,
}

#[derive(Debug)]
struct Node {
    /// Unknown for bootstrap nodes until they answer.
    id: Option<[u8; 20]>,
    addr: PeerAddr,
    state: NodeState,
}

/// An iterative `get_peers` lookup. Sans-IO: call [`poll`](Lookup::poll) for datagrams to send,
/// feed answers to [`on_datagram`](Lookup::on_datagram), stop when [`done`](Lookup::done).
#[derive(Debug)]
pub struct Lookup {
    target: [u8; 20],
    own_id: [u8; 20],
    nodes: Vec<Node>,
    peers: Vec<SocketAddr>,
    next_tid: u16,
    queries: usize,
}

impl Lookup {
    pub fn new(info_hash: [u8; 20], bootstrap: Vec<PeerAddr>) -> Lookup {
        let mut l = Lookup {
            target: info_hash,
            own_id: rand::random(),
            nodes: Vec::new(),
            peers: Vec::new(),
            next_tid: rand::random(),
            queries: 0,
        };
        for a in bootstrap {
            if !l.nodes.iter().any(|n| n.addr == a) {
                l.nodes.push(Node {
                    id: None,
                    addr: a,
                    state: NodeState::Fresh,
                });
            }
        }
        l
    }

    /// Peers found so far.
    pub fn peers(&self) -> &[SocketAddr] {
        &self.peers
    }

    pub fn queries_sent(&self) -> usize {
        self.queries
    }

    /// Order: bootstrap nodes (no id yet) first, then by XOR distance to the target.
    fn sort(&mut self) {
        let t = self.target;
        self.nodes.sort_by_key(|n| n.id.map(|id| distance(&id, &t)));
    }

    /// Indices (in sorted order) of the K closest live nodes with a known id, or of the
    /// bootstrap nodes while no id is known.
    fn closest(&self) -> Vec<usize> {
        let known = self.nodes.iter().any(|n| n.id.is_some());
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state != NodeState::Failed && (n.id.is_some() || !known))
            .map(|(i, _)| i)
            .take(K)
            .collect()
    }

    /// Times out silent nodes and returns the queries to send now.
    pub fn poll(&mut self, now: Instant) -> Vec<(PeerAddr, Vec<u8>)> {
        for n in &mut self.nodes {
            if let NodeState::Asked { at, .. } = n.state {
                if now.saturating_duration_since(at) >= QUERY_TIMEOUT {
                    n.state = NodeState::Failed;
                }
            }
        }
        self.sort();
        let in_flight = self
            .nodes
            .iter()
            .filter(|n| matches!(n.state, NodeState::Asked { .. }))
            .count();
        let mut room = ALPHA.saturating_sub(in_flight);
        let fresh: Vec<usize> = self
            .closest()
            .into_iter()
            .filter(|&i| self.nodes[i].state == NodeState::Fresh)
            .collect();
        let mut out = Vec::new();
        for i in fresh {
            if room == 0 || self.queries >= MAX_QUERIES {
                break;
            }
            let tid = self.next_tid;
            self.next_tid = self.next_tid.wrapping_add(1);
            self.queries += 1;
            room -= 1;
            let n = &mut self.nodes[i];
            n.state = NodeState::Asked { tid, at: now };
            out.push((
                n.addr.clone(),
                get_peers_query(&tid.to_be_bytes(), &self.own_id, &self.target),
            ));
        }
        out
    }

    /// When the next silent node times out.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|n| match n.state {
                NodeState::Asked { at, .. } => Some(at + QUERY_TIMEOUT),
                _ => None,
            })
            .min()
    }

    /// Whether the lookup is over: nothing in flight, and the closest nodes all answered or
    /// failed (or the query budget is spent).
    pub fn done(&self) -> bool {
        let in_flight = self
            .nodes
            .iter()
            .any(|n| matches!(n.state, NodeState::Asked { .. }));
        if in_flight {
            return false;
        }
        self.queries >= MAX_QUERIES
            || !self
                .closest()
                .into_iter()
                .any(|i| self.nodes[i].state == NodeState::Fresh)
    }

    /// An answer arrived. Returns the peers it added.
    pub fn on_datagram(&mut self, d: &[u8]) -> Result<Vec<SocketAddr>, KrpcError> {
        let tid_of = |t: &[u8]| -> Option<u16> { t.try_into().ok().map(u16::from_be_bytes) };
        let reply = match parse_reply(d) {
            Ok(r) => r,
            Err(e) => {
                // an error answer still settles its query
                if let Ok(v) = bencode::decode(d) {
                    if let Some(tid) = v.get(b"t").and_then(Value::as_bytes).and_then(tid_of) {
                        self.settle(tid, NodeState::Failed);
                    }
                }
                return Err(e);
            }
        };
        let Some(tid) = tid_of(&reply.tid) else {
            return Err(KrpcError::UnknownTransaction(reply.tid));
        };
        let Some(i) = self.settle(tid, NodeState::Answered) else {
            return Err(KrpcError::UnknownTransaction(reply.tid));
        };
        self.nodes[i].id = Some(reply.id);
        for (id, a) in reply.nodes {
            if a.port() == 0 || a.ip().is_unspecified() {
                continue;
            }
            let addr = PeerAddr::Ip(SocketAddr::V4(a));
            if !self
                .nodes
                .iter()
                .any(|n| n.addr == addr || n.id == Some(id))
            {
                self.nodes.push(Node {
                    id: Some(id),
                    addr,
                    state: NodeState::Fresh,
                });
            }
        }
        let mut fresh = Vec::new();
        for p in reply.values {
            let p = SocketAddr::V4(p);
            if p.port() != 0 && !self.peers.contains(&p) {
                self.peers.push(p);
                fresh.push(p);
            }
        }
        Ok(fresh)
    }

    fn settle(&mut self, tid: u16, to: NodeState) -> Option<usize> {
        let i = self
            .nodes
            .iter()
            .position(|n| matches!(n.state, NodeState::Asked { tid: t, .. } if t == tid))?;
        self.nodes[i].state = to;
        Some(i)
    }
}

/// Errors of a whole lookup.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no DHT bootstrap node configured")]
    NoBootstrap,
    #[error("cannot open a datagram association for the DHT: {0}")]
    Datagram(std::io::Error),
}

/// Runs one `get_peers` lookup over the connector's datagram association (an exit's, in
/// anonymous mode), for at most `limit`. Returns the peers found (possibly none).
pub async fn get_peers(
    connector: &dyn Connector,
    bootstrap: &[PeerAddr],
    info_hash: [u8; 20],
    limit: Duration,
) -> Result<Vec<SocketAddr>, LookupError> {
    if bootstrap.is_empty() {
        return Err(LookupError::NoBootstrap);
    }
    let sock: Box<dyn DatagramAssoc> = connector.datagram().await.map_err(LookupError::Datagram)?;
    let mut l = Lookup::new(info_hash, bootstrap.to_vec());
    let t0 = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    while t0.elapsed() < limit {
        for (to, q) in l.poll(Instant::now()) {
            if let Err(e) = sock.send_to(&q, &to).await {
                tracing::debug!(%to, "DHT query not sent: {e}");
            }
        }
        if l.done() {
            break;
        }
        let wait = l
            .next_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(QUERY_TIMEOUT)
            .min(limit.saturating_sub(t0.elapsed()))
            .max(Duration::from_millis(10));
        match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
            Err(_) => {}
            Ok(Err(e)) => {
                tracing::debug!("DHT datagram association failed: {e}");
                break;
            }
            Ok(Ok(n)) => {
                if let Err(e) = l.on_datagram(&buf[..n.min(buf.len())]) {
                    tracing::debug!("DHT answer ignored: {e}");
                }
            }
        }
    }
    tracing::debug!(
        queries = l.queries_sent(),
        peers = l.peers().len(),
        "mainline DHT lookup finished"
    );
    Ok(l.peers().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> [u8; 20] {
        let mut x = [0u8; 20];
        x[0] = b;
        x
    }

    /// A node's answer to the query `q`: closer nodes and/or peers.
    fn answer(q: &[u8], from: [u8; 20], nodes: &[([u8; 20], u16)], values: &[u16]) -> Vec<u8> {
        let v = bencode::decode(q).unwrap();
        let tid = v.get(b"t").unwrap().as_bytes().unwrap().to_vec();
        assert_eq!(v.get(b"q").unwrap().as_bytes().unwrap(), b"get_peers");
        let mut compact = Vec::new();
        for (nid, port) in nodes {
            compact.extend_from_slice(nid);
            compact.extend_from_slice(&[10, 0, 0, 1]);
            compact.extend_from_slice(&port.to_be_bytes());
        }
        let mut r = vec![
            ("id", Value::bytes(from.to_vec())),
            ("token", Value::bytes(b"tok".to_vec())),
        ];
        if !nodes.is_empty() {
            r.push(("nodes", Value::bytes(compact)));
        }
        if !values.is_empty() {
            r.push((
                "values",
                Value::List(
                    values
                        .iter()
                        .map(|p| {
                            let mut b = vec![10, 0, 0, 9];
                            b.extend_from_slice(&p.to_be_bytes());
                            Value::bytes(b)
                        })
                        .collect(),
                ),
            ));
        }
        Value::dict([
            ("r", Value::dict(r)),
            ("t", Value::bytes(tid)),
            ("y", Value::string("r")),
        ])
        .to_bytes()
    }

    fn port_of(a: &PeerAddr) -> u16 {
        match a {
            PeerAddr::Ip(s) => s.port(),
            _ => 0,
        }
    }

    #[test]
    fn lookup_walks_closer_nodes_and_collects_peers() {
        let target = id(0x80);
        let boot = PeerAddr::Host {
            host: "router.example".into(),
            port: 6881,
        };
        let mut l = Lookup::new(target, vec![boot.clone()]);
        let t0 = Instant::now();
        let q = l.poll(t0);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].0, boot);
        // the router knows two nodes, one close to the target
        let a = answer(
            &q[0].1,
            id(0x01),
            &[(id(0x81), 2001), (id(0x10), 2002)],
            &[],
        );
        assert_eq!(l.on_datagram(&a).unwrap(), vec![]);
        let q = l.poll(t0);
        assert_eq!(q.len(), 2);
        assert_eq!(port_of(&q[0].0), 2001, "closest first");
        // the close node has peers, the other goes silent
        let a = answer(&q[0].1, id(0x81), &[], &[7001, 7002]);
        let got = l.on_datagram(&a).unwrap();
        assert_eq!(got.len(), 2);
        assert!(!l.done(), "one query still in flight");
        assert!(l.poll(t0 + Duration::from_millis(100)).is_empty());
        assert!(l.poll(t0 + QUERY_TIMEOUT).is_empty());
        assert!(l.done());
        assert_eq!(
            l.peers(),
            &[
                "10.0.0.9:7001".parse().unwrap(),
                "10.0.0.9:7002".parse().unwrap()
            ]
        );
    }

    #[test]
    fn replies_that_do_not_match_a_query_are_refused() {
        let mut l = Lookup::new(id(1), vec![PeerAddr::Ip("127.0.0.1:1".parse().unwrap())]);
        let q = l.poll(Instant::now());
        let mut a = answer(&q[0].1, id(2), &[], &[1]);
        // flip the transaction id
        let pos = a.windows(5).position(|w| w == b"1:t2:").unwrap() + 5;
        a[pos + 1] ^= 0xff;
        a[pos] ^= 0xff;
        assert!(matches!(
            l.on_datagram(&a),
            Err(KrpcError::UnknownTransaction(_))
        ));
        assert!(l.peers().is_empty());
    }

    #[test]
    fn malformed_answers_are_named() {
        assert!(matches!(
            parse_reply(b"garbage"),
            Err(KrpcError::Bencode(_))
        ));
        assert_eq!(
            parse_reply(b"d1:t2:ab1:y1:re"),
            Err(KrpcError::Missing("r"))
        );
        assert_eq!(
            parse_reply(b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes3:abce1:t2:ab1:y1:re"),
            Err(KrpcError::BadNodes(3))
        );
        assert_eq!(
            parse_reply(b"d1:eli203e3:bade1:t2:ab1:y1:ee"),
            Err(KrpcError::Remote {
                code: 203,
                msg: "bad".into()
            })
        );
        assert_eq!(
            parse_reply(&vec![b'x'; MAX_DATAGRAM + 1]),
            Err(KrpcError::TooLarge(MAX_DATAGRAM + 1))
        );
    }

    #[test]
    fn budget_and_silence_end_the_lookup() {
        let boots: Vec<PeerAddr> = (1..=3)
            .map(|p| PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 1], p))))
            .collect();
        let mut l = Lookup::new(id(9), boots);
        let t0 = Instant::now();
        assert_eq!(l.poll(t0).len(), 3);
        assert!(!l.done());
        assert_eq!(l.next_timeout(), Some(t0 + QUERY_TIMEOUT));
        assert!(l.poll(t0 + QUERY_TIMEOUT).is_empty());
        assert!(l.done(), "every node silent: over, no peers");
        assert!(l.peers().is_empty());
    }
}

//! An iterative Kademlia lookup as a state machine.
//!
//! The runtime asks [`Lookup::poll`] which requests to send (at most [`ALPHA`] in flight), sends each
//! through a circuit, and feeds back [`Lookup::on_response`] or [`Lookup::on_failure`]. Requests that
//! have been in flight longer than the timeout are failed by `poll` itself. The lookup ends when the
//! [`K`] closest candidates it knows have all answered or failed, or after a bounded number of
//! queries, and yields the closest responsive contacts and (for value lookups) the records found.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::id::Key;
use super::message::{Contact, Request, Response};
use super::record::Record;
use super::{ALPHA, K};

/// Upper bound on requests one lookup sends.
pub const MAX_QUERIES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupKind {
    Node,
    Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    InFlight(Instant),
    Answered,
    Failed,
}

#[derive(Debug)]
pub struct LookupOutcome {
    /// Closest contacts that answered, closest first (store targets for a STORE).
    pub closest: Vec<Contact>,
    /// Records found, one per publisher (highest seq), for value lookups.
    pub records: Vec<Record>,
    pub queries: usize,
}

pub struct Lookup {
    target: Key,
    kind: LookupKind,
    timeout: Duration,
    candidates: Vec<(Contact, State)>,
    records: HashMap<[u8; 32], Record>,
    queries: usize,
}

impl Lookup {
    pub fn new(target: Key, kind: LookupKind, seeds: Vec<Contact>, timeout: Duration) -> Self {
        let mut l = Lookup {
            target,
            kind,
            timeout,
            candidates: Vec::new(),
            records: HashMap::new(),
            queries: 0,
        };
        l.add(seeds);
        l
    }

    pub fn target(&self) -> Key {
        self.target
    }

    fn add(&mut self, cs: Vec<Contact>) {
        for c in cs {
            if !self.candidates.iter().any(|(k, _)| k.id == c.id) {
                self.candidates.push((c, State::Fresh));
            }
        }
        let t = self.target;
        self.candidates.sort_by_key(|(c, _)| c.id.distance(&t));
        // keep the search bounded: far candidates that were never asked are forgotten
        let mut kept = 0;
        self.candidates.retain(|(_, s)| {
            kept += 1;
            kept <= 3 * K || *s != State::Fresh
        });
    }

    fn request(&self) -> Request {
        match self.kind {
            LookupKind::Node => Request::FindNode(self.target),
            LookupKind::Value => Request::FindValue(self.target),
        }
    }

    /// The requests to send now. Also fails requests in flight for longer than the timeout.
    pub fn poll(&mut self, now: Instant) -> Vec<(Contact, Request)> {
        for (_, s) in self.candidates.iter_mut() {
            if let State::InFlight(t) = *s {
                if now.duration_since(t) >= self.timeout {
                    *s = State::Failed;
                }
            }
        }
        if self.is_done() {
            return Vec::new();
        }
        let in_flight = self
            .candidates
            .iter()
            .filter(|(_, s)| matches!(s, State::InFlight(_)))
            .count();
        let mut out = Vec::new();
        let mut budget = ALPHA.saturating_sub(in_flight);
        let req = self.request();
        let window = self
            .candidates
            .iter_mut()
            .filter(|(_, s)| *s != State::Failed)
            .take(K);
        for (c, s) in window {
            if budget == 0 || self.queries >= MAX_QUERIES {
                break;
            }
            if *s == State::Fresh {
                *s = State::InFlight(now);
                self.queries += 1;
                budget -= 1;
                out.push((c.clone(), req.clone()));
            }
        }
        out
    }

    /// When the next in-flight request times out, for the runtime's timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.candidates
            .iter()
            .filter_map(|(_, s)| match s {
                State::InFlight(t) => Some(*t + self.timeout),
                _ => None,
            })
            .min()
    }

    pub fn on_response(&mut self, from: &Key, resp: Response) {
        let Some(pos) = self.candidates.iter().position(|(c, _)| c.id == *from) else {
            return;
        };
        if !matches!(self.candidates[pos].1, State::InFlight(_)) {
            return;
        }
        self.candidates[pos].1 = State::Answered;
        match resp {
            Response::Nodes(cs) => self.add(cs),
            Response::Values { records, closer } => {
                for r in records {
                    if r.key != self.target {
                        continue;
                    }
                    match self.records.get(&r.publisher) {
                        Some(old) if old.seq >= r.seq => {}
                        _ => {
                            self.records.insert(r.publisher, r);
                        }
                    }
                }
                self.add(closer);
            }
            Response::Error { .. } | Response::Pong | Response::Stored => {}
        }
    }

    pub fn on_failure(&mut self, from: &Key) {
        if let Some((_, s)) = self.candidates.iter_mut().find(|(c, _)| c.id == *from) {
            if matches!(s, State::InFlight(_)) {
                *s = State::Failed;
            }
        }
    }

    pub fn is_done(&self) -> bool {
        let any_in_flight = self
            .candidates
            .iter()
            .any(|(_, s)| matches!(s, State::InFlight(_)));
        if self.queries >= MAX_QUERIES {
            return !any_in_flight;
        }
        // the K closest non-failed candidates have all answered
        self.candidates
            .iter()
            .filter(|(_, s)| *s != State::Failed)
            .take(K)
            .all(|(_, s)| *s == State::Answered)
    }

    pub fn outcome(&self) -> LookupOutcome {
        LookupOutcome {
            closest: self
                .candidates
                .iter()
                .filter(|(_, s)| *s == State::Answered)
                .take(K)
                .map(|(c, _)| c.clone())
                .collect(),
            records: self.records.values().cloned().collect(),
            queries: self.queries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::record::RecordKind;
    use crate::dht::server::DhtServer;
    use crate::dht::store::StoreLimits;
    use ed25519_dalek::SigningKey;
    use rand::{Rng, SeedableRng};

    fn contact(id: Key) -> Contact {
        Contact {
            id,
            descriptor: vec![],
        }
    }

    /// A simulated network of DHT servers that all know a random subset of each other.
    fn network(n: usize, seed: u64) -> Vec<DhtServer> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let ids: Vec<Key> = (0..n).map(|_| Key(rng.gen())).collect();
        let mut servers: Vec<DhtServer> = ids
            .iter()
            .map(|id| DhtServer::new(contact(*id), StoreLimits::default()))
            .collect();
        for s in servers.iter_mut() {
            for _ in 0..20 {
                let other = ids[rng.gen_range(0..n)];
                s.learn(contact(other));
            }
        }
        servers
    }

    fn run(servers: &mut [DhtServer], lookup: &mut Lookup, now_unix: u64, dead: &[Key]) {
        let t0 = Instant::now();
        for round in 0..200 {
            let reqs = lookup.poll(t0 + Duration::from_millis(round));
            if reqs.is_empty() && lookup.is_done() {
                return;
            }
            for (c, req) in reqs {
                if dead.contains(&c.id) {
                    lookup.on_failure(&c.id);
                    continue;
                }
                let Some(s) = servers.iter_mut().find(|s| s.id() == c.id) else {
                    lookup.on_failure(&c.id);
                    continue;
                };
                let resp = s.handle(req, now_unix);
                lookup.on_response(&c.id, resp);
            }
        }
        panic!("lookup did not finish");
    }

    #[test]
    fn node_lookup_converges_to_the_true_closest() {
        let mut servers = network(200, 1);
        let target = Key([0x42; 32]);
        let seeds = vec![contact(servers[0].id())];
        let mut l = Lookup::new(target, LookupKind::Node, seeds, Duration::from_secs(1));
        run(&mut servers, &mut l, 1000, &[]);
        let got = l.outcome();
        let mut truth: Vec<Key> = servers.iter().map(|s| s.id()).collect();
        truth.sort_by_key(|k| k.distance(&target));
        let found: Vec<Key> = got.closest.iter().map(|c| c.id).collect();
        // the closest node overall is found, and most of the true K closest
        assert_eq!(found[0], truth[0]);
        let hits = truth[..K].iter().filter(|k| found.contains(k)).count();
        assert!(hits >= K * 3 / 4, "found {hits} of the {K} closest");
        assert!(got.queries <= MAX_QUERIES);
    }

    #[test]
    fn store_then_find_value_with_dead_nodes() {
        let mut servers = network(120, 2);
        let now = 10_000;
        let key = Key([0x17; 32]);
        // STORE at the K closest found by a node lookup
        let mut l = Lookup::new(
            key,
            LookupKind::Node,
            vec![contact(servers[5].id())],
            Duration::from_secs(1),
        );
        run(&mut servers, &mut l, now, &[]);
        let rec = Record::sign(
            &SigningKey::from_bytes(&[3; 32]),
            key,
            RecordKind::Swarm,
            1,
            now + 100,
            vec![1, 2],
        );
        for c in l.outcome().closest {
            let s = servers.iter_mut().find(|s| s.id() == c.id).unwrap();
            assert_eq!(s.handle(Request::Store(rec.clone()), now), Response::Stored);
        }
        // a third of the holders die; the value is still found from another entry point
        let mut holders: Vec<Key> = servers
            .iter()
            .filter(|s| !s.store().is_empty())
            .map(|s| s.id())
            .collect();
        holders.truncate(K / 3);
        let mut v = Lookup::new(
            key,
            LookupKind::Value,
            vec![contact(servers[77].id())],
            Duration::from_secs(1),
        );
        run(&mut servers, &mut v, now, &holders);
        let out = v.outcome();
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.records[0], rec);
    }

    #[test]
    fn timeouts_fail_requests() {
        let target = Key([1; 32]);
        let mut l = Lookup::new(
            target,
            LookupKind::Node,
            vec![contact(Key([2; 32]))],
            Duration::from_millis(100),
        );
        let t0 = Instant::now();
        assert_eq!(l.poll(t0).len(), 1);
        assert!(!l.is_done());
        assert_eq!(l.next_timeout(), Some(t0 + Duration::from_millis(100)));
        assert!(l.poll(t0 + Duration::from_millis(150)).is_empty());
        assert!(l.is_done());
        assert!(l.outcome().closest.is_empty());
    }

    #[test]
    fn unsolicited_responses_are_ignored() {
        let mut l = Lookup::new(
            Key([1; 32]),
            LookupKind::Node,
            vec![contact(Key([2; 32]))],
            Duration::from_secs(1),
        );
        l.on_response(&Key([9; 32]), Response::Nodes(vec![contact(Key([3; 32]))]));
        // the contact was never asked: nothing was added
        assert_eq!(l.poll(Instant::now()).len(), 1);
    }
}

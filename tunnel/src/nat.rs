//! The UDP NAT table (sans-IO): one association per program-side source address (full cone:
//! any remote may answer to that source), idle timeout, bounded size. Each association is
//! carried by one provider datagram association.
//!
//! It also maps replies back: a program that sent to a fake IP (a name) gets the reply with
//! that fake IP as source, so connected UDP sockets accept it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How many name targets an association remembers for mapping replies back.
const MAX_HOSTS_PER_ASSOC: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatDecision {
    /// Use the existing association `id`.
    Existing(u64),
    /// Open a new association `id` for this source.
    New(u64),
    /// The table is full; drop the datagram.
    Full,
}

#[derive(Debug)]
struct Assoc {
    id: u64,
    last_active: Instant,
    /// (port, fake address the program used) for targets sent by name, most recent last.
    hosts: Vec<(u16, SocketAddr)>,
}

#[derive(Debug)]
pub struct NatTable {
    idle: Duration,
    max: usize,
    next_id: u64,
    entries: HashMap<SocketAddr, Assoc>,
}

impl NatTable {
    pub fn new(idle: Duration, max: usize) -> Self {
        Self {
            idle,
            max,
            next_id: 0,
            entries: HashMap::new(),
        }
    }

    /// An outgoing datagram from `src` at `now`.
    pub fn outgoing(&mut self, src: SocketAddr, now: Instant) -> NatDecision {
        if let Some(a) = self.entries.get_mut(&src) {
            a.last_active = now;
            return NatDecision::Existing(a.id);
        }
        if self.entries.len() >= self.max {
            return NatDecision::Full;
        }
        self.next_id += 1;
        self.entries.insert(
            src,
            Assoc {
                id: self.next_id,
                last_active: now,
                hosts: Vec::new(),
            },
        );
        NatDecision::New(self.next_id)
    }

    /// Remembers that `src` sent to the fake address `fake` (a name target).
    pub fn note_host_target(&mut self, src: SocketAddr, fake: SocketAddr) {
        if let Some(a) = self.entries.get_mut(&src) {
            a.hosts.retain(|(_, f)| *f != fake);
            if a.hosts.len() >= MAX_HOSTS_PER_ASSOC {
                a.hosts.remove(0);
            }
            a.hosts.push((fake.port(), fake));
        }
    }

    /// An incoming reply for `src` from `from` (as the exit saw it): refreshes the association
    /// and says which source address the program should see. `None` when the association is
    /// gone.
    pub fn incoming(
        &mut self,
        src: SocketAddr,
        from: SocketAddr,
        now: Instant,
    ) -> Option<SocketAddr> {
        let a = self.entries.get_mut(&src)?;
        a.last_active = now;
        let mapped = a
            .hosts
            .iter()
            .rev()
            .find(|(port, _)| *port == from.port())
            .map(|(_, fake)| *fake);
        Some(mapped.unwrap_or(from))
    }

    /// Removes associations idle for longer than the timeout; returns their (source, id).
    pub fn expire(&mut self, now: Instant) -> Vec<(SocketAddr, u64)> {
        let idle = self.idle;
        let mut gone = Vec::new();
        self.entries.retain(|src, a| {
            let keep = now.saturating_duration_since(a.last_active) < idle;
            if !keep {
                gone.push((*src, a.id));
            }
            keep
        });
        gone
    }

    /// Removes one association (its carrier failed).
    pub fn remove(&mut self, src: SocketAddr, id: u64) {
        if self.entries.get(&src).is_some_and(|a| a.id == id) {
            self.entries.remove(&src);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_association_per_source_with_idle_timeout() {
        let t0 = Instant::now();
        let mut nat = NatTable::new(Duration::from_secs(30), 2);
        let a = sa("198.18.0.1:6881");
        let b = sa("198.18.0.1:6882");
        assert_eq!(nat.outgoing(a, t0), NatDecision::New(1));
        assert_eq!(nat.outgoing(a, t0), NatDecision::Existing(1));
        assert_eq!(nat.outgoing(b, t0), NatDecision::New(2));
        assert_eq!(nat.outgoing(sa("198.18.0.1:1"), t0), NatDecision::Full);
        // a reply keeps `a` alive
        assert_eq!(
            nat.incoming(a, sa("203.0.113.9:51413"), t0 + Duration::from_secs(20)),
            Some(sa("203.0.113.9:51413"))
        );
        let gone = nat.expire(t0 + Duration::from_secs(31));
        assert_eq!(gone, vec![(b, 2)]);
        assert_eq!(nat.len(), 1);
        assert!(nat.incoming(b, sa("203.0.113.9:1"), t0).is_none());
        let gone = nat.expire(t0 + Duration::from_secs(60));
        assert_eq!(gone, vec![(a, 1)]);
        assert!(nat.is_empty());
    }

    #[test]
    fn replies_from_name_targets_map_to_the_fake_address() {
        let t0 = Instant::now();
        let mut nat = NatTable::new(Duration::from_secs(30), 8);
        let src = sa("198.18.0.1:5000");
        nat.outgoing(src, t0);
        let fake = sa("198.18.0.20:1337");
        nat.note_host_target(src, fake);
        assert_eq!(nat.incoming(src, sa("127.0.0.1:1337"), t0), Some(fake));
        // other ports are full-cone: the real source is shown
        assert_eq!(
            nat.incoming(src, sa("127.0.0.1:9999"), t0),
            Some(sa("127.0.0.1:9999"))
        );
        nat.remove(src, 99);
        assert_eq!(nat.len(), 1);
        nat.remove(src, 1);
        assert!(nat.is_empty());
    }
}

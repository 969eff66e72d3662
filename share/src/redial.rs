//! When to dial a peer again after its connection ended or a dial failed.
//!
//! A torrent keeps the peers it has known: a connection that breaks (a relay of its circuit
//! died, the peer restarted) is dialled again after a short pause instead of waiting for the
//! next tracker announce or DHT lookup. A peer that was useful (it sent payload) is retried at
//! once; one that keeps failing waits longer each time (1, 2, 4 ... 60 s) and is forgotten after
//! [`MAX_FAILURES`] failures in a row. Plain state, time passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::connector::PeerAddr;

/// Failures in a row after which a peer is forgotten (a tracker or lookup may add it again).
pub const MAX_FAILURES: u32 = 8;
/// The longest pause between two dials of one peer.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);
/// The pause after a useful connection ended.
pub const AFTER_USEFUL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct Redial {
    /// address -> (failures in a row, when it may be dialled again)
    peers: HashMap<PeerAddr, (u32, Option<Instant>)>,
}

impl Redial {
    /// A connection to `addr` ended (or a dial failed). `useful`: it delivered payload.
    pub fn lost(&mut self, addr: &PeerAddr, useful: bool, now: Instant) {
        let e = self.peers.entry(addr.clone()).or_insert((0, None));
        if useful {
            e.0 = 0;
            e.1 = Some(now + AFTER_USEFUL);
            return;
        }
        e.0 += 1;
        if e.0 > MAX_FAILURES {
            self.peers.remove(addr);
            return;
        }
        let pause = Duration::from_secs(1u64 << (e.0 - 1).min(6)).min(MAX_PAUSE);
        e.1 = Some(now + pause);
    }

    /// The peer is banned or the torrent no longer needs it.
    pub fn forget(&mut self, addr: &PeerAddr) {
        self.peers.remove(addr);
    }

    /// Takes the peers whose pause is over.
    pub fn due(&mut self, now: Instant) -> Vec<PeerAddr> {
        let mut out = Vec::new();
        for (a, (_, at)) in self.peers.iter_mut() {
            if at.is_some_and(|t| t <= now) {
                *at = None;
                out.push(a.clone());
            }
        }
        out.sort_by_key(|a| a.to_string());
        out
    }

    /// When the next peer becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.peers.values().filter_map(|(_, at)| *at).min()
    }

    pub fn clear(&mut self) {
        self.peers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PeerAddr {
        PeerAddr::Ip(s.parse().unwrap())
    }

    #[test]
    fn useful_peer_comes_back_at_once_failing_one_backs_off_then_is_forgotten() {
        let t0 = Instant::now();
        let mut r = Redial::default();
        let a = addr("127.0.0.1:1");
        r.lost(&a, true, t0);
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + AFTER_USEFUL), vec![a.clone()]);
        assert!(
            r.due(t0 + Duration::from_secs(100)).is_empty(),
            "taken once"
        );

        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..MAX_FAILURES {
            r.lost(&a, false, now);
            let next = r.next_due().unwrap();
            pauses.push((next - now).as_secs());
            assert!(r.due(next - Duration::from_millis(1)).is_empty());
            assert_eq!(r.due(next), vec![a.clone()]);
            now = next;
        }
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        r.lost(&a, false, now);
        assert_eq!(
            r.next_due(),
            None,
            "forgotten after {MAX_FAILURES} failures"
        );
    }

    #[test]
    fn a_useful_connection_resets_the_backoff_and_forget_drops() {
        let t0 = Instant::now();
        let mut r = Redial::default();
        let a = addr("127.0.0.1:1");
        let b = addr("127.0.0.1:2");
        for _ in 0..5 {
            r.lost(&a, false, t0);
        }
        r.lost(&a, true, t0);
        assert_eq!(r.next_due(), Some(t0 + AFTER_USEFUL));
        r.lost(&a, false, t0);
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(1)));
        r.lost(&b, false, t0);
        r.forget(&a);
        assert_eq!(r.due(t0 + Duration::from_secs(5)), vec![b]);
    }
}

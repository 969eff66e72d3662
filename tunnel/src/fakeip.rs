//! The fake-IP pool: the tunnel's resolver answers every A query with an address from a
//! reserved range (198.18.0.0/15 by default) and remembers which name it stands for, so the
//! name (not an address resolved on the user's side) travels to the exit with the stream.
//!
//! Allocation walks the range with a cursor; when the pool is full the oldest mapping under
//! the cursor is recycled. Memory is bounded by the range size (or `capacity`).

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug)]
pub struct FakeIpPool {
    first: u32,
    size: u32,
    cursor: u32,
    by_name: HashMap<String, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, String>,
}

impl FakeIpPool {
    /// A pool handing out `first ..= last`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        let (a, b) = (u32::from(first), u32::from(last));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Self {
            first: lo,
            size: hi - lo + 1,
            cursor: 0,
            by_name: HashMap::new(),
            by_ip: HashMap::new(),
        }
    }

    /// Whether `ip` is inside the pool's range (mapped or not).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v >= self.first && v - self.first < self.size
    }

    /// The fake address for `name`, allocating one if needed.
    pub fn assign(&mut self, name: &str) -> Ipv4Addr {
        if let Some(ip) = self.by_name.get(name) {
            return *ip;
        }
        let ip = Ipv4Addr::from(self.first + self.cursor);
        self.cursor = (self.cursor + 1) % self.size;
        if let Some(old) = self.by_ip.remove(&ip) {
            self.by_name.remove(&old);
        }
        self.by_name.insert(name.to_string(), ip);
        self.by_ip.insert(ip, name.to_string());
        ip
    }

    /// The name a fake address stands for.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_ip.get(&ip).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_stable_unique_addresses() {
        let mut p = FakeIpPool::new(
            Ipv4Addr::new(198, 18, 0, 16),
            Ipv4Addr::new(198, 19, 255, 254),
        );
        let a = p.assign("a.example");
        let b = p.assign("b.example");
        assert_ne!(a, b);
        assert_eq!(p.assign("a.example"), a);
        assert_eq!(p.lookup(a), Some("a.example"));
        assert_eq!(p.lookup(b), Some("b.example"));
        assert!(p.contains(a) && p.contains(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(!p.contains(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(!p.contains(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn recycles_oldest_when_full() {
        let mut p = FakeIpPool::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 3));
        let a = p.assign("a");
        p.assign("b");
        p.assign("c");
        let d = p.assign("d");
        assert_eq!(d, a, "the oldest slot is reused");
        assert_eq!(p.lookup(a), Some("d"));
        assert_eq!(p.len(), 3);
        // "a" gets a fresh slot (recycling "b")
        let a2 = p.assign("a");
        assert_eq!(p.lookup(a2), Some("a"));
        assert_eq!(p.len(), 3);
    }
}

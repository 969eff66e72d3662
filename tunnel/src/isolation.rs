//! Stream isolation: which flows may share a circuit.
//!
//! Destinations are grouped (a host name by its last two labels, an IP address by itself), and
//! each group is given an [`IsolationKey`]. One key is shared by at most `groups_per_key`
//! groups; the next group gets a fresh key. `groups_per_key = 1` puts every destination group
//! on its own circuit(s). The table is bounded: the oldest groups are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use overlay::IsolationKey;

/// What a flow is going to, as far as isolation is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Name(String),
    Ip(IpAddr),
}

impl Destination {
    /// The group this destination belongs to.
    pub fn group(&self) -> String {
        match self {
            Destination::Ip(ip) => ip.to_string(),
            Destination::Name(n) => {
                let labels: Vec<&str> = n.rsplitn(3, '.').collect();
                match labels.as_slice() {
                    [tld, second, ..] => format!("{second}.{tld}"),
                    _ => n.clone(),
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Isolator {
    base: u64,
    groups_per_key: usize,
    max_groups: usize,
    next_key: u64,
    current_fill: usize,
    groups: HashMap<String, IsolationKey>,
    order: VecDeque<String>,
}

impl Isolator {
    /// `base` keeps the tunnel's keys apart from other users of the same provider.
    pub fn new(base: u64, groups_per_key: usize, max_groups: usize) -> Self {
        Self {
            base,
            groups_per_key: groups_per_key.max(1),
            max_groups: max_groups.max(1),
            next_key: 0,
            current_fill: 0,
            groups: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The key for a flow to `dest`.
    pub fn key_for(&mut self, dest: &Destination) -> IsolationKey {
        let group = dest.group();
        if let Some(k) = self.groups.get(&group) {
            return *k;
        }
        if self.current_fill >= self.groups_per_key {
            self.next_key += 1;
            self.current_fill = 0;
        }
        let key = IsolationKey(self.base ^ self.next_key);
        self.current_fill += 1;
        while self.groups.len() >= self.max_groups {
            match self.order.pop_front() {
                Some(old) => {
                    self.groups.remove(&old);
                }
                None => break,
            }
        }
        self.groups.insert(group.clone(), key);
        self.order.push_back(group);
        key
    }

    /// A key used by nothing else (one per UDP association).
    pub fn unique_key(&mut self) -> IsolationKey {
        if self.current_fill > 0 {
            self.next_key += 1;
            self.current_fill = 0;
        }
        let key = IsolationKey(self.base ^ self.next_key);
        self.next_key += 1;
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Destination {
        Destination::Name(s.into())
    }

    #[test]
    fn groups_by_registrable_suffix_and_ip() {
        assert_eq!(name("a.b.example.org").group(), "example.org");
        assert_eq!(name("localhost").group(), "localhost");
        assert_eq!(
            Destination::Ip("10.1.2.3".parse().unwrap()).group(),
            "10.1.2.3"
        );
    }

    #[test]
    fn limit_of_groups_per_key() {
        let mut iso = Isolator::new(1000, 2, 100);
        let a = iso.key_for(&name("x.a.com"));
        let a2 = iso.key_for(&name("y.a.com"));
        let b = iso.key_for(&name("b.com"));
        let c = iso.key_for(&name("c.com"));
        let d = iso.key_for(&name("d.com"));
        assert_eq!(a, a2, "same group, same key");
        assert_eq!(a, b, "two groups may share");
        assert_ne!(b, c, "a third group does not");
        assert_eq!(c, d);
        let u = iso.unique_key();
        assert!(![a, c].contains(&u));
        let e = iso.key_for(&name("e.com"));
        assert!(![a, c, u].contains(&e));
    }

    #[test]
    fn one_group_per_key_and_bounded_table() {
        let mut iso = Isolator::new(0, 1, 3);
        let keys: Vec<_> = (0..10)
            .map(|i| iso.key_for(&Destination::Ip(format!("10.0.0.{i}").parse().unwrap())))
            .collect();
        let mut dedup = keys.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), 10);
        assert!(iso.groups.len() <= 3);
    }
}

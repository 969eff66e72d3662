//! The Kademlia routing table: 256 k-buckets of contacts, least recently seen first.

use super::id::Key;
use super::message::Contact;
use super::K;

/// Failures after which a contact is dropped.
pub const MAX_FAILURES: u8 = 3;

#[derive(Clone, Debug)]
struct Entry {
    contact: Contact,
    failures: u8,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Insert {
    /// New contact added.
    Added,
    /// Known contact moved to the most-recently-seen end (its descriptor refreshed).
    Updated,
    /// The bucket is full: the caller may ping `oldest` and call [`RoutingTable::evict`] if it does
    /// not answer. The new contact is kept as a replacement candidate.
    Full { oldest: Contact },
    /// The contact is our own id.
    Own,
}

pub struct RoutingTable {
    own: Key,
    buckets: Vec<Vec<Entry>>,
    replacements: Vec<Vec<Contact>>,
}

impl RoutingTable {
    pub fn new(own: Key) -> Self {
        RoutingTable {
            own,
            buckets: vec![Vec::new(); 256],
            replacements: vec![Vec::new(); 256],
        }
    }

    pub fn own_id(&self) -> Key {
        self.own
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records that `c` was seen alive (a verified descriptor or a reply from it).
    pub fn insert(&mut self, c: Contact) -> Insert {
        let Some(i) = self.own.bucket_index(&c.id) else {
            return Insert::Own;
        };
        let bucket = &mut self.buckets[i];
        if let Some(pos) = bucket.iter().position(|e| e.contact.id == c.id) {
            bucket.remove(pos);
            bucket.push(Entry {
                contact: c,
                failures: 0,
            });
            return Insert::Updated;
        }
        if bucket.len() < K {
            bucket.push(Entry {
                contact: c,
                failures: 0,
            });
            return Insert::Added;
        }
        let repl = &mut self.replacements[i];
        repl.retain(|r| r.id != c.id);
        repl.push(c);
        if repl.len() > K {
            repl.remove(0);
        }
        Insert::Full {
            oldest: bucket[0].contact.clone(),
        }
    }

    /// Removes `id`, promoting the newest replacement candidate of its bucket.
    pub fn evict(&mut self, id: &Key) {
        let Some(i) = self.own.bucket_index(id) else {
            return;
        };
        let before = self.buckets[i].len();
        self.buckets[i].retain(|e| e.contact.id != *id);
        if self.buckets[i].len() < before {
            if let Some(r) = self.replacements[i].pop() {
                self.buckets[i].push(Entry {
                    contact: r,
                    failures: 0,
                });
            }
        }
    }

    /// Records a failed request to `id`; drops it after [`MAX_FAILURES`].
    pub fn failed(&mut self, id: &Key) {
        let Some(i) = self.own.bucket_index(id) else {
            return;
        };
        let mut drop = false;
        if let Some(e) = self.buckets[i].iter_mut().find(|e| e.contact.id == *id) {
            e.failures = e.failures.saturating_add(1);
            drop = e.failures >= MAX_FAILURES;
        }
        if drop {
            self.evict(id);
        }
    }

    pub fn get(&self, id: &Key) -> Option<&Contact> {
        let i = self.own.bucket_index(id)?;
        self.buckets[i]
            .iter()
            .find(|e| e.contact.id == *id)
            .map(|e| &e.contact)
    }

    /// The `n` known contacts closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Contact> {
        let mut all: Vec<&Contact> = self
            .buckets
            .iter()
            .flat_map(|b| b.iter().map(|e| &e.contact))
            .collect();
        all.sort_by_key(|c| c.id.distance(target));
        all.into_iter().take(n).cloned().collect()
    }

    pub fn contacts(&self) -> impl Iterator<Item = &Contact> {
        self.buckets
            .iter()
            .flat_map(|b| b.iter().map(|e| &e.contact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: [u8; 32]) -> Contact {
        Contact {
            id: Key(id),
            descriptor: vec![],
        }
    }

    fn key_in_far_bucket(n: u8) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[0] = 0x80;
        k[31] = n;
        k
    }

    #[test]
    fn insert_update_full_evict() {
        let mut t = RoutingTable::new(Key([0; 32]));
        assert_eq!(t.insert(c([0; 32])), Insert::Own);
        for n in 0..K as u8 {
            assert_eq!(t.insert(c(key_in_far_bucket(n))), Insert::Added);
        }
        assert_eq!(t.insert(c(key_in_far_bucket(3))), Insert::Updated);
        let r = t.insert(c(key_in_far_bucket(200)));
        assert_eq!(
            r,
            Insert::Full {
                oldest: c(key_in_far_bucket(0))
            }
        );
        t.evict(&Key(key_in_far_bucket(0)));
        assert!(t.get(&Key(key_in_far_bucket(200))).is_some());
        assert_eq!(t.len(), K);
    }

    #[test]
    fn failures_drop_a_contact() {
        let mut t = RoutingTable::new(Key([0; 32]));
        t.insert(c([1; 32]));
        for _ in 0..MAX_FAILURES {
            t.failed(&Key([1; 32]));
        }
        assert!(t.is_empty());
    }

    #[test]
    fn closest_is_sorted_by_xor_distance() {
        let mut t = RoutingTable::new(Key([0; 32]));
        for b in 1..=50u8 {
            t.insert(c([b; 32]));
        }
        let target = Key([7; 32]);
        let got = t.closest(&target, 5);
        assert_eq!(got[0].id, Key([7; 32]));
        for w in got.windows(2) {
            assert!(w[0].id.distance(&target) <= w[1].id.distance(&target));
        }
    }
}

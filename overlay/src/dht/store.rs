//! The records a DHT node holds, with limits and expiry.

use std::collections::HashMap;

use super::id::Key;
use super::message::DhtError;
use super::record::{Record, RecordKind};

#[derive(Clone, Debug)]
pub struct StoreLimits {
    /// Most records (publishers) under one key.
    pub per_key: usize,
    /// Most records in all.
    pub total: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            per_key: 32,
            total: 50_000,
        }
    }
}

/// Checks a descriptor record beyond its signature (that the publisher key is the node's and the key
/// is its id). Supplied by the runtime, which knows the descriptor format.
pub type DescriptorCheck = dyn Fn(&Record) -> Result<(), DhtError> + Send + Sync;

pub struct RecordStore {
    limits: StoreLimits,
    records: HashMap<Key, Vec<Record>>,
    total: usize,
}

impl RecordStore {
    pub fn new(limits: StoreLimits) -> Self {
        RecordStore {
            limits,
            records: HashMap::new(),
            total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Verifies and stores `rec`. A publisher's newer `seq` replaces its older record; an equal or
    /// older one is refused.
    pub fn put(&mut self, rec: Record, now: u64, check: &DescriptorCheck) -> Result<(), DhtError> {
        rec.verify(now)?;
        if rec.kind == RecordKind::Descriptor {
            check(&rec)?;
        }
        let slot = self.records.entry(rec.key).or_default();
        if let Some(old) = slot.iter_mut().find(|r| r.publisher == rec.publisher) {
            if rec.seq <= old.seq {
                return Err(DhtError::Rejected(format!(
                    "sequence {} is not newer than the stored {}",
                    rec.seq, old.seq
                )));
            }
            *old = rec;
            return Ok(());
        }
        if slot.len() >= self.limits.per_key {
            // make room by dropping the record closest to expiry, if the new one lives longer
            let (idx, soonest) = slot
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.expires)
                .map(|(i, r)| (i, r.expires))
                .unwrap_or((0, u64::MAX));
            if soonest >= rec.expires {
                return Err(DhtError::Rejected("too many records under this key".into()));
            }
            slot.remove(idx);
            self.total -= 1;
        }
        if self.total >= self.limits.total {
            return Err(DhtError::Rejected("store is full".into()));
        }
        slot.push(rec);
        self.total += 1;
        Ok(())
    }

    /// Unexpired records under `key`.
    pub fn get(&self, key: &Key, now: u64) -> Vec<Record> {
        self.records
            .get(key)
            .map(|v| v.iter().filter(|r| r.expires > now).cloned().collect())
            .unwrap_or_default()
    }

    /// Drops expired records.
    pub fn prune(&mut self, now: u64) {
        let mut total = 0;
        self.records.retain(|_, v| {
            v.retain(|r| r.expires > now);
            total += v.len();
            !v.is_empty()
        });
        self.total = total;
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.records.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn ok(_: &Record) -> Result<(), DhtError> {
        Ok(())
    }

    fn rec(seed: u8, seq: u64, expires: u64) -> Record {
        Record::sign(
            &SigningKey::from_bytes(&[seed; 32]),
            Key([1; 32]),
            RecordKind::Swarm,
            seq,
            expires,
            vec![seed],
        )
    }

    #[test]
    fn newer_seq_replaces_older_is_refused() {
        let mut s = RecordStore::new(StoreLimits::default());
        s.put(rec(1, 1, 5000), 100, &ok).unwrap();
        s.put(rec(1, 2, 5000), 100, &ok).unwrap();
        assert!(matches!(
            s.put(rec(1, 2, 5000), 100, &ok),
            Err(DhtError::Rejected(_))
        ));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(&Key([1; 32]), 100)[0].seq, 2);
        s.put(rec(2, 1, 5000), 100, &ok).unwrap();
        assert_eq!(s.get(&Key([1; 32]), 100).len(), 2);
    }

    #[test]
    fn bad_signatures_and_expired_records_are_refused() {
        let mut s = RecordStore::new(StoreLimits::default());
        let mut r = rec(1, 1, 5000);
        r.value[0] ^= 1;
        assert_eq!(s.put(r, 100, &ok), Err(DhtError::BadSignature));
        assert_eq!(s.put(rec(1, 1, 50), 100, &ok), Err(DhtError::Expired));
        assert!(s.is_empty());
    }

    #[test]
    fn limits_hold_and_prune_expires() {
        let mut s = RecordStore::new(StoreLimits {
            per_key: 2,
            total: 3,
        });
        s.put(rec(1, 1, 1000), 100, &ok).unwrap();
        s.put(rec(2, 1, 2000), 100, &ok).unwrap();
        // per-key full: a longer-lived record evicts the soonest-expiring one
        s.put(rec(3, 1, 3000), 100, &ok).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.put(rec(4, 1, 500), 100, &ok).is_err());
        s.prune(2500);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn descriptor_records_go_through_the_check() {
        let mut s = RecordStore::new(StoreLimits::default());
        let r = Record::sign(
            &SigningKey::from_bytes(&[1; 32]),
            Key([1; 32]),
            RecordKind::Descriptor,
            1,
            5000,
            vec![],
        );
        let deny = |_: &Record| Err(DhtError::Rejected("not the node's key".into()));
        assert!(s.put(r, 100, &deny).is_err());
    }
}

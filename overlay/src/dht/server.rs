//! What a DHT node does with a request.

use super::id::Key;
use super::message::{code, Contact, DhtError, Request, Response};
use super::record::Record;
use super::store::{RecordStore, StoreLimits};
use super::table::{Insert, RoutingTable};
use super::K;

pub struct DhtServer {
    me: Contact,
    table: RoutingTable,
    store: RecordStore,
    check: Box<super::store::DescriptorCheck>,
}

impl DhtServer {
    pub fn new(me: Contact, limits: StoreLimits) -> Self {
        DhtServer {
            table: RoutingTable::new(me.id),
            me,
            store: RecordStore::new(limits),
            check: Box::new(|_| Ok(())),
        }
    }

    /// Sets the check applied to descriptor records (the runtime knows the descriptor format).
    pub fn with_descriptor_check(
        mut self,
        f: impl Fn(&Record) -> Result<(), DhtError> + Send + Sync + 'static,
    ) -> Self {
        self.check = Box::new(f);
        self
    }

    /// Replaces this node's own contact (its renewed descriptor; same id).
    pub fn set_me(&mut self, me: Contact) {
        if me.id == self.me.id {
            self.me = me;
        }
    }

    pub fn id(&self) -> Key {
        self.me.id
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut RoutingTable {
        &mut self.table
    }

    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// Adds a node learned from a verified descriptor. Anonymous requesters are never learned.
    pub fn learn(&mut self, c: Contact) -> Insert {
        self.table.insert(c)
    }

    /// Answers one request. `now` is Unix seconds.
    pub fn handle(&mut self, req: Request, now: u64) -> Response {
        match req {
            Request::Ping => Response::Pong,
            Request::FindNode(target) => Response::Nodes(self.closest_with_me(&target)),
            Request::FindValue(key) => {
                let records = self.store.get(&key, now);
                let closer = if records.is_empty() {
                    self.closest_with_me(&key)
                } else {
                    Vec::new()
                };
                Response::Values { records, closer }
            }
            Request::Store(rec) => match self.store.put(rec, now, &*self.check) {
                Ok(()) => Response::Stored,
                Err(e) => Response::Error {
                    code: match e {
                        DhtError::Rejected(ref m) if m.contains("full") => code::FULL,
                        _ => code::REJECTED,
                    },
                    reason: e.to_string(),
                },
            },
        }
    }

    fn closest_with_me(&self, target: &Key) -> Vec<Contact> {
        let mut v = self.table.closest(target, K);
        v.push(self.me.clone());
        v.sort_by_key(|c| c.id.distance(target));
        v.truncate(K);
        v
    }

    /// Drops expired records; returns how many remain.
    pub fn prune(&mut self, now: u64) -> usize {
        self.store.prune(now);
        self.store.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::record::RecordKind;
    use ed25519_dalek::SigningKey;

    #[test]
    fn store_find_and_reject() {
        let mut s = DhtServer::new(
            Contact {
                id: Key([1; 32]),
                descriptor: vec![],
            },
            StoreLimits::default(),
        );
        let key = Key([5; 32]);
        let r = Record::sign(
            &SigningKey::from_bytes(&[2; 32]),
            key,
            RecordKind::Swarm,
            1,
            500,
            vec![],
        );
        assert_eq!(s.handle(Request::Store(r.clone()), 100), Response::Stored);
        assert_eq!(
            s.handle(Request::FindValue(key), 100),
            Response::Values {
                records: vec![r.clone()],
                closer: vec![]
            }
        );
        let mut bad = r;
        bad.seq = 9;
        match s.handle(Request::Store(bad), 100) {
            Response::Error { code, reason } => {
                assert_eq!(code, code::REJECTED);
                assert!(reason.contains("signature"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // a miss lists closer nodes, including this one
        match s.handle(Request::FindValue(Key([9; 32])), 100) {
            Response::Values { records, closer } => {
                assert!(records.is_empty());
                assert_eq!(closer[0].id, Key([1; 32]));
            }
            other => panic!("{other:?}"),
        }
    }
}

//! The tokio edge of the DHT: drives [`crate::dht::Lookup`] by sending each query through a
//! circuit whose last hop is the queried DHT node, so DHT nodes only ever see circuits' previous
//! hops. Every contact's descriptor is verified before a circuit is built to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::task::JoinSet;

use crate::client::Client;
use crate::descriptor::{unix_now, Descriptor};
use crate::dht::{
    Contact, Key, Lookup, LookupKind, LookupOutcome, Message, Record, Request, Response,
};
use crate::provider::ProviderError;

pub struct DhtClient {
    client: Arc<Client>,
    hops: usize,
    timeout: Duration,
}

/// A contact whose descriptor verifies and names the contact's id.
fn verified(c: &Contact) -> Option<Descriptor> {
    let d = Descriptor::decode_verified(&c.descriptor, unix_now()).ok()?;
    (d.id.0 == c.id.0).then_some(d)
}

/// The contact for a verified descriptor.
pub fn contact_of(d: &Descriptor) -> Contact {
    Contact {
        id: Key(d.id.0),
        descriptor: d.encode(),
    }
}

impl DhtClient {
    /// `hops`: circuit length to each DHT node (the node itself is the last hop).
    pub fn new(client: Arc<Client>, hops: usize) -> Self {
        DhtClient {
            client,
            hops,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sends one request to `to` through a fresh circuit and returns its response.
    pub async fn request(&self, to: &Contact, req: Request) -> Result<Response, ProviderError> {
        let d = verified(to)
            .ok_or_else(|| ProviderError::NoCircuit("contact descriptor does not verify".into()))?;
        request_via(&self.client, &d, self.hops, self.timeout, req).await
    }

    /// An iterative lookup from `seeds`.
    pub async fn lookup(
        &self,
        target: Key,
        kind: LookupKind,
        seeds: Vec<Contact>,
    ) -> LookupOutcome {
        let seeds = seeds
            .into_iter()
            .filter(|c| verified(c).is_some())
            .collect();
        let mut l = Lookup::new(target, kind, seeds, self.timeout);
        let mut inflight: JoinSet<(Key, Result<Response, ProviderError>)> = JoinSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for (c, req) in l.poll(Instant::now()) {
                let (client, hops, timeout) = (self.client.clone(), self.hops, self.timeout);
                inflight.spawn(async move {
                    let r = match verified(&c) {
                        Some(d) => request_via(&client, &d, hops, timeout, req).await,
                        None => Err(ProviderError::NoCircuit(
                            "descriptor does not verify".into(),
                        )),
                    };
                    (c.id, r)
                });
            }
            if l.is_done() || Instant::now() > deadline {
                break;
            }
            let Some(joined) = inflight.join_next().await else {
                break;
            };
            if let Ok((id, r)) = joined {
                match r {
                    Ok(resp) => l.on_response(&id, sanitize(resp)),
                    Err(e) => {
                        tracing::debug!(node = %id.short(), "DHT request failed: {e}");
                        l.on_failure(&id);
                    }
                }
            }
        }
        inflight.abort_all();
        l.outcome()
    }

    /// Stores `rec` at the closest nodes to its key; returns how many accepted it.
    pub async fn store(&self, rec: Record, seeds: Vec<Contact>) -> usize {
        let out = self.lookup(rec.key, LookupKind::Node, seeds).await;
        let mut set = JoinSet::new();
        for c in out.closest {
            let (client, hops, timeout, rec) =
                (self.client.clone(), self.hops, self.timeout, rec.clone());
            set.spawn(async move {
                match verified(&c) {
                    Some(d) => matches!(
                        request_via(&client, &d, hops, timeout, Request::Store(rec)).await,
                        Ok(Response::Stored)
                    ),
                    None => false,
                }
            });
        }
        let mut n = 0;
        while let Some(r) = set.join_next().await {
            if matches!(r, Ok(true)) {
                n += 1;
            }
        }
        n
    }

    /// Finds the records stored under `key`; each record's signature and lifetime are checked.
    pub async fn find(&self, key: Key, seeds: Vec<Contact>) -> Vec<Record> {
        let now = unix_now();
        self.lookup(key, LookupKind::Value, seeds)
            .await
            .records
            .into_iter()
            .filter(|r| r.verify(now).is_ok())
            .collect()
    }
}

/// Drops contacts whose descriptors do not verify before the lookup sees them.
fn sanitize(resp: Response) -> Response {
    match resp {
        Response::Nodes(cs) => {
            Response::Nodes(cs.into_iter().filter(|c| verified(c).is_some()).collect())
        }
        Response::Values { records, closer } => Response::Values {
            records,
            closer: closer
                .into_iter()
                .filter(|c| verified(c).is_some())
                .collect(),
        },
        other => other,
    }
}

async fn request_via(
    client: &Client,
    to: &Descriptor,
    hops: usize,
    timeout: Duration,
    req: Request,
) -> Result<Response, ProviderError> {
    let circ = tokio::time::timeout(timeout, client.circuit_ending_at(to, hops))
        .await
        .map_err(|_| ProviderError::Timeout("building a circuit to a DHT node".into()))??;
    circ.set_purpose("dht lookup");
    let txid = rand::thread_rng().next_u64();
    let msg = Message::Request { txid, req }.encode();
    let reply = circ.dht_request(&msg, timeout).await;
    circ.destroy();
    let reply = reply?;
    match Message::decode(&reply) {
        Ok(Message::Response { txid: t, resp }) if t == txid => Ok(resp),
        Ok(_) => Err(ProviderError::Closed(
            "DHT reply does not match the request".into(),
        )),
        Err(e) => Err(ProviderError::Closed(format!("malformed DHT reply: {e}"))),
    }
}

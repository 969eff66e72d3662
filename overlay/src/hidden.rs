//! Hidden seeding, the tokio edge around the sans-IO pieces in [`crate::hs`]:
//!
//! - [`HiddenService`] (the seeder): keeps circuits to introduction points, registered with a fresh
//!   auth key each; answers INTRODUCE2 by building its own circuit to the rendezvous point the
//!   downloader chose, appending the downloader's virtual hop and sending RENDEZVOUS1; hands every
//!   stream the downloader then opens to the application.
//! - [`connect_hidden`] (the downloader): establishes a rendezvous point, introduces itself through
//!   one of the seeder's introduction points, and returns the joined circuit once RENDEZVOUS2 came
//!   back (with the seeder's virtual hop appended), ready for `open_stream`.
//! - [`publish_swarm`] / [`find_swarm`]: the swarm record in the overlay DHT, under a key blinded
//!   per period so that the DHT node storing it cannot tell which infohash it is.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand::seq::SliceRandom;
use rand::RngCore;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::client::{Client, ClientCirc};
use crate::descriptor::{unix_now, Descriptor, ROLE_INTRO};
use crate::dht::record::{IntroPoint, SwarmEntry, SwarmKeys};
use crate::dht::{Contact, Key};
use crate::dht_client::DhtClient;
use crate::hs::message::ack;
use crate::hs::{service_accept, ClientIntro, HsMessage, IntroRequest, ServiceKeys, COOKIE_LEN};
use crate::node::lock;
use crate::provider::{BoxStream, ProviderError, Target};

/// How a hidden seeder or downloader builds its side.
#[derive(Clone, Debug)]
pub struct HiddenConfig {
    /// Introduction points a seeder keeps.
    pub intro_points: usize,
    /// Hops of each circuit to an introduction or rendezvous point, that point included (1-3).
    pub hops: usize,
    /// How long one step (a circuit build, an answer) may take.
    pub timeout: Duration,
    /// How often a seeder checks its introduction circuits.
    pub maintain_every: Duration,
}

impl Default for HiddenConfig {
    fn default() -> Self {
        HiddenConfig {
            intro_points: 3,
            hops: 3,
            timeout: Duration::from_secs(10),
            maintain_every: Duration::from_secs(2),
        }
    }
}

/// Introductions remembered to refuse replays (a replayed INTRODUCE2 would make the seeder build
/// circuits for nothing).
const REPLAY_CACHE: usize = 4096;

/// Digests of recent introductions: a set for lookups, a queue for eviction order.
type ReplayCache = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

struct IntroSlot {
    node: Descriptor,
    auth: SigningKey,
    circ: Arc<ClientCirc>,
}

struct ServiceInner {
    client: Client,
    keys: ServiceKeys,
    cfg: HiddenConfig,
    intro: Mutex<Vec<IntroSlot>>,
    streams: mpsc::Sender<BoxStream>,
    seen: Mutex<ReplayCache>,
    tasks: Mutex<Vec<AbortHandle>>,
    changed: watch::Sender<u64>,
    stats: Mutex<ServiceStats>,
}

/// Counters a seeder shows on its dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub introductions: u64,
    pub rendezvous_ok: u64,
    pub rendezvous_failed: u64,
    pub streams: u64,
}

/// A hidden seeder's service (one per seeded torrent, so two torrents are not linkable).
#[derive(Clone)]
pub struct HiddenService {
    inner: Arc<ServiceInner>,
}

impl HiddenService {
    /// Starts a service: at least one introduction point must be registered before this returns.
    /// Streams opened by downloaders arrive on the returned receiver.
    pub async fn start(
        client: Client,
        cfg: HiddenConfig,
    ) -> Result<(HiddenService, mpsc::Receiver<BoxStream>), ProviderError> {
        let keys = ServiceKeys::generate().map_err(|e| ProviderError::NoCircuit(e.to_string()))?;
        let (tx, rx) = mpsc::channel(64);
        let (changed, _) = watch::channel(0);
        let svc = HiddenService {
            inner: Arc::new(ServiceInner {
                client,
                keys,
                cfg,
                intro: Mutex::new(Vec::new()),
                streams: tx,
                seen: Mutex::new((HashSet::new(), VecDeque::new())),
                tasks: Mutex::new(Vec::new()),
                changed,
                stats: Mutex::new(ServiceStats::default()),
            }),
        };
        svc.maintain().await;
        if lock(&svc.inner.intro).is_empty() {
            return Err(ProviderError::NoCircuit(
                "no introduction point could be registered (no node with the INTRO role answered)"
                    .into(),
            ));
        }
        let weak = Arc::downgrade(&svc.inner);
        let every = svc.inner.cfg.maintain_every;
        let h = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                HiddenService { inner }.maintain().await;
            }
        });
        lock(&svc.inner.tasks).push(h.abort_handle());
        Ok((svc, rx))
    }

    /// The service's public key (what a swarm record names).
    pub fn service_key(&self) -> [u8; 32] {
        self.inner.keys.public
    }

    /// What to publish: the service key and the current introduction points.
    pub fn entry(&self) -> SwarmEntry {
        SwarmEntry {
            service_key: self.inner.keys.public,
            intro_points: lock(&self.inner.intro)
                .iter()
                .map(|s| IntroPoint {
                    node: Key(s.node.id.0),
                    auth_key: s.auth.verifying_key().to_bytes(),
                })
                .collect(),
        }
    }

    /// Bumped whenever the set of introduction points changes (time to republish).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    pub fn stats(&self) -> ServiceStats {
        lock(&self.inner.stats).clone()
    }

    /// Stops the service: introduction circuits are torn down.
    pub fn shutdown(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        for s in lock(&self.inner.intro).drain(..) {
            s.circ.destroy();
        }
    }

    /// Drops dead introduction circuits and registers new ones up to the configured count.
    async fn maintain(&self) {
        let inner = &self.inner;
        let dead: Vec<IntroSlot> = {
            let mut v = lock(&inner.intro);
            let (dead, alive) = std::mem::take(&mut *v)
                .into_iter()
                .partition(|s| s.circ.is_closed());
            *v = alive;
            dead
        };
        // A circuit that broke (often a middle hop that died) is rebuilt to the same point with the
        // same auth key, so that the published record stays valid; only a point that cannot be
        // reached again is replaced by a new one.
        let mut dropped = 0;
        for slot in dead {
            match self
                .establish_intro(&slot.node, Some(slot.auth.clone()))
                .await
            {
                Ok(s) => lock(&inner.intro).push(s),
                Err(e) => {
                    info!(node = %slot.node.id.short(), "introduction point lost: {e}");
                    dropped += 1;
                }
            }
        }
        let want = inner
            .cfg
            .intro_points
            .saturating_sub(lock(&inner.intro).len());
        let mut added = 0;
        if want > 0 {
            let used: Vec<_> = lock(&inner.intro).iter().map(|s| s.node.id).collect();
            let mut candidates: Vec<Descriptor> = inner
                .client
                .directory()
                .into_iter()
                .filter(|d| d.roles & ROLE_INTRO != 0 && !used.contains(&d.id))
                .collect();
            candidates.shuffle(&mut rand::thread_rng());
            for d in candidates {
                if added == want {
                    break;
                }
                match self.establish_intro(&d, None).await {
                    Ok(slot) => {
                        lock(&inner.intro).push(slot);
                        added += 1;
                    }
                    Err(e) => debug!(node = %d.id.short(), "introduction point refused: {e}"),
                }
            }
        }
        if dropped > 0 || added > 0 {
            inner.changed.send_modify(|v| *v += 1);
        }
    }

    async fn establish_intro(
        &self,
        ip: &Descriptor,
        auth: Option<SigningKey>,
    ) -> Result<IntroSlot, ProviderError> {
        let inner = &self.inner;
        let circ = circuit_to(&inner.client, ip, inner.cfg.hops).await?;
        circ.set_purpose("hidden seeding: introduction");
        let last = circ.hop_count() - 1;
        let binding = circ
            .binding(last)
            .ok_or_else(|| ProviderError::NoCircuit("no keys for the last hop".into()))?;
        let auth = auth.unwrap_or_else(|| {
            let mut seed = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut seed);
            SigningKey::from_bytes(&seed)
        });
        let mut rx = circ.hs_messages();
        circ.send_hs(last, &HsMessage::establish_intro(&auth, &binding))
            .await?;
        match tokio::time::timeout(inner.cfg.timeout, rx.recv()).await {
            Ok(Some(HsMessage::IntroEstablished)) => {}
            Ok(Some(other)) => {
                circ.destroy();
                return Err(ProviderError::NoCircuit(format!(
                    "introduction point answered {other:?}"
                )));
            }
            Ok(None) => return Err(circ_closed(&circ)),
            Err(_) => {
                circ.destroy();
                return Err(ProviderError::Timeout("ESTABLISH_INTRO".into()));
            }
        }
        debug!(node = %ip.id.short(), "introduction point registered");
        // INTRODUCE2 arrive on this circuit for as long as it lives
        let weak = Arc::downgrade(inner);
        let h = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                match m {
                    HsMessage::Introduce2 { handshake } => {
                        let svc = HiddenService { inner };
                        tokio::spawn(async move { svc.rendezvous(handshake).await });
                    }
                    other => debug!("ignoring {other:?} on an introduction circuit"),
                }
            }
        });
        lock(&inner.tasks).push(h.abort_handle());
        Ok(IntroSlot {
            node: ip.clone(),
            auth,
            circ,
        })
    }

    /// Answers one introduction: meets the downloader at its rendezvous point.
    async fn rendezvous(&self, handshake: Vec<u8>) {
        let inner = &self.inner;
        lock(&inner.stats).introductions += 1;
        let r = self.try_rendezvous(&handshake).await;
        let mut st = lock(&inner.stats);
        match r {
            Ok(()) => st.rendezvous_ok += 1,
            Err(e) => {
                st.rendezvous_failed += 1;
                warn!("rendezvous failed: {e}");
            }
        }
    }

    async fn try_rendezvous(&self, handshake: &[u8]) -> Result<(), ProviderError> {
        let inner = &self.inner;
        let digest = *blake3::hash(handshake).as_bytes();
        {
            let mut seen = lock(&inner.seen);
            if !seen.0.insert(digest) {
                return Err(ProviderError::Refused {
                    target: "introduction".into(),
                    reason: "replayed".into(),
                });
            }
            seen.1.push_back(digest);
            if seen.1.len() > REPLAY_CACHE {
                if let Some(old) = seen.1.pop_front() {
                    seen.0.remove(&old);
                }
            }
        }
        let (req, reply, keys) = service_accept(&inner.keys, handshake)
            .map_err(|e| ProviderError::NoCircuit(format!("introduction: {e}")))?;
        let rp = Descriptor::decode_verified(&req.rendezvous_descriptor, unix_now())
            .map_err(|e| ProviderError::NoCircuit(format!("rendezvous descriptor: {e}")))?;
        if rp.id.0 != req.rendezvous_id || !rp.is_relay() {
            return Err(ProviderError::NoCircuit(
                "rendezvous descriptor does not match its id".into(),
            ));
        }
        let circ = circuit_to(&inner.client, &rp, inner.cfg.hops).await?;
        circ.set_purpose("hidden seeding: rendezvous");
        let rp_hop = circ.hop_count() - 1;
        // the virtual hop goes on before RENDEZVOUS1 leaves: no cell of the downloader's can
        // arrive before it
        circ.add_virtual_hop(keys);
        let mut incoming = circ.accept_streams();
        circ.send_hs(
            rp_hop,
            &HsMessage::Rendezvous1 {
                cookie: req.cookie,
                handshake: reply,
            },
        )
        .await?;
        debug!(rp = %rp.id.short(), "rendezvous joined");
        let out = inner.streams.clone();
        let weak = Arc::downgrade(inner);
        // the task holds the circuit for as long as it lives (it ends when the circuit closes)
        tokio::spawn(async move {
            let _keep = circ;
            while let Some(s) = incoming.recv().await {
                if let Some(i) = weak.upgrade() {
                    lock(&i.stats).streams += 1;
                }
                if out.send(s).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

/// A circuit whose last hop is `last`, trying other middle hops after a failure (a dead relay in
/// the directory), up to 3 attempts.
async fn circuit_to(
    client: &Client,
    last: &Descriptor,
    hops: usize,
) -> Result<Arc<ClientCirc>, ProviderError> {
    let mut err = None;
    for _ in 0..3 {
        match client.circuit_ending_at(last, hops).await {
            Ok(c) => return Ok(c),
            Err(e) => err = Some(e),
        }
    }
    Err(err.unwrap_or_else(|| ProviderError::NoCircuit("no attempt".into())))
}

fn circ_closed(c: &ClientCirc) -> ProviderError {
    ProviderError::Closed(c.close_reason().unwrap_or_else(|| "circuit closed".into()))
}

/// A downloader's side: meets the seeder described by `entry` and returns the joined circuit (its
/// last hop is the seeder's virtual hop; open streams on it).
pub async fn connect_hidden(
    client: &Client,
    entry: &SwarmEntry,
    cfg: &HiddenConfig,
) -> Result<Arc<ClientCirc>, ProviderError> {
    if entry.intro_points.is_empty() {
        return Err(ProviderError::NoCircuit(
            "the seeder lists no introduction point".into(),
        ));
    }
    let directory = client.directory();
    let intro_ids: Vec<[u8; 32]> = entry.intro_points.iter().map(|i| i.node.0).collect();
    // the rendezvous point: a relay that is none of the seeder's introduction points
    let mut rps: Vec<&Descriptor> = directory
        .iter()
        .filter(|d| d.is_relay() && !intro_ids.contains(&d.id.0))
        .collect();
    if rps.is_empty() {
        rps = directory.iter().filter(|d| d.is_relay()).collect();
    }
    let rp = (*rps
        .choose(&mut rand::thread_rng())
        .ok_or_else(|| ProviderError::NoCircuit("no relay to meet at".into()))?)
    .clone();
    let rp_circ = circuit_to(client, &rp, cfg.hops).await?;
    rp_circ.set_purpose("hidden download: rendezvous");
    let rp_hop = rp_circ.hop_count() - 1;
    let mut rv = rp_circ.hs_messages();
    let mut cookie = [0u8; COOKIE_LEN];
    rand::thread_rng().fill_bytes(&mut cookie);
    rp_circ
        .send_hs(rp_hop, &HsMessage::EstablishRendezvous { cookie })
        .await?;
    match tokio::time::timeout(cfg.timeout, rv.recv()).await {
        Ok(Some(HsMessage::RendezvousEstablished)) => {}
        Ok(Some(other)) => {
            return Err(ProviderError::NoCircuit(format!(
                "rendezvous point answered {other:?}"
            )))
        }
        Ok(None) => return Err(circ_closed(&rp_circ)),
        Err(_) => return Err(ProviderError::Timeout("ESTABLISH_RENDEZVOUS".into())),
    }
    let req = IntroRequest {
        cookie,
        rendezvous_id: rp.id.0,
        rendezvous_descriptor: rp.encode(),
    };

    let mut ips = entry.intro_points.clone();
    ips.shuffle(&mut rand::thread_rng());
    // An introduction point may acknowledge and still lose the INTRODUCE2 (the seeder's circuit
    // to it just broke): then the next point is tried with the same handshake.
    let mut why = String::from("no introduction point answered");
    for ip in ips {
        let Some(d) = directory.iter().find(|d| d.id.0 == ip.node.0) else {
            why = format!(
                "introduction point {} is not in the directory",
                ip.node.short()
            );
            continue;
        };
        // a fresh handshake per attempt: the seeder refuses a replayed one
        let (intro, blob) = ClientIntro::start(&entry.service_key, &req)
            .map_err(|e| ProviderError::NoCircuit(e.to_string()))?;
        rp_circ.expect_rendezvous(intro);
        if let Err(e) = introduce(client, d, ip.auth_key, &blob, cfg).await {
            debug!(node = %d.id.short(), "introduction failed: {e}");
            why = format!("introduction through {}: {e}", d.id.short());
            continue;
        }
        match tokio::time::timeout(cfg.timeout, rv.recv()).await {
            Ok(Some(HsMessage::Rendezvous2 { .. })) => return Ok(rp_circ),
            Ok(Some(other)) => {
                rp_circ.destroy();
                return Err(ProviderError::NoCircuit(format!(
                    "rendezvous point sent {other:?} instead of RENDEZVOUS2"
                )));
            }
            Ok(None) => return Err(circ_closed(&rp_circ)),
            Err(_) => {
                why = format!(
                    "the seeder did not come to the rendezvous after introduction through {}",
                    d.id.short()
                );
                debug!("{why}");
            }
        }
    }
    rp_circ.destroy();
    Err(ProviderError::NoCircuit(why))
}

async fn introduce(
    client: &Client,
    ip: &Descriptor,
    auth_key: [u8; 32],
    blob: &[u8],
    cfg: &HiddenConfig,
) -> Result<(), ProviderError> {
    let circ = circuit_to(client, ip, cfg.hops).await?;
    circ.set_purpose("hidden download: introduction");
    let last = circ.hop_count() - 1;
    let mut rx = circ.hs_messages();
    circ.send_hs(
        last,
        &HsMessage::Introduce1 {
            auth_key,
            handshake: blob.to_vec(),
        },
    )
    .await?;
    let r = tokio::time::timeout(cfg.timeout, rx.recv()).await;
    circ.destroy();
    match r {
        Ok(Some(HsMessage::IntroduceAck { status: ack::OK })) => Ok(()),
        Ok(Some(HsMessage::IntroduceAck { status })) => Err(ProviderError::Refused {
            target: "introduction".into(),
            reason: match status {
                ack::UNKNOWN_SERVICE => "the seeder is no longer registered there".into(),
                _ => format!("status {status}"),
            },
        }),
        Ok(Some(other)) => Err(ProviderError::NoCircuit(format!(
            "introduction point answered {other:?}"
        ))),
        Ok(None) => Err(circ_closed(&circ)),
        Err(_) => Err(ProviderError::Timeout("INTRODUCE1".into())),
    }
}

/// Opens a stream to the seeder over a joined rendezvous circuit.
pub async fn open_hidden_stream(
    circ: &Arc<ClientCirc>,
    timeout: Duration,
) -> Result<BoxStream, ProviderError> {
    circ.open_stream(&Target::Host("bittorrent".into(), 0), timeout)
        .await
}

/// Publishes `entry` for `infohash` in this period (and, near the period's end, the next), signed
/// with `publisher`; returns how many DHT nodes accepted it.
pub async fn publish_swarm(
    dht: &DhtClient,
    seeds: Vec<Contact>,
    infohash: &[u8; 20],
    entry: &SwarmEntry,
    publisher: &SigningKey,
) -> usize {
    let now = unix_now();
    let seq = now.saturating_mul(1000) + u64::from(rand::random::<u16>() % 1000);
    let period = SwarmKeys::period_of(now);
    let mut n = 0;
    for p in [period, period + 1] {
        let rec = SwarmKeys::derive(infohash, p).seal(publisher, seq, entry);
        n += dht.store(rec, seeds.clone()).await;
    }
    n
}

/// Finds the hidden seeders of `infohash`: each swarm record under this period's blinded keys
/// that decrypts, deduplicated by service key.
pub async fn find_swarm(
    dht: &DhtClient,
    seeds: Vec<Contact>,
    infohash: &[u8; 20],
) -> Vec<SwarmEntry> {
    let mut out: Vec<SwarmEntry> = Vec::new();
    for keys in SwarmKeys::lookup_set(infohash, unix_now()) {
        for rec in dht.find(keys.location, seeds.clone()).await {
            match keys.open(&rec) {
                Ok(e) => {
                    if let Some(old) = out.iter_mut().find(|o| o.service_key == e.service_key) {
                        if e.intro_points.len() > old.intro_points.len() {
                            *old = e;
                        }
                    } else {
                        out.push(e);
                    }
                }
                Err(e) => debug!("swarm record does not open: {e}"),
            }
        }
    }
    out
}

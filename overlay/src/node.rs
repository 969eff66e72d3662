//! A relay/exit node: tokio edges around the sans-IO link and circuit state machines.
//!
//! Tasks: one accept loop; per link a reader task (opens frames, dispatches cells, forwards on the
//! hot path) and a writer task (batches sealed cells into one write); per exit stream a reader and a
//! writer; per UDP association a receive loop. Per-circuit state sits in a mutex shared by the two
//! links of the circuit; cells are encrypted and enqueued under that mutex (after reserving queue
//! space) so that sequence numbers always match queue order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::cell::{self, cmd, rcmd, reason, CellBuf, CELL_SIZE, RELAY_DATA_MAX, WIRE_CELL};
use crate::channel::{self, LinkQueues, PushError};
use crate::circuit::hop::{Forward, HopError, RelayHop};
use crate::descriptor::{unix_now, Descriptor, ROLE_EXIT, ROLE_INTRO, ROLE_RELAY};
use crate::exit::ExitPolicy;
use crate::handshake::{self, LinkInitiator, HTYPE_NK};
use crate::hs::points::PointAction;
use crate::hs::{HsMessage, IntroPointTable, RendezvousTable};
use crate::identity::{Identity, NodeId};
use crate::limits::{ByteCap, CircuitGate, Limits, LinkGate, Refusal, RefusalLog};
use crate::link::{self, LinkCipher, LinkDir};
use crate::stream::{
    sendme_payload, CIRC_SENDME_INC, CIRC_WINDOW, STREAM_SENDME_INC, STREAM_WINDOW,
};

mod exit_slots;
#[cfg(feature = "hostile")]
pub mod hostile;

use exit_slots::{ExitCounters, ExitSlot, SlotKind};

/// Cells queued per link before senders wait (the client's links; a node's links have a queue
/// per circuit, see `channel`).
pub const LINK_QUEUE: usize = 128;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Cells sealed into one write.
const WRITE_BATCH: usize = 16;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub identity: Identity,
    pub listen: SocketAddr,
    /// The address others dial to reach this node, put in its descriptor; `None` = the listen
    /// address. Port 0 = the port the listener got. A node with roles must have one that is
    /// not unspecified (`0.0.0.0`, `::`): nobody can dial that.
    pub advertise: Option<SocketAddr>,
    pub roles: u8,
    pub exit_policy: ExitPolicy,
    /// TESTING ONLY: let the exit reach private/loopback/link-local destinations.
    pub allow_private_exit: bool,
    /// Let this relay EXTEND to private, loopback and link-local addresses. Off, a relay still
    /// does when its own published address is not public (a private or test network, where
    /// every relay is on such an address); a relay on a public address never does.
    pub allow_private_links: bool,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    pub descriptor_lifetime: Duration,
    /// Flood limits (links, handshakes, circuits, CREATE rate).
    pub limits: Limits,
    /// Firewall mark (SO_MARK) on every link socket this node dials (see `ClientConfig::link_mark`).
    pub link_mark: Option<u32>,
    /// Cap on relayed traffic (cells forwarded between links), bytes per second; None = no cap.
    pub relay_rate: Option<u64>,
    /// Cap on exit traffic (bytes to and from targets, both directions together), bytes per
    /// second; None = no cap.
    pub exit_rate: Option<u64>,
}

impl NodeConfig {
    pub fn new(identity: Identity, listen: SocketAddr, roles: u8) -> NodeConfig {
        NodeConfig {
            identity,
            listen,
            advertise: None,
            roles,
            exit_policy: if roles & ROLE_EXIT != 0 {
                ExitPolicy::default()
            } else {
                ExitPolicy::reject_all()
            },
            allow_private_exit: false,
            allow_private_links: false,
            keepalive: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            descriptor_lifetime: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            relay_rate: None,
            exit_rate: None,
            link_mark: None,
        }
    }
}

/// Link and relay statistics for the dashboard.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub addr: SocketAddr,
    pub links_open: u64,
    pub links_total: u64,
    pub link_errors: u64,
    pub circuits: u64,
    pub relayed_bytes: u64,
    pub exit_bytes_out: u64,
    pub exit_bytes_in: u64,
    pub circuits_destroyed_tamper: u64,
    /// Inbound link handshakes in progress.
    #[serde(default)]
    pub handshakes_pending: u64,
    /// Inbound connections refused or evicted by a flood limit.
    #[serde(default)]
    pub links_refused: u64,
    /// CREATEs refused by a flood limit.
    #[serde(default)]
    pub circuits_refused: u64,
    /// Tasks the node tracks that are still running (links, streams, extends).
    #[serde(default)]
    pub tasks: u64,
    /// Nodes in this node's DHT routing table (0 without the DHT role).
    #[serde(default)]
    pub dht_nodes: u64,
    /// Bytes of circuit cells queued on links now, the most ever, and the cap
    /// (`Limits::max_queued_bytes`).
    #[serde(default)]
    pub queued_bytes: u64,
    #[serde(default)]
    pub queued_peak_bytes: u64,
    #[serde(default)]
    pub queued_cap_bytes: u64,
    /// Circuits destroyed by the out-of-memory killer, and for queueing past their window.
    #[serde(default)]
    pub circuits_killed_oom: u64,
    #[serde(default)]
    pub circuits_killed_queue: u64,
    /// What the exit holds open now: sockets (streams, UDP) and resolutions in progress.
    #[serde(default)]
    pub exit_sockets: u64,
    #[serde(default)]
    pub exit_resolves: u64,
}

#[derive(Default)]
struct Stats {
    links_open: AtomicU64,
    links_total: AtomicU64,
    link_errors: AtomicU64,
    circuits: AtomicU64,
    relayed_bytes: AtomicU64,
    exit_out: AtomicU64,
    exit_in: AtomicU64,
    tamper: AtomicU64,
    links_refused: AtomicU64,
    circuits_refused: AtomicU64,
    oom_killed: AtomicU64,
    queue_killed: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a task panicked mid-update; the state is still structurally valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One link (either direction) as seen by the node.
pub(crate) struct Link {
    id: u64,
    /// What waits to be written: a queue per circuit, served round-robin (`channel`).
    queues: Mutex<LinkQueues>,
    /// Wakes the link's writer when a cell is queued (or the link closes).
    wake: tokio::sync::Notify,
    circuits: Mutex<HashMap<u32, CircRef>>,
    /// Next circuit id this node creates on the link (outbound links only; see `alloc_circ_id`).
    next_circ: AtomicU32,
    /// Outbound links: the node dialled, and the static key the link handshake authenticated.
    peer: Option<NodeId>,
    peer_key: Option<[u8; 32]>,
    closed: AtomicBool,
    /// CREATE admission (inbound links; outbound links never receive CREATEs legitimately).
    gate: Mutex<CircuitGate>,
    /// The source address of an inbound link (circuits are counted per source).
    source: Option<std::net::IpAddr>,
}

#[derive(Clone)]
struct CircRef {
    circ: Arc<RelayCirc>,
    /// true if this link is the circuit's next (outbound) side.
    next_side: bool,
}

struct RelayCirc {
    prev: Arc<Link>,
    prev_id: u32,
    /// Backward circuit window: DATA cells this exit may originate before a SENDME.
    bwd_window: Arc<Semaphore>,
    st: Mutex<CircState>,
}

struct CircState {
    /// The circuit's rules at this hop (sans-IO): layers, EXTEND, RELAY_EARLY, windows, SENDMEs.
    hop: RelayHop,
    /// Where the circuit goes on (set when CREATED arrives; `hop.onward()` is `Next` then).
    next: Option<(Arc<Link>, u32)>,
    destroyed: bool,
    streams: HashMap<u32, ExitStream>,
    /// UDP associations by stream id, with the task that receives for it (aborted on END, so
    /// the socket and its exit slot go at once).
    udp: HashMap<u32, (Arc<UdpSocket>, AbortHandle)>,
    /// RESOLVEs of this circuit in progress.
    resolving: usize,
    tasks: Vec<AbortHandle>,
    /// At a rendezvous point: the other end's circuit. Cells not addressed to this hop are passed
    /// to it (with its backward layer added), as a middle relay passes them to its next hop.
    joined: Option<Arc<RelayCirc>>,
}

/// A relay circuit as a key of the introduction and rendezvous tables (identity = the Arc).
#[derive(Clone)]
struct CircHandle(Arc<RelayCirc>);

impl PartialEq for CircHandle {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}
impl Eq for CircHandle {}
impl std::hash::Hash for CircHandle {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(h)
    }
}

/// Registrations an introduction point keeps at most.
const MAX_INTRO_REGISTRATIONS: usize = 4096;
/// Clients a rendezvous point lets wait at most, and for how long.
const MAX_RENDEZVOUS_WAITING: usize = 4096;
const RENDEZVOUS_TTL: Duration = Duration::from_secs(60);

struct ExitStream {
    /// None after the client half-closed (END with reason DONE).
    data_tx: Option<mpsc::Sender<Bytes>>,
    window: Arc<Semaphore>,
}

pub(crate) struct NodeInner {
    cfg: NodeConfig,
    /// This node's id (never changes) and its current descriptor (re-signed before it expires,
    /// see `renew_descriptor`).
    id: NodeId,
    descriptor: Mutex<Descriptor>,
    addr: SocketAddr,
    stats: Stats,
    out_links: tokio::sync::Mutex<HashMap<NodeId, Arc<Link>>>,
    tasks: Mutex<Vec<AbortHandle>>,
    next_link: AtomicU64,
    stopped: AtomicBool,
    /// The DHT service of a node with the DHT role.
    dht: Option<Mutex<crate::dht::DhtServer>>,
    /// Hidden-service registrations (a node with the INTRO role).
    intro: Mutex<IntroPointTable<CircHandle>>,
    /// Clients waiting for their hidden seeder (any relay can be a rendezvous point).
    rendezvous: Mutex<RendezvousTable<CircHandle>>,
    /// Inbound link admission, and how to abort a pending handshake it evicts.
    gate: Mutex<LinkGate>,
    evict: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
    link_refusals: Mutex<RefusalLog>,
    circ_refusals: Mutex<RefusalLog>,
    relay_cap: Option<Mutex<ByteCap>>,
    exit_cap: Option<Mutex<ByteCap>>,
    /// Circuits created by each source address (inbound links).
    circ_from: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// Addresses an exit refuses as destinations: its published one and its interfaces' public
    /// ones (`ExitPolicy::check_not_own`).
    own_ips: Vec<std::net::IpAddr>,
    /// Whether EXTEND may name private, loopback and link-local addresses.
    extend_private: bool,
    /// Sockets and resolutions the exit holds (capped, `exit_slots`).
    exit_counters: Arc<ExitCounters>,
    /// Every open link (the out-of-memory killer looks at all their queues).
    links: Mutex<HashMap<u64, std::sync::Weak<Link>>>,
    /// Circuit cells queued on all links, the most ever, and whether the OOM killer is running.
    queued_cells: AtomicUsize,
    queued_peak: AtomicUsize,
    oom_running: AtomicBool,
    /// The hostile-node kit's view of this node's circuits (tests only).
    #[cfg(feature = "hostile")]
    hostile_circs: Mutex<Vec<std::sync::Weak<RelayCirc>>>,
    #[cfg(feature = "hostile")]
    hostile_stall: AtomicBool,
    #[cfg(feature = "hostile")]
    hostile_mangle: Mutex<hostile::Mangle>,
    #[cfg(feature = "hostile")]
    hostile_refuse_extend: AtomicBool,
}

/// A running node. Dropping it does not stop it; call [`Node::shutdown`].
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// The address a node's descriptor carries (`None`: the listener's own). A node with roles
/// (relay, exit, DHT, intro) is dialled by others, so an unspecified address is refused with a
/// message that says what to do.
fn published_addr(
    advertise: Option<SocketAddr>,
    listen: SocketAddr,
    roles: u8,
) -> std::io::Result<Option<SocketAddr>> {
    let a = advertise.unwrap_or(listen);
    if roles != 0 && a.ip().is_unspecified() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{a} is not an address others can dial: advertise the address this node is                  reached at (--advertise HOST:PORT, config network.advertise) or listen on it"
            ),
        ));
    }
    Ok(advertise)
}

/// How long before its expiry a descriptor is re-signed: a quarter of its lifetime, so that
/// holders that refresh at half the lifetime (DHT republishing, directory reads) never see it
/// expire.
fn renew_interval(lifetime: Duration) -> Duration {
    (lifetime / 4).max(Duration::from_secs(1))
}

/// Keeps this node's descriptor valid for as long as the node runs: every quarter of its
/// lifetime it is signed again with a new expiry (same keys, address, roles and policy), and the
/// DHT service answers with the new one. Publishing it (DHT records, descriptor files) is the
/// embedding's job: it reads [`Node::descriptor`] / [`Node::descriptor_record`] each time.
async fn renew_descriptor(node: Arc<NodeInner>) {
    let every = renew_interval(node.cfg.descriptor_lifetime);
    loop {
        tokio::time::sleep(every).await;
        let old = lock(&node.descriptor).clone();
        let d = Descriptor::new_signed(
            &node.cfg.identity,
            old.addr,
            old.roles,
            old.exit_policy.clone(),
            unix_now() + node.cfg.descriptor_lifetime.as_secs(),
        );
        if let Some(dht) = &node.dht {
            lock(dht).set_me(crate::dht::Contact {
                id: crate::dht::Key(d.id.0),
                descriptor: d.encode(),
            });
        }
        debug!(expires = d.expires, "descriptor renewed");
        *lock(&node.descriptor) = d;
    }
}

/// A descriptor record must hold a valid descriptor of the node whose id is the record's key,
/// published with that node's own signing key.
fn check_descriptor_record(rec: &crate::dht::Record) -> Result<(), crate::dht::DhtError> {
    let d = Descriptor::decode_verified(&rec.value, unix_now())
        .map_err(|e| crate::dht::DhtError::Rejected(format!("descriptor: {e}")))?;
    if d.id.0 != rec.key.0 || d.ed25519 != rec.publisher {
        return Err(crate::dht::DhtError::Rejected(
            "descriptor record not published under the node's id by the node's key".into(),
        ));
    }
    Ok(())
}

impl Node {
    /// Adds verified descriptors of other DHT nodes to this node's routing table (bootstrap).
    /// Returns how many were taken; nodes without the DHT role and invalid descriptors are skipped.
    pub fn dht_learn(&self, descriptors: &[Descriptor]) -> usize {
        let Some(dht) = &self.inner.dht else { return 0 };
        let now = unix_now();
        let mut g = lock(dht);
        let mut n = 0;
        for d in descriptors {
            if d.roles & crate::descriptor::ROLE_DHT == 0
                || d.verify(now).is_err()
                || d.id == self.inner.id
            {
                continue;
            }
            g.learn(crate::dht::Contact {
                id: crate::dht::Key(d.id.0),
                descriptor: d.encode(),
            });
            n += 1;
        }
        n
    }

    /// This node's descriptor as a signed DHT record under its node id (republish it before the
    /// descriptor expires; a newer one replaces the older at each holder).
    pub fn descriptor_record(&self) -> crate::dht::Record {
        let d = self.descriptor();
        crate::dht::Record::sign(
            self.inner.cfg.identity.signing_key(),
            crate::dht::Key(d.id.0),
            crate::dht::RecordKind::Descriptor,
            unix_now(),
            // a record may not outlive the DHT's limit (republished long before that)
            d.expires
                .min(unix_now() + crate::dht::record::MAX_TTL_SECS - 60),
            d.encode(),
        )
    }

    /// The descriptors of the DHT nodes in this node's routing table (to cache across restarts).
    pub fn dht_contacts(&self) -> Vec<Descriptor> {
        let Some(dht) = &self.inner.dht else {
            return Vec::new();
        };
        let now = unix_now();
        lock(dht)
            .table()
            .contacts()
            .filter_map(|c| Descriptor::decode_verified(&c.descriptor, now).ok())
            .collect()
    }

    /// Record keys this DHT node stores, with the raw encoded records (for tests and status).
    pub fn dht_records(&self) -> Vec<crate::dht::Record> {
        let Some(dht) = &self.inner.dht else {
            return Vec::new();
        };
        let g = lock(dht);
        let now = unix_now();
        let keys: Vec<crate::dht::Key> = g.store().keys().copied().collect();
        keys.iter().flat_map(|k| g.store().get(k, now)).collect()
    }

    /// Size of this node's DHT routing table (0 without the DHT role).
    /// Contacts in the DHT routing table whose descriptor is still valid (an expired one is a
    /// node that stopped renewing it: gone, or cut off).
    pub fn dht_table_len(&self) -> usize {
        self.dht_contacts().len()
    }

    /// Binds the listener and starts accepting links.
    pub async fn start(cfg: NodeConfig) -> std::io::Result<Node> {
        let published = published_addr(cfg.advertise, cfg.listen, cfg.roles)?;
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let mut published = published.unwrap_or(addr);
        if published.port() == 0 {
            published.set_port(addr.port());
        }
        let expires = unix_now() + cfg.descriptor_lifetime.as_secs();
        let descriptor = Descriptor::new_signed(
            &cfg.identity,
            published,
            cfg.roles,
            cfg.exit_policy.clone(),
            expires,
        );
        let dht = (cfg.roles & crate::descriptor::ROLE_DHT != 0).then(|| {
            let me = crate::dht::Contact {
                id: crate::dht::Key(descriptor.id.0),
                descriptor: descriptor.encode(),
            };
            Mutex::new(
                crate::dht::DhtServer::new(me, crate::dht::StoreLimits::default())
                    .with_descriptor_check(check_descriptor_record),
            )
        });
        let now = std::time::Instant::now();
        let cap = |r: Option<u64>| {
            r.filter(|r| *r > 0)
                .map(|r| Mutex::new(ByteCap::new(r, now)))
        };
        let inner = Arc::new(NodeInner {
            gate: Mutex::new(LinkGate::new(cfg.limits.clone())),
            evict: Mutex::new(HashMap::new()),
            circ_from: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            own_ips: {
                let mut v = crate::exit::own_public_addresses();
                if !crate::exit::is_non_public(&published.ip()) {
                    v.push(published.ip());
                }
                v
            },
            extend_private: cfg.allow_private_links || crate::exit::is_non_public(&published.ip()),
            exit_counters: Arc::new(ExitCounters::default()),
            queued_cells: AtomicUsize::new(0),
            queued_peak: AtomicUsize::new(0),
            oom_running: AtomicBool::new(false),
            #[cfg(feature = "hostile")]
            hostile_circs: Mutex::new(Vec::new()),
            #[cfg(feature = "hostile")]
            hostile_stall: AtomicBool::new(false),
            #[cfg(feature = "hostile")]
            hostile_mangle: Mutex::new(hostile::Mangle::None),
            #[cfg(feature = "hostile")]
            hostile_refuse_extend: AtomicBool::new(false),
            link_refusals: Mutex::new(RefusalLog::new(REFUSAL_LOG_WINDOW)),
            circ_refusals: Mutex::new(RefusalLog::new(REFUSAL_LOG_WINDOW)),
            relay_cap: cap(cfg.relay_rate),
            exit_cap: cap(cfg.exit_rate),
            cfg,
            id: descriptor.id,
            descriptor: Mutex::new(descriptor),
            addr,
            stats: Stats::default(),
            out_links: tokio::sync::Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            next_link: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            dht,
            intro: Mutex::new(IntroPointTable::new(MAX_INTRO_REGISTRATIONS)),
            rendezvous: Mutex::new(RendezvousTable::new(MAX_RENDEZVOUS_WAITING, RENDEZVOUS_TTL)),
        });
        let n2 = inner.clone();
        let h = tokio::spawn(async move { accept_loop(n2, listener).await });
        inner.track(h.abort_handle());
        let n2 = inner.clone();
        let h = tokio::spawn(async move { renew_descriptor(n2).await });
        inner.track(h.abort_handle());
        info!(node = %inner.id.short(), %addr, "node listening");
        Ok(Node { inner })
    }

    /// This node's current descriptor (re-signed with a later expiry well before it expires).
    pub fn descriptor(&self) -> Descriptor {
        lock(&self.inner.descriptor).clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn is_running(&self) -> bool {
        !self.inner.stopped.load(Ordering::Relaxed)
    }

    /// Stops every task of the node (listener, links, exit streams); peers see the links drop.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for t in tasks {
            t.abort();
        }
    }

    pub fn status(&self) -> NodeStatus {
        let s = &self.inner.stats;
        NodeStatus {
            node_id: self.inner.id.to_string(),
            addr: self.inner.addr,
            links_open: s.links_open.load(Ordering::Relaxed),
            links_total: s.links_total.load(Ordering::Relaxed),
            link_errors: s.link_errors.load(Ordering::Relaxed),
            circuits: s.circuits.load(Ordering::Relaxed),
            relayed_bytes: s.relayed_bytes.load(Ordering::Relaxed),
            exit_bytes_out: s.exit_out.load(Ordering::Relaxed),
            exit_bytes_in: s.exit_in.load(Ordering::Relaxed),
            circuits_destroyed_tamper: s.tamper.load(Ordering::Relaxed),
            handshakes_pending: lock(&self.inner.gate).pending() as u64,
            links_refused: s.links_refused.load(Ordering::Relaxed),
            circuits_refused: s.circuits_refused.load(Ordering::Relaxed),
            tasks: {
                let mut t = lock(&self.inner.tasks);
                t.retain(|h| !h.is_finished());
                t.len() as u64
            },
            dht_nodes: self.dht_table_len() as u64,
            queued_bytes: (self.inner.queued_cells.load(Ordering::Relaxed) * CELL_SIZE) as u64,
            queued_peak_bytes: (self.inner.queued_peak.load(Ordering::Relaxed) * CELL_SIZE) as u64,
            queued_cap_bytes: self.inner.cfg.limits.max_queued_bytes as u64,
            circuits_killed_oom: s.oom_killed.load(Ordering::Relaxed),
            circuits_killed_queue: s.queue_killed.load(Ordering::Relaxed),
            exit_sockets: self.inner.exit_counters.held(SlotKind::Socket) as u64,
            exit_resolves: self.inner.exit_counters.held(SlotKind::Resolve) as u64,
        }
    }
}

impl NodeInner {
    fn track(&self, h: AbortHandle) {
        if self.stopped.load(Ordering::Relaxed) {
            h.abort();
            return;
        }
        let mut t = lock(&self.tasks);
        if t.len() > 256 {
            t.retain(|h| !h.is_finished());
        }
        t.push(h);
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) -> AbortHandle {
        let h = tokio::spawn(f).abort_handle();
        self.track(h.clone());
        h
    }
}

async fn accept_loop(node: Arc<NodeInner>, listener: TcpListener) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let now = std::time::Instant::now();
        let admitted = lock(&node.gate).on_accept(peer.ip(), now);
        let adm = match admitted {
            Ok(a) => a,
            Err(why) => {
                drop(sock);
                node.refused_link(why);
                continue;
            }
        };
        if let Some(old) = adm.evict {
            if let Some(tx) = lock(&node.evict).remove(&old) {
                let _ = tx.send(());
            }
            node.refused_link(Refusal::Evicted);
        }
        let (etx, erx) = tokio::sync::oneshot::channel();
        lock(&node.evict).insert(adm.id, etx);
        let n2 = node.clone();
        node.spawn(async move {
            let mut guard = GateGuard {
                node: n2.clone(),
                id: adm.id,
                open: None,
            };
            if let Err(why) = accept_link(n2.clone(), sock, erx, &mut guard).await {
                n2.stats.link_errors.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "link closed during handshake: {why}");
            }
        });
    }
}

/// Log lines about refusals: at most one per window (with a count of the ones in between).
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

impl NodeInner {
    /// `n` circuit cells left the queues (written, or dropped with their circuit or link).
    fn unqueue(&self, n: usize) {
        if n > 0 {
            self.queued_cells.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// The out-of-memory killer: when the cells queued on all links pass the cap, the circuits
/// whose queued data is oldest are destroyed until the queues hold at most 90% of it (Tor's
/// `circuits_handle_oom`). Called after cells are queued, with no circuit or link lock held.
impl NodeInner {
    fn check_memory(self: &Arc<Self>) {
        let cap = self.cfg.limits.max_queued_bytes / CELL_SIZE;
        if self.queued_cells.load(Ordering::Relaxed) <= cap {
            return;
        }
        if self.oom_running.swap(true, Ordering::AcqRel) {
            return; // another task is at it
        }
        let links: Vec<Arc<Link>> = lock(&self.links)
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let mut queued = Vec::new();
        for l in &links {
            let q = lock(&l.queues);
            queued.extend(q.queued_circuits().map(|c| ((l.clone(), c.circ), c)));
        }
        let used = self.queued_cells.load(Ordering::Relaxed);
        let victims = channel::oom_victims(
            queued.iter().map(|(k, c)| ((k.0.id, k.1), *c)).collect(),
            used,
            cap * 9 / 10,
        );
        let mut killed = 0;
        for (link_id, circ_id) in victims {
            let Some(l) = links.iter().find(|l| l.id == link_id) else {
                continue;
            };
            let r = lock(&l.circuits).get(&circ_id).cloned();
            if let Some(r) = r {
                destroy(self, &r.circ, reason::RESOURCE_LIMIT, None);
                killed += 1;
            } else {
                // queued cells of a circuit already gone from the link's table
                let n = lock(&l.queues).remove_circuit(circ_id);
                self.unqueue(n);
            }
        }
        self.stats.oom_killed.fetch_add(killed, Ordering::Relaxed);
        warn!(
            killed,
            queued_mib = (used * CELL_SIZE) >> 20,
            cap_mib = self.cfg.limits.max_queued_bytes >> 20,
            "out of memory for queued cells: destroyed the circuits with the oldest queued data"
        );
        self.oom_running.store(false, Ordering::Release);
    }

    fn refused_link(&self, why: Refusal) {
        self.stats.links_refused.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = lock(&self.link_refusals).note(std::time::Instant::now()) {
            warn!("refusing inbound links: {why} ({n} more refused since the last report)");
        }
    }

    fn refused_circuit(&self, why: Refusal) {
        self.stats.circuits_refused.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = lock(&self.circ_refusals).note(std::time::Instant::now()) {
            warn!("refusing CREATEs: {why} ({n} more refused since the last report)");
        }
    }

    /// Waits as the relay cap says before forwarding `n` bytes.
    async fn relay_pace(&self, n: usize) {
        pace(&self.relay_cap, n).await
    }

    /// Waits as the exit cap says before moving `n` bytes to or from a target.
    async fn exit_pace(&self, n: usize) {
        pace(&self.exit_cap, n).await
    }
}

async fn pace(cap: &Option<Mutex<ByteCap>>, n: usize) {
    if let Some(c) = cap {
        let wait = lock(c).take(n, std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Keeps the link gate's books for one inbound connection, whatever way its task ends.
struct GateGuard {
    node: Arc<NodeInner>,
    id: u64,
    /// The source address once the link is established.
    open: Option<std::net::IpAddr>,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        lock(&self.node.evict).remove(&self.id);
        let mut g = lock(&self.node.gate);
        match self.open {
            Some(src) => g.on_closed(src),
            None => g.on_failed(self.id),
        }
    }
}

/// Reads one length-prefixed link handshake message (length checked before allocating).
/// `err(part, cause)` words the error for the side that reads.
async fn read_handshake_msg(
    sock: &mut TcpStream,
    err: impl Fn(&str, std::io::Error) -> String,
) -> Result<Vec<u8>, String> {
    let mut p = [0u8; 2];
    sock.read_exact(&mut p)
        .await
        .map_err(|e| err("length", e))?;
    let n = link::handshake_len(p).map_err(|e| e.to_string())?;
    let mut m = vec![0u8; n];
    sock.read_exact(&mut m)
        .await
        .map_err(|e| err(&format!("{n}-byte message"), e))?;
    Ok(m)
}

async fn accept_link(
    node: Arc<NodeInner>,
    mut sock: TcpStream,
    evicted: tokio::sync::oneshot::Receiver<()>,
    guard: &mut GateGuard,
) -> Result<(), String> {
    let _ = sock.set_nodelay(true);
    let hs = async {
        let msg = read_handshake_msg(&mut sock, |part, e| {
            format!("truncated handshake ({part}): {e}")
        })
        .await?;
        let (reply, split, _remote) =
            handshake::link_respond(&node.cfg.identity.x25519_secret_bytes(), &msg)
                .map_err(|e| format!("bad handshake: {e}"))?;
        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        sock.write_all(&out)
            .await
            .map_err(|e| format!("writing handshake reply: {e}"))?;
        handshake::link_cipher(split, false).map_err(|e| format!("link keys: {e}"))
    };
    let cipher = tokio::select! {
        r = tokio::time::timeout(node.cfg.limits.handshake_timeout, hs) => {
            r.map_err(|_| "handshake timed out".to_string())??
        }
        _ = evicted => return Err("handshake evicted (too many pending)".into()),
    };
    let src = lock(&node.gate)
        .on_established(guard.id)
        .map_err(|e| e.to_string())?;
    guard.open = Some(src);
    lock(&node.evict).remove(&guard.id);
    let link = new_link(&node, None, Some(src));
    run_link(node, sock, cipher, link).await;
    Ok(())
}

fn new_link(
    node: &NodeInner,
    peer: Option<(NodeId, [u8; 32])>,
    source: Option<std::net::IpAddr>,
) -> Arc<Link> {
    let id = node.next_link.fetch_add(1, Ordering::Relaxed);
    let link = Arc::new(Link {
        id,
        queues: Mutex::new(LinkQueues::new()),
        wake: tokio::sync::Notify::new(),
        circuits: Mutex::new(HashMap::new()),
        next_circ: AtomicU32::new(1),
        peer: peer.map(|p| p.0),
        peer_key: peer.map(|p| p.1),
        closed: AtomicBool::new(false),
        gate: Mutex::new(CircuitGate::new(
            &node.cfg.limits,
            std::time::Instant::now(),
        )),
        source,
    });
    lock(&node.links).insert(id, Arc::downgrade(&link));
    link
}

/// Runs an established link until it closes (spawns its writer, reads in this task).
fn run_link(
    node: Arc<NodeInner>,
    sock: TcpStream,
    cipher: LinkCipher,
    link: Arc<Link>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    // Boxed: links spawn links (EXTEND), which would make the future type recursive.
    Box::pin(run_link_inner(node, sock, cipher, link))
}

async fn run_link_inner(
    node: Arc<NodeInner>,
    sock: TcpStream,
    cipher: LinkCipher,
    link: Arc<Link>,
) {
    node.stats.links_open.fetch_add(1, Ordering::Relaxed);
    node.stats.links_total.fetch_add(1, Ordering::Relaxed);
    let (rd, wr) = sock.into_split();
    let LinkCipher { send, recv } = cipher;
    let writer = node.spawn(queue_writer(
        node.clone(),
        link.clone(),
        wr,
        send,
        node.cfg.keepalive,
    ));
    let why = link_reader(&node, &link, rd, recv).await;
    debug!(link = link.id, "link closed: {why}");
    writer.abort();
    close_link(&node, &link).await;
    node.stats.links_open.fetch_sub(1, Ordering::Relaxed);
}

/// A node's link writer: takes cells from the link's queues (control first, then one cell per
/// circuit in turn), seals them in batches into one write; PADDING after `keepalive` without
/// traffic. A peer that does not read blocks only this task: the queues of its circuits fill up
/// to their caps while every other link goes on.
async fn queue_writer(
    node: Arc<NodeInner>,
    link: Arc<Link>,
    mut wr: OwnedWriteHalf,
    mut send: LinkDir,
    keepalive: Duration,
) {
    let mut out = Vec::with_capacity(WIRE_CELL * WRITE_BATCH);
    loop {
        let mut freed = 0;
        let mut sealed = Ok(());
        {
            let mut q = lock(&link.queues);
            for _ in 0..WRITE_BATCH {
                let Some((c, n)) = q.pop() else { break };
                freed += n;
                sealed = send.try_seal_into(&c, &mut out);
                if sealed.is_err() {
                    break;
                }
            }
        }
        node.unqueue(freed);
        if let Err(e) = sealed {
            // the direction's frame counter is spent: the link ends rather than reuse a nonce
            warn!(link = link.id, "closing link: {e}");
            break;
        }
        if out.is_empty() {
            if link.closed.load(Ordering::Relaxed) {
                break;
            }
            // `notify_one` keeps a permit when nobody waits: a cell queued between the pop
            // above and this wait is not missed
            if tokio::time::timeout(keepalive, link.wake.notified())
                .await
                .is_err()
            {
                if let Err(e) = send.try_seal_into(&cell::new_cell(0, cmd::PADDING), &mut out) {
                    warn!(link = link.id, "closing link: {e}");
                    break;
                }
            } else {
                continue;
            }
        }
        if let Err(e) = wr.write_all(&out).await {
            debug!(link = link.id, "link write failed: {e}");
            break;
        }
        out.clear();
    }
    let _ = wr.shutdown().await;
}

/// Reads frames, opens them, dispatches cells. Returns why the link ended.
async fn link_reader(
    node: &Arc<NodeInner>,
    link: &Arc<Link>,
    mut rd: OwnedReadHalf,
    mut recv: LinkDir,
) -> String {
    let mut buf = vec![0u8; WIRE_CELL * 8];
    let mut filled = 0;
    loop {
        let n = match tokio::time::timeout(node.cfg.idle_timeout, rd.read(&mut buf[filled..])).await
        {
            Err(_) => return "idle timeout".into(),
            Ok(Ok(0)) => return "closed by peer".into(),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return format!("read error: {e}"),
        };
        filled += n;
        let mut off = 0;
        while filled - off >= WIRE_CELL {
            let c = match recv.open(&buf[off..off + WIRE_CELL]) {
                Ok(c) => c,
                Err(e) => {
                    node.stats.link_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(link = link.id, "closing link: {e}");
                    return e.to_string();
                }
            };
            off += WIRE_CELL;
            handle_cell(node, link, c).await;
            node.check_memory();
        }
        buf.copy_within(off..filled, 0);
        filled -= off;
    }
}

async fn close_link(node: &Arc<NodeInner>, link: &Arc<Link>) {
    link.closed.store(true, Ordering::Relaxed);
    lock(&node.links).remove(&link.id);
    let dropped = lock(&link.queues).clear();
    node.unqueue(dropped);
    if let Some(p) = link.peer {
        let mut m = node.out_links.lock().await;
        if m.get(&p).map(|l| l.id) == Some(link.id) {
            m.remove(&p);
        }
    }
    let circs: Vec<CircRef> = lock(&link.circuits).drain().map(|(_, c)| c).collect();
    for c in circs {
        destroy(node, &c.circ, reason::LINK_CLOSED, Some(link.id));
    }
}

/// Tears a circuit down: streams aborted, DESTROY sent to the side(s) other than `from_link`.
fn destroy(node: &Arc<NodeInner>, circ: &Arc<RelayCirc>, why: u8, from_link: Option<u64>) {
    let (next, tasks, streams, joined) = {
        let mut st = lock(&circ.st);
        if st.destroyed {
            return;
        }
        st.destroyed = true;
        (
            st.next.take(),
            std::mem::take(&mut st.tasks),
            std::mem::take(&mut st.streams),
            st.joined.take(),
        )
    };
    drop(streams);
    let h = CircHandle(circ.clone());
    lock(&node.intro).circuit_closed(&h);
    lock(&node.rendezvous).circuit_closed(&h);
    if let Some(other) = joined {
        // the other end of a rendezvous loses its peer
        destroy(node, &other, why, None);
    }
    for t in tasks {
        t.abort();
    }
    circ.bwd_window.close();
    node.stats.circuits.fetch_sub(1, Ordering::Relaxed);
    if let Some(ip) = circ.prev.source {
        let mut m = lock(&node.circ_from);
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
    lock(&circ.prev.circuits).remove(&circ.prev_id);
    // what it had queued goes with it (Tor clears a closed circuit's queues too)
    let dropped = lock(&circ.prev.queues).remove_circuit(circ.prev_id);
    node.unqueue(dropped);
    if from_link != Some(circ.prev.id) {
        send_soon(node, &circ.prev, cell::destroy_cell(circ.prev_id, why));
    }
    if let Some((nl, nid)) = next {
        lock(&nl.circuits).remove(&nid);
        let dropped = lock(&nl.queues).remove_circuit(nid);
        node.unqueue(dropped);
        if from_link != Some(nl.id) {
            send_soon(node, &nl, cell::destroy_cell(nid, why));
        }
    }
}

/// Queues a link-level control cell (CREATE, CREATED, DESTROY). Never waits: a peer that does not
/// read its link cannot make the node hold more than `channel::CONTROL_QUEUE_CELLS` of them.
fn send_soon(_node: &NodeInner, link: &Arc<Link>, c: CellBuf) {
    if link.closed.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = lock(&link.queues).push_control(c) {
        debug!(link = link.id, "dropping a control cell: {e}");
        return;
    }
    link.wake.notify_one();
}

/// Queues cell `c` of circuit `circ_id` on `link` (never waits) and counts it against the node's
/// memory cap. `CircuitFull` means the circuit's sender ignored its window: the caller destroys
/// the circuit (after releasing its lock).
fn enqueue(node: &NodeInner, link: &Link, circ_id: u32, c: CellBuf) -> Result<(), PushError> {
    if link.closed.load(Ordering::Relaxed) {
        return Ok(()); // the link's circuits are being torn down
    }
    {
        let mut q = lock(&link.queues);
        if let Err(e) = q.push(circ_id, c, std::time::Instant::now()) {
            node.stats.queue_killed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        // counted before the queue is unlocked, so the writer's decrement for this cell (after
        // it pops it) always comes after: the count never goes below zero
        let used = node.queued_cells.fetch_add(1, Ordering::Relaxed) + 1;
        node.queued_peak.fetch_max(used, Ordering::Relaxed);
    }
    link.wake.notify_one();
    Ok(())
}

/// Originates a backward relay message from this hop (seal + enqueue atomically).
/// Never waits: what it may send is bounded by the circuit's windows (DATA) or by what the
/// client sent (replies).
async fn send_back(
    node: &Arc<NodeInner>,
    circ: &Arc<RelayCirc>,
    rc: u8,
    stream: u32,
    data: &[u8],
) -> Result<(), ()> {
    let queued = {
        let mut st = lock(&circ.st);
        if st.destroyed {
            return Err(());
        }
        let c = st
            .hop
            .originate(circ.prev_id, rc, stream, data)
            .map_err(|_| ())?;
        enqueue(node, &circ.prev, circ.prev_id, c)
    };
    if let Err(e) = queued {
        warn!("destroying circuit: {e}");
        destroy(node, circ, reason::RESOURCE_LIMIT, None);
        return Err(());
    }
    node.check_memory();
    Ok(())
}

async fn handle_cell(node: &Arc<NodeInner>, link: &Arc<Link>, c: CellBuf) {
    let cid = cell::circ_id(&c);
    match cell::command(&c) {
        cmd::PADDING => {}
        cmd::CREATE => handle_create(node, link, cid, &c),
        cmd::CREATED => {
            let Some(r) = lock(&link.circuits).get(&cid).cloned() else {
                return;
            };
            let reply = match cell::lp_payload(&c) {
                Ok(p) => p.to_vec(),
                Err(_) => return destroy(node, &r.circ, reason::PROTOCOL, None),
            };
            let created = {
                let mut st = lock(&r.circ.st);
                let ok = if r.next_side {
                    st.hop.on_created()
                } else {
                    Err(HopError::UnexpectedCreated)
                };
                if ok.is_ok() {
                    st.next = Some((link.clone(), cid));
                }
                ok
            };
            if let Err(e) = created {
                return refuse(node, link, &r.circ, e);
            }
            let _ = send_back(node, &r.circ, rcmd::EXTENDED, 0, &reply).await;
        }
        cmd::DESTROY => {
            let r = lock(&link.circuits).get(&cid).cloned();
            if let Some(r) = r {
                destroy(node, &r.circ, c[5], Some(link.id));
            }
        }
        cmd::RELAY | cmd::RELAY_EARLY => {
            let Some(r) = lock(&link.circuits).get(&cid).cloned() else {
                debug!(link = link.id, circ = cid, "RELAY for unknown circuit");
                return;
            };
            if r.next_side {
                backward_cell(node, link, &r.circ, c).await
            } else {
                forward_cell(node, link, &r.circ, c).await
            }
        }
        other => {
            warn!(link = link.id, "unknown cell command {other}; ignoring");
        }
    }
}

/// Destroys `circ` for a rule of its hop machine that a peer broke (logged with the reason).
fn refuse(node: &Arc<NodeInner>, link: &Link, circ: &Arc<RelayCirc>, e: HopError) {
    if e.is_tampering() {
        node.stats.tamper.fetch_add(1, Ordering::Relaxed);
    }
    warn!(link = link.id, "destroying circuit: {e}");
    destroy(node, circ, e.reason(), None);
}

/// A RELAY cell from the next hop: this hop's layer is added and it goes towards the client.
async fn backward_cell(node: &Arc<NodeInner>, link: &Link, circ: &Arc<RelayCirc>, c: CellBuf) {
    node.relay_pace(CELL_SIZE).await;
    let queued = {
        let mut st = lock(&circ.st);
        if st.destroyed {
            return;
        }
        match st.hop.on_backward(c) {
            Ok(mut c) => {
                cell::set_circ_id(&mut c, circ.prev_id);
                Ok(enqueue(node, &circ.prev, circ.prev_id, c))
            }
            Err(e) => Err(e),
        }
    };
    match queued {
        Err(e) => refuse(node, link, circ, e),
        Ok(Err(e)) => {
            warn!(link = link.id, "destroying circuit: {e}");
            destroy(node, circ, reason::RESOURCE_LIMIT, None);
        }
        Ok(Ok(())) => {
            node.stats
                .relayed_bytes
                .fetch_add(CELL_SIZE as u64, Ordering::Relaxed);
        }
    }
}

/// A RELAY or RELAY_EARLY cell from the client's side: the hop machine says whether it goes
/// on, to the joined circuit of a rendezvous, or is for this hop.
async fn forward_cell(node: &Arc<NodeInner>, link: &Link, circ: &Arc<RelayCirc>, c: CellBuf) {
    let (what, next, joined) = {
        let mut st = lock(&circ.st);
        if st.destroyed {
            return;
        }
        (st.hop.on_forward(c), st.next.clone(), st.joined.clone())
    };
    let what = match what {
        Ok(w) => w,
        Err(e) => return refuse(node, link, circ, e),
    };
    match what {
        Forward::Next(mut c) => {
            let Some((nl, nid)) = next else {
                return; // the machine says it goes on only once CREATED set `next`
            };
            node.relay_pace(CELL_SIZE).await;
            cell::set_circ_id(&mut c, nid);
            node.stats
                .relayed_bytes
                .fetch_add(CELL_SIZE as u64, Ordering::Relaxed);
            #[cfg(feature = "hostile")]
            let cells = hostile::mangle_forward(node, c);
            #[cfg(not(feature = "hostile"))]
            let cells = [c];
            for c in cells {
                if let Err(e) = enqueue(node, &nl, nid, c) {
                    warn!(link = link.id, "destroying circuit: {e}");
                    destroy(node, circ, reason::RESOURCE_LIMIT, None);
                    break;
                }
            }
        }
        Forward::Joined(c) => {
            // rendezvous: the (end-to-end sealed) cell goes to the other end with that circuit's
            // backward layer, as a plain RELAY towards its client
            let Some(other) = joined else {
                return;
            };
            node.relay_pace(CELL_SIZE).await;
            let queued = {
                let mut st = lock(&other.st);
                if st.destroyed {
                    return;
                }
                let mut c = st.hop.add_joined_layer(c);
                cell::set_circ_id(&mut c, other.prev_id);
                enqueue(node, &other.prev, other.prev_id, c)
            };
            if let Err(e) = queued {
                warn!(link = link.id, "destroying circuit: {e}");
                return destroy(node, &other, reason::RESOURCE_LIMIT, None);
            }
            node.stats
                .relayed_bytes
                .fetch_add(CELL_SIZE as u64, Ordering::Relaxed);
        }
        #[cfg(feature = "hostile")]
        Forward::Deliver { .. } if node.hostile_stall.load(Ordering::Relaxed) => {}
        Forward::Deliver { cell, early } => handle_relay(node, circ, &cell, early).await,
    }
}

fn handle_create(node: &Arc<NodeInner>, link: &Arc<Link>, cid: u32, c: &[u8]) {
    let b = cell::body(c);
    let htype = u16::from_be_bytes([b[0], b[1]]);
    let n = u16::from_be_bytes([b[2], b[3]]) as usize;
    // only the side that dialed the link creates circuits on it, with ids of its half; an id in
    // use is refused, never replaced
    let wrong_side = link.peer.is_some() || !cell::is_dialer_circ_id(cid);
    if htype != HTYPE_NK || n > b.len() - 4 || lock(&link.circuits).contains_key(&cid) || wrong_side
    {
        warn!(
            link = link.id,
            circ = cid,
            "bad CREATE (htype {htype}, len {n})"
        );
        send_soon(node, link, cell::destroy_cell(cid, reason::PROTOCOL));
        return;
    }
    let on_link = lock(&link.circuits).len();
    let total = node.stats.circuits.load(Ordering::Relaxed) as usize;
    let from_source = link
        .source
        .and_then(|ip| lock(&node.circ_from).get(&ip).copied())
        .unwrap_or(0);
    let admit = lock(&link.gate).on_create(
        &node.cfg.limits,
        (on_link, from_source, total),
        std::time::Instant::now(),
    );
    // a peer that does not read its replies gets no new circuits (its queue holds our cells)
    let admit = admit.and_then(|()| {
        if lock(&link.queues).control_len() >= channel::NOT_READING_CELLS {
            Err(Refusal::NotReading)
        } else {
            Ok(())
        }
    });
    if let Err(why) = admit {
        node.refused_circuit(why);
        send_soon(node, link, cell::destroy_cell(cid, reason::RESOURCE_LIMIT));
        return;
    }
    let (reply, keys) =
        match handshake::hop_respond(&node.cfg.identity.x25519_secret_bytes(), &b[4..4 + n]) {
            Ok(x) => x,
            Err(e) => {
                warn!(link = link.id, circ = cid, "hop handshake failed: {e}");
                send_soon(node, link, cell::destroy_cell(cid, reason::PROTOCOL));
                return;
            }
        };
    let circ = Arc::new(RelayCirc {
        prev: link.clone(),
        prev_id: cid,
        bwd_window: Arc::new(Semaphore::new(CIRC_WINDOW as usize)),
        st: Mutex::new(CircState {
            hop: RelayHop::new(keys),
            next: None,
            destroyed: false,
            streams: HashMap::new(),
            udp: HashMap::new(),
            resolving: 0,
            tasks: Vec::new(),
            joined: None,
        }),
    });
    #[cfg(feature = "hostile")]
    hostile::register(node, &circ);
    lock(&link.circuits).insert(
        cid,
        CircRef {
            circ,
            next_side: false,
        },
    );
    node.stats.circuits.fetch_add(1, Ordering::Relaxed);
    if let Some(ip) = link.source {
        *lock(&node.circ_from).entry(ip).or_insert(0) += 1;
    }
    match cell::lp_cell(cid, cmd::CREATED, &reply) {
        Ok(cc) => send_soon(node, link, cc),
        Err(e) => warn!("CREATED too long: {e}"),
    }
}

async fn handle_relay(node: &Arc<NodeInner>, circ: &Arc<RelayCirc>, c: &[u8], early: bool) {
    let msg = match cell::read_relay(cell::body(c)) {
        Ok(m) => m,
        Err(e) => {
            warn!("malformed relay message: {e}");
            return destroy(node, circ, reason::PROTOCOL, None);
        }
    };
    let sid = msg.stream;
    match msg.cmd {
        rcmd::DROP => {}
        rcmd::EXTEND => {
            let ext = match cell::Extend::decode(msg.data) {
                Ok(e) => e,
                Err(e) => {
                    warn!("bad EXTEND: {e}");
                    return destroy(node, circ, reason::PROTOCOL, None);
                }
            };
            // keys that do not derive the id (someone else's key under a node's id) would make
            // the sender an invisible extra hop of every later circuit towards that node
            let started =
                lock(&circ.st)
                    .hop
                    .start_extend(early, &ext, &node.id.0, node.extend_private);
            if let Err(e) = started {
                if e.is_tampering() {
                    node.stats.tamper.fetch_add(1, Ordering::Relaxed);
                }
                warn!("destroying circuit: {e}");
                return destroy(node, circ, e.reason(), None);
            }
            #[cfg(feature = "hostile")]
            if node.hostile_refuse_extend.load(Ordering::Relaxed) {
                return destroy(node, circ, reason::EXTEND_FAILED, None);
            }
            let (n2, c2) = (node.clone(), circ.clone());
            let h = node.spawn(async move {
                if let Err(e) = do_extend(&n2, &c2, ext).await {
                    // routine when relays come and go: the client is told (DESTROY) and picks another path
                    debug!("extend failed: {e}");
                    destroy(&n2, &c2, reason::EXTEND_FAILED, None);
                }
            });
            lock(&circ.st).tasks.push(h);
        }
        rcmd::BEGIN => {
            if node.cfg.roles & ROLE_EXIT == 0 {
                let _ = send_back(
                    node,
                    circ,
                    rcmd::END,
                    sid,
                    &cell::encode_end(reason::NOT_EXIT, "this node is not an exit"),
                )
                .await;
                return;
            }
            let target = String::from_utf8_lossy(msg.data).into_owned();
            let (tx, rx) = mpsc::channel(STREAM_WINDOW as usize + 2);
            let window = Arc::new(Semaphore::new(STREAM_WINDOW as usize));
            let admitted = {
                let mut st = lock(&circ.st);
                let l = &node.cfg.limits;
                if st.streams.contains_key(&sid) || sid == 0 {
                    None
                } else {
                    let slot = if st.streams.len() >= l.max_streams_per_circuit {
                        Err("too many streams on this circuit")
                    } else {
                        ExitSlot::take(&node.exit_counters, SlotKind::Socket, l.max_exit_sockets)
                            .ok_or("this exit has no sockets to spare")
                    };
                    if slot.is_ok() {
                        st.streams.insert(
                            sid,
                            ExitStream {
                                data_tx: Some(tx),
                                window: window.clone(),
                            },
                        );
                    }
                    Some(slot)
                }
            };
            let slot = match admitted {
                None => return destroy(node, circ, reason::PROTOCOL, None),
                Some(Err(why)) => {
                    node.refused_circuit(Refusal::ExitBusy);
                    let end = cell::encode_end(reason::RESOURCE_LIMIT, why);
                    let _ = send_back(node, circ, rcmd::END, sid, &end).await;
                    return;
                }
                Some(Ok(slot)) => slot,
            };
            let (n2, c2) = (node.clone(), circ.clone());
            let h = node.spawn(async move {
                let _slot = slot; // held while the stream's socket is
                exit_stream(n2, c2, sid, target, rx, window).await
            });
            push_task(&circ.st, h);
        }
        rcmd::DATA => {
            let (tx, sendme) = {
                let mut st = lock(&circ.st);
                let sendme = match st.hop.on_data() {
                    Ok(due) => due,
                    Err(e) => {
                        drop(st);
                        warn!("destroying circuit: {e}");
                        return destroy(node, circ, e.reason(), None);
                    }
                };
                (st.streams.get(&sid).and_then(|s| s.data_tx.clone()), sendme)
            };
            if let Some(tx) = tx {
                if tx.try_send(Bytes::copy_from_slice(msg.data)).is_err() {
                    warn!(
                        stream = sid,
                        "stream exceeded its window or closed; ending it"
                    );
                    lock(&circ.st).streams.remove(&sid);
                    let _ = send_back(
                        node,
                        circ,
                        rcmd::END,
                        sid,
                        &cell::encode_end(reason::PROTOCOL, "stream window exceeded"),
                    )
                    .await;
                }
            }
            if sendme {
                let tag = crate::relay_crypto::body_tag(cell::body(c));
                let _ = send_back(node, circ, rcmd::SENDME, 0, &sendme_payload(&tag)).await;
            }
        }
        rcmd::END => {
            // END(DONE) = the client finished writing (half-close: keep sending to it);
            // any other reason = the client dropped the stream.
            let (why, _) = cell::decode_end(msg.data);
            let mut st = lock(&circ.st);
            if why == reason::DONE {
                if let Some(s) = st.streams.get_mut(&sid) {
                    s.data_tx = None;
                }
            } else if let Some(s) = st.streams.remove(&sid) {
                s.window.close();
            }
            if let Some((_, task)) = st.udp.remove(&sid) {
                task.abort();
            }
        }
        rcmd::SENDME => {
            if sid == 0 {
                // it must echo the MAC of the DATA cell it acknowledges (proposal 289): a
                // client that does not read cannot make this exit send faster
                let auth = lock(&circ.st).hop.on_circuit_sendme(msg.data);
                if let Err(e) = auth {
                    warn!("destroying circuit: {e}");
                    return destroy(node, circ, e.reason(), None);
                }
                circ.bwd_window.add_permits(CIRC_SENDME_INC as usize);
            } else if let Some(s) = lock(&circ.st).streams.get(&sid) {
                s.window.add_permits(STREAM_SENDME_INC as usize);
            }
        }
        rcmd::RESOLVE => {
            if node.cfg.roles & ROLE_EXIT == 0 {
                let _ = send_back(
                    node,
                    circ,
                    rcmd::END,
                    sid,
                    &cell::encode_end(reason::NOT_EXIT, "this node is not an exit"),
                )
                .await;
                return;
            }
            let name = String::from_utf8_lossy(msg.data).into_owned();
            let slot = {
                let mut st = lock(&circ.st);
                let l = &node.cfg.limits;
                let slot = if st.resolving >= l.max_resolves_per_circuit {
                    None
                } else {
                    ExitSlot::take(&node.exit_counters, SlotKind::Resolve, l.max_exit_resolves)
                };
                if slot.is_some() {
                    st.resolving += 1;
                }
                slot
            };
            let Some(slot) = slot else {
                node.refused_circuit(Refusal::ExitBusy);
                let reply = [
                    &[1u8][..],
                    b"resource limit: too many resolutions in progress",
                ]
                .concat();
                let _ = send_back(node, circ, rcmd::RESOLVED, sid, &reply).await;
                return;
            };
            let (c2, n2) = (circ.clone(), node.clone());
            let h = node.spawn(async move {
                let _slot = slot;
                let reply = match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::lookup_host((name.as_str(), 0)),
                )
                .await
                {
                    Ok(Ok(it)) => cell::encode_resolved(&it.map(|a| a.ip()).collect::<Vec<_>>()),
                    Ok(Err(e)) => {
                        [&[1u8][..], format!("cannot resolve {name}: {e}").as_bytes()].concat()
                    }
                    Err(_) => {
                        [&[1u8][..], format!("resolving {name} timed out").as_bytes()].concat()
                    }
                };
                {
                    let mut st = lock(&c2.st);
                    st.resolving = st.resolving.saturating_sub(1);
                }
                let _ = send_back(
                    &n2,
                    &c2,
                    rcmd::RESOLVED,
                    sid,
                    &reply[..reply.len().min(RELAY_DATA_MAX)],
                )
                .await;
            });
            push_task(&circ.st, h);
        }
        rcmd::DATAGRAM => handle_datagram(node, circ, sid, msg.data).await,
        rcmd::DHT_REQUEST => {
            let Some(dht) = &node.dht else {
                let _ = send_back(
                    node,
                    circ,
                    rcmd::END,
                    sid,
                    &cell::encode_end(reason::UNSUPPORTED, "this node is not a DHT node"),
                )
                .await;
                return;
            };
            let reply = match crate::dht::Message::decode(msg.data) {
                Ok(crate::dht::Message::Request { txid, req }) => {
                    // a DHT node that publishes its descriptor here becomes a contact: this is how
                    // nodes bootstrapped from one node come to know each other
                    let announced = match &req {
                        crate::dht::Request::Store(rec)
                            if rec.kind == crate::dht::RecordKind::Descriptor =>
                        {
                            Some(rec.value.clone())
                        }
                        _ => None,
                    };
                    let mut g = lock(dht);
                    let resp = g.handle(req, unix_now());
                    if let (Some(v), crate::dht::Response::Stored) = (announced, &resp) {
                        if let Ok(d) = Descriptor::decode_verified(&v, unix_now()) {
                            if d.roles & crate::descriptor::ROLE_DHT != 0 && d.id != node.id {
                                g.learn(crate::dht::Contact {
                                    id: crate::dht::Key(d.id.0),
                                    descriptor: v,
                                });
                            }
                        }
                    }
                    drop(g);
                    fit_dht_reply(txid, resp)
                }
                Ok(crate::dht::Message::Response { txid, .. }) => fit_dht_reply(
                    txid,
                    crate::dht::Response::Error {
                        code: crate::dht::message::code::MALFORMED,
                        reason: "a response is not a request".into(),
                    },
                ),
                Err(e) => {
                    warn!("malformed DHT request: {e}");
                    fit_dht_reply(
                        0,
                        crate::dht::Response::Error {
                            code: crate::dht::message::code::MALFORMED,
                            reason: e.to_string(),
                        },
                    )
                }
            };
            let _ = send_back(node, circ, rcmd::DHT_RESPONSE, sid, &reply).await;
        }
        rcmd::ESTABLISH_INTRO..=rcmd::RENDEZVOUS2 => handle_hs(node, circ, msg.data).await,
        rcmd::DIRECTORY_REQUEST => {
            // public information: this node's descriptor and the DHT nodes it knows
            let mut ds = vec![lock(&node.descriptor).clone()];
            if let Some(dht) = &node.dht {
                let now = unix_now();
                ds.extend(
                    lock(dht)
                        .table()
                        .contacts()
                        .filter_map(|c| Descriptor::decode_verified(&c.descriptor, now).ok()),
                );
            }
            let reply = crate::descriptor::encode_directory(&ds, RELAY_DATA_MAX);
            let _ = send_back(node, circ, rcmd::DIRECTORY, sid, &reply).await;
        }
        other if (rcmd::ESTABLISH_INTRO..=rcmd::DHT_RESPONSE).contains(&other) => {
            let _ = send_back(
                node,
                circ,
                rcmd::END,
                sid,
                &cell::encode_end(reason::UNSUPPORTED, "command reserved, not implemented yet"),
            )
            .await;
        }
        other => {
            warn!("unknown relay command {other}");
            destroy(node, circ, reason::PROTOCOL, None);
        }
    }
}

/// The relay command that carries a hidden-service message.
pub(crate) fn hs_rcmd(m: &HsMessage) -> u8 {
    match m {
        HsMessage::EstablishIntro { .. } => rcmd::ESTABLISH_INTRO,
        HsMessage::IntroEstablished => rcmd::INTRO_ESTABLISHED,
        HsMessage::Introduce1 { .. } => rcmd::INTRODUCE1,
        HsMessage::Introduce2 { .. } => rcmd::INTRODUCE2,
        HsMessage::IntroduceAck { .. } => rcmd::INTRODUCE_ACK,
        HsMessage::EstablishRendezvous { .. } => rcmd::ESTABLISH_RENDEZVOUS,
        HsMessage::RendezvousEstablished => rcmd::RENDEZVOUS_ESTABLISHED,
        HsMessage::Rendezvous1 { .. } => rcmd::RENDEZVOUS1,
        HsMessage::Rendezvous2 { .. } => rcmd::RENDEZVOUS2,
    }
}

async fn send_hs(node: &Arc<NodeInner>, circ: &Arc<RelayCirc>, m: &HsMessage) -> Result<(), ()> {
    send_back(node, circ, hs_rcmd(m), 0, &m.encode()).await
}

/// An introduction or rendezvous message addressed to this hop: the decisions are the sans-IO
/// tables' (hs::points); this only carries them out.
async fn handle_hs(node: &Arc<NodeInner>, circ: &Arc<RelayCirc>, data: &[u8]) {
    let m = match HsMessage::decode(data) {
        Ok(m) => m,
        Err(e) => {
            warn!("malformed hidden-service message: {e}");
            return destroy(node, circ, reason::PROTOCOL, None);
        }
    };
    let from = CircHandle(circ.clone());
    let action = match &m {
        HsMessage::EstablishIntro { .. } | HsMessage::Introduce1 { .. } => {
            if node.cfg.roles & ROLE_INTRO == 0 {
                warn!("introduction request at a node without the INTRO role");
                return destroy(node, circ, reason::UNSUPPORTED, None);
            }
            let binding = lock(&circ.st).hop.binding();
            lock(&node.intro).handle(from, &binding, m)
        }
        HsMessage::EstablishRendezvous { .. } | HsMessage::Rendezvous1 { .. } => {
            if node.cfg.roles & ROLE_RELAY == 0 {
                warn!("rendezvous request at a node that is not a relay");
                return destroy(node, circ, reason::UNSUPPORTED, None);
            }
            lock(&node.rendezvous).handle(from, m, std::time::Instant::now())
        }
        other => {
            warn!("hidden-service message {} sent to a relay", hs_rcmd(other));
            return destroy(node, circ, reason::PROTOCOL, None);
        }
    };
    match action {
        PointAction::Reply(r) => {
            let _ = send_hs(node, circ, &r).await;
        }
        PointAction::Forward { to, msg } => {
            let _ = send_hs(node, &to.0, &msg).await;
        }
        PointAction::ForwardAndReply { to, msg, reply } => {
            if send_hs(node, &to.0, &msg).await.is_err() {
                debug!("introduction: the service's circuit is gone");
            }
            let _ = send_hs(node, circ, &reply).await;
        }
        PointAction::Join { to, msg } => {
            let other = to.0;
            {
                let mut a = lock(&circ.st);
                if a.hop.join().is_err() {
                    drop(a);
                    return destroy(node, circ, reason::PROTOCOL, None);
                }
                a.joined = Some(other.clone());
            }
            {
                let mut b = lock(&other.st);
                if b.destroyed || b.hop.join().is_err() {
                    drop(b);
                    lock(&circ.st).joined = None;
                    return destroy(node, circ, reason::DESTROYED, None);
                }
                b.joined = Some(circ.clone());
            }
            debug!("rendezvous joined");
            let _ = send_hs(node, &other, &msg).await;
        }
        PointAction::Close(e) => {
            warn!("hidden-service protocol error: {e}");
            destroy(node, circ, reason::PROTOCOL, None);
        }
    }
}

async fn do_extend(
    node: &Arc<NodeInner>,
    circ: &Arc<RelayCirc>,
    ext: cell::Extend,
) -> Result<(), String> {
    let link = get_link(node, NodeId(ext.node_id), &ext.x25519, ext.addr).await?;
    let cid = alloc_circ_id(&link).ok_or("no free circuit id on the link")?;
    let mut body = HTYPE_NK.to_be_bytes().to_vec();
    body.extend_from_slice(&(ext.handshake.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext.handshake);
    let mut c = cell::new_cell(cid, cmd::CREATE);
    if body.len() > cell::CELL_BODY {
        return Err("EXTEND handshake too long".into());
    }
    cell::body_mut(&mut c)[..body.len()].copy_from_slice(&body);
    if lock(&circ.st).destroyed {
        return Ok(());
    }
    lock(&link.circuits).insert(
        cid,
        CircRef {
            circ: circ.clone(),
            next_side: true,
        },
    );
    if link.closed.load(Ordering::Relaxed) {
        return Err("link closed".into());
    }
    lock(&link.queues)
        .push_control(c)
        .map_err(|e| e.to_string())?;
    link.wake.notify_one();
    Ok(())
}

/// A circuit id of the dialer's half that is free on the outbound `link` (ids come from one
/// atomic counter, so concurrent callers get distinct ones); `None` if a bounded search finds
/// none.
fn alloc_circ_id(link: &Link) -> Option<u32> {
    let circuits = lock(&link.circuits);
    for _ in 0..1024 {
        let n = link.next_circ.fetch_add(1, Ordering::Relaxed) & !cell::CIRC_ID_DIALER_BIT;
        let cid = cell::CIRC_ID_DIALER_BIT | n;
        if cell::is_dialer_circ_id(cid) && !circuits.contains_key(&cid) {
            return Some(cid);
        }
    }
    None
}

/// Returns an open outbound link to `id`, dialling it if needed (checks the peer's static key).
async fn get_link(
    node: &Arc<NodeInner>,
    id: NodeId,
    x25519: &[u8; 32],
    addr: SocketAddr,
) -> Result<Arc<Link>, String> {
    let mut m = node.out_links.lock().await;
    if let Some(l) = m.get(&id) {
        // reused only when it authenticated the key the EXTEND names (the id binds that key,
        // `Extend::identity_matches`, so this holds unless a link was stored wrongly)
        if !l.closed.load(Ordering::Relaxed) && l.peer_key.as_ref() == Some(x25519) {
            return Ok(l.clone());
        }
    }
    let (sock, cipher) = dial_link(
        &node.cfg.identity.x25519_secret_bytes(),
        x25519,
        addr,
        node.cfg.link_mark,
    )
    .await?;
    let link = new_link(node, Some((id, *x25519)), None);
    m.insert(id, link.clone());
    drop(m);
    let n2 = node.clone();
    let l2 = link.clone();
    node.spawn(async move { run_link(n2, sock, cipher, l2).await });
    Ok(link)
}

/// Connects to `addr`, the socket marked with `mark` (SO_MARK, needs CAP_NET_ADMIN) if given:
/// the system-wide tunnel marks warren's own links so that they bypass its policy routing.
async fn connect_marked(addr: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let Some(mark) = mark.filter(|m| *m != 0) else {
        return TcpStream::connect(addr).await;
    };
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    let m = mark as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a correctly sized c_int.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            &m as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sock.connect(addr).await
}

/// Dials a link and runs the initiator handshake.
pub(crate) async fn dial_link(
    local: &[u8; 32],
    remote: &[u8; 32],
    addr: SocketAddr,
    mark: Option<u32>,
) -> Result<(TcpStream, LinkCipher), String> {
    let mut sock = tokio::time::timeout(CONNECT_TIMEOUT, connect_marked(addr, mark))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let (init, m1) = LinkInitiator::start(local, remote).map_err(|e| e.to_string())?;
    let mut out = (m1.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&m1);
    let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        sock.write_all(&out)
            .await
            .map_err(|e| format!("link handshake to {addr}: {e}"))?;
        read_handshake_msg(&mut sock, |_, e| format!("link handshake from {addr}: {e}")).await
    })
    .await
    .map_err(|_| format!("link handshake with {addr} timed out"))??;
    let split = init
        .finish(&reply)
        .map_err(|e| format!("link handshake with {addr}: {e} (wrong key?)"))?;
    Ok((
        sock,
        handshake::link_cipher(split, true).map_err(|e| e.to_string())?,
    ))
}

async fn exit_stream(
    node: Arc<NodeInner>,
    circ: Arc<RelayCirc>,
    sid: u32,
    target: String,
    mut rx: mpsc::Receiver<Bytes>,
    window: Arc<Semaphore>,
) {
    let end = |why: u8, text: String| {
        let (circ, node) = (circ.clone(), node.clone());
        async move {
            debug!(stream = sid, "END {}: {text}", cell::reason::name(why));
            lock(&circ.st).streams.remove(&sid);
            let _ = send_back(&node, &circ, rcmd::END, sid, &cell::encode_end(why, &text)).await;
        }
    };
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(target.as_str())).await
        {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return end(
                    reason::RESOLVE_FAILED,
                    format!("cannot resolve {target}: {e}"),
                )
                .await
            }
            Err(_) => return end(reason::TIMEOUT, format!("resolving {target} timed out")).await,
        };
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| {
            match node.cfg.exit_policy.check_not_own(
                a,
                false,
                node.cfg.allow_private_exit,
                &node.own_ips,
            ) {
                Ok(()) => true,
                Err(r) => {
                    refusal = Some(r);
                    false
                }
            }
        })
        .collect();
    let Some(addr) = allowed.first().copied() else {
        let why = refusal
            .map(|r| r.to_string())
            .unwrap_or_else(|| format!("{target} resolved to no address"));
        return end(
            reason::EXIT_POLICY,
            format!("exit policy refuses {target}: {why}"),
        )
        .await;
    };
    let sock = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return end(
                reason::CONNECT_REFUSED,
                format!("connecting to {target}: {e}"),
            )
            .await
        }
        Err(_) => return end(reason::TIMEOUT, format!("connecting to {target} timed out")).await,
    };
    let _ = sock.set_nodelay(true);
    let mut ab = Vec::new();
    crate::descriptor::encode_addr(&addr, &mut ab);
    if send_back(&node, &circ, rcmd::CONNECTED, sid, &ab)
        .await
        .is_err()
    {
        return;
    }
    let (mut rd, mut wr) = sock.into_split();
    // client → target
    let (c2, n2) = (circ.clone(), node.clone());
    let writer = node.spawn(async move {
        let mut consumed = 0u32;
        while let Some(b) = rx.recv().await {
            n2.exit_pace(b.len()).await;
            if wr.write_all(&b).await.is_err() {
                break;
            }
            n2.stats
                .exit_out
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            consumed += 1;
            if consumed == STREAM_SENDME_INC {
                consumed = 0;
                if send_back(&n2, &c2, rcmd::SENDME, sid, &[]).await.is_err() {
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    lock(&circ.st).tasks.push(writer);
    // target → client
    let mut buf = vec![0u8; RELAY_DATA_MAX];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => return end(reason::DONE, "target closed".into()).await,
            Ok(n) => n,
            Err(e) => return end(reason::MISC, format!("read from {target}: {e}")).await,
        };
        let (Ok(p1), Ok(p2)) = (window.acquire().await, circ.bwd_window.acquire().await) else {
            return;
        };
        p1.forget();
        p2.forget();
        node.exit_pace(n).await;
        node.stats.exit_in.fetch_add(n as u64, Ordering::Relaxed);
        if send_back(&node, &circ, rcmd::DATA, sid, &buf[..n])
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn handle_datagram(node: &Arc<NodeInner>, circ: &Arc<RelayCirc>, sid: u32, data: &[u8]) {
    let refuse = |text: String| async move {
        let _ = send_back(
            node,
            circ,
            rcmd::END,
            sid,
            &cell::encode_end(reason::EXIT_POLICY, &text),
        )
        .await;
    };
    if node.cfg.roles & ROLE_EXIT == 0 {
        return refuse("this node is not an exit".into()).await;
    }
    let (dst, payload) = match cell::decode_datagram(data) {
        Ok(x) => x,
        Err(e) => return refuse(format!("bad datagram: {e}")).await,
    };
    if let Err(r) =
        node.cfg
            .exit_policy
            .check_not_own(&dst, true, node.cfg.allow_private_exit, &node.own_ips)
    {
        return refuse(format!("exit policy refuses {dst}: {r}")).await;
    }
    let existing = lock(&circ.st).udp.get(&sid).map(|(s, _)| s.clone());
    let sock = match existing {
        Some(s) => s,
        None => {
            let l = &node.cfg.limits;
            let slot = if lock(&circ.st).udp.len() >= l.max_udp_per_circuit {
                None
            } else {
                ExitSlot::take(&node.exit_counters, SlotKind::Socket, l.max_exit_sockets)
            };
            let Some(slot) = slot else {
                node.refused_circuit(Refusal::ExitBusy);
                let end = cell::encode_end(reason::RESOURCE_LIMIT, "too many UDP associations");
                let _ = send_back(node, circ, rcmd::END, sid, &end).await;
                return;
            };
            let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let s = match UdpSocket::bind(bind).await {
                Ok(s) => Arc::new(s),
                Err(e) => return refuse(format!("cannot bind UDP: {e}")).await,
            };
            let (s2, c2, n2) = (s.clone(), circ.clone(), node.clone());
            let h = node.spawn(async move {
                let _slot = slot; // held while this task holds the socket
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, from)) = s2.recv_from(&mut buf).await else {
                        break;
                    };
                    n2.exit_pace(n).await;
                    n2.stats.exit_in.fetch_add(n as u64, Ordering::Relaxed);
                    let Ok(d) = cell::encode_datagram(&from, &buf[..n]) else {
                        continue;
                    };
                    if send_back(&n2, &c2, rcmd::DATAGRAM, sid, &d).await.is_err() {
                        break;
                    }
                }
            });
            push_task(&circ.st, h.clone());
            lock(&circ.st).udp.insert(sid, (s.clone(), h));
            s
        }
    };
    node.exit_pace(payload.len()).await;
    node.stats
        .exit_out
        .fetch_add(payload.len() as u64, Ordering::Relaxed);
    if let Err(e) = sock.send_to(payload, dst).await {
        debug!("udp send to {dst}: {e}");
    }
}

/// Remembers a task of a circuit (aborted when it is destroyed), dropping the handles of tasks
/// that have finished so the list does not grow with every stream the circuit ever opened.
fn push_task(st: &Mutex<CircState>, h: AbortHandle) {
    let mut st = lock(st);
    if st.tasks.len() >= 64 {
        st.tasks.retain(|t| !t.is_finished());
    }
    st.tasks.push(h);
}

/// Encodes a DHT reply so that it fits one relay message, dropping records and then contacts from
/// the end (the requester asks again or elsewhere for more).
fn fit_dht_reply(txid: u64, mut resp: crate::dht::Response) -> Vec<u8> {
    loop {
        let b = crate::dht::Message::Response {
            txid,
            resp: resp.clone(),
        }
        .encode();
        if b.len() <= RELAY_DATA_MAX {
            return b;
        }
        match &mut resp {
            crate::dht::Response::Values { records, closer }
                if !records.is_empty() || !closer.is_empty() =>
            {
                if records.pop().is_none() {
                    closer.pop();
                }
            }
            crate::dht::Response::Nodes(cs) if !cs.is_empty() => {
                cs.pop();
            }
            _ => {
                return crate::dht::Message::Response {
                    txid,
                    resp: crate::dht::Response::Error {
                        code: crate::dht::message::code::REJECTED,
                        reason: "reply too large".into(),
                    },
                }
                .encode()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_with_roles_never_publishes_an_unspecified_address() {
        let any: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        let any6: SocketAddr = "[::]:7700".parse().unwrap();
        let public: SocketAddr = "203.0.113.7:7700".parse().unwrap();
        for unspecified in [any, any6] {
            let e = published_addr(None, unspecified, ROLE_RELAY).unwrap_err();
            assert!(e.to_string().contains("--advertise"), "{e}");
            assert!(published_addr(Some(unspecified), public, ROLE_RELAY).is_err());
            // a client-only node publishes nothing, so it may listen anywhere
            assert_eq!(published_addr(None, unspecified, 0).unwrap(), None);
        }
        assert_eq!(
            published_addr(Some(public), any, ROLE_RELAY).unwrap(),
            Some(public)
        );
        assert_eq!(published_addr(None, public, ROLE_RELAY).unwrap(), None);
        assert_eq!(
            renew_interval(Duration::from_secs(86400)),
            Duration::from_secs(21600)
        );
        assert_eq!(
            renew_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }
}

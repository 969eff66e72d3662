//! One torrent inside a session: the shared state (picker, metadata fetcher, peers, bans) behind
//! one mutex, the per-peer I/O tasks, and the background tasks (tick, disk flush, connections,
//! tracker). Protocol decisions are made by [`Inner::on_message`] with the lock held; the tasks
//! only move bytes and run blocking disk work on the blocking pool.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::bitfield::Bitfield;
use crate::connector::{BoxedStream, Connector, PeerAddr};
use crate::infohash::InfoHash;
use crate::metadata::{
    serve_piece, ExtHandshake, MetadataError, MetadataFetcher, MetadataMsg, OUR_UT_METADATA,
};
use crate::metainfo::Info;
use crate::peer::{PeerState, ProtocolError, QueueConfig, Rate};
use crate::picker::{BlockOutcome, PeerKey, Picker};
use crate::piecebuf::PieceBuf;
use crate::redial::Redial;
use crate::resume::{ResumeData, ResumeStore};
use crate::storage::{Layout, Storage, StorageOptions};
use crate::tracker::{self, Announce, Event};
use crate::wire::{piece_header, BlockRef, Handshake, Message, HANDSHAKE_LEN};

/// Lifecycle of a torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TorrentState {
    /// Hashing existing data.
    Checking,
    /// Waiting for the info dict from peers (magnet link).
    Metadata,
    Downloading,
    Seeding,
    Paused,
    Error(String),
}

/// A snapshot for the node and the dashboard.
#[derive(Clone, Debug)]
pub struct TorrentStatus {
    pub info_hash: InfoHash,
    pub name: String,
    /// Total size, once the metadata is known.
    pub total_bytes: Option<u64>,
    pub have_bytes: u64,
    pub progress: f64,
    /// Payload bytes per second.
    pub down_rate: f64,
    pub up_rate: f64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub peers: usize,
    pub state: TorrentState,
    pub eta: Option<Duration>,
    pub pieces_in_flight: usize,
    pub banned: usize,
}

/// Session-wide events.
#[derive(Clone, Debug)]
pub enum SessionEvent {
    Added(InfoHash),
    MetadataReceived(InfoHash),
    StateChanged(InfoHash, TorrentState),
    Completed(InfoHash),
    PeerBanned(InfoHash, PeerAddr, String),
    Removed(InfoHash),
}

/// Engine knobs.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Client name sent in the extension handshake (`v`).
    pub client_name: String,
    /// Port announced to trackers (where inbound streams arrive).
    pub listen_port: u16,
    pub max_peers_per_torrent: usize,
    /// Unchoke every interested peer up to this many.
    pub max_unchoked: usize,
    pub queue: QueueConfig,
    /// Where resume state lives (`sled`); None keeps nothing across restarts.
    pub resume_db: Option<PathBuf>,
    /// How often the verified-piece bitfield is made durable.
    pub flush_interval: Duration,
    /// fdatasync piece data before persisting its bit. Off (default): a bit is persisted only
    /// after its piece was written (in the page cache), which survives kill -9 and process
    /// crashes but not power loss. On: also survives power loss, at the cost of throttling
    /// downloads to the disk's write speed.
    pub sync_before_persist: bool,
    /// Write verified pieces with `O_DIRECT` (Linux; falls back to ordinary writes where the
    /// file system refuses it). On (default): no copy into the page cache, whose fresh pages
    /// cost more CPU than the rest of the download path on some VMs, and a download does not
    /// evict everything else from the cache. Off: ordinary buffered writes.
    pub direct_io: bool,
    /// Completed pieces checked and written at the same time (0: two per CPU, 4 to 16).
    pub disk_jobs: usize,
    pub max_message_len: usize,
    pub connect_timeout: Duration,
    /// Announce to the trackers named by torrents and magnets.
    pub use_trackers: bool,
    pub tracker_timeout: Duration,
    /// Cap on piece data sent to peers (seeding), bytes per second over all torrents of the
    /// session; 0 = no cap.
    pub upload_rate: u64,
    /// A cap shared with other sessions (one per transfer in a node): when set, it is used
    /// instead of a cap of the session's own made from `upload_rate`. See [`shared_upload_cap`].
    pub upload_cap: Option<UploadCap>,
    /// Mainline DHT (BEP 5) bootstrap nodes; empty = no DHT. Lookups go over the connector's
    /// datagrams (an exit's in anonymous mode); warren never answers or announces in the DHT.
    pub mainline_dht: Vec<PeerAddr>,
}

/// An upload cap that several sessions draw from.
pub type UploadCap = Arc<Mutex<crate::ratecap::RateCap>>;

/// One cap of `bytes_per_s` for several sessions (`None` for 0 = no cap).
pub fn shared_upload_cap(bytes_per_s: u64) -> Option<UploadCap> {
    (bytes_per_s > 0).then(|| {
        Arc::new(Mutex::new(crate::ratecap::RateCap::new(
            bytes_per_s,
            Instant::now(),
        )))
    })
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            client_name: format!("warren {}", env!("CARGO_PKG_VERSION")),
            listen_port: 0,
            max_peers_per_torrent: 50,
            max_unchoked: 50,
            queue: QueueConfig::default(),
            resume_db: None,
            flush_interval: Duration::from_millis(500),
            sync_before_persist: false,
            direct_io: true,
            disk_jobs: 0,
            max_message_len: crate::wire::DEFAULT_MAX_MESSAGE_LEN,
            connect_timeout: Duration::from_secs(10),
            use_trackers: true,
            tracker_timeout: Duration::from_secs(15),
            upload_rate: 0,
            upload_cap: None,
            mainline_dht: Vec::new(),
        }
    }
}

/// What the session shares with its torrents.
pub(crate) struct Shared {
    pub config: SessionConfig,
    pub connector: Arc<dyn Connector>,
    pub peer_id: [u8; 20],
    pub resume: Option<ResumeStore>,
    pub events: tokio::sync::broadcast::Sender<SessionEvent>,
    /// Bounds concurrent check+write jobs (pieces are hashed as their blocks arrive).
    pub disk: Arc<tokio::sync::Semaphore>,
    /// The seeding cap (`SessionConfig::upload_rate`), shared by all torrents.
    pub upload_cap: Option<UploadCap>,
}

pub(crate) struct Meta {
    pub raw_info: Arc<Vec<u8>>,
    pub info: Info,
    pub storage: Arc<Storage>,
}

struct PeerEntry {
    addr: PeerAddr,
    peer_id: [u8; 20],
    state: PeerState,
    out: BytesMut,
    wtx: mpsc::UnboundedSender<Bytes>,
    close: Arc<Notify>,
    unexpected: u32,
}

/// Work the peer task must do after a batch of messages (outside the lock).
pub(crate) enum Action {
    Hash {
        index: u32,
        data: PieceBuf,
        digest: [u8; 20],
        contributors: Vec<PeerKey>,
    },
    Serve(Vec<BlockRef>),
    MetadataDone(Vec<u8>),
}

pub(crate) struct Inner {
    pub name: String,
    pub dir: PathBuf,
    pub trackers: Vec<String>,
    pub meta: Option<Meta>,
    pub picker: Option<Picker>,
    fetcher: MetadataFetcher,
    pub state: TorrentState,
    peers: HashMap<PeerKey, PeerEntry>,
    candidates: VecDeque<PeerAddr>,
    connecting: HashSet<PeerAddr>,
    /// Peers to dial again after their connection ended.
    redial: Redial,
    banned: HashSet<IpAddr>,
    banned_addrs: HashSet<PeerAddr>,
    strikes: HashMap<PeerAddr, u32>,
    down: Rate,
    up: Rate,
    bits_dirty: bool,
    installing_metadata: bool,
    /// Pieces hashed and written but whose bit is not yet durable.
    pub unpersisted: usize,
}

/// A torrent.
pub struct Torrent {
    pub info_hash: [u8; 20],
    pub(crate) shared: Arc<Shared>,
    pub(crate) inner: Mutex<Inner>,
    state_tx: watch::Sender<TorrentState>,
    flush_notify: Notify,
    /// The last piece was verified: the flush loop persists it now, without batching or waiting.
    complete_notify: Notify,
    conn_notify: Notify,
    next_key: AtomicU64,
    run: Mutex<CancellationToken>,
}

fn ban_key(addr: &PeerAddr) -> Option<IpAddr> {
    match addr {
        PeerAddr::Ip(sa) => Some(sa.ip()),
        _ => None,
    }
}

impl Inner {
    fn new(info_hash: [u8; 20], name: String, dir: PathBuf, trackers: Vec<String>) -> Self {
        Inner {
            name,
            dir,
            trackers,
            meta: None,
            picker: None,
            fetcher: MetadataFetcher::new(info_hash),
            state: TorrentState::Metadata,
            peers: HashMap::new(),
            candidates: VecDeque::new(),
            connecting: HashSet::new(),
            redial: Redial::default(),
            banned: HashSet::new(),
            banned_addrs: HashSet::new(),
            strikes: HashMap::new(),
            down: Rate::default(),
            up: Rate::default(),
            bits_dirty: false,
            installing_metadata: false,
            unpersisted: 0,
        }
    }

    /// Endgame: block `r` arrived from `from`; withdraw the duplicate requests for it that
    /// are still outstanding at other peers (BEP 3 `cancel`).
    fn cancel_elsewhere(&mut self, from: PeerKey, r: &BlockRef) {
        for (k, p) in self.peers.iter_mut() {
            if *k != from && p.state.pending.remove(r) {
                Message::Cancel(*r).encode(&mut p.out);
            }
        }
    }

    fn send(&mut self, key: PeerKey, msg: &Message) {
        if let Some(p) = self.peers.get_mut(&key) {
            msg.encode(&mut p.out);
        }
    }

    fn flush_out(&mut self) {
        for p in self.peers.values_mut() {
            if !p.out.is_empty() {
                let b = p.out.split().freeze();
                let _ = p.wtx.send(b);
            }
        }
    }

    fn is_banned(&self, addr: &PeerAddr) -> bool {
        self.banned_addrs.contains(addr)
            || ban_key(addr).is_some_and(|ip| self.banned.contains(&ip))
    }

    /// Ban a peer for this torrent and drop it.
    fn ban(
        &mut self,
        key: PeerKey,
        why: &str,
        events: &tokio::sync::broadcast::Sender<SessionEvent>,
        ih: [u8; 20],
    ) {
        if let Some(p) = self.peers.get(&key) {
            // who the peer is stays out of the default log (debug has it)
            warn!(why, "banning a peer");
            debug!(peer = %p.addr, why, "banned peer");
            if let Some(ip) = ban_key(&p.addr) {
                self.banned.insert(ip);
            }
            self.banned_addrs.insert(p.addr.clone());
            p.close.notify_one();
            let _ = events.send(SessionEvent::PeerBanned(
                InfoHash(ih),
                p.addr.clone(),
                why.to_string(),
            ));
        }
    }

    /// Count a strike against peers that contributed to bad data; a sole contributor, or one
    /// with two strikes, is banned.
    fn strike(
        &mut self,
        keys: &[PeerKey],
        why: &str,
        events: &tokio::sync::broadcast::Sender<SessionEvent>,
        ih: [u8; 20],
    ) {
        let sole = keys.len() == 1;
        for k in keys {
            let Some(addr) = self.peers.get(k).map(|p| p.addr.clone()) else {
                continue;
            };
            let s = self.strikes.entry(addr).or_insert(0);
            *s += 1;
            if sole || *s >= 2 {
                self.ban(*k, why, events, ih);
            }
        }
    }

    fn unchoked_count(&self) -> usize {
        self.peers.values().filter(|p| !p.state.am_choking).count()
    }

    fn update_interest(&mut self, key: PeerKey) {
        let Some(picker) = &self.picker else { return };
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let Some(bf) = &p.state.have else { return };
        let want = picker.interesting(bf);
        if want != p.state.am_interested {
            let msg = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            if let Some(p) = self.peers.get_mut(&key) {
                p.state.am_interested = want;
            }
            self.send(key, &msg);
        }
    }

    fn fill_requests(&mut self, key: PeerKey) {
        let Some(picker) = self.picker.as_mut() else {
            return;
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let room = p.state.request_room();
        // Refill in batches: one pick per few received blocks, not one per block.
        let batch = (p.state.queue_target / 4).clamp(1, 32);
        if room == 0 || (room < batch && !p.state.pending.is_empty()) {
            return;
        }
        let Some(bf) = &p.state.have else { return };
        let mut reqs = Vec::with_capacity(room);
        picker.pick(bf, &p.state.pending, room, &mut reqs);
        for r in reqs {
            p.state.pending.insert(r);
            Message::Request(r).encode(&mut p.out);
        }
    }

    fn request_metadata(&mut self, key: PeerKey) {
        if self.meta.is_some() || self.installing_metadata {
            return;
        }
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        let Some(id) = p.state.ext.as_ref().and_then(|e| e.ut_metadata) else {
            return;
        };
        let already = p.state.metadata_requests;
        let mut sent = 0;
        while already + sent < 4 {
            let Some(piece) = self.fetcher.next_request(key) else {
                break;
            };
            let payload = Bytes::from(MetadataMsg::Request(piece).encode());
            self.send(key, &Message::Extended { id, payload });
            sent += 1;
        }
        if let Some(p) = self.peers.get_mut(&key) {
            p.state.metadata_requests += sent;
        }
    }

    /// Bring a peer up to date after the metadata became known.
    fn peer_metadata_ready(&mut self, key: PeerKey) -> Result<(), ProtocolError> {
        let Some(n) = self.picker.as_ref().map(|p| p.num_pieces()) else {
            return Ok(());
        };
        let Some(p) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        if p.state.have.is_some() {
            return Ok(());
        }
        let bf = p.state.resolve_bitfield(n)?.clone();
        if let Some(picker) = self.picker.as_mut() {
            picker.add_peer_bitfield(&bf);
        }
        self.update_interest(key);
        self.fill_requests(key);
        Ok(())
    }

    /// Handle one message from peer `key`.
    pub(crate) fn on_message(
        &mut self,
        key: PeerKey,
        msg: Message,
        actions: &mut Vec<Action>,
        max_unchoked: usize,
    ) -> Result<(), ProtocolError> {
        let num_pieces = self.picker.as_ref().map(|p| p.num_pieces());
        let Some(p) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        match msg {
            Message::KeepAlive
            | Message::Port(_)
            | Message::Suggest(_)
            | Message::AllowedFast(_) => {}
            Message::Unknown { .. } => {}
            Message::Choke => {
                p.state.peer_choking = true;
                let pending: Vec<BlockRef> = p.state.pending.drain().collect();
                if let Some(picker) = self.picker.as_mut() {
                    for r in &pending {
                        picker.cancel_request(r);
                    }
                }
            }
            Message::Unchoke => {
                p.state.peer_choking = false;
                self.fill_requests(key);
            }
            Message::Interested => {
                p.state.peer_interested = true;
                if p.state.am_choking && self.meta.is_some() {
                    let n = self.unchoked_count();
                    if n < max_unchoked {
                        if let Some(p) = self.peers.get_mut(&key) {
                            p.state.am_choking = false;
                        }
                        self.send(key, &Message::Unchoke);
                    }
                }
            }
            Message::NotInterested => p.state.peer_interested = false,
            Message::Have(i) => match num_pieces {
                Some(n) => {
                    if i as usize >= n {
                        return Err(ProtocolError::BadHave(i));
                    }
                    let newly = p.state.have.as_mut().is_some_and(|b| b.set(i as usize));
                    if newly {
                        if let Some(picker) = self.picker.as_mut() {
                            picker.add_peer_have(i);
                            if picker.wants(i) {
                                self.update_interest(key);
                                self.fill_requests(key);
                            }
                        }
                    }
                }
                None => {
                    if p.state.early_haves.len() > 1 << 20 {
                        return Err(ProtocolError::BadHave(i));
                    }
                    p.state.early_haves.push(i)
                }
            },
            Message::Bitfield(b) => {
                if let (Some(old), Some(n)) = (p.state.have.as_ref(), num_pieces) {
                    // A late or repeated bitfield (seen from aria2c after HAVE NONE): replace.
                    let new = Bitfield::from_bytes_lenient(&b, n).ok_or(
                        ProtocolError::BadBitfieldLen {
                            got: b.len(),
                            pieces: n,
                        },
                    )?;
                    if let Some(picker) = self.picker.as_mut() {
                        picker.remove_peer_bitfield(old);
                        picker.add_peer_bitfield(&new);
                    }
                    p.state.have = Some(new);
                    self.update_interest(key);
                    self.fill_requests(key);
                    return Ok(());
                }
                p.state.early_bitfield = Some(b);
                if num_pieces.is_some() {
                    self.peer_metadata_ready(key)?;
                }
            }
            Message::HaveAll => {
                p.state.early_have_all = true;
                if num_pieces.is_some() {
                    self.peer_metadata_ready(key)?;
                }
            }
            Message::HaveNone => {
                if num_pieces.is_some() {
                    self.peer_metadata_ready(key)?;
                }
            }
            Message::Request(r) => {
                let plen = self
                    .picker
                    .as_ref()
                    .filter(|pk| (r.index as usize) < pk.num_pieces())
                    .map(|pk| pk.piece_len(r.index));
                PeerState::check_request(&r, plen)?;
                let have = self
                    .picker
                    .as_ref()
                    .is_some_and(|pk| pk.have().get(r.index as usize));
                if !p.state.am_choking && have {
                    match actions.last_mut() {
                        Some(Action::Serve(v)) => v.push(r),
                        _ => actions.push(Action::Serve(vec![r])),
                    }
                }
            }
            Message::Cancel(_) => {}
            Message::Reject(r) => {
                if p.state.pending.remove(&r) {
                    if let Some(picker) = self.picker.as_mut() {
                        picker.cancel_request(&r);
                    }
                }
            }
            Message::Piece { index, begin, data } => {
                let r = BlockRef {
                    index,
                    begin,
                    length: data.len() as u32,
                };
                p.state.pending.remove(&r);
                p.state.down.add(data.len() as u64);
                p.state.last_block = Instant::now();
                self.down.add(data.len() as u64);
                let Some(picker) = self.picker.as_mut() else {
                    return Err(ProtocolError::BadBlock {
                        index,
                        begin,
                        len: data.len(),
                    });
                };
                let outcome = picker.on_block(key, index, begin, &data);
                let fresh = matches!(
                    outcome,
                    BlockOutcome::Stored | BlockOutcome::PieceComplete { .. }
                );
                let endgame = fresh && picker.in_endgame();
                match outcome {
                    BlockOutcome::Stored | BlockOutcome::Duplicate => {}
                    BlockOutcome::Unexpected => {
                        p.unexpected += 1;
                        if p.unexpected > 64 {
                            return Err(ProtocolError::BadBlock {
                                index,
                                begin,
                                len: data.len(),
                            });
                        }
                    }
                    BlockOutcome::PieceComplete {
                        index,
                        data,
                        digest,
                        contributors,
                    } => actions.push(Action::Hash {
                        index,
                        data,
                        digest,
                        contributors,
                    }),
                }
                if endgame {
                    self.cancel_elsewhere(key, &r);
                }
                self.fill_requests(key);
            }
            Message::Extended { id: 0, payload } => {
                let ext = ExtHandshake::decode(&payload)
                    .map_err(|e| ProtocolError::Extension(e.to_string()))?;
                let size = ext.metadata_size;
                p.state.ext = Some(ext);
                if self.meta.is_none() {
                    if let Some(s) = size {
                        self.fetcher.offer_size(s);
                    }
                    self.request_metadata(key);
                }
            }
            Message::Extended {
                id: OUR_UT_METADATA,
                payload,
            } => {
                let m = MetadataMsg::decode(&payload)
                    .map_err(|e| ProtocolError::Extension(e.to_string()))?;
                match m {
                    MetadataMsg::Request(piece) => {
                        let their = p.state.ext.as_ref().and_then(|e| e.ut_metadata);
                        if let Some(id) = their {
                            let reply = match &self.meta {
                                Some(meta) => serve_piece(&meta.raw_info, piece),
                                None => MetadataMsg::Reject(piece).encode(),
                            };
                            self.send(
                                key,
                                &Message::Extended {
                                    id,
                                    payload: Bytes::from(reply),
                                },
                            );
                        }
                    }
                    MetadataMsg::Reject(_) => {
                        p.state.metadata_requests = p.state.metadata_requests.saturating_sub(1);
                        self.fetcher.peer_gone(key);
                    }
                    MetadataMsg::Data {
                        piece,
                        total_size,
                        data,
                    } => {
                        p.state.metadata_requests = p.state.metadata_requests.saturating_sub(1);
                        if self.meta.is_some() || self.installing_metadata {
                            return Ok(());
                        }
                        match self.fetcher.on_data(key, piece, total_size, data) {
                            Ok(Some(raw)) => {
                                self.installing_metadata = true;
                                actions.push(Action::MetadataDone(raw));
                            }
                            Ok(None) => self.request_metadata(key),
                            Err(MetadataError::HashMismatch(senders)) => {
                                return Err(self.metadata_mismatch(key, senders));
                            }
                            Err(e) => return Err(ProtocolError::Extension(e.to_string())),
                        }
                    }
                }
            }
            Message::Extended { .. } => {}
        }
        Ok(())
    }

    /// Metadata failed its hash: strike the senders other than `key` here; `key` itself gets
    /// the returned error (and is banned by the caller) if it was the only sender.
    fn metadata_mismatch(&mut self, key: PeerKey, senders: Vec<PeerKey>) -> ProtocolError {
        let others: Vec<PeerKey> = senders.iter().copied().filter(|k| *k != key).collect();
        for k in others {
            if let Some(p) = self.peers.get(&k) {
                let s = self.strikes.entry(p.addr.clone()).or_insert(0);
                *s += 1;
                p.close.notify_one();
            }
        }
        ProtocolError::BogusMetadata
    }
}

impl Torrent {
    pub(crate) fn new(
        info_hash: [u8; 20],
        shared: Arc<Shared>,
        name: String,
        dir: PathBuf,
        trackers: Vec<String>,
    ) -> Arc<Self> {
        let (state_tx, _) = watch::channel(TorrentState::Metadata);
        Arc::new(Torrent {
            info_hash,
            shared,
            inner: Mutex::new(Inner::new(info_hash, name, dir, trackers)),
            state_tx,
            flush_notify: Notify::new(),
            complete_notify: Notify::new(),
            conn_notify: Notify::new(),
            next_key: AtomicU64::new(1),
            run: Mutex::new(CancellationToken::new()),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; keep serving with the data as it is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state_watch(&self) -> watch::Receiver<TorrentState> {
        self.state_tx.subscribe()
    }

    fn set_state(&self, g: &mut Inner, s: TorrentState) {
        if g.state != s {
            // no infohash or name at the default level: a log is not a place for what one
            // downloads (issue "Hostile relays (2/2)")
            info!(state = ?s, "transfer state");
            debug!(torrent = %hex::encode(self.info_hash), state = ?s, "state");
            g.state = s.clone();
            self.state_tx.send_replace(s.clone());
            let _ = self.shared.events.send(SessionEvent::StateChanged(
                InfoHash(self.info_hash),
                s.clone(),
            ));
            if s == TorrentState::Seeding {
                let _ = self
                    .shared
                    .events
                    .send(SessionEvent::Completed(InfoHash(self.info_hash)));
            }
        }
    }

    pub(crate) fn run_token(&self) -> CancellationToken {
        self.run.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn status(&self) -> TorrentStatus {
        let g = self.lock();
        let total = g.meta.as_ref().map(|m| m.info.total_length);
        let have = g.picker.as_ref().map(|p| p.have_bytes()).unwrap_or(0);
        let progress = match total {
            Some(0) => 1.0,
            Some(t) => have as f64 / t as f64,
            None => 0.0,
        };
        let down_rate = g.down.bytes_per_sec();
        let eta = match total {
            Some(t) if down_rate > 1.0 && have < t => {
                Some(Duration::from_secs_f64((t - have) as f64 / down_rate))
            }
            Some(t) if have >= t => Some(Duration::ZERO),
            _ => None,
        };
        TorrentStatus {
            info_hash: InfoHash(self.info_hash),
            name: g.name.clone(),
            total_bytes: total,
            have_bytes: have,
            progress,
            down_rate,
            up_rate: g.up.bytes_per_sec(),
            downloaded: g.down.total(),
            uploaded: g.up.total(),
            peers: g.peers.len(),
            state: g.state.clone(),
            eta,
            pieces_in_flight: g.picker.as_ref().map(|p| p.pieces_in_flight()).unwrap_or(0),
            banned: g.banned_addrs.len(),
        }
    }

    /// Queue peer addresses to connect to.
    pub fn add_peers(&self, addrs: impl IntoIterator<Item = PeerAddr>) {
        {
            let mut g = self.lock();
            for a in addrs {
                if !g.is_banned(&a) && !g.candidates.contains(&a) {
                    g.candidates.push_back(a);
                }
            }
        }
        self.conn_notify.notify_one();
    }

    /// Install metadata (from a .torrent, resume data or peers), open storage, load or check
    /// the bitfield, then start downloading or seeding.
    pub(crate) async fn install_metadata(
        self: &Arc<Self>,
        raw_info: Vec<u8>,
        info: Info,
        resume_bits: Option<Vec<u8>>,
        check_existing: bool,
    ) -> Result<(), String> {
        let dir = self.lock().dir.clone();
        let layout = Layout::from_info(&info);
        let opts = StorageOptions {
            direct_io: self.shared.config.direct_io,
        };
        let n = info.num_pieces();
        {
            let mut g = self.lock();
            if g.name.is_empty() || g.meta.is_none() {
                g.name = info.name.clone();
            }
            self.set_state(&mut g, TorrentState::Checking);
        }
        let checked =
            tokio::task::spawn_blocking(move || -> Result<(Storage, Bitfield), String> {
                let existed = layout
                    .files
                    .iter()
                    .any(|f| std::fs::metadata(dir.join(&f.path)).is_ok_and(|m| m.len() > 0));
                let storage = Storage::open_with(&dir, layout, opts).map_err(|e| e.to_string())?;
                if let Some(bits) = resume_bits.and_then(|b| Bitfield::from_bytes(&b, n)) {
                    return Ok((storage, bits));
                }
                let mut bf = Bitfield::new(n);
                if existed && check_existing {
                    let mut scratch = Vec::new();
                    for i in 0..n as u32 {
                        if storage.check_piece(i, &mut scratch).unwrap_or(false) {
                            bf.set(i as usize);
                        }
                    }
                }
                Ok((storage, bf))
            })
            .await
            .map_err(|e| format!("checking task failed: {e}"))?;
        let (storage, bits) = match checked {
            Ok(x) => x,
            Err(e) => {
                let mut g = self.lock();
                g.installing_metadata = false;
                self.set_state(&mut g, TorrentState::Error(e.clone()));
                return Err(e);
            }
        };
        let raw_info = Arc::new(raw_info);
        if let Some(r) = &self.shared.resume {
            let g = self.lock();
            let rd = ResumeData {
                info_hash: self.info_hash,
                raw_info: Some(raw_info.to_vec()),
                dir: g.dir.clone(),
                trackers: g.trackers.clone(),
                paused: g.state == TorrentState::Paused,
                bitfield: None,
                name: Some(info.name.clone()),
            };
            drop(g);
            let _ = r.save_torrent(&rd);
            let _ = r.save_bitfield(&self.info_hash, bits.as_bytes());
            let _ = r.flush();
        }
        let mut g = self.lock();
        let complete = bits.all();
        g.picker = Some(Picker::new(info.piece_length, info.total_length, bits));
        g.meta = Some(Meta {
            raw_info,
            info,
            storage: Arc::new(storage),
        });
        g.installing_metadata = false;
        let _ = self
            .shared
            .events
            .send(SessionEvent::MetadataReceived(InfoHash(self.info_hash)));
        self.set_state(
            &mut g,
            if complete {
                TorrentState::Seeding
            } else {
                TorrentState::Downloading
            },
        );
        let keys: Vec<PeerKey> = g.peers.keys().copied().collect();
        for k in keys {
            if let Err(e) = g.peer_metadata_ready(k) {
                let ev = self.shared.events.clone();
                g.ban(k, &e.to_string(), &ev, self.info_hash);
            }
        }
        g.flush_out();
        Ok(())
    }

    /// Result of hashing (and writing) a completed piece.
    fn piece_checked(self: &Arc<Self>, index: u32, ok: bool, contributors: Vec<PeerKey>) {
        let mut g = self.lock();
        let Some(picker) = g.picker.as_mut() else {
            return;
        };
        if ok {
            picker.piece_verified(index);
            let complete = picker.is_complete();
            g.bits_dirty = true;
            g.unpersisted += 1;
            let keys: Vec<PeerKey> = g.peers.keys().copied().collect();
            for k in keys {
                g.send(k, &Message::Have(index));
                if complete {
                    g.update_interest(k);
                } else {
                    // the disk caught up: requests may have been held back
                    g.fill_requests(k);
                }
            }
            // Seeding is announced by the flush loop once this last bitfield is on disk: a
            // transfer reported complete is complete after a kill -9 too
            g.flush_out();
            drop(g);
            self.flush_notify.notify_one();
            if complete {
                self.complete_notify.notify_one();
            }
        } else {
            debug!(index, "piece failed verification");
            picker.piece_failed(index);
            let ev = self.shared.events.clone();
            g.strike(
                &contributors,
                "sent data that failed SHA-1",
                &ev,
                self.info_hash,
            );
            let keys: Vec<PeerKey> = g.peers.keys().copied().collect();
            for k in keys {
                g.fill_requests(k);
            }
            g.flush_out();
        }
    }

    /// Run the actions a batch of messages produced.
    fn run_actions(self: &Arc<Self>, actions: Vec<Action>, wtx: &mpsc::UnboundedSender<Bytes>) {
        for a in actions {
            match a {
                Action::Hash {
                    index,
                    data,
                    digest,
                    contributors,
                } => {
                    let Some(storage) = self.lock().meta.as_ref().map(|m| m.storage.clone()) else {
                        continue;
                    };
                    let t = self.clone();
                    tokio::spawn(async move {
                        let _permit = t.shared.disk.clone().acquire_owned().await;
                        let res = tokio::task::spawn_blocking(move || {
                            let r = if storage.verify_digest(index, data.len(), &digest) {
                                storage.write_piece(index, &data).map(|_| true)
                            } else {
                                Ok(false)
                            };
                            (r, data)
                        })
                        .await;
                        let res = res.map(|(r, data)| {
                            if let Some(p) = t.lock().picker.as_mut() {
                                p.recycle(data);
                            }
                            r
                        });
                        match res {
                            Ok(Ok(ok)) => t.piece_checked(index, ok, contributors),
                            Ok(Err(e)) => {
                                let mut g = t.lock();
                                t.set_state(&mut g, TorrentState::Error(e.to_string()));
                            }
                            Err(e) => warn!("hash task failed: {e}"),
                        }
                    });
                }
                Action::Serve(reqs) => {
                    let Some(storage) = self.lock().meta.as_ref().map(|m| m.storage.clone()) else {
                        continue;
                    };
                    let wtx = wtx.clone();
                    let t = self.clone();
                    tokio::spawn(async move {
                        let res = tokio::task::spawn_blocking(move || {
                            let total: usize = reqs.iter().map(|r| 13 + r.length as usize).sum();
                            let mut buf = BytesMut::with_capacity(total);
                            let mut payload = 0u64;
                            for r in &reqs {
                                let start = buf.len();
                                buf.extend_from_slice(&piece_header(
                                    r.index,
                                    r.begin,
                                    r.length as usize,
                                ));
                                buf.resize(start + 13 + r.length as usize, 0);
                                if storage
                                    .read(r.index, r.begin, &mut buf[start + 13..])
                                    .is_err()
                                {
                                    buf.truncate(start);
                                } else {
                                    payload += r.length as u64;
                                }
                            }
                            (buf.freeze(), payload)
                        })
                        .await;
                        if let Ok((frames, payload)) = res {
                            if wtx.is_closed() {
                                return;
                            }
                            if let Some(cap) = &t.shared.upload_cap {
                                let wait = cap
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .take(frames.len(), std::time::Instant::now());
                                if !wait.is_zero() {
                                    tokio::time::sleep(wait).await;
                                }
                                if wtx.is_closed() {
                                    cap.lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .refund(frames.len());
                                    return;
                                }
                            }
                            t.lock().up.add(payload);
                            let _ = wtx.send(frames);
                        }
                    });
                }
                Action::MetadataDone(raw) => {
                    let t = self.clone();
                    tokio::spawn(async move {
                        match Info::from_bytes_verified(&raw, &InfoHash(t.info_hash)) {
                            Ok(info) => {
                                info!("metadata received");
                                debug!(name = %info.name, "metadata received");
                                let _ = t.install_metadata(raw, info, None, true).await;
                            }
                            Err(e) => {
                                // It hashes to the infohash yet is unusable (e.g. unsafe
                                // paths): the torrent itself is bad.
                                let mut g = t.lock();
                                g.installing_metadata = false;
                                t.set_state(
                                    &mut g,
                                    TorrentState::Error(format!("metadata rejected: {e}")),
                                );
                            }
                        }
                    });
                }
            }
        }
    }

    /// Start (or restart) the background tasks.
    pub(crate) fn start(self: &Arc<Self>) {
        let token = CancellationToken::new();
        *self.run.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        tokio::spawn(self.clone().tick_loop(token.clone()));
        tokio::spawn(self.clone().flush_loop(token.clone()));
        tokio::spawn(self.clone().connect_loop(token.clone()));
        if self.shared.config.use_trackers {
            let trackers = self.lock().trackers.clone();
            for url in trackers {
                if url.starts_with("http://") || url.starts_with("udp://") {
                    tokio::spawn(self.clone().tracker_loop(url, token.clone()));
                } else {
                    debug!(%url, "tracker scheme not supported; skipped");
                }
            }
        }
        if !self.shared.config.mainline_dht.is_empty() {
            tokio::spawn(self.clone().mainline_loop(token.clone()));
        }
    }

    /// Looks the torrent up in the mainline DHT until it is complete: at once, then every 30 s
    /// while there are no peers, every 5 minutes otherwise. Private torrents (BEP 27) never are.
    async fn mainline_loop(self: Arc<Self>, token: CancellationToken) {
        loop {
            let (private, seeding, peers) = {
                let g = self.lock();
                (
                    g.meta.as_ref().is_some_and(|m| m.info.private),
                    g.state == TorrentState::Seeding,
                    g.peers.len(),
                )
            };
            if private || seeding {
                return;
            }
            let wait = match crate::mainline::get_peers(
                self.shared.connector.as_ref(),
                &self.shared.config.mainline_dht,
                self.info_hash,
                Duration::from_secs(20),
            )
            .await
            {
                Ok(found) => {
                    debug!(peers = found.len(), "mainline DHT lookup done");
                    let n = found.len();
                    self.add_peers(found.into_iter().map(PeerAddr::Ip));
                    if n == 0 && peers == 0 {
                        Duration::from_secs(30)
                    } else {
                        Duration::from_secs(300)
                    }
                }
                Err(e) => {
                    warn!("mainline DHT lookup failed: {e}");
                    Duration::from_secs(60)
                }
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Stop background tasks and peers (pause / remove).
    pub(crate) fn stop(self: &Arc<Self>) {
        self.run_token().cancel();
        let mut g = self.lock();
        for p in g.peers.values() {
            p.close.notify_one();
        }
        g.candidates.clear();
        g.bits_dirty = true;
        drop(g);
        self.persist_now();
    }

    pub(crate) fn pause(self: &Arc<Self>) {
        self.stop();
        let mut g = self.lock();
        self.set_state(&mut g, TorrentState::Paused);
        if let Some(r) = &self.shared.resume {
            let _ = r.set_paused(&self.info_hash, true);
        }
    }

    pub(crate) fn resume(self: &Arc<Self>) {
        {
            let mut g = self.lock();
            if g.state != TorrentState::Paused {
                return;
            }
            let s = match &g.picker {
                None => TorrentState::Metadata,
                Some(p) if p.is_complete() => TorrentState::Seeding,
                Some(_) => TorrentState::Downloading,
            };
            self.set_state(&mut g, s);
            if let Some(r) = &self.shared.resume {
                let _ = r.set_paused(&self.info_hash, false);
            }
        }
        self.start();
    }

    /// Synchronously sync data and persist the bitfield (used on stop).
    fn persist_now(self: &Arc<Self>) {
        let (storage, bits) = {
            let mut g = self.lock();
            if !g.bits_dirty {
                return;
            }
            g.bits_dirty = false;
            let Some(m) = &g.meta else { return };
            let Some(p) = &g.picker else { return };
            (m.storage.clone(), p.have().as_bytes().to_vec())
        };
        let ok = !self.shared.config.sync_before_persist || storage.sync().is_ok();
        if ok {
            if let Some(r) = &self.shared.resume {
                let _ = r.save_bitfield(&self.info_hash, &bits);
                let _ = r.flush();
            }
        }
    }

    /// Downloading with every piece verified becomes Seeding; returns whether it is complete.
    fn seeding_if_complete(&self, g: &mut Inner) -> bool {
        let complete = g.picker.as_ref().is_some_and(|p| p.is_complete());
        if complete && g.state == TorrentState::Downloading {
            self.set_state(g, TorrentState::Seeding);
        }
        complete
    }

    async fn flush_loop(self: Arc<Self>, token: CancellationToken) {
        let interval = self.shared.config.flush_interval;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.flush_notify.notified() => {}
            }
            // Batch: let more pieces complete before paying for an fsync (not after the last one).
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(interval.min(Duration::from_millis(50))) => {}
                _ = self.complete_notify.notified() => {}
            }
            let job = {
                let mut g = self.lock();
                if !g.bits_dirty {
                    self.seeding_if_complete(&mut g);
                    continue;
                }
                g.bits_dirty = false;
                let done = g.unpersisted;
                let (Some(m), Some(p)) = (&g.meta, &g.picker) else {
                    continue;
                };
                (m.storage.clone(), p.have().as_bytes().to_vec(), done)
            };
            let (storage, bits, done) = job;
            let shared = self.shared.clone();
            let ih = self.info_hash;
            let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
                if shared.config.sync_before_persist {
                    storage.sync().map_err(|e| e.to_string())?;
                }
                if let Some(r) = &shared.resume {
                    r.save_bitfield(&ih, &bits).map_err(|e| e.to_string())?;
                    r.flush().map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await;
            match res {
                Ok(Ok(())) => {
                    let mut g = self.lock();
                    g.unpersisted = g.unpersisted.saturating_sub(done);
                }
                Ok(Err(e)) => {
                    warn!("persisting resume state failed: {e}");
                    self.lock().bits_dirty = true;
                }
                Err(e) => warn!("flush task failed: {e}"),
            }
            // complete (and persisted, unless persisting failed: then the data is still complete
            // and verified, and the failure was logged): say so now
            let complete = {
                let mut g = self.lock();
                self.seeding_if_complete(&mut g)
            };
            if !complete {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                    // the last piece came during the pause: persist it and say Seeding now
                    _ = self.complete_notify.notified() => {}
                }
            }
            if self.lock().bits_dirty {
                self.flush_notify.notify_one();
            }
        }
    }

    async fn tick_loop(self: Arc<Self>, token: CancellationToken) {
        let mut iv = tokio::time::interval(Duration::from_secs(1));
        let mut last = Instant::now();
        let max_unchoked = self.shared.config.max_unchoked;
        let q = self.shared.config.queue;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = iv.tick() => {}
            }
            let now = Instant::now();
            let dt = now - last;
            last = now;
            let mut g = self.lock();
            g.down.tick(dt);
            g.up.tick(dt);
            let has_meta = g.meta.is_some();
            let mut unchoked = g.unchoked_count();
            let keys: Vec<PeerKey> = g.peers.keys().copied().collect();
            for k in keys {
                let Some(p) = g.peers.get_mut(&k) else {
                    continue;
                };
                p.state.down.tick(dt);
                p.state.up.tick(dt);
                p.state.update_queue(&q);
                if !p.state.pending.is_empty()
                    && now.duration_since(p.state.last_block) > Duration::from_secs(30)
                {
                    debug!(peer = %p.addr, "peer snubbed us for 30 s; dropping");
                    p.close.notify_one();
                    continue;
                }
                if has_meta
                    && p.state.peer_interested
                    && p.state.am_choking
                    && unchoked < max_unchoked
                {
                    p.state.am_choking = false;
                    unchoked += 1;
                    g.send(k, &Message::Unchoke);
                }
                g.fill_requests(k);
                if g.meta.is_none() {
                    g.request_metadata(k);
                }
            }
            g.flush_out();
        }
    }

    async fn connect_loop(self: Arc<Self>, token: CancellationToken) {
        loop {
            let next_redial = {
                let mut g = self.lock();
                if matches!(g.state, TorrentState::Downloading | TorrentState::Metadata) {
                    for a in g.redial.due(Instant::now()) {
                        if !g.candidates.contains(&a) {
                            g.candidates.push_back(a);
                        }
                    }
                    g.redial.next_due()
                } else {
                    g.redial.clear();
                    None
                }
            };
            loop {
                let next = {
                    let mut g = self.lock();
                    let active = g.peers.len() + g.connecting.len();
                    if active >= self.shared.config.max_peers_per_torrent
                        || matches!(g.state, TorrentState::Paused | TorrentState::Error(_))
                    {
                        None
                    } else {
                        let mut found = None;
                        while let Some(a) = g.candidates.pop_front() {
                            let connected = g.peers.values().any(|p| p.addr == a);
                            if !connected && !g.connecting.contains(&a) && !g.is_banned(&a) {
                                found = Some(a);
                                break;
                            }
                        }
                        if let Some(a) = &found {
                            g.connecting.insert(a.clone());
                        }
                        found
                    }
                };
                let Some(addr) = next else { break };
                let t = self.clone();
                let tok = token.clone();
                tokio::spawn(async move {
                    let conn = tokio::time::timeout(
                        t.shared.config.connect_timeout,
                        t.shared.connector.connect(&addr),
                    )
                    .await;
                    let got = match conn {
                        Ok(Ok(stream)) => t.clone().run_peer(stream, addr.clone(), None, tok).await,
                        Ok(Err(e)) => {
                            debug!(%addr, "connect failed: {e}");
                            0
                        }
                        Err(_) => {
                            debug!(%addr, "connect timed out");
                            0
                        }
                    };
                    let mut g = t.lock();
                    g.connecting.remove(&addr);
                    if g.is_banned(&addr) {
                        g.redial.forget(&addr);
                    } else if matches!(g.state, TorrentState::Downloading | TorrentState::Metadata)
                    {
                        // keep the peer: dial it again after a pause (circuits break, peers
                        // restart; the next announce or lookup may be far away)
                        g.redial.lost(&addr, got > 0, Instant::now());
                    }
                    drop(g);
                    t.conn_notify.notify_one();
                });
            }
            let wait = next_redial
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(2))
                .clamp(Duration::from_millis(50), Duration::from_secs(2));
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.conn_notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn tracker_loop(self: Arc<Self>, url: String, token: CancellationToken) {
        let mut event = Event::Started;
        let mut completed_sent = false;
        loop {
            let (left, downloaded, uploaded, peers, seeding) = {
                let g = self.lock();
                let total = g.meta.as_ref().map(|m| m.info.total_length);
                let have = g.picker.as_ref().map(|p| p.have_bytes()).unwrap_or(0);
                (
                    total.map(|t| t - have.min(t)).unwrap_or(1 << 30),
                    g.down.total(),
                    g.up.total(),
                    g.peers.len(),
                    g.state == TorrentState::Seeding,
                )
            };
            if seeding && !completed_sent && event != Event::Started {
                event = Event::Completed;
            }
            if seeding {
                completed_sent = true;
            }
            let a = Announce {
                info_hash: self.info_hash,
                peer_id: self.shared.peer_id,
                port: self.shared.config.listen_port,
                uploaded,
                downloaded,
                left,
                event,
                numwant: 50,
            };
            let res = tracker::announce(
                self.shared.connector.as_ref(),
                &url,
                &a,
                self.shared.config.tracker_timeout,
            )
            .await;
            let mut wait = Duration::from_secs(30);
            match res {
                Ok(r) => {
                    debug!(%url, peers = r.peers.len(), "announce ok");
                    event = Event::None;
                    self.add_peers(r.peers.into_iter().map(PeerAddr::Ip));
                    wait = Duration::from_secs(r.interval as u64);
                    if peers == 0 && !seeding {
                        wait = wait.min(Duration::from_secs(5));
                    }
                }
                Err(e) => debug!(%url, "announce failed: {e}"),
            }
            tokio::select! {
                _ = token.cancelled() => {
                    // best effort "stopped"
                    let a = Announce { event: Event::Stopped, ..a };
                    let _ = tokio::time::timeout(Duration::from_secs(2), tracker::announce(
                        self.shared.connector.as_ref(), &url, &a, Duration::from_secs(2))).await;
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = self.state_changed_to_seeding(completed_sent) => {}
            }
        }
    }

    async fn state_changed_to_seeding(&self, already: bool) {
        if already {
            std::future::pending::<()>().await;
        }
        let mut rx = self.state_watch();
        let _ = rx.wait_for(|s| *s == TorrentState::Seeding).await;
    }

    /// Drive one peer connection. `inbound` carries the reserved bytes of a handshake whose
    /// first 48 bytes the session already read.
    pub(crate) async fn run_peer(
        self: Arc<Self>,
        mut stream: BoxedStream,
        addr: PeerAddr,
        inbound: Option<[u8; 8]>,
        token: CancellationToken,
    ) -> u64 {
        if self.lock().is_banned(&addr) {
            return 0;
        }
        let ours = Handshake::new(self.info_hash, self.shared.peer_id);
        let hs = async {
            let theirs = match inbound {
                Some(reserved) => {
                    stream.write_all(&ours.encode()).await?;
                    // streams that buffer (Tor's) send nothing until flushed
                    stream.flush().await?;
                    let mut id = [0u8; 20];
                    stream.read_exact(&mut id).await?;
                    Handshake {
                        reserved,
                        info_hash: self.info_hash,
                        peer_id: id,
                    }
                }
                None => {
                    stream.write_all(&ours.encode()).await?;
                    // streams that buffer (Tor's) send nothing until flushed
                    stream.flush().await?;
                    let mut buf = [0u8; HANDSHAKE_LEN];
                    stream.read_exact(&mut buf).await?;
                    Handshake::decode(&buf)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                }
            };
            Ok::<_, std::io::Error>(theirs)
        };
        let theirs = match tokio::time::timeout(Duration::from_secs(15), hs).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                debug!(%addr, "handshake failed: {e}");
                return 0;
            }
            Err(_) => {
                debug!(%addr, "handshake timed out");
                return 0;
            }
        };
        if theirs.info_hash != self.info_hash || theirs.peer_id == self.shared.peer_id {
            return 0;
        }
        let (rd, wr) = tokio::io::split(stream);
        let (wtx, wrx) = mpsc::unbounded_channel::<Bytes>();
        let close = Arc::new(Notify::new());
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        {
            let mut g = self.lock();
            if g.peers.len() >= self.shared.config.max_peers_per_torrent {
                debug!(%addr, "peer limit reached; dropping");
                return 0;
            }
            if g.peers.values().any(|p| p.peer_id == theirs.peer_id) {
                debug!(%addr, "already connected to this peer id; dropping");
                return 0;
            }
            if g.is_banned(&addr) {
                return 0;
            }
            let mut state = PeerState::new(&self.shared.config.queue, Instant::now());
            if g.picker.is_some() {
                state.early_bitfield = None;
            }
            g.peers.insert(
                key,
                PeerEntry {
                    addr: addr.clone(),
                    peer_id: theirs.peer_id,
                    state,
                    out: BytesMut::new(),
                    wtx: wtx.clone(),
                    close: close.clone(),
                    unexpected: 0,
                },
            );
            if theirs.supports_extensions() {
                let size = g.meta.as_ref().map(|m| m.raw_info.len());
                let payload = ExtHandshake::encode(
                    size,
                    &self.shared.config.client_name,
                    self.shared.config.queue.max as u32,
                );
                g.send(
                    key,
                    &Message::Extended {
                        id: 0,
                        payload: Bytes::from(payload),
                    },
                );
            }
            if let Some(p) = &g.picker {
                if p.have().count_ones() > 0 {
                    let bf = Bytes::copy_from_slice(p.have().as_bytes());
                    g.send(key, &Message::Bitfield(bf));
                }
            }
            g.flush_out();
        }
        debug!(%addr, "peer connected");
        let writer = tokio::spawn(write_loop(wr, wrx, close.clone()));
        let reason = self.read_loop(rd, key, &wtx, &close, &token).await;
        writer.abort();
        // cleanup
        let mut g = self.lock();
        if let Some(e) = &reason {
            let ev = self.shared.events.clone();
            g.ban(key, &e.to_string(), &ev, self.info_hash);
        }
        let mut got = 0;
        if let Some(p) = g.peers.remove(&key) {
            got = p.state.down.total();
            debug!(peer = %p.addr, "peer disconnected");
            if let Some(picker) = g.picker.as_mut() {
                if let Some(bf) = &p.state.have {
                    picker.remove_peer_bitfield(bf);
                }
                for r in &p.state.pending {
                    picker.cancel_request(r);
                }
            }
            g.fetcher.peer_gone(key);
            // give others the blocks this peer had
            let keys: Vec<PeerKey> = g.peers.keys().copied().collect();
            for k in keys {
                g.fill_requests(k);
            }
            g.flush_out();
        }
        drop(g);
        self.conn_notify.notify_one();
        got
    }

    /// Returns Some(error) if the peer violated the protocol (it is then banned).
    async fn read_loop(
        self: &Arc<Self>,
        mut rd: tokio::io::ReadHalf<BoxedStream>,
        key: PeerKey,
        wtx: &mpsc::UnboundedSender<Bytes>,
        close: &Notify,
        token: &CancellationToken,
    ) -> Option<ProtocolError> {
        let max_len = self.shared.config.max_message_len;
        let max_unchoked = self.shared.config.max_unchoked;
        let mut buf = BytesMut::with_capacity(256 * 1024);
        loop {
            if buf.capacity() - buf.len() < 32 * 1024 {
                buf.reserve(256 * 1024);
            }
            let n = tokio::select! {
                _ = close.notified() => return None,
                _ = token.cancelled() => return None,
                r = tokio::time::timeout(Duration::from_secs(180), rd.read_buf(&mut buf)) => match r {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) | Err(_) => return None,
                },
            };
            if n == 0 {
                return None;
            }
            let mut actions = Vec::new();
            let mut err = None;
            {
                let mut g = self.lock();
                loop {
                    match Message::decode(&mut buf, max_len) {
                        Ok(Some(m)) => {
                            if let Err(e) = g.on_message(key, m, &mut actions, max_unchoked) {
                                err = Some(e);
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            err = Some(e.into());
                            break;
                        }
                    }
                }
                g.flush_out();
            }
            self.run_actions(actions, wtx);
            if err.is_some() {
                return err;
            }
        }
    }
}

async fn write_loop(
    wr: tokio::io::WriteHalf<BoxedStream>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    close: Arc<Notify>,
) {
    let mut w = BufWriter::with_capacity(128 * 1024, wr);
    let mut idle = tokio::time::interval(Duration::from_secs(60));
    idle.tick().await;
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = idle.tick() => Some(Message::KeepAlive.to_bytes()),
        };
        let Some(b) = first else { break };
        if w.write_all(&b).await.is_err() {
            break;
        }
        let mut failed = false;
        while let Ok(b) = rx.try_recv() {
            if w.write_all(&b).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed || w.flush().await.is_err() {
            break;
        }
        idle.reset();
    }
    close.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::BLOCK_SIZE;

    fn peer(inner: &mut Inner, key: PeerKey, port: u16, pieces: usize) {
        let (wtx, _) = mpsc::unbounded_channel();
        let mut state = PeerState::new(&QueueConfig::default(), Instant::now());
        state.peer_choking = false;
        state.am_interested = true;
        state.have = Some(Bitfield::full(pieces));
        inner.peers.insert(
            key,
            PeerEntry {
                addr: PeerAddr::Ip(([127, 0, 0, 1], port).into()),
                peer_id: [key as u8; 20],
                state,
                out: BytesMut::new(),
                wtx,
                close: Arc::new(Notify::new()),
                unexpected: 0,
            },
        );
    }

    fn sent(inner: &mut Inner, key: PeerKey) -> Vec<Message> {
        let Some(p) = inner.peers.get_mut(&key) else {
            return vec![];
        };
        let mut out = vec![];
        while let Some(m) = Message::decode(&mut p.out, 1 << 20).unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn endgame_block_cancels_duplicate_requests() {
        // one piece of two blocks; peer 1 is asked for both, then endgame gives peer 2 the
        // same two blocks.
        let mut g = Inner::new([1; 20], "t".into(), PathBuf::from("/nonexistent"), vec![]);
        let pl = 2 * BLOCK_SIZE as u64;
        g.picker = Some(Picker::new(pl, pl, Bitfield::new(1)));
        peer(&mut g, 1, 6001, 1);
        peer(&mut g, 2, 6002, 1);
        peer(&mut g, 3, 6003, 1);
        g.fill_requests(1);
        g.fill_requests(2);
        let reqs = |m: Vec<Message>| -> Vec<BlockRef> {
            m.into_iter()
                .filter_map(|m| match m {
                    Message::Request(r) => Some(r),
                    _ => None,
                })
                .collect()
        };
        let r1 = reqs(sent(&mut g, 1));
        let r2 = reqs(sent(&mut g, 2));
        assert_eq!(r1.len(), 2);
        assert_eq!(r1, r2, "endgame duplicates the blocks at the second peer");
        // peer 3 never got a request: it must get no cancel either
        assert!(reqs(sent(&mut g, 3)).is_empty());

        // block 0 arrives from peer 1: peer 2 gets a cancel for it, peer 3 nothing
        let mut actions = vec![];
        let data = Bytes::from(vec![5u8; BLOCK_SIZE as usize]);
        let piece = |begin| Message::Piece {
            index: 0,
            begin,
            data: data.clone(),
        };
        g.on_message(1, piece(0), &mut actions, 8).unwrap();
        assert_eq!(sent(&mut g, 2), vec![Message::Cancel(r1[0])]);
        assert!(sent(&mut g, 3).is_empty());
        assert!(!g.peers[&2].state.pending.contains(&r1[0]));
        assert!(g.peers[&2].state.pending.contains(&r1[1]));
        assert!(sent(&mut g, 1).is_empty(), "no cancel to the sender");

        // the cancelled block still arrives from peer 2 (it crossed the cancel): harmless
        g.on_message(2, piece(0), &mut actions, 8).unwrap();
        assert!(sent(&mut g, 1).is_empty(), "a duplicate cancels nothing");
        assert_eq!(g.peers[&2].unexpected, 0);

        // the last block arrives from peer 2: the piece completes, peer 1 gets the cancel
        g.on_message(2, piece(BLOCK_SIZE), &mut actions, 8).unwrap();
        assert_eq!(sent(&mut g, 1), vec![Message::Cancel(r1[1])]);
        assert!(g.peers[&1].state.pending.is_empty());
        assert!(g.peers[&2].state.pending.is_empty());
        assert!(matches!(
            actions.as_slice(),
            [Action::Hash { index: 0, .. }]
        ));
    }

    #[test]
    fn no_cancel_outside_endgame() {
        // two pieces: peer 1 gets piece 0, peer 2 piece 1; no duplicates, no cancels.
        let mut g = Inner::new([1; 20], "t".into(), PathBuf::from("/nonexistent"), vec![]);
        let pl = BLOCK_SIZE as u64;
        g.picker = Some(Picker::new(pl, 4 * pl, Bitfield::new(4)));
        peer(&mut g, 1, 6001, 4);
        peer(&mut g, 2, 6002, 4);
        if let Some(p) = g.peers.get_mut(&1) {
            p.state.queue_target = 1;
        }
        if let Some(p) = g.peers.get_mut(&2) {
            p.state.queue_target = 1;
        }
        g.fill_requests(1);
        g.fill_requests(2);
        let r1 = sent(&mut g, 1);
        let r2 = sent(&mut g, 2);
        assert_eq!(r1.len(), 1);
        assert_eq!(r2.len(), 1);
        assert_ne!(r1, r2);
        let Message::Request(r) = r1[0] else {
            panic!("{r1:?}")
        };
        let mut actions = vec![];
        let msg = Message::Piece {
            index: r.index,
            begin: r.begin,
            data: Bytes::from(vec![0u8; r.length as usize]),
        };
        g.on_message(1, msg, &mut actions, 8).unwrap();
        assert!(sent(&mut g, 2)
            .iter()
            .all(|m| !matches!(m, Message::Cancel(_))));
    }
}

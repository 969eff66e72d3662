//! [`NodeCore`]: the transfers of a node, each on its own isolated circuits, behind [`NodeApi`].

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlay::IsolationKey;
use share::magnet::Magnet;
use share::session::{
    AddOptions, Session, SessionConfig, TorrentHandle, TorrentSource, TorrentState,
};
use tokio::sync::Notify;

use super::connector::{Clients, OverlayConnector};
use super::hidden::{HiddenPeers, HiddenSeed};
use super::saved::{SavedTransfer, SavedTransfers};
use crate::control::{ApiError, NodeApi};
use crate::status::{
    CircuitPurpose, CircuitState, CircuitStatus, LogEntry, LogLevel, NetworkStatus, StatusSnapshot,
    TransferId, TransferState, TransferStatus,
};

const LOG_KEEP: usize = 200;

struct Transfer {
    session: Session,
    handle: TorrentHandle,
    hops: Arc<AtomicU8>,
    dir: PathBuf,
    /// The DHT lookup of hidden seeders (a download).
    lookup: Option<tokio::task::AbortHandle>,
    /// The hidden service (a seeded torrent).
    seed: Option<HiddenSeed>,
}

impl Transfer {
    fn stop(&self) {
        if let Some(l) = &self.lookup {
            l.abort();
        }
        if let Some(s) = &self.seed {
            s.stop();
        }
        self.session.shutdown();
    }
}

/// Extra network figures (relays run by this process, e.g. the demo's in-process network).
pub type NetworkProbe = Box<dyn Fn() -> Vec<overlay::NodeStatus> + Send + Sync>;

/// The flows of a tunnel run by this process, for the Tunnel tab.
pub type FlowProbe = Box<dyn Fn() -> Vec<crate::status::FlowStatus> + Send + Sync>;

pub struct NodeCore {
    node_id: String,
    clients: Clients,
    session_config: SessionConfig,
    data_dir: PathBuf,
    download_dir: PathBuf,
    default_hops: u8,
    transfers: Mutex<BTreeMap<TransferId, Transfer>>,
    next_id: AtomicU64,
    started: Instant,
    log: Mutex<VecDeque<LogEntry>>,
    network: Option<NetworkProbe>,
    flows: Mutex<Option<FlowProbe>>,
    shutdown: Arc<Notify>,
    hidden: HiddenPeers,
    /// Where a `warren node` keeps the transfers added to it (None: nothing is kept).
    saved: Option<SavedTransfers>,
}

fn api(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(e.to_string())
}

impl NodeCore {
    pub fn new(
        node_id: String,
        clients: Clients,
        session_config: SessionConfig,
        data_dir: PathBuf,
        download_dir: PathBuf,
        default_hops: u8,
    ) -> NodeCore {
        let mut session_config = session_config;
        // one session per transfer, one seeding cap for all of them
        if session_config.upload_cap.is_none() {
            session_config.upload_cap =
                share::torrent::shared_upload_cap(session_config.upload_rate);
        }
        NodeCore {
            node_id,
            clients,
            session_config,
            data_dir,
            download_dir,
            default_hops: default_hops.clamp(1, 3),
            transfers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            log: Mutex::new(VecDeque::new()),
            network: None,
            flows: Mutex::new(None),
            shutdown: Arc::new(Notify::new()),
            hidden: HiddenPeers::default(),
            saved: None,
        }
    }

    /// Keeps the transfers added through the control socket in `<data-dir>/transfers`, so that
    /// [`NodeCore::restore_saved`] brings them back after a restart (`warren node`).
    pub fn with_saved_transfers(mut self) -> Self {
        self.saved = Some(SavedTransfers::new(self.data_dir.join("transfers")));
        self
    }

    /// Re-adds every saved transfer (paused ones stay paused); their resume databases hold what
    /// was already verified. Returns how many came back; a record that cannot be read or added is
    /// reported on the Log tab and kept on disk.
    pub async fn restore_saved(&self) -> usize {
        let Some(saved) = self.saved.clone() else {
            return 0;
        };
        let mut n = 0;
        for rec in saved.load_all() {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("{e}");
                    self.warn("node", format!("not restored: {e}"));
                    continue;
                }
            };
            match self
                .add_magnet(&rec.magnet, Some(rec.dir.clone()), Some(rec.hops))
                .await
            {
                Ok((id, h)) => {
                    n += 1;
                    if rec.paused {
                        if let Err(e) =
                            self.with(id, |t| t.session.pause(&h.info_hash()).map_err(api))
                        {
                            self.warn("node", format!("transfer {id} not paused again: {e}"));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("saved transfer not restored: {e}");
                    tracing::debug!(magnet = %rec.magnet, "not restored");
                    self.warn("node", format!("saved transfer not restored: {e}"));
                }
            }
        }
        n
    }

    /// Applies `f` to the saved record of transfer `id` (if this node keeps records).
    fn update_saved(&self, id: TransferId, f: impl FnOnce(&mut SavedTransfer)) {
        let Some(saved) = &self.saved else { return };
        let Ok(ih) = self.with(id, |t| Ok(t.handle.info_hash().to_string())) else {
            return;
        };
        if let Err(e) = saved.update(&ih, f) {
            self.warn("node", e.to_string());
        }
    }

    pub fn with_network_probe(mut self, probe: NetworkProbe) -> Self {
        self.network = Some(probe);
        self
    }

    /// Shows the flows of a tunnel on the Tunnel tab.
    pub fn set_flow_probe(&self, probe: FlowProbe) {
        if let Ok(mut f) = self.flows.lock() {
            *f = Some(probe);
        }
    }

    /// Resolves when a client asked the node to shut down.
    pub fn shutdown_signal(&self) -> Arc<Notify> {
        self.shutdown.clone()
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    pub fn info(&self, target: &str, message: String) {
        self.push_log(LogLevel::Info, target, message);
    }

    pub fn warn(&self, target: &str, message: String) {
        self.push_log(LogLevel::Warn, target, message);
    }

    fn push_log(&self, level: LogLevel, target: &str, message: String) {
        if let Ok(mut l) = self.log.lock() {
            l.push_back(LogEntry {
                at_secs: self.started.elapsed().as_secs(),
                level,
                target: target.into(),
                message,
            });
            while l.len() > LOG_KEEP {
                l.pop_front();
            }
        }
    }

    /// Adds a transfer from a magnet link; returns its id and handle.
    pub async fn add_magnet(
        &self,
        link: &str,
        dir: Option<PathBuf>,
        hops: Option<u8>,
    ) -> Result<(TransferId, TorrentHandle), ApiError> {
        let magnet = Magnet::parse(link).map_err(|e| api(format!("bad magnet link: {e}")))?;
        let ih = magnet.info_hash.ok_or_else(|| {
            api("magnet link has no btih infohash (v2-only links are not supported yet)")
        })?;
        if self
            .transfers
            .lock()
            .map_err(api)?
            .values()
            .any(|t| t.handle.info_hash() == ih)
        {
            return Err(api(format!("{ih} is already being transferred")));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hops = Arc::new(AtomicU8::new(hops.unwrap_or(self.default_hops).clamp(1, 3)));
        // one session per transfer: its connector carries the transfer's own isolation key, so two
        // transfers never share a circuit or an exit connection
        let connector = Arc::new(OverlayConnector::new(
            self.clients.clone(),
            IsolationKey(id),
            hops.clone(),
            self.hidden.clone(),
        ));
        let mut cfg = self.session_config.clone();
        cfg.resume_db = Some(self.data_dir.join("resume").join(ih.to_string()));
        let session = Session::new(cfg, connector).map_err(api)?;
        let dir = dir.unwrap_or_else(|| self.download_dir.clone());
        std::fs::create_dir_all(&dir)
            .map_err(|e| api(format!("cannot create {}: {e}", dir.display())))?;
        let handle = session
            .add_torrent(TorrentSource::Magnet(magnet), &dir, AddOptions::default())
            .await
            .map_err(api)?;
        // hidden seeders of this infohash, looked up in the overlay DHT through circuits
        let client = (**self.clients.get(hops.load(Ordering::Relaxed))).clone();
        let lookup = super::hidden::spawn_lookup(client, self.hidden.clone(), handle.clone());
        self.transfers.lock().map_err(api)?.insert(
            id,
            Transfer {
                session,
                handle: handle.clone(),
                hops,
                dir,
                lookup: Some(lookup),
                seed: None,
            },
        );
        Ok((id, handle))
    }

    /// Seeds `path` as a hidden seeder: makes the torrent, registers introduction points over
    /// `hops`-hop circuits and publishes the swarm record in the overlay DHT. Returns the transfer,
    /// its handle and the magnet link (no tracker, no peer address: it resolves inside the overlay).
    pub async fn seed_path(
        &self,
        path: &std::path::Path,
        hops: Option<u8>,
    ) -> Result<(TransferId, TorrentHandle, String), ApiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hops = Arc::new(AtomicU8::new(hops.unwrap_or(self.default_hops).clamp(1, 3)));
        let connector = Arc::new(OverlayConnector::new(
            self.clients.clone(),
            IsolationKey(id),
            hops.clone(),
            self.hidden.clone(),
        ));
        let mut cfg = self.session_config.clone();
        cfg.resume_db = Some(self.data_dir.join("seeding").join(format!("{id}")));
        let session = Session::new(cfg, connector).map_err(api)?;
        let (handle, made) = session
            .seed_path(path, share::make::MakeOptions::default())
            .await
            .map_err(|e| api(format!("cannot seed {}: {e}", path.display())))?;
        let h = hops.load(Ordering::Relaxed);
        let client = (**self.clients.get(h)).clone();
        let seed = super::hidden::start_seed(client, session.clone(), handle.info_hash().0, h)
            .await
            .map_err(|e| api(format!("cannot start hidden seeding: {e}")))?;
        let dir = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        self.transfers.lock().map_err(api)?.insert(
            id,
            Transfer {
                session,
                handle: handle.clone(),
                hops,
                dir,
                lookup: None,
                seed: Some(seed),
            },
        );
        let link = made.magnet.to_uri();
        // the link is what the user shares: on the Log tab, and in a file next to the state
        self.info(
            "seed",
            format!("magnet link of {}: {link}", handle.status().name),
        );
        let mdir = self.data_dir.join("magnets");
        if std::fs::create_dir_all(&mdir).is_ok() {
            let _ = std::fs::write(
                mdir.join(format!("{}.magnet", handle.info_hash())),
                format!("{link}\n"),
            );
        }
        Ok((id, handle, link))
    }

    /// Swarm-record publications of a hidden-seeded transfer so far (None if not one).
    pub fn published(&self, id: TransferId) -> Option<u64> {
        self.with(id, |t| {
            Ok(t.seed.as_ref().map(|s| s.published.load(Ordering::Relaxed)))
        })
        .ok()
        .flatten()
    }

    fn with<T>(
        &self,
        id: TransferId,
        f: impl FnOnce(&Transfer) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let map = self.transfers.lock().map_err(api)?;
        let t = map
            .get(&id)
            .ok_or_else(|| api(format!("no transfer {id}")))?;
        f(t)
    }

    pub fn snapshot_now(&self) -> StatusSnapshot {
        let mut transfers = Vec::new();
        if let Ok(map) = self.transfers.lock() {
            for (id, t) in map.iter() {
                let s = t.handle.status();
                let state = match &s.state {
                    TorrentState::Checking => TransferState::Checking,
                    TorrentState::Metadata => TransferState::Metadata,
                    TorrentState::Downloading => TransferState::Downloading,
                    TorrentState::Seeding => TransferState::Seeding,
                    TorrentState::Paused => TransferState::Paused,
                    TorrentState::Error(_) => TransferState::Error,
                };
                transfers.push(TransferStatus {
                    id: *id,
                    name: s.name.clone(),
                    infohash: s.info_hash.to_string(),
                    size: s.total_bytes.unwrap_or(0),
                    done: s.have_bytes,
                    down_rate: s.down_rate as u64,
                    up_rate: s.up_rate as u64,
                    peers: s.peers as u32,
                    eta_secs: s.eta.map(|d| d.as_secs()),
                    state,
                    hops: t.hops.load(Ordering::Relaxed),
                });
            }
        }
        let mut circuits = Vec::new();
        for (_, c) in self.clients.all() {
            for ci in c.circuits() {
                let purpose = if ci.purpose.contains("introduction") {
                    CircuitPurpose::Intro
                } else if ci.purpose.contains("rendezvous") {
                    CircuitPurpose::Rendezvous
                } else if ci.purpose.contains("dht") {
                    CircuitPurpose::Dht
                } else if ci.purpose == "pooled" {
                    CircuitPurpose::Preemptive
                } else {
                    CircuitPurpose::Exit
                };
                circuits.push(CircuitStatus {
                    id: ci.id,
                    purpose,
                    hops: ci.hops.clone(),
                    state: if ci.state == "open" {
                        CircuitState::Open
                    } else if ci.state.starts_with("build") {
                        CircuitState::Building
                    } else {
                        CircuitState::Failed
                    },
                    age_secs: ci.age_ms / 1000,
                    bytes_sent: ci.bytes_up,
                    bytes_received: ci.bytes_down,
                    rtt_ms: (ci.rtt_ms > 0.0).then_some(ci.rtt_ms.round() as u32),
                });
            }
        }
        let mut network = NetworkStatus {
            down_rate: transfers.iter().map(|t| t.down_rate).sum(),
            up_rate: transfers.iter().map(|t| t.up_rate).sum(),
            // the 1-, 2- and 3-hop clients share one guard list
            guards: self
                .clients
                .get(3)
                .guards()
                .iter()
                .map(|g| g.short())
                .collect(),
            guard_health: self
                .clients
                .get(3)
                .guard_status()
                .iter()
                .map(|g| crate::status::GuardHealth {
                    id: g.id.short(),
                    primary: g.primary,
                    down_secs: g.down_for,
                    circuits: g.path_bias.attempts,
                    succeeded: g.path_bias.succeeded,
                    suspect: g.path_bias.is_suspect(),
                })
                .collect(),
            ..Default::default()
        };
        if let Some(probe) = &self.network {
            for n in probe() {
                network.relayed_bytes += n.relayed_bytes;
                network.exit_bytes += n.exit_bytes_out + n.exit_bytes_in;
                // one node, or the largest table of a demo's embedded nodes
                network.dht_nodes = network.dht_nodes.max(n.dht_nodes);
            }
        }
        StatusSnapshot {
            node_id: self.node_id.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            transfers,
            circuits,
            flows: self
                .flows
                .lock()
                .ok()
                .and_then(|f| f.as_ref().map(|p| p()))
                .unwrap_or_default(),
            network,
            log: self
                .log
                .lock()
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Waits until transfer `id` is complete and verified.
    pub async fn wait_complete(&self, id: TransferId) -> Result<(), ApiError> {
        let h = self.with(id, |t| Ok(t.handle.clone()))?;
        h.wait_complete().await.map_err(api)
    }

    /// Where transfer `id` saves its files.
    pub fn transfer_dir(&self, id: TransferId) -> Option<PathBuf> {
        self.with(id, |t| Ok(t.dir.clone())).ok()
    }

    pub fn shutdown_all(&self) {
        if let Ok(map) = self.transfers.lock() {
            for t in map.values() {
                t.stop();
            }
        }
    }
}

impl NodeApi for NodeCore {
    async fn snapshot(&self) -> StatusSnapshot {
        self.snapshot_now()
    }

    async fn add(
        &self,
        magnet: String,
        dir: Option<PathBuf>,
        hops: Option<u8>,
    ) -> Result<TransferId, ApiError> {
        let (id, handle) = self.add_magnet(&magnet, dir, hops).await?;
        if let Some(saved) = &self.saved {
            let (dir, hops) =
                self.with(id, |t| Ok((t.dir.clone(), t.hops.load(Ordering::Relaxed))))?;
            let rec = SavedTransfer {
                magnet,
                dir,
                hops,
                paused: false,
            };
            // the transfer runs either way; not keeping it is worth a warning, not a refusal
            if let Err(e) = saved.save(&handle.info_hash().to_string(), &rec) {
                self.warn(
                    "node",
                    format!("transfer {id} will not survive a restart: {e}"),
                );
            }
        }
        Ok(id)
    }

    async fn pause(&self, id: TransferId) -> Result<(), ApiError> {
        self.with(id, |t| t.session.pause(&t.handle.info_hash()).map_err(api))?;
        self.update_saved(id, |r| r.paused = true);
        Ok(())
    }

    async fn resume(&self, id: TransferId) -> Result<(), ApiError> {
        self.with(id, |t| t.session.resume(&t.handle.info_hash()).map_err(api))?;
        self.update_saved(id, |r| r.paused = false);
        Ok(())
    }

    async fn remove(&self, id: TransferId, delete_data: bool) -> Result<(), ApiError> {
        let t = self
            .transfers
            .lock()
            .map_err(api)?
            .remove(&id)
            .ok_or_else(|| api(format!("no transfer {id}")))?;
        let ih = t.handle.info_hash();
        if let Some(saved) = &self.saved {
            if let Err(e) = saved.remove(&ih.to_string()) {
                self.warn("node", e.to_string());
            }
        }
        let files = t.handle.status().name;
        t.session.remove(&ih).map_err(api)?;
        t.stop();
        if delete_data && !files.is_empty() {
            let p = t.dir.join(&files);
            // the name came through the metainfo sanitiser: a single safe component
            if p.starts_with(&t.dir) {
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(e) = r {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(api(format!(
                            "removed the transfer but not its data {}: {e}",
                            p.display()
                        )));
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.data_dir.join("resume").join(ih.to_string()));
        Ok(())
    }

    async fn set_hops(&self, id: TransferId, hops: u8) -> Result<(), ApiError> {
        if !(1..=3).contains(&hops) {
            return Err(api(format!("hop count must be 1, 2 or 3, not {hops}")));
        }
        self.with(id, |t| {
            t.hops.store(hops, Ordering::Relaxed);
            Ok(())
        })?;
        self.update_saved(id, |r| r.hops = hops);
        self.warn(
            "node",
            format!("transfer {id}: new connections use {hops}-hop circuits"),
        );
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ApiError> {
        self.shutdown.notify_waiters();
        self.shutdown.notify_one();
        Ok(())
    }
}

/// How often the plain reporter prints.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Prints plain progress lines every [`REPORT_EVERY`] until `handle` is complete and verified.
/// Ctrl-C stops every transfer and returns an error that says the download resumes next time.
pub async fn plain_progress(
    core: &NodeCore,
    handle: &TorrentHandle,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<()> {
    let mut rep = crate::dash::plain::PlainReporter::new();
    let done = handle.wait_complete();
    tokio::pin!(done);
    loop {
        tokio::select! {
            r = &mut done => {
                r.map_err(|e| anyhow::anyhow!("download failed: {e}"))?;
                break;
            }
            _ = tokio::time::sleep(REPORT_EVERY) => rep.report(out, &core.snapshot_now())?,
            _ = tokio::signal::ctrl_c() => {
                core.shutdown_all();
                anyhow::bail!("interrupted; the download resumes from its verified pieces next time");
            }
        }
    }
    rep.report(out, &core.snapshot_now())?;
    Ok(())
}

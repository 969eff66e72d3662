//! The engine API for the node and the dashboard: a [`Session`] owns torrents, opens outbound
//! streams through a [`Connector`], accepts inbound streams, and keeps resume state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;
use tracing::debug;

use crate::connector::{BoxedStream, Connector, PeerAddr};
use crate::infohash::InfoHash;
use crate::magnet::Magnet;
use crate::metainfo::{Info, Metainfo};
use crate::resume::{ResumeData, ResumeError, ResumeStore};
use crate::torrent::{Shared, Torrent};
use crate::wire::Handshake;

pub use crate::torrent::{SessionConfig, SessionEvent, TorrentState, TorrentStatus};

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("torrent {0} is already in the session")]
    Duplicate(InfoHash),
    #[error("no torrent {0} in the session")]
    NotFound(InfoHash),
    #[error("magnet link has no v1 infohash (btih)")]
    NoInfoHash,
    #[error("resume state: {0}")]
    Resume(#[from] ResumeError),
    #[error("stored metadata for {0} is invalid: {1}")]
    BadStoredMetadata(InfoHash, String),
    #[error("torrent failed: {0}")]
    Failed(String),
    #[error("making torrent: {0}")]
    Make(String),
}

/// What to add.
#[derive(Clone, Debug)]
pub enum TorrentSource {
    Metainfo(Box<Metainfo>),
    Magnet(Magnet),
}

/// Options for [`Session::add_torrent`].
#[derive(Clone, Debug)]
pub struct AddOptions {
    pub paused: bool,
    /// Peers to try right away (in addition to trackers).
    pub peers: Vec<PeerAddr>,
    /// Hash existing files (seeding from existing data); if false, existing data is trusted
    /// only through resume state.
    pub check_existing: bool,
    /// Use stored resume state for this infohash if there is any.
    pub use_resume: bool,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            paused: false,
            peers: Vec::new(),
            check_existing: true,
            use_resume: true,
        }
    }
}

/// Handle on one torrent.
#[derive(Clone)]
pub struct TorrentHandle {
    t: Arc<Torrent>,
}

impl TorrentHandle {
    pub fn info_hash(&self) -> InfoHash {
        InfoHash(self.t.info_hash)
    }

    pub fn status(&self) -> TorrentStatus {
        self.t.status()
    }

    pub fn add_peers(&self, peers: impl IntoIterator<Item = PeerAddr>) {
        self.t.add_peers(peers);
    }

    /// Resolves when the torrent is complete (seeding), or fails if it enters the error state.
    pub async fn wait_complete(&self) -> Result<(), SessionError> {
        let mut rx = self.t.state_watch();
        let s = rx
            .wait_for(|s| matches!(s, TorrentState::Seeding | TorrentState::Error(_)))
            .await
            .map_err(|_| SessionError::Failed("torrent dropped".into()))?
            .clone();
        match s {
            TorrentState::Error(e) => Err(SessionError::Failed(e)),
            _ => Ok(()),
        }
    }

    /// The raw info dict, once known (e.g. to write a .torrent after a magnet download).
    pub fn raw_info(&self) -> Option<Vec<u8>> {
        self.t.lock().meta.as_ref().map(|m| m.raw_info.to_vec())
    }

    /// Pieces hashed and written whose bit is not yet durable.
    pub fn unpersisted_pieces(&self) -> usize {
        self.t.lock().unpersisted
    }
}

struct SessionInner {
    shared: Arc<Shared>,
    torrents: Mutex<HashMap<[u8; 20], Arc<Torrent>>>,
}

/// A BitTorrent engine instance.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

fn make_peer_id() -> [u8; 20] {
    let mut id = *b"-WR0001-000000000000";
    let r: [u8; 12] = rand::random();
    for (i, b) in r.iter().enumerate() {
        id[8 + i] = b"0123456789abcdefghijklmnopqrstuvwxyz"[(*b % 36) as usize];
    }
    id
}

impl Session {
    /// Create a session; streams to peers and trackers come from `connector`.
    pub fn new(config: SessionConfig, connector: Arc<dyn Connector>) -> Result<Self, SessionError> {
        let resume = match &config.resume_db {
            Some(p) => Some(ResumeStore::open(p)?),
            None => None,
        };
        let (events, _) = broadcast::channel(1024);
        // Two jobs per CPU: while one job waits for its (direct) write, another hashes.
        let disk_jobs = match config.disk_jobs {
            0 => (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(4, 16),
            n => n,
        };
        Ok(Session {
            inner: Arc::new(SessionInner {
                shared: Arc::new(Shared {
                    upload_cap: config
                        .upload_cap
                        .clone()
                        .or_else(|| crate::torrent::shared_upload_cap(config.upload_rate)),
                    config,
                    connector,
                    peer_id: make_peer_id(),
                    resume,
                    events,
                    disk: Arc::new(tokio::sync::Semaphore::new(disk_jobs)),
                }),
                torrents: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn peer_id(&self) -> [u8; 20] {
        self.inner.shared.peer_id
    }

    /// Subscribe to session events.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.shared.events.subscribe()
    }

    fn torrents(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 20], Arc<Torrent>>> {
        self.inner
            .torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Add a torrent from a .torrent or a magnet link, downloading into `dir` (or seeding the
    /// data already there). With a resume database, stored state for the same infohash is used.
    pub async fn add_torrent(
        &self,
        source: TorrentSource,
        dir: &Path,
        opts: AddOptions,
    ) -> Result<TorrentHandle, SessionError> {
        let shared = self.inner.shared.clone();
        let (ih, name, mut trackers, mut raw) = match &source {
            TorrentSource::Metainfo(m) => (
                m.info_hash.0,
                m.info.name.clone(),
                m.trackers(),
                Some(m.raw_info.clone()),
            ),
            TorrentSource::Magnet(m) => (
                m.info_hash.ok_or(SessionError::NoInfoHash)?.0,
                m.display_name.clone().unwrap_or_default(),
                m.trackers.clone(),
                None,
            ),
        };
        let mut dir = dir.to_path_buf();
        let mut bits = None;
        let mut paused = opts.paused;
        if opts.use_resume {
            if let Some(r) = &shared.resume {
                if let Some(rd) = r.load(&ih)? {
                    debug!(torrent = %hex::encode(ih), "using resume state");
                    bits = rd.bitfield;
                    if raw.is_none() {
                        raw = rd.raw_info;
                    }
                    dir = rd.dir;
                    paused |= rd.paused;
                    for t in rd.trackers {
                        if !trackers.contains(&t) {
                            trackers.push(t);
                        }
                    }
                }
            }
        }
        if self.torrents().contains_key(&ih) {
            return Err(SessionError::Duplicate(InfoHash(ih)));
        }
        let torrent = Torrent::new(
            ih,
            shared.clone(),
            name.clone(),
            dir.clone(),
            trackers.clone(),
        );
        self.torrents().insert(ih, torrent.clone());
        if let Some(r) = &shared.resume {
            r.save_torrent(&ResumeData {
                info_hash: ih,
                raw_info: raw.clone(),
                dir: dir.clone(),
                trackers,
                paused,
                bitfield: None,
                name: Some(name),
            })?;
            r.flush()?;
        }
        let _ = shared.events.send(SessionEvent::Added(InfoHash(ih)));
        if let Some(raw) = raw {
            let info = Info::from_bytes_verified(&raw, &InfoHash(ih))
                .map_err(|e| SessionError::BadStoredMetadata(InfoHash(ih), e.to_string()))?;
            if let Err(e) = torrent
                .install_metadata(raw, info, bits, opts.check_existing)
                .await
            {
                return Err(SessionError::Failed(e));
            }
        }
        let handle = TorrentHandle { t: torrent.clone() };
        handle.add_peers(opts.peers);
        if let TorrentSource::Magnet(m) = &source {
            let peers = m
                .peers
                .iter()
                .filter_map(|p| p.parse().ok())
                .map(PeerAddr::Ip);
            handle.add_peers(peers);
        }
        if paused {
            torrent.pause();
        } else {
            torrent.start();
        }
        Ok(handle)
    }

    /// Re-add every torrent stored in the resume database.
    pub async fn restore_all(&self) -> Result<Vec<TorrentHandle>, SessionError> {
        let Some(r) = self.inner.shared.resume.clone() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for ih in r.list() {
            let Some(rd) = r.load(&ih)? else { continue };
            let magnet = Magnet {
                info_hash: Some(InfoHash(ih)),
                btmh: None,
                display_name: rd.name.clone(),
                trackers: rd.trackers.clone(),
                web_seeds: Vec::new(),
                peers: Vec::new(),
                select_only: None,
            };
            out.push(
                self.add_torrent(
                    TorrentSource::Magnet(magnet),
                    &rd.dir,
                    AddOptions::default(),
                )
                .await?,
            );
        }
        Ok(out)
    }

    /// Make a torrent of `path` and seed it from there. Returns the handle and the magnet link.
    pub async fn seed_path(
        &self,
        path: &Path,
        opts: crate::make::MakeOptions,
    ) -> Result<(TorrentHandle, crate::make::Made), SessionError> {
        let p = path.to_path_buf();
        let made = tokio::task::spawn_blocking(move || crate::make::make_torrent(&p, &opts))
            .await
            .map_err(|e| SessionError::Make(e.to_string()))?
            .map_err(|e| SessionError::Make(e.to_string()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let h = self
            .add_torrent(
                TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
                &dir,
                AddOptions::default(),
            )
            .await?;
        Ok((h, made))
    }

    pub fn get(&self, ih: &InfoHash) -> Option<TorrentHandle> {
        self.torrents()
            .get(&ih.0)
            .map(|t| TorrentHandle { t: t.clone() })
    }

    pub fn list(&self) -> Vec<TorrentStatus> {
        let ts: Vec<Arc<Torrent>> = self.torrents().values().cloned().collect();
        ts.iter().map(|t| t.status()).collect()
    }

    pub fn pause(&self, ih: &InfoHash) -> Result<(), SessionError> {
        let t = self
            .torrents()
            .get(&ih.0)
            .cloned()
            .ok_or(SessionError::NotFound(*ih))?;
        t.pause();
        Ok(())
    }

    pub fn resume(&self, ih: &InfoHash) -> Result<(), SessionError> {
        let t = self
            .torrents()
            .get(&ih.0)
            .cloned()
            .ok_or(SessionError::NotFound(*ih))?;
        t.resume();
        Ok(())
    }

    /// Remove a torrent (its files stay on disk; its resume state is dropped).
    pub fn remove(&self, ih: &InfoHash) -> Result<(), SessionError> {
        let t = self
            .torrents()
            .remove(&ih.0)
            .ok_or(SessionError::NotFound(*ih))?;
        t.stop();
        if let Some(r) = &self.inner.shared.resume {
            r.remove(&ih.0)?;
            r.flush()?;
        }
        let _ = self.inner.shared.events.send(SessionEvent::Removed(*ih));
        Ok(())
    }

    /// Persist everything and stop all torrents.
    pub fn shutdown(&self) {
        let ts: Vec<Arc<Torrent>> = self.torrents().values().cloned().collect();
        for t in ts {
            t.stop();
        }
    }

    /// Hand an inbound stream (from a TCP listener or the overlay) to the session: it reads the
    /// handshake, finds the torrent by infohash and runs the peer.
    pub fn accept_inbound(&self, mut stream: BoxedStream, from: PeerAddr) {
        let s = self.clone();
        tokio::spawn(async move {
            let mut head = [0u8; 48];
            let r =
                tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut head)).await;
            if !matches!(r, Ok(Ok(_))) {
                return;
            }
            let (reserved, ih) = match Handshake::decode_prefix(&head) {
                Ok(x) => x,
                Err(_) => {
                    // Not a plain handshake: try MSE/PE (aria2c and others open with it).
                    let skeys: Vec<[u8; 20]> = s.torrents().keys().copied().collect();
                    let mse = crate::mse::accept(stream, &head, &skeys, true);
                    let res = tokio::time::timeout(Duration::from_secs(20), mse).await;
                    let Ok(Ok((_, st))) = res else {
                        debug!(%from, "inbound stream is neither a BitTorrent handshake nor MSE");
                        return;
                    };
                    stream = st;
                    let r =
                        tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut head))
                            .await;
                    if !matches!(r, Ok(Ok(_))) {
                        return;
                    }
                    match Handshake::decode_prefix(&head) {
                        Ok(x) => x,
                        Err(e) => {
                            debug!(%from, "no BitTorrent handshake after MSE: {e}");
                            return;
                        }
                    }
                }
            };
            let Some(t) = s.torrents().get(&ih).cloned() else {
                debug!(%from, "inbound peer for unknown torrent");
                return;
            };
            if matches!(
                t.status().state,
                TorrentState::Paused | TorrentState::Error(_)
            ) {
                return;
            }
            let token = t.run_token();
            t.run_peer(stream, from, Some(reserved), token).await;
        });
    }
}

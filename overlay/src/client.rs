//! The overlay client: builds circuits from verified descriptors, keeps a pool of pre-built
//! circuits, opens streams/datagrams/resolves on them, and implements [`AnonProvider`].
//!
//! A [`Client`] keeps one link per first hop (guard), shared by all its circuits through that hop
//! (module `client_link`; the free [`build_circuit`] dials a private link for its one circuit).
//! The link's reader dispatches backward cells to their circuits, never waiting on one; writers
//! (stream pumps, SENDMEs) seal under the circuit's crypto mutex while queueing, so sequence
//! numbers match the queue order.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::sync::PollSender;
use tracing::{debug, warn};

use crate::cell::{self, cmd, rcmd, reason, CellBuf, RELAY_DATA_MAX};
use crate::circuit::client::{choose_path_with, ClientCrypto};
use crate::circuit::origin::{check_sender, HopView};
use crate::client_link::{private_link, ClientLink, Credit, LinkPool};
use crate::descriptor::{unix_now, Descriptor};
use crate::handshake::{HopInitiator, HTYPE_NK};
use crate::hs::{ClientIntro, HsMessage};
use crate::node::lock;
use crate::provider::{AnonDatagram, AnonProvider, BoxStream, IsolationKey, ProviderError, Target};
use crate::relay_crypto::HopKeys;
use crate::stream::{
    sendme_payload, RecvWindow, SendmeAuth, CIRC_SENDME_INC, CIRC_WINDOW, STREAM_SENDME_INC,
    STREAM_WINDOW,
};

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Hops per circuit (1, 2 or 3; the last is the exit).
    pub hops: usize,
    /// Pre-built circuits kept ready.
    pub pool_size: usize,
    pub build_timeout: Duration,
    pub stream_timeout: Duration,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    /// Entry guards for the first hop of 2- and 3-hop circuits (shared by the clones of this
    /// config); None picks every first hop at random.
    pub guards: Option<crate::guards::Guards>,
    /// Firewall mark (SO_MARK, needs CAP_NET_ADMIN) put on every link socket this client dials:
    /// the system-wide tunnel sets it so that warren's own links bypass its policy routing.
    pub link_mark: Option<u32>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            hops: 3,
            pool_size: 2,
            build_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
            guards: Some(crate::guards::Guards::default()),
            link_mark: None,
        }
    }
}

/// One circuit as shown on the dashboard.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CircuitInfo {
    pub id: u64,
    pub purpose: String,
    pub hops: Vec<String>,
    pub state: String,
    pub age_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Round-trip time to the last hop measured while extending to it.
    pub rtt_ms: f64,
}

enum Ctl {
    Connected,
    End(u8, String),
    Resolved(Result<Vec<IpAddr>, String>),
    Dht(Vec<u8>),
}

enum Down {
    Data(Bytes),
    Eof,
    Err(String),
}

#[derive(Default)]
struct Slot {
    /// The hop this stream was opened with: the only one whose messages on it are accepted
    /// ([`check_sender`]).
    hop: usize,
    ctl: Option<oneshot::Sender<Ctl>>,
    data: Option<mpsc::Sender<Down>>,
    dgram: Option<mpsc::Sender<Result<(SocketAddr, Bytes), String>>>,
    window: Option<Arc<Semaphore>>,
}

/// Where the reader delivers the next CREATED/EXTENDED payload.
type HandshakeReply = oneshot::Sender<Result<Vec<u8>, String>>;

/// A client circuit (shared by its tasks and its streams).
pub struct ClientCirc {
    id: u64,
    path: Vec<Descriptor>,
    /// The link to the first hop (shared with this client's other circuits through it).
    link: Arc<ClientLink>,
    /// This circuit's id on `link` (from the dialer's half: the client always dials).
    circ_id: u32,
    crypto: Mutex<ClientCrypto>,
    window: Arc<Semaphore>,
    /// MACs of the DATA cells circuit SENDMEs must echo (locked after `crypto`).
    sendme_auth: Mutex<SendmeAuth>,
    recv_window: Mutex<RecvWindow>,
    streams: Mutex<HashMap<u32, Slot>>,
    next_stream: AtomicU32,
    pending: Mutex<Option<HandshakeReply>>,
    closed: Mutex<Option<String>>,
    is_closed: AtomicBool,
    created: Instant,
    rtt: Mutex<Duration>,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    purpose: Mutex<String>,
    /// Where hidden-service messages from the last real hop go (introduction and rendezvous).
    hs_tx: Mutex<Option<mpsc::Sender<HsMessage>>>,
    /// A downloader's handshake waiting for RENDEZVOUS2 (finished by the reader, which appends
    /// the virtual hop before it reads the next cell).
    rendezvous: Mutex<Option<ClientIntro>>,
    /// A hidden seeder's rendezvous circuit: where streams the other end opens (BEGIN from the
    /// virtual hop) are handed over.
    inbound: Mutex<Option<mpsc::Sender<BoxStream>>>,
    /// The entry guard this circuit entered through, told when the circuit is destroyed for a bad
    /// cell (path bias).
    guard: Mutex<Option<(crate::guards::Guards, crate::identity::NodeId)>>,
}

impl ClientCirc {
    fn new(id: u64, path: Vec<Descriptor>, link: Arc<ClientLink>, circ_id: u32) -> ClientCirc {
        ClientCirc {
            id,
            path,
            link,
            circ_id,
            crypto: Mutex::new(ClientCrypto::default()),
            window: Arc::new(Semaphore::new(CIRC_WINDOW as usize)),
            sendme_auth: Mutex::new(SendmeAuth::new(CIRC_SENDME_INC)),
            recv_window: Mutex::new(RecvWindow::new(CIRC_WINDOW, CIRC_SENDME_INC)),
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(1),
            pending: Mutex::new(None),
            closed: Mutex::new(None),
            is_closed: AtomicBool::new(false),
            created: Instant::now(),
            rtt: Mutex::new(Duration::ZERO),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            purpose: Mutex::new("exit".into()),
            hs_tx: Mutex::new(None),
            rendezvous: Mutex::new(None),
            inbound: Mutex::new(None),
            guard: Mutex::new(None),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Relaxed)
    }

    pub fn close_reason(&self) -> Option<String> {
        lock(&self.closed).clone()
    }

    pub fn hops(&self) -> &[Descriptor] {
        &self.path
    }

    /// The hop streams go to: the exit, or at a rendezvous the virtual hop standing for the other
    /// end.
    fn last_hop(&self) -> usize {
        lock(&self.crypto).len().saturating_sub(1)
    }

    /// Number of hops with keys (the built path, plus the virtual hop after a rendezvous).
    pub fn hop_count(&self) -> usize {
        lock(&self.crypto).len()
    }

    pub fn set_purpose(&self, p: impl Into<String>) {
        *lock(&self.purpose) = p.into();
    }

    /// The binding value shared with hop `hop` (signed in ESTABLISH_INTRO).
    pub fn binding(&self, hop: usize) -> Option<[u8; 32]> {
        lock(&self.crypto).binding(hop)
    }

    /// From now on, hidden-service messages arriving on this circuit are delivered to the returned
    /// receiver (a later call replaces the earlier receiver).
    pub fn hs_messages(&self) -> mpsc::Receiver<HsMessage> {
        let (tx, rx) = mpsc::channel(64);
        *lock(&self.hs_tx) = Some(tx);
        rx
    }

    /// Sends a hidden-service message to hop `hop`.
    pub async fn send_hs(&self, hop: usize, m: &HsMessage) -> Result<(), ProviderError> {
        self.send_to_hop(hop, crate::node::hs_rcmd(m), 0, &m.encode())
            .await
    }

    /// A downloader's rendezvous circuit: when RENDEZVOUS2 arrives, `intro` is finished with its
    /// handshake and the service's virtual hop is appended before any further cell is read.
    pub fn expect_rendezvous(&self, intro: ClientIntro) {
        *lock(&self.rendezvous) = Some(intro);
    }

    /// A seeder's rendezvous circuit: appends the client's virtual hop (call before sending
    /// RENDEZVOUS1, so that no cell from the client can arrive before it).
    pub fn add_virtual_hop(&self, keys: HopKeys) {
        lock(&self.crypto).add_hop(keys);
    }

    /// Streams the other end of a rendezvous opens on this circuit are delivered to the returned
    /// receiver; without it, such BEGINs are refused.
    pub fn accept_streams(&self) -> mpsc::Receiver<BoxStream> {
        let (tx, rx) = mpsc::channel(16);
        *lock(&self.inbound) = Some(tx);
        rx
    }

    /// Sends a relay message to hop `dest` (the generic "deliver payload to hop" API; issue 4 uses
    /// it for intro/rendezvous/DHT commands).
    pub async fn send_to_hop(
        &self,
        dest: usize,
        rc: u8,
        stream: u32,
        data: &[u8],
    ) -> Result<(), ProviderError> {
        self.send_cell(dest, rc, stream, data, cmd::RELAY).await
    }

    /// Sends a relay message to hop `dest` in a RELAY_EARLY cell (EXTEND only: the relays on the
    /// way count these, [`cell::MAX_RELAY_EARLY`] per circuit at most).
    pub async fn send_early(&self, dest: usize, rc: u8, data: &[u8]) -> Result<(), ProviderError> {
        self.send_cell(dest, rc, 0, data, cmd::RELAY_EARLY).await
    }

    /// Seals a relay message for hop `dest` in a cell of link command `command` (RELAY or
    /// RELAY_EARLY) and queues it once the link has room.
    async fn send_cell(
        &self,
        dest: usize,
        rc: u8,
        stream: u32,
        data: &[u8],
        command: u8,
    ) -> Result<(), ProviderError> {
        let credit = self.link.reserve().await.map_err(ProviderError::Closed)?;
        self.seal_and_queue(Some(credit), dest, rc, stream, data, command)
    }

    /// [`send_cell`](Self::send_cell) for the link's reader, which must not wait: queued without
    /// credit (see [`crate::client_link`] for why that queue stays bounded).
    fn send_now(&self, dest: usize, rc: u8, stream: u32, data: &[u8]) -> Result<(), ProviderError> {
        self.seal_and_queue(None, dest, rc, stream, data, cmd::RELAY)
    }

    /// Seals and queues under the crypto lock, so that sequence numbers follow the queue order;
    /// records DATA cells' MACs for authenticated SENDMEs.
    fn seal_and_queue(
        &self,
        credit: Option<Credit>,
        dest: usize,
        rc: u8,
        stream: u32,
        data: &[u8],
        command: u8,
    ) -> Result<(), ProviderError> {
        let mut cr = lock(&self.crypto);
        if self.is_closed() {
            return Err(self.closed_err());
        }
        let (mut c, tag) = cr
            .seal_tagged(self.circ_id, dest, rc, stream, data)
            .map_err(|e| ProviderError::Closed(e.to_string()))?;
        cell::set_command(&mut c, command);
        if rc == rcmd::DATA {
            lock(&self.sendme_auth).on_data_sent(tag);
        }
        if !self.link.queue(c, credit) {
            return Err(self.closed_err());
        }
        Ok(())
    }

    /// Tears the circuit down: DESTROY to the first hop, every stream fails.
    pub fn destroy(&self) {
        self.teardown(reason::DONE, "closed by the client".into());
    }

    /// DESTROY(`code`) for this circuit on its link (unless it is closed already), then closes
    /// it with `why`; the link and its other circuits stay.
    fn set_guard(&self, guards: crate::guards::Guards, id: crate::identity::NodeId) {
        *lock(&self.guard) = Some((guards, id));
    }

    /// The circuit is destroyed for a cell it refused: counts against its guard's path bias.
    pub(crate) fn refused_cell(&self) {
        if let Some((g, id)) = lock(&self.guard).take() {
            g.misbehaved(&id);
        }
    }

    fn teardown(&self, code: u8, why: String) {
        if !self.is_closed() {
            self.link
                .queue(cell::destroy_cell(self.circ_id, code), None);
        }
        self.close(why);
    }

    /// TESTING: sends a DATA cell to the last hop with one bit flipped after sealing (a tampering
    /// relay in miniature). The last hop must destroy the circuit.
    #[doc(hidden)]
    pub async fn inject_tampered_cell(&self) -> Result<(), ProviderError> {
        let credit = self.link.reserve().await.map_err(ProviderError::Closed)?;
        let mut cr = lock(&self.crypto);
        let last = cr.len().saturating_sub(1);
        let mut c = cr
            .seal(self.circ_id, last, rcmd::DATA, 1, b"tampered")
            .map_err(|e| ProviderError::Closed(e.to_string()))?;
        c[100] ^= 0x04;
        if !self.link.queue(c, Some(credit)) {
            return Err(self.closed_err());
        }
        Ok(())
    }

    /// Why a send failed on a closed link.
    fn link_closed(&self) -> String {
        self.close_reason()
            .unwrap_or_else(|| "link to the first hop closed".into())
    }

    fn closed_err(&self) -> ProviderError {
        ProviderError::Closed(
            self.close_reason()
                .unwrap_or_else(|| "circuit closed".into()),
        )
    }

    /// Marks the circuit dead, fails every stream with `why` and leaves the link (sends nothing:
    /// see [`teardown`](Self::teardown)).
    pub(crate) fn close(&self, why: String) {
        {
            let mut c = lock(&self.closed);
            if c.is_some() {
                return;
            }
            *c = Some(why.clone());
        }
        self.is_closed.store(true, Ordering::Relaxed);
        self.window.close();
        let slots: Vec<Slot> = lock(&self.streams).drain().map(|(_, s)| s).collect();
        for s in slots {
            if let Some(c) = s.ctl {
                let _ = c.send(Ctl::End(reason::DESTROYED, why.clone()));
            }
            if let Some(d) = s.data {
                let _ = d.try_send(Down::Err(why.clone()));
            }
            if let Some(d) = s.dgram {
                let _ = d.try_send(Err(why.clone()));
            }
            if let Some(w) = s.window {
                w.close();
            }
        }
        if let Some(p) = lock(&self.pending).take() {
            let _ = p.send(Err(why.clone()));
        }
        lock(&self.hs_tx).take();
        lock(&self.inbound).take();
        lock(&self.rendezvous).take();
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.link.forget(self.circ_id, self);
        debug!(circ = self.id, "circuit closed: {why}");
    }

    fn info(&self) -> CircuitInfo {
        CircuitInfo {
            id: self.id,
            purpose: lock(&self.purpose).clone(),
            hops: self.path.iter().map(|d| d.id.short()).collect(),
            state: match self.close_reason() {
                Some(r) => format!("closed: {r}"),
                None => "open".into(),
            },
            age_ms: self.created.elapsed().as_millis() as u64,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            rtt_ms: lock(&self.rtt).as_secs_f64() * 1000.0,
        }
    }

    /// Registers a stream to the last hop (its owner from now on).
    fn new_stream(&self, slot: Slot) -> Result<u32, ProviderError> {
        if self.is_closed() {
            return Err(self.closed_err());
        }
        let sid = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let hop = self.last_hop();
        lock(&self.streams).insert(sid, Slot { hop, ..slot });
        Ok(sid)
    }

    /// The circuit's shape for [`check_sender`].
    fn hop_view(&self) -> HopView {
        HopView {
            built: self.path.len(),
            keyed: lock(&self.crypto).len(),
        }
    }

    /// Handles one backward cell of this circuit (the link's reader handles PADDING and DESTROY).
    /// Never waits: the reader serves every circuit of the link. An error destroys the circuit.
    pub(crate) fn dispatch(self: &Arc<Self>, mut c: CellBuf) -> Result<(), String> {
        match cell::command(&c) {
            cmd::CREATED => {
                let p = cell::lp_payload(&c).map_err(|e| e.to_string())?.to_vec();
                match lock(&self.pending).take() {
                    Some(tx) => {
                        let _ = tx.send(Ok(p));
                        Ok(())
                    }
                    None => Err("unexpected CREATED".into()),
                }
            }
            cmd::RELAY => {
                let hop = lock(&self.crypto).open(&mut c).map_err(|e| e.to_string())?;
                let tag = crate::relay_crypto::body_tag(cell::body(&c));
                let m = cell::read_relay(cell::body(&c)).map_err(|e| e.to_string())?;
                self.on_relay(hop, m.cmd, m.stream, m.data, tag)
            }
            other => Err(format!("unexpected cell command {other}")),
        }
    }

    fn on_relay(
        self: &Arc<Self>,
        hop: usize,
        rc: u8,
        sid: u32,
        data: &[u8],
        tag: [u8; 16],
    ) -> Result<(), String> {
        // every message is accepted only from the hop entitled to send it
        let owner = if sid == 0 {
            None
        } else {
            lock(&self.streams).get(&sid).map(|s| s.hop)
        };
        if let Err(v) = check_sender(self.hop_view(), rc, sid, hop, owner) {
            warn!(circ = self.id, "destroying the circuit: {v}");
            return Err(format!("hop violation: {v}"));
        }
        match rc {
            rcmd::EXTENDED => match lock(&self.pending).take() {
                Some(tx) => {
                    let _ = tx.send(Ok(data.to_vec()));
                    Ok(())
                }
                None => Err("unexpected EXTENDED".into()),
            },
            rcmd::SENDME => {
                if sid == 0 {
                    // it must echo the MAC of the cell it acknowledges (proposal 289)
                    lock(&self.sendme_auth)
                        .on_sendme(data)
                        .map_err(|e| format!("circuit SENDME refused: {e}"))?;
                    self.window.add_permits(CIRC_SENDME_INC as usize);
                } else if let Some(w) = lock(&self.streams).get(&sid).and_then(|s| s.window.clone())
                {
                    w.add_permits(STREAM_SENDME_INC as usize);
                }
                Ok(())
            }
            rcmd::DATA => {
                let sendme = {
                    let mut w = lock(&self.recv_window);
                    w.on_receive().map_err(|e| e.to_string())?;
                    w.on_consume()
                };
                self.bytes_down
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                let tx = lock(&self.streams).get(&sid).and_then(|s| s.data.clone());
                if let Some(tx) = tx {
                    // never waits (the link's other circuits): the channel holds a whole stream
                    // window, so a full one means the exit sent past it; that stream ends
                    if tx
                        .try_send(Down::Data(Bytes::copy_from_slice(data)))
                        .is_err()
                    {
                        warn!(
                            circ = self.id,
                            stream = sid,
                            "exit exceeded the stream window"
                        );
                        lock(&self.streams).remove(&sid);
                        let end = cell::encode_end(reason::PROTOCOL, "stream window exceeded");
                        let _ = self.send_now(hop, rcmd::END, sid, &end);
                    }
                }
                if sendme {
                    // sent in order from the reader itself: each echoes one cell's MAC, and the
                    // sender checks them in the order it sent those cells
                    let last = self.last_hop();
                    let _ = self.send_now(last, rcmd::SENDME, 0, &sendme_payload(&tag));
                }
                Ok(())
            }
            rcmd::CONNECTED | rcmd::END | rcmd::RESOLVED | rcmd::DHT_RESPONSE | rcmd::DIRECTORY => {
                let mut streams = lock(&self.streams);
                let Some(slot) = streams.get_mut(&sid) else {
                    return Ok(());
                };
                if let Some(ctl) = slot.ctl.take() {
                    let msg = match rc {
                        rcmd::CONNECTED => Ctl::Connected,
                        rcmd::RESOLVED => {
                            Ctl::Resolved(cell::decode_resolved(data).map_err(|e| e.to_string())?)
                        }
                        rcmd::DHT_RESPONSE | rcmd::DIRECTORY => Ctl::Dht(data.to_vec()),
                        _ => {
                            let (r, t) = cell::decode_end(data);
                            Ctl::End(r, t)
                        }
                    };
                    let _ = ctl.send(msg);
                    if rc != rcmd::CONNECTED {
                        streams.remove(&sid);
                    }
                } else if rc == rcmd::END {
                    let (r, t) = cell::decode_end(data);
                    if let Some(s) = streams.remove(&sid) {
                        if let Some(d) = s.data {
                            let _ = d.try_send(if r == reason::DONE {
                                Down::Eof
                            } else {
                                Down::Err(format!("{}: {t}", reason::name(r)))
                            });
                        }
                        if let Some(d) = s.dgram {
                            // a datagram refusal keeps the association open
                            let _ = d.try_send(Err(format!("{}: {t}", reason::name(r))));
                            streams.insert(
                                sid,
                                Slot {
                                    hop: s.hop,
                                    dgram: Some(d),
                                    ..Default::default()
                                },
                            );
                        }
                    }
                }
                Ok(())
            }
            rcmd::BEGIN => {
                self.on_inbound_begin(hop, sid);
                Ok(())
            }
            rcmd::ESTABLISH_INTRO..=rcmd::RENDEZVOUS2 => {
                let m = HsMessage::decode(data).map_err(|e| e.to_string())?;
                if let HsMessage::Rendezvous2 { handshake } = &m {
                    let intro = lock(&self.rendezvous)
                        .take()
                        .ok_or("RENDEZVOUS2 on a circuit that expects none")?;
                    let keys = intro
                        .finish(handshake)
                        .map_err(|e| format!("rendezvous handshake: {e}"))?;
                    lock(&self.crypto).add_hop(keys);
                }
                let tx = lock(&self.hs_tx).clone();
                if let Some(tx) = tx {
                    if tx.try_send(m).is_err() {
                        warn!(
                            circ = self.id,
                            "hidden-service messages not read; dropping one"
                        );
                    }
                }
                Ok(())
            }
            rcmd::DATAGRAM => {
                let (from, payload) = cell::decode_datagram(data).map_err(|e| e.to_string())?;
                if let Some(d) = lock(&self.streams).get(&sid).and_then(|s| s.dgram.clone()) {
                    self.bytes_down
                        .fetch_add(payload.len() as u64, Ordering::Relaxed);
                    let _ = d.try_send(Ok((from, Bytes::copy_from_slice(payload))));
                }
                Ok(())
            }
            other => {
                debug!(circ = self.id, hop, "ignoring relay command {other}");
                Ok(())
            }
        }
    }

    /// Opens a TCP stream to `target` at the exit.
    pub async fn open_stream(
        self: &Arc<Self>,
        target: &Target,
        timeout: Duration,
    ) -> Result<BoxStream, ProviderError> {
        let (ctl_tx, ctl_rx) = oneshot::channel();
        let (down_tx, down_rx) = mpsc::channel(STREAM_WINDOW as usize + 2);
        let window = Arc::new(Semaphore::new(STREAM_WINDOW as usize));
        let sid = self.new_stream(Slot {
            ctl: Some(ctl_tx),
            data: Some(down_tx),
            window: Some(window.clone()),
            ..Default::default()
        })?;
        let t = target.to_string();
        self.send_to_hop(self.last_hop(), rcmd::BEGIN, sid, t.as_bytes())
            .await?;
        match tokio::time::timeout(timeout, ctl_rx).await {
            Err(_) => {
                lock(&self.streams).remove(&sid);
                return Err(ProviderError::Timeout(format!(
                    "no answer from the exit for {t}"
                )));
            }
            Ok(Err(_)) => return Err(self.closed_err()),
            Ok(Ok(Ctl::Connected)) => {}
            Ok(Ok(Ctl::End(r, text))) => {
                return Err(if r == reason::DESTROYED {
                    ProviderError::Closed(text)
                } else {
                    ProviderError::Refused {
                        target: t,
                        reason: format!("{}: {text}", reason::name(r)),
                    }
                })
            }
            Ok(Ok(Ctl::Resolved(_))) => {
                return Err(ProviderError::Closed("unexpected RESOLVED".into()))
            }
            Ok(Ok(Ctl::Dht(_))) => {
                return Err(ProviderError::Closed("unexpected DHT_RESPONSE".into()))
            }
        }
        Ok(self.attach_stream(sid, window, down_rx))
    }

    /// A BEGIN from the virtual hop of a rendezvous: the other end opens a stream to us.
    fn on_inbound_begin(self: &Arc<Self>, hop: usize, sid: u32) {
        let tx = lock(&self.inbound).clone();
        let refuse = |why: &'static str| {
            let me = self.clone();
            tokio::spawn(async move {
                let end = cell::encode_end(reason::UNSUPPORTED, why);
                let _ = me.send_to_hop(hop, rcmd::END, sid, &end).await;
            });
        };
        let Some(tx) = tx else {
            return refuse("this circuit accepts no streams");
        };
        if hop != self.last_hop() || sid == 0 || lock(&self.streams).contains_key(&sid) {
            return refuse("bad inbound stream");
        }
        let (down_tx, down_rx) = mpsc::channel(STREAM_WINDOW as usize + 2);
        let window = Arc::new(Semaphore::new(STREAM_WINDOW as usize));
        lock(&self.streams).insert(
            sid,
            Slot {
                hop,
                ctl: None,
                data: Some(down_tx),
                dgram: None,
                window: Some(window.clone()),
            },
        );
        let me = self.clone();
        tokio::spawn(async move {
            if me
                .send_to_hop(hop, rcmd::CONNECTED, sid, &[])
                .await
                .is_err()
            {
                return;
            }
            let stream = me.attach_stream(sid, window, down_rx);
            if tx.send(stream).await.is_err() {
                debug!(circ = me.id, "inbound stream not accepted: nobody listens");
            }
        });
    }

    /// The stream object for an open stream `sid`: a pump task sends what is written as DATA
    /// cells within the stream and circuit windows; reads come from `down`.
    fn attach_stream(
        self: &Arc<Self>,
        sid: u32,
        window: Arc<Semaphore>,
        down_rx: mpsc::Receiver<Down>,
    ) -> BoxStream {
        let (up_tx, mut up_rx) = mpsc::channel::<Option<Bytes>>(8);
        let me = self.clone();
        let pump = tokio::spawn(async move {
            // Coalesces small writes queued meanwhile into one cell (fewer padded cells).
            // Up-channel items: Some(bytes) data, None shutdown (half-close: END(DONE)); the
            // channel closing (stream dropped) sends a full close (END(MISC)).
            let mut pending: Option<Bytes> = None;
            let mut shutdown = false;
            let mut dropped = false;
            let mut buf = Vec::with_capacity(RELAY_DATA_MAX);
            loop {
                let first = match pending.take() {
                    Some(b) => Some(Some(b)),
                    None => up_rx.recv().await,
                };
                let mut half_now = false;
                match first {
                    None => break,
                    Some(None) => {
                        if !shutdown {
                            shutdown = true;
                            let end = cell::encode_end(reason::DONE, "");
                            let _ = me.send_to_hop(me.last_hop(), rcmd::END, sid, &end).await;
                        }
                        continue;
                    }
                    Some(Some(b)) => {
                        buf.clear();
                        buf.extend_from_slice(&b);
                    }
                }
                while buf.len() < RELAY_DATA_MAX {
                    match up_rx.try_recv() {
                        Ok(Some(more)) => {
                            let room = RELAY_DATA_MAX - buf.len();
                            if more.len() <= room {
                                buf.extend_from_slice(&more);
                            } else {
                                buf.extend_from_slice(&more[..room]);
                                pending = Some(more.slice(room..));
                                break;
                            }
                        }
                        Ok(None) => {
                            half_now = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            dropped = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                    }
                }
                let (Ok(p1), Ok(p2)) = (window.acquire().await, me.window.acquire().await) else {
                    return;
                };
                p1.forget();
                p2.forget();
                if me
                    .send_to_hop(me.last_hop(), rcmd::DATA, sid, &buf)
                    .await
                    .is_err()
                {
                    return;
                }
                me.bytes_up.fetch_add(buf.len() as u64, Ordering::Relaxed);
                if half_now && !shutdown {
                    shutdown = true;
                    let end = cell::encode_end(reason::DONE, "");
                    let _ = me.send_to_hop(me.last_hop(), rcmd::END, sid, &end).await;
                }
                if dropped {
                    break;
                }
            }
            let end = cell::encode_end(reason::MISC, "stream closed by the client");
            let _ = me.send_to_hop(me.last_hop(), rcmd::END, sid, &end).await;
        });
        lock(&self.tasks).push(pump.abort_handle());
        Box::pin(CircStream {
            circ: self.clone(),
            sid,
            down: down_rx,
            cur: Bytes::new(),
            consumed: 0,
            done: None,
            up: PollSender::new(up_tx),
            shut: false,
        })
    }

    /// Resolves `name` at the exit.
    pub async fn resolve(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>, ProviderError> {
        let (ctl_tx, ctl_rx) = oneshot::channel();
        let sid = self.new_stream(Slot {
            ctl: Some(ctl_tx),
            ..Default::default()
        })?;
        self.send_to_hop(self.last_hop(), rcmd::RESOLVE, sid, name.as_bytes())
            .await?;
        match tokio::time::timeout(timeout, ctl_rx).await {
            Err(_) => Err(ProviderError::Timeout(format!("resolving {name}"))),
            Ok(Err(_)) => Err(self.closed_err()),
            Ok(Ok(Ctl::Resolved(Ok(v)))) => Ok(v),
            Ok(Ok(Ctl::Resolved(Err(e)))) => Err(ProviderError::Resolve(e)),
            Ok(Ok(Ctl::End(r, t))) => {
                Err(ProviderError::Resolve(format!("{}: {t}", reason::name(r))))
            }
            Ok(Ok(Ctl::Connected)) => Err(ProviderError::Closed("unexpected CONNECTED".into())),
            Ok(Ok(Ctl::Dht(_))) => Err(ProviderError::Closed("unexpected DHT_RESPONSE".into())),
        }
    }

    /// Sends one DHT message to the circuit's last hop (a DHT node) and returns its reply. The DHT
    /// node sees the request arrive from the previous hop, never from this client.
    pub async fn dht_request(
        &self,
        msg: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ProviderError> {
        self.request(rcmd::DHT_REQUEST, msg, timeout, "DHT node")
            .await
    }

    /// Asks the last hop which nodes it knows: verified descriptors, the hop's own first.
    pub async fn directory_request(&self, timeout: Duration) -> Result<Vec<u8>, ProviderError> {
        self.request(rcmd::DIRECTORY_REQUEST, &[], timeout, "directory")
            .await
    }

    /// One request to the last hop on a fresh stream id, answered by one message.
    async fn request(
        &self,
        rc: u8,
        msg: &[u8],
        timeout: Duration,
        what: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let (ctl_tx, ctl_rx) = oneshot::channel();
        let sid = self.new_stream(Slot {
            ctl: Some(ctl_tx),
            ..Default::default()
        })?;
        self.send_to_hop(self.last_hop(), rc, sid, msg).await?;
        match tokio::time::timeout(timeout, ctl_rx).await {
            Err(_) => Err(ProviderError::Timeout(format!("{what} request"))),
            Ok(Err(_)) => Err(self.closed_err()),
            Ok(Ok(Ctl::Dht(b))) => Ok(b),
            Ok(Ok(Ctl::End(r, t))) => Err(ProviderError::Refused {
                target: what.into(),
                reason: format!("{}: {t}", reason::name(r)),
            }),
            Ok(Ok(_)) => Err(ProviderError::Closed(format!(
                "unexpected reply to a {what} request"
            ))),
        }
    }

    /// Opens a datagram association at the exit.
    pub fn open_datagram(self: &Arc<Self>) -> Result<CircDatagram, ProviderError> {
        let (tx, rx) = mpsc::channel(256);
        let sid = self.new_stream(Slot {
            dgram: Some(tx),
            ..Default::default()
        })?;
        Ok(CircDatagram {
            circ: self.clone(),
            sid,
            rx: tokio::sync::Mutex::new(rx),
        })
    }
}

impl Drop for ClientCirc {
    /// The application dropped the circuit and its streams: the relays tear it down on DESTROY
    /// (the link stays for the client's other circuits).
    fn drop(&mut self) {
        if !self.is_closed() {
            self.link
                .queue(cell::destroy_cell(self.circ_id, reason::DONE), None);
        }
        self.link.forget(self.circ_id, self);
    }
}

/// A stream through a circuit. Read errors carry the reason when the circuit dies.
struct CircStream {
    circ: Arc<ClientCirc>,
    sid: u32,
    down: mpsc::Receiver<Down>,
    cur: Bytes,
    consumed: u32,
    done: Option<Result<(), String>>,
    up: PollSender<Option<Bytes>>,
    shut: bool,
}

impl AsyncRead for CircStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.cur.is_empty() {
                let n = self.cur.len().min(buf.remaining());
                buf.put_slice(&self.cur[..n]);
                let _ = self.cur.split_to(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(d) = &self.done {
                return Poll::Ready(match d {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(io::ErrorKind::ConnectionReset, e.clone())),
                });
            }
            match self.down.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Down::Data(b))) => {
                    self.cur = b;
                    self.consumed += 1;
                    if self.consumed == STREAM_SENDME_INC {
                        self.consumed = 0;
                        let (c, sid) = (self.circ.clone(), self.sid);
                        tokio::spawn(async move {
                            let last = c.last_hop();
                            let _ = c.send_to_hop(last, rcmd::SENDME, sid, &[]).await;
                        });
                    }
                }
                Poll::Ready(Some(Down::Eof)) => self.done = Some(Ok(())),
                Poll::Ready(Some(Down::Err(e))) => self.done = Some(Err(e)),
                Poll::Ready(None) => {
                    let e = self
                        .circ
                        .close_reason()
                        .unwrap_or_else(|| "stream closed".into());
                    self.done = Some(Err(format!("circuit closed: {e}")));
                }
            }
        }
    }
}

impl AsyncWrite for CircStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream shut down",
            )));
        }
        if let Some(r) = self.circ.close_reason() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("circuit closed: {r}"),
            )));
        }
        match self.up.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream closed",
            ))),
            Poll::Ready(Ok(())) => {
                let n = buf.len().min(RELAY_DATA_MAX);
                match self.up.send_item(Some(Bytes::copy_from_slice(&buf[..n]))) {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(_) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "stream closed",
                    ))),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shut {
            return Poll::Ready(Ok(()));
        }
        match self.up.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {
                let _ = self.up.send_item(None);
                self.shut = true;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Drop for CircStream {
    fn drop(&mut self) {
        lock(&self.circ.streams).remove(&self.sid);
        // the pump sends END when the up channel closes
    }
}

/// A datagram association through a circuit's exit.
pub struct CircDatagram {
    circ: Arc<ClientCirc>,
    sid: u32,
    rx: tokio::sync::Mutex<mpsc::Receiver<Result<(SocketAddr, Bytes), String>>>,
}

#[async_trait]
impl AnonDatagram for CircDatagram {
    async fn send_to(&self, payload: &[u8], target: &Target) -> Result<(), ProviderError> {
        let addr = match target {
            Target::Addr(a) => *a,
            Target::Host(h, p) => {
                let ips = self.circ.resolve(h, Duration::from_secs(10)).await?;
                let ip = ips
                    .first()
                    .ok_or_else(|| ProviderError::Resolve(format!("{h}: no address")))?;
                SocketAddr::new(*ip, *p)
            }
        };
        let d = cell::encode_datagram(&addr, payload).map_err(|e| {
            ProviderError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
        })?;
        self.circ
            .bytes_up
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.circ
            .send_to_hop(self.circ.last_hop(), rcmd::DATAGRAM, self.sid, &d)
            .await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), ProviderError> {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(Ok((from, b))) => {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                Ok((n, from))
            }
            Some(Err(e)) => Err(ProviderError::Refused {
                target: "datagram".into(),
                reason: e,
            }),
            None => Err(self.circ.closed_err()),
        }
    }
}

impl Drop for CircDatagram {
    fn drop(&mut self) {
        lock(&self.circ.streams).remove(&self.sid);
        let (c, sid) = (self.circ.clone(), self.sid);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = c
                    .send_to_hop(
                        c.last_hop(),
                        rcmd::END,
                        sid,
                        &cell::encode_end(reason::DONE, ""),
                    )
                    .await;
            });
        }
    }
}

/// Bootstrap from an address and a key: builds a one-hop circuit to the node listening at `addr`
/// whose static key is `x25519` (the hop handshake proves it holds that key) and asks which nodes
/// it knows. Returns verified descriptors, the node's own first; every descriptor is checked.
pub async fn fetch_directory(
    addr: SocketAddr,
    x25519: [u8; 32],
    cfg: &ClientConfig,
) -> Result<Vec<Descriptor>, ProviderError> {
    // a stand-in for the unknown descriptor: only the key and the address are used to build
    let probe = Descriptor {
        id: crate::identity::NodeId([0; 32]),
        x25519,
        ed25519: [0; 32],
        addr,
        roles: 0,
        exit_policy: crate::exit::ExitPolicy::reject_all(),
        expires: 0,
        signature: [0; 64],
    };
    let circ = build_circuit(0, vec![probe], cfg).await?;
    circ.set_purpose("bootstrap");
    let reply = circ.directory_request(cfg.stream_timeout).await;
    circ.destroy();
    let ds = crate::descriptor::decode_directory(&reply?, unix_now())
        .map_err(|e| ProviderError::NoCircuit(format!("directory from {addr}: {e}")))?;
    match ds.first() {
        Some(own) if own.x25519 == x25519 => Ok(ds),
        _ => Err(ProviderError::NoCircuit(format!(
            "{addr} did not list its own descriptor first"
        ))),
    }
}

/// Builds one circuit along `path` (already verified descriptors, distinct, chosen by the client),
/// on a link of its own to the first hop (closed with the circuit).
pub async fn build_circuit(
    id: u64,
    path: Vec<Descriptor>,
    cfg: &ClientConfig,
) -> Result<Arc<ClientCirc>, ProviderError> {
    build_circuit_reporting(id, path, cfg, None, |_| {}).await
}

/// [`build_circuit`] on the link `links` keeps to the first hop (None: a private link), telling
/// `first_hop` whether a link to the first hop was open (dialled now or reused).
///
/// A reused link may have died without the reader knowing yet (the guard went away): a build
/// that fails because such a link closed is tried again once on a fresh link, so that a dead
/// link costs no attempt and the guard is judged by the dial.
async fn build_circuit_reporting(
    id: u64,
    path: Vec<Descriptor>,
    cfg: &ClientConfig,
    links: Option<&Arc<LinkPool>>,
    first_hop: impl FnOnce(bool),
) -> Result<Arc<ClientCirc>, ProviderError> {
    let first = path
        .first()
        .ok_or_else(|| ProviderError::NoCircuit("empty path".into()))?
        .clone();
    let mut retried = false;
    loop {
        let linked = tokio::time::timeout(cfg.build_timeout, link_with_id(&first, cfg, links));
        let linked = linked
            .await
            .unwrap_or_else(|_| Err(format!("link to {} timed out", first.addr)));
        let (link, circ_id, reused) = match linked {
            Ok(l) => l,
            Err(e) => {
                first_hop(false);
                return Err(ProviderError::NoCircuit(e));
            }
        };
        let built = build_on(id, &path, cfg, link.clone(), circ_id).await;
        if built.is_err() && reused && !retried && !link.is_open() {
            debug!(
                circ = id,
                "the reused link to the first hop closed; building on a new one"
            );
            retried = true;
            continue;
        }
        first_hop(true);
        return built;
    }
}

/// Builds circuit `id` along `path` under id `circ_id` on `link`; on failure the circuit is torn
/// down (DESTROY), the link stays.
async fn build_on(
    id: u64,
    path: &[Descriptor],
    cfg: &ClientConfig,
    link: Arc<ClientLink>,
    circ_id: u32,
) -> Result<Arc<ClientCirc>, ProviderError> {
    let circ = Arc::new(ClientCirc::new(id, path.to_vec(), link, circ_id));
    circ.link.attach(circ_id, &circ);
    let r = tokio::time::timeout(cfg.build_timeout, extend_all(&circ, path)).await;
    match r {
        Ok(Ok(())) => Ok(circ),
        Ok(Err(e)) => {
            circ.teardown(reason::DONE, e.clone());
            Err(ProviderError::NoCircuit(e))
        }
        Err(_) => {
            circ.teardown(reason::TIMEOUT, "circuit build timed out".into());
            Err(ProviderError::Timeout("circuit build".into()))
        }
    }
}

/// An open link to `first`, a circuit id reserved on it, and whether the link was reused. A
/// shared link found closed between the look-up and the reservation is dialled again, once.
async fn link_with_id(
    first: &Descriptor,
    cfg: &ClientConfig,
    links: Option<&Arc<LinkPool>>,
) -> Result<(Arc<ClientLink>, u32, bool), String> {
    let Some(pool) = links else {
        let link = private_link(first, cfg).await?;
        let id = link.alloc_circ_id()?;
        return Ok((link, id, false));
    };
    let mut last = String::new();
    for _ in 0..2 {
        let (link, reused) = pool.link_to(first).await?;
        match link.alloc_circ_id() {
            Ok(id) => return Ok((link, id, reused)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn extend_all(circ: &Arc<ClientCirc>, path: &[Descriptor]) -> Result<(), String> {
    for (i, hop) in path.iter().enumerate() {
        let t0 = Instant::now();
        let (init, m1) = HopInitiator::start(&hop.x25519).map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        *lock(&circ.pending) = Some(tx);
        if i == 0 {
            let mut body = HTYPE_NK.to_be_bytes().to_vec();
            body.extend_from_slice(&(m1.len() as u16).to_be_bytes());
            body.extend_from_slice(&m1);
            let mut c = cell::new_cell(circ.circ_id, cmd::CREATE);
            cell::body_mut(&mut c)[..body.len()].copy_from_slice(&body);
            let credit = circ.link.reserve().await?;
            if !circ.link.queue(c, Some(credit)) {
                return Err(circ.link_closed());
            }
        } else {
            let ext = cell::Extend {
                node_id: hop.id.0,
                x25519: hop.x25519,
                ed25519: hop.ed25519,
                addr: hop.addr,
                handshake: m1,
            };
            circ.send_early(i - 1, rcmd::EXTEND, &ext.encode())
                .await
                .map_err(|e| e.to_string())?;
        }
        let reply = rx.await.map_err(|_| {
            circ.close_reason()
                .unwrap_or_else(|| "circuit closed while building".into())
        })??;
        let keys = init
            .finish(&reply)
            .map_err(|e| format!("hop {} handshake: {e}", hop.id.short()))?;
        lock(&circ.crypto).add_hop(keys);
        *lock(&circ.rtt) = t0.elapsed();
    }
    Ok(())
}

/// Whether a circuit build counts for its guard's path bias: only circuits whose every hop this
/// client chose itself (exit circuits); not those to a last hop someone else named.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathBiasCount {
    Yes,
    No,
}

struct ClientInner {
    cfg: ClientConfig,
    directory: Mutex<Vec<Descriptor>>,
    pool: tokio::sync::Mutex<Vec<Arc<ClientCirc>>>,
    assigned: Mutex<HashMap<IsolationKey, Arc<ClientCirc>>>,
    all: Mutex<Vec<std::sync::Weak<ClientCirc>>>,
    next_id: AtomicU64,
    build_lock: tokio::sync::Mutex<()>,
    /// One link per first hop, shared by every circuit through it. Declared last: dropped after
    /// the pooled and assigned circuits, so that links they leave empty close at once.
    links: Arc<LinkPool>,
}

/// The overlay client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl Client {
    /// Creates a client; descriptors that do not verify are dropped (with a warning).
    pub fn new(cfg: ClientConfig, directory: Vec<Descriptor>) -> Client {
        let c = Client {
            inner: Arc::new(ClientInner {
                links: LinkPool::new(&cfg),
                cfg,
                directory: Mutex::new(Vec::new()),
                pool: tokio::sync::Mutex::new(Vec::new()),
                assigned: Mutex::new(HashMap::new()),
                all: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                build_lock: tokio::sync::Mutex::new(()),
            }),
        };
        c.set_directory(directory);
        c
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// The verified descriptors this client builds circuits from.
    pub fn directory(&self) -> Vec<Descriptor> {
        lock(&self.inner.directory).clone()
    }

    /// Replaces the directory with the descriptors that verify now.
    pub fn set_directory(&self, directory: Vec<Descriptor>) {
        let now = unix_now();
        let ok: Vec<Descriptor> = directory
            .into_iter()
            .filter(|d| match d.verify(now) {
                Ok(()) => true,
                Err(e) => {
                    warn!(node = %d.id.short(), "dropping descriptor: {e}");
                    false
                }
            })
            .collect();
        *lock(&self.inner.directory) = ok;
    }

    /// Builds a fresh circuit of `hops` hops (not from the pool).
    /// Builds a circuit of `hops` hops whose last hop is `last` (e.g. a DHT node), the others
    /// chosen at random from the directory.
    pub async fn circuit_ending_at(
        &self,
        last: &Descriptor,
        hops: usize,
    ) -> Result<Arc<ClientCirc>, ProviderError> {
        if !(1..=3).contains(&hops) {
            return Err(ProviderError::NoCircuit(format!(
                "hop count must be 1, 2 or 3, not {hops}"
            )));
        }
        last.verify(crate::descriptor::unix_now())
            .map_err(|e| ProviderError::NoCircuit(format!("last hop's descriptor: {e}")))?;
        let path = self.choose(hops, Some(last))?;
        // the last hop was named by someone else (a rendezvous point, a DHT contact): its
        // failures say nothing about the guard (Tor's pathbias_should_count leaves out the same)
        self.build_tracked(path, PathBiasCount::No).await
    }

    pub async fn build_circuit(&self, hops: usize) -> Result<Arc<ClientCirc>, ProviderError> {
        let path = self.choose(hops, None)?;
        self.build_tracked(path, PathBiasCount::Yes).await
    }

    /// A path from the directory: guard first (2-3 hops), random relays, `last` or an exit.
    fn choose(
        &self,
        hops: usize,
        last: Option<&Descriptor>,
    ) -> Result<Vec<Descriptor>, ProviderError> {
        let guards = self.inner.cfg.guards.as_ref();
        let path = {
            let dir = lock(&self.inner.directory);
            choose_path_with(&dir, hops, last, |d, exclude| {
                guards.map(|g| g.pick(d, exclude, unix_now())).transpose()
            })
        };
        if let Some(g) = guards {
            g.save_if_changed();
        }
        path.map_err(|e| ProviderError::NoCircuit(e.to_string()))
    }

    /// Each sampled entry guard: primary or not, down or not, path bias (empty without guards).
    pub fn guard_status(&self) -> Vec<crate::guards::GuardStatus> {
        let Some(g) = &self.inner.cfg.guards else {
            return Vec::new();
        };
        let dir = lock(&self.inner.directory).clone();
        g.status(&dir, unix_now())
    }

    /// The entry guards in order of preference (empty without guards).
    pub fn guards(&self) -> Vec<crate::identity::NodeId> {
        self.inner
            .cfg
            .guards
            .as_ref()
            .map(|g| g.ids())
            .unwrap_or_default()
    }

    /// Builds a circuit along `path` and lists it for the dashboard.
    async fn build_tracked(
        &self,
        path: Vec<Descriptor>,
        bias: PathBiasCount,
    ) -> Result<Arc<ClientCirc>, ProviderError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // a guard that does not answer is skipped for a while (only guards: other first hops
        // of 1-hop circuits are exits and DHT nodes, tracked by nobody)
        let first = path.first().map(|d| d.id);
        let path_len = path.len();
        let guards = self.inner.cfg.guards.clone();
        let linked = AtomicBool::new(false);
        let report = |ok: bool| {
            linked.store(ok, Ordering::Relaxed);
            if let (Some(g), Some(id)) = (&guards, first) {
                if ok {
                    g.succeeded(&id);
                } else {
                    g.failed(&id, unix_now());
                }
            }
        };
        let links = Some(&self.inner.links);
        let built = build_circuit_reporting(id, path, &self.inner.cfg, links, report).await;
        // a build that failed after the guard's link opened only counts for path bias: it never
        // puts the guard down (anyone can make builds fail past it)
        let guarded = guards.is_some() && path_len > 1 && bias == PathBiasCount::Yes;
        if let (Some(g), Some(first), true) = (&guards, first, linked.load(Ordering::Relaxed)) {
            if guarded {
                g.built(&first, built.is_ok());
                g.save_if_changed();
            }
        }
        let c = built?;
        if let (Some(g), Some(first), true) = (guards, first, guarded) {
            c.set_guard(g, first);
        }
        let mut all = lock(&self.inner.all);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&c));
        Ok(c)
    }

    /// Builds a circuit, choosing a new path after a failure (a dead relay), up to 3 attempts.
    pub async fn build_with_retries(&self, hops: usize) -> Result<Arc<ClientCirc>, ProviderError> {
        let mut last = None;
        for _ in 0..3 {
            match self.build_circuit(hops).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    debug!("circuit build failed, retrying: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ProviderError::NoCircuit("no attempt".into())))
    }

    /// Fills the pool up to `pool_size` pre-built circuits.
    pub async fn fill_pool(&self) -> Result<(), ProviderError> {
        loop {
            {
                let mut p = self.inner.pool.lock().await;
                p.retain(|c| !c.is_closed());
                if p.len() >= self.inner.cfg.pool_size {
                    return Ok(());
                }
            }
            let c = self.build_circuit(self.inner.cfg.hops).await?;
            *lock(&c.purpose) = "pooled".into();
            self.inner.pool.lock().await.push(c);
        }
    }

    /// The circuit for `iso`: the one already assigned if alive, else a pooled or fresh one.
    pub async fn circuit_for(&self, iso: IsolationKey) -> Result<Arc<ClientCirc>, ProviderError> {
        if let Some(c) = lock(&self.inner.assigned).get(&iso) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        // One build at a time per client: concurrent requests for the same key share the result.
        let _g = self.inner.build_lock.lock().await;
        if let Some(c) = lock(&self.inner.assigned).get(&iso) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let pooled = {
            let mut p = self.inner.pool.lock().await;
            p.retain(|c| !c.is_closed());
            p.pop()
        };
        let c = match pooled {
            Some(c) => c,
            None => self.build_with_retries(self.inner.cfg.hops).await?,
        };
        *lock(&c.purpose) = format!("exit (isolation {})", iso.0);
        lock(&self.inner.assigned).insert(iso, c.clone());
        if self.inner.cfg.pool_size > 0 {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.fill_pool().await {
                    debug!("pool refill failed: {e}");
                }
            });
        }
        Ok(c)
    }

    /// Builds a circuit along `path` (first hop first, distinct nodes; every descriptor must
    /// verify), on this client's link to the first hop like every other circuit of the client.
    pub async fn build_along(
        &self,
        path: Vec<Descriptor>,
    ) -> Result<Arc<ClientCirc>, ProviderError> {
        let now = unix_now();
        for d in &path {
            d.verify(now).map_err(|e| {
                ProviderError::NoCircuit(format!("descriptor of {}: {e}", d.id.short()))
            })?;
        }
        self.build_tracked(path, PathBiasCount::No).await
    }

    /// Open links of this client (at most one per first hop it has circuits through).
    pub fn link_count(&self) -> usize {
        self.inner.links.open_count()
    }

    /// TESTING (the hostile-node kit): every link of this client stops reading its socket
    /// (`true`), so the TCP receive window fills as with a client that does not read; `false`
    /// resumes. Circuits built meanwhile on new links do not read either.
    #[cfg(feature = "hostile")]
    pub fn hostile_stop_reading(&self, stop: bool) {
        self.inner.links.stop_reading(stop);
    }

    /// Circuits for the dashboard.
    pub fn circuits(&self) -> Vec<CircuitInfo> {
        lock(&self.inner.all)
            .iter()
            .filter_map(|w| w.upgrade())
            .map(|c| c.info())
            .collect()
    }
}

#[async_trait]
impl AnonProvider for Client {
    fn name(&self) -> &'static str {
        "overlay"
    }

    async fn connect(
        &self,
        target: &Target,
        iso: IsolationKey,
    ) -> Result<BoxStream, ProviderError> {
        let c = self.circuit_for(iso).await?;
        c.open_stream(target, self.inner.cfg.stream_timeout).await
    }

    async fn datagram(&self, iso: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
        let c = self.circuit_for(iso).await?;
        Ok(Box::new(c.open_datagram()?))
    }

    async fn resolve(&self, name: &str, iso: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
        let c = self.circuit_for(iso).await?;
        c.resolve(name, self.inner.cfg.stream_timeout).await
    }
}

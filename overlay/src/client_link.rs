//! A client's links, as Tor has its channels: one link to a first hop carries every circuit the
//! client builds through it, each under its own circuit id from the dialer's half.
//!
//! A link is reused only while it is open and only for a descriptor naming the same node id and
//! the same x25519 key the link handshake authenticated. One reader task per link peels the link
//! layer and hands each cell to its circuit ([`ClientCirc::dispatch`], which never waits); one
//! writer task seals and writes the queue. A circuit's failure destroys that circuit alone; the
//! link's failure closes every circuit on it, with a reason naming the first hop.
//!
//! The write queue: senders that may wait (stream pumps, handshakes) first take one credit of
//! [`LINK_QUEUE`], given back when the writer has written their cell, so the link still applies
//! backpressure. The reader never waits (a wait there would stall every circuit of the link on
//! one): its cells (circuit SENDMEs, DESTROYs, the END of a stream that overran its window) go
//! into the same FIFO without credit, as do the DESTROYs of dropped circuits. That uncredited
//! part is bounded all the same: a circuit SENDME is sent once per `CIRC_SENDME_INC` DATA cells
//! received, and the relay sends no more than a circuit window before it has our SENDMEs (more
//! destroys the circuit), so at most `CIRC_WINDOW / CIRC_SENDME_INC` (4) wait per circuit, plus
//! one DESTROY per circuit and one END per stream. A single FIFO (not a priority lane) keeps
//! each circuit's cells in the order they were sealed, which its relay crypto requires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tracing::debug;

use crate::cell::{self, cmd, reason, CellBuf, WIRE_CELL};
use crate::client::{ClientCirc, ClientConfig};
use crate::descriptor::Descriptor;
use crate::identity::{Identity, NodeId};
use crate::link::{LinkCipher, LinkDir};
use crate::node::{dial_link, lock, LINK_QUEUE};

/// A link left with no circuit is closed after this long (or after the client's idle timeout if
/// that is shorter): long enough to carry the next circuit through the same guard, short enough
/// not to hold the guard's resources for a client that has gone quiet.
pub const EMPTY_LINK_IDLE: Duration = Duration::from_secs(60);
/// After a link is closed, its writer has this long to flush what is queued (DESTROYs) before it
/// is aborted (a peer that does not read must not keep the task and socket forever).
const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// Cells sealed into one write.
const WRITE_BATCH: usize = 16;
/// Circuit ids are `CIRC_ID_DIALER_BIT | n` with `n` in `1..=MAX_CIRC_N`.
const MAX_CIRC_N: u32 = !cell::CIRC_ID_DIALER_BIT;

/// What a link is looked up by: the first hop's id and the key its handshake authenticated.
type LinkKey = (NodeId, [u8; 32]);

/// One unit of write-queue credit (see the module comment), returned when its cell is written.
pub(crate) struct Credit(OwnedSemaphorePermit);

/// A queued cell and the credit its sender held (None: the reader's cells).
struct Queued {
    cell: CellBuf,
    _credit: Option<OwnedSemaphorePermit>,
}

#[derive(Clone, Copy)]
struct Timers {
    keepalive: Duration,
    /// Nothing read for this long: the link is dead.
    read_idle: Duration,
    /// No circuit for this long: the link is closed.
    empty_idle: Duration,
    /// Firewall mark of the link's socket (`ClientConfig::link_mark`).
    mark: Option<u32>,
}

impl Timers {
    fn new(cfg: &ClientConfig) -> Timers {
        Timers {
            keepalive: cfg.keepalive,
            read_idle: cfg.idle_timeout,
            empty_idle: cfg.idle_timeout.min(EMPTY_LINK_IDLE),
            mark: cfg.link_mark,
        }
    }
}

struct LinkState {
    /// The circuits on this link by id (weak: an application dropping its circuit tears it
    /// down, see `ClientCirc`'s Drop). An id being built holds a dangling `Weak::new()`.
    circuits: HashMap<u32, Weak<ClientCirc>>,
    next_n: u32,
    /// When the last circuit left (None while there are circuits).
    empty_since: Option<Instant>,
    closed: Option<String>,
}

impl LinkState {
    fn new() -> LinkState {
        LinkState {
            circuits: HashMap::new(),
            next_n: 1,
            empty_since: Some(Instant::now()),
            closed: None,
        }
    }

    /// The next id in counting order that no circuit uses, reserved (counting on rather than
    /// taking the lowest free id: cells of a circuit just destroyed may still be on the way).
    fn reserve_id(&mut self) -> Option<u32> {
        // among len + 1 distinct candidates one is free
        for _ in 0..=self.circuits.len() {
            let id = cell::CIRC_ID_DIALER_BIT | self.next_n;
            self.next_n = if self.next_n >= MAX_CIRC_N {
                1
            } else {
                self.next_n + 1
            };
            if let std::collections::hash_map::Entry::Vacant(e) = self.circuits.entry(id) {
                e.insert(Weak::new());
                self.empty_since = None;
                return Some(id);
            }
        }
        None
    }
}

/// One link from this client to a first hop.
pub(crate) struct ClientLink {
    key: LinkKey,
    /// The first hop's short id, for close reasons and logs.
    name: String,
    /// The writer's queue; taken on close, so the writer flushes what is queued and ends.
    tx: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
    credit: Arc<Semaphore>,
    state: Mutex<LinkState>,
    /// A private link (the free `build_circuit`) closes with its only circuit.
    close_when_empty: bool,
    timers: Timers,
    reader: Mutex<Option<AbortHandle>>,
    writer: Mutex<Option<AbortHandle>>,
    pool: Weak<LinkPool>,
}

impl ClientLink {
    /// Dials `first` with a fresh link key and starts the link's reader and writer.
    async fn dial(
        first: &Descriptor,
        timers: Timers,
        close_when_empty: bool,
        stop: watch::Receiver<bool>,
        pool: Weak<LinkPool>,
    ) -> Result<Arc<ClientLink>, String> {
        let link_key = Identity::generate().x25519_secret_bytes();
        let (sock, cipher) = dial_link(&link_key, &first.x25519, first.addr, timers.mark).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(ClientLink {
            key: (first.id, first.x25519),
            name: first.id.short(),
            tx: Mutex::new(Some(tx)),
            credit: Arc::new(Semaphore::new(LINK_QUEUE)),
            state: Mutex::new(LinkState::new()),
            close_when_empty,
            timers,
            reader: Mutex::new(None),
            writer: Mutex::new(None),
            pool,
        });
        let (rd, wr) = sock.into_split();
        let LinkCipher { send, recv } = cipher;
        let l2 = link.clone();
        let writer = tokio::spawn(async move {
            if let Err(e) = write_loop(wr, send, rx, timers.keepalive).await {
                l2.close(format!("link to first hop {} failed: {e}", l2.name));
            }
        });
        *lock(&link.writer) = Some(writer.abort_handle());
        let l2 = link.clone();
        let reader = tokio::spawn(async move {
            let why = read_loop(&l2, rd, recv, stop).await;
            l2.close(why);
        });
        *lock(&link.reader) = Some(reader.abort_handle());
        debug!(first_hop = %link.name, "link opened");
        Ok(link)
    }

    pub(crate) fn is_open(&self) -> bool {
        lock(&self.state).closed.is_none()
    }

    /// Reserves a circuit id from the dialer's half that no circuit on this link uses.
    pub(crate) fn alloc_circ_id(&self) -> Result<u32, String> {
        let mut st = lock(&self.state);
        if let Some(why) = &st.closed {
            return Err(why.clone());
        }
        st.reserve_id()
            .ok_or_else(|| format!("no free circuit id on the link to {}", self.name))
    }

    /// Registers the circuit for the id [`alloc_circ_id`](Self::alloc_circ_id) reserved.
    pub(crate) fn attach(&self, id: u32, circ: &Arc<ClientCirc>) {
        let mut st = lock(&self.state);
        if st.closed.is_none() {
            st.circuits.insert(id, Arc::downgrade(circ));
        }
    }

    /// Removes circuit `id` if it is still `me` (never another circuit given the id since).
    pub(crate) fn forget(self: &Arc<Self>, id: u32, me: *const ClientCirc) {
        let close_now = {
            let mut st = lock(&self.state);
            if st.circuits.get(&id).is_some_and(|w| w.as_ptr() == me) {
                st.circuits.remove(&id);
            }
            let empty = st.circuits.is_empty() && st.closed.is_none();
            if empty && st.empty_since.is_none() {
                st.empty_since = Some(Instant::now());
            }
            empty && self.close_when_empty
        };
        if close_now {
            self.close(format!(
                "link to first hop {}: its circuit closed",
                self.name
            ));
        }
    }

    fn circuit(&self, id: u32) -> Option<Arc<ClientCirc>> {
        lock(&self.state).circuits.get(&id).and_then(Weak::upgrade)
    }

    /// Waits for one unit of queue credit; an error when the link has closed.
    pub(crate) async fn reserve(&self) -> Result<Credit, String> {
        self.credit
            .clone()
            .acquire_owned()
            .await
            .map(Credit)
            .map_err(|_| self.close_reason())
    }

    /// Queues `c` (with `credit`, or none for the reader's own cells and DESTROYs); false if the
    /// link has closed.
    pub(crate) fn queue(&self, c: CellBuf, credit: Option<Credit>) -> bool {
        match lock(&self.tx).as_ref() {
            Some(tx) => tx
                .send(Queued {
                    cell: c,
                    _credit: credit.map(|k| k.0),
                })
                .is_ok(),
            None => false,
        }
    }

    fn close_reason(&self) -> String {
        lock(&self.state)
            .closed
            .clone()
            .unwrap_or_else(|| format!("link to first hop {} closed", self.name))
    }

    /// Closes the link: every circuit on it closes with `why`; queued cells are still flushed.
    pub(crate) fn close(self: &Arc<Self>, why: String) {
        self.close_if(why, |_| true);
    }

    /// [`close`](Self::close) if `cond` holds, decided under the state lock (so that no circuit
    /// can be added between the check and the close).
    fn close_if(self: &Arc<Self>, why: String, cond: impl FnOnce(&LinkState) -> bool) -> bool {
        let circs: Vec<Weak<ClientCirc>> = {
            let mut st = lock(&self.state);
            if st.closed.is_some() || !cond(&st) {
                return false;
            }
            st.closed = Some(why.clone());
            st.circuits.drain().map(|(_, w)| w).collect()
        };
        debug!(first_hop = %self.name, "link closed: {why}");
        self.credit.close();
        lock(&self.tx).take();
        for c in circs.iter().filter_map(Weak::upgrade) {
            c.close(why.clone());
        }
        if let Some(h) = lock(&self.reader).take() {
            h.abort();
        }
        if let Some(h) = lock(&self.writer).take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(async move {
                    tokio::time::sleep(FLUSH_GRACE).await;
                    h.abort();
                })),
                Err(_) => h.abort(),
            }
        }
        if let Some(p) = self.pool.upgrade() {
            let mut links = lock(&p.links);
            if links.get(&self.key).is_some_and(|l| Arc::ptr_eq(l, self)) {
                links.remove(&self.key);
            }
        }
        true
    }

    /// Closes the link if it has had no circuit for `empty_idle`.
    fn close_if_unused(self: &Arc<Self>) -> bool {
        let limit = self.timers.empty_idle;
        self.close_if(
            format!("link to first hop {}: no circuit for {limit:?}", self.name),
            |st| st.circuits.is_empty() && st.empty_since.is_some_and(|t| t.elapsed() >= limit),
        )
    }
}

/// Hands one cell to its circuit. A cell the circuit refuses destroys that circuit only.
fn deliver(link: &ClientLink, c: CellBuf) {
    let id = cell::circ_id(&c);
    let command = cell::command(&c);
    if command == cmd::PADDING {
        return;
    }
    let Some(circ) = link.circuit(id) else {
        debug!(first_hop = %link.name, circ_id = id, "cell for no circuit of ours; ignored");
        return;
    };
    if command == cmd::DESTROY {
        circ.close(format!(
            "circuit destroyed by a relay ({})",
            reason::name(c[5])
        ));
        return;
    }
    if let Err(e) = circ.dispatch(c) {
        link.queue(cell::destroy_cell(id, reason::PROTOCOL), None);
        circ.refused_cell();
        circ.close(e);
    }
}

/// Reads and dispatches cells until the link fails; why it ended.
async fn read_loop(
    link: &Arc<ClientLink>,
    mut rd: OwnedReadHalf,
    mut recv: LinkDir,
    mut stop: watch::Receiver<bool>,
) -> String {
    let name = &link.name;
    let t = link.timers;
    let mut tick = tokio::time::interval((t.read_idle.min(t.empty_idle) / 4).max(MIN_TICK));
    let mut buf = vec![0u8; WIRE_CELL * 8];
    let mut filled = 0;
    let mut last_read = Instant::now();
    loop {
        if *stop.borrow() {
            // the hostile kit's client that does not read: the socket's receive window fills
            debug!(first_hop = %name, "link stops reading");
            let _ = stop.wait_for(|s| !*s).await;
            debug!(first_hop = %name, "link reads again");
            last_read = Instant::now();
        }
        let n = tokio::select! {
            r = rd.read(&mut buf[filled..]) => match r {
                Ok(0) => return format!("link to first hop {name} closed"),
                Ok(n) => n,
                Err(e) => return format!("link to first hop {name} failed: {e}"),
            },
            _ = stop_requested(&mut stop) => continue,
            _ = tick.tick() => {
                if last_read.elapsed() >= t.read_idle {
                    return format!("link to first hop {name}: idle timeout");
                }
                if link.close_if_unused() {
                    return String::new();
                }
                continue;
            }
        };
        last_read = Instant::now();
        filled += n;
        let mut off = 0;
        while filled - off >= WIRE_CELL {
            let c = match recv.open(&buf[off..off + WIRE_CELL]) {
                Ok(c) => c,
                Err(e) => return format!("link to first hop {name}: {e}"),
            };
            off += WIRE_CELL;
            deliver(link, c);
        }
        buf.copy_within(off..filled, 0);
        filled -= off;
    }
}

/// Returns when the hostile kit asks the link to stop reading (never if it cannot any more).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let gone = stop.wait_for(|s| *s).await.is_err();
    if gone {
        std::future::pending::<()>().await;
    }
}

/// The reader's shortest check period (idle timeouts).
const MIN_TICK: Duration = Duration::from_millis(50);

/// Seals and writes queued cells in batches (PADDING after `keepalive` of silence) until the queue
/// closes (Ok: the link was closed) or a write fails.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut send: LinkDir,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    keepalive: Duration,
) -> Result<(), std::io::Error> {
    let mut out = Vec::with_capacity(WIRE_CELL * WRITE_BATCH);
    // credits are given back only once their cells are written: the queue's backpressure
    let mut written = Vec::with_capacity(WRITE_BATCH);
    loop {
        let first = match tokio::time::timeout(keepalive, rx.recv()).await {
            Ok(Some(q)) => q,
            Ok(None) => break,
            Err(_) => Queued {
                cell: cell::new_cell(0, cmd::PADDING),
                _credit: None,
            },
        };
        // a spent frame counter ends the link rather than reuse a nonce
        let spent = |e| std::io::Error::other(e);
        send.try_seal_into(&first.cell, &mut out).map_err(spent)?;
        written.push(first);
        while written.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(q) => {
                    send.try_seal_into(&q.cell, &mut out).map_err(spent)?;
                    written.push(q);
                }
                Err(_) => break,
            }
        }
        wr.write_all(&out).await?;
        out.clear();
        written.clear();
    }
    let _ = wr.shutdown().await;
    Ok(())
}

/// A client's shared links, one per first hop (by id and key).
pub(crate) struct LinkPool {
    timers: Timers,
    links: Mutex<HashMap<LinkKey, Arc<ClientLink>>>,
    /// One dial at a time per key, so that concurrent builds through one guard share a link.
    /// Entries stay (one per first hop ever used: bounded by the directory).
    dialing: Mutex<HashMap<LinkKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The hostile kit's switch: true makes every link of the pool stop reading.
    stop_reading: watch::Sender<bool>,
}

impl LinkPool {
    pub(crate) fn new(cfg: &ClientConfig) -> Arc<LinkPool> {
        Arc::new(LinkPool {
            timers: Timers::new(cfg),
            links: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            stop_reading: watch::channel(false).0,
        })
    }

    /// The open link to `first` (same id and key), dialled if there is none; true if reused.
    pub(crate) async fn link_to(
        self: &Arc<Self>,
        first: &Descriptor,
    ) -> Result<(Arc<ClientLink>, bool), String> {
        let key = (first.id, first.x25519);
        if let Some(l) = self.open_link(&key) {
            return Ok((l, true));
        }
        let gate = lock(&self.dialing).entry(key).or_default().clone();
        let _g = gate.lock().await;
        if let Some(l) = self.open_link(&key) {
            return Ok((l, true));
        }
        let stop = self.stop_reading.subscribe();
        let link = ClientLink::dial(first, self.timers, false, stop, Arc::downgrade(self)).await?;
        lock(&self.links).insert(key, link.clone());
        Ok((link, false))
    }

    fn open_link(&self, key: &LinkKey) -> Option<Arc<ClientLink>> {
        lock(&self.links).get(key).filter(|l| l.is_open()).cloned()
    }

    /// Open links.
    pub(crate) fn open_count(&self) -> usize {
        lock(&self.links).values().filter(|l| l.is_open()).count()
    }

    /// The hostile kit: every link of this pool stops reading its socket (true) or resumes.
    #[cfg(feature = "hostile")]
    pub(crate) fn stop_reading(&self, stop: bool) {
        self.stop_reading.send_replace(stop);
    }
}

impl Drop for LinkPool {
    /// The client is gone: its links without circuits close now (the others close with their
    /// last circuit's idle period).
    fn drop(&mut self) {
        let links: Vec<Arc<ClientLink>> = lock(&self.links).drain().map(|(_, l)| l).collect();
        for l in links {
            l.close_if("the client closed".into(), |st| st.circuits.is_empty());
        }
    }
}

/// A link of its own for one circuit (the free `build_circuit`): closed with that circuit.
pub(crate) async fn private_link(
    first: &Descriptor,
    cfg: &ClientConfig,
) -> Result<Arc<ClientLink>, String> {
    let (_never, stop) = watch::channel(false);
    ClientLink::dial(first, Timers::new(cfg), true, stop, Weak::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_ids_are_the_dialers_count_on_and_skip_ids_in_use() {
        let mut st = LinkState::new();
        let a = st.reserve_id().unwrap();
        let b = st.reserve_id().unwrap();
        assert!(cell::is_dialer_circ_id(a) && cell::is_dialer_circ_id(b));
        assert_eq!(
            (a, b),
            (cell::CIRC_ID_DIALER_BIT | 1, cell::CIRC_ID_DIALER_BIT | 2)
        );
        // a freed id is not handed out again at once
        st.circuits.remove(&a);
        assert_eq!(st.reserve_id(), Some(cell::CIRC_ID_DIALER_BIT | 3));
        // wrapping around skips the ids still in use and never yields the bare dialer bit
        st.next_n = MAX_CIRC_N;
        assert_eq!(st.reserve_id(), Some(u32::MAX));
        assert_eq!(st.reserve_id(), Some(cell::CIRC_ID_DIALER_BIT | 1));
        assert_eq!(st.reserve_id(), Some(cell::CIRC_ID_DIALER_BIT | 4));
        assert!(st.empty_since.is_none());
    }
}

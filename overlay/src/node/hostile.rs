//! The hostile-node kit (feature `hostile`, for tests only): a running [`Node`] that a test
//! script makes misbehave as a relay would, to show each defence of the client and of honest
//! relays. Nothing here is compiled into a normal build.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{lock, Node, RelayCirc};
use crate::identity::NodeId;

/// Which of a hostile node's circuits an injection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuits {
    /// Every circuit this node is a hop of (as a guard, a middle or a last hop).
    All,
    /// Only the circuits this node joined as a rendezvous point.
    Joined,
}

impl Node {
    /// Originates the backward relay message `rc` on `stream` with payload `data`, sealed with
    /// this hop's own keys, on each live circuit of `which` (exactly what a dishonest relay
    /// can do). Returns how many cells went out.
    pub fn hostile_inject(&self, which: Circuits, rc: u8, stream: u32, data: &[u8]) -> usize {
        let circs: Vec<Arc<RelayCirc>> = lock(&self.inner.hostile_circs)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut sent = 0;
        for circ in circs {
            let mut st = lock(&circ.st);
            if st.destroyed || (which == Circuits::Joined && st.joined.is_none()) {
                continue;
            }
            if let Ok(c) = st.hop.originate(circ.prev_id, rc, stream, data) {
                if super::enqueue(&self.inner, &circ.prev, circ.prev_id, c).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Circuits this node has been a hop of that are still alive.
    pub fn hostile_live_circuits(&self) -> usize {
        lock(&self.inner.hostile_circs)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !lock(&c.st).destroyed)
            .count()
    }

    /// The nodes this node keeps an open outbound link to, by the id each is stored under.
    pub async fn outbound_link_ids(&self) -> Vec<NodeId> {
        self.inner
            .out_links
            .lock()
            .await
            .iter()
            .filter(|(_, l)| !l.closed.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Remembers a new relay circuit (the kit's registry; pruned of dead entries as it grows).
pub(super) fn register(node: &super::NodeInner, circ: &Arc<RelayCirc>) {
    let mut v = lock(&node.hostile_circs);
    if v.len() > 4096 {
        v.retain(|w| w.strong_count() > 0);
    }
    v.push(Arc::downgrade(circ));
}

impl Node {
    /// Stops (or resumes) handling every relay message addressed to this node: it keeps
    /// relaying cells for other hops, but as an exit, DHT node or point it answers nothing (a
    /// stalling hop).
    pub fn hostile_stall(&self, stall: bool) {
        self.inner.hostile_stall.store(stall, Ordering::Relaxed);
    }

    /// Makes this relay destroy every circuit that asks it to EXTEND (it drops every circuit
    /// built through it: broken, overloaded, or steering clients away from itself).
    pub fn hostile_refuse_extend(&self, refuse: bool) {
        self.inner
            .hostile_refuse_extend
            .store(refuse, Ordering::Relaxed);
    }
}

/// What a hostile relay does to the cells it passes forward (towards the exit).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mangle {
    /// Passes them on as an honest relay does.
    #[default]
    None,
    /// Sends every cell twice (a replay).
    Replay,
    /// Holds one cell back and sends it after the next (a reorder).
    Reorder(Option<Vec<u8>>),
}

impl Node {
    /// Makes this relay replay or reorder the relay cells it forwards (`Mangle::None` stops).
    pub fn hostile_mangle(&self, m: Mangle) {
        *lock(&self.inner.hostile_mangle) = m;
    }
}

/// The cells to forward in place of `c`.
pub(super) fn mangle_forward(node: &super::NodeInner, c: Vec<u8>) -> Vec<Vec<u8>> {
    let mut m = lock(&node.hostile_mangle);
    match &mut *m {
        Mangle::None => vec![c],
        Mangle::Replay => vec![c.clone(), c],
        Mangle::Reorder(held) => match held.take() {
            None => {
                *held = Some(c);
                Vec::new()
            }
            Some(h) => vec![c, h],
        },
    }
}

/// A link the test drives cell by cell: what a hostile client or relay sends on the wire.
pub struct RawLink {
    sock: tokio::net::TcpStream,
    cipher: crate::link::LinkCipher,
    buf: Vec<u8>,
}

impl RawLink {
    /// Dials the node at `addr` whose static key is `x25519` (a fresh key of our own).
    pub async fn dial(addr: std::net::SocketAddr, x25519: &[u8; 32]) -> std::io::Result<RawLink> {
        let key = crate::identity::Identity::generate().x25519_secret_bytes();
        let (sock, cipher) = super::dial_link(&key, x25519, addr, None)
            .await
            .map_err(std::io::Error::other)?;
        Ok(RawLink {
            sock,
            cipher,
            buf: Vec::new(),
        })
    }

    /// Seals and sends one cell.
    pub async fn send(&mut self, cell: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut wire = Vec::new();
        self.cipher.send.seal_into(cell, &mut wire);
        self.sock.write_all(&wire).await
    }

    /// The next cell that is not PADDING, if one arrives within `timeout`.
    pub async fn recv(&mut self, timeout: std::time::Duration) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while self.buf.len() >= crate::cell::WIRE_CELL {
                let frame: Vec<u8> = self.buf.drain(..crate::cell::WIRE_CELL).collect();
                let c = self.cipher.recv.open(&frame).ok()?;
                if crate::cell::command(&c) != crate::cell::cmd::PADDING {
                    return Some(c);
                }
            }
            let mut chunk = vec![0u8; crate::cell::WIRE_CELL];
            let n = tokio::time::timeout_at(deadline, self.sock.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

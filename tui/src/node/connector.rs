//! The share engine's connector in anonymous mode: streams on overlay circuits.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use overlay::hidden::HiddenConfig;
use overlay::{AnonProvider, IsolationKey, ProviderError, Target};
use share::connector::{BoxedStream, Connector, DatagramAssoc, PeerAddr};

use super::hidden::HiddenPeers;

/// One overlay client per hop count (1, 2, 3), sharing the node's directory, so that a transfer's
/// hop count can change while it runs: new connections use the new count.
#[derive(Clone)]
pub struct Clients {
    by_hops: [Arc<overlay::Client>; 3],
    /// What carries exit streams per hop count (`--via`, see `via.rs`); the overlay clients
    /// themselves unless set.
    exit: [Arc<dyn AnonProvider>; 3],
}

impl Clients {
    pub fn new(base: overlay::ClientConfig, directory: Vec<overlay::Descriptor>) -> Clients {
        let mk = |hops: usize| {
            let mut cfg = base.clone();
            cfg.hops = hops;
            Arc::new(overlay::Client::new(cfg, directory.clone()))
        };
        let by_hops = [mk(1), mk(2), mk(3)];
        let exit = by_hops.clone().map(|c| -> Arc<dyn AnonProvider> { c });
        Clients { by_hops, exit }
    }

    /// Sets what carries exit streams (see `via::exit_providers`).
    pub fn set_exit_providers(&mut self, exit: [Arc<dyn AnonProvider>; 3]) {
        self.exit = exit;
    }

    /// The provider for exit streams and datagrams of `hops`-hop transfers (clamped to 1-3).
    pub fn exit_provider(&self, hops: u8) -> &Arc<dyn AnonProvider> {
        &self.exit[usize::from(hops.clamp(1, 3)) - 1]
    }

    /// The client that builds circuits of `hops` hops (clamped to 1-3).
    pub fn get(&self, hops: u8) -> &Arc<overlay::Client> {
        &self.by_hops[usize::from(hops.clamp(1, 3)) - 1]
    }

    pub fn all(&self) -> impl Iterator<Item = (u8, &Arc<overlay::Client>)> {
        self.by_hops
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u8 + 1, c))
    }
}

/// Opens every stream of one transfer through overlay exits, on circuits isolated from other
/// transfers. It has no code path to a local socket.
pub struct OverlayConnector {
    clients: Clients,
    iso: IsolationKey,
    hops: Arc<AtomicU8>,
    hidden: HiddenPeers,
}

impl OverlayConnector {
    pub fn new(
        clients: Clients,
        iso: IsolationKey,
        hops: Arc<AtomicU8>,
        hidden: HiddenPeers,
    ) -> Self {
        OverlayConnector {
            clients,
            iso,
            hops,
            hidden,
        }
    }
}

fn to_io(e: ProviderError) -> io::Error {
    let kind = match e {
        ProviderError::Refused { .. } => io::ErrorKind::ConnectionRefused,
        ProviderError::Timeout(_) => io::ErrorKind::TimedOut,
        ProviderError::Unsupported(_) => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

#[async_trait]
impl Connector for OverlayConnector {
    async fn connect(&self, peer: &PeerAddr) -> io::Result<BoxedStream> {
        let target = match peer {
            PeerAddr::Ip(a) => Target::Addr(*a),
            // the exit resolves the name: the local resolver never sees it
            PeerAddr::Host { host, port } => Target::Host(host.clone(), *port),
            PeerAddr::Opaque(s) => {
                // a hidden seeder: meet it at a rendezvous point (a fresh circuit pair per
                // connection, never shared with another transfer)
                let entry = self.hidden.get(s).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no route to overlay address {s}: not a known hidden seeder"),
                    )
                })?;
                let hops = self.hops.load(Ordering::Relaxed);
                let cfg = HiddenConfig {
                    hops: usize::from(hops.clamp(1, 3)),
                    ..HiddenConfig::default()
                };
                let client = self.clients.get(hops);
                let circ = overlay::hidden::connect_hidden(client, &entry, &cfg)
                    .await
                    .map_err(to_io)?;
                let s = overlay::hidden::open_hidden_stream(&circ, cfg.timeout)
                    .await
                    .map_err(to_io)?;
                return Ok(Box::new(s));
            }
        };
        let exit = self
            .clients
            .exit_provider(self.hops.load(Ordering::Relaxed));
        let s = exit.connect(&target, self.iso).await.map_err(to_io)?;
        Ok(Box::new(s))
    }

    /// UDP trackers: a datagram association at an exit, on the transfer's own circuit.
    async fn datagram(&self) -> io::Result<Box<dyn DatagramAssoc>> {
        let exit = self
            .clients
            .exit_provider(self.hops.load(Ordering::Relaxed));
        let d = exit.datagram(self.iso).await.map_err(to_io)?;
        Ok(Box::new(ExitDatagram(d)))
    }
}

/// An exit's datagram association as the share engine's.
struct ExitDatagram(Box<dyn overlay::AnonDatagram>);

#[async_trait]
impl DatagramAssoc for ExitDatagram {
    async fn send_to(&self, payload: &[u8], to: &PeerAddr) -> io::Result<()> {
        let target = match to {
            PeerAddr::Ip(a) => Target::Addr(*a),
            PeerAddr::Host { host, port } => Target::Host(host.clone(), *port),
            PeerAddr::Opaque(s) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("no datagrams to overlay address {s}"),
                ))
            }
        };
        self.0.send_to(payload, &target).await.map_err(to_io)
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv_from(buf).await.map(|(n, _)| n).map_err(to_io)
    }
}

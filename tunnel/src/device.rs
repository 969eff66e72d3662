//! The packet device under the stack: a real tun (tun-tap driven by tokio's `AsyncFd`) or a
//! channel pair for tests.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use async_trait::async_trait;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Mutex};

/// Reads and writes whole IP packets.
#[async_trait]
pub trait Device: Send + Sync + 'static {
    /// Receives one packet into `buf`; returns its length.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one packet.
    async fn send(&self, packet: &[u8]) -> io::Result<()>;
}

struct IfaceFd(tun_tap::Iface);

impl AsRawFd for IfaceFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A Linux tun interface (no packet-info header), non-blocking, registered with tokio.
pub struct TunDevice {
    fd: AsyncFd<IfaceFd>,
    name: String,
}

impl TunDevice {
    /// Creates tun `name` in the current network namespace. Must run inside a tokio runtime.
    /// Addresses, MTU and routes are set with `ip` (see [`crate::netns`]).
    pub fn create(name: &str) -> io::Result<Self> {
        let iface = tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tun)?;
        iface.set_non_blocking()?;
        let name = iface.name().to_string();
        // SAFETY: the fd belongs to `iface`, which the AsyncFd owns from here on and which
        // keeps it open (and the same) until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(IfaceFd(iface)) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd, name })
    }

    /// The kernel's name for the interface.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl Device for TunDevice {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|i| i.get_ref().0.recv(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|i| i.get_ref().0.send(packet)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The test side of a [`ChannelDevice`]: inject packets, read what the stack sends.
pub struct ChannelPeer {
    pub to_stack: mpsc::Sender<Vec<u8>>,
    pub from_stack: mpsc::Receiver<Vec<u8>>,
}

/// A device made of two channels (unit tests, benchmarks without a tun).
pub struct ChannelDevice {
    rx: Mutex<mpsc::Receiver<Vec<u8>>>,
    tx: mpsc::Sender<Vec<u8>>,
}

impl ChannelDevice {
    pub fn pair(depth: usize) -> (ChannelDevice, ChannelPeer) {
        let (to_stack, rx) = mpsc::channel(depth);
        let (tx, from_stack) = mpsc::channel(depth);
        (
            ChannelDevice {
                rx: Mutex::new(rx),
                tx,
            },
            ChannelPeer {
                to_stack,
                from_stack,
            },
        )
    }
}

#[async_trait]
impl Device for ChannelDevice {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let pkt =
            self.rx.lock().await.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::BrokenPipe, "channel device closed")
            })?;
        let n = pkt.len().min(buf.len());
        buf[..n].copy_from_slice(&pkt[..n]);
        Ok(n)
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.tx
            .send(packet.to_vec())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "channel device closed"))
    }
}

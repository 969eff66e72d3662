//! Transport abstraction: the engine never opens sockets itself. It asks a [`Connector`] for a
//! byte stream to a peer or tracker and is handed inbound streams by whoever listens. The
//! overlay plugs in its own connector; [`crate::clearnet::TcpConnector`] is the plain-TCP one
//! for tests and benchmarks.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// Any bidirectional byte stream.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

/// A boxed stream as handed to the engine.
pub type BoxedStream = Box<dyn AsyncStream>;

/// Where a peer (or tracker) is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// An IP address and port (clearnet peer, or loopback in tests).
    Ip(SocketAddr),
    /// A host name and port (trackers); resolving it is the connector's business.
    Host { host: String, port: u16 },
    /// An overlay address the overlay's connector understands.
    Opaque(String),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(a) => write!(f, "{a}"),
            PeerAddr::Host { host, port } => write!(f, "{host}:{port}"),
            PeerAddr::Opaque(s) => write!(f, "{s}"),
        }
    }
}

/// A datagram association (UDP trackers): datagrams to any address, answers from any.
#[async_trait]
pub trait DatagramAssoc: Send + Sync {
    async fn send_to(&self, payload: &[u8], to: &PeerAddr) -> io::Result<()>;
    /// Receives the next datagram into `buf`; returns its length.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
}

/// Opens outbound streams (and datagram associations).
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    async fn connect(&self, peer: &PeerAddr) -> io::Result<BoxedStream>;

    /// Opens a datagram association for UDP trackers. A connector that cannot carry datagrams
    /// refuses; the engine then skips UDP trackers (it never falls back to anything else).
    async fn datagram(&self) -> io::Result<Box<dyn DatagramAssoc>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this connector carries no datagrams",
        ))
    }
}

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

/// Opens outbound streams.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    async fn connect(&self, peer: &PeerAddr) -> io::Result<BoxedStream>;
}

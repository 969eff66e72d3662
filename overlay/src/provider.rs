//! The one abstraction for "something that opens anonymous streams and datagrams".
//!
//! Overlay circuits implement it (`overlay::client`), Tor through arti-client will implement it
//! later (issue 7), and test beds may implement it over plain sockets *in tests only*. The tunnel,
//! the share engine's connectors and the node use nothing but this trait, so they never know
//! which network carries their traffic.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where an exit should connect or send. A host name is resolved *at the exit*, never locally.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    Host(String, u16),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// Streams that share an isolation key may share a circuit; streams with different keys never do.
/// (One key per transfer, per tunnel destination group, ...)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IsolationKey(pub u64);

/// A bidirectional byte stream carried anonymously.
pub trait AnonStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AnonStream for T {}

pub type BoxStream = Pin<Box<dyn AnonStream>>;

/// Why a provider could not do what was asked. `Refused` carries the exit's END/refusal reason.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("no circuit could be built: {0}")]
    NoCircuit(String),
    #[error("the exit refused {target}: {reason}")]
    Refused { target: String, reason: String },
    #[error("name resolution failed at the exit: {0}")]
    Resolve(String),
    #[error("this provider cannot carry {0}")]
    Unsupported(&'static str),
    #[error("circuit closed: {0}")]
    Closed(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A UDP-like association through an exit: datagrams to and from any `Target`.
#[async_trait]
pub trait AnonDatagram: Send + Sync {
    async fn send_to(&self, payload: &[u8], target: &Target) -> Result<(), ProviderError>;
    /// Receives the next datagram and the address it came from (as the exit saw it).
    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), ProviderError>;
}

#[async_trait]
pub trait AnonProvider: Send + Sync {
    /// Short name for logs and the dashboard ("overlay", "tor").
    fn name(&self) -> &'static str;
    /// Opens a TCP stream from an exit to `target`.
    async fn connect(&self, target: &Target, iso: IsolationKey)
        -> Result<BoxStream, ProviderError>;
    /// Opens a datagram association at an exit. Providers that cannot carry UDP return
    /// `ProviderError::Unsupported("UDP")`; callers must never fall back to the clear.
    async fn datagram(&self, iso: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError>;
    /// Resolves a name at an exit.
    async fn resolve(&self, name: &str, iso: IsolationKey) -> Result<Vec<IpAddr>, ProviderError>;
}

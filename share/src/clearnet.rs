//! Plain TCP: the only place in share/ that opens sockets. NOT anonymous — for tests,
//! benchmarks and explicit clearnet use. The anonymous mode uses the overlay's connector and
//! hands inbound overlay streams to [`crate::session::Session::accept_inbound`].

use std::io;
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::debug;

use crate::connector::{BoxedStream, Connector, PeerAddr};
use crate::session::Session;

/// Connects over plain TCP, optionally from a fixed local address (e.g. one 127.x.y.z per
/// client in tests, because a client that bans an address bans everyone on it).
#[derive(Clone, Debug, Default)]
pub struct TcpConnector {
    pub bind_ip: Option<IpAddr>,
}

impl TcpConnector {
    pub fn new() -> Self {
        TcpConnector { bind_ip: None }
    }

    pub fn bound_to(ip: IpAddr) -> Self {
        TcpConnector { bind_ip: Some(ip) }
    }

    async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = self.bind_ip {
            if ip.is_ipv4() == addr.is_ipv4() {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
        }
        let s = sock.connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, peer: &PeerAddr) -> io::Result<BoxedStream> {
        match peer {
            PeerAddr::Ip(a) => Ok(Box::new(self.connect_addr(*a).await?)),
            PeerAddr::Host { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for a in tokio::net::lookup_host((host.as_str(), *port)).await? {
                    match self.connect_addr(a).await {
                        Ok(s) => return Ok(Box::new(s)),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            PeerAddr::Opaque(s) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("TCP connector cannot reach overlay address {s}"),
            )),
        }
    }

    async fn datagram(&self) -> io::Result<Box<dyn crate::connector::DatagramAssoc>> {
        Ok(Box::new(UdpAssoc(
            tokio::net::UdpSocket::bind("0.0.0.0:0").await?,
        )))
    }
}

/// A plain UDP socket (clearnet, tests only) as a datagram association.
struct UdpAssoc(tokio::net::UdpSocket);

#[async_trait]
impl crate::connector::DatagramAssoc for UdpAssoc {
    async fn send_to(&self, payload: &[u8], to: &PeerAddr) -> io::Result<()> {
        let addr = match to {
            PeerAddr::Ip(a) => *a,
            PeerAddr::Host { host, port } => tokio::net::lookup_host((host.as_str(), *port))
                .await?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?,
            PeerAddr::Opaque(s) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("UDP cannot reach overlay address {s}"),
                ))
            }
        };
        self.0.send_to(payload, addr).await.map(|_| ())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv_from(buf).await.map(|(n, _)| n)
    }
}

/// Bind a TCP listener for peers.
pub async fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accept TCP peers forever and hand them to the session.
pub async fn serve(listener: TcpListener, session: Session) {
    loop {
        match listener.accept().await {
            Ok((s, from)) => {
                let _ = s.set_nodelay(true);
                debug!(%from, "inbound TCP peer");
                session.accept_inbound(Box::new(s), PeerAddr::Ip(from));
            }
            Err(e) => {
                debug!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

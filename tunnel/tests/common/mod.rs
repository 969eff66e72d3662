//! Shared by the tunnel's integration tests: a stand-in exit (plain loopback connections made
//! from the host side; allowed in tests only), loopback servers, skip checks.
#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use overlay::{AnonDatagram, AnonProvider, BoxStream, IsolationKey, ProviderError, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The address programs inside the namespace use for "the server" (TEST-NET-1). The stand-in
/// exit maps it to 127.0.0.1, so no packet ever goes to 192.0.2.1 itself.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Names only the "exit" can resolve end in `.test`.
fn exit_map(target: &Target) -> Result<SocketAddr, ProviderError> {
    match target {
        Target::Addr(a) if a.ip() == IpAddr::V4(SERVER_IP) || a.ip().is_loopback() => {
            Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port()))
        }
        Target::Addr(a) => Err(ProviderError::Refused {
            target: a.to_string(),
            reason: "stand-in exit only reaches the test server".into(),
        }),
        Target::Host(h, p) if h.ends_with(".test") => {
            Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), *p))
        }
        Target::Host(h, _) => Err(ProviderError::Resolve(format!(
            "{h}: unknown to the stand-in exit"
        ))),
    }
}

/// Stand-in for an exit: makes plain loopback connections from the host side.
#[derive(Default)]
pub struct HostProvider;

struct HostDatagram(UdpSocket);

#[async_trait]
impl AnonDatagram for HostDatagram {
    async fn send_to(&self, payload: &[u8], target: &Target) -> Result<(), ProviderError> {
        let to = exit_map(target)?;
        self.0.send_to(payload, to).await?;
        Ok(())
    }
    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), ProviderError> {
        let (n, from) = self.0.recv_from(buf).await?;
        // The "exit" reports the server's public address.
        Ok((n, SocketAddr::new(SERVER_IP.into(), from.port())))
    }
}

#[async_trait]
impl AnonProvider for HostProvider {
    fn name(&self) -> &'static str {
        "host-standin"
    }
    async fn connect(
        &self,
        target: &Target,
        _iso: IsolationKey,
    ) -> Result<BoxStream, ProviderError> {
        let to = exit_map(target)?;
        let s = tokio::net::TcpStream::connect(to).await?;
        s.set_nodelay(true)?;
        Ok(Box::pin(s))
    }
    async fn datagram(&self, _iso: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
        Ok(Box::new(HostDatagram(
            UdpSocket::bind("127.0.0.1:0").await?,
        )))
    }
    async fn resolve(&self, name: &str, _iso: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
        match exit_map(&Target::Host(name.into(), 0)) {
            Ok(a) => Ok(vec![a.ip()]),
            Err(e) => Err(e),
        }
    }
}

/// Byte `i` of every test body.
pub fn pattern(i: u64) -> u8 {
    ((i.wrapping_mul(31)) ^ (i >> 12)) as u8
}

/// An HTTP/1.0 server on 127.0.0.1: `GET /N` answers N pattern bytes. Returns its port.
pub async fn http_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req);
                let size: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.trim_start_matches('/').parse().ok())
                    .unwrap_or(0);
                let hdr = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(hdr.as_bytes()).await.is_err() {
                    return;
                }
                let mut off = 0u64;
                let mut chunk = vec![0u8; 64 * 1024];
                while off < size {
                    let n = (size - off).min(chunk.len() as u64) as usize;
                    for (k, b) in chunk[..n].iter_mut().enumerate() {
                        *b = pattern(off + k as u64);
                    }
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    off += n as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// A UDP echo server on 127.0.0.1 answering "echo:" + payload. Returns its port.
pub async fn udp_echo_server() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = s.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let mut r = b"echo:".to_vec();
            r.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&r, from).await;
        }
    });
    port
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Why these tests cannot run here, if they cannot (printed, then the test returns).
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, tun)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("needs /dev/net/tun".into());
    }
    for t in ["ip"].iter().chain(tools) {
        if !have(t) {
            return Some(format!("needs `{t}` installed"));
        }
    }
    None
}

#[macro_export]
macro_rules! skip_unless_ready {
    ($($tool:expr),*) => {
        if let Some(why) = common::skip_reason(&[$($tool),*]) {
            eprintln!("SKIP {}: {why}", module_path!());
            return;
        }
    };
}

/// Runs a command to completion, returning (exit code, stdout, stderr).
pub async fn run(mut c: tokio::process::Command) -> (i32, String, String) {
    let out = c.kill_on_drop(true).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A real 3-hop overlay network in this process (2 relays + 1 exit that may reach loopback)
/// and a client for it. Keep the `Testnet` alive as long as the provider is used.
pub async fn overlay_provider() -> (overlay::testnet::Testnet, Arc<dyn AnonProvider>) {
    let net = overlay::testnet::Testnet::builder()
        .relays(2)
        .exits(1)
        .build()
        .await
        .unwrap();
    let client = net.client(overlay::ClientConfig {
        hops: 3,
        ..overlay::ClientConfig::default()
    });
    (net, Arc::new(client))
}

/// The name programs in the namespace use for the test servers: `localhost`, which the
/// namespace's hosts file does not list (see [`hide_localhost`]), so it goes to the tunnel's
/// resolver, travels to the exit as a name, and the exit resolves it to its own loopback.
pub const EXIT_NAME: &str = "localhost";

/// Overrides /etc/hosts inside the namespace (bind-mounted by `ip netns exec`).
pub fn hide_localhost(ns: &str) {
    std::fs::write(
        format!("/etc/netns/{ns}/hosts"),
        "# test: names resolve through the tunnel only\n",
    )
    .unwrap();
}

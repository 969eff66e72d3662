//! `warren bench tunnel`: TCP bulk throughput through tun + stack + provider, next to the raw
//! provider figure measured in the same run.
//!
//! A local server on 127.0.0.1 serves `bytes` zero bytes. The raw figure reads them through
//! `provider.connect(Host("localhost", port))`; the tunnel figure reads them with a small
//! python3 client inside a tunnel namespace, by the name `localhost` too (the namespace gets a
//! hosts file without it, so the name goes to the tunnel's resolver and on to the exit, which
//! must allow loopback: a testing exit).

use std::sync::Arc;
use std::time::Instant;

use overlay::{AnonProvider, IsolationKey, Target};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::runtime::{TunnelConfig, TunnelError};
use crate::wrap::TunnelNamespace;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub provider: String,
    pub bytes: u64,
    pub raw_mb_s: f64,
    pub tunnel_mb_s: f64,
    /// tunnel / raw
    pub ratio: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    #[error("raw provider transfer failed: {0}")]
    Raw(String),
    #[error("tunnel client failed: {0}")]
    Client(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const CLIENT: &str = r#"
import socket, sys, time
port, want = int(sys.argv[1]), int(sys.argv[2])
t = time.time()
s = socket.create_connection(('localhost', port), timeout=60)
s.sendall(b'GET /%d HTTP/1.0\r\n\r\n' % want)
buf = bytearray(1 << 20); got = 0; head = None
while True:
    n = s.recv_into(buf)
    if n == 0: break
    got += n
print(got, time.time() - t)
"#;

async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut b = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 4096 {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let n: u64 = text
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.trim_start_matches('/').parse().ok())
                .unwrap_or(0);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            let chunk = vec![0u8; 256 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..k]).await.is_err() {
                    return;
                }
                left -= k as u64;
            }
            let _ = s.shutdown().await;
        });
    }
}

/// Runs both measurements. Needs root, /dev/net/tun, iproute2 and python3.
pub async fn run(
    provider: Arc<dyn AnonProvider>,
    bytes: u64,
    cfg: TunnelConfig,
) -> Result<BenchReport, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(serve(listener));

    // raw provider
    let t = Instant::now();
    let mut s = provider
        .connect(
            &Target::Host("localhost".into(), port),
            IsolationKey(0x6265_6e63),
        )
        .await
        .map_err(|e| BenchError::Raw(e.to_string()))?;
    s.write_all(format!("GET /{bytes} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    s.flush().await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let raw_secs = t.elapsed().as_secs_f64();
    drop(s);
    if got < bytes {
        return Err(BenchError::Raw(format!("got {got} of {bytes} bytes")));
    }

    // through the tunnel
    let tns = TunnelNamespace::setup(provider.clone(), cfg)?;
    let hosts = std::path::PathBuf::from("/etc/netns")
        .join(tns.netns().name())
        .join("hosts");
    std::fs::write(&hosts, "# bench: localhost resolves through the tunnel\n")?;
    let out = tns
        .command(
            "python3",
            ["-c", CLIENT, &port.to_string(), &bytes.to_string()],
        )
        .kill_on_drop(true)
        .output()
        .await?;
    server.abort();
    if !out.status.success() {
        return Err(BenchError::Client(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let tgot: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let tsecs: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(f64::MAX);
    if tgot < bytes {
        return Err(BenchError::Client(format!("got {tgot} of {bytes} bytes")));
    }
    let raw_mb_s = got as f64 / raw_secs / 1e6;
    let tunnel_mb_s = tgot as f64 / tsecs / 1e6;
    Ok(BenchReport {
        provider: provider.name().to_string(),
        bytes,
        raw_mb_s,
        tunnel_mb_s,
        ratio: tunnel_mb_s / raw_mb_s,
    })
}

//! Tunnel throughput benchmark: `cargo run --release -p tunnel --example bench_tunnel -- [MiB]`.
//! Needs root, /dev/net/tun, iproute2 and python3.
//!
//! Provider: `WT_PROVIDER=overlay` for a real in-process 3-hop overlay network (the figure that
//! counts); otherwise a plain-socket stand-in exit (loopback only), which isolates the tunnel's
//! own cost (tun + userspace stack + relay). Both print the raw provider figure next to it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use overlay::{AnonDatagram, AnonProvider, BoxStream, IsolationKey, ProviderError, Target};

struct LoopbackExit;

#[async_trait]
impl AnonProvider for LoopbackExit {
    fn name(&self) -> &'static str {
        "loopback-standin"
    }
    async fn connect(&self, target: &Target, _: IsolationKey) -> Result<BoxStream, ProviderError> {
        let port = match target {
            Target::Host(h, p) if h == "localhost" => *p,
            Target::Addr(a) if a.ip().is_loopback() => a.port(),
            t => {
                return Err(ProviderError::Refused {
                    target: t.to_string(),
                    reason: "benchmark exit reaches loopback only".into(),
                })
            }
        };
        let s = tokio::net::TcpStream::connect(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))
            .await?;
        s.set_nodelay(true)?;
        Ok(Box::pin(s))
    }
    async fn datagram(&self, _: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
        Err(ProviderError::Unsupported("UDP"))
    }
    async fn resolve(&self, _: &str, _: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
        Ok(vec![Ipv4Addr::LOCALHOST.into()])
    }
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let mut cfg = tunnel::TunnelConfig::default();
    if let Some(w) = std::env::var("WT_WINDOW").ok().and_then(|v| v.parse().ok()) {
        cfg.tcp_window = w;
    }
    if let Some(m) = std::env::var("WT_MTU").ok().and_then(|v| v.parse().ok()) {
        cfg.mtu = m;
    }
    // WT_PROVIDER=overlay: a real in-process overlay network, 3 hops (exit allows loopback)
    let _net;
    let provider: Arc<dyn AnonProvider> =
        if std::env::var("WT_PROVIDER").as_deref() == Ok("overlay") {
            let net = match overlay::testnet::Testnet::builder()
                .relays(2)
                .exits(1)
                .build()
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("testnet: {e}");
                    std::process::exit(1);
                }
            };
            let client = net.client(overlay::ClientConfig {
                hops: 3,
                ..overlay::ClientConfig::default()
            });
            _net = net;
            Arc::new(client)
        } else {
            Arc::new(LoopbackExit)
        };
    match tunnel::bench::run(provider, mib << 20, cfg).await {
        Ok(r) => {
            println!(
                "tunnel bench ({}), {} MiB: raw provider {:.0} MB/s, through the tunnel {:.0} MB/s ({:.0}%)",
                r.provider,
                r.bytes >> 20,
                r.raw_mb_s,
                r.tunnel_mb_s,
                r.ratio * 100.0
            );
        }
        Err(e) => {
            eprintln!("tunnel bench failed: {e}");
            std::process::exit(1);
        }
    }
}

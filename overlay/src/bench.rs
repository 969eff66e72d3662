//! Circuit throughput benchmark: client, relays, exit and a sink/source TCP server in one process
//! on loopback. `warren bench circuit --hops N` and `examples/bench_circuit.rs` call [`circuit`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::cell::CELL_SIZE;
use crate::client::ClientConfig;
use crate::handshake::LINK_PATTERN;
use crate::provider::{AnonProvider, IsolationKey, ProviderError, Target};
use crate::relay_crypto::LAYER_CIPHER;
use crate::testnet::Testnet;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BenchOpts {
    /// Circuit length (1-3); the last hop is the exit.
    pub hops: usize,
    /// Bytes moved in each direction.
    pub bytes: u64,
    /// Circuits built to measure build time.
    pub builds: usize,
}

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            hops: 3,
            bytes: 512 << 20,
            builds: 100,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    pub hops: usize,
    pub bytes: u64,
    pub upload_mb_s: f64,
    pub download_mb_s: f64,
    pub build_p50_ms: f64,
    pub build_p99_ms: f64,
    /// Process CPU seconds (user + system, all nodes) per GB moved through the circuit.
    pub cpu_s_per_gb: f64,
    pub cell_size: usize,
    pub layer_cipher: String,
    pub link_aead: String,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "circuit {} hops, {} MB each way, cell {} B, layers {}, link {}\n  upload   {:8.1} MB/s\n  download {:8.1} MB/s\n  build    p50 {:.2} ms, p99 {:.2} ms\n  cpu      {:.2} s/GB",
            self.hops,
            self.bytes >> 20,
            self.cell_size,
            self.layer_cipher,
            self.link_aead,
            self.upload_mb_s,
            self.download_mb_s,
            self.build_p50_ms,
            self.build_p99_ms,
            self.cpu_s_per_gb
        )
    }
}

/// Process CPU time (user + system) in seconds, from getrusage(RUSAGE_SELF).
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if r != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

async fn sink_server() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 << 10];
                let mut n = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(a)
}

async fn source_server() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = [0u8; 8];
                if s.read_exact(&mut req).await.is_err() {
                    return;
                }
                let mut left = u64::from_be_bytes(req);
                let buf = vec![0x5au8; 256 << 10];
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    if s.write_all(&buf[..k]).await.is_err() {
                        return;
                    }
                    left -= k as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(a)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark. Needs a tokio runtime (multi-threaded for meaningful figures).
pub async fn circuit(opts: BenchOpts) -> Result<BenchReport, ProviderError> {
    if !(1..=3).contains(&opts.hops) {
        return Err(ProviderError::NoCircuit("hops must be 1, 2 or 3".into()));
    }
    let net = Testnet::builder()
        .relays(opts.hops - 1)
        .exits(1)
        .build()
        .await?;
    let client = net.client(ClientConfig {
        hops: opts.hops,
        pool_size: 0,
        ..ClientConfig::default()
    });
    let sink = sink_server().await?;
    let source = source_server().await?;

    let mut times = Vec::with_capacity(opts.builds);
    for _ in 0..opts.builds {
        let t = Instant::now();
        let c = client.build_circuit(opts.hops).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        c.destroy();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));

    let cpu0 = cpu_seconds();
    // upload
    let mut s = client.connect(&Target::Addr(sink), IsolationKey(1)).await?;
    let chunk = vec![0xa5u8; 256 << 10];
    let t = Instant::now();
    let mut left = opts.bytes;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..k]).await?;
        left -= k as u64;
    }
    s.shutdown().await?;
    let mut got = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(120), s.read_exact(&mut got))
        .await
        .map_err(|_| ProviderError::Timeout("sink ack".into()))??;
    let up_t = t.elapsed().as_secs_f64();
    if u64::from_be_bytes(got) != opts.bytes {
        return Err(ProviderError::Closed(format!(
            "sink received {} of {} bytes",
            u64::from_be_bytes(got),
            opts.bytes
        )));
    }
    // download
    let mut s = client
        .connect(&Target::Addr(source), IsolationKey(2))
        .await?;
    let t = Instant::now();
    s.write_all(&opts.bytes.to_be_bytes()).await?;
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let down_t = t.elapsed().as_secs_f64();
    if n != opts.bytes {
        return Err(ProviderError::Closed(format!(
            "received {n} of {} bytes",
            opts.bytes
        )));
    }
    let cpu = cpu_seconds() - cpu0;
    let mb = opts.bytes as f64 / 1e6;
    Ok(BenchReport {
        hops: opts.hops,
        bytes: opts.bytes,
        upload_mb_s: mb / up_t,
        download_mb_s: mb / down_t,
        build_p50_ms: percentile(&times, 0.5),
        build_p99_ms: percentile(&times, 0.99),
        cpu_s_per_gb: cpu / (2.0 * opts.bytes as f64 / 1e9),
        cell_size: CELL_SIZE,
        layer_cipher: format!("{LAYER_CIPHER:?}"),
        link_aead: match crate::link::LINK_AEAD {
            crate::link::LinkAead::NoiseTransport => LINK_PATTERN.to_string(),
            other => format!("{other:?} (after {LINK_PATTERN})"),
        },
    })
}

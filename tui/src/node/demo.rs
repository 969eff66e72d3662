//! `warren demo`: a whole network in this process, and a download through it.
//!
//! It starts relays and exits on 127.0.0.1, a swarm peer seeding generated content on loopback,
//! and a node whose only way out is the overlay: the magnet link is resolved (metadata over BEP 9)
//! and downloaded through 3-hop circuits ending at an exit, which is the only address the seeder
//! ever sees. No internet is needed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rand::{RngCore, SeedableRng};
use share::connector::PeerAddr;
use share::session::{Session, SessionConfig};

use super::connector::Clients;
use super::core::NodeCore;
use crate::control::channel::{channel, serve_channel};

pub struct DemoOptions {
    pub size: u64,
    pub hops: u8,
    pub relays: usize,
    pub exits: usize,
    pub tui: bool,
    /// Where the generated content and the download go (a temporary directory if None).
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub struct DemoReport {
    pub bytes: u64,
    pub seconds: f64,
    pub identical: bool,
    pub circuits: usize,
    pub seeder_saw: Vec<SocketAddr>,
}

/// Writes `size` bytes of seeded pseudo-random content.
fn generate(path: &Path, size: u64) -> Result<()> {
    generate_with(path, size, 1)
}

fn generate_with(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7761_7272_656e ^ seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

pub async fn run(opts: DemoOptions, out: &mut (dyn Write + Send)) -> Result<DemoReport> {
    let tmp;
    let work = match &opts.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let seed_dir = work.join("seeder");
    let dl_dir = work.join("download");
    std::fs::create_dir_all(&seed_dir)?;
    std::fs::create_dir_all(&dl_dir)?;

    writeln!(
        out,
        "starting an in-process overlay: {} relays and {} exits on 127.0.0.1",
        opts.relays, opts.exits
    )?;
    let net = Arc::new(
        overlay::testnet::Testnet::builder()
            .relays(opts.relays)
            .exits(opts.exits)
            .build()
            .await
            .context("cannot start the in-process network")?,
    );

    // a swarm peer on loopback: the "clearnet" seeder, reachable only through an exit
    let content = seed_dir.join("warren-demo.bin");
    writeln!(
        out,
        "generating {} bytes of content for the seeder",
        opts.size
    )?;
    let (c, s) = (content.clone(), opts.size);
    tokio::task::spawn_blocking(move || generate(&c, s)).await??;
    let seeder = Session::new(
        SessionConfig::default(),
        Arc::new(share::clearnet::TcpConnector::new()),
    )?;
    let listener = share::clearnet::listen("127.0.0.1:0".parse()?).await?;
    let seeder_addr = listener.local_addr()?;
    let seen: Arc<std::sync::Mutex<Vec<SocketAddr>>> = Arc::default();
    {
        let (session, seen) = (seeder.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((s, from)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                if let Ok(mut v) = seen.lock() {
                    v.push(from);
                }
                session.accept_inbound(Box::new(s), PeerAddr::Ip(from));
            }
        });
    }
    let (_h, made) = seeder
        .seed_path(&content, share::make::MakeOptions::default())
        .await
        .context("the seeder could not hash its content")?;
    let mut magnet = made.magnet.clone();
    magnet.peers = vec![seeder_addr.to_string()];
    let link = magnet.to_uri();
    writeln!(out, "seeder at {seeder_addr}; magnet link:\n  {link}")?;
    // a second torrent, for adding by hand from the dashboard (`a`, paste the link)
    let extra = seed_dir.join("warren-demo-2.bin");
    let (c, s) = (extra.clone(), (opts.size / 4).max(1));
    tokio::task::spawn_blocking(move || generate_with(&c, s, 2)).await??;
    let (_h2, made2) = seeder
        .seed_path(&extra, share::make::MakeOptions::default())
        .await
        .context("the seeder could not hash its second file")?;
    let mut magnet2 = made2.magnet.clone();
    magnet2.peers = vec![seeder_addr.to_string()];
    let link2 = magnet2.to_uri();
    std::fs::write(work.join("extra-magnet.txt"), &link2)?;
    writeln!(
        out,
        "a second torrent to add with `a` in the dashboard:\n  {link2}"
    )?;

    // the downloading node: its only way out is the overlay
    let clients = Clients::new(overlay::ClientConfig::default(), net.descriptors());
    let probe_net = net.clone();
    let core = Arc::new(
        NodeCore::new(
            "demo".into(),
            clients,
            SessionConfig::default(),
            work.join("state"),
            dl_dir.clone(),
            opts.hops,
        )
        .with_network_probe(Box::new(move || {
            probe_net.nodes().iter().map(|n| n.status()).collect()
        })),
    );
    let t0 = Instant::now();
    let (_id, handle) = core
        .add_magnet(&link, None, Some(opts.hops))
        .await
        .map_err(|e| anyhow!("{}", e.0))?;
    writeln!(
        out,
        "downloading through {}-hop circuits (metadata first, over BEP 9)",
        opts.hops
    )?;

    if opts.tui {
        let (mut ctl, rx) = channel();
        tokio::spawn(serve_channel(core.clone(), rx));
        tokio::task::spawn_blocking(move || crate::dash::run(&mut ctl))
            .await?
            .context("dashboard failed")?;
    } else {
        super::core::plain_progress(&core, &handle, out).await?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let complete = handle.status().have_bytes == opts.size;
    if !complete {
        core.shutdown_all();
        seeder.shutdown();
        bail!("the dashboard was closed before the download completed");
    }
    let got = dl_dir.join("warren-demo.bin");
    let identical = same_content(&content, &got)?;
    let circuits = core.snapshot_now().circuits.len();
    let seeder_saw = seen.lock().map(|v| v.clone()).unwrap_or_default();
    core.shutdown_all();
    seeder.shutdown();
    writeln!(
        out,
        "done: {} bytes in {:.2} s ({:.1} MB/s), {} circuits, content {}",
        opts.size,
        seconds,
        opts.size as f64 / seconds / 1e6,
        circuits,
        if identical {
            "byte-identical"
        } else {
            "DIFFERENT"
        }
    )?;
    let exits: Vec<SocketAddr> = net.descriptors().iter().map(|d| d.addr).collect();
    writeln!(
        out,
        "the seeder saw connections from {:?} (overlay nodes: {:?})",
        seeder_saw, exits
    )?;
    if !identical {
        bail!("downloaded content differs from the seeder's");
    }
    Ok(DemoReport {
        bytes: opts.size,
        seconds,
        identical,
        circuits,
        seeder_saw,
    })
}

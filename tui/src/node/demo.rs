//! `warren demo`: a whole network in this process, and a download through it.
//!
//! It starts relays and exits on 127.0.0.1 (all of them DHT nodes), a hidden seeder with generated
//! content, and a downloading node: the magnet link has no tracker and no peer address, so it is
//! resolved entirely inside the overlay (swarm record in the DHT, introduction, rendezvous, metadata
//! over BEP 9) and downloaded through 3+3 hops. No internet is needed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rand::{RngCore, SeedableRng};
use share::session::SessionConfig;

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

pub(crate) fn generate_with(path: &Path, size: u64, seed: u64) -> Result<()> {
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

pub(crate) fn same_content(a: &Path, b: &Path) -> Result<bool> {
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
        "starting an in-process overlay on 127.0.0.1: {} relays and {} exits, all DHT nodes, all \
         possible introduction and rendezvous points",
        opts.relays, opts.exits
    )?;
    let net = Arc::new(
        overlay::testnet::Testnet::builder()
            .relays(opts.relays)
            .exits(opts.exits)
            .dht(true)
            .build()
            .await
            .context("cannot start the in-process network")?,
    );

    // the hidden seeder: a node of its own, reachable only through its introduction points
    let content = seed_dir.join("warren-demo.bin");
    writeln!(
        out,
        "generating {} bytes of content for the hidden seeder",
        opts.size
    )?;
    let (c, s) = (content.clone(), opts.size);
    tokio::task::spawn_blocking(move || generate(&c, s)).await??;
    let extra = seed_dir.join("warren-demo-2.bin");
    let (c, s) = (extra.clone(), (opts.size / 4).max(1));
    tokio::task::spawn_blocking(move || generate_with(&c, s, 2)).await??;
    let seeder = NodeCore::new(
        "demo-seeder".into(),
        Clients::new(overlay::ClientConfig::default(), net.descriptors()),
        SessionConfig::default(),
        work.join("seeder-state"),
        seed_dir.clone(),
        opts.hops,
    );
    let (_sid, _sh, link) = seeder
        .seed_path(&content, Some(opts.hops))
        .await
        .map_err(|e| anyhow!("the hidden seeder could not start: {}", e.0))?;
    writeln!(
        out,
        "hidden seeder registered at its introduction points; magnet link (no tracker, no peer \
         address: it resolves inside the overlay):\n  {link}"
    )?;
    // a second torrent, for adding by hand from the dashboard (`a`, paste the link)
    let (_sid2, _sh2, link2) = seeder
        .seed_path(&extra, Some(opts.hops))
        .await
        .map_err(|e| anyhow!("the hidden seeder could not start: {}", e.0))?;
    std::fs::write(work.join("extra-magnet.txt"), &link2)?;
    writeln!(
        out,
        "a second torrent to add with `a` in the dashboard:\n  {link2}"
    )?;

    // the downloading node: it finds the seeder in the DHT and meets it at a rendezvous point
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
        "downloading through {h}+{h} hops: DHT lookup, rendezvous, metadata over BEP 9, pieces",
        h = opts.hops
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
        seeder.shutdown_all();
        bail!("the dashboard was closed before the download completed");
    }
    let got = dl_dir.join("warren-demo.bin");
    let identical = same_content(&content, &got)?;
    let circuits = core.snapshot_now().circuits.len();
    core.shutdown_all();
    seeder.shutdown_all();
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
    writeln!(
        out,
        "neither side learned the other's address: the seeder saw only rendezvous streams, the \
         downloader only the seeder's introduction points"
    )?;
    if !identical {
        bail!("downloaded content differs from the seeder's");
    }
    Ok(DemoReport {
        bytes: opts.size,
        seconds,
        identical,
        circuits,
        seeder_saw: Vec::new(),
    })
}

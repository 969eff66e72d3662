//! `warren bench hidden`: hidden seeding measured in an in-process 30-node network (28 relays, 2
//! exits, all DHT nodes). A hidden seeder publishes two torrents; fresh downloaders then
//! - time magnet → metadata → first verified piece on the small torrent, several runs (p50, max);
//! - time one bulk download of the large torrent through `hops`+`hops` hops (MB/s).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use share::session::SessionConfig;

use super::connector::Clients;
use super::core::NodeCore;

pub struct HiddenBenchReport {
    pub hops: u8,
    pub metadata_s: Vec<f64>,
    pub first_piece_s: Vec<f64>,
    pub bulk_bytes: u64,
    pub bulk_s: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

impl std::fmt::Display for HiddenBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "hidden seeding, {h}+{h} hops, 30-node in-process network",
            h = self.hops
        )?;
        writeln!(
            f,
            "  magnet -> metadata          p50 {:.3} s  max {:.3} s  ({} runs)",
            median(&self.metadata_s),
            max(&self.metadata_s),
            self.metadata_s.len()
        )?;
        writeln!(
            f,
            "  magnet -> first piece       p50 {:.3} s  max {:.3} s",
            median(&self.first_piece_s),
            max(&self.first_piece_s)
        )?;
        write!(
            f,
            "  bulk {} MB                  {:.2} s  {:.1} MB/s",
            self.bulk_bytes / 1_000_000,
            self.bulk_s,
            self.bulk_bytes as f64 / self.bulk_s / 1e6
        )
    }
}

fn downloader(net: &overlay::testnet::Testnet, work: &Path, name: &str, hops: u8) -> NodeCore {
    NodeCore::new(
        name.into(),
        Clients::new(overlay::ClientConfig::default(), net.descriptors()),
        SessionConfig::default(),
        work.join(format!("{name}-state")),
        work.join(format!("{name}-download")),
        hops,
    )
}

pub async fn hidden(
    size: u64,
    hops: u8,
    runs: usize,
    out: &mut dyn Write,
) -> Result<HiddenBenchReport> {
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let work = tmp.path();
    let net = overlay::testnet::Testnet::builder()
        .relays(28)
        .exits(2)
        .dht(true)
        .build()
        .await
        .context("cannot start the in-process network")?;
    let seed_dir = work.join("seeder");
    std::fs::create_dir_all(&seed_dir)?;
    let small = seed_dir.join("small.bin");
    let large = seed_dir.join("large.bin");
    let (a, b) = (small.clone(), large.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        super::demo::generate_with(&a, 8 << 20, 7)?;
        super::demo::generate_with(&b, size, 8)
    })
    .await??;
    let seeder = NodeCore::new(
        "bench-seeder".into(),
        Clients::new(overlay::ClientConfig::default(), net.descriptors()),
        SessionConfig::default(),
        work.join("seeder-state"),
        seed_dir.clone(),
        hops,
    );
    let (sid, _, small_link) = seeder
        .seed_path(&small, Some(hops))
        .await
        .map_err(|e| anyhow!("{}", e.0))?;
    let (lid, _, large_link) = seeder
        .seed_path(&large, Some(hops))
        .await
        .map_err(|e| anyhow!("{}", e.0))?;
    // wait until both swarm records are in the DHT
    let t = Instant::now();
    while seeder.published(sid).unwrap_or(0) == 0 || seeder.published(lid).unwrap_or(0) == 0 {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the swarm records were not published within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writeln!(out, "seeder ready; {runs} latency runs")?;

    let mut metadata_s = Vec::new();
    let mut first_piece_s = Vec::new();
    for run in 0..runs {
        let d = downloader(&net, work, &format!("latency-{run}"), hops);
        let t0 = Instant::now();
        let (_, h) = d
            .add_magnet(&small_link, None, Some(hops))
            .await
            .map_err(|e| anyhow!("{}", e.0))?;
        let mut meta = None;
        loop {
            let s = h.status();
            if meta.is_none() && s.total_bytes.is_some() {
                meta = Some(t0.elapsed().as_secs_f64());
            }
            if s.have_bytes > 0 {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("run {run}: no verified piece within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let first = t0.elapsed().as_secs_f64();
        metadata_s.push(meta.unwrap_or(first));
        first_piece_s.push(first);
        writeln!(
            out,
            "  run {run}: metadata {:.3} s, first piece {first:.3} s",
            meta.unwrap_or(first)
        )?;
        d.shutdown_all();
    }

    let d = downloader(&net, work, "bulk", hops);
    let t0 = Instant::now();
    let (id, _) = d
        .add_magnet(&large_link, None, Some(hops))
        .await
        .map_err(|e| anyhow!("{}", e.0))?;
    d.wait_complete(id).await.map_err(|e| anyhow!("{}", e.0))?;
    let bulk_s = t0.elapsed().as_secs_f64();
    let identical =
        super::demo::same_content(&large, &work.join("bulk-download").join("large.bin"))?;
    d.shutdown_all();
    seeder.shutdown_all();
    if !identical {
        bail!("the bulk download differs from the seeder's content");
    }
    Ok(HiddenBenchReport {
        hops,
        metadata_s,
        first_piece_s,
        bulk_bytes: size,
        bulk_s,
    })
}

//! A minimal warren BitTorrent node on plain TCP (NOT anonymous), for interop tests, the
//! kill -9 resume test and benchmarks.
//!
//!   warren_node seed <file-or-dir> <ip> [tracker-url]            prints MAGNET/PORT, seeds forever
//!   warren_node seed-torrent <file.torrent> <data-dir> <ip>      seeds existing data
//!   warren_node get <file.torrent|magnet> <dir> <ip> [peer ip:port] [resume-db]
//!       prints "PROGRESS have=<bytes> persisted_pieces=.." lines and "RESULT bytes=.. seconds=.. MBps=.."
//!
//! RUST_LOG=share=debug for logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use share::clearnet::{self, TcpConnector};
use share::connector::PeerAddr;
use share::magnet::Magnet;
use share::make::MakeOptions;
use share::metainfo::Metainfo;
use share::session::{AddOptions, Session, SessionConfig, TorrentSource};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str, String> {
        args.get(i).map(String::as_str).ok_or_else(|| {
            format!("missing argument {i}; see the header of examples/warren_node.rs")
        })
    };
    let mode = arg(0)?;
    let ip = match mode {
        "seed" => arg(2)?,
        _ => arg(3)?,
    };
    let resume = if mode == "get" {
        args.get(5).map(PathBuf::from)
    } else {
        None
    };
    let listener = clearnet::listen(SocketAddr::new(ip.parse()?, 0)).await?;
    let port = listener.local_addr()?.port();
    let cfg = SessionConfig {
        listen_port: port,
        resume_db: resume,
        // WARREN_SYNC=1: fdatasync piece data before persisting piece bits (power-loss safe)
        sync_before_persist: std::env::var("WARREN_SYNC").is_ok_and(|v| v == "1"),
        // WARREN_DIRECT=0: buffered piece writes instead of O_DIRECT
        direct_io: std::env::var("WARREN_DIRECT").map_or(true, |v| v != "0"),
        // WARREN_DISK_JOBS=n: pieces hashed + written concurrently (default: two per CPU)
        disk_jobs: std::env::var("WARREN_DISK_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        ..SessionConfig::default()
    };
    let session = Session::new(cfg, Arc::new(TcpConnector::bound_to(ip.parse()?)))?;
    tokio::spawn(clearnet::serve(listener, session.clone()));
    println!("PORT {port}");
    match mode {
        "seed" => {
            let opts = MakeOptions {
                trackers: args.get(3).cloned().into_iter().collect(),
                ..Default::default()
            };
            let (_h, made) = session.seed_path(&PathBuf::from(arg(1)?), opts).await?;
            println!("MAGNET {}", made.magnet.to_uri());
            println!("READY");
            std::future::pending::<()>().await;
        }
        "seed-torrent" => {
            let mi = Metainfo::from_bytes(&std::fs::read(arg(1)?)?)?;
            let h = session
                .add_torrent(
                    TorrentSource::Metainfo(Box::new(mi)),
                    &PathBuf::from(arg(2)?),
                    AddOptions::default(),
                )
                .await?;
            println!("READY {:?}", h.status().state);
            std::future::pending::<()>().await;
        }
        "get" => {
            let src = arg(1)?;
            let source = if src.starts_with("magnet:") {
                TorrentSource::Magnet(Magnet::parse(src)?)
            } else {
                TorrentSource::Metainfo(Box::new(Metainfo::from_bytes(&std::fs::read(src)?)?))
            };
            let peers: Vec<PeerAddr> = args
                .get(4)
                .filter(|p| !p.is_empty() && *p != "-")
                .map(|p| p.parse().map(PeerAddr::Ip))
                .transpose()?
                .into_iter()
                .collect();
            let t0 = Instant::now();
            let h = session
                .add_torrent(
                    source,
                    &PathBuf::from(arg(2)?),
                    AddOptions {
                        peers,
                        ..Default::default()
                    },
                )
                .await?;
            let st = h.status();
            println!("START have={} state={:?}", st.have_bytes, st.state);
            let h2 = h.clone();
            let progress = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let st = h2.status();
                    println!(
                        "PROGRESS have={} unpersisted_pieces={} in_flight={} rate={:.1}MB/s",
                        st.have_bytes,
                        h2.unpersisted_pieces(),
                        st.pieces_in_flight,
                        st.down_rate / 1e6
                    );
                }
            });
            h.wait_complete().await?;
            progress.abort();
            let el = t0.elapsed().as_secs_f64();
            let st = h.status();
            let size = st.total_bytes.unwrap_or(0);
            println!(
                "RESULT bytes={size} downloaded={} seconds={el:.2} MBps={:.1}",
                st.downloaded,
                size as f64 / el / 1e6
            );
            session.shutdown();
        }
        m => return Err(format!("unknown mode {m}").into()),
    }
    Ok(())
}

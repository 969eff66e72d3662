//! The seeding cap (`SessionConfig::upload_rate`) holds within 10%: a capped seeder, an uncapped
//! leecher over loopback TCP; the steady-state rate (after the first MiB, which includes the
//! allowed burst) is measured at the leecher. Prints the figures (docs/BENCHMARKS.md).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use share::clearnet::{self, TcpConnector};
use share::connector::PeerAddr;
use share::make::{make_torrent, MakeOptions};
use share::session::{AddOptions, Session, SessionConfig, TorrentSource};

async fn session(ip: &str, upload_rate: u64) -> (Session, SocketAddr) {
    let listener = clearnet::listen(SocketAddr::new(ip.parse().unwrap(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = SessionConfig {
        listen_port: addr.port(),
        upload_rate,
        ..SessionConfig::default()
    };
    let ip: IpAddr = ip.parse().unwrap();
    let s = Session::new(cfg, Arc::new(TcpConnector::bound_to(ip))).unwrap();
    tokio::spawn(clearnet::serve(listener, s.clone()));
    (s, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_cap_holds_within_ten_percent() {
    const CAP: u64 = 2_000_000;
    let len = 9 * 1024 * 1024;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("capped.bin"), payload(len, 77)).unwrap();
    let made = make_torrent(
        &src.path().join("capped.bin"),
        &MakeOptions {
            piece_length: Some(64 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let (seed, seed_addr) = session(&lo(61), CAP).await;
    seed.add_torrent(
        TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
        src.path(),
        AddOptions::default(),
    )
    .await
    .unwrap();
    let (leech, _) = session(&lo(62), 0).await;
    let dl = tempfile::tempdir().unwrap();
    let h = leech
        .add_torrent(
            TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
            dl.path(),
            AddOptions {
                peers: vec![PeerAddr::Ip(seed_addr)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut mark: Option<(Instant, u64)> = None;
    loop {
        let st = h.status();
        if mark.is_none() && st.have_bytes >= 1 << 20 {
            mark = Some((Instant::now(), st.have_bytes));
        }
        if st.have_bytes == len as u64 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "download stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t1, b1) = mark.unwrap();
    let rate = (len as u64 - b1) as f64 / t1.elapsed().as_secs_f64();
    let err = (rate - CAP as f64) / CAP as f64;
    println!(
        "seeding cap {CAP} B/s: measured {rate:.0} B/s over {} bytes ({:+.1}%), whole download {:?}",
        len as u64 - b1,
        err * 100.0,
        t0.elapsed()
    );
    assert!(err.abs() < 0.10, "seeding rate {rate:.0} vs cap {CAP}");
    assert!(same_file(
        &dl.path().join("capped.bin"),
        &src.path().join("capped.bin")
    ));
}

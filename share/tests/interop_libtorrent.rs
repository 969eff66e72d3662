//! Interop with libtorrent (python3-libtorrent 2.0.x) and a real tracker (opentracker):
//! warren downloads from a seeding libtorrent from a .torrent and from a magnet whose tr= is a
//! local opentracker; libtorrent downloads from a seeding warren from a magnet link.
//! Skips (with a message) only when the tools are absent.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use share::magnet::Magnet;
use share::metainfo::Metainfo;
use share::session::{AddOptions, TorrentSource};

/// Payload + torrent (made by mktorrent if present, as a real third-party torrent).
fn make_payload(dir: &Path, size: usize, tracker: &str) -> Metainfo {
    let data = payload(size, 42);
    std::fs::write(dir.join("payload.bin"), &data).unwrap();
    let tpath = dir.join("payload.torrent");
    if have("mktorrent") {
        let st = Command::new("mktorrent")
            .args(["-l", "16", "-a", tracker, "-n", "payload.bin", "-o"])
            .arg(&tpath)
            .arg(dir.join("payload.bin"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    } else {
        let made = share::make::make_torrent(
            &dir.join("payload.bin"),
            &share::make::MakeOptions {
                piece_length: Some(64 * 1024),
                trackers: vec![tracker.to_string()],
                ..Default::default()
            },
        )
        .unwrap();
        std::fs::write(&tpath, made.torrent_bytes).unwrap();
    }
    Metainfo::from_bytes(&std::fs::read(&tpath).unwrap()).unwrap()
}

fn wait_line(g: &mut ProcGuard, prefix: &str) -> String {
    let out = g.child.stdout.take().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("{} exited before printing {prefix}", g.name);
        }
        if line.starts_with(prefix) {
            // keep the pipe open so the child does not get SIGPIPE
            g.child.stdout = None;
            std::mem::forget(r);
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_downloads_from_libtorrent_torrent_and_magnet_via_opentracker() {
    if !have_libtorrent() {
        return;
    }
    let tr_ip = lo(100);
    // tracker URL must be known before the torrent is made: pick the port first
    let seed_dir = tempfile::tempdir().unwrap();
    // Start tracker with a placeholder whitelist after we know the infohash: make the torrent
    // against a provisional URL, then start the tracker on that port.
    let port = free_port(&tr_ip);
    let url = format!("http://{tr_ip}:{port}/announce");
    let mi = make_payload(seed_dir.path(), 4 * 1024 * 1024 + 999, &url);
    let Some((_tracker, turl, _tdir)) = opentracker_on(&tr_ip, port, &[mi.info_hash.to_hex()])
    else {
        return;
    };
    assert_eq!(turl, url);
    let lt_ip = lo(101);
    let lt_port = free_port(&lt_ip);
    let mut lt = lt_node(
        "seed",
        seed_dir.path().join("payload.torrent").to_str().unwrap(),
        seed_dir.path(),
        &lt_ip,
        lt_port,
        None,
    );
    wait_line(&mut lt, "READY");
    wait_tracker_seeder(&url, &mi.info_hash.0, Duration::from_secs(30)).await;

    // .torrent, peers from the tracker
    let (w, _) = warren(&lo(102), None).await;
    let dl = tempfile::tempdir().unwrap();
    let h = w
        .add_torrent(
            TorrentSource::Metainfo(Box::new(mi.clone())),
            dl.path(),
            AddOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(90), h.wait_complete())
        .await
        .expect("download from libtorrent timed out")
        .unwrap();
    assert!(same_file(
        &dl.path().join("payload.bin"),
        &seed_dir.path().join("payload.bin")
    ));

    // magnet with tr= only (metadata over ut_metadata from libtorrent)
    let magnet = Magnet::parse(&format!(
        "magnet:?xt=urn:btih:{}&tr={}",
        mi.info_hash.to_hex(),
        url
    ))
    .unwrap();
    let (w2, _) = warren(&lo(103), None).await;
    let dl2 = tempfile::tempdir().unwrap();
    let h2 = w2
        .add_torrent(
            TorrentSource::Magnet(magnet),
            dl2.path(),
            AddOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(90), h2.wait_complete())
        .await
        .expect("magnet download from libtorrent timed out")
        .unwrap();
    assert!(same_file(
        &dl2.path().join("payload.bin"),
        &seed_dir.path().join("payload.bin")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_downloads_from_warren_magnet() {
    if !have_libtorrent() {
        return;
    }
    let tr_ip = lo(110);
    let port = free_port(&tr_ip);
    let url = format!("http://{tr_ip}:{port}/announce");
    let seed_dir = tempfile::tempdir().unwrap();
    let mi = make_payload(seed_dir.path(), 3 * 1024 * 1024 + 77, &url);
    let Some((_tracker, _, _tdir)) = opentracker_on(&tr_ip, port, &[mi.info_hash.to_hex()]) else {
        return;
    };
    let (w, _) = warren(&lo(111), None).await;
    let h = w
        .add_torrent(
            TorrentSource::Metainfo(Box::new(mi.clone())),
            seed_dir.path(),
            AddOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(h.status().progress, 1.0);
    wait_tracker_seeder(&url, &mi.info_hash.0, Duration::from_secs(30)).await;
    let magnet = format!("magnet:?xt=urn:btih:{}&tr={}", mi.info_hash.to_hex(), url);
    let dl = tempfile::tempdir().unwrap();
    let lt_ip = lo(112);
    let mut lt = lt_node("leech", &magnet, dl.path(), &lt_ip, free_port(&lt_ip), None);
    let st = tokio::task::spawn_blocking(move || {
        let line = wait_line(&mut lt, "RESULT");
        (line, lt)
    });
    let (line, _lt) = tokio::time::timeout(Duration::from_secs(90), st)
        .await
        .expect("libtorrent did not finish")
        .unwrap();
    eprintln!("libtorrent: {line}");
    assert!(same_file(
        &dl.path().join("payload.bin"),
        &seed_dir.path().join("payload.bin")
    ));
}

//! warren to warren over loopback TCP: from a .torrent, from a magnet link (metadata over
//! ut_metadata from the seeder), a multi-file torrent, pause/resume and status.

mod common;

use std::time::Duration;

use common::*;
use share::connector::PeerAddr;
use share::make::{make_torrent, MakeOptions};
use share::session::{AddOptions, TorrentSource, TorrentState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_to_warren_torrent_and_magnet() {
    let src = tempfile::tempdir().unwrap();
    let data = payload(3 * 1024 * 1024 + 12345, 1);
    std::fs::write(src.path().join("payload.bin"), &data).unwrap();
    let made = make_torrent(
        &src.path().join("payload.bin"),
        &MakeOptions {
            piece_length: Some(64 * 1024),
            ..Default::default()
        },
    )
    .unwrap();

    let (seed, seed_addr) = warren(&lo(1), None).await;
    let sh = seed
        .add_torrent(
            TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
            src.path(),
            AddOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(sh.status().state, TorrentState::Seeding);

    // .torrent
    let (leech, _) = warren(&lo(2), None).await;
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
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete())
        .await
        .expect("download timed out")
        .unwrap();
    assert!(same_file(
        &dl.path().join("payload.bin"),
        &src.path().join("payload.bin")
    ));
    let st = h.status();
    assert_eq!(st.have_bytes, data.len() as u64);
    assert_eq!(st.progress, 1.0);

    // magnet: metadata from the seeder
    let (leech2, _) = warren(&lo(3), None).await;
    let dl2 = tempfile::tempdir().unwrap();
    let h2 = leech2
        .add_torrent(
            TorrentSource::Magnet(made.magnet.clone()),
            dl2.path(),
            AddOptions {
                peers: vec![PeerAddr::Ip(seed_addr)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), h2.wait_complete())
        .await
        .expect("magnet download timed out")
        .unwrap();
    assert!(same_file(
        &dl2.path().join("payload.bin"),
        &src.path().join("payload.bin")
    ));
    assert_eq!(h2.raw_info().unwrap(), made.metainfo.raw_info);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_file_pieces_span_files_and_pause_resume() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("album");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.bin"), payload(100_000, 2)).unwrap();
    std::fs::write(root.join("sub/b.bin"), payload(777_777, 3)).unwrap();
    std::fs::write(root.join("sub/empty"), b"").unwrap();
    std::fs::write(root.join("z.txt"), payload(5, 4)).unwrap();
    let made = make_torrent(
        &root,
        &MakeOptions {
            piece_length: Some(32 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let (seed, seed_addr) = warren(&lo(4), None).await;
    seed.add_torrent(
        TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
        src.path(),
        AddOptions::default(),
    )
    .await
    .unwrap();
    let (leech, _) = warren(&lo(5), None).await;
    let dl = tempfile::tempdir().unwrap();
    let h = leech
        .add_torrent(
            TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
            dl.path(),
            AddOptions {
                peers: vec![PeerAddr::Ip(seed_addr)],
                paused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(h.status().state, TorrentState::Paused);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.status().have_bytes, 0);
    leech.resume(&h.info_hash()).unwrap();
    h.add_peers([PeerAddr::Ip(seed_addr)]);
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete())
        .await
        .expect("timed out")
        .unwrap();
    for f in ["a.bin", "sub/b.bin", "sub/empty", "z.txt"] {
        assert!(
            same_file(&dl.path().join("album").join(f), &root.join(f)),
            "{f} differs"
        );
    }
    assert_eq!(leech.list().len(), 1);
    leech.remove(&h.info_hash()).unwrap();
    assert!(leech.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_all_from_resume_db_trusts_bitfield() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("payload.bin"), payload(1024 * 1024 + 3, 21)).unwrap();
    let made = make_torrent(
        &src.path().join("payload.bin"),
        &MakeOptions {
            piece_length: Some(32 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let (seed, seed_addr) = warren(&lo(30), None).await;
    seed.add_torrent(
        TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
        src.path(),
        AddOptions::default(),
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("db");
    let dl = work.path().join("dl");
    {
        // no listener: nothing else keeps the session (and its sled db) alive
        let cfg = share::session::SessionConfig {
            resume_db: Some(db.clone()),
            ..Default::default()
        };
        let w = share::session::Session::new(
            cfg,
            std::sync::Arc::new(share::clearnet::TcpConnector::bound_to(
                lo(31).parse().unwrap(),
            )),
        )
        .unwrap();
        let h = w
            .add_torrent(
                TorrentSource::Magnet(made.magnet.clone()),
                &dl,
                AddOptions {
                    peers: vec![PeerAddr::Ip(seed_addr)],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(60), h.wait_complete())
            .await
            .expect("timed out")
            .unwrap();
        w.shutdown();
        drop(h);
        drop(w);
    }
    // sled holds a lock on the db until the old session's tasks are gone
    let mut restored = None;
    for _ in 0..50 {
        let cfg = share::session::SessionConfig {
            resume_db: Some(db.clone()),
            use_trackers: false,
            ..Default::default()
        };
        if let Ok(s) = share::session::Session::new(
            cfg,
            std::sync::Arc::new(share::clearnet::TcpConnector::new()),
        ) {
            restored = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = restored.expect("resume db stayed locked");
    let hs = s.restore_all().await.unwrap();
    assert_eq!(hs.len(), 1);
    let st = hs[0].status();
    assert_eq!(st.state, TorrentState::Seeding);
    assert_eq!(st.have_bytes, 1024 * 1024 + 3);
    assert_eq!(st.downloaded, 0);
}

//! A small hostile peer of ours against warren: corrupt piece data, an oversize message,
//! metadata that does not match the infohash, and a torrent whose file name is `../evil`.
//! Each bad peer is rejected and banned, nothing is written outside the download directory,
//! and the real download then completes from an honest warren seeder.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use share::bencode::{self, Value};
use share::connector::PeerAddr;
use share::magnet::Magnet;
use share::make::{make_torrent, MakeOptions};
use share::session::{AddOptions, SessionEvent, TorrentSource, TorrentState};
use share::wire::{Handshake, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Corrupt,
    Oversize,
    BadMetadata,
    /// Serve this exact info dict as metadata.
    ServeInfo,
}

/// Start the hostile peer; returns its address.
async fn hostile(
    ip: &str,
    mode: Mode,
    info_hash: [u8; 20],
    num_pieces: usize,
    info: Vec<u8>,
) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let info = info.clone();
            tokio::spawn(async move {
                let mut hs = [0u8; 68];
                if s.read_exact(&mut hs).await.is_err() {
                    return;
                }
                s.write_all(&Handshake::new(info_hash, [mode as u8 + 0xe0; 20]).encode())
                    .await
                    .unwrap();
                let meta_size = match mode {
                    Mode::BadMetadata => 40_000,
                    _ => info.len(),
                };
                let mut m = BTreeMap::new();
                m.insert(b"ut_metadata".to_vec(), Value::Int(3));
                let mut d = BTreeMap::new();
                d.insert(b"m".to_vec(), Value::Dict(m));
                d.insert(b"metadata_size".to_vec(), Value::Int(meta_size as i64));
                let mut out = BytesMut::new();
                Message::Extended {
                    id: 0,
                    payload: Bytes::from(bencode::encode(&Value::Dict(d))),
                }
                .encode(&mut out);
                if mode == Mode::Oversize {
                    out.extend_from_slice(&[0x00, 0xa0, 0x00, 0x00, 7]);
                }
                if num_pieces > 0 && mode == Mode::Corrupt {
                    let bf = share::bitfield::Bitfield::full(num_pieces);
                    Message::Bitfield(Bytes::copy_from_slice(bf.as_bytes())).encode(&mut out);
                    Message::Unchoke.encode(&mut out);
                }
                if s.write_all(&out).await.is_err() {
                    return;
                }
                let mut buf = BytesMut::new();
                loop {
                    match Message::decode(&mut buf, 1 << 20) {
                        Ok(Some(msg)) => {
                            let mut reply = BytesMut::new();
                            match msg {
                                Message::Request(r) if mode == Mode::Corrupt => Message::Piece {
                                    index: r.index,
                                    begin: r.begin,
                                    data: Bytes::from(vec![0x5a; r.length as usize]),
                                }
                                .encode(&mut reply),
                                Message::Extended { id: 3, payload } => {
                                    let v = bencode::decode_prefix(&payload).unwrap().0;
                                    let piece =
                                        v.get(b"piece").and_then(Value::as_int).unwrap() as usize;
                                    let body = if mode == Mode::BadMetadata {
                                        vec![b'x'; (40_000 - piece * 16384).min(16384)]
                                    } else {
                                        let s = piece * 16384;
                                        info[s..(s + 16384).min(info.len())].to_vec()
                                    };
                                    let mut d = BTreeMap::new();
                                    d.insert(b"msg_type".to_vec(), Value::Int(1));
                                    d.insert(b"piece".to_vec(), Value::Int(piece as i64));
                                    d.insert(b"total_size".to_vec(), Value::Int(meta_size as i64));
                                    let mut p = bencode::encode(&Value::Dict(d));
                                    p.extend_from_slice(&body);
                                    // warren's ut_metadata id is 1
                                    Message::Extended {
                                        id: 1,
                                        payload: Bytes::from(p),
                                    }
                                    .encode(&mut reply);
                                }
                                _ => {}
                            }
                            if !reply.is_empty() && s.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let mut chunk = [0u8; 65536];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    addr
}

async fn wait_banned(
    ev: &mut tokio::sync::broadcast::Receiver<SessionEvent>,
    who: SocketAddr,
) -> String {
    let fut = async {
        loop {
            if let Ok(SessionEvent::PeerBanned(_, PeerAddr::Ip(a), why)) = ev.recv().await {
                if a.ip() == who.ip() {
                    return why;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("hostile peer was not banned")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_banned_and_download_completes() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("payload.bin"),
        payload(2 * 1024 * 1024 + 1, 5),
    )
    .unwrap();
    let made = make_torrent(
        &src.path().join("payload.bin"),
        &MakeOptions {
            piece_length: Some(64 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let ih = made.metainfo.info_hash.0;
    let n = made.metainfo.info.num_pieces();
    let (seed, seed_addr) = warren(&lo(60), None).await;
    seed.add_torrent(
        TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
        src.path(),
        AddOptions::default(),
    )
    .await
    .unwrap();

    // 1. corrupt data + oversize message on a .torrent download
    let corrupt = hostile(
        &lo(61),
        Mode::Corrupt,
        ih,
        n,
        made.metainfo.raw_info.clone(),
    )
    .await;
    let oversize = hostile(
        &lo(62),
        Mode::Oversize,
        ih,
        n,
        made.metainfo.raw_info.clone(),
    )
    .await;
    let (w, _) = warren(&lo(63), None).await;
    let mut ev = w.events();
    let dl = tempfile::tempdir().unwrap();
    let h = w
        .add_torrent(
            TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
            dl.path(),
            AddOptions {
                peers: vec![PeerAddr::Ip(corrupt)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let why = wait_banned(&mut ev, corrupt).await;
    assert!(why.contains("SHA-1"), "{why}");
    h.add_peers([PeerAddr::Ip(oversize)]);
    let why = wait_banned(&mut ev, oversize).await;
    assert!(why.contains("exceeds"), "{why}");
    assert_eq!(h.status().have_bytes, 0);
    // banned peers are not reconnected
    h.add_peers([PeerAddr::Ip(corrupt), PeerAddr::Ip(seed_addr)]);
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete())
        .await
        .expect("download did not complete after bans")
        .unwrap();
    assert!(same_file(
        &dl.path().join("payload.bin"),
        &src.path().join("payload.bin")
    ));
    assert!(h.status().banned >= 2);

    // 2. bogus metadata on a magnet download
    let badmeta = hostile(&lo(64), Mode::BadMetadata, ih, 0, Vec::new()).await;
    let (w2, _) = warren(&lo(65), None).await;
    let mut ev2 = w2.events();
    let dl2 = tempfile::tempdir().unwrap();
    let h2 = w2
        .add_torrent(
            TorrentSource::Magnet(made.magnet.clone()),
            dl2.path(),
            AddOptions {
                peers: vec![PeerAddr::Ip(badmeta)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let why = wait_banned(&mut ev2, badmeta).await;
    assert!(why.contains("metadata"), "{why}");
    assert_eq!(h2.status().state, TorrentState::Metadata);
    h2.add_peers([PeerAddr::Ip(seed_addr)]);
    tokio::time::timeout(Duration::from_secs(60), h2.wait_complete())
        .await
        .expect("magnet download did not complete after ban")
        .unwrap();
    assert!(same_file(
        &dl2.path().join("payload.bin"),
        &src.path().join("payload.bin")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_with_dotdot_names_writes_nothing_outside() {
    // An info dict (correct for its own infohash) whose single file is named "../evil".
    let mut d = BTreeMap::new();
    d.insert(b"length".to_vec(), Value::Int(10));
    d.insert(b"name".to_vec(), Value::Bytes(b"../evil".to_vec()));
    d.insert(b"piece length".to_vec(), Value::Int(16384));
    d.insert(b"pieces".to_vec(), Value::Bytes(vec![1; 20]));
    let raw = bencode::encode(&Value::Dict(d.clone()));
    let ih = share::infohash::InfoHash::of_info_bytes(&raw);
    let evil = hostile(&lo(70), Mode::ServeInfo, ih.0, 0, raw).await;
    // and a multi-file one with a ".." path component
    let mut f = BTreeMap::new();
    f.insert(b"length".to_vec(), Value::Int(10));
    f.insert(
        b"path".to_vec(),
        Value::List(vec![
            Value::Bytes(b"..".to_vec()),
            Value::Bytes(b"evil2".to_vec()),
        ]),
    );
    let mut d2 = BTreeMap::new();
    d2.insert(b"files".to_vec(), Value::List(vec![Value::Dict(f)]));
    d2.insert(b"name".to_vec(), Value::Bytes(b"x".to_vec()));
    d2.insert(b"piece length".to_vec(), Value::Int(16384));
    d2.insert(b"pieces".to_vec(), Value::Bytes(vec![1; 20]));
    let raw2 = bencode::encode(&Value::Dict(d2));
    let ih2 = share::infohash::InfoHash::of_info_bytes(&raw2);
    let evil2 = hostile(&lo(71), Mode::ServeInfo, ih2.0, 0, raw2).await;

    let root = tempfile::tempdir().unwrap();
    let dl = root.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let (w, _) = warren(&lo(72), None).await;
    for (h, peer) in [(ih, evil), (ih2, evil2)] {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", h.to_hex())).unwrap();
        let t = w
            .add_torrent(
                TorrentSource::Magnet(m),
                &dl,
                AddOptions {
                    peers: vec![PeerAddr::Ip(peer)],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), t.wait_complete())
            .await
            .expect("no verdict on the evil metadata");
        let e = r.expect_err("evil metadata must be refused").to_string();
        assert!(e.contains("metadata rejected"), "{e}");
    }
    let mut found = Vec::new();
    for e in walk(root.path()) {
        found.push(e);
    }
    assert!(
        found.iter().all(|p| p.starts_with(&dl)),
        "files outside the download dir: {found:?}"
    );
    assert!(!root.path().join("evil").exists() && !root.path().join("evil2").exists());
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            out.push(path.clone());
            if path.is_dir() {
                out.extend(walk(&path));
            }
        }
    }
    out
}

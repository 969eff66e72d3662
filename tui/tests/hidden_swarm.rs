//! Hidden seeding through the whole stack (overlay + share engine + node), in-process:
//! a 30-node network, a hidden seeder, a downloader with a magnet link that has no tracker and no
//! peer address. The download completes byte-identical; no DHT node holds the infohash in clear;
//! and it still completes when the rendezvous point, a relay of its circuit and an introduction
//! point die in the middle of it.

use std::path::Path;
use std::time::{Duration, Instant};

use overlay::testnet::Testnet;
use share::session::SessionConfig;
use warren::node::connector::Clients;
use warren::node::core::NodeCore;
use warren::status::CircuitPurpose;

fn write_content(path: &Path, size: usize, seed: u8) {
    let data: Vec<u8> = (0..size)
        .map(|i| ((i as u64).wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect();
    std::fs::write(path, data).unwrap();
}

fn core(net: &Testnet, dir: &Path, name: &str) -> NodeCore {
    NodeCore::new(
        name.into(),
        Clients::new(overlay::ClientConfig::default(), net.descriptors()),
        SessionConfig::default(),
        dir.join(format!("{name}-state")),
        dir.join(format!("{name}-download")),
        3,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnet_without_tracker_resolves_and_downloads_inside_the_overlay() {
    let net = Testnet::builder()
        .relays(28)
        .exits(2)
        .dht(true)
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("hidden.bin");
    write_content(&content, 5_000_000, 1);

    let seeder = core(&net, dir.path(), "seeder");
    let (_, sh, link) = seeder.seed_path(&content, Some(3)).await.unwrap();
    assert!(!link.contains("tr="), "{link}");
    assert!(!link.contains("x.pe="), "{link}");

    let downloader = core(&net, dir.path(), "downloader");
    let (id, _) = downloader.add_magnet(&link, None, Some(3)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), downloader.wait_complete(id))
        .await
        .expect("download timed out")
        .unwrap();
    let got = std::fs::read(dir.path().join("downloader-download/hidden.bin")).unwrap();
    assert!(got == std::fs::read(&content).unwrap(), "content differs");

    // the downloader went through rendezvous circuits of 3 real hops + the seeder's virtual hop
    let snap = downloader.snapshot_now();
    assert!(
        snap.circuits
            .iter()
            .any(|c| c.purpose == CircuitPurpose::Rendezvous && c.hops.len() == 3),
        "{:?}",
        snap.circuits
    );
    // the seeder keeps 3 introduction circuits
    let snap = seeder.snapshot_now();
    assert_eq!(
        snap.circuits
            .iter()
            .filter(|c| c.purpose == CircuitPurpose::Intro)
            .count(),
        3
    );

    // DHT nodes store the blinded, encrypted record: none holds the infohash in clear
    let ih = sh.info_hash().0;
    let mut held = 0;
    for n in net.nodes() {
        for r in n.dht_records() {
            if r.kind == overlay::dht::RecordKind::Swarm {
                held += 1;
            }
            let mut bytes = r.value.clone();
            bytes.extend_from_slice(&r.key.0);
            assert!(
                !bytes.windows(20).any(|w| w == ih),
                "a DHT node holds the infohash"
            );
        }
    }
    assert!(held >= 10, "only {held} swarm records stored");
    downloader.shutdown_all();
    seeder.shutdown_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_survives_the_death_of_its_rendezvous_point_a_relay_and_an_intro_point() {
    let net = Testnet::builder()
        .relays(14)
        .exits(1)
        .dht(true)
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("big.bin");
    write_content(&content, 48_000_000, 2);
    let seeder = core(&net, dir.path(), "seeder");
    let (_, _, link) = seeder.seed_path(&content, Some(3)).await.unwrap();
    let downloader = core(&net, dir.path(), "downloader");
    let (id, h) = downloader.add_magnet(&link, None, Some(3)).await.unwrap();

    // once a quarter is in, kill the rendezvous point and the middle relay of the downloader's
    // rendezvous circuit, and one of the seeder's introduction points
    let t0 = Instant::now();
    while h.status().have_bytes < 12_000_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no progress: {:?}",
            h.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snap = downloader.snapshot_now();
    let rv = snap
        .circuits
        .iter()
        .find(|c| {
            c.purpose == CircuitPurpose::Rendezvous && c.state == warren::status::CircuitState::Open
        })
        .expect("an open rendezvous circuit")
        .clone();
    let intro = seeder
        .snapshot_now()
        .circuits
        .iter()
        .find(|c| c.purpose == CircuitPurpose::Intro)
        .expect("an introduction circuit")
        .hops
        .last()
        .cloned()
        .unwrap();
    let mut killed = Vec::new();
    for short in [&rv.hops[2], &rv.hops[1], &intro] {
        if let Some(i) = net.nodes().iter().position(|n| &n.id().short() == short) {
            if !killed.contains(&i) {
                net.kill(i);
                killed.push(i);
            }
        }
    }
    assert!(killed.len() >= 2, "{killed:?}");
    let at_kill = h.status().have_bytes;
    // (running nodes refresh their directories; here the test does it)
    for (_, c) in downloader.clients().all() {
        c.set_directory(net.descriptors());
    }
    for (_, c) in seeder.clients().all() {
        c.set_directory(net.descriptors());
    }
    tokio::time::timeout(Duration::from_secs(120), downloader.wait_complete(id))
        .await
        .expect("the download did not recover")
        .unwrap();
    assert!(at_kill < 48_000_000, "killed too late to matter");
    let got = std::fs::read(dir.path().join("downloader-download/big.bin")).unwrap();
    assert!(got == std::fs::read(&content).unwrap(), "content differs");
    downloader.shutdown_all();
    seeder.shutdown_all();
}

//! Interop with aria2c, qBittorrent (qbittorrent-nox) and Transmission (transmission-daemon)
//! on loopback, peers found through a local opentracker (and given directly where the client
//! allows). Each test skips (with a message) only when its client is absent.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use share::connector::PeerAddr;
use share::magnet::Magnet;
use share::metainfo::Metainfo;
use share::session::{AddOptions, TorrentSource};

fn make(dir: &Path, size: usize, tracker: &str, seed: u64) -> (Metainfo, Vec<u8>) {
    let data = payload(size, seed);
    std::fs::write(dir.join("payload.bin"), &data).unwrap();
    let made = share::make::make_torrent(
        &dir.join("payload.bin"),
        &share::make::MakeOptions {
            piece_length: Some(256 * 1024),
            trackers: vec![tracker.to_string()],
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::write(dir.join("payload.torrent"), &made.torrent_bytes).unwrap();
    (made.metainfo, made.torrent_bytes)
}

fn wait_port(ip: &str, port: u16, secs: u64) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if std::net::TcpStream::connect((ip, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// warren downloads from .torrent, then from magnet (tr=tracker), from `seed_addr`.
async fn warren_fetch_both(
    mi: &Metainfo,
    url: &str,
    seed_dir: &Path,
    seed_addr: std::net::SocketAddr,
    n: u8,
) {
    let (w, _) = warren(&lo(n), None).await;
    let dl = tempfile::tempdir().unwrap();
    let h = w
        .add_torrent(
            TorrentSource::Metainfo(Box::new(mi.clone())),
            dl.path(),
            AddOptions {
                peers: vec![PeerAddr::Ip(seed_addr)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), h.wait_complete())
        .await
        .expect(".torrent download timed out")
        .unwrap();
    assert!(same_file(
        &dl.path().join("payload.bin"),
        &seed_dir.join("payload.bin")
    ));
    let magnet = Magnet::parse(&format!(
        "magnet:?xt=urn:btih:{}&tr={}",
        mi.info_hash.to_hex(),
        url
    ))
    .unwrap();
    let (w2, _) = warren(&lo(n + 1), None).await;
    let dl2 = tempfile::tempdir().unwrap();
    let h2 = w2
        .add_torrent(
            TorrentSource::Magnet(magnet),
            dl2.path(),
            AddOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), h2.wait_complete())
        .await
        .expect("magnet download timed out")
        .unwrap();
    assert!(same_file(
        &dl2.path().join("payload.bin"),
        &seed_dir.join("payload.bin")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aria2c_downloads_from_warren_magnet() {
    if !have("aria2c") {
        return;
    }
    let tr_ip = lo(120);
    let port = free_port(&tr_ip);
    let url = format!("http://{tr_ip}:{port}/announce");
    let seed_dir = tempfile::tempdir().unwrap();
    let (mi, _) = make(seed_dir.path(), 3 * 1024 * 1024 + 5, &url, 7);
    let Some((_tracker, _, _td)) = opentracker_on(&tr_ip, port, &[mi.info_hash.to_hex()]) else {
        return;
    };
    let (w, _) = warren(&lo(121), None).await;
    w.add_torrent(
        TorrentSource::Metainfo(Box::new(mi.clone())),
        seed_dir.path(),
        AddOptions::default(),
    )
    .await
    .unwrap();
    wait_tracker_seeder(&url, &mi.info_hash.0, Duration::from_secs(30)).await;
    let out = tempfile::tempdir().unwrap();
    let a_ip = lo(122);
    let magnet = format!("magnet:?xt=urn:btih:{}&tr={}", mi.info_hash.to_hex(), url);
    let mut g = ProcGuard::spawn(
        "aria2c",
        Command::new("aria2c")
            .arg(format!("--interface={a_ip}"))
            .arg(format!("--listen-port={}", free_port(&a_ip)))
            .args([
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--seed-time=0",
                "--bt-stop-timeout=60",
                "--file-allocation=none",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--bt-save-metadata=false",
                "--bt-tracker-interval=5",
                "--check-integrity=false",
            ])
            .arg("-d")
            .arg(out.path())
            .arg(&magnet)
            .stdout(Stdio::null()),
    );
    let st = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        loop {
            if let Some(s) = g.child.try_wait().unwrap() {
                return Some(s);
            }
            if t0.elapsed() > Duration::from_secs(90) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert!(
        st.is_some_and(|s| s.success()),
        "aria2c failed or timed out: {st:?}"
    );
    assert!(same_file(
        &out.path().join("payload.bin"),
        &seed_dir.path().join("payload.bin")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_downloads_from_qbittorrent() {
    if !have("qbittorrent-nox") || !have("curl") {
        return;
    }
    let tr_ip = lo(130);
    let port = free_port(&tr_ip);
    let url = format!("http://{tr_ip}:{port}/announce");
    let seed_dir = tempfile::tempdir().unwrap();
    let (mi, _) = make(seed_dir.path(), 4 * 1024 * 1024 + 3, &url, 8);
    let Some((_tracker, _, _td)) = opentracker_on(&tr_ip, port, &[mi.info_hash.to_hex()]) else {
        return;
    };
    let q_ip = lo(131);
    let peer_port = free_port(&q_ip);
    let web_port = free_port("127.0.0.1");
    let prof = tempfile::tempdir().unwrap();
    let cfgdir = prof.path().join("qBittorrent/config");
    std::fs::create_dir_all(&cfgdir).unwrap();
    std::fs::write(
        cfgdir.join("qBittorrent.conf"),
        format!(
            "[LegalNotice]\nAccepted=true\n[BitTorrent]\nSession\\DHTEnabled=false\nSession\\LSDEnabled=false\n\
Session\\PeXEnabled=false\nSession\\Port={peer_port}\nSession\\Interface=lo\nSession\\InterfaceName=lo\n\
Session\\InterfaceAddress={q_ip}\nSession\\DefaultSavePath={}\nSession\\QueueingSystemEnabled=false\n\
Session\\Encryption=0\nSession\\BTProtocol=TCP\nSession\\AnonymousModeEnabled=false\n[Network]\n\
PortForwardingEnabled=false\n[Preferences]\nWebUI\\Address=127.0.0.1\nWebUI\\Port={web_port}\n\
WebUI\\LocalHostAuth=false\nWebUI\\HostHeaderValidation=false\nWebUI\\CSRFProtection=false\n\
Connection\\UPnP=false\nGeneral\\Locale=en\n",
            seed_dir.path().display()
        ),
    )
    .unwrap();
    let _q = ProcGuard::spawn(
        "qbittorrent-nox",
        Command::new("qbittorrent-nox")
            .arg(format!("--profile={}", prof.path().display()))
            .arg(format!("--webui-port={web_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_port("127.0.0.1", web_port, 30),
        "qBittorrent web UI did not start"
    );
    let add = Command::new("curl")
        .args(["-s", "-F"])
        .arg(format!(
            "torrents=@{}",
            seed_dir.path().join("payload.torrent").display()
        ))
        .arg("-F")
        .arg(format!("savepath={}", seed_dir.path().display()))
        .arg(format!("http://127.0.0.1:{web_port}/api/v2/torrents/add"))
        .output()
        .unwrap();
    assert!(add.status.success(), "adding to qBittorrent failed");
    // wait for qBittorrent to check the data and seed
    let t0 = Instant::now();
    loop {
        let o = Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:{web_port}/api/v2/torrents/info"),
            ])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout);
        if s.contains("\"progress\":1") && (s.contains("UP\"") || s.contains("stalledUP")) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "qBittorrent never seeded: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(wait_port(&q_ip, peer_port, 10), "qBittorrent not listening");
    warren_fetch_both(
        &mi,
        &url,
        seed_dir.path(),
        format!("{q_ip}:{peer_port}").parse().unwrap(),
        132,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_downloads_from_transmission() {
    if !have("transmission-daemon") || !have("transmission-remote") {
        return;
    }
    let tr_ip = lo(140);
    let port = free_port(&tr_ip);
    let url = format!("http://{tr_ip}:{port}/announce");
    let seed_dir = tempfile::tempdir().unwrap();
    let (mi, _) = make(seed_dir.path(), 2 * 1024 * 1024 + 11, &url, 9);
    let Some((_tracker, _, _td)) = opentracker_on(&tr_ip, port, &[mi.info_hash.to_hex()]) else {
        return;
    };
    let t_ip = lo(141);
    let peer_port = free_port(&t_ip);
    let rpc = free_port("127.0.0.1");
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("settings.json"),
        format!(
            r#"{{ "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "port-forwarding-enabled": false, "bind-address-ipv4": "{t_ip}", "bind-address-ipv6": "::1",
  "rpc-bind-address": "127.0.0.1", "rpc-port": {rpc}, "rpc-authentication-required": false,
  "rpc-whitelist-enabled": false, "peer-port": {peer_port}, "peer-port-random-on-start": false,
  "download-dir": "{}", "incomplete-dir-enabled": false, "encryption": 0,
  "speed-limit-down-enabled": false, "speed-limit-up-enabled": false, "ratio-limit-enabled": false,
  "message-level": 1, "start-added-torrents": true, "umask": 18 }}"#,
            seed_dir.path().display()
        ),
    )
    .unwrap();
    let _t = ProcGuard::spawn(
        "transmission-daemon",
        Command::new("transmission-daemon")
            .arg("-f")
            .arg("-g")
            .arg(conf.path())
            .env("OPENSSL_CONF", support("openssl-legacy.cnf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_port("127.0.0.1", rpc, 30),
        "transmission RPC did not start"
    );
    let remote = format!("127.0.0.1:{rpc}");
    let st = Command::new("transmission-remote")
        .arg(&remote)
        .arg("-a")
        .arg(seed_dir.path().join("payload.torrent"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    loop {
        let o = Command::new("transmission-remote")
            .arg(&remote)
            .arg("-l")
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout);
        if s.contains("100%") && s.contains("Seeding") || s.contains("Idle") && s.contains("100%") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "transmission never seeded: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        wait_port(&t_ip, peer_port, 10),
        "transmission not listening"
    );
    warren_fetch_both(
        &mi,
        &url,
        seed_dir.path(),
        format!("{t_ip}:{peer_port}").parse().unwrap(),
        142,
    )
    .await;
}

//! Shared helpers for the share integration tests: process guards that kill by PID, free
//! ports, payloads, real-client launchers. Loopback only.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use share::clearnet::{self, TcpConnector};
use share::session::{Session, SessionConfig};

/// Kills the child by PID when dropped (test failure included).
pub struct ProcGuard {
    pub child: Child,
    pub name: String,
}

impl ProcGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ProcGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ProcGuard {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a program is installed; prints why a test is skipped if not.
pub fn have(prog: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {prog} is not installed");
    }
    ok
}

pub fn have_libtorrent() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: python3-libtorrent is not installed");
    }
    ok
}

/// A free TCP port on `ip`.
pub fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// Distinct loopback address for a client (so a ban of one does not hit the others).
pub fn lo(n: u8) -> String {
    format!("127.0.{}.{}", 40 + (std::process::id() % 100) as u8, n)
}

/// Deterministic pseudo-random payload.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

/// A warren session on plain TCP, listening on `ip`.
pub async fn warren(ip: &str, resume: Option<PathBuf>) -> (Session, SocketAddr) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = clearnet::listen(SocketAddr::new(ip.parse().unwrap(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = SessionConfig {
        listen_port: addr.port(),
        resume_db: resume,
        ..SessionConfig::default()
    };
    let ip: IpAddr = ip.parse().unwrap();
    let s = Session::new(cfg, Arc::new(TcpConnector::bound_to(ip))).unwrap();
    tokio::spawn(clearnet::serve(listener, s.clone()));
    (s, addr)
}

/// Wait (bounded) for a condition.
pub async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Local opentracker with a whitelist holding `info_hash_hex`; None (with a message) if
/// opentracker is missing. Returns (guard, announce URL, tempdir).
pub fn opentracker(
    ip: &str,
    info_hashes: &[String],
) -> Option<(ProcGuard, String, tempfile::TempDir)> {
    opentracker_on(ip, free_port(ip), info_hashes)
}

/// [`opentracker`] on a given port.
pub fn opentracker_on(
    ip: &str,
    port: u16,
    info_hashes: &[String],
) -> Option<(ProcGuard, String, tempfile::TempDir)> {
    if !have("opentracker") {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("otr")
        .tempdir_in("/tmp")
        .unwrap();
    let wl = dir.path().join("whitelist.txt");
    std::fs::write(&wl, info_hashes.join("\n") + "\n").unwrap();
    // opentracker drops to nobody: the dir and whitelist must be readable by it
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&wl, std::fs::Permissions::from_mode(0o644)).unwrap();
    let g = ProcGuard::spawn(
        "opentracker",
        Command::new("opentracker")
            .args(["-i", ip, "-p", &port.to_string(), "-P", &port.to_string()])
            .arg("-d")
            .arg(dir.path())
            .arg("-w")
            .arg("whitelist.txt")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // wait until it listens
    let t0 = Instant::now();
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "opentracker did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((g, format!("http://{ip}:{port}/announce"), dir))
}

/// libtorrent (python3-libtorrent) node: seed or leech.
pub fn lt_node(
    mode: &str,
    src: &str,
    save: &Path,
    ip: &str,
    port: u16,
    peer: Option<SocketAddr>,
) -> ProcGuard {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(support("lt_node.py"))
        .args([mode, src])
        .arg(save)
        .args([ip, &port.to_string()]);
    if let Some(p) = peer {
        c.arg(p.to_string());
    }
    c.stdout(Stdio::piped()).stderr(Stdio::inherit());
    ProcGuard::spawn("libtorrent", &mut c)
}

/// Compare two files byte for byte.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// How many seeders opentracker at `announce_url` (`http://IP:PORT/announce`, loopback) counts for
/// `info_hash` (20 bytes), read from its scrape answer; 0 when it does not answer.
pub fn tracker_seeders(announce_url: &str, info_hash: &[u8; 20]) -> u64 {
    use std::io::{Read, Write};
    let Some(hostport) = announce_url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
    else {
        return 0;
    };
    let escaped: String = info_hash.iter().map(|b| format!("%{b:02X}")).collect();
    let Ok(mut s) = std::net::TcpStream::connect(hostport) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "GET /scrape?info_hash={escaped} HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    // the bencoded scrape dictionary: ...8:completei<N>e...
    let text = String::from_utf8_lossy(&reply);
    text.split("8:completei")
        .nth(1)
        .and_then(|r| r.split('e').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits until the tracker at `announce_url` counts a seeder for `info_hash` (its announce has
/// arrived), instead of sleeping and hoping it has.
pub async fn wait_tracker_seeder(announce_url: &str, info_hash: &[u8; 20], timeout: Duration) {
    let url = announce_url.to_string();
    let ih = *info_hash;
    wait_for(
        &format!("{url} to count a seeder (the seeder's announce)"),
        timeout,
        move || tracker_seeders(&url, &ih) >= 1,
    )
    .await;
}

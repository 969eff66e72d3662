//! A private Tor network on 127.0.0.1 for tests, from Debian's `tor` and `tor-gencert`:
//! three directory authorities (also relays), two middle relays and two exits, TestingTorNetwork.
//!
//! * Started once per test binary by [`TorNet::start`]; every node is a child process of the
//!   test (not daemonized) and is killed by its PID when the `TorNet` is dropped, which happens
//!   on unwinding too. Each torrc also names the test process as `__OwningControllerProcess`, so
//!   the nodes exit by themselves if the test process is killed outright.
//! * Servers (tracker, seeder, web server) live in a network namespace made by the harness,
//!   [`ServiceNs`], reached from this host through a veth pair (10.213.K.0/24, namespace side
//!   10.213.K.2 and more). Each exit binds its outgoing connections to its own host-side address
//!   ([`TorNet::exit_addrs`], 10.213.K.5 and .6): a server sees which exit a stream came from, and
//!   anything from the client itself would come from 10.213.K.1. (C tor never binds connections
//!   to loopback destinations, so loopback servers cannot tell the exits from the client.)
//! * Exits: policy `accept 10.213.K.0/24:*`, `accept *:SERVICE_PORTS`, `reject *:*` (arti picks
//!   exits from the microdescriptor port summary, which lists only ports open to the whole IPv4
//!   space). Exit DNS goes to [`DnsServer`] only.
//! * Needs root (namespaces); [`TorNet::start`] skips with a message without root or `tor`.
//! * Exits get no Guard flag, so a client's guard is never its only usable exit; only the exits
//!   get the Exit flag. The authorities read a bandwidth file that gives every relay the same
//!   measured bandwidth: otherwise every consensus weight is 0 and arti's weighted choice of exit
//!   is skewed (seen: 16 circuits in a row on one exit).
//!
//! Used by tor/tests/tor_net.rs and (through `#[path]`) by tui/tests/tor_net.rs.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Destination ports the exits open to everyone (test servers must listen in this range).
pub const SERVICE_PORTS: (u16, u16) = (7300, 7399);

/// Names the exits can resolve: `A-B-C-D.tornet.example` is A.B.C.D for loopback and 10.213/16
/// addresses (the exits use the network's own DNS server, [`DnsServer`], which answers nothing
/// else). This host's own resolver does not know these names.
pub const TEST_DOMAIN: &str = "tornet.example";

/// The test-domain name of an address.
pub fn test_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}-{}-{}-{}.{TEST_DOMAIN}", o[0], o[1], o[2], o[3])
}

const AUTHS: [&str; 3] = ["auth0", "auth1", "auth2"];
const RELAYS: [&str; 4] = ["relay3", "relay4", "exit5", "exit6"];

/// One node's keys and ports.
struct NodeInfo {
    name: String,
    dir: PathBuf,
    orport: u16,
    dirport: u16,
    fingerprint: String,
    ed_identity: String,
    v3ident: Option<String>,
}

/// A running test network. Dropping it stops every node.
pub struct TorNet {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    nodes: Vec<NodeInfo>,
    children: Vec<(String, Child)>,
    dns: Option<DnsServer>,
    /// The servers' namespace (dropped after the nodes).
    pub svc: Option<ServiceNs>,
    /// How long the network took to become usable.
    pub ready_after: Duration,
}

/// Whether `prog` can be run.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn base64_unpadded(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn port_free(p: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
}

/// A base port B such that B..B+7 (ORPorts) and B+100..B+107 (DirPorts) are all free.
fn pick_base() -> u16 {
    for base in (15100..25000).step_by(200) {
        if (0..7).all(|i| port_free(base + i) && port_free(base + 100 + i)) {
            return base;
        }
    }
    panic!("no free port range for the Tor test network");
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

impl TorNet {
    /// Generates and starts the network and waits until it is usable; `None` (with a printed
    /// reason) only when `tor` or `tor-gencert` is not installed.
    pub fn start() -> Option<TorNet> {
        if !have("tor") || !have("tor-gencert") || !have("ip") {
            eprintln!(
                "SKIP: the Tor network tests need Debian's `tor` package (tor + tor-gencert) and \
                 iproute2: apt-get install -y tor iproute2"
            );
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIP: the Tor network tests need root (a network namespace for the servers)"
            );
            return None;
        }
        let svc = ServiceNs::new();
        let t0 = Instant::now();
        let tmp = tempfile::Builder::new()
            .prefix("warren-tornet.")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let base = pick_base();
        let mut nodes = Vec::new();
        for (i, name) in AUTHS.iter().chain(RELAYS.iter()).enumerate() {
            let d = dir.join(name);
            std::fs::create_dir_all(d.join("keys")).unwrap();
            set_mode(&d, 0o700);
            let orport = base + i as u16;
            let dirport = base + 100 + i as u16;
            let v3ident = if name.starts_with("auth") {
                let out = run(Command::new("tor-gencert")
                    .current_dir(d.join("keys"))
                    .args(["--create-identity-key", "--passphrase-fd", "0", "-m", "12"])
                    .args(["-a", &format!("127.0.0.1:{dirport}")])
                    .args([
                        "-i",
                        "authority_identity_key",
                        "-s",
                        "authority_signing_key",
                    ])
                    .args(["-c", "authority_certificate"])
                    .stdin(std::fs::File::open("/dev/null").unwrap()));
                let cert = std::fs::read_to_string(d.join("keys/authority_certificate"))
                    .unwrap_or_else(|e| {
                        panic!(
                            "tor-gencert made no certificate ({e}): {}",
                            String::from_utf8_lossy(&out.stderr)
                        )
                    });
                let fp = cert
                    .lines()
                    .find_map(|l| l.strip_prefix("fingerprint "))
                    .expect("fingerprint line in authority_certificate")
                    .trim()
                    .to_string();
                Some(fp)
            } else {
                None
            };
            // relay identity keys (and the RSA fingerprint)
            run(Command::new("tor")
                .args(["--quiet", "--ignore-missing-torrc", "--DataDirectory"])
                .arg(&d)
                .args(["--ORPort", "1", "--PublishServerDescriptor", "0"])
                .args([
                    "--DirAuthority",
                    "dummy 127.0.0.1:1 ffffffffffffffffffffffffffffffffffffffff",
                    "--list-fingerprint",
                ]));
            let fingerprint = std::fs::read_to_string(d.join("fingerprint"))
                .expect("tor --list-fingerprint wrote no fingerprint file")
                .split_whitespace()
                .nth(1)
                .expect("fingerprint file: NAME FP")
                .to_string();
            let ed = std::fs::read(d.join("keys/ed25519_master_id_public_key"))
                .expect("ed25519 master id public key");
            let ed_identity = base64_unpadded(&ed[ed.len() - 32..]);
            nodes.push(NodeInfo {
                name: name.to_string(),
                dir: d,
                orport,
                dirport,
                fingerprint,
                ed_identity,
                v3ident,
            });
        }
        let mut dirauth = String::new();
        for n in nodes.iter().filter(|n| n.v3ident.is_some()) {
            let _ = writeln!(
                dirauth,
                "DirAuthority {} orport={} v3ident={} 127.0.0.1:{} {}",
                n.name,
                n.orport,
                n.v3ident.as_deref().unwrap_or_default(),
                n.dirport,
                n.fingerprint
            );
        }
        let exit_fps: Vec<String> = nodes
            .iter()
            .filter(|n| n.name.starts_with("exit"))
            .map(|n| format!("${}", n.fingerprint))
            .collect();
        let guards: Vec<String> = nodes
            .iter()
            .filter(|n| !n.name.starts_with("exit"))
            .map(|n| format!("${}", n.fingerprint))
            .collect();
        let me = std::process::id();
        let dns = DnsServer::start(svc.host_ip());
        let resolv = dir.join("exit-resolv.conf");
        std::fs::write(&resolv, format!("nameserver {}\n", dns.addr)).unwrap();
        let mut net = TorNet {
            dir: dir.clone(),
            _tmp: tmp,
            nodes: Vec::new(),
            children: Vec::new(),
            dns: Some(dns),
            svc: None,
            ready_after: Duration::ZERO,
        };
        // measured bandwidths for every relay (equal): without them every consensus weight is 0
        // and arti's weighted choice of exits is no longer an even one
        let bwfile = dir.join("bandwidths");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut bw = format!("{now}\n");
        for n in &nodes {
            let _ = writeln!(bw, "node_id=${} bw=1000", n.fingerprint);
        }
        std::fs::write(&bwfile, bw).unwrap();
        for (i, n) in nodes.iter().enumerate() {
            let mut t = format!(
                "TestingTorNetwork 1\nAssumeReachable 1\nPathsNeededToBuildCircuits 0.25\n\
                 TestingDirAuthVoteExit {}\nTestingDirAuthVoteGuard {}\nTestingDirAuthVoteGuardIsStrict 1\n\
                 TestingDirAuthVoteHSDir *\nTestingMinExitFlagThreshold 0\nV3AuthNIntervalsValid 2\n\
                 DataDirectory {}\nRunAsDaemon 0\n__OwningControllerProcess {me}\nNickname {}\n\
                 ContactInfo {}@test.invalid\nShutdownWaitLength 0\nLog notice file {}/notice.log\n\
                 SafeLogging 0\nSocksPort 0\nAddress 127.0.0.1\nORPort 127.0.0.1:{}\nDirPort 127.0.0.1:{}\n{}",
                exit_fps.join(","),
                guards.join(","),
                n.dir.display(),
                n.name,
                n.name,
                n.dir.display(),
                n.orport,
                n.dirport,
                dirauth
            );
            if n.name.starts_with("auth") {
                t.push_str(
                    "AuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\nExitRelay 0\nExitPolicy reject *:*\n\
                     V3BandwidthsFile BWFILE\n\
                     TestingV3AuthInitialVotingInterval 20\nTestingV3AuthInitialVoteDelay 4\n\
                     TestingV3AuthInitialDistDelay 4\nV3AuthVotingInterval 20\nV3AuthVoteDelay 4\nV3AuthDistDelay 4\n"
                        .replace("BWFILE", &bwfile.display().to_string())
                        .as_str(),
                );
            } else if n.name.starts_with("exit") {
                let _ = write!(
                    t,
                    "ExitRelay 1\nExitPolicyRejectPrivate 0\nExitPolicyRejectLocalInterfaces 0\n\
                     ExitPolicy accept {}/24:*\nExitPolicy accept *:{}-{}\nExitPolicy reject *:*\n\
                     OutboundBindAddressExit {}\nServerDNSResolvConfFile {}\n\
                     ServerDNSDetectHijacking 0\nServerDNSAllowBrokenConfig 1\nServerDNSTestAddresses {}\n",
                    svc.addr(0),
                    SERVICE_PORTS.0,
                    SERVICE_PORTS.1,
                    svc.addr(i as u8),
                    resolv.display(),
                    test_name(svc.addr(2))
                );
            } else {
                t.push_str("ExitRelay 0\nExitPolicy reject *:*\n");
            }
            let torrc = n.dir.join("torrc");
            std::fs::write(&torrc, t).unwrap();
            let child = Command::new("tor")
                .arg("-f")
                .arg(&torrc)
                .arg("--quiet")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tor");
            net.children.push((n.name.clone(), child));
        }
        net.nodes = nodes;
        net.svc = Some(svc);
        net.wait_ready(Duration::from_secs(150));
        net.ready_after = t0.elapsed();
        eprintln!(
            "Tor test network ready after {:.1} s in {}",
            net.ready_after.as_secs_f64(),
            net.dir.display()
        );
        Some(net)
    }

    /// Waits for a consensus with 7 running relays and an exit at auth0, and for every node to
    /// have bootstrapped (an exit without the consensus refuses streams from "unknown relays").
    fn wait_ready(&mut self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            for (name, c) in &mut self.children {
                if let Ok(Some(st)) = c.try_wait() {
                    let log =
                        std::fs::read_to_string(self.dir.join(name.as_str()).join("notice.log"))
                            .unwrap_or_default();
                    panic!("tor node {name} exited ({st}) while starting:\n{log}");
                }
            }
            let cons = std::fs::read_to_string(self.dir.join("auth0/cached-microdesc-consensus"))
                .unwrap_or_default();
            let running = cons
                .lines()
                .filter(|l| l.starts_with("s ") && l.contains("Running"))
                .count();
            let exits = cons
                .lines()
                .filter(|l| l.starts_with("s ") && l.contains(" Exit"))
                .count();
            let all_boot = self.nodes.iter().all(|n| {
                std::fs::read_to_string(n.dir.join("notice.log"))
                    .map(|l| l.contains("Bootstrapped 100%"))
                    .unwrap_or(false)
            });
            if running >= 7 && exits >= 2 && all_boot {
                // each relay's flags and consensus weight: path selection is weighted by it
                let mut name = "";
                let mut table = Vec::new();
                let mut flags = "";
                for l in cons.lines() {
                    if let Some(r) = l.strip_prefix("r ") {
                        name = r.split(' ').next().unwrap_or("");
                    } else if let Some(f) = l.strip_prefix("s ") {
                        flags = f;
                    } else if let Some(w) = l.strip_prefix("w ") {
                        table.push(format!("{name} [{flags}] {w}"));
                    }
                }
                eprintln!("Tor test network consensus:\n  {}", table.join("\n  "));
                return;
            }
            if t0.elapsed() > limit {
                panic!(
                    "Tor test network not ready after {} s: running={running} exits={exits} \
                     all bootstrapped={all_boot} (logs in {})",
                    limit.as_secs(),
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The addresses the exits' streams come from.
    pub fn exit_addrs(&self) -> Vec<IpAddr> {
        let Some(svc) = &self.svc else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name.starts_with("exit"))
            .map(|(i, _)| IpAddr::V4(svc.addr(i as u8)))
            .collect()
    }

    /// The servers' namespace.
    pub fn svc(&self) -> &ServiceNs {
        // ok: set by start() before the network is handed out
        self.svc.as_ref().expect("service namespace")
    }

    /// The `[tor]` section of a warren config for this network, as TOML (state and cache
    /// directories under `data_dir/tor`).
    pub fn warren_tor_toml(&self, data_dir: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "state_dir = \"{}/tor/state\"", data_dir.display());
        let _ = writeln!(s, "cache_dir = \"{}/tor/cache\"", data_dir.display());
        let auths: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.v3ident.as_ref().map(|v| format!("\"{v}\"")))
            .collect();
        let _ = writeln!(s, "authorities = [{}]", auths.join(", "));
        s.push_str(
            "allow_local_addrs = true\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129\n\
             predicted_ports = []\ntrust_all_permissions = true\nbootstrap_timeout_secs = 60\n\
             connect_timeout_secs = 30\n",
        );
        for n in self.nodes.iter().filter(|n| n.v3ident.is_some()) {
            let _ = writeln!(
                s,
                "[[fallback_caches]]\nrsa_identity = \"{}\"\ned_identity = \"{}\"\norports = [\"127.0.0.1:{}\"]",
                n.fingerprint, n.ed_identity, n.orport
            );
        }
        s.push_str(
            "[override_net_params]\nhsdir_interval = 8\nguard-min-filtered-sample-size = 2\n\
             guard-max-sample-size = 5\nguard-n-primary-guards = 2\nguard-n-primary-guards-to-use = 1\n",
        );
        s
    }

    /// PIDs of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }
}

impl Drop for TorNet {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.dns.take();
        self.svc.take();
        if std::env::var_os("WARREN_KEEP_TORNET").is_some() {
            let keep = self.dir.with_extension("kept");
            let _ = std::fs::rename(&self.dir, &keep);
            eprintln!("Tor test network files kept in {}", keep.display());
        }
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// A loopback test server in the exits' service range: each connection first receives the
/// peer's IP address as one text line, then the server answers by the first byte:
/// `E` echo until EOF, `D` + 8-byte big-endian length: sends that many bytes.
pub struct TestServer {
    pub addr: SocketAddr,
}

impl TestServer {
    /// Listens on `ip` (an address of the service namespace) at a free port of the service range.
    pub async fn start(svc: &ServiceNs, ip: Ipv4Addr) -> TestServer {
        let std_l = svc.listen(ip, SERVICE_PORTS.0 + 10);
        std_l.set_nonblocking(true).unwrap();
        let addr = std_l.local_addr().unwrap();
        let l = tokio::net::TcpListener::from_std(std_l).unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, peer)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes()).await;
                    let mut cmd = [0u8; 1];
                    if s.read_exact(&mut cmd).await.is_err() {
                        return;
                    }
                    match cmd[0] {
                        b'E' => {
                            let (mut r, mut w) = s.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                        b'D' => {
                            let mut n = [0u8; 8];
                            if s.read_exact(&mut n).await.is_err() {
                                return;
                            }
                            let mut left = u64::from_be_bytes(n);
                            let buf = vec![0x5au8; 64 * 1024];
                            while left > 0 {
                                let k = left.min(buf.len() as u64) as usize;
                                if s.write_all(&buf[..k]).await.is_err() {
                                    return;
                                }
                                left -= k as u64;
                            }
                            let _ = s.shutdown().await;
                        }
                        _ => {}
                    }
                });
            }
        });
        TestServer { addr }
    }
}

/// A tiny DNS server on 127.0.0.1 for the exits: answers A queries for `127-B-C-D.tornet.example`
/// with 127.B.C.D, everything else with NXDOMAIN (nothing is ever forwarded). Stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(ip: Ipv4Addr) -> DnsServer {
        let sock = std::net::UdpSocket::bind((ip, 0)).expect("dns socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_answer(&buf[..n]) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one DNS query (None if it is not a well-formed single-question query).
pub fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let l = *q.get(i)? as usize;
        i += 1;
        if l == 0 {
            break;
        }
        if l > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + l)?).to_ascii_lowercase());
        i += l;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let qend = i + 4;
    if q.len() < qend {
        return None;
    }
    let name = labels.join(".");
    let ip: Option<Ipv4Addr> = name
        .strip_suffix(&format!(".{TEST_DOMAIN}"))
        .and_then(|h| h.replace('-', ".").parse().ok())
        .filter(|ip: &Ipv4Addr| ip.is_loopback() || ip.octets()[..2] == [10, 213]);
    let mut r = Vec::with_capacity(qend + 16);
    r.extend_from_slice(&q[0..2]);
    let rcode = if ip.is_some() { 0 } else { 3 };
    r.extend_from_slice(&[0x84 | (q[2] & 0x01), 0x80 | rcode]);
    r.extend_from_slice(&[0, 1]);
    let answer = ip.filter(|_| qtype == 1);
    r.extend_from_slice(&[0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..qend]);
    if let Some(ip) = answer {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// A network namespace for the servers, joined to this host by a veth pair on 10.213.K.0/24:
/// host side .1 (and the exits' .5, .6), namespace side .2 and .20-.29. Removed when dropped.
pub struct ServiceNs {
    pub name: String,
    pub host_if: String,
    k: u8,
}

impl ServiceNs {
    fn new() -> ServiceNs {
        let pid = std::process::id();
        let k = (pid % 200 + 20) as u8;
        let name = format!("wtor{pid}");
        let host_if = format!("wtor{pid}h");
        let ns_if = format!("wtor{pid}n");
        let svc = ServiceNs {
            name: name.clone(),
            host_if: host_if.clone(),
            k,
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        for h in [1u8, 5, 6] {
            let prefix = if h == 1 { 24 } else { 32 };
            ip(&[
                "addr",
                "add",
                &format!("{}/{prefix}", svc.addr(h)),
                "dev",
                &host_if,
            ]);
        }
        ip(&["link", "set", &host_if, "up"]);
        for h in [2u8, 20, 21, 22, 23, 24, 25] {
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/24", svc.addr(h)),
                "dev",
                &ns_if,
            ]);
        }
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        svc
    }

    /// 10.213.K.`host`.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.k, host)
    }

    /// This host's address on the link (what a direct connection from here would come from).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// `prog` run inside the namespace.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// A TCP listener inside the namespace on `ip` at a free port of the service range (a
    /// socket stays in the namespace it was made in; a helper thread enters the namespace).
    pub fn listen(&self, ip: Ipv4Addr, from: u16) -> TcpListener {
        self.in_ns(move || {
            (from.max(SERVICE_PORTS.0)..=SERVICE_PORTS.1)
                .find_map(|p| TcpListener::bind((ip, p)).ok())
                .expect("a free port in the service range")
        })
    }

    /// A UDP socket inside the namespace on `ip:port`.
    pub fn udp(&self, ip: Ipv4Addr, port: u16) -> std::net::UdpSocket {
        self.in_ns(move || std::net::UdpSocket::bind((ip, port)).expect("udp bind in namespace"))
    }

    fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f_ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns on this helper thread only; the fd is valid for the call.
            let r = unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace helper thread")
    }
}

impl Drop for ServiceNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

//! Acceptance tests of `--via tor` on a private Tor network on 127.0.0.1 (issue 7), with real
//! processes: Debian's `tor` (3 authorities, 2 relays, 2 exits), opentracker, a libtorrent
//! seeder, curl, and the `warren` binary.
//!
//! One network per run, ONE #[test] running the scenarios in sequence: the network and every
//! process are local values with Drop guards, stopped by PID however the test ends. The servers
//! (tracker, seeder, web server) live in the harness's service namespace (10.213.K.0/24); the
//! exits reach it from 10.213.K.5/.6, this host itself would come from 10.213.K.1.
//!   1. `warren get --via tor` of a magnet whose tracker (named by a name only the exits can
//!      resolve) and seeder are reachable only through the Tor exits: byte-identical, and a
//!      capture on the namespace's link shows that the tracker and the seeder were contacted only
//!      from the exits' addresses, never from this host's.
//!   2. `warren tunnel --via tor -- curl URL`: curl reaches a loopback web server through a Tor
//!      exit (the name is resolved at the exit); a UDP send from inside the tunnel is refused
//!      with a clear message and reaches nothing.
//!   3. A bulk download by curl through the Tor tunnel (figure for docs/BENCHMARKS.md; size from
//!      WARREN_TOR_BENCH_MIB, default 8). The provider-level Tor-vs-overlay comparison is in
//!      tor/tests/tor_net.rs.
//!
//! Run: cargo test -p warren --test tor_net -- --nocapture

#[path = "../../tor/tests/common/mod.rs"]
mod tornet;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tornet::{test_name, TorNet, SERVICE_PORTS};
use warren_tests::libtorrent::{wait_seeder, ANNOUNCED, LT_SEED};
use warren_tests::{have, wait_for, wait_until, Child};

/// Hosts in the service namespace (10.213.K.x) and their ports (the namespace is ours alone).
const SEEDER: u8 = 20;
const TRACKER: u8 = 21;
const WEB: u8 = 22;
const UDP: u8 = 23;
const TRACKER_PORT: u16 = SERVICE_PORTS.0 + 21;
const SEEDER_PORT: u16 = SERVICE_PORTS.0 + 30;
const WEB_PORT: u16 = SERVICE_PORTS.0 + 40;
const UDP_PORT: u16 = SERVICE_PORTS.0 + 60;

fn warren() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warren"));
    // programs under `warren tunnel` run as root here, as the test's files are root's (under
    // `sudo` they would run as the invoking user, see `tunnel --user`)
    c.env_remove("SUDO_UID").env_remove("SUDO_GID");
    c
}

fn ok(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A warren config for the client: `via = "tor"` and the test network's `[tor]` section.
fn client_config(net: &TorNet, dir: &Path) -> PathBuf {
    let tor = net
        .warren_tor_toml(dir)
        .replace("[[fallback_caches]]", "[[tor.fallback_caches]]")
        .replace("[override_net_params]", "[tor.override_net_params]");
    let text = format!("via = \"tor\"\n\n[tor]\n{tor}");
    let p = dir.join("config.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// A minimal HTTP server on `l` (threads): `GET /bulk/N` sends N bytes, anything else a
/// greeting naming the client's address. Lives as long as the test process.
fn web_server(l: TcpListener) -> SocketAddr {
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let peer = s
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                if let Some(n) = path
                    .strip_prefix("/bulk/")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    let buf = vec![0x5au8; 64 * 1024];
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(buf.len() as u64) as usize;
                        if s.write_all(&buf[..k]).is_err() {
                            return;
                        }
                        left -= k as u64;
                    }
                } else {
                    let body = format!("hello from the tornet web server; you are {peer}\n");
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    addr
}

/// tcpdump on `iface`, SYNs only, to the given ports.
struct SynCapture {
    child: Option<Child>,
    file: PathBuf,
}

impl SynCapture {
    fn start(dir: &Path, iface: &str, ports: &[u16]) -> SynCapture {
        let file = dir.join("link.pcap");
        let log = dir.join("tcpdump.log");
        let ports: Vec<String> = ports.iter().map(|p| format!("dst port {p}")).collect();
        let filter = format!(
            "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and ({})",
            ports.join(" or ")
        );
        let mut cmd = Command::new("tcpdump");
        cmd.args([
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&file)
        .arg(&filter);
        let child = Child::spawn("tcpdump", cmd, &log).unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
                .map(|s| s.contains("listening on"))
                .unwrap_or(false)),
            "tcpdump did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        SynCapture {
            child: Some(child),
            file,
        }
    }

    /// Stops the capture; returns (source address, destination port) of every SYN.
    fn stop(mut self) -> Vec<(IpAddr, u16)> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.pid() as i32, libc::SIGINT);
            }
            if c.wait_timeout(Duration::from_secs(5)).is_none() {
                c.kill9();
            }
        }
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&self.file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                // "12:00:00.000 IP 127.0.0.5.41234 > 127.0.0.21.7321: Flags [S], ..."
                let mut w = l.split_whitespace().skip(2);
                let src = w.next()?;
                let _ = w.next()?;
                let dst = w.next()?.trim_end_matches(':');
                let (sip, _) = src.rsplit_once('.')?;
                let (_, dport) = dst.rsplit_once('.')?;
                Some((sip.parse().ok()?, dport.parse().ok()?))
            })
            .collect()
    }
}

/// Runs `cmd` with a time limit; returns (success, stdout, stderr).
fn run_limited(mut cmd: Command, limit: Duration, what: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap());
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&o).unwrap_or_default();
    let err = std::fs::read_to_string(&e).unwrap_or_default();
    assert!(
        status.is_some(),
        "{what} did not finish in {} s:\n{out}\n{err}",
        limit.as_secs()
    );
    (status.map(|s| s.success()).unwrap_or(false), out, err)
}

#[test]
fn tor_network_acceptance() {
    let is_root = warren_tests::is_root();
    let missing: Vec<&str> = [
        ("tor", have("tor") && have("tor-gencert")),
        ("opentracker", have("opentracker")),
        ("tcpdump", have("tcpdump")),
        ("curl", have("curl")),
        (
            "python3-libtorrent",
            ok(Command::new("/usr/bin/python3").args(["-c", "import libtorrent"])),
        ),
        ("root", is_root),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| n)
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIP: the Tor acceptance tests need {} (.ci/run installs them)",
            missing.join(", ")
        );
        return;
    }
    let Some(net) = TorNet::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // opentracker drops to `nobody`: the files it reads must be readable by it
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let exits: BTreeSet<IpAddr> = net.exit_addrs().into_iter().collect();
    get_through_tor(&net, dir.path(), &exits);
    tunnel_through_tor(&net, dir.path(), &exits);
    drop(net);
}

fn get_through_tor(net: &TorNet, dir: &Path, exits: &BTreeSet<IpAddr>) {
    let t_start = Instant::now();
    // content and a torrent naming the tracker
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(seed_dir.join("payload.bin"), &data).unwrap();
    let svc = net.svc();
    let (tport, sport) = (TRACKER_PORT, SEEDER_PORT);
    let tracker_ip = svc.addr(TRACKER);
    let torrent = dir.join("payload.torrent");
    // the seeder's torrent names the tracker by address (it announces inside the namespace)
    let announce = format!("http://{tracker_ip}:{tport}/announce");
    let out = warren()
        .arg("make")
        .arg(seed_dir.join("payload.bin"))
        .arg("-o")
        .arg(&torrent)
        .args(["--tracker", &announce])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ih = stdout
        .lines()
        .find_map(|l| l.strip_prefix("info-hash "))
        .unwrap()
        .to_string();

    let mut procs: Vec<Child> = Vec::new();
    // the client's magnet names the tracker by a name only the Tor exits can resolve
    let magnet = format!(
        "magnet:?xt=urn:btih:{ih}&dn=payload.bin&tr=http%3A%2F%2F{}%3A{tport}%2Fannounce",
        test_name(tracker_ip)
    );
    let cap = SynCapture::start(dir, &svc.host_if, &[tport, sport]);
    let tdir = dir.join("tracker");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::set_permissions(&tdir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(tdir.join("whitelist.txt"), format!("{ih}\n")).unwrap();
    let mut t = svc.command("opentracker");
    t.args(["-i", &tracker_ip.to_string(), "-p", &tport.to_string()])
        .args(["-P", &tport.to_string(), "-d"])
        .arg(&tdir)
        .args(["-w", "whitelist.txt"]);
    procs.push(Child::spawn("opentracker", t, &dir.join("tracker.log")).unwrap());
    wait_for("opentracker to listen", Duration::from_secs(20), || {
        svc.command("ss")
            .args(["-Hltn", &format!("sport = :{tport}")])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false)
    });
    let mut s = svc.command("/usr/bin/python3");
    s.args(["-c", LT_SEED])
        .arg(&torrent)
        .arg(&seed_dir)
        .arg(format!("{}:{sport}", svc.addr(SEEDER)))
        .arg(svc.addr(SEEDER).to_string());
    let seeder_log = dir.join("seeder.log");
    procs.push(Child::spawn("libtorrent seeder", s, &seeder_log).unwrap());
    // the seeder announces itself (from its own address) before the client asks
    wait_seeder(&seeder_log, ANNOUNCED, Duration::from_secs(60));

    let client = dir.join("client");
    let cfg = client_config(net, &client);
    let dl = dir.join("dl");
    let mut get = warren();
    get.arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(client.join("data"))
        .arg("--socket")
        .arg(client.join("control.sock"))
        .arg("--download-dir")
        .arg(&dl)
        .args(["get", "--no-tui", &magnet]);
    let (ok, out, err) = run_limited(get, Duration::from_secs(120), "warren get --via tor");
    drop(procs);
    let syns = cap.stop();
    assert!(ok, "warren get --via tor failed:\n{out}\n{err}");
    assert!(out.contains("complete and verified"), "{out}");
    assert_eq!(
        std::fs::read(dl.join("payload.bin")).unwrap(),
        data,
        "the download through Tor is byte-identical"
    );
    eprintln!(
        "get through Tor: done in {:.1} s; connections seen on lo: {syns:?}",
        t_start.elapsed().as_secs_f64()
    );
    // who opened connections to the tracker and the seeder
    let to_tracker: BTreeSet<IpAddr> = syns
        .iter()
        .filter(|(_, p)| *p == tport)
        .map(|(a, _)| *a)
        .collect();
    let to_seeder: BTreeSet<IpAddr> = syns
        .iter()
        .filter(|(_, p)| *p == sport)
        .map(|(a, _)| *a)
        .collect();
    assert!(
        to_tracker.iter().any(|a| exits.contains(a)),
        "the client's announce did not come from a Tor exit: {to_tracker:?}"
    );
    assert!(
        to_tracker.iter().all(|a| exits.contains(a)),
        "the tracker was contacted from outside the Tor exits: {to_tracker:?} (exits {exits:?})"
    );
    assert!(
        !to_seeder.is_empty() && to_seeder.iter().all(|a| exits.contains(a)),
        "the seeder was contacted from outside the Tor exits: {to_seeder:?} (exits {exits:?})"
    );
}

fn tunnel_through_tor(net: &TorNet, dir: &Path, exits: &BTreeSet<IpAddr>) {
    let svc = net.svc();
    let web_ip = svc.addr(WEB);
    let web = web_server(svc.listen(web_ip, WEB_PORT));
    let client = dir.join("tunnel-client");
    let cfg = client_config(net, &client);
    let url = format!("http://{}:{}/", test_name(web_ip), web.port());
    let mut t = warren();
    t.arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(client.join("data"))
        .args(["tunnel", "--no-tui", "--", "curl", "-sS", "-m", "60", &url]);
    let t0 = Instant::now();
    let (ok, out, err) = run_limited(t, Duration::from_secs(90), "warren tunnel --via tor curl");
    assert!(ok, "curl through the Tor tunnel failed:\n{out}\n{err}");
    assert!(
        out.contains("hello from the tornet web server"),
        "{out}\n{err}"
    );
    let seen: IpAddr = out
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {out}"));
    assert!(
        exits.contains(&seen),
        "the web server saw {seen}, not a Tor exit"
    );
    eprintln!(
        "tunnel --via tor: curl {url} -> via exit {seen} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // bulk through the tunnel (benchmark figure)
    let mib: u64 = std::env::var("WARREN_TOR_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut t = warren();
    t.arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(client.join("data"))
        .args([
            "tunnel",
            "--no-tui",
            "--",
            "curl",
            "-sS",
            "-m",
            "120",
            "-o",
            "/dev/null",
        ])
        .args([
            "-w",
            "%{size_download} %{time_total} %{time_starttransfer}\\n",
        ])
        .arg(format!("{url}bulk/{}", mib << 20));
    let (ok, out, err) = run_limited(t, Duration::from_secs(150), "bulk curl through Tor");
    assert!(ok, "bulk curl through the Tor tunnel failed:\n{out}\n{err}");
    let f: Vec<f64> = out
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(f.len() >= 3 && f[0] as u64 == mib << 20, "{out}");
    eprintln!(
        "BENCH tunnel --via tor: curl {mib} MiB, first byte after {:.2} s, body at {:.2} MiB/s",
        f[2],
        f[0] / (f[1] - f[2]).max(1e-3) / 1_048_576.0
    );

    // a UDP send: refused with a clear message, and nothing arrives anywhere
    let uport = UDP_PORT;
    let sink = svc.udp(svc.addr(UDP), uport);
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let py = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(3):\n    s.sendto(b'warren-udp-probe',('{}',{uport}))\n    time.sleep(0.5)\nprint('sent')\n",
        test_name(svc.addr(UDP))
    );
    let mut t = warren();
    t.arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(client.join("data"))
        .args(["tunnel", "--no-tui", "--", "/usr/bin/python3", "-c", &py]);
    let (ok, out, err) = run_limited(t, Duration::from_secs(60), "warren tunnel --via tor udp");
    assert!(ok && out.contains("sent"), "{out}\n{err}");
    assert!(
        err.contains("UDP through Tor") && err.contains("--via auto"),
        "a UDP send in Tor mode must be refused with a clear message:\n{err}"
    );
    let mut b = [0u8; 64];
    assert!(
        sink.recv_from(&mut b).is_err(),
        "a UDP datagram escaped the Tor tunnel"
    );
}

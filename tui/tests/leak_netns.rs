//! The anonymity promise, checked on the wire: every host has its own address in network namespaces
//! that this test creates (a router, a client, three relays, an exit, an opentracker host and a
//! libtorrent seeder host). `warren get` downloads a magnet link whose only peer source is the
//! tracker. Captures show that every packet the client sends goes to an overlay node's link port,
//! and that neither the tracker nor the seeder ever receives a packet from the client's address.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use warren_tests::libtorrent::{wait_seeder, ANNOUNCED, LT_SEED};
use warren_tests::{capture, is_root, wait_file, wait_for, Capture, Child, Host, Netns};

/// A libtorrent session with the mainline DHT on (settings that let a DHT of two nodes on private
/// addresses work); with a torrent it seeds and announces it to the DHT every few seconds.
const LT_DHT: &str = r#"
import sys, time, libtorrent as lt
iface, boot = sys.argv[1], sys.argv[2]
torrent = sys.argv[3] if len(sys.argv) > 3 else None
s = lt.session({'listen_interfaces': iface, 'enable_dht': True, 'dht_bootstrap_nodes': boot,
    'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
    'enable_incoming_utp': False, 'enable_outgoing_utp': False,
    'dht_restrict_routing_ips': False, 'dht_restrict_search_ips': False,
    'dht_ignore_dark_internet': False, 'dht_prefer_verified_node_ids': False,
    'dht_announce_interval': 3, 'allow_multiple_connections_per_ip': True,
    'alert_mask': lt.alert.category_t.dht_notification})
h = None
if torrent:
    p = lt.add_torrent_params(); p.ti = lt.torrent_info(torrent); p.save_path = sys.argv[4]
    p.flags |= lt.torrent_flags.seed_mode
    h = s.add_torrent(p)
print('up', flush=True)
while True:
    time.sleep(1)
    for a in s.pop_alerts():
        print(a.what(), a.message(), flush=True)
    if h:
        for peer in h.get_peer_info():
            print('peer', peer.ip[0], flush=True)
"#;

fn host(router: &Netns, tag: &str, subnet: u8) -> Host {
    Host::behind(router, tag, subnet).unwrap()
}

fn tools_present() -> bool {
    let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
    is_root()
        && warren_tests::have("tcpdump")
        && warren_tests::have("opentracker")
        && ok(Command::new("/usr/bin/python3").args(["-c", "import libtorrent"]))
}

/// The whole bed: hosts, overlay nodes, tracker, seeder, captures; dropped = all gone.
/// Fields drop in order: processes and captures first, then hosts, the router, the files.
struct Bed {
    procs: Vec<Child>,
    caps: Option<(Capture, Capture, Capture)>,
    client: Host,
    relays: Vec<Host>,
    exit: Host,
    tracker: Host,
    seeder: Host,
    _router: Netns,
    descs: Vec<PathBuf>,
    magnet: String,
    infohash: String,
    data: Vec<u8>,
    seeder_log: PathBuf,
    dir: tempfile::TempDir,
}

/// Removes the namespaces (and /etc/netns dirs) a `warren tunnel` process made, in case it was
/// killed before it could: they are named `warren-<pid>-<n>`.
struct TunnelSweep(u32);

impl Drop for TunnelSweep {
    fn drop(&mut self) {
        let prefix = format!("warren-{}-", self.0);
        let list = Command::new("ip").args(["netns", "list"]).output();
        let names: Vec<String> = list
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|n| n.starts_with(&prefix))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        for n in names {
            // the wrapped program may outlive a killed `warren tunnel`: end it first
            if let Ok(o) = Command::new("ip").args(["netns", "pids", &n]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &n]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&n));
        }
    }
}

impl Bed {
    fn start() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        // opentracker drops to `nobody`: its whitelist must be readable by it
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let warren = env!("CARGO_BIN_EXE_warren");
        let router = Netns::new("r").unwrap();
        router.sh("sysctl -qw net.ipv4.ip_forward=1").unwrap();
        let client = host(&router, "c", 1);
        let relays: Vec<Host> = (0..3).map(|i| host(&router, "rl", 2 + i)).collect();
        let exit = host(&router, "x", 5);
        let tracker = host(&router, "t", 6);
        let seeder = host(&router, "s", 7);

        // overlay nodes, each on its own host
        let mut procs: Vec<Child> = Vec::new();
        let mut descs: Vec<PathBuf> = Vec::new();
        for (i, h) in relays.iter().chain(std::iter::once(&exit)).enumerate() {
            let d = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&d).unwrap();
            // a test network: the exit may reach the private addresses of these namespaces
            std::fs::write(
                d.join("config.toml"),
                "[exit_policy]\nallow_private = true\n",
            )
            .unwrap();
            let mut c = h.ns.command(warren);
            c.arg("--config")
                .arg(d.join("config.toml"))
                .arg("--data-dir")
                .arg(d.join("data"))
                .arg("--socket")
                .arg(d.join("control.sock"))
                .args(["node", "--relay", "--listen", &format!("{}:7700", h.addr)]);
            if i == 3 {
                c.arg("--exit");
            }
            procs.push(Child::spawn("warren node", c, &d.join("log")).unwrap());
            descs.push(d.join("data").join("descriptor"));
        }
        for d in &descs {
            assert!(
                wait_file(d, Duration::from_secs(20)),
                "no descriptor at {}",
                d.display()
            );
        }

        // content, torrent with the tracker, tracker whitelist
        let seed_dir = dir.path().join("seed");
        std::fs::create_dir_all(&seed_dir).unwrap();
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
            .collect();
        std::fs::write(seed_dir.join("payload.bin"), &data).unwrap();
        let torrent = dir.path().join("payload.torrent");
        let announce = format!("http://{}:6969/announce", tracker.addr);
        let out = Command::new(warren)
            .arg("make")
            .arg(seed_dir.join("payload.bin"))
            .arg("-o")
            .arg(&torrent)
            .args(["--tracker", &announce])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let magnet = stdout
            .lines()
            .find(|l| l.starts_with("magnet:"))
            .unwrap()
            .to_string();
        let ih = stdout
            .lines()
            .find_map(|l| l.strip_prefix("info-hash "))
            .unwrap()
            .to_string();
        let tdir = dir.path().join("tracker");
        std::fs::create_dir_all(&tdir).unwrap();
        std::fs::set_permissions(&tdir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(tdir.join("whitelist.txt"), format!("{ih}\n")).unwrap();

        // captures start before any client traffic
        let caps = dir.path().join("caps");
        std::fs::create_dir_all(&caps).unwrap();
        let cap_client = Capture::start(&client.ns, &client.iface, &caps).unwrap();
        let cap_tracker = Capture::start(&tracker.ns, &tracker.iface, &caps).unwrap();
        let cap_seeder = Capture::start(&seeder.ns, &seeder.iface, &caps).unwrap();

        let mut t = tracker.ns.command("opentracker");
        t.args(["-i", &tracker.addr, "-p", "6969", "-P", "6969", "-d"])
            .arg(&tdir)
            .args(["-w", "whitelist.txt"]);
        procs.push(Child::spawn("opentracker", t, &dir.path().join("tracker.log")).unwrap());
        wait_for(
            "opentracker to listen on 6969",
            Duration::from_secs(20),
            || tracker.ns.listening_tcp(6969),
        );
        let mut s = seeder.ns.command("/usr/bin/python3");
        s.args(["-c", LT_SEED])
            .arg(&torrent)
            .arg(&seed_dir)
            .arg(format!("{}:6881", seeder.addr));
        let seeder_log = dir.path().join("seeder.log");
        procs.push(Child::spawn("libtorrent seeder", s, &seeder_log).unwrap());
        // the tracker knows the seeder before the client asks it
        wait_seeder(&seeder_log, ANNOUNCED, Duration::from_secs(60));
        Bed {
            dir,
            _router: router,
            client,
            relays,
            exit,
            tracker,
            seeder,
            procs,
            descs,
            magnet,
            infohash: ih,
            data,
            seeder_log,
            caps: Some((cap_client, cap_tracker, cap_seeder)),
        }
    }

    /// A `warren` command run on the client host, bootstrapped from the nodes' descriptors.
    fn warren_on_client(&self) -> Command {
        let mut c = self.client.ns.command(env!("CARGO_BIN_EXE_warren"));
        // the programs run as root, like the test's files (not as a sudo invoker)
        c.env_remove("SUDO_UID").env_remove("SUDO_GID");
        c.arg("--data-dir")
            .arg(self.dir.path().join("client"))
            .arg("--socket")
            .arg(self.dir.path().join("client.sock"));
        for d in &self.descs {
            c.arg("--bootstrap").arg(d);
        }
        c
    }

    /// Stops the captures and checks the anonymity promise on them.
    fn assert_no_leak(&mut self) {
        std::thread::sleep(Duration::from_millis(300));
        let (cc, ct, cs) = self.caps.take().unwrap();
        let (pc, pt, ps) = (cc.stop().unwrap(), ct.stop().unwrap(), cs.stop().unwrap());
        // 1. everything the client sent went to an overlay node's link port
        let links: Vec<String> = self
            .relays
            .iter()
            .chain(std::iter::once(&self.exit))
            .map(|h| format!("{}.7700", h.addr))
            .collect();
        let sent = capture::destinations_from(&pc, &format!("{}.", self.client.addr));
        assert!(!sent.is_empty(), "the capture saw nothing from the client");
        for d in &sent {
            assert!(
                links.contains(d),
                "the client sent a packet to {d}, which is not an overlay link port"
            );
        }
        // 2. the tracker and the seeder never received a packet from the client's address
        let client_src = format!("{}.", self.client.addr);
        assert!(
            !pt.iter().any(|p| p.src.starts_with(&client_src)),
            "the tracker saw the client"
        );
        assert!(
            !ps.iter().any(|p| p.src.starts_with(&client_src)),
            "the seeder saw the client"
        );
        // 3. and they did see the exit (the swarm was reached through it)
        let exit_src = format!("{}.", self.exit.addr);
        assert!(
            pt.iter().any(|p| p.src.starts_with(&exit_src)),
            "the tracker never saw the exit"
        );
        assert!(
            ps.iter().any(|p| p.src.starts_with(&exit_src)),
            "the seeder never saw the exit"
        );
        let peers = std::fs::read_to_string(&self.seeder_log).unwrap_or_default();
        assert!(
            !peers.contains(&self.client.addr),
            "libtorrent lists the client as a peer:\n{peers}"
        );
        let _ = (&self.tracker, &self.seeder, &self.procs);
    }
}

#[test]
fn get_leaks_nothing_and_tracker_and_seeder_see_only_the_exit() {
    if !tools_present() {
        eprintln!(
            "SKIP: needs root, tcpdump, opentracker and python3-libtorrent (.ci/run installs them)"
        );
        return;
    }
    let mut bed = Bed::start();
    // the download: the magnet link names only the tracker
    let dl = bed.dir.path().join("dl");
    let mut get = bed.warren_on_client();
    get.arg("--download-dir")
        .arg(&dl)
        .args(["get", "--no-tui", "--hops", "3", &bed.magnet]);
    let get_log = bed.dir.path().join("get.log");
    let mut g = Child::spawn("warren get", get, &get_log).unwrap();
    let status = g.wait_timeout(Duration::from_secs(120));
    let log = std::fs::read_to_string(&get_log).unwrap_or_default();
    assert_eq!(status, Some(Some(0)), "warren get did not succeed:\n{log}");
    assert_eq!(std::fs::read(dl.join("payload.bin")).unwrap(), bed.data);
    bed.assert_no_leak();

    // logs at the default level: no infohash of the user's transfer, no key material
    let mut logs = vec![(get_log.clone(), log)];
    for i in 0..4 {
        let p = bed.dir.path().join(format!("node{i}")).join("log");
        logs.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
    }
    let ih = bed.infohash.to_lowercase();
    let mut secrets = Vec::new();
    for i in 0..4 {
        let key = std::fs::read(bed.dir.path().join(format!("node{i}/data/identity.key"))).unwrap();
        secrets.push(hex::encode(&key));
        // any 16-byte window of the key file, in hex
        for w in key.windows(16).step_by(8) {
            secrets.push(hex::encode(w));
        }
    }
    for (path, text) in &logs {
        let lower = text.to_lowercase();
        assert!(
            !lower.contains(&ih),
            "{} names the transfer's infohash",
            path.display()
        );
        for sec in &secrets {
            assert!(
                !lower.contains(sec.as_str()),
                "{} contains key material",
                path.display()
            );
        }
    }
}

/// A magnet link with no tracker, whose only peer source is the mainline DHT: a libtorrent DHT
/// node on the tracker host, and a libtorrent seeder on the seeder host that announces to it.
/// `warren get` with `[mainline_dht]` pointing at that node finds the seeder through an exit,
/// downloads byte-identical, and neither DHT host ever hears from the client.
#[test]
fn get_through_the_mainline_dht_leaks_nothing_and_dht_and_seeder_see_only_the_exit() {
    if !tools_present() {
        eprintln!(
            "SKIP: needs root, tcpdump, opentracker and python3-libtorrent (.ci/run installs them)"
        );
        return;
    }
    let mut bed = Bed::start();
    let node = format!("{}:6881", bed.tracker.addr);
    let mut n = bed.tracker.ns.command("/usr/bin/python3");
    n.args(["-c", LT_DHT, &node, ""]);
    let node_log = bed.dir.path().join("dht-node.log");
    bed.procs
        .push(Child::spawn("libtorrent DHT node", n, &node_log).unwrap());
    let mut s = bed.seeder.ns.command("/usr/bin/python3");
    s.args(["-c", LT_DHT, &format!("{}:6882", bed.seeder.addr), &node])
        .arg(bed.dir.path().join("payload.torrent"))
        .arg(bed.dir.path().join("seed"));
    let dht_seeder_log = bed.dir.path().join("dht-seeder.log");
    bed.procs
        .push(Child::spawn("libtorrent DHT seeder", s, &dht_seeder_log).unwrap());
    // the seeder has announced itself to the DHT node
    let announced = format!("incoming dht announce: {}:6882", bed.seeder.addr);
    let t0 = Instant::now();
    while !std::fs::read_to_string(&node_log)
        .unwrap_or_default()
        .contains(&announced)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the seeder never announced to the DHT node:\n{}",
            std::fs::read_to_string(&node_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // no tracker in the link: the DHT is the only way to the seeder
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=payload.bin", bed.infohash);
    let cfg = bed.dir.path().join("client-dht.toml");
    std::fs::write(
        &cfg,
        format!("[mainline_dht]\nenabled = true\nbootstrap = [\"{node}\"]\n"),
    )
    .unwrap();
    let dl = bed.dir.path().join("dl-dht");
    let mut get = bed.warren_on_client();
    get.arg("--config")
        .arg(&cfg)
        .arg("--download-dir")
        .arg(&dl)
        .args(["get", "--no-tui", "--hops", "3", &magnet]);
    let get_log = bed.dir.path().join("get-dht.log");
    let mut g = Child::spawn("warren get", get, &get_log).unwrap();
    let status = g.wait_timeout(Duration::from_secs(120));
    let log = std::fs::read_to_string(&get_log).unwrap_or_default();
    assert_eq!(
        status,
        Some(Some(0)),
        "warren get did not succeed:\n{log}\nDHT node:\n{}",
        std::fs::read_to_string(&node_log).unwrap_or_default()
    );
    assert_eq!(std::fs::read(dl.join("payload.bin")).unwrap(), bed.data);
    // the DHT node was asked (the libtorrent seeder asks too, so this alone proves little; the
    // capture below does: the tracker host, where only the DHT node listens for this magnet, heard
    // from the exit and never from the client)
    let node_text = std::fs::read_to_string(&node_log).unwrap_or_default();
    assert!(
        node_text.contains(&format!(
            "incoming dht get_peers: {}",
            bed.infohash.to_lowercase()
        )),
        "the DHT node never saw warren's get_peers:\n{node_text}"
    );
    let seen = std::fs::read_to_string(&dht_seeder_log).unwrap_or_default();
    assert!(
        !seen.contains(&bed.client.addr),
        "the DHT seeder lists the client as a peer:\n{seen}"
    );
    bed.assert_no_leak();
}

#[test]
fn get_over_a_udp_tracker_leaks_nothing_and_the_tracker_sees_only_the_exit() {
    if !tools_present() {
        eprintln!(
            "SKIP: needs root, tcpdump, opentracker and python3-libtorrent (.ci/run installs them)"
        );
        return;
    }
    let mut bed = Bed::start();
    // the same swarm, announced to over UDP (BEP 15) through an exit's datagram association
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=payload.bin&tr=udp%3A%2F%2F{}%3A6969",
        bed.infohash, bed.tracker.addr
    );
    let dl = bed.dir.path().join("dl-udp");
    let mut get = bed.warren_on_client();
    get.arg("--download-dir")
        .arg(&dl)
        .args(["get", "--no-tui", "--hops", "3", &magnet]);
    let get_log = bed.dir.path().join("get-udp.log");
    let mut g = Child::spawn("warren get", get, &get_log).unwrap();
    let status = g.wait_timeout(Duration::from_secs(120));
    let log = std::fs::read_to_string(&get_log).unwrap_or_default();
    assert_eq!(status, Some(Some(0)), "warren get did not succeed:\n{log}");
    assert_eq!(std::fs::read(dl.join("payload.bin")).unwrap(), bed.data);
    bed.assert_no_leak();
}

#[test]
fn aria2c_in_the_tunnel_leaks_nothing_and_tracker_and_seeder_see_only_the_exit() {
    if !tools_present() || !warren_tests::have("aria2c") {
        eprintln!("SKIP: needs root, tcpdump, opentracker, python3-libtorrent and aria2c");
        return;
    }
    let mut bed = Bed::start();
    let dl = bed.dir.path().join("aria2");
    std::fs::create_dir_all(&dl).unwrap();
    // aria2c runs unprivileged in its own namespace (as root it could not write elsewhere anyway)
    std::fs::set_permissions(&dl, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut t = bed.warren_on_client();
    t.args(["tunnel", "--hops", "3", "--", "aria2c"])
        .args([
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--seed-time=0",
            "--bt-stop-timeout=60",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--bt-save-metadata=false",
            "--disable-ipv6=true",
            "-d",
        ])
        .arg(&dl)
        .arg(&bed.magnet);
    let log = bed.dir.path().join("tunnel.log");
    let mut c = Child::spawn("warren tunnel aria2c", t, &log).unwrap();
    let _sweep = TunnelSweep(c.pid());
    let status = c.wait_timeout(Duration::from_secs(150));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status,
        Some(Some(0)),
        "warren tunnel -- aria2c did not succeed:\n{out}"
    );
    assert_eq!(std::fs::read(dl.join("payload.bin")).unwrap(), bed.data);
    bed.assert_no_leak();
}

/// Pids whose command line contains `needle`.
fn pids_matching(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| p != me)
                .filter(|p| {
                    let c = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    String::from_utf8_lossy(&c).contains(needle)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// kill -9 of `warren tunnel` in the middle of aria2c's download: aria2c is gone within a
/// second, the namespace goes, and nothing left the client host in the clear before or after.
#[test]
fn aria2c_dies_with_a_killed_warren_tunnel_and_nothing_leaks() {
    if !tools_present() || !warren_tests::have("aria2c") {
        eprintln!("SKIP: needs root, tcpdump, opentracker, python3-libtorrent and aria2c");
        return;
    }
    let mut bed = Bed::start();
    let dl = bed.dir.path().join("aria2-killed");
    std::fs::create_dir_all(&dl).unwrap();
    let marker = dl.to_string_lossy().into_owned();
    let mut t = bed.warren_on_client();
    t.args(["tunnel", "--hops", "3", "--", "aria2c"])
        .args([
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--seed-time=0",
            // slow, so that it is still downloading when warren is killed
            "--max-overall-download-limit=64K",
            "--disk-cache=0",
            "--file-allocation=none",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--bt-save-metadata=false",
            "--disable-ipv6=true",
            "-d",
        ])
        .arg(&dl)
        .arg(&bed.magnet);
    let log = bed.dir.path().join("tunnel-killed.log");
    let mut c = Child::spawn("warren tunnel aria2c", t, &log).unwrap();
    let pid = c.pid();
    let _sweep = TunnelSweep(pid);
    // mid-download: some of the payload is on disk
    let part = dl.join("payload.bin");
    let started = warren_tests::proc::wait_until(Duration::from_secs(90), || {
        std::fs::read(&part)
            .map(|b| b.iter().filter(|&&x| x != 0).count() > 64 * 1024)
            .unwrap_or(false)
    });
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(started, "aria2c did not start downloading:\n{out}");
    assert_eq!(pids_matching(&marker).len(), 2, "warren and aria2c");
    assert!(
        std::fs::read(&part).map(|b| b != bed.data).unwrap_or(true),
        "already complete: the download is not slow enough for this test"
    );
    c.kill9();
    let t0 = Instant::now();
    let gone = warren_tests::proc::wait_until(Duration::from_secs(1), || {
        pids_matching(&marker).is_empty()
    });
    assert!(
        gone,
        "aria2c still runs 1 s after warren was killed: {:?}",
        pids_matching(&marker)
    );
    eprintln!("aria2c gone {:?} after kill -9 of warren", t0.elapsed());
    // the reaper removes the namespace and then exits
    let prefix = format!("warren-{pid}-");
    let clean = warren_tests::proc::wait_until(Duration::from_secs(5), || {
        let l = Command::new("ip").args(["netns", "list"]).output().unwrap();
        !String::from_utf8_lossy(&l.stdout).contains(&prefix) && pids_matching(&prefix).is_empty()
    });
    assert!(clean, "the namespace or its reaper is left");
    bed.assert_no_leak();
}

#[test]
fn transmission_in_the_tunnel_leaks_nothing_and_tracker_and_seeder_see_only_the_exit() {
    if !tools_present() || !warren_tests::have("transmission-cli") {
        eprintln!(
            "SKIP: needs root, tcpdump, opentracker, python3-libtorrent and transmission-cli"
        );
        return;
    }
    let mut bed = Bed::start();
    let dl = bed.dir.path().join("transmission");
    let conf = bed.dir.path().join("transmission-conf");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    // loopback-only habits of the test bed: no DHT, LPD, PEX, uTP or port mapping
    std::fs::write(
        conf.join("settings.json"),
        r#"{ "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "port-forwarding-enabled": false, "speed-limit-down-enabled": false, "ratio-limit-enabled": false,
  "encryption": 0, "message-level": 1 }"#,
    )
    .unwrap();
    // transmission-cli seeds forever once done: its finish script stops it
    let finish = bed.dir.path().join("finished.sh");
    std::fs::write(&finish, "#!/bin/sh\nkill -INT $PPID\n").unwrap();
    std::fs::set_permissions(&finish, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut t = bed.warren_on_client();
    t.args([
        "tunnel",
        "--hops",
        "3",
        "--",
        "transmission-cli",
        "-et",
        "-M",
        "-g",
    ])
    .arg(&conf)
    .arg("-w")
    .arg(&dl)
    .arg("-f")
    .arg(&finish)
    .arg(&bed.magnet);
    let log = bed.dir.path().join("tunnel.log");
    let mut c = Child::spawn("warren tunnel transmission-cli", t, &log).unwrap();
    let _sweep = TunnelSweep(c.pid());
    let got = dl.join("payload.bin");
    let t0 = Instant::now();
    let mut done = false;
    while t0.elapsed() < Duration::from_secs(150) {
        if std::fs::read(&got).map(|b| b == bed.data).unwrap_or(false) {
            done = true;
            break;
        }
        if c.try_status().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // transmission may still be renaming its .part file as the finish script runs
    let done = done || std::fs::read(&got).map(|b| b == bed.data).unwrap_or(false);
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        done,
        "transmission-cli in the tunnel did not download the file:\n{out}"
    );
    // the finish script ends transmission-cli, and with it `warren tunnel`
    assert!(
        c.wait_timeout(Duration::from_secs(20)).is_some(),
        "warren tunnel did not exit:\n{out}"
    );
    bed.assert_no_leak();
}

/// What the system tunnel may change on the client host, as text, for before/after comparison.
fn host_state(h: &Host) -> String {
    let run = |script: &str| {
        h.ns.sh(script)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    format!(
        "== rules\n{}\n== routes\n{}\n== nft\n{}\n== resolv.conf\n{}",
        run("ip rule list"),
        run("ip route show table all | grep -v '^local\\|^broadcast\\|^multicast\\|fe80\\|ff00'"),
        run("nft list ruleset"),
        run("cat /etc/resolv.conf"),
    )
}

#[test]
fn system_mode_carries_an_unwrapped_client_fails_closed_and_down_restores_the_host() {
    if !tools_present() || !warren_tests::have("aria2c") || !warren_tests::have("nft") {
        eprintln!(
            "SKIP: needs root, tcpdump, opentracker, python3-libtorrent, aria2c and nftables"
        );
        return;
    }
    let mut bed = Bed::start();
    // the client host's own resolv.conf (bind-mounted by `ip netns exec`): system mode rewrites it,
    // and the host's real /etc/resolv.conf must never be touched by a test
    let etc = Path::new("/etc/netns").join(&bed.client.ns.name);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 10.213.1.1\n").unwrap();
    let before = host_state(&bed.client);

    let mut up = bed.warren_on_client();
    up.args(["tunnel", "--system", "up", "--hops", "3"]);
    let up_log = bed.dir.path().join("system-up.log");
    let mut w = Child::spawn("warren tunnel --system up", up, &up_log).unwrap();
    let live = warren_tests::proc::wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&up_log)
            .map(|s| s.contains("system tunnel up"))
            .unwrap_or(false)
    });
    let log = std::fs::read_to_string(&up_log).unwrap_or_default();
    assert!(live, "system tunnel did not come up:\n{log}");

    // an unwrapped aria2c on the host: its only way out is now the tunnel
    let dl = bed.dir.path().join("sys-aria2");
    std::fs::create_dir_all(&dl).unwrap();
    let mut a = bed.client.ns.command("aria2c");
    a.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--seed-time=0",
        "--bt-stop-timeout=60",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--bt-save-metadata=false",
        "--disable-ipv6=true",
        "-d",
    ])
    .arg(&dl)
    .arg(&bed.magnet);
    let alog = bed.dir.path().join("sys-aria2.log");
    let mut ac = Child::spawn("aria2c", a, &alog).unwrap();
    let st = ac.wait_timeout(Duration::from_secs(150));
    let out = std::fs::read_to_string(&alog).unwrap_or_default();
    assert_eq!(
        st,
        Some(Some(0)),
        "unwrapped aria2c failed under the system tunnel:\n{out}"
    );
    assert_eq!(std::fs::read(dl.join("payload.bin")).unwrap(), bed.data);

    // warren dies: the host must stay cut off, not fall back to the clear
    w.kill9();
    let probe = bed
        .client
        .ns
        .sh(&format!(
            "python3 -c \"import socket,sys; s=socket.socket(); s.settimeout(3)\ntry:\n  s.connect(('{}', 6969)); print('CONNECTED')\nexcept Exception as e: print('BLOCKED', e)\"",
            bed.tracker.addr
        ))
        .unwrap();
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(
        said.contains("BLOCKED"),
        "after warren died the host reached the tracker: {said}"
    );

    // the captures: only link traffic left the host, before and after the kill
    bed.assert_no_leak();

    // down restores exactly what was there before
    let mut down = bed.warren_on_client();
    down.args(["tunnel", "--system", "down"]);
    let o = down.output().unwrap();
    assert!(o.status.success(), "down failed: {o:?}");
    let after = host_state(&bed.client);
    assert_eq!(before, after, "the host was not restored exactly");
}

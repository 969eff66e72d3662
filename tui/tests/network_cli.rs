//! Real processes: four `warren node`s (three relays, one exit) on loopback, a libtorrent seeder,
//! and `warren get` of a magnet link through 3-hop circuits, bootstrapped from the nodes'
//! descriptor files. Everything is killed by PID when the test ends, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::procs::{wait_file, wait_network_formed, warren, KillPid, Proc};
use warren_tests::libtorrent::{wait_seeder, LISTENING, LT_SEED};

fn spawn_node(dir: &Path, name: &str, exit: bool) -> (Proc, PathBuf) {
    spawn_node_with(dir, name, exit, false)
}

fn spawn_node_with(dir: &Path, name: &str, exit: bool, dht: bool) -> (Proc, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let cfg = d.join("config.toml");
    // test networks only: the exit may reach loopback, where the seeder is
    std::fs::write(&cfg, "[exit_policy]\nallow_private = true\n").unwrap();
    let log = std::fs::File::create(d.join("log")).unwrap();
    let mut c = warren();
    c.arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(d.join("data"))
        .arg("--socket")
        .arg(d.join("control.sock"))
        .args(["node", "--relay", "--listen", "127.0.0.1:0"]);
    if exit {
        c.arg("--exit");
    }
    if dht {
        c.arg("--dht");
    }
    let p = Proc(
        c.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (p, d.join("data").join("descriptor"))
}

/// `n` `warren node --relay --dht` processes in `dir/n0..`, each bootstrapping from all the
/// descriptor files, with `config` (TOML) if given; waits until the network has formed. Returns
/// the processes, the descriptor files and the control sockets.
fn dht_mesh(
    dir: &Path,
    n: usize,
    config: Option<&str>,
    formed_within: Duration,
) -> (Vec<Proc>, Vec<PathBuf>, Vec<PathBuf>) {
    let descs: Vec<PathBuf> = (0..n)
        .map(|i| dir.join(format!("n{i}/data/descriptor")))
        .collect();
    let mut procs = Vec::new();
    for i in 0..n {
        let d = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let mut c = warren();
        if let Some(text) = config {
            let cfg = d.join("config.toml");
            std::fs::write(&cfg, text).unwrap();
            c.arg("--config").arg(&cfg);
        }
        c.arg("--data-dir")
            .arg(d.join("data"))
            .arg("--socket")
            .arg(d.join("control.sock"));
        for p in &descs {
            c.arg("--bootstrap").arg(p);
        }
        c.args(["node", "--relay", "--dht", "--listen", "127.0.0.1:0"]);
        procs.push(Proc(
            c.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        ));
    }
    for d in &descs {
        assert!(wait_file(d, Duration::from_secs(20)), "{}", d.display());
    }
    let sockets: Vec<PathBuf> = (0..n)
        .map(|i| dir.join(format!("n{i}/control.sock")))
        .collect();
    wait_network_formed(&sockets, formed_within);
    (procs, descs, sockets)
}

#[test]
fn warren_get_through_real_node_processes_from_a_libtorrent_seeder() {
    let have_lt = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have_lt {
        eprintln!("SKIP: python3-libtorrent is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    let mut descs = Vec::new();
    for (i, exit) in [false, false, false, true].into_iter().enumerate() {
        let (p, d) = spawn_node(dir.path(), &format!("n{i}"), exit);
        procs.push(p);
        descs.push(d);
    }
    for d in &descs {
        assert!(
            wait_file(d, Duration::from_secs(20)),
            "node did not write {}",
            d.display()
        );
    }

    // content and torrent
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(seed_dir.join("payload.bin"), &data).unwrap();
    let torrent = dir.path().join("payload.torrent");
    let out = warren()
        .arg("make")
        .arg(seed_dir.join("payload.bin"))
        .arg("-o")
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let magnet = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("magnet:"))
        .unwrap()
        .to_string();

    // a real libtorrent seeder on loopback
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lt_log = std::fs::File::create(dir.path().join("lt.log")).unwrap();
    let _seeder = Proc(
        Command::new("/usr/bin/python3")
            .args(["-c", LT_SEED])
            .arg(&torrent)
            .arg(&seed_dir)
            .arg(format!("127.0.0.1:{port}"))
            .stdout(lt_log.try_clone().unwrap())
            .stderr(lt_log)
            .spawn()
            .unwrap(),
    );
    wait_seeder(
        &dir.path().join("lt.log"),
        LISTENING,
        Duration::from_secs(30),
    );
    let link = format!("{magnet}&x.pe=127.0.0.1:{port}");

    let dl = dir.path().join("dl");
    let mut get = warren();
    get.arg("--data-dir")
        .arg(dir.path().join("client"))
        .arg("--socket")
        .arg(dir.path().join("client.sock"))
        .arg("--download-dir")
        .arg(&dl);
    for d in &descs {
        get.arg("--bootstrap").arg(d);
    }
    // info level (one above the default, warn), checked below
    get.args(["-v", "get", "--no-tui", "--hops", "3", &link]);
    get.env_remove("RUST_LOG");
    let child = Proc(
        get.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    let mut child = child;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "warren get did not finish in 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "warren get failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("complete and verified"), "{stdout}");
    assert_eq!(std::fs::read(dl.join("payload.bin")).unwrap(), data);
    // warren's log (stderr, at info level) names neither the infohash nor the file, nor do
    // the relays' logs (the progress lines on stdout are the user's own screen)
    let ih = magnet
        .split("btih:")
        .nth(1)
        .map(|r| r.split('&').next().unwrap_or(r).to_lowercase())
        .unwrap();
    assert!(
        stderr.contains("INFO"),
        "no info-level log to check:\n{stderr}"
    );
    let mut logs = vec![("warren get stderr".to_string(), stderr.to_lowercase())];
    for i in 0..4 {
        let p = dir.path().join(format!("n{i}/log"));
        logs.push((
            p.display().to_string(),
            std::fs::read_to_string(&p)
                .unwrap_or_default()
                .to_lowercase(),
        ));
    }
    for (what, text) in &logs {
        assert!(!text.contains(&ih), "{what} names the infohash:\n{text}");
        assert!(
            !text.contains("payload.bin"),
            "{what} names the file:\n{text}"
        );
    }
}

#[test]
fn warren_get_refuses_a_malformed_magnet_and_a_missing_overlay() {
    let out = warren()
        .args(["get", "--no-tui", "magnet:?xt=urn:btih:zz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad magnet link"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = warren()
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "get",
            "--no-tui",
            "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no overlay to reach"), "{err}");

    let out = warren()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--bootstrap", "10.1.2.3:7700"])
        .args([
            "get",
            "--no-tui",
            "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is neither a descriptor file") && err.contains("<x25519 key hex>@<ip:port>"),
        "{err}"
    );
}

/// Kills a process this test caused to start (by the pid it printed), when dropped.
#[test]
fn open_starts_a_node_whose_transfer_completes_and_survives_kill_9_restarts() {
    let have_lt = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have_lt {
        eprintln!("SKIP: python3-libtorrent is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    let mut descs = Vec::new();
    for (i, exit) in [false, false, true].into_iter().enumerate() {
        // one of them also serves the DHT
        let (p, d) = spawn_node_with(dir.path(), &format!("n{i}"), exit, i == 0);
        procs.push(p);
        descs.push(d);
    }
    for d in &descs {
        assert!(
            wait_file(d, Duration::from_secs(20)),
            "node did not write {}",
            d.display()
        );
    }
    let log0 = std::fs::read_to_string(dir.path().join("n0").join("log")).unwrap_or_default();
    assert!(log0.contains("+ dht"), "{log0}");

    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(97) >> 3) as u8)
        .collect();
    std::fs::write(seed_dir.join("payload.bin"), &data).unwrap();
    let torrent = dir.path().join("payload.torrent");
    let out = warren()
        .arg("make")
        .arg(seed_dir.join("payload.bin"))
        .arg("-o")
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let magnet = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("magnet:"))
        .unwrap()
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lt_log = std::fs::File::create(dir.path().join("lt.log")).unwrap();
    let _seeder = Proc(
        Command::new("/usr/bin/python3")
            .args(["-c", LT_SEED])
            .arg(&torrent)
            .arg(&seed_dir)
            .arg(format!("127.0.0.1:{port}"))
            .stdout(lt_log.try_clone().unwrap())
            .stderr(lt_log)
            .spawn()
            .unwrap(),
    );
    wait_seeder(
        &dir.path().join("lt.log"),
        LISTENING,
        Duration::from_secs(30),
    );
    let link = format!("{magnet}&x.pe=127.0.0.1:{port}");

    let client_dir = dir.path().join("client");
    let socket = dir.path().join("client.sock");
    let dl = dir.path().join("dl");
    let with_globals = |c: &mut Command| {
        c.arg("--data-dir")
            .arg(&client_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--download-dir")
            .arg(&dl);
        for d in &descs {
            c.arg("--bootstrap").arg(d);
        }
    };
    let mut open = warren();
    with_globals(&mut open);
    let out = open.args(["open", &link]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = stdout
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse::<i32>().ok());
    let _node = KillPid(pid);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        pid.is_some() && stdout.contains("added to the new node"),
        "{stdout}"
    );

    // the transfer is in the new node and completes
    let t0 = Instant::now();
    let done = loop {
        let mut st = warren();
        with_globals(&mut st);
        let o = st.args(["status", "--json"]).output().unwrap();
        let js = String::from_utf8_lossy(&o.stdout).into_owned();
        if js.contains("\"seeding\"") {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        done,
        "the transfer did not complete in the node that `open` started"
    );
    assert_eq!(std::fs::read(dl.join("payload.bin")).unwrap(), data);

    // its circuits entered through an entry guard, kept in the data directory: one of the relays
    let guards = std::fs::read_to_string(client_dir.join("guards")).unwrap_or_default();
    let guard_ids: Vec<&str> = guards
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !guard_ids.is_empty() && guard_ids.iter().all(|g| g.len() == 64),
        "no entry guard saved: {guards:?}"
    );

    // The node keeps what was added to it. Kill it (-9) and the seeder, start `warren node` again
    // on the same data directory: the transfer comes back complete from its resume database,
    // with nobody left to download from. Then pause (kept over the next restart) and remove
    // (gone after the next one).
    drop(_node);
    drop(_seeder);
    let restart = |n: u32| -> Proc {
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(dir.path().join(format!("client-node-{n}.log"))).unwrap();
        let mut c = warren();
        with_globals(&mut c);
        let p = Proc(
            c.arg("node")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the restarted node serves no socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    };
    let transfers = || -> Vec<serde_json::Value> {
        let mut st = warren();
        with_globals(&mut st);
        let o = st.args(["status", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["transfers"].as_array().cloned().unwrap_or_default()
    };
    let wait_state = |want: &str| -> Vec<serde_json::Value> {
        let t0 = Instant::now();
        loop {
            let t = transfers();
            if t.len() == 1 && t[0]["state"] == want {
                return t;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "after the restart: want one transfer {want}, have {t:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let control = |line: String| -> String {
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        std::io::BufReader::new(s).read_line(&mut reply).unwrap();
        reply
    };

    let node = restart(1);
    let t = wait_state("seeding");
    assert_eq!(t[0]["done"], t[0]["size"], "{t:?}");
    let log = std::fs::read_to_string(dir.path().join("client-node-1.log")).unwrap();
    assert!(log.contains("resumed 1 transfer(s)"), "{log}");
    let id = t[0]["id"].as_u64().unwrap();
    let reply = control(format!(r#"{{"id":1,"cmd":"pause","transfer":{id}}}"#));
    assert!(!reply.contains("error"), "{reply}");
    wait_state("paused");
    let pid = node.0.id().to_string();
    let _ = Command::new("kill").args(["-9", &pid]).status();
    drop(node);

    let node = restart(2);
    let t = wait_state("paused");
    let id = t[0]["id"].as_u64().unwrap();
    let reply = control(format!(r#"{{"id":2,"cmd":"remove","transfer":{id}}}"#));
    assert!(!reply.contains("error"), "{reply}");
    let _ = Command::new("kill")
        .args(["-9", &node.0.id().to_string()])
        .status();
    drop(node);

    // the socket answers only after the saved transfers were restored (`node::run`)
    let _node = restart(3);
    assert!(transfers().is_empty(), "a removed transfer came back");
    assert_eq!(
        std::fs::read(dl.join("payload.bin")).unwrap(),
        data,
        "the data is untouched by restarts (remove without delete_data keeps it)"
    );
}

#[test]
fn tunnel_shows_the_dashboard_in_a_terminal_and_reports_the_program_exit() {
    let root = unsafe { libc::geteuid() } == 0;
    let tmux_ok = Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !root || !tmux_ok {
        eprintln!("SKIP: needs root (a namespace and a tun) and tmux");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    let mut descs = Vec::new();
    for (i, exit) in [false, false, true].into_iter().enumerate() {
        let (p, d) = spawn_node(dir.path(), &format!("n{i}"), exit);
        procs.push(p);
        descs.push(d);
    }
    for d in &descs {
        assert!(
            wait_file(d, Duration::from_secs(20)),
            "node did not write {}",
            d.display()
        );
    }
    let mut cmd = format!(
        "{} --data-dir {} --socket {}",
        env!("CARGO_BIN_EXE_warren"),
        dir.path().join("client").display(),
        dir.path().join("client.sock").display()
    );
    for d in &descs {
        cmd.push_str(&format!(" --bootstrap {}", d.display()));
    }
    cmd.push_str(" tunnel --dash -- sh -c 'echo hello from inside; sleep 2; exit 3'");
    let t = common::tmux::Tmux::start(&cmd, 100, 30);
    t.wait_for("Transfers", Duration::from_secs(20));
    t.keys(&["3"]);
    t.wait_for("Tunnel", Duration::from_secs(5));
    t.keys(&["5"]);
    t.wait_for("exited with status 3", Duration::from_secs(30));
    t.keys(&["q"]);
    let ok = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        t.exited()
    });
    assert!(
        ok,
        "warren tunnel did not exit after q:\n{}",
        t.screen().join("\n")
    );
    let log =
        std::fs::read_to_string(dir.path().join("client").join("tunnel-program.log")).unwrap();
    assert!(log.contains("hello from inside"), "{log}");
}

/// `warren seed` in a real terminal: its dashboard shows the seeded file and its introduction
/// circuits, the Log tab its magnet link; a `warren get` of that link (no tracker, no peer address)
/// finds the seeder through the overlay DHT and completes byte-identical.
#[test]
fn seed_shows_its_dashboard_and_a_get_finds_it_through_the_dht() {
    if !common::tmux::Tmux::available() {
        eprintln!("SKIP: tmux is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_procs, descs, _sockets) = dht_mesh(dir.path(), 4, None, Duration::from_secs(60));
    let boot: String = descs
        .iter()
        .map(|d| format!(" --bootstrap {}", d.display()))
        .collect();

    let content = dir.path().join("share").join("talk.bin");
    std::fs::create_dir_all(content.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&content, &data).unwrap();
    let seeder_dir = dir.path().join("seeder");
    let cmd = format!(
        "{} --data-dir {} --socket {}{boot} seed --hops 2 {}",
        env!("CARGO_BIN_EXE_warren"),
        seeder_dir.display(),
        dir.path().join("seeder.sock").display(),
        content.display()
    );
    let t = common::tmux::Tmux::start(&cmd, 100, 30);
    // (not "talk.bin": the "hashing .../talk.bin" line before the dashboard has it too)
    let screen = t.wait_for("seeding", Duration::from_secs(60));
    assert!(
        screen.iter().any(|l| l.contains("talk.bin")),
        "{}",
        screen.join("\n")
    );
    t.keys(&["2"]);
    t.wait_for("intro", Duration::from_secs(10));
    t.keys(&["5"]);
    t.wait_for("magnet link of talk.bin", Duration::from_secs(10));
    let magnet = std::fs::read_dir(seeder_dir.join("magnets"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find_map(|e| std::fs::read_to_string(e.path()).ok())
        .unwrap();

    let dl = dir.path().join("dl");
    let mut get = warren();
    get.arg("--data-dir")
        .arg(dir.path().join("client"))
        .arg("--socket")
        .arg(dir.path().join("client.sock"))
        .arg("--download-dir")
        .arg(&dl);
    for d in &descs {
        get.arg("--bootstrap").arg(d);
    }
    let out = get
        .args(["get", "--no-tui", "--hops", "2", magnet.trim()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(dl.join("talk.bin")).unwrap() == data);
    t.keys(&["q"]);
    let ok = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        t.exited()
    });
    assert!(ok, "warren seed did not exit after q");
}

#[test]
fn nodes_renew_their_descriptors_and_stay_in_the_network_past_their_lifetime() {
    // descriptors valid for 4 s (the minimum; test networks only): without renewal every node
    // would drop out of the others' DHT tables (which count only valid descriptors) after 4 s
    let dir = tempfile::tempdir().unwrap();
    let (procs, descs, sockets) = dht_mesh(
        dir.path(),
        3,
        Some("[network]\ndescriptor_lifetime_secs = 4\n"),
        Duration::from_secs(30),
    );
    let first: Vec<String> = descs
        .iter()
        .map(|d| std::fs::read_to_string(d).unwrap())
        .collect();
    // three lifetimes later the network is still formed, from descriptors signed since
    std::thread::sleep(Duration::from_secs(12));
    wait_network_formed(&sockets, Duration::from_secs(4));
    for (d, old) in descs.iter().zip(&first) {
        let now = std::fs::read_to_string(d).unwrap();
        assert_ne!(&now, old, "{} was never re-signed", d.display());
    }
    drop(procs);
}

/// Starts `warren node ARGS` in `dir` (logging to `dir/log`); waits until the log has `needle`.
fn node_saying(dir: &Path, args: &[&str], needle: &str) -> (Proc, String) {
    std::fs::create_dir_all(dir).unwrap();
    let log_path = dir.join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut c = warren();
    c.arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(dir.join("control.sock"))
        .arg("node")
        .args(args);
    let p = Proc(
        c.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains(needle) {
            return (p, text);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "`warren node {}` never said {needle:?}:\n{text}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_listening_on_an_unspecified_address_publishes_only_an_advertised_one() {
    let dir = tempfile::tempdir().unwrap();
    // no --advertise: nobody could dial 0.0.0.0, so the node says so and publishes nothing
    let a = dir.path().join("a");
    let (_pa, text) = node_saying(
        &a,
        &["--relay", "--dht", "--listen", "0.0.0.0:0"],
        "not published",
    );
    assert!(
        text.contains("is not an address others can dial") && text.contains("--advertise"),
        "{text}"
    );
    assert!(!a.join("data/descriptor").exists());
    assert!(!text.contains("others bootstrap from this node"), "{text}");
    // with --advertise (port 0 = the listen port) the descriptor holds the advertised address,
    // and another node bootstraps from the line it prints
    let b = dir.path().join("b");
    let (_pb, text) = node_saying(
        &b,
        &[
            "--relay",
            "--dht",
            "--listen",
            "0.0.0.0:0",
            "--advertise",
            "127.0.0.1:0",
        ],
        "others bootstrap from this node with: --bootstrap ",
    );
    let line = text
        .lines()
        .find_map(|l| l.split("--bootstrap ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    let addr = line.split('@').nth(1).unwrap();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{line}"
    );
    assert!(b.join("data/descriptor").exists());
    let c = dir.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    let (_pc, _) = node_saying(
        &c,
        &[
            "--relay",
            "--dht",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &line,
        ],
        "others bootstrap from this node",
    );
    wait_network_formed(
        &[b.join("control.sock"), c.join("control.sock")],
        Duration::from_secs(30),
    );
}

#[test]
fn node_takes_its_roles_from_the_config_unless_flags_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    std::fs::create_dir_all(&d).unwrap();
    let cfg = d.join("config.toml");
    std::fs::write(&cfg, "[roles]\nrelay = true\nexit = true\ndht = false\n").unwrap();
    let cfg_arg = cfg.display().to_string();
    let (p, text) = node_saying(
        &d,
        &["--listen", "127.0.0.1:0", "--config", &cfg_arg],
        "others bootstrap",
    );
    assert!(text.contains("(relay + exit)"), "{text}");
    drop(p);
    let (_p, text) = node_saying(
        &d,
        &["--listen", "127.0.0.1:0", "--config", &cfg_arg, "--dht"],
        "others bootstrap",
    );
    assert!(text.contains("(client only + dht)"), "{text}");
}

//! Chaos: downloads keep going while the network around them dies and comes back.
//!
//! 1. In-process, a 20-node overlay: five downloads at once from a hidden seeder while relays,
//!    introduction and rendezvous points are killed and restarted at random; all five complete
//!    byte-identical.
//! 2. Real processes: a `warren get` of a hidden seeder's magnet link is killed with SIGKILL at 20
//!    random moments and restarted each time; the last run completes; the file is byte-identical.
//!
//! Loopback only; every process is killed by PID when the test ends, pass or fail. The random
//! seed is printed (set CHAOS_SEED to replay one).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::procs::{spawn_logged, wait_file, wait_network_formed, warren};
use overlay::testnet::Testnet;
use share::session::SessionConfig;
use warren::node::connector::Clients;
use warren::node::core::NodeCore;
use warren::status::CircuitPurpose;

/// xorshift64*: enough randomness for chaos, no dependency, replayable from its seed.
struct Rng(u64);
impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        println!("CHAOS_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| ((i as u64).wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

fn core(net: &Testnet, dir: &Path, name: &str, session: SessionConfig) -> NodeCore {
    NodeCore::new(
        name.into(),
        Clients::new(overlay::ClientConfig::default(), net.descriptors()),
        session,
        dir.join(format!("{name}-state")),
        dir.join(format!("{name}-download")),
        3,
    )
}

/// Indices of the nodes that carry the downloaders' rendezvous circuits and the seeder's
/// introduction circuits right now (the points and the relays before them).
fn hot_nodes(net: &Testnet, cores: &[&NodeCore]) -> Vec<usize> {
    let mut out = Vec::new();
    for c in cores {
        for circ in c.snapshot_now().circuits {
            if circ.purpose == CircuitPurpose::Rendezvous || circ.purpose == CircuitPurpose::Intro {
                for short in &circ.hops {
                    if let Some(i) = net.nodes().iter().position(|n| &n.id().short() == short) {
                        if !out.contains(&i) {
                            out.push(i);
                        }
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_downloads_complete_while_relays_and_points_die_and_return() {
    const FILES: usize = 5;
    const SIZE: usize = 3_000_000;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut rng = Rng::from_env();
    let mut net = Testnet::builder()
        .relays(18)
        .exits(2)
        .dht(true)
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // the seeder's upload is capped (one cap for all its torrents) so that the downloads last
    // long enough for the chaos: 5 x 3 MB at 1 MB/s is about 15 s without any kill
    let seeder = core(
        &net,
        dir.path(),
        "seeder",
        SessionConfig {
            upload_rate: 1_000_000,
            ..SessionConfig::default()
        },
    );
    let mut links = Vec::new();
    let mut datas = Vec::new();
    for k in 0..FILES {
        let p = dir.path().join(format!("file{k}.bin"));
        let d = content(SIZE + k * 1111, k as u8 + 1);
        std::fs::write(&p, &d).unwrap();
        let (_, _, link) = seeder.seed_path(&p, Some(3)).await.unwrap();
        links.push(link);
        datas.push(d);
    }
    let mut downloaders = Vec::new();
    for (k, link) in links.iter().enumerate() {
        let d = core(
            &net,
            dir.path(),
            &format!("dl{k}"),
            SessionConfig::default(),
        );
        let (id, h) = d.add_magnet(link, None, Some(3)).await.unwrap();
        downloaders.push((d, id, h));
    }

    let t0 = Instant::now();
    let mut kills = 0;
    let mut hot_kills = 0;
    let mut down: Vec<(usize, Instant)> = Vec::new();
    let mut last_report = Instant::now();
    let refresh = |net: &Testnet, seeder: &NodeCore, dls: &[(NodeCore, _, _)]| {
        let ds = net.descriptors();
        for (_, c) in seeder.clients().all() {
            c.set_directory(ds.clone());
        }
        for (d, _, _) in dls {
            for (_, c) in d.clients().all() {
                c.set_directory(ds.clone());
            }
        }
    };
    loop {
        let done = downloaders
            .iter()
            .filter(|(_, _, h)| h.status().progress >= 1.0)
            .count();
        if done == FILES {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            for (k, (_, _, h)) in downloaders.iter().enumerate() {
                let st = h.status();
                println!(
                    "t={:.0}s dl{k}: {:.1}% peers {} in flight {} state {:?} ({kills} kills)",
                    t0.elapsed().as_secs_f64(),
                    st.progress * 100.0,
                    st.peers,
                    st.pieces_in_flight,
                    st.state
                );
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "{done}/{FILES} complete after {:?} ({kills} kills)",
            t0.elapsed()
        );
        // bring back nodes that have been down for a while
        let now = Instant::now();
        let mut back = Vec::new();
        down.retain(|(i, at)| {
            if now.duration_since(*at) > Duration::from_millis(1500) {
                back.push(*i);
                false
            } else {
                true
            }
        });
        for i in back {
            let mut ok = false;
            for _ in 0..20 {
                if net.restart(i).await.is_ok() {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(ok, "node {i} could not restart on its port");
            let all = net.descriptors();
            net.node(i).dht_learn(&all);
        }
        // kill one more (at most 3 down at once): half the time a node that carries an
        // introduction or rendezvous circuit
        if down.len() < 3 && t0.elapsed() > Duration::from_millis(500) {
            let hot = hot_nodes(&net, &[&seeder, &downloaders[0].0, &downloaders[1].0]);
            let hot: Vec<usize> = hot
                .into_iter()
                .filter(|i| !down.iter().any(|(d, _)| d == i))
                .collect();
            let i = if !hot.is_empty() && rng.below(2) == 0 {
                hot_kills += 1;
                hot[rng.below(hot.len() as u64) as usize]
            } else {
                loop {
                    let i = rng.below(net.nodes().len() as u64) as usize;
                    if !down.iter().any(|(d, _)| *d == i) {
                        break i;
                    }
                }
            };
            net.kill(i);
            kills += 1;
            down.push((i, Instant::now()));
        }
        refresh(&net, &seeder, &downloaders);
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
    }
    println!(
        "all {FILES} downloads complete in {:?} with {kills} kills ({hot_kills} of nodes on \
         introduction/rendezvous circuits)",
        t0.elapsed()
    );
    assert!(
        kills >= 5,
        "finished before the chaos started ({kills} kills)"
    );
    for (k, (d, id, _)) in downloaders.iter().enumerate() {
        tokio::time::timeout(Duration::from_secs(30), d.wait_complete(*id))
            .await
            .expect("wait_complete")
            .unwrap();
        let got = std::fs::read(dir.path().join(format!("dl{k}-download/file{k}.bin"))).unwrap();
        assert!(got == datas[k], "file {k} differs");
    }
    for (d, _, _) in &downloaders {
        d.shutdown_all();
    }
    seeder.shutdown_all();
}

// ---- 2. kill -9 of a real `warren get` ----

#[test]
fn warren_get_killed_twenty_times_at_random_completes_byte_identical() {
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().unwrap();
    let descs: Vec<PathBuf> = (0..5)
        .map(|i| dir.path().join(format!("n{i}/data/descriptor")))
        .collect();
    let mut procs = Vec::new();
    for i in 0..5 {
        let d = dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let mut c = warren();
        c.arg("--data-dir")
            .arg(d.join("data"))
            .arg("--socket")
            .arg(d.join("control.sock"));
        for p in &descs {
            c.arg("--bootstrap").arg(p);
        }
        c.args(["node", "--relay", "--dht", "--listen", "127.0.0.1:0"]);
        procs.push(spawn_logged(c, &d.join("log")));
    }
    for d in &descs {
        assert!(wait_file(d, Duration::from_secs(30)), "{}", d.display());
    }
    let sockets: Vec<PathBuf> = (0..5)
        .map(|i| dir.path().join(format!("n{i}/control.sock")))
        .collect();
    wait_network_formed(&sockets, Duration::from_secs(60));

    let content_path = dir.path().join("share").join("chaos.bin");
    std::fs::create_dir_all(content_path.parent().unwrap()).unwrap();
    let data = content(12_000_000, 9);
    std::fs::write(&content_path, &data).unwrap();
    let seeder_dir = dir.path().join("seeder");
    // the seeder's upload is capped so that the download outlasts the 20 kills (12 MB at
    // 300 kB/s is 40 s of transfer; each run lives 0.3-2.5 s)
    let seeder_cfg = dir.path().join("seeder.toml");
    std::fs::write(&seeder_cfg, "[rate_limits]\nupload = 300000\n").unwrap();
    let mut c = warren();
    c.arg("--config")
        .arg(&seeder_cfg)
        .arg("--data-dir")
        .arg(&seeder_dir)
        .arg("--socket")
        .arg(dir.path().join("seeder.sock"));
    for p in &descs {
        c.arg("--bootstrap").arg(p);
    }
    c.args(["seed", "--no-tui", "--hops", "2"])
        .arg(&content_path);
    let _seeder = spawn_logged(c, &dir.path().join("seeder.log"));
    let t0 = Instant::now();
    let magnet = loop {
        let m = std::fs::read_dir(seeder_dir.join("magnets"))
            .ok()
            .and_then(|rd| {
                rd.filter_map(|e| e.ok())
                    .find_map(|e| std::fs::read_to_string(e.path()).ok())
            })
            .filter(|m| m.starts_with("magnet:"));
        if let Some(m) = m {
            break m.trim().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the seeder wrote no magnet link: {}",
            std::fs::read_to_string(dir.path().join("seeder.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    let dl = dir.path().join("dl");
    let get = |log: &Path| {
        let mut g = warren();
        g.arg("--data-dir")
            .arg(dir.path().join("client"))
            .arg("--socket")
            .arg(dir.path().join("client.sock"))
            .arg("--download-dir")
            .arg(&dl);
        for d in &descs {
            g.arg("--bootstrap").arg(d);
        }
        g.args(["get", "--no-tui", "--hops", "2", &magnet]);
        spawn_logged(g, log)
    };
    let have = || {
        std::fs::metadata(dl.join("chaos.bin"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let mut kills = 0;
    let mut early_exit = None;
    for round in 0..20 {
        let log = dir.path().join(format!("get-{round}.log"));
        let mut p = get(&log);
        // a random moment: 0.3 to 2.5 s into the run
        let at = Duration::from_millis(300 + rng.below(2200));
        let t = Instant::now();
        let mut exited = None;
        while t.elapsed() < at {
            if let Ok(Some(st)) = p.0.try_wait() {
                exited = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(st) = exited {
            // it finished (or failed) before the kill
            early_exit = Some((round, st, std::fs::read_to_string(&log).unwrap_or_default()));
            break;
        }
        // SAFETY: kill(2) with the PID of our own child, which has not been reaped yet.
        let r = unsafe { libc::kill(p.0.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 failed");
        let _ = p.0.wait();
        kills += 1;
        let last = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.contains('%'))
            .unwrap_or("(no progress line yet)")
            .to_string();
        println!("kill -9 #{kills} after {at:?}; last progress: {last}");
    }
    if let Some((round, st, log)) = &early_exit {
        assert!(
            st.success(),
            "run {round} failed before its kill: {st}\n{log}"
        );
        println!("the download completed in run {round}, after {kills} kills");
    }
    // the last run, not killed, completes
    let log = dir.path().join("get-final.log");
    let mut p = get(&log);
    let t = Instant::now();
    let st = loop {
        if let Ok(Some(st)) = p.0.try_wait() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the final run did not complete ({} bytes on disk)\n{}",
            have(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        st.success(),
        "final run: {st}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = std::fs::read(dl.join("chaos.bin")).unwrap();
    assert!(got == data, "the file differs after {kills} kills");
    println!("completed byte-identical after {kills} kill -9s");
    assert_eq!(
        kills, 20,
        "the download finished before all 20 kills landed"
    );
}

//! Hidden seeding with no exit at all, on the wire: every host has its own address in network
//! namespaces this test creates (a router, four relay hosts that are also DHT nodes and
//! introduction points, a seeder host and a client host). `warren seed` publishes a file; `warren get`
//! downloads it from a magnet link with no tracker and no peer address. The relays know only the
//! first relay's descriptor and announce themselves in the overlay DHT; seeder and client bootstrap
//! from that first relay given as `KEY@ADDR` only. Captures show that the client and the seeder each send only to overlay
//! link ports, and never a packet to each other.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use warren_tests::{capture, is_root, wait_file, wait_until, Capture, Child, Host, Netns};

struct Bed {
    procs: Vec<Child>,
    client: Host,
    seeder: Host,
    relays: Vec<Host>,
    _router: Netns,
    _descs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Bed {
    fn start() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let warren = env!("CARGO_BIN_EXE_warren");
        let router = Netns::new("hr").unwrap();
        router.sh("sysctl -qw net.ipv4.ip_forward=1").unwrap();
        let client = Host::behind(&router, "hc", 1).unwrap();
        let seeder = Host::behind(&router, "hs", 2).unwrap();
        let relays: Vec<Host> = (0..4)
            .map(|i| Host::behind(&router, "hn", 3 + i).unwrap())
            .collect();
        let descs: Vec<PathBuf> = (0..4)
            .map(|i| dir.path().join(format!("node{i}/data/descriptor")))
            .collect();
        let mut procs = Vec::new();
        for (i, h) in relays.iter().enumerate() {
            let d = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let mut c = h.ns.command(warren);
            c.arg("--data-dir")
                .arg(d.join("data"))
                .arg("--socket")
                .arg(d.join("control.sock"));
            // node 0 knows no one; the others know node 0's descriptor file only and announce
            // themselves in the DHT, which is how node 0 (and through it everyone) learns them
            if i == 0 {
                c.arg("-v");
            } else {
                c.arg("--bootstrap").arg(&descs[0]);
            }
            c.args([
                "node",
                "--relay",
                "--dht",
                "--listen",
                &format!("{}:7700", h.addr),
            ]);
            procs.push(Child::spawn("warren node", c, &d.join("log")).unwrap());
        }
        for d in &descs {
            assert!(
                wait_file(d, Duration::from_secs(20)),
                "no descriptor at {}",
                d.display()
            );
        }
        // node 0 learns the three others from their descriptor records (its own is not in its list)
        let log0 = dir.path().join("node0/log");
        assert!(
            wait_until(Duration::from_secs(30), || {
                std::fs::read_to_string(&log0)
                    .unwrap_or_default()
                    .contains("descriptors=3")
            }),
            "node 0 did not learn the other nodes:\n{}",
            std::fs::read_to_string(&log0).unwrap_or_default()
        );
        Bed {
            procs,
            client,
            seeder,
            relays,
            _router: router,
            _descs: descs,
            dir,
        }
    }

    fn warren_on(&self, h: &Host, name: &str) -> Command {
        let mut c = h.ns.command(env!("CARGO_BIN_EXE_warren"));
        c.arg("--data-dir")
            .arg(self.dir.path().join(name))
            .arg("--socket")
            .arg(self.dir.path().join(format!("{name}.sock")));
        // one node, named by its key and address only: it tells which other nodes it knows
        let line = std::fs::read_to_string(self.dir.path().join("node0/data/bootstrap")).unwrap();
        c.arg("--bootstrap").arg(line.trim());
        c
    }

    fn link_ports(&self) -> Vec<String> {
        self.relays
            .iter()
            .map(|h| format!("{}.7700", h.addr))
            .collect()
    }
}

#[test]
fn hidden_seeding_without_any_exit_leaks_no_address_either_way() {
    if !(is_root() && warren_tests::have("tcpdump")) {
        eprintln!("SKIP: needs root and tcpdump (.ci/run installs it)");
        return;
    }
    let mut bed = Bed::start();
    let caps = bed.dir.path().join("caps");
    std::fs::create_dir_all(&caps).unwrap();
    let cap_client = Capture::start(&bed.client.ns, &bed.client.iface, &caps).unwrap();
    let cap_seeder = Capture::start(&bed.seeder.ns, &bed.seeder.iface, &caps).unwrap();

    // the seeder: a file, `warren seed`, the magnet link it prints
    let content = bed.dir.path().join("share/hidden-payload.bin");
    std::fs::create_dir_all(content.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&content, &data).unwrap();
    let mut seed = bed.warren_on(&bed.seeder, "seeder");
    seed.args(["seed", "--no-tui", "--hops", "2"]).arg(&content);
    let seed_log = bed.dir.path().join("seed.log");
    bed.procs
        .push(Child::spawn("warren seed", seed, &seed_log).unwrap());
    let mut magnet = String::new();
    let published = wait_until(Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&seed_log).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.starts_with("magnet:")) {
            magnet = l.trim().to_string();
        }
        log.contains("swarm record published")
    });
    let log = std::fs::read_to_string(&seed_log).unwrap_or_default();
    assert!(published, "the seeder did not publish its record:\n{log}");
    assert!(
        !magnet.contains("tr=") && !magnet.contains("x.pe="),
        "{magnet}"
    );

    // the client: `warren get` of that magnet link
    let dl = bed.dir.path().join("dl");
    let mut get = bed.warren_on(&bed.client, "client");
    get.arg("--download-dir")
        .arg(&dl)
        .args(["get", "--no-tui", "--hops", "2", &magnet]);
    let get_log = bed.dir.path().join("get.log");
    let mut g = Child::spawn("warren get", get, &get_log).unwrap();
    let status = g.wait_timeout(Duration::from_secs(120));
    let glog = std::fs::read_to_string(&get_log).unwrap_or_default();
    assert_eq!(status, Some(Some(0)), "warren get did not succeed:\n{glog}");
    assert!(std::fs::read(dl.join("hidden-payload.bin")).unwrap() == data);

    std::thread::sleep(Duration::from_millis(300));
    let pc = cap_client.stop().unwrap();
    let ps = cap_seeder.stop().unwrap();
    let links = bed.link_ports();
    for (who, packets, addr) in [
        ("client", &pc, &bed.client.addr),
        ("seeder", &ps, &bed.seeder.addr),
    ] {
        let sent = capture::destinations_from(packets, &format!("{addr}."));
        assert!(!sent.is_empty(), "the capture saw nothing from the {who}");
        for d in &sent {
            assert!(
                links.contains(d),
                "the {who} sent a packet to {d}, which is not an overlay link port"
            );
        }
    }
    // and neither ever got a packet from the other
    let (c, s) = (
        format!("{}.", bed.client.addr),
        format!("{}.", bed.seeder.addr),
    );
    assert!(
        !ps.iter().any(|p| p.src.starts_with(&c)),
        "the seeder saw the client"
    );
    assert!(
        !pc.iter().any(|p| p.src.starts_with(&s)),
        "the client saw the seeder"
    );
}

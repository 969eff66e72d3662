//! TorProvider against a private Tor network on 127.0.0.1 (see common/mod.rs).
//!
//! One network per run of this binary and ONE #[test] that runs the scenarios in sequence, so the
//! network (a local value) is stopped by its Drop guard however the test ends. Needs Debian's
//! `tor`; skips with a printed message only when it is not installed.
//! Run: cargo test -p warren-tor --test tor_net -- --nocapture

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{TestServer, TorNet};
use overlay::{AnonProvider, IsolationKey, ProviderError, Target};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use warren_tor::{TorCircuitInfo, TorConfig, TorProvider};

/// Opens a stream through Tor to the test server; returns the exit address the server saw.
async fn exit_seen(p: &TorProvider, server: SocketAddr, iso: IsolationKey) -> IpAddr {
    circuit_and_exit(p, server, iso).await.1
}

/// A stream through Tor to the test server: the Tor circuit arti put it on, and the exit address
/// the server saw.
async fn circuit_and_exit(
    p: &TorProvider,
    server: SocketAddr,
    iso: IsolationKey,
) -> (TorCircuitInfo, IpAddr) {
    let (s, circ) = p
        .connect_tor(&Target::Addr(server), iso)
        .await
        .unwrap_or_else(|e| panic!("Tor stream to {server} (key {}): {e}", iso.0));
    let circ = circ.expect("arti knows the circuit of an open stream");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line))
        .await
        .expect("server greeting in time")
        .unwrap();
    (
        circ,
        line.trim().parse().expect("server sends the peer address"),
    )
}

#[test]
fn tor_network_scenarios() {
    let Some(net) = TorNet::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scenarios(&net));
    drop(net);
}

async fn scenarios(net: &TorNet) {
    let data = tempfile::tempdir().unwrap();
    let cfg: TorConfig = toml::from_str(&net.warren_tor_toml(data.path())).unwrap();
    let p = TorProvider::new(&cfg).unwrap();
    let exits: HashSet<IpAddr> = net.exit_addrs().into_iter().collect();
    let svc = net.svc();
    let server = TestServer::start(svc, svc.addr(2)).await;

    // bootstrap
    let t = Instant::now();
    p.bootstrap()
        .await
        .expect("arti bootstraps from the test network");
    eprintln!("arti bootstrap {:.2} s", t.elapsed().as_secs_f64());

    // 1. a stream reaches the server, from a Tor exit (never from this host's own address)
    let t = Instant::now();
    let ip = exit_seen(&p, server.addr, IsolationKey(1)).await;
    eprintln!(
        "first stream open + greeting {:.2} s, via exit {ip}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        exits.contains(&ip),
        "server saw {ip}, not one of the exits {exits:?}"
    );

    // echo both ways, through a host-name target (resolved at the exit)
    let s = p
        .connect(
            &Target::Host(server.addr.ip().to_string(), server.addr.port()),
            IsolationKey(1),
        )
        .await
        .expect("Target::Host through Tor");
    let mut s = BufReader::new(s);
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    let msg = vec![0xa7u8; 200_000];
    s.get_mut().write_all(b"E").await.unwrap();
    s.get_mut().write_all(&msg).await.unwrap();
    s.get_mut().flush().await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, msg, "echo through Tor is byte-identical");
    drop(s);

    // names are resolved at the exit (by the network's own DNS server), never locally
    let name = common::test_name(svc.addr(2));
    let ips = p
        .resolve(&name, IsolationKey(1))
        .await
        .expect("resolve at a Tor exit");
    assert_eq!(ips, vec![IpAddr::V4(svc.addr(2))]);
    let s = p
        .connect(
            &Target::Host(name.clone(), server.addr.port()),
            IsolationKey(1),
        )
        .await
        .unwrap_or_else(|e| panic!("stream to {name}: {e}"));
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(exits.contains(&line.trim().parse().unwrap()), "{line}");

    // 2. isolation, checked on arti's circuits: the streams of one key share one circuit; every
    //    other key gets a circuit of its own (opened one after another, so an idle circuit of an
    //    earlier key was there to be reused, and must not have been)
    let (home, first) = circuit_and_exit(&p, server.addr, IsolationKey(1)).await;
    for _ in 0..4 {
        let (c, ip) = circuit_and_exit(&p, server.addr, IsolationKey(1)).await;
        assert_eq!(c, home, "streams of one isolation key share their circuit");
        assert_eq!(ip, first);
    }
    let keys = 16u64;
    let mut circuits = HashSet::from([home.circuit.clone()]);
    let mut seen = HashSet::new();
    for k in 100..100 + keys {
        let (c, ip) = circuit_and_exit(&p, server.addr, IsolationKey(k)).await;
        assert!(exits.contains(&ip), "key {k}: server saw {ip}, not an exit");
        assert!(
            circuits.insert(c.circuit.clone()),
            "key {k} was put on {}, a circuit another key already used: transfers linkable",
            c.circuit
        );
        seen.insert(ip);
    }
    eprintln!(
        "isolation: {} keys on {} distinct circuits, leaving by exits {seen:?}",
        keys + 1,
        circuits.len()
    );
    // which exit each circuit picks is arti's choice (weighted random; a guard that is also an
    // exit excludes itself): informative only
    if seen != exits {
        eprintln!("isolation: the {keys} circuits all chose exit(s) {seen:?} of {exits:?}");
    }
    assert!(p.isolation_groups() as u64 > keys);

    // 3. UDP is refused with a clear message
    let e = p
        .datagram(IsolationKey(1))
        .await
        .err()
        .expect("no UDP through Tor");
    assert!(matches!(e, ProviderError::Unsupported(_)));
    assert!(e.to_string().contains("UDP through Tor"), "{e}");

    // 4. a closed port is a refusal, not a hang
    let closed = svc.listen(svc.addr(2), common::SERVICE_PORTS.0 + 50);
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let t = Instant::now();
    let e = p
        .connect(&Target::Addr(closed_addr), IsolationKey(1))
        .await
        .err()
        .expect("nothing listens there");
    eprintln!("closed port: {e} ({:.2} s)", t.elapsed().as_secs_f64());
    assert!(matches!(e, ProviderError::Refused { .. }), "{e:?}");

    // 5. benchmark: the same bulk download through Tor exits and through overlay exits
    //    (an in-process overlay: 2 relays + 1 exit, 3-hop circuits), side by side in one run
    let mib: u64 = std::env::var("WARREN_TOR_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let overlay_net = overlay::testnet::Testnet::builder()
        .relays(2)
        .exits(1)
        .allow_private(true)
        .build()
        .await
        .expect("in-process overlay");
    let overlay_client = overlay_net.client(overlay::ClientConfig {
        hops: 3,
        ..overlay::ClientConfig::default()
    });
    let mut figures = Vec::new();
    for (name, provider) in [
        ("tor", &p as &dyn AnonProvider),
        ("overlay", &overlay_client as &dyn AnonProvider),
    ] {
        let (open_s, secs) = bulk(provider, server.addr, mib, IsolationKey(7)).await;
        eprintln!(
            "BENCH {name}: 3 hops, stream open {open_s:.2} s, {mib} MiB download in {secs:.2} s = {:.2} MiB/s",
            mib as f64 / secs
        );
        figures.push((name, mib as f64 / secs));
    }
    eprintln!("BENCH side by side (MiB/s): {figures:?}");
}

/// Downloads `mib` MiB from the test server through `p`; returns (stream open s, transfer s).
async fn bulk(p: &dyn AnonProvider, server: SocketAddr, mib: u64, iso: IsolationKey) -> (f64, f64) {
    let t = Instant::now();
    let s = p
        .connect(&Target::Addr(server), iso)
        .await
        .unwrap_or_else(|e| panic!("{} stream: {e}", p.name()));
    let mut s = BufReader::new(s);
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    let open_s = t.elapsed().as_secs_f64();
    s.get_mut().write_all(b"D").await.unwrap();
    s.get_mut()
        .write_all(&(mib << 20).to_be_bytes())
        .await
        .unwrap();
    s.get_mut().flush().await.unwrap();
    let t = Instant::now();
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while got < mib << 20 {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("download progresses")
            .unwrap();
        assert!(n > 0, "{}: early EOF after {got} bytes", p.name());
        got += n as u64;
    }
    (open_s, t.elapsed().as_secs_f64())
}

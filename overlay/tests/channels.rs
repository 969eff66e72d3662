//! Channels under attack (issue "Hostile relays (1/2)"): a client that stops reading its link
//! must not slow the other circuits that share a relay's link with it, and a thousand such
//! circuits must not take a relay past its memory cap. In-process network on 127.0.0.1.

mod common;
use common::init_logs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay::client::build_circuit;
use overlay::limits::Limits;
use overlay::provider::Target;
use overlay::testnet::Testnet;
use overlay::{ClientCirc, ClientConfig, Descriptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(20);

/// The tests here measure throughput and memory: one at a time, not beside each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const MIB: usize = 1 << 20;

/// Opens a stream on `circ` to `src` and asks it for `n` bytes.
async fn request(circ: &Arc<ClientCirc>, src: SocketAddr, n: usize) -> overlay::BoxStream {
    let mut s = circ.open_stream(&Target::Addr(src), T).await.unwrap();
    s.write_all(&(n as u64).to_be_bytes()).await.unwrap();
    s
}

/// Reads `s` to its end (bounded); the byte count.
async fn read_all(mut s: overlay::BoxStream) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        match tokio::time::timeout(T, s.read(&mut buf)).await {
            Ok(Ok(0)) => return got,
            Ok(Ok(n)) => got += n,
            Ok(Err(e)) => panic!("stream failed after {got} bytes: {e}"),
            Err(_) => panic!("stream stalled after {got} bytes"),
        }
    }
}

/// Every circuit in `circs` downloads `each` bytes at once; the wall time of the whole.
async fn download_all(circs: &[Arc<ClientCirc>], src: SocketAddr, each: usize) -> Duration {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in circs {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let s = request(&c, src, each).await;
            read_all(s).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), each);
    }
    t0.elapsed()
}

/// Waits (bounded) until `cond` holds; panics naming `what`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < T, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Node 0 a relay (the guard of every circuit), node 1 the exit: every circuit is guard → exit,
/// so all of them share the guard's one link to the exit.
async fn two_node_net(limits: Limits) -> (Testnet, Vec<Descriptor>) {
    let net = Testnet::builder()
        .relays(1)
        .exits(1)
        .limits(limits)
        .build()
        .await
        .unwrap();
    let d = net.descriptors();
    (net, d)
}

fn relaxed_limits() -> Limits {
    Limits {
        creates_per_link_rate: 10_000.0,
        creates_per_link_burst: 10_000.0,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_slow_the_circuits_sharing_its_relay_link() {
    let _serial = SERIAL.lock().await;
    init_logs();
    let (net, d) = two_node_net(relaxed_limits()).await;
    let src = common::byte_source().await;
    let cfg = ClientConfig::default();
    let mut honest = Vec::new();
    for i in 0..99 {
        honest.push(
            build_circuit(i, vec![d[0].clone(), d[1].clone()], &cfg)
                .await
                .unwrap(),
        );
    }
    // the staller: one client, one link to the guard, circuits whose data it stops reading
    let staller = net.client(cfg.clone());
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let c = staller.build_circuit(2).await.unwrap();
        assert_eq!(c.hops()[0].id, d[0].id);
        stalled.push(c);
    }
    assert_eq!(staller.link_count(), 1);
    let each = MIB;
    // warm-up, then the baseline
    download_all(&honest, src, each / 4).await;
    let base = download_all(&honest, src, each).await;
    // stall: the staller opens its streams, stops reading its link, then asks for far more
    // than its windows
    let exit = net.node(1).clone();
    let sent_before = exit.status().exit_bytes_in;
    let mut keep = Vec::new();
    for c in &stalled {
        for _ in 0..2 {
            keep.push(c.open_stream(&Target::Addr(src), T).await.unwrap());
        }
    }
    staller.hostile_stop_reading(true);
    for s in &mut keep {
        s.write_all(&(1u64 << 30).to_be_bytes()).await.unwrap();
    }
    let guard = net.node(0).clone();
    // the exit sends the staller its windows' worth (8 circuits × 4 MiB), and then nothing
    wait_until("the exit to send the staller 16 MiB", || {
        exit.status().exit_bytes_in - sent_before >= 16 * MIB as u64
    })
    .await;
    let mut last = 0;
    wait_until("the staller's data to settle", || {
        std::thread::sleep(Duration::from_millis(200));
        let now = exit.status().exit_bytes_in;
        std::mem::replace(&mut last, now) == now
    })
    .await;
    // the old relay blocked its reader of the exit link here: every honest circuit stopped
    let mut best = 0.0f64;
    for _ in 0..3 {
        // (a relay whose reader waits for the staller's link never finishes this)
        let with = tokio::time::timeout(base * 10, download_all(&honest, src, each))
            .await
            .unwrap_or(base * 1000);
        let share = base.as_secs_f64() / with.as_secs_f64();
        println!(
            "baseline {base:?}, with a stalled reader {with:?}: {:.0}%",
            share * 100.0
        );
        best = best.max(share);
        if best >= 0.9 {
            break;
        }
    }
    assert!(
        best >= 0.9,
        "the honest circuits kept only {:.0}% of their throughput",
        best * 100.0
    );
    let st = guard.status();
    assert!(
        st.queued_bytes >= 16 * MIB as u64,
        "the staller was still stalled"
    );
    assert_eq!(st.circuits_killed_oom, 0);
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_circuits_stay_under_the_memory_cap() {
    let _serial = SERIAL.lock().await;
    init_logs();
    // the guard (node 0) is the relay under test; the exit keeps the default cap, so that what
    // piles up is the guard's
    let cap = 32 * MIB;
    let net = Testnet::builder()
        .relays(1)
        .exits(1)
        .limits(relaxed_limits())
        .node_limits(
            0,
            Limits {
                max_queued_bytes: cap,
                ..relaxed_limits()
            },
        )
        .build()
        .await
        .unwrap();
    let d = net.descriptors();
    let src = common::byte_source().await;
    let staller = net.client(ClientConfig::default());
    let mut circs = Vec::new();
    for _ in 0..1000 {
        circs.push(staller.build_circuit(2).await.unwrap());
    }
    assert_eq!(net.node(0).status().circuits, 1000);
    // streams open while it still reads; then it stops and asks each for 256 KiB: 250 MiB in
    // all would be queued at the guard
    let mut streams = Vec::new();
    for c in &circs {
        streams.push(c.open_stream(&Target::Addr(src), T).await.unwrap());
    }
    staller.hostile_stop_reading(true);
    for s in &mut streams {
        s.write_all(&(256u64 << 10).to_be_bytes()).await.unwrap();
    }
    let guard = net.node(0).clone();
    wait_until("the guard's out-of-memory killer", || {
        guard.status().circuits_killed_oom > 0
    })
    .await;
    // honest circuits still build through the guard and carry data
    let honest = build_circuit(
        5000,
        vec![d[0].clone(), d[1].clone()],
        &ClientConfig::default(),
    )
    .await
    .unwrap();
    let s = request(&honest, src, 4 * MIB).await;
    assert_eq!(read_all(s).await, 4 * MIB);
    let st = guard.status();
    println!(
        "guard: queued now {} MiB, peak {} MiB, cap {} MiB, killed {}",
        st.queued_bytes >> 20,
        st.queued_peak_bytes >> 20,
        st.queued_cap_bytes >> 20,
        st.circuits_killed_oom
    );
    // the cap holds up to what the readers queue between two checks (a cell each)
    assert!(
        st.queued_peak_bytes <= (cap + MIB) as u64,
        "peak {} bytes over the cap {cap}",
        st.queued_peak_bytes
    );
    assert!(st.queued_bytes <= (cap + MIB) as u64);
    drop(streams);
}

//! A client's links as Tor has its channels (issue "Hostile relays (1/2)"): one link per first
//! hop carries all the client's circuits through it, and what happens to one circuit stays on
//! that circuit. In-process test network, 127.0.0.1 only; every wait is bounded.

mod common;
use common::{init_logs, tcp_echo, write_and_read_back};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay::cell::{self, rcmd};
use overlay::node::hostile::Circuits;
use overlay::provider::{IsolationKey, Target};
use overlay::testnet::Testnet;
use overlay::{BoxStream, Client, ClientCirc, ClientConfig, Descriptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

/// A network of 3 relays (nodes 0-2) and an exit (node 3), and a client of 3-hop circuits.
async fn net_and_client() -> (Testnet, Client, Vec<Descriptor>) {
    let net = Testnet::builder().relays(3).exits(1).build().await.unwrap();
    let client = net.client(ClientConfig {
        hops: 3,
        pool_size: 0,
        ..Default::default()
    });
    let d = net.descriptors();
    (net, client, d)
}

/// A circuit along nodes `path` of the network, on the client's links.
async fn along(client: &Client, d: &[Descriptor], path: &[usize]) -> Arc<ClientCirc> {
    let p = path.iter().map(|&i| d[i].clone()).collect();
    client.build_along(p).await.unwrap()
}

/// Writes `len` bytes to the echo server through `circ` while reading them back; the first
/// failure.
async fn echo(circ: &Arc<ClientCirc>, to: SocketAddr, len: usize, seed: u8) -> Result<(), String> {
    let mut s = circ
        .open_stream(&Target::Addr(to), T)
        .await
        .map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
    let back = tokio::time::timeout(T, write_and_read_back(&mut s, &data))
        .await
        .map_err(|_| format!("echo of {len} bytes timed out"))?
        .map_err(|e| e.to_string())?;
    if back != data {
        return Err(format!(
            "echoed {} bytes of {len}, not the same",
            back.len()
        ));
    }
    Ok(())
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < T, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_circuits_share_one_link_per_guard_and_carry_streams_concurrently() {
    init_logs();
    let (net, client, _) = net_and_client().await;
    let to = tcp_echo().await;
    let mut circs = Vec::new();
    for i in 0..20 {
        circs.push(client.circuit_for(IsolationKey(i)).await.unwrap());
    }
    for (i, a) in circs.iter().enumerate() {
        for b in &circs[i + 1..] {
            assert!(!Arc::ptr_eq(a, b), "two isolation keys share a circuit");
        }
    }
    let guards: HashSet<_> = circs.iter().map(|c| c.hops()[0].id).collect();
    assert_eq!(
        client.link_count(),
        guards.len(),
        "one link per guard ({} guards for 20 circuits)",
        guards.len()
    );
    let runs = circs
        .iter()
        .enumerate()
        .map(|(i, c)| echo(c, to, 100_000, i as u8 | 1));
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    // each guard has one link from this client; its others are to and from the 3 other nodes
    // (one link per circuit would make 20)
    for g in &guards {
        let i = net.index_of(*g).unwrap();
        let links = net.node(i).status().links_open;
        assert!(links <= 1 + 2 * 3, "guard {i} has {links} links open");
    }
    assert_eq!(client.link_count(), guards.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_or_destroying_one_circuit_leaves_the_others_on_its_link_working() {
    init_logs();
    let (net, client, d) = net_and_client().await;
    let to = tcp_echo().await;
    let a = along(&client, &d, &[0, 1, 3]).await;
    let b = along(&client, &d, &[0, 2, 3]).await;
    let c = along(&client, &d, &[0, 2, 3]).await;
    assert_eq!(client.link_count(), 1);
    let guard = net.node(0);
    assert_eq!(guard.status().circuits, 3);
    // the application drops a circuit with a stream it used: DESTROY reaches the guard
    echo(&a, to, 50_000, 3).await.unwrap();
    let s = a.open_stream(&Target::Addr(to), T).await.unwrap();
    drop(s);
    drop(a);
    until("the guard tore the dropped circuit down", || {
        guard.status().circuits == 2
    })
    .await;
    until("the middle tore it down", || {
        net.node(1).status().circuits == 0
    })
    .await;
    b.destroy();
    until("the guard tore the destroyed circuit down", || {
        guard.status().circuits == 1
    })
    .await;
    assert!(b.is_closed());
    assert_eq!(client.link_count(), 1, "the link closed with a circuit");
    echo(&c, to, 200_000, 5).await.unwrap();
    // a new circuit through the same guard reuses the link
    let e = along(&client, &d, &[0, 1, 3]).await;
    echo(&e, to, 10_000, 7).await.unwrap();
    assert_eq!(client.link_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_destroying_one_circuit_or_a_bad_cell_on_one_closes_only_that_circuit() {
    init_logs();
    let (net, client, d) = net_and_client().await;
    let to = tcp_echo().await;
    let b = along(&client, &d, &[0, 2, 3]).await;
    let c = along(&client, &d, &[0, 2, 3]).await;
    // the exit destroys a circuit on which a cell was tampered with: DESTROY comes back to us
    let a = along(&client, &d, &[0, 1, 3]).await;
    a.inject_tampered_cell().await.unwrap();
    until("the relays destroyed the tampered circuit", || {
        a.is_closed()
    })
    .await;
    let why = a.close_reason().unwrap_or_default();
    assert!(why.contains("destroyed by a relay"), "{why}");
    echo(&b, to, 100_000, 3).await.unwrap();
    echo(&c, to, 100_000, 5).await.unwrap();
    // the middle forges a DATA cell: the client destroys that circuit only
    let x = along(&client, &d, &[0, 1, 3]).await;
    let sent = net
        .node(1)
        .hostile_inject(Circuits::All, rcmd::DATA, 1, b"forged by the middle");
    assert_eq!(sent, 1, "the middle is on one live circuit");
    until("the client destroyed the circuit", || x.is_closed()).await;
    let why = x.close_reason().unwrap_or_default();
    assert!(why.contains("hop violation"), "{why}");
    until("the relays tore the refused circuit down", || {
        net.node(1).hostile_live_circuits() == 0
    })
    .await;
    assert!(!b.is_closed() && !c.is_closed());
    echo(&b, to, 100_000, 7).await.unwrap();
    echo(&c, to, 100_000, 9).await.unwrap();
    assert_eq!(client.link_count(), 1);
    assert_eq!(net.node(0).status().circuits, 2);
}

/// Reads exactly `n` bytes from `s` (bounded).
async fn read_n(s: &mut BoxStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(T, s.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_application_stops_reading_does_not_stall_another_circuit_on_the_link() {
    init_logs();
    let (_net, client, d) = net_and_client().await;
    let to = tcp_echo().await;
    let a = along(&client, &d, &[0, 1, 3]).await;
    let b = along(&client, &d, &[0, 2, 3]).await;
    assert_eq!(client.link_count(), 1);
    // 4 MB up on a's stream whose echo the application does not read (yet)
    let data: Vec<u8> = (0..4_000_000usize).map(|i| (i % 251) as u8).collect();
    let s = a.open_stream(&Target::Addr(to), T).await.unwrap();
    let (mut ra, mut wa) = tokio::io::split(s);
    let d2 = data.clone();
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(30), wa.write_all(&d2)).await;
        wa
    });
    until("a's stream window filled", || {
        client.circuits().iter().map(|c| c.bytes_down).sum::<u64>() >= 1_000_000
    })
    .await;
    // b, on the same link, moves a few MB meanwhile
    let t0 = Instant::now();
    echo(&b, to, 3_000_000, 3).await.unwrap();
    assert!(t0.elapsed() < T);
    // and a was only waiting: its application reads everything now
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < data.len() {
        assert!(t0.elapsed() < T, "a's stream did not resume");
        let mut buf = vec![0u8; 65536];
        let n = tokio::time::timeout(T, ra.read(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        assert!(n > 0, "a's stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_the_guard_down_closes_every_circuit_on_its_link_with_a_reason() {
    init_logs();
    let (net, client, d) = net_and_client().await;
    let to = tcp_echo().await;
    let on_guard = [
        along(&client, &d, &[0, 1, 3]).await,
        along(&client, &d, &[0, 2, 3]).await,
        along(&client, &d, &[0, 3]).await,
    ];
    let other = along(&client, &d, &[1, 2, 3]).await;
    assert_eq!(client.link_count(), 2);
    net.kill(0);
    let name = d[0].id.short();
    for c in &on_guard {
        until("the guard's circuits closed", || c.is_closed()).await;
        let why = c.close_reason().unwrap_or_default();
        assert!(why.contains(&name), "the reason names no first hop: {why}");
    }
    until("the guard's link is gone", || client.link_count() == 1).await;
    echo(&other, to, 100_000, 3).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stop_reading_stalls_the_clients_links_until_resumed() {
    init_logs();
    let (_net, client, d) = net_and_client().await;
    let to = tcp_echo().await;
    let a = along(&client, &d, &[0, 1, 3]).await;
    let mut s = a.open_stream(&Target::Addr(to), T).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"hello");
    client.hostile_stop_reading(true);
    // (well within the stream window)
    let data = vec![7u8; 1_500_000];
    s.write_all(&data).await.unwrap();
    // a read that completes as the switch flips may still deliver its cells; then nothing comes
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(r) => panic!("the stream ended: {r:?}"),
            Err(_) => {}
        }
    }
    assert!(
        got.len() <= 8 * cell::RELAY_DATA_MAX,
        "{} bytes arrived while the client read nothing",
        got.len()
    );
    client.hostile_stop_reading(false);
    let t0 = Instant::now();
    while got.len() < data.len() {
        assert!(t0.elapsed() < T, "the link did not resume");
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_left_without_circuits_is_closed_after_the_idle_period() {
    init_logs();
    let net = Testnet::builder().relays(3).exits(1).build().await.unwrap();
    let client = net.client(ClientConfig {
        hops: 3,
        pool_size: 0,
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let d = net.descriptors();
    let a = along(&client, &d, &[0, 1, 3]).await;
    assert_eq!(client.link_count(), 1);
    drop(a);
    until("the guard tore the circuit down", || {
        net.node(0).status().circuits == 0
    })
    .await;
    until("the empty link closed", || client.link_count() == 0).await;
}

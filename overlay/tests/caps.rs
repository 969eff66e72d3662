//! Bandwidth caps per role hold within 10%: a middle relay with `relay_rate` and an exit with
//! `exit_rate`, a client downloading through them from a loopback source. The steady-state rate
//! (after the first MiB, which includes the allowed burst) is measured at the capped node from
//! its own counters, and the payload rate at the client. Prints figures (docs/BENCHMARKS.md).

mod common;
use std::time::{Duration, Instant};

use overlay::client::build_circuit;
use overlay::descriptor::{ROLE_EXIT, ROLE_RELAY};
use overlay::provider::Target;
use overlay::testnet::Testnet;
use overlay::{ClientConfig, Identity, Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAP: u64 = 2_000_000;
const BYTES: u64 = 8 << 20;

/// Downloads BYTES through `path`; returns (node-counter rate, client payload rate), both in
/// steady state (after the first MiB at the client).
async fn measure(path: Vec<overlay::Descriptor>, capped: &Node, exit_counter: bool) -> (f64, f64) {
    let src = common::byte_source().await;
    let c = build_circuit(1, path, &ClientConfig::default())
        .await
        .unwrap();
    let mut s = c
        .open_stream(&Target::Addr(src), Duration::from_secs(10))
        .await
        .unwrap();
    s.write_all(&BYTES.to_be_bytes()).await.unwrap();
    let counter = |n: &Node| {
        let st = n.status();
        if exit_counter {
            st.exit_bytes_in + st.exit_bytes_out
        } else {
            st.relayed_bytes
        }
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    let mut mark = None;
    let t0 = Instant::now();
    while got < BYTES {
        let k = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("download stalled")
            .unwrap();
        assert!(k > 0, "stream ended after {got} bytes");
        got += k as u64;
        if mark.is_none() && got >= 1 << 20 {
            mark = Some((Instant::now(), got, counter(capped)));
        }
    }
    let (t1, g1, c1) = mark.unwrap();
    let dt = t1.elapsed().as_secs_f64();
    let node_rate = (counter(capped) - c1) as f64 / dt;
    let client_rate = (got - g1) as f64 / dt;
    println!("  whole download {:?}", t0.elapsed());
    c.destroy();
    (node_rate, client_rate)
}

fn check(what: &str, node_rate: f64, client_rate: f64) {
    let err = (node_rate - CAP as f64) / CAP as f64;
    println!(
        "{what} cap {CAP} B/s: node counter {node_rate:.0} B/s ({:+.1}%), client payload {client_rate:.0} B/s",
        err * 100.0
    );
    assert!(err.abs() < 0.10, "{what} rate {node_rate:.0} vs cap {CAP}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cap_holds_within_ten_percent() {
    let net = Testnet::builder().relays(1).exits(1).build().await.unwrap();
    let mut cfg = NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        ROLE_RELAY,
    );
    cfg.relay_rate = Some(CAP);
    let mid = Node::start(cfg).await.unwrap();
    let path = vec![
        net.node(0).descriptor().clone(),
        mid.descriptor().clone(),
        net.node(1).descriptor().clone(),
    ];
    let (n, c) = measure(path, &mid, false).await;
    check("relay", n, c);
    mid.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_cap_holds_within_ten_percent() {
    let net = Testnet::builder().relays(2).exits(0).build().await.unwrap();
    let mut cfg = NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        ROLE_RELAY | ROLE_EXIT,
    );
    cfg.exit_policy = overlay::exit::ExitPolicy::default();
    cfg.allow_private_exit = true;
    cfg.exit_rate = Some(CAP);
    let exit = Node::start(cfg).await.unwrap();
    let path = vec![
        net.node(0).descriptor().clone(),
        net.node(1).descriptor().clone(),
        exit.descriptor().clone(),
    ];
    let (n, c) = measure(path, &exit, true).await;
    check("exit", n, c);
    exit.shutdown();
}

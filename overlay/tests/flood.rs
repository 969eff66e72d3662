//! A relay under a flood from loopback: thousands of half-open and garbage link handshakes, and
//! links that flood CREATEs (valid, replayed, and garbage) without ever reading. The relay keeps
//! its handshakes, circuits and tasks bounded and still builds honest circuits that move data.
//! Attackers connect from 127.0.1.x / 127.0.2.x; the honest client and the other relays use
//! 127.0.0.1 (every address here is loopback).

mod common;
use common::{init_logs, tcp_echo};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay::cell::{self, cmd};
use overlay::client::build_circuit;
use overlay::descriptor::{ROLE_INTRO, ROLE_RELAY};
use overlay::handshake::{self, HopInitiator, LinkInitiator, HTYPE_NK};
use overlay::limits::Limits;
use overlay::provider::Target;
use overlay::testnet::Testnet;
use overlay::{ClientConfig, Identity, Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    tokio::time::timeout(Duration::from_secs(3), s.connect(dst))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

/// A link that completes the handshake and then sends CREATEs as fast as it can, never reading.
/// Half of them replay one valid hop handshake (each costs the relay a DH), half are garbage.
async fn create_flooder(src: Ipv4Addr, node: SocketAddr, key: [u8; 32], stop: Arc<AtomicBool>) {
    let Ok(mut s) = connect_from(src, node).await else {
        return;
    };
    let me = Identity::generate();
    let (init, m1) = LinkInitiator::start(&me.x25519_secret_bytes(), &key).unwrap();
    let mut out = (m1.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&m1);
    if s.write_all(&out).await.is_err() {
        return;
    }
    let mut p = [0u8; 2];
    if s.read_exact(&mut p).await.is_err() {
        return;
    }
    let mut reply = vec![0u8; u16::from_be_bytes(p) as usize];
    if s.read_exact(&mut reply).await.is_err() {
        return;
    }
    let Ok(hs) = init.finish(&reply) else { return };
    let mut cipher = handshake::link_cipher(hs, true).unwrap();
    let (_hop, hop_msg) = HopInitiator::start(&key).unwrap();
    let mut cid = cell::CIRC_ID_DIALER_BIT | 1;
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        buf.clear();
        for k in 0..32 {
            let mut c = cell::new_cell(cid, cmd::CREATE);
            let b = cell::body_mut(&mut c);
            if k % 2 == 0 {
                b[..2].copy_from_slice(&HTYPE_NK.to_be_bytes());
                b[2..4].copy_from_slice(&(hop_msg.len() as u16).to_be_bytes());
                b[4..4 + hop_msg.len()].copy_from_slice(&hop_msg);
            } else {
                for (i, x) in b.iter_mut().enumerate() {
                    *x = (i as u32 ^ cid) as u8;
                }
            }
            cid = cid.wrapping_add(1) | cell::CIRC_ID_DIALER_BIT;
            cipher.send.seal_into(&c, &mut buf);
        }
        // never reads: the relay's replies pile up on its side
        match tokio::time::timeout(Duration::from_millis(500), s.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {} // the relay stopped reading us (backpressure): keep the socket
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_survives_handshake_and_create_floods() {
    init_logs();
    let limits = Limits::default();
    let net = Testnet::builder().relays(1).exits(1).build().await.unwrap();
    let mut cfg = NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        ROLE_RELAY | ROLE_INTRO,
    );
    cfg.limits = limits.clone();
    let victim = Node::start(cfg).await.unwrap();
    let vaddr = victim.addr();
    let vkey = victim.descriptor().x25519;
    let path = vec![
        victim.descriptor().clone(),
        net.node(0).descriptor().clone(),
        net.node(1).descriptor().clone(),
    ];
    let ccfg = ClientConfig {
        build_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let echo = tcp_echo().await;
    let rss0 = rss_mb();

    // honest baseline
    let t = Instant::now();
    let c = build_circuit(1, path.clone(), &ccfg).await.unwrap();
    println!("baseline build {:?}", t.elapsed());
    c.destroy();

    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    // 1. half-open handshakes: 2400 connections from 60 addresses that never send a byte
    let half_open = tokio::spawn(async move {
        let mut held = Vec::new();
        for i in 0..2400u32 {
            let src = Ipv4Addr::new(127, 0, 1, 1 + (i % 60) as u8);
            if let Ok(s) = connect_from(src, vaddr).await {
                held.push(s);
            }
            if i % 100 == 99 {
                tokio::task::yield_now().await;
            }
        }
        held
    });
    // 2. garbage handshakes: 800 connections that send junk (bad lengths and bad messages)
    let garbage = tokio::spawn(async move {
        for i in 0..800u32 {
            let src = Ipv4Addr::new(127, 0, 1, 100 + (i % 20) as u8);
            if let Ok(mut s) = connect_from(src, vaddr).await {
                let junk: Vec<u8> = if i % 2 == 0 {
                    let mut v = vec![0, 48];
                    v.extend((0..48).map(|k| (k * 7 + i) as u8));
                    v
                } else {
                    vec![0xff, 0xff, 1, 2, 3]
                };
                let _ = s.write_all(&junk).await;
            }
        }
    });
    // 3. CREATE floods: 16 links from 4 addresses
    for i in 0..16u8 {
        let src = Ipv4Addr::new(127, 0, 2, 1 + i % 4);
        attackers.push(tokio::spawn(create_flooder(src, vaddr, vkey, stop.clone())));
    }

    // honest circuits keep building and moving data while the floods run
    let mut max = (0u64, 0u64, 0u64);
    let watch = {
        let v = victim.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut m = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let s = v.status();
                m = (
                    m.0.max(s.handshakes_pending),
                    m.1.max(s.circuits),
                    m.2.max(s.tasks),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            m
        })
    };
    let t0 = Instant::now();
    let mut builds = Vec::new();
    for k in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let t = Instant::now();
        let c = build_circuit(10 + k, path.clone(), &ccfg)
            .await
            .unwrap_or_else(|e| panic!("honest circuit {k} under flood: {e}"));
        let built = t.elapsed();
        let mut s = c
            .open_stream(&Target::Addr(echo), Duration::from_secs(5))
            .await
            .unwrap();
        let data: Vec<u8> = (0..64 * 1024u32)
            .map(|x| (x * 31 + k as u32) as u8)
            .collect();
        s.write_all(&data).await.unwrap();
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .expect("echo through the flooded relay timed out")
            .unwrap();
        assert_eq!(back, data);
        let total = t.elapsed();
        println!("honest circuit {k}: built in {built:?}, 64 KiB echoed in {total:?}");
        assert!(built < Duration::from_secs(4), "build took {built:?}");
        builds.push(built);
        c.destroy();
    }
    println!("flood phase {:?}", t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    let held = half_open.await.unwrap();
    garbage.await.unwrap();
    for a in attackers {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }
    if let Ok(m) = watch.await {
        max = m;
    }
    let s = victim.status();
    let rss1 = rss_mb();
    println!(
        "victim: max pending handshakes {}, max circuits {}, max tasks {}; links refused {}, \
         circuits refused {}, links total {}, link errors {}; RSS {rss0:.0} → {rss1:.0} MB; \
         {} half-open sockets held",
        max.0,
        max.1,
        max.2,
        s.links_refused,
        s.circuits_refused,
        s.links_total,
        s.link_errors,
        held.len()
    );
    assert!(max.0 <= limits.max_pending_handshakes as u64);
    assert!(max.1 <= limits.max_circuits as u64);
    assert!(
        max.1 <= 4 * limits.max_circuits_per_source as u64 + 16,
        "circuits from 4 flood sources exceed their caps: {}",
        max.1
    );
    // a task per pending handshake, two per link, a bounded number of stalled sends per link
    let task_bound = limits.max_pending_handshakes + 3 * limits.max_links + 1000;
    assert!(max.2 <= task_bound as u64, "tasks {} > {task_bound}", max.2);
    assert!(s.links_refused > 0, "the flood was not refused at all");
    assert!(s.circuits_refused > 0, "the CREATE flood was not limited");
    assert!(rss1 - rss0 < 600.0, "memory grew by {} MB", rss1 - rss0);

    // the floods end: the relay frees what they held
    drop(held);
    let t = Instant::now();
    loop {
        let s = victim.status();
        if s.handshakes_pending == 0 && s.circuits == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "after the flood: {} pending, {} circuits",
            s.handshakes_pending,
            s.circuits
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = build_circuit(99, path, &ccfg).await.unwrap();
    c.destroy();
    victim.shutdown();
}

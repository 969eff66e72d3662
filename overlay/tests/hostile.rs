//! The hostile-node kit at work: relays of an in-process test network (127.0.0.1 only) are made
//! to misbehave as a dishonest relay can (`overlay::node::hostile`), and each test asserts the
//! defence. One test per attack of issue "Hostile relays (1/2)"; docs/THREAT_MODEL.md names them.

mod common;
use common::{init_logs, tcp_echo};
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay::cell::{self, cmd, rcmd, reason};
use overlay::client::build_circuit;
use overlay::handshake::{HopInitiator, HTYPE_NK};
use overlay::hidden::{connect_hidden, open_hidden_stream, HiddenConfig, HiddenService};
use overlay::identity::Identity;
use overlay::node::hostile::{Circuits, Mangle, RawLink};
use overlay::provider::Target;
use overlay::testnet::Testnet;
use overlay::{ClientCirc, ClientConfig, Descriptor, Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(10);

/// Waits (bounded) until `circ` is closed; its close reason.
async fn closed_reason(circ: &ClientCirc) -> String {
    let t0 = Instant::now();
    while !circ.is_closed() {
        assert!(t0.elapsed() < T, "the circuit was not destroyed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    circ.close_reason().unwrap_or_default()
}

/// A 3-hop circuit along nodes 0 (guard), 1 (middle), 2 (exit) of `net`.
async fn three_hops(net: &Testnet) -> Arc<ClientCirc> {
    let d = net.descriptors();
    build_circuit(
        7,
        vec![d[0].clone(), d[1].clone(), d[2].clone()],
        &ClientConfig::default(),
    )
    .await
    .unwrap()
}

/// Reads whatever arrives on `s` until it ends or fails (bounded); what was read.
async fn drain(s: &mut overlay::BoxStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    loop {
        match tokio::time::timeout(T, s.read(&mut buf)).await {
            Ok(Ok(0)) => return (got, false),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (got, true),
            Err(_) => panic!("the stream neither ended nor failed"),
        }
        assert!(t0.elapsed() < T);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_or_middle_injecting_data_or_end_into_an_exit_stream_destroys_the_circuit() {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    let echo = tcp_echo().await;
    for (attacker, rc, payload) in [
        (0, rcmd::DATA, b"forged by the guard".to_vec()),
        (1, rcmd::DATA, b"forged by the middle".to_vec()),
        (0, rcmd::END, cell::encode_end(reason::DONE, "")),
        (1, rcmd::CONNECTED, Vec::new()),
        (0, rcmd::SENDME, Vec::new()),
    ] {
        let circ = three_hops(&net).await;
        let mut s = circ.open_stream(&Target::Addr(echo), T).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        // the attacker does not know the stream id: it tries the first few
        let mut sent = 0;
        for sid in 1..=4 {
            sent += net
                .node(attacker)
                .hostile_inject(Circuits::All, rc, sid, &payload);
        }
        assert!(sent > 0, "node {attacker} is on no circuit");
        let why = closed_reason(&circ).await;
        assert!(why.contains("hop violation"), "{why}");
        let (got, failed) = drain(&mut s).await;
        assert!(got.is_empty(), "the application read forged bytes: {got:?}");
        assert!(
            failed,
            "the stream ended cleanly: an injected END was believed"
        );
    }
    // the circuits of honest clients through the same relays still work
    let circ = three_hops(&net).await;
    let mut s = circ.open_stream(&Target::Addr(echo), T).await.unwrap();
    s.write_all(b"still fine").await.unwrap();
    let mut back = [0u8; 10];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_forging_resolved_for_a_pending_resolve_gets_the_circuit_destroyed() {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    let circ = three_hops(&net).await;
    // the exit stalls, so the resolve waits; the guard answers it with an address of its choice
    net.node(2).hostile_stall(true);
    let c2 = circ.clone();
    let resolve = tokio::spawn(async move { c2.resolve("tracker.example", T).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let forged = cell::encode_resolved(&["203.0.113.66".parse().unwrap()]);
    let mut sent = 0;
    for sid in 1..=4 {
        sent += net
            .node(0)
            .hostile_inject(Circuits::All, rcmd::RESOLVED, sid, &forged);
    }
    assert!(sent > 0);
    let r = resolve.await.unwrap();
    assert!(r.is_err(), "the forged RESOLVED was believed: {r:?}");
    assert!(closed_reason(&circ).await.contains("hop violation"));
    net.node(2).hostile_stall(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendezvous_point_injecting_into_a_hidden_stream_destroys_both_circuits() {
    init_logs();
    let net = Testnet::builder().relays(8).exits(1).build().await.unwrap();
    let cfg = HiddenConfig::default();
    let seeder = net.client(ClientConfig::default());
    let (svc, mut incoming) = HiddenService::start(seeder, cfg.clone()).await.unwrap();
    tokio::spawn(async move {
        while let Some(mut s) = incoming.recv().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let downloader = net.client(ClientConfig::default());
    let circ = connect_hidden(&downloader, &svc.entry(), &cfg)
        .await
        .unwrap();
    let mut s = open_hidden_stream(&circ, T).await.unwrap();
    s.write_all(b"end to end").await.unwrap();
    let mut back = [0u8; 10];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"end to end");
    // every relay tries: only the rendezvous point has joined circuits
    let mut sent = 0;
    for n in net.nodes() {
        for sid in 1..=4 {
            sent += n.hostile_inject(Circuits::Joined, rcmd::DATA, sid, b"forged by the RP");
        }
    }
    assert!(
        sent >= 2,
        "the rendezvous point holds no joined circuit ({sent})"
    );
    let why = closed_reason(&circ).await;
    assert!(why.contains("hop violation"), "{why}");
    let (got, failed) = drain(&mut s).await;
    assert!(got.is_empty() && failed, "{got:?}");
    svc.shutdown();
}

/// `d` with someone else's onion key (and address) under its id.
fn impersonated(d: &Descriptor, attacker: &Node) -> Descriptor {
    Descriptor {
        x25519: attacker.descriptor().x25519,
        addr: attacker.addr(),
        ..d.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_naming_a_key_that_is_not_the_ids_is_refused_and_no_link_is_stored() {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    let attacker = Node::start(NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        overlay::descriptor::ROLE_RELAY,
    ))
    .await
    .unwrap();
    let d = net.descriptors();
    let (guard, target) = (&d[0], &d[1]);
    let forged = impersonated(target, &attacker);
    let r = build_circuit(1, vec![guard.clone(), forged], &ClientConfig::default()).await;
    let e = r.err().expect("the EXTEND with a swapped key was accepted");
    assert!(e.to_string().contains("protocol"), "{e}");
    assert!(
        !net.node(0).outbound_link_ids().await.contains(&target.id),
        "the guard stored a link under the target's id"
    );
    assert_eq!(
        attacker.status().links_total,
        0,
        "the guard dialled the impersonator"
    );
    // the honest EXTEND to the same node works, and then the link is stored under its id
    let c = build_circuit(
        2,
        vec![guard.clone(), target.clone()],
        &ClientConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(c.hop_count(), 2);
    assert!(net.node(0).outbound_link_ids().await.contains(&target.id));
    attacker.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_circuit_past_eight_extends_is_refused() {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    let d = net.descriptors();
    let looped = |hops: usize| -> Vec<Descriptor> { (0..hops).map(|i| d[i % 2].clone()).collect() };
    // 8 EXTENDs (9 hops, A→B→A→…) is Tor's limit and builds
    let c = build_circuit(1, looped(9), &ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(c.hop_count(), 9);
    c.destroy();
    // the 9th EXTEND is refused by the first relay, which counts them as they pass
    let e = build_circuit(2, looped(10), &ClientConfig::default())
        .await
        .err()
        .expect("a 10-hop loop was built");
    assert!(e.to_string().contains("protocol"), "{e}");
    let e = build_circuit(3, looped(24), &ClientConfig::default())
        .await
        .err()
        .expect("a 24-hop loop was built");
    assert!(e.to_string().contains("protocol"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_in_a_plain_relay_cell_is_refused() {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    let d = net.descriptors();
    let circ = build_circuit(1, vec![d[0].clone()], &ClientConfig::default())
        .await
        .unwrap();
    let (_, m1) = HopInitiator::start(&d[1].x25519).unwrap();
    let ext = cell::Extend {
        node_id: d[1].id.0,
        x25519: d[1].x25519,
        ed25519: d[1].ed25519,
        addr: d[1].addr,
        handshake: m1,
    };
    circ.send_to_hop(0, rcmd::EXTEND, 0, &ext.encode())
        .await
        .unwrap();
    let why = closed_reason(&circ).await;
    assert!(why.contains("protocol"), "{why}");
}

/// A CREATE cell with circuit id `cid` carrying a fresh hop handshake towards `to`.
fn create(cid: u32, to: &Descriptor) -> Vec<u8> {
    let (_, m1) = HopInitiator::start(&to.x25519).unwrap();
    let mut body = HTYPE_NK.to_be_bytes().to_vec();
    body.extend_from_slice(&(m1.len() as u16).to_be_bytes());
    body.extend_from_slice(&m1);
    let mut c = cell::new_cell(cid, cmd::CREATE);
    cell::body_mut(&mut c)[..body.len()].copy_from_slice(&body);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_ids_of_the_wrong_half_or_in_use_are_refused() {
    init_logs();
    let net = Testnet::builder().relays(1).exits(1).build().await.unwrap();
    let d = net.descriptors();
    let mut link = RawLink::dial(d[0].addr, &d[0].x25519).await.unwrap();
    let expect = |c: Option<Vec<u8>>, cid: u32, command: u8| {
        let c = c.expect("no answer");
        assert_eq!((cell::circ_id(&c), cell::command(&c)), (cid, command));
    };
    // an id of the acceptor's half (high bit clear), from the dialer: refused
    link.send(&create(5, &d[0])).await.unwrap();
    expect(link.recv(T).await, 5, cmd::DESTROY);
    // the dialer's half: created
    let ok = cell::CIRC_ID_DIALER_BIT | 5;
    link.send(&create(ok, &d[0])).await.unwrap();
    expect(link.recv(T).await, ok, cmd::CREATED);
    // the same id again: refused, and the first circuit is not replaced
    link.send(&create(ok, &d[0])).await.unwrap();
    let c = link.recv(T).await.expect("no answer");
    assert_eq!(cell::command(&c), cmd::DESTROY);
    assert_eq!(net.node(0).hostile_live_circuits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_acknowledging_data_it_never_received_gets_the_circuit_destroyed() {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    // a source that sends far more than the windows allow in flight
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let src = l.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let chunk = vec![7u8; 1 << 16];
            for _ in 0..512 {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
    });
    let circ = three_hops(&net).await;
    let _s = circ.open_stream(&Target::Addr(src), T).await.unwrap();
    // the client reads nothing but sends the circuit SENDMEs an exit waits for, guessing the
    // MAC it cannot know (Tor proposal 289)
    let last = circ.hop_count() - 1;
    for _ in 0..4 {
        let forged = overlay::stream::sendme_payload(&[0x55; 16]);
        if circ
            .send_to_hop(last, rcmd::SENDME, 0, &forged)
            .await
            .is_err()
        {
            break;
        }
    }
    let why = closed_reason(&circ).await;
    assert!(why.contains("protocol"), "{why}");
}

/// A TCP server on loopback that records everything it receives (all connections together).
async fn recording_sink() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g2 = got.clone();
    tokio::spawn(async move {
        loop {
            // (an accept error must not end the server)
            let Ok((mut s, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let g = g2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    g.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (a, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_replaying_or_reordering_cells_gets_the_circuit_destroyed_and_nothing_delivered_twice(
) {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    for mangle in [Mangle::Replay, Mangle::Reorder(None)] {
        let (sink, got) = recording_sink().await;
        let circ = three_hops(&net).await;
        let mut s = circ.open_stream(&Target::Addr(sink), T).await.unwrap();
        // the middle starts mangling what it forwards once the stream is open
        net.node(1).hostile_mangle(mangle.clone());
        let _ = s.write_all(b"first").await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = s.write_all(b"second").await;
        let why = closed_reason(&circ).await;
        net.node(1).hostile_mangle(Mangle::None);
        assert!(!why.is_empty(), "{mangle:?}: closed without a reason");
        // give anything the exit accepted time to reach the sink, then check it
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = got.lock().unwrap().clone();
        match mangle {
            // the first copy is genuine (it reaches the sink unless the circuit's teardown
            // overtakes it), the replay is refused
            Mangle::Replay => assert!(got.is_empty() || got == b"first", "{mangle:?}: {got:?}"),
            // the cell sent out of order is refused, and with it the circuit
            _ => assert!(got.is_empty(), "{mangle:?}: the exit accepted {got:?}"),
        }
        assert!(
            net.node(2).status().circuits_destroyed_tamper > 0,
            "the exit did not count a bad cell"
        );
    }
    // honest circuits through the same middle still work
    let echo = tcp_echo().await;
    let circ = three_hops(&net).await;
    let mut s = circ.open_stream(&Target::Addr(echo), T).await.unwrap();
    s.write_all(b"ok").await.unwrap();
    let mut back = [0u8; 2];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ok");
}

/// Open file descriptors of this process (the test network runs in it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_begin_datagram_and_resolve_on_one_circuit_stays_under_the_exits_caps() {
    init_logs();
    let limits = overlay::limits::Limits {
        max_streams_per_circuit: 64,
        max_udp_per_circuit: 16,
        max_resolves_per_circuit: 8,
        max_exit_sockets: 100,
        max_exit_resolves: 16,
        ..Default::default()
    };
    let net = Testnet::builder()
        .relays(2)
        .exits(1)
        .limits(limits)
        .build()
        .await
        .unwrap();
    // a TCP server that accepts and holds every connection, and a UDP sink
    let holder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hold_addr = holder.local_addr().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h2 = held.clone();
    tokio::spawn(async move {
        loop {
            match holder.accept().await {
                Ok((s, _)) => h2.lock().unwrap().push(s),
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    });
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dgram = cell::encode_datagram(&sink.local_addr().unwrap(), b"x").unwrap();
    let before = open_fds();
    let circ = three_hops(&net).await;
    let exit = net.node(2).clone();
    let mut most = 0;
    for sid in 1..=2000u32 {
        let (rc, data) = match sid % 3 {
            0 => (rcmd::BEGIN, hold_addr.to_string().into_bytes()),
            1 => (rcmd::DATAGRAM, dgram.clone()),
            _ => (rcmd::RESOLVE, b"localhost".to_vec()),
        };
        circ.send_to_hop(2, rc, 10_000 + sid, &data).await.unwrap();
        most = most.max(exit.status().exit_sockets);
    }
    // until the exit has answered everything (its refusal count settles)
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let st = exit.status();
        most = most.max(st.exit_sockets);
        if st.circuits_refused == last && st.exit_resolves == 0 {
            break;
        }
        last = st.circuits_refused;
    }
    let st = exit.status();
    let grown = open_fds().saturating_sub(before);
    println!(
        "exit: sockets {} (most {most}), refused {}, fds grown by {grown}, held {}",
        st.exit_sockets,
        st.circuits_refused,
        held.lock().unwrap().len()
    );
    assert!(most <= 100, "the exit held {most} sockets (cap 100)");
    assert!(
        st.circuits_refused >= 1000,
        "refused only {}",
        st.circuits_refused
    );
    // each exit socket is one fd at the exit and (TCP) one at the holder; without the caps
    // the 667 BEGINs alone would add 1,334
    assert!(grown <= 2 * 100 + 64, "{grown} more file descriptors");
    // the flooder's circuit may also have been destroyed by a relay for queueing more replies
    // than two windows (it never waited for one): that is a defence too, never anything else
    if let Some(why) = circ.close_reason() {
        assert!(why.contains("resource limit"), "{why}");
    }
    // honest streams through the same exit still work (the flooder's circuit holds 64 of 100)
    let echo = tcp_echo().await;
    let honest = three_hops(&net).await;
    let mut s = honest.open_stream(&Target::Addr(echo), T).await.unwrap();
    s.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
    // and the flooder's sockets go when its circuit does
    circ.destroy();
    let t0 = Instant::now();
    while exit.status().exit_sockets > 1 {
        assert!(
            t0.elapsed() < T,
            "{} sockets left",
            exit.status().exit_sockets
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_public_address_refuses_to_extend_into_private_ones() {
    init_logs();
    let net = Testnet::builder().relays(1).exits(1).build().await.unwrap();
    let d = net.descriptors();
    // a relay that publishes a public address (it listens on loopback; nothing is sent to the
    // public one: the client is handed the listening address)
    let mut cfg = NodeConfig::new(
        Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        overlay::descriptor::ROLE_RELAY,
    );
    cfg.advertise = Some("93.184.216.34:0".parse().unwrap());
    let public = Node::start(cfg).await.unwrap();
    assert!(public.descriptor().addr.ip().to_string().starts_with("93."));
    let first = Descriptor {
        addr: public.addr(),
        ..public.descriptor()
    };
    let target_links = net.node(0).status().links_total;
    let e = build_circuit(
        1,
        vec![first.clone(), d[0].clone()],
        &ClientConfig::default(),
    )
    .await
    .err()
    .expect("a public relay extended to a loopback address");
    assert!(e.to_string().contains("protocol"), "{e}");
    assert_eq!(
        net.node(0).status().links_total,
        target_links,
        "the public relay dialled the loopback target"
    );
    // relays of a private network (every one on such an address) extend to each other
    let c = build_circuit(
        2,
        vec![d[0].clone(), d[1].clone()],
        &ClientConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(c.hop_count(), 2);
    public.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_udp_association_gives_its_socket_back_at_once() {
    init_logs();
    let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dgram = cell::encode_datagram(&sink.local_addr().unwrap(), b"x").unwrap();
    let circ = three_hops(&net).await;
    let exit = net.node(2).clone();
    for sid in [7, 8] {
        circ.send_to_hop(2, rcmd::DATAGRAM, sid, &dgram)
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    while exit.status().exit_sockets < 2 {
        assert!(t0.elapsed() < T, "the exit opened no UDP sockets");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = cell::encode_end(reason::DONE, "");
    circ.send_to_hop(2, rcmd::END, 7, &end).await.unwrap();
    while exit.status().exit_sockets > 1 {
        assert!(t0.elapsed() < T, "the ended association kept its socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!circ.is_closed());
}

//! End-to-end tests on an in-process test network (127.0.0.1 only).

mod common;
use common::{init_logs, tcp_echo, write_and_read_back};
use std::net::SocketAddr;
use std::time::Duration;

use overlay::exit::ExitPolicy;
use overlay::provider::{AnonProvider, IsolationKey, ProviderError, Target};
use overlay::testnet::Testnet;
use overlay::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const LIMIT: Duration = Duration::from_secs(60);

async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    a
}

async fn echo_roundtrip(
    p: &dyn AnonProvider,
    to: SocketAddr,
    iso: u64,
    len: usize,
) -> Result<(), ProviderError> {
    let mut s = p.connect(&Target::Addr(to), IsolationKey(iso)).await?;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + iso as usize) as u8).collect();
    assert_eq!(write_and_read_back(&mut s, &data).await?, data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_of_1_2_3_hops_carry_tcp_udp_and_resolve() {
    init_logs();
    tokio::time::timeout(LIMIT, async {
        let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
        let tcp = tcp_echo().await;
        let udp = udp_echo().await;
        for hops in 1..=3 {
            let client = net.client(ClientConfig {
                hops,
                pool_size: 1,
                ..Default::default()
            });
            client.fill_pool().await.unwrap();
            echo_roundtrip(&client, tcp, 1, 300_000).await.unwrap();
            // more than a stream window (2 MiB) echoed after the client half-closed
            echo_roundtrip(&client, tcp, 1, 5_000_000).await.unwrap();
            let d = client.datagram(IsolationKey(1)).await.unwrap();
            d.send_to(b"udp hello", &Target::Addr(udp)).await.unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), d.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], b"udp hello");
            assert_eq!(from, udp);
            let ips = client.resolve("localhost", IsolationKey(1)).await.unwrap();
            assert!(ips.iter().any(|i| i.is_loopback()), "{ips:?}");
            let info = client.circuits();
            assert!(
                info.iter()
                    .any(|c| c.hops.len() == hops && c.bytes_up > 0 && c.state == "open"),
                "{info:?}"
            );
        }
        let exit = net.node(2).status();
        assert!(
            exit.exit_bytes_out > 0 && exit.exit_bytes_in > 0,
            "{exit:?}"
        );
        assert!(net.node(0).status().relayed_bytes > 0 || net.node(1).status().relayed_bytes > 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_through_one_relay() {
    init_logs();
    tokio::time::timeout(LIMIT, async {
        let net = Testnet::builder().relays(1).exits(1).build().await.unwrap();
        let tcp = tcp_echo().await;
        let client = net.client(ClientConfig {
            hops: 2,
            pool_size: 0,
            ..Default::default()
        });
        let mut tasks = Vec::new();
        for i in 0..1000u64 {
            let c = client.clone();
            // 10 circuits (isolation keys), 100 streams each, all through the one relay
            tasks.push(tokio::spawn(async move {
                echo_roundtrip(&c, tcp, i % 10, 2000).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            t.await.unwrap().unwrap();
            ok += 1;
        }
        assert_eq!(ok, 1000);
        assert!(net.node(0).status().relayed_bytes >= 2 * 1000 * 2000);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_stream_errors_and_next_request_gets_fresh_circuit() {
    init_logs();
    tokio::time::timeout(LIMIT, async {
        let net = Testnet::builder().relays(3).exits(1).build().await.unwrap();
        let tcp = tcp_echo().await;
        let client = net.client(ClientConfig {
            hops: 3,
            pool_size: 0,
            ..Default::default()
        });
        let circ = client.circuit_for(IsolationKey(5)).await.unwrap();
        let mut s = client
            .connect(&Target::Addr(tcp), IsolationKey(5))
            .await
            .unwrap();
        s.write_all(b"before").await.unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.unwrap();
        let middle = net.index_of(circ.hops()[1].id).unwrap();
        net.kill(middle);
        // the stream must fail with a clear error, not hang
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = s.write_all(b"after").await {
                    return e;
                }
                let mut b = [0u8; 5];
                if let Err(e) = s.read_exact(&mut b).await {
                    return e;
                }
            }
        })
        .await
        .expect("stream did not fail after its relay died");
        assert!(r.to_string().contains("circuit"), "{r}");
        assert!(circ.is_closed());
        client.set_directory(net.descriptors());
        echo_roundtrip(&client, tcp, 5, 10_000).await.unwrap();
        let fresh = client.circuit_for(IsolationKey(5)).await.unwrap();
        assert!(!fresh.is_closed());
        assert!(fresh.hops().iter().all(|d| d.id != net.node(middle).id()));
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_enter_through_one_guard_and_move_on_when_it_dies() {
    init_logs();
    tokio::time::timeout(LIMIT, async {
        let net = Testnet::builder().relays(6).exits(1).build().await.unwrap();
        let tcp = tcp_echo().await;
        let cfg = ClientConfig {
            hops: 3,
            pool_size: 0,
            ..Default::default()
        };
        let client = net.client(cfg.clone());
        // a 2-hop client made from the same config shares the guard list
        let two = net.client(ClientConfig {
            hops: 2,
            ..cfg.clone()
        });
        let mut firsts = std::collections::HashSet::new();
        let mut middles = std::collections::HashSet::new();
        for k in 0..12 {
            let c = client.circuit_for(IsolationKey(100 + k)).await.unwrap();
            firsts.insert(c.hops()[0].id);
            middles.insert(c.hops()[1].id);
            let c2 = two.circuit_for(IsolationKey(200 + k)).await.unwrap();
            firsts.insert(c2.hops()[0].id);
        }
        assert_eq!(firsts.len(), 1, "every circuit enters through the guard");
        assert!(middles.len() > 1, "middle hops are still random");
        let guard = *firsts.iter().next().unwrap();
        assert!(client.guards().contains(&guard));
        echo_roundtrip(&client, tcp, 100, 10_000).await.unwrap();

        // the guard dies: the next build fails at its link, marks it down and enters elsewhere
        net.kill(net.index_of(guard).unwrap());
        // (the directory still lists the dead node, so a retry may also pick it as its middle
        // and fail with "extend failed": up to a few rounds of retries)
        let mut built = None;
        for _ in 0..5 {
            if let Ok(c) = client.build_with_retries(3).await {
                built = Some(c);
                break;
            }
        }
        let c = built.expect("no circuit after the guard died");
        // from here a directory read would have dropped the dead node
        client.set_directory(net.descriptors());
        let g2 = c.hops()[0].id;
        assert_ne!(g2, guard);
        assert!(client.guards().contains(&g2));
        for k in 0..5 {
            let c = client.circuit_for(IsolationKey(300 + k)).await.unwrap();
            assert_eq!(
                c.hops()[0].id,
                g2,
                "the second guard serves while the first is down"
            );
        }
        echo_roundtrip(&client, tcp, 300, 10_000).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_cell_destroys_circuit_and_node_keeps_running() {
    init_logs();
    tokio::time::timeout(LIMIT, async {
        let net = Testnet::builder().relays(2).exits(1).build().await.unwrap();
        let tcp = tcp_echo().await;
        let client = net.client(ClientConfig {
            hops: 3,
            pool_size: 0,
            ..Default::default()
        });
        let circ = client.circuit_for(IsolationKey(1)).await.unwrap();
        let mut s = client
            .connect(&Target::Addr(tcp), IsolationKey(1))
            .await
            .unwrap();
        circ.inject_tampered_cell().await.unwrap();
        let mut b = [0u8; 1];
        let e = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
            .await
            .expect("no teardown")
            .unwrap_err();
        assert!(e.to_string().contains("destroyed"), "{e}");
        let reason = circ.close_reason().unwrap();
        assert!(reason.contains("tampered"), "{reason}");
        let exit = net.node(2).status();
        assert_eq!(exit.circuits_destroyed_tamper, 1);
        // nodes keep running: a fresh circuit over the same nodes works
        echo_roundtrip(&client, tcp, 1, 50_000).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_handshake_close_link_node_survives() {
    init_logs();
    tokio::time::timeout(LIMIT, async {
        let net = Testnet::builder().relays(0).exits(1).build().await.unwrap();
        let tcp = tcp_echo().await;
        let addr = net.node(0).addr();
        // garbage bytes
        let mut g = TcpStream::connect(addr).await.unwrap();
        g.write_all(&[0xffu8; 4000]).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), g.read_to_end(&mut sink))
            .await
            .expect("link not closed after garbage");
        // a length-valid but garbage handshake message
        let mut g = TcpStream::connect(addr).await.unwrap();
        let mut m = 96u16.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x42u8; 96]);
        g.write_all(&m).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), g.read_to_end(&mut sink))
            .await
            .expect("link not closed after bad handshake");
        // truncated handshake: announce 96 bytes, send 10, close
        let mut t = TcpStream::connect(addr).await.unwrap();
        t.write_all(&[0, 96, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .await
            .unwrap();
        t.shutdown().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut sink))
            .await
            .expect("link not closed after truncation");
        // the node logged and counted them, and still serves circuits
        for _ in 0..50 {
            if net.node(0).status().link_errors >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            net.node(0).status().link_errors >= 3,
            "{:?}",
            net.node(0).status()
        );
        let client = net.client(ClientConfig {
            hops: 1,
            pool_size: 0,
            ..Default::default()
        });
        echo_roundtrip(&client, tcp, 1, 1000).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_refuses_forbidden_destinations_with_clear_reason() {
    init_logs();
    tokio::time::timeout(LIMIT, async {
        let tcp = tcp_echo().await;
        // policy forbids the port
        let net = Testnet::builder()
            .relays(1)
            .exits(1)
            .exit_policy(ExitPolicy {
                accept_ports: vec![(1, 10)],
                allow_udp: false,
            })
            .build()
            .await
            .unwrap();
        let client = net.client(ClientConfig {
            hops: 2,
            pool_size: 0,
            ..Default::default()
        });
        match client.connect(&Target::Addr(tcp), IsolationKey(1)).await {
            Err(ProviderError::Refused { reason, .. }) => assert!(
                reason.contains("exit policy") && reason.contains("port"),
                "{reason}"
            ),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("exit connected to a forbidden port"),
        }
        let d = client.datagram(IsolationKey(1)).await.unwrap();
        d.send_to(b"x", &Target::Addr("127.0.0.1:5".parse().unwrap()))
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        match tokio::time::timeout(Duration::from_secs(5), d.recv_from(&mut buf))
            .await
            .unwrap()
        {
            Err(ProviderError::Refused { reason, .. }) => {
                assert!(reason.contains("UDP"), "{reason}")
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        // a real exit (no testing flag) refuses loopback
        let net2 = Testnet::builder()
            .relays(1)
            .exits(1)
            .allow_private(false)
            .build()
            .await
            .unwrap();
        let client2 = net2.client(ClientConfig {
            hops: 2,
            pool_size: 0,
            ..Default::default()
        });
        match client2.connect(&Target::Addr(tcp), IsolationKey(1)).await {
            Err(ProviderError::Refused { reason, .. }) => {
                assert!(reason.contains("private/loopback"), "{reason}")
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("exit connected to loopback without the testing flag"),
        }
    })
    .await
    .expect("test timed out");
}

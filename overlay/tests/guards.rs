//! Entry guards under attack (issue "Hostile relays (2/2)"), on an in-process test network
//! (127.0.0.1 only): failures that others can cause past a client's guard never rotate it, and a
//! guard that drops circuits is flagged by path bias, not silently replaced.

mod common;
use common::init_logs;
use std::time::{Duration, Instant};

use overlay::descriptor::{unix_now, ROLE_RELAY};
use overlay::exit::ExitPolicy;
use overlay::hidden::{connect_hidden, open_hidden_stream, HiddenConfig, HiddenService};
use overlay::hs::{ClientIntro, HsMessage, IntroRequest, COOKIE_LEN};
use overlay::testnet::Testnet;
use overlay::{BoxStream, ClientConfig, Descriptor, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(60);

fn three_hop_client() -> ClientConfig {
    ClientConfig {
        hops: 3,
        pool_size: 0,
        ..Default::default()
    }
}

/// A guard that destroys every circuit asking it to extend: every build through it fails, the
/// client's path-bias count flags it (the warning), and the client keeps it: no new guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropping_every_circuit_is_flagged_not_rotated() {
    init_logs();
    tokio::time::timeout(T, async {
        let net = Testnet::builder().relays(6).exits(2).build().await.unwrap();
        let client = net.client(three_hop_client());
        let c = client.build_circuit(3).await.unwrap();
        let g = c.hops()[0].id;
        c.destroy();
        let guard = net.node(net.index_of(g).unwrap());
        guard.hostile_refuse_extend(true);
        // (a circuit that exits at the guard enters at a second guard and works)
        let mut failed = 0;
        for _ in 0..100 {
            match client.build_circuit(3).await {
                Ok(c) => assert_eq!(c.hops()[2].id, g, "only circuits exiting at it work"),
                Err(_) => failed += 1,
            }
            if client.guard_status()[0].path_bias.is_suspect() {
                break;
            }
        }
        assert!(failed >= overlay::guards::PATH_BIAS_MIN_CIRCS / 2);
        let st = client.guard_status();
        assert_eq!(st[0].id, g, "still the same first guard");
        assert!(st[0].primary && st[0].down_for == 0, "{:?}", st[0]);
        assert!(
            st[0].path_bias.is_suspect(),
            "flagged: {:?}",
            st[0].path_bias
        );
        // the guard recovers: circuits enter through it again
        guard.hostile_refuse_extend(false);
        let c = client.build_circuit(3).await.unwrap();
        assert_eq!(c.hops()[0].id, g);
    })
    .await
    .expect("test timed out");
}

/// A relay elsewhere that drops every circuit through it: builds that meet it fail, the guard
/// stays the first hop of every circuit, and no guard is added for those failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_guard_never_rotate_it() {
    init_logs();
    tokio::time::timeout(T, async {
        let net = Testnet::builder().relays(5).exits(2).build().await.unwrap();
        let client = net.client(three_hop_client());
        let c = client.build_circuit(3).await.unwrap();
        let g = c.hops()[0].id;
        c.destroy();
        let sampled = client.guards().len();
        // every other relay-only node drops what it is asked to extend (it is only ever a middle)
        let d = net.descriptors();
        for (i, desc) in d.iter().enumerate() {
            if desc.id != g && !desc.is_exit() {
                net.node(i).hostile_refuse_extend(true);
            }
        }
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..40 {
            match client.build_circuit(3).await {
                Ok(c) => {
                    // an exit as the middle (exits relay too)
                    ok += 1;
                    if c.hops()[2].id != g {
                        assert_eq!(c.hops()[0].id, g, "every circuit enters at the guard");
                    }
                    c.destroy();
                }
                Err(_) => failed += 1,
            }
        }
        assert!(
            failed >= 10,
            "the droppers were met ({ok} ok, {failed} failed)"
        );
        assert_eq!(client.guards()[0], g);
        // a second guard only ever for circuits that exit at the first one
        assert!(
            client.guards().len() <= sampled.max(2),
            "{:?}",
            client.guards()
        );
        assert_eq!(client.guard_status()[0].down_for, 0);
    })
    .await
    .expect("test timed out");
}

/// The attack the issue names: introductions naming unreachable rendezvous points make a hidden
/// seeder's rendezvous builds fail past its guard. 200 of them leave its guard unchanged (not
/// down, no new guard, not even a path-bias count: the last hop was chosen by the introducer) and
/// an honest downloader still reaches the seeder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introductions_to_unreachable_rendezvous_points_do_not_move_the_seeders_guard() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(120), async {
        let net = Testnet::builder().relays(8).exits(1).build().await.unwrap();
        let cfg = HiddenConfig::default();
        let seeder = net.client(ClientConfig::default());
        let (svc, incoming) = HiddenService::start(seeder.clone(), cfg.clone())
            .await
            .unwrap();
        serve(incoming);
        let entry = svc.entry();
        let guards_before = seeder.guards();
        assert!(!guards_before.is_empty());

        // the attacker: rendezvous points that exist nowhere (a closed port on loopback)
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let attacker = net.client(ClientConfig::default());
        let dir = net.descriptors();
        let mut sent = 0;
        'outer: for round in 0..200 {
            let ip = &entry.intro_points[round % entry.intro_points.len()];
            let d: &Descriptor = dir.iter().find(|d| d.id.0 == ip.node.0).unwrap();
            let Ok(circ) = attacker.circuit_ending_at(d, 1).await else {
                continue;
            };
            // a few per circuit (an introduction point may limit each circuit's rate)
            for _ in 0..4 {
                let rp = Descriptor::new_signed(
                    &Identity::generate(),
                    closed,
                    ROLE_RELAY,
                    ExitPolicy::default(),
                    unix_now() + 600,
                );
                let req = IntroRequest {
                    cookie: [7u8; COOKIE_LEN],
                    rendezvous_id: rp.id.0,
                    rendezvous_descriptor: rp.encode(),
                };
                let (_, blob) = ClientIntro::start(&entry.service_key, &req).unwrap();
                let msg = HsMessage::Introduce1 {
                    auth_key: ip.auth_key,
                    handshake: blob,
                };
                if circ.send_hs(0, &msg).await.is_err() {
                    break;
                }
                sent += 1;
                if sent == 200 {
                    circ.destroy();
                    break 'outer;
                }
            }
            circ.destroy();
        }
        assert_eq!(sent, 200);
        // wait until the seeder has dealt with what reached it
        let t0 = Instant::now();
        let mut last = (u64::MAX, Instant::now());
        loop {
            let st = svc.stats();
            let done = st.rendezvous_failed + st.rendezvous_ok;
            if done == st.introductions && st.introductions > 0 {
                if done == last.0 && last.1.elapsed() > Duration::from_secs(2) {
                    break;
                }
                if done != last.0 {
                    last = (done, Instant::now());
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the seeder is still busy: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let st = svc.stats();
        assert!(
            st.rendezvous_failed >= 20,
            "the attack reached the seeder: {st:?}"
        );
        assert_eq!(
            seeder.guards(),
            guards_before,
            "the guard sample did not change"
        );
        for g in seeder.guard_status() {
            assert_eq!(g.down_for, 0, "no guard is down: {g:?}");
            assert!(!g.path_bias.is_suspect(), "{g:?}");
        }

        // an honest downloader still gets through
        let downloader = net.client(ClientConfig::default());
        let circ = connect_hidden(&downloader, &entry, &cfg).await.unwrap();
        let mut s = open_hidden_stream(&circ, cfg.timeout).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        assert_eq!(seeder.guards(), guards_before);
    })
    .await
    .expect("test timed out");
}

/// Echoes every stream the seeder gets.
fn serve(mut incoming: mpsc::Receiver<BoxStream>) {
    tokio::spawn(async move {
        while let Some(mut s) = incoming.recv().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => {
                            if s.write_all(&buf[..k]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

//! Hidden seeding over real circuits: a seeder registers introduction points, publishes a blinded
//! swarm record in the overlay DHT; a downloader finds it, meets the seeder at a rendezvous point
//! through 3+3 hops, and the two exchange bytes end to end. Introduction points and rendezvous
//! points that die are replaced.

use std::sync::Arc;
use std::time::Duration;

use overlay::dht_client::{contact_of, DhtClient};
use overlay::hidden::{
    connect_hidden, find_swarm, open_hidden_stream, publish_swarm, HiddenConfig, HiddenService,
};
use overlay::testnet::Testnet;
use overlay::{BoxStream, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Serves every incoming stream: reads a 4-byte length, answers that many pattern bytes, then
/// echoes whatever else arrives.
fn serve(mut incoming: mpsc::Receiver<BoxStream>) {
    tokio::spawn(async move {
        while let Some(mut s) = incoming.recv().await {
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let n = u32::from_be_bytes(len) as usize;
                let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                if s.write_all(&data).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 65536];
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

async fn fetch(s: &mut BoxStream, n: usize) -> Vec<u8> {
    s.write_all(&(n as u32).to_be_bytes()).await.unwrap();
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).await.unwrap();
    got
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_seeder_found_in_the_dht_and_reached_through_a_rendezvous() {
    let net = Testnet::builder()
        .relays(28)
        .exits(2)
        .dht(true)
        .build()
        .await
        .unwrap();
    let seeds: Vec<_> = net.descriptors().iter().take(3).map(contact_of).collect();
    let cfg = HiddenConfig::default();

    // the seeder: 3 introduction points over 3-hop circuits, a record in the DHT
    let seeder = net.client(ClientConfig::default());
    let (svc, incoming) = HiddenService::start(seeder.clone(), cfg.clone())
        .await
        .unwrap();
    serve(incoming);
    let entry = svc.entry();
    assert_eq!(entry.intro_points.len(), 3);
    let infohash = [0x42; 20];
    let publisher = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let dht = DhtClient::new(Arc::new(seeder.clone()), 2);
    let stored = publish_swarm(&dht, seeds.clone(), &infohash, &entry, &publisher).await;
    assert!(stored >= 10, "only {stored} DHT nodes stored the record");

    // the downloader finds it and meets the seeder through 3+3 hops
    let downloader = net.client(ClientConfig::default());
    let ddht = DhtClient::new(Arc::new(downloader.clone()), 2);
    let found = find_swarm(&ddht, seeds, &infohash).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].service_key, svc.service_key());
    let circ = connect_hidden(&downloader, &found[0], &cfg).await.unwrap();
    // 3 real hops + the seeder's virtual hop
    assert_eq!(circ.hop_count(), 4);
    let mut s = open_hidden_stream(&circ, Duration::from_secs(10))
        .await
        .unwrap();
    let got = fetch(&mut s, 3 << 20).await;
    assert!(got == pattern(3 << 20), "bytes differ");
    s.write_all(b"ping through the rendezvous").await.unwrap();
    let mut echo = [0u8; 27];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping through the rendezvous");

    // a second stream on the same circuit, and a second downloader at the same time
    let mut s2 = open_hidden_stream(&circ, Duration::from_secs(10))
        .await
        .unwrap();
    let other = net.client(ClientConfig::default());
    let circ3 = connect_hidden(&other, &found[0], &cfg).await.unwrap();
    let mut s3 = open_hidden_stream(&circ3, Duration::from_secs(10))
        .await
        .unwrap();
    let (a, b) = tokio::join!(fetch(&mut s2, 1 << 20), fetch(&mut s3, 1 << 20));
    assert!(a == pattern(1 << 20) && b == pattern(1 << 20));
    let st = svc.stats();
    assert_eq!(st.rendezvous_ok, 2, "{st:?}");
    assert_eq!(st.streams, 3, "{st:?}");

    // no relay saw a cell it could not place (the end-to-end layer is opaque to the rendezvous
    // point but never mistaken for tampering)
    for n in net.nodes() {
        assert_eq!(n.status().circuits_destroyed_tamper, 0);
    }
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_introduction_and_rendezvous_points_are_replaced() {
    let net = Testnet::builder()
        .relays(10)
        .exits(1)
        .build()
        .await
        .unwrap();
    let cfg = HiddenConfig {
        maintain_every: Duration::from_millis(300),
        ..HiddenConfig::default()
    };
    let seeder = net.client(ClientConfig::default());
    let (svc, incoming) = HiddenService::start(seeder.clone(), cfg.clone())
        .await
        .unwrap();
    serve(incoming);
    let mut changes = svc.changes();
    let before = svc.entry();

    // kill one introduction point: the service registers a new one and says so
    let dead = before.intro_points[0].node;
    let i = net.nodes().iter().position(|n| n.id().0 == dead.0).unwrap();
    net.kill(i);
    // (a running node refreshes its directory; here the test does it)
    seeder.set_directory(net.descriptors());
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            changes.changed().await.unwrap();
            let e = svc.entry();
            if e.intro_points.len() == 3 && e.intro_points.iter().all(|p| p.node != dead) {
                return;
            }
        }
    })
    .await
    .expect("the dead introduction point was not replaced");

    // a downloader using the *old* entry still gets in through a surviving point (circuits that
    // broke at a middle hop were rebuilt to the same points with the same keys)
    let downloader = net.client(ClientConfig::default());
    downloader.set_directory(net.descriptors());
    let circ = connect_hidden(&downloader, &before, &cfg).await.unwrap();
    let mut s = open_hidden_stream(&circ, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(fetch(&mut s, 100_000).await == pattern(100_000));

    // kill the rendezvous point mid-stream: the stream fails with a reason, a new rendezvous works
    let rp = circ.hops()[2].id;
    let j = net.nodes().iter().position(|n| n.id() == rp).unwrap();
    net.kill(j);
    seeder.set_directory(net.descriptors());
    let r = tokio::time::timeout(Duration::from_secs(10), fetch_result(&mut s, 1 << 20)).await;
    assert!(
        matches!(r, Ok(Err(_))),
        "the stream should fail when the rendezvous point dies"
    );
    downloader.set_directory(net.descriptors());
    let circ = connect_hidden(&downloader, &svc.entry(), &cfg)
        .await
        .unwrap();
    let mut s = open_hidden_stream(&circ, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(fetch(&mut s, 1 << 20).await == pattern(1 << 20));
    svc.shutdown();
}

async fn fetch_result(s: &mut BoxStream, n: usize) -> std::io::Result<Vec<u8>> {
    s.write_all(&(n as u32).to_be_bytes()).await?;
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).await?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_abuse_at_the_points_is_refused() {
    use overlay::hs::HsMessage;
    let net = Testnet::builder().relays(3).exits(1).build().await.unwrap();
    let c = net.client(ClientConfig::default());
    let d = net.descriptors()[0].clone();
    // ESTABLISH_INTRO signed for another circuit: the point closes the circuit
    let circ = c.circuit_ending_at(&d, 1).await.unwrap();
    let auth = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    circ.send_hs(0, &HsMessage::establish_intro(&auth, &[0; 32]))
        .await
        .unwrap();
    wait_closed(&circ).await;
    // RENDEZVOUS1 with a cookie nobody waits for
    let circ = c.circuit_ending_at(&d, 1).await.unwrap();
    circ.send_hs(
        0,
        &HsMessage::Rendezvous1 {
            cookie: [3; 20],
            handshake: vec![1, 2, 3],
        },
    )
    .await
    .unwrap();
    wait_closed(&circ).await;
    // INTRODUCE1 for an unknown service: a clear refusal, the circuit stays
    let circ = c.circuit_ending_at(&d, 1).await.unwrap();
    let mut rx = circ.hs_messages();
    circ.send_hs(
        0,
        &HsMessage::Introduce1 {
            auth_key: [5; 32],
            handshake: vec![0; 64],
        },
    )
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(
        m,
        Some(HsMessage::IntroduceAck {
            status: overlay::hs::message::ack::UNKNOWN_SERVICE
        })
    );
    assert!(!circ.is_closed());
}

async fn wait_closed(c: &overlay::ClientCirc) {
    for _ in 0..100 {
        if c.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("circuit still open");
}

//! The overlay DHT over real circuits: a 30-node in-process network where every node is a DHT node.
//! A seeder-side client stores a blinded swarm record at the closest nodes through circuits; another
//! client finds and opens it; the nodes holding it never hold the infohash in clear.

use std::sync::Arc;

use overlay::dht::{IntroPoint, Key, SwarmEntry, SwarmKeys};
use overlay::dht_client::{contact_of, DhtClient};
use overlay::testnet::Testnet;
use overlay::ClientConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_record_stored_and_found_through_circuits_in_a_30_node_network() {
    let net = Testnet::builder()
        .relays(28)
        .exits(2)
        .dht(true)
        .build()
        .await
        .unwrap();
    assert!(net.nodes().iter().all(|n| n.dht_table_len() >= 20));
    let seeds: Vec<_> = net.descriptors().iter().take(2).map(contact_of).collect();

    let infohash = [0x5a; 20];
    let now = overlay::descriptor::unix_now();
    let keys = SwarmKeys::derive(&infohash, SwarmKeys::period_of(now));
    let entry = SwarmEntry {
        service_key: [7; 32],
        intro_points: vec![IntroPoint {
            node: Key(net.descriptors()[3].id.0),
            auth_key: [9; 32],
        }],
    };
    let publisher = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let rec = keys.seal(&publisher, 1, &entry);

    // the seeder's side stores through 2-hop circuits ending at each DHT node
    let seeder = DhtClient::new(Arc::new(net.client(ClientConfig::default())), 2);
    let stored = seeder.store(rec.clone(), seeds.clone()).await;
    assert!(stored >= 10, "only {stored} nodes stored the record");

    // a downloader, another client, finds and opens it
    let downloader = DhtClient::new(Arc::new(net.client(ClientConfig::default())), 2);
    let seeds2: Vec<_> = net
        .descriptors()
        .iter()
        .skip(20)
        .take(2)
        .map(contact_of)
        .collect();
    let found = downloader.find(keys.location, seeds2).await;
    assert_eq!(found.len(), 1, "records found: {found:?}");
    assert_eq!(keys.open(&found[0]).unwrap(), entry);

    // the nodes that hold it hold neither the infohash nor the intro point in clear
    let mut holders = 0;
    for n in net.nodes() {
        for r in n.dht_records() {
            holders += 1;
            let mut bytes = r.value.clone();
            bytes.extend_from_slice(&r.key.0);
            assert!(
                !bytes.windows(20).any(|w| w == infohash),
                "a DHT node holds the infohash"
            );
            assert!(!bytes.windows(32).any(|w| w == net.descriptors()[3].id.0));
        }
    }
    assert_eq!(holders, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_dht_requests_are_refused() {
    let net = Testnet::builder()
        .relays(4)
        .exits(1)
        .dht(true)
        .build()
        .await
        .unwrap();
    let c = DhtClient::new(Arc::new(net.client(ClientConfig::default())), 2);
    let target = contact_of(&net.descriptors()[0]);
    // a record whose signature does not verify is refused with a reason
    let keys = SwarmKeys::derive(
        &[1; 20],
        SwarmKeys::period_of(overlay::descriptor::unix_now()),
    );
    let mut rec = keys.seal(
        &ed25519_dalek::SigningKey::from_bytes(&[4; 32]),
        1,
        &SwarmEntry {
            service_key: [0; 32],
            intro_points: vec![],
        },
    );
    rec.seq += 1;
    match c
        .request(&target, overlay::dht::Request::Store(rec))
        .await
        .unwrap()
    {
        overlay::dht::Response::Error { reason, .. } => {
            assert!(reason.contains("signature"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // the node keeps answering
    assert_eq!(
        c.request(&target, overlay::dht::Request::Ping)
            .await
            .unwrap(),
        overlay::dht::Response::Pong
    );
}

/// A DHT node that knows no one learns the nodes that publish their descriptor records to it, and
/// tells clients about them (DIRECTORY, the bootstrap from an address and a key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_announce_themselves_become_contacts_and_are_listed_to_clients() {
    let net = Testnet::builder()
        .relays(3)
        .exits(0)
        .dht(true)
        .build()
        .await
        .unwrap();
    // forget what the test network taught node 0: start it from an empty table
    let n0 = net.node(0).clone();
    let d0 = n0.descriptor().clone();
    let before = n0.dht_table_len();
    assert!(before >= 2);
    for i in 1..3 {
        let n = net.node(i);
        let client = overlay::Client::new(ClientConfig::default(), vec![d0.clone()]);
        let dht = DhtClient::new(Arc::new(client), 1);
        let stored = dht
            .store(n.descriptor_record(), vec![contact_of(&d0)])
            .await;
        assert!(stored >= 1, "node {i}'s descriptor record was not stored");
    }
    let ds = overlay::client::fetch_directory(d0.addr, d0.x25519, &ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(ds[0].id, d0.id, "the node lists itself first");
    for i in 1..3 {
        let id = net.node(i).id();
        assert!(ds.iter().any(|d| d.id == id), "node {i} is not listed");
    }
    // a wrong key: the one-hop handshake fails, nothing is accepted
    let wrong = [7u8; 32];
    assert!(
        overlay::client::fetch_directory(d0.addr, wrong, &ClientConfig::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_node_re_signs_its_descriptor_before_it_expires() {
    use overlay::descriptor::{unix_now, ROLE_DHT, ROLE_RELAY};
    let mut cfg = overlay::NodeConfig::new(
        overlay::Identity::generate(),
        "127.0.0.1:0".parse().unwrap(),
        ROLE_RELAY | ROLE_DHT,
    );
    cfg.descriptor_lifetime = std::time::Duration::from_secs(4);
    let n = overlay::Node::start(cfg).await.unwrap();
    let d0 = n.descriptor();
    // re-signed every quarter of the lifetime (1 s)
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let d1 = n.descriptor();
    assert!(
        d1.expires > d0.expires,
        "{} then {}",
        d0.expires,
        d1.expires
    );
    d1.verify(unix_now()).unwrap();
    assert_eq!(
        (d1.id, d1.x25519, d1.addr, d1.roles),
        (d0.id, d0.x25519, d0.addr, d0.roles)
    );
    // what the node publishes in the DHT is the renewed one
    let rec = n.descriptor_record();
    let published = overlay::Descriptor::decode_verified(&rec.value, unix_now()).unwrap();
    assert!(published.expires >= d1.expires);
    n.shutdown();
}

//! Hidden seeding in the node: a seeded torrent gets its own hidden service whose swarm record is
//! published (and republished) in the overlay DHT; a downloaded torrent looks its infohash up in the
//! DHT and reaches every hidden seeder it finds through a rendezvous circuit. The share engine sees
//! hidden seeders as opaque peer addresses (`hs:<service key>`), resolved by the connector.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use overlay::descriptor::ROLE_DHT;
use overlay::dht::{Contact, SwarmEntry};
use overlay::dht_client::{contact_of, DhtClient};
use overlay::hidden::{find_swarm, publish_swarm, HiddenConfig, HiddenService};
use overlay::{Client, Descriptor};
use rand::seq::SliceRandom;
use share::connector::PeerAddr;
use share::session::{Session, TorrentHandle, TorrentState};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// Prefix of the opaque peer address of a hidden seeder.
pub const HIDDEN_PREFIX: &str = "hs:";

/// Hops of the circuits to DHT nodes (the DHT node itself is the last).
pub const DHT_HOPS: usize = 2;

/// Republish a swarm record at least this often (records live two periods).
const REPUBLISH_EVERY: Duration = Duration::from_secs(20 * 60);

/// Hidden seeders known to this node, by opaque peer address.
#[derive(Clone, Default)]
pub struct HiddenPeers {
    map: Arc<Mutex<HashMap<String, SwarmEntry>>>,
}

impl HiddenPeers {
    /// Remembers (or refreshes) a seeder and returns its peer address.
    pub fn register(&self, e: SwarmEntry) -> PeerAddr {
        let name = format!("{HIDDEN_PREFIX}{}", hex::encode(e.service_key));
        if let Ok(mut m) = self.map.lock() {
            m.insert(name.clone(), e);
        }
        PeerAddr::Opaque(name)
    }

    pub fn get(&self, name: &str) -> Option<SwarmEntry> {
        self.map.lock().ok()?.get(name).cloned()
    }
}

/// Contacts to start DHT lookups from: DHT-role nodes of the directory, shuffled.
pub fn dht_seeds(directory: &[Descriptor]) -> Vec<Contact> {
    let mut v: Vec<Contact> = directory
        .iter()
        .filter(|d| d.roles & ROLE_DHT != 0)
        .map(contact_of)
        .collect();
    v.shuffle(&mut rand::thread_rng());
    v.truncate(8);
    v
}

/// Looks up hidden seeders of `handle`'s infohash until the download is complete: at once, then
/// with a growing pause (2 s up to 30 s). Every seeder found becomes a peer of the torrent.
pub fn spawn_lookup(client: Client, peers: HiddenPeers, handle: TorrentHandle) -> AbortHandle {
    let h = tokio::spawn(async move {
        let ih = handle.info_hash();
        let infohash = ih.0;
        let mut pause = Duration::from_secs(2);
        let mut known: Vec<[u8; 32]> = Vec::new();
        loop {
            if matches!(handle.status().state, TorrentState::Seeding) {
                return;
            }
            let seeds = dht_seeds(&client.directory());
            if seeds.is_empty() {
                debug!("no DHT node in the directory: hidden seeders cannot be looked up");
                return;
            }
            let dht = DhtClient::new(Arc::new(client.clone()), DHT_HOPS);
            let found = find_swarm(&dht, seeds, &infohash).await;
            let mut fresh = Vec::new();
            for e in found {
                if !known.contains(&e.service_key) {
                    known.push(e.service_key);
                    info!("found a hidden seeder in the overlay DHT");
                }
                fresh.push(peers.register(e));
            }
            if !fresh.is_empty() {
                handle.add_peers(fresh);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    });
    h.abort_handle()
}

/// A torrent seeded as a hidden seeder: its service, and the tasks that feed the share session
/// and keep the swarm record published.
pub struct HiddenSeed {
    pub service: HiddenService,
    tasks: Vec<AbortHandle>,
    pub published: Arc<AtomicU64>,
}

impl HiddenSeed {
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.service.shutdown();
    }
}

/// Starts the hidden service of one seeded torrent: registers introduction points, hands every
/// stream a downloader opens to `session`, and publishes the swarm record (again whenever the
/// introduction points change, and every 20 minutes).
pub async fn start_seed(
    client: Client,
    session: Session,
    infohash: [u8; 20],
    hops: u8,
) -> Result<HiddenSeed, overlay::ProviderError> {
    let cfg = HiddenConfig {
        hops: usize::from(hops.clamp(1, 3)),
        ..HiddenConfig::default()
    };
    let (service, mut incoming) = HiddenService::start(client.clone(), cfg).await?;
    let accept = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(s) = incoming.recv().await {
            n += 1;
            // each hidden peer gets its own name: a ban hits one downloader, not all of them
            session.accept_inbound(Box::new(s), PeerAddr::Opaque(format!("hidden peer {n}")));
        }
    });
    let published = Arc::new(AtomicU64::new(0));
    let (svc, count) = (service.clone(), published.clone());
    let publish = tokio::spawn(async move {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
        // one publisher key per seeded torrent: records of two torrents are not linkable
        let publisher = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mut changes = svc.changes();
        loop {
            let seeds = dht_seeds(&client.directory());
            if seeds.is_empty() {
                warn!("no DHT node in the directory: the swarm record cannot be published");
            } else {
                let dht = DhtClient::new(Arc::new(client.clone()), DHT_HOPS);
                let n = publish_swarm(&dht, seeds, &infohash, &svc.entry(), &publisher).await;
                count.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    warn!("no DHT node stored the swarm record; retrying soon");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                info!(stored_at = n, "swarm record published");
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(REPUBLISH_EVERY) => {}
            }
        }
    });
    Ok(HiddenSeed {
        service,
        tasks: vec![accept.abort_handle(), publish.abort_handle()],
        published,
    })
}

//! The overlay's Kademlia DHT, sans-IO.
//!
//! Node ids and record keys are 256-bit values; distance is XOR. The DHT holds two kinds of records:
//! node descriptors (so clients find relays without a directory) and *swarm records* (how to reach the
//! hidden seeders of a torrent). A swarm record is stored under a **blinded key** derived from the
//! infohash and a time period, and its contents are encrypted with another key derived the same way,
//! so a DHT node that stores it learns neither the infohash nor the introduction points unless it
//! already knows the infohash.
//!
//! Clients send every DHT request through a circuit; the DHT node at the circuit's last hop answers.
//! Requesters are therefore anonymous and are *never* added to a routing table: only nodes learned
//! from bootstrap lists, signed descriptors and replies are.
//!
//! Everything here is plain state: [`table::RoutingTable`], [`lookup::Lookup`] (an iterative lookup
//! driven by explicit responses, timeouts and instants), [`store::RecordStore`] and
//! [`server::DhtServer`] (the request handler a DHT node runs). The runtime moves bytes.

pub mod id;
pub mod lookup;
pub mod message;
pub mod record;
pub mod server;
pub mod store;
pub mod table;

pub use id::{Distance, Key};
pub use lookup::{Lookup, LookupKind, LookupOutcome};
pub use message::{Contact, DhtError, Message, Request, Response};
pub use record::{IntroPoint, Record, RecordKind, SwarmEntry, SwarmKeys};
pub use server::DhtServer;
pub use store::{RecordStore, StoreLimits};
pub use table::RoutingTable;

/// Replication parameter: how many closest nodes hold a record and how many a reply lists.
pub const K: usize = 20;
/// Lookup parallelism.
pub const ALPHA: usize = 3;

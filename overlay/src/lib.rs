//! warren's anonymity overlay: identities, Noise links, fixed-size cells, onion circuits,
//! exits, and the `AnonProvider` abstraction that the rest of warren uses.

pub mod bench;
pub mod cell;
pub mod channel;
pub mod circuit;
pub mod client;
mod client_link;
pub mod descriptor;
pub mod dht;
pub mod dht_client;
pub mod exit;
pub mod guards;
pub mod handshake;
pub mod hidden;
pub mod hs;
pub mod identity;
pub mod limits;
pub mod link;
pub mod node;
pub mod provider;
pub mod relay_crypto;
pub mod stream;
pub mod testnet;

pub use client::{CircuitInfo, Client, ClientCirc, ClientConfig};
pub use descriptor::Descriptor;
pub use guards::{GuardConfig, Guards};
pub use identity::{Identity, NodeId};
pub use node::{Node, NodeConfig, NodeStatus};
pub use provider::{
    AnonDatagram, AnonProvider, AnonStream, BoxStream, IsolationKey, ProviderError, Target,
};

//! warren's anonymity overlay: identities, Noise links, fixed-size cells, onion circuits,
//! exits, and the `AnonProvider` abstraction that the rest of warren uses.

pub mod provider;

pub use provider::{AnonDatagram, AnonProvider, AnonStream, BoxStream, IsolationKey, ProviderError, Target};

//! Tor as a second anonymous-stream provider for warren (issue 7).
//!
//! * [`TorConfig`] — warren's `[tor]` settings (directories, test-network authorities and fallback
//!   caches, path rules, ...) and their translation into arti's configuration.
//! * [`TorProvider`] (feature `arti`, on by default) — an [`overlay::AnonProvider`] that opens TCP
//!   streams from Tor exits through arti-client, one Tor circuit per [`overlay::IsolationKey`].
//!   Tor carries no UDP: [`overlay::AnonProvider::datagram`] is refused with a clear message.
//! * [`AutoProvider`] — overlay exits first, Tor when no overlay exit answers; datagrams (UDP
//!   trackers, DHT, uTP) only ever go through the overlay.
//!
//! Nothing here ever opens a socket from the user's own address to a destination: every byte goes
//! through an exit of one of the two networks, or the operation fails.

pub mod auto;
pub mod config;
pub mod end_reason;
#[cfg(feature = "arti")]
pub mod provider;

pub use auto::{AutoPolicy, AutoProvider};
pub use config::{FallbackCache, TorConfig, TorConfigError};
#[cfg(feature = "arti")]
pub use provider::{TorCircuitInfo, TorProvider};

/// What `datagram()` answers in Tor mode (shown to users of UDP trackers, the DHT and uTP).
pub const UDP_REFUSAL: &str =
    "UDP through Tor (Tor carries only TCP streams): UDP trackers, the DHT \
     and uTP cannot use --via tor; use --via auto to send them through overlay exits";

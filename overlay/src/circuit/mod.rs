//! Circuit state machines (sans-IO): the client's view (`client`) and a relay's per-circuit view
//! (`relay`). The node and client modules drive them from tokio tasks.

pub mod client;
pub mod hop;
pub mod origin;
pub mod relay;

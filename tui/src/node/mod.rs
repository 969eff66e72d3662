//! The node: wires the overlay (circuits), the share engine and the control socket together.
//!
//! [`core::NodeCore`] owns a share [`share::session::Session`] whose only connector is
//! [`connector::OverlayConnector`]: every peer and tracker contact of a transfer becomes a stream on
//! one of that transfer's circuits (its own isolation key), never a socket from this host.

pub mod bench;
pub mod connector;
pub mod core;
pub mod demo;
pub mod hidden;
pub mod run;
pub mod saved;
pub mod via;
pub mod wrap;

pub use self::core::NodeCore;

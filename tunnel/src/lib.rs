//! warren's tunnel: runs an unmodified program in a network namespace whose only way out is a
//! tun device served by a userspace TCP/IP stack; every TCP flow becomes an anonymous stream and
//! every UDP association an anonymous datagram association through an [`overlay::AnonProvider`].
//! Names are answered locally with fake addresses and travel to the exit with the stream.
//!
//! Sans-IO parts: [`classify`], [`dns`], [`fakeip`], [`isolation`], [`nat`], [`flows`], [`icmp`].
//! Edges: [`device`] (tun / channel), [`runtime`] (the stack and relays), [`netns`], [`child`] and [`wrap`].

pub mod bench;
pub mod child;
pub mod classify;
pub mod device;
pub mod dns;
pub mod fakeip;
pub mod flows;
pub mod icmp;
pub mod isolation;
pub mod nat;
pub mod netns;
pub mod runtime;
pub mod system;
mod udp;
pub mod wrap;

pub use device::{ChannelDevice, ChannelPeer, Device, TunDevice};
pub use flows::{Counters, FlowStatus, FlowTable, Protocol, TunnelStatus};
pub use netns::Netns;
pub use runtime::{Tunnel, TunnelConfig, TunnelError};
pub use wrap::{run_wrapped, TunnelNamespace, WrapOptions};

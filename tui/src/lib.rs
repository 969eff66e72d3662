//! The `warren` binary's library: CLI, configuration, control socket, dashboard.
//!
//! The node that wires the engines together (tui/src/node/) implements [`control::NodeApi`] and
//! feeds [`status::StatusSnapshot`]s to the dashboard.

pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod dash;
pub mod exit;
pub mod handler;
pub mod logsink;
pub mod node;
pub mod status;

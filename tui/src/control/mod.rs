//! The control channel between a running node and its front-ends (dashboard, `warren status`,
//! `warren open`).
//!
//! - [`protocol`]: the newline-delimited JSON messages (sans-IO: bytes in, values out).
//! - [`server`]: the Unix-socket server, generic over [`NodeApi`], which the node implements.
//! - [`client`]: a blocking Unix-socket client.
//! - [`Control`]: what the dashboard talks to, with two implementations: [`client::SocketControl`]
//!   (a node in another process) and [`channel::ChannelControl`] (a node in this process).

pub mod channel;
pub mod client;
pub mod protocol;
pub mod server;

use std::future::Future;
use std::path::PathBuf;

pub use protocol::{Command, Reply, Request};

use crate::status::{StatusSnapshot, TransferId};

/// An error a node returns for a command (shown to the user as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

impl ApiError {
    pub fn new(msg: impl Into<String>) -> Self {
        ApiError(msg.into())
    }
}

/// What a node offers to its control socket. The lead's node implements this; the server in
/// [`server`] translates protocol requests into these calls.
///
/// Methods return `Send` futures so that the server can run each connection on its own task;
/// implementors simply write `async fn`.
pub trait NodeApi: Send + Sync + 'static {
    /// A consistent snapshot of everything the dashboard shows.
    fn snapshot(&self) -> impl Future<Output = StatusSnapshot> + Send;
    /// Starts a transfer for `magnet`, saving into `dir` (else the configured download dir),
    /// with `hops` circuit hops (else the configured default). Returns the new transfer's id.
    fn add(
        &self,
        magnet: String,
        dir: Option<PathBuf>,
        hops: Option<u8>,
    ) -> impl Future<Output = Result<TransferId, ApiError>> + Send;
    fn pause(&self, id: TransferId) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn resume(&self, id: TransferId) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Removes a transfer; with `delete_data` also deletes its downloaded files.
    fn remove(
        &self,
        id: TransferId,
        delete_data: bool,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Changes the circuit hop count of a transfer (1-3).
    fn set_hops(
        &self,
        id: TransferId,
        hops: u8,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Asks the node to shut down (the reply is sent before it goes).
    fn shutdown(&self) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// An error talking to a node through a [`Control`].
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The node answered with an error.
    #[error("node refused: {0}")]
    Node(String),
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("control protocol: {0}")]
    Protocol(String),
    #[error("the node is gone (control channel closed)")]
    Closed,
    #[error("the node did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// What the dashboard talks to: snapshots in, commands out. It never sees engine internals.
pub trait Control {
    /// Sends one command and waits for its result (`null` for commands without a result).
    fn request(&mut self, cmd: Command) -> Result<serde_json::Value, ControlError>;

    /// Fetches the current snapshot.
    fn snapshot(&mut self) -> Result<StatusSnapshot, ControlError> {
        let v = self.request(Command::Status)?;
        serde_json::from_value(v).map_err(|e| ControlError::Protocol(format!("bad snapshot: {e}")))
    }

    /// Sends a command whose result is not needed.
    fn send(&mut self, cmd: Command) -> Result<(), ControlError> {
        self.request(cmd).map(|_| ())
    }
}

/// Runs one command against a [`NodeApi`]: the common core of the socket server and the
/// in-process channel.
pub async fn dispatch<A: NodeApi>(api: &A, cmd: Command) -> Result<serde_json::Value, ApiError> {
    use serde_json::{json, Value};
    match cmd {
        Command::Status => {
            let snap = api.snapshot().await;
            serde_json::to_value(snap).map_err(|e| ApiError(format!("cannot encode status: {e}")))
        }
        Command::Add { magnet, dir, hops } => {
            if let Some(h) = hops {
                check_hops(h)?;
            }
            let id = api.add(magnet, dir, hops).await?;
            Ok(json!({ "transfer": id }))
        }
        Command::Pause { transfer } => api.pause(transfer).await.map(|()| Value::Null),
        Command::Resume { transfer } => api.resume(transfer).await.map(|()| Value::Null),
        Command::Remove {
            transfer,
            delete_data,
        } => api
            .remove(transfer, delete_data)
            .await
            .map(|()| Value::Null),
        Command::SetHops { transfer, hops } => {
            check_hops(hops)?;
            api.set_hops(transfer, hops).await.map(|()| Value::Null)
        }
        Command::Shutdown => api.shutdown().await.map(|()| Value::Null),
    }
}

/// Valid circuit hop counts.
pub const HOPS_RANGE: std::ops::RangeInclusive<u8> = 1..=3;

fn check_hops(h: u8) -> Result<(), ApiError> {
    if HOPS_RANGE.contains(&h) {
        Ok(())
    } else {
        Err(ApiError(format!(
            "hop count {h} is out of range (allowed: {}-{})",
            HOPS_RANGE.start(),
            HOPS_RANGE.end()
        )))
    }
}

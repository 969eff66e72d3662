//! The in-process [`Control`]: the dashboard runs on its own thread and talks to a node in the
//! same process through a channel, with the same commands as the socket.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::protocol::Command;
use super::{dispatch, Control, ControlError, NodeApi};

/// How long the dashboard waits for the node to answer one command.
pub const CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

type ReplyTx = std_mpsc::Sender<Result<serde_json::Value, String>>;

/// One command with the way back for its result.
#[derive(Debug)]
pub struct ChannelRequest {
    pub cmd: Command,
    reply: ReplyTx,
}

/// The dashboard's end of the channel.
#[derive(Debug, Clone)]
pub struct ChannelControl {
    tx: mpsc::UnboundedSender<ChannelRequest>,
}

/// Makes a channel pair: give [`ChannelControl`] to the dashboard (on a plain thread, it blocks)
/// and run [`serve_channel`] with the receiver on the node's runtime.
pub fn channel() -> (ChannelControl, mpsc::UnboundedReceiver<ChannelRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ChannelControl { tx }, rx)
}

/// Answers channel requests with `api` until every [`ChannelControl`] is dropped.
pub async fn serve_channel<A: NodeApi>(
    api: Arc<A>,
    mut rx: mpsc::UnboundedReceiver<ChannelRequest>,
) {
    while let Some(req) = rx.recv().await {
        let result = dispatch(api.as_ref(), req.cmd).await.map_err(|e| e.0);
        // The dashboard may have given up waiting; nothing to do then.
        let _ = req.reply.send(result);
    }
}

impl Control for ChannelControl {
    fn request(&mut self, cmd: Command) -> Result<serde_json::Value, ControlError> {
        let (reply, wait) = std_mpsc::channel();
        self.tx
            .send(ChannelRequest { cmd, reply })
            .map_err(|_| ControlError::Closed)?;
        match wait.recv_timeout(CHANNEL_TIMEOUT) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ControlError::Node(e)),
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(ControlError::Timeout(CHANNEL_TIMEOUT)),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(ControlError::Closed),
        }
    }
}

//! A blocking control-socket client, used by `warren status`, `warren open` and `warren dash`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{parse_reply, Command, Request};
use super::{Control, ControlError};

/// How long to wait for a reply before giving up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a node's control socket. Implements [`Control`].
#[derive(Debug)]
pub struct SocketControl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl SocketControl {
    pub fn connect(path: &Path) -> Result<Self, ControlError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(SocketControl {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }
}

impl Control for SocketControl {
    fn request(&mut self, cmd: Command) -> Result<serde_json::Value, ControlError> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer.write_all(&Request { id, cmd }.to_line())?;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = self.reader.read_until(b'\n', &mut line).map_err(|e| {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    ControlError::Timeout(REPLY_TIMEOUT)
                } else {
                    ControlError::Io(e)
                }
            })?;
            if n == 0 {
                return Err(ControlError::Closed);
            }
            let reply = parse_reply(&line).map_err(ControlError::Protocol)?;
            if reply.id.is_some() && reply.id != Some(id) {
                // A stale reply to an earlier request that timed out: skip it.
                continue;
            }
            return if reply.ok {
                Ok(reply.result.unwrap_or(serde_json::Value::Null))
            } else {
                Err(ControlError::Node(
                    reply.error.unwrap_or_else(|| "unspecified error".into()),
                ))
            };
        }
    }
}

//! The control-socket server: a Unix domain socket, mode 0600 in a 0700 directory, speaking the
//! line protocol of [`super::protocol`] against any [`NodeApi`].

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{parse_request, Reply, MAX_LINE};
use super::{dispatch, NodeApi};

/// A bound control socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
}

/// Errors binding the control socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another warren node is already listening on {0}")]
    InUse(PathBuf),
    #[error("cannot create the control socket directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot create the control socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
}

impl ControlListener {
    /// Binds `path`. The parent directory is created with mode 0700 if missing; the socket is
    /// bound under a temporary name, set to mode 0600 and only then renamed to `path`, so it is
    /// never reachable with a looser mode. A stale socket left by a dead node is replaced; a live
    /// one is an error.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| BindError::Dir {
                    path: dir.clone(),
                    source,
                })?;
        }
        if path.exists() {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
                Err(_) => {
                    tracing::info!(path = %path.display(), "removing stale control socket");
                    fs::remove_file(path).map_err(|source| BindError::Socket {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
            }
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "control.sock".into());
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let sock_err = |source| BindError::Socket {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(&tmp).map_err(sock_err)?;
        let finish = fs::set_permissions(&tmp, Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = finish {
            let _ = fs::remove_file(&tmp);
            return Err(sock_err(e));
        }
        Ok(ControlListener {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until `shutdown` completes. Each connection runs on its own task.
    pub async fn serve<A: NodeApi>(
        self,
        api: Arc<A>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let api = Arc::clone(&api);
                        tokio::spawn(async move {
                            if let Err(e) = serve_connection(stream, api).await {
                                tracing::debug!(error = %e, "control connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Serves one connection: reads request lines, answers each in order.
pub async fn serve_connection<A: NodeApi>(stream: UnixStream, api: Arc<A>) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = (&mut rd)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") && line.len() > MAX_LINE {
            let reply = Reply::err(None, format!("request line longer than {MAX_LINE} bytes"));
            wr.write_all(&reply.to_line()).await?;
            return Ok(());
        }
        let reply = match parse_request(&line) {
            Ok(req) => match dispatch(api.as_ref(), req.cmd).await {
                Ok(v) => Reply::ok(req.id, v),
                Err(e) => Reply::err(Some(req.id), e.0),
            },
            Err(reply) => reply,
        };
        wr.write_all(&reply.to_line()).await?;
    }
}

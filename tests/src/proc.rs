//! Child processes that are killed by PID when dropped, and small process helpers.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A started process; dropped means killed (SIGKILL by PID) and reaped.
pub struct Child {
    pub name: String,
    inner: std::process::Child,
}

impl Child {
    /// Starts `cmd`, sending its stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Child> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let inner = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Child {
            name: name.to_string(),
            inner,
        })
    }

    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Sends SIGKILL now (the kill -9 of crash tests) and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }

    /// Whether the process has exited, with its exit code.
    pub fn try_status(&mut self) -> Option<Option<i32>> {
        self.inner.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.inner.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Whether `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Polls `f` every 50 ms until it returns true; panics naming `what` it waited for when `timeout`
/// passes first (a test waits on a condition, never on a sleep, and says which one failed).
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    if !wait_until(timeout, f) {
        panic!(
            "timed out after {:.1} s waiting for {what}",
            timeout.as_secs_f64()
        );
    }
}

/// Whether something accepts TCP connections at `addr` (from this process's namespace).
pub fn port_open(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until the file at `p` exists and is not empty.
pub fn wait_file(p: &std::path::Path, timeout: Duration) -> bool {
    wait_until(timeout, || {
        std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false)
    })
}

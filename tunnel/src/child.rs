//! The wrapped program as a child that cannot outlive warren, and the signals warren passes on.
//!
//! - [`spawn_tied`] forks the program from a thread of its own that stays in `waitpid` until the
//!   program has exited, with `PR_SET_PDEATHSIG(SIGKILL)` set in the child before `exec`. The
//!   kernel sends the death signal when the *thread* that forked exits, so forking from a
//!   short-lived worker thread would kill the program early (or, from a thread outliving warren's
//!   interest, never); a dedicated waiter thread dies only with the program or with warren.
//! - [`Signals`] receives SIGTERM, SIGINT and SIGHUP with their origin: a signal the terminal
//!   generated (Ctrl-C, hangup) already reached the program, which shares warren's process group,
//!   and is not sent a second time.
//! - [`WrappedChild::supervise`] forwards signals, waits a grace period after the first one and
//!   then kills the program.
//!
//! What the death signal cannot reach (the program's own children, a program started through
//! `setpriv` or a set-user-ID binary, for which the kernel clears it) is ended by the namespace's
//! reaper, see [`crate::netns::Reaper`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tracing::{debug, info};

/// The signals warren passes on to the wrapped program.
pub const FORWARDED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// The exit code a shell would report for `status`: the code, or 128+N for death by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    }
}

/// One received signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signal: libc::c_int,
    /// Sent by the kernel on behalf of the terminal (SIGINT from Ctrl-C, SIGHUP on hangup): it
    /// went to the whole foreground process group, the program included.
    pub from_terminal: bool,
}

const TERMINAL_BIT: u8 = 0x80;

fn encode(r: Received) -> u8 {
    // signal numbers are below 65
    (r.signal as u8 & !TERMINAL_BIT) | if r.from_terminal { TERMINAL_BIT } else { 0 }
}

fn decode(b: u8) -> Received {
    Received {
        signal: libc::c_int::from(b & !TERMINAL_BIT),
        from_terminal: b & TERMINAL_BIT != 0,
    }
}

/// SIGTERM, SIGINT and SIGHUP caught for as long as this lives (warren is not ended by them; it
/// decides what to do). Built on `signal-hook-registry`, so tokio's own signal handling still
/// works next to it. The handler only writes one byte into a socket pair.
pub struct Signals {
    rx: tokio::net::UnixStream,
    ids: Vec<signal_hook_registry::SigId>,
    _tx: Arc<OwnedFd>,
}

impl Signals {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn install() -> io::Result<Signals> {
        let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let tx: Arc<OwnedFd> = Arc::new(tx.into());
        let mut ids = Vec::new();
        for sig in FORWARDED {
            let fd = tx.clone();
            let action = move |info: &libc::siginfo_t| {
                let b = encode(Received {
                    signal: sig,
                    from_terminal: info.si_code == libc::SI_KERNEL,
                });
                // SAFETY: write(2) is async-signal-safe; the fd stays open while `fd` lives. A
                // full socket buffer drops the byte: hundreds of signals are already queued.
                unsafe {
                    libc::write(fd.as_raw_fd(), (&b as *const u8).cast(), 1);
                }
            };
            // SAFETY: the action only calls write(2) (async-signal-safe) and allocates nothing.
            let id = unsafe { signal_hook_registry::register_sigaction(sig, action) }?;
            ids.push(id);
        }
        Ok(Signals {
            rx: tokio::net::UnixStream::from_std(rx)?,
            ids,
            _tx: tx,
        })
    }

    /// The next signal (pending forever if the socket fails, which it does not).
    pub async fn recv(&mut self) -> Received {
        let mut b = [0u8; 1];
        loop {
            match self.rx.read(&mut b).await {
                Ok(1) => return decode(b[0]),
                _ => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}

/// A program started with [`spawn_tied`].
pub struct WrappedChild {
    pid: libc::pid_t,
    exited: tokio::sync::oneshot::Receiver<io::Result<ExitStatus>>,
}

/// Starts `cmd` so that it dies (SIGKILL) when warren does: `PR_SET_PDEATHSIG` in the child
/// before `exec`, forked from a thread that waits for it. If warren already died between the
/// fork and the `prctl`, the child kills itself.
pub fn spawn_tied(mut cmd: std::process::Command) -> io::Result<WrappedChild> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe calls
    // prctl(2), getppid(2) and raise(3).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wrapped-program".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id()));
                let _ = done_tx.send(child.wait());
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })?;
    let pid = pid_rx
        .recv()
        .map_err(|_| io::Error::other("the program's waiter thread ended"))??;
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    Ok(WrappedChild {
        pid,
        exited: done_rx,
    })
}

/// Sends `sig` to process `pid` (errors, e.g. it is already gone, are ignored).
pub fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid this process started or listed; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl WrappedChild {
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Waits for the program to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match (&mut self.exited).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("the program's waiter thread ended")),
        }
    }

    /// Waits for the program to exit while passing on what warren receives: a signal that
    /// did not come from the terminal is sent to the program, the first such signal starts the
    /// `grace` period, and a program still running at its end gets SIGKILL. `stop` resolving is
    /// treated as a SIGTERM (the dashboard's quit).
    pub async fn supervise(
        &mut self,
        signals: &mut Signals,
        grace: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> io::Result<ExitStatus> {
        tokio::pin!(stop);
        let mut stop_done = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut killed = false;
        loop {
            let begin_grace = tokio::select! {
                st = &mut self.exited => {
                    return st.unwrap_or_else(|_| Err(io::Error::other("the program's waiter thread ended")));
                }
                r = signals.recv() => {
                    if r.from_terminal {
                        debug!("signal {} came from the terminal: the program has it too", r.signal);
                        false
                    } else {
                        info!("passing signal {} on to the wrapped program (pid {})", r.signal, self.pid);
                        signal(self.pid, r.signal);
                        true
                    }
                }
                _ = &mut stop, if !stop_done => {
                    stop_done = true;
                    info!("stopping the wrapped program (pid {})", self.pid);
                    signal(self.pid, libc::SIGTERM);
                    true
                }
                _ = sleep_until(deadline), if deadline.is_some() && !killed => {
                    info!("grace period over: killing the wrapped program (pid {})", self.pid);
                    signal(self.pid, libc::SIGKILL);
                    killed = true;
                    false
                }
            };
            if begin_grace && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + grace);
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn signal_bytes_round_trip() {
        for signal in FORWARDED {
            for from_terminal in [false, true] {
                let r = Received {
                    signal,
                    from_terminal,
                };
                assert_eq!(decode(encode(r)), r);
            }
        }
    }

    #[tokio::test]
    async fn term_is_forwarded_and_grace_ends_in_kill() {
        let mut signals = Signals::install().unwrap();
        // a program that ignores SIGTERM: the grace period ends it
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "trap '' TERM; sleep 30"]);
        let mut child = spawn_tied(cmd).unwrap();
        let pid = child.pid();
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(std::process::id() as libc::pid_t, libc::SIGTERM);
        let t0 = std::time::Instant::now();
        let st = child
            .supervise(
                &mut signals,
                Duration::from_millis(500),
                std::future::pending(),
            )
            .await
            .unwrap();
        assert_eq!(exit_code(st), 137, "pid {pid}");
        assert!(t0.elapsed() >= Duration::from_millis(400));
        assert!(t0.elapsed() < Duration::from_secs(10));

        // a program that exits on SIGTERM: its own status (143)
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        let mut child = spawn_tied(cmd).unwrap();
        let st = child
            .supervise(&mut signals, Duration::from_secs(20), async {
                tokio::time::sleep(Duration::from_millis(200)).await
            })
            .await
            .unwrap();
        assert_eq!(exit_code(st), 143);
    }
}

//! `warren tunnel -- PROGRAM ARGS`: a namespace with the tunnel as its only way out, the
//! program run inside, everything removed when it exits.

use std::ffi::{OsStr, OsString};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use overlay::AnonProvider;
use tracing::{info, warn};

use crate::child::{spawn_tied, Signals};

use crate::device::TunDevice;
use crate::flows::TunnelStatus;
use crate::netns::{unique_name, Netns, Reaper};
use crate::runtime::{Tunnel, TunnelConfig, TunnelError};

/// How the wrapped program is run.
#[derive(Debug, Clone)]
pub struct WrapOptions {
    /// `(uid, gid)` to drop root for the program (e.g. from `SUDO_UID`/`SUDO_GID`), with
    /// `setpriv`; the namespace setup itself needs root. The kernel clears the parent-death
    /// signal when credentials change, so such a program is ended by the namespace's reaper.
    pub run_as: Option<(u32, u32)>,
    /// How long the program has after the first SIGTERM/SIGINT/SIGHUP passed on to it (and
    /// what is left in the namespace after it exits) before it is killed.
    pub grace: Duration,
}

impl Default for WrapOptions {
    fn default() -> Self {
        WrapOptions {
            run_as: None,
            grace: DEFAULT_GRACE,
        }
    }
}

/// The default grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// A namespace wired to a running tunnel. Dropping it stops the tunnel (the tun disappears),
/// kills whatever still runs inside and, when the namespace is owned, deletes the namespace.
pub struct TunnelNamespace {
    // Field order matters: the tunnel (and so the tun fd) goes first, then the namespace, then
    // the reaper (which then finds nothing to do).
    tunnel: Tunnel,
    netns: Netns,
    tun_name: String,
    reaper: Option<Reaper>,
}

impl TunnelNamespace {
    /// Creates a fresh namespace (named `warren-PID-N`) and a tunnel into it, with a [`Reaper`]
    /// that removes both the namespace and everything in it if this process dies.
    pub fn setup(
        provider: Arc<dyn AnonProvider>,
        cfg: TunnelConfig,
    ) -> Result<TunnelNamespace, TunnelError> {
        let netns = Netns::create(&unique_name("warren-"))?;
        let reaper = netns.reaper()?;
        let mut tns = Self::attach(provider, cfg, netns)?;
        tns.reaper = Some(reaper);
        Ok(tns)
    }

    /// Creates a tun in the caller's namespace, moves it into `netns`, and starts the tunnel
    /// over it. Must be called inside a tokio runtime.
    pub fn attach(
        provider: Arc<dyn AnonProvider>,
        cfg: TunnelConfig,
        netns: Netns,
    ) -> Result<TunnelNamespace, TunnelError> {
        let tun = TunDevice::create(&unique_name("wt")).map_err(TunnelError::Device)?;
        let tun_name = tun.name().to_string();
        netns.adopt_tun(&tun_name, &cfg)?;
        let tunnel = Tunnel::start(Arc::new(tun), provider, cfg)?;
        info!("tunnel {tun_name} up in namespace {}", netns.name());
        Ok(TunnelNamespace {
            tunnel,
            netns,
            tun_name,
            reaper: None,
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// The reaper's pid, when this namespace has one (made by [`TunnelNamespace::setup`]).
    pub fn reaper_pid(&self) -> Option<u32> {
        self.reaper.as_ref().map(Reaper::pid)
    }

    pub fn tunnel(&mut self) -> &mut Tunnel {
        &mut self.tunnel
    }

    pub fn status(&self) -> TunnelStatus {
        self.tunnel.status()
    }

    /// A command that runs `program args` inside the namespace.
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        tokio::process::Command::from(self.netns.command(program, args))
    }

    /// The command for the wrapped program: `ip netns exec NAME [setpriv ...] program args`.
    /// `ip netns exec` execs the program, so the child's pid is the program's.
    pub fn program_command(
        &self,
        program: &OsStr,
        args: &[OsString],
        run_as: Option<(u32, u32)>,
    ) -> std::process::Command {
        match run_as {
            None => self.netns.command(program, args),
            Some((uid, gid)) => {
                let mut a: Vec<OsString> = vec![
                    format!("--reuid={uid}").into(),
                    format!("--regid={gid}").into(),
                    "--clear-groups".into(),
                    "--".into(),
                    program.to_os_string(),
                ];
                a.extend(args.iter().cloned());
                self.netns.command("setpriv", a)
            }
        }
    }

    /// Runs `cmd` (from [`TunnelNamespace::program_command`]) tied to this process (see
    /// [`crate::child`]) and waits for it, passing SIGTERM, SIGINT and SIGHUP on and killing it
    /// `grace` after the first; `stop` resolving asks it to stop the same way. Then ends what is
    /// left in the namespace (SIGTERM, `grace`, SIGKILL). Returns the program's status.
    pub async fn run_program(
        &self,
        cmd: std::process::Command,
        grace: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<ExitStatus, TunnelError> {
        let mut signals = Signals::install().map_err(TunnelError::Spawn)?;
        let mut child = spawn_tied(cmd).map_err(TunnelError::Spawn)?;
        info!("wrapped program started (pid {})", child.pid());
        let status = child
            .supervise(&mut signals, grace, stop)
            .await
            .map_err(TunnelError::Spawn)?;
        info!("wrapped program exited: {status}");
        // signals that arrive from here on are still caught (and ignored) while the rest goes
        self.sweep(grace).await;
        drop(signals);
        Ok(status)
    }

    /// Ends what still runs in the namespace: SIGTERM, up to `grace` to exit, then SIGKILL.
    pub async fn sweep(&self, grace: Duration) {
        if self.netns.signal_all(libc::SIGTERM) == 0 {
            return;
        }
        let t0 = tokio::time::Instant::now();
        while t0.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.netns.pids().is_empty() {
                return;
            }
        }
        let n = self.netns.signal_all(libc::SIGKILL);
        if n > 0 {
            warn!(
                "killed {n} processes still in namespace {} after the grace period",
                self.netns.name()
            );
        }
    }
}

/// Runs `program args` with all its traffic through `provider`; returns its exit status once
/// it has exited and the namespace is gone. Signals are handled as in
/// [`TunnelNamespace::run_program`].
pub async fn run_wrapped(
    provider: Arc<dyn AnonProvider>,
    cfg: TunnelConfig,
    program: &OsStr,
    args: &[OsString],
    opts: WrapOptions,
) -> Result<ExitStatus, TunnelError> {
    let tns = TunnelNamespace::setup(provider, cfg)?;
    let cmd = tns.program_command(program, args, opts.run_as);
    let status = tns
        .run_program(cmd, opts.grace, std::future::pending())
        .await;
    drop(tns);
    status
}

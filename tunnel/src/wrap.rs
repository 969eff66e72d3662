//! `warren tunnel -- PROGRAM ARGS`: a namespace with the tunnel as its only way out, the
//! program run inside, everything removed when it exits.

use std::ffi::{OsStr, OsString};
use std::process::ExitStatus;
use std::sync::Arc;

use overlay::AnonProvider;
use tracing::info;

use crate::device::TunDevice;
use crate::flows::TunnelStatus;
use crate::netns::{unique_name, Netns};
use crate::runtime::{Tunnel, TunnelConfig, TunnelError};

/// A namespace wired to a running tunnel. Dropping it stops the tunnel (the tun disappears)
/// and, when the namespace is owned, deletes the namespace.
pub struct TunnelNamespace {
    // Field order matters: the tunnel (and so the tun fd) goes first, then the namespace.
    tunnel: Tunnel,
    netns: Netns,
    tun_name: String,
}

impl TunnelNamespace {
    /// Creates a fresh namespace (named `warren-PID-N`) and a tunnel into it.
    pub fn setup(
        provider: Arc<dyn AnonProvider>,
        cfg: TunnelConfig,
    ) -> Result<TunnelNamespace, TunnelError> {
        let netns = Netns::create(&unique_name("warren-"))?;
        Self::attach(provider, cfg, netns)
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
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn tun_name(&self) -> &str {
        &self.tun_name
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
}

/// Runs `program args` with all its traffic through `provider`; returns its exit status once
/// it has exited and the namespace is gone. `run_as` = `(uid, gid)` drops root for the program
/// (e.g. from `SUDO_UID`/`SUDO_GID`) with `setpriv`; the namespace setup itself needs root.
pub async fn run_wrapped(
    provider: Arc<dyn AnonProvider>,
    cfg: TunnelConfig,
    program: &OsStr,
    args: &[OsString],
    run_as: Option<(u32, u32)>,
) -> Result<ExitStatus, TunnelError> {
    let tns = TunnelNamespace::setup(provider, cfg)?;
    let mut cmd = match run_as {
        None => tns.command(program, args),
        Some((uid, gid)) => {
            let mut a: Vec<OsString> = vec![
                format!("--reuid={uid}").into(),
                format!("--regid={gid}").into(),
                "--clear-groups".into(),
                "--".into(),
                program.to_os_string(),
            ];
            a.extend(args.iter().cloned());
            tns.command("setpriv", a)
        }
    };
    let mut child = cmd.kill_on_drop(true).spawn().map_err(TunnelError::Spawn)?;
    let status = child.wait().await.map_err(TunnelError::Spawn)?;
    drop(tns);
    Ok(status)
}

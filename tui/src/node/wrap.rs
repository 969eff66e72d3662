//! `warren tunnel -- CMD`: the program in a namespace whose only route is the tunnel, run the
//! way `ip netns exec` runs it. It owns the terminal (stdin, stdout, stderr are its own, and
//! warren's log goes to `<data-dir>/tunnel.log` while it does); signals are passed on and it
//! cannot outlive warren (see `tunnel::child`); warren exits with its status. `--dash` shows
//! the dashboard instead, with the program's output in `<data-dir>/tunnel-program.log`;
//! `--status` prints plain status lines to stderr. The control socket is served either way, so
//! `warren dash` in another terminal shows the tunnel's flows.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::run::{core_for, data_dir, resolve_directory, serve_socket};
use crate::config::Config;
use crate::control::channel::{channel, serve_channel};
use crate::exit::find_program;

/// How `warren tunnel -- CMD` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct TunnelRun {
    pub hops: Option<u8>,
    /// Seconds after the first passed-on signal before the program is killed (else config).
    pub grace: Option<u64>,
    /// The dashboard on this terminal.
    pub dash: bool,
    /// Plain status lines on stderr.
    pub status: bool,
    /// `--user`: who the program runs as (else the sudo invoker, see [`run_as`]).
    pub user: Option<String>,
}

/// Who the wrapped program runs as: `--user` (a name or a uid; `root` keeps root), else the
/// user who invoked sudo (`SUDO_UID`/`SUDO_GID`), else warren's own user. Setting up the
/// namespace needs root; the program should not have it unless asked. `None` = unchanged.
pub fn run_as(
    user: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(u32, u32)>> {
    if let Some(u) = user {
        let (uid, gid) = lookup_user(u)?;
        return Ok((uid != 0).then_some((uid, gid)));
    }
    let num = |k: &str| env(k).and_then(|v| v.trim().parse::<u32>().ok());
    match (num("SUDO_UID"), num("SUDO_GID")) {
        (Some(0), _) | (None, _) => Ok(None),
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        (Some(uid), None) => Ok(Some((uid, lookup_user(&uid.to_string())?.1))),
    }
}

/// `(uid, primary gid)` of a user name or uid, from the password database.
fn lookup_user(u: &str) -> Result<(u32, u32)> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = u.parse::<u32>() {
        // SAFETY: getpwuid_r writes into `pw` and `buf`, which outlive the call; `out` is set to
        // &pw or null.
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) }
    } else {
        let name = std::ffi::CString::new(u).map_err(|_| anyhow!("bad user name {u:?}"))?;
        // SAFETY: as above; `name` is a valid C string for the duration of the call.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut out,
            )
        }
    };
    if rc != 0 || out.is_null() {
        bail!("no such user: {u} (--user takes a user name or a uid)");
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// How often `--status` prints a line.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Runs CMD; returns its exit code (128+N for death by signal N).
pub async fn tunnel(cfg: &Config, run: &TunnelRun, cmd: &[String]) -> Result<i32> {
    let Some((prog, args)) = cmd.split_first() else {
        bail!("nothing to run: give a command after `--`, e.g. `warren tunnel -- aria2c MAGNET`");
    };
    // 127/126 before anything is set up, as a shell would
    find_program(prog, std::env::var_os("PATH").as_deref())?;
    if run.dash && !std::io::stdout().is_terminal() {
        bail!("--dash needs a terminal on stdout");
    }
    if cfg.network.bootstrap.is_empty() && super::via::needs_overlay(cfg) {
        bail!("no overlay to reach: give descriptor files of running nodes with --bootstrap FILE");
    }
    let grace = Duration::from_secs(run.grace.unwrap_or(cfg.tunnel.grace_secs));
    let data = data_dir(cfg)?;
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    // the program owns the terminal: warren's own lines go to a file unless asked for
    if !run.status && (run.dash || std::io::stdin().is_terminal()) {
        let log = data.join("tunnel.log");
        crate::logsink::redirect_to(&log)
            .with_context(|| format!("cannot write {}", log.display()))?;
    }
    let directory = resolve_directory(&cfg.network.bootstrap).await?;
    let core = Arc::new(core_for(cfg, directory, "tunnel".into())?);
    let provider = core
        .clients()
        .exit_provider(run.hops.unwrap_or(cfg.hops))
        .clone();
    let tns = Arc::new(
        ::tunnel::wrap::TunnelNamespace::setup(
            provider,
            ::tunnel::runtime::TunnelConfig::default(),
        )
        .map_err(|e| anyhow!("tunnel: {e}"))?,
    );
    // the probe must not keep the namespace alive after the program is done
    let probe = Arc::downgrade(&tns);
    core.set_flow_probe(Box::new(move || {
        probe
            .upgrade()
            .map(|t| t.status().flows.into_iter().map(flow_status).collect())
            .unwrap_or_default()
    }));
    let mut said = Vec::new();
    serve_socket(cfg, core.clone(), &mut said);
    let said = String::from_utf8_lossy(&said).trim().to_string();
    if run.status && !said.is_empty() {
        eprintln!("warren: {said}");
    } else if !said.is_empty() {
        tracing::info!("{said}");
    }
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let who = run_as(run.user.as_deref(), &|k| std::env::var(k).ok())?;
    match who {
        Some((uid, gid)) => tracing::info!("{prog} runs as uid {uid}, gid {gid}"),
        // never silently as root (unless `--user root` asked for it)
        // SAFETY: geteuid(2) cannot fail and has no side effects.
        None if run.user.is_none() && unsafe { libc::geteuid() } == 0 => {
            let line = format!("{prog} runs as root (no SUDO_UID; `--user USER` runs it as USER)");
            tracing::warn!("{line}");
            if std::io::stderr().is_terminal() && !run.dash {
                eprintln!("warren: {line}");
            }
        }
        None => {}
    }
    let command = tns.program_command(std::ffi::OsStr::new(prog), &args, who);

    let status = if run.dash {
        run_with_dash(&core, &tns, command, prog, grace, &data).await?
    } else {
        let reporter = run.status.then(|| {
            let (core, tns) = (core.clone(), Arc::downgrade(&tns));
            tokio::spawn(async move {
                let mut rep = crate::dash::plain::PlainReporter::new();
                loop {
                    tokio::time::sleep(STATUS_EVERY).await;
                    let Some(t) = tns.upgrade() else { break };
                    let mut err = std::io::stderr().lock();
                    let _ = rep.report(&mut err, &core.snapshot_now());
                    let _ = writeln!(err, "{}", status_line(&t.status()));
                }
            })
        });
        let st = tns
            .run_program(command, grace, std::future::pending())
            .await
            .map_err(|e| anyhow!("tunnel: {e}"))?;
        if let Some(r) = reporter {
            r.abort();
        }
        st
    };
    let code = ::tunnel::child::exit_code(status);
    if run.status {
        eprintln!("warren: {prog} exited with status {code}");
    }
    core.shutdown_all();
    drop(tns);
    Ok(code)
}

/// `--dash`: the program's stdin is empty and its output goes to a log; quitting the dashboard
/// stops the program (SIGTERM, then the grace period). When the program exits by itself the
/// dashboard stays until `q`, unless warren was signalled.
async fn run_with_dash(
    core: &Arc<super::NodeCore>,
    tns: &::tunnel::TunnelNamespace,
    mut command: std::process::Command,
    prog: &str,
    grace: Duration,
    data: &std::path::Path,
) -> Result<std::process::ExitStatus> {
    let log_path = data.join("tunnel-program.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    core.warn(
        "tunnel",
        format!(
            "running {prog} in the tunnel; its output goes to {}",
            log_path.display()
        ),
    );
    // was warren asked to stop from outside (then it does not wait for `q` at the end)?
    let signalled = Arc::new(AtomicBool::new(false));
    let watch = {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut int = signal(SignalKind::interrupt())?;
        let flag = signalled.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
                _ = int.recv() => {}
            }
            flag.store(true, Ordering::Relaxed);
        })
    };
    let stop_dash = Arc::new(AtomicBool::new(false));
    let (mut ctl, rx) = channel();
    tokio::spawn(serve_channel(core.clone(), rx));
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = stop_dash.clone();
    let dash = tokio::task::spawn_blocking(move || {
        let r = crate::dash::run_until(&mut ctl, &stop);
        let _ = quit_tx.send(());
        r
    });
    let status = tns
        .run_program(command, grace, async {
            let _ = quit_rx.await;
        })
        .await;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            stop_dash.store(true, Ordering::Relaxed);
            let _ = dash.await;
            return Err(anyhow!("tunnel: {e}"));
        }
    };
    let code = ::tunnel::child::exit_code(status);
    if signalled.load(Ordering::Relaxed) {
        stop_dash.store(true, Ordering::Relaxed);
    } else {
        core.warn(
            "tunnel",
            format!("{prog} exited with status {code}; press q to leave"),
        );
    }
    watch.abort();
    match dash.await {
        Ok(Err(e)) => Err(anyhow!("dashboard failed: {e}")),
        Err(e) => Err(anyhow!("dashboard failed: {e}")),
        Ok(Ok(())) => Ok(status),
    }
}

/// One `--status` line about the tunnel.
fn status_line(s: &::tunnel::TunnelStatus) -> String {
    let (up, down) = s
        .flows
        .iter()
        .fold((0u64, 0u64), |(u, d), f| (u + f.bytes_up, d + f.bytes_down));
    let c = &s.counters;
    format!(
        "tunnel: {} flows open ({} up, {} down); {} TCP flows ({} refused), {} UDP associations, {} DNS queries so far",
        s.flows.len(),
        human(up),
        human(down),
        c.tcp_flows_total,
        c.tcp_flows_refused,
        c.udp_assocs_total,
        c.dns_queries
    )
}

fn human(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn flow_status(f: ::tunnel::FlowStatus) -> crate::status::FlowStatus {
    crate::status::FlowStatus {
        source: f.local.to_string(),
        destination: f.destination,
        protocol: match f.protocol {
            ::tunnel::Protocol::Tcp => crate::status::FlowProtocol::Tcp,
            ::tunnel::Protocol::Udp => crate::status::FlowProtocol::Udp,
        },
        bytes_sent: f.bytes_up,
        bytes_received: f.bytes_down,
        circuit: Some(f.isolation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = ::tunnel::TunnelStatus {
            flows: Vec::new(),
            counters: Default::default(),
        };
        let l = status_line(&s);
        assert!(
            l.starts_with("tunnel: 0 flows open (0 B up, 0 B down)"),
            "{l}"
        );
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(2048), "2.0 KiB");
    }
}

#[cfg(test)]
mod run_as_tests {
    use super::run_as;

    #[test]
    fn sudo_invoker_then_user_flag() {
        let env = |uid: Option<&'static str>, gid: Option<&'static str>| {
            move |k: &str| match k {
                "SUDO_UID" => uid.map(String::from),
                "SUDO_GID" => gid.map(String::from),
                _ => None,
            }
        };
        assert_eq!(run_as(None, &env(None, None)).unwrap(), None);
        assert_eq!(
            run_as(None, &env(Some("1000"), Some("1001"))).unwrap(),
            Some((1000, 1001))
        );
        // sudo from root is root
        assert_eq!(run_as(None, &env(Some("0"), Some("0"))).unwrap(), None);
        assert_eq!(run_as(None, &env(Some("x"), Some("1"))).unwrap(), None);
        assert_eq!(
            run_as(Some("root"), &env(Some("1000"), Some("1000"))).unwrap(),
            None
        );
        assert_eq!(run_as(Some("0"), &env(None, None)).unwrap(), None);
        let nobody = run_as(Some("nobody"), &env(None, None)).unwrap().unwrap();
        assert_eq!(
            run_as(Some(&nobody.0.to_string()), &env(None, None)).unwrap(),
            Some(nobody)
        );
        assert!(run_as(Some("no-such-user-warren"), &env(None, None)).is_err());
    }
}

//! The wrapped program's network namespace, managed with iproute2 (`ip`).
//!
//! The namespace holds only `lo` and the tunnel's tun. The process holding the tun's fd stays
//! in the original namespace (with warren's relay links); the device itself is moved in. When
//! that process dies the tun disappears and the namespace has no route at all: it fails closed.
//! IPv6 is disabled inside, and `/etc/netns/NAME/{resolv.conf,nsswitch.conf}` (bind-mounted by
//! `ip netns exec`) point name resolution at the tunnel's resolver only.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use tracing::{debug, warn};

use crate::runtime::{TunnelConfig, TunnelError};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process: `{prefix}{pid}-{n}` (tun names must stay within 15 bytes).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}-{n}", std::process::id())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Runs `ip ARGS`, mapping failure to an error naming the command.
pub fn ip(args: &[&str]) -> Result<String, TunnelError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TunnelError::Netns(format!("cannot run `ip` (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(TunnelError::Netns(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace. An owning handle deletes the namespace and its `/etc/netns` files
/// when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Creates namespace `name` with `lo` up and IPv6 disabled.
    pub fn create(name: &str) -> Result<Netns, TunnelError> {
        if !valid_name(name) {
            return Err(TunnelError::Netns(format!(
                "namespace name {name:?} must be 1-64 characters of [A-Za-z0-9_-]"
            )));
        }
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            owned: true,
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ns.disable_ipv6()?;
        Ok(ns)
    }

    /// A handle on a namespace someone else owns (not deleted on drop).
    pub fn existing(name: &str) -> Result<Netns, TunnelError> {
        if !valid_name(name) {
            return Err(TunnelError::Netns(format!("bad namespace name {name:?}")));
        }
        Ok(Netns {
            name: name.to_string(),
            owned: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    fn disable_ipv6(&self) -> Result<(), TunnelError> {
        if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
            return Ok(()); // no IPv6 in this kernel at all
        }
        let status = self
            .command(
                "sysctl",
                [
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )
            .stdout(Stdio::null())
            .status()
            .map_err(|e| TunnelError::Netns(format!("cannot run sysctl: {e}")))?;
        if !status.success() {
            return Err(TunnelError::Netns(format!(
                "could not disable IPv6 in namespace {}",
                self.name
            )));
        }
        Ok(())
    }

    /// Moves tun `ifname` (created in the caller's namespace) in, gives it the tunnel address,
    /// brings it up, routes everything through it and writes the namespace's resolver files.
    pub fn adopt_tun(&self, ifname: &str, cfg: &TunnelConfig) -> Result<(), TunnelError> {
        let n = self.name.as_str();
        ip(&["link", "set", "dev", ifname, "netns", n])?;
        let addr = format!("{}/{}", cfg.tun_addr, cfg.prefix_len);
        let mtu = cfg.mtu.to_string();
        ip(&["-n", n, "addr", "add", &addr, "dev", ifname])?;
        ip(&["-n", n, "link", "set", "dev", ifname, "mtu", &mtu, "up"])?;
        ip(&["-n", n, "route", "replace", "default", "dev", ifname])?;
        self.write_resolver_files(cfg)?;
        Ok(())
    }

    /// `/etc/netns/NAME/resolv.conf` -> the tunnel's resolver; `nsswitch.conf` with
    /// `hosts: files dns` so no NSS module (systemd-resolved, mdns, ...) resolves a name from
    /// outside the namespace.
    fn write_resolver_files(&self, cfg: &TunnelConfig) -> Result<(), TunnelError> {
        let dir = self.etc_dir();
        let err = |e: std::io::Error| TunnelError::Netns(format!("writing {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        let resolv = format!(
            "# written by warren tunnel: names resolve through the tunnel only\nnameserver {}\noptions timeout:2 attempts:3\n",
            cfg.dns_addr
        );
        std::fs::write(dir.join("resolv.conf"), resolv).map_err(err)?;
        let host_nss = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
        let mut nss = String::from("# written by warren tunnel\n");
        for line in host_nss.lines() {
            if !line.trim_start().starts_with("hosts:") {
                nss.push_str(line);
                nss.push('\n');
            }
        }
        nss.push_str("hosts: files dns\n");
        std::fs::write(dir.join("nsswitch.conf"), nss).map_err(err)?;
        Ok(())
    }

    /// `ip netns exec NAME program args...`
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        c
    }

    /// Names of the links inside the namespace.
    pub fn links(&self) -> Result<Vec<String>, TunnelError> {
        let out = ip(&["-n", &self.name, "-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            .collect())
    }

    /// The processes whose network namespace this is (`ip netns pids`).
    pub fn pids(&self) -> Vec<libc::pid_t> {
        ip(&["netns", "pids", &self.name])
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `sig` to every process inside; returns how many there were.
    pub fn signal_all(&self, sig: libc::c_int) -> usize {
        let pids = self.pids();
        for &p in &pids {
            crate::child::signal(p, sig);
        }
        pids.len()
    }

    /// Starts the namespace's [`Reaper`].
    pub fn reaper(&self) -> Result<Reaper, TunnelError> {
        Reaper::start(&self.name)
    }

    /// Deletes the namespace now (also done on drop for an owning handle).
    pub fn delete(mut self) -> Result<(), TunnelError> {
        self.owned = false;
        let r = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(self.etc_dir());
        r.map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // nothing may live on in a namespace that has lost its name and its tun
        let left = self.signal_all(libc::SIGKILL);
        if left > 0 {
            debug!("killed {left} processes left in namespace {}", self.name);
        }
        match ip(&["netns", "del", &self.name]) {
            Ok(_) => debug!("deleted namespace {}", self.name),
            Err(e) => warn!("could not delete namespace {}: {e}", self.name),
        }
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// What ends the namespace's processes and removes it when warren cannot: a `sh` in its own
/// session (no terminal signal reaches it), outside the namespace, blocked reading a pipe whose
/// only writer is warren. When warren exits or dies (SIGKILL, a crash) the pipe reaches end of
/// file and the reaper kills every process in the namespace and deletes it and its
/// `/etc/netns` files. After a clean teardown it finds nothing and exits.
pub struct Reaper {
    child: std::process::Child,
}

/// `$0` = the namespace's name (validated: no shell metacharacters).
const REAPER_SCRIPT: &str = r#"trap '' INT TERM HUP QUIT PIPE
while read -r _line; do :; done
for p in $(ip netns pids "$0" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
ip netns del "$0" 2>/dev/null
rm -rf "/etc/netns/$0"
"#;

impl Reaper {
    fn start(name: &str) -> Result<Reaper, TunnelError> {
        if !valid_name(name) {
            return Err(TunnelError::Netns(format!("bad namespace name {name:?}")));
        }
        let mut cmd = Command::new("sh");
        cmd.args(["-c", REAPER_SCRIPT, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid(2) is async-signal-safe; it only detaches the reaper from warren's
        // session and terminal, so Ctrl-C or a hangup does not end it.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| TunnelError::Netns(format!("cannot start the namespace reaper: {e}")))?;
        Ok(Reaper { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // end of file for the reaper; it finds the namespace gone and exits at once
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let a = unique_name("wt");
        let b = unique_name("wt");
        assert_ne!(a, b);
        assert!(valid_name(&a));
        assert!(a.len() <= 15, "{a}");
        assert!(!valid_name("a b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(""));
        assert!(Netns::existing("x/y").is_err());
    }

    /// The reaper removes a namespace whose owner vanished without cleaning up (here: a handle
    /// that forgets it), with the process left inside.
    #[test]
    fn reaper_removes_an_abandoned_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let ns = Netns::create(&unique_name("wtr-")).unwrap();
        let name = ns.name().to_string();
        let mut inside = ns.command("sleep", ["30"]).spawn().unwrap();
        let reaper = ns.reaper().unwrap();
        std::mem::forget(ns);
        let t0 = std::time::Instant::now();
        drop(reaper);
        let st = inside.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        let list = ip(&["netns", "list"]).unwrap();
        assert!(!list.contains(&name), "{list}");
    }
}

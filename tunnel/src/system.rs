//! System-wide mode (`warren tunnel --system up|down`): the whole host's traffic goes through
//! the tunnel, except warren's own relay links.
//!
//! - the tun stays in the host namespace with the tunnel address;
//! - policy routing: `ip rule not fwmark FWMARK lookup TABLE` with `default dev TUN` in TABLE,
//!   so every socket without warren's mark routes into the tun; warren marks its own relay sockets
//!   with [`mark_socket`] (SO_MARK = [`FWMARK`]) so they use the main table;
//! - kill switch: an nftables table `inet warren_killswitch` whose output chain drops everything
//!   except `lo`, the tun, and packets carrying the mark (IPv4 and IPv6); the rest is rejected
//!   locally (admin-prohibited) so programs fail at once instead of timing out. If warren dies the tun
//!   and its route vanish but the kill switch stays: the host fails closed until `down`;
//! - resolv.conf points at the tunnel resolver.
//!
//! Every change is recorded in a state file *before* it is made; `down` undoes exactly what the
//! state file lists, restoring resolv.conf byte for byte (or as the symlink it was).

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use overlay::AnonProvider;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::device::TunDevice;
use crate::netns::{ip, unique_name};
use crate::runtime::{Tunnel, TunnelConfig, TunnelError};

/// The mark on warren's own sockets (and the routing table number).
pub const FWMARK: u32 = 0x5772;
pub const TABLE: u32 = 0x5772;
pub const RULE_PRIORITY: u32 = 5772;
pub const NFT_TABLE: &str = "warren_killswitch";

/// Sets SO_MARK = [`FWMARK`] on a socket so it bypasses the tunnel (needs CAP_NET_ADMIN).
pub fn mark_socket(fd: RawFd) -> io::Result<()> {
    let mark: libc::c_int = FWMARK as libc::c_int;
    // SAFETY: plain setsockopt on a caller-provided fd with a correctly sized c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            &mark as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[derive(Debug, Clone)]
pub struct SystemConfig {
    pub tunnel: TunnelConfig,
    /// Where the undo record lives (e.g. /run/warren/system-tunnel.json).
    pub state_file: PathBuf,
    /// The resolver file to point at the tunnel (normally /etc/resolv.conf).
    pub resolv_path: PathBuf,
}

/// What /etc/resolv.conf was before `up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResolvBackup {
    Missing,
    Symlink(PathBuf),
    /// Hex of the file's bytes.
    File(String),
}

/// The undo record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub tun: String,
    pub route_added: bool,
    pub rule_added: bool,
    pub nft_added: bool,
    pub resolv_path: PathBuf,
    pub resolv: Option<ResolvBackup>,
}

fn save(path: &Path, st: &SavedState) -> Result<(), TunnelError> {
    let err = |e: String| TunnelError::Netns(format!("state file {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let json = serde_json::to_vec_pretty(st).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

fn backup_resolv(path: &Path) -> Result<ResolvBackup, TunnelError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ResolvBackup::Missing),
        Err(e) => Err(TunnelError::Netns(format!("{}: {e}", path.display()))),
        Ok(m) if m.file_type().is_symlink() => std::fs::read_link(path)
            .map(ResolvBackup::Symlink)
            .map_err(|e| TunnelError::Netns(format!("{}: {e}", path.display()))),
        Ok(_) => std::fs::read(path)
            .map(|b| ResolvBackup::File(hex::encode(b)))
            .map_err(|e| TunnelError::Netns(format!("{}: {e}", path.display()))),
    }
}

fn restore_resolv(path: &Path, b: &ResolvBackup) -> Result<(), TunnelError> {
    let err = |e: io::Error| TunnelError::Netns(format!("restoring {}: {e}", path.display()));
    match b {
        ResolvBackup::Missing => match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(e)),
            _ => Ok(()),
        },
        ResolvBackup::Symlink(target) => {
            let _ = std::fs::remove_file(path);
            std::os::unix::fs::symlink(target, path).map_err(err)
        }
        ResolvBackup::File(h) => {
            let bytes = hex::decode(h)
                .map_err(|e| TunnelError::Netns(format!("state file resolv backup: {e}")))?;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(path);
            }
            // in place: keeps bind mounts of the file working
            std::fs::write(path, bytes).map_err(err)
        }
    }
}

fn write_resolv(path: &Path, cfg: &TunnelConfig) -> Result<(), TunnelError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = std::fs::remove_file(path);
    }
    std::fs::write(
        path,
        format!(
            "# written by warren tunnel --system; restored by --system down\nnameserver {}\noptions timeout:2 attempts:3\n",
            cfg.dns_addr
        ),
    )
    .map_err(|e| TunnelError::Netns(format!("writing {}: {e}", path.display())))
}

fn nft(script: &str) -> Result<(), TunnelError> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TunnelError::Netns(format!("cannot run nft (nftables): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| TunnelError::Netns(format!("nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TunnelError::Netns(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(TunnelError::Netns(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn killswitch_script(tun: &str) -> String {
    format!(
        "table inet {NFT_TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy drop;\n    oifname \"lo\" accept\n    oifname \"{tun}\" accept\n    meta mark {FWMARK:#x} accept\n    reject with icmpx type admin-prohibited\n  }}\n}}\n"
    )
}

/// A running system-wide tunnel. Dropping it stops the tunnel (the tun vanishes) but leaves the
/// kill switch: call [`SystemTunnel::down`] (or [`system_down`]) to restore the host.
pub struct SystemTunnel {
    tunnel: Tunnel,
    state_file: PathBuf,
    tun: String,
}

impl SystemTunnel {
    /// Brings the system tunnel up (root). Fails if a state file already exists.
    pub fn up(
        provider: Arc<dyn AnonProvider>,
        cfg: SystemConfig,
    ) -> Result<SystemTunnel, TunnelError> {
        if cfg.state_file.exists() {
            return Err(TunnelError::Netns(format!(
                "{} exists: the system tunnel is up or was not taken down; run `warren tunnel --system down`",
                cfg.state_file.display()
            )));
        }
        let dev = TunDevice::create(&unique_name("wt")).map_err(TunnelError::Device)?;
        let tun = dev.name().to_string();
        let mut st = SavedState {
            tun: tun.clone(),
            resolv_path: cfg.resolv_path.clone(),
            ..SavedState::default()
        };
        save(&cfg.state_file, &st)?;
        let r = Self::apply(&cfg, &tun, &mut st);
        if let Err(e) = r {
            warn!("system tunnel setup failed, undoing: {e}");
            let _ = system_down(&cfg.state_file);
            return Err(e);
        }
        let tunnel = Tunnel::start(Arc::new(dev), provider, cfg.tunnel.clone())?;
        info!("system tunnel up on {tun}");
        Ok(SystemTunnel {
            tunnel,
            state_file: cfg.state_file,
            tun,
        })
    }

    fn apply(cfg: &SystemConfig, tun: &str, st: &mut SavedState) -> Result<(), TunnelError> {
        let t = &cfg.tunnel;
        let addr = format!("{}/{}", t.tun_addr, t.prefix_len);
        ip(&["addr", "add", &addr, "dev", tun])?;
        ip(&["link", "set", "dev", tun, "mtu", &t.mtu.to_string(), "up"])?;
        let table = TABLE.to_string();
        let mark = format!("{FWMARK:#x}");
        let prio = RULE_PRIORITY.to_string();
        // record first, then change: a crash in between leaves `down` with a no-op to skip
        st.nft_added = true;
        save(&cfg.state_file, st)?;
        nft(&killswitch_script(tun))?;
        st.route_added = true;
        save(&cfg.state_file, st)?;
        ip(&["route", "replace", "default", "dev", tun, "table", &table])?;
        st.rule_added = true;
        save(&cfg.state_file, st)?;
        ip(&[
            "rule", "add", "not", "fwmark", &mark, "table", &table, "priority", &prio,
        ])?;
        st.resolv = Some(backup_resolv(&cfg.resolv_path)?);
        save(&cfg.state_file, st)?;
        write_resolv(&cfg.resolv_path, t)?;
        Ok(())
    }

    pub fn tunnel(&mut self) -> &mut Tunnel {
        &mut self.tunnel
    }

    pub fn tun_name(&self) -> &str {
        &self.tun
    }

    /// Stops the tunnel and restores the host.
    pub fn down(self) -> Result<(), TunnelError> {
        let state_file = self.state_file.clone();
        drop(self.tunnel);
        system_down(&state_file)
    }
}

/// Undoes what the state file records (also after a crash of the `up` process) and removes it.
pub fn system_down(state_file: &Path) -> Result<(), TunnelError> {
    let text = match std::fs::read(state_file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // nothing is up
        Err(e) => return Err(TunnelError::Netns(format!("{}: {e}", state_file.display()))),
    };
    let st: SavedState = serde_json::from_slice(&text)
        .map_err(|e| TunnelError::Netns(format!("{}: {e}", state_file.display())))?;
    let mut first_err = None;
    let mut note = |r: Result<(), TunnelError>| {
        if let Err(e) = r {
            warn!("system tunnel down: {e}");
            first_err.get_or_insert(e);
        }
    };
    if let Some(b) = &st.resolv {
        note(restore_resolv(&st.resolv_path, b));
    }
    let table = TABLE.to_string();
    if st.rule_added {
        let mark = format!("{FWMARK:#x}");
        let prio = RULE_PRIORITY.to_string();
        // remove every copy (a retried up may have added it twice)
        while ip(&[
            "rule", "del", "not", "fwmark", &mark, "table", &table, "priority", &prio,
        ])
        .is_ok()
        {}
    }
    if st.route_added {
        let _ = ip(&["route", "flush", "table", &table]);
    }
    if st.nft_added {
        let exists = Command::new("nft")
            .args(["list", "table", "inet", NFT_TABLE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if exists {
            note(nft(&format!("delete table inet {NFT_TABLE}\n")));
        }
    }
    // the tun itself vanished with the process that held it; if it is still here, drop its addr
    let _ = ip(&["link", "del", "dev", &st.tun]);
    if let Some(e) = first_err {
        return Err(e);
    }
    std::fs::remove_file(state_file)
        .map_err(|e| TunnelError::Netns(format!("{}: {e}", state_file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killswitch_allows_only_lo_tun_and_mark() {
        let s = killswitch_script("wt12-0");
        assert!(s.contains("policy drop;"));
        assert!(s.contains("oifname \"lo\" accept"));
        assert!(s.contains("oifname \"wt12-0\" accept"));
        assert!(s.contains("meta mark 0x5772 accept"));
        assert_eq!(s.matches("accept").count(), 3);
        assert!(
            s.contains("reject with icmpx type admin-prohibited"),
            "fail fast"
        );
    }

    #[test]
    fn resolv_backup_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        assert_eq!(backup_resolv(&p).unwrap(), ResolvBackup::Missing);
        std::fs::write(&p, b"nameserver 10.0.0.1\n# exact\n").unwrap();
        let b = backup_resolv(&p).unwrap();
        write_resolv(&p, &TunnelConfig::default()).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("198.18.0.2"));
        restore_resolv(&p, &b).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"nameserver 10.0.0.1\n# exact\n"
        );
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("../run/x/stub-resolv.conf", &p).unwrap();
        let b = backup_resolv(&p).unwrap();
        assert_eq!(b, ResolvBackup::Symlink("../run/x/stub-resolv.conf".into()));
        write_resolv(&p, &TunnelConfig::default()).unwrap();
        assert!(!std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        restore_resolv(&p, &b).unwrap();
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            PathBuf::from("../run/x/stub-resolv.conf")
        );
        let st = SavedState {
            tun: "wt1-0".into(),
            resolv: Some(b),
            ..Default::default()
        };
        let sf = dir.path().join("state.json");
        save(&sf, &st).unwrap();
        let back: SavedState = serde_json::from_slice(&std::fs::read(&sf).unwrap()).unwrap();
        assert_eq!(back, st);
    }
}

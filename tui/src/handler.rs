//! `warren install-handler`: registers warren as the desktop's `magnet:` handler.

use std::path::{Path, PathBuf};

/// Name of the desktop entry we write.
pub const DESKTOP_FILE: &str = "warren-magnet.desktop";

/// The .desktop entry text for `exe`.
pub fn desktop_entry(exe: &Path) -> String {
    format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Name=warren\n\
         GenericName=Anonymous BitTorrent\n\
         Comment=Open magnet links anonymously with warren\n\
         Exec={} open %u\n\
         Terminal=false\n\
         NoDisplay=true\n\
         Categories=Network;FileTransfer;P2P;\n\
         MimeType=x-scheme-handler/magnet;\n",
        desktop_exec_quote(exe)
    )
}

/// Quotes a path for a desktop entry's `Exec=` key (the spec's double-quote rules).
fn desktop_exec_quote(exe: &Path) -> String {
    let s = exe.to_string_lossy();
    let needs = s
        .chars()
        .any(|c| c.is_whitespace() || "\"'\\><~|&;$*?#()`".contains(c));
    if !needs {
        return s.into_owned();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '`' | '$' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// What `install` did, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub desktop_file: PathBuf,
    /// `Some(true)` if `xdg-mime default` ran and succeeded, `Some(false)` if it failed,
    /// `None` if xdg-mime is not installed.
    pub xdg_mime: Option<bool>,
}

/// Writes `<data_home>/applications/warren-magnet.desktop` for `exe`, then runs
/// `xdg-mime default warren-magnet.desktop x-scheme-handler/magnet` if `xdg_mime` is given.
pub fn install(
    data_home: &Path,
    exe: &Path,
    xdg_mime: Option<&Path>,
) -> std::io::Result<InstallReport> {
    let apps = data_home.join("applications");
    std::fs::create_dir_all(&apps)?;
    let file = apps.join(DESKTOP_FILE);
    std::fs::write(&file, desktop_entry(exe))?;
    let xdg_mime = xdg_mime.map(|prog| {
        std::process::Command::new(prog)
            .args(["default", DESKTOP_FILE, "x-scheme-handler/magnet"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    Ok(InstallReport {
        desktop_file: file,
        xdg_mime,
    })
}

/// Finds `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_has_mime_and_exec() {
        let e = desktop_entry(Path::new("/usr/bin/warren"));
        assert!(e.starts_with("[Desktop Entry]\n"));
        assert!(e.contains("\nMimeType=x-scheme-handler/magnet;\n"));
        assert!(e.contains("\nExec=/usr/bin/warren open %u\n"));
        let q = desktop_entry(Path::new("/opt/my apps/warren"));
        assert!(
            q.contains("\nExec=\"/opt/my apps/warren\" open %u\n"),
            "{q}"
        );
    }

    #[test]
    fn install_writes_file_and_runs_xdg_mime() {
        let dir = tempfile::tempdir().unwrap();
        let r = install(dir.path(), Path::new("/bin/warren"), None).unwrap();
        assert_eq!(
            r.desktop_file,
            dir.path().join("applications").join(DESKTOP_FILE)
        );
        assert_eq!(r.xdg_mime, None);
        let text = std::fs::read_to_string(&r.desktop_file).unwrap();
        assert!(text.contains("Exec=/bin/warren open %u"));

        // A stand-in xdg-mime that records its arguments.
        let log = dir.path().join("args");
        let fake = dir.path().join("xdg-mime");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$@\" > {}\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = install(dir.path(), Path::new("/bin/warren"), Some(&fake)).unwrap();
        assert_eq!(r.xdg_mime, Some(true));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "default warren-magnet.desktop x-scheme-handler/magnet\n"
        );
    }
}

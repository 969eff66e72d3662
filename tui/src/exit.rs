//! Exit statuses. Most commands exit 0 or 1; `warren tunnel -- CMD` exits like `ip netns exec`
//! or `env`: with the program's own status (128+N if it died of signal N), and with codes of
//! its own, listed in `warren tunnel --help`, when warren itself fails.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `warren tunnel` itself failed (config, overlay, namespace, tun, dashboard).
pub const WRAPPER_FAILED: u8 = 125;
/// The program was found but cannot be run.
pub const NOT_EXECUTABLE: u8 = 126;
/// The program was not found.
pub const NOT_FOUND: u8 = 127;

/// How a wrapped program ended, or why it could not start; carried as an error so that
/// `main` exits with its code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrapperExit {
    /// The program's own non-zero status: warren exits with it and prints nothing.
    #[error("the wrapped program exited with status {0}")]
    Status(u8),
    #[error("{0}: command not found")]
    NotFound(String),
    #[error("{0}: cannot run it: {1}")]
    NotExecutable(String, String),
}

impl WrapperExit {
    pub fn code(&self) -> u8 {
        match self {
            WrapperExit::Status(c) => *c,
            WrapperExit::NotFound(_) => NOT_FOUND,
            WrapperExit::NotExecutable(..) => NOT_EXECUTABLE,
        }
    }

    /// From a shell-style exit code (0-255; anything else is clamped to 255).
    pub fn from_code(code: i32) -> WrapperExit {
        WrapperExit::Status(u8::try_from(code).unwrap_or(255))
    }
}

/// The exit code for a command's error, and the message to print (none for a program's own
/// status). `wrapper` = the command was `warren tunnel -- CMD`.
pub fn for_error(e: &anyhow::Error, wrapper: bool) -> (u8, Option<String>) {
    if let Some(w) = e.downcast_ref::<WrapperExit>() {
        return match w {
            WrapperExit::Status(c) => (*c, None),
            other => (other.code(), Some(format!("{e:#}"))),
        };
    }
    let code = if wrapper { WRAPPER_FAILED } else { 1 };
    (code, Some(format!("{e:#}")))
}

/// Finds `prog` as `execvp` would (a name with a `/` is a path, else each `PATH` entry), so
/// that a missing or unrunnable program is reported (127, 126) before any namespace is made.
pub fn find_program(prog: &str, path_var: Option<&OsStr>) -> Result<PathBuf, WrapperExit> {
    let check = |p: &Path| -> Option<Result<PathBuf, String>> {
        let md = std::fs::metadata(p).ok()?;
        if md.is_dir() {
            return Some(Err("it is a directory".into()));
        }
        if md.permissions().mode() & 0o111 == 0 {
            return Some(Err("it is not executable".into()));
        }
        Some(Ok(p.to_path_buf()))
    };
    if prog.is_empty() {
        return Err(WrapperExit::NotFound(String::new()));
    }
    if prog.contains('/') {
        return match check(Path::new(prog)) {
            Some(Ok(p)) => Ok(p),
            Some(Err(why)) => Err(WrapperExit::NotExecutable(prog.into(), why)),
            None => Err(WrapperExit::NotFound(prog.into())),
        };
    }
    let path = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut unrunnable = None;
    for dir in std::env::split_paths(path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        match check(&dir.join(prog)) {
            Some(Ok(p)) => return Ok(p),
            Some(Err(why)) => {
                unrunnable.get_or_insert(why);
            }
            None => {}
        }
    }
    Err(match unrunnable {
        Some(why) => WrapperExit::NotExecutable(prog.into(), why),
        None => WrapperExit::NotFound(prog.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_for_errors() {
        let e = anyhow::Error::from(WrapperExit::Status(7));
        assert_eq!(for_error(&e, true), (7, None));
        let e = anyhow::anyhow!("no overlay");
        assert_eq!(for_error(&e, true).0, WRAPPER_FAILED);
        assert_eq!(for_error(&e, false).0, 1);
        let e = anyhow::Error::from(WrapperExit::NotFound("nope".into()));
        let (c, m) = for_error(&e, true);
        assert_eq!(c, NOT_FOUND);
        assert!(m.unwrap().contains("nope: command not found"));
        assert_eq!(WrapperExit::from_code(137), WrapperExit::Status(137));
        assert_eq!(WrapperExit::from_code(-1), WrapperExit::Status(255));
    }

    #[test]
    fn programs_are_found_like_execvp() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, "x").unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(find_program("tool", Some(&path)).unwrap(), exe);
        assert_eq!(
            find_program("missing", Some(&path)).unwrap_err().code(),
            NOT_FOUND
        );
        assert_eq!(
            find_program("data", Some(&path)).unwrap_err().code(),
            NOT_EXECUTABLE
        );
        assert_eq!(
            find_program(plain.to_str().unwrap(), None)
                .unwrap_err()
                .code(),
            NOT_EXECUTABLE
        );
        assert_eq!(
            find_program("/nonexistent/x", None).unwrap_err().code(),
            NOT_FOUND
        );
        assert!(find_program(exe.to_str().unwrap(), None).is_ok());
    }
}

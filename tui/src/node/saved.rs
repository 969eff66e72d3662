//! The transfers a `warren node` was running, kept on disk so that a restart (or a crash) brings
//! them back: one small TOML file per transfer, `<data-dir>/transfers/<infohash>.toml`.
//!
//! The file says what the user asked for (the magnet link, the directory, the hop count, paused or
//! not); what was already downloaded is in the transfer's resume database
//! (`<data-dir>/resume/<infohash>`), so a restored transfer verifies nothing twice and downloads
//! only the pieces it lacked. Files are written to a temporary name and renamed, so a kill leaves
//! the old record or the new one, never half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One transfer as the user set it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedTransfer {
    pub magnet: String,
    pub dir: PathBuf,
    pub hops: u8,
    #[serde(default)]
    pub paused: bool,
}

/// The directory of saved transfers.
#[derive(Debug, Clone)]
pub struct SavedTransfers {
    dir: PathBuf,
}

/// A saved transfer that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("saved transfer {}: {reason}", path.display())]
pub struct SavedError {
    pub path: PathBuf,
    pub reason: String,
}

impl SavedTransfers {
    pub fn new(dir: PathBuf) -> SavedTransfers {
        SavedTransfers { dir }
    }

    fn path(&self, info_hash: &str) -> PathBuf {
        self.dir.join(format!("{info_hash}.toml"))
    }

    /// Writes (or replaces) the record of `info_hash`.
    pub fn save(&self, info_hash: &str, t: &SavedTransfer) -> Result<(), SavedError> {
        let path = self.path(info_hash);
        let err = |reason: String| SavedError {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| err(format!("cannot create dir: {e}")))?;
        let text = toml::to_string(t).map_err(|e| err(e.to_string()))?;
        let tmp = self.dir.join(format!(".{info_hash}.toml.tmp"));
        std::fs::write(&tmp, text).map_err(|e| err(format!("cannot write: {e}")))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(format!("cannot rename into place: {e}")))
    }

    /// Changes the record of `info_hash`, if there is one.
    pub fn update(
        &self,
        info_hash: &str,
        f: impl FnOnce(&mut SavedTransfer),
    ) -> Result<(), SavedError> {
        let path = self.path(info_hash);
        match read(&path) {
            Ok(Some(mut t)) => {
                f(&mut t);
                self.save(info_hash, &t)
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Forgets `info_hash` (a removed transfer).
    pub fn remove(&self, info_hash: &str) -> Result<(), SavedError> {
        let path = self.path(info_hash);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SavedError {
                path,
                reason: format!("cannot remove: {e}"),
            }),
        }
    }

    /// Every saved transfer, in file-name order; a file that cannot be read is an error in the
    /// list (and stays on disk: nothing the user set up is thrown away because of a bad byte).
    pub fn load_all(&self) -> Vec<Result<SavedTransfer, SavedError>> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "toml")
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect(),
            Err(_) => return Vec::new(),
        };
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| read(&p).transpose())
            .collect()
    }
}

fn read(path: &Path) -> Result<Option<SavedTransfer>, SavedError> {
    let err = |reason: String| SavedError {
        path: path.to_path_buf(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let t: SavedTransfer = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
    if !(1..=3).contains(&t.hops) {
        return Err(err(format!("hops must be 1, 2 or 3, not {}", t.hops)));
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(paused: bool) -> SavedTransfer {
        SavedTransfer {
            magnet: "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a%20b".into(),
            dir: PathBuf::from("/tmp/dl dir"),
            hops: 3,
            paused,
        }
    }

    #[test]
    fn save_update_load_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = SavedTransfers::new(d.path().join("transfers"));
        assert!(s.load_all().is_empty(), "no directory yet: nothing saved");
        s.save("bb", &rec(false)).unwrap();
        s.save("aa", &rec(false)).unwrap();
        s.update("aa", |t| t.paused = true).unwrap();
        s.update("cc", |t| t.paused = true).unwrap(); // none: nothing happens
        let all: Vec<_> = s.load_all().into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(all, vec![rec(true), rec(false)]);
        s.remove("aa").unwrap();
        s.remove("aa").unwrap(); // already gone: fine
        assert_eq!(s.load_all().len(), 1);
        // no temporary files are left behind
        let names: Vec<_> = std::fs::read_dir(d.path().join("transfers"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("bb.toml")]);
    }

    #[test]
    fn a_bad_file_is_reported_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = SavedTransfers::new(d.path().to_path_buf());
        s.save("good", &rec(false)).unwrap();
        std::fs::write(d.path().join("junk.toml"), "magnet = 5\n").unwrap();
        std::fs::write(
            d.path().join("hops.toml"),
            "magnet = \"magnet:?\"\ndir = \"/x\"\nhops = 9\n",
        )
        .unwrap();
        std::fs::write(d.path().join("notes.txt"), "not a record").unwrap();
        std::fs::write(d.path().join(".half.toml.tmp"), "magn").unwrap();
        let all = s.load_all();
        assert_eq!(all.len(), 3, "{all:?}");
        let errs: Vec<String> = all
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs
            .iter()
            .any(|e| e.contains("hops must be 1, 2 or 3, not 9")));
        assert!(errs.iter().any(|e| e.contains("junk.toml")));
        assert!(d.path().join("junk.toml").exists());
    }
}

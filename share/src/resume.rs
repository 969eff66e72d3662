//! Resume state in `sled`: per torrent (one tree named by the hex infohash) the metadata (raw
//! info dict), download directory, trackers, paused flag and the bitfield of verified pieces.
//!
//! Guarantee (see docs/ARCHITECTURE.md "share engine"): a piece bit is persisted only after the
//! piece's data was written (and, with `sync_before_persist`, fdatasync'd); the bitfield is
//! flushed to disk regularly. After a
//! crash or kill -9 every persisted bit is trustworthy; pieces not persisted (those in flight
//! or completed since the last flush) are downloaded again.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::bencode::{self, Value};

#[derive(Debug, Error)]
pub enum ResumeError {
    #[error("resume database: {0}")]
    Db(#[from] sled::Error),
    #[error("resume record for {0} is corrupt: {1}")]
    Corrupt(String, &'static str),
}

/// Everything needed to restart a torrent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumeData {
    pub info_hash: [u8; 20],
    /// The raw info dict, once known.
    pub raw_info: Option<Vec<u8>>,
    pub dir: PathBuf,
    pub trackers: Vec<String>,
    pub paused: bool,
    /// Verified pieces (wire-order bytes), if any were saved.
    pub bitfield: Option<Vec<u8>>,
    pub name: Option<String>,
}

/// Handle on the resume database.
#[derive(Clone)]
pub struct ResumeStore {
    db: sled::Db,
}

impl ResumeStore {
    pub fn open(path: &Path) -> Result<Self, ResumeError> {
        Ok(ResumeStore {
            db: sled::open(path)?,
        })
    }

    fn tree(&self, ih: &[u8; 20]) -> Result<sled::Tree, ResumeError> {
        Ok(self.db.open_tree(format!("t/{}", hex::encode(ih)))?)
    }

    /// Store everything but the bitfield.
    pub fn save_torrent(&self, r: &ResumeData) -> Result<(), ResumeError> {
        let t = self.tree(&r.info_hash)?;
        if let Some(raw) = &r.raw_info {
            t.insert("info", raw.as_slice())?;
        }
        t.insert("dir", r.dir.as_os_str().as_encoded_bytes())?;
        let trackers = Value::List(
            r.trackers
                .iter()
                .map(|s| Value::Bytes(s.as_bytes().to_vec()))
                .collect(),
        );
        t.insert("trackers", bencode::encode(&trackers))?;
        t.insert("paused", &[r.paused as u8])?;
        if let Some(n) = &r.name {
            t.insert("name", n.as_bytes())?;
        }
        Ok(())
    }

    pub fn save_bitfield(&self, ih: &[u8; 20], bits: &[u8]) -> Result<(), ResumeError> {
        self.tree(ih)?.insert("bitfield", bits)?;
        Ok(())
    }

    pub fn set_paused(&self, ih: &[u8; 20], paused: bool) -> Result<(), ResumeError> {
        self.tree(ih)?.insert("paused", &[paused as u8])?;
        Ok(())
    }

    pub fn load(&self, ih: &[u8; 20]) -> Result<Option<ResumeData>, ResumeError> {
        let t = self.tree(ih)?;
        let Some(dir) = t.get("dir")? else {
            return Ok(None);
        };
        let hexname = hex::encode(ih);
        let dir = PathBuf::from(
            String::from_utf8(dir.to_vec())
                .map_err(|_| ResumeError::Corrupt(hexname.clone(), "dir"))?,
        );
        let trackers = match t.get("trackers")? {
            Some(b) => bencode::decode(&b)
                .ok()
                .and_then(|v| {
                    v.as_list().map(|l| {
                        l.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                })
                .ok_or(ResumeError::Corrupt(hexname.clone(), "trackers"))?,
            None => Vec::new(),
        };
        Ok(Some(ResumeData {
            info_hash: *ih,
            raw_info: t.get("info")?.map(|v| v.to_vec()),
            dir,
            trackers,
            paused: t.get("paused")?.is_some_and(|v| v.first() == Some(&1)),
            bitfield: t.get("bitfield")?.map(|v| v.to_vec()),
            name: t
                .get("name")?
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        }))
    }

    /// Infohashes of every stored torrent.
    pub fn list(&self) -> Vec<[u8; 20]> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|n| {
                let s = std::str::from_utf8(&n).ok()?.strip_prefix("t/")?.to_owned();
                let v: [u8; 20] = hex::decode(s).ok()?.try_into().ok()?;
                // a dropped tree may still be listed: only count complete records
                let t = self.tree(&v).ok()?;
                t.contains_key("dir").ok()?.then_some(v)
            })
            .collect()
    }

    pub fn remove(&self, ih: &[u8; 20]) -> Result<(), ResumeError> {
        self.tree(ih)?.clear()?;
        self.db.drop_tree(format!("t/{}", hex::encode(ih)))?;
        Ok(())
    }

    /// Make everything stored so far durable.
    pub fn flush(&self) -> Result<(), ResumeError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = ResumeStore::open(&dir.path().join("db")).unwrap();
        let r = ResumeData {
            info_hash: [3; 20],
            raw_info: Some(b"d4:name1:xe".to_vec()),
            dir: PathBuf::from("/tmp/dl"),
            trackers: vec!["http://127.0.0.1:1/a".into()],
            paused: true,
            bitfield: None,
            name: Some("x".into()),
        };
        s.save_torrent(&r).unwrap();
        s.save_bitfield(&[3; 20], &[0xf0]).unwrap();
        s.flush().unwrap();
        let got = s.load(&[3; 20]).unwrap().unwrap();
        assert_eq!(got.bitfield.as_deref(), Some(&[0xf0][..]));
        assert_eq!(got.trackers, r.trackers);
        assert!(got.paused);
        assert_eq!(s.list(), vec![[3; 20]]);
        assert!(s.load(&[4; 20]).unwrap().is_none());
        s.remove(&[3; 20]).unwrap();
        assert!(s.list().is_empty());
    }
}

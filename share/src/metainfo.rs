//! .torrent metainfo (BitTorrent v1, BEP 3/12/19/27/47), single- and multi-file.
//!
//! Parsing is strict: the bencode must be canonical (sorted keys, no trailing bytes, see
//! [`crate::bencode`]) and the info dict must be self-consistent (piece length within
//! [`MIN_PIECE_LENGTH`]..=[`MAX_PIECE_LENGTH`], `pieces` a multiple of 20 bytes, one hash per piece,
//! file lengths summing to the total).
//!
//! **File names are never rewritten: a torrent whose `name` or any path component is unsafe is
//! rejected** with [`MetainfoError::UnsafePath`] naming the component. Unsafe means: empty, `.`,
//! `..`, containing `/`, `\` or NUL, or a Windows drive prefix (`C:`). Duplicate file paths and a
//! file that is also used as a directory are rejected too. So every accepted torrent's
//! [`Info::safe_relative_paths`] stays inside the download directory.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::bencode::{self, BencodeError, Limits, Value};
use crate::infohash::InfoHash;

/// Smallest accepted piece length (1 KiB).
pub const MIN_PIECE_LENGTH: u64 = 1 << 10;
/// Largest accepted piece length (256 MiB).
pub const MAX_PIECE_LENGTH: u64 = 1 << 28;
/// Largest accepted number of files.
pub const MAX_FILES: usize = 1_000_000;

/// A parsed .torrent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// `announce`.
    pub announce: Option<String>,
    /// `announce-list` tiers (BEP 12), empty tiers dropped.
    pub announce_list: Vec<Vec<String>>,
    /// The parsed `info` dict.
    pub info: Info,
    /// SHA-1 of `raw_info`.
    pub info_hash: InfoHash,
    /// The exact bytes of the `info` dict as found in the file.
    pub raw_info: Vec<u8>,
    /// `comment`.
    pub comment: Option<String>,
    /// `created by`.
    pub created_by: Option<String>,
    /// `creation date` (Unix seconds).
    pub creation_date: Option<i64>,
    /// `url-list` web seeds (BEP 19), a single string or a list.
    pub url_list: Vec<String>,
}

/// The `info` dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Suggested file (single-file) or directory (multi-file) name; a safe path component.
    pub name: String,
    /// Bytes per piece (last piece may be shorter).
    pub piece_length: u64,
    /// SHA-1 of each piece.
    pub pieces: Vec<[u8; 20]>,
    /// Files in torrent order with their offsets in the concatenated stream. A single-file
    /// torrent has one entry whose path is `[name]`.
    pub files: Vec<FileEntry>,
    /// Sum of file lengths.
    pub total_length: u64,
    /// BEP 27 private flag.
    pub private: bool,
    /// True if the info dict used `files` (multi-file layout: files live under `name/`).
    pub multi_file: bool,
}

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components relative to the torrent's root (for single-file: `[name]`; for
    /// multi-file: the `path` list, without `name`). Every component is safe.
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the first byte in the concatenated torrent stream.
    pub offset: u64,
    /// BEP 47 padding file (`attr` contains `p`): not written to disk.
    pub padding: bool,
}

/// Why a .torrent (or info dict) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// Bencode-level problem.
    #[error("torrent is not valid bencode: {0}")]
    Bencode(#[from] BencodeError),
    /// Top level or `info` is not a dict.
    #[error("torrent {0} is not a dict")]
    NotADict(&'static str),
    /// Required key absent.
    #[error("torrent is missing required key {0:?}")]
    Missing(&'static str),
    /// Key has the wrong type or an invalid value.
    #[error("torrent key {key:?} is invalid: {why}")]
    Invalid {
        /// Key name.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A file name that could escape the download directory or is otherwise unusable.
    #[error("torrent has an unsafe file path component {component:?} ({why})")]
    UnsafePath {
        /// The offending component (lossy UTF-8).
        component: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two files with the same path, or a file that is also a directory.
    #[error("torrent has conflicting file paths: {0}")]
    PathConflict(String),
    /// Text field not valid UTF-8.
    #[error("torrent key {0:?} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// Piece count does not match total length.
    #[error("torrent has {have} piece hashes but {total} bytes at piece length {piece_length} need {need}")]
    PieceCount {
        /// Hashes present.
        have: u64,
        /// Hashes needed.
        need: u64,
        /// Total length.
        total: u64,
        /// Piece length.
        piece_length: u64,
    },
    /// Info bytes hash to something else than expected (BEP 9 metadata).
    #[error("info dict hashes to {actual}, expected {expected}")]
    HashMismatch {
        /// Expected info-hash.
        expected: InfoHash,
        /// SHA-1 of the received bytes.
        actual: InfoHash,
    },
}

fn invalid(key: &'static str, why: impl Into<String>) -> MetainfoError {
    MetainfoError::Invalid {
        key,
        why: why.into(),
    }
}

impl Metainfo {
    /// Parse a .torrent file.
    pub fn from_bytes(buf: &[u8]) -> Result<Metainfo, MetainfoError> {
        let (root, spans) = match bencode::decode_with_spans(buf, &Limits::default()) {
            Ok(x) => x,
            Err(BencodeError::NotADict) => return Err(MetainfoError::NotADict("top level")),
            Err(e) => return Err(e.into()),
        };
        let span = spans
            .iter()
            .find(|(k, _)| k == b"info")
            .map(|(_, r)| r.clone())
            .ok_or(MetainfoError::Missing("info"))?;
        let raw_info = buf[span].to_vec();
        let info_val = root.get(b"info").ok_or(MetainfoError::Missing("info"))?;
        let info = Info::from_value(info_val)?;
        let info_hash = InfoHash::of_info_bytes(&raw_info);

        let announce = opt_string(&root, b"announce", "announce")?;
        let mut announce_list = Vec::new();
        if let Some(v) = root.get(b"announce-list") {
            let tiers = v
                .as_list()
                .ok_or_else(|| invalid("announce-list", "not a list"))?;
            for tier in tiers {
                let urls = tier
                    .as_list()
                    .ok_or_else(|| invalid("announce-list", "tier is not a list"))?;
                let mut out = Vec::new();
                for u in urls {
                    let s = u
                        .as_str()
                        .ok_or_else(|| invalid("announce-list", "URL is not a UTF-8 string"))?;
                    if !s.is_empty() {
                        out.push(s.to_string());
                    }
                }
                if !out.is_empty() {
                    announce_list.push(out);
                }
            }
        }
        let url_list = match root.get(b"url-list") {
            None => Vec::new(),
            Some(Value::Bytes(b)) if b.is_empty() => Vec::new(),
            Some(Value::Bytes(b)) => vec![std::str::from_utf8(b)
                .map_err(|_| MetainfoError::NotUtf8("url-list"))?
                .to_string()],
            Some(Value::List(l)) => {
                let mut out = Vec::new();
                for u in l {
                    let s = u
                        .as_str()
                        .ok_or_else(|| invalid("url-list", "entry is not a UTF-8 string"))?;
                    if !s.is_empty() {
                        out.push(s.to_string());
                    }
                }
                out
            }
            Some(_) => return Err(invalid("url-list", "not a string or list")),
        };
        let creation_date = match root.get(b"creation date") {
            None => None,
            Some(v) => Some(
                v.as_int()
                    .ok_or_else(|| invalid("creation date", "not an integer"))?,
            ),
        };
        Ok(Metainfo {
            announce: announce.filter(|s| !s.is_empty()),
            announce_list,
            info,
            info_hash,
            raw_info,
            comment: opt_string_lossy(&root, b"comment"),
            created_by: opt_string_lossy(&root, b"created by"),
            creation_date,
            url_list,
        })
    }

    /// Every tracker URL: `announce` then the tiers, without duplicates.
    pub fn trackers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self
            .announce
            .iter()
            .chain(self.announce_list.iter().flatten())
        {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    /// Encode as a .torrent, with the info dict copied verbatim from `raw_info` (so the
    /// info-hash is unchanged). Top-level keys not in this struct are not kept; a single web
    /// seed is written as a string, several as a list.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut top: BTreeMap<Vec<u8>, Option<Value>> = BTreeMap::new();
        if let Some(a) = &self.announce {
            top.insert(b"announce".to_vec(), Some(Value::string(a)));
        }
        if !self.announce_list.is_empty() {
            let tiers = self
                .announce_list
                .iter()
                .map(|t| Value::List(t.iter().map(|u| Value::string(u)).collect()))
                .collect();
            top.insert(b"announce-list".to_vec(), Some(Value::List(tiers)));
        }
        if let Some(c) = &self.comment {
            top.insert(b"comment".to_vec(), Some(Value::string(c)));
        }
        if let Some(c) = &self.created_by {
            top.insert(b"created by".to_vec(), Some(Value::string(c)));
        }
        if let Some(d) = self.creation_date {
            top.insert(b"creation date".to_vec(), Some(Value::Int(d)));
        }
        top.insert(b"info".to_vec(), None);
        match self.url_list.as_slice() {
            [] => {}
            [one] => {
                top.insert(b"url-list".to_vec(), Some(Value::string(one)));
            }
            many => {
                let l = many.iter().map(|u| Value::string(u)).collect();
                top.insert(b"url-list".to_vec(), Some(Value::List(l)));
            }
        }
        let mut out = vec![b'd'];
        for (k, v) in &top {
            out.extend_from_slice(k.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(k);
            match v {
                Some(v) => bencode::encode_into(v, &mut out),
                None => out.extend_from_slice(&self.raw_info),
            }
        }
        out.push(b'e');
        out
    }
}

fn opt_string(d: &Value, key: &[u8], name: &'static str) -> Result<Option<String>, MetainfoError> {
    match d.get(key) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(
            std::str::from_utf8(b)
                .map_err(|_| MetainfoError::NotUtf8(name))?
                .to_string(),
        )),
        Some(_) => Err(invalid(name, "not a string")),
    }
}

/// Informational text: wrong type or bad UTF-8 is not worth rejecting a torrent for.
fn opt_string_lossy(d: &Value, key: &[u8]) -> Option<String> {
    d.get(key)
        .and_then(Value::as_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

impl Info {
    /// Parse a bencoded info dict (BEP 9 metadata). Canonical bencode is required, so the bytes
    /// are exactly what the info-hash covers.
    pub fn from_bytes(raw_info: &[u8]) -> Result<Info, MetainfoError> {
        let v = bencode::decode(raw_info)?;
        Info::from_value(&v)
    }

    /// [`Info::from_bytes`] after checking that SHA-1(`raw_info`) equals `expected`.
    pub fn from_bytes_verified(
        raw_info: &[u8],
        expected: &InfoHash,
    ) -> Result<Info, MetainfoError> {
        let actual = InfoHash::of_info_bytes(raw_info);
        if actual != *expected {
            return Err(MetainfoError::HashMismatch {
                expected: *expected,
                actual,
            });
        }
        Info::from_bytes(raw_info)
    }

    /// Build from a decoded info dict.
    pub fn from_value(v: &Value) -> Result<Info, MetainfoError> {
        if v.as_dict().is_none() {
            return Err(MetainfoError::NotADict("info"));
        }
        let name =
            utf8_field(v, b"name", b"name.utf-8", "name")?.ok_or(MetainfoError::Missing("name"))?;
        check_component(&name)?;
        let piece_length = v
            .get(b"piece length")
            .ok_or(MetainfoError::Missing("piece length"))?
            .as_int()
            .ok_or_else(|| invalid("piece length", "not an integer"))?;
        let piece_length = u64::try_from(piece_length)
            .ok()
            .filter(|p| (MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(p))
            .ok_or_else(|| {
                invalid(
                    "piece length",
                    format!("{piece_length} is outside {MIN_PIECE_LENGTH}..={MAX_PIECE_LENGTH}"),
                )
            })?;
        let pieces_raw = v
            .get(b"pieces")
            .ok_or(MetainfoError::Missing("pieces"))?
            .as_bytes()
            .ok_or_else(|| invalid("pieces", "not a byte string"))?;
        if pieces_raw.len() % 20 != 0 {
            return Err(invalid(
                "pieces",
                format!("length {} is not a multiple of 20", pieces_raw.len()),
            ));
        }
        let pieces: Vec<[u8; 20]> = pieces_raw
            .chunks_exact(20)
            .map(|c| {
                let mut h = [0u8; 20];
                h.copy_from_slice(c);
                h
            })
            .collect();
        let private = match v.get(b"private") {
            None => false,
            Some(p) => {
                p.as_int()
                    .ok_or_else(|| invalid("private", "not an integer"))?
                    == 1
            }
        };

        let mut files = Vec::new();
        let mut total: u64 = 0;
        let multi_file = match (v.get(b"length"), v.get(b"files")) {
            (Some(_), Some(_)) => {
                return Err(invalid("files", "both \"length\" and \"files\" present"))
            }
            (None, None) => return Err(MetainfoError::Missing("length or files")),
            (Some(len), None) => {
                total = nonneg(len, "length")?;
                files.push(FileEntry {
                    path: vec![name.clone()],
                    length: total,
                    offset: 0,
                    padding: false,
                });
                false
            }
            (None, Some(list)) => {
                let list = list
                    .as_list()
                    .ok_or_else(|| invalid("files", "not a list"))?;
                if list.is_empty() {
                    return Err(invalid("files", "empty list"));
                }
                if list.len() > MAX_FILES {
                    return Err(invalid("files", format!("more than {MAX_FILES} files")));
                }
                for f in list {
                    if f.as_dict().is_none() {
                        return Err(invalid("files", "entry is not a dict"));
                    }
                    let length = nonneg(
                        f.get(b"length")
                            .ok_or(MetainfoError::Missing("files.length"))?,
                        "files.length",
                    )?;
                    let comps = match f.get(b"path.utf-8").and_then(Value::as_list) {
                        Some(l) => path_list(l, "path.utf-8")?,
                        None => path_list(
                            f.get(b"path")
                                .ok_or(MetainfoError::Missing("files.path"))?
                                .as_list()
                                .ok_or_else(|| invalid("path", "not a list"))?,
                            "path",
                        )?,
                    };
                    if comps.is_empty() {
                        return Err(MetainfoError::UnsafePath {
                            component: String::new(),
                            why: "empty path",
                        });
                    }
                    for c in &comps {
                        check_component(c)?;
                    }
                    let padding = f
                        .get(b"attr")
                        .and_then(Value::as_bytes)
                        .is_some_and(|a| a.contains(&b'p'));
                    files.push(FileEntry {
                        path: comps,
                        length,
                        offset: total,
                        padding,
                    });
                    total = total
                        .checked_add(length)
                        .ok_or_else(|| invalid("files", "total length overflows"))?;
                }
                check_conflicts(&files)?;
                true
            }
        };
        if total == 0 {
            return Err(invalid("length", "torrent has no data (total length 0)"));
        }
        let need = total.div_ceil(piece_length);
        if pieces.len() as u64 != need {
            return Err(MetainfoError::PieceCount {
                have: pieces.len() as u64,
                need,
                total,
                piece_length,
            });
        }
        Ok(Info {
            name,
            piece_length,
            pieces,
            files,
            total_length: total,
            private,
            multi_file,
        })
    }

    /// Number of pieces.
    pub fn num_pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Length of piece `i` (the last one may be shorter); 0 if `i` is out of range.
    pub fn piece_len(&self, i: usize) -> u64 {
        let n = self.pieces.len();
        if i >= n {
            0
        } else if i + 1 == n {
            self.total_length - self.piece_length * (n as u64 - 1)
        } else {
            self.piece_length
        }
    }

    /// SHA-1 of piece `i`, if it exists.
    pub fn piece_hash(&self, i: usize) -> Option<&[u8; 20]> {
        self.pieces.get(i)
    }

    /// Relative path of a file under the download directory (`name` for single-file,
    /// `name/comp/...` for multi-file). Components were validated at parse time.
    pub fn file_path(&self, f: &FileEntry) -> PathBuf {
        let mut p = PathBuf::new();
        if self.multi_file {
            p.push(&self.name);
        }
        for c in &f.path {
            p.push(c);
        }
        p
    }

    /// The relative path of every file (same order as `files`). Each path is relative, has only
    /// normal components and so cannot escape the directory it is joined to.
    pub fn safe_relative_paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| self.file_path(f)).collect()
    }

    /// Encode this info dict (canonical bencode). For a parsed torrent prefer the original
    /// `Metainfo::raw_info`: unknown keys are not kept here.
    pub fn to_value(&self) -> Value {
        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        d.insert(b"name".to_vec(), Value::string(&self.name));
        d.insert(
            b"piece length".to_vec(),
            Value::Int(self.piece_length as i64),
        );
        d.insert(b"pieces".to_vec(), Value::Bytes(self.pieces.concat()));
        if self.private {
            d.insert(b"private".to_vec(), Value::Int(1));
        }
        if self.multi_file {
            let files = self
                .files
                .iter()
                .map(|f| {
                    let mut fd: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
                    fd.insert(b"length".to_vec(), Value::Int(f.length as i64));
                    fd.insert(
                        b"path".to_vec(),
                        Value::List(f.path.iter().map(|c| Value::string(c)).collect()),
                    );
                    if f.padding {
                        fd.insert(b"attr".to_vec(), Value::string("p"));
                    }
                    Value::Dict(fd)
                })
                .collect();
            d.insert(b"files".to_vec(), Value::List(files));
        } else {
            d.insert(b"length".to_vec(), Value::Int(self.total_length as i64));
        }
        Value::Dict(d)
    }
}

fn nonneg(v: &Value, key: &'static str) -> Result<u64, MetainfoError> {
    let i = v.as_int().ok_or_else(|| invalid(key, "not an integer"))?;
    u64::try_from(i).map_err(|_| invalid(key, format!("negative ({i})")))
}

/// Prefer the `.utf-8` variant; otherwise the plain key must be UTF-8.
fn utf8_field(
    d: &Value,
    key: &[u8],
    utf8_key: &[u8],
    name: &'static str,
) -> Result<Option<String>, MetainfoError> {
    if let Some(s) = d.get(utf8_key).and_then(Value::as_str) {
        return Ok(Some(s.to_string()));
    }
    match d.get(key) {
        None => Ok(None),
        Some(Value::Bytes(b)) => std::str::from_utf8(b)
            .map(|s| Some(s.to_string()))
            .map_err(|_| MetainfoError::NotUtf8(name)),
        Some(_) => Err(invalid(name, "not a string")),
    }
}

fn path_list(l: &[Value], key: &'static str) -> Result<Vec<String>, MetainfoError> {
    l.iter()
        .map(|c| match c {
            Value::Bytes(b) => std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| MetainfoError::NotUtf8(key)),
            _ => Err(invalid(key, "component is not a string")),
        })
        .collect()
}

/// Reject a path component that is not a plain, single, relative name.
pub fn check_component(c: &str) -> Result<(), MetainfoError> {
    let bad = |why| {
        Err(MetainfoError::UnsafePath {
            component: c.to_string(),
            why,
        })
    };
    if c.is_empty() {
        return bad("empty component");
    }
    if c == "." || c == ".." {
        return bad("relative directory reference");
    }
    if c.contains('/') || c.contains('\\') {
        return bad("contains a path separator");
    }
    if c.contains('\0') {
        return bad("contains NUL");
    }
    let b = c.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return bad("Windows drive prefix");
    }
    if c.len() > 255 {
        return bad("longer than 255 bytes");
    }
    Ok(())
}

fn check_conflicts(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut paths: HashSet<&[String]> = HashSet::with_capacity(files.len());
    for f in files {
        if !paths.insert(&f.path) {
            return Err(MetainfoError::PathConflict(format!(
                "{} appears twice",
                f.path.join("/")
            )));
        }
    }
    for f in files {
        for i in 1..f.path.len() {
            if paths.contains(&f.path[..i]) {
                return Err(MetainfoError::PathConflict(format!(
                    "{} is both a file and a directory",
                    f.path[..i].join("/")
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Component;

    fn single(piece_length: i64, length: i64, npieces: usize) -> Vec<u8> {
        let info = Value::dict([
            ("length", Value::Int(length)),
            ("name", Value::string("file.bin")),
            ("piece length", Value::Int(piece_length)),
            ("pieces", Value::bytes(vec![7u8; 20 * npieces])),
        ]);
        Value::dict([
            ("announce", Value::string("http://127.0.0.1:6969/announce")),
            ("info", info),
        ])
        .to_bytes()
    }

    fn multi(paths: &[&[&str]]) -> Value {
        let files = paths
            .iter()
            .map(|p| {
                Value::dict([
                    ("length", Value::Int(1000)),
                    (
                        "path",
                        Value::List(p.iter().map(|c| Value::string(c)).collect()),
                    ),
                ])
            })
            .collect();
        Value::dict([
            ("files", Value::List(files)),
            ("name", Value::string("dir")),
            ("piece length", Value::Int(1024)),
            (
                "pieces",
                Value::bytes(vec![1u8; 20 * (1000 * paths.len()).div_ceil(1024)]),
            ),
        ])
    }

    #[test]
    fn single_file() {
        let buf = single(16384, 40000, 3);
        let mi = Metainfo::from_bytes(&buf).unwrap();
        assert_eq!(
            mi.announce.as_deref(),
            Some("http://127.0.0.1:6969/announce")
        );
        assert_eq!(mi.info.name, "file.bin");
        assert_eq!(mi.info.num_pieces(), 3);
        assert_eq!(mi.info.piece_len(0), 16384);
        assert_eq!(mi.info.piece_len(2), 40000 - 2 * 16384);
        assert_eq!(mi.info.piece_len(3), 0);
        assert_eq!(mi.info.piece_hash(1), Some(&[7u8; 20]));
        assert_eq!(mi.info.files.len(), 1);
        assert!(!mi.info.multi_file);
        let span = bencode::dict_value_span(&buf, b"info").unwrap().unwrap();
        assert_eq!(mi.raw_info, &buf[span]);
        assert_eq!(mi.info_hash, InfoHash::of_info_bytes(&mi.raw_info));
        assert_eq!(mi.to_bytes(), buf);
        assert_eq!(
            mi.info.safe_relative_paths(),
            vec![PathBuf::from("file.bin")]
        );
        // BEP 9 path
        let info = Info::from_bytes_verified(&mi.raw_info, &mi.info_hash).unwrap();
        assert_eq!(info, mi.info);
        assert!(matches!(
            Info::from_bytes_verified(&mi.raw_info, &InfoHash([0; 20])),
            Err(MetainfoError::HashMismatch { .. })
        ));
    }

    #[test]
    fn multi_file_offsets() {
        let info = multi(&[&["a", "x.txt"], &["b.txt"], &["a", "y.txt"]]);
        let i = Info::from_value(&info).unwrap();
        assert!(i.multi_file);
        assert_eq!(i.total_length, 3000);
        assert_eq!(
            i.files.iter().map(|f| f.offset).collect::<Vec<_>>(),
            vec![0, 1000, 2000]
        );
        let paths = i.safe_relative_paths();
        assert_eq!(paths[0], PathBuf::from("dir/a/x.txt"));
        for p in paths {
            assert!(p.components().all(|c| matches!(c, Component::Normal(_))));
        }
        // Re-encoding reproduces the dict.
        assert_eq!(i.to_value(), info);
    }

    #[test]
    fn validation_errors() {
        assert!(matches!(
            Metainfo::from_bytes(&single(0, 10, 1)),
            Err(MetainfoError::Invalid {
                key: "piece length",
                ..
            })
        ));
        assert!(matches!(
            Metainfo::from_bytes(&single(16384, 40000, 2)),
            Err(MetainfoError::PieceCount {
                have: 2,
                need: 3,
                ..
            })
        ));
        assert!(matches!(
            Metainfo::from_bytes(&single(16384, 0, 0)),
            Err(MetainfoError::Invalid { key: "length", .. })
        ));
        assert!(matches!(
            Metainfo::from_bytes(&single(16384, -1, 1)),
            Err(MetainfoError::Invalid { key: "length", .. })
        ));
        let mut bad_pieces = multi(&[&["a"]]);
        if let Value::Dict(d) = &mut bad_pieces {
            d.insert(b"pieces".to_vec(), Value::bytes(vec![0u8; 21]));
        }
        assert!(matches!(
            Info::from_value(&bad_pieces),
            Err(MetainfoError::Invalid { key: "pieces", .. })
        ));
        assert!(matches!(
            Metainfo::from_bytes(b"d4:infod4:name1:xee"),
            Err(MetainfoError::Invalid { .. }) | Err(MetainfoError::Missing(_))
        ));
        assert!(matches!(
            Metainfo::from_bytes(b"d8:announce1:xe"),
            Err(MetainfoError::Missing("info"))
        ));
        assert!(matches!(
            Metainfo::from_bytes(b"li1ee"),
            Err(MetainfoError::NotADict(_))
        ));
        // Unsorted keys in a .torrent are rejected.
        assert!(matches!(
            Metainfo::from_bytes(b"d4:infode8:announce1:xe"),
            Err(MetainfoError::Bencode(BencodeError::UnsortedKey { .. }))
        ));
    }

    #[test]
    fn unsafe_paths_rejected() {
        for bad in [
            &["..", "etc", "passwd"][..],
            &["a", "..", "b"],
            &["", "b"],
            &["."],
            &["/etc/passwd"],
            &["a/b"],
            &["a\\b"],
            &["C:", "x"],
            &["c:evil"],
            &["nul\0byte"],
            &[],
        ] {
            let r = Info::from_value(&multi(&[bad]));
            assert!(
                matches!(r, Err(MetainfoError::UnsafePath { .. })),
                "{bad:?} gave {r:?}"
            );
        }
        let mut bad_name = multi(&[&["ok"]]);
        if let Value::Dict(d) = &mut bad_name {
            d.insert(b"name".to_vec(), Value::string(".."));
        }
        assert!(matches!(
            Info::from_value(&bad_name),
            Err(MetainfoError::UnsafePath { .. })
        ));
        assert!(matches!(
            Info::from_value(&multi(&[&["a"], &["a"]])),
            Err(MetainfoError::PathConflict(_))
        ));
        assert!(matches!(
            Info::from_value(&multi(&[&["a"], &["a", "b"]])),
            Err(MetainfoError::PathConflict(_))
        ));
        assert!(Info::from_value(&multi(&[&["..a", "b..", "...", "a b"]])).is_ok());
        // Whole .torrent files: a `..` path and an absolute single-file name.
        let evil = Value::dict([("info", multi(&[&["..", "..", "etc", "passwd"]]))]).to_bytes();
        assert!(matches!(
            Metainfo::from_bytes(&evil),
            Err(MetainfoError::UnsafePath {
                why: "relative directory reference",
                ..
            })
        ));
        let abs = String::from_utf8(single(16384, 40000, 3))
            .unwrap()
            .replace("8:file.bin", "11:/etc/passwd");
        let r = Metainfo::from_bytes(abs.as_bytes());
        assert!(
            matches!(
                r,
                Err(MetainfoError::UnsafePath {
                    why: "contains a path separator",
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn announce_list_and_url_list() {
        let info = multi(&[&["a"]]);
        let buf = Value::dict([
            ("announce", Value::string("http://t1/a")),
            (
                "announce-list",
                Value::List(vec![
                    Value::List(vec![
                        Value::string("http://t1/a"),
                        Value::string("http://t2/a"),
                    ]),
                    Value::List(vec![]),
                    Value::List(vec![Value::string("udp://t3:1")]),
                ]),
            ),
            ("comment", Value::string("hi")),
            ("created by", Value::string("warren")),
            ("info", info),
            ("url-list", Value::string("http://ws/")),
        ])
        .to_bytes();
        let mi = Metainfo::from_bytes(&buf).unwrap();
        assert_eq!(mi.announce_list.len(), 2);
        assert_eq!(
            mi.trackers(),
            vec!["http://t1/a", "http://t2/a", "udp://t3:1"]
        );
        assert_eq!(mi.url_list, vec!["http://ws/"]);
        assert_eq!(mi.comment.as_deref(), Some("hi"));
        assert_eq!(mi.created_by.as_deref(), Some("warren"));
    }
}

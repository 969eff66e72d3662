//! Creating .torrent files (v1) from a file or a directory.
//!
//! Directories are walked recursively; only regular files are included (symlinks and special
//! files are skipped, so a link cannot pull in data from outside the tree), sorted by their path
//! components. Data is hashed in large sequential reads.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::bencode::Value;
use crate::magnet::Magnet;
use crate::metainfo::{
    check_component, Metainfo, MetainfoError, MAX_PIECE_LENGTH, MIN_PIECE_LENGTH,
};

/// Smallest automatic piece length (16 KiB).
pub const AUTO_MIN_PIECE: u64 = 16 << 10;
/// Largest automatic piece length (16 MiB).
pub const AUTO_MAX_PIECE: u64 = 16 << 20;
/// Automatic piece length aims for at most this many pieces.
pub const AUTO_TARGET_PIECES: u64 = 1500;

const READ_CHUNK: usize = 4 << 20;

/// What to put in the torrent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MakeOptions {
    /// Piece length in bytes; `None` picks one with [`auto_piece_length`].
    pub piece_length: Option<u64>,
    /// Tracker URLs: the first becomes `announce`; all go into `announce-list`, one per tier.
    pub trackers: Vec<String>,
    /// Web seed URLs (`url-list`).
    pub web_seeds: Vec<String>,
    /// BEP 27 private flag.
    pub private: bool,
    /// Torrent name; defaults to the file or directory name.
    pub name: Option<String>,
    /// `comment`.
    pub comment: Option<String>,
    /// `created by`; defaults to "warren".
    pub created_by: Option<String>,
    /// `creation date` (Unix seconds); `None` leaves it out (reproducible output).
    pub creation_date: Option<i64>,
}

/// The result of [`make_torrent`].
#[derive(Debug, Clone)]
pub struct Made {
    /// The encoded .torrent.
    pub torrent_bytes: Vec<u8>,
    /// `torrent_bytes` parsed back.
    pub metainfo: Metainfo,
    /// Magnet link for it.
    pub magnet: Magnet,
}

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    /// Reading the file system failed.
    #[error("reading {path}: {err}")]
    Io {
        /// Path being read.
        path: PathBuf,
        /// Underlying error (shown in the message, not chained again as a source).
        err: io::Error,
    },
    /// Nothing to share.
    #[error("{0} contains no data (no non-empty regular files)")]
    Empty(PathBuf),
    /// A file name is not UTF-8 or not a safe component.
    #[error("file name {path:?} cannot be used in a torrent: {why}")]
    BadName {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Piece length outside the accepted range.
    #[error("piece length {0} is outside {MIN_PIECE_LENGTH}..={MAX_PIECE_LENGTH}")]
    BadPieceLength(u64),
    /// A file changed size while it was hashed.
    #[error("{0} changed size while being hashed")]
    Changed(PathBuf),
    /// The produced torrent did not parse back (a bug).
    #[error("created torrent does not parse: {0}")]
    Invalid(#[from] MetainfoError),
}

/// Piece length for `total` bytes: the smallest power of two giving at most
/// [`AUTO_TARGET_PIECES`] pieces, clamped to 16 KiB..=16 MiB.
pub fn auto_piece_length(total: u64) -> u64 {
    let want = total.div_ceil(AUTO_TARGET_PIECES).max(1);
    want.checked_next_power_of_two()
        .unwrap_or(AUTO_MAX_PIECE)
        .clamp(AUTO_MIN_PIECE, AUTO_MAX_PIECE)
}

struct Input {
    abs: PathBuf,
    comps: Vec<String>,
    length: u64,
}

/// Make a torrent of `path` (a regular file, or a directory: multi-file).
pub fn make_torrent(path: &Path, opts: &MakeOptions) -> Result<Made, MakeError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |err| MakeError::Io { path: p, err }
    };
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let default_name = path
        .canonicalize()
        .map_err(io_err(path))?
        .file_name()
        .map(|n| n.to_os_string())
        .ok_or_else(|| MakeError::BadName {
            path: path.to_path_buf(),
            why: "path has no file name".into(),
        })?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => utf8_name(path, &default_name)?,
    };
    check_component(&name).map_err(|e| MakeError::BadName {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;

    let (inputs, multi) = if meta.is_dir() {
        let mut v = Vec::new();
        walk(path, &mut Vec::new(), &mut v)?;
        v.sort_by(|a, b| a.comps.cmp(&b.comps));
        (v, true)
    } else {
        let len = meta.len();
        (
            vec![Input {
                abs: path.to_path_buf(),
                comps: vec![name.clone()],
                length: len,
            }],
            false,
        )
    };
    let total: u64 = inputs.iter().map(|i| i.length).sum();
    if total == 0 {
        return Err(MakeError::Empty(path.to_path_buf()));
    }
    let piece_length = opts
        .piece_length
        .unwrap_or_else(|| auto_piece_length(total));
    if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&piece_length) {
        return Err(MakeError::BadPieceLength(piece_length));
    }
    let pieces = hash_pieces(&inputs, piece_length)?;

    let mut info: Vec<(&str, Value)> = vec![
        ("name", Value::string(&name)),
        ("piece length", Value::Int(piece_length as i64)),
        ("pieces", Value::Bytes(pieces)),
    ];
    if multi {
        let files = inputs
            .iter()
            .map(|i| {
                Value::dict([
                    ("length", Value::Int(i.length as i64)),
                    (
                        "path",
                        Value::List(i.comps.iter().map(|c| Value::string(c)).collect()),
                    ),
                ])
            })
            .collect();
        info.push(("files", Value::List(files)));
    } else {
        info.push(("length", Value::Int(total as i64)));
    }
    if opts.private {
        info.push(("private", Value::Int(1)));
    }
    let mut top: Vec<(&str, Value)> = vec![("info", Value::dict(info))];
    if let Some(first) = opts.trackers.first() {
        top.push(("announce", Value::string(first)));
        if opts.trackers.len() > 1 {
            let tiers = opts
                .trackers
                .iter()
                .map(|t| Value::List(vec![Value::string(t)]))
                .collect();
            top.push(("announce-list", Value::List(tiers)));
        }
    }
    if !opts.web_seeds.is_empty() {
        let l = opts.web_seeds.iter().map(|u| Value::string(u)).collect();
        top.push(("url-list", Value::List(l)));
    }
    if let Some(c) = &opts.comment {
        top.push(("comment", Value::string(c)));
    }
    top.push((
        "created by",
        Value::string(opts.created_by.as_deref().unwrap_or("warren")),
    ));
    if let Some(d) = opts.creation_date {
        top.push(("creation date", Value::Int(d)));
    }
    let torrent_bytes = Value::dict(top).to_bytes();
    let metainfo = Metainfo::from_bytes(&torrent_bytes)?;
    let magnet = Magnet::from_metainfo(&metainfo);
    Ok(Made {
        torrent_bytes,
        metainfo,
        magnet,
    })
}

fn utf8_name(path: &Path, n: &std::ffi::OsStr) -> Result<String, MakeError> {
    n.to_str()
        .map(str::to_string)
        .ok_or_else(|| MakeError::BadName {
            path: path.to_path_buf(),
            why: "not valid UTF-8".into(),
        })
}

fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<Input>) -> Result<(), MakeError> {
    let io_err = |err| MakeError::Io {
        path: dir.to_path_buf(),
        err,
    };
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let ft = entry.file_type().map_err(io_err)?;
        let p = entry.path();
        if !(ft.is_dir() || ft.is_file()) {
            continue; // symlinks, sockets, devices
        }
        let comp = utf8_name(&p, &entry.file_name())?;
        check_component(&comp).map_err(|e| MakeError::BadName {
            path: p.clone(),
            why: e.to_string(),
        })?;
        prefix.push(comp);
        if ft.is_dir() {
            walk(&p, prefix, out)?;
        } else {
            let length = entry
                .metadata()
                .map_err(|err| MakeError::Io {
                    path: p.clone(),
                    err,
                })?
                .len();
            out.push(Input {
                abs: p,
                comps: prefix.clone(),
                length,
            });
        }
        prefix.pop();
    }
    Ok(())
}

/// SHA-1 of each `piece_length` slice of the concatenated files.
fn hash_pieces(inputs: &[Input], piece_length: u64) -> Result<Vec<u8>, MakeError> {
    let total: u64 = inputs.iter().map(|i| i.length).sum();
    let mut out = Vec::with_capacity((total.div_ceil(piece_length) * 20) as usize);
    let mut hasher = Sha1::new();
    let mut in_piece: u64 = 0;
    let mut buf = vec![0u8; READ_CHUNK];
    for input in inputs {
        if input.length == 0 {
            continue;
        }
        let mut f = File::open(&input.abs).map_err(|err| MakeError::Io {
            path: input.abs.clone(),
            err,
        })?;
        let mut left = input.length;
        while left > 0 {
            let want = (left.min(READ_CHUNK as u64)) as usize; // ok: <= READ_CHUNK
            let n = match f.read(&mut buf[..want]) {
                Ok(0) => return Err(MakeError::Changed(input.abs.clone())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(MakeError::Io {
                        path: input.abs.clone(),
                        err,
                    })
                }
            };
            left -= n as u64;
            let mut chunk = &buf[..n];
            while !chunk.is_empty() {
                let room = (piece_length - in_piece).min(chunk.len() as u64) as usize;
                hasher.update(&chunk[..room]);
                in_piece += room as u64;
                chunk = &chunk[room..];
                if in_piece == piece_length {
                    out.extend_from_slice(&hasher.finalize_reset());
                    in_piece = 0;
                }
            }
        }
        // Growing files are caught here: more data than the recorded length.
        let mut probe = [0u8; 1];
        if matches!(f.read(&mut probe), Ok(n) if n > 0) {
            return Err(MakeError::Changed(input.abs.clone()));
        }
    }
    if in_piece > 0 {
        out.extend_from_slice(&hasher.finalize());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_piece_length_bounds() {
        assert_eq!(auto_piece_length(1), AUTO_MIN_PIECE);
        assert_eq!(auto_piece_length(100 << 20), 128 << 10);
        assert_eq!(auto_piece_length(1 << 30), 1 << 20);
        assert_eq!(auto_piece_length(1 << 50), AUTO_MAX_PIECE);
        for total in [1u64 << 20, 3 << 28, 7_777_777_777] {
            let n = total.div_ceil(auto_piece_length(total));
            assert!(n <= AUTO_TARGET_PIECES, "{total}: {n}");
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn single_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("payload.bin");
        let bytes = data(100_000, 1);
        std::fs::write(&p, &bytes).unwrap();
        let opts = MakeOptions {
            piece_length: Some(16384),
            trackers: vec![
                "http://127.0.0.1:1/announce".into(),
                "udp://127.0.0.1:2".into(),
            ],
            web_seeds: vec!["http://127.0.0.1:3/".into()],
            private: true,
            ..MakeOptions::default()
        };
        let made = make_torrent(&p, &opts).unwrap();
        let mi = Metainfo::from_bytes(&made.torrent_bytes).unwrap();
        assert_eq!(mi, made.metainfo);
        assert_eq!(mi.info.name, "payload.bin");
        assert!(!mi.info.multi_file);
        assert!(mi.info.private);
        assert_eq!(mi.info.num_pieces(), 7);
        for i in 0..mi.info.num_pieces() {
            let start = i * 16384;
            let end = start + mi.info.piece_len(i) as usize;
            let h: [u8; 20] = Sha1::digest(&bytes[start..end]).into();
            assert_eq!(mi.info.piece_hash(i), Some(&h));
        }
        assert_eq!(made.magnet.info_hash, Some(mi.info_hash));
        assert_eq!(made.magnet.trackers.len(), 2);
        assert_eq!(made.magnet.web_seeds, vec!["http://127.0.0.1:3/"]);
        assert_eq!(Magnet::parse(&made.magnet.to_uri()).unwrap(), made.magnet);
    }

    #[test]
    fn directory_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join("emptydir")).unwrap();
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("b.bin", data(5000, 2)),
            ("a.txt", data(1, 3)),
            ("sub/deeper/z", data(40_000, 4)),
            ("sub/c", data(0, 5)),
            ("sub/d", data(20_000, 6)),
        ];
        for (rel, d) in &files {
            std::fs::write(root.join(rel), d).unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let made = make_torrent(
            &root,
            &MakeOptions {
                piece_length: Some(16384),
                ..MakeOptions::default()
            },
        )
        .unwrap();
        let info = &made.metainfo.info;
        assert!(info.multi_file);
        assert_eq!(info.name, "share");
        let paths: Vec<String> = info.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(
            paths,
            vec!["a.txt", "b.bin", "sub/c", "sub/d", "sub/deeper/z"]
        );
        // Concatenate in torrent order and check every piece.
        let mut stream = Vec::new();
        for f in &info.files {
            let d = std::fs::read(dir.path().join(info.file_path(f))).unwrap();
            assert_eq!(d.len() as u64, f.length);
            assert_eq!(f.offset, stream.len() as u64);
            stream.extend(d);
        }
        assert_eq!(info.total_length, stream.len() as u64);
        for i in 0..info.num_pieces() {
            let s = i * 16384;
            let e = s + info.piece_len(i) as usize;
            let h: [u8; 20] = Sha1::digest(&stream[s..e]).into();
            assert_eq!(info.piece_hash(i), Some(&h), "piece {i}");
        }
    }

    #[test]
    fn errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(
            make_torrent(&empty, &MakeOptions::default()),
            Err(MakeError::Empty(_))
        ));
        assert!(matches!(
            make_torrent(&dir.path().join("missing"), &MakeOptions::default()),
            Err(MakeError::Io { .. })
        ));
        std::fs::write(empty.join("f"), b"x").unwrap();
        assert!(matches!(
            make_torrent(
                &empty,
                &MakeOptions {
                    piece_length: Some(1),
                    ..Default::default()
                }
            ),
            Err(MakeError::BadPieceLength(1))
        ));
        assert!(matches!(
            make_torrent(
                &empty,
                &MakeOptions {
                    name: Some("..".into()),
                    ..Default::default()
                }
            ),
            Err(MakeError::BadName { .. })
        ));
    }
}

//! Torrent data on disk: maps piece offsets onto one or more files (pieces may span files),
//! positional reads and writes, SHA-1 verification. Blocking code: call it from a blocking pool.
//!
//! Piece writes can bypass the page cache (`O_DIRECT`, Linux): the aligned interior of each
//! write goes straight from the (4 KiB-aligned) piece buffer to the disk, the unaligned head and
//! tail of a file segment go through the page cache. Where the file system refuses `O_DIRECT`
//! the file quietly falls back to ordinary writes. Reads always use the page cache.
//!
//! Paths come only from the formats module's sanitised relative paths, and are checked again
//! here: every file must be a relative path made of normal components, joined under the
//! download directory, so nothing is ever created outside it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha1::{Digest, Sha1};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("unsafe file path in torrent: {0:?}")]
    UnsafePath(PathBuf),
    #[error("piece {0} is out of range")]
    BadPiece(u32),
    #[error("I/O error on {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One file of the torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// Relative path (already sanitised) below the download directory.
    pub path: PathBuf,
    pub length: u64,
    /// Offset of the file's first byte in the torrent's byte stream.
    pub offset: u64,
}

/// The shape of the torrent's data: pieces and files.
#[derive(Clone, Debug)]
pub struct Layout {
    pub piece_length: u64,
    pub total_length: u64,
    pub hashes: Vec<[u8; 20]>,
    pub files: Vec<FileSpan>,
}

impl Layout {
    pub fn num_pieces(&self) -> usize {
        self.hashes.len()
    }

    pub fn piece_len(&self, i: u32) -> u64 {
        let start = i as u64 * self.piece_length;
        self.total_length
            .saturating_sub(start)
            .min(self.piece_length)
    }

    /// Build from parsed metainfo, using the formats module's sanitised paths.
    pub fn from_info(info: &crate::metainfo::Info) -> Self {
        let paths = info.safe_relative_paths();
        let files = info
            .files
            .iter()
            .zip(paths)
            .map(|(f, p)| FileSpan {
                path: p,
                length: f.length,
                offset: f.offset,
            })
            .collect();
        Layout {
            piece_length: info.piece_length,
            total_length: info.total_length,
            hashes: info.pieces.clone(),
            files,
        }
    }
}

struct OpenFile {
    file: File,
    /// The same file opened with `O_DIRECT`, while the file system accepts it.
    direct: Option<File>,
    direct_ok: AtomicBool,
    path: PathBuf,
    span: FileSpan,
    dirty: AtomicBool,
}

/// How [`Storage`] writes piece data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageOptions {
    /// Write pieces with `O_DIRECT` where the file system allows it (Linux only; elsewhere
    /// ignored). Saves the copy into the page cache and keeps a large download from filling
    /// it; the data is on the device (not just in memory) when the write returns.
    pub direct_io: bool,
}

/// Files smaller than this are written through the page cache even with direct I/O on.
const DIRECT_MIN_FILE: u64 = 1 << 20;
/// At most this many files of a torrent get an extra `O_DIRECT` descriptor.
const DIRECT_MAX_FILES: usize = 64;

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

/// Open files of one torrent.
pub struct Storage {
    layout: Layout,
    files: Vec<OpenFile>,
}

fn check_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !p.as_os_str().as_encoded_bytes().contains(&0)
}

impl Storage {
    /// Create (sparse) or open every file of the layout below `dir`; ordinary buffered writes.
    pub fn open(dir: &Path, layout: Layout) -> Result<Self, StorageError> {
        Self::open_with(dir, layout, StorageOptions::default())
    }

    /// Create (sparse) or open every file of the layout below `dir`.
    pub fn open_with(
        dir: &Path,
        layout: Layout,
        opts: StorageOptions,
    ) -> Result<Self, StorageError> {
        let mut files = Vec::with_capacity(layout.files.len());
        for span in &layout.files {
            if !check_relative(&span.path) {
                return Err(StorageError::UnsafePath(span.path.clone()));
            }
            let path = dir.join(&span.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| StorageError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let io = |source| StorageError::Io {
                path: path.clone(),
                source,
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            let len = file.metadata().map_err(io)?.len();
            if len < span.length {
                file.set_len(span.length).map_err(io)?;
            }
            // A second descriptor per file: only for files big enough to matter, and only for
            // so many, so that torrents with many files do not run out of descriptors.
            let want_direct = opts.direct_io
                && span.length >= DIRECT_MIN_FILE
                && files
                    .iter()
                    .filter(|f: &&OpenFile| f.direct.is_some())
                    .count()
                    < DIRECT_MAX_FILES;
            let direct = if want_direct {
                open_direct(&path)
            } else {
                None
            };
            files.push(OpenFile {
                file,
                direct_ok: AtomicBool::new(direct.is_some()),
                direct,
                path,
                span: span.clone(),
                dirty: AtomicBool::new(false),
            });
        }
        Ok(Storage { layout, files })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The file segments covering `len` bytes from torrent offset `off`: (file index, file
    /// offset, range in the caller's buffer).
    fn segments(&self, off: u64, len: usize) -> Vec<(usize, u64, std::ops::Range<usize>)> {
        let end = off + len as u64;
        let mut out = Vec::new();
        // files are sorted by offset; binary search the first one that ends after `off`.
        let first = self
            .files
            .partition_point(|f| f.span.offset + f.span.length <= off);
        for (k, f) in self.files.iter().enumerate().skip(first) {
            let fs = f.span.offset;
            let fe = fs + f.span.length;
            if fs >= end {
                break;
            }
            if f.span.length == 0 {
                continue;
            }
            let s = off.max(fs);
            let e = end.min(fe);
            if s < e {
                out.push((k, s - fs, (s - off) as usize..(e - off) as usize));
            }
        }
        out
    }

    fn check_piece_index(&self, i: u32) -> Result<u64, StorageError> {
        if (i as usize) < self.layout.num_pieces() {
            Ok(i as u64 * self.layout.piece_length)
        } else {
            Err(StorageError::BadPiece(i))
        }
    }

    /// Write a whole piece (already verified). With direct I/O on, pass a buffer that starts
    /// on a [`crate::piecebuf::ALIGN`] boundary (a [`crate::piecebuf::PieceBuf`]) for the
    /// aligned parts to bypass the page cache; any buffer is written correctly.
    pub fn write_piece(&self, i: u32, data: &[u8]) -> Result<(), StorageError> {
        let off = self.check_piece_index(i)?;
        for (k, foff, range) in self.segments(off, data.len()) {
            let f = &self.files[k];
            let io = |source| StorageError::Io {
                path: f.path.clone(),
                source,
            };
            let seg = &data[range];
            let (head, mid, tail) = match &f.direct {
                Some(_) if f.direct_ok.load(Ordering::Relaxed) => direct_split(seg, foff),
                _ => (seg.len(), 0, 0),
            };
            f.file.write_all_at(&seg[..head], foff).map_err(io)?;
            if mid > 0 {
                let part = &seg[head..head + mid];
                let at = foff + head as u64;
                let direct = f.direct.as_ref().map(|d| d.write_all_at(part, at));
                match direct {
                    Some(Ok(())) => {}
                    Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                        // the device wants a larger alignment, or the file system changed
                        // its mind: stop trying on this file.
                        f.direct_ok.store(false, Ordering::Relaxed);
                        f.file.write_all_at(part, at).map_err(io)?;
                    }
                    Some(Err(e)) => return Err(io(e)),
                    None => f.file.write_all_at(part, at).map_err(io)?,
                }
            }
            if tail > 0 {
                let at = foff + (head + mid) as u64;
                f.file.write_all_at(&seg[head + mid..], at).map_err(io)?;
            }
            f.dirty.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Read `buf.len()` bytes of piece `i` starting at `begin`.
    pub fn read(&self, i: u32, begin: u32, buf: &mut [u8]) -> Result<(), StorageError> {
        let off = self.check_piece_index(i)? + begin as u64;
        if begin as u64 + buf.len() as u64 > self.layout.piece_len(i) {
            return Err(StorageError::BadPiece(i));
        }
        for (k, foff, range) in self.segments(off, buf.len()) {
            let f = &self.files[k];
            f.file
                .read_exact_at(&mut buf[range], foff)
                .map_err(|source| StorageError::Io {
                    path: f.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Whether `data` is piece `i` according to its SHA-1.
    pub fn verify(&self, i: u32, data: &[u8]) -> bool {
        match self.layout.hashes.get(i as usize) {
            Some(h) => {
                data.len() as u64 == self.layout.piece_len(i) && Sha1::digest(data)[..] == h[..]
            }
            None => false,
        }
    }

    /// Whether `digest` (the SHA-1 of `len` bytes) is piece `i`'s hash.
    pub fn verify_digest(&self, i: u32, len: usize, digest: &[u8; 20]) -> bool {
        self.layout
            .hashes
            .get(i as usize)
            .is_some_and(|h| len as u64 == self.layout.piece_len(i) && h == digest)
    }

    /// Read piece `i` from disk and check it.
    pub fn check_piece(&self, i: u32, scratch: &mut Vec<u8>) -> Result<bool, StorageError> {
        let len = self.layout.piece_len(i) as usize;
        scratch.resize(len, 0);
        self.read(i, 0, scratch)?;
        Ok(self.verify(i, scratch))
    }

    /// fdatasync every file written since the last sync.
    pub fn sync(&self) -> Result<(), StorageError> {
        for f in &self.files {
            if f.dirty.swap(false, Ordering::Relaxed) {
                f.file.sync_data().map_err(|source| StorageError::Io {
                    path: f.path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// Split a write of `seg` at file offset `foff` into (head, middle, tail) lengths where the
/// middle starts on an aligned file offset and an aligned memory address and is a whole number
/// of aligned blocks; middle is 0 when memory and file offsets cannot be aligned together.
fn direct_split(seg: &[u8], foff: u64) -> (usize, usize, usize) {
    let a = crate::piecebuf::ALIGN;
    let mem = seg.as_ptr() as usize % a;
    let file = (foff % a as u64) as usize;
    if mem != file {
        return (seg.len(), 0, 0);
    }
    let head = ((a - file) % a).min(seg.len());
    let mid = (seg.len() - head) / a * a;
    (head, mid, seg.len() - head - mid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(files: &[(&str, u64)], piece_length: u64, data: &[u8]) -> Layout {
        let mut off = 0;
        let files: Vec<FileSpan> = files
            .iter()
            .map(|(p, l)| {
                let s = FileSpan {
                    path: PathBuf::from(p),
                    length: *l,
                    offset: off,
                };
                off += l;
                s
            })
            .collect();
        let hashes = data
            .chunks(piece_length as usize)
            .map(|c| Sha1::digest(c).into())
            .collect();
        Layout {
            piece_length,
            total_length: off,
            hashes,
            files,
        }
    }

    #[test]
    fn pieces_span_files_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let l = layout(
            &[("a/x", 300), ("b", 0), ("a/y", 650), ("z", 50)],
            256,
            &data,
        );
        let s = Storage::open(dir.path(), l).unwrap();
        for (i, chunk) in data.chunks(256).enumerate() {
            assert!(s.verify(i as u32, chunk));
            s.write_piece(i as u32, chunk).unwrap();
        }
        s.sync().unwrap();
        let mut buf = vec![0; 100];
        s.read(1, 20, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[276..376]);
        let mut scratch = vec![];
        for i in 0..4 {
            assert!(s.check_piece(i, &mut scratch).unwrap());
        }
        let x = std::fs::read(dir.path().join("a/x")).unwrap();
        assert_eq!(&x[..], &data[..300]);
        let y = std::fs::read(dir.path().join("a/y")).unwrap();
        assert_eq!(&y[..], &data[300..950]);
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap().len(), 0);
        assert!(!s.verify(0, &data[1..257]));
        assert!(s.write_piece(9, &data[..10]).is_err());
    }

    #[test]
    fn direct_split_aligns_memory_and_file() {
        let buf = crate::piecebuf::PieceBuf::new(3 * 4096 + 10);
        assert_eq!(direct_split(&buf, 0), (0, 3 * 4096, 10));
        assert_eq!(direct_split(&buf[100..], 100), (3996, 2 * 4096, 10));
        assert_eq!(direct_split(&buf[100..], 0), (3 * 4096 - 90, 0, 0));
        assert_eq!(direct_split(&buf[..10], 0), (0, 0, 10));
        assert_eq!(direct_split(&buf[100..200], 100), (100, 0, 0));
    }

    #[test]
    fn direct_writes_match_buffered_across_files() {
        // 256 KiB pieces; "a" is too small for direct I/O, "d/b" starts on an aligned offset
        // (direct middles), "e" on an unaligned one (memory and file offsets never line up:
        // buffered), the last piece is short.
        let pl = 256 * 1024u64;
        let files = [
            ("a", 8192u64),
            ("d/b", 1_300_000),
            ("c", 0),
            ("e", 1_100_001),
        ];
        let total: u64 = files.iter().map(|f| f.1).sum();
        let data: Vec<u8> = (0..total as u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let l = layout(&files, pl, &data);
        let opts = StorageOptions { direct_io: true };
        let s = Storage::open_with(dir.path(), l, opts).unwrap();
        assert!(s.files[0].direct.is_none() && s.files[2].direct.is_none());
        for (i, chunk) in data.chunks(pl as usize).enumerate().rev() {
            let buf = crate::piecebuf::PieceBuf::from(chunk);
            assert!(s.verify(i as u32, &buf));
            s.write_piece(i as u32, &buf).unwrap();
        }
        // an unaligned source buffer is written correctly too
        let mut odd = vec![0u8; pl as usize + 1];
        odd[1..].copy_from_slice(&data[..pl as usize]);
        s.write_piece(0, &odd[1..]).unwrap();
        s.sync().unwrap();
        let mut scratch = vec![];
        for i in 0..data.len().div_ceil(pl as usize) {
            assert!(s.check_piece(i as u32, &mut scratch).unwrap(), "piece {i}");
        }
        let mut all = Vec::new();
        for (p, _) in files {
            all.extend(std::fs::read(dir.path().join(p)).unwrap());
        }
        assert!(all == data);
    }

    #[test]
    fn unsafe_paths_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../evil", "/etc/passwd", "a/../../b", ""] {
            let l = layout(&[(bad, 10)], 16, &[0; 10]);
            assert!(
                matches!(
                    Storage::open(dir.path(), l),
                    Err(StorageError::UnsafePath(_))
                ),
                "{bad}"
            );
        }
    }
}

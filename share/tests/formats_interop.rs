//! Interop of share's formats with real tools: torrents made by `mktorrent` parse with the
//! info-hash libtorrent computes, and libtorrent reads torrents and magnets made by share.
//! Skips (with a message) when mktorrent or python3-libtorrent is not installed.
//! No network: libtorrent is only used to parse files and links.

use std::path::{Path, PathBuf};
use std::process::Command;

use share::magnet::Magnet;
use share::make::{make_torrent, MakeOptions};
use share::metainfo::Metainfo;

const PY: &str = "/usr/bin/python3";

fn have_mktorrent() -> bool {
    let ok = Command::new("mktorrent")
        .arg("-h")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: mktorrent not installed");
    }
    ok
}

fn have_libtorrent() -> bool {
    let ok = Command::new(PY)
        .args(["-c", "import libtorrent"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: python3-libtorrent not installed ({PY} -c 'import libtorrent' failed)");
    }
    ok
}

/// What libtorrent sees in a .torrent: one `key value` per line.
fn lt_describe(torrent: &Path) -> Vec<String> {
    let script = r#"
import sys, libtorrent as lt
ti = lt.torrent_info(sys.argv[1])
print("infohash", ti.info_hash())
print("name", ti.name())
print("num_pieces", ti.num_pieces())
print("piece_length", ti.piece_length())
print("total", ti.total_size())
print("private", int(ti.priv()))
fs = ti.files()
for i in range(fs.num_files()):
    print("file", fs.file_size(i), fs.file_path(i))
for i in range(ti.num_pieces()):
    print("piece", ti.hash_for_piece(i).hex())
for t in ti.trackers():
    print("tracker", t.tier, t.url)
for w in ti.web_seeds():
    print("webseed", w["url"])
"#;
    let out = Command::new(PY)
        .args(["-c", script])
        .arg(torrent)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "libtorrent failed on {}: {}",
        torrent.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    normalise(
        String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// libtorrent shuffles trackers within a tier (BEP 12): compare tracker lines as a set.
fn normalise(v: Vec<String>) -> Vec<String> {
    let (mut trackers, mut rest): (Vec<String>, Vec<String>) =
        v.into_iter().partition(|l| l.starts_with("tracker "));
    trackers.sort();
    rest.extend(trackers);
    rest
}

/// The same description computed from share's parse.
fn our_describe(mi: &Metainfo) -> Vec<String> {
    let mut v = vec![
        format!("infohash {}", mi.info_hash),
        format!("name {}", mi.info.name),
        format!("num_pieces {}", mi.info.num_pieces()),
        format!("piece_length {}", mi.info.piece_length),
        format!("total {}", mi.info.total_length),
        format!("private {}", u8::from(mi.info.private)),
    ];
    for p in mi.info.files.iter().zip(mi.info.safe_relative_paths()) {
        v.push(format!("file {} {}", p.0.length, p.1.display()));
    }
    for i in 0..mi.info.num_pieces() {
        v.push(format!("piece {}", hex(mi.info.piece_hash(i).unwrap())));
    }
    if mi.announce_list.is_empty() {
        if let Some(a) = &mi.announce {
            v.push(format!("tracker 0 {a}"));
        }
    } else {
        for (tier, urls) in mi.announce_list.iter().enumerate() {
            for u in urls {
                v.push(format!("tracker {tier} {u}"));
            }
        }
    }
    for w in &mi.url_list {
        v.push(format!("webseed {w}"));
    }
    normalise(v)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_tree(root: &Path) -> Vec<(PathBuf, usize)> {
    let files = [
        ("a.bin", 300_000usize),
        ("sub/b.bin", 65_536),
        ("sub/deep/c.txt", 1),
        ("sub/deep/d.bin", 123_457),
        ("z", 40_000),
    ];
    let mut out = Vec::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pseudo_random(*len, i as u64 + 1)).unwrap();
        out.push((PathBuf::from(rel), *len));
    }
    out
}

fn mktorrent(args: &[&str], input: &Path, out: &Path) {
    let st = Command::new("mktorrent")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(input)
        .output()
        .expect("run mktorrent");
    assert!(
        st.status.success(),
        "mktorrent failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn mktorrent_single_file_matches_libtorrent() {
    if !have_mktorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("payload.bin");
    std::fs::write(&data, pseudo_random(1_000_003, 9)).unwrap();
    let t = dir.path().join("single.torrent");
    mktorrent(
        &[
            "-l",
            "16",
            "-a",
            "http://127.0.0.1:6969/announce,udp://127.0.0.1:6969",
            "-a",
            "http://127.0.0.1:7070/announce",
            "-w",
            "http://127.0.0.1:8080/payload.bin",
            "-c",
            "a comment",
            "-p",
        ],
        &data,
        &t,
    );
    let bytes = std::fs::read(&t).unwrap();
    let mi = Metainfo::from_bytes(&bytes).expect("parse mktorrent output");
    assert_eq!(mi.info.name, "payload.bin");
    assert_eq!(mi.info.piece_length, 1 << 16);
    assert_eq!(mi.info.total_length, 1_000_003);
    assert!(mi.info.private);
    assert_eq!(mi.comment.as_deref(), Some("a comment"));
    assert_eq!(mi.announce_list.len(), 2);
    assert_eq!(mi.url_list, vec!["http://127.0.0.1:8080/payload.bin"]);
    assert_eq!(mi.to_bytes(), bytes, "re-encoding is byte-identical");
    // Pieces verify against the data.
    let made = make_torrent(
        &data,
        &MakeOptions {
            piece_length: Some(1 << 16),
            private: true,
            ..MakeOptions::default()
        },
    )
    .unwrap();
    assert_eq!(made.metainfo.info.pieces, mi.info.pieces);
    assert_eq!(
        made.metainfo.info_hash, mi.info_hash,
        "same info dict as mktorrent"
    );
    if have_libtorrent() {
        assert_eq!(our_describe(&mi), lt_describe(&t));
    }
}

#[test]
fn mktorrent_multi_file_matches_libtorrent() {
    if !have_mktorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    let files = write_tree(&root);
    let t = dir.path().join("multi.torrent");
    mktorrent(
        &["-l", "15", "-a", "http://127.0.0.1:6969/announce"],
        &root,
        &t,
    );
    let mi = Metainfo::from_bytes(&std::fs::read(&t).unwrap()).expect("parse");
    assert!(mi.info.multi_file);
    assert_eq!(mi.info.name, "tree");
    let mut ours: Vec<(PathBuf, usize)> = mi
        .info
        .files
        .iter()
        .map(|f| (f.path.iter().collect::<PathBuf>(), f.length as usize))
        .collect();
    ours.sort();
    assert_eq!(ours, files);
    // share's own make of the same tree: same file order and pieces, so same info-hash.
    let made = make_torrent(
        &root,
        &MakeOptions {
            piece_length: Some(1 << 15),
            ..MakeOptions::default()
        },
    )
    .unwrap();
    assert_eq!(made.metainfo.info.files, mi.info.files);
    assert_eq!(made.metainfo.info.pieces, mi.info.pieces);
    assert_eq!(made.metainfo.info_hash, mi.info_hash);
    if have_libtorrent() {
        assert_eq!(our_describe(&mi), lt_describe(&t));
    }
}

#[test]
fn libtorrent_reads_share_torrents_and_magnets() {
    if !have_libtorrent() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shared dir é");
    write_tree(&root);
    let made = make_torrent(
        &root,
        &MakeOptions {
            trackers: vec![
                "http://127.0.0.1:6969/announce".into(),
                "udp://127.0.0.1:6970".into(),
            ],
            web_seeds: vec!["http://127.0.0.1:8080/".into()],
            ..MakeOptions::default()
        },
    )
    .unwrap();
    let t = dir.path().join("ours.torrent");
    std::fs::write(&t, &made.torrent_bytes).unwrap();
    assert_eq!(our_describe(&made.metainfo), lt_describe(&t));

    // Our magnet, parsed by libtorrent.
    let uri = made.magnet.to_uri();
    let script = r#"
import sys, libtorrent as lt
p = lt.parse_magnet_uri(sys.argv[1])
print(p.info_hashes.v1)
print(p.name)
print("|".join(p.trackers))
print("|".join(p.url_seeds))
"#;
    let out = Command::new(PY)
        .args(["-c", script, &uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines[0], made.metainfo.info_hash.to_hex());
    assert_eq!(lines[1], "shared dir é");
    assert_eq!(
        lines[2],
        "http://127.0.0.1:6969/announce|udp://127.0.0.1:6970"
    );
    assert_eq!(lines[3], "http://127.0.0.1:8080/");

    // libtorrent's magnet, parsed by us.
    let out = Command::new(PY)
        .args([
            "-c",
            "import sys, libtorrent as lt; print(lt.make_magnet_uri(lt.torrent_info(sys.argv[1])))",
        ])
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lt_uri = String::from_utf8(out.stdout).unwrap();
    let m = Magnet::parse(lt_uri.trim()).expect("parse libtorrent magnet");
    assert_eq!(m.info_hash, Some(made.metainfo.info_hash));
    assert_eq!(m.display_name.as_deref(), Some("shared dir é"));
    assert_eq!(
        m.trackers,
        vec!["http://127.0.0.1:6969/announce", "udp://127.0.0.1:6970"]
    );
}

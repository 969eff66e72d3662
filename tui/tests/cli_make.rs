//! `warren make`: the real binary hashes a file into a .torrent and prints its magnet link.

use std::process::Command;

#[test]
fn make_writes_a_torrent_and_prints_its_magnet() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    let bytes: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&data, &bytes).unwrap();
    let torrent = dir.path().join("out.torrent");
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("make")
        .arg(&data)
        .arg("-o")
        .arg(&torrent)
        .args(["--tracker", "http://127.0.0.1:6969/announce"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let meta = share::metainfo::Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    assert_eq!(meta.info.total_length, bytes.len() as u64);
    let magnet_line = stdout.lines().find(|l| l.starts_with("magnet:?")).unwrap();
    let magnet = share::magnet::Magnet::parse(magnet_line).unwrap();
    assert_eq!(magnet.info_hash, Some(meta.info_hash));
    assert_eq!(
        magnet.trackers,
        vec!["http://127.0.0.1:6969/announce".to_string()]
    );
}

#[test]
fn make_of_a_missing_path_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["make", "/nonexistent/warren-test-path"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/warren-test-path") && err.contains("No such file"),
        "{err}"
    );
}

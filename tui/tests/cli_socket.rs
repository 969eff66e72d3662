//! The `warren` binary's socket commands (`status`, `status --json`, `open`) against a fake node.

use std::path::Path;
use std::process::Command;

mod common;

fn warren(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--config", "/dev/null", "--socket"])
        .arg(sock)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run warren")
}

#[test]
fn open_status_and_json_against_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let server = common::Server::start(&sock);

    let out = warren(
        &sock,
        &[
            "open",
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "added to the running node as transfer 1\n"
    );
    assert_eq!(
        *server.node.calls.lock().unwrap(),
        vec!["add magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a None None"]
    );

    let out = warren(&sock, &["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("node fake0001  up 0s  links 0  DHT nodes 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "[1] magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a: size unknown"
        ),
        "{text}"
    );

    let out = warren(&sock, &["status", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node_id"], "fake0001");
    assert_eq!(v["transfers"][0]["id"], 1);

    // Not a magnet link: refused before reaching the node.
    let out = warren(&sock, &["open", "http://example.org/x.torrent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a magnet link"));

    drop(server);
    let out = warren(&sock, &["status"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no warren node is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

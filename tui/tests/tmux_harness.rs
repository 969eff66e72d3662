//! A tmux harness for end-to-end dashboard tests: runs `warren` in a detached tmux session of a
//! fixed size on a private tmux server, sends keys, and reads the screen. Tested here against
//! `warren dash` attached to a fake node; the lead reuses it for `warren demo`.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::tmux::Tmux;

/// The table row (it has a progress percentage) mentioning `name`.
fn row_with(screen: &[String], name: &str) -> String {
    screen
        .iter()
        .find(|l| l.contains(name) && l.contains('%'))
        .cloned()
        .unwrap_or_default()
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn dash_against_fake_node_in_tmux() {
    if !Tmux::available() {
        eprintln!("SKIP dash_against_fake_node_in_tmux: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let node = common::FakeNode::default();
    node.transfers
        .lock()
        .unwrap()
        .push(warren::status::TransferStatus {
            id: 1,
            name: "ubuntu.iso".into(),
            size: 1 << 30,
            done: 1 << 29,
            state: warren::status::TransferState::Downloading,
            hops: 3,
            peers: 4,
            ..Default::default()
        });
    let server = common::Server::start_with(&sock, node);
    let cmd = format!(
        "{} --config /dev/null --socket {} dash",
        shell_quote(Path::new(env!("CARGO_BIN_EXE_warren"))),
        shell_quote(&sock)
    );
    let t = Tmux::start(&cmd, 80, 24);
    let wait = Duration::from_secs(20);

    let s = t.wait_for("ubuntu.iso", wait);
    assert!(s[0].contains("1 Transfers"), "tab bar: {:?}", s[0]);
    assert!(s.iter().any(|l| l.contains("downloading")));

    // Pause: the node's state change shows up on the next refresh.
    t.keys(&["p"]);
    let s = t.wait_for("paused ubuntu.iso", wait);
    assert!(row_with(&s, "ubuntu.iso").contains(" paused "), "{s:#?}");
    t.keys(&["r"]);
    let s = t.wait_for("resumed ubuntu.iso", wait);
    assert!(row_with(&s, "ubuntu.iso").contains(" download "), "{s:#?}");

    // Hop count prompt.
    t.keys(&["h"]);
    t.wait_for("Hop count", wait);
    t.keys(&["BSpace"]);
    t.text("1");
    t.keys(&["Enter"]);
    t.wait_for("hop count set to 1", wait);

    // Add a magnet through the prompt.
    t.keys(&["a"]);
    t.wait_for("Add magnet", wait);
    t.text("magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
    t.keys(&["Enter"]);
    t.wait_for("Transfers (2)", wait);

    // Tabs, resize, help.
    t.keys(&["4"]);
    t.wait_for("DHT nodes", wait);
    t.resize(100, 30);
    t.keys(&["BTab"]);
    t.wait_for("Tunnel flows", wait);
    t.keys(&["?"]);
    t.wait_for("any key closes this help", wait);
    t.keys(&["Escape"]);
    // a key sent right after Escape reaches the program as Alt+key (the terminal's escape
    // prefix): wait until the help is gone before the next one
    t.wait_gone("any key closes this help", wait);

    // Remove with data, then quit.
    t.keys(&["1"]);
    t.wait_for("Transfers (2)", wait);
    t.keys(&["d"]);
    t.wait_for("Remove ubuntu.iso?", wait);
    t.keys(&["D"]);
    t.wait_for("Transfers (1)", wait);
    t.keys(&["q"]);
    let start = Instant::now();
    while !t.exited() {
        assert!(start.elapsed() < wait, "warren dash did not exit on q");
        std::thread::sleep(Duration::from_millis(100));
    }

    let calls = server.node.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            "pause 1",
            "resume 1",
            "set_hops 1 1",
            "add magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a None None",
            "remove 1 true",
        ]
    );
}

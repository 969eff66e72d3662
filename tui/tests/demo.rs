//! `warren demo` end to end: the real binary starts an in-process overlay and a hidden seeder,
//! and downloads through 3+3 hops; in a real terminal (tmux) the dashboard shows it, a magnet
//! link added with `a` completes, and the Circuits tab lists 3-hop circuits.

mod common;

use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;

#[test]
fn demo_without_tui_downloads_byte_identical_through_three_hops() {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["demo", "--no-tui", "--size", "6000000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // hidden seeding: the downloader's 3 hops to the rendezvous point, the seeder's 3 from it
    assert!(stdout.contains("downloading through 3+3 hops"), "{stdout}");
    assert!(stdout.contains("content byte-identical"), "{stdout}");
}

#[test]
fn demo_dashboard_in_a_real_terminal() {
    if !Tmux::available() {
        eprintln!("SKIP: tmux is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} demo --size 8000000 --work-dir {} --default-hops 3",
        env!("CARGO_BIN_EXE_warren"),
        dir.path().display()
    );
    let t = Tmux::start(&cmd, 100, 30);
    // the demo's own transfer appears and completes
    t.wait_for("warren-demo.bin", Duration::from_secs(60));
    let screen = t.wait_for("seeding", Duration::from_secs(120));
    assert!(
        screen
            .iter()
            .any(|l| l.contains("warren-demo.bin") && l.contains("100")),
        "{}",
        screen.join("\n")
    );
    // add the second torrent's magnet link with `a`
    let link = std::fs::read_to_string(dir.path().join("extra-magnet.txt")).unwrap();
    t.keys(&["a"]);
    t.text(link.trim());
    t.keys(&["Enter"]);
    t.wait_for("warren-demo-2.bin", Duration::from_secs(60));
    let ok = (0..240).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        t.screen()
            .iter()
            .any(|l| l.contains("warren-demo-2.bin") && l.contains("seeding"))
    });
    assert!(
        ok,
        "second transfer did not complete:\n{}",
        t.screen().join("\n")
    );
    // the Circuits tab lists open circuits of three hops
    t.keys(&["2"]);
    let screen = t.wait_for("open", Duration::from_secs(10));
    assert!(
        screen
            .iter()
            .any(|l| l.contains("open") && l.matches('→').count() == 2),
        "no 3-hop circuit on the Circuits tab:\n{}",
        screen.join("\n")
    );
    t.keys(&["q"]);
}

//! A tmux harness for end-to-end dashboard tests: runs `warren` in a detached tmux session of a
//! fixed size on a private tmux server, sends keys, and reads the screen. Tested here against
//! `warren dash` attached to a fake node; the lead reuses it for `warren demo`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

/// A tmux server of our own (`tmux -L <name>`), killed on drop.
pub struct Tmux {
    server: String,
}

impl Tmux {
    /// Whether tmux is installed.
    pub fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Starts `cmd` (a shell command line) in a `w`x`h` session on a private server.
    pub fn start(cmd: &str, w: u16, h: u16) -> Tmux {
        let server = format!("warren-test-{}-{}", std::process::id(), rand_suffix());
        let t = Tmux { server };
        let out = t
            .tmux()
            .args([
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
            ])
            .arg(cmd)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Keep the pane after the program exits so its last screen can be read.
        let _ = t
            .tmux()
            .args(["set-option", "-t", "main", "remain-on-exit", "on"])
            .output();
        t
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.server, "-f", "/dev/null"]);
        c.env_remove("TMUX");
        c
    }

    /// Sends tmux key names (e.g. `"Tab"`, `"BTab"`, `"Enter"`, `"q"`).
    pub fn keys(&self, keys: &[&str]) {
        let out = self
            .tmux()
            .args(["send-keys", "-t", "main"])
            .args(keys)
            .output()
            .expect("tmux send-keys");
        assert!(out.status.success(), "send-keys failed");
    }

    /// Sends literal text.
    pub fn text(&self, text: &str) {
        let out = self
            .tmux()
            .args(["send-keys", "-t", "main", "-l", text])
            .output()
            .expect("tmux send-keys");
        assert!(out.status.success(), "send-keys -l failed");
    }

    /// The visible screen, one string per row.
    pub fn screen(&self) -> Vec<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "main"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits (bounded) until some screen row contains `needle`; returns the screen.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.iter().any(|l| l.contains(needle)) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?}; screen:\n{}",
                    s.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the program in the pane has exited.
    pub fn exited(&self) -> bool {
        let out = self
            .tmux()
            .args(["display-message", "-p", "-t", "main", "#{pane_dead}"])
            .output();
        matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "1")
    }

    /// Resizes the window.
    pub fn resize(&self, w: u16, h: u16) {
        let _ = self
            .tmux()
            .args([
                "resize-window",
                "-t",
                "main",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
            ])
            .output();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

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

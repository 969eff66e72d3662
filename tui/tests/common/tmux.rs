//! A private tmux server driving a real terminal program; killed when dropped.

use std::process::Command;
use std::time::{Duration, Instant};

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

    /// Waits (bounded) until no screen row contains `needle` (a popup closed); returns the screen.
    pub fn wait_gone(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if !s.iter().any(|l| l.contains(needle)) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} to go; screen:\n{}",
                    s.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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

pub fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

//! Child processes of a test: `warren` itself and whatever else a test starts, killed by PID when
//! dropped (also when the test fails).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) by PID when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process this test did not spawn itself but must end (a node `warren open` started in the
/// background, known by the PID it printed), killed by PID when dropped.
pub struct KillPid(pub Option<i32>);

impl Drop for KillPid {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
}

/// The `warren` binary under test.
pub fn warren() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warren"))
}

/// Waits (bounded) until `p` exists and is not empty.
pub fn wait_file(p: &Path, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Starts `c` with stdout and stderr in `log`.
pub fn spawn_logged(mut c: Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        c.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap(),
    )
}

/// The `network.dht_nodes` figure of the node serving the control socket `socket` (0 when it does
/// not answer yet).
pub fn dht_nodes(socket: &Path) -> u64 {
    let o = match warren()
        .arg("--socket")
        .arg(socket)
        .args(["status", "--json"])
        .output()
    {
        Ok(o) => o,
        Err(_) => return 0,
    };
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v["network"]["dht_nodes"].as_u64())
        .unwrap_or(0)
}

/// Waits until every node behind `sockets` has the others in its DHT routing table (the network
/// has formed); panics naming the nodes that had not when `timeout` passes.
pub fn wait_network_formed(sockets: &[std::path::PathBuf], timeout: Duration) {
    let want = sockets.len().saturating_sub(1) as u64;
    let t0 = Instant::now();
    loop {
        let short: Vec<(String, u64)> = sockets
            .iter()
            .map(|s| (s.display().to_string(), dht_nodes(s)))
            .filter(|(_, n)| *n < want)
            .collect();
        if short.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {} s waiting for every node to know the {want} others in its DHT; \
             still short: {short:?}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Single-quotes `p` for `sh`.
pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Pids (other than this process) whose command line, arguments joined by NUL, contains
/// `needle` (write `"sleep\x004111"` for the process `sleep 4111`).
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // a zombie has an empty command line: it is gone for our purposes
            String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

/// Waits until no process matches any of `needles`.
pub fn wait_gone(needles: &[&str], timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if needles.iter().all(|n| pids_matching(n).is_empty()) {
            return true;
        }
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The namespaces a `warren tunnel` process with pid `pid` made (`warren-<pid>-<n>`) that are
/// still listed.
pub fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("warren-{pid}-");
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&prefix))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the namespaces (and /etc/netns dirs) a `warren tunnel` process made, and what runs
/// in them, in case the test failed before warren could.
pub struct TunnelSweep(pub u32);

impl Drop for TunnelSweep {
    fn drop(&mut self) {
        for n in namespaces_of(self.0) {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", &n]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &n]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&n));
        }
    }
}

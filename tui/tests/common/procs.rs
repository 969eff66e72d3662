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

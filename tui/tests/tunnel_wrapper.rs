//! `warren tunnel -- CMD` as a well-behaved wrapper (issue 20), with real programs: signals are
//! passed on and the program ends before warren does; the program dies with a killed warren;
//! warren exits with the program's status; an interactive program owns the terminal.
//!
//! Everything runs inside a namespace this test creates (one overlay node on its loopback, the
//! `warren tunnel` process, the namespace `warren tunnel` makes). Needs root; skips without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::procs::{namespaces_of, pids_matching, shell_quote, wait_gone, TunnelSweep};
use common::tmux::Tmux;
use warren_tests::{is_root, wait_file, wait_until, Child, Netns};

/// One exit node on the loopback of a namespace of our own, and a data dir for the client.
struct Net {
    dir: tempfile::TempDir,
    desc: PathBuf,
    _node: Child,
    ns: Netns,
}

impl Net {
    fn start() -> Net {
        let ns = Netns::new("tw").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("node");
        std::fs::create_dir_all(&d).unwrap();
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", ns.name))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_warren"))
            .args(["--config", "/dev/null", "--data-dir"])
            .arg(d.join("data"))
            .arg("--socket")
            .arg(d.join("control.sock"))
            .args(["node", "--relay", "--exit", "--listen", "127.0.0.1:7700"]);
        let node = Child::spawn("warren node", c, &d.join("log")).unwrap();
        let desc = d.join("data").join("descriptor");
        assert!(
            wait_file(&desc, Duration::from_secs(20)),
            "no descriptor: {}",
            std::fs::read_to_string(d.join("log")).unwrap_or_default()
        );
        Net {
            dir,
            desc,
            _node: node,
            ns,
        }
    }

    /// The arguments before `--` of a `warren tunnel` run on this net (1 hop, grace 2 s).
    fn tunnel_args(&self) -> Vec<String> {
        let p = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--config".into(),
            "/dev/null".into(),
            "--data-dir".into(),
            p(&self.dir.path().join("client")),
            "--socket".into(),
            p(&self.dir.path().join("client.sock")),
            "--bootstrap".into(),
            p(&self.desc),
            "tunnel".into(),
            "--hops".into(),
            "1".into(),
            "--grace".into(),
            "2".into(),
        ]
    }

    /// `nsenter --net=... warren`: in the test's network namespace only (not `ip netns exec`,
    /// whose private mount namespace would hide the namespace `warren tunnel` makes from us).
    fn warren(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns.name))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_warren"));
        // the programs run as root, like the test's files (not as a sudo invoker)
        c.env_remove("SUDO_UID").env_remove("SUDO_GID");
        c
    }

    /// The same as a shell command line.
    fn warren_line(&self) -> String {
        format!(
            "nsenter --net=/run/netns/{} -- {}",
            self.ns.name,
            shell_quote(Path::new(env!("CARGO_BIN_EXE_warren")))
        )
    }

    /// `warren tunnel ... -- program...` in the test namespace.
    fn tunnel(&self, program: &[&str]) -> Command {
        let mut c = self.warren();
        c.args(self.tunnel_args()).arg("--").args(program);
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ready() -> bool {
    if !is_root() {
        eprintln!("SKIP: needs root (network namespaces, tun)");
        return false;
    }
    true
}

/// After `warren tunnel` (pid `pid`) is gone: no namespace of its, no reaper, nothing matching
/// `marker` in the process table.
fn assert_nothing_left(pid: u32, marker: &str) {
    let gone = wait_until(Duration::from_secs(5), || {
        namespaces_of(pid).is_empty()
            && pids_matching(&format!("warren-{pid}-")).is_empty()
            && pids_matching(marker).is_empty()
    });
    assert!(
        gone,
        "left behind: namespaces {:?}, processes naming them {:?}, processes of the program {:?}",
        namespaces_of(pid),
        pids_matching(&format!("warren-{pid}-")),
        pids_matching(marker)
    );
}

#[test]
fn sigterm_reaches_the_program_which_exits_first_and_warren_exits_with_its_status() {
    if !ready() {
        return;
    }
    let net = Net::start();
    let up = net.path("up");
    let got = net.path("got-term");
    // the marker (this test's directory) is in the program's command line
    let script = format!(
        "trap 'echo term > {got}; exit 3' TERM; echo up > {up}; while :; do sleep 0.1; done",
        got = got.display(),
        up = up.display()
    );
    let log = net.path("tunnel.log");
    let mut w = Child::spawn("warren tunnel", net.tunnel(&["sh", "-c", &script]), &log).unwrap();
    let _sweep = TunnelSweep(w.pid());
    assert!(
        wait_file(&up, Duration::from_secs(30)),
        "the program did not start:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // only the program's command line (and warren's, gone by then) names this file
    let marker = got.to_string_lossy().into_owned();
    assert_eq!(
        namespaces_of(w.pid()).len(),
        1,
        "one namespace while it runs"
    );
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(w.pid() as i32, libc::SIGTERM);
    }
    let st = w.wait_timeout(Duration::from_secs(15));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(st, Some(Some(3)), "warren's status:\n{out}");
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "term");
    assert_nothing_left(w.pid(), &marker);
}

#[test]
fn exit_statuses_are_the_programs_own() {
    if !ready() {
        return;
    }
    let net = Net::start();
    let run = |program: &[&str]| -> (Option<i32>, String) {
        let out = net.tunnel(program).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (c, err) = run(&["sh", "-c", "exit 7"]);
    assert_eq!(c, Some(7), "{err}");
    assert!(
        !err.contains("error"),
        "a program's status is not warren's error: {err}"
    );
    let (c, err) = run(&["sh", "-c", "kill -KILL $$"]);
    assert_eq!(c, Some(137), "{err}");
    let (c, err) = run(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(c, Some(143), "{err}");
    let (c, err) = run(&["true"]);
    assert_eq!(c, Some(0), "{err}");
    // warren's own codes
    let (c, err) = run(&["no-such-program-warren-test"]);
    assert_eq!(c, Some(127), "{err}");
    assert!(err.contains("command not found"), "{err}");
    let plain = net.path("not-executable");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let (c, err) = run(&[plain.to_str().unwrap()]);
    assert_eq!(c, Some(126), "{err}");
    let out = net
        .warren()
        .args(["--config", "/dev/null", "--data-dir"])
        .arg(net.path("lonely"))
        .args(["tunnel", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "no bootstrap: {out:?}");
}

/// A program that ignores SIGTERM is killed when the grace period ends; what it started is
/// ended too, and warren reports death by SIGKILL.
#[test]
fn a_program_ignoring_sigterm_is_killed_after_the_grace_period_with_its_children() {
    if !ready() {
        return;
    }
    let net = Net::start();
    let up = net.path("up");
    let script = format!(
        "trap '' TERM; sleep 4111 & echo up > {}; while :; do sleep 0.1; done",
        up.display()
    );
    let log = net.path("tunnel.log");
    let mut w = Child::spawn("warren tunnel", net.tunnel(&["sh", "-c", &script]), &log).unwrap();
    let _sweep = TunnelSweep(w.pid());
    assert!(wait_file(&up, Duration::from_secs(30)), "did not start");
    // (the background `sleep` may not have been exec'd yet when the file appears)
    assert!(
        wait_until(Duration::from_secs(5), || pids_matching("sleep\x004111")
            .len()
            == 1),
        "the program's child did not start"
    );
    let t0 = Instant::now();
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(w.pid() as i32, libc::SIGTERM);
    }
    let st = w.wait_timeout(Duration::from_secs(15));
    let took = t0.elapsed();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(st, Some(Some(137)), "{out}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(8),
        "grace 2 s, took {took:?}"
    );
    assert_nothing_left(w.pid(), "sleep\x004111");
}

/// kill -9 of warren: the program (and what it started) dies at once, the namespace goes.
#[test]
fn the_program_and_its_children_die_with_a_killed_warren() {
    if !ready() {
        return;
    }
    let net = Net::start();
    let up = net.path("up");
    let script = format!("sleep 4222 & echo up > {}; sleep 4223; wait", up.display());
    let log = net.path("tunnel.log");
    let mut w = Child::spawn("warren tunnel", net.tunnel(&["sh", "-c", &script]), &log).unwrap();
    let pid = w.pid();
    let _sweep = TunnelSweep(pid);
    assert!(wait_file(&up, Duration::from_secs(30)), "did not start");
    // (`sleep 4223` starts after the file is written, and the background one may not have been
    // exec'd yet either)
    assert!(
        wait_until(Duration::from_secs(5), || {
            pids_matching("sleep\x004222").len() == 1 && pids_matching("sleep\x004223").len() == 1
        }),
        "the program and its child did not start"
    );
    w.kill9();
    let t0 = Instant::now();
    assert!(
        wait_gone(&["sleep\x004222", "sleep\x004223"], Duration::from_secs(1)),
        "still running 1 s after warren was killed: {:?} {:?}",
        pids_matching("sleep\x004222"),
        pids_matching("sleep\x004223")
    );
    eprintln!("program gone {:?} after kill -9", t0.elapsed());
    assert_nothing_left(pid, "sleep\x004222");
}

/// An interactive program in a terminal owns it: rtorrent's own screen, no dashboard; the
/// control socket answers (`warren dash` would attach); quitting rtorrent ends warren with 0.
#[test]
fn an_interactive_program_owns_the_terminal() {
    if !ready() || !Tmux::available() || !warren_tests::have("rtorrent") {
        eprintln!("SKIP: needs root, tmux and rtorrent");
        return;
    }
    let net = Net::start();
    let rt_dir = net.path("rtorrent");
    std::fs::create_dir_all(&rt_dir).unwrap();
    let status_file = net.path("status");
    let mut line = format!("HOME={} {}", shell_quote(&rt_dir), net.warren_line());
    for a in net.tunnel_args() {
        line.push(' ');
        line.push_str(&shell_quote(Path::new(&a)));
    }
    line.push_str(&format!(
        " -- rtorrent -n -d {}; echo $? > {}",
        shell_quote(&rt_dir),
        shell_quote(&status_file)
    ));
    let t = Tmux::start(&line, 100, 30);
    let screen = t.wait_for("rTorrent", Duration::from_secs(30));
    // let a dashboard (if one were drawn) have its frames
    std::thread::sleep(Duration::from_secs(2));
    let screen2 = t.screen();
    let all = format!("{}\n{}", screen.join("\n"), screen2.join("\n"));
    assert!(
        screen2.iter().any(|l| l.contains("rTorrent")),
        "rtorrent's screen is gone:\n{all}"
    );
    assert!(
        !all.contains("Transfers") && !all.contains("Circuits") && !all.contains("warren:"),
        "something of warren's is drawn over rtorrent:\n{all}"
    );
    // the dashboard is one `warren dash` away: the control socket answers
    let st = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--config", "/dev/null", "--socket"])
        .arg(net.path("client.sock"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(st.status.success(), "control socket: {st:?}");
    // Ctrl-Q quits rtorrent; warren exits with its status
    t.keys(&["C-q"]);
    assert!(
        wait_file(&status_file, Duration::from_secs(20)),
        "rtorrent/warren did not exit:\n{}",
        t.screen().join("\n")
    );
    assert_eq!(std::fs::read_to_string(&status_file).unwrap().trim(), "0");
}

/// `--dash` asks for the dashboard explicitly.
#[test]
fn dash_asks_for_the_dashboard() {
    if !ready() || !Tmux::available() {
        eprintln!("SKIP: needs root and tmux");
        return;
    }
    let net = Net::start();
    let mut line = net.warren_line();
    for a in net.tunnel_args() {
        line.push(' ');
        line.push_str(&shell_quote(Path::new(&a)));
    }
    line.push_str(" --dash -- sleep 4333");
    let t = Tmux::start(&line, 100, 30);
    let s = t.wait_for("Transfers", Duration::from_secs(30));
    assert!(s[0].contains("warren"), "{s:#?}");
    // quitting the dashboard stops the program (SIGTERM) and warren exits
    t.keys(&["q"]);
    assert!(
        wait_until(Duration::from_secs(15), || t.exited()),
        "warren did not exit:\n{}",
        t.screen().join("\n")
    );
    assert!(wait_gone(&["sleep\x004333"], Duration::from_secs(5)));
    let log = std::fs::read_to_string(net.path("client").join("tunnel-program.log"));
    assert!(
        log.is_ok(),
        "the program's output goes to tunnel-program.log"
    );
}

/// Ctrl-C in the terminal reaches the program once (the kernel sends it to the whole foreground
/// process group); warren does not send it a second time, and does not end by it.
#[test]
fn ctrl_c_in_the_terminal_reaches_the_program_once() {
    if !ready() || !Tmux::available() {
        eprintln!("SKIP: needs root and tmux");
        return;
    }
    let net = Net::start();
    let got = net.path("ints");
    let up = net.path("up");
    let status_file = net.path("status");
    let script = format!(
        "trap 'echo int >> {got}' INT; echo up > {up}; n=0; while [ $n -lt 40 ]; do sleep 0.1; n=$((n+1)); done; exit 5",
        got = got.display(),
        up = up.display()
    );
    let mut line = net.warren_line();
    for a in net.tunnel_args() {
        line.push(' ');
        line.push_str(&shell_quote(Path::new(&a)));
    }
    line.push_str(&format!(
        " -- sh -c {}; echo $? > {}",
        shell_quote(Path::new(&script)),
        shell_quote(&status_file)
    ));
    let t = Tmux::start(&line, 100, 30);
    assert!(wait_file(&up, Duration::from_secs(30)), "did not start");
    t.keys(&["C-c"]);
    assert!(
        wait_file(&status_file, Duration::from_secs(20)),
        "warren did not exit:\n{}",
        t.screen().join("\n")
    );
    assert_eq!(
        std::fs::read_to_string(&got).unwrap_or_default(),
        "int\n",
        "the program got Ctrl-C once"
    );
    assert_eq!(std::fs::read_to_string(&status_file).unwrap().trim(), "5");
}

/// `--status` prints plain status lines on stderr; without it warren prints nothing there.
#[test]
fn status_lines_only_when_asked() {
    if !ready() {
        return;
    }
    let net = Net::start();
    let mut c = net.warren();
    c.args(net.tunnel_args())
        .args(["--status", "--", "sh", "-c", "sleep 6"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("tunnel: 0 flows open"), "{err}");
    assert!(err.contains("sh exited with status 0"), "{err}");
    let out = net
        .tunnel(&["sh", "-c", "echo from-the-program"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-the-program\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("tunnel:"), "{err}");
}

#[test]
fn the_program_runs_as_the_user_who_invoked_sudo_or_as_user() {
    if !ready() {
        return;
    }
    let net = Net::start();
    let id = |user: Option<&str>, sudo: Option<&str>| -> String {
        let mut c = net.warren();
        c.args(net.tunnel_args());
        if let Some(u) = user {
            c.args(["--user", u]);
        }
        c.args(["--", "sh", "-c", "echo $(id -u):$(id -g)"]);
        c.env_remove("SUDO_UID").env_remove("SUDO_GID");
        if let Some(s) = sudo {
            c.env("SUDO_UID", s).env("SUDO_GID", s);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // `sudo warren tunnel -- CMD`: CMD runs as the invoking user
    assert_eq!(id(None, Some("65534")), "65534:65534");
    // --user names the user (here nobody, uid 65534 on Debian)
    let nobody = id(Some("nobody"), None);
    assert!(nobody.starts_with("65534:"), "{nobody}");
    assert_eq!(
        id(Some("65534"), Some("1234")),
        nobody,
        "--user wins over SUDO_UID"
    );
    // root only when nobody else is known, or asked for
    assert_eq!(id(None, None), "0:0");
    assert_eq!(id(Some("root"), Some("65534")), "0:0");
    let out = net
        .warren()
        .args(net.tunnel_args())
        .args(["--user", "no-such-user-warren", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such user"),
        "{out:?}"
    );
}

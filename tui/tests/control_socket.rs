//! Control socket round trips against a fake node over a real Unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use warren::control::client::SocketControl;
use warren::control::server::{BindError, ControlListener};
use warren::control::{Command, Control, ControlError};

mod common;
use common::{FakeNode, Server};

fn raw_exchange(stream: &mut UnixStream, line: &[u8]) -> serde_json::Value {
    stream.write_all(line).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    assert!(reply.ends_with('\n'), "reply is one line: {reply:?}");
    serde_json::from_str(&reply).unwrap()
}

#[test]
fn round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/warren/control.sock");
    let server = Server::start(&sock);
    let mut ctl = SocketControl::connect(&sock).unwrap();

    let r = ctl
        .request(Command::Add {
            magnet: "magnet:?xt=urn:btih:aa".into(),
            dir: Some("/tmp/dl".into()),
            hops: Some(2),
        })
        .unwrap();
    assert_eq!(r, serde_json::json!({"transfer": 1}));
    let snap = ctl.snapshot().unwrap();
    assert_eq!(snap.node_id, "fake0001");
    assert_eq!(snap.transfers.len(), 1);
    assert_eq!(snap.transfers[0].hops, 2);

    ctl.send(Command::Pause { transfer: 1 }).unwrap();
    ctl.send(Command::Resume { transfer: 1 }).unwrap();
    ctl.send(Command::SetHops {
        transfer: 1,
        hops: 1,
    })
    .unwrap();
    // Out-of-range hop counts are refused before reaching the node.
    match ctl.send(Command::SetHops {
        transfer: 1,
        hops: 9,
    }) {
        Err(ControlError::Node(e)) => assert!(e.contains("out of range"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Node errors come back as errors.
    match ctl.send(Command::Pause { transfer: 42 }) {
        Err(ControlError::Node(e)) => assert_eq!(e, "no transfer 42"),
        other => panic!("{other:?}"),
    }
    ctl.send(Command::Remove {
        transfer: 1,
        delete_data: true,
    })
    .unwrap();
    assert!(ctl.snapshot().unwrap().transfers.is_empty());
    ctl.send(Command::Shutdown).unwrap();

    assert_eq!(
        *server.node.calls.lock().unwrap(),
        vec![
            "add magnet:?xt=urn:btih:aa Some(\"/tmp/dl\") Some(2)",
            "pause 1",
            "resume 1",
            "set_hops 1 1",
            "remove 1 true",
            "shutdown",
        ]
    );
    let path = server.path.clone();
    drop(server);
    assert!(!path.exists(), "socket file removed when the server stops");
}

#[test]
fn malformed_lines_get_errors_and_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let _server = Server::start(&sock);
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    let r = raw_exchange(&mut s, b"this is not json\n");
    assert_eq!(r["ok"], false);
    assert_eq!(r["id"], serde_json::Value::Null);
    assert!(r["error"].as_str().unwrap().contains("not valid JSON"));

    let r = raw_exchange(&mut s, b"{\"id\":5,\"cmd\":\"explode\"}\n");
    assert_eq!(r["id"], 5);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("explode"));

    // The same connection still works.
    let r = raw_exchange(&mut s, b"{\"id\":6,\"cmd\":\"status\"}\n");
    assert_eq!(r["id"], 6);
    assert_eq!(r["ok"], true);
    assert_eq!(r["result"]["node_id"], "fake0001");

    // A too-long line: error, connection closed; the server still accepts new connections.
    let mut long = vec![b'x'; warren::control::protocol::MAX_LINE + 10];
    long.push(b'\n');
    let r = raw_exchange(&mut s, &long);
    assert_eq!(r["ok"], false);
    let mut s2 = UnixStream::connect(&sock).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = raw_exchange(&mut s2, b"{\"id\":1,\"cmd\":\"status\"}\n");
    assert_eq!(r["ok"], true);
}

#[test]
fn socket_mode_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("new/warren");
    let sock = sock_dir.join("control.sock");
    let server = Server::start(&sock);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dmode = std::fs::metadata(&sock_dir).unwrap().permissions().mode();
    assert_eq!(dmode & 0o777, 0o700, "directory mode {dmode:o}");
    // No temporary socket left behind.
    let names: Vec<_> = std::fs::read_dir(&sock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("control.sock")]);

    // A second node on the same socket is refused while the first is alive.
    match ControlListener::bind(&sock) {
        Err(BindError::InUse(p)) => assert_eq!(p, sock),
        other => panic!("{other:?}"),
    }
    drop(server);

    // A stale socket file (no listener) is replaced.
    {
        let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(stale);
    }
    assert!(sock.exists());
    let _again = Server::start(&sock);
    assert!(SocketControl::connect(&sock).unwrap().snapshot().is_ok());
}

/// Connects to `path` as user `nobody` from a forked child; returns the child's errno (0 if it
/// connected). Needs root.
fn connect_as_nobody(path: &Path) -> i32 {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = cpath.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: after fork the child only makes raw syscalls (setgroups, setgid, setuid, socket,
    // connect) on memory prepared before the fork, then _exit()s.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(200);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(201);
            }
            let r = libc::connect(
                fd,
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            if r == 0 {
                libc::_exit(0);
            }
            let errno = *libc::__errno_location();
            libc::_exit(errno.min(199));
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status), "child did not exit normally");
        libc::WEXITSTATUS(status)
    }
}

#[test]
fn other_user_cannot_connect() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP other_user_cannot_connect: needs root to switch to user nobody");
        return;
    }
    // Under /tmp (world-traversable) so that only our own directory and socket modes matter.
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    // Open the directories so that only the socket's own mode protects it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("control.sock");
    let _server = Server::start(&sock);
    let errno = connect_as_nobody(&sock);
    assert_eq!(errno, libc::EACCES, "connect as nobody: errno {errno}");
    // Sanity check of the helper: with a world-writable socket nobody can connect.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(connect_as_nobody(&sock), 0, "the probe itself works");
}

#[test]
fn channel_control_in_process() {
    let node = Arc::new(FakeNode::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mut ctl, rx) = warren::control::channel::channel();
    let task = rt.spawn(warren::control::channel::serve_channel(
        Arc::clone(&node),
        rx,
    ));
    let r = ctl
        .request(Command::Add {
            magnet: "magnet:?xt=urn:btih:bb".into(),
            dir: None,
            hops: None,
        })
        .unwrap();
    assert_eq!(r["transfer"], 1);
    ctl.send(Command::Pause { transfer: 1 }).unwrap();
    assert!(matches!(
        ctl.send(Command::Resume { transfer: 7 }),
        Err(ControlError::Node(_))
    ));
    assert_eq!(ctl.snapshot().unwrap().transfers.len(), 1);
    drop(ctl);
    rt.block_on(task).unwrap();
    assert_eq!(
        *node.calls.lock().unwrap(),
        vec!["add magnet:?xt=urn:btih:bb None None", "pause 1"]
    );
}

//! kill -9 in the middle of a download, restart with the same resume database: the torrent
//! completes, byte-identical, and what is downloaded again is at most the pieces that were in
//! flight (partially downloaded, or verified but not yet durable) at the kill.
//!
//! The downloader runs in a child process (this test binary re-run with an env var) so that it
//! can be killed by PID with SIGKILL. The seeder is a warren session in this process whose
//! inbound streams are rate-limited so that the kill lands mid-download.

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::*;
use share::connector::PeerAddr;
use share::make::{make_torrent, MakeOptions};
use share::metainfo::Metainfo;
use share::session::{AddOptions, Session, SessionConfig, TorrentSource};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PIECE: u64 = 128 * 1024;
const SIZE: usize = 12 * 1024 * 1024;
const RATE: f64 = 6.0e6; // bytes per second from the seeder

/// Limits the seeder's upload rate.
struct Throttled<S> {
    inner: S,
    start: Instant,
    sent: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            let allowed = (self.start.elapsed().as_secs_f64() * RATE) as u64 + 64 * 1024;
            if self.sent >= allowed {
                let wait = Duration::from_secs_f64((self.sent - allowed) as f64 / RATE + 0.01);
                self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                continue;
            }
            let n = data
                .len()
                .min((allowed - self.sent) as usize)
                .min(16 * 1024);
            let this = &mut *self;
            return match Pin::new(&mut this.inner).poll_write(cx, &data[..n]) {
                Poll::Ready(Ok(k)) => {
                    this.sent += k as u64;
                    Poll::Ready(Ok(k))
                }
                o => o,
            };
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The child: download with resume, print progress, exit when complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child() {
    let Ok(seed) = std::env::var("WARREN_KILL9_SEED") else {
        return; // only runs as the child of resume_after_kill9
    };
    let torrent = std::env::var("WARREN_KILL9_TORRENT").unwrap();
    let dir = std::env::var("WARREN_KILL9_DIR").unwrap();
    let db = std::env::var("WARREN_KILL9_DB").unwrap();
    let mi = Metainfo::from_bytes(&std::fs::read(torrent).unwrap()).unwrap();
    let cfg = SessionConfig {
        resume_db: Some(db.into()),
        use_trackers: false,
        ..Default::default()
    };
    let s = Session::new(
        cfg,
        Arc::new(share::clearnet::TcpConnector::bound_to(
            lo(91).parse().unwrap(),
        )),
    )
    .unwrap();
    let h = s
        .add_torrent(
            TorrentSource::Metainfo(Box::new(mi)),
            std::path::Path::new(&dir),
            AddOptions {
                peers: vec![PeerAddr::Ip(seed.parse().unwrap())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    println!("START have={}", h.status().have_bytes);
    let h2 = h.clone();
    tokio::spawn(async move {
        loop {
            let st = h2.status();
            println!(
                "PROGRESS have={} unpersisted={} in_flight={}",
                st.have_bytes,
                h2.unpersisted_pieces(),
                st.pieces_in_flight
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    h.wait_complete().await.unwrap();
    println!("DONE downloaded={}", h.status().downloaded);
    // stay alive: the parent ends this process with SIGKILL right after DONE
    tokio::time::sleep(Duration::from_secs(60)).await;
}

fn parse(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// Reads a child's output until DONE (bounded): (have at START, bytes downloaded).
async fn until_done(out: std::process::ChildStdout, what: &str) -> (u64, u64) {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let mut start = None;
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                // libtest prints "test kill9_child ... " before the test's own output
                if let Some(i) = line.find("START ") {
                    start = parse(&line[i..], "have");
                }
                if line.starts_with("DONE") {
                    return (start.unwrap(), parse(&line, "downloaded").unwrap());
                }
            }
            panic!("child exited without finishing");
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish"))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_kill9() {
    if std::env::var("WARREN_KILL9_SEED").is_ok() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("payload.bin"), payload(SIZE, 11)).unwrap();
    let made = make_torrent(
        &src.path().join("payload.bin"),
        &MakeOptions {
            piece_length: Some(PIECE),
            ..Default::default()
        },
    )
    .unwrap();
    let tfile = src.path().join("p.torrent");
    std::fs::write(&tfile, &made.torrent_bytes).unwrap();
    // throttled seeder
    let ip = lo(90);
    let listener = tokio::net::TcpListener::bind((ip.as_str(), 0))
        .await
        .unwrap();
    let seed_addr = listener.local_addr().unwrap();
    let seed = Session::new(
        SessionConfig::default(),
        Arc::new(share::clearnet::TcpConnector::new()),
    )
    .unwrap();
    seed.add_torrent(
        TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
        src.path(),
        AddOptions::default(),
    )
    .await
    .unwrap();
    let s2 = seed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, from)) = listener.accept().await else {
                return;
            };
            let t = Throttled {
                inner: s,
                start: Instant::now(),
                sent: 0,
                sleep: None,
            };
            s2.accept_inbound(Box::new(t), PeerAddr::Ip(from));
        }
    });
    let work = tempfile::tempdir().unwrap();
    let dl = work.path().join("dl");
    let db = work.path().join("resume.db");
    let child = |_: ()| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["kill9_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("WARREN_KILL9_SEED", seed_addr.to_string())
            .env("WARREN_KILL9_TORRENT", &tfile)
            .env("WARREN_KILL9_DIR", &dl)
            .env("WARREN_KILL9_DB", &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        ProcGuard::spawn("kill9_child", &mut c)
    };
    // run 1: kill -9 at ~40 %
    let mut g = child(());
    let out = g.child.stdout.take().unwrap();
    let (last, g) = tokio::task::spawn_blocking(move || {
        let r = BufReader::new(out);
        let mut last = String::new();
        for line in r.lines() {
            let line = line.unwrap();
            let line = match line.find("PROGRESS") {
                Some(i) => line[i..].to_string(),
                None => line,
            };
            if line.starts_with("PROGRESS") {
                let have = parse(&line, "have").unwrap();
                last = line.clone();
                if have >= SIZE as u64 * 2 / 5 {
                    // SIGKILL by PID
                    let st = Command::new("kill")
                        .args(["-9", &g.pid().to_string()])
                        .status()
                        .unwrap();
                    assert!(st.success());
                    break;
                }
            }
            assert!(
                !line.starts_with("DONE"),
                "finished before the kill; raise SIZE"
            );
        }
        (last, g)
    })
    .await
    .unwrap();
    drop(g);
    let have1 = parse(&last, "have").unwrap();
    let unpersisted = parse(&last, "unpersisted").unwrap();
    let in_flight = parse(&last, "in_flight").unwrap();
    eprintln!("killed at: {last}");

    // run 2: resume
    let mut g2 = child(());
    let out = g2.child.stdout.take().unwrap();
    let (start_have, downloaded) = until_done(out, "resumed download").await;
    // SIGKILL the moment completion is reported: what was reported complete must stay complete
    let st = Command::new("kill")
        .args(["-9", &g2.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    drop(g2);
    eprintln!("restart: have={start_have} downloaded={downloaded} (killed with have={have1} unpersisted={unpersisted} in_flight={in_flight})");
    assert!(same_file(
        &dl.join("payload.bin"),
        &src.path().join("payload.bin")
    ));
    // Lost work: pieces verified before the kill that were not durable. The last progress
    // line is up to 20 ms old: allow the pieces that can complete in that time (1).
    let lost_pieces = have1.saturating_sub(start_have).div_ceil(PIECE);
    assert!(
        lost_pieces <= unpersisted + 1,
        "lost {lost_pieces} verified pieces, only {unpersisted} were not yet durable"
    );
    // What run 2 downloaded: everything it did not have at start, and no more than that plus
    // a few endgame duplicates.
    let missing = SIZE as u64 - start_have;
    assert!(
        downloaded <= missing + 4 * 16 * 1024,
        "re-downloaded {downloaded} bytes for {missing} missing"
    );
    assert!(start_have > 0, "nothing was persisted before the kill");

    // run 3: killed right after it reported completion, it starts complete and downloads nothing
    let mut g3 = child(());
    let out = g3.child.stdout.take().unwrap();
    let (start3, downloaded3) = until_done(out, "third run").await;
    drop(g3);
    assert_eq!(
        (start3, downloaded3),
        (SIZE as u64, 0),
        "reported complete, then killed: the restart must find it complete"
    );
}

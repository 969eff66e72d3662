//! Fail-closed: the process holding the tun (and a real 3-hop overlay network with its client)
//! is killed mid-transfer; the client's transfer
//! fails, the tun is gone, and the namespace has nothing but `lo` (no route anywhere).
//!
//! The holder is this test binary re-run as a helper (`kill_helper_holds_tunnel`, which does
//! nothing unless WT_KILL_HELPER_NS is set), killed by its PID.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{hide_localhost, http_server, overlay_provider, run, EXIT_NAME};
use tunnel::netns::{ip, unique_name};
use tunnel::{Netns, TunnelConfig, TunnelNamespace};

/// Kills the helper if the test fails before it does.
struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_helper_holds_tunnel() {
    let Ok(ns) = std::env::var("WT_KILL_HELPER_NS") else {
        return; // only does something when run as the helper
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let netns = Netns::existing(&ns).unwrap();
        let (_net, provider) = overlay_provider().await;
        let tns = TunnelNamespace::attach(provider, TunnelConfig::default(), netns).unwrap();
        println!("READY {}", tns.tun_name());
        // bounded: the test kills us long before this
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

fn lo_tx_packets(ns: &str) -> u64 {
    let out = ip(&["-n", ns, "-s", "-o", "link", "show", "lo"]).unwrap();
    // "... TX: bytes packets ... \    N  M ..." (one line with -o): take the TX packets figure
    let tx = out.split("TX:").nth(1).unwrap();
    let nums: Vec<u64> = tx
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter_map(|w| w.parse().ok())
        .collect();
    nums[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_tunnel_holder_fails_closed() {
    skip_unless_ready!("curl");
    let port = http_server().await;
    let ns = Netns::create(&unique_name("wt-")).unwrap();
    let name = ns.name().to_string();
    let mut helper = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "kill_helper_holds_tunnel",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WT_KILL_HELPER_NS", &name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = helper.0.stdout.take().unwrap();
    let tun = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            match lines.next() {
                // libtest prints "test NAME ... " without a newline before our line
                Some(Ok(l)) if l.contains("READY ") => {
                    return l.rsplit("READY ").next().unwrap_or("").trim().to_string()
                }
                Some(_) => continue,
                None => break,
            }
        }
        panic!("helper did not come up");
    })
    .await
    .unwrap();
    let mut links = ns_links(&ns);
    links.sort();
    assert_eq!(links, {
        let mut v = vec!["lo".to_string(), tun.clone()];
        v.sort();
        v
    });

    hide_localhost(&name);
    let (code, fake, err) = run(tokio::process::Command::from(ns.command(
        "python3",
        [
            "-c",
            &format!("import socket; print(socket.gethostbyname('{EXIT_NAME}'))"),
        ],
    )))
    .await;
    assert_eq!(code, 0, "lookup through the tunnel failed: {err}");
    let fake = fake.trim().to_string();

    // a slow 256 MiB download, killed part-way
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("body");
    let size: u64 = 256 << 20;
    let url = format!("http://{fake}:{port}/{size}");
    let curl = ns
        .command(
            "curl",
            [
                "-sS",
                "--limit-rate",
                "4M",
                "--speed-limit",
                "1",
                "--speed-time",
                "4",
                "-m",
                "60",
                "-o",
                out.to_str().unwrap(),
                &url,
            ],
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut curl = ChildGuard(curl);
    let t = Instant::now();
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < (2 << 20) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "download did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lo_before = lo_tx_packets(&name);
    helper.0.kill().unwrap(); // SIGKILL by PID
    helper.0.wait().unwrap();

    let status = tokio::task::spawn_blocking(move || curl.0.wait().unwrap())
        .await
        .unwrap();
    let got = std::fs::metadata(&out).unwrap().len();
    assert!(!status.success(), "curl must fail when the tunnel dies");
    assert!(got < size, "the transfer was cut ({got} bytes)");

    // the tun is gone: nothing but lo, no route at all, and nothing went out by lo either
    assert_eq!(ns_links(&ns), vec!["lo".to_string()]);
    assert!(ip(&["-n", &name, "route", "show"])
        .unwrap()
        .trim()
        .is_empty());
    assert!(ip(&["-n", &name, "-6", "route", "show"])
        .unwrap()
        .trim()
        .is_empty());
    assert!(
        ip(&["link", "show", &tun]).is_err(),
        "the tun did not come back outside"
    );
    let t = Instant::now();
    let (code, _, err) = run(tokio::process::Command::from(ns.command(
        "curl",
        ["-sS", "-m", "10", &format!("http://{fake}:{port}/10")],
    )))
    .await;
    assert_eq!(
        code, 7,
        "a new connection fails at once (couldn't connect): {err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let (code, _, _) = run(tokio::process::Command::from(ns.command(
        "python3",
        [
            "-c",
            &format!("import socket; socket.gethostbyname('{EXIT_NAME}')"),
        ],
    )))
    .await;
    assert_ne!(code, 0, "names do not resolve any more");
    assert_eq!(
        lo_tx_packets(&name),
        lo_before,
        "nothing was sent over lo in place of the tun"
    );
}

fn ns_links(ns: &Netns) -> Vec<String> {
    ns.links().unwrap()
}

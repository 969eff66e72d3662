//! System-wide mode inside a namespace that plays the user's host ("host"), linked by a veth
//! to a namespace that plays the internet ("net", with a small HTTP server). The tunnel
//! process runs inside "host" (this test binary re-run as a helper); its stand-in exit marks its
//! sockets (SO_MARK) like warren's relay links do.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use overlay::{AnonDatagram, AnonProvider, BoxStream, IsolationKey, ProviderError, Target};
use std::os::fd::AsRawFd;
use tunnel::netns::{ip, unique_name};
use tunnel::system::{mark_socket, system_down, SystemConfig, SystemTunnel};
use tunnel::{Netns, TunnelConfig};

struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stand-in exit on the "host": marked sockets straight to the target.
struct MarkedExit;

#[async_trait]
impl AnonProvider for MarkedExit {
    fn name(&self) -> &'static str {
        "marked-standin"
    }
    async fn connect(&self, target: &Target, _: IsolationKey) -> Result<BoxStream, ProviderError> {
        let Target::Addr(a) = target else {
            return Err(ProviderError::Unsupported("names"));
        };
        let s = tokio::net::TcpSocket::new_v4()?;
        mark_socket(s.as_raw_fd())?;
        Ok(Box::pin(s.connect(*a).await?))
    }
    async fn datagram(&self, _: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
        Err(ProviderError::Unsupported("UDP"))
    }
    async fn resolve(
        &self,
        _: &str,
        _: IsolationKey,
    ) -> Result<Vec<std::net::IpAddr>, ProviderError> {
        Err(ProviderError::Unsupported("resolve"))
    }
}

#[test]
fn system_helper() {
    let Ok(mode) = std::env::var("WT_SYSTEM_MODE") else {
        return; // only does something when run as the helper
    };
    let state = std::path::PathBuf::from(std::env::var("WT_SYSTEM_STATE").unwrap());
    if mode == "down" {
        system_down(&state).unwrap();
        println!("DOWN");
        return;
    }
    let resolv = std::env::var("WT_SYSTEM_RESOLV").unwrap().into();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let cfg = SystemConfig {
            tunnel: TunnelConfig::default(),
            state_file: state,
            resolv_path: resolv,
        };
        let st = SystemTunnel::up(Arc::new(MarkedExit), cfg).unwrap();
        println!("READY {}", st.tun_name());
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

fn helper(host: &str, mode: &str, state: &str, resolv: &str) -> ChildGuard {
    ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", host])
            .arg(std::env::current_exe().unwrap())
            .args([
                "system_helper",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WT_SYSTEM_MODE", mode)
            .env("WT_SYSTEM_STATE", state)
            .env("WT_SYSTEM_RESOLV", resolv)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn wait_line(child: &mut ChildGuard, word: &str) -> String {
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        match lines.next() {
            Some(Ok(l)) if l.contains(word) => {
                return l.rsplit(word).next().unwrap_or("").trim().to_string()
            }
            Some(_) => continue,
            None => break,
        }
    }
    panic!("helper did not print {word}");
}

fn tx_packets(ns: &str, dev: &str) -> u64 {
    let out = ip(&["-n", ns, "-s", "-o", "link", "show", dev]).unwrap();
    let tx = out.split("TX:").nth(1).unwrap();
    let nums: Vec<u64> = tx
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter_map(|w| w.parse().ok())
        .collect();
    nums[1]
}

fn nft_ruleset(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(ns: &str, extra: &[&str], url: &str) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "-m", "5"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn system_mode_routes_everything_through_the_tunnel_and_restores_exactly() {
    skip_unless_ready!("curl", "python3", "nft");
    let host = Netns::create(&unique_name("wt-h")).unwrap();
    let net = Netns::create(&unique_name("wt-n")).unwrap();
    let (h, n) = (host.name().to_string(), net.name().to_string());
    let vh = unique_name("vh");
    let vn = unique_name("vn");
    ip(&[
        "link", "add", &vh, "netns", &h, "type", "veth", "peer", "name", &vn, "netns", &n,
    ])
    .unwrap();
    ip(&["-n", &h, "addr", "add", "10.99.0.1/24", "dev", &vh]).unwrap();
    ip(&["-n", &n, "addr", "add", "10.99.0.2/24", "dev", &vn]).unwrap();
    ip(&["-n", &h, "link", "set", &vh, "up"]).unwrap();
    ip(&["-n", &n, "link", "set", &vn, "up"]).unwrap();
    ip(&["-n", &h, "route", "add", "default", "via", "10.99.0.2"]).unwrap();
    let etc = format!("/etc/netns/{h}");
    std::fs::create_dir_all(&etc).unwrap();
    let resolv = format!("{etc}/resolv.conf");
    let original = b"# the host's own resolver\nnameserver 10.99.0.2\n".to_vec();
    std::fs::write(&resolv, &original).unwrap();

    let _server = ChildGuard(
        net.command(
            "python3",
            [
                "-c",
                "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('10.99.0.2',8080));s.listen(64)\nwhile True:\n c,_=s.accept();c.recv(4096);c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nhello-from-net');c.close()",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let url = "http://10.99.0.2:8080/";
    let t = Instant::now();
    while curl(&h, &[], url).1 != "hello-from-net" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rules_before = ip(&["-n", &h, "rule", "show"]).unwrap();
    let routes_before = ip(&["-n", &h, "route", "show", "table", "all"]).unwrap();
    let nft_before = nft_ruleset(&h);

    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("system.json");
    let state_s = state.to_str().unwrap();
    let mut up = helper(&h, "up", state_s, &resolv);
    let tun = wait_line(&mut up, "READY ");

    // everything unmarked goes into the tun, and still works (through the "exit")
    assert!(ip(&["-n", &h, "route", "get", "10.99.0.2"])
        .unwrap()
        .contains(&format!("dev {tun}")));
    assert!(
        ip(&["-n", &h, "route", "get", "10.99.0.2", "mark", "0x5772"])
            .unwrap()
            .contains(&format!("dev {vh}"))
    );
    assert_eq!(curl(&h, &[], url), (0, "hello-from-net".into()));
    assert!(std::fs::read_to_string(&resolv)
        .unwrap()
        .contains("nameserver 198.18.0.2"));
    // binding to the physical interface does not get around the kill switch
    let before = tx_packets(&h, &vh);
    assert_ne!(curl(&h, &["--interface", &vh], url).0, 0);
    assert_eq!(
        tx_packets(&h, &vh),
        before,
        "an unmarked packet left by the veth"
    );

    // warren dies: nothing gets out at all
    up.0.kill().unwrap();
    up.0.wait().unwrap();
    assert!(
        ip(&["-n", &h, "link", "show", &tun]).is_err(),
        "tun still there"
    );
    let before = tx_packets(&h, &vh);
    let t = Instant::now();
    assert_ne!(curl(&h, &[], url).0, 0, "traffic flowed after warren died");
    assert!(t.elapsed() < Duration::from_secs(4), "should fail at once");
    assert_eq!(
        tx_packets(&h, &vh),
        before,
        "a packet left after warren died"
    );

    // down restores exactly
    let mut down = helper(&h, "down", state_s, &resolv);
    wait_line(&mut down, "DOWN");
    down.0.wait().unwrap();
    assert_eq!(ip(&["-n", &h, "rule", "show"]).unwrap(), rules_before);
    assert_eq!(
        ip(&["-n", &h, "route", "show", "table", "all"]).unwrap(),
        routes_before
    );
    assert_eq!(nft_ruleset(&h), nft_before);
    assert_eq!(std::fs::read(&resolv).unwrap(), original);
    assert!(!state.exists());
    assert_eq!(curl(&h, &[], url), (0, "hello-from-net".into()));
}

//! Packet captures with tcpdump inside a namespace, read back as (destination address, port) pairs:
//! the leak checks assert that everything leaving a client host goes to an overlay link port.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::netns::Netns;
use crate::proc::{wait_until, Child};

pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
}

/// One captured IPv4/IPv6 packet: source and destination as tcpdump printed them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Packet {
    pub src: String,
    pub dst: String,
}

impl Capture {
    /// Starts capturing every packet on `iface` in `ns` into `dir/<iface>.pcap`.
    pub fn start(ns: &Netns, iface: &str, dir: &std::path::Path) -> io::Result<Capture> {
        let file = dir.join(format!("{iface}.pcap"));
        let log = dir.join(format!("{iface}.tcpdump.log"));
        let mut cmd = ns.command("tcpdump");
        // -Z root: tcpdump would otherwise drop to its own user and fail to write into a 0700 tempdir.
        // --immediate-mode: without it packets wait in a ring block that is lost when we stop it.
        cmd.args([
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&file);
        let child = Child::spawn("tcpdump", cmd, &log)?;
        // tcpdump says "listening on" once the capture is live
        let live = wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .map(|s| s.contains("listening on"))
                .unwrap_or(false)
        });
        if !live {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(io::Error::other(format!(
                "tcpdump on {iface} did not start: {}",
                said.trim()
            )));
        }
        Ok(Capture {
            child: Some(child),
            file,
        })
    }

    /// Stops the capture and returns the packets it saw.
    pub fn stop(mut self) -> io::Result<Vec<Packet>> {
        if let Some(mut c) = self.child.take() {
            // SIGINT lets tcpdump flush its file
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.pid() as i32, libc::SIGINT);
            }
            if c.wait_timeout(Duration::from_secs(5)).is_none() {
                c.kill9();
            }
        }
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&self.file)
            .stdin(Stdio::null())
            .output()?;
        Ok(parse(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Parses `tcpdump -n -r` lines such as `12:00:00.1 IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S]`.
pub fn parse(text: &str) -> Vec<Packet> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some(rest) = line
            .split(" IP6 ")
            .nth(1)
            .or_else(|| line.split(" IP ").nth(1))
        else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(src), Some(">"), Some(dst)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let dst = dst.split(':').next().unwrap_or(dst).to_string();
        v.push(Packet {
            src: src.to_string(),
            dst,
        });
    }
    v
}

/// The distinct destinations among `packets` sent from an address starting with `from_prefix`.
pub fn destinations_from(packets: &[Packet], from_prefix: &str) -> BTreeSet<String> {
    packets
        .iter()
        .filter(|p| p.src.starts_with(from_prefix))
        .map(|p| p.dst.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcpdump_lines() {
        let t = "10:00:00.000001 IP 10.213.1.1.40000 > 10.213.1.2.7000: Flags [S], seq 1\n\
                 10:00:00.000002 IP 10.213.1.2.7000 > 10.213.1.1.40000: Flags [S.], seq 2\n\
                 10:00:00.000003 ARP, Request who-has 10.213.1.2 tell 10.213.1.1\n\
                 10:00:00.000004 IP 10.213.1.1.5353 > 10.213.1.2.53: 1+ A? example. (25)\n";
        let p = parse(t);
        assert_eq!(p.len(), 3);
        let d = destinations_from(&p, "10.213.1.1.");
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            vec!["10.213.1.2.53".to_string(), "10.213.1.2.7000".to_string()]
        );
    }
}

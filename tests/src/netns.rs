//! Network namespaces and veth links made by a test and removed when dropped.
//!
//! Addresses used inside the namespaces come from 10.213.0.0/16, which exists only inside the
//! namespaces a test creates; nothing is routed to it from the host.

use std::io;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> io::Result<Output> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// A network namespace with `lo` up. Dropping it kills every process left inside and deletes it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `wt<tag>-<pid>-<n>` (short: interface and namespace names have length limits).
    pub fn new(tag: &str) -> io::Result<Netns> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("wt{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// A command that runs `prog` inside the namespace.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Runs a shell command inside the namespace and returns its output.
    pub fn sh(&self, script: &str) -> io::Result<Output> {
        self.command("sh").arg("-c").arg(script).output()
    }

    /// Whether a process in the namespace listens on TCP `port` (any address); reads the socket
    /// table, sends nothing.
    pub fn listening_tcp(&self, port: u16) -> bool {
        self.sh(&format!("ss -Hltn 'sport = :{port}'"))
            .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            .unwrap_or(false)
    }

    /// Whether a UDP socket in the namespace is bound to `port`.
    pub fn bound_udp(&self, port: u16) -> bool {
        self.sh(&format!("ss -Hlun 'sport = :{port}'"))
            .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            .unwrap_or(false)
    }

    /// Names of the interfaces in the namespace.
    pub fn links(&self) -> io::Result<Vec<String>> {
        let out = self.ip(&["-o", "link", "show"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect())
    }

    fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill on a pid that `ip netns pids` reported for our own namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = ip(&["netns", "del", &self.name]);
        // a per-namespace /etc (resolv.conf) a test may have made for it
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
    }
}

/// A veth pair between two namespaces, with an address on each end (`/24` from the same subnet).
/// Deleting either namespace deletes the pair.
pub struct Veth {
    pub a_if: String,
    pub b_if: String,
    pub a_addr: String,
    pub b_addr: String,
}

impl Veth {
    /// Connects `a` and `b` on subnet `10.213.<subnet>.0/24`: `a` gets .1, `b` gets .2.
    pub fn connect(a: &Netns, b: &Netns, subnet: u8) -> io::Result<Veth> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let a_if = format!("va{}x{n}", std::process::id() % 100_000);
        let b_if = format!("vb{}x{n}", std::process::id() % 100_000);
        ip(&[
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ])?;
        let a_addr = format!("10.213.{subnet}.1");
        let b_addr = format!("10.213.{subnet}.2");
        a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", &a_if])?;
        b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", &b_if])?;
        a.ip(&["link", "set", &a_if, "up"])?;
        b.ip(&["link", "set", &b_if, "up"])?;
        // a fresh veth drops what is sent before it has carrier: wait until both ends are up
        let up = |ns: &Netns, ifname: &str| {
            ns.ip(&["-o", "link", "show", ifname])
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("state UP"))
                .unwrap_or(false)
        };
        if !crate::proc::wait_until(std::time::Duration::from_secs(5), || {
            up(a, &a_if) && up(b, &b_if)
        }) {
            return Err(io::Error::other(format!(
                "veth {a_if}/{b_if} did not come up"
            )));
        }
        Ok(Veth {
            a_if,
            b_if,
            a_addr,
            b_addr,
        })
    }
}

/// A host of a test bed: its own namespace behind `router`, on subnet `10.213.<subnet>.0/24`, with
/// its default route through the router (which must forward).
pub struct Host {
    pub ns: Netns,
    pub addr: String,
    /// the interface inside the host's namespace
    pub iface: String,
}

impl Host {
    pub fn behind(router: &Netns, tag: &str, subnet: u8) -> io::Result<Host> {
        let ns = Netns::new(tag)?;
        let v = Veth::connect(router, &ns, subnet)?;
        ns.ip(&["route", "add", "default", "via", &v.a_addr])?;
        Ok(Host {
            ns,
            addr: v.b_addr,
            iface: v.b_if,
        })
    }
}

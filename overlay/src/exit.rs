//! Exit policy: which destinations an exit accepts. Private, loopback, link-local, multicast and
//! unspecified addresses are always refused unless the node-local `allow_private` testing flag is set
//! (only test networks set it; it is not part of the descriptor).

use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitPolicy {
    /// Inclusive TCP/UDP port ranges accepted. Empty: nothing accepted.
    pub accept_ports: Vec<(u16, u16)>,
    /// Whether datagrams (UDP) are carried.
    pub allow_udp: bool,
}

/// The ports an exit accepts unless configured otherwise: the web (80, 443) and the unprivileged
/// range where BitTorrent peers, trackers (6969) and DHT nodes (6881) live. Not SMTP (25, 465,
/// 587) or the other well-known services below 1024 (abuse complaints fall on exit operators).
/// `warren node`'s config (`[exit_policy] allow_ports`) defaults to the same list.
pub const DEFAULT_EXIT_PORTS: &[(u16, u16)] = &[(80, 80), (443, 443), (1024, 65535)];

impl Default for ExitPolicy {
    /// [`DEFAULT_EXIT_PORTS`], TCP and UDP, public destinations only.
    fn default() -> Self {
        ExitPolicy {
            accept_ports: DEFAULT_EXIT_PORTS.to_vec(),
            allow_udp: true,
        }
    }
}

/// Why an exit refuses a destination.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    #[error("port {0} is not allowed by the exit policy")]
    Port(u16),
    #[error("destination {0} is a private/loopback/link-local address")]
    PrivateAddress(IpAddr),
    #[error("this exit does not carry UDP")]
    NoUdp,
    #[error("destination {0} is one of the exit's own addresses")]
    OwnAddress(IpAddr),
}

impl ExitPolicy {
    pub fn reject_all() -> Self {
        ExitPolicy {
            accept_ports: Vec::new(),
            allow_udp: false,
        }
    }

    pub fn port_allowed(&self, port: u16) -> bool {
        self.accept_ports
            .iter()
            .any(|&(lo, hi)| lo <= port && port <= hi)
    }

    /// [`ExitPolicy::check`], also refusing the exit's own addresses (`own`): a client must not
    /// reach services of the exit host that listen on its public address.
    pub fn check_not_own(
        &self,
        addr: &SocketAddr,
        udp: bool,
        allow_private: bool,
        own: &[IpAddr],
    ) -> Result<(), PolicyRefusal> {
        self.check(addr, udp, allow_private)?;
        if own.contains(&addr.ip()) {
            return Err(PolicyRefusal::OwnAddress(addr.ip()));
        }
        Ok(())
    }

    /// Checks one resolved destination.
    pub fn check(
        &self,
        addr: &SocketAddr,
        udp: bool,
        allow_private: bool,
    ) -> Result<(), PolicyRefusal> {
        if udp && !self.allow_udp {
            return Err(PolicyRefusal::NoUdp);
        }
        if !self.port_allowed(addr.port()) {
            return Err(PolicyRefusal::Port(addr.port()));
        }
        if !allow_private && is_non_public(&addr.ip()) {
            return Err(PolicyRefusal::PrivateAddress(addr.ip()));
        }
        Ok(())
    }
}

/// The public addresses of this host's interfaces (an exit refuses them as destinations, with
/// the address its descriptor publishes). Empty if they cannot be listed.
pub fn own_public_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that we walk read-only and free with freeifaddrs;
    // each ifa_addr is null or points to a sockaddr of the family it names.
    unsafe {
        if libc::getifaddrs(&mut ifs) != 0 {
            return out;
        }
        let mut p = ifs;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                let ip = match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let s = &*(a as *const libc::sockaddr_in);
                        Some(IpAddr::from(u32::from_be(s.sin_addr.s_addr).to_be_bytes()))
                    }
                    libc::AF_INET6 => {
                        let s = &*(a as *const libc::sockaddr_in6);
                        Some(IpAddr::from(s.sin6_addr.s6_addr))
                    }
                    _ => None,
                };
                if let Some(ip) = ip.filter(|ip| !is_non_public(ip)) {
                    out.push(ip);
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifs);
    }
    out
}

/// Loopback, RFC 1918, CGNAT, link-local, unique-local, multicast, broadcast, unspecified,
/// documentation and other non-global ranges.
pub fn is_non_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_non_public(&IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0) // v4-compatible
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 could reach private v4
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_reduced_one_and_own_addresses_are_refused() {
        let p = ExitPolicy::default();
        // a public address (only compared, never reached)
        let at = |port| SocketAddr::from(([93, 184, 216, 34], port));
        for ok in [80, 443, 1024, 6881, 6969, 51413, 65535] {
            assert!(p.check(&at(ok), false, false).is_ok(), "{ok}");
        }
        for refused in [22, 25, 465, 587, 1023] {
            assert_eq!(
                p.check(&at(refused), false, false),
                Err(PolicyRefusal::Port(refused))
            );
        }
        let own: IpAddr = "93.184.216.34".parse().unwrap();
        assert_eq!(
            p.check_not_own(&at(443), false, false, &[own]),
            Err(PolicyRefusal::OwnAddress(own))
        );
        assert!(p.check_not_own(&at(443), false, false, &[]).is_ok());
        // the host's own public addresses are never reported as non-public ones
        assert!(own_public_addresses().iter().all(|ip| !is_non_public(ip)));
    }

    #[test]
    fn private_ranges_refused() {
        let p = ExitPolicy::default();
        for a in [
            "127.0.0.1:80",
            "10.1.2.3:80",
            "192.168.1.1:80",
            "169.254.1.1:80",
            "[::1]:80",
            "[fe80::1]:80",
            "[fd00::1]:80",
            "[::ffff:127.0.0.1]:80",
            "0.0.0.0:80",
            "100.64.0.1:80",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(
                p.check(&a, false, false),
                Err(PolicyRefusal::PrivateAddress(a.ip())),
                "{a}"
            );
            assert_eq!(p.check(&a, false, true), Ok(()), "{a} with testing flag");
        }
        assert_eq!(
            p.check(&"93.184.216.34:443".parse().unwrap(), false, false),
            Ok(())
        );
        assert_eq!(
            p.check(&"[2a00:1450::1]:443".parse().unwrap(), true, false),
            Ok(())
        );
    }

    #[test]
    fn ports_and_udp() {
        let p = ExitPolicy {
            accept_ports: vec![(80, 80), (6881, 6889)],
            allow_udp: false,
        };
        let ok: SocketAddr = "93.184.216.34:6885".parse().unwrap();
        assert_eq!(p.check(&ok, false, false), Ok(()));
        assert_eq!(p.check(&ok, true, false), Err(PolicyRefusal::NoUdp));
        assert_eq!(
            p.check(&"93.184.216.34:22".parse().unwrap(), false, false),
            Err(PolicyRefusal::Port(22))
        );
    }
}

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

impl Default for ExitPolicy {
    /// Accept every port, TCP and UDP (public destinations only).
    fn default() -> Self {
        ExitPolicy {
            accept_ports: vec![(1, 65535)],
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

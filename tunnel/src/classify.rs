//! Packet classification at the tun: only IPv4 TCP and UDP go on to the stack; ICMP, IPv6
//! (the tunnel namespace has no IPv6) and everything else are dropped and counted.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    Tcp,
    Udp,
    Icmp,
    Ipv6,
    Other(u8),
    Invalid,
}

/// Classifies one packet read from the tun.
pub fn classify(pkt: &[u8]) -> PacketClass {
    let Some(&first) = pkt.first() else {
        return PacketClass::Invalid;
    };
    match first >> 4 {
        4 => {}
        6 => return PacketClass::Ipv6,
        _ => return PacketClass::Invalid,
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return PacketClass::Invalid;
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total < ihl || total > pkt.len() {
        return PacketClass::Invalid;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    if dst.is_broadcast() || dst.is_multicast() || dst.is_unspecified() || src.is_unspecified() {
        return PacketClass::Other(pkt[9]);
    }
    // Fragments cannot be demultiplexed by port; the namespace's MTU matches the stack's.
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x3fff != 0 {
        return PacketClass::Other(pkt[9]);
    }
    match pkt[9] {
        6 if total >= ihl + 20 => PacketClass::Tcp,
        17 if total >= ihl + 8 => PacketClass::Udp,
        1 => PacketClass::Icmp,
        6 | 17 => PacketClass::Invalid,
        p => PacketClass::Other(p),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IPv4 header + payload (checksums left zero; classify does not check them).
    pub(crate) fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            proto,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn classes() {
        let s = [198, 18, 0, 1];
        let d = [93, 184, 216, 34];
        assert_eq!(classify(&ipv4(6, s, d, &[0; 20])), PacketClass::Tcp);
        assert_eq!(classify(&ipv4(17, s, d, &[0; 8])), PacketClass::Udp);
        assert_eq!(classify(&ipv4(1, s, d, &[8, 0, 0, 0])), PacketClass::Icmp);
        assert_eq!(classify(&ipv4(47, s, d, &[0; 8])), PacketClass::Other(47));
        assert_eq!(
            classify(&ipv4(17, s, [255; 4], &[0; 8])),
            PacketClass::Other(17)
        );
        assert_eq!(
            classify(&ipv4(17, s, [224, 0, 0, 251], &[0; 8])),
            PacketClass::Other(17)
        );
        assert_eq!(classify(&ipv4(6, s, d, &[0; 10])), PacketClass::Invalid);
        let mut v6 = vec![0x60];
        v6.extend_from_slice(&[0; 39]);
        assert_eq!(classify(&v6), PacketClass::Ipv6);
        assert_eq!(classify(&[]), PacketClass::Invalid);
        assert_eq!(classify(&[0x45, 0, 0]), PacketClass::Invalid);
        let mut frag = ipv4(17, s, d, &[0; 8]);
        frag[6] = 0x20; // more fragments
        assert_eq!(classify(&frag), PacketClass::Other(17));
        let mut long = ipv4(17, s, d, &[0; 8]);
        long[3] = 200; // total length beyond the buffer
        assert_eq!(classify(&long), PacketClass::Invalid);
    }
}

//! ICMP errors the tunnel writes into the namespace (sans-IO): a datagram that cannot be carried
//! (the provider refuses UDP, as Tor does, or the exit refuses the send) is answered with
//! "destination unreachable / port unreachable", so that a connected socket gets
//! `ECONNREFUSED` at once instead of waiting for timeouts.

use std::net::SocketAddrV4;

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = match c {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, total: u16) -> [u8; 20] {
    let t = total.to_be_bytes();
    let mut h = [
        0x45, 0, t[0], t[1], 0, 0, 0x40, 0, 64, proto, 0, 0, src[0], src[1], src[2], src[3],
        dst[0], dst[1], dst[2], dst[3],
    ];
    let c = checksum(&h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
    h
}

/// An IPv4 ICMP port-unreachable packet telling `program` that its UDP datagram to `dst`
/// (with `payload_len` bytes of payload) was refused. It quotes the datagram's IPv4 and UDP
/// headers, which is what the kernel matches to the sending socket.
pub fn port_unreachable(program: SocketAddrV4, dst: SocketAddrV4, payload_len: usize) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload_len).unwrap_or(u16::MAX);
    let quoted_total = udp_len.saturating_add(20);
    let mut quoted = Vec::with_capacity(28);
    quoted.extend_from_slice(&ipv4_header(
        program.ip().octets(),
        dst.ip().octets(),
        17,
        quoted_total,
    ));
    quoted.extend_from_slice(&program.port().to_be_bytes());
    quoted.extend_from_slice(&dst.port().to_be_bytes());
    quoted.extend_from_slice(&udp_len.to_be_bytes());
    quoted.extend_from_slice(&[0, 0]);
    // type 3 (destination unreachable), code 3 (port unreachable), checksum, unused
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let c = checksum(&icmp).to_be_bytes();
    icmp[2] = c[0];
    icmp[3] = c[1];
    let total = u16::try_from(20 + icmp.len()).unwrap_or(u16::MAX);
    let mut pkt = ipv4_header(dst.ip().octets(), program.ip().octets(), 1, total).to_vec();
    pkt.extend_from_slice(&icmp);
    pkt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        // RFC 1071's example words
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&d), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn port_unreachable_quotes_the_datagram() {
        let me: SocketAddrV4 = "198.18.0.1:40000".parse().unwrap();
        let to: SocketAddrV4 = "198.18.0.20:6969".parse().unwrap();
        let p = port_unreachable(me, to, 16);
        assert_eq!(p.len(), 20 + 8 + 28);
        assert_eq!(p[9], 1, "ICMP");
        assert_eq!(&p[12..16], &[198, 18, 0, 20], "from the destination");
        assert_eq!(&p[16..20], &[198, 18, 0, 1], "to the program");
        assert_eq!(checksum(&p[..20]), 0, "IP header checksum");
        assert_eq!((p[20], p[21]), (3, 3));
        assert_eq!(checksum(&p[20..]), 0, "ICMP checksum");
        let q = &p[28..];
        assert_eq!(q[9], 17);
        assert_eq!(&q[12..16], &[198, 18, 0, 1]);
        assert_eq!(u16::from_be_bytes([q[20], q[21]]), 40000);
        assert_eq!(u16::from_be_bytes([q[22], q[23]]), 6969);
        assert_eq!(u16::from_be_bytes([q[24], q[25]]), 24);
        assert_eq!(
            crate::classify::classify(&p),
            crate::classify::PacketClass::Icmp
        );
    }
}

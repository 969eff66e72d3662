//! One function per fuzz target. Each takes the raw fuzz input as the network (or the tun) would
//! deliver it. A panic is a bug: either in a parser or in a round-trip property checked here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use overlay::cell::{self, rcmd, CELL_SIZE, RELAY_BODY, RELAY_DATA_MAX, WIRE_CELL};
use overlay::descriptor::Descriptor;
use overlay::dht::{self, Contact, DhtServer, Key, StoreLimits, SwarmEntry, SwarmKeys};
use overlay::handshake::{self, HopInitiator, LinkInitiator};
use overlay::hs::handshake::{service_accept, ServiceKeys};
use overlay::hs::message::HsMessage;
use overlay::link::LinkCipher;
use overlay::relay_crypto::{client_open, HopKeys, LAYER_CIPHER};
use overlay::Identity;
use share::bencode::{self, Limits};
use share::magnet::Magnet;
use share::metadata::{ExtHandshake, MetadataFetcher, MetadataMsg};
use share::metainfo::{Info, Metainfo};
use share::tracker::{self, Announce, Event, HttpUrl};
use share::udp_tracker::{Next, UdpTracker};
use share::wire::{Handshake, Message, DEFAULT_MAX_MESSAGE_LEN, HANDSHAKE_LEN};
use tunnel::classify::{classify, PacketClass};
use tunnel::dns;

/// A fixed "now" (Unix seconds) so that signature/expiry checks are deterministic.
pub const NOW: u64 = 1_790_000_000;

/// The fixed identity of the node under test (link and hop handshakes, descriptors).
pub fn local_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_secrets([0x11; 32], [0x22; 32]))
}

/// The fixed identity of the remote end (handshake seeds are made with it).
pub fn remote_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_secrets([0x33; 32], [0x44; 32]))
}

/// The fixed hidden-service key of the node under test.
pub fn service_keys() -> &'static ServiceKeys {
    static K: OnceLock<ServiceKeys> = OnceLock::new();
    K.get_or_init(|| {
        let id = Identity::from_secrets([0x55; 32], [0x66; 32]);
        ServiceKeys {
            private: id.x25519_secret_bytes(),
            public: id.x25519_public(),
        }
    })
}

/// The fixed link key split used for frame targets.
pub const LINK_SPLIT: ([u8; 32], [u8; 32]) = ([0x77; 32], [0x88; 32]);
/// The fixed infohash used by swarm-record and MSE targets.
pub const INFOHASH: [u8; 20] = [0x99; 20];

// ---------------------------------------------------------------------------------------------
// share

/// Bencode: default limits are canonical, so a successful decode must re-encode to the input.
pub fn bencode(data: &[u8]) {
    if let Ok(v) = bencode::decode(data) {
        assert_eq!(
            bencode::encode(&v),
            data,
            "canonical bencode must re-encode byte for byte"
        );
    }
    if let Ok(v) = bencode::decode_with(data, &Limits::wire()) {
        let again = bencode::decode(&bencode::encode(&v)).expect("re-encoded value decodes");
        assert_eq!(again, v);
    }
    if let Ok((v, n)) = bencode::decode_prefix(data) {
        assert!(n <= data.len());
        assert_eq!(bencode::encode(&v), &data[..n]);
    }
    if let Ok((_, spans)) = bencode::decode_with_spans(data, &Limits::default()) {
        for (_, r) in spans {
            assert!(r.start <= r.end && r.end <= data.len());
            bencode::decode(&data[r]).expect("a span holds one whole value");
        }
    }
    if let Ok(Some(r)) = bencode::dict_value_span(data, b"info") {
        assert!(r.end <= data.len());
    }
}

/// Magnet links: a parsed link re-serialises to a link that parses to the same value.
pub fn magnet(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(m) = Magnet::parse(&s) {
        let uri = m.to_uri();
        let again = Magnet::parse(&uri)
            .unwrap_or_else(|e| panic!("to_uri output {uri:?} does not parse: {e}"));
        assert_eq!(again, m, "magnet round trip through {uri:?}");
    }
}

/// Metainfo (.torrent) and bare info dicts (ut_metadata result).
pub fn metainfo(data: &[u8]) {
    if let Ok(m) = Metainfo::from_bytes(data) {
        let _ = m.trackers();
        exercise_info(&m.info);
        let again = Metainfo::from_bytes(&m.to_bytes()).expect("re-encoded metainfo parses");
        assert_eq!(again, m, "metainfo round trip");
        let mag = Magnet::from_metainfo(&m);
        let _ = Magnet::parse(&mag.to_uri());
    }
    if let Ok(info) = Info::from_bytes(data) {
        exercise_info(&info);
        let v = info.to_value();
        let again = Info::from_value(&v).expect("re-encoded info parses");
        assert_eq!(again, info, "info round trip");
    }
}

fn exercise_info(info: &Info) {
    let n = info.num_pieces();
    for i in (0..n.min(8)).chain(n.saturating_sub(2)..n + 1) {
        let _ = info.piece_len(i);
        let _ = info.piece_hash(i);
    }
    for f in info.files.iter().take(64) {
        let _ = info.file_path(f);
    }
    let _ = info.safe_relative_paths();
}

/// Peer wire: `data[0]` picks how the bytes are chunked (as TCP would split them), the rest is a
/// connection's incoming bytes: optionally the 68-byte handshake, then length-prefixed messages.
pub fn peer_wire(data: &[u8]) {
    let Some((&chunk_sel, mut rest)) = data.split_first() else {
        return;
    };
    if rest.len() >= HANDSHAKE_LEN && rest[0] == 19 {
        let hs: &[u8; HANDSHAKE_LEN] = rest[..HANDSHAKE_LEN].try_into().expect("length checked");
        let prefix: &[u8; 48] = rest[..48].try_into().expect("length checked");
        let _ = Handshake::decode_prefix(prefix);
        if let Ok(h) = Handshake::decode(hs) {
            assert_eq!(Handshake::decode(&h.encode()).as_ref(), Ok(&h));
            let _ = h.supports_extensions();
        }
        rest = &rest[HANDSHAKE_LEN..];
    }
    let chunk = if chunk_sel == 0 {
        usize::MAX
    } else {
        usize::from(chunk_sel)
    };
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk.min(rest.len().max(1))) {
        buf.extend_from_slice(piece);
        loop {
            match Message::decode(&mut buf, DEFAULT_MAX_MESSAGE_LEN) {
                Ok(Some(m)) => {
                    let mut enc = BytesMut::new();
                    m.encode(&mut enc);
                    let back = Message::decode(&mut enc, DEFAULT_MAX_MESSAGE_LEN)
                        .expect("re-encoded message decodes");
                    assert_eq!(back.as_ref(), Some(&m), "wire message round trip");
                    assert!(enc.is_empty(), "re-encoded message fully consumed");
                    if let Message::Extended { id, payload } = &m {
                        extension_payload(*id, payload);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// BEP 10 extension handshake and `ut_metadata` messages, as payloads of extended messages.
pub fn ut_metadata(data: &[u8]) {
    extension_payload(0, data);
    extension_payload(1, data);
    let piece = u32::from(data.first().copied().unwrap_or(0) % 4);
    let _ = share::metadata::serve_piece(data, piece);
}

fn extension_payload(id: u8, payload: &[u8]) {
    if id == 0 {
        let _ = ExtHandshake::decode(payload);
        return;
    }
    let Ok(m) = MetadataMsg::decode(payload) else {
        return;
    };
    let enc = m.encode();
    let back = MetadataMsg::decode(&enc).expect("re-encoded ut_metadata message decodes");
    assert_eq!(back, m, "ut_metadata round trip");
    if let MetadataMsg::Data {
        piece,
        total_size,
        data,
    } = m
    {
        let mut f = MetadataFetcher::new(INFOHASH);
        if f.offer_size(total_size) {
            let _ = f.next_request(7);
            let _ = f.on_data(7, piece, total_size, data);
        }
    }
}

/// Tracker responses: HTTP (status line, headers, bencoded body) and the UDP protocol (a connect
/// reply in the first 16 bytes, then an announce reply; transaction ids are patched in).
pub fn tracker(data: &[u8]) {
    let _ = HttpUrl::parse(&String::from_utf8_lossy(data));
    let _ = tracker::parse_response(data);
    let _ = tracker::parse_body(data);

    let now = Instant::now();
    let mut t = UdpTracker::new();
    let connect = t.announce(sample_announce(), now);
    let Some(tid) = connect.get(12..16) else {
        return;
    };
    let split = data.len().min(16);
    let mut first = data[..split].to_vec();
    if first.len() >= 8 {
        first[4..8].copy_from_slice(tid);
    }
    match t.on_datagram(&first, now) {
        Ok(Next::Send(announce)) => {
            let Some(tid) = announce.get(12..16) else {
                return;
            };
            let mut second = data[split..].to_vec();
            if second.len() >= 8 {
                second[4..8].copy_from_slice(tid);
            }
            let _ = t.on_datagram(&second, now + Duration::from_secs(1));
        }
        Ok(Next::Done(_)) | Err(_) => {}
    }
}

pub fn sample_announce() -> Announce {
    Announce {
        info_hash: INFOHASH,
        peer_id: *b"-WR0100-fuzzfuzzfuzz",
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 1 << 20,
        event: Event::Started,
        numwant: 50,
    }
}

/// MSE/PE receiver: the input is everything the initiator sends, then EOF.
pub fn mse(data: &[u8]) {
    use tokio::io::AsyncWriteExt;
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let data = &data[..data.len().min(32 * 1024)];
    rt.block_on(async {
        let (mut a, b) = tokio::io::duplex(128 * 1024);
        a.write_all(data).await.expect("duplex has room");
        a.shutdown().await.expect("duplex shutdown");
        let fut = share::mse::accept(Box::new(b), &[], &[INFOHASH], true);
        let _ = tokio::time::timeout(Duration::from_secs(5), fut).await;
        drop(a);
    });
}

// ---------------------------------------------------------------------------------------------
// overlay

/// Link layer: `data[0] % 6` picks the reader, the rest is what the peer sent.
/// 0: link handshake (IK) responder, with the u16 length prefix; 1: hop (CREATE) responder;
/// 2: link initiator reading the reply; 3: hop initiator reading CREATED; 4: link frames (and a
/// seal/open round trip); 5: hidden-service INTRODUCE2 / RENDEZVOUS2 handshakes.
pub fn link(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let me = local_identity();
    let peer = remote_identity();
    match sel % 6 {
        0 => {
            if rest.len() < 2 {
                return;
            }
            let Ok(n) = overlay::link::handshake_len([rest[0], rest[1]]) else {
                return;
            };
            let msg = &rest[2..];
            let msg = &msg[..n.min(msg.len())];
            if let Ok((reply, hs, remote)) = handshake::link_respond(&me.x25519_secret_bytes(), msg)
            {
                assert!(reply.len() <= 1024);
                let _ = remote;
                let _ = handshake::link_cipher(hs, false);
            }
        }
        1 => {
            let _ = handshake::hop_respond(&me.x25519_secret_bytes(), rest);
        }
        2 => {
            if let Ok((init, _)) =
                LinkInitiator::start(&peer.x25519_secret_bytes(), &me.x25519_public())
            {
                if let Ok(hs) = init.finish(rest) {
                    let _ = handshake::link_cipher(hs, true);
                }
            }
        }
        3 => {
            if let Ok((init, _)) = HopInitiator::start(&me.x25519_public()) {
                let _ = init.finish(rest);
            }
        }
        4 => {
            let mut rx = LinkCipher::from_split(&LINK_SPLIT, false);
            for frame in rest.chunks(WIRE_CELL) {
                let _ = rx.recv.open(frame);
            }
            // Structure-aware: the input as a cell survives seal then open on a fresh pair.
            let mut c = rest.to_vec();
            c.resize(CELL_SIZE, 0);
            let mut tx = LinkCipher::from_split(&LINK_SPLIT, true);
            let mut rx = LinkCipher::from_split(&LINK_SPLIT, false);
            let mut wire = Vec::new();
            tx.send.seal_into(&c, &mut wire);
            assert_eq!(wire.len(), WIRE_CELL);
            let opened = rx.recv.open(&wire).expect("sealed frame opens");
            assert_eq!(opened, c);
        }
        _ => {
            let _ = service_accept(service_keys(), rest);
        }
    }
}

/// Cells as they come out of a link: `circ_id:u32 | command:u8 | body`, zero padded to a cell.
/// Relay bodies go through the onion-layer check and every relay payload decoder.
pub fn cell(data: &[u8]) {
    let mut c = data[..data.len().min(CELL_SIZE)].to_vec();
    c.resize(CELL_SIZE, 0);
    let _ = cell::circ_id(&c);
    match cell::command(&c) {
        cell::cmd::CREATE | cell::cmd::CREATED => {
            if let Ok(p) = cell::lp_payload(&c) {
                let again = cell::lp_cell(cell::circ_id(&c), cell::command(&c), p)
                    .expect("a payload that fits decodes and re-encodes");
                assert_eq!(cell::lp_payload(&again).ok(), Some(p));
            }
        }
        _ => {}
    }
    // The onion layer: a client with three hops tries to recognise the body (it must not panic,
    // and garbage must not be recognised).
    let mut body = cell::body(&c).to_vec();
    let mut hops: Vec<HopKeys> = (0u8..3)
        .map(|i| HopKeys::derive(LAYER_CIPHER, &[i; 32], &[i + 100; 32]))
        .collect();
    let _ = client_open(&mut hops, &mut body);

    let b = cell::body(&c);
    let Ok(m) = cell::read_relay(b) else {
        return;
    };
    // Structure-aware: write_relay(read_relay(x)) reads back the same message.
    let mut nb = vec![0u8; RELAY_BODY];
    cell::write_relay(&mut nb, m.cmd, m.stream, m.data).expect("decoded relay data fits");
    let back = cell::read_relay(&nb).expect("re-written relay body reads");
    assert_eq!(back, m);
    relay_payload(m.cmd, m.data);
}

fn relay_payload(rc: u8, data: &[u8]) {
    match rc {
        rcmd::BEGIN | rcmd::RESOLVE => {
            let t = String::from_utf8_lossy(data);
            let _ = t.parse::<SocketAddr>();
            if let Some((host, port)) = t.rsplit_once(':') {
                let _ = (host.parse::<IpAddr>(), port.parse::<u16>());
            }
        }
        rcmd::EXTEND => {
            if let Ok(e) = cell::Extend::decode(data) {
                let enc = e.encode();
                assert_eq!(cell::Extend::decode(&enc).as_ref().ok(), Some(&e));
            }
        }
        rcmd::END => {
            let (why, text) = cell::decode_end(data);
            let enc = cell::encode_end(why, &text);
            assert_eq!(cell::decode_end(&enc).0, why);
        }
        rcmd::DATAGRAM => {
            if let Ok((addr, payload)) = cell::decode_datagram(data) {
                if let Ok(enc) = cell::encode_datagram(&addr, payload) {
                    let (a2, p2) = cell::decode_datagram(&enc).expect("re-encoded datagram");
                    assert_eq!((a2, p2), (addr, payload));
                }
            }
        }
        rcmd::RESOLVED => {
            if let Ok(Ok(ips)) = cell::decode_resolved(data) {
                let enc = cell::encode_resolved(&ips);
                let again = cell::decode_resolved(&enc).expect("re-encoded RESOLVED decodes");
                assert_eq!(again, Ok(ips));
            }
        }
        rcmd::ESTABLISH_INTRO..=rcmd::RENDEZVOUS2 => hs_message(data),
        rcmd::DHT_REQUEST | rcmd::DHT_RESPONSE => dht_message(data),
        _ => {
            assert!(data.len() <= RELAY_DATA_MAX);
        }
    }
}

fn hs_message(data: &[u8]) {
    let Ok(m) = HsMessage::decode(data) else {
        return;
    };
    let enc = m.encode();
    assert_eq!(
        HsMessage::decode(&enc).as_ref(),
        Ok(&m),
        "hs message round trip"
    );
    if let HsMessage::EstablishIntro { auth_key, sig } = &m {
        let _ = HsMessage::verify_intro(auth_key, sig, &[0xab; 32]);
    }
}

/// DHT: the same bytes as a DHT message (and, for requests, the answer of a DHT node), as a node
/// descriptor, and as a decrypted swarm entry.
pub fn dht(data: &[u8]) {
    dht_message(data);
    if let Ok(d) = Descriptor::decode(data) {
        assert_eq!(
            Descriptor::decode(&d.encode()).as_ref(),
            Ok(&d),
            "descriptor round trip"
        );
        let _ = d.verify(NOW);
        let _ = d.is_exit();
    }
    let _ = Descriptor::decode_verified(data, NOW);
    if let Ok(e) = SwarmEntry::decode(data) {
        assert_eq!(
            SwarmEntry::decode(&e.encode()).as_ref(),
            Ok(&e),
            "swarm entry round trip"
        );
    }
    let _ = dns::parse_response_a(data);
}

fn dht_message(data: &[u8]) {
    let Ok(m) = dht::Message::decode(data) else {
        return;
    };
    let enc = m.encode();
    assert_eq!(
        dht::Message::decode(&enc).as_ref(),
        Ok(&m),
        "dht message round trip"
    );
    match m {
        dht::Message::Request { req, .. } => {
            let me = Contact {
                id: Key(local_identity().node_id().0),
                descriptor: Vec::new(),
            };
            let mut server = DhtServer::new(me, StoreLimits::default());
            let resp = server.handle(req, NOW);
            let out = dht::Message::Response { txid: 1, resp }.encode();
            assert!(out.len() <= dht::message::MAX_MESSAGE);
        }
        dht::Message::Response { resp, .. } => {
            if let dht::Response::Values { records, .. } = resp {
                let keys = SwarmKeys::derive(&INFOHASH, SwarmKeys::period_of(NOW));
                for r in &records {
                    let _ = r.verify(NOW);
                    let _ = keys.open(r);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tunnel

/// A raw IP packet read from the tun: classification, then the stack's header parsing (smoltcp)
/// and, for UDP to port 53, the local DNS resolver.
pub fn tun_packet(data: &[u8]) {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr};
    use smoltcp::wire::{UdpPacket, UdpRepr};

    let class = classify(data);
    // Only what classify lets through reaches the stack.
    if !matches!(class, PacketClass::Tcp | PacketClass::Udp) {
        dns_message(data);
        return;
    }
    let caps = ChecksumCapabilities::ignored();
    let Ok(ip) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let Ok(repr) = Ipv4Repr::parse(&ip, &caps) else {
        return;
    };
    let src = IpAddress::Ipv4(repr.src_addr);
    let dst = IpAddress::Ipv4(repr.dst_addr);
    match repr.next_header {
        IpProtocol::Tcp => {
            if let Ok(tcp) = TcpPacket::new_checked(ip.payload()) {
                let _ = TcpRepr::parse(&tcp, &src, &dst, &caps);
            }
        }
        IpProtocol::Udp => {
            if let Ok(udp) = UdpPacket::new_checked(ip.payload()) {
                if UdpRepr::parse(&udp, &src, &dst, &caps).is_ok() && udp.dst_port() == 53 {
                    dns_message(udp.payload());
                }
            }
        }
        _ => {}
    }
}

fn dns_message(data: &[u8]) {
    if let Ok(q) = dns::parse_query(data) {
        let ans = dns::answer_locally(&q, 60, |_| Ipv4Addr::new(100, 64, 0, 7));
        let resp = dns::encode_response(&q, &ans);
        assert!(resp.len() <= 512, "a response to one question stays small");
        if let Some((id, _rcode, ips)) = dns::parse_response_a(&resp) {
            assert_eq!(id, q.id);
            if let dns::Answer::A(ip, _) = ans {
                assert_eq!(ips, vec![ip]);
            }
        }
        if !q.name.is_empty() {
            if let Ok(enc) = dns::encode_query(q.id, &q.name, q.qtype) {
                let again = dns::parse_query(&enc).expect("re-encoded query parses");
                assert_eq!(
                    (again.id, &again.name, again.qtype),
                    (q.id, &q.name, q.qtype)
                );
            }
        }
    }
    let _ = dns::parse_response_a(data);
}

/// Mainline DHT (BEP 5) answers: the KRPC parser, and a lookup fed the input as the answer to
/// its first query (the input's transaction id is patched to match, so the lookup's state
/// machine runs past the id check).
pub fn mainline(data: &[u8]) {
    use share::connector::PeerAddr;
    use share::mainline::{parse_reply, Lookup};
    let _ = parse_reply(data);
    let mut l = Lookup::new(
        [7u8; 20],
        vec![PeerAddr::Ip(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            6881,
        ))],
    );
    let now = Instant::now();
    let q = l.poll(now);
    let Some((_, query)) = q.first() else {
        return;
    };
    // the query's "1:t2:XY": put XY where the input has its own 2-byte transaction id
    let tid = query
        .windows(5)
        .position(|w| w == b"1:t2:")
        .and_then(|i| query.get(i + 5..i + 7))
        .map(|t| [t[0], t[1]]);
    let mut input = data.to_vec();
    if let (Some(tid), Some(i)) = (tid, input.windows(5).position(|w| w == b"1:t2:")) {
        if let Some(dst) = input.get_mut(i + 5..i + 7) {
            dst.copy_from_slice(&tid);
        }
    }
    let _ = l.on_datagram(&input);
    let _ = l.poll(now + Duration::from_millis(10));
    let _ = l.done();
    assert!(l.queries_sent() <= share::mainline::MAX_QUERIES);
}

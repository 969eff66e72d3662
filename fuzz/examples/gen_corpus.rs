//! Writes the seed corpora under `fuzz/corpus/<target>/` from the crates' own encoders (the same
//! code that produces real traffic), plus torrents made by `mktorrent` when it is installed.
//! Captured traffic (a libtorrent <-> warren session) is added by `scripts/fuzz-corpus`.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --no-default-features --example gen_corpus`

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::{Bytes, BytesMut};

use overlay::cell::{self, cmd, rcmd, CELL_SIZE};
use overlay::descriptor::{Descriptor, ROLE_DHT, ROLE_EXIT, ROLE_RELAY};
use overlay::dht::{self, Contact, IntroPoint, Key, Record, RecordKind, SwarmEntry, SwarmKeys};
use overlay::exit::ExitPolicy;
use overlay::handshake::{self, HopInitiator, LinkInitiator};
use overlay::hs::handshake::{ClientIntro, IntroRequest};
use overlay::hs::message::HsMessage;
use overlay::link::LinkCipher;
use overlay::Identity;
use share::bencode::{self, Value};
use share::magnet::Magnet;
use share::make::{make_torrent, MakeOptions};
use share::metadata::{ExtHandshake, MetadataMsg};
use share::metainfo::Metainfo;
use share::wire::{BlockRef, Handshake, Message};
use warren_fuzz::targets::{self as t, INFOHASH, LINK_SPLIT, NOW};

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        fs::write(dir.join(name), data).expect("write seed");
        // Every seed must pass its own target (no panic on real traffic).
        warren_fuzz::run(target, data);
        self.count += 1;
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut o = Out { root, count: 0 };
    let torrents = torrents();
    bencode_seeds(&mut o, &torrents);
    magnet_seeds(&mut o, &torrents);
    metainfo_seeds(&mut o, &torrents);
    wire_seeds(&mut o, &torrents);
    tracker_seeds(&mut o);
    mse_seeds(&mut o);
    link_seeds(&mut o);
    cell_seeds(&mut o);
    dht_seeds(&mut o);
    tun_seeds(&mut o);
    println!("wrote {} seeds under {}", o.count, o.root.display());
}

/// (name, .torrent bytes): warren's own maker and mktorrent, single file and multi-file.
fn torrents() -> Vec<(String, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("warren-fuzz-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("multi/sub")).expect("tmp dir");
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(dir.join("single.bin"), &data).expect("write");
    fs::write(dir.join("multi/a.txt"), b"hello warren\n").expect("write");
    fs::write(dir.join("multi/sub/b.bin"), &data[..40_000]).expect("write");
    fs::write(dir.join("multi/sub/empty"), b"").expect("write");
    let mut out = Vec::new();
    for (name, path, opts) in [
        (
            "warren-single",
            dir.join("single.bin"),
            MakeOptions {
                piece_length: Some(16 * 1024),
                trackers: vec!["http://127.0.0.1:6969/announce".into()],
                ..Default::default()
            },
        ),
        (
            "warren-multi",
            dir.join("multi"),
            MakeOptions {
                piece_length: Some(32 * 1024),
                trackers: vec![
                    "http://127.0.0.1:6969/announce".into(),
                    "udp://127.0.0.1:6969".into(),
                ],
                web_seeds: vec!["http://127.0.0.1:8000/".into()],
                private: true,
                comment: Some("fuzz seed".into()),
                creation_date: Some(1_700_000_000),
                ..Default::default()
            },
        ),
    ] {
        let made = make_torrent(&path, &opts).expect("make_torrent");
        out.push((name.to_string(), made.torrent_bytes));
    }
    for (name, src, extra) in [
        ("mktorrent-single", "single.bin", vec!["-l", "15"]),
        (
            "mktorrent-multi",
            "multi",
            vec!["-l", "16", "-p", "-c", "made by mktorrent"],
        ),
    ] {
        let file = dir.join(format!("{name}.torrent"));
        let status = Command::new("mktorrent")
            .args(["-a", "http://127.0.0.1:6969/announce", "-o"])
            .arg(&file)
            .args(&extra)
            .arg(dir.join(src))
            .output();
        match status {
            Ok(s) if s.status.success() => {
                out.push((name.to_string(), fs::read(&file).expect("read")))
            }
            _ => eprintln!("mktorrent not available: {name} skipped"),
        }
    }
    let _ = fs::remove_dir_all(&dir);
    out
}

fn bencode_seeds(o: &mut Out, torrents: &[(String, Vec<u8>)]) {
    let values = [
        ("int", Value::Int(-42)),
        ("bytes", Value::bytes(b"spam".to_vec())),
        (
            "list",
            Value::List(vec![Value::Int(0), Value::string("x"), Value::List(vec![])]),
        ),
        (
            "dict",
            Value::dict([
                ("a", Value::Int(i64::MAX)),
                (
                    "b",
                    Value::dict([("c", Value::List(vec![Value::Int(i64::MIN)]))]),
                ),
            ]),
        ),
    ];
    for (name, v) in values {
        o.put("bencode", name, &bencode::encode(&v));
    }
    for (name, tb) in torrents.iter().take(2) {
        o.put("bencode", name, tb);
    }
    o.put(
        "bencode",
        "ext-handshake",
        &ExtHandshake::encode(Some(12345), "warren 0.1", 250),
    );
}

fn magnet_seeds(o: &mut Out, torrents: &[(String, Vec<u8>)]) {
    let links = [
        "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=Some+Name%20here&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce&tr=udp%3A%2F%2F127.0.0.1%3A6969",
        "magnet:?xt=urn:btih:YEX6BQDLXISUVHOJ6UM3GNNKPQJWPKEK&x.pe=127.0.0.1:6881&x.pe=[::1]:6882&so=0,2,4-6",
        "magnet:?xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e&ws=http%3A%2F%2F127.0.0.1%2Ff&tr.1=http%3A%2F%2Fa%2Fannounce",
    ];
    for (i, l) in links.iter().enumerate() {
        o.put("magnet", &format!("link{i}"), l.as_bytes());
    }
    for (name, tb) in torrents {
        if let Ok(m) = Metainfo::from_bytes(tb) {
            o.put(
                "magnet",
                name,
                Magnet::from_metainfo(&m).to_uri().as_bytes(),
            );
        }
    }
}

fn metainfo_seeds(o: &mut Out, torrents: &[(String, Vec<u8>)]) {
    for (name, tb) in torrents {
        o.put("metainfo", name, tb);
        if let Ok(Some(r)) = bencode::dict_value_span(tb, b"info") {
            o.put("metainfo", &format!("{name}-info"), &tb[r]);
        }
    }
}

fn enc(ms: &[Message]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for m in ms {
        m.encode(&mut b);
    }
    b.to_vec()
}

fn wire_seeds(o: &mut Out, torrents: &[(String, Vec<u8>)]) {
    let info_raw = torrents
        .first()
        .and_then(|(_, tb)| {
            bencode::dict_value_span(tb, b"info")
                .ok()
                .flatten()
                .map(|r| tb[r].to_vec())
        })
        .unwrap_or_default();
    let mut hs = Handshake::new(INFOHASH, *b"-WR0100-abcdefghijkl");
    hs.reserved[5] |= 0x10;
    hs.reserved[7] |= 0x04;
    let b = BlockRef {
        index: 3,
        begin: 16384,
        length: 16384,
    };
    let ext_hs = ExtHandshake::encode(Some(info_raw.len()), "warren 0.1", 250);
    let md_req = MetadataMsg::Request(0).encode();
    let md_data = MetadataMsg::Data {
        piece: 0,
        total_size: info_raw.len().max(1),
        data: &info_raw,
    }
    .encode();
    let md_rej = MetadataMsg::Reject(1).encode();
    let session = [
        Message::Extended {
            id: 0,
            payload: Bytes::from(ext_hs.clone()),
        },
        Message::Bitfield(Bytes::from_static(&[0xff, 0xf0])),
        Message::HaveAll,
        Message::Unchoke,
        Message::Interested,
        Message::Request(b),
        Message::Piece {
            index: 3,
            begin: 16384,
            data: Bytes::from(vec![0xab; 512]),
        },
        Message::Have(3),
        Message::Extended {
            id: 2,
            payload: Bytes::from(md_req.clone()),
        },
    ];
    let mut first = vec![0u8];
    first.extend_from_slice(&hs.encode());
    first.extend_from_slice(&enc(&session));
    o.put("peer_wire", "session-whole", &first);
    let mut chunked = vec![7u8];
    chunked.extend_from_slice(&first[1..]);
    o.put("peer_wire", "session-chunk7", &chunked);
    let rest = [
        Message::KeepAlive,
        Message::Choke,
        Message::NotInterested,
        Message::Cancel(b),
        Message::Port(6881),
        Message::Suggest(1),
        Message::HaveNone,
        Message::Reject(b),
        Message::AllowedFast(2),
        Message::Unknown {
            id: 42,
            payload: Bytes::from_static(b"??"),
        },
    ];
    let mut other = vec![0u8];
    other.extend_from_slice(&enc(&rest));
    o.put("peer_wire", "other-messages", &other);

    o.put("ut_metadata", "ext-handshake", &ext_hs);
    o.put("ut_metadata", "request", &md_req);
    o.put("ut_metadata", "data", &md_data);
    o.put("ut_metadata", "reject", &md_rej);
}

fn tracker_seeds(o: &mut Out) {
    let compact = Value::dict([
        ("interval", Value::Int(1800)),
        (
            "peers",
            Value::bytes(vec![127, 0, 0, 1, 0x1a, 0xe1, 127, 0, 0, 2, 0x1a, 0xe2]),
        ),
        (
            "peers6",
            Value::bytes([[0u8; 15].as_slice(), &[1, 0x1a, 0xe1]].concat()),
        ),
    ]);
    let dicts = Value::dict([
        ("interval", Value::Int(60)),
        ("warning message", Value::string("be nice")),
        (
            "peers",
            Value::List(vec![Value::dict([
                ("ip", Value::string("127.0.0.1")),
                ("peer id", Value::bytes(vec![b'x'; 20])),
                ("port", Value::Int(6881)),
            ])]),
        ),
    ]);
    let failure = Value::dict([("failure reason", Value::string("not authorized"))]);
    for (name, v) in [("compact", compact), ("dicts", dicts), ("failure", failure)] {
        let body = bencode::encode(&v);
        let mut http = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        http.extend_from_slice(&body);
        o.put("tracker", &format!("http-{name}"), &http);
    }
    o.put("tracker", "url", b"http://127.0.0.1:6969/announce?x=1");
    // UDP: connect reply (action 0, tid, connection id) then an announce reply (action 1).
    let mut udp = Vec::new();
    udp.extend_from_slice(&0u32.to_be_bytes());
    udp.extend_from_slice(&0u32.to_be_bytes());
    udp.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
    udp.extend_from_slice(&1u32.to_be_bytes());
    udp.extend_from_slice(&0u32.to_be_bytes());
    udp.extend_from_slice(&1800u32.to_be_bytes());
    udp.extend_from_slice(&1u32.to_be_bytes());
    udp.extend_from_slice(&2u32.to_be_bytes());
    udp.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
    o.put("tracker", "udp-connect-announce", &udp);
    let mut err = udp[..16].to_vec();
    err.extend_from_slice(&3u32.to_be_bytes());
    err.extend_from_slice(&0u32.to_be_bytes());
    err.extend_from_slice(b"torrent not registered");
    o.put("tracker", "udp-error", &err);
}

fn mse_seeds(o: &mut Out) {
    // Ya (96 bytes) and PadA, as an initiator sends them; the DH is random per connection.
    let ya = share::mse::DhKey::generate();
    let mut s = ya.public.to_vec();
    s.extend_from_slice(&[7u8; 33]);
    o.put("mse", "ya-pad", &s);
    s.extend_from_slice(&[0x5a; 20 + 20 + 8 + 4 + 2 + 68]);
    o.put("mse", "ya-pad-req", &s);
}

fn link_seeds(o: &mut Out) {
    let me = t::local_identity();
    let peer = t::remote_identity();
    let with = |sel: u8, b: &[u8]| [&[sel][..], b].concat();
    // 0: the IK message a dialer sends (with its length prefix), 2: the responder's reply.
    let (init, msg) = LinkInitiator::start(&peer.x25519_secret_bytes(), &me.x25519_public())
        .expect("link initiator");
    let mut m0 = (msg.len() as u16).to_be_bytes().to_vec();
    m0.extend_from_slice(&msg);
    o.put("link", "link-ik-msg", &with(0, &m0));
    let (reply, hs, _) = handshake::link_respond(&me.x25519_secret_bytes(), &msg).expect("respond");
    o.put("link", "link-ik-reply", &with(2, &reply));
    let hs_i = init.finish(&reply).expect("finish");
    let _ = (
        handshake::link_cipher(hs, false),
        handshake::link_cipher(hs_i, true),
    );
    // 1: CREATE's hop handshake, 3: CREATED's reply.
    let (_, create) = HopInitiator::start(&me.x25519_public()).expect("hop initiator");
    o.put("link", "hop-create", &with(1, &create));
    let (created, _) = handshake::hop_respond(&me.x25519_secret_bytes(), &create).expect("hop");
    o.put("link", "hop-created", &with(3, &created));
    // 4: real sealed frames on the fixed test link (two in a row).
    let mut tx = LinkCipher::from_split(&LINK_SPLIT, true);
    let mut frames = Vec::new();
    let c1 = cell::lp_cell(7, cmd::CREATE, &create).expect("cell");
    tx.send.seal_into(&c1, &mut frames);
    let c2 = cell::destroy_cell(7, 1);
    tx.send.seal_into(&c2, &mut frames);
    o.put("link", "frames", &with(4, &frames));
    // 5: INTRODUCE2 handshake blob for the fixed service key.
    let req = IntroRequest {
        cookie: [3; 20],
        rendezvous_id: [4; 32],
        rendezvous_descriptor: sample_descriptor(peer, 9001).encode(),
    };
    let (_, blob) = ClientIntro::start(&t::service_keys().public, &req).expect("intro");
    o.put("link", "introduce2", &with(5, &blob));
}

fn sample_descriptor(id: &Identity, port: u16) -> Descriptor {
    Descriptor::new_signed(
        id,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ROLE_RELAY | ROLE_EXIT | ROLE_DHT,
        ExitPolicy::default(),
        NOW + 3600,
    )
}

/// A cell trimmed of trailing zeros (the target pads it back).
fn trimmed(c: &[u8]) -> Vec<u8> {
    let end = c
        .iter()
        .rposition(|&b| b != 0)
        .map_or(5, |i| (i + 1).max(5));
    c[..end.min(CELL_SIZE)].to_vec()
}

fn relay_cell(circ: u32, rc: u8, stream: u32, data: &[u8]) -> Vec<u8> {
    let mut c = cell::new_cell(circ, cmd::RELAY);
    cell::write_relay(cell::body_mut(&mut c), rc, stream, data).expect("relay fits");
    trimmed(&c)
}

fn cell_seeds(o: &mut Out) {
    let me = t::local_identity();
    let peer = t::remote_identity();
    let (_, create) = HopInitiator::start(&me.x25519_public()).expect("hop");
    let (created, _) = handshake::hop_respond(&me.x25519_secret_bytes(), &create).expect("hop");
    o.put(
        "cell",
        "create",
        &trimmed(&cell::lp_cell(5, cmd::CREATE, &create).expect("cell")),
    );
    o.put(
        "cell",
        "created",
        &trimmed(&cell::lp_cell(5, cmd::CREATED, &created).expect("cell")),
    );
    o.put("cell", "destroy", &trimmed(&cell::destroy_cell(5, 6)));
    let ext = cell::Extend {
        node_id: peer.node_id().0,
        x25519: peer.x25519_public(),
        ed25519: peer.ed25519_public(),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9002)),
        handshake: create.clone(),
    };
    let ip6: std::net::IpAddr = "::1".parse().expect("ip");
    let relays: Vec<(&str, u8, Vec<u8>)> = vec![
        ("begin", rcmd::BEGIN, b"127.0.0.1:6881".to_vec()),
        ("begin-name", rcmd::BEGIN, b"example.org:80".to_vec()),
        ("data", rcmd::DATA, vec![0x42; 1000]),
        (
            "end",
            rcmd::END,
            cell::encode_end(cell::reason::DONE, "done"),
        ),
        ("connected", rcmd::CONNECTED, Vec::new()),
        ("sendme", rcmd::SENDME, Vec::new()),
        ("extend", rcmd::EXTEND, ext.encode()),
        ("extended", rcmd::EXTENDED, created.clone()),
        (
            "datagram",
            rcmd::DATAGRAM,
            cell::encode_datagram(&SocketAddr::from((Ipv4Addr::LOCALHOST, 53)), b"\x12\x34dns")
                .expect("dgram"),
        ),
        ("resolve", rcmd::RESOLVE, b"example.org".to_vec()),
        (
            "resolved",
            rcmd::RESOLVED,
            cell::encode_resolved(&[Ipv4Addr::LOCALHOST.into(), ip6]),
        ),
        (
            "establish-intro",
            rcmd::ESTABLISH_INTRO,
            HsMessage::establish_intro(&signing_key(1), &[0xab; 32]).encode(),
        ),
        (
            "intro-established",
            rcmd::INTRO_ESTABLISHED,
            HsMessage::IntroEstablished.encode(),
        ),
        (
            "introduce1",
            rcmd::INTRODUCE1,
            HsMessage::Introduce1 {
                auth_key: [9; 32],
                handshake: vec![1; 100],
            }
            .encode(),
        ),
        (
            "introduce-ack",
            rcmd::INTRODUCE_ACK,
            HsMessage::IntroduceAck { status: 0 }.encode(),
        ),
        (
            "establish-rendezvous",
            rcmd::ESTABLISH_RENDEZVOUS,
            HsMessage::EstablishRendezvous { cookie: [2; 20] }.encode(),
        ),
        (
            "rendezvous1",
            rcmd::RENDEZVOUS1,
            HsMessage::Rendezvous1 {
                cookie: [2; 20],
                handshake: vec![5; 48],
            }
            .encode(),
        ),
        (
            "rendezvous2",
            rcmd::RENDEZVOUS2,
            HsMessage::Rendezvous2 {
                handshake: vec![5; 48],
            }
            .encode(),
        ),
        ("dht-request", rcmd::DHT_REQUEST, dht_messages()[1].encode()),
        (
            "dht-response",
            rcmd::DHT_RESPONSE,
            dht_messages()[5].encode(),
        ),
    ];
    for (name, rc, data) in relays {
        o.put(
            "cell",
            &format!("relay-{name}"),
            &relay_cell(0x8000_0005, rc, 3, &data),
        );
    }
}

fn signing_key(b: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[b; 32])
}

fn dht_messages() -> Vec<dht::Message> {
    use dht::{Request, Response};
    let peer = t::remote_identity();
    let contact = |p: u16| {
        let d = sample_descriptor(peer, p);
        Contact {
            id: Key(d.id.0),
            descriptor: d.encode(),
        }
    };
    let sk = signing_key(7);
    let keys = SwarmKeys::derive(&INFOHASH, SwarmKeys::period_of(NOW));
    let entry = SwarmEntry {
        service_key: t::service_keys().public,
        intro_points: vec![IntroPoint {
            node: Key([1; 32]),
            auth_key: [2; 32],
        }],
    };
    let swarm = keys.seal(&sk, 1, &entry);
    let desc_rec = Record::sign(
        &sk,
        Key([8; 32]),
        RecordKind::Descriptor,
        1,
        NOW + 600,
        vec![1, 2, 3],
    );
    let r = |txid, req| dht::Message::Request { txid, req };
    let s = |txid, resp| dht::Message::Response { txid, resp };
    vec![
        r(1, Request::Ping),
        r(2, Request::FindNode(Key([5; 32]))),
        r(3, Request::FindValue(keys.location)),
        r(4, Request::Store(swarm.clone())),
        s(1, Response::Pong),
        s(2, Response::Nodes(vec![contact(9001), contact(9002)])),
        s(
            3,
            Response::Values {
                records: vec![swarm, desc_rec],
                closer: vec![contact(9003)],
            },
        ),
        s(4, Response::Stored),
        s(
            5,
            Response::Error {
                code: dht::message::code::FULL,
                reason: "store full".into(),
            },
        ),
    ]
}

fn dht_seeds(o: &mut Out) {
    for (i, m) in dht_messages().iter().enumerate() {
        o.put("dht", &format!("message{i}"), &m.encode());
    }
    o.put(
        "dht",
        "descriptor",
        &sample_descriptor(t::remote_identity(), 9001).encode(),
    );
    let entry = SwarmEntry {
        service_key: [1; 32],
        intro_points: vec![
            IntroPoint {
                node: Key([1; 32]),
                auth_key: [2; 32],
            };
            3
        ],
    };
    o.put("dht", "swarm-entry", &entry.encode());
}

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn tun_seeds(o: &mut Out) {
    let src = [10, 200, 0, 2];
    let dst = [100, 64, 0, 7];
    // TCP SYN to port 443 with an MSS option.
    let mut tcp = vec![
        0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];
    tcp.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    o.put("tun_packet", "tcp-syn", &ipv4(6, src, dst, &tcp));
    for (name, qname, qtype) in [
        ("dns-a", "example.org", 1u16),
        ("dns-aaaa", "www.example.org", 28),
    ] {
        let q = tunnel::dns::encode_query(0x1234, qname, qtype).expect("query");
        let mut udp = vec![0xd4, 0x31, 0, 53];
        udp.extend_from_slice(&((8 + q.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&q);
        o.put("tun_packet", name, &ipv4(17, src, [10, 200, 0, 1], &udp));
        o.put("tun_packet", &format!("{name}-raw"), &q);
    }
    let mut udp = vec![0xd4, 0x32, 0x1a, 0xe1, 0, 12, 0, 0];
    udp.extend_from_slice(b"ping");
    o.put("tun_packet", "udp", &ipv4(17, src, dst, &udp));
    o.put(
        "tun_packet",
        "icmp",
        &ipv4(1, src, dst, &[8, 0, 0, 0, 0, 1, 0, 1]),
    );
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend_from_slice(&[0; 32]);
    v6.extend_from_slice(&[0; 8]);
    o.put("tun_packet", "ipv6", &v6);
}

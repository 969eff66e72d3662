//! warren's fuzz target bodies, shared by the cargo-fuzz binaries (`fuzz_targets/*.rs`, nightly)
//! and by the corpus replay test (`tests/replay.rs`, stable).
//!
//! Every body feeds untrusted bytes to a public parsing entry point of `share`, `overlay` or
//! `tunnel`, exactly as the network or the tun would, and panics only on a real bug: a panic inside
//! a parser, or a failed structure-aware check (`decode(encode(x)) == x`).

pub mod targets;

/// The names of every target, in the order the long runs and the smoke run use.
pub const TARGETS: &[&str] = &[
    "bencode",
    "magnet",
    "metainfo",
    "peer_wire",
    "ut_metadata",
    "tracker",
    "link",
    "cell",
    "dht",
    "tun_packet",
    "mse",
    "mainline",
];

/// Runs the target called `name` on `data`; false if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    let f: fn(&[u8]) = match name {
        "bencode" => targets::bencode,
        "magnet" => targets::magnet,
        "metainfo" => targets::metainfo,
        "peer_wire" => targets::peer_wire,
        "ut_metadata" => targets::ut_metadata,
        "tracker" => targets::tracker,
        "link" => targets::link,
        "cell" => targets::cell,
        "dht" => targets::dht,
        "tun_packet" => targets::tun_packet,
        "mse" => targets::mse,
        "mainline" => targets::mainline,
        _ => return false,
    };
    f(data);
    true
}

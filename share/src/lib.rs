//! share crate.

// formats helper: bencode, info-hash, magnet links, metainfo, torrent creation.
pub mod bencode;
pub mod infohash;
pub mod magnet;
pub mod mainline;
pub mod make;
pub mod metainfo;
// engine (helper "engine")
pub mod bitfield;
pub mod clearnet;
pub mod connector;
pub mod metadata;
pub mod mse;
pub mod peer;
pub mod picker;
pub mod piecebuf;
pub mod ratecap;
pub mod redial;
pub mod resume;
pub mod session;
pub mod storage;
pub mod torrent;
pub mod tracker;
pub mod udp_tracker;
pub mod wire;

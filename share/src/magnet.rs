//! Magnet links (BEP 9, BEP 53, hybrid v1/v2 links).
//!
//! The `magnet-url` crate checks the `magnet:?` prefix and splits `xt`; its 3.0.0 release leaves
//! trackers percent-encoded, keeps only the last `ws`, ignores `x.pe` and keeps one `xt` of a
//! hybrid link, so the query is also parsed here (strictly: a bad `%` escape is an error) and every
//! field below comes from that parse. `to_uri()` output parses back to an equal `Magnet`.

use std::fmt::Write as _;

use crate::infohash::{InfoHash, InfoHashError};
use crate::metainfo::Metainfo;

/// Largest number of file indices a `so=` parameter may expand to.
pub const MAX_SELECT_ONLY: usize = 1_000_000;

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Magnet {
    /// v1 info-hash from `xt=urn:btih:` (hex or base32).
    pub info_hash: Option<InfoHash>,
    /// v2 multihash bytes from `xt=urn:btmh:` (hex; 0x12 0x20 + 32-byte SHA-256).
    pub btmh: Option<Vec<u8>>,
    /// `dn`, percent-decoded (`+` read as a space).
    pub display_name: Option<String>,
    /// Every `tr` (also `tr.1`, ...), percent-decoded, in order, duplicates removed.
    pub trackers: Vec<String>,
    /// Every `ws`, percent-decoded, in order.
    pub web_seeds: Vec<String>,
    /// Every `x.pe` peer address (`host:port`), percent-decoded, in order.
    pub peers: Vec<String>,
    /// BEP 53 `so=` file indices, expanded from ranges, sorted, deduplicated.
    pub select_only: Option<Vec<u32>>,
}

/// Why a magnet link was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    /// Does not start with `magnet:?`.
    #[error("not a magnet link (must start with \"magnet:?\")")]
    NotAMagnetLink,
    /// No usable `xt` (neither `urn:btih:` nor `urn:btmh:`).
    #[error("magnet link has no xt=urn:btih: or xt=urn:btmh: exact topic")]
    MissingXt,
    /// btih not 40 hex or 32 base32 characters.
    #[error("magnet btih has {0} characters; expected 40 (hex) or 32 (base32)")]
    BadBtihLength(usize),
    /// btih right length but bad characters.
    #[error("magnet btih is not valid {encoding}: {value:?}")]
    BadBtihEncoding {
        /// "hex" or "base32"
        encoding: &'static str,
        /// The offending text.
        value: String,
    },
    /// Two different btih (or btmh) values.
    #[error("magnet link has conflicting {0} exact topics")]
    ConflictingXt(&'static str),
    /// btmh not hex, or not a SHA-256 multihash.
    #[error("magnet btmh is not a hex SHA-256 multihash (1220 + 64 hex digits): {0:?}")]
    BadBtmh(String),
    /// `%` not followed by two hex digits.
    #[error("bad percent escape in magnet parameter {param}: {value:?}")]
    BadPercentEscape {
        /// Parameter name.
        param: String,
        /// The raw value.
        value: String,
    },
    /// Decoded value is not UTF-8.
    #[error("magnet parameter {0} is not valid UTF-8 after percent-decoding")]
    NotUtf8(String),
    /// A parameter without `=`.
    #[error("magnet parameter {0:?} has no '=' value")]
    MissingValue(String),
    /// A `so=` that is not a list of indices and ranges.
    #[error("bad magnet so= (select-only) value {0:?}")]
    BadSelectOnly(String),
    /// A `so=` that expands to too many indices.
    #[error("magnet so= selects more than {MAX_SELECT_ONLY} files")]
    SelectOnlyTooLarge,
    /// A `tr`/`ws`/`x.pe`/`dn` value that is empty.
    #[error("magnet parameter {0} is empty")]
    EmptyValue(String),
}

impl Magnet {
    /// Parse a magnet link. See the module docs for what is accepted.
    pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
        let link = link.trim();
        // magnet-url validates the scheme; its field values are not used (see module docs).
        magnet_url::Magnet::new(link).map_err(|_| MagnetError::NotAMagnetLink)?;
        let query = link
            .strip_prefix("magnet:?")
            .ok_or(MagnetError::NotAMagnetLink)?;
        let mut m = Magnet::default();
        for param in query.split('&') {
            if param.is_empty() {
                continue;
            }
            let (key, raw) = param
                .split_once('=')
                .ok_or_else(|| MagnetError::MissingValue(param.to_string()))?;
            // BEP 9 allows numbered keys (tr.1, xt.2, ...); x.pe is a name of its own.
            let base = if key == "x.pe" {
                key
            } else {
                key.split_once('.').map_or(key, |(b, _)| b)
            };
            match base {
                "xt" => m.add_xt(&decode_param(key, raw, false)?)?,
                "dn" => {
                    let v = decode_param(key, raw, true)?;
                    if !v.is_empty() {
                        m.display_name = Some(v);
                    }
                }
                "tr" => {
                    let v = nonempty(key, decode_param(key, raw, false)?)?;
                    if !m.trackers.contains(&v) {
                        m.trackers.push(v);
                    }
                }
                "ws" => {
                    let v = nonempty(key, decode_param(key, raw, false)?)?;
                    if !m.web_seeds.contains(&v) {
                        m.web_seeds.push(v);
                    }
                }
                "x.pe" => {
                    let v = nonempty(key, decode_param(key, raw, false)?)?;
                    if !m.peers.contains(&v) {
                        m.peers.push(v);
                    }
                }
                "so" => {
                    let v = decode_param(key, raw, false)?;
                    // One budget for all `so=` together (found by fuzzing: a per-parameter limit
                    // let many `so=` expand to any size, re-sorting on each).
                    let sel = m.select_only.get_or_insert_with(Vec::new);
                    parse_select_only(&v, sel)?;
                }
                _ => {} // xl, kt, as, xs, mt, unknown: not used
            }
        }
        if let Some(sel) = &mut m.select_only {
            sel.sort_unstable();
            sel.dedup();
        }
        if m.info_hash.is_none() && m.btmh.is_none() {
            return Err(MagnetError::MissingXt);
        }
        Ok(m)
    }

    fn add_xt(&mut self, xt: &str) -> Result<(), MagnetError> {
        if let Some(h) = xt.strip_prefix("urn:btih:") {
            let ih = InfoHash::parse(h).map_err(|e| match e {
                InfoHashError::BadLength(n) => MagnetError::BadBtihLength(n),
                InfoHashError::BadHex(v) => MagnetError::BadBtihEncoding {
                    encoding: "hex",
                    value: v,
                },
                InfoHashError::BadBase32(v) => MagnetError::BadBtihEncoding {
                    encoding: "base32",
                    value: v,
                },
            })?;
            if self.info_hash.is_some_and(|old| old != ih) {
                return Err(MagnetError::ConflictingXt("btih"));
            }
            self.info_hash = Some(ih);
        } else if let Some(h) = xt.strip_prefix("urn:btmh:") {
            let bytes = hex::decode(h).map_err(|_| MagnetError::BadBtmh(h.to_string()))?;
            if bytes.len() != 34 || bytes[0] != 0x12 || bytes[1] != 0x20 {
                return Err(MagnetError::BadBtmh(h.to_string()));
            }
            if self.btmh.as_ref().is_some_and(|old| *old != bytes) {
                return Err(MagnetError::ConflictingXt("btmh"));
            }
            self.btmh = Some(bytes);
        }
        // Other URNs (ed2k, sha1, ...) are not BitTorrent topics: ignored.
        Ok(())
    }

    /// The canonical link: `xt` (btih hex, then btmh), `dn`, `tr`*, `ws`*, `x.pe`*, `so`.
    pub fn to_uri(&self) -> String {
        let mut s = String::from("magnet:?");
        let mut sep = "";
        if let Some(ih) = &self.info_hash {
            let _ = write!(s, "xt=urn:btih:{}", ih.to_hex());
            sep = "&";
        }
        if let Some(mh) = &self.btmh {
            let _ = write!(s, "{sep}xt=urn:btmh:{}", hex::encode(mh));
            sep = "&";
        }
        if let Some(dn) = &self.display_name {
            let _ = write!(s, "{sep}dn={}", encode_component(dn));
            sep = "&";
        }
        for (k, list) in [
            ("tr", &self.trackers),
            ("ws", &self.web_seeds),
            ("x.pe", &self.peers),
        ] {
            for v in list {
                let _ = write!(s, "{sep}{k}={}", encode_component(v));
                sep = "&";
            }
        }
        if let Some(sel) = &self.select_only {
            let _ = write!(s, "{sep}so={}", format_select_only(sel));
        }
        s
    }

    /// A magnet for a parsed torrent: info-hash, name, every tracker (announce first, then the
    /// announce-list tiers in order, without duplicates) and the web seeds.
    pub fn from_metainfo(mi: &Metainfo) -> Magnet {
        let mut trackers: Vec<String> = Vec::new();
        for t in mi.announce.iter().chain(mi.announce_list.iter().flatten()) {
            if !trackers.contains(t) {
                trackers.push(t.clone());
            }
        }
        Magnet {
            info_hash: Some(mi.info_hash),
            btmh: None,
            display_name: Some(mi.info.name.clone()),
            trackers,
            web_seeds: mi.url_list.clone(),
            peers: Vec::new(),
            select_only: None,
        }
    }
}

impl std::str::FromStr for Magnet {
    type Err = MagnetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Magnet::parse(s)
    }
}

impl std::fmt::Display for Magnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_uri())
    }
}

fn nonempty(key: &str, v: String) -> Result<String, MagnetError> {
    if v.is_empty() {
        Err(MagnetError::EmptyValue(key.to_string()))
    } else {
        Ok(v)
    }
}

/// Strict percent-decoding: every `%` must be followed by two hex digits.
fn decode_param(key: &str, raw: &str, plus_is_space: bool) -> Result<String, MagnetError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hexval = |c: u8| (c as char).to_digit(16);
                let hi = b.get(i + 1).copied().and_then(hexval);
                let lo = b.get(i + 2).copied().and_then(hexval);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8), // ok: both < 16
                    _ => {
                        return Err(MagnetError::BadPercentEscape {
                            param: key.to_string(),
                            value: raw.to_string(),
                        })
                    }
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| MagnetError::NotUtf8(key.to_string()))
}

/// Percent-encode everything except RFC 3986 unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

/// `0,2,4-6` -> appends [0, 2, 4, 5, 6] to `out` (unsorted; the caller sorts and dedups once).
/// `out` may already hold earlier `so=` values: [`MAX_SELECT_ONLY`] bounds the total.
fn parse_select_only(v: &str, out: &mut Vec<u32>) -> Result<(), MagnetError> {
    let bad = || MagnetError::BadSelectOnly(v.to_string());
    for part in v.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = parse_index(a).ok_or_else(bad)?;
        let b: u32 = parse_index(b).ok_or_else(bad)?;
        if b < a {
            return Err(bad());
        }
        if out.len() + (b - a) as usize >= MAX_SELECT_ONLY {
            return Err(MagnetError::SelectOnlyTooLarge);
        }
        out.extend(a..=b);
    }
    Ok(())
}

fn parse_index(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Sorted indices -> compact `a-b,c` form.
fn format_select_only(sel: &[u32]) -> String {
    let mut sorted = sel.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";
    const B32: &str = "VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5";
    const BTMH: &str = "1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";

    fn ih() -> InfoHash {
        InfoHash::from_hex(HEX).unwrap()
    }

    #[test]
    fn hex_and_base32_btih() {
        let a = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        let b = Magnet::parse(&format!("magnet:?xt=urn:btih:{B32}")).unwrap();
        let c = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", B32.to_lowercase())).unwrap();
        assert_eq!(a.info_hash, Some(ih()));
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn trackers_are_percent_decoded() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&dn=My+File%20%C3%A9&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce&tr=udp%3A%2F%2Ft.example%3A80&tr.1=udp%3A%2F%2Ft.example%3A80"
        ))
        .unwrap();
        assert_eq!(m.display_name.as_deref(), Some("My File é"));
        assert_eq!(
            m.trackers,
            vec!["http://127.0.0.1:6969/announce", "udp://t.example:80"]
        );
    }

    #[test]
    fn several_ws_and_peers() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&ws=http%3A%2F%2Fa%2Ff&ws=http%3A%2F%2Fb%2Ff&x.pe=127.0.0.1%3A6881&x.pe=[::1]:6882"
        ))
        .unwrap();
        assert_eq!(m.web_seeds, vec!["http://a/f", "http://b/f"]);
        assert_eq!(m.peers, vec!["127.0.0.1:6881", "[::1]:6882"]);
    }

    #[test]
    fn hybrid_btih_and_btmh() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:{BTMH}&dn=hybrid"
        ))
        .unwrap();
        assert_eq!(m.info_hash, Some(ih()));
        assert_eq!(m.btmh.as_deref(), Some(&hex::decode(BTMH).unwrap()[..]));
        // btmh only is a valid (v2-only) link.
        let v2 = Magnet::parse(&format!("magnet:?xt=urn:btmh:{BTMH}")).unwrap();
        assert_eq!(v2.info_hash, None);
        assert!(v2.btmh.is_some());
    }

    #[test]
    fn select_only() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so=0,2,4-6,5")).unwrap();
        assert_eq!(m.select_only, Some(vec![0, 2, 4, 5, 6]));
        assert!(m.to_uri().ends_with("so=0,2,4-6"));
    }

    #[test]
    fn round_trip() {
        let m = Magnet {
            info_hash: Some(ih()),
            btmh: Some(hex::decode(BTMH).unwrap()),
            display_name: Some("a b&c=d+é/%".into()),
            trackers: vec![
                "http://127.0.0.1:1/announce?x=1&y=2".into(),
                "udp://h:2".into(),
            ],
            web_seeds: vec!["http://w/1".into(), "http://w/2".into()],
            peers: vec!["127.0.0.1:1".into()],
            select_only: Some(vec![1, 2, 3, 7]),
        };
        let uri = m.to_uri();
        assert_eq!(Magnet::parse(&uri).unwrap(), m);
        let minimal = Magnet {
            info_hash: Some(ih()),
            ..Magnet::default()
        };
        assert_eq!(minimal.to_uri(), format!("magnet:?xt=urn:btih:{HEX}"));
        assert_eq!(Magnet::parse(&minimal.to_uri()).unwrap(), minimal);
    }

    #[test]
    fn malformed_links() {
        use MagnetError::*;
        let p = |s: &str| Magnet::parse(s).unwrap_err();
        assert_eq!(p("http://x"), NotAMagnetLink);
        assert_eq!(p("magnet:xt=urn:btih:"), NotAMagnetLink);
        assert_eq!(p("magnet:?dn=x"), MissingXt);
        assert_eq!(p("magnet:?xt=urn:sha1:abc"), MissingXt);
        assert_eq!(p("magnet:?xt=urn:btih:abcd"), BadBtihLength(4));
        assert!(matches!(
            p(&format!("magnet:?xt=urn:btih:{}", "z".repeat(40))),
            BadBtihEncoding {
                encoding: "hex",
                ..
            }
        ));
        assert!(matches!(
            p(&format!("magnet:?xt=urn:btih:{}", "1".repeat(32))),
            BadBtihEncoding {
                encoding: "base32",
                ..
            }
        ));
        assert_eq!(
            p(&format!(
                "magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{}",
                "0".repeat(40)
            )),
            ConflictingXt("btih")
        );
        assert!(matches!(p("magnet:?xt=urn:btmh:1220abcd"), BadBtmh(_)));
        assert!(matches!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&tr=http%3"),),
            BadPercentEscape { .. }
        ));
        assert!(matches!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&tr=%zzx")),
            BadPercentEscape { .. }
        ));
        assert_eq!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&dn=%FF")),
            NotUtf8("dn".into())
        );
        assert_eq!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&tr")),
            MissingValue("tr".into())
        );
        assert_eq!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&tr=")),
            EmptyValue("tr".into())
        );
        assert!(matches!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&so=3-1")),
            BadSelectOnly(_)
        ));
        assert!(matches!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&so=a")),
            BadSelectOnly(_)
        ));
        assert_eq!(
            p(&format!("magnet:?xt=urn:btih:{HEX}&so=0-4294967295")),
            SelectOnlyTooLarge
        );
        // Found by fuzzing: the limit holds for all so= together, not for each one.
        let many: String = (0..8u32)
            .map(|i| format!("&so={}-{}", i * 900_000, i * 900_000 + 899_999))
            .collect();
        assert_eq!(
            p(&format!("magnet:?xt=urn:btih:{HEX}{many}")),
            SelectOnlyTooLarge
        );
        // Every error says what is wrong.
        assert!(BadBtihLength(4)
            .to_string()
            .contains("40 (hex) or 32 (base32)"));
    }
}

//! Configuration: a TOML file at `$XDG_CONFIG_HOME/warren/config.toml`, overridden by flags.
//!
//! Precedence: built-in defaults < the file < command-line flags. `warren config show` prints
//! the effective result as TOML.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Circuit hop count for new transfers and tunnels (1-3).
    pub hops: u8,
    /// Where identity keys, resume state and the fallback control socket live.
    /// Default: `$XDG_DATA_HOME/warren`.
    pub data_dir: Option<PathBuf>,
    /// Where downloads are saved. Default: `$XDG_DOWNLOAD_DIR/warren` (else `~/Downloads/warren`).
    pub download_dir: Option<PathBuf>,
    /// Control socket. Default: `$XDG_RUNTIME_DIR/warren/control.sock`, else in the data dir.
    pub socket: Option<PathBuf>,
    /// Which network carries exit traffic: `overlay`, `tor` or `auto` (overlay first, then Tor).
    pub via: crate::cli::Via,
    pub network: NetworkConfig,
    pub roles: RolesConfig,
    pub exit_policy: ExitPolicyConfig,
    pub rate_limits: RateLimitsConfig,
    /// Mainline DHT (BEP 5) peer lookups for clearnet swarms, spoken through exits.
    pub mainline_dht: MainlineDhtConfig,
    /// Tor (arti) settings, used with `via = "tor"` or `"auto"`; state and cache directories
    /// default to `<data_dir>/tor/`.
    pub tor: warren_tor::TorConfig,
    /// `warren tunnel -- CMD`.
    pub tunnel: TunnelWrapConfig,
}

/// How `warren tunnel -- CMD` treats the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelWrapConfig {
    /// Seconds the program has to exit after SIGTERM/SIGINT/SIGHUP is passed on to it, before
    /// it is killed (flag: `warren tunnel --grace`).
    pub grace_secs: u64,
}

impl Default for TunnelWrapConfig {
    fn default() -> Self {
        TunnelWrapConfig { grace_secs: 5 }
    }
}

/// Listening and bootstrapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Overlay link listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The address others dial to reach this node (in its descriptor); needed when `listen` is
    /// `0.0.0.0`/`::` or behind a NAT. Port 0 = the listen port.
    pub advertise: Option<SocketAddr>,
    /// Nodes to bootstrap from: descriptor files, `desc:<hex>`, or `<x25519 key hex>@<ip:port>`.
    pub bootstrap: Vec<String>,
    /// How long this node's signed descriptor is valid; it is re-signed every quarter of it
    /// and republished, so the node stays in the network for as long as it runs. Test networks
    /// shorten it (as Tor's TestingTorNetwork does); at least 4 s.
    pub descriptor_lifetime_secs: u64,
}

/// Which services this node offers to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    pub relay: bool,
    pub exit: bool,
    pub dht: bool,
    /// MiB of cells this node may hold queued on its links (relaying); past it the circuits
    /// with the oldest queued data are destroyed (Tor's MaxMemInQueues).
    pub queue_mib: u64,
}

/// What an exit agrees to carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExitPolicyConfig {
    /// Destination ports allowed, as `"80"` or `"6881-6889"`; empty means the default list
    /// (`overlay::exit::DEFAULT_EXIT_PORTS`: 80, 443, 1024-65535).
    pub allow_ports: Vec<String>,
    /// Allow private and loopback destinations. Only for test networks.
    pub allow_private: bool,
}

/// Mainline DHT (BEP 5): off by default. When on, every torrent that is not private is looked up
/// from these bootstrap nodes; each query leaves from an exit (names are resolved there), and
/// warren only asks: it never answers, joins routing tables or announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MainlineDhtConfig {
    pub enabled: bool,
    /// `host:port` of DHT nodes to start lookups from.
    pub bootstrap: Vec<String>,
}

impl Default for MainlineDhtConfig {
    fn default() -> Self {
        MainlineDhtConfig {
            enabled: false,
            bootstrap: vec![
                "router.bittorrent.com:6881".into(),
                "dht.transmissionbt.com:6881".into(),
                "router.utorrent.com:6881".into(),
            ],
        }
    }
}

impl MainlineDhtConfig {
    /// The bootstrap nodes when enabled (else none).
    pub fn nodes(&self) -> Result<Vec<share::connector::PeerAddr>, String> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        self.bootstrap
            .iter()
            .map(|b| {
                share::udp_tracker::parse_url(&format!("udp://{b}"))
                    .map_err(|_| format!("`{b}` is not `host:port`"))
            })
            .collect()
    }
}

/// Rate limits in bytes per second; 0 means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    pub download: u64,
    pub upload: u64,
    pub relay: u64,
    pub exit: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hops: 3,
            data_dir: None,
            download_dir: None,
            socket: None,
            via: crate::cli::Via::Overlay,
            network: NetworkConfig::default(),
            roles: RolesConfig::default(),
            exit_policy: ExitPolicyConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            mainline_dht: MainlineDhtConfig::default(),
            tor: warren_tor::TorConfig::default(),
            tunnel: TunnelWrapConfig::default(),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7700)),
            advertise: None,
            bootstrap: Vec::new(),
            descriptor_lifetime_secs: 24 * 3600,
        }
    }
}

impl Default for RolesConfig {
    fn default() -> Self {
        RolesConfig {
            relay: false,
            exit: false,
            dht: true,
            queue_mib: 256,
        }
    }
}

impl Default for ExitPolicyConfig {
    fn default() -> Self {
        ExitPolicyConfig {
            allow_ports: overlay::exit::DEFAULT_EXIT_PORTS
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect(),
            allow_private: false,
        }
    }
}

/// A configuration problem, naming the file, line, column and key where known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", fmt_parse_error(path, *line, *column, key.as_deref(), message))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        key: Option<String>,
        message: String,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn fmt_parse_error(
    path: &Path,
    line: Option<usize>,
    column: Option<usize>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut s = format!("bad config file {}", path.display());
    if let Some(l) = line {
        s.push_str(&format!(", line {l}"));
        if let Some(c) = column {
            s.push_str(&format!(", column {c}"));
        }
    }
    if let Some(k) = key {
        s.push_str(&format!(", key `{k}`"));
    }
    s.push_str(": ");
    s.push_str(message);
    s
}

impl Config {
    /// Parses a config file's text. `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column, key) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c), key_at(text, span.start))
                }
                None => (None, None, None),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message: e.message().trim().to_string(),
            }
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Loads `path` if it exists; a missing file means defaults. When `required` (the user named
    /// the file with `--config`) a missing file is an error.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Checks values the types alone do not.
    pub fn validate(&self) -> Result<(), String> {
        if !crate::control::HOPS_RANGE.contains(&self.hops) {
            return Err(format!(
                "key `hops`: {} is out of range (allowed: 1-3)",
                self.hops
            ));
        }
        for p in &self.exit_policy.allow_ports {
            parse_port_range(p).map_err(|e| format!("key `exit_policy.allow_ports`: {e}"))?;
        }
        self.tor
            .validate()
            .map_err(|e| format!("section `[tor]`: {e}"))?;
        let dht = MainlineDhtConfig {
            enabled: true,
            ..self.mainline_dht.clone()
        };
        dht.nodes()
            .map_err(|e| format!("key `mainline_dht.bootstrap`: {e}"))?;
        Ok(())
    }

    /// Prints as TOML (what `warren config show` shows).
    pub fn to_toml(&self) -> String {
        // ok: every field is a plain value toml can represent (tables come after values).
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Fills the unset directories from `paths`, so that the effective config shows them.
    pub fn resolve_dirs(&mut self, paths: &Paths) {
        let data = self
            .data_dir
            .get_or_insert_with(|| paths.data_dir.clone())
            .clone();
        self.download_dir
            .get_or_insert_with(|| paths.download_dir.clone());
        self.socket.get_or_insert_with(|| match &paths.runtime_dir {
            Some(r) => r.join("warren").join("control.sock"),
            None => data.join("control.sock"),
        });
    }
}

/// Parses `"80"` or `"6881-6889"`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{s}` is not a port or a range like 6881-6889");
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// 1-based line and column of byte offset `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text.as_bytes()[..pos];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, pos - line_start + 1)
}

/// The dotted key (`table.key`) defined on the line holding byte offset `pos`, if that line is
/// a `key = value` line.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = &text[line_start..line_end];
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        if l.starts_with('[') && !l.starts_with("[[") {
            l.strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .map(|t| t.trim().to_string())
        } else {
            None
        }
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// The standard locations, from the XDG environment (or given explicitly, in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    pub download_dir: PathBuf,
    /// `$XDG_RUNTIME_DIR`, if set.
    pub runtime_dir: Option<PathBuf>,
}

impl Paths {
    /// From the environment via `dirs` (XDG on Linux).
    pub fn from_env() -> Paths {
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
        let config = dirs::config_dir().unwrap_or_else(|| home.join(".config"));
        let data = dirs::data_dir().unwrap_or_else(|| home.join(".local/share"));
        let downloads = dirs::download_dir().unwrap_or_else(|| home.join("Downloads"));
        Paths {
            config_file: config.join("warren").join("config.toml"),
            data_dir: data.join("warren"),
            download_dir: downloads.join("warren"),
            runtime_dir: dirs::runtime_dir(),
        }
    }

    /// `$XDG_DATA_HOME` itself (parent of the warren data dir): where `applications/` lives.
    pub fn data_home(&self) -> PathBuf {
        self.data_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.data_dir.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            config_file: "/cfg/warren/config.toml".into(),
            data_dir: "/data/warren".into(),
            download_dir: "/dl/warren".into(),
            runtime_dir: Some("/run/user/1000".into()),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.hops, 3);
        assert!(c.roles.dht && !c.roles.relay && !c.roles.exit);
        assert_eq!(c.network.listen.port(), 7700);
        assert_eq!(c.rate_limits.relay, 0);
        assert_eq!(c.tunnel.grace_secs, 5);
        // An empty file is the defaults.
        assert_eq!(Config::parse("", Path::new("c.toml")).unwrap(), c);
        // Defaults survive a round trip through `config show`.
        let mut r = c.clone();
        r.resolve_dirs(&paths());
        let shown = r.to_toml();
        assert_eq!(Config::parse(&shown, Path::new("shown")).unwrap(), r);
        assert_eq!(
            r.socket.as_deref(),
            Some(Path::new("/run/user/1000/warren/control.sock"))
        );
        assert_eq!(r.data_dir.as_deref(), Some(Path::new("/data/warren")));
    }

    #[test]
    fn socket_falls_back_to_data_dir() {
        let mut p = paths();
        p.runtime_dir = None;
        let mut c = Config::default();
        c.resolve_dirs(&p);
        assert_eq!(
            c.socket.as_deref(),
            Some(Path::new("/data/warren/control.sock"))
        );
    }

    #[test]
    fn file_values() {
        let text = r#"
hops = 2
download_dir = "/srv/dl"

[network]
listen = "127.0.0.1:9000"
bootstrap = ["10.0.0.1:7700"]

[roles]
relay = true
exit = true

[exit_policy]
allow_ports = ["443", "6881-6889"]

[rate_limits]
relay = 1048576

[tunnel]
grace_secs = 12
"#;
        let c = Config::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(c.hops, 2);
        assert_eq!(c.download_dir.as_deref(), Some(Path::new("/srv/dl")));
        assert_eq!(c.network.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.network.bootstrap, vec!["10.0.0.1:7700".to_string()]);
        assert!(c.roles.relay && c.roles.exit && c.roles.dht);
        assert_eq!(c.rate_limits.relay, 1 << 20);
        assert_eq!(c.rate_limits.exit, 0);
        assert_eq!(c.tunnel.grace_secs, 12);
    }

    #[test]
    fn unknown_key_named_with_line() {
        let text = "hops = 2\n\n[roles]\nrelay = true\nexitt = true\n";
        let e = Config::parse(text, Path::new("/x/config.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/x/config.toml"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");
        assert!(msg.contains("roles.exitt"), "{msg}");
        assert!(msg.contains("unknown field `exitt`"), "{msg}");
    }

    #[test]
    fn wrong_type_named_with_line() {
        let text = "# warren\n[network]\nlisten = \"not an address\"\n";
        let e = Config::parse(text, Path::new("c.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("key `network.listen`"), "{msg}");

        let e = Config::parse("hops = \"three\"\n", Path::new("c.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("line 1") && msg.contains("key `hops`"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let e = Config::parse("hops = 2\n[roles\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn out_of_range_values_rejected() {
        let e = Config::parse("hops = 7\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("key `hops`"), "{e}");
        let e = Config::parse(
            "[exit_policy]\nallow_ports = [\"9-1\"]\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("exit_policy.allow_ports"), "{e}");
    }

    #[test]
    fn load_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.toml");
        assert_eq!(Config::load(&p, false).unwrap(), Config::default());
        assert!(Config::load(&p, true).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("80").unwrap(), (80, 80));
        assert_eq!(parse_port_range("6881-6889").unwrap(), (6881, 6889));
        assert!(parse_port_range("0").is_err());
        assert!(parse_port_range("x").is_err());
    }
}

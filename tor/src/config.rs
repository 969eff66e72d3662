//! warren's `[tor]` configuration and its translation into arti's `TorClientConfig`.
//!
//! The translation is a merge of TOML trees: an optional arti TOML file (the same format arti
//! itself reads) is the base, and every field set in [`TorConfig`] overrides the matching arti
//! key. The result is deserialized into arti's config builder, so arti validates all of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A directory cache the client may bootstrap from (needed with custom authorities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackCache {
    /// RSA identity fingerprint, 40 hex digits.
    pub rsa_identity: String,
    /// Ed25519 identity, unpadded base64.
    pub ed_identity: String,
    /// OR ports, e.g. `["127.0.0.1:5100"]`.
    pub orports: Vec<SocketAddr>,
}

/// The `[tor]` section of warren's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TorConfig {
    /// An arti configuration file (arti's own TOML format), applied first; every field below that
    /// is set overrides it.
    pub arti_config: Option<PathBuf>,
    /// arti's state directory (guards, ...). warren defaults it to `<data-dir>/tor/state`.
    pub state_dir: Option<PathBuf>,
    /// arti's cache directory (consensus, microdescriptors). Default `<data-dir>/tor/cache`.
    pub cache_dir: Option<PathBuf>,
    /// v3 identities of the directory authorities (only for a private Tor network; empty means
    /// the public Tor network). Needs `fallback_caches` too.
    pub authorities: Vec<String>,
    /// Directory caches to bootstrap from (only with `authorities`).
    pub fallback_caches: Vec<FallbackCache>,
    /// Allow streams to loopback and private addresses (test networks only).
    pub allow_local_addrs: bool,
    /// Relays whose IPv4 addresses share this many leading bits count as one family; 33 turns the
    /// rule off (a test network with every relay on 127.0.0.1 needs that).
    pub ipv4_subnet_family_prefix: Option<u8>,
    /// The same for IPv6 (129 turns it off).
    pub ipv6_subnet_family_prefix: Option<u8>,
    /// Consensus parameters to override (e.g. `hsdir_interval`, `guard-n-primary-guards`).
    pub override_net_params: BTreeMap<String, i32>,
    /// Ports to build circuits for ahead of time; `None` keeps arti's default (80, 443).
    pub predicted_ports: Option<Vec<u16>>,
    /// Skip the permission checks on the state and cache directories. Only for tests whose
    /// directories live under a world-writable /tmp: never on a real installation.
    pub trust_all_permissions: bool,
    /// How long the first bootstrap may take, seconds.
    pub bootstrap_timeout_secs: u64,
    /// How long opening one stream may take, seconds.
    pub connect_timeout_secs: u64,
}

impl Default for TorConfig {
    fn default() -> Self {
        TorConfig {
            arti_config: None,
            state_dir: None,
            cache_dir: None,
            authorities: Vec::new(),
            fallback_caches: Vec::new(),
            allow_local_addrs: false,
            ipv4_subnet_family_prefix: None,
            ipv6_subnet_family_prefix: None,
            override_net_params: BTreeMap::new(),
            predicted_ports: None,
            trust_all_permissions: false,
            bootstrap_timeout_secs: 120,
            connect_timeout_secs: 60,
        }
    }
}

/// Why a Tor configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TorConfigError {
    #[error("cannot read arti config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad arti config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("tor config: {0}")]
    Invalid(String),
}

impl TorConfig {
    /// Fills the unset state and cache directories under `data_dir` (`<data_dir>/tor/...`).
    pub fn with_default_dirs(mut self, data_dir: &Path) -> TorConfig {
        let base = data_dir.join("tor");
        self.state_dir.get_or_insert_with(|| base.join("state"));
        self.cache_dir.get_or_insert_with(|| base.join("cache"));
        self
    }

    pub fn bootstrap_timeout(&self) -> Duration {
        Duration::from_secs(self.bootstrap_timeout_secs.max(1))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.max(1))
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), TorConfigError> {
        let bad = |m: String| Err(TorConfigError::Invalid(m));
        if !self.authorities.is_empty() && self.fallback_caches.is_empty() {
            return bad(
                "`authorities` is set but `fallback_caches` is empty: a client of a private Tor \
                 network needs at least one directory cache to bootstrap from"
                    .into(),
            );
        }
        for a in &self.authorities {
            if a.len() != 40 || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!("authority v3 identity `{a}` is not 40 hex digits"));
            }
        }
        for f in &self.fallback_caches {
            if f.rsa_identity.len() != 40 || !f.rsa_identity.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return bad(format!(
                    "fallback cache rsa_identity `{}` is not 40 hex digits",
                    f.rsa_identity
                ));
            }
            if f.orports.is_empty() {
                return bad(format!("fallback cache {} has no orports", f.rsa_identity));
            }
        }
        if let Some(p) = self.ipv4_subnet_family_prefix {
            if p > 33 {
                return bad(format!("ipv4_subnet_family_prefix {p} is above 33"));
            }
        }
        if let Some(p) = self.ipv6_subnet_family_prefix {
            if p > 129 {
                return bad(format!("ipv6_subnet_family_prefix {p} is above 129"));
            }
        }
        Ok(())
    }

    /// The arti configuration as a TOML tree: the arti file (if any) with this config's fields
    /// laid over it.
    pub fn arti_table(&self) -> Result<toml::Table, TorConfigError> {
        self.validate()?;
        let mut root = match &self.arti_config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| TorConfigError::Read {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| TorConfigError::Parse {
                    path: path.clone(),
                    message: e.message().trim().to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        let path_str = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned());
        if let Some(d) = &self.state_dir {
            set(&mut root, &["storage", "state_dir"], path_str(d))?;
        }
        if let Some(d) = &self.cache_dir {
            set(&mut root, &["storage", "cache_dir"], path_str(d))?;
        }
        if self.trust_all_permissions {
            set(
                &mut root,
                &["storage", "permissions", "dangerously_trust_everyone"],
                true.into(),
            )?;
        }
        if self.allow_local_addrs {
            set(
                &mut root,
                &["address_filter", "allow_local_addrs"],
                true.into(),
            )?;
        }
        if let Some(p) = self.ipv4_subnet_family_prefix {
            set(
                &mut root,
                &["path_rules", "ipv4_subnet_family_prefix"],
                i64::from(p).into(),
            )?;
        }
        if let Some(p) = self.ipv6_subnet_family_prefix {
            set(
                &mut root,
                &["path_rules", "ipv6_subnet_family_prefix"],
                i64::from(p).into(),
            )?;
        }
        for (k, v) in &self.override_net_params {
            set(
                &mut root,
                &["override_net_params", k.as_str()],
                i64::from(*v).into(),
            )?;
        }
        if let Some(ports) = &self.predicted_ports {
            let list = ports
                .iter()
                .map(|p| toml::Value::from(i64::from(*p)))
                .collect();
            set(
                &mut root,
                &["preemptive_circuits", "initial_predicted_ports"],
                toml::Value::Array(list),
            )?;
        }
        if !self.fallback_caches.is_empty() {
            let list = self
                .fallback_caches
                .iter()
                .map(|f| {
                    let mut t = toml::Table::new();
                    t.insert("rsa_identity".into(), f.rsa_identity.clone().into());
                    t.insert("ed_identity".into(), f.ed_identity.clone().into());
                    let ports = f
                        .orports
                        .iter()
                        .map(|a| toml::Value::String(a.to_string()))
                        .collect();
                    t.insert("orports".into(), toml::Value::Array(ports));
                    toml::Value::Table(t)
                })
                .collect();
            set(
                &mut root,
                &["tor_network", "fallback_caches"],
                toml::Value::Array(list),
            )?;
        }
        if !self.authorities.is_empty() {
            let list = self
                .authorities
                .iter()
                .map(|a| toml::Value::String(a.to_uppercase()))
                .collect();
            set(
                &mut root,
                &["tor_network", "authorities", "v3idents"],
                toml::Value::Array(list),
            )?;
        }
        Ok(root)
    }

    /// arti's client configuration for this config.
    #[cfg(feature = "arti")]
    pub fn to_arti(&self) -> Result<arti_client::TorClientConfig, TorConfigError> {
        use arti_client::config::TorClientConfigBuilder;
        let table = self.arti_table()?;
        let builder: TorClientConfigBuilder =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    TorConfigError::Invalid(format!(
                        "arti rejected the configuration: {}",
                        e.message().trim()
                    ))
                })?;
        builder
            .build()
            .map_err(|e| TorConfigError::Invalid(format!("arti rejected the configuration: {e}")))
    }
}

/// Sets `value` at the dotted `path` in `root`, creating tables on the way.
fn set(root: &mut toml::Table, path: &[&str], value: toml::Value) -> Result<(), TorConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut t = root;
    for (i, p) in parents.iter().enumerate() {
        let entry = t
            .entry((*p).to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(TorConfigError::Invalid(format!(
                    "arti config key `{}` is not a table",
                    path[..=i].join(".")
                )))
            }
        };
    }
    t.insert((*last).to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_net() -> TorConfig {
        TorConfig {
            authorities: vec!["0123456789abcdef0123456789abcdef01234567".into()],
            fallback_caches: vec![FallbackCache {
                rsa_identity: "89ABCDEF0123456789ABCDEF0123456789ABCDEF".into(),
                ed_identity: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                orports: vec!["127.0.0.1:5100".parse().unwrap()],
            }],
            allow_local_addrs: true,
            ipv4_subnet_family_prefix: Some(33),
            ipv6_subnet_family_prefix: Some(129),
            override_net_params: [("hsdir_interval".to_string(), 8)].into_iter().collect(),
            predicted_ports: Some(vec![]),
            ..TorConfig::default()
        }
        .with_default_dirs(Path::new("/data/warren"))
    }

    #[test]
    fn table_has_every_field() {
        let t = test_net().arti_table().unwrap();
        let s = toml::to_string(&t).unwrap();
        assert!(s.contains("state_dir = \"/data/warren/tor/state\""), "{s}");
        assert!(s.contains("cache_dir = \"/data/warren/tor/cache\""), "{s}");
        assert!(s.contains("allow_local_addrs = true"), "{s}");
        assert!(s.contains("ipv4_subnet_family_prefix = 33"), "{s}");
        assert!(s.contains("hsdir_interval = 8"), "{s}");
        assert!(
            s.contains("0123456789ABCDEF0123456789ABCDEF01234567"),
            "{s}"
        );
        assert!(s.contains("127.0.0.1:5100"), "{s}");
        assert!(s.contains("initial_predicted_ports = []"), "{s}");
        assert!(!s.contains("dangerously_trust_everyone"), "{s}");
    }

    #[test]
    fn file_is_the_base_and_fields_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("arti.toml");
        std::fs::write(
            &p,
            "[storage]\nstate_dir = \"/old\"\n[override_net_params]\ncircwindow = 100\n",
        )
        .unwrap();
        let cfg = TorConfig {
            arti_config: Some(p),
            state_dir: Some("/new".into()),
            ..TorConfig::default()
        };
        let t = cfg.arti_table().unwrap();
        assert_eq!(t["storage"]["state_dir"].as_str(), Some("/new"));
        assert_eq!(
            t["override_net_params"]["circwindow"].as_integer(),
            Some(100)
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cfg = TorConfig {
            authorities: vec!["0123456789abcdef0123456789abcdef01234567".into()],
            ..TorConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fallback_caches"));
        let cfg = TorConfig {
            authorities: vec!["xyz".into()],
            fallback_caches: test_net().fallback_caches,
            ..TorConfig::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("`xyz`"));
        let cfg = TorConfig {
            arti_config: Some("/nonexistent/arti.toml".into()),
            ..TorConfig::default()
        };
        let e = cfg.arti_table().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/arti.toml"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[storage\n").unwrap();
        let cfg = TorConfig {
            arti_config: Some(p),
            ..TorConfig::default()
        };
        assert!(cfg
            .arti_table()
            .unwrap_err()
            .to_string()
            .contains("bad arti config"));
    }

    #[test]
    fn serde_round_trip() {
        let c = test_net();
        let s = toml::to_string_pretty(&c).unwrap();
        let back: TorConfig = toml::from_str(&s).unwrap();
        assert_eq!(back, c);
        let e = toml::from_str::<TorConfig>("allow_locl_addrs = true").unwrap_err();
        assert!(e.to_string().contains("allow_locl_addrs"));
    }

    #[cfg(feature = "arti")]
    #[test]
    fn arti_accepts_the_test_network_config() {
        let mut c = test_net();
        c.fallback_caches[0].ed_identity = "qDkYnsE5z7UnKbkHM5Oa2Q0HBRvSKFDyOnr0ZcBOOGw".into();
        c.to_arti().unwrap();
        TorConfig::default().to_arti().unwrap();
    }
}

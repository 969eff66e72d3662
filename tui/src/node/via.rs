//! `--via overlay|tor|auto` (config key `via`): which network carries exit traffic (issue 7).
//!
//! Every exit stream of a transfer (trackers, web seeds, clearnet peers) and every tunnel flow
//! goes through the provider picked here, per hop count:
//! * `overlay` — the overlay client itself;
//! * `tor` — one shared [`warren_tor::TorProvider`] (its own Tor circuit per isolation key, i.e.
//!   per transfer); UDP is refused with a clear message;
//! * `auto` — [`warren_tor::AutoProvider`]: overlay exits first, Tor when none answers; UDP only
//!   through overlay exits.
//!
//! Nothing here can fall back to the clear: each choice is an anonymous provider or an error.

use std::sync::Arc;

use anyhow::Result;
use overlay::AnonProvider;

use super::connector::Clients;
use crate::cli::Via;
use crate::config::Config;

/// The `--via` value as written on a command line.
pub fn via_arg(v: Via) -> &'static str {
    match v {
        Via::Overlay => "overlay",
        Via::Tor => "tor",
        Via::Auto => "auto",
    }
}

/// Whether `cfg` needs overlay nodes at all (`tor` mode does not).
pub fn needs_overlay(cfg: &Config) -> bool {
    cfg.via != Via::Tor
}

/// The exit providers for hop counts 1, 2 and 3 under `cfg.via`. Tor is not contacted here:
/// arti bootstraps on the first stream.
pub fn exit_providers(cfg: &Config, clients: &Clients) -> Result<[Arc<dyn AnonProvider>; 3]> {
    let overlay = |h: u8| -> Arc<dyn AnonProvider> { clients.get(h).clone() };
    Ok(match cfg.via {
        Via::Overlay => [overlay(1), overlay(2), overlay(3)],
        Via::Tor => {
            let t = tor_provider(cfg)?;
            [t.clone(), t.clone(), t]
        }
        Via::Auto => {
            let t = tor_provider(cfg)?;
            [1, 2, 3].map(|h| -> Arc<dyn AnonProvider> {
                Arc::new(warren_tor::AutoProvider::new(overlay(h), t.clone()))
            })
        }
    })
}

/// The effective Tor settings: `[tor]` with its directories defaulted under the data dir.
pub fn tor_config(cfg: &Config) -> warren_tor::TorConfig {
    match &cfg.data_dir {
        Some(d) => cfg.tor.clone().with_default_dirs(d),
        None => cfg.tor.clone(),
    }
}

#[cfg(feature = "tor")]
fn tor_provider(cfg: &Config) -> Result<Arc<dyn AnonProvider>> {
    let p = warren_tor::TorProvider::new(&tor_config(cfg))
        .map_err(|e| anyhow::anyhow!("--via {}: {e}", via_arg(cfg.via)))?;
    Ok(Arc::new(p))
}

#[cfg(not(feature = "tor"))]
fn tor_provider(cfg: &Config) -> Result<Arc<dyn AnonProvider>> {
    anyhow::bail!(
        "--via {}: this warren was built without the `tor` feature; use --via overlay",
        via_arg(cfg.via)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_mode_uses_the_overlay_clients() {
        let clients = Clients::new(overlay::ClientConfig::default(), Vec::new());
        let p = exit_providers(&Config::default(), &clients).unwrap();
        assert!(p.iter().all(|p| p.name() == "overlay"));
        assert!(needs_overlay(&Config::default()));
    }

    #[cfg(feature = "tor")]
    #[test]
    fn tor_and_auto_modes() {
        let dir = tempfile::tempdir().unwrap();
        let clients = Clients::new(overlay::ClientConfig::default(), Vec::new());
        let mut cfg = Config {
            data_dir: Some(dir.path().to_path_buf()),
            via: Via::Tor,
            ..Config::default()
        };
        cfg.tor.trust_all_permissions = true;
        let p = exit_providers(&cfg, &clients).unwrap();
        assert!(p.iter().all(|p| p.name() == "tor"));
        assert!(!needs_overlay(&cfg));
        assert_eq!(
            tor_config(&cfg).state_dir,
            Some(dir.path().join("tor").join("state"))
        );
        cfg.via = Via::Auto;
        let p = exit_providers(&cfg, &clients).unwrap();
        assert!(p.iter().all(|p| p.name() == "auto"));
    }

    #[test]
    fn config_key_and_tor_section_parse() {
        let text = "via = \"auto\"\n[tor]\nallow_local_addrs = true\n";
        let c = Config::parse(text, std::path::Path::new("c.toml")).unwrap();
        assert_eq!(c.via, Via::Auto);
        assert!(c.tor.allow_local_addrs);
        let e = Config::parse("via = \"i2p\"\n", std::path::Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("key `via`"), "{e}");
        let e = Config::parse(
            "[tor]\nauthorities = [\"0123456789abcdef0123456789abcdef01234567\"]\n",
            std::path::Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("fallback_caches"), "{e}");
    }
}

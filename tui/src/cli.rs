//! Command-line interface (clap derive). Every subcommand has `--help` with examples.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// Anonymous BitTorrent over an onion overlay.
#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    about,
    after_help = "Examples:\n  warren get 'magnet:?xt=urn:btih:…'\n  warren seed ~/video.mkv\n  warren tunnel -- aria2c 'magnet:?xt=urn:btih:…'\n  warren demo\n  warren dash"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every subcommand. The config options here override the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Config file [default: $XDG_CONFIG_HOME/warren/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data directory (keys, resume state) [default: $XDG_DATA_HOME/warren]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Control socket [default: $XDG_RUNTIME_DIR/warren/control.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (repeat for less)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
}

/// One flag per config option (see `warren config show`).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Config overrides")]
pub struct ConfigOverrides {
    /// Directory downloads are saved in (config: download_dir)
    #[arg(long, global = true, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Default circuit hop count, 1-3 (config: hops)
    #[arg(long = "default-hops", global = true, value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..=3))]
    pub default_hops: Option<u8>,
    /// Overlay listen address (config: network.listen)
    #[arg(long = "listen-addr", global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Bootstrap node, repeatable: a descriptor file, `desc:<hex>` or `<x25519 key hex>@<ip:port>`
    /// (what `warren node` prints); replaces the configured list (config: network.bootstrap)
    #[arg(long = "bootstrap", global = true, value_name = "FILE|KEY@ADDR")]
    pub bootstrap: Vec<String>,
    /// Relay for others: true/false (config: roles.relay)
    #[arg(long = "role-relay", global = true, value_name = "BOOL")]
    pub role_relay: Option<bool>,
    /// Act as an exit: true/false (config: roles.exit)
    #[arg(long = "role-exit", global = true, value_name = "BOOL")]
    pub role_exit: Option<bool>,
    /// Serve the overlay DHT: true/false (config: roles.dht)
    #[arg(long = "role-dht", global = true, value_name = "BOOL")]
    pub role_dht: Option<bool>,
    /// Exit ports allowed, e.g. 443 or 6881-6889, repeatable (config: exit_policy.allow_ports)
    #[arg(long = "exit-allow-port", global = true, value_name = "PORTS")]
    pub exit_allow_ports: Vec<String>,
    /// Let the exit reach private/loopback addresses; test networks only (config: exit_policy.allow_private)
    #[arg(long = "exit-allow-private", global = true, value_name = "BOOL")]
    pub exit_allow_private: Option<bool>,
    /// Download limit in bytes/s, 0 = none (config: rate_limits.download)
    #[arg(long = "limit-download", global = true, value_name = "BYTES")]
    pub limit_download: Option<u64>,
    /// Upload limit in bytes/s, 0 = none (config: rate_limits.upload)
    #[arg(long = "limit-upload", global = true, value_name = "BYTES")]
    pub limit_upload: Option<u64>,
    /// Relay limit in bytes/s, 0 = none (config: rate_limits.relay)
    #[arg(long = "limit-relay", global = true, value_name = "BYTES")]
    pub limit_relay: Option<u64>,
    /// Exit limit in bytes/s, 0 = none (config: rate_limits.exit)
    #[arg(long = "limit-exit", global = true, value_name = "BYTES")]
    pub limit_exit: Option<u64>,
    /// Network for exit traffic: overlay, tor or auto (config: via)
    #[arg(long, global = true, value_enum)]
    pub via: Option<Via>,
}

impl GlobalArgs {
    /// Applies the flags on top of a config loaded from file.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(d) = &self.data_dir {
            cfg.data_dir = Some(d.clone());
        }
        if let Some(s) = &self.socket {
            cfg.socket = Some(s.clone());
        }
        let o = &self.overrides;
        if let Some(d) = &o.download_dir {
            cfg.download_dir = Some(d.clone());
        }
        if let Some(h) = o.default_hops {
            cfg.hops = h;
        }
        if let Some(l) = o.listen {
            cfg.network.listen = l;
        }
        if !o.bootstrap.is_empty() {
            cfg.network.bootstrap = o.bootstrap.clone();
        }
        if let Some(v) = o.role_relay {
            cfg.roles.relay = v;
        }
        if let Some(v) = o.role_exit {
            cfg.roles.exit = v;
        }
        if let Some(v) = o.role_dht {
            cfg.roles.dht = v;
        }
        if !o.exit_allow_ports.is_empty() {
            cfg.exit_policy.allow_ports = o.exit_allow_ports.clone();
        }
        if let Some(v) = o.exit_allow_private {
            cfg.exit_policy.allow_private = v;
        }
        if let Some(v) = o.via {
            cfg.via = v;
        }
        for (flag, slot) in [
            (o.limit_download, &mut cfg.rate_limits.download),
            (o.limit_upload, &mut cfg.rate_limits.upload),
            (o.limit_relay, &mut cfg.rate_limits.relay),
            (o.limit_exit, &mut cfg.rate_limits.exit),
        ] {
            if let Some(v) = flag {
                *slot = v;
            }
        }
    }

    /// Log filter level from -v/-q: 0 = warn (default), then info, debug, trace; -q = error, off.
    pub fn log_level(&self) -> &'static str {
        match (self.verbose, self.quiet) {
            (_, 1) => "error",
            (_, q) if q >= 2 => "off",
            (0, _) => "warn",
            (1, _) => "info",
            (2, _) => "debug",
            _ => "trace",
        }
    }
}

impl Command {
    /// `warren tunnel -- CMD` (not `--system`): exits with the program's status.
    pub fn wraps_a_program(&self) -> bool {
        matches!(self, Command::Tunnel { system: None, .. })
    }
}

fn hops_parser() -> clap::builder::RangedI64ValueParser<u8> {
    clap::value_parser!(u8).range(1..=3)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download a magnet link anonymously
    #[command(
        after_help = "Examples:\n  warren get 'magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a'\n  warren get --hops 2 --dir ~/iso 'magnet:?xt=urn:btih:…&dn=debian.iso'\n  warren get --no-tui 'magnet:?xt=urn:btih:…' > progress.log"
    )]
    Get {
        /// The magnet link (quote it: it contains '&')
        magnet: String,
        /// Circuit hop count, 1-3 [default: from config]
        #[arg(long, value_parser = hops_parser())]
        hops: Option<u8>,
        /// Directory to save into [default: download_dir]
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
        /// Plain progress lines instead of the dashboard
        #[arg(long)]
        no_tui: bool,
    },
    /// Seed a file or directory as a hidden seeder and print its magnet link
    #[command(
        after_help = "Examples:\n  warren seed ~/talk.mp4\n  warren seed --hops 2 ./dataset/"
    )]
    Seed {
        /// File or directory to seed
        path: PathBuf,
        /// Circuit hop count, 1-3 [default: from config]
        #[arg(long, value_parser = hops_parser())]
        hops: Option<u8>,
        /// Plain progress lines instead of the dashboard
        #[arg(long)]
        no_tui: bool,
    },
    /// Make a .torrent file (no network)
    #[command(
        after_help = "Examples:\n  warren make ./album -o album.torrent\n  warren make big.iso --tracker http://tracker.example:6969/announce"
    )]
    Make {
        /// File or directory
        path: PathBuf,
        /// Output file [default: <name>.torrent]
        #[arg(short, long, value_name = "out.torrent")]
        output: Option<PathBuf>,
        /// Announce URL to include (repeatable)
        #[arg(long, value_name = "URL")]
        tracker: Vec<String>,
    },
    /// Run a program with all its traffic sent through circuits
    #[command(
        after_help = "The program owns the terminal: warren draws nothing over it (see the tunnel with\n`warren dash` in another terminal, or ask for the dashboard with --dash). SIGTERM, SIGINT\nand SIGHUP are passed on to it; it is killed --grace seconds after the first, and it dies\nwith warren if warren is killed. Ctrl-C and a terminal hangup reach it directly.\n\nExit status:\n  the program's own, or 128+N if it died of signal N (137 = killed)\n  125  warren failed: bad config, no overlay, namespace, tun or dashboard failure\n  126  the program was found but cannot be run\n  127  the program was not found\n  2    bad command line\n\nExamples:\n  warren tunnel -- aria2c 'magnet:?xt=urn:btih:…'\n  warren tunnel --hops 2 --via tor -- curl https://example.org\n  warren tunnel --dash -- aria2c 'magnet:?xt=urn:btih:…'   # program output to <data-dir>/tunnel-program.log\n  warren tunnel --system up      # system-wide mode with a kill switch\n  warren tunnel --system down"
    )]
    Tunnel {
        /// Circuit hop count, 1-3 [default: from config]
        #[arg(long, value_parser = hops_parser())]
        hops: Option<u8>,
        /// System-wide mode instead of wrapping one program
        #[arg(long, value_enum, value_name = "up|down")]
        system: Option<SystemMode>,
        /// Seconds the program has to exit after a signal before it is killed [default: config tunnel.grace_secs, 5]
        #[arg(long, value_name = "SECS")]
        grace: Option<u64>,
        /// Show the dashboard on this terminal; the program's output goes to <data-dir>/tunnel-program.log
        #[arg(long, conflicts_with_all = ["no_tui", "status"])]
        dash: bool,
        /// Plain tunnel status lines (and warren's log) on stderr while the program runs
        #[arg(long)]
        status: bool,
        /// Run the program as this user (name or uid) [default: the user sudo was invoked by,
        /// from SUDO_UID/SUDO_GID; `--user root` keeps root]
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// No dashboard (the default; kept for scripts)
        #[arg(long, hide = true)]
        no_tui: bool,
        /// The program and its arguments
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Attach the dashboard to a running node
    #[command(
        after_help = "Examples:\n  warren dash\n  warren --socket /tmp/w/control.sock dash\n\nKeys: Tab/Shift-Tab or 1-5 switch tabs, a add magnet, p pause, r resume, d remove, h hops, ? help, q quit"
    )]
    Dash,
    /// Print a running node's status
    #[command(
        after_help = "Examples:\n  warren status\n  warren status --json | jq '.transfers[].name'"
    )]
    Status {
        /// Print the raw JSON snapshot
        #[arg(long)]
        json: bool,
    },
    /// Open a magnet link in the running node, or start one (the desktop magnet handler)
    #[command(
        after_help = "Examples:\n  warren open 'magnet:?xt=urn:btih:…'\n  xdg-open 'magnet:?xt=urn:btih:…'   # after `warren install-handler`"
    )]
    Open {
        /// The magnet link
        magnet: String,
    },
    /// Register warren as the desktop's magnet: link handler
    #[command(
        after_help = "Writes $XDG_DATA_HOME/applications/warren-magnet.desktop and, if xdg-mime is\ninstalled, makes it the default handler for magnet: links.\n\nExamples:\n  warren install-handler"
    )]
    InstallHandler,
    /// Run a headless node
    #[command(
        after_help = "Examples:\n  warren node\n  warren node --relay --dht --listen 0.0.0.0:7700 --advertise 203.0.113.7:7700\n  warren node --relay --exit"
    )]
    Node {
        /// Relay traffic for others
        #[arg(long)]
        relay: bool,
        /// Act as an exit (see exit_policy in the config)
        #[arg(long)]
        exit: bool,
        /// Serve the overlay DHT
        #[arg(long)]
        dht: bool,
        /// Listen address for overlay links
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// The address others dial to reach this node, put in its descriptor (config:
        /// network.advertise); needed with --listen 0.0.0.0:PORT or behind a NAT
        #[arg(long, value_name = "ADDR")]
        advertise: Option<SocketAddr>,
    },
    /// Start a whole local network in-process and download through it
    #[command(after_help = "Examples:\n  warren demo\n  warren demo --no-tui --size 10000000")]
    Demo {
        /// Plain progress lines instead of the dashboard
        #[arg(long)]
        no_tui: bool,
        /// Size of the generated content in bytes
        #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
        size: u64,
        /// Keep the demo's files here instead of a temporary directory (for tests)
        #[arg(long, hide = true, value_name = "DIR")]
        work_dir: Option<PathBuf>,
    },
    /// Measure circuits, the BitTorrent engine or the tunnel
    #[command(
        after_help = "Examples:\n  warren bench circuit --hops 3 --seconds 10\n  warren bench share --size 100000000\n  warren bench tunnel\n  warren bench hidden --size 1073741824 --runs 9"
    )]
    Bench {
        #[arg(value_enum)]
        what: BenchKind,
        /// Circuit hop count, 1-3
        #[arg(long, value_parser = hops_parser(), default_value_t = 3)]
        hops: u8,
        /// Bytes to transfer
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        size: u64,
        /// Duration limit in seconds
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Repetitions of the latency measurement (bench hidden)
        #[arg(long, default_value_t = 9)]
        runs: usize,
    },
    /// Show the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions
    #[command(
        after_help = "Examples:\n  warren completions bash > ~/.local/share/bash-completion/completions/warren\n  warren completions zsh > ~/.zfunc/_warren\n  warren completions fish > ~/.config/fish/completions/warren.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults < file < flags) as TOML
    #[command(
        after_help = "Examples:\n  warren config show\n  warren --default-hops 2 config show > ~/.config/warren/config.toml"
    )]
    Show,
}

/// Which network carries exit traffic (trackers, web seeds, clearnet peers, tunnel flows).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// warren's own overlay exits
    #[default]
    Overlay,
    /// Tor exits (arti); TCP only: UDP is refused
    Tor,
    /// overlay exits first, Tor when none answers; UDP through overlay exits only
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SystemMode {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKind {
    Circuit,
    Share,
    Tunnel,
    /// Hidden seeding in a 30-node in-process network: time to first piece, bulk MB/s
    Hidden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl CompletionShell {
    pub fn to_clap(self) -> clap_complete::Shell {
        match self {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_examples() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let has = sub.get_after_help().is_some()
                || sub.get_subcommands().all(|s| s.get_after_help().is_some());
            assert!(has, "subcommand {} has no examples", sub.get_name());
        }
    }

    #[test]
    fn parses_get_and_tunnel() {
        let c = Cli::try_parse_from(["warren", "get", "magnet:?xt=x", "--hops", "2", "--no-tui"])
            .unwrap();
        match c.command {
            Command::Get {
                magnet,
                hops,
                no_tui,
                dir,
            } => {
                assert_eq!(magnet, "magnet:?xt=x");
                assert_eq!(hops, Some(2));
                assert!(no_tui);
                assert!(dir.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["warren", "get", "m", "--hops", "4"]).is_err());
        let c = Cli::try_parse_from([
            "warren", "-v", "tunnel", "--via", "tor", "--", "curl", "-s", "http://x",
        ])
        .unwrap();
        assert_eq!(c.global.log_level(), "info");
        assert_eq!(c.global.overrides.via, Some(Via::Tor));
        match c.command {
            Command::Tunnel { cmd, .. } => {
                assert_eq!(cmd, vec!["curl", "-s", "http://x"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_override_config() {
        let c = Cli::try_parse_from([
            "warren",
            "config",
            "show",
            "--default-hops",
            "1",
            "--role-relay",
            "true",
            "--limit-relay",
            "5000",
            "--bootstrap",
            "1.2.3.4:7700",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        let mut cfg = Config::parse(
            "hops = 2\n[roles]\nrelay = false\nexit = true\n[rate_limits]\nrelay = 10\nexit = 20\n",
            std::path::Path::new("c.toml"),
        )
        .unwrap();
        c.global.apply(&mut cfg);
        assert_eq!(cfg.hops, 1);
        assert!(cfg.roles.relay);
        assert!(cfg.roles.exit, "file value kept when no flag");
        assert_eq!(cfg.rate_limits.relay, 5000);
        assert_eq!(cfg.rate_limits.exit, 20);
        assert_eq!(cfg.network.bootstrap, vec!["1.2.3.4:7700"]);
        assert_eq!(cfg.data_dir.as_deref(), Some(std::path::Path::new("/d")));
    }
}

//! Subcommand dispatch: [`run_command`] is the one place that decides what each subcommand does.
//! Subcommands that need the engines say "not wired yet" until the node (tui/src/node/) exists.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{Config, Paths};
use crate::control::client::SocketControl;
use crate::control::{Command as Ctl, Control, ControlError};
use crate::status::{fmt_bytes, fmt_duration, StatusSnapshot};

/// Loads the effective configuration: defaults < file < flags, with directories resolved.
pub fn effective_config(cli: &Cli, paths: &Paths) -> Result<Config> {
    let (file, required) = match &cli.global.config {
        Some(p) => (p.clone(), true),
        None => (paths.config_file.clone(), false),
    };
    let mut cfg = Config::load(&file, required)?;
    cli.global.apply(&mut cfg);
    cfg.validate().map_err(|e| anyhow!("bad option: {e}"))?;
    cfg.resolve_dirs(paths);
    Ok(cfg)
}

fn socket_path(cfg: &Config) -> Result<PathBuf> {
    cfg.socket
        .clone()
        .ok_or_else(|| anyhow!("no control socket path configured"))
}

fn not_wired(what: &str) -> anyhow::Error {
    anyhow!("`warren {what}` is not wired yet: the node that runs the engines is not built into this binary")
}

/// Connects to the running node's control socket, with an error that says what to do.
pub fn connect(socket: &Path) -> Result<SocketControl> {
    SocketControl::connect(socket).map_err(|e| match e {
        ControlError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            anyhow!(
                "no warren node is running (nothing listens on {}); start one with `warren node`",
                socket.display()
            )
        }
        other => anyhow!(
            "cannot connect to the node at {}: {other}",
            socket.display()
        ),
    })
}

/// Starts a client node (no relay) in the background with the effective options and waits for its
/// control socket. Its output goes to `<data-dir>/node.log`.
fn start_node_for_open(
    config: &Option<PathBuf>,
    cfg: &Config,
    socket: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    if cfg.network.bootstrap.is_empty() {
        bail!(
            "no warren node is running and no overlay to reach: give descriptor files of running \
             nodes with --bootstrap FILE (or `bootstrap` in the config), or start `warren node`"
        );
    }
    let data = cfg
        .data_dir
        .clone()
        .ok_or_else(|| anyhow!("no data directory: set --data-dir or XDG_DATA_HOME"))?;
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let exe = std::env::current_exe().context("cannot find the warren executable")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("--data-dir").arg(&data).arg("--socket").arg(socket);
    if let Some(d) = &cfg.download_dir {
        cmd.arg("--download-dir").arg(d);
    }
    cmd.arg("--default-hops").arg(cfg.hops.to_string());
    cmd.arg("--via").arg(crate::node::via::via_arg(cfg.via));
    for b in &cfg.network.bootstrap {
        cmd.arg("--bootstrap").arg(b);
    }
    // a client node: it listens only on loopback and relays nothing
    cmd.args(["node", "--listen", "127.0.0.1:0"]);
    let log_path = data.join("node.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // its own session: closing this terminal does not stop it
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot start a warren node")?;
    writeln!(
        out,
        "started a warren node (pid {}), log in {}",
        child.id(),
        log_path.display()
    )?;
    for _ in 0..150 {
        if SocketControl::connect(socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!(
        "the new node did not open its control socket within 15 s; see {}",
        log_path.display()
    )
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// Runs one parsed command line. Writes normal output to `out`.
pub fn run_command(cli: Cli, paths: &Paths, out: &mut dyn Write) -> Result<()> {
    let cfg = effective_config(&cli, paths)?;
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell.to_clap(), &mut cmd, "warren", out);
            Ok(())
        }
        Command::Config(ConfigCommand::Show) => {
            write!(out, "{}", cfg.to_toml())?;
            Ok(())
        }
        Command::InstallHandler => {
            let exe = std::env::current_exe().context("cannot find the warren executable")?;
            let xdg_mime = crate::handler::find_in_path("xdg-mime");
            let r = crate::handler::install(&paths.data_home(), &exe, xdg_mime.as_deref())
                .context("cannot write the desktop entry")?;
            writeln!(out, "wrote {}", r.desktop_file.display())?;
            match r.xdg_mime {
                Some(true) => writeln!(
                    out,
                    "ran: xdg-mime default {} x-scheme-handler/magnet",
                    crate::handler::DESKTOP_FILE
                )?,
                Some(false) => writeln!(
                    out,
                    "xdg-mime default {} x-scheme-handler/magnet failed; set the handler in your desktop settings",
                    crate::handler::DESKTOP_FILE
                )?,
                None => writeln!(
                    out,
                    "xdg-mime not found: not changing the default magnet handler (the desktop entry is registered for x-scheme-handler/magnet)"
                )?,
            }
            Ok(())
        }
        Command::Status { json } => {
            let mut ctl = connect(&socket_path(&cfg)?)?;
            let snap = ctl.snapshot().context("status request failed")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&snap)?)?;
            } else {
                write!(out, "{}", status_text(&snap))?;
            }
            Ok(())
        }
        Command::Dash => {
            let mut ctl = connect(&socket_path(&cfg)?)?;
            crate::dash::run(&mut ctl).context("dashboard failed")
        }
        Command::Open { magnet } => {
            if !magnet.starts_with("magnet:?") {
                bail!("not a magnet link (it must start with magnet:?): {magnet}");
            }
            let socket = socket_path(&cfg)?;
            match SocketControl::connect(&socket) {
                Ok(mut ctl) => {
                    let r = ctl
                        .request(Ctl::Add {
                            magnet,
                            dir: None,
                            hops: None,
                        })
                        .context("the running node refused the magnet link")?;
                    match r.get("transfer").and_then(|v| v.as_u64()) {
                        Some(id) => writeln!(out, "added to the running node as transfer {id}")?,
                        None => writeln!(out, "added to the running node")?,
                    }
                    Ok(())
                }
                // No node: start one in the background, then hand it the link.
                Err(_) => {
                    share::magnet::Magnet::parse(&magnet)
                        .map_err(|e| anyhow!("bad magnet link: {e}"))?;
                    start_node_for_open(&cli.global.config, &cfg, &socket, out)?;
                    let mut ctl = connect(&socket)?;
                    let r = ctl
                        .request(Ctl::Add {
                            magnet,
                            dir: None,
                            hops: None,
                        })
                        .context("the new node refused the magnet link")?;
                    match r.get("transfer").and_then(|v| v.as_u64()) {
                        Some(id) => writeln!(out, "added to the new node as transfer {id}")?,
                        None => writeln!(out, "added to the new node")?,
                    }
                    Ok(())
                }
            }
        }
        Command::Get {
            magnet,
            hops,
            dir,
            no_tui,
        } => runtime()?.block_on(async {
            let mut stdout = std::io::stdout();
            crate::node::run::get(
                &cfg,
                &magnet,
                hops,
                dir,
                crate::dash::want_tui(no_tui),
                &mut stdout,
            )
            .await
        }),
        Command::Seed { path, hops, no_tui } => runtime()?.block_on(async {
            let mut stdout = std::io::stdout();
            crate::node::run::seed(
                &cfg,
                &path,
                hops,
                crate::dash::want_tui(no_tui),
                &mut stdout,
            )
            .await
        }),
        Command::Make {
            path,
            output,
            tracker,
        } => make(&path, output, tracker, out),
        Command::Tunnel {
            hops,
            system,
            grace,
            dash,
            status,
            user,
            no_tui: _,
            cmd,
        } => {
            match system {
                Some(crate::cli::SystemMode::Up) => {
                    return runtime()?.block_on(async {
                        let mut stdout = std::io::stdout();
                        crate::node::run::system_up(&cfg, hops, &mut stdout).await
                    })
                }
                Some(crate::cli::SystemMode::Down) => {
                    return crate::node::run::system_down(&cfg, out);
                }
                None => {}
            }
            let run = crate::node::wrap::TunnelRun {
                hops,
                grace,
                dash,
                status,
                user,
            };
            let code = runtime()?.block_on(crate::node::wrap::tunnel(&cfg, &run, &cmd))?;
            if code != 0 {
                // main exits with it, silently (like `ip netns exec`)
                return Err(crate::exit::WrapperExit::from_code(code).into());
            }
            Ok(())
        }
        Command::Node {
            relay,
            exit,
            dht,
            listen,
            advertise,
        } => {
            let mut cfg = cfg;
            if let Some(l) = listen {
                cfg.network.listen = l;
            }
            if advertise.is_some() {
                cfg.network.advertise = advertise;
            }
            runtime()?.block_on(async {
                let mut stdout = std::io::stdout();
                crate::node::run::node(&cfg, relay, exit, dht, &mut stdout).await
            })
        }
        Command::Demo {
            no_tui,
            size,
            work_dir,
        } => {
            let opts = crate::node::demo::DemoOptions {
                size,
                hops: cfg.hops,
                relays: 8,
                exits: 2,
                tui: crate::dash::want_tui(no_tui),
                work_dir,
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            // progress goes straight to stdout: it must show while the download runs
            rt.block_on(async {
                let mut stdout = std::io::stdout();
                crate::node::demo::run(opts, &mut stdout).await
            })
            .map(|_| ())
        }
        Command::Bench {
            what,
            hops,
            size,
            seconds: _,
            runs,
        } => bench(what, hops, size, runs, out),
    }
}

/// Human-readable `warren status`.
pub fn status_text(s: &StatusSnapshot) -> String {
    let mut o = String::new();
    let n = &s.network;
    o.push_str(&format!(
        "node {}  up {}  links {}  DHT nodes {}  relayed {}{}\n",
        if s.node_id.is_empty() {
            "-"
        } else {
            &s.node_id
        },
        fmt_duration(s.uptime_secs),
        n.links.len(),
        n.dht_nodes,
        fmt_bytes(n.relayed_bytes),
        if n.is_exit {
            format!("  exit {}", fmt_bytes(n.exit_bytes))
        } else {
            String::new()
        }
    ));
    o.push_str(&format!(
        "circuits {} ({} open)  entry guard {}  tunnel flows {}\n",
        s.circuits.len(),
        s.circuits
            .iter()
            .filter(|c| c.state == crate::status::CircuitState::Open)
            .count(),
        n.guards.first().map(String::as_str).unwrap_or("-"),
        s.flows.len()
    ));
    for g in n
        .guard_health
        .iter()
        .filter(|g| g.primary || g.down_secs > 0 || g.suspect)
    {
        o.push_str(&format!(
            "  guard {}{}: {} of {} circuits built ({}%){}\n",
            g.id,
            if g.primary { " (primary)" } else { "" },
            g.succeeded,
            g.circuits,
            g.percent(),
            if g.down_secs > 0 {
                format!(", unreachable, retried in {}", fmt_duration(g.down_secs))
            } else {
                String::new()
            }
        ));
        if g.suspect {
            o.push_str(&format!(
                "  WARNING: entry guard {} fails most circuits through it; it may be dropping \
                 them. warren keeps it (switching guards on failures is what an attacker would \
                 want); if it lasts, delete <data-dir>/guards to choose new guards\n",
                g.id
            ));
        }
    }
    if s.transfers.is_empty() {
        o.push_str("no transfers\n");
    }
    for t in &s.transfers {
        o.push_str(&format!(
            "[{}] {}\n",
            t.id,
            crate::dash::plain::transfer_line(t)
        ));
    }
    o
}

/// `warren make`: hashes PATH into a .torrent and prints where it went and its magnet link.
fn make(
    path: &Path,
    output: Option<PathBuf>,
    trackers: Vec<String>,
    out: &mut dyn Write,
) -> Result<()> {
    let opts = share::make::MakeOptions {
        trackers,
        ..Default::default()
    };
    let made = share::make::make_torrent(path, &opts)
        .with_context(|| format!("cannot make a torrent of {}", path.display()))?;
    let output =
        output.unwrap_or_else(|| PathBuf::from(format!("{}.torrent", made.metainfo.info.name)));
    std::fs::write(&output, &made.torrent_bytes)
        .with_context(|| format!("cannot write {}", output.display()))?;
    writeln!(out, "wrote {}", output.display())?;
    writeln!(out, "info-hash {}", made.metainfo.info_hash)?;
    writeln!(out, "{}", made.magnet.to_uri())?;
    Ok(())
}

/// `warren bench`: runs a benchmark in this process and prints its figures.
fn bench(
    what: crate::cli::BenchKind,
    hops: u8,
    size: u64,
    runs: usize,
    out: &mut dyn Write,
) -> Result<()> {
    use crate::cli::BenchKind;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match what {
        BenchKind::Circuit => {
            let opts = overlay::bench::BenchOpts {
                hops: usize::from(hops),
                bytes: size,
                ..Default::default()
            };
            let report = rt
                .block_on(overlay::bench::circuit(opts))
                .map_err(|e| anyhow!("circuit benchmark failed: {e}"))?;
            writeln!(out, "{report}")?;
            Ok(())
        }
        BenchKind::Tunnel => {
            // a real in-process overlay: relays and an exit that may reach the loopback sink
            let report = rt.block_on(async {
                let net = overlay::testnet::Testnet::builder()
                    .relays(2)
                    .exits(1)
                    .build()
                    .await
                    .context("cannot start the in-process network")?;
                let client = net.client(overlay::ClientConfig {
                    hops: usize::from(hops),
                    ..overlay::ClientConfig::default()
                });
                let provider: std::sync::Arc<dyn overlay::AnonProvider> =
                    std::sync::Arc::new(client);
                tunnel::bench::run(provider, size, tunnel::TunnelConfig::default())
                    .await
                    .map_err(|e| {
                        anyhow!("tunnel benchmark failed (it needs root and /dev/net/tun): {e}")
                    })
            })?;
            writeln!(
                out,
                "tunnel over {hops}-hop circuits ({}), {} MB\n  raw circuit  {:.1} MB/s\n  through tun  {:.1} MB/s ({:.0}% of raw)",
                report.provider,
                report.bytes / 1_000_000,
                report.raw_mb_s,
                report.tunnel_mb_s,
                report.ratio * 100.0
            )?;
            Ok(())
        }
        BenchKind::Hidden => {
            let report = rt.block_on(crate::node::bench::hidden(size, hops, runs.max(1), out))?;
            writeln!(out, "{report}")?;
            Ok(())
        }
        other => Err(not_wired(&format!("bench {other:?}").to_lowercase())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn status_names_a_suspect_guard() {
        let mut s = StatusSnapshot::default();
        s.network.guards = vec!["7c6b5a49".into()];
        s.network.guard_health = vec![
            crate::status::GuardHealth {
                id: "7c6b5a49".into(),
                primary: true,
                circuits: 40,
                succeeded: 6,
                suspect: true,
                ..Default::default()
            },
            crate::status::GuardHealth {
                id: "a1b2c3d4".into(),
                down_secs: 90,
                ..Default::default()
            },
            crate::status::GuardHealth {
                id: "unused00".into(),
                ..Default::default()
            },
        ];
        let t = status_text(&s);
        assert!(
            t.contains("guard 7c6b5a49 (primary): 6 of 40 circuits built (15%)"),
            "{t}"
        );
        assert!(t.contains("WARNING: entry guard 7c6b5a49"), "{t}");
        assert!(
            t.contains("guard a1b2c3d4: 0 of 0 circuits built (100%), unreachable"),
            "{t}"
        );
        assert!(!t.contains("unused00"), "{t}");
    }

    fn paths(dir: &Path) -> Paths {
        Paths {
            config_file: dir.join("cfg/warren/config.toml"),
            data_dir: dir.join("data/warren"),
            download_dir: dir.join("dl/warren"),
            runtime_dir: None,
        }
    }

    fn run(args: &[&str], p: &Paths) -> Result<String> {
        let cli = Cli::try_parse_from(args)?;
        let mut out = Vec::new();
        run_command(cli, p, &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn config_show_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::create_dir_all(p.config_file.parent().unwrap()).unwrap();
        std::fs::write(&p.config_file, "hops = 2\n[roles]\nrelay = true\n").unwrap();
        let shown = run(&["warren", "config", "show"], &p).unwrap();
        let cfg = Config::parse(&shown, Path::new("shown")).unwrap();
        assert_eq!(cfg.hops, 2);
        assert!(cfg.roles.relay);
        assert_eq!(cfg.data_dir, Some(p.data_dir.clone()));
        assert_eq!(cfg.socket, Some(p.data_dir.join("control.sock")));
        let shown = run(&["warren", "--default-hops", "1", "config", "show"], &p).unwrap();
        assert!(shown.contains("hops = 1"), "{shown}");

        std::fs::write(&p.config_file, "hops = 2\n[roles]\nrelya = true\n").unwrap();
        let e = run(&["warren", "config", "show"], &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("roles.relya"), "{e}");
        let e = run(
            &[
                "warren",
                "--config",
                "/nonexistent/x.toml",
                "config",
                "show",
            ],
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn completions_for_each_shell() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        for sh in ["bash", "zsh", "fish"] {
            let out = run(&["warren", "completions", sh], &p).unwrap();
            assert!(out.contains("install-handler"), "{sh}");
        }
    }

    #[test]
    fn engine_commands_refuse_clearly_without_a_network() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let e = run(&["warren", "get", "--no-tui", "magnet:?xt=urn:btih:00"], &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad magnet link"), "{e}");
        // no node runs and no overlay is configured: `open` says what to do instead of starting one
        let e = run(
            &[
                "warren",
                "open",
                "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
            ],
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no overlay to reach"), "{e}");
        let e = run(&["warren", "status"], &p).unwrap_err().to_string();
        assert!(e.contains("no warren node is running"), "{e}");
    }
}

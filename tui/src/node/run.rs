//! The long-running commands: `warren node`, `warren get`, `warren tunnel`.
//!
//! Until the overlay DHT is wired (issue 4), a node learns the network from *descriptor files*:
//! every `warren node` writes its signed descriptor to `<data-dir>/descriptor`, and clients are
//! given those files (or the hex they hold) as `bootstrap` entries. Each descriptor's signature,
//! id binding and expiry are verified before it is used; circuits are built only from them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use overlay::descriptor::{unix_now, ROLE_EXIT, ROLE_RELAY};
use overlay::exit::ExitPolicy;
use overlay::{Descriptor, Identity};
use share::session::SessionConfig;

use super::connector::Clients;
use super::core::NodeCore;
use crate::config::Config;
use crate::control::channel::{channel, serve_channel};

/// Reads the verified descriptors named by `entries` (files of hex lines, or `desc:<hex>`).
pub fn load_directory(entries: &[String]) -> Result<Vec<Descriptor>> {
    let now = unix_now();
    let mut out = Vec::new();
    for e in entries {
        let texts: Vec<String> = if let Some(hex) = e.strip_prefix("desc:") {
            vec![hex.to_string()]
        } else if Path::new(e).is_file() {
            std::fs::read_to_string(e)
                .with_context(|| format!("cannot read bootstrap file {e}"))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        } else {
            bail!(
                "bootstrap entry `{e}` is neither a descriptor file, `desc:<hex>`, nor \
                 `<x25519 key hex>@<ip:port>` (what `warren node` prints and writes to \
                 <data-dir>/bootstrap)"
            );
        };
        for t in texts {
            let bytes = hex::decode(&t)
                .map_err(|_| anyhow!("bootstrap entry {e}: descriptor is not hex"))?;
            let d = Descriptor::decode_verified(&bytes, now)
                .map_err(|err| anyhow!("bootstrap entry {e}: descriptor rejected: {err}"))?;
            if !out.iter().any(|o: &Descriptor| o.id == d.id) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// A `KEY@ADDR` bootstrap entry: a node's x25519 key (64 hex digits) and its link address.
fn parse_key_at_addr(e: &str) -> Option<([u8; 32], std::net::SocketAddr)> {
    let (k, a) = e.trim().split_once('@')?;
    let key: [u8; 32] = hex::decode(k).ok()?.try_into().ok()?;
    Some((key, a.parse().ok()?))
}

/// One bootstrap entry: descriptor files and `desc:<hex>` are read; a `KEY@ADDR` node is asked,
/// over a one-hop circuit that proves it holds KEY, which nodes it knows.
async fn resolve_entry(e: &str) -> Result<Vec<Descriptor>> {
    match parse_key_at_addr(e) {
        Some((key, addr)) => {
            overlay::client::fetch_directory(addr, key, &overlay::ClientConfig::default())
                .await
                .map_err(|err| anyhow!("bootstrap node {addr} did not give its directory: {err}"))
        }
        None => load_directory(&[e.to_string()]),
    }
}

/// Reads the verified descriptors named by `entries` (see [`resolve_entry`]); any failure is an
/// error that names the entry.
pub async fn resolve_directory(entries: &[String]) -> Result<Vec<Descriptor>> {
    let mut out: Vec<Descriptor> = Vec::new();
    for e in entries {
        for d in resolve_entry(e).await? {
            if !out.iter().any(|o| o.id == d.id) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// Like [`resolve_directory`], but skips entries that cannot be read or reached yet.
pub async fn resolve_directory_lenient(entries: &[String]) -> (Vec<Descriptor>, Vec<String>) {
    let mut out: Vec<Descriptor> = Vec::new();
    let mut missing = Vec::new();
    for e in entries {
        match resolve_entry(e).await {
            Ok(ds) => {
                for d in ds {
                    if !out.iter().any(|o| o.id == d.id) {
                        out.push(d);
                    }
                }
            }
            Err(_) => missing.push(e.clone()),
        }
    }
    (out, missing)
}

/// Like [`load_directory`], but skips entries that cannot be read yet (a node started before its
/// peers waits for their descriptor files); returns the descriptors and the skipped entries.
pub fn load_directory_lenient(entries: &[String]) -> (Vec<Descriptor>, Vec<String>) {
    let mut out: Vec<Descriptor> = Vec::new();
    let mut missing = Vec::new();
    for e in entries {
        match load_directory(std::slice::from_ref(e)) {
            Ok(ds) => {
                for d in ds {
                    if !out.iter().any(|o| o.id == d.id) {
                        out.push(d);
                    }
                }
            }
            Err(_) => missing.push(e.clone()),
        }
    }
    (out, missing)
}

fn ncfg_lifetime(cfg: &Config) -> std::time::Duration {
    std::time::Duration::from_secs(cfg.network.descriptor_lifetime_secs.max(4))
}

/// Writes `d` to `path` (hex, one line) atomically: readers see the old file or the new one.
fn write_descriptor_file(path: &std::path::Path, d: &overlay::Descriptor) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", hex::encode(d.encode())))?;
    std::fs::rename(&tmp, path)
}

/// Rewrites the descriptor file each time the node re-signs its descriptor, so that nodes
/// bootstrapping from the file never read an expired one.
fn spawn_descriptor_file_upkeep(node: overlay::Node, path: PathBuf, lifetime: std::time::Duration) {
    let every = (lifetime / 8).clamp(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(60),
    );
    tokio::spawn(async move {
        let mut written = node.descriptor().expires;
        loop {
            tokio::time::sleep(every).await;
            let d = node.descriptor();
            if d.expires != written {
                match write_descriptor_file(&path, &d) {
                    Ok(()) => written = d.expires,
                    Err(e) => tracing::warn!("cannot rewrite {}: {e}", path.display()),
                }
            }
        }
    });
}

/// How often bootstrap descriptors are read again.
const DIRECTORY_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps the directory current: reads the bootstrap entries again every few seconds and, when the
/// set of descriptors changed, gives it to the node's clients (and to its DHT routing table).
fn spawn_directory_refresh(cfg: &Config, core: Arc<NodeCore>, node: Option<overlay::Node>) {
    let entries = cfg.network.bootstrap.clone();
    if entries.is_empty() && node.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut known: Vec<([u8; 32], u64)> = Vec::new();
        let mut warned = false;
        loop {
            let (mut ds, missing) = resolve_directory_lenient(&entries).await;
            // a DHT node also knows the nodes that announced themselves to it
            if let Some(n) = &node {
                for d in n.dht_contacts() {
                    if !ds.iter().any(|o| o.id == d.id) {
                        ds.push(d);
                    }
                }
            }
            // a renewed descriptor (same id, later expiry) counts as a change
            let mut ids: Vec<([u8; 32], u64)> = ds.iter().map(|d| (d.id.0, d.expires)).collect();
            ids.sort();
            if ids != known {
                known = ids;
                for (_, c) in core.clients().all() {
                    c.set_directory(ds.clone());
                }
                if let Some(n) = &node {
                    let learned = n.dht_learn(&ds);
                    tracing::info!(descriptors = ds.len(), dht = learned, "directory updated");
                }
            }
            if !missing.is_empty() && !warned {
                warned = true;
                tracing::warn!(
                    "waiting for bootstrap descriptors that cannot be read yet: {}",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(DIRECTORY_REFRESH).await;
        }
    });
}

/// A DHT node's upkeep: publishes its own descriptor as a DHT record (at start, then every 30
/// minutes or a third of the descriptor's lifetime if shorter, so it is found by id and its
/// holders always have a valid one: the node re-signs it every quarter), and saves the routing table's
/// contacts to `cache` every minute so that a restart rejoins without the bootstrap files.
fn spawn_dht_upkeep(
    node: overlay::Node,
    core: Arc<NodeCore>,
    cache: PathBuf,
    lifetime: std::time::Duration,
) {
    // republished at least three times per lifetime (its holders then always have a valid one)
    let republish = (lifetime / 3).min(std::time::Duration::from_secs(30 * 60));
    let n2 = node.clone();
    tokio::spawn(async move {
        loop {
            let contacts = n2.dht_contacts();
            if !contacts.is_empty() {
                let text: String = contacts
                    .iter()
                    .map(|d| format!("{}\n", hex::encode(d.encode())))
                    .collect();
                let tmp = cache.with_extension("tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &cache);
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    });
    tokio::spawn(async move {
        // let the directory fill first
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        loop {
            let client = (**core.clients().get(1)).clone();
            let seeds = super::hidden::dht_seeds(&client.directory());
            let wait = if seeds.is_empty() {
                std::time::Duration::from_secs(10)
            } else {
                let dht = overlay::dht_client::DhtClient::new(Arc::new(client), 1);
                let stored = dht.store(node.descriptor_record(), seeds).await;
                tracing::info!(
                    stored_at = stored,
                    "descriptor published in the overlay DHT"
                );
                if stored == 0 {
                    std::time::Duration::from_secs(10)
                } else {
                    republish
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}

fn exit_policy(cfg: &Config) -> Result<ExitPolicy> {
    let mut p = ExitPolicy::default();
    if !cfg.exit_policy.allow_ports.is_empty() {
        p.accept_ports = cfg
            .exit_policy
            .allow_ports
            .iter()
            .map(|r| crate::config::parse_port_range(r).map_err(|e| anyhow!("exit policy: {e}")))
            .collect::<Result<_>>()?;
    }
    Ok(p)
}

pub(super) fn data_dir(cfg: &Config) -> Result<PathBuf> {
    cfg.data_dir
        .clone()
        .ok_or_else(|| anyhow!("no data directory: set --data-dir or XDG_DATA_HOME"))
}

/// Circuit settings: entry guards kept in `<data-dir>/guards` (in memory without a data dir).
fn client_config(cfg: &Config) -> Result<overlay::ClientConfig> {
    let mut c = overlay::ClientConfig::default();
    if let Some(data) = &cfg.data_dir {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let file = data.join("guards");
        let guards = overlay::Guards::load(&file, overlay::GuardConfig::default())
            .map_err(|e| anyhow!("{e} (delete the file to choose new entry guards)"))?;
        c.guards = Some(guards);
    }
    Ok(c)
}

pub(super) fn core_for(
    cfg: &Config,
    directory: Vec<Descriptor>,
    node_id: String,
) -> Result<NodeCore> {
    let mut clients = Clients::new(client_config(cfg)?, directory);
    clients.set_exit_providers(super::via::exit_providers(cfg, &clients)?);
    let data = data_dir(cfg)?;
    let download = cfg
        .download_dir
        .clone()
        .unwrap_or_else(|| data.join("downloads"));
    Ok(NodeCore::new(
        node_id,
        clients,
        SessionConfig {
            // [rate_limits] upload caps seeding (piece data sent to peers)
            upload_rate: cfg.rate_limits.upload,
            // validated with the config
            mainline_dht: cfg.mainline_dht.nodes().unwrap_or_default(),
            ..SessionConfig::default()
        },
        data,
        download,
        cfg.hops,
    ))
}

/// Serves the control socket in the background; a failure to bind is a warning, not fatal.
pub(super) fn serve_socket(cfg: &Config, core: Arc<NodeCore>, out: &mut dyn Write) {
    let Some(path) = cfg.socket.clone() else {
        return;
    };
    match crate::control::server::ControlListener::bind(&path) {
        Ok(l) => {
            let stop = core.shutdown_signal();
            tokio::spawn(async move {
                l.serve(core, async move { stop.notified().await }).await;
            });
            let _ = writeln!(out, "control socket {}", path.display());
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "no control socket ({e}); `warren dash` cannot attach to this run"
            );
        }
    }
}

/// `warren node`: runs a relay and/or exit until Ctrl-C or a `shutdown` command.
pub async fn node(
    cfg: &Config,
    relay: bool,
    exit: bool,
    dht: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let data = data_dir(cfg)?;
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let id_path = data.join("identity.key");
    let identity = Identity::load_or_create(&id_path)
        .map_err(|e| anyhow!("identity {}: {e}", id_path.display()))?;
    // role flags on the command line decide; without any, the config's [roles] do
    let (relay, exit, dht) = if relay || exit || dht {
        (relay, exit, dht)
    } else {
        (cfg.roles.relay, cfg.roles.exit, cfg.roles.dht)
    };
    // nobody can dial an unspecified address: such a node only uses the network
    let published = cfg.network.advertise.unwrap_or(cfg.network.listen);
    let undialable = published.ip().is_unspecified();
    let (relay, exit, dht) = if undialable && (relay || exit || dht) {
        writeln!(
            out,
            "warning: {published} is not an address others can dial, so this node acts as a \
             client only (no relay, exit or DHT service, no descriptor published); give the \
             address it is reached at with --advertise HOST:PORT (config network.advertise), or \
             --listen on that address"
        )?;
        (false, false, false)
    } else {
        (relay, exit, dht)
    };
    let mut roles = 0;
    if relay || exit {
        // every relay can also be an introduction point
        roles |= ROLE_RELAY | overlay::descriptor::ROLE_INTRO;
    }
    if exit {
        roles |= ROLE_EXIT;
    }
    if dht {
        roles |= overlay::descriptor::ROLE_DHT;
    }
    let mut ncfg = overlay::NodeConfig::new(identity, cfg.network.listen, roles);
    ncfg.advertise = cfg.network.advertise;
    ncfg.exit_policy = exit_policy(cfg)?;
    ncfg.allow_private_exit = cfg.exit_policy.allow_private;
    // [rate_limits] relay / exit: bytes per second, 0 = no cap
    ncfg.relay_rate = Some(cfg.rate_limits.relay).filter(|r| *r > 0);
    ncfg.exit_rate = Some(cfg.rate_limits.exit).filter(|r| *r > 0);
    ncfg.descriptor_lifetime =
        std::time::Duration::from_secs(cfg.network.descriptor_lifetime_secs.max(4));
    // [roles] queue_mib: the out-of-memory killer's threshold (at least 16 MiB: a few windows)
    ncfg.limits.max_queued_bytes = (cfg.roles.queue_mib.max(16) as usize) << 20;
    let node = overlay::Node::start(ncfg)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.network.listen))?;
    // what others dial: the descriptor's address (advertised, or the listener's own)
    let boot_line = format!(
        "{}@{}",
        hex::encode(node.descriptor().x25519),
        node.descriptor().addr
    );
    let desc_path = data.join("descriptor");
    if undialable {
        // nothing to publish: an old descriptor file would point others at a dead address
        let _ = std::fs::remove_file(&desc_path);
        let _ = std::fs::remove_file(data.join("bootstrap"));
    } else {
        let boot_path = data.join("bootstrap");
        std::fs::write(&boot_path, format!("{boot_line}\n"))
            .with_context(|| format!("cannot write {}", boot_path.display()))?;
        write_descriptor_file(&desc_path, &node.descriptor())
            .with_context(|| format!("cannot write {}", desc_path.display()))?;
        spawn_descriptor_file_upkeep(node.clone(), desc_path.clone(), ncfg_lifetime(cfg));
    }
    if undialable {
        writeln!(
            out,
            "node {} listening on {} (client only; not published)",
            node.id().short(),
            node.addr()
        )?;
    } else {
        writeln!(
            out,
            "node {} listening on {} ({}{}{}); descriptor in {}",
            node.id().short(),
            node.addr(),
            if roles & ROLE_RELAY != 0 {
                "relay"
            } else {
                "client only"
            },
            if roles & ROLE_EXIT != 0 {
                " + exit"
            } else {
                ""
            },
            if dht { " + dht" } else { "" },
            desc_path.display()
        )?;
        writeln!(
            out,
            "others bootstrap from this node with: --bootstrap {boot_line}"
        )?;
    }
    out.flush()?;
    // a node may start before its peers: entries that cannot be read yet are read again later
    let (directory, missing) = resolve_directory_lenient(&cfg.network.bootstrap).await;
    if cfg.network.bootstrap.is_empty() {
        writeln!(
            out,
            "this node knows no other node (no --bootstrap): it relays for clients that know it, \
             but cannot build circuits or reach the DHT itself"
        )?;
    } else if !missing.is_empty() {
        writeln!(
            out,
            "bootstrap: {} descriptors read, waiting for {}",
            directory.len(),
            missing.join(", ")
        )?;
    }
    if dht {
        let n = node.dht_learn(&directory);
        writeln!(
            out,
            "DHT routing table seeded with {n} DHT nodes from the bootstrap descriptors"
        )?;
    }
    // the DHT contacts this node knew when it last ran
    let cache = data.join("dht-cache");
    let mut directory = directory;
    if dht {
        let (cached, _) = load_directory_lenient(&[cache.display().to_string()]);
        let n = node.dht_learn(&cached);
        if n > 0 {
            writeln!(
                out,
                "DHT routing table: {n} nodes from the cache of the last run"
            )?;
        }
        for d in cached {
            if !directory.iter().any(|o| o.id == d.id) {
                directory.push(d);
            }
        }
    }
    let probe_node = node.clone();
    let core = Arc::new(
        core_for(cfg, directory, node.id().short())?
            .with_saved_transfers()
            // `warren status` and the dashboard show this node's relaying and DHT table
            .with_network_probe(Box::new(move || vec![probe_node.status()])),
    );
    spawn_directory_refresh(cfg, core.clone(), Some(node.clone()));
    if dht {
        spawn_dht_upkeep(node.clone(), core.clone(), cache, ncfg_lifetime(cfg));
    }
    // the transfers added to this node before it stopped (or was killed)
    let restored = core.restore_saved().await;
    if restored > 0 {
        writeln!(
            out,
            "resumed {restored} transfer(s) of the last run (verified pieces kept)"
        )?;
    }
    serve_socket(cfg, core.clone(), out);
    out.flush()?;
    let stop = core.shutdown_signal();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stop.notified() => {}
    }
    node.shutdown();
    core.shutdown_all();
    Ok(())
}

/// `warren get`: downloads one magnet link through the overlay and exits 0 once it is complete
/// and verified.
pub async fn get(
    cfg: &Config,
    magnet: &str,
    hops: Option<u8>,
    dir: Option<PathBuf>,
    tui: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    // a malformed link is refused before anything touches the network
    share::magnet::Magnet::parse(magnet).map_err(|e| anyhow!("bad magnet link: {e}"))?;
    if cfg.network.bootstrap.is_empty() && super::via::needs_overlay(cfg) {
        bail!(
            "no overlay to reach: give descriptor files of running nodes with --bootstrap FILE \
             (or `bootstrap` in the config); `warren demo` runs a whole network in-process"
        );
    }
    let directory = resolve_directory(&cfg.network.bootstrap).await?;
    if super::via::needs_overlay(cfg)
        && !directory
            .iter()
            .any(|d| d.roles & (ROLE_EXIT | overlay::descriptor::ROLE_DHT) != 0)
    {
        bail!(
            "none of the {} bootstrap nodes is an exit or a DHT node: nothing can reach the swarm",
            directory.len()
        );
    }
    let core = Arc::new(core_for(cfg, directory, "client".into())?);
    spawn_directory_refresh(cfg, core.clone(), None);
    serve_socket(cfg, core.clone(), out);
    let (_id, handle) = core
        .add_magnet(magnet, dir, hops)
        .await
        .map_err(|e| anyhow!("{}", e.0))?;
    if tui {
        let (mut ctl, rx) = channel();
        tokio::spawn(serve_channel(core.clone(), rx));
        tokio::task::spawn_blocking(move || crate::dash::run(&mut ctl))
            .await?
            .context("dashboard failed")?;
        let s = handle.status();
        if !matches!(s.state, share::session::TorrentState::Seeding) {
            core.shutdown_all();
            bail!(
                "stopped before the download completed ({} of {:?} bytes)",
                s.have_bytes,
                s.total_bytes
            );
        }
    } else {
        super::core::plain_progress(&core, &handle, out).await?;
    }
    writeln!(out, "complete and verified: {}", handle.status().name)?;
    core.shutdown_all();
    Ok(())
}

/// `warren seed PATH`: seeds PATH as a hidden seeder until Ctrl-C (or `q` in the dashboard).
pub async fn seed(
    cfg: &Config,
    path: &Path,
    hops: Option<u8>,
    tui: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    if !path.exists() {
        bail!("nothing to seed: {} does not exist", path.display());
    }
    if cfg.network.bootstrap.is_empty() {
        bail!(
            "no overlay to seed into: give descriptor files of running nodes with --bootstrap FILE \
             (or `bootstrap` in the config); `warren demo` runs a whole network in-process"
        );
    }
    let directory = resolve_directory(&cfg.network.bootstrap).await?;
    if !directory
        .iter()
        .any(|d| d.roles & overlay::descriptor::ROLE_DHT != 0)
    {
        bail!(
            "none of the {} bootstrap nodes is a DHT node: the swarm record could not be published",
            directory.len()
        );
    }
    let core = Arc::new(core_for(cfg, directory, "seeder".into())?);
    spawn_directory_refresh(cfg, core.clone(), None);
    serve_socket(cfg, core.clone(), out);
    writeln!(out, "hashing {} ...", path.display())?;
    out.flush()?;
    let (id, handle, magnet) = core
        .seed_path(path, hops)
        .await
        .map_err(|e| anyhow!("{}", e.0))?;
    writeln!(
        out,
        "seeding {} as a hidden seeder ({} introduction points); magnet link:\n{magnet}",
        handle.status().name,
        core.snapshot_now()
            .circuits
            .iter()
            .filter(|c| c.purpose == crate::status::CircuitPurpose::Intro)
            .count(),
    )?;
    out.flush()?;
    if tui {
        let (mut ctl, rx) = channel();
        tokio::spawn(serve_channel(core.clone(), rx));
        tokio::task::spawn_blocking(move || crate::dash::run(&mut ctl))
            .await?
            .context("dashboard failed")?;
    } else {
        let stop = core.shutdown_signal();
        let mut rep = crate::dash::plain::PlainReporter::new();
        let mut announced = false;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = stop.notified() => break,
                _ = tokio::time::sleep(super::core::REPORT_EVERY) => {
                    if !announced && core.published(id).unwrap_or(0) > 0 {
                        announced = true;
                        writeln!(out, "swarm record published in the overlay DHT")?;
                    }
                    rep.report(out, &core.snapshot_now())?;
                }
            }
        }
    }
    core.shutdown_all();
    Ok(())
}

/// Where the system tunnel's undo record lives: in a root-owned directory (`/run/warren`), never
/// in the user's data directory, whose owner could otherwise plant a record that `--system down`
/// (run as root) would act on. One record per data directory (by a hash of its path), so test
/// networks in separate namespaces do not share one.
pub fn system_state_file(cfg: &Config) -> Result<PathBuf> {
    let data = data_dir(cfg)?;
    // FNV-1a: stable across builds and platforms (unlike std's hasher)
    let tag = data
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    Ok(PathBuf::from(SYSTEM_STATE_DIR).join(format!("system-tunnel-{tag:016x}.json")))
}

/// The root-owned directory of system tunnel records.
pub const SYSTEM_STATE_DIR: &str = "/run/warren";

/// Creates [`SYSTEM_STATE_DIR`] (0700) and refuses it unless it is a directory owned by this
/// (root) user that nobody else may write.
fn secure_state_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let m =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        bail!(
            "{} must be a directory owned by uid {me} that only it can write (it is uid {}, mode {:o})",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        );
    }
    Ok(())
}

/// `warren tunnel --system up`: routes the whole host through the tunnel until interrupted. The
/// kill switch stays after this process ends, however it ends, until `--system down`.
pub async fn system_up(cfg: &Config, hops: Option<u8>, out: &mut (dyn Write + Send)) -> Result<()> {
    if cfg.via != crate::cli::Via::Overlay {
        // arti's own connections to Tor relays carry no bypass mark: the kill switch would catch them
        bail!("the system-wide tunnel supports only --via overlay for now (Tor's own links would be caught by the kill switch); use `warren tunnel --via tor -- CMD`");
    }
    if cfg.network.bootstrap.is_empty() && super::via::needs_overlay(cfg) {
        bail!("no overlay to reach: give descriptor files of running nodes with --bootstrap FILE");
    }
    let directory = resolve_directory(&cfg.network.bootstrap).await?;
    let state_file = system_state_file(cfg)?;
    if let Some(dir) = state_file.parent() {
        secure_state_dir(dir)?;
    }
    // warren's own links carry the mark that lets them bypass the tunnel
    let mut ccfg = client_config(cfg)?;
    ccfg.link_mark = Some(::tunnel::system::FWMARK);
    let mut clients = Clients::new(ccfg, directory);
    clients.set_exit_providers(super::via::exit_providers(cfg, &clients)?);
    let provider = clients.exit_provider(hops.unwrap_or(cfg.hops)).clone();
    let sys = ::tunnel::system::SystemTunnel::up(
        provider,
        ::tunnel::system::SystemConfig {
            tunnel: ::tunnel::runtime::TunnelConfig::default(),
            state_file: state_file.clone(),
            resolv_path: PathBuf::from("/etc/resolv.conf"),
        },
    )
    .map_err(|e| anyhow!("system tunnel: {e}"))?;
    writeln!(
        out,
        "system tunnel up on {}: all traffic of this host goes through the overlay; \
         the kill switch stays until `warren tunnel --system down`",
        sys.tun_name()
    )?;
    out.flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(sys);
    writeln!(
        out,
        "tunnel stopped; this host stays cut off (fail closed) until `warren tunnel --system down`"
    )?;
    Ok(())
}

/// `warren tunnel --system down`: restores exactly what `up` changed.
pub fn system_down(cfg: &Config, out: &mut dyn Write) -> Result<()> {
    let state_file = system_state_file(cfg)?;
    if let Some(dir) = state_file.parent().filter(|d| d.exists()) {
        secure_state_dir(dir)?;
    }
    if !state_file.exists() {
        writeln!(out, "no system tunnel is up (no {})", state_file.display())?;
        return Ok(());
    }
    ::tunnel::system::system_down(&state_file).map_err(|e| anyhow!("system tunnel down: {e}"))?;
    writeln!(
        out,
        "system tunnel down: routes, rules, firewall and resolv.conf restored"
    )?;
    Ok(())
}

#[cfg(test)]
mod system_state_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_system_tunnel_record_is_in_a_root_owned_directory_not_the_data_dir() {
        let a = Config {
            data_dir: Some(PathBuf::from("/home/someone/.local/share/warren")),
            ..Config::default()
        };
        let mut b = a.clone();
        b.data_dir = Some(PathBuf::from("/tmp/other"));
        let (fa, fb) = (
            system_state_file(&a).unwrap(),
            system_state_file(&b).unwrap(),
        );
        assert!(fa.starts_with(SYSTEM_STATE_DIR), "{}", fa.display());
        assert_ne!(fa, fb);
        assert_eq!(fa, system_state_file(&a).unwrap(), "stable");
        // a directory others may write is refused
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("state");
        secure_state_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = secure_state_dir(&d).unwrap_err().to_string();
        assert!(e.contains("only it can write"), "{e}");
    }
}

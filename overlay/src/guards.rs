//! Entry guards: the first hop of a client's multi-hop circuits is one of a few relays kept for
//! months, not a fresh random relay per circuit.
//!
//! Why: an adversary who runs some relays sees the client's address whenever one of them is a
//! circuit's first hop, and can then try to match that circuit's timing at an exit or DHT node it
//! also runs. With a fresh first hop per circuit, every client meets such a relay sooner or later
//! (after ~1/f circuits for a fraction f of relays); with a guard, a client whose guard is honest
//! is never seen at all.
//!
//! The rules follow Tor's guard specification (guard-spec.txt), simplified where warren has no
//! consensus flags yet ([`GuardSet`], sans-IO: the caller passes the time and the directory):
//! * **A bounded sample.** The client keeps an ordered list of at most [`SAMPLE_MAX`] relays
//!   (guard-spec's `SAMPLED_GUARDS`, max_sample_size 20 in arti). A relay joins it only when no
//!   sampled guard can serve, and never beyond [`SAMPLE_MAX`]: when every sampled guard is down,
//!   a circuit fails with [`GuardError::AllDown`] until one is back. It never gets a random first
//!   hop. However many failures someone provokes, the client's first hop is one of at most 20
//!   relays, chosen once.
//! * **Primary guards.** The first [`N_PRIMARY`] sampled guards the directory lists as relays are
//!   the primaries. A circuit uses the first of them that is up and is not the circuit's last
//!   hop; the other sampled guards serve only when every primary is down or excluded, and the
//!   first primary is used again as soon as it answers. (Tor also keeps a "confirmed" order of
//!   guards it has used; here the sample's own order plays that role, since a guard only joins the
//!   sample when it is needed.)
//! * **Only the guard's own link marks it down.** A guard whose link cannot be opened is down for a
//!   backoff (30 s, doubling, at most 10 min). A build that fails after the link opened (at the
//!   guard's CREATE or at any hop past it) never counts against the guard: anyone can make builds
//!   fail past the guard (an introduction naming an unreachable rendezvous point, a dead DHT
//!   contact), and must not be able to rotate a client onto another guard by doing so.
//! * **Path bias** (Tor's path-spec §7, proposal 209): each guard counts the circuits attempted
//!   through it (its link opened) and the ones built; a built circuit later destroyed for a bad
//!   cell counts as failed. Once [`PATH_BIAS_MIN_CIRCS`] were attempted, a guard through which fewer
//!   than [`PATH_BIAS_WARN_PERCENT`] % succeed is flagged: the client warns (log, `warren status`,
//!   the dashboard) and keeps the guard. A silent switch would let a relay elsewhere on paths, by
//!   failing circuits, push clients towards guards it prefers. Counts are halved at
//!   [`PATH_BIAS_SCALE_AT`] attempts so that recent behaviour weighs more.
//! * A guard is replaced after [`GuardConfig::lifetime`] (default 60 days), so that a client does
//!   not stay forever with a guard chosen when the network was small. A guard the directory no
//!   longer lists is kept (it may come back) but is the first to leave when the sample is full.
//! * 1-hop circuits have no guard: their only hop is the exit (or DHT node, introduction point)
//!   itself; choosing one hop is choosing speed over this protection.
//!
//! The sample (ids, when each was chosen, path-bias counts) is kept in a small file so that
//! restarts do not pick new guards; down marks are not kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rand::seq::SliceRandom;

use crate::descriptor::Descriptor;
use crate::identity::NodeId;

/// At most this many guards are sampled (guard-spec: max_sample_size).
pub const SAMPLE_MAX: usize = 20;
/// The first this many listed sampled guards are the primary guards.
pub const N_PRIMARY: usize = 3;
/// First backoff after a guard's link failed.
pub const RETRY_FIRST_SECS: u64 = 30;
/// Longest backoff.
pub const RETRY_MAX_SECS: u64 = 600;
/// Circuits attempted through a guard before its success rate is judged.
pub const PATH_BIAS_MIN_CIRCS: u32 = 20;
/// A guard through which fewer than this share (percent) of circuits succeed is flagged.
pub const PATH_BIAS_WARN_PERCENT: u32 = 50;
/// Path-bias counts are halved when the attempts reach this.
pub const PATH_BIAS_SCALE_AT: u32 = 300;

/// How guards are chosen and kept.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// Seconds a guard is kept before it is replaced.
    pub lifetime: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            lifetime: 60 * 24 * 3600,
        }
    }
}

/// Why no guard could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Every sampled guard that could serve is down and the sample is full.
    #[error(
        "all {sampled} entry guards are unreachable; the first is retried in {retry_in} s \
         (new guards are not picked: that is what someone forcing failures would want)"
    )]
    AllDown { sampled: usize, retry_in: u64 },
    /// The directory has no relay that could be a guard for this circuit.
    #[error("no relay in the directory can be an entry guard for this circuit")]
    NoRelay,
}

/// A guard's path-bias counts (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathBias {
    /// Circuits whose build started through the guard (its link open).
    pub attempts: u32,
    /// Of those, circuits that were built and not destroyed for a bad cell.
    pub succeeded: u32,
}

impl PathBias {
    /// Percent of attempts that succeeded (100 with no attempts).
    pub fn percent(&self) -> u32 {
        if self.attempts == 0 {
            100
        } else {
            (u64::from(self.succeeded) * 100 / u64::from(self.attempts)) as u32
        }
    }

    /// Whether enough circuits were attempted and too few succeeded.
    pub fn is_suspect(&self) -> bool {
        self.attempts >= PATH_BIAS_MIN_CIRCS && self.percent() < PATH_BIAS_WARN_PERCENT
    }

    fn scale(&mut self) {
        if self.attempts >= PATH_BIAS_SCALE_AT {
            self.attempts /= 2;
            self.succeeded /= 2;
        }
    }
}

/// What the dashboard and `warren status` show about one guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardStatus {
    pub id: NodeId,
    /// One of the primary guards (the first [`N_PRIMARY`] listed).
    pub primary: bool,
    /// In the directory as a relay.
    pub listed: bool,
    /// Seconds until it is tried again (0: up).
    pub down_for: u64,
    pub path_bias: PathBias,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Guard {
    id: NodeId,
    /// Unix seconds when it was chosen.
    added: u64,
    /// Link failures in a row.
    failures: u32,
    /// Unix seconds until which it is not used.
    down_until: u64,
    bias: PathBias,
    /// The path-bias warning was given (given again only after the rate recovered).
    warned: bool,
}

impl Guard {
    fn new(id: NodeId, added: u64) -> Guard {
        Guard {
            id,
            added,
            failures: 0,
            down_until: 0,
            bias: PathBias::default(),
            warned: false,
        }
    }
}

/// The guard sample (see the module docs). Pure state: no I/O, no clock.
#[derive(Clone, Debug, Default)]
pub struct GuardSet {
    cfg: GuardConfig,
    guards: Vec<Guard>,
}

/// An error reading a saved guard list.
#[derive(Debug, thiserror::Error)]
#[error("guard list {path}: {reason}")]
pub struct GuardFileError {
    pub path: String,
    pub reason: String,
}

fn listed(directory: &[Descriptor], id: &NodeId) -> bool {
    directory.iter().any(|d| d.id == *id && d.is_relay())
}

impl GuardSet {
    pub fn new(cfg: GuardConfig) -> GuardSet {
        GuardSet {
            cfg,
            guards: Vec::new(),
        }
    }

    /// The sampled guards in order of preference.
    pub fn ids(&self) -> Vec<NodeId> {
        self.guards.iter().map(|g| g.id).collect()
    }

    /// The primary guards: the first [`N_PRIMARY`] sampled guards `directory` lists.
    pub fn primary(&self, directory: &[Descriptor]) -> Vec<NodeId> {
        self.guards
            .iter()
            .filter(|g| listed(directory, &g.id))
            .take(N_PRIMARY)
            .map(|g| g.id)
            .collect()
    }

    /// Each sampled guard, in order, as the dashboard shows it.
    pub fn status(&self, directory: &[Descriptor], now: u64) -> Vec<GuardStatus> {
        let primary = self.primary(directory);
        self.guards
            .iter()
            .map(|g| GuardStatus {
                id: g.id,
                primary: primary.contains(&g.id),
                listed: listed(directory, &g.id),
                down_for: g.down_until.saturating_sub(now),
                path_bias: g.bias,
            })
            .collect()
    }

    /// The first hop for a circuit that must not use the nodes in `exclude` (its other hops):
    /// the first listed sampled guard that is up, adding one from `directory` only when none is
    /// and the sample has room. Returns the guard's descriptor and whether the sample changed
    /// (then it is worth saving).
    pub fn pick(
        &mut self,
        directory: &[Descriptor],
        exclude: &[NodeId],
        now: u64,
        rng: &mut impl rand::Rng,
    ) -> Result<(Descriptor, bool), GuardError> {
        let before = self.guards.len();
        let lifetime = self.cfg.lifetime;
        self.guards
            .retain(|g| g.added.saturating_add(lifetime) > now && g.added <= now + 86_400);
        let changed = self.guards.len() != before;
        let found = self
            .guards
            .iter()
            .find(|g| g.down_until <= now && !exclude.contains(&g.id) && listed(directory, &g.id));
        if let Some(g) = found {
            let d = directory.iter().find(|d| d.id == g.id && d.is_relay());
            return d.cloned().map(|d| (d, changed)).ok_or(GuardError::NoRelay);
        }
        if self.guards.len() >= SAMPLE_MAX {
            // room only by dropping a guard the directory no longer lists (never a down one:
            // down is what an attacker can cause, unlisted is what the directory says)
            match self.guards.iter().position(|g| !listed(directory, &g.id)) {
                Some(i) => {
                    self.guards.remove(i);
                }
                None => {
                    let retry_in = self
                        .guards
                        .iter()
                        .filter(|g| !exclude.contains(&g.id))
                        .map(|g| g.down_until.saturating_sub(now))
                        .min()
                        .unwrap_or(0);
                    return Err(GuardError::AllDown {
                        sampled: self.guards.len(),
                        retry_in,
                    });
                }
            }
        }
        let known = self.ids();
        let candidates: Vec<&Descriptor> = directory
            .iter()
            .filter(|d| d.is_relay() && !exclude.contains(&d.id) && !known.contains(&d.id))
            .collect();
        let new = (*candidates.choose(rng).ok_or(GuardError::NoRelay)?).clone();
        self.guards.push(Guard::new(new.id, now));
        Ok((new, true))
    }

    /// The link to guard `id` could not be opened: it is down for a while.
    pub fn failed(&mut self, id: &NodeId, now: u64) {
        if let Some(g) = self.guards.iter_mut().find(|g| g.id == *id) {
            g.failures = g.failures.saturating_add(1);
            let backoff = RETRY_FIRST_SECS
                .saturating_mul(1u64 << (g.failures - 1).min(10))
                .min(RETRY_MAX_SECS);
            g.down_until = now + backoff;
        }
    }

    /// The link to guard `id` opened: it is up again.
    pub fn succeeded(&mut self, id: &NodeId) {
        if let Some(g) = self.guards.iter_mut().find(|g| g.id == *id) {
            g.failures = 0;
            g.down_until = 0;
        }
    }

    /// A circuit build through guard `id` (whose link opened) ended: built (`ok`) or failed
    /// anywhere on the path. Only path bias changes. Returns the guard's counts when this made it
    /// suspect (time for the one warning).
    pub fn built(&mut self, id: &NodeId, ok: bool) -> Option<PathBias> {
        let g = self.guards.iter_mut().find(|g| g.id == *id)?;
        g.bias.attempts = g.bias.attempts.saturating_add(1);
        if ok {
            g.bias.succeeded = g.bias.succeeded.saturating_add(1);
        }
        g.bias.scale();
        Self::judge(g)
    }

    /// A circuit through guard `id` that was built was destroyed for a bad cell (one no hop
    /// recognised, or a message from a hop not entitled to send it): it counts as failed.
    pub fn misbehaved(&mut self, id: &NodeId) -> Option<PathBias> {
        let g = self.guards.iter_mut().find(|g| g.id == *id)?;
        g.bias.succeeded = g.bias.succeeded.saturating_sub(1);
        Self::judge(g)
    }

    fn judge(g: &mut Guard) -> Option<PathBias> {
        let suspect = g.bias.is_suspect();
        let warn_now = suspect && !g.warned;
        g.warned = suspect;
        warn_now.then_some(g.bias)
    }

    /// One line per guard: `<64 hex id> <unix seconds chosen> <attempts> <succeeded>`.
    pub fn encode(&self) -> String {
        let mut s = String::from(
            "# warren entry guards: node id, unix time chosen, circuits attempted, succeeded\n",
        );
        for g in &self.guards {
            s.push_str(&format!(
                "{} {} {} {}\n",
                hex::encode(g.id.0),
                g.added,
                g.bias.attempts,
                g.bias.succeeded
            ));
        }
        s
    }

    /// Reads [`GuardSet::encode`]'s format (the two counts are optional: older files lack them);
    /// names the line that is wrong.
    pub fn decode(cfg: GuardConfig, text: &str) -> Result<GuardSet, String> {
        let mut set = GuardSet::new(cfg);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (id, added, counts) = match parts.as_slice() {
                [id, added] => (*id, *added, None),
                [id, added, a, s] => (*id, *added, Some((*a, *s))),
                _ => {
                    return Err(bad(
                        "expected `<node id hex> <unix seconds> [<attempts> <succeeded>]`",
                    ))
                }
            };
            let raw = hex::decode(id).map_err(|_| bad("node id is not hex"))?;
            let id: [u8; 32] = raw.try_into().map_err(|_| bad("node id is not 32 bytes"))?;
            let added: u64 = added.parse().map_err(|_| bad("time is not a number"))?;
            let mut g = Guard::new(NodeId(id), added);
            if let Some((a, s)) = counts {
                let num = |v: &str| v.parse::<u32>().map_err(|_| bad("count is not a number"));
                g.bias.attempts = num(a)?;
                g.bias.succeeded = num(s)?.min(g.bias.attempts);
            }
            if set.guards.len() < SAMPLE_MAX && !set.guards.iter().any(|x| x.id.0 == id) {
                set.guards.push(g);
            }
        }
        Ok(set)
    }
}

/// A [`GuardSet`] shared by every client of a process (all hop counts use the same guards), kept
/// in a file when it has one. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Guards {
    set: Arc<Mutex<GuardSet>>,
    file: Option<PathBuf>,
    /// The list changed since it was last saved.
    unsaved: Arc<AtomicBool>,
    /// Path-bias events since the counts were last marked for saving (they are saved every
    /// [`SAVE_BIAS_EVERY`] events, not once per circuit).
    bias_events: Arc<AtomicU32>,
}

/// Path-bias events between two saves of the counts.
const SAVE_BIAS_EVERY: u32 = 16;

impl Default for Guards {
    /// An in-memory guard list (in-process networks, tests).
    fn default() -> Self {
        Guards::with_set(GuardSet::new(GuardConfig::default()), None)
    }
}

impl Guards {
    /// The guard list kept in `file` (read now if it exists). A file that cannot be read is an
    /// error: it is not silently replaced by new guards.
    pub fn load(file: &Path, cfg: GuardConfig) -> Result<Guards, GuardFileError> {
        let err = |reason: String| GuardFileError {
            path: file.display().to_string(),
            reason,
        };
        let set = match std::fs::read_to_string(file) {
            Ok(text) => GuardSet::decode(cfg, &text).map_err(err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => GuardSet::new(cfg),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Guards::with_set(set, Some(file.to_path_buf())))
    }

    fn with_set(set: GuardSet, file: Option<PathBuf>) -> Guards {
        Guards {
            set: Arc::new(Mutex::new(set)),
            file,
            unsaved: Arc::new(AtomicBool::new(false)),
            bias_events: Arc::new(AtomicU32::new(0)),
        }
    }

    fn bias_event(&self, warning: Option<PathBias>, id: &NodeId) {
        if let Some(b) = warning {
            warn_suspect(id, b);
        }
        let n = self.bias_events.fetch_add(1, Ordering::Relaxed) + 1;
        if warning.is_some() || n.is_multiple_of(SAVE_BIAS_EVERY) {
            self.unsaved.store(true, Ordering::Relaxed);
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut GuardSet) -> T) -> T {
        let mut g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// See [`GuardSet::pick`]. A change is kept in memory until [`Guards::save_if_changed`] (the
    /// caller may hold locks here that file I/O should not be done under).
    pub fn pick(
        &self,
        directory: &[Descriptor],
        exclude: &[NodeId],
        now: u64,
    ) -> Result<Descriptor, GuardError> {
        let (d, changed) =
            self.with(|s| s.pick(directory, exclude, now, &mut rand::thread_rng()))?;
        if changed {
            self.unsaved.store(true, Ordering::Relaxed);
        }
        Ok(d)
    }

    pub fn failed(&self, id: &NodeId, now: u64) {
        self.with(|s| s.failed(id, now));
    }

    pub fn succeeded(&self, id: &NodeId) {
        self.with(|s| s.succeeded(id));
    }

    /// See [`GuardSet::built`]; warns once when the guard becomes suspect.
    pub fn built(&self, id: &NodeId, ok: bool) {
        let w = self.with(|s| s.built(id, ok));
        self.bias_event(w, id);
    }

    /// See [`GuardSet::misbehaved`]; warns once when the guard becomes suspect.
    pub fn misbehaved(&self, id: &NodeId) {
        let w = self.with(|s| s.misbehaved(id));
        self.bias_event(w, id);
    }

    /// The sampled guards in order of preference.
    pub fn ids(&self) -> Vec<NodeId> {
        self.with(|s| s.ids())
    }

    /// See [`GuardSet::status`].
    pub fn status(&self, directory: &[Descriptor], now: u64) -> Vec<GuardStatus> {
        self.with(|s| s.status(directory, now))
    }

    /// Writes the list to its file if it changed since the last save (temporary file + rename).
    pub fn save_if_changed(&self) {
        if !self.unsaved.swap(false, Ordering::Relaxed) {
            return;
        }
        let Some(file) = &self.file else { return };
        let text = self.with(|s| s.encode());
        let tmp = file.with_extension("tmp");
        let r = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = r {
            tracing::warn!(file = %file.display(), "cannot save the guard list: {e}");
        }
    }
}

fn warn_suspect(id: &NodeId, b: PathBias) {
    tracing::warn!(
        guard = %id.short(),
        "entry guard: only {}% of the last {} circuits through it succeeded; it may be dropping \
         circuits. It is kept (switching guards on failures is what an attacker would want); \
         see `warren status`",
        b.percent(),
        b.attempts
    );
}

#[cfg(test)]
mod tests;

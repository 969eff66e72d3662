//! Entry guards: the first hop of a client's multi-hop circuits is one of a few relays kept for
//! months, not a fresh random relay per circuit.
//!
//! Why: an adversary who runs some relays sees the client's address whenever one of them is a
//! circuit's first hop, and can then try to match that circuit's timing at an exit or DHT node it
//! also runs. With a fresh first hop per circuit, every client meets such a relay sooner or later
//! (after ~1/f circuits for a fraction f of relays); with a guard, a client whose guard is honest
//! is never seen at all. (The same reasoning as Tor's guards; warren keeps the rules simpler.)
//!
//! Rules ([`GuardSet`], sans-IO: the caller passes the time and the directory):
//! * The set is an ordered list; a circuit's first hop is the first guard that is in the
//!   directory as a relay, is not the circuit's last hop, and is not marked down.
//! * When none qualifies, a random relay from the directory joins the end of the list (the list
//!   holds at most [`MAX_GUARDS`]; beyond that the oldest guard that is not usable now leaves).
//! * A guard whose link cannot be opened is down for a backoff (30 s, doubling, at most 10 min);
//!   the next guard serves meanwhile, and the first one is used again once it answers. So is a
//!   guard through which [`BUILD_FAILURES_DOWN`] circuit builds in a row failed (it accepts links
//!   but extends nowhere: overloaded, broken, or steering clients away from itself): a guard that
//!   answers but carries nothing must not stall every circuit for its whole lifetime.
//! * A guard is replaced after [`GuardConfig::lifetime`] (default 60 days), so that a client does
//!   not stay forever with a guard chosen when the network was small.
//! * 1-hop circuits have no guard: their only hop is the exit (or DHT node, introduction point)
//!   itself; choosing one hop is choosing speed over this protection.
//!
//! The list (ids and when each was chosen) is kept in a small file so that restarts do not pick
//! new guards; down marks are not kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::seq::SliceRandom;

use crate::descriptor::Descriptor;
use crate::identity::NodeId;

/// At most this many guards are remembered.
pub const MAX_GUARDS: usize = 8;
/// First backoff after a guard failed to answer.
pub const RETRY_FIRST_SECS: u64 = 30;
/// Longest backoff.
pub const RETRY_MAX_SECS: u64 = 600;
/// Circuit builds in a row that failed through a guard whose link opened before it is down.
pub const BUILD_FAILURES_DOWN: u32 = 3;

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

#[derive(Clone, Debug, PartialEq, Eq)]
struct Guard {
    id: NodeId,
    /// Unix seconds when it was chosen.
    added: u64,
    failures: u32,
    /// Circuit builds through it that failed since the last one that worked.
    build_failures: u32,
    /// Unix seconds until which it is not used.
    down_until: u64,
}

/// The ordered guard list (see the module docs). Pure state: no I/O, no clock.
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

impl GuardSet {
    pub fn new(cfg: GuardConfig) -> GuardSet {
        GuardSet {
            cfg,
            guards: Vec::new(),
        }
    }

    /// The guards in order of preference.
    pub fn ids(&self) -> Vec<NodeId> {
        self.guards.iter().map(|g| g.id).collect()
    }

    fn usable(&self, g: &Guard, directory: &[Descriptor], exclude: &[NodeId], now: u64) -> bool {
        g.down_until <= now
            && !exclude.contains(&g.id)
            && directory.iter().any(|d| d.id == g.id && d.is_relay())
    }

    /// The first hop for a circuit that must not use the nodes in `exclude` (its other hops),
    /// adding a guard from `directory` when no remembered one qualifies. Returns the guard's
    /// descriptor and whether the list changed (then it is worth saving). None when the directory
    /// has no relay outside `exclude` that is not down.
    pub fn pick(
        &mut self,
        directory: &[Descriptor],
        exclude: &[NodeId],
        now: u64,
        rng: &mut impl rand::Rng,
    ) -> Option<(Descriptor, bool)> {
        let before = self.guards.len();
        let lifetime = self.cfg.lifetime;
        self.guards
            .retain(|g| g.added.saturating_add(lifetime) > now && g.added <= now + 86_400);
        let mut changed = self.guards.len() != before;
        let found = self
            .guards
            .iter()
            .find(|g| self.usable(g, directory, exclude, now))
            .map(|g| g.id);
        let id = match found {
            Some(id) => id,
            None => {
                let known: Vec<NodeId> = self.ids();
                let candidates: Vec<&Descriptor> = directory
                    .iter()
                    .filter(|d| d.is_relay() && !exclude.contains(&d.id) && !known.contains(&d.id))
                    .collect();
                let new = candidates.choose(rng)?.id;
                if self.guards.len() >= MAX_GUARDS {
                    // make room: the oldest guard not usable for this circuit
                    let drop_at = self
                        .guards
                        .iter()
                        .enumerate()
                        .filter(|(_, g)| !self.usable(g, directory, &[], now))
                        .min_by_key(|(_, g)| g.added)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    self.guards.remove(drop_at);
                }
                self.guards.push(Guard {
                    id: new,
                    added: now,
                    failures: 0,
                    build_failures: 0,
                    down_until: 0,
                });
                changed = true;
                new
            }
        };
        let d = directory.iter().find(|d| d.id == id)?.clone();
        Some((d, changed))
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

    /// A circuit through guard `id` was built (`ok`) or failed after its link opened.
    pub fn built(&mut self, id: &NodeId, ok: bool, now: u64) {
        let Some(g) = self.guards.iter_mut().find(|g| g.id == *id) else {
            return;
        };
        if ok {
            g.build_failures = 0;
            return;
        }
        g.build_failures += 1;
        if g.build_failures >= BUILD_FAILURES_DOWN {
            g.build_failures = 0;
            self.failed(id, now);
        }
    }

    /// One line per guard: `<64 hex id> <unix seconds chosen>`.
    pub fn encode(&self) -> String {
        let mut s = String::from("# warren entry guards: node id, unix time chosen\n");
        for g in &self.guards {
            s.push_str(&format!("{} {}\n", hex::encode(g.id.0), g.added));
        }
        s
    }

    /// Reads [`GuardSet::encode`]'s format; names the line that is wrong.
    pub fn decode(cfg: GuardConfig, text: &str) -> Result<GuardSet, String> {
        let mut set = GuardSet::new(cfg);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            let mut parts = line.split_whitespace();
            let (Some(id), Some(added), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `<node id hex> <unix seconds>`"));
            };
            let raw = hex::decode(id).map_err(|_| bad("node id is not hex"))?;
            let id: [u8; 32] = raw.try_into().map_err(|_| bad("node id is not 32 bytes"))?;
            let added: u64 = added.parse().map_err(|_| bad("time is not a number"))?;
            if set.guards.len() < MAX_GUARDS && !set.guards.iter().any(|g| g.id.0 == id) {
                set.guards.push(Guard {
                    id: NodeId(id),
                    added,
                    failures: 0,
                    build_failures: 0,
                    down_until: 0,
                });
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
}

impl Default for Guards {
    /// An in-memory guard list (in-process networks, tests).
    fn default() -> Self {
        Guards {
            set: Arc::new(Mutex::new(GuardSet::new(GuardConfig::default()))),
            file: None,
            unsaved: Arc::new(AtomicBool::new(false)),
        }
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
        Ok(Guards {
            set: Arc::new(Mutex::new(set)),
            file: Some(file.to_path_buf()),
            unsaved: Arc::new(AtomicBool::new(false)),
        })
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
    ) -> Option<Descriptor> {
        let (d, changed) =
            self.with(|s| s.pick(directory, exclude, now, &mut rand::thread_rng()))?;
        if changed {
            self.unsaved.store(true, Ordering::Relaxed);
        }
        Some(d)
    }

    pub fn failed(&self, id: &NodeId, now: u64) {
        self.with(|s| s.failed(id, now));
    }

    pub fn succeeded(&self, id: &NodeId) {
        self.with(|s| s.succeeded(id));
    }

    pub fn built(&self, id: &NodeId, ok: bool, now: u64) {
        self.with(|s| s.built(id, ok, now));
    }

    /// The guards in order of preference.
    pub fn ids(&self) -> Vec<NodeId> {
        self.with(|s| s.ids())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{unix_now, ROLE_EXIT, ROLE_RELAY};
    use crate::exit::ExitPolicy;
    use crate::identity::Identity;

    fn desc(roles: u8) -> Descriptor {
        Descriptor::new_signed(
            &Identity::generate(),
            "127.0.0.1:1".parse().unwrap(),
            roles,
            ExitPolicy::default(),
            unix_now() + 60,
        )
    }

    fn dir(n: usize) -> Vec<Descriptor> {
        (0..n).map(|_| desc(ROLE_RELAY)).collect()
    }

    #[test]
    fn keeps_one_guard_across_circuits() {
        let d = dir(10);
        let mut s = GuardSet::default();
        let mut rng = rand::thread_rng();
        let (g, changed) = s.pick(&d, &[], 1000, &mut rng).unwrap();
        assert!(changed);
        for _ in 0..50 {
            let (g2, changed) = s.pick(&d, &[], 1000, &mut rng).unwrap();
            assert_eq!(g2.id, g.id);
            assert!(!changed);
        }
        assert_eq!(s.ids(), vec![g.id]);
    }

    #[test]
    fn never_the_excluded_last_hop_and_falls_back_in_order() {
        let d = dir(10);
        let mut s = GuardSet::default();
        let mut rng = rand::thread_rng();
        let (g1, _) = s.pick(&d, &[], 1000, &mut rng).unwrap();
        // g1 is this circuit's exit: a second guard joins
        let (g2, changed) = s.pick(&d, &[g1.id], 1000, &mut rng).unwrap();
        assert!(changed && g2.id != g1.id);
        // the first guard is still preferred when it can be used
        assert_eq!(s.pick(&d, &[], 1000, &mut rng).unwrap().0.id, g1.id);
        // and the second is reused, not a third added, when the first is excluded again
        let (g, changed) = s.pick(&d, &[g1.id], 1000, &mut rng).unwrap();
        assert_eq!((g.id, changed), (g2.id, false));
    }

    #[test]
    fn a_down_guard_is_skipped_with_backoff_then_used_again() {
        let d = dir(10);
        let mut s = GuardSet::default();
        let mut rng = rand::thread_rng();
        let (g1, _) = s.pick(&d, &[], 1000, &mut rng).unwrap();
        s.failed(&g1.id, 1000);
        let (g2, _) = s.pick(&d, &[], 1001, &mut rng).unwrap();
        assert_ne!(g2.id, g1.id);
        // still down before 30 s, back after
        assert_eq!(s.pick(&d, &[], 1029, &mut rng).unwrap().0.id, g2.id);
        assert_eq!(s.pick(&d, &[], 1030, &mut rng).unwrap().0.id, g1.id);
        s.succeeded(&g1.id);
        // two failures in a row: the backoff doubles
        s.failed(&g1.id, 2000);
        s.failed(&g1.id, 2000);
        assert_eq!(s.pick(&d, &[], 2059, &mut rng).unwrap().0.id, g2.id);
        assert_eq!(s.pick(&d, &[], 2060, &mut rng).unwrap().0.id, g1.id);
        // success clears it
        s.failed(&g1.id, 3000);
        s.succeeded(&g1.id);
        assert_eq!(s.pick(&d, &[], 3000, &mut rng).unwrap().0.id, g1.id);
        assert_eq!(s.ids().len(), 2);
    }

    #[test]
    fn a_guard_that_opens_links_but_builds_nothing_is_put_down() {
        let d = dir(10);
        let mut s = GuardSet::default();
        let mut rng = rand::thread_rng();
        let (g1, _) = s.pick(&d, &[], 1000, &mut rng).unwrap();
        // failures elsewhere on the path, interleaved with successes, change nothing
        for _ in 0..10 {
            s.succeeded(&g1.id);
            s.built(&g1.id, false, 1000);
            s.built(&g1.id, false, 1000);
            s.built(&g1.id, true, 1000);
        }
        assert_eq!(s.pick(&d, &[], 1000, &mut rng).unwrap().0.id, g1.id);
        // three in a row (each link opened fine): down, the next guard serves
        for _ in 0..BUILD_FAILURES_DOWN {
            s.succeeded(&g1.id);
            s.built(&g1.id, false, 1000);
        }
        let (g2, _) = s.pick(&d, &[], 1001, &mut rng).unwrap();
        assert_ne!(g2.id, g1.id);
        assert_eq!(s.pick(&d, &[], 1030, &mut rng).unwrap().0.id, g1.id);
    }

    #[test]
    fn gone_from_the_directory_or_expired_means_another_guard() {
        let d = dir(10);
        let mut s = GuardSet::default();
        let mut rng = rand::thread_rng();
        let (g1, _) = s.pick(&d, &[], 1000, &mut rng).unwrap();
        let without: Vec<Descriptor> = d.iter().filter(|x| x.id != g1.id).cloned().collect();
        let (g2, _) = s.pick(&without, &[], 1000, &mut rng).unwrap();
        assert_ne!(g2.id, g1.id);
        // back in the directory: preferred again
        assert_eq!(s.pick(&d, &[], 1000, &mut rng).unwrap().0.id, g1.id);
        // after the lifetime both are replaced
        let later = 1000 + GuardConfig::default().lifetime;
        let (g3, changed) = s.pick(&d, &[], later, &mut rng).unwrap();
        assert!(changed);
        assert_eq!(s.ids(), vec![g3.id]);
    }

    #[test]
    fn exits_only_relays_and_bounded() {
        // a node that is only an exit (no relay role) is never a guard
        let mut d = vec![desc(ROLE_EXIT)];
        let mut s = GuardSet::default();
        let mut rng = rand::thread_rng();
        assert!(s.pick(&d, &[], 1000, &mut rng).is_none());
        d.extend(dir(20));
        // every guard down in turn: the list never grows past MAX_GUARDS
        for i in 0..40 {
            let (g, _) = s.pick(&d, &[], 1000 + i, &mut rng).unwrap();
            assert!(g.is_relay());
            s.failed(&g.id, 1000 + i);
            assert!(s.ids().len() <= MAX_GUARDS);
        }
    }

    #[test]
    fn file_round_trip_and_bad_files() {
        let d = dir(5);
        let mut s = GuardSet::default();
        let mut rng = rand::thread_rng();
        let (g1, _) = s.pick(&d, &[], 1000, &mut rng).unwrap();
        s.pick(&d, &[g1.id], 1000, &mut rng).unwrap();
        let back = GuardSet::decode(GuardConfig::default(), &s.encode()).unwrap();
        assert_eq!(back.ids(), s.ids());
        for (text, want) in [
            ("abcd 5\n", "not 32 bytes"),
            ("zz 5\n", "not hex"),
            (&format!("{} x\n", "00".repeat(32)), "time is not a number"),
            ("onlyone\n", "expected"),
        ] {
            let e = GuardSet::decode(GuardConfig::default(), text).unwrap_err();
            assert!(e.contains(want) && e.contains("line 1"), "{e}");
        }
        // through a file
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("guards");
        let g = Guards::load(&f, GuardConfig::default()).unwrap();
        let first = g.pick(&d, &[], unix_now()).unwrap();
        g.save_if_changed();
        let again = Guards::load(&f, GuardConfig::default()).unwrap();
        assert_eq!(again.ids(), vec![first.id]);
        std::fs::write(&f, "garbage\n").unwrap();
        let e = Guards::load(&f, GuardConfig::default()).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}

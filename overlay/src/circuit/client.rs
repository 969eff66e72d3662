//! Client-side circuit crypto and path selection.

use rand::seq::SliceRandom;

use crate::cell::{self, CellBuf, CellError};
use crate::descriptor::Descriptor;
use crate::guards::GuardError;
use crate::identity::NodeId;
use crate::relay_crypto::{client_open, client_seal, HopKeys};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CircuitError {
    #[error("backward cell not recognised by any hop (tampered or replayed)")]
    Unrecognized,
    #[error("hop {0} does not exist on this circuit")]
    NoSuchHop(usize),
    #[error(transparent)]
    Cell(#[from] CellError),
    #[error("cannot build a {hops}-hop circuit: {why}")]
    Path { hops: usize, why: String },
    #[error("cannot build a circuit: {0}")]
    Guard(#[from] crate::guards::GuardError),
}

/// The client's onion keys for every hop built so far.
#[derive(Default)]
pub struct ClientCrypto {
    hops: Vec<HopKeys>,
}

impl ClientCrypto {
    pub fn add_hop(&mut self, k: HopKeys) {
        self.hops.push(k);
    }

    /// The binding value of hop `hop` (see [`HopKeys::binding`]).
    pub fn binding(&self, hop: usize) -> Option<[u8; 32]> {
        self.hops.get(hop).map(|h| h.binding())
    }

    pub fn len(&self) -> usize {
        self.hops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Builds a RELAY cell addressed to hop `dest`.
    pub fn seal(
        &mut self,
        circ_id: u32,
        dest: usize,
        rc: u8,
        stream: u32,
        data: &[u8],
    ) -> Result<CellBuf, CircuitError> {
        self.seal_tagged(circ_id, dest, rc, stream, data)
            .map(|(c, _)| c)
    }

    /// [`ClientCrypto::seal`], also returning the cell's MAC (for authenticated SENDMEs).
    pub fn seal_tagged(
        &mut self,
        circ_id: u32,
        dest: usize,
        rc: u8,
        stream: u32,
        data: &[u8],
    ) -> Result<(CellBuf, [u8; 16]), CircuitError> {
        if dest >= self.hops.len() {
            return Err(CircuitError::NoSuchHop(dest));
        }
        let mut c = cell::new_cell(circ_id, cell::cmd::RELAY);
        cell::write_relay(cell::body_mut(&mut c), rc, stream, data)?;
        let tag = client_seal(&mut self.hops, dest, cell::body_mut(&mut c));
        Ok((c, tag))
    }

    /// Peels a backward RELAY cell in place; returns the originating hop.
    pub fn open(&mut self, c: &mut [u8]) -> Result<usize, CircuitError> {
        client_open(&mut self.hops, cell::body_mut(c)).ok_or(CircuitError::Unrecognized)
    }
}

/// Chooses `hops` distinct nodes from verified descriptors: the last one an exit, the others relays.
pub fn choose_path(directory: &[Descriptor], hops: usize) -> Result<Vec<Descriptor>, CircuitError> {
    choose_path_with(directory, hops, None, |_, _| Ok(None))
}

/// Chooses a path of `hops` distinct nodes ending at `last` (or at a random exit when None). On
/// circuits of 2 or 3 hops the first hop comes from `guard(directory, exclude)` (an entry guard,
/// never one of `exclude`: the circuit's last hop), the rest are random relays. `guard` returns
/// None when the client keeps no guards (then the first hop is random too) and an error when it
/// keeps guards and none can serve: the circuit then fails, it never enters through a random
/// relay instead (that would hand whoever made the guards fail a new first hop to try).
pub fn choose_path_with(
    directory: &[Descriptor],
    hops: usize,
    last: Option<&Descriptor>,
    guard: impl FnOnce(&[Descriptor], &[NodeId]) -> Result<Option<Descriptor>, GuardError>,
) -> Result<Vec<Descriptor>, CircuitError> {
    if !(1..=3).contains(&hops) {
        return Err(CircuitError::Path {
            hops,
            why: "hop count must be 1, 2 or 3".into(),
        });
    }
    let mut rng = rand::thread_rng();
    let last = match last {
        Some(l) => l,
        None => {
            let exits: Vec<&Descriptor> = directory.iter().filter(|d| d.is_exit()).collect();
            *exits.choose(&mut rng).ok_or_else(|| CircuitError::Path {
                hops,
                why: "no exit in the directory".into(),
            })?
        }
    };
    let first = if hops > 1 {
        guard(directory, &[last.id])?.filter(|g| g.id != last.id)
    } else {
        None
    };
    let mut relays: Vec<&Descriptor> = directory
        .iter()
        .filter(|d| d.is_relay() && d.id != last.id && first.as_ref().is_none_or(|f| f.id != d.id))
        .collect();
    relays.shuffle(&mut rng);
    relays.dedup_by_key(|d| d.id);
    let middles = hops - 1 - usize::from(first.is_some());
    if relays.len() < middles {
        return Err(CircuitError::Path {
            hops,
            why: format!(
                "only {} relays besides the last hop",
                relays.len() + usize::from(first.is_some())
            ),
        });
    }
    let mut path: Vec<Descriptor> = first.into_iter().collect();
    path.extend(relays[..middles].iter().map(|d| (*d).clone()));
    path.push(last.clone());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{unix_now, ROLE_EXIT, ROLE_RELAY};
    use crate::exit::ExitPolicy;
    use crate::identity::Identity;
    use std::collections::HashSet;

    fn desc(roles: u8) -> Descriptor {
        Descriptor::new_signed(
            &Identity::generate(),
            "127.0.0.1:1".parse().unwrap(),
            roles,
            ExitPolicy::default(),
            unix_now() + 60,
        )
    }

    #[test]
    fn path_distinct_exit_last() {
        let dir: Vec<_> = (0..3)
            .map(|_| desc(ROLE_RELAY))
            .chain([desc(ROLE_RELAY | ROLE_EXIT)])
            .collect();
        for hops in 1..=3 {
            for _ in 0..20 {
                let p = choose_path(&dir, hops).unwrap();
                assert_eq!(p.len(), hops);
                assert!(p[hops - 1].is_exit());
                assert_eq!(p.iter().map(|d| d.id).collect::<HashSet<_>>().len(), hops);
            }
        }
        assert!(choose_path(&dir, 4).is_err());
        // with a guard: it is the first hop of every 2- and 3-hop path, never the last hop, and
        // a 1-hop path has none
        let g = dir[0].clone();
        for hops in 1..=3 {
            for _ in 0..20 {
                let p = choose_path_with(&dir, hops, None, |_, _| Ok(Some(g.clone()))).unwrap();
                assert_eq!(p.len(), hops);
                assert_eq!(p.iter().map(|d| d.id).collect::<HashSet<_>>().len(), hops);
                if hops > 1 {
                    assert_eq!(p[0].id, g.id);
                } else {
                    assert!(p[0].is_exit());
                }
            }
        }
        // a given last hop (a DHT node): the guard is not offered as itself
        let last = dir[1].clone();
        let p = choose_path_with(&dir, 3, Some(&last), |_, ex| {
            assert_eq!(ex, &[last.id]);
            Ok(Some(g.clone()))
        })
        .unwrap();
        assert_eq!((p[0].id, p[2].id), (g.id, last.id));
        assert!(choose_path(&dir[..1], 2).is_err());
        // guards kept but none usable: no circuit, never a random first hop
        let e = choose_path_with(&dir, 3, None, |_, _| Err(GuardError::NoRelay)).unwrap_err();
        assert!(matches!(e, CircuitError::Guard(GuardError::NoRelay)), "{e}");
    }
}

//! Client-side circuit crypto and path selection.

use rand::seq::SliceRandom;

use crate::cell::{self, CellBuf, CellError};
use crate::descriptor::Descriptor;
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
        if dest >= self.hops.len() {
            return Err(CircuitError::NoSuchHop(dest));
        }
        let mut c = cell::new_cell(circ_id, cell::cmd::RELAY);
        cell::write_relay(cell::body_mut(&mut c), rc, stream, data)?;
        client_seal(&mut self.hops, dest, cell::body_mut(&mut c));
        Ok(c)
    }

    /// Peels a backward RELAY cell in place; returns the originating hop.
    pub fn open(&mut self, c: &mut [u8]) -> Result<usize, CircuitError> {
        client_open(&mut self.hops, cell::body_mut(c)).ok_or(CircuitError::Unrecognized)
    }
}

/// Chooses `hops` distinct nodes from verified descriptors: the last one an exit, the others relays.
pub fn choose_path(directory: &[Descriptor], hops: usize) -> Result<Vec<Descriptor>, CircuitError> {
    if !(1..=3).contains(&hops) {
        return Err(CircuitError::Path {
            hops,
            why: "hop count must be 1, 2 or 3".into(),
        });
    }
    let mut rng = rand::thread_rng();
    let exits: Vec<&Descriptor> = directory.iter().filter(|d| d.is_exit()).collect();
    let exit = *exits.choose(&mut rng).ok_or_else(|| CircuitError::Path {
        hops,
        why: "no exit in the directory".into(),
    })?;
    let mut relays: Vec<&Descriptor> = directory
        .iter()
        .filter(|d| d.is_relay() && d.id != exit.id)
        .collect();
    relays.shuffle(&mut rng);
    relays.dedup_by_key(|d| d.id);
    if relays.len() < hops - 1 {
        return Err(CircuitError::Path {
            hops,
            why: format!("only {} relays besides the exit", relays.len()),
        });
    }
    let mut path: Vec<Descriptor> = relays[..hops - 1].iter().map(|d| (*d).clone()).collect();
    path.push(exit.clone());
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
        assert!(choose_path(&dir[..1], 2).is_err());
    }
}

//! A link's outbound side as Tor's channels have it (sans-IO): one FIFO of cells per circuit,
//! served round-robin, plus a small FIFO of link-level control cells (CREATED, DESTROY, CREATE)
//! served first; and the choice of circuits an out-of-memory killer ends.
//!
//! Why: a relay's link reader used to wait for room in the next link's single queue, so one
//! peer that stopped reading blocked every circuit that shared a link with it. Now a reader
//! never waits: it appends to the circuit's own queue. What bounds a queue is the circuit's flow
//! control: an honest sender never has more than a window of cells in flight
//! ([`crate::stream::CIRC_WINDOW`]), so a circuit whose queue passes [`CIRC_QUEUE_CELLS`] is
//! refused ([`PushError::CircuitFull`], the caller destroys it); and what bounds the sum is the
//! node's memory cap, enforced by destroying the circuits whose queued data is oldest
//! ([`oom_victims`], Tor's `circuits_handle_oom`).
//!
//! The scheduler is plain round-robin by cell (Tor's EWMA favours quiet circuits over bulk ones;
//! with fixed 16 KiB cells and windowed circuits round-robin already gives every active circuit
//! an equal share, which is the property the stalled-reader test measures).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::cell::CellBuf;
use crate::stream::CIRC_WINDOW;

/// Cells one circuit may have queued on one link (32 MiB): eight windows of DATA. DATA is
/// windowed, but the other relay messages are not (BEGIN, RESOLVE, their answers, SENDMEs, and
/// DATAGRAM, which carries UDP at whatever rate the application sends), and a relay cannot tell
/// them apart: the bound leaves honest bursts of those room while a link is slower than the one
/// feeding it. What bounds memory overall is the node's cap and its OOM killer.
pub const CIRC_QUEUE_CELLS: usize = 8 * CIRC_WINDOW as usize;
/// Link-level control cells queued at most; past it they are dropped (a peer that does not read
/// cannot make the node hold them).
pub const CONTROL_QUEUE_CELLS: usize = 256;
/// Control cells queued before the node treats the peer as not reading (refuses its CREATEs).
pub const NOT_READING_CELLS: usize = 64;

/// Why a cell was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the circuit has {CIRC_QUEUE_CELLS} cells queued on this link (past its window)")]
    CircuitFull,
    #[error("{CONTROL_QUEUE_CELLS} control cells queued on this link (the peer is not reading)")]
    ControlFull,
}

#[derive(Default)]
struct CircQueue {
    /// Each cell with the time it was queued (the OOM killer's age).
    cells: VecDeque<(Instant, CellBuf)>,
}

/// The outbound queues of one link.
#[derive(Default)]
pub struct LinkQueues {
    control: VecDeque<CellBuf>,
    circs: HashMap<u32, CircQueue>,
    /// Circuits with queued cells, in the order they are served next (each at most once).
    ring: VecDeque<u32>,
    /// Circuit cells queued (all circuits).
    queued: usize,
}

/// A circuit's queued data on one link, as the OOM killer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedCircuit {
    pub circ: u32,
    /// When its oldest queued cell was queued.
    pub oldest: Instant,
    pub cells: usize,
}

impl LinkQueues {
    pub fn new() -> LinkQueues {
        LinkQueues::default()
    }

    /// Queues a link-level control cell (served before circuit cells).
    pub fn push_control(&mut self, cell: CellBuf) -> Result<(), PushError> {
        if self.control.len() >= CONTROL_QUEUE_CELLS {
            return Err(PushError::ControlFull);
        }
        self.control.push_back(cell);
        Ok(())
    }

    /// Queues a cell of circuit `circ` (its id on this link).
    pub fn push(&mut self, circ: u32, cell: CellBuf, now: Instant) -> Result<(), PushError> {
        let q = self.circs.entry(circ).or_default();
        if q.cells.len() >= CIRC_QUEUE_CELLS {
            return Err(PushError::CircuitFull);
        }
        if q.cells.is_empty() {
            self.ring.push_back(circ);
        }
        q.cells.push_back((now, cell));
        self.queued += 1;
        Ok(())
    }

    /// The next cell to send: a control cell if any, else the head of the next circuit in turn.
    /// The second value is 1 if a circuit cell left the queues (for the node's memory count).
    pub fn pop(&mut self) -> Option<(CellBuf, usize)> {
        if let Some(c) = self.control.pop_front() {
            return Some((c, 0));
        }
        while let Some(circ) = self.ring.pop_front() {
            let Some(q) = self.circs.get_mut(&circ) else {
                continue; // removed since it was scheduled
            };
            let Some((_, cell)) = q.cells.pop_front() else {
                continue;
            };
            // a drained queue stays (its buffer is reused) until its circuit is removed
            if !q.cells.is_empty() {
                self.ring.push_back(circ);
            }
            self.queued -= 1;
            return Some((cell, 1));
        }
        None
    }

    /// Drops every queued cell of `circ` (it was destroyed); how many circuit cells went.
    pub fn remove_circuit(&mut self, circ: u32) -> usize {
        let n = self.circs.remove(&circ).map_or(0, |q| q.cells.len());
        self.queued -= n;
        // its ring entry is skipped by `pop` once the queue is gone
        if n > 0 {
            self.ring.retain(|c| *c != circ);
        }
        n
    }

    /// Drops everything (the link closed); how many circuit cells went.
    pub fn clear(&mut self) -> usize {
        let n = self.queued;
        *self = LinkQueues::default();
        n
    }

    /// Circuit cells queued.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Control cells queued.
    pub fn control_len(&self) -> usize {
        self.control.len()
    }

    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.queued == 0
    }

    /// Cells of `circ` queued.
    pub fn circuit_len(&self, circ: u32) -> usize {
        self.circs.get(&circ).map_or(0, |q| q.cells.len())
    }

    /// Every circuit with queued cells, with the age of its oldest cell.
    pub fn queued_circuits(&self) -> impl Iterator<Item = QueuedCircuit> + '_ {
        self.circs.iter().filter_map(|(circ, q)| {
            q.cells.front().map(|(t, _)| QueuedCircuit {
                circ: *circ,
                oldest: *t,
                cells: q.cells.len(),
            })
        })
    }
}

/// The out-of-memory killer's choice (Tor's rule): with `used` cells queued over all links and a
/// cap, the circuits to destroy, oldest queued data first, until what is left is at most
/// `target` cells. `K` names a circuit across links (for example a link id and a circuit id).
pub fn oom_victims<K: Copy>(
    mut queued: Vec<(K, QueuedCircuit)>,
    used: usize,
    target: usize,
) -> Vec<K> {
    queued.sort_by_key(|(_, q)| q.oldest);
    let mut left = used;
    let mut out = Vec::new();
    for (k, q) in queued {
        if left <= target {
            break;
        }
        left = left.saturating_sub(q.cells);
        out.push(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cell(tag: u8) -> CellBuf {
        vec![tag; 8]
    }

    #[test]
    fn control_first_then_round_robin_by_cell() {
        let t = Instant::now();
        let mut q = LinkQueues::new();
        for i in 0..3 {
            q.push(1, cell(10 + i), t).unwrap();
        }
        q.push(2, cell(20), t).unwrap();
        q.push(3, cell(30), t).unwrap();
        q.push(3, cell(31), t).unwrap();
        q.push_control(cell(99)).unwrap();
        assert_eq!(q.queued(), 6);
        let order: Vec<u8> = std::iter::from_fn(|| q.pop().map(|(c, _)| c[0])).collect();
        assert_eq!(order, vec![99, 10, 20, 30, 11, 31, 12]);
        assert!(q.is_empty());
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn a_circuit_past_its_cap_is_refused_and_others_are_not() {
        let t = Instant::now();
        let mut q = LinkQueues::new();
        for _ in 0..CIRC_QUEUE_CELLS {
            q.push(1, cell(1), t).unwrap();
        }
        assert_eq!(q.push(1, cell(1), t), Err(PushError::CircuitFull));
        q.push(2, cell(2), t).unwrap();
        // the full one still drains in turn with the other
        assert_eq!(q.pop().map(|(c, n)| (c[0], n)), Some((1, 1)));
        assert_eq!(q.pop().map(|(c, n)| (c[0], n)), Some((2, 1)));
        assert_eq!(q.circuit_len(1), CIRC_QUEUE_CELLS - 1);
    }

    #[test]
    fn control_cells_are_bounded() {
        let mut q = LinkQueues::new();
        for _ in 0..CONTROL_QUEUE_CELLS {
            q.push_control(cell(0)).unwrap();
        }
        assert_eq!(q.push_control(cell(0)), Err(PushError::ControlFull));
        assert_eq!(
            q.pop().map(|(_, n)| n),
            Some(0),
            "control cells are not counted"
        );
    }

    #[test]
    fn removing_a_circuit_drops_its_cells_and_keeps_the_order_of_the_rest() {
        let t = Instant::now();
        let mut q = LinkQueues::new();
        for c in [1u32, 2, 3] {
            q.push(c, cell(c as u8), t).unwrap();
            q.push(c, cell(c as u8), t).unwrap();
        }
        assert_eq!(q.remove_circuit(2), 2);
        assert_eq!(q.remove_circuit(2), 0);
        assert_eq!(q.queued(), 4);
        let order: Vec<u8> = std::iter::from_fn(|| q.pop().map(|(c, _)| c[0])).collect();
        assert_eq!(order, vec![1, 3, 1, 3]);
        // a removed circuit that queues again is served again
        q.push(2, cell(2), t).unwrap();
        assert_eq!(q.pop().map(|(c, _)| c[0]), Some(2));
        q.push(5, cell(5), t).unwrap();
        assert_eq!(q.clear(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn queued_circuits_report_the_oldest_cell() {
        let t = Instant::now();
        let mut q = LinkQueues::new();
        q.push(1, cell(1), t).unwrap();
        q.push(1, cell(1), t + Duration::from_secs(5)).unwrap();
        q.push(2, cell(2), t + Duration::from_secs(2)).unwrap();
        let mut v: Vec<QueuedCircuit> = q.queued_circuits().collect();
        v.sort_by_key(|x| x.circ);
        assert_eq!(
            v,
            vec![
                QueuedCircuit {
                    circ: 1,
                    oldest: t,
                    cells: 2
                },
                QueuedCircuit {
                    circ: 2,
                    oldest: t + Duration::from_secs(2),
                    cells: 1
                },
            ]
        );
        q.pop();
        let v: Vec<QueuedCircuit> = q.queued_circuits().filter(|x| x.circ == 1).collect();
        assert_eq!(
            v[0].oldest,
            t + Duration::from_secs(5),
            "age follows the head"
        );
    }

    #[test]
    fn oom_kills_oldest_first_until_under_target() {
        let t = Instant::now();
        let at = |s| t + Duration::from_secs(s);
        let qc = |circ, s, cells| {
            (
                circ,
                QueuedCircuit {
                    circ,
                    oldest: at(s),
                    cells,
                },
            )
        };
        let v = vec![qc(1, 30, 10), qc(2, 10, 10), qc(3, 20, 10), qc(4, 40, 10)];
        assert_eq!(oom_victims(v.clone(), 40, 40), Vec::<u32>::new());
        assert_eq!(oom_victims(v.clone(), 40, 30), vec![2]);
        assert_eq!(oom_victims(v.clone(), 40, 15), vec![2, 3, 1]);
        assert_eq!(oom_victims(v, 40, 0), vec![2, 3, 1, 4]);
    }
}

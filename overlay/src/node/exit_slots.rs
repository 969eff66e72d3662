//! What an exit holds open for its circuits, counted and capped (issue "Hostile relays (2/2)",
//! exit abuse): TCP streams, UDP associations and name resolutions (each a socket or a blocking
//! `getaddrinfo` thread). Without caps, about a thousand BEGIN, DATAGRAM or RESOLVE cells on one
//! circuit exhaust an exit's file descriptors.
//!
//! Two levels: per circuit (counted from the circuit's own tables, checked by the node) and per
//! exit (the counters here). A slot is an RAII token: it is given back when dropped, which also
//! happens when the task holding it is aborted (its circuit destroyed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The kinds of exit resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A TCP stream (its resolution and connect included) or a UDP association: a socket.
    Socket,
    /// A RESOLVE in progress (a blocking resolver thread).
    Resolve,
}

/// The exit's counters (one per node).
#[derive(Debug, Default)]
pub struct ExitCounters {
    sockets: AtomicUsize,
    resolves: AtomicUsize,
}

impl ExitCounters {
    fn counter(&self, kind: SlotKind) -> &AtomicUsize {
        match kind {
            SlotKind::Socket => &self.sockets,
            SlotKind::Resolve => &self.resolves,
        }
    }

    /// How many of `kind` are held now.
    pub fn held(&self, kind: SlotKind) -> usize {
        self.counter(kind).load(Ordering::Relaxed)
    }
}

/// One held resource; given back on drop.
#[derive(Debug)]
pub struct ExitSlot {
    counters: Arc<ExitCounters>,
    kind: SlotKind,
}

impl ExitSlot {
    /// Takes one `kind` slot if fewer than `cap` are held.
    pub fn take(counters: &Arc<ExitCounters>, kind: SlotKind, cap: usize) -> Option<ExitSlot> {
        counters
            .counter(kind)
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(ExitSlot {
            counters: counters.clone(),
            kind,
        })
    }
}

impl Drop for ExitSlot {
    fn drop(&mut self) {
        self.counters
            .counter(self.kind)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back_on_drop() {
        let c = Arc::new(ExitCounters::default());
        let a = ExitSlot::take(&c, SlotKind::Socket, 2).unwrap();
        let b = ExitSlot::take(&c, SlotKind::Socket, 2).unwrap();
        assert!(ExitSlot::take(&c, SlotKind::Socket, 2).is_none());
        // the kinds are counted apart
        let r = ExitSlot::take(&c, SlotKind::Resolve, 1).unwrap();
        assert!(ExitSlot::take(&c, SlotKind::Resolve, 1).is_none());
        assert_eq!(c.held(SlotKind::Socket), 2);
        drop(a);
        assert_eq!(c.held(SlotKind::Socket), 1);
        assert!(ExitSlot::take(&c, SlotKind::Socket, 2).is_some());
        drop((b, r));
        assert_eq!(c.held(SlotKind::Socket), 0);
        assert_eq!(c.held(SlotKind::Resolve), 0);
    }
}

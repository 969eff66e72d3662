//! The flow table: what the dashboard shows about the tunnel's TCP flows and UDP associations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One flow as the dashboard sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowStatus {
    pub id: u64,
    pub protocol: Protocol,
    /// The wrapped program's address.
    pub local: SocketAddr,
    /// Where it goes: "name:port" when the program used a name, else the address.
    pub destination: String,
    /// Bytes from the program towards the destination.
    pub bytes_up: u64,
    /// Bytes from the destination to the program.
    pub bytes_down: u64,
    /// The isolation key the flow's circuit(s) were chosen with.
    pub isolation: u64,
    pub age_ms: u64,
}

/// Counters for the whole tunnel.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub tcp_flows_total: u64,
    pub tcp_flows_refused: u64,
    pub udp_assocs_total: u64,
    pub udp_datagrams_dropped: u64,
    pub dns_queries: u64,
    pub dns_bad: u64,
    pub dropped_icmp: u64,
    pub dropped_ipv6: u64,
    pub dropped_other: u64,
}

/// Snapshot for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelStatus {
    pub flows: Vec<FlowStatus>,
    pub counters: Counters,
}

#[derive(Debug)]
pub struct FlowEntry {
    pub id: u64,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub destination: String,
    pub isolation: u64,
    pub started: Instant,
    pub up: AtomicU64,
    pub down: AtomicU64,
}

impl FlowEntry {
    pub fn add_up(&self, n: usize) {
        self.up.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn add_down(&self, n: usize) {
        self.down.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    flows: HashMap<u64, Arc<FlowEntry>>,
    counters: Counters,
}

/// Shared by the tunnel's tasks; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct FlowTable {
    inner: Arc<Mutex<Inner>>,
}

/// Removes its flow from the table when dropped.
#[derive(Debug)]
pub struct FlowGuard {
    table: FlowTable,
    pub entry: Arc<FlowEntry>,
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.table.lock().flows.remove(&self.entry.id);
    }
}

impl FlowTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the table inconsistent (plain inserts,
        // removes and counter bumps), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of live flows of `protocol`.
    pub fn count(&self, protocol: Protocol) -> usize {
        self.lock()
            .flows
            .values()
            .filter(|f| f.protocol == protocol)
            .count()
    }

    pub fn open(
        &self,
        protocol: Protocol,
        local: SocketAddr,
        destination: String,
        isolation: u64,
        now: Instant,
    ) -> FlowGuard {
        let mut inner = self.lock();
        inner.next_id += 1;
        let entry = Arc::new(FlowEntry {
            id: inner.next_id,
            protocol,
            local,
            destination,
            isolation,
            started: now,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        });
        inner.flows.insert(entry.id, entry.clone());
        match protocol {
            Protocol::Tcp => inner.counters.tcp_flows_total += 1,
            Protocol::Udp => inner.counters.udp_assocs_total += 1,
        }
        FlowGuard {
            table: self.clone(),
            entry,
        }
    }

    /// Bumps a counter.
    pub fn count_event(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.lock().counters);
    }

    pub fn snapshot(&self, now: Instant) -> TunnelStatus {
        let inner = self.lock();
        let mut flows: Vec<FlowStatus> = inner
            .flows
            .values()
            .map(|e| FlowStatus {
                id: e.id,
                protocol: e.protocol,
                local: e.local,
                destination: e.destination.clone(),
                bytes_up: e.up.load(Ordering::Relaxed),
                bytes_down: e.down.load(Ordering::Relaxed),
                isolation: e.isolation,
                age_ms: now.saturating_duration_since(e.started).as_millis() as u64,
            })
            .collect();
        flows.sort_by_key(|f| f.id);
        TunnelStatus {
            flows,
            counters: inner.counters.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn accounting_and_removal() {
        let t = FlowTable::default();
        let t0 = Instant::now();
        let a = t.open(
            Protocol::Tcp,
            "198.18.0.1:4000".parse().unwrap(),
            "example.org:80".into(),
            7,
            t0,
        );
        let b = t.open(
            Protocol::Udp,
            "198.18.0.1:6881".parse().unwrap(),
            "udp".into(),
            8,
            t0,
        );
        a.entry.add_up(100);
        a.entry.add_down(5000);
        b.entry.add_up(3);
        t.count_event(|c| c.dropped_icmp += 1);
        let s = t.snapshot(t0 + Duration::from_millis(1500));
        assert_eq!(s.flows.len(), 2);
        assert_eq!(s.flows[0].bytes_up, 100);
        assert_eq!(s.flows[0].bytes_down, 5000);
        assert_eq!(s.flows[0].age_ms, 1500);
        assert_eq!(s.flows[0].destination, "example.org:80");
        assert_eq!(s.counters.tcp_flows_total, 1);
        assert_eq!(s.counters.udp_assocs_total, 1);
        assert_eq!(s.counters.dropped_icmp, 1);
        assert_eq!(t.count(Protocol::Tcp), 1);
        drop(a);
        assert_eq!(t.count(Protocol::Tcp), 0);
        let json = serde_json::to_string(&t.snapshot(t0)).unwrap();
        assert!(json.contains("\"protocol\":\"udp\""), "{json}");
    }
}

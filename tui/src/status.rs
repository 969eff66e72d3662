//! Status snapshots: everything the dashboard, `warren status` and the control socket show.
//!
//! The node fills a [`StatusSnapshot`] from its engines; the dashboard only ever reads these
//! plain values (never engine internals). All byte counts are bytes, all rates bytes per second.

use serde::{Deserialize, Serialize};

/// Identifier of a transfer inside one running node.
pub type TransferId = u64;

/// One consistent view of a running node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusSnapshot {
    /// Short id of this node (e.g. the first 8 hex digits of its node id).
    pub node_id: String,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    pub transfers: Vec<TransferStatus>,
    pub circuits: Vec<CircuitStatus>,
    pub flows: Vec<FlowStatus>,
    pub network: NetworkStatus,
    /// Recent warnings and errors, oldest first.
    pub log: Vec<LogEntry>,
}

/// State of a transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Looking up the swarm or fetching metadata (BEP 9).
    #[default]
    Metadata,
    /// Verifying data already on disk.
    Checking,
    Downloading,
    Seeding,
    Paused,
    /// Stopped after an error (see the log).
    Error,
}

impl TransferState {
    pub fn label(self) -> &'static str {
        match self {
            TransferState::Metadata => "metadata",
            TransferState::Checking => "checking",
            TransferState::Downloading => "downloading",
            TransferState::Seeding => "seeding",
            TransferState::Paused => "paused",
            TransferState::Error => "error",
        }
    }
}

/// One torrent being downloaded or seeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferStatus {
    pub id: TransferId,
    /// Display name (from the metadata, the magnet's dn, or the infohash).
    pub name: String,
    /// Infohash, hex.
    pub infohash: String,
    /// Total size in bytes; 0 while the metadata is unknown.
    pub size: u64,
    /// Verified bytes on disk.
    pub done: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub peers: u32,
    /// Estimated seconds to completion, if downloading at a known rate.
    pub eta_secs: Option<u64>,
    pub state: TransferState,
    /// Circuit hop count used by this transfer (1-3).
    pub hops: u8,
}

impl TransferStatus {
    /// Progress in [0, 1].
    pub fn progress(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            (self.done as f64 / self.size as f64).clamp(0.0, 1.0)
        }
    }
}

/// What a circuit is used for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitPurpose {
    /// Streams/datagrams through an exit.
    #[default]
    Exit,
    /// DHT lookups.
    Dht,
    /// To one of our introduction points (hidden seeding).
    Intro,
    /// Rendezvous (either side).
    Rendezvous,
    /// Built in advance, not yet assigned.
    Preemptive,
}

impl CircuitPurpose {
    pub fn label(self) -> &'static str {
        match self {
            CircuitPurpose::Exit => "exit",
            CircuitPurpose::Dht => "dht",
            CircuitPurpose::Intro => "intro",
            CircuitPurpose::Rendezvous => "rendezvous",
            CircuitPurpose::Preemptive => "spare",
        }
    }
}

/// State of a circuit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    #[default]
    Building,
    Open,
    Closing,
    Failed,
}

impl CircuitState {
    pub fn label(self) -> &'static str {
        match self {
            CircuitState::Building => "building",
            CircuitState::Open => "open",
            CircuitState::Closing => "closing",
            CircuitState::Failed => "failed",
        }
    }
}

/// One circuit built by this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitStatus {
    pub id: u64,
    pub purpose: CircuitPurpose,
    /// Short ids of the hops, first hop first.
    pub hops: Vec<String>,
    pub state: CircuitState,
    pub age_secs: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub rtt_ms: Option<u32>,
}

/// Transport protocol of a tunnel flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowProtocol {
    #[default]
    Tcp,
    Udp,
    Dns,
}

impl FlowProtocol {
    pub fn label(self) -> &'static str {
        match self {
            FlowProtocol::Tcp => "tcp",
            FlowProtocol::Udp => "udp",
            FlowProtocol::Dns => "dns",
        }
    }
}

/// One flow of the wrapped program in `warren tunnel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowStatus {
    /// Program-side address, e.g. `10.77.0.2:51234`.
    pub source: String,
    /// Destination as the program asked for it, e.g. `example.org:443`.
    pub destination: String,
    pub protocol: FlowProtocol,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Circuit carrying the flow, if any yet.
    pub circuit: Option<u64>,
}

/// One link (Noise connection) to another overlay node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkStatus {
    /// Short id of the peer node.
    pub peer: String,
    pub addr: String,
    /// Whether we opened the connection.
    pub outbound: bool,
    pub age_secs: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Overlay-wide figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkStatus {
    pub links: Vec<LinkStatus>,
    /// Nodes in our DHT routing table.
    pub dht_nodes: u64,
    /// Total bytes relayed for others.
    pub relayed_bytes: u64,
    /// Whether this node acts as an exit.
    pub is_exit: bool,
    /// Total bytes carried to/from the clear as an exit.
    pub exit_bytes: u64,
    /// Current rates (the dashboard keeps the history for the sparklines).
    pub down_rate: u64,
    pub up_rate: u64,
    pub relay_rate: u64,
    pub exit_rate: u64,
    /// This node's entry guards (short ids), the one in use first.
    pub guards: Vec<String>,
    /// The same guards with their state and path-bias counts.
    pub guard_health: Vec<GuardHealth>,
}

/// One entry guard as `warren status` and the dashboard show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardHealth {
    /// Short node id.
    pub id: String,
    /// One of the primary guards (used first).
    pub primary: bool,
    /// Seconds until it is tried again after its link failed (0: up).
    pub down_secs: u64,
    /// Circuits attempted through it (path bias, recent ones weigh more).
    pub circuits: u32,
    /// Of those, circuits built and not destroyed for a bad cell.
    pub succeeded: u32,
    /// Too few of its circuits succeed: it may be dropping them (kept, not replaced).
    pub suspect: bool,
}

impl GuardHealth {
    /// Percent of its circuits that succeeded (100 with none).
    pub fn percent(&self) -> u32 {
        if self.circuits == 0 {
            100
        } else {
            (u64::from(self.succeeded) * 100 / u64::from(self.circuits)) as u32
        }
    }
}

/// Severity of a log entry shown on the Log tab.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Something the user should see once (e.g. the magnet link of a seeded torrent).
    Info,
    #[default]
    Warn,
    Error,
}

/// A recent warning or error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogEntry {
    /// Seconds since the node started when this was logged.
    pub at_secs: u64,
    pub level: LogLevel,
    /// Module that logged it.
    pub target: String,
    pub message: String,
}

/// Human-readable byte count, binary units: `0 B`, `1023 B`, `1.5 KiB`, `12.0 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Human-readable rate: `fmt_bytes` + `/s`.
pub fn fmt_rate(n: u64) -> String {
    format!("{}/s", fmt_bytes(n))
}

/// Short duration: `42s`, `3m05s`, `2h07m`, `3d04h`.
pub fn fmt_duration(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(fmt_rate(2048), "2.0 KiB/s");
        assert_eq!(fmt_duration(5), "5s");
        assert_eq!(fmt_duration(185), "3m05s");
        assert_eq!(fmt_duration(7620), "2h07m");
        assert_eq!(fmt_duration(3 * 86_400 + 4 * 3600), "3d04h");
    }

    #[test]
    fn snapshot_json_round_trip_and_defaults() {
        let s = StatusSnapshot {
            node_id: "ab12cd34".into(),
            transfers: vec![TransferStatus {
                id: 1,
                name: "x".into(),
                size: 10,
                done: 5,
                state: TransferState::Downloading,
                hops: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        let j = serde_json::to_string(&s).unwrap();
        let back: StatusSnapshot = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.transfers[0].progress(), 0.5);
        // Missing fields take defaults so that older/newer nodes stay readable.
        let partial: StatusSnapshot = serde_json::from_str(r#"{"node_id":"x"}"#).unwrap();
        assert_eq!(partial.node_id, "x");
        assert!(partial.transfers.is_empty());
    }
}

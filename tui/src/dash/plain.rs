//! Plain progress lines for `--no-tui` and non-terminal output: one line per transfer per
//! report, plus each new warning/error once.

use std::io::Write;

use crate::status::{fmt_bytes, fmt_duration, fmt_rate, LogLevel, StatusSnapshot, TransferStatus};

/// One progress line for a transfer, e.g.
/// `debian.iso: 45.0% of 600.0 MiB, down 1.2 MiB/s, up 0 B/s, 5 peers, ETA 3m05s, downloading, 3 hops`.
pub fn transfer_line(t: &TransferStatus) -> String {
    let size = if t.size == 0 {
        "size unknown".to_string()
    } else {
        format!("{:.1}% of {}", t.progress() * 100.0, fmt_bytes(t.size))
    };
    let eta = t.eta_secs.map_or_else(
        || "ETA -".to_string(),
        |s| format!("ETA {}", fmt_duration(s)),
    );
    format!(
        "{}: {size}, down {}, up {}, {} peer{}, {eta}, {}, {} hop{}",
        t.name,
        fmt_rate(t.down_rate),
        fmt_rate(t.up_rate),
        t.peers,
        if t.peers == 1 { "" } else { "s" },
        t.state.label(),
        t.hops,
        if t.hops == 1 { "" } else { "s" },
    )
}

/// Writes progress reports to a stream, printing each log entry only once.
#[derive(Debug, Default)]
pub struct PlainReporter {
    /// Log entries already printed (the log is a window; we track by (time, message)).
    seen_log: Vec<(u64, String)>,
}

impl PlainReporter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one report for `snap`.
    pub fn report(&mut self, out: &mut dyn Write, snap: &StatusSnapshot) -> std::io::Result<()> {
        for e in &snap.log {
            let key = (e.at_secs, e.message.clone());
            if self.seen_log.contains(&key) {
                continue;
            }
            let lvl = match e.level {
                LogLevel::Info => "info",
                LogLevel::Warn => "warning",
                LogLevel::Error => "error",
            };
            writeln!(out, "{lvl}: {}: {}", e.target, e.message)?;
            self.seen_log.push(key);
            if self.seen_log.len() > 1000 {
                self.seen_log.remove(0);
            }
        }
        for t in &snap.transfers {
            writeln!(out, "{}", transfer_line(t))?;
        }
        if !snap.flows.is_empty() {
            let (s, r) = snap
                .flows
                .iter()
                .fold((0, 0), |(s, r), f| (s + f.bytes_sent, r + f.bytes_received));
            writeln!(
                out,
                "tunnel: {} flows, {} sent, {} received",
                snap.flows.len(),
                fmt_bytes(s),
                fmt_bytes(r)
            )?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{LogEntry, TransferState};

    #[test]
    fn lines() {
        let t = TransferStatus {
            id: 1,
            name: "debian.iso".into(),
            size: 600 * 1024 * 1024,
            done: 270 * 1024 * 1024,
            down_rate: 1258291,
            up_rate: 0,
            peers: 5,
            eta_secs: Some(185),
            state: TransferState::Downloading,
            hops: 3,
            ..Default::default()
        };
        assert_eq!(
            transfer_line(&t),
            "debian.iso: 45.0% of 600.0 MiB, down 1.2 MiB/s, up 0 B/s, 5 peers, ETA 3m05s, downloading, 3 hops"
        );
        let mut snap = StatusSnapshot {
            transfers: vec![t],
            log: vec![LogEntry {
                at_secs: 3,
                level: LogLevel::Warn,
                target: "share".into(),
                message: "peer sent a bad piece".into(),
            }],
            ..Default::default()
        };
        let mut r = PlainReporter::new();
        let mut out = Vec::new();
        r.report(&mut out, &snap).unwrap();
        r.report(&mut out, &snap).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.matches("warning: share: peer sent a bad piece")
                .count(),
            1
        );
        assert_eq!(text.matches("debian.iso: ").count(), 2);
        snap.transfers[0].size = 0;
        assert!(transfer_line(&snap.transfers[0]).contains("size unknown"));
    }
}

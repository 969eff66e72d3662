//! Flow-control windows (counted in DATA cells), like Tor's SENDME.
//!
//! A sender may have at most `*_WINDOW` DATA cells unacknowledged; the receiver sends a SENDME
//! (stream id = the stream, or 0 for the circuit) after every `*_SENDME_INC` cells it consumed. A
//! peer that sends beyond the window violates the protocol.

pub const CIRC_WINDOW: u32 = 256;
pub const CIRC_SENDME_INC: u32 = 64;
pub const STREAM_WINDOW: u32 = 128;
pub const STREAM_SENDME_INC: u32 = 32;

/// Receive-side accounting (sans-IO).
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u32,
    inc: u32,
    outstanding: u32,
    since_sendme: u32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer exceeded the flow-control window of {0} cells")]
pub struct WindowExceeded(pub u32);

impl RecvWindow {
    pub fn new(window: u32, inc: u32) -> RecvWindow {
        RecvWindow {
            window,
            inc,
            outstanding: 0,
            since_sendme: 0,
        }
    }
    /// A DATA cell arrived.
    pub fn on_receive(&mut self) -> Result<(), WindowExceeded> {
        if self.outstanding >= self.window {
            return Err(WindowExceeded(self.window));
        }
        self.outstanding += 1;
        Ok(())
    }
    /// A DATA cell was consumed; true when a SENDME is due now.
    pub fn on_consume(&mut self) -> bool {
        self.since_sendme += 1;
        if self.since_sendme >= self.inc {
            self.since_sendme = 0;
            self.outstanding = self.outstanding.saturating_sub(self.inc);
            true
        } else {
            false
        }
    }
}

/// Version byte of an authenticated SENDME (Tor proposal 289's "version 1").
pub const SENDME_V1: u8 = 1;

/// The payload of a circuit-level SENDME: `version:u8 = 1 | tag[16]`, the MAC of the DATA cell
/// that completed the increment.
pub fn sendme_payload(tag: &[u8; 16]) -> [u8; 17] {
    let mut p = [0u8; 17];
    p[0] = SENDME_V1;
    p[1..].copy_from_slice(tag);
    p
}

/// Why a circuit-level SENDME was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendmeError {
    #[error("SENDME before {0} DATA cells were sent (would open the window beyond its size)")]
    Unexpected(u32),
    #[error("SENDME not version 1 or of the wrong length ({0} bytes)")]
    Malformed(usize),
    #[error(
        "SENDME does not echo the MAC of the cell it acknowledges (the peer did not receive it)"
    )]
    WrongTag,
}

/// Send-side check of authenticated circuit SENDMEs (Tor proposal 289, sans-IO).
///
/// The sender remembers the MAC of every `inc`-th DATA cell it sends on the circuit; a SENDME
/// must echo the oldest remembered one. A receiver that does not read cannot know those MACs, so
/// it cannot make a sender (an exit, or the other end of a rendezvous) push data faster than it
/// really receives it, and a SENDME with nothing outstanding (which would grow the window) is
/// refused.
#[derive(Debug, Clone)]
pub struct SendmeAuth {
    inc: u32,
    since: u32,
    expected: std::collections::VecDeque<[u8; 16]>,
}

impl SendmeAuth {
    pub fn new(inc: u32) -> SendmeAuth {
        SendmeAuth {
            inc: inc.max(1),
            since: 0,
            expected: std::collections::VecDeque::new(),
        }
    }

    /// A DATA cell with MAC `tag` was sent.
    pub fn on_data_sent(&mut self, tag: [u8; 16]) {
        self.since += 1;
        if self.since >= self.inc {
            self.since = 0;
            self.expected.push_back(tag);
        }
    }

    /// A circuit SENDME with `payload` arrived: Ok if it acknowledges the oldest outstanding
    /// increment (which is then consumed).
    pub fn on_sendme(&mut self, payload: &[u8]) -> Result<(), SendmeError> {
        if payload.len() != 17 || payload[0] != SENDME_V1 {
            return Err(SendmeError::Malformed(payload.len()));
        }
        let Some(want) = self.expected.front() else {
            return Err(SendmeError::Unexpected(self.inc));
        };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&want[..], &payload[1..])) {
            return Err(SendmeError::WrongTag);
        }
        self.expected.pop_front();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_sendme_must_echo_the_acknowledged_cells_tag() {
        let mut a = SendmeAuth::new(3);
        // nothing outstanding: refused (it would open the window further)
        assert_eq!(
            a.on_sendme(&sendme_payload(&[0; 16])),
            Err(SendmeError::Unexpected(3))
        );
        for i in 0..6u8 {
            a.on_data_sent([i; 16]);
        }
        // the 3rd and the 6th cells' tags are the ones acknowledged, in order
        assert_eq!(
            a.on_sendme(&sendme_payload(&[5; 16])),
            Err(SendmeError::WrongTag)
        );
        assert_eq!(a.on_sendme(&sendme_payload(&[2; 16])), Ok(()));
        assert_eq!(a.on_sendme(&[SENDME_V1]), Err(SendmeError::Malformed(1)));
        assert_eq!(a.on_sendme(&[]), Err(SendmeError::Malformed(0)));
        let mut bad_version = sendme_payload(&[5; 16]);
        bad_version[0] = 0;
        assert_eq!(a.on_sendme(&bad_version), Err(SendmeError::Malformed(17)));
        assert_eq!(a.on_sendme(&sendme_payload(&[5; 16])), Ok(()));
        assert!(a.on_sendme(&sendme_payload(&[5; 16])).is_err());
    }

    #[test]
    fn window_accounting() {
        let mut w = RecvWindow::new(4, 2);
        for _ in 0..4 {
            w.on_receive().unwrap();
        }
        assert_eq!(w.on_receive(), Err(WindowExceeded(4)));
        assert!(!w.on_consume());
        assert!(w.on_consume());
        w.on_receive().unwrap();
        w.on_receive().unwrap();
        assert!(w.on_receive().is_err());
    }
}

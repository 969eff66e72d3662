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

#[cfg(test)]
mod tests {
    use super::*;

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

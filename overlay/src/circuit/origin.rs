//! Which hop of a client circuit may send which backward relay message (sans-IO).
//!
//! A backward cell that a hop's MAC verifies proves only that *some* hop of the circuit sealed
//! it. Without this rule a guard could answer a tracker request itself, forge a RESOLVED or end a
//! stream, and a rendezvous point could inject into an end-to-end hidden stream. So every
//! message is bound to the one hop entitled to send it, and anything else destroys the circuit
//! (the caller logs the [`HopViolation`] and delivers nothing to the application):
//!
//! | message | may come only from |
//! |---|---|
//! | EXTENDED | the last hop built so far (the one the EXTEND went to) |
//! | circuit-level SENDME (stream 0) | the last hop: the one the client's DATA goes to |
//! | DATA, END, CONNECTED, RESOLVED, DATAGRAM, DHT_RESPONSE, DIRECTORY, stream SENDME | the hop the stream was opened with (for an unknown stream: the last hop) |
//! | BEGIN (a stream opened by the other end of a rendezvous) | the virtual end-to-end hop |
//! | introduction and rendezvous messages | the last real hop (the introduction or rendezvous point) |
//! | DROP (padding) | any hop |

use crate::cell::rcmd;

/// The shape of a client circuit when a backward message arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopView {
    /// Hops the client built through relays (the path), counting from the guard as 0.
    pub built: usize,
    /// Hops with keys: `built` so far, plus the virtual end-to-end hop after a rendezvous.
    pub keyed: usize,
}

impl HopView {
    /// The hop streams go to: the exit, the DHT node, or the virtual hop.
    pub fn last(&self) -> usize {
        self.keyed.saturating_sub(1)
    }
}

/// A backward message from a hop not entitled to send it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopViolation {
    #[error(
        "relay command {cmd} on stream {stream} from hop {from}; the stream belongs to hop {owner}"
    )]
    StreamFromWrongHop {
        cmd: u8,
        stream: u32,
        from: usize,
        owner: usize,
    },
    #[error("EXTENDED from hop {from}; only the last hop ({last}) was extended")]
    ExtendedFromWrongHop { from: usize, last: usize },
    #[error("circuit SENDME from hop {from}; only the last hop ({last}) receives our data")]
    SendmeFromWrongHop { from: usize, last: usize },
    #[error("BEGIN from hop {from}; only the other end of a rendezvous (hop {virtual_hop:?}) opens streams")]
    BeginFromWrongHop {
        from: usize,
        virtual_hop: Option<usize>,
    },
    #[error("hidden-service command {cmd} from hop {from}; only the introduction or rendezvous point (hop {point}) sends those")]
    HsFromWrongHop { cmd: u8, from: usize, point: usize },
}

/// Whether hop `from` may send relay command `cmd` on stream `stream` of a circuit shaped `view`;
/// `owner` is the hop the stream was opened with, if the client knows the stream.
pub fn check_sender(
    view: HopView,
    cmd: u8,
    stream: u32,
    from: usize,
    owner: Option<usize>,
) -> Result<(), HopViolation> {
    let last = view.last();
    match cmd {
        rcmd::DROP => Ok(()),
        rcmd::EXTENDED if from != last => Err(HopViolation::ExtendedFromWrongHop { from, last }),
        rcmd::EXTENDED => Ok(()),
        rcmd::SENDME if stream == 0 && from != last => {
            Err(HopViolation::SendmeFromWrongHop { from, last })
        }
        rcmd::SENDME if stream == 0 => Ok(()),
        rcmd::DATA
        | rcmd::END
        | rcmd::CONNECTED
        | rcmd::RESOLVED
        | rcmd::DATAGRAM
        | rcmd::DHT_RESPONSE
        | rcmd::DIRECTORY
        | rcmd::SENDME => {
            let owner = owner.unwrap_or(last);
            if from == owner {
                Ok(())
            } else {
                Err(HopViolation::StreamFromWrongHop {
                    cmd,
                    stream,
                    from,
                    owner,
                })
            }
        }
        rcmd::BEGIN => {
            let virtual_hop = (view.keyed > view.built).then_some(last);
            if virtual_hop == Some(from) {
                Ok(())
            } else {
                Err(HopViolation::BeginFromWrongHop { from, virtual_hop })
            }
        }
        rcmd::ESTABLISH_INTRO..=rcmd::RENDEZVOUS2 => {
            let point = view.built.saturating_sub(1);
            if from == point {
                Ok(())
            } else {
                Err(HopViolation::HsFromWrongHop { cmd, from, point })
            }
        }
        // unknown commands are ignored by the caller, whoever sends them
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT3: HopView = HopView { built: 3, keyed: 3 };
    /// A downloader's rendezvous circuit after RENDEZVOUS2: 3 relays + the virtual hop.
    const HIDDEN: HopView = HopView { built: 3, keyed: 4 };

    const STREAM_MSGS: [u8; 8] = [
        rcmd::DATA,
        rcmd::END,
        rcmd::CONNECTED,
        rcmd::RESOLVED,
        rcmd::DATAGRAM,
        rcmd::DHT_RESPONSE,
        rcmd::DIRECTORY,
        rcmd::SENDME,
    ];

    #[test]
    fn stream_messages_only_from_the_streams_hop() {
        for cmd in STREAM_MSGS {
            // the exit answers its own stream
            assert_eq!(check_sender(EXIT3, cmd, 7, 2, Some(2)), Ok(()));
            // the guard and the middle may not
            for from in [0, 1] {
                assert_eq!(
                    check_sender(EXIT3, cmd, 7, from, Some(2)),
                    Err(HopViolation::StreamFromWrongHop {
                        cmd,
                        stream: 7,
                        from,
                        owner: 2
                    })
                );
            }
            // an unknown stream is the last hop's
            assert!(check_sender(EXIT3, cmd, 99, 2, None).is_ok());
            assert!(check_sender(EXIT3, cmd, 99, 1, None).is_err());
        }
    }

    #[test]
    fn the_rendezvous_point_cannot_speak_for_the_other_end() {
        for cmd in STREAM_MSGS {
            assert!(check_sender(HIDDEN, cmd, 3, 3, Some(3)).is_ok());
            for from in 0..3 {
                assert!(
                    check_sender(HIDDEN, cmd, 3, from, Some(3)).is_err(),
                    "{cmd} {from}"
                );
            }
        }
        // streams the other end opens come from the virtual hop only
        assert!(check_sender(HIDDEN, rcmd::BEGIN, 5, 3, None).is_ok());
        assert_eq!(
            check_sender(HIDDEN, rcmd::BEGIN, 5, 2, None),
            Err(HopViolation::BeginFromWrongHop {
                from: 2,
                virtual_hop: Some(3)
            })
        );
        // and never before a rendezvous, whoever sends them
        assert!(check_sender(EXIT3, rcmd::BEGIN, 5, 2, None).is_err());
    }

    #[test]
    fn extended_and_circuit_sendme_only_from_the_last_hop() {
        // while building: two hops so far, the EXTEND went to hop 1
        let building = HopView { built: 3, keyed: 2 };
        assert!(check_sender(building, rcmd::EXTENDED, 0, 1, None).is_ok());
        assert_eq!(
            check_sender(building, rcmd::EXTENDED, 0, 0, None),
            Err(HopViolation::ExtendedFromWrongHop { from: 0, last: 1 })
        );
        assert!(check_sender(EXIT3, rcmd::SENDME, 0, 2, None).is_ok());
        assert_eq!(
            check_sender(EXIT3, rcmd::SENDME, 0, 0, None),
            Err(HopViolation::SendmeFromWrongHop { from: 0, last: 2 })
        );
        assert!(check_sender(HIDDEN, rcmd::SENDME, 0, 2, None).is_err());
    }

    #[test]
    fn hidden_service_messages_only_from_the_point() {
        for cmd in rcmd::ESTABLISH_INTRO..=rcmd::RENDEZVOUS2 {
            assert!(check_sender(EXIT3, cmd, 0, 2, None).is_ok());
            assert!(check_sender(EXIT3, cmd, 0, 0, None).is_err());
            assert!(check_sender(EXIT3, cmd, 0, 1, None).is_err());
            // after the rendezvous the virtual hop is not the point
            assert!(check_sender(HIDDEN, cmd, 0, 3, None).is_err());
        }
    }

    #[test]
    fn padding_and_unknown_commands_from_anyone() {
        for from in 0..3 {
            assert!(check_sender(EXIT3, rcmd::DROP, 0, from, None).is_ok());
            assert!(check_sender(EXIT3, 200, 0, from, None).is_ok());
        }
    }
}

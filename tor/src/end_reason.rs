//! What a Tor exit's END cell, sent in answer to a BEGIN or a RESOLVE, means to warren.
//!
//! tor-spec §6.3 lists the reasons; arti folds several of them into one error kind
//! (`INTERNAL`, `TORPROTOCOL` and `NOTDIRECTORY` all become "Tor protocol violation"), and C tor
//! exits do not answer the same failure with the same reason every time: a BEGIN to a closed port
//! comes back as `MISC` in most runs and as `INTERNAL` in some (older relays report `ENETUNREACH`
//! as `INTERNAL` as well, tor's `connection_ap_process_end_not_open` says so). Mapping by arti's
//! kind made the closed-port case flip between "refused" and "no circuit". This module maps the
//! reason code itself, one documented rule per code, so that the answer is deterministic:
//!
//! | code | name | warren's error | why |
//! |---|---|---|---|
//! | 2 | RESOLVEFAILED | `Resolve` (a RESOLVE) / `Refused` (a BEGIN) | the name does not resolve at the exit |
//! | 5 | DESTROY | `Closed` | the circuit went away under the stream |
//! | 7 | TIMEOUT | `Timeout` | the exit's connect timed out; another try may work |
//! | 9 | HIBERNATING | `NoCircuit` | the exit serves nobody now; another exit would |
//! | 11 | RESOURCELIMIT | `NoCircuit` | the same |
//! | any other (MISC, CONNECTREFUSED, EXITPOLICY, DONE, NOROUTE, INTERNAL, CONNRESET, TORPROTOCOL, NOTDIRECTORY, unknown codes) | | `Refused`, naming the reason | the exit answered about this target |

use overlay::ProviderError;

/// tor-spec's name of END reason `code` ("UNKNOWN" for codes it does not define).
pub fn end_reason_name(code: u8) -> &'static str {
    match code {
        1 => "MISC",
        2 => "RESOLVEFAILED",
        3 => "CONNECTREFUSED",
        4 => "EXITPOLICY",
        5 => "DESTROY",
        6 => "DONE",
        7 => "TIMEOUT",
        8 => "NOROUTE",
        9 => "HIBERNATING",
        10 => "INTERNAL",
        11 => "RESOURCELIMIT",
        12 => "CONNRESET",
        13 => "TORPROTOCOL",
        14 => "NOTDIRECTORY",
        _ => "UNKNOWN",
    }
}

/// The provider error for an END with reason `code` that an exit sent in answer to a request for
/// `what` (a `host:port` or a name); `resolving` when the request was a RESOLVE.
pub fn end_reason_error(code: u8, what: &str, resolving: bool) -> ProviderError {
    let named = format!(
        "the Tor exit ended the stream: {} ({code})",
        end_reason_name(code)
    );
    match code {
        2 if resolving => ProviderError::Resolve(format!("{what}: {named}")),
        5 => ProviderError::Closed(format!("Tor, {what}: {named}")),
        7 => ProviderError::Timeout(format!("Tor, {what}: {named}")),
        9 | 11 => ProviderError::NoCircuit(format!("Tor, {what}: {named}")),
        _ => ProviderError::Refused {
            target: what.to_string(),
            reason: named,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_reason_has_one_rule() {
        for code in 0..=u8::MAX {
            for resolving in [false, true] {
                let e = end_reason_error(code, "10.0.0.1:80", resolving);
                let name = end_reason_name(code);
                // the reason is always named, whatever the variant
                assert!(e.to_string().contains(name), "{code}: {e}");
                let expect = match (code, resolving) {
                    (2, true) => "resolve",
                    (5, _) => "closed",
                    (7, _) => "timeout",
                    (9 | 11, _) => "nocircuit",
                    _ => "refused",
                };
                let got = match e {
                    ProviderError::Resolve(_) => "resolve",
                    ProviderError::Closed(_) => "closed",
                    ProviderError::Timeout(_) => "timeout",
                    ProviderError::NoCircuit(_) => "nocircuit",
                    ProviderError::Refused { .. } => "refused",
                    other => panic!("{code}: unexpected {other:?}"),
                };
                assert_eq!(
                    got, expect,
                    "END reason {code} ({name}), resolving={resolving}"
                );
            }
        }
    }

    #[test]
    fn closed_port_answers_are_refusals_whichever_reason_the_exit_picks() {
        // what C tor exits answer a BEGIN to a closed port with, run to run
        for code in [1u8, 3, 10, 12] {
            let e = end_reason_error(code, "10.213.127.2:7350", false);
            assert!(matches!(e, ProviderError::Refused { .. }), "{e:?}");
        }
    }

    #[test]
    fn names_follow_tor_spec() {
        assert_eq!(end_reason_name(10), "INTERNAL");
        assert_eq!(end_reason_name(1), "MISC");
        assert_eq!(end_reason_name(14), "NOTDIRECTORY");
        assert_eq!(end_reason_name(0), "UNKNOWN");
        assert_eq!(end_reason_name(200), "UNKNOWN");
    }
}

//! One libtorrent seeder script for every test that needs a real BitTorrent seeder, and the log
//! lines it prints so that a test can wait on what the seeder has done instead of sleeping.

use std::path::Path;
use std::time::Duration;

/// Python (python3-libtorrent) that seeds one torrent.
///
/// `argv`: `TORRENT SAVE_DIR LISTEN_IP:PORT [OUTGOING_IP]`. It prints, each on its own line:
/// - [`LISTENING`] once its listen socket is open (a peer may dial it from then on),
/// - [`ANNOUNCED`] on every successful tracker reply (the tracker knows it from then on),
/// - `peer IP` about once a second for each connected peer.
pub const LT_SEED: &str = r#"
import sys, time, libtorrent as lt
torrent, save, iface = sys.argv[1], sys.argv[2], sys.argv[3]
settings = {'listen_interfaces': iface, 'enable_dht': False, 'enable_lsd': False,
    'enable_upnp': False, 'enable_natpmp': False, 'enable_incoming_utp': False,
    'enable_outgoing_utp': False, 'allow_multiple_connections_per_ip': True,
    'announce_to_all_trackers': True,
    'alert_mask': lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.error_notification}
if len(sys.argv) > 4:
    settings['outgoing_interfaces'] = sys.argv[4]
s = lt.session(settings)
p = lt.add_torrent_params(); p.ti = lt.torrent_info(torrent); p.save_path = save
p.flags |= lt.torrent_flags.seed_mode
h = s.add_torrent(p)
print('seeding', flush=True)
last = 0.0
while True:
    s.wait_for_alert(250)
    for a in s.pop_alerts():
        if isinstance(a, lt.listen_succeeded_alert):
            print('listening', flush=True)
        elif isinstance(a, lt.tracker_reply_alert):
            print('announced', flush=True)
        elif isinstance(a, (lt.listen_failed_alert, lt.tracker_error_alert)):
            print('error', a.message(), flush=True)
    if time.time() - last >= 1.0:
        last = time.time()
        for peer in h.get_peer_info():
            print('peer', peer.ip[0], flush=True)
"#;

/// The line [`LT_SEED`] prints once it listens.
pub const LISTENING: &str = "listening";
/// The line [`LT_SEED`] prints after each successful announce.
pub const ANNOUNCED: &str = "announced";

/// Waits until the seeder whose output goes to `log` has printed `line` (a whole line); panics
/// naming what it waited for, with the log, when `timeout` passes first.
pub fn wait_seeder(log: &Path, line: &str, timeout: Duration) {
    let seen = || {
        std::fs::read_to_string(log)
            .map(|t| t.lines().any(|l| l.trim() == line))
            .unwrap_or(false)
    };
    if !crate::proc::wait_until(timeout, seen) {
        panic!(
            "timed out after {} s waiting for the libtorrent seeder to print {line:?}; its log {}:\n{}",
            timeout.as_secs(),
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

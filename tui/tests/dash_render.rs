//! Each dashboard tab rendered with ratatui's TestBackend from a fixed snapshot, at 80x24 and
//! at 120x30, compared line by line with the expected screen.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::Terminal;

use warren::control::{Command, Control, ControlError};
use warren::dash::{render, App, Tab};
use warren::status::*;

fn fixture() -> StatusSnapshot {
    StatusSnapshot {
        node_id: "3f9a2c71".into(),
        uptime_secs: 3725,
        transfers: vec![
            TransferStatus {
                id: 1,
                name: "debian-12.5.0-amd64-netinst.iso".into(),
                infohash: "aa".repeat(20),
                size: 658_505_728,
                done: 296_327_577,
                down_rate: 1_258_291,
                up_rate: 52_428,
                peers: 5,
                eta_secs: Some(289),
                state: TransferState::Downloading,
                hops: 3,
            },
            TransferStatus {
                id: 2,
                name: "big-buck-bunny.mp4".into(),
                infohash: "bb".repeat(20),
                size: 276_445_467,
                done: 276_445_467,
                down_rate: 0,
                up_rate: 310_000,
                peers: 2,
                eta_secs: None,
                state: TransferState::Seeding,
                hops: 2,
            },
            TransferStatus {
                id: 3,
                name: "c12fe1c06bba254a".into(),
                infohash: "cc".repeat(20),
                size: 0,
                done: 0,
                state: TransferState::Metadata,
                hops: 3,
                ..Default::default()
            },
        ],
        circuits: vec![
            CircuitStatus {
                id: 7,
                purpose: CircuitPurpose::Exit,
                hops: vec!["a1b2".into(), "c3d4".into(), "e5f6".into()],
                state: CircuitState::Open,
                age_secs: 125,
                bytes_sent: 1_048_576,
                bytes_received: 73_400_320,
                rtt_ms: Some(84),
            },
            CircuitStatus {
                id: 8,
                purpose: CircuitPurpose::Rendezvous,
                hops: vec!["0f1e".into(), "2d3c".into(), "4b5a".into()],
                state: CircuitState::Open,
                age_secs: 60,
                bytes_sent: 20_480,
                bytes_received: 276_445_467,
                rtt_ms: Some(130),
            },
            CircuitStatus {
                id: 9,
                purpose: CircuitPurpose::Dht,
                hops: vec!["9988".into(), "7766".into()],
                state: CircuitState::Building,
                age_secs: 2,
                ..Default::default()
            },
        ],
        flows: vec![
            FlowStatus {
                source: "10.77.0.2:51234".into(),
                destination: "example.org:443".into(),
                protocol: FlowProtocol::Tcp,
                bytes_sent: 2048,
                bytes_received: 65536,
                circuit: Some(7),
            },
            FlowStatus {
                source: "10.77.0.2:40000".into(),
                destination: "9.9.9.9:53".into(),
                protocol: FlowProtocol::Dns,
                bytes_sent: 40,
                bytes_received: 120,
                circuit: Some(7),
            },
            FlowStatus {
                source: "10.77.0.2:6881".into(),
                destination: "router.bittorrent.com:6881".into(),
                protocol: FlowProtocol::Udp,
                bytes_sent: 300,
                bytes_received: 0,
                circuit: None,
            },
        ],
        network: NetworkStatus {
            links: vec![
                LinkStatus {
                    peer: "a1b2c3d4".into(),
                    addr: "127.0.0.1:7701".into(),
                    outbound: true,
                    age_secs: 300,
                    bytes_sent: 3_145_728,
                    bytes_received: 80_000_000,
                },
                LinkStatus {
                    peer: "0f1e2d3c".into(),
                    addr: "127.0.0.1:7702".into(),
                    outbound: false,
                    age_secs: 61,
                    bytes_sent: 512,
                    bytes_received: 900,
                },
            ],
            dht_nodes: 42,
            relayed_bytes: 5 * 1024 * 1024 * 1024,
            is_exit: true,
            exit_bytes: 123_456_789,
            down_rate: 1_258_291,
            up_rate: 362_428,
            relay_rate: 2_097_152,
            exit_rate: 65_536,
            guards: vec!["7c6b5a49".into(), "a1b2c3d4".into()],
            guard_health: Vec::new(),
        },
        log: vec![
            LogEntry {
                at_secs: 12,
                level: LogLevel::Warn,
                target: "overlay::link".into(),
                message: "link to 127.0.0.1:7703 timed out".into(),
            },
            LogEntry {
                at_secs: 3600,
                level: LogLevel::Error,
                target: "share".into(),
                message: "piece 17 failed its hash check; peer banned".into(),
            },
        ],
    }
}

struct NoControl;
impl Control for NoControl {
    fn request(&mut self, _cmd: Command) -> Result<serde_json::Value, ControlError> {
        Err(ControlError::Closed)
    }
}

fn app_on(tab: Tab) -> App {
    let mut app = App::new();
    let mut snap = fixture();
    // Some history for the sparklines: a ramp, then the fixture's rates.
    let base = snap.network.clone();
    for i in 0..8u64 {
        snap.network.down_rate = i * 150_000;
        snap.network.up_rate = i * 40_000;
        snap.network.relay_rate = i * 250_000;
        snap.network.exit_rate = i * 8_000;
        app.update(snap.clone());
    }
    snap.network = base;
    app.update(snap);
    app.tab = tab;
    app
}

fn render(app: &App, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render::draw(f, app)).unwrap();
    rows(t.backend().buffer())
}

/// The screen as lines, trailing spaces removed.
fn rows(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height)
        .map(|y| {
            let mut s = String::new();
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.trim_end().to_string()
        })
        .collect()
}

fn dump(name: &str, lines: &[String]) {
    if std::env::var_os("DASH_DUMP").is_some() {
        eprintln!("--- {name}");
        for l in lines {
            eprintln!("{l}|");
        }
    }
}

fn check(name: &str, got: &[String], expected: &[&str]) {
    dump(name, got);
    let got: Vec<&str> = got.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        got, expected,
        "{name}: screen differs (DASH_DUMP=1 shows it)"
    );
}

#[test]
fn transfers_80x24() {
    let got = render(&app_on(Tab::Transfers), 80, 24);
    check(
        "transfers 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Transfers (3) ─────────────────────────────────────────────────────────────────",
            "Name              Size    Progress   Down     Up       Peers ETA   State    Hops",
            "debian-12.5.0-amd 628.0M  ██░░░  44% 1.2M/s   51.2K/s  5     4m49s download 3",
            "big-buck-bunny.mp 263.6M  █████ 100% 0B/s     302.7K/s 2     -     seeding  2",
            "c12fe1c06bba254a  ?       ░░░░░   0% 0B/s     0B/s     0     -     metadata 3",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " debian-12.5.0-amd64-netinst.iso ───────────────────────────────────────────────",
            " id 1  infohash aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            " 282.6 MiB of 628.0 MiB (45.0%)  down 1.2 MiB/s  up 51.2 KiB/s",
            " 5 peers  ETA 4m49s  downloading  3 hops",
            " a add  p pause  r resume  d remove  h hops  ? help  q quit",
        ],
    );
}

#[test]
fn transfers_120x30() {
    let got = render(&app_on(Tab::Transfers), 120, 30);
    check(
        "transfers 120x30",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Transfers (3) ─────────────────────────────────────────────────────────────────────────────────────────────────────────",
            "Name                                Size    Progress                  Down       Up         Peers ETA   State       Hops",
            "debian-12.5.0-amd64-netinst.iso     628.0M  █████████░░░░░░░░░░░  44% 1.2M/s     51.2K/s    5     4m49s downloading 3",
            "big-buck-bunny.mp4                  263.6M  ████████████████████ 100% 0B/s       302.7K/s   2     -     seeding     2",
            "c12fe1c06bba254a                    ?       ░░░░░░░░░░░░░░░░░░░░   0% 0B/s       0B/s       0     -     metadata    3",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " debian-12.5.0-amd64-netinst.iso ───────────────────────────────────────────────────────────────────────────────────────",
            " id 1  infohash aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            " 282.6 MiB of 628.0 MiB (45.0%)  down 1.2 MiB/s  up 51.2 KiB/s",
            " 5 peers  ETA 4m49s  downloading  3 hops",
            " a add  p pause  r resume  d remove  h hops  ? help  q quit",
        ],
    );
}

#[test]
fn circuits_80x24() {
    let got = render(&app_on(Tab::Circuits), 80, 24);
    check(
        "circuits 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Circuits (3) ──────────────────────────────────────────────────────────────────",
            "Id    Purpose    Hops                     State    Age    Sent    Recv    RTT",
            "7     exit       a1b2→c3d4→e5f6           open     2m05s  1.0M    70.0M   84ms",
            "8     rendezvous 0f1e→2d3c→4b5a           open     1m00s  20.0K   263.6M  130ms",
            "9     dht        9988→7766                building 2s     0B      0B      -",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

#[test]
fn circuits_120x30() {
    let got = render(&app_on(Tab::Circuits), 120, 30);
    check(
        "circuits 120x30",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Circuits (3) ──────────────────────────────────────────────────────────────────────────────────────────────────────────",
            "Id    Purpose    Hops                                                             State    Age    Sent    Recv    RTT",
            "7     exit       a1b2→c3d4→e5f6                                                   open     2m05s  1.0M    70.0M   84ms",
            "8     rendezvous 0f1e→2d3c→4b5a                                                   open     1m00s  20.0K   263.6M  130ms",
            "9     dht        9988→7766                                                        building 2s     0B      0B      -",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

#[test]
fn tunnel_80x24() {
    let got = render(&app_on(Tab::Tunnel), 80, 24);
    check(
        "tunnel 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Tunnel flows (3) ──────────────────────────────────────────────────────────────",
            "Program               Destination                  Proto Sent    Recv    Circuit",
            "10.77.0.2:51234       example.org:443              tcp   2.0K    64.0K   7",
            "10.77.0.2:40000       9.9.9.9:53                   dns   40B     120B    7",
            "10.77.0.2:6881        router.bittorrent.com:6881   udp   300B    0B      -",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

#[test]
fn tunnel_120x30() {
    let got = render(&app_on(Tab::Tunnel), 120, 30);
    check(
        "tunnel 120x30",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Tunnel flows (3) ──────────────────────────────────────────────────────────────────────────────────────────────────────",
            "Program               Destination                                                          Proto Sent    Recv    Circuit",
            "10.77.0.2:51234       example.org:443                                                      tcp   2.0K    64.0K   7",
            "10.77.0.2:40000       9.9.9.9:53                                                           dns   40B     120B    7",
            "10.77.0.2:6881        router.bittorrent.com:6881                                           udp   300B    0B      -",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

/// A guard flagged by path bias: the Network tab says so in red next to the guard.
#[test]
fn network_shows_a_suspect_guard() {
    let mut app = app_on(Tab::Network);
    let mut snap = fixture();
    snap.network.guard_health = vec![warren::status::GuardHealth {
        id: "7c6b5a49".into(),
        primary: true,
        down_secs: 0,
        circuits: 40,
        succeeded: 6,
        suspect: true,
    }];
    app.update(snap);
    let got = render(&app, 120, 30);
    dump("network suspect guard", &got);
    assert!(
        got[2].contains("Guard 7c6b5a49 (+1 spare) built 15%  ⚠ guard 7c6b5a49 drops circuits"),
        "{:?}",
        got[2]
    );
}

#[test]
fn network_80x24() {
    let got = render(&app_on(Tab::Network), 80, 24);
    check(
        "network 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Node 3f9a2c71  Up 1h02m  Links 2  DHT nodes 42",
            " Relayed 5.0 GiB  Exit 117.7 MiB  Guard 7c6b5a49 (+1 spare)",
            " Down                                                                       ▁▃▅█",
            " 1.2 MiB/s                                                              ▁▃▅▇████",
            " Up                                                                          ▂▄█",
            " 353.9 KiB/s                                                            ▁▃▅▇████",
            " Relay                                                                      ▁▃▅█",
            " 2.0 MiB/s                                                              ▁▃▅▇████",
            " Exit                                                                       ▁▃▅█",
            " 64.0 KiB/s                                                             ▁▃▅▇████",
            " Links (2) ─────────────────────────────────────────────────────────────────────",
            "Peer       Address                                   Dir  Age    Sent    Recv",
            "a1b2c3d4   127.0.0.1:7701                            out  5m00s  3.0M    76.3M",
            "0f1e2d3c   127.0.0.1:7702                            in   1m01s  512B    900B",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

#[test]
fn network_120x30() {
    let got = render(&app_on(Tab::Network), 120, 30);
    check(
        "network 120x30",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Node 3f9a2c71  Up 1h02m  Links 2  DHT nodes 42",
            " Relayed 5.0 GiB  Exit 117.7 MiB  Guard 7c6b5a49 (+1 spare)",
            " Down                                                                                                               ▁▃▅█",
            " 1.2 MiB/s                                                                                                      ▁▃▅▇████",
            " Up                                                                                                                  ▂▄█",
            " 353.9 KiB/s                                                                                                    ▁▃▅▇████",
            " Relay                                                                                                              ▁▃▅█",
            " 2.0 MiB/s                                                                                                      ▁▃▅▇████",
            " Exit                                                                                                               ▁▃▅█",
            " 64.0 KiB/s                                                                                                     ▁▃▅▇████",
            " Links (2) ─────────────────────────────────────────────────────────────────────────────────────────────────────────────",
            "Peer       Address                                                                           Dir  Age    Sent    Recv",
            "a1b2c3d4   127.0.0.1:7701                                                                    out  5m00s  3.0M    76.3M",
            "0f1e2d3c   127.0.0.1:7702                                                                    in   1m01s  512B    900B",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

#[test]
fn log_80x24() {
    let got = render(&app_on(Tab::Log), 80, 24);
    check(
        "log 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Log (2) ───────────────────────────────────────────────────────────────────────",
            "At     Level Source         Message",
            "12s    WARN  overlay::link  link to 127.0.0.1:7703 timed out",
            "1h00m  ERROR share          piece 17 failed its hash check; peer banned",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

#[test]
fn log_120x30() {
    let got = render(&app_on(Tab::Log), 120, 30);
    check(
        "log 120x30",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Log (2) ───────────────────────────────────────────────────────────────────────────────────────────────────────────────",
            "At     Level Source         Message",
            "12s    WARN  overlay::link  link to 127.0.0.1:7703 timed out",
            "1h00m  ERROR share          piece 17 failed its hash check; peer banned",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        ],
    );
}

#[test]
fn empty_snapshot_80x24() {
    let app = App::new();
    let got = render(&app, 80, 24);
    check(
        "empty 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Transfers (0) ─────────────────────────────────────────────────────────────────",
            " No transfers. Press a to add a magnet link.",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            " a add  p pause  r resume  d remove  h hops  ? help  q quit",
        ],
    );
}

#[test]
fn popups_80x24() {
    let mut ctl = NoControl;
    let mut app = app_on(Tab::Transfers);
    app.handle_key(KeyEvent::from(KeyCode::Char('?')), &mut ctl);
    let got = render(&app, 80, 24);
    check(
        "help 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Transfers (3) ─────────────────────────────────────────────────────────────────",
            "Name              Size    Progress   Down     Up       Peers ETA   State    Hops",
            "debian-12.5.0-amd 628.0M  ██░░░  44% 1.2M/s   51.2K/s  5     4m49s download 3",
            "big-buck-bunny.mp 263.6M  █████ 100% 0B/s     302.7K/s 2     -     seeding  2",
            "c12fe┌ Keys ──────────────────────────────────────────────────────────────┐ 3",
            "     │ Tab / Shift-Tab next / previous tab                                │",
            "     │ 1-5             Transfers, Circuits, Tunnel, Network, Log          │",
            "     │ ↑ ↓ / j k       select a row                                       │",
            "     │ a               add a magnet link                                  │",
            "     │ p               pause the selected transfer                        │",
            "     │ r               resume the selected transfer                       │",
            "     │ d / Delete      remove (then y: keep data, D: delete data)         │",
            "     │ h               set the hop count of the selected transfer         │",
            "     │ + / -           one hop more / fewer                               │",
            "     │ Esc             close a prompt, clear the message                  │",
            "     │ ?               this help                                          │",
            "     │ q / Ctrl-C      quit the dashboard (the node keeps running)        │",
            "     │                 any key closes this help                           │",
            " debi└────────────────────────────────────────────────────────────────────┘─────",
            " id 1  infohash aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            " 282.6 MiB of 628.0 MiB (45.0%)  down 1.2 MiB/s  up 51.2 KiB/s",
            " 5 peers  ETA 4m49s  downloading  3 hops",
            " a add  p pause  r resume  d remove  h hops  ? help  q quit",
        ],
    );

    let mut app = app_on(Tab::Transfers);
    for c in "amagnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x".chars() {
        app.handle_key(KeyEvent::from(KeyCode::Char(c)), &mut ctl);
    }
    let got = render(&app, 80, 24);
    check(
        "add prompt 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Transfers (3) ─────────────────────────────────────────────────────────────────",
            "Name              Size    Progress   Down     Up       Peers ETA   State    Hops",
            "debian-12.5.0-amd 628.0M  ██░░░  44% 1.2M/s   51.2K/s  5     4m49s download 3",
            "big-buck-bunny.mp 263.6M  █████ 100% 0B/s     302.7K/s 2     -     seeding  2",
            "c12fe1c06bba254a  ?       ░░░░░   0% 0B/s     0B/s     0     -     metadata 3",
            "",
            "",
            "",
            "",
            "  ┌ Add magnet ──────────────────────────────────────────────────────────────┐",
            "  │ Paste a magnet link, Enter to add, Esc to cancel:                        │",
            "  │                                                                          │",
            "  │ magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x▏       │",
            "  └──────────────────────────────────────────────────────────────────────────┘",
            "",
            "",
            "",
            "",
            " debian-12.5.0-amd64-netinst.iso ───────────────────────────────────────────────",
            " id 1  infohash aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            " 282.6 MiB of 628.0 MiB (45.0%)  down 1.2 MiB/s  up 51.2 KiB/s",
            " 5 peers  ETA 4m49s  downloading  3 hops",
            " a add  p pause  r resume  d remove  h hops  ? help  q quit",
        ],
    );

    let mut app = app_on(Tab::Transfers);
    app.handle_key(KeyEvent::from(KeyCode::Char('d')), &mut ctl);
    let got = render(&app, 80, 24);
    check(
        "remove confirm 80x24",
        &got,
        &[
            " warren  1 Transfers │ 2 Circuits │ 3 Tunnel │ 4 Network │ 5 Log",
            " Transfers (3) ─────────────────────────────────────────────────────────────────",
            "Name              Size    Progress   Down     Up       Peers ETA   State    Hops",
            "debian-12.5.0-amd 628.0M  ██░░░  44% 1.2M/s   51.2K/s  5     4m49s download 3",
            "big-buck-bunny.mp 263.6M  █████ 100% 0B/s     302.7K/s 2     -     seeding  2",
            "c12fe1c06bba254a  ?       ░░░░░   0% 0B/s     0B/s     0     -     metadata 3",
            "",
            "",
            "",
            "          ┌ Remove transfer ─────────────────────────────────────────┐",
            "          │ Remove debian-12.5.0-amd64-netinst.iso?                  │",
            "          │                                                          │",
            "          │ y keep data   D delete data too   n cancel               │",
            "          │                                                          │",
            "          └──────────────────────────────────────────────────────────┘",
            "",
            "",
            "",
            "",
            " debian-12.5.0-amd64-netinst.iso ───────────────────────────────────────────────",
            " id 1  infohash aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            " 282.6 MiB of 628.0 MiB (45.0%)  down 1.2 MiB/s  up 51.2 KiB/s",
            " 5 peers  ETA 4m49s  downloading  3 hops",
            " a add  p pause  r resume  d remove  h hops  ? help  q quit",
        ],
    );
}

#[test]
fn tiny_terminal_does_not_panic() {
    for tab in Tab::ALL {
        let app = app_on(tab);
        for (w, h) in [(1, 1), (10, 3), (40, 10), (80, 5)] {
            render(&app, w, h);
        }
    }
}

/// The real loop on a TestBackend: scripted keys, then q; it draws and exits.
#[test]
fn run_loop_draws_switches_tabs_and_quits() {
    struct SnapControl(StatusSnapshot, usize);
    impl Control for SnapControl {
        fn request(&mut self, cmd: Command) -> Result<serde_json::Value, ControlError> {
            assert_eq!(cmd, Command::Status);
            self.1 += 1;
            Ok(serde_json::to_value(&self.0).unwrap())
        }
    }
    let mut ctl = SnapControl(fixture(), 0);
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let mut script = vec![
        Some(crossterm::event::Event::Key(KeyEvent::from(KeyCode::Char(
            '2',
        )))),
        Some(crossterm::event::Event::Resize(100, 30)),
        None,
        Some(crossterm::event::Event::Key(KeyEvent::from(KeyCode::Char(
            'q',
        )))),
    ]
    .into_iter();
    let start = std::time::Instant::now();
    warren::dash::run_on(&mut t, &mut ctl, &mut |_timeout| {
        Ok(script.next().flatten())
    })
    .unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert!(ctl.1 >= 1, "fetched a snapshot");
    let screen = rows(t.backend().buffer());
    assert!(screen[1].starts_with(" Circuits (3) "), "{screen:#?}");
}

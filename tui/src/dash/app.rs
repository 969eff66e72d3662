//! Dashboard state and input handling (no terminal here: keys in, commands out, state changed).

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::control::{Command, Control, HOPS_RANGE};
use crate::status::{StatusSnapshot, TransferId, TransferStatus};

/// The tabs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Transfers,
    Circuits,
    Tunnel,
    Network,
    Log,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Transfers,
        Tab::Circuits,
        Tab::Tunnel,
        Tab::Network,
        Tab::Log,
    ];

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|&t| t == self).unwrap_or(0)
    }

    pub fn title(self) -> &'static str {
        match self {
            Tab::Transfers => "Transfers",
            Tab::Circuits => "Circuits",
            Tab::Tunnel => "Tunnel",
            Tab::Network => "Network",
            Tab::Log => "Log",
        }
    }

    fn next(self) -> Tab {
        Tab::ALL[(self.index() + 1) % Tab::ALL.len()]
    }

    fn prev(self) -> Tab {
        Tab::ALL[(self.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
    }
}

/// What the keyboard is talking to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing a magnet link.
    AddMagnet {
        input: String,
    },
    /// Confirming removal of a transfer.
    ConfirmRemove {
        id: TransferId,
        name: String,
    },
    /// Typing a new hop count for a transfer.
    SetHops {
        id: TransferId,
        input: String,
    },
}

/// Samples kept for the sparklines (one per snapshot).
pub const HISTORY_LEN: usize = 240;

/// Rate history for the Network tab's sparklines.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub down: VecDeque<u64>,
    pub up: VecDeque<u64>,
    pub relay: VecDeque<u64>,
    pub exit: VecDeque<u64>,
}

impl History {
    fn push(&mut self, snap: &StatusSnapshot) {
        let n = &snap.network;
        for (q, v) in [
            (&mut self.down, n.down_rate),
            (&mut self.up, n.up_rate),
            (&mut self.relay, n.relay_rate),
            (&mut self.exit, n.exit_rate),
        ] {
            if q.len() == HISTORY_LEN {
                q.pop_front();
            }
            q.push_back(v);
        }
    }
}

/// A one-line message in the footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub error: bool,
}

/// The dashboard's whole state.
#[derive(Debug, Clone)]
pub struct App {
    pub tab: Tab,
    pub mode: Mode,
    pub snapshot: StatusSnapshot,
    /// Selected row per tab.
    pub selected: [usize; 5],
    pub message: Option<Message>,
    pub history: History,
    pub quit: bool,
    /// Last error talking to the node, shown until a snapshot arrives again.
    pub link_error: Option<String>,
    /// The Log tab keeps the newest entry selected until the user moves up.
    pub log_follow: bool,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl App {
    pub fn new() -> App {
        App {
            tab: Tab::Transfers,
            mode: Mode::Normal,
            snapshot: StatusSnapshot::default(),
            selected: [0; 5],
            message: None,
            history: History::default(),
            quit: false,
            link_error: None,
            log_follow: true,
        }
    }

    /// Takes a new snapshot from the node.
    pub fn update(&mut self, snap: StatusSnapshot) {
        self.history.push(&snap);
        self.snapshot = snap;
        self.link_error = None;
        for tab in Tab::ALL {
            let len = self.rows(tab);
            let sel = &mut self.selected[tab.index()];
            if *sel >= len || (tab == Tab::Log && self.log_follow) {
                *sel = len.saturating_sub(1);
            }
        }
    }

    /// Fetches a snapshot through `ctl` and takes it (or records the error).
    pub fn refresh(&mut self, ctl: &mut dyn Control) {
        match ctl.snapshot() {
            Ok(s) => self.update(s),
            Err(e) => self.link_error = Some(e.to_string()),
        }
    }

    /// Number of selectable rows on `tab`.
    pub fn rows(&self, tab: Tab) -> usize {
        let s = &self.snapshot;
        match tab {
            Tab::Transfers => s.transfers.len(),
            Tab::Circuits => s.circuits.len(),
            Tab::Tunnel => s.flows.len(),
            Tab::Network => s.network.links.len(),
            Tab::Log => s.log.len(),
        }
    }

    pub fn selected_row(&self) -> usize {
        self.selected[self.tab.index()]
    }

    /// The transfer under the cursor on the Transfers tab.
    pub fn selected_transfer(&self) -> Option<&TransferStatus> {
        self.snapshot
            .transfers
            .get(self.selected[Tab::Transfers.index()])
    }

    fn info(&mut self, text: impl Into<String>) {
        self.message = Some(Message {
            text: text.into(),
            error: false,
        });
    }

    fn error(&mut self, text: impl Into<String>) {
        self.message = Some(Message {
            text: text.into(),
            error: true,
        });
    }

    /// Sends `cmd`, reporting `done` or the error in the footer.
    fn command(&mut self, ctl: &mut dyn Control, cmd: Command, done: String) {
        match ctl.request(cmd) {
            Ok(_) => {
                self.info(done);
                self.refresh(ctl);
            }
            Err(e) => self.error(e.to_string()),
        }
    }

    /// Handles one key.
    pub fn handle_key(&mut self, key: KeyEvent, ctl: &mut dyn Control) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        match self.mode.clone() {
            Mode::Normal => self.key_normal(key, ctl),
            Mode::Help => {
                // Any key closes the help; q still quits.
                self.mode = Mode::Normal;
                if key.code == KeyCode::Char('q') {
                    self.quit = true;
                }
            }
            Mode::AddMagnet { mut input } => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    let magnet = input.trim().to_string();
                    if magnet.is_empty() {
                        return;
                    }
                    if !magnet.starts_with("magnet:?") {
                        self.error("not a magnet link (it must start with magnet:?)");
                        return;
                    }
                    let cmd = Command::Add {
                        magnet,
                        dir: None,
                        hops: None,
                    };
                    self.command(ctl, cmd, "added".into());
                }
                KeyCode::Backspace => {
                    input.pop();
                    self.mode = Mode::AddMagnet { input };
                }
                KeyCode::Char(c) => {
                    input.push(c);
                    self.mode = Mode::AddMagnet { input };
                }
                _ => {}
            },
            Mode::ConfirmRemove { id, name } => match key.code {
                KeyCode::Char('y') => {
                    self.mode = Mode::Normal;
                    let cmd = Command::Remove {
                        transfer: id,
                        delete_data: false,
                    };
                    self.command(ctl, cmd, format!("removed {name} (data kept)"));
                }
                KeyCode::Char('D') => {
                    self.mode = Mode::Normal;
                    let cmd = Command::Remove {
                        transfer: id,
                        delete_data: true,
                    };
                    self.command(ctl, cmd, format!("removed {name} and its data"));
                }
                KeyCode::Char('n') | KeyCode::Esc | KeyCode::Char('q') => self.mode = Mode::Normal,
                _ => {}
            },
            Mode::SetHops { id, mut input } => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => {
                    self.mode = Mode::Normal;
                    match input.parse::<u8>() {
                        Ok(h) if HOPS_RANGE.contains(&h) => {
                            let cmd = Command::SetHops {
                                transfer: id,
                                hops: h,
                            };
                            self.command(ctl, cmd, format!("hop count set to {h}"));
                        }
                        _ => self.error(format!(
                            "hop count must be {}-{}",
                            HOPS_RANGE.start(),
                            HOPS_RANGE.end()
                        )),
                    }
                }
                KeyCode::Backspace => {
                    input.pop();
                    self.mode = Mode::SetHops { id, input };
                }
                KeyCode::Char(c) if c.is_ascii_digit() && input.len() < 2 => {
                    input.push(c);
                    self.mode = Mode::SetHops { id, input };
                }
                _ => {}
            },
        }
    }

    fn key_normal(&mut self, key: KeyEvent, ctl: &mut dyn Control) {
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Tab => self.tab = self.tab.next(),
            KeyCode::BackTab => self.tab = self.tab.prev(),
            KeyCode::Char(c @ '1'..='5') => {
                self.tab = Tab::ALL[(c as usize) - ('1' as usize)];
            }
            KeyCode::Down | KeyCode::Char('j') => {
                let len = self.rows(self.tab);
                let sel = &mut self.selected[self.tab.index()];
                if *sel + 1 < len {
                    *sel += 1;
                }
                if self.tab == Tab::Log && *sel + 1 >= len {
                    self.log_follow = true;
                }
            }
            KeyCode::Up | KeyCode::Char('k') => {
                let sel = &mut self.selected[self.tab.index()];
                *sel = sel.saturating_sub(1);
                if self.tab == Tab::Log {
                    self.log_follow = false;
                }
            }
            KeyCode::Home => {
                self.selected[self.tab.index()] = 0;
                if self.tab == Tab::Log {
                    self.log_follow = false;
                }
            }
            KeyCode::End => {
                self.selected[self.tab.index()] = self.rows(self.tab).saturating_sub(1);
                if self.tab == Tab::Log {
                    self.log_follow = true;
                }
            }
            KeyCode::Esc => self.message = None,
            KeyCode::Char('a') => {
                self.tab = Tab::Transfers;
                self.mode = Mode::AddMagnet {
                    input: String::new(),
                };
            }
            KeyCode::Char('p' | 'r' | 'd' | 'h' | '+' | '-') | KeyCode::Delete => {
                self.key_transfer(key, ctl)
            }
            _ => {}
        }
    }

    /// Keys acting on the selected transfer (Transfers tab only).
    fn key_transfer(&mut self, key: KeyEvent, ctl: &mut dyn Control) {
        if self.tab != Tab::Transfers {
            self.error("switch to the Transfers tab (1) to act on a transfer");
            return;
        }
        let Some(t) = self.selected_transfer() else {
            self.error("no transfer selected (a adds one)");
            return;
        };
        let (id, name, hops) = (t.id, t.name.clone(), t.hops);
        match key.code {
            KeyCode::Char('p') => self.command(
                ctl,
                Command::Pause { transfer: id },
                format!("paused {name}"),
            ),
            KeyCode::Char('r') => self.command(
                ctl,
                Command::Resume { transfer: id },
                format!("resumed {name}"),
            ),
            KeyCode::Char('d') | KeyCode::Delete => {
                self.mode = Mode::ConfirmRemove { id, name };
            }
            KeyCode::Char('h') => {
                self.mode = Mode::SetHops {
                    id,
                    input: hops.to_string(),
                };
            }
            KeyCode::Char('+') | KeyCode::Char('-') => {
                let h = if key.code == KeyCode::Char('+') {
                    hops.saturating_add(1)
                } else {
                    hops.saturating_sub(1)
                };
                if HOPS_RANGE.contains(&h) {
                    let cmd = Command::SetHops {
                        transfer: id,
                        hops: h,
                    };
                    self.command(ctl, cmd, format!("hop count set to {h}"));
                } else {
                    self.error(format!(
                        "hop count stays within {}-{}",
                        HOPS_RANGE.start(),
                        HOPS_RANGE.end()
                    ));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlError;
    use crate::status::TransferState;

    /// Records commands; answers status with a fixed snapshot.
    struct FakeControl {
        sent: Vec<Command>,
        snap: StatusSnapshot,
        fail: Option<String>,
    }

    impl Control for FakeControl {
        fn request(&mut self, cmd: Command) -> Result<serde_json::Value, ControlError> {
            if cmd == Command::Status {
                return Ok(serde_json::to_value(&self.snap).unwrap());
            }
            self.sent.push(cmd);
            match &self.fail {
                Some(e) => Err(ControlError::Node(e.clone())),
                None => Ok(serde_json::Value::Null),
            }
        }
    }

    fn snap() -> StatusSnapshot {
        let t = |id, name: &str| TransferStatus {
            id,
            name: name.into(),
            size: 100,
            state: TransferState::Downloading,
            hops: 3,
            ..Default::default()
        };
        StatusSnapshot {
            transfers: vec![t(10, "alpha"), t(20, "beta")],
            ..Default::default()
        }
    }

    fn setup() -> (App, FakeControl) {
        let mut ctl = FakeControl {
            sent: vec![],
            snap: snap(),
            fail: None,
        };
        let mut app = App::new();
        app.refresh(&mut ctl);
        (app, ctl)
    }

    fn press(app: &mut App, ctl: &mut FakeControl, keys: &str) {
        for c in keys.chars() {
            app.handle_key(KeyEvent::from(KeyCode::Char(c)), ctl);
        }
    }

    fn key(app: &mut App, ctl: &mut FakeControl, code: KeyCode) {
        app.handle_key(KeyEvent::from(code), ctl);
    }

    #[test]
    fn add_prompt_sends_typed_magnet() {
        let (mut app, mut ctl) = setup();
        press(&mut app, &mut ctl, "a");
        assert_eq!(
            app.mode,
            Mode::AddMagnet {
                input: String::new()
            }
        );
        // Letters typed in the prompt are text, not commands (q does not quit, p does not pause).
        press(&mut app, &mut ctl, "magnet:?xt=urn:btih:qpX");
        key(&mut app, &mut ctl, KeyCode::Backspace);
        key(&mut app, &mut ctl, KeyCode::Enter);
        assert!(!app.quit);
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(
            ctl.sent,
            vec![Command::Add {
                magnet: "magnet:?xt=urn:btih:qp".into(),
                dir: None,
                hops: None
            }]
        );
        assert_eq!(app.message.as_ref().unwrap().text, "added");
    }

    #[test]
    fn add_prompt_escape_and_garbage() {
        let (mut app, mut ctl) = setup();
        press(&mut app, &mut ctl, "ahttp://x");
        key(&mut app, &mut ctl, KeyCode::Esc);
        assert_eq!(app.mode, Mode::Normal);
        press(&mut app, &mut ctl, "ahttp://x");
        key(&mut app, &mut ctl, KeyCode::Enter);
        assert!(ctl.sent.is_empty());
        assert!(app.message.as_ref().unwrap().error);
    }

    #[test]
    fn pause_resume_on_selected_transfer() {
        let (mut app, mut ctl) = setup();
        press(&mut app, &mut ctl, "p");
        key(&mut app, &mut ctl, KeyCode::Down);
        press(&mut app, &mut ctl, "r");
        key(&mut app, &mut ctl, KeyCode::Down); // stays on the last row
        press(&mut app, &mut ctl, "kp");
        assert_eq!(
            ctl.sent,
            vec![
                Command::Pause { transfer: 10 },
                Command::Resume { transfer: 20 },
                Command::Pause { transfer: 10 },
            ]
        );
        assert_eq!(app.message.as_ref().unwrap().text, "paused alpha");
    }

    #[test]
    fn remove_with_and_without_data() {
        let (mut app, mut ctl) = setup();
        press(&mut app, &mut ctl, "d");
        assert_eq!(
            app.mode,
            Mode::ConfirmRemove {
                id: 10,
                name: "alpha".into()
            }
        );
        press(&mut app, &mut ctl, "n");
        assert!(ctl.sent.is_empty());
        press(&mut app, &mut ctl, "dy");
        press(&mut app, &mut ctl, "j");
        key(&mut app, &mut ctl, KeyCode::Delete);
        press(&mut app, &mut ctl, "D");
        assert_eq!(
            ctl.sent,
            vec![
                Command::Remove {
                    transfer: 10,
                    delete_data: false
                },
                Command::Remove {
                    transfer: 20,
                    delete_data: true
                },
            ]
        );
    }

    #[test]
    fn set_hops_prompt_and_quick_keys() {
        let (mut app, mut ctl) = setup();
        press(&mut app, &mut ctl, "h");
        assert_eq!(
            app.mode,
            Mode::SetHops {
                id: 10,
                input: "3".into()
            }
        );
        key(&mut app, &mut ctl, KeyCode::Backspace);
        press(&mut app, &mut ctl, "1");
        key(&mut app, &mut ctl, KeyCode::Enter);
        // Out of range: refused locally.
        press(&mut app, &mut ctl, "h");
        key(&mut app, &mut ctl, KeyCode::Backspace);
        press(&mut app, &mut ctl, "7");
        key(&mut app, &mut ctl, KeyCode::Enter);
        assert!(app.message.as_ref().unwrap().error);
        press(&mut app, &mut ctl, "-+");
        assert_eq!(
            ctl.sent,
            vec![
                Command::SetHops {
                    transfer: 10,
                    hops: 1
                },
                Command::SetHops {
                    transfer: 10,
                    hops: 2
                },
            ]
        );
    }

    #[test]
    fn node_errors_are_shown() {
        let (mut app, mut ctl) = setup();
        ctl.fail = Some("no transfer 10".into());
        press(&mut app, &mut ctl, "p");
        let m = app.message.clone().unwrap();
        assert!(m.error);
        assert!(m.text.contains("no transfer 10"), "{}", m.text);
    }

    #[test]
    fn tab_switching_and_quit() {
        let (mut app, mut ctl) = setup();
        key(&mut app, &mut ctl, KeyCode::Tab);
        assert_eq!(app.tab, Tab::Circuits);
        key(&mut app, &mut ctl, KeyCode::BackTab);
        key(&mut app, &mut ctl, KeyCode::BackTab);
        assert_eq!(app.tab, Tab::Log);
        press(&mut app, &mut ctl, "3");
        assert_eq!(app.tab, Tab::Tunnel);
        // Transfer keys elsewhere do nothing but explain.
        press(&mut app, &mut ctl, "p");
        assert!(ctl.sent.is_empty());
        press(&mut app, &mut ctl, "?");
        assert_eq!(app.mode, Mode::Help);
        press(&mut app, &mut ctl, "x");
        assert_eq!(app.mode, Mode::Normal);
        assert!(!app.quit);
        press(&mut app, &mut ctl, "q");
        assert!(app.quit);
    }

    #[test]
    fn log_follows_newest_until_user_scrolls_up() {
        let (mut app, mut ctl) = setup();
        let entry = |n: u64| crate::status::LogEntry {
            at_secs: n,
            message: format!("m{n}"),
            ..Default::default()
        };
        ctl.snap.log = (0..5).map(entry).collect();
        app.refresh(&mut ctl);
        press(&mut app, &mut ctl, "5");
        assert_eq!(app.selected_row(), 4);
        ctl.snap.log.push(entry(5));
        app.refresh(&mut ctl);
        assert_eq!(app.selected_row(), 5);
        press(&mut app, &mut ctl, "k");
        ctl.snap.log.push(entry(6));
        app.refresh(&mut ctl);
        assert_eq!(app.selected_row(), 4, "stays where the user scrolled");
        key(&mut app, &mut ctl, KeyCode::End);
        ctl.snap.log.push(entry(7));
        app.refresh(&mut ctl);
        assert_eq!(app.selected_row(), 7);
    }

    #[test]
    fn selection_clamped_when_rows_vanish() {
        let (mut app, mut ctl) = setup();
        press(&mut app, &mut ctl, "j");
        assert_eq!(app.selected_row(), 1);
        ctl.snap.transfers.pop();
        app.refresh(&mut ctl);
        assert_eq!(app.selected_row(), 0);
    }
}

//! The live dashboard (ratatui + crossterm) and the plain-text progress renderer.
//!
//! The dashboard reads [`crate::status::StatusSnapshot`]s and sends
//! [`crate::control::Command`]s through a [`Control`]; it never touches engine internals.

pub mod app;
pub mod plain;
pub mod render;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};
use ratatui::backend::Backend;
use ratatui::Terminal;

pub use app::{App, Mode, Tab};

use crate::control::Control;

/// Redraw period: steady, independent of input.
pub const FRAME: Duration = Duration::from_millis(250);
/// How often a fresh snapshot is fetched.
pub const REFRESH: Duration = Duration::from_millis(1000);

/// Runs the dashboard on the real terminal until the user quits. Blocking: call it from a plain
/// thread (or `spawn_blocking`), not from inside an async task.
pub fn run(ctl: &mut dyn Control) -> std::io::Result<()> {
    run_until(ctl, &AtomicBool::new(false))
}

/// [`run`] that also ends (within a frame) once `stop` is set.
pub fn run_until(ctl: &mut dyn Control, stop: &AtomicBool) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = run_on(&mut terminal, ctl, &mut |timeout| {
        if stop.load(Ordering::Relaxed) {
            // what Ctrl-C does in every mode
            return Ok(Some(Event::Key(event::KeyEvent::new(
                event::KeyCode::Char('c'),
                event::KeyModifiers::CONTROL,
            ))));
        }
        if event::poll(timeout)? {
            Ok(Some(event::read()?))
        } else {
            Ok(None)
        }
    });
    ratatui::restore();
    result
}

/// The loop behind [`run`], on any backend and event source (tests drive it with a TestBackend).
/// `next_event(timeout)` waits at most `timeout` for an input event.
pub fn run_on<B: Backend>(
    terminal: &mut Terminal<B>,
    ctl: &mut dyn Control,
    next_event: &mut dyn FnMut(Duration) -> std::io::Result<Option<Event>>,
) -> std::io::Result<()> {
    let mut app = App::new();
    app.refresh(ctl);
    let mut last_refresh = Instant::now();
    let mut next_frame = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_frame {
            if last_refresh.elapsed() >= REFRESH {
                app.refresh(ctl);
                last_refresh = Instant::now();
            }
            terminal.draw(|f| render::draw(f, &app))?;
            next_frame = now + FRAME;
        }
        match next_event(next_frame.saturating_duration_since(Instant::now()))? {
            Some(Event::Key(k)) => {
                app.handle_key(k, ctl);
                if app.quit {
                    return Ok(());
                }
                terminal.draw(|f| render::draw(f, &app))?;
            }
            Some(Event::Resize(_, _)) => {
                terminal.autoresize()?;
                terminal.draw(|f| render::draw(f, &app))?;
            }
            Some(_) | None => {}
        }
    }
}

/// Whether the dashboard should be used: stdout is a terminal and `--no-tui` was not given.
pub fn want_tui(no_tui: bool) -> bool {
    use std::io::IsTerminal;
    !no_tui && std::io::stdout().is_terminal()
}

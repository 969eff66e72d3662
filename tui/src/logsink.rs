//! Where warren's own log lines go: stderr, or a file once a command asks for it (`warren
//! tunnel -- CMD` when the program owns the terminal: nothing of warren's is drawn over it).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

static FILE: Mutex<Option<File>> = Mutex::new(None);

/// From now on, log lines are appended to `path` instead of stderr.
pub fn redirect_to(path: &Path) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// The writer for `tracing_subscriber::fmt().with_writer(logsink::writer)`.
pub fn writer() -> LogWriter {
    LogWriter
}

/// Writes one log record to the file if one is set, else to stderr.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = FILE.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(f) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut g = FILE.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(f) => f.flush(),
            None => io::stderr().flush(),
        }
    }
}

//! `warren`: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = warren::cli::Cli::parse();
    // `warren tunnel -- CMD` exits with the program's status, and 125-127 for its own failures
    let wrapper = cli.command.wraps_a_program();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.global.log_level()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(warren::logsink::writer)
        // colour only for a terminal: log files (and `warren tunnel`'s, see logsink) stay plain
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && !wrapper)
        .init();
    let paths = warren::config::Paths::from_env();
    // not locked for the whole run: the dashboard writes to the terminal from its own thread
    let mut out = std::io::stdout();
    match warren::commands::run_command(cli, &paths, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            let (code, message) = warren::exit::for_error(&e, wrapper);
            if let Some(m) = message {
                eprintln!("warren: error: {m}");
            }
            ExitCode::from(code)
        }
    }
}

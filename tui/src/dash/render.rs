//! Drawing the dashboard: one function per tab, all from [`App`] (which holds the snapshot).
//! Works from 80x24 up; narrow terminals get narrower columns.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Tabs, Wrap,
};
use ratatui::Frame;

use super::app::{App, Mode, Tab};
use crate::status::{fmt_bytes, fmt_duration, fmt_rate, LogLevel, TransferState};

const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame, app: &App) {
    let [top, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_tabs(frame, app, top);
    match app.tab {
        Tab::Transfers => draw_transfers(frame, app, body),
        Tab::Circuits => draw_circuits(frame, app, body),
        Tab::Tunnel => draw_tunnel(frame, app, body),
        Tab::Network => draw_network(frame, app, body),
        Tab::Log => draw_log(frame, app, body),
    }
    draw_footer(frame, app, footer);
    match &app.mode {
        Mode::Normal => {}
        Mode::Help => draw_help(frame),
        Mode::AddMagnet { input } => draw_prompt(
            frame,
            "Add magnet",
            "Paste a magnet link, Enter to add, Esc to cancel:",
            input,
        ),
        Mode::SetHops { input, .. } => draw_prompt(
            frame,
            "Hop count",
            "New circuit hop count (1-3), Enter to apply, Esc to cancel:",
            input,
        ),
        Mode::ConfirmRemove { name, .. } => draw_confirm(frame, name),
    }
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let [brand, tabs] = Layout::horizontal([Constraint::Length(8), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(" warren").bold(), brand);
    let titles = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {}", i + 1, t.title()));
    let w = Tabs::new(titles)
        .select(app.tab.index())
        .highlight_style(
            Style::new()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )
        .divider("│");
    frame.render_widget(w, tabs);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let line = if let Some(e) = &app.link_error {
        Line::from(Span::styled(
            format!(" node unreachable: {e}"),
            Style::new().fg(Color::Red),
        ))
    } else if let Some(m) = &app.message {
        let style = if m.error {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Green)
        };
        Line::from(Span::styled(format!(" {}", m.text), style))
    } else {
        let hints = match app.tab {
            Tab::Transfers => " a add  p pause  r resume  d remove  h hops  ? help  q quit",
            _ => " Tab/1-5 switch  ↑↓ select  a add magnet  ? help  q quit",
        };
        Line::from(Span::styled(hints, Style::new().fg(Color::DarkGray)))
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// Compact size for tables: `512B`, `1.5K`, `12.0M`, `3.2G`.
fn short_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1}{}", UNITS[u])
}

fn short_rate(n: u64) -> String {
    format!("{}/s", short_bytes(n))
}

/// A text progress bar `width` cells wide followed by the percentage, e.g. `█████░░░  62%`.
fn progress_bar(fraction: f64, width: usize) -> String {
    let fraction = fraction.clamp(0.0, 1.0);
    let filled = ((fraction * width as f64).round() as usize).min(width);
    format!(
        "{}{} {:>3}%",
        "█".repeat(filled),
        "░".repeat(width - filled),
        (fraction * 100.0).floor() as u32
    )
}

fn block(title: String) -> Block<'static> {
    Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, HEADER))
}

fn table_state(app: &App, rows: usize) -> TableState {
    let mut st = TableState::default();
    if rows > 0 {
        st.select(Some(app.selected_row().min(rows - 1)));
    }
    st
}

fn empty(frame: &mut Frame, area: Rect, title: String, text: &str) {
    frame.render_widget(
        Paragraph::new(Line::from(format!(" {text}")).fg(Color::DarkGray)).block(block(title)),
        area,
    );
}

fn state_style(s: TransferState) -> Style {
    match s {
        TransferState::Downloading => Style::new().fg(Color::Cyan),
        TransferState::Seeding => Style::new().fg(Color::Green),
        TransferState::Paused => Style::new().fg(Color::DarkGray),
        TransferState::Error => Style::new().fg(Color::Red),
        TransferState::Metadata | TransferState::Checking => Style::new().fg(Color::Yellow),
    }
}

fn draw_transfers(frame: &mut Frame, app: &App, area: Rect) {
    let ts = &app.snapshot.transfers;
    let title = format!(" Transfers ({}) ", ts.len());
    if ts.is_empty() {
        return empty(
            frame,
            area,
            title,
            "No transfers. Press a to add a magnet link.",
        );
    }
    let (table_area, detail_area) = if area.height >= 12 {
        let [t, d] = Layout::vertical([Constraint::Min(0), Constraint::Length(4)]).areas(area);
        (t, Some(d))
    } else {
        (area, None)
    };
    let wide = area.width >= 110;
    let bar = if wide { 20 } else { 5 };
    let rows = ts.iter().map(|t| {
        Row::new(vec![
            Cell::from(t.name.clone()),
            Cell::from(if t.size == 0 {
                "?".into()
            } else {
                short_bytes(t.size)
            }),
            Cell::from(progress_bar(t.progress(), bar)),
            Cell::from(short_rate(t.down_rate)),
            Cell::from(short_rate(t.up_rate)),
            Cell::from(t.peers.to_string()),
            Cell::from(t.eta_secs.map_or_else(|| "-".into(), fmt_duration)),
            Cell::from(t.state.label()).style(state_style(t.state)),
            Cell::from(t.hops.to_string()),
        ])
    });
    let widths = [
        Constraint::Min(10),
        Constraint::Length(7),
        Constraint::Length(bar as u16 + 5),
        Constraint::Length(if wide { 10 } else { 8 }),
        Constraint::Length(if wide { 10 } else { 8 }),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(if wide { 11 } else { 8 }),
        Constraint::Length(4),
    ];
    let header = Row::new([
        "Name", "Size", "Progress", "Down", "Up", "Peers", "ETA", "State", "Hops",
    ])
    .style(HEADER);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block(title))
        .row_highlight_style(SELECTED);
    frame.render_stateful_widget(table, table_area, &mut table_state(app, ts.len()));
    if let (Some(d), Some(t)) = (detail_area, app.selected_transfer()) {
        let size = if t.size == 0 {
            "size unknown yet".to_string()
        } else {
            format!(
                "{} of {} ({:.1}%)",
                fmt_bytes(t.done),
                fmt_bytes(t.size),
                t.progress() * 100.0
            )
        };
        let lines = vec![
            Line::from(format!(" id {}  infohash {}", t.id, t.infohash)),
            Line::from(format!(
                " {size}  down {}  up {}",
                fmt_rate(t.down_rate),
                fmt_rate(t.up_rate)
            )),
            Line::from(format!(
                " {} peers  ETA {}  {}  {} hops",
                t.peers,
                t.eta_secs.map_or_else(|| "-".into(), fmt_duration),
                t.state.label(),
                t.hops
            )),
        ];
        frame.render_widget(
            Paragraph::new(lines).block(block(format!(" {} ", t.name))),
            d,
        );
    }
}

fn draw_circuits(frame: &mut Frame, app: &App, area: Rect) {
    let cs = &app.snapshot.circuits;
    let title = format!(" Circuits ({}) ", cs.len());
    if cs.is_empty() {
        return empty(frame, area, title, "No circuits yet.");
    }
    let rows = cs.iter().map(|c| {
        Row::new(vec![
            c.id.to_string(),
            c.purpose.label().to_string(),
            c.hops.join("→"),
            c.state.label().to_string(),
            fmt_duration(c.age_secs),
            short_bytes(c.bytes_sent),
            short_bytes(c.bytes_received),
            c.rtt_ms.map_or_else(|| "-".into(), |r| format!("{r}ms")),
        ])
    });
    let widths = [
        Constraint::Length(5),
        Constraint::Length(10),
        Constraint::Min(14),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    let header = Row::new([
        "Id", "Purpose", "Hops", "State", "Age", "Sent", "Recv", "RTT",
    ])
    .style(HEADER);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block(title))
        .row_highlight_style(SELECTED);
    frame.render_stateful_widget(table, area, &mut table_state(app, cs.len()));
}

fn draw_tunnel(frame: &mut Frame, app: &App, area: Rect) {
    let fs = &app.snapshot.flows;
    let title = format!(" Tunnel flows ({}) ", fs.len());
    if fs.is_empty() {
        return empty(
            frame,
            area,
            title,
            "No tunnel flows (warren tunnel -- CMD starts some).",
        );
    }
    let rows = fs.iter().map(|f| {
        Row::new(vec![
            f.source.clone(),
            f.destination.clone(),
            f.protocol.label().to_string(),
            short_bytes(f.bytes_sent),
            short_bytes(f.bytes_received),
            f.circuit.map_or_else(|| "-".into(), |c| c.to_string()),
        ])
    });
    let widths = [
        Constraint::Length(21),
        Constraint::Min(16),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    let header =
        Row::new(["Program", "Destination", "Proto", "Sent", "Recv", "Circuit"]).style(HEADER);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block(title))
        .row_highlight_style(SELECTED);
    frame.render_stateful_widget(table, area, &mut table_state(app, fs.len()));
}

fn draw_network(frame: &mut Frame, app: &App, area: Rect) {
    let s = &app.snapshot;
    let n = &s.network;
    let mut summary = vec![Line::from(vec![
        Span::styled(" Node ", HEADER),
        Span::raw(if s.node_id.is_empty() {
            "-".to_string()
        } else {
            s.node_id.clone()
        }),
        Span::styled("  Up ", HEADER),
        Span::raw(fmt_duration(s.uptime_secs)),
        Span::styled("  Links ", HEADER),
        Span::raw(n.links.len().to_string()),
        Span::styled("  DHT nodes ", HEADER),
        Span::raw(n.dht_nodes.to_string()),
    ])];
    let mut traffic = vec![
        Span::styled(" Relayed ", HEADER),
        Span::raw(fmt_bytes(n.relayed_bytes)),
    ];
    if n.is_exit {
        traffic.push(Span::styled("  Exit ", HEADER));
        traffic.push(Span::raw(fmt_bytes(n.exit_bytes)));
    } else {
        traffic.push(Span::styled("  Exit ", HEADER));
        traffic.push(Span::raw("off"));
    }
    // the entry guard every 2- and 3-hop circuit of this node starts at
    traffic.push(Span::styled("  Guard ", HEADER));
    traffic.push(Span::raw(match n.guards.as_slice() {
        [] => "-".to_string(),
        [g] => g.clone(),
        [g, rest @ ..] => format!("{g} (+{} spare)", rest.len()),
    }));
    if let Some(h) = n.guard_health.first() {
        if h.circuits > 0 {
            traffic.push(Span::raw(format!(" built {}%", h.percent())));
        }
    }
    if let Some(bad) = n.guard_health.iter().find(|g| g.suspect) {
        traffic.push(Span::styled(
            format!("  ⚠ guard {} drops circuits", bad.id),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    summary.push(Line::from(traffic));

    let mut sparks: Vec<(&str, u64, &std::collections::VecDeque<u64>, Color)> = vec![
        ("Down", n.down_rate, &app.history.down, Color::Cyan),
        ("Up", n.up_rate, &app.history.up, Color::Green),
        ("Relay", n.relay_rate, &app.history.relay, Color::Magenta),
    ];
    if n.is_exit {
        sparks.push(("Exit", n.exit_rate, &app.history.exit, Color::Yellow));
    }
    let spark_h: u16 = if area.height >= 30 { 4 } else { 2 };
    let mut constraints = vec![Constraint::Length(2)];
    constraints.extend(sparks.iter().map(|_| Constraint::Length(spark_h)));
    constraints.push(Constraint::Min(0));
    let areas = Layout::vertical(constraints).split(area);
    frame.render_widget(Paragraph::new(summary), areas[0]);
    for (i, (name, rate, hist, color)) in sparks.iter().enumerate() {
        let a = areas[i + 1];
        let [label, graph] =
            Layout::horizontal([Constraint::Length(18), Constraint::Min(0)]).areas(a);
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(Span::styled(format!(" {name}"), HEADER)),
                Line::from(format!(" {}", fmt_rate(*rate))),
            ]),
            label,
        );
        // Newest sample at the right edge; older ones scroll left.
        let w = graph.width as usize;
        let mut data = vec![0u64; w.saturating_sub(hist.len())];
        data.extend(hist.iter().skip(hist.len().saturating_sub(w)));
        frame.render_widget(
            Sparkline::default()
                .data(&data)
                .style(Style::new().fg(*color)),
            graph,
        );
    }
    let links_area = areas[areas.len() - 1];
    let links = &n.links;
    let title = format!(" Links ({}) ", links.len());
    if links.is_empty() {
        return empty(frame, links_area, title, "No links.");
    }
    let rows = links.iter().map(|l| {
        Row::new(vec![
            l.peer.clone(),
            l.addr.clone(),
            if l.outbound { "out" } else { "in" }.to_string(),
            fmt_duration(l.age_secs),
            short_bytes(l.bytes_sent),
            short_bytes(l.bytes_received),
        ])
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Min(21),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    let header = Row::new(["Peer", "Address", "Dir", "Age", "Sent", "Recv"]).style(HEADER);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block(title))
        .row_highlight_style(SELECTED);
    let mut st = TableState::default();
    if app.tab == Tab::Network && !links.is_empty() {
        st.select(Some(app.selected_row().min(links.len() - 1)));
    }
    frame.render_stateful_widget(table, links_area, &mut st);
}

fn draw_log(frame: &mut Frame, app: &App, area: Rect) {
    let log = &app.snapshot.log;
    let title = format!(" Log ({}) ", log.len());
    if log.is_empty() {
        return empty(frame, area, title, "No warnings or errors.");
    }
    let rows = log.iter().map(|e| {
        let (lvl, style) = match e.level {
            LogLevel::Info => ("INFO", Style::new().fg(Color::Cyan)),
            LogLevel::Warn => ("WARN", Style::new().fg(Color::Yellow)),
            LogLevel::Error => ("ERROR", Style::new().fg(Color::Red)),
        };
        Row::new(vec![
            Cell::from(fmt_duration(e.at_secs)),
            Cell::from(lvl).style(style),
            Cell::from(e.target.clone()),
            Cell::from(e.message.clone()),
        ])
    });
    let widths = [
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(14),
        Constraint::Min(10),
    ];
    let header = Row::new(["At", "Level", "Source", "Message"]).style(HEADER);
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block(title))
        .row_highlight_style(SELECTED);
    // The selection follows the newest entry unless the user scrolled up (see App::log_follow).
    let mut st = TableState::default();
    st.select(Some(app.selected_row().min(log.len() - 1)));
    frame.render_stateful_widget(table, area, &mut st);
}

/// A centred rectangle of at most `w` x `h` inside `area`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    r
}

fn popup(frame: &mut Frame, title: &str, w: u16, h: u16) -> Rect {
    let area = centered(frame.area(), w, h);
    frame.render_widget(Clear, area);
    let b = Block::bordered().title(Span::styled(format!(" {title} "), HEADER));
    let inner = b.inner(area);
    frame.render_widget(b, area);
    inner
}

const HELP: [(&str, &str); 13] = [
    ("Tab / Shift-Tab", "next / previous tab"),
    ("1-5", "Transfers, Circuits, Tunnel, Network, Log"),
    ("↑ ↓ / j k", "select a row"),
    ("a", "add a magnet link"),
    ("p", "pause the selected transfer"),
    ("r", "resume the selected transfer"),
    ("d / Delete", "remove (then y: keep data, D: delete data)"),
    ("h", "set the hop count of the selected transfer"),
    ("+ / -", "one hop more / fewer"),
    ("Esc", "close a prompt, clear the message"),
    ("?", "this help"),
    ("q / Ctrl-C", "quit the dashboard (the node keeps running)"),
    ("", "any key closes this help"),
];

fn draw_help(frame: &mut Frame) {
    let inner = popup(frame, "Keys", 70, HELP.len() as u16 + 2);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(format!(" {k:<16}"), Style::new().fg(Color::Yellow)),
                Span::raw(*d),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_prompt(frame: &mut Frame, title: &str, label: &str, input: &str) {
    let inner = popup(frame, title, 76, 5);
    let width = inner.width.saturating_sub(3) as usize;
    // Show the end of long input (magnet links are long).
    let chars: Vec<char> = input.chars().collect();
    let shown: String = chars[chars.len().saturating_sub(width)..].iter().collect();
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(" {label}")),
            Line::from(""),
            Line::from(vec![
                Span::raw(format!(" {shown}")),
                Span::raw("▏").fg(Color::Yellow),
            ]),
        ]),
        inner,
    );
}

fn draw_confirm(frame: &mut Frame, name: &str) {
    let inner = popup(frame, "Remove transfer", 60, 6);
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(" Remove {name}?")),
            Line::from(""),
            Line::from(vec![
                Span::styled(" y", Style::new().fg(Color::Yellow)),
                Span::raw(" keep data   "),
                Span::styled("D", Style::new().fg(Color::Red)),
                Span::raw(" delete data too   "),
                Span::styled("n", Style::new().fg(Color::Yellow)),
                Span::raw(" cancel"),
            ]),
        ])
        .wrap(Wrap { trim: false }),
        inner,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_sizes() {
        assert_eq!(progress_bar(0.0, 4), "░░░░   0%");
        assert_eq!(progress_bar(0.5, 4), "██░░  50%");
        assert_eq!(progress_bar(1.0, 4), "████ 100%");
        assert_eq!(short_bytes(512), "512B");
        assert_eq!(short_bytes(1536), "1.5K");
        assert_eq!(short_rate(3 * 1024 * 1024), "3.0M/s");
    }
}

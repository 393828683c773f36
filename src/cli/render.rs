//! How the client commands show the admin API's answers to a person: aligned tables, an incident's timeline,
//! one line per step for `replay --wait`, with states coloured only when a [`Palette`] says so.
//!
//! Everything here is a pure function from the API's shapes (the store's views) to text. It must not know where
//! the text goes, whether that is a terminal, or how the answers were fetched: `cli` decides colour and does the
//! IO. Text that came from an alert is cleaned of control characters, so an alert cannot drive the operator's
//! terminal.

use std::fmt::Write as _;

use crate::incident::{Outcome, Sense, State};
use crate::store::{
    AlertDetail, AlertSummary, IncidentView, NotificationView, RejectedDelivery, StepView,
};

/// Whether to colour: ANSI escape codes for a terminal, nothing for a pipe or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    Plain,
    Ansi,
}

/// What a colour says; each maps to one ANSI code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    /// Nothing for a person to do.
    Good,
    /// A person must act.
    Bad,
    /// Still moving, or held back.
    Busy,
    /// Secondary text.
    Quiet,
}

impl Palette {
    fn paint(self, tone: Option<Tone>, text: &str) -> String {
        match (self, tone) {
            (Palette::Ansi, Some(tone)) => {
                let code = match tone {
                    Tone::Good => "32",
                    Tone::Bad => "31",
                    Tone::Busy => "33",
                    Tone::Quiet => "2",
                };
                format!("\x1b[{code}m{text}\x1b[0m")
            }
            _ => text.to_owned(),
        }
    }
}

fn state_tone(state: &str) -> Option<Tone> {
    match State::parse(state)? {
        State::Transient | State::Recovered => Some(Tone::Good),
        State::Escalated | State::Blocked => Some(Tone::Bad),
        State::Queued | State::Running | State::Waiting | State::AwaitingApproval => {
            Some(Tone::Busy)
        }
        State::Suppressed => Some(Tone::Quiet),
    }
}

fn outcome_tone(outcome: &str) -> Option<Tone> {
    Some(match Outcome::parse(outcome)?.sense() {
        Sense::Good => Tone::Good,
        Sense::Bad => Tone::Bad,
        Sense::Pending => Tone::Busy,
    })
}

fn email_tone(status: &str) -> Option<Tone> {
    match status {
        "sent" => Some(Tone::Good),
        "failed" => Some(Tone::Bad),
        _ => Some(Tone::Busy),
    }
}

/// Text that came from outside, made safe for a terminal: control characters other than newline and tab are shown
/// escaped (`\u{1b}`), never sent as they are.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Text for one table cell: cleaned, on one line, and at most `max` characters.
fn cell(text: &str, max: usize) -> String {
    let line = clean(text).replace(['\n', '\t'], " ");
    let line = line.trim();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max.saturating_sub(1)).collect::<String>().trim_end())
    } else {
        line.to_owned()
    }
}

/// `2026-11-26T10:00:00.123Z` as `2026-11-26 10:00:00` (UTC, as the API gives it).
fn date_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => clean(rfc3339),
    }
}

/// A step's time of day with milliseconds.
fn clock(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&chrono::Utc).format("%H:%M:%S%.3f").to_string(),
        Err(_) => clean(rfc3339),
    }
}

/// A table whose columns are as wide as their widest cell; colour never counts toward the width.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<(String, Option<Tone>)>>,
}

impl Table {
    fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    fn row(&mut self, cells: Vec<(String, Option<Tone>)>) {
        self.rows.push(cells);
    }

    fn render(&self, palette: Palette, indent: &str) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, (text, _)) in widths.iter_mut().zip(row) {
                *width = (*width).max(text.chars().count());
            }
        }
        let last = self.headers.len().saturating_sub(1);
        let mut out = String::new();
        let header: Vec<(String, Option<Tone>)> =
            self.headers.iter().map(|h| (h.to_string(), Some(Tone::Quiet))).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            out.push_str(indent);
            for (i, (text, tone)) in row.iter().enumerate() {
                out.push_str(&palette.paint(*tone, text));
                if i < last {
                    out.push_str(&" ".repeat(widths[i] - text.chars().count() + 2));
                }
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
        out
    }
}

fn plain(text: impl Into<String>) -> (String, Option<Tone>) {
    (text.into(), None)
}

fn monitor(monitor: Option<&str>) -> String {
    monitor.map(clean).unwrap_or_else(|| "(no monitor)".to_owned())
}

/// `incidents list`.
pub fn incidents(palette: Palette, incidents: &[IncidentView]) -> String {
    if incidents.is_empty() {
        return "no incidents\n".to_owned();
    }
    let mut table = Table::new(&["id", "state", "opened", "server", "monitor", "reason"]);
    for incident in incidents {
        let state = if incident.dry_run {
            format!("{} (dry run)", incident.state)
        } else {
            incident.state.clone()
        };
        table.row(vec![
            plain(clean(&incident.id)),
            (cell(&state, 40), state_tone(&incident.state)),
            plain(date_time(&incident.created_at)),
            plain(cell(&incident.server, 64)),
            plain(cell(&monitor(incident.monitor.as_deref()), 64)),
            plain(cell(incident.reason.as_deref().unwrap_or("-"), 120)),
        ]);
    }
    table.render(palette, "")
}

/// `incidents show`: what happened, the timeline, and the emails.
pub fn incident(palette: Palette, incident: &IncidentView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "incident {}  {}",
        clean(&incident.id),
        palette.paint(state_tone(&incident.state), &incident.state.to_uppercase())
    );
    let _ = writeln!(out, "  {}", subject(incident));
    if let Some(reason) = &incident.reason {
        let _ = writeln!(out, "  {}", clean(reason));
    }
    let _ = writeln!(
        out,
        "  opened {} UTC, updated {} UTC",
        date_time(&incident.created_at),
        date_time(&incident.updated_at)
    );
    if incident.dry_run {
        let _ = writeln!(
            out,
            "  {}",
            palette.paint(Some(Tone::Busy), "dry run: mutating steps were journaled, not run")
        );
    }
    if let Some(alert) = &incident.replay_of {
        let _ = writeln!(out, "  replay of alert {}", clean(alert));
    }
    if let Some(at) = &incident.resolved_notice_at {
        let _ = writeln!(out, "  resolved notice received {} UTC", date_time(at));
    }
    let alerts: Vec<String> = incident.alert_ids.iter().map(|id| clean(id)).collect();
    let _ = writeln!(
        out,
        "  alerts: {}",
        if alerts.is_empty() { "none".to_owned() } else { alerts.join(", ") }
    );

    let steps = incident.steps.as_deref().unwrap_or_default();
    out.push('\n');
    if steps.is_empty() {
        out.push_str("  no step has run yet\n");
    } else {
        let mut table = Table::new(&["#", "time", "server", "action", "outcome", "detail"]);
        for step in steps {
            let outcome = step.outcome.as_deref().unwrap_or("running");
            table.row(vec![
                plain(step.seq.to_string()),
                plain(clock(step.finished_at.as_deref().unwrap_or(&step.started_at))),
                plain(cell(&step.server, 64)),
                plain(cell(&step.action, 32)),
                (cell(outcome, 32), outcome_tone(outcome)),
                plain(cell(&step.detail, 100)),
            ]);
        }
        out.push_str(&table.render(palette, "  "));
    }

    let notifications = incident.notifications.as_deref().unwrap_or_default();
    if !notifications.is_empty() {
        out.push('\n');
        out.push_str(&emails(palette, notifications));
    }
    out
}

/// What an incident is about: `ActiveSync ActiveSyncCTPMonitor on cas01 (_Mbx: mbx01)`.
fn subject(incident: &IncidentView) -> String {
    let hint = incident
        .mailbox_hint
        .as_deref()
        .map(|m| format!(" (_Mbx: {})", clean(m)))
        .unwrap_or_default();
    format!(
        "{} {} on {}{hint}",
        clean(&incident.health_set),
        monitor(incident.monitor.as_deref()),
        clean(&incident.server)
    )
}

fn emails(palette: Palette, notifications: &[NotificationView]) -> String {
    let mut table = Table::new(&["email", "status", "attempts", "to", "subject", "last error"]);
    for email in notifications {
        table.row(vec![
            plain(cell(&email.kind, 32)),
            (cell(&email.status, 32), email_tone(&email.status)),
            plain(email.attempts.to_string()),
            plain(cell(&email.to.join(", "), 80)),
            plain(cell(&email.subject, 100)),
            plain(cell(email.last_error.as_deref().unwrap_or("-"), 100)),
        ]);
    }
    table.render(palette, "  ")
}

/// `alerts list`.
pub fn alerts(palette: Palette, alerts: &[AlertSummary]) -> String {
    if alerts.is_empty() {
        return "no alerts\n".to_owned();
    }
    let mut table = Table::new(&[
        "id",
        "received",
        "server",
        "health set",
        "monitor",
        "status",
        "disposition",
        "incident",
    ]);
    for alert in alerts {
        table.row(vec![
            plain(clean(&alert.id)),
            plain(date_time(&alert.received_at)),
            plain(cell(&alert.server, 64)),
            plain(cell(&alert.health_set, 40)),
            plain(cell(&monitor(alert.monitor.as_deref()), 64)),
            plain(cell(&alert.status, 16)),
            plain(cell(&alert.disposition, 16)),
            plain(alert.incident_id.as_deref().map(clean).unwrap_or_else(|| "-".to_owned())),
        ]);
    }
    table.render(palette, "")
}

/// `alerts list --rejected`.
pub fn rejected(palette: Palette, deliveries: &[RejectedDelivery]) -> String {
    if deliveries.is_empty() {
        return "no rejected deliveries\n".to_owned();
    }
    let mut table = Table::new(&["id", "received", "sender", "format", "error"]);
    for delivery in deliveries {
        table.row(vec![
            plain(clean(&delivery.id)),
            plain(date_time(&delivery.received_at)),
            plain(cell(&delivery.sender, 40)),
            plain(cell(&delivery.format, 16)),
            (cell(&delivery.error, 120), Some(Tone::Bad)),
        ]);
    }
    table.render(palette, "")
}

/// `alerts show`: the normalised fields, then the message and the raw body as delivered.
pub fn alert(palette: Palette, alert: &AlertDetail) -> String {
    let summary = &alert.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "alert {}  {}",
        clean(&summary.id),
        palette.paint(Some(Tone::Quiet), &format!("{} {}", summary.status, summary.disposition))
    );
    let hint = summary
        .mailbox_hint
        .as_deref()
        .map(|m| format!(" (_Mbx: {})", clean(m)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {} {} on {}{hint}",
        clean(&summary.health_set),
        monitor(summary.monitor.as_deref()),
        clean(&summary.server)
    );
    let _ = writeln!(
        out,
        "  received {} UTC from sender {} ({})",
        date_time(&summary.received_at),
        clean(&summary.sender),
        clean(&summary.format)
    );
    if let Some(raised) = &summary.raised_at {
        let _ = writeln!(out, "  raised {} UTC", date_time(raised));
    }
    let incidents: Vec<String> = alert.incident_ids.iter().map(|id| clean(id)).collect();
    let _ = writeln!(
        out,
        "  incidents: {}",
        if incidents.is_empty() { "none".to_owned() } else { incidents.join(", ") }
    );
    let webhook = alert
        .webhook_id
        .as_deref()
        .map(|w| format!(", webhook-id {}", clean(w)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  delivery {} (alert {} of it){webhook}",
        clean(&alert.delivery_id),
        alert.position + 1
    );
    let _ = writeln!(out, "\nmessage:\n{}", indent(&clean(&summary.message)));
    let _ = writeln!(out, "\nraw body:\n{}", indent(&clean(&alert.raw_body)));
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}")).collect::<Vec<_>>().join("\n")
}

/// `replay`: what was opened.
pub fn replayed(alert_id: &str, incident_id: &str, dry_run: bool) -> String {
    format!(
        "replayed alert {} as incident {}{}\n",
        clean(alert_id),
        clean(incident_id),
        if dry_run { " (dry run requested)" } else { "" }
    )
}

/// The heading above the step lines of `replay --wait`, with the same columns as [`step`].
pub fn step_heading(palette: Palette) -> String {
    format!(
        "{}\n",
        palette.paint(
            Some(Tone::Quiet),
            &format!(
                "{:>3}  {:<12}  {:<24}  {:<18}  {:<16}  detail",
                "#", "time", "server", "action", "outcome"
            )
        )
    )
}

/// One finished step of `replay --wait`, printed as it completes; the columns do not depend on later steps.
pub fn step(palette: Palette, step: &StepView) -> String {
    let outcome = step.outcome.as_deref().unwrap_or("running");
    let outcome = cell(outcome, 32);
    let detail = match step.detail.trim() {
        "" => String::new(),
        detail => format!(
            "{}  {}",
            " ".repeat(16_usize.saturating_sub(outcome.chars().count())),
            palette.paint(Some(Tone::Quiet), &cell(detail, 100))
        ),
    };
    format!(
        "{:>3}  {:<12}  {:<24}  {:<18}  {}{detail}\n",
        step.seq,
        clock(step.finished_at.as_deref().unwrap_or(&step.started_at)),
        cell(&step.server, 64),
        cell(&step.action, 32),
        palette.paint(outcome_tone(&outcome), &outcome),
    )
}

/// The last line of `replay --wait`: the state the incident ended in, and why.
pub fn ending(palette: Palette, incident: &IncidentView) -> String {
    let reason =
        incident.reason.as_deref().map(|r| format!(": {}", cell(r, 400))).unwrap_or_default();
    format!(
        "incident {} ended {}{reason}\n",
        clean(&incident.id),
        palette.paint(state_tone(&incident.state), &incident.state)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident_view() -> IncidentView {
        serde_json::from_value(serde_json::json!({
            "id": "0193-incident", "state": "recovered", "dry_run": false, "health_set": "ActiveSync",
            "monitor": "ActiveSyncCTPMonitor", "server": "cas01.contoso.com", "mailbox_hint": "mbx01.contoso.com",
            "alert_ids": ["0193-alert"], "created_at": "2026-11-26T10:00:00.000Z", "updated_at": "2026-11-26T10:00:02.500Z",
            "reason": "recycling MSExchangeSyncAppPool on cas01.contoso.com fixed it", "resolved_notice_at": null, "replay_of": "0193-alert",
            "steps": [
                {"seq": 1, "action": "probe", "server": "cas01.contoso.com", "command": "Invoke-MonitoringProbe", "started_at": "2026-11-26T10:00:00.100Z",
                 "finished_at": "2026-11-26T10:00:00.200Z", "outcome": "failed", "detail": "503 \u{1b}[31mService Unavailable"},
                {"seq": 2, "action": "recycle_app_pool", "server": "cas01.contoso.com", "command": "Restart-WebAppPool", "started_at": "2026-11-26T10:00:01.000Z",
                 "finished_at": "2026-11-26T10:00:01.900Z", "outcome": "done", "detail": ""}
            ],
            "notifications": []
        }))
        .unwrap()
    }

    #[test]
    fn plain_output_has_no_escape_codes_even_when_an_alert_carries_them() {
        let text = incident(Palette::Plain, &incident_view());
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains("\\u{1b}[31mService Unavailable"),
            "the control character is shown escaped: {text}"
        );
        assert!(
            text.starts_with("incident 0193-incident  RECOVERED\n  ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com (_Mbx: mbx01.contoso.com)\n"),
            "{text}"
        );
    }

    #[test]
    fn terminal_output_colours_states_and_outcomes() {
        let view = incident_view();
        let text = incident(Palette::Ansi, &view);
        assert!(text.contains("\x1b[32mRECOVERED\x1b[0m"), "{text:?}");
        assert!(text.contains("\x1b[31mfailed\x1b[0m"), "{text:?}");
        assert_eq!(
            ending(Palette::Ansi, &view),
            "incident 0193-incident ended \x1b[32mrecovered\x1b[0m: recycling MSExchangeSyncAppPool on cas01.contoso.com fixed it\n"
        );
    }

    #[test]
    fn tables_align_on_visible_width_whatever_the_colour() {
        for palette in [Palette::Plain, Palette::Ansi] {
            let text = incident(palette, &incident_view());
            let rows: Vec<String> = text
                .lines()
                .filter(|l| l.contains("probe") || l.contains("recycle_app_pool"))
                .map(|l| l.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", ""))
                .collect();
            assert_eq!(rows.len(), 2, "{text}");
            let column = |row: &str, word: &str| row.find(word).unwrap();
            assert_eq!(
                column(&rows[0], "failed"),
                column(&rows[1], "done"),
                "{palette:?}: {rows:#?}"
            );
        }
    }

    #[test]
    fn step_lines_keep_fixed_columns() {
        let view = incident_view();
        let steps = view.steps.as_ref().unwrap();
        let first = step(Palette::Plain, &steps[0]);
        let second = step(Palette::Plain, &steps[1]);
        assert_eq!(first, "  1  10:00:00.200  cas01.contoso.com         probe               failed            503 \\u{1b}[31mService Unavailable\n");
        assert_eq!(first.find("failed"), second.find("done"));
        let throttled = StepView {
            outcome: Some("throttled".into()),
            detail: "ran 0s ago".into(),
            ..steps[0].clone()
        };
        assert_eq!(
            step(Palette::Plain, &throttled).find("ran 0s"),
            first.find("503"),
            "details line up whatever the outcome"
        );
    }

    #[test]
    fn long_cells_are_cut_and_kept_on_one_line() {
        assert_eq!(cell("line one\nline two", 100), "line one line two");
        assert_eq!(cell("abcdefghij", 5), "abcd…");
    }
}

//! The words of an escalation email: one model built from the incident, rendered twice, as plain text (here) and
//! as HTML (`html`), so that both parts always carry the same facts.
//!
//! Everything an alert or an executor reported is untrusted text: it is cleaned of control characters here and
//! escaped wherever it enters HTML. This module knows nothing of transports, HTTP or SQL.

mod html;
mod managed;

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Escalation;
use crate::store::StepView;
pub(super) use crate::text::escape_html as escape;

/// Where Microsoft sends Exchange customers for a support case (the seed's last recovery step).
pub(super) const SUPPORT_URL: &str =
    "https://support.microsoft.com/supportforbusiness/productselection";
/// How much of an alert's message the email quotes; the rest is one command away.
const MAX_MESSAGE_CHARS: usize = 4000;
/// How much of one step's detail the email shows.
const MAX_DETAIL_CHARS: usize = 1500;
/// How many further alerts of the incident are listed one by one.
const MAX_EXTRA_ALERTS: usize = 10;

/// How a line should look: red for what is broken, amber for what needs care, green for what worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Bad,
    Warn,
    Good,
    Plain,
}

/// One thing the reader must know, with the command to act on it when there is one.
struct Note {
    tone: Tone,
    text: String,
    command: Option<String>,
}

impl Note {
    fn new(tone: Tone, text: impl Into<String>, command: Option<String>) -> Self {
        Note { tone, text: text.into(), command }
    }
}

/// One step of the timeline, cleaned and formatted.
struct Step {
    seq: i64,
    /// The full date and time, or only the time when the step falls on the same day as the one before it.
    when: String,
    action: String,
    server: String,
    command: String,
    outcome: String,
    tone: Tone,
    detail: String,
    took: Option<String>,
}

/// A request for a person's decision (an approval), which the email then leads with.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// What would run, e.g. `restart_server (with disable_activation, copy_status, enable_activation)`.
    pub proposal: &'a str,
    pub server: &'a str,
    /// The exact commands, one per line.
    pub commands: &'a str,
    /// RFC 3339: when silence becomes a refusal.
    pub deadline: &'a str,
    /// The approval page; `?decision=approve|deny` preselects a button there, and opening it changes nothing.
    pub link: &'a str,
}

/// Everything the email says, in reading order.
pub(super) struct Content {
    escalates: bool,
    /// For an approval request: the two links, labelled.
    links: Vec<(&'static str, String)>,
    banner: Tone,
    headline: String,
    title: String,
    server: String,
    summary: String,
    reason: String,
    notes: Vec<Note>,
    final_check: Option<(&'static str, Step)>,
    alert: Vec<(&'static str, String)>,
    message: Option<String>,
    extra_alerts: Vec<String>,
    more_alerts: usize,
    steps: Vec<Step>,
    incident: Vec<(&'static str, String)>,
    replay: Option<String>,
    incident_id: String,
    /// ` --url <public_url>` for the commands, when the service has a public address.
    url_flag: String,
    /// The incident's page, when the service has a public address.
    incident_link: Option<String>,
}

impl Content {
    /// `public_url` is the address people reach the service at: the commands name it and the incident's page is
    /// linked.
    pub(super) fn new(escalation: &Escalation, public_url: Option<&str>) -> Content {
        let incident = escalation.incident;
        let state = line(&incident.state).to_ascii_lowercase();
        let escalates = state != "recovered";
        let first = escalation.alerts.first();
        let monitor =
            incident.monitor.as_deref().or(first.and_then(|a| a.monitor.as_deref())).map(line);
        let mailbox = incident
            .mailbox_hint
            .as_deref()
            .or(first.and_then(|a| a.mailbox_hint.as_deref()))
            .map(line);
        let server = line(&incident.server);
        let health_set = line(&incident.health_set);
        let reason = incident
            .reason
            .as_deref()
            .map(line)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "no reason was recorded".to_owned());
        let all_steps = incident.steps.as_deref().unwrap_or_default();
        let steps = timeline(all_steps);

        let banner = match state.as_str() {
            "escalated" => Tone::Bad,
            "blocked" | "stalled" => Tone::Warn,
            "recovered" => Tone::Good,
            _ => Tone::Plain,
        };
        let headline = format!(
            "{}{}",
            if incident.dry_run { "DRY RUN " } else { "" },
            state.to_ascii_uppercase()
        );
        let title = match &monitor {
            Some(monitor) => format!("{health_set} {monitor}"),
            None => health_set.clone(),
        };
        let summary = match state.as_str() {
            "escalated" => "Automation ran every remedy it may and the problem persists. A person must take over.".to_owned(),
            "blocked" => "Automation was not allowed to finish. A person must take over.".to_owned(),
            "recovered" if escalation.activation_disabled.is_empty() => "Automation fixed this. Nothing needs doing.".to_owned(),
            "recovered" => "Automation fixed this, but one thing is left for you: see below.".to_owned(),
            "stalled" => "Automation has made no progress on this incident for a while. It keeps trying; a person should look now.".to_owned(),
            "suppressed" => {
                "A silence or maintenance covers a server this incident would change, so automation stopped; one thing is left for you: see below.".to_owned()
            }
            other => format!("The incident ended {other}."),
        };

        // What a human must know now, most urgent first.
        let mut notes = Vec::new();
        if incident.dry_run {
            notes.push(Note::new(
                Tone::Warn,
                "This was a dry run: nothing was changed on any server. Steps marked dry_run show what automation would have done.",
                None,
            ));
        }
        for disabled in escalation.activation_disabled {
            notes.push(Note::new(
                Tone::Bad,
                format!("Database activation is still disabled on {disabled}. When it is healthy, re-enable it with:"),
                Some(format!("Set-MailboxServer {disabled} -DatabaseCopyActivationDisabledAndMoveNow $false")),
            ));
        }
        for found in escalation.activation_left_as_found {
            notes.push(Note::new(
                Tone::Warn,
                format!("Database activation was already disabled on {found} before automation failed it over; it was left disabled, as found."),
                None,
            ));
        }
        match state.as_str() {
            "escalated" => notes.push(Note::new(
                Tone::Bad,
                "Nothing more will run for this incident: every remedy the runbook allows has been tried, and the check still fails.",
                None,
            )),
            "stalled" => notes.push(Note::new(Tone::Warn, format!("Why: {}.", reason.trim_end_matches('.')), None)),
            "blocked" => {
                notes.push(Note::new(
                    Tone::Bad,
                    format!("What blocked automation: {}. Nothing further will be tried automatically for this incident.", reason.trim_end_matches('.')),
                    None,
                ));
                for step in all_steps {
                    let (action, on, detail) = (line(&step.action), line(&step.server), clip(&line(&step.detail), 300));
                    let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
                    match step.outcome.as_deref() {
                        Some("throttled") => notes.push(Note::new(
                            Tone::Warn,
                            format!("The {action} step on {on} was not run: a safety throttle forbids it{detail}. If you judge it safe, this is the command it would have run:"),
                            Some(line(&step.command)),
                        )),
                        Some("error") => notes.push(Note::new(Tone::Bad, format!("The {action} step on {on} failed{detail}."), None)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let done: Vec<String> = all_steps
            .iter()
            .filter(|s| {
                s.outcome.as_deref() == Some("done") && MUTATING.contains(&s.action.as_str())
            })
            .map(|s| format!("{} on {}", line(&s.action), line(&s.server)))
            .collect();
        if escalates && !done.is_empty() {
            notes.push(Note::new(
                Tone::Plain,
                format!("Already done by automation: {}.", done.join(", ")),
                None,
            ));
        }
        notes.extend(managed::notes(all_steps));
        if let Some(at) = &incident.resolved_notice_at {
            notes.push(Note::new(
                Tone::Plain,
                format!("The alerting system reported the alert resolved at {}; automation still ended the incident {state}.", when(at)),
                None,
            ));
        }
        if escalation.suppressed_escalations > 0 {
            let n = escalation.suppressed_escalations;
            let (escalations, were) =
                if n == 1 { ("escalation", "was") } else { ("escalations", "were") };
            notes.push(Note::new(
                Tone::Warn,
                format!(
                    "{n} more {escalations} for {title} on {server} {were} held back since the last email (one email per escalation interval). List the incidents with:"
                ),
                Some("healthset-responder incidents list".to_owned()),
            ));
        }

        // The final check: the last probe, else the last health check.
        let final_check = ["probe", "server_health"].iter().find_map(|action| {
            let index = all_steps.iter().rposition(|s| s.action == *action)?;
            let label = if *action == "probe" { "Final probe" } else { "Final health check" };
            let mut step = step(&all_steps[index], None);
            step.when = all_steps[index]
                .finished_at
                .as_deref()
                .map(when)
                .unwrap_or_else(|| when(&all_steps[index].started_at));
            Some((label, step))
        });

        let mut alert = vec![("Health set", health_set.clone())];
        alert.push((
            "Monitor",
            monitor.clone().unwrap_or_else(|| "not named in the alert".to_owned()),
        ));
        alert.push(("Server", server.clone()));
        alert.push((
            "Mailbox server (_Mbx:)",
            mailbox.unwrap_or_else(|| "none in the alert message".to_owned()),
        ));
        let mut message = None;
        if let Some(first) = first {
            alert.push((
                "Raised",
                first
                    .raised_at
                    .as_deref()
                    .map(when)
                    .unwrap_or_else(|| "not given by the sender".to_owned()),
            ));
            alert.push(("Received", when(&first.received_at)));
            alert.push((
                "Sender",
                format!("{} ({} format)", line(&first.sender), line(&first.format)),
            ));
            alert.push(("Status", line(&first.status)));
            alert.push(("Alert id", line(&first.id)));
            let text = clean(&first.message);
            message = Some(if text.chars().count() > MAX_MESSAGE_CHARS {
                format!(
                    "{}\n[cut here; see it whole with: healthset-responder alerts show {}]",
                    clip(&text, MAX_MESSAGE_CHARS),
                    shell_arg(&first.id)
                )
            } else if text.trim().is_empty() {
                "(empty)".to_owned()
            } else {
                text
            });
        }
        let extra = escalation.alerts.iter().skip(1);
        let extra_alerts = extra
            .clone()
            .take(MAX_EXTRA_ALERTS)
            .map(|a| {
                format!(
                    "{}: {} from {}, alert {}",
                    when(&a.received_at),
                    line(&a.status),
                    line(&a.sender),
                    line(&a.id)
                )
            })
            .collect();
        let more_alerts = extra.count().saturating_sub(MAX_EXTRA_ALERTS);

        let incident_id = line(&incident.id);
        let mut rows = vec![("Incident", incident_id.clone())];
        rows.push((
            "State",
            format!("{state}{}", if incident.dry_run { " (dry run)" } else { "" }),
        ));
        rows.push(("Opened", when(&incident.created_at)));
        rows.push(("Last update", when(&incident.updated_at)));
        if let Some(of) = &incident.replay_of {
            rows.push(("Replay of", line(of)));
        }
        rows.push(("Alerts", escalation.alerts.len().max(incident.alert_ids.len()).to_string()));
        let replay = first
            .map(|a| a.id.as_str())
            .or(incident.alert_ids.first().map(String::as_str))
            .map(shell_arg);

        Content {
            escalates,
            links: Vec::new(),
            banner,
            headline,
            title,
            server,
            summary,
            reason,
            notes,
            final_check,
            alert,
            message,
            extra_alerts,
            more_alerts,
            steps,
            incident: rows,
            replay,
            url_flag: public_url
                .map(|url| format!(" --url {}", shell_arg(url)))
                .unwrap_or_default(),
            incident_link: public_url.map(|url| format!("{url}/incidents/{incident_id}")),
            incident_id,
        }
    }

    /// Turns the email into a request for a decision on `request`: it leads with the proposal, its commands, the
    /// links and the deadline, and carries no Microsoft Support guidance (nothing has failed for good yet).
    pub(super) fn ask(mut self, request: &Request) -> Content {
        let (proposal, server, deadline) =
            (line(request.proposal), line(request.server), when(request.deadline));
        self.escalates = false;
        self.banner = Tone::Warn;
        self.headline = "APPROVAL NEEDED".to_owned();
        self.summary = format!(
            "Automation wants to run {proposal} on {server} and waits for a person's decision until {deadline}. Without one by then it runs nothing and escalates."
        );
        self.reason = match &self.final_check {
            Some((_, step)) => format!(
                "the problem persists: the last check was {} on {} at {}",
                step.action, step.server, step.when
            ),
            None => "the runbook's next step needs a person's approval".to_owned(),
        };
        if let Some((label, _)) = &mut self.final_check {
            *label = if *label == "Final probe" { "Latest probe" } else { "Latest health check" };
        }
        let url = self.url_flag.clone();
        let id = shell_arg(&self.incident_id);
        let mut notes = vec![
            Note::new(Tone::Warn, format!("Proposed: {proposal} on {server}. The exact commands:"), Some(clean(request.commands).trim().to_owned())),
            Note::new(
                Tone::Plain,
                "Decide on the approval page: opening a link only shows the proposal, the decision is a button there. The link is the authority and works once: whoever holds this email can decide, so do not forward it.",
                None,
            ),
            Note::new(Tone::Plain, "Or decide from a shell:", Some(format!("healthset-responder approve {id} --reason '...'{url}\nhealthset-responder deny {id} --reason '...'{url}"))),
            Note::new(
                Tone::Plain,
                format!("After an approval automation checks again and runs the steps only if the problem persists. A denial, or no decision by {deadline}, ends the incident blocked and escalates."),
                None,
            ),
        ];
        notes.append(&mut self.notes);
        self.notes = notes;
        let link = line(request.link);
        self.links = vec![
            ("Approve", format!("{link}?decision=approve")),
            ("Deny", format!("{link}?decision=deny")),
        ];
        self
    }

    /// The plain text part: readable in any client and in a terminal, commands on lines of their own.
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}: {} on {}", self.headline, self.title, self.server);
        let _ = writeln!(out, "{}", self.summary);
        let _ = writeln!(out, "Reason: {}", self.reason);
        if !self.links.is_empty() {
            heading(&mut out, "DECIDE");
            for (label, link) in &self.links {
                let _ = writeln!(out, "{label}:\n\n    {link}\n");
            }
        }

        heading(&mut out, "WHAT YOU MUST KNOW NOW");
        if self.notes.is_empty() {
            out.push_str("Nothing beyond the reason above.\n");
        }
        for note in &self.notes {
            let _ = writeln!(out, "* {}", note.text);
            if let Some(command) = &note.command {
                let _ = writeln!(out, "\n{}\n", indent(command, "    "));
            }
        }

        match &self.final_check {
            Some((label, step)) => {
                heading(&mut out, &label.to_ascii_uppercase());
                let _ =
                    writeln!(out, "Outcome: {} on {} at {}", step.outcome, step.server, step.when);
                step_lines(&mut out, step, "");
            }
            None => {
                heading(&mut out, "FINAL PROBE");
                out.push_str("No probe or health check ran before automation stopped.\n");
            }
        }

        heading(&mut out, "THE ALERT");
        for (key, value) in &self.alert {
            let _ = writeln!(out, "{:<24}{value}", format!("{key}:"));
        }
        match &self.message {
            Some(message) => {
                out.push_str("Message:\n");
                let _ = writeln!(out, "{}", indent(message, "  > "));
            }
            None => out.push_str("No alert is recorded for this incident.\n"),
        }
        if !self.extra_alerts.is_empty() {
            let _ = writeln!(out, "\nFurther alerts attached to this incident:");
            for alert in &self.extra_alerts {
                let _ = writeln!(out, "* {alert}");
            }
            if self.more_alerts > 0 {
                let _ = writeln!(out, "* and {} more", self.more_alerts);
            }
        }

        heading(&mut out, "TIMELINE (times in UTC)");
        if self.steps.is_empty() {
            out.push_str("No step ran.\n");
        }
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let took = step.took.as_deref().map(|t| format!(" ({t})")).unwrap_or_default();
            let _ = writeln!(
                out,
                "#{} {}  {} on {}: {}{took}",
                step.seq, step.when, step.action, step.server, step.outcome
            );
            step_lines(&mut out, step, "   ");
        }

        if self.escalates {
            heading(&mut out, "MICROSOFT SUPPORT");
            for line in support_lines() {
                let _ = writeln!(out, "{line}");
            }
        }

        heading(&mut out, "INCIDENT");
        for (key, value) in &self.incident {
            let _ = writeln!(out, "{:<13}{value}", format!("{key}:"));
        }
        out.push('\n');
        if let Some(link) = &self.incident_link {
            let _ = writeln!(out, "Open the incident in a browser:\n\n    {link}\n");
        }
        let url = &self.url_flag;
        if let Some(id) = &self.replay {
            let _ = writeln!(out, "Replay the first alert (automation verifies again and acts):\n\n    healthset-responder replay {id}{url}\n");
            let _ = writeln!(out, "Rehearse it without changing anything:\n\n    healthset-responder replay {id} --dry-run{url}\n");
        }
        let _ = writeln!(
            out,
            "Show the incident:\n\n    healthset-responder incidents show {}{url}",
            shell_arg(&self.incident_id)
        );
        let _ =
            writeln!(out, "\n-- \nSent by healthset-responder for incident {}.", self.incident_id);
        out
    }
}

/// Actions that change a server (SPEC section 3).
const MUTATING: &[&str] = &[
    "recycle_app_pool",
    "iis_reset",
    "disable_activation",
    "restart_server",
    "enable_activation",
    "restart_service",
];

const SUPPORT_INTRO: &str = "If the problem persists after these recovery actions, Microsoft's guidance is to contact a Microsoft Support professional:";
const SUPPORT_OWN_PROCEDURE: &str =
    "First review your organisation's own procedure for contacting Microsoft Product Support Services: it may have a specific one.";
const SUPPORT_FORWARD: &str = "Give them this email: it holds the alert, every step automation took, and what each step found.";

fn support_lines() -> [String; 6] {
    [
        SUPPORT_INTRO.to_owned(),
        format!("1. {SUPPORT_OWN_PROCEDURE}"),
        "2. Otherwise go to Support for business:".to_owned(),
        format!("   {SUPPORT_URL}"),
        "3. Choose Servers > Exchange Server.".to_owned(),
        SUPPORT_FORWARD.to_owned(),
    ]
}

/// A step's command and what it found, labelled so that the two cannot be confused on a narrow screen.
fn step_lines(out: &mut String, step: &Step, margin: &str) {
    let _ = writeln!(out, "{margin}Command: {}", step.command);
    if !step.detail.is_empty() {
        let mut lines = step.detail.lines();
        let _ = writeln!(out, "{margin}Result:  {}", lines.next().unwrap_or_default());
        for more in lines {
            let _ = writeln!(out, "{margin}         {more}");
        }
    }
}

fn heading(out: &mut String, title: &str) {
    let _ = write!(out, "\n{title}\n{}\n", "-".repeat(title.chars().count()));
}

fn timeline(steps: &[StepView]) -> Vec<Step> {
    let mut previous_day = None;
    steps
        .iter()
        .map(|view| {
            let day = parse_time(&view.started_at).map(|t| t.date_naive());
            let short = day.is_some() && day == previous_day;
            previous_day = day;
            step(view, Some(short))
        })
        .collect()
}

/// `short`: `Some(true)` shows only the time of day; `None` leaves the time to the caller.
fn step(view: &StepView, short: Option<bool>) -> Step {
    let started = parse_time(&view.started_at);
    let when = match (started, short) {
        (Some(t), Some(true)) => t.format("%H:%M:%S").to_string(),
        (Some(t), _) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        (None, _) => line(&view.started_at),
    };
    let took = match (started, view.finished_at.as_deref().and_then(parse_time)) {
        (Some(start), Some(end)) if (end - start).num_seconds() >= 1 => Some(
            humantime::format_duration(Duration::from_secs((end - start).num_seconds() as u64))
                .to_string(),
        ),
        _ => None,
    };
    let outcome = view.outcome.as_deref().map(line);
    let tone = match outcome.as_deref() {
        Some("succeeded" | "healthy" | "no_active_copies") => Tone::Good,
        Some("done") if view.action == "wait" => Tone::Plain,
        Some("done") => Tone::Good,
        Some("failed" | "unhealthy" | "error") => Tone::Bad,
        Some("throttled" | "dry_run" | "interrupted" | "active_copies") => Tone::Warn,
        _ => Tone::Plain,
    };
    Step {
        seq: view.seq,
        when,
        action: line(&view.action),
        server: line(&view.server),
        command: line(&view.command),
        outcome: outcome.unwrap_or_else(|| "no outcome recorded".to_owned()),
        tone,
        detail: clip(clean(&view.detail).trim(), MAX_DETAIL_CHARS),
        took,
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.with_timezone(&Utc))
}

/// A time as a reader wants it: `2026-11-26 10:00:03 UTC`; text that is not RFC 3339 is shown as it came.
fn when(text: &str) -> String {
    match parse_time(text) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => line(text),
    }
}

/// Characters that must not reach a reader from untrusted text: controls, and the bidirectional overrides that can
/// make text display differently from what it is.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}' | '\u{feff}')
}

/// Untrusted multi-line text: line breaks normalised to `\n`, tabs kept, every other control character dropped.
pub(super) fn clean(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n").chars().filter(|c| !hidden(*c)).collect()
}

/// Untrusted text for one line (and for headers): no line break or control character survives.
pub(super) fn line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\n' || c == '\r' || c == '\t' {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else if !hidden(c) {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// At most `max` characters, marked when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// An argument a reader can paste into a shell: kept as is when it is a plain word, else single-quoted.
pub(super) fn shell_arg(text: &str) -> String {
    let text = line(text);
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_removes_breaks_and_controls() {
        assert_eq!(line("a\r\nBcc: evil@example.com\u{7}\u{202e}"), "a Bcc: evil@example.com");
        assert_eq!(clean("a\r\nb\rc\u{0}d"), "a\nb\ncd");
    }

    #[test]
    fn shell_arguments_are_quoted_unless_plain() {
        assert_eq!(
            shell_arg("0193a6d2-7c1e-7b3a-9f00-1234567890ab"),
            "0193a6d2-7c1e-7b3a-9f00-1234567890ab"
        );
        assert_eq!(shell_arg("x; rm -rf /"), "'x; rm -rf /'");
        assert_eq!(shell_arg("it's"), "'it'\\''s'");
    }

    #[test]
    fn clip_marks_a_cut() {
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
